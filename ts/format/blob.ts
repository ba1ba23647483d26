/**
 * Chunked blob values (docs/FORMAT.md §4.5), as crates/core/src/blob.rs: the
 * blob cut into chunks of exactly 1 MiB (the last one shorter; an empty blob is
 * one empty chunk), each stored as `encrypt(compress(chunk))` on its own
 * (kind 2, or 3 for the last, with its index in the MAC), then a table of
 * (stored length, xxh3_64) per chunk and a trailer (blob length, chunk count).
 * The header's value checksum covers `table || trailer`.
 *
 * Writing streams (`ChunkedEncoder`: one chunk in memory); reading checks the
 * trailer and the table first, then each chunk by itself before any of its
 * bytes is used. Same checks and error codes as the core. No `node:` imports.
 */
import gensync, { type Handler } from 'gensync'
import { KonserveError } from '../errors.js'
import type { CryptoProvider } from '../codec/aes.js'
import {
  FLAG_CHUNKED,
  HEADER_LEN,
  KIND_CHUNK,
  KIND_LAST_CHUNK,
  type Header,
  type RandomSource,
  type ReadAt,
  type SegmentCodec,
  decodeSegmentAt,
  encodeHeader,
  encodeMetaSegment,
  encodeSegmentAt,
  keyHash,
  segmentCodec,
} from './file.js'
import { xxh3_64 } from '../codec/xxhash.js'

/** The plain length of every chunk but the last: 1 MiB. */
export const CHUNK_SIZE = 1 << 20
/** One table entry: u32 LE stored length, u64 LE xxh3_64 of the stored chunk. */
export const TABLE_ENTRY_LEN = 12
/** The trailer: u64 LE blob length, u32 LE chunk count. */
export const TRAILER_LEN = 12

const corrupt = (message: string) => new KonserveError('ERR_CORRUPT', message)
const viewOf = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength)

/** How many chunks a blob of `size` bytes has: `max(1, ceil(size / 2^20))`. */
export function chunkCount(size: number): number {
  return Math.max(1, Math.ceil(size / CHUNK_SIZE))
}

/** The plain length of chunk `i` of `count` in a blob of `size` bytes. */
export function chunkPlainLength(size: number, count: number, i: number): number {
  return i < count - 1 ? CHUNK_SIZE : size - CHUNK_SIZE * (count - 1)
}

/** One stored chunk: where it lies in the file, how long it is, its checksum. */
export interface ChunkEntry {
  offset: number
  length: number
  checksum: bigint
}

/** What the trailer and table of a chunked value say, checked. */
export interface BlobLayout {
  /** The blob's length in bytes. */
  size: number
  chunks: ChunkEntry[]
}

/** `table || trailer` for chunks of these stored lengths and checksums. */
export function encodeBlobTail(chunks: ReadonlyArray<{ length: number; checksum: bigint }>, size: number): Uint8Array {
  if (chunks.length !== chunkCount(size)) throw new KonserveError('ERR_INVALID_ARGUMENT', 'the chunk count does not match the blob length')
  const out = new Uint8Array(TABLE_ENTRY_LEN * chunks.length + TRAILER_LEN)
  const v = viewOf(out)
  chunks.forEach((c, i) => {
    v.setUint32(TABLE_ENTRY_LEN * i, c.length, true)
    v.setBigUint64(TABLE_ENTRY_LEN * i + 4, c.checksum, true)
  })
  const t = TABLE_ENTRY_LEN * chunks.length
  v.setBigUint64(t, BigInt(size), true)
  v.setUint32(t + 8, chunks.length, true)
  return out
}

/** The blob length and chunk count from the trailer (its last 12 bytes), checked against the value length `valueLen`. */
export function decodeBlobTrailer(trailer: Uint8Array, valueLen: number): { size: number; count: number } {
  if (valueLen < TRAILER_LEN || trailer.length < TRAILER_LEN) throw corrupt('the chunked value is shorter than its trailer')
  const v = viewOf(trailer)
  const at = trailer.length - TRAILER_LEN
  const high = v.getUint32(at + 4, true)
  const count = v.getUint32(at + 8, true)
  if (high >= 0x200000) throw corrupt('a chunked blob longer than 2^53 bytes')
  const size = v.getUint32(at, true) + high * 0x100000000
  if (count !== chunkCount(size)) throw corrupt(`a chunked blob of ${size} bytes in ${count} chunks`)
  if (TABLE_ENTRY_LEN * count + TRAILER_LEN > valueLen) throw corrupt('the chunk table does not fit in the value segment')
  return { size, count }
}

