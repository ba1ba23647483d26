/**
 * Compressor id 1: the LZ4 frame format (docs/FORMAT.md §4.2). The writer is the
 * reference compressor of §4.2.1, so its frames equal the Rust core's byte for
 * byte; the reader accepts any standard LZ4 frame, with the checks and the
 * error of crates/core/src/codec/lz4.rs. No `node:` imports: shared with the
 * browser store.
 */
import { KonserveError } from '../errors.js'
import { xxh32 } from './xxhash.js'

const MAGIC = 0x184d2204
/** FLG: version 01, independent blocks, content size present, nothing else. */
const FLG = 0b0110_1000
/** BD: block maximum size 4 MiB. */
const BD = 0b0111_0000
const BLOCK_SIZE = 4 << 20
const HEADER_LEN = 15

const MIN_MATCH = 4
/** The last 5 bytes of a block are always literals. */
const LAST_LITERALS = 5
/** A match must start at least 12 bytes before the end of a block. */
const MF_LIMIT = 12
const HASH_SHIFT = 32 - 12
/** Skip-ahead (FORMAT.md §4.2.1): the step between tried positions grows by one after each 2^SKIP_TRIGGER misses in a row. */
const SKIP_TRIGGER = 6

function corrupt(what: string): KonserveError {
  return new KonserveError('ERR_CORRUPT', `invalid LZ4 frame: ${what}`)
}

/** The header checksum byte of a frame descriptor: the second byte of its XXH32. */
const headerChecksum = (descriptor: Uint8Array) => (xxh32(descriptor) >>> 8) & 0xff

const viewOf = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength)

// ---- writer -----------------------------------------------------------------

/** Copies src[from..from+n] to dst[to..]; short runs by hand, which beats a subarray and set. */
function copy(src: Uint8Array, from: number, dst: Uint8Array, to: number, n: number): void {
  if (n > 32) dst.set(src.subarray(from, from + n), to)
  else for (let k = 0; k < n; k++) dst[to + k] = src[from + k]!
}

/** Compresses `plain` into one LZ4 frame with the reference compressor. */
export function lz4Compress(plain: Uint8Array): Uint8Array {
  const n = plain.length
  const blocks = Math.ceil(n / BLOCK_SIZE)
  // Room for every block compressed at its worst (n + n/255 + 2, see §4.2.1's sequences).
  const out = new Uint8Array(HEADER_LEN + blocks * 20 + n + Math.ceil(n / 255) + 4)
  const ov = viewOf(out)
  ov.setUint32(0, MAGIC, true)
  out[4] = FLG
  out[5] = BD
  ov.setUint32(6, n >>> 0, true)
  ov.setUint32(10, Math.floor(n / 0x100000000), true)
  out[14] = headerChecksum(out.subarray(4, 14))
  let o = HEADER_LEN
  const src = viewOf(plain)
  const table = new Int32Array(1 << 12)
  for (let start = 0; start < n; start += BLOCK_SIZE) {
    const len = Math.min(BLOCK_SIZE, n - start)
    const end = compressBlock(plain, src, start, len, out, o + 4, table)
    if (end - o - 4 >= len) {
      // Not smaller: stored as is, flagged by the size's high bit.
      ov.setUint32(o, (len | 0x80000000) >>> 0, true)
      out.set(plain.subarray(start, start + len), o + 4)
      o += 4 + len
    } else {
      ov.setUint32(o, end - o - 4, true)
      o = end
    }
  }
  ov.setUint32(o, 0, true) // the end mark
  return out.slice(0, o + 4)
}

