/**
 * Streamed blobs on disk (docs/FORMAT.md §4.5, crates/core/src/blob.rs): a
 * blob written chunk by chunk into a staging file and committed by the
 * durable write of ./staging.ts, and an open blob read chunk by chunk, each
 * chunk checked before a byte of it is returned. The layout (header, chunk
 * table, trailer) is ts/format/blob.ts.
 */
import gensync, { type Handler } from 'gensync'
import type { RawMeta } from '../../backing/index.js'
import type { BlobSink, BlobSource } from '../../backing/seam.js'
import { KonserveError } from '../../errors.js'
import {
  type BlobLayout,
  type ChunkSink,
  CHUNK_SIZE,
  ChunkedEncoder,
  blobHeader,
  checkStoredChunk,
  chunkPlainLength,
  readBlobLayout,
  readChunk,
} from '../../format/blob.js'
import { type SegmentCodec, FLAG_CHUNKED, HEADER_LEN, decodeValueSegment, encodeMetaSegment, isLogHeader } from '../../format/file.js'
import { RAW_BYTES_ID } from '../../serializers.js'
import { BlobAppender } from './direct.js'
import { HEAD_READ, type KeyFiles, fdReader, fileReader, openKeyFile, storedValue } from './keyfile.js'
import type { Staged } from './staging.js'
import * as vfs from './vfs.js'

const misuse = (what: string) => new KonserveError('ERR_INVALID_ARGUMENT', what)

/** Starts writing a blob under `key` (the caller holds its lock): 48 placeholder bytes and the meta segment. */
export function* blobWriter(store: KeyFiles, key: Uint8Array, meta: Uint8Array): Handler<BlobSink> {
  store.staging.checkWritable()
  const codec = store.codec.writeCodec(key)
  const metaStored = yield* encodeMetaSegment(codec, key, meta)
  const staged = yield* store.staging.create(store.stagingName(key))
  try {
    // The header comes last, at offset 0.
    yield* store.staging.write(staged, new Uint8Array(HEADER_LEN), 0)
    yield* store.staging.write(staged, metaStored, HEADER_LEN)
  } catch (err) {
    store.staging.drop(staged)
    throw err
  }
  return new FileBlobSink(store, staged, store.filePath(key), codec, metaStored)
}

/** Opens the blob at `key`; undefined when missing; ERR_NOT_BINARY when the key holds something else. */
export function* openBlob(store: KeyFiles, key: Uint8Array): Handler<BlobSource | undefined> {
  const f = yield* openKeyFile(store.codec, store.filePath(key), HEAD_READ, key)
  if (!f) return undefined
  try {
    const { header } = f.head
    const codec = store.codec.readCodec(header, key)
    const meta: RawMeta = { key: f.head.key, serializer: header.serializer, meta: f.head.meta, file: f.file }
    const plain = header.compressor === 0 && header.encryptor === 0 ? { file: f.file, offset: f.valueStart } : undefined
    if (header.serializer !== RAW_BYTES_ID || isLogHeader(header)) {
      const what = isLogHeader(header) ? 'an append log' : `a value of serializer ${header.serializer}`
      throw new KonserveError('ERR_NOT_BINARY', `the key holds ${what}, not a blob`, { file: f.file })
    }
    if (header.flags === FLAG_CHUNKED) {
      let layout: BlobLayout
      try {
        layout = yield* readBlobLayout(fileReader(f), header, f.valueStart)
      } catch (err) {
        throw vfs.ioError(err, 'cannot read the blob', f.file)
      }
      return new FileBlobSource(f.fd, f.file, codec, layout, meta, plain)
    }
    // A blob written whole (flags 0), as before chunking: served from its value, read here.
    let value: Uint8Array
    try {
      value = yield* decodeValueSegment(codec, header, yield* storedValue(f))
    } catch (err) {
      throw vfs.ioError(err, 'cannot decode the key file', f.file)
    }
    vfs.closeQuietly(f.fd)
    return new FileBlobSource(undefined, f.file, codec, { size: value.length, chunks: [] }, meta, plain, value)
  } catch (err) {
    vfs.closeQuietly(f.fd)
    throw err
  }
}