/**
 * Checks `table || trailer` (its checksum is the header's value checksum, and
 * the stored lengths add up to the rest of the value segment) and places the
 * chunks, the value segment starting at file offset `valueStart`.
 */
export function decodeBlobTable(tail: Uint8Array, header: Header, valueStart: number): BlobLayout {
  const { size, count } = decodeBlobTrailer(tail, header.valueLen)
  if (tail.length !== TABLE_ENTRY_LEN * count + TRAILER_LEN) throw corrupt('the chunk table has the wrong length')
  if (xxh3_64(tail) !== header.valueChecksum) throw corrupt('chunk table checksum mismatch')
  const v = viewOf(tail)
  const chunks: ChunkEntry[] = []
  let offset = valueStart
  for (let i = 0; i < count; i++) {
    const length = v.getUint32(TABLE_ENTRY_LEN * i, true)
    chunks.push({ offset, length, checksum: v.getBigUint64(TABLE_ENTRY_LEN * i + 4, true) })
    offset += length
  }
  if (offset - valueStart !== header.valueLen - tail.length) throw corrupt('the stored chunk lengths do not add up to the value segment')
  return { size, chunks }
}

/** Reads exactly `length` bytes at `pos`, or fails with ERR_CORRUPT (the file ended). */
function* readExactly(read: ReadAt, pos: number, length: number, what: string): Handler<Uint8Array> {
  const bytes = yield* read(pos, length)
  if (bytes.length !== length) throw corrupt(`the file ends inside ${what}`)
  return bytes
}

/** Reads and checks the trailer and the table of a chunked file (header FLAG_CHUNKED). */
export const readBlobLayout = gensync(function* (read: ReadAt, header: Header, valueStart: number): Handler<BlobLayout> {
  if (header.flags !== FLAG_CHUNKED) throw new KonserveError('ERR_INVALID_ARGUMENT', 'not a chunked blob file')
  const end = valueStart + header.valueLen
  const trailer = yield* readExactly(read, end - TRAILER_LEN, TRAILER_LEN, 'the blob trailer')
  const { count } = decodeBlobTrailer(trailer, header.valueLen)
  const tailLen = TABLE_ENTRY_LEN * count + TRAILER_LEN
  const tail = yield* readExactly(read, end - tailLen, tailLen, 'the chunk table')
  return decodeBlobTable(tail, header, valueStart)
})

/**
 * Checks chunk `i`'s stored bytes against the table: their length and
 * checksum (ERR_CORRUPT). For a blob stored as is (no compression, no
 * encryption) whose chunk holds exactly its plain length, this is the whole
 * check: a reader may read such a chunk straight into the caller's memory
 * and check it there.
 */
export function checkStoredChunk(layout: BlobLayout, i: number, stored: Uint8Array): void {
  const entry = layout.chunks[i]
  if (!entry) throw new KonserveError('ERR_INVALID_ARGUMENT', `no chunk ${i}`)
  if (stored.length !== entry.length) throw corrupt(`chunk ${i} is ${stored.length} bytes, its table says ${entry.length}`)
  if (xxh3_64(stored) !== entry.checksum) throw corrupt(`chunk ${i} checksum mismatch`)
}

/**
 * Chunk `i`'s plain bytes from its stored bytes, checked in order: length and
 * checksum (ERR_CORRUPT), then authentication (ERR_DECRYPT), decompression,
 * and the exact plain length.
 */
export const decodeChunk = gensync(function* (codec: SegmentCodec, layout: BlobLayout, i: number, stored: Uint8Array): Handler<Uint8Array> {
  const count = layout.chunks.length
  checkStoredChunk(layout, i, stored)
  const plain = yield* decodeSegmentAt(codec, i === count - 1 ? KIND_LAST_CHUNK : KIND_CHUNK, i, stored)
  const want = chunkPlainLength(layout.size, count, i)
  if (plain.length !== want) throw corrupt(`chunk ${i} holds ${plain.length} bytes, not ${want}`)
  return plain
})

