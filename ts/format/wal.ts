/**
 * The write-ahead log's bytes (docs/FORMAT.md §10), with no I/O: the header
 * slots, the end hint, frames of records, and the reader of a log's frames
 * with its torn-tail and damage rules. Byte-identical to
 * crates/core/src/format/wal.rs (golden vectors: test-vectors/wal.json).
 *
 * NOT USED BY THE STORE YET: no store writes or reads `.konserve.wal`. This is
 * the codec the log protocol (docs/WAL.md §4–§6) will sit on. No `node:` imports.
 */
import { KonserveError } from '../errors.js'
import { xxh3_64 } from '../codec/xxhash.js'
import { HEADER_LEN } from './file.js'

export const WAL_FILE_NAME = '.konserve.wal'
export const SLOT_LEN = 64
export const SLOT_A = 0
export const SLOT_B = 4096
export const HINT_AT = 8192
export const HINT_LEN = 32
export const FRAMES_AT = 12288
export const FRAME_HEAD = 32
export const FRAME_TRAILER = 8
export const MIN_FRAME = 64
export const MAX_FRAME = 1 << 23
export const RECORD_HEAD = 21

const MAGIC = new TextEncoder().encode('KSVWALOG')
const VERSION = 1

/** What a record says about its key: 1 put (payload: a whole key file), 2 delete, 3 the key's file holds its newest value. */
export const WAL_PUT = 1
export const WAL_DELETE = 2
export const WAL_FILE = 3
export type WalOp = typeof WAL_PUT | typeof WAL_DELETE | typeof WAL_FILE

export interface WalHeader {
  /** Random and nonzero, drawn at each reset. */
  generation: bigint
  /** The seq of the first frame of this generation (>= 1). */
  first: bigint
}

export interface WalHint {
  generation: bigint
  /** The seq of the last frame written. */
  seq: bigint
  /** The file offset past the last frame. */
  end: number
}

export interface NewWalRecord {
  op: WalOp
  /** XXH3-128 of the key's CKE, big-endian (the file name's digits): 16 bytes. */
  keyHash: Uint8Array
  /** The key file, for a put; empty otherwise. */
  payload: Uint8Array
}

export interface WalRecord {
  op: WalOp
  keyHash: Uint8Array
  /** Where its payload is in the bytes that were read: [start, end). */
  payload: [number, number]
}

export interface WalFrame {
  at: number
  len: number
  seq: bigint
  records: WalRecord[]
}

export interface WalScan {
  frames: WalFrame[]
  /** Where the next frame goes: past the last frame that fits. */
  end: number
  /** The seq the next frame gets. */
  nextSeq: bigint
}

const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength)
const u64 = (b: Uint8Array, at: number) => view(b).getBigUint64(at, true)
const u32 = (b: Uint8Array, at: number) => view(b).getUint32(at, true)
const corrupt = (message: string) => new KonserveError('ERR_CORRUPT', message)
const invalid = (message: string) => new KonserveError('ERR_INVALID_ARGUMENT', message)

/** One header slot: magic, version, generation, first, xxh3_64 of bytes 0..56. */
export function encodeHeaderSlot(h: WalHeader): Uint8Array {
  const s = new Uint8Array(SLOT_LEN)
  const v = view(s)
  s.set(MAGIC)
  s[8] = VERSION
  v.setBigUint64(16, h.generation, true)
  v.setBigUint64(24, h.first, true)
  v.setBigUint64(56, xxh3_64(s.subarray(0, 56)), true)
  return s
}

/**
 * One header slot: undefined when it is not valid (checksum, magic, reserved
 * bytes, a generation or first seq of 0); ERR_UNSUPPORTED_VERSION for a valid
 * slot of another version.
 */
export function decodeHeaderSlot(bytes: Uint8Array): WalHeader | undefined {
  if (bytes.length < SLOT_LEN) return undefined
  const s = bytes.subarray(0, SLOT_LEN)
  if (xxh3_64(s.subarray(0, 56)) !== u64(s, 56) || MAGIC.some((b, i) => s[i] !== b)) return undefined
  for (let i = 9; i < 56; i++) if ((i < 16 || i >= 32) && s[i] !== 0) return undefined
  if (s[8] !== VERSION) {
    throw new KonserveError('ERR_UNSUPPORTED_VERSION', `write-ahead log version ${s[8]} is not supported (this build reads ${VERSION})`)
  }
  const h = { generation: u64(s, 16), first: u64(s, 24) }
  return h.generation !== 0n && h.first !== 0n ? h : undefined
}

