/**
 * The store archive format (docs/ARCHIVE.md): a header, then frames, each
 * checked on its own, the last one a trailer with counts and a checksum over
 * the whole archive. Encoding and decoding only, no I/O and no `node:`
 * imports: shared with the browser store.
 */
import { KonserveError } from '../errors.js'
import { xxh3_64 } from '../codec/xxhash.js'

/** "KSVARCHV" */
export const MAGIC = new Uint8Array([0x4b, 0x53, 0x56, 0x41, 0x52, 0x43, 0x48, 0x56])
/** The version this build writes. */
export const ARCHIVE_VERSION = 2
/** Version 1 (no head check, no running checksum at END) is still read. */
export const OLDEST_READ_VERSION = 1
export const HEADER_LEN = 24
/** A frame's type (1 byte) and body length (u32 LE); from version 2 a u32 check of those 5 bytes follows. */
export const FRAME_HEAD_LEN_V1 = 5
export const FRAME_HEAD_LEN = 9
/** A frame's checksum after its body. */
export const FRAME_SUM_LEN = 8
/** The most bytes of a value or blob in one DATA frame (the file format's chunk size). */
export const DATA_MAX = 1 << 20

export const FRAME_KEY = 0x01
export const FRAME_DATA = 0x02
export const FRAME_RECORD = 0x03
export const FRAME_END = 0x04
export const FRAME_TRAILER = 0x7f

export const KIND_VALUE = 1
export const KIND_BLOB = 2
export const KIND_LOG = 3
export type Kind = typeof KIND_VALUE | typeof KIND_BLOB | typeof KIND_LOG

/** What a KEY frame says. */
export interface KeyFrame {
  kind: Kind
  /** The value's serializer id (0 for a blob and a log). */
  serializer: number
  /** The key's canonical encoding (FORMAT.md §2). */
  key: Uint8Array
  /** The metadata map as stored (FORMAT.md §4.4), byte for byte. */
  meta: Uint8Array
  /** Value and blob: the length of the bytes in the DATA frames that follow. Log: the index of its first record. */
  size: number
}

export interface RecordFrame {
  index: number
  stamp: number
  serializer: number
  bytes: Uint8Array
}

/** The counts of a whole archive, as its trailer holds them. */
export interface ArchiveCounts {
  keys: number
  values: number
  blobs: number
  logs: number
  /** Log records. */
  records: number
  /** Bytes of values and blobs (the DATA frames' bodies). */
  bytes: number
}

export const TRAILER_BODY_LEN = 7 * 8

export function archiveError(message: string, offset?: number): KonserveError {
  return new KonserveError('ERR_CORRUPT', `the archive is damaged or not an archive: ${message}${offset === undefined ? '' : ` (at byte ${offset})`}`)
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength)
}

function u64(dv: DataView, at: number, what: string): number {
  const v = dv.getBigUint64(at, true)
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw archiveError(`${what} is beyond 2^53`)
  return Number(v)
}

function le64(v: bigint): Uint8Array {
  const b = new Uint8Array(8)
  view(b).setBigUint64(0, v, true)
  return b
}

// ---- the header ---------------------------------------------------------------------

/**
 * magic (8) | version u16 | flags u16 (0) | archive id u32 | xxh3_64 of bytes 0..16 (8).
 * The id is random (version 1: 0): it starts every archive's checksum chain
 * somewhere else, so a key's frames from another export, even of the same
 * store, fail the running checksum at their END.
 */
export function encodeHeader(): Uint8Array {
  const h = new Uint8Array(HEADER_LEN)
  h.set(MAGIC, 0)
  const dv = view(h)
  dv.setUint16(8, ARCHIVE_VERSION, true)
  globalThis.crypto.getRandomValues(h.subarray(12, 16))
  dv.setBigUint64(16, xxh3_64(h.subarray(0, 16)), true)
  return h
}

/** What a checked header says: its checksum (the start of the archive checksum's chain) and the version. */
export interface Header {
  sum: bigint
  version: number
}

/** Checks a header. */
export function decodeHeader(h: Uint8Array): Header {
  if (h.length < HEADER_LEN) throw archiveError('it is shorter than its header', 0)
  for (let i = 0; i < MAGIC.length; i++) if (h[i] !== MAGIC[i]) throw archiveError('no archive magic "KSVARCHV" at its start', 0)
  const dv = view(h)
  const sum = dv.getBigUint64(16, true)
  if (xxh3_64(h.subarray(0, 16)) !== sum) throw archiveError('the header checksum does not match', 0)
  const version = dv.getUint16(8, true)
  if (version < OLDEST_READ_VERSION || version > ARCHIVE_VERSION) {
    throw new KonserveError(
      'ERR_UNSUPPORTED_VERSION',
      `archive version ${version} is not supported (this build reads versions ${OLDEST_READ_VERSION} to ${ARCHIVE_VERSION})`,
    )
  }
  if (dv.getUint16(10, true) !== 0 || (version === 1 && dv.getUint32(12, true) !== 0)) throw archiveError('unknown header flags', 10)
  return { sum, version }
}