/** The reference block compressor (§4.2.1) of plain[start..start+n]; returns the end in `out`. */
function compressBlock(
  plain: Uint8Array,
  src: DataView,
  start: number,
  n: number,
  out: Uint8Array,
  o: number,
  table: Int32Array,
): number {
  table.fill(-1)
  let anchor = 0
  let p = 0
  let misses = 1 << SKIP_TRIGGER
  while (p + MF_LIMIT <= n) {
    const seq = src.getUint32(start + p, true)
    const h = Math.imul(seq, 2654435761) >>> HASH_SHIFT
    const c = table[h]!
    table[h] = p
    if (c >= 0 && p - c <= 0xffff && src.getUint32(start + c, true) === seq) {
      const limit = n - LAST_LITERALS
      let len = MIN_MATCH
      while (p + len < limit && plain[start + c + len] === plain[start + p + len]) len++
      o = emitSequence(out, o, plain, start + anchor, p - anchor, p - c, len)
      p += len
      anchor = p
      misses = 1 << SKIP_TRIGGER
    } else {
      p += misses >>> SKIP_TRIGGER
      misses++
    }
  }
  return emitSequence(out, o, plain, start + anchor, n - anchor, 0, 0)
}

/** Writes a length's continuation: bytes of 255, then the rest. */
function pushLength(out: Uint8Array, o: number, extra: number): number {
  for (; extra >= 255; extra -= 255) out[o++] = 255
  out[o++] = extra
  return o
}

/** One sequence: `lit` literals at plain[from..], then a match, none when `len` is 0 (the last). */
function emitSequence(out: Uint8Array, o: number, plain: Uint8Array, from: number, lit: number, offset: number, len: number): number {
  const matchCode = len === 0 ? 0 : len - MIN_MATCH
  out[o++] = (Math.min(lit, 15) << 4) | Math.min(matchCode, 15)
  if (lit >= 15) o = pushLength(out, o, lit - 15)
  copy(plain, from, out, o, lit)
  o += lit
  if (len !== 0) {
    out[o++] = offset & 0xff
    out[o++] = offset >>> 8
    if (matchCode >= 15) o = pushLength(out, o, matchCode - 15)
  }
  return o
}

// ---- reader -----------------------------------------------------------------

/** A cursor over the frame with checked reads. */
class Input {
  pos = 0
  private readonly view: DataView
  constructor(readonly buf: Uint8Array) {
    this.view = viewOf(buf)
  }

  take(n: number): Uint8Array {
    if (n > this.buf.length - this.pos) throw corrupt('it ends early')
    const out = this.buf.subarray(this.pos, this.pos + n)
    this.pos += n
    return out
  }

  u8(): number {
    return this.take(1)[0]!
  }

  u32(): number {
    if (4 > this.buf.length - this.pos) throw corrupt('it ends early')
    const v = this.view.getUint32(this.pos, true)
    this.pos += 4
    return v
  }
}

/** The decoded bytes, grown as blocks arrive. */
class Output {
  buf: Uint8Array
  len = 0
  constructor(capacity: number) {
    this.buf = new Uint8Array(capacity)
  }

  reserve(extra: number): void {
    if (this.len + extra <= this.buf.length) return
    const next = new Uint8Array(Math.max(this.len + extra, this.buf.length * 2))
    next.set(this.buf.subarray(0, this.len))
    this.buf = next
  }

  append(bytes: Uint8Array): void {
    this.reserve(bytes.length)
    this.buf.set(bytes, this.len)
    this.len += bytes.length
  }
}

/**
 * The content of one standard LZ4 frame. Any damage, an unsupported feature
 * (dictionary), a skippable frame, a second frame or trailing bytes give
 * `ERR_CORRUPT`.
 */