/** The log's header from its first bytes: slot B if valid, else slot A; neither is ERR_CORRUPT. */
export function decodeHeader(file: Uint8Array): WalHeader {
  const slot = (at: number) => (file.length >= at + SLOT_LEN ? decodeHeaderSlot(file.subarray(at, at + SLOT_LEN)) : undefined)
  const h = slot(SLOT_B) ?? slot(SLOT_A)
  if (!h) throw corrupt('the write-ahead log has no valid header slot')
  return h
}

/** The end hint: generation, seq, end, xxh3_64 of bytes 0..24. */
export function encodeHint(h: WalHint): Uint8Array {
  const b = new Uint8Array(HINT_LEN)
  const v = view(b)
  v.setBigUint64(0, h.generation, true)
  v.setBigUint64(8, h.seq, true)
  v.setBigUint64(16, BigInt(h.end), true)
  v.setBigUint64(24, xxh3_64(b.subarray(0, 24)), true)
  return b
}

/** The end hint, or undefined when its checksum fails (then a reader scans). */
export function decodeHint(b: Uint8Array): WalHint | undefined {
  if (b.length < HINT_LEN || xxh3_64(b.subarray(0, 24)) !== u64(b, 24)) return undefined
  const end = u64(b, 16)
  // An offset no file reaches is as good as a failed checksum: scan.
  if (end > BigInt(Number.MAX_SAFE_INTEGER)) return undefined
  return { generation: u64(b, 0), seq: u64(b, 8), end: Number(end) }
}

/** The length of the frame of records whose payloads have these lengths. */
export function frameLen(payloadLens: Iterable<number>): number {
  let body = 0
  for (const p of payloadLens) body += RECORD_HEAD + p
  return Math.ceil((FRAME_HEAD + body + FRAME_TRAILER) / 8) * 8
}

/**
 * One frame (one group commit) of `records`, with this generation and seq.
 * ERR_INVALID_ARGUMENT for no records, a payload on a delete or file record,
 * a put shorter than a key file header, or a frame over MAX_FRAME.
 */
export function encodeFrame(generation: bigint, seq: bigint, records: readonly NewWalRecord[]): Uint8Array {
  if (records.length === 0) throw invalid('a write-ahead log frame needs at least one record')
  for (const r of records) {
    if (r.keyHash.length !== 16) throw invalid('a record key hash is 16 bytes')
    if (r.op === WAL_PUT && r.payload.length < HEADER_LEN) throw invalid("a put record's payload must be a whole key file")
    if (r.op !== WAL_PUT && r.payload.length !== 0) throw invalid('only a put record has a payload')
  }
  const len = frameLen(records.map((r) => r.payload.length))
  if (len > MAX_FRAME) throw invalid('the records exceed one write-ahead log frame (8 MiB)')
  const f = new Uint8Array(len)
  const v = view(f)
  v.setUint32(0, len, true)
  v.setUint32(4, records.length, true)
  v.setBigUint64(8, generation, true)
  v.setBigUint64(16, seq, true)
  v.setBigUint64(24, xxh3_64(f.subarray(0, 24)), true)
  let p = FRAME_HEAD
  for (const r of records) {
    f[p] = r.op
    f.set(r.keyHash, p + 1)
    v.setUint32(p + 17, r.payload.length, true)
    f.set(r.payload, p + RECORD_HEAD)
    p += RECORD_HEAD + r.payload.length
  }
  v.setBigUint64(len - FRAME_TRAILER, xxh3_64(f.subarray(0, len - FRAME_TRAILER)), true)
  return f
}

/** The generation field at `at` equals `generation` (two u32 compares: cheap enough to probe every 8 bytes). */
function generationAt(b: Uint8Array, at: number, lo: number, hi: number): boolean {
  return u32(b, at + 8) === lo && u32(b, at + 12) === hi
}

/** The length of a frame head that fits at `at` (its check, length, count, generation), or undefined. */
function headAt(b: Uint8Array, at: number, generation: bigint): number | undefined {
  if (at + FRAME_HEAD > b.length) return undefined
  if (u64(b, at + 8) !== generation || xxh3_64(b.subarray(at, at + 24)) !== u64(b, at + 24)) return undefined
  const len = u32(b, at)
  const n = u32(b, at + 4)
  const possible = len >= MIN_FRAME && len <= MAX_FRAME && len % 8 === 0 && n >= 1 && n <= Math.floor((len - FRAME_HEAD - FRAME_TRAILER) / RECORD_HEAD)
  return possible ? len : undefined
}

