/**
 * Large durable blobs written past the page cache (O_DIRECT), as the native
 * core's `directBlobs` (crates/core/src/blob.rs): at volume the page cache's
 * writeback, not the disk, caps durable ingestion (scratch, 3,000 blobs of
 * 64 KB-4 MB from Node, 16 in flight: buffered 585-651 MB/s, direct
 * 809-1,089 MB/s with less CPU per MB).
 *
 * A direct write needs memory aligned to the device's blocks, which a Buffer
 * does not promise. A WebAssembly.Memory does: its buffer starts on a page
 * boundary (the engine maps it whole), so its 1 MiB slices are aligned. One
 * memory of POOLED slices serves the process; a blob finds none free (more
 * than POOLED in flight) or no WebAssembly, and is written buffered.
 *
 * The bytes are the same either way: the blob's head is written through the
 * page cache up to a block boundary, then whole blocks direct through a
 * second descriptor opened O_DIRECT, and the last partial block (and later
 * the header, at offset 0) through the page cache again. The staging file is
 * fsynced, renamed and its directory fsynced as for any durable write. A file
 * system that refuses direct I/O (EINVAL on the open or a write) gets the
 * bytes buffered, and the store remembers it until it is opened again.
 */
import type { Handler } from 'gensync'
import fs from 'node:fs'
import type { Staged, StagingDir } from './staging.js'
import * as vfs from './vfs.js'

/** A blob goes direct once more than this much of it has arrived (the core's DIRECT_FROM). */
export const DIRECT_FROM = 1 << 20
/** `'auto'`: direct only while the process wrote more than this in durable blobs in the last 10-20 s (the core's DIRECT_VOLUME). */
export const DIRECT_VOLUME = 1 << 30
/** File offsets and lengths of direct writes are multiples of this (a page: any block size up to it). */
const ALIGN = 4096
/** One direct write, and one slice of the pool. */
const DIRECT_BUF = 1 << 20
/** How many slices the pool has: 32 MiB, two per blob at 16 in flight (the core's POOLED). */
const POOLED = 32
/** The span of one bucket of the ingest meter. */
const BUCKET_MS = 10_000

/** When each store writes direct: `off`, `on` past `volume` bytes ingested lately; `refused` once its file system said no. */
export class DirectBlobs {
  private refused = false

  constructor(
    private readonly on: boolean,
    readonly volume: number,
  ) {}

  /** Whether a blob may switch to direct writes now, `recent` bytes of durable blobs ingested lately. */
  allows(recent: number): boolean {
    return this.on && !this.refused && recent > this.volume && O_DIRECT !== undefined
  }

  /** The file system refused a direct write: buffered from now on, in this store. */
  refuse(): void {
    this.refused = true
  }
}

/** The platform's O_DIRECT (Linux and a few others; undefined where Node has none). */
const O_DIRECT: number | undefined = (fs.constants as { O_DIRECT?: number }).O_DIRECT

// ---- the process's ingest meter ----------------------------------------------------

let bucket = 0
let current = 0
let previous = 0

/** Counts `n` bytes of durable blob written now; returns those of this bucket and the one before (10 to 20 s), these included. */
export function ingest(n: number): number {
  const b = Math.floor(performance.now() / BUCKET_MS) + 1
  if (b !== bucket) {
    previous = b === bucket + 1 ? current : 0
    current = 0
    bucket = b
  }
  current += n
  return current + previous
}

// ---- the aligned buffers -------------------------------------------------------------

let pool: Uint8Array[] | null | undefined

/** A free aligned 1 MiB slice, or undefined (all in use, or no WebAssembly here). */
function takeBuffer(): Uint8Array | undefined {
  if (pool === undefined) {
    pool = null
    try {
      const memory = new WebAssembly.Memory({ initial: (POOLED * DIRECT_BUF) / 65536, maximum: (POOLED * DIRECT_BUF) / 65536 })
      pool = Array.from({ length: POOLED }, (_, i) => new Uint8Array(memory.buffer, i * DIRECT_BUF, DIRECT_BUF))
    } catch {
      // No WebAssembly (or no memory for it): every blob buffered.
    }
  }
  return pool?.pop()
}

function giveBack(buf: Uint8Array): void {
  pool?.push(buf)
}

/** @internal For tests: slices one byte off alignment, which the kernel refuses for direct I/O (EINVAL, as a file system without it answers). */
export const testing = { misalign: false }

/** A direct write refused by the file system (no direct I/O there, or alignment it will not take): write it buffered. */
const refusedBy = (err: unknown): boolean => (err as NodeJS.ErrnoException)?.code === 'EINVAL'