/**
 * A blob being streamed to a staging file: 48 placeholder bytes and the meta
 * segment (written on creation), each chunk as it fills, the table and the
 * trailer, then the real header at offset 0, and the durable commit. Holds
 * one chunk in memory. Any failure, or abort, removes the staging file.
 */
class FileBlobSink implements BlobSink {
  private state: 'open' | 'committed' | 'dropped' = 'open'
  private busy = false
  private readonly encoder: ChunkedEncoder
  /** The staging file's writes after its head: through the page cache, or direct (./direct.ts). */
  private readonly out: BlobAppender
  private readonly sink: ChunkSink
  readonly write = gensync((bytes: Uint8Array) => this.guard(() => this.encoder.write(bytes, this.sink)))
  readonly commit = gensync(() => this.guard(() => this.commitG()))
  readonly commitWith = gensync((bytes: Uint8Array) => this.guard(() => this.commitG(bytes)))

  constructor(
    private readonly store: KeyFiles,
    private readonly staged: Staged,
    private readonly target: string,
    private readonly codec: SegmentCodec,
    private readonly metaStored: Uint8Array,
  ) {
    this.encoder = new ChunkedEncoder(codec)
    const out = new BlobAppender(store.staging, store.directBlobs, staged, HEADER_LEN + metaStored.length)
    this.out = out
    const self = this
    this.sink = function* (stored) {
      if (self.state !== 'open') throw misuse('the blob writer was aborted')
      yield* out.append(stored)
    }
  }

  private *guard(op: () => Handler<void>): Handler<void> {
    if (this.state !== 'open') {
      throw misuse(this.state === 'committed' ? 'the blob is already committed' : 'the blob writer was aborted or has failed')
    }
    if (this.busy) throw misuse('another call on this blob writer is in progress')
    this.busy = true
    try {
      yield* op()
    } catch (err) {
      this.state = 'dropped'
      throw err
    } finally {
      this.busy = false
      // Also after an abort that came while this call ran: its file descriptors were in use.
      if (this.state === 'dropped') this.dropFiles()
    }
  }

  private dropFiles(): void {
    this.out.drop()
    this.store.staging.drop(this.staged)
  }

  private *commitG(last?: Uint8Array): Handler<void> {
    const tail = last ? yield* this.encoder.finishWith(last, this.sink) : yield* this.encoder.finish(this.sink)
    yield* this.sink(tail)
    yield* this.out.finish()
    const header = blobHeader(this.codec, this.metaStored, this.encoder.valueLength, tail)
    yield* this.store.staging.write(this.staged, header, 0)
    yield* this.store.staging.commit(this.staged, this.target)
    this.state = 'committed'
  }

  abort(): void {
    if (this.state !== 'open') return
    this.state = 'dropped'
    if (!this.busy) this.dropFiles()
  }
}

/**
 * An open blob: the file descriptor keeps the file as it was opened. Reads
 * take only the chunks they overlap, each checked before any byte is
 * returned; the last chunk read is kept for the next read.
 */
class FileBlobSource implements BlobSource {
  readonly size: number
  private cached: { index: number; plain: Uint8Array } | undefined
  private closed = false
  private reading = 0
  readonly read = gensync((offset: number, length: number) => this.readG(offset, length))
  private readonly fill = gensync((offset: number, target: Uint8Array) => this.readIntoG(offset, target))

  constructor(
    private fd: number | undefined,
    private readonly file: string,
    private readonly codec: SegmentCodec,
    private readonly layout: BlobLayout,
    readonly meta: RawMeta,
    readonly plain: { file: string; offset: number } | undefined,
    /** The whole blob, for a blob stored as one value. */
    private readonly whole?: Uint8Array,
  ) {
    this.size = whole ? whole.length : layout.size
  }