// ---- frames -------------------------------------------------------------------------

/**
 * The check of a frame's type and length (version 2): the low 32 bits of
 * their xxh3_64. A damaged length is refused before its body is read, so it
 * cannot make a reader buffer up to 4 GiB of what follows.
 */
export function headCheck(head: Uint8Array): number {
  return Number(xxh3_64(head.subarray(0, FRAME_HEAD_LEN_V1)) & 0xffffffffn)
}

/** A frame's checksum: xxh3_64 of its whole head (with version 2's check) followed by xxh3_64 of its body. */
export function frameSum(head: Uint8Array, body: Uint8Array): bigint {
  const b = new Uint8Array(head.length + 8)
  b.set(head, 0)
  view(b).setBigUint64(head.length, xxh3_64(body), true)
  return xxh3_64(b)
}

/** The archive checksum after one more frame: xxh3_64(previous || frame checksum), both u64 LE. */
export function chain(prev: bigint, sum: bigint): bigint {
  const b = new Uint8Array(16)
  const dv = view(b)
  dv.setBigUint64(0, prev, true)
  dv.setBigUint64(8, sum, true)
  return xxh3_64(b)
}

/** A frame's head and checksum around a body (three pieces, so a large body is not copied). */
export function frame(type: number, body: Uint8Array): { head: Uint8Array; body: Uint8Array; sum: bigint; tail: Uint8Array } {
  if (body.length > 0xffffffff) throw new KonserveError('ERR_INVALID_ARGUMENT', 'an archive frame holds at most 4 GiB - 1 bytes')
  const head = new Uint8Array(FRAME_HEAD_LEN)
  head[0] = type
  view(head).setUint32(1, body.length, true)
  view(head).setUint32(FRAME_HEAD_LEN_V1, headCheck(head), true)
  const sum = frameSum(head, body)
  return { head, body, sum, tail: le64(sum) }
}

export function encodeKeyFrame(k: KeyFrame): Uint8Array {
  const body = new Uint8Array(2 + 4 + k.key.length + 4 + k.meta.length + 8)
  const dv = view(body)
  let at = 0
  body[at++] = k.kind
  body[at++] = k.serializer
  dv.setUint32(at, k.key.length, true)
  body.set(k.key, (at += 4))
  at += k.key.length
  dv.setUint32(at, k.meta.length, true)
  body.set(k.meta, (at += 4))
  at += k.meta.length
  dv.setBigUint64(at, BigInt(k.size), true)
  return body
}

export function decodeKeyFrame(body: Uint8Array): KeyFrame {
  const dv = view(body)
  const fail = () => archiveError('a KEY frame is malformed')
  if (body.length < 18) throw fail()
  const kind = body[0]!
  if (kind !== KIND_VALUE && kind !== KIND_BLOB && kind !== KIND_LOG) throw archiveError(`unknown kind ${kind} in a KEY frame`)
  const serializer = body[1]!
  const keyLen = dv.getUint32(2, true)
  if (6 + keyLen + 4 > body.length) throw fail()
  const key = body.subarray(6, 6 + keyLen)
  const metaLen = dv.getUint32(6 + keyLen, true)
  const metaAt = 10 + keyLen
  if (metaAt + metaLen + 8 !== body.length) throw fail()
  return { kind: kind as Kind, serializer, key, meta: body.subarray(metaAt, metaAt + metaLen), size: u64(dv, metaAt + metaLen, 'a size') }
}

/** index u64 | stamp u64 | serializer u8 | the element's bytes */
export function encodeRecordFrame(r: RecordFrame): Uint8Array {
  const body = new Uint8Array(17 + r.bytes.length)
  const dv = view(body)
  dv.setBigUint64(0, BigInt(r.index), true)
  dv.setBigUint64(8, BigInt(r.stamp), true)
  body[16] = r.serializer
  body.set(r.bytes, 17)
  return body
}

export function decodeRecordFrame(body: Uint8Array): RecordFrame {
  if (body.length < 17) throw archiveError('a RECORD frame is malformed')
  const dv = view(body)
  return { index: u64(dv, 0, 'an index'), stamp: u64(dv, 8, 'a stamp'), serializer: body[16]!, bytes: body.subarray(17) }
}

/** What an END frame says. */
export interface EndFrame {
  /** Bytes of a value or blob, records of a log. */
  count: number
  /** Version 2: the archive checksum after the key's frames before this END (undefined in version 1). */
  chain?: bigint
}

/** count u64 | the archive checksum so far, u64 (version 2). */
export function encodeEndFrame(count: number, chainSoFar: bigint): Uint8Array {
  const body = new Uint8Array(16)
  const dv = view(body)
  dv.setBigUint64(0, BigInt(count), true)
  dv.setBigUint64(8, chainSoFar, true)
  return body
}