/** Reads chunk `i` from the file and checks it (`decodeChunk`). */
export const readChunk = gensync(function* (read: ReadAt, codec: SegmentCodec, layout: BlobLayout, i: number): Handler<Uint8Array> {
  const entry = layout.chunks[i]
  if (!entry) throw new KonserveError('ERR_INVALID_ARGUMENT', `no chunk ${i}`)
  const stored = yield* readExactly(read, entry.offset, entry.length, `chunk ${i}`)
  return yield* decodeChunk(codec, layout, i, stored)
})

/** The whole blob of a chunked file, every chunk checked. */
export const decodeChunkedValue = gensync(function* (
  read: ReadAt,
  codec: SegmentCodec,
  header: Header,
  valueStart: number,
): Handler<Uint8Array> {
  const layout = yield* readBlobLayout(read, header, valueStart)
  const out = new Uint8Array(layout.size)
  for (let i = 0; i < layout.chunks.length; i++) out.set(yield* readChunk(read, codec, layout, i), i * CHUNK_SIZE)
  return out
})

/** The header of a chunked blob file (serializer 0, FLAG_CHUNKED). */
export function blobHeader(codec: SegmentCodec, metaStored: Uint8Array, valueLen: number, tail: Uint8Array): Uint8Array {
  return encodeHeader({
    flags: FLAG_CHUNKED,
    serializer: 0,
    compressor: codec.compressor,
    encryptor: codec.encryptor,
    metaLen: metaStored.length,
    valueLen,
    metaChecksum: xxh3_64(metaStored),
    valueChecksum: xxh3_64(tail),
  })
}

/** Receives each stored chunk; the bytes may be reused once it returns. */
export type ChunkSink = (stored: Uint8Array) => Handler<void>

/**
 * Encodes a blob as it streams in, holding at most one chunk: a full chunk is
 * sealed as not the last only once more bytes arrive; `finish` seals the last
 * one (an empty one for an empty blob) and gives `table || trailer`. A blob
 * stored as is (no compression, no encryption) stores a chunk the same
 * whether it is the last or not, so a full chunk is sealed at once, straight
 * from the caller's bytes when they hold it whole (no copy).
 */
export class ChunkedEncoder {
  private pending: Uint8Array | undefined
  private fill = 0
  private readonly entries: Array<{ length: number; checksum: bigint }> = []
  private size = 0
  private stored = 0
  private tail: Uint8Array | undefined
  /** Chunks are stored as they are: the last one's bytes are no different. */
  private readonly asIs: boolean

  constructor(
    private readonly codec: SegmentCodec,
    private readonly random?: RandomSource,
  ) {
    this.asIs = codec.compressor === 0 && codec.encryptor === 0
  }

  /** The blob's length so far. */
  get length(): number {
    return this.size
  }

  /** The value segment's length (chunks, table and trailer), once finished. */
  get valueLength(): number {
    if (!this.tail) throw new KonserveError('ERR_INVALID_ARGUMENT', 'the blob is not finished')
    return this.stored + this.tail.length
  }

  private *seal(plain: Uint8Array, last: boolean, sink: ChunkSink): Handler<void> {
    const index = this.entries.length
    if (index >= 0xffffffff) throw new KonserveError('ERR_INVALID_ARGUMENT', 'a blob of more than 2^32 - 1 chunks')
    const stored = yield* encodeSegmentAt(this.codec, last ? KIND_LAST_CHUNK : KIND_CHUNK, index, plain, this.random)
    if (stored.length > 0xffffffff) throw new KonserveError('ERR_INVALID_ARGUMENT', 'a stored chunk longer than 4 GiB')
    this.entries.push({ length: stored.length, checksum: xxh3_64(stored) })
    this.stored += stored.length
    yield* sink(stored)
  }