export function lz4Decompress(frame: Uint8Array): Uint8Array {
  const input = new Input(frame)
  if (input.u32() !== MAGIC) throw corrupt('bad magic number')
  const descriptorStart = input.pos
  const flg = input.u8()
  const bd = input.u8()
  if (flg >> 6 !== 0b01) throw corrupt('unknown frame version')
  if ((flg & 0b10) !== 0 || (bd & 0b1000_1111) !== 0) throw corrupt('reserved bits are set')
  if ((flg & 0b1) !== 0) throw corrupt('dictionaries are not supported')
  const independent = (flg & 0b10_0000) !== 0
  const blockChecksums = (flg & 0b1_0000) !== 0
  let contentSize: number | undefined
  if ((flg & 0b1000) !== 0) {
    const lo = input.u32()
    // Above 2^53 the value is inexact, but then it can never equal the output length.
    contentSize = input.u32() * 0x100000000 + lo
  }
  const contentChecksum = (flg & 0b100) !== 0
  const blockMax = [64 << 10, 256 << 10, 1 << 20, 4 << 20][((bd >> 4) & 0b111) - 4]
  if (blockMax === undefined) throw corrupt('unknown block maximum size')
  const descriptor = frame.subarray(descriptorStart, input.pos)
  if (input.u8() !== headerChecksum(descriptor)) throw corrupt('header checksum mismatch')

  // Trust the announced size only as far as the frame could expand to.
  const out = new Output(Math.min(contentSize ?? frame.length * 4, frame.length * 255))
  for (;;) {
    const word = input.u32()
    if (word === 0) break // the end mark
    const storedRaw = (word & 0x80000000) !== 0
    const size = word & 0x7fffffff
    if (size > blockMax) throw corrupt("a block is larger than the frame's block size")
    const data = input.take(size)
    if (blockChecksums && input.u32() !== xxh32(data)) throw corrupt('block checksum mismatch')
    if (storedRaw) out.append(data)
    else decompressBlock(data, out, independent ? out.len : 0, blockMax)
  }
  const content = out.buf.subarray(0, out.len)
  if (contentChecksum && input.u32() !== xxh32(content)) throw corrupt('content checksum mismatch')
  if (contentSize !== undefined && contentSize !== out.len) throw corrupt('content size mismatch')
  if (input.pos !== frame.length) throw corrupt('trailing bytes after the frame')
  return out.len === out.buf.length ? out.buf : out.buf.slice(0, out.len)
}

/** Reads a length continued in 255-steps, from src[at]; returns [length, next index]. */
function readLength(src: Uint8Array, at: number, len: number): [number, number] {
  for (;;) {
    const b = src[at++]
    if (b === undefined) throw corrupt('a length runs past the block')
    len += b
    if (b !== 255) return [len, at]
  }
}

/**
 * Decodes one block onto `out`. Matches may reach back to `floor` (the block's
 * start for independent blocks); a block yields at most `limit` bytes.
 */
function decompressBlock(src: Uint8Array, out: Output, floor: number, limit: number): void {
  const start = out.len
  let i = 0
  for (;;) {
    const token = src[i++]
    if (token === undefined) throw corrupt('a block ends before its last sequence')
    let lit = token >> 4
    if (lit === 15) [lit, i] = readLength(src, i, lit)
    if (lit > src.length - i) throw corrupt('literals run past the block')
    if (out.len - start + lit > limit) throw corrupt('a block decodes to more than the block size')
    out.reserve(lit)
    copy(src, i, out.buf, out.len, lit)
    out.len += lit
    i += lit
    if (i === src.length) return // the last sequence has no match
    if (i + 2 > src.length) throw corrupt('a match offset runs past the block')
    const offset = src[i]! | (src[i + 1]! << 8)
    i += 2
    let len = token & 15
    if (len === 15) [len, i] = readLength(src, i, len)
    len += MIN_MATCH
    if (offset === 0 || offset > out.len - floor) throw corrupt('a match reaches before the start of the data')
    if (out.len - start + len > limit) throw corrupt('a block decodes to more than the block size')
    out.reserve(len)
    const buf = out.buf
    const to = out.len
    const from = to - offset
    if (offset >= len && len > 32) {
      buf.copyWithin(to, from, from + len)
    } else if (len > 32) {
      // An overlapping match repeats bytes with period `offset` from `from` on;
      // all written so far is that repetition, so while `copied` is a multiple
      // of `offset` the next piece can be all of it: pieces of offset, 2 offset,
      // 4 offset, ... bytes (the core's lz4.rs does the same).
      for (let copied = 0; copied < len; ) {
        const n = Math.min(len - copied, to + copied - from)
        buf.copyWithin(to + copied, from, from + n)
        copied += n
      }
    } else {
      // Byte by byte: an overlapping match repeats the last `offset` bytes.
      for (let k = 0; k < len; k++) buf[to + k] = buf[from + k]!
    }
    out.len += len
  }
}