  private *chunkG(i: number): Handler<Uint8Array> {
    if (this.cached?.index === i) return this.cached.plain
    let plain: Uint8Array
    try {
      plain = yield* readChunk(fdReader(this.fd!), this.codec, this.layout, i)
    } catch (err) {
      throw vfs.ioError(err, 'cannot read the blob', this.file)
    }
    this.cached = { index: i, plain }
    return plain
  }

  private *readG(offset: number, length: number): Handler<Uint8Array> {
    if (this.closed) throw misuse('the blob is closed')
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw new KonserveError('ERR_INVALID_ARGUMENT', `a blob read takes a non-negative integer offset and length, not ${offset}, ${length}`)
    }
    if (offset > this.size) {
      throw new KonserveError('ERR_INVALID_ARGUMENT', `offset ${offset} is past the end of the blob (${this.size} bytes)`, { file: this.file })
    }
    const end = Math.min(this.size, offset + length)
    if (offset >= end) return new Uint8Array(0)
    if (this.whole) return this.whole.slice(offset, end)
    // Every byte is written by readIntoG before it returns, so no zeroing:
    // whole chunks go from the file straight into `out`.
    const out = Buffer.allocUnsafeSlow(end - offset)
    yield* this.readIntoG(offset, out)
    return out
  }

  /**
   * Fills `target` from `offset` (up to its length; fewer only at the end of
   * the blob) with the checks of `read`. A whole chunk of a blob stored as
   * is goes straight from the file into `target` and is checked there; other
   * chunks are decoded (or taken from the chunk kept from the last read) and
   * copied. On error `target` may hold bytes that were not checked.
   */
  private *readIntoG(offset: number, target: Uint8Array): Handler<number> {
    if (this.closed) throw misuse('the blob is closed')
    if (!Number.isSafeInteger(offset) || offset < 0 || !(target instanceof Uint8Array)) {
      throw new KonserveError('ERR_INVALID_ARGUMENT', `a blob read takes a non-negative integer offset and a Uint8Array, not ${offset}, ${String(target)}`)
    }
    if (offset > this.size) {
      throw new KonserveError('ERR_INVALID_ARGUMENT', `offset ${offset} is past the end of the blob (${this.size} bytes)`, { file: this.file })
    }
    const n = Math.min(target.length, this.size - offset)
    if (n === 0) return 0
    if (this.whole) {
      target.set(this.whole.subarray(offset, offset + n))
      return n
    }
    const end = offset + n
    const direct = this.codec.compressor === 0 && this.codec.encryptor === 0
    const count = this.layout.chunks.length
    this.reading++
    try {
      for (let i = Math.floor(offset / CHUNK_SIZE); i * CHUNK_SIZE < end; i++) {
        const base = i * CHUNK_SIZE
        const from = Math.max(offset, base)
        const to = Math.min(end, base + CHUNK_SIZE)
        const dst = target.subarray(from - offset, to - offset)
        const entry = this.layout.chunks[i]!
        const whole = from === base && to - base === chunkPlainLength(this.size, count, i)
        if (direct && whole && entry.length === dst.length && this.cached?.index !== i) {
          try {
            const got = yield* vfs.preadInto(this.fd!, dst, entry.offset)
            if (got !== dst.length) throw new KonserveError('ERR_CORRUPT', `the file ends inside chunk ${i}`)
            checkStoredChunk(this.layout, i, dst)
          } catch (err) {
            throw vfs.ioError(err, 'cannot read the blob', this.file)
          }
          continue
        }
        const plain = yield* this.chunkG(i)
        dst.set(plain.subarray(from - base, to - base))
      }
      return n
    } finally {
      if (--this.reading === 0 && this.closed) this.release()
    }
  }

  readInto(offset: number, target: Uint8Array): Promise<number> {
    return this.fill.async(offset, target)
  }

  private release(): void {
    const fd = this.fd
    this.fd = undefined
    this.cached = undefined
    vfs.closeQuietly(fd)
  }

  close(): void {
    this.closed = true
    if (this.reading === 0) this.release()
  }
}