export function decodeEndFrame(body: Uint8Array, version: number): EndFrame {
  if (body.length !== (version === 1 ? 8 : 16)) throw archiveError('an END frame is malformed')
  const dv = view(body)
  const count = u64(dv, 0, 'a count')
  return version === 1 ? { count } : { count, chain: dv.getBigUint64(8, true) }
}

export function encodeTrailer(c: ArchiveCounts, checksum: bigint): Uint8Array {
  const body = new Uint8Array(TRAILER_BODY_LEN)
  const dv = view(body)
  const fields = [c.keys, c.values, c.blobs, c.logs, c.records, c.bytes]
  fields.forEach((v, i) => {
    dv.setBigUint64(i * 8, BigInt(v), true)
  })
  dv.setBigUint64(48, checksum, true)
  return body
}

export function decodeTrailer(body: Uint8Array): { counts: ArchiveCounts; checksum: bigint } {
  if (body.length !== TRAILER_BODY_LEN) throw archiveError('the TRAILER frame is malformed')
  const dv = view(body)
  const [keys, values, blobs, logs, records, bytes] = [0, 1, 2, 3, 4, 5].map((i) => u64(dv, i * 8, 'a count')) as number[]
  return { counts: { keys: keys!, values: values!, blobs: blobs!, logs: logs!, records: records!, bytes: bytes! }, checksum: dv.getBigUint64(48, true) }
}

// ---- reading frames from a stream of byte pieces --------------------------------------

/**
 * Reads exact byte counts from a stream of pieces, holding only what a read
 * asks for (and the rest of the current piece).
 */
export class ByteReader {
  private piece: Uint8Array = new Uint8Array(0)
  private at = 0
  /** Bytes handed out so far: the offset of the next read. */
  offset = 0

  constructor(private readonly next: () => Promise<Uint8Array | undefined>) {}

  /** Exactly `n` bytes, or fewer only at the end of the stream. */
  async read(n: number): Promise<Uint8Array> {
    if (this.piece.length - this.at >= n) {
      const out = this.piece.subarray(this.at, this.at + n)
      this.at += n
      this.offset += n
      return out
    }
    const out = new Uint8Array(n)
    let got = 0
    while (got < n) {
      if (this.at >= this.piece.length) {
        const p = await this.next()
        if (!p) break
        this.piece = p
        this.at = 0
        continue
      }
      const take = Math.min(n - got, this.piece.length - this.at)
      out.set(this.piece.subarray(this.at, this.at + take), got)
      got += take
      this.at += take
    }
    this.offset += got
    return got === n ? out : out.subarray(0, got)
  }

  /** True when the stream has no more bytes. */
  async atEnd(): Promise<boolean> {
    while (this.at >= this.piece.length) {
      const p = await this.next()
      if (!p) return true
      this.piece = p
      this.at = 0
    }
    return false
  }
}

export interface ReadFrame {
  type: number
  body: Uint8Array
  sum: bigint
  /** Where the frame starts in the archive. */
  offset: number
}

/**
 * The next frame of an archive of `version`, its checksum checked (and, from
 * version 2, its head before its body is read); a stream that ends inside
 * one is damaged.
 */
export async function readFrame(r: ByteReader, version: number): Promise<ReadFrame> {
  const offset = r.offset
  const headLen = version === 1 ? FRAME_HEAD_LEN_V1 : FRAME_HEAD_LEN
  const head = (await r.read(headLen)).slice()
  if (head.length === 0) throw archiveError('it ends before its trailer (truncated)', offset)
  if (head.length < headLen) throw archiveError('it ends inside a frame (truncated)', offset)
  if (version !== 1 && view(head).getUint32(FRAME_HEAD_LEN_V1, true) !== headCheck(head)) {
    throw archiveError("a frame's type or length is damaged (its head check does not match)", offset)
  }
  const type = head[0]!
  const len = view(head).getUint32(1, true)
  if (type === FRAME_DATA && len > DATA_MAX) throw archiveError(`a DATA frame of ${len} bytes (at most ${DATA_MAX})`, offset)
  if (type !== FRAME_KEY && type !== FRAME_DATA && type !== FRAME_RECORD && type !== FRAME_END && type !== FRAME_TRAILER) {
    throw archiveError(`unknown frame type ${type}`, offset)
  }
  const body = await r.read(len)
  const tail = await r.read(FRAME_SUM_LEN)
  if (body.length < len || tail.length < FRAME_SUM_LEN) throw archiveError('it ends inside a frame (truncated)', offset)
  const sum = view(tail).getBigUint64(0, true)
  if (frameSum(head, body) !== sum) throw archiveError('a frame checksum does not match', offset)
  return { type, body, sum, offset }
}