/** The direct half of a staging file: an O_DIRECT descriptor and the slice gathering the next write, which goes at `at`. */
interface Direct {
  fd: number
  buf: Uint8Array
  /** The slice as taken from the pool (`buf` differs only when misaligned for a test). */
  slice: Uint8Array
  len: number
  at: number
}

/**
 * Appends a blob's bytes to its staging file, from `start` on: through the
 * page cache, or, once the blob is large and the store and the volume allow
 * it, gathered in an aligned slice and written direct a whole slice at a
 * time. `finish` writes what is gathered; `drop` lets go without writing.
 */
export class BlobAppender {
  private direct: Direct | undefined
  /** Whether the switch to direct writes was made or given up for this blob. */
  private tried = false

  constructor(
    private readonly staging: StagingDir,
    private readonly policy: DirectBlobs,
    private readonly staged: Staged,
    /** The file's length so far: bytes written or gathered. */
    private pos: number,
  ) {}

  *append(bytes: Uint8Array): Handler<void> {
    // Only durable blobs count, and go direct (0 is never past a volume).
    const recent = this.staging.durable ? ingest(bytes.length) : 0
    if (!this.direct && !this.tried && this.pos + bytes.length > DIRECT_FROM && this.policy.allows(recent)) {
      // Buffered up to the next block boundary, then direct from there.
      const head = Math.min((ALIGN - (this.pos % ALIGN)) % ALIGN, bytes.length)
      yield* this.buffered(bytes.subarray(0, head))
      bytes = bytes.subarray(head)
      if (this.pos % ALIGN === 0) yield* this.startDirect()
    }
    while (this.direct && bytes.length > 0) {
      const d = this.direct
      const n = Math.min(d.buf.length - d.len, bytes.length)
      d.buf.set(bytes.subarray(0, n), d.len)
      d.len += n
      this.pos += n
      bytes = bytes.subarray(n)
      if (d.len === d.buf.length) yield* this.flush(false)
    }
    yield* this.buffered(bytes)
  }

  /** Writes what is gathered (the last partial block through the page cache) and closes the direct descriptor. */
  *finish(): Handler<void> {
    if (this.direct) yield* this.flush(true)
  }

  /** Lets go of the direct descriptor and slice without writing (the staging file is being dropped). */
  drop(): void {
    const d = this.direct
    if (!d) return
    this.direct = undefined
    vfs.closeQuietly(d.fd)
    giveBack(d.slice)
  }

  private *startDirect(): Handler<void> {
    this.tried = true
    const slice = takeBuffer()
    if (!slice) return
    let fd: number
    try {
      fd = yield* vfs.open(this.staged.path, fs.constants.O_WRONLY | fs.constants.O_NOFOLLOW | O_DIRECT!)
    } catch (err) {
      giveBack(slice)
      if (refusedBy(err)) return this.policy.refuse()
      throw vfs.ioError(err, 'cannot write a staging file', this.staged.path)
    }
    const buf = testing.misalign ? new Uint8Array(slice.buffer, slice.byteOffset + 1, slice.length - 1) : slice
    this.direct = { fd, buf, slice, len: 0, at: this.pos }
  }

  /**
   * Writes the whole blocks gathered, direct; with `last`, also the rest of
   * a block, through the page cache, and the direct descriptor is closed. A
   * refused direct write turns direct writes off (for the store) and writes
   * what was gathered through the page cache.
   */
  private *flush(last: boolean): Handler<void> {
    const d = this.direct!
    const whole = d.len - (d.len % ALIGN)
    let refused = false
    try {
      yield* vfs.writeAll(d.fd, d.buf.subarray(0, whole), d.at)
    } catch (err) {
      if (!refusedBy(err)) {
        this.drop()
        throw vfs.ioError(err, 'cannot write a staging file', this.staged.path)
      }
      refused = true
    }
    if (!refused && !last) {
      // (A full slice is whole blocks; a partial block is only kept for a test's misaligned slice.)
      d.buf.copyWithin(0, whole, d.len)
      d.at += whole
      d.len -= whole
      return
    }
    // The end of the direct writes: what is left (all of it, if refused) through the page cache.
    if (refused) this.policy.refuse()
    this.direct = undefined
    vfs.closeQuietly(d.fd)
    const from = refused ? 0 : whole
    try {
      yield* this.write(d.buf.subarray(from, d.len), d.at + from)
    } finally {
      // Only now: an async write reads the slice until it is done.
      giveBack(d.slice)
    }
  }

  /** Appends `bytes` through the page cache. */
  private *buffered(bytes: Uint8Array): Handler<void> {
    if (bytes.length === 0) return
    yield* this.write(bytes, this.pos)
    this.pos += bytes.length
  }

  private *write(bytes: Uint8Array, at: number): Handler<void> {
    if (bytes.length > 0) yield* this.staging.write(this.staged, bytes, at)
  }
}