  /** Takes the next bytes of the blob; chunks sealed meanwhile go to `sink`, in order. */
  *write(bytes: Uint8Array, sink: ChunkSink): Handler<void> {
    if (this.tail) throw new KonserveError('ERR_INVALID_ARGUMENT', 'the blob is already finished')
    let at = 0
    while (at < bytes.length) {
      if (this.fill === CHUNK_SIZE) {
        // More bytes follow, so the chunk held is not the last.
        yield* this.seal(this.pending!, false, sink)
        this.fill = 0
      }
      if (this.fill === 0 && (bytes.length - at > CHUNK_SIZE || (this.asIs && bytes.length - at === CHUNK_SIZE))) {
        // A whole chunk with more after it (or stored as is), straight from the caller's bytes.
        yield* this.seal(bytes.subarray(at, at + CHUNK_SIZE), false, sink)
        at += CHUNK_SIZE
        this.size += CHUNK_SIZE
        continue
      }
      this.pending ??= new Uint8Array(CHUNK_SIZE)
      const n = Math.min(CHUNK_SIZE - this.fill, bytes.length - at)
      this.pending.set(bytes.subarray(at, at + n), this.fill)
      this.fill += n
      this.size += n
      at += n
      if (this.asIs && this.fill === CHUNK_SIZE) {
        yield* this.seal(this.pending, false, sink)
        this.fill = 0
      }
    }
  }

  /**
   * `write(bytes)` then `finish`, for bytes known to be the blob's last, read
   * only during this call: stored as is, their last partial chunk is sealed
   * straight from them too, not copied into a held chunk (a one-piece blob of
   * a few MB is written with no copy at all). The same bytes as write + finish.
   */
  *finishWith(bytes: Uint8Array, sink: ChunkSink): Handler<Uint8Array> {
    if (this.asIs && this.fill === 0 && !this.tail) {
      const whole = bytes.length - (bytes.length % CHUNK_SIZE)
      yield* this.write(bytes.subarray(0, whole), sink)
      if (whole < bytes.length) {
        yield* this.seal(bytes.subarray(whole), true, sink)
        this.size += bytes.length - whole
      }
    } else yield* this.write(bytes, sink)
    return yield* this.finish(sink)
  }

  /** Seals the last chunk and returns `table || trailer`. */
  *finish(sink: ChunkSink): Handler<Uint8Array> {
    if (this.tail) throw new KonserveError('ERR_INVALID_ARGUMENT', 'the blob is already finished')
    // Stored as is, a blob of whole chunks has sealed its last one already (an empty blob has none: one empty chunk).
    if (!(this.asIs && this.fill === 0 && this.entries.length > 0)) {
      yield* this.seal((this.pending ?? new Uint8Array(0)).subarray(0, this.fill), true, sink)
    }
    this.pending = undefined
    this.fill = 0
    this.tail = encodeBlobTail(this.entries, this.size)
    return this.tail
  }
}

/** What a whole chunked blob file takes (golden tests and tools; stores stream). */
export interface BlobFileInput {
  compressor: number
  encryptor: number
  secret?: Uint8Array | string | null
  keyCke: Uint8Array
  /** The metadata bytes. */
  meta: Uint8Array
  /** The blob. */
  value: Uint8Array
  /** Fixed bytes for the salts and IVs: meta salt, meta IV, then per chunk salt, IV. */
  random?: Uint8Array
  crypto?: CryptoProvider
}

const encodeBlobFileG = gensync(function* (input: BlobFileInput): Handler<Uint8Array> {
  const codec = segmentCodec(input.compressor, input.encryptor, { secret: input.secret, crypto: input.crypto, keyHash: keyHash(input.keyCke) })
  const random: RandomSource = { bytes: input.random, pos: 0 }
  const metaStored = yield* encodeMetaSegment(codec, input.keyCke, input.meta, random)
  const parts: Uint8Array[] = []
  // eslint-disable-next-line require-yield
  const sink: ChunkSink = function* (stored) {
    parts.push(stored.slice())
  }
  const enc = new ChunkedEncoder(codec, random)
  yield* enc.write(input.value, sink)
  const tail = yield* enc.finish(sink)
  const header = blobHeader(codec, metaStored, enc.valueLength, tail)
  const out = new Uint8Array(HEADER_LEN + metaStored.length + enc.valueLength)
  out.set(header)
  out.set(metaStored, HEADER_LEN)
  let at = HEADER_LEN + metaStored.length
  for (const p of [...parts, tail]) {
    out.set(p, at)
    at += p.length
  }
  return out
})

/** A whole chunked blob file in memory (the bytes a streaming writer produces). */
export const encodeBlobFileSync = (input: BlobFileInput): Uint8Array => encodeBlobFileG.sync(input)
export const encodeBlobFileAsync = (input: BlobFileInput): Promise<Uint8Array> => encodeBlobFileG.async(input)