/**
 * The frame at `at` if one fits there (docs/FORMAT.md §10.3): undefined where none
 * does (the end: a torn tail, zeros, another generation or seq); ERR_CORRUPT
 * for a frame whose checks hold but whose records do not parse.
 */
export function decodeFrameAt(b: Uint8Array, at: number, generation: bigint, seq: bigint): WalFrame | undefined {
  const len = headAt(b, at, generation)
  if (len === undefined || u64(b, at + 16) !== seq || at + len > b.length) return undefined
  if (xxh3_64(b.subarray(at, at + len - FRAME_TRAILER)) !== u64(b, at + len - FRAME_TRAILER)) return undefined
  const bad = (m: string) => corrupt(`write-ahead log frame ${seq} at offset ${at}: ${m}`)
  const n = u32(b, at + 4)
  const bodyEnd = at + len - FRAME_TRAILER
  let p = at + FRAME_HEAD
  const records: WalRecord[] = []
  for (let i = 0; i < n; i++) {
    if (bodyEnd - p < RECORD_HEAD) throw bad('a record runs past the frame')
    const op = b[p]!
    if (op !== WAL_PUT && op !== WAL_DELETE && op !== WAL_FILE) throw bad('a record has an unknown op')
    const keyHash = b.slice(p + 1, p + 17)
    const plen = u32(b, p + 17)
    const start = p + RECORD_HEAD
    if (plen > bodyEnd - start) throw bad("a record's payload runs past the frame")
    if (op === WAL_PUT && plen < HEADER_LEN) throw bad("a put record's payload is shorter than a key file")
    if (op !== WAL_PUT && plen !== 0) throw bad('a delete or file record has a payload')
    records.push({ op, keyHash, payload: [start, start + plen] })
    p = start + plen
  }
  if (bodyEnd - p >= 8) throw bad('the bytes after its records are not the padding')
  for (let i = p; i < bodyEnd; i++) if (b[i] !== 0) throw bad('the bytes after its records are not the padding')
  return { at, len, seq, records }
}

/**
 * The frames of the generation `header` names, in the log file `b` (from
 * offset 0), and where the next frame goes. After the last frame that fits, a
 * frame head of this generation with a later seq within MAX_FRAME bytes means
 * an acknowledged frame follows a damaged one: ERR_CORRUPT.
 */
export function scanFrames(b: Uint8Array, header: WalHeader): WalScan {
  let at = FRAMES_AT
  let seq = header.first
  const frames: WalFrame[] = []
  for (;;) {
    const frame = decodeFrameAt(b, at, header.generation, seq)
    if (!frame) break
    frames.push(frame)
    at += frame.len
    seq += 1n
  }
  checkTail(b.subarray(at, Math.min(b.length, at + MAX_FRAME)), at, header.generation, seq)
  return { frames, end: at, nextSeq: seq }
}

/**
 * The damage check after the end of the frames that fit (docs/FORMAT.md §10.3;
 * the core's `check_tail`): `tail` holds the log's bytes from file offset
 * `end` (where no frame fits) on, up to MAX_FRAME of them. A frame head of
 * `generation` with a seq above `nextSeq` at a multiple of 8 after `end`
 * means an acknowledged frame follows a damaged one: ERR_CORRUPT, naming both offsets.
 */
export function checkTail(tail: Uint8Array, end: number, generation: bigint, nextSeq: bigint): void {
  const stop = Math.min(tail.length, MAX_FRAME)
  const lo = Number(generation & 0xffffffffn)
  const hi = Number(generation >> 32n)
  for (let probe = 8; probe + FRAME_HEAD <= stop; probe += 8) {
    // The generation first: two comparisons rule out almost every offset.
    if (generationAt(tail, probe, lo, hi) && headAt(tail, probe, generation) !== undefined && u64(tail, probe + 16) > nextSeq) {
      throw corrupt(`write-ahead log frame ${nextSeq} at offset ${end} is damaged: frame ${u64(tail, probe + 16)} at offset ${end + probe} follows it`)
    }
  }
}

/** The header and the frames of a whole log file. */
export function parseWal(b: Uint8Array): { header: WalHeader; scan: WalScan } {
  const header = decodeHeader(b)
  return { header, scan: scanFrames(b, header) }
}
