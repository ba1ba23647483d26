/**
 * Shared helpers of the pure engine's specs (pure-blob, pure-log, pure-puts,
 * pure-cross): stores over a scratch directory, codecs, blobs and logs
 * written and read in either calling form.
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { LogInfo, LogRecord, NewRecord, RawListing } from '../../ts/backing/index.js'
import type { BlobSource } from '../../ts/backing/seam.js'
import * as file from '../../ts/format/file.js'
import { encodeKey } from '../../ts/format/key.js'
import { appendLogFileSync, encodeLogFileSync } from '../../ts/format/log.js'
import { createPureCodec } from '../../ts/backends/pure/codec.js'
import { type PureFileBacking, openPureStore } from '../../ts/backends/pure/store.js'

export type { PureFileBacking }
export const MiB = 1 << 20

/** A plain log file as a store writes it: created with the first `sizes[0]` records, each next batch appended by itself. */
export function appendedLog(compressor: number, k: Uint8Array, written: ReadonlyArray<LogRecord>, sizes: number[]): Uint8Array {
  let at = sizes[0]!
  let bytes = encodeLogFileSync({ compressor, encryptor: 0, keyCke: k, meta: LOG_META, records: written.slice(0, at) })
  for (const n of sizes.slice(1)) {
    bytes = appendLogFileSync(bytes, { keyCke: k, records: written.slice(at, at + n) })
    at += n
  }
  return bytes
}
export const SECRET = 'blob and log s3cr3t'
export const META = new Uint8Array(Buffer.from('81a474797065a662696e617279', 'hex')) // {type: "binary"}
export const LOG_META = new Uint8Array(Buffer.from('81a474797065aa617070656e642d6c6f67', 'hex')) // {type: "append-log"}

export interface Codec {
  compressor: number
  encryptor: number
}
export const codecs: Codec[] = [0, 1].flatMap((compressor) => [0, 1].map((encryptor) => ({ compressor, encryptor })))
export const codecName = (c: Codec) => ['none', 'lz4', 'aes', 'lz4+aes'][c.compressor + 2 * c.encryptor]!
export type Mode = 'sync' | 'async'
export const modes: Mode[] = ['sync', 'async']

export const buf = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength)
export const same = (a: Uint8Array, b: Uint8Array) => buf(a).equals(buf(b))
export const key = (s: string) => encodeKey(s)

/** A blob that compresses, and differs from chunk to chunk. */
export function pattern(n: number, seed = 0): Uint8Array {
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) out[i] = (i * 7 + (i >> 10) + seed) & 0xff
  return out
}

/** A new scratch directory, removed when the test ends. */
export function tempDir(t: { teardown(f: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'konserve-blob-log-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** The pure store in `dir` with codec `c` (blocking open). */
export function open(dir: string, c: Codec, syncBlob = false): PureFileBacking {
  return openPureStore.sync(dir, createPureCodec(c.compressor, c.encryptor ? new TextEncoder().encode(SECRET) : undefined), { syncBlob })
}

export const stagingFiles = (dir: string) => readdirSync(dir).filter((n) => n.endsWith('.stage'))

/** Every entry of the store (the listing cursor drained), blocking. */
export function listAll(store: PureFileBacking): RawListing {
  const c = store.openList()
  const out: RawListing = { entries: [], corrupt: [] }
  try {
    for (let b = c.next.sync(1000); b; b = c.next.sync(1000)) {
      out.entries.push(...b.entries)
      out.corrupt.push(...b.corrupt)
    }
  } finally {
    c.close()
  }
  return out
}

/** Every entry of the store, with the async form of the cursor. */
export async function listAllAsync(store: PureFileBacking): Promise<RawListing> {
  const c = store.openList()
  const out: RawListing = { entries: [], corrupt: [] }
  try {
    for (let b = await c.next.async(1000); b; b = await c.next.async(1000)) {
      out.entries.push(...b.entries)
      out.corrupt.push(...b.corrupt)
    }
  } finally {
    c.close()
  }
  return out
}

/** Writes a blob in `pieces` through the store's writer, in one calling form. */
export async function writeBlob(store: PureFileBacking, mode: Mode, k: Uint8Array, pieces: Uint8Array[], meta = META): Promise<void> {
  if (mode === 'sync') {
    const sink = store.blobWriter.sync(k, meta)
    for (const p of pieces) sink.write.sync(p)
    sink.commit.sync()
  } else {
    const sink = await store.blobWriter.async(k, meta)
    for (const p of pieces) await sink.write.async(p)
    await sink.commit.async()
  }
}

export const openBlob = async (store: PureFileBacking, mode: Mode, k: Uint8Array): Promise<BlobSource | undefined> =>
  mode === 'sync' ? store.openBlob.sync(k) : store.openBlob.async(k)
export const readRange = async (src: BlobSource, mode: Mode, offset: number, length: number): Promise<Uint8Array> =>
  mode === 'sync' ? src.read.sync(offset, length) : src.read.async(offset, length)

/** `bytes` cut into pieces of the given sizes (cycled), the last one what is left. */
export function cut(bytes: Uint8Array, sizes: number[]): Uint8Array[] {
  const out: Uint8Array[] = []
  let at = 0
  for (let i = 0; at < bytes.length; i++) {
    const n = sizes[i % sizes.length]!
    out.push(bytes.subarray(at, at + n))
    at += n
  }
  return out
}

// ---- logs ---------------------------------------------------------------------------

export const rec = (i: number, bytes: Uint8Array, serializer = 1): NewRecord => ({ serializer, stamp: 1_700_000_000_000 + i, bytes })
export const asRecord = (index: number, r: NewRecord): LogRecord => ({ index, stamp: r.stamp, serializer: r.serializer, bytes: r.bytes })
export const info = (first: number, last: number, stamp: number): LogInfo => ({ firstIndex: first, lastIndex: last, lastStamp: stamp })
export const EMPTY: LogInfo = { firstIndex: 0, lastIndex: -1, lastStamp: 0 }

export async function append(store: PureFileBacking, mode: Mode, k: Uint8Array, r: NewRecord): Promise<LogInfo> {
  return mode === 'sync' ? store.append.sync(k, [r], LOG_META) : store.append.async(k, [r], LOG_META)
}

/** Every record of the log, read in batches of `batch`. */
export async function readAll(store: PureFileBacking, k: Uint8Array, mode: Mode = 'sync', batch = 3): Promise<LogRecord[]> {
  const cursor = mode === 'sync' ? store.openLog.sync(k) : await store.openLog.async(k)
  if (!cursor) throw new Error('no log')
  const out: LogRecord[] = []
  try {
    for (;;) {
      const b = mode === 'sync' ? cursor.next.sync(batch) : await cursor.next.async(batch)
      if (!b) return out
      if (b.length === 0 || b.length > batch) throw new Error(`a batch of ${b.length}`)
      out.push(...b)
    }
  } finally {
    cursor.close()
  }
}

export const plainRecords = (rs: LogRecord[]) => rs.map((r) => ({ ...r, bytes: buf(r.bytes).toString('hex') }))

/** Builds a log of `recs` and returns its bytes and each record's end offset. */
export function build(store: PureFileBacking, k: Uint8Array, recs: NewRecord[]): { full: Uint8Array; ends: number[] } {
  const ends: number[] = []
  for (const r of recs) {
    store.append.sync(k, [r], LOG_META)
    ends.push(statSync(store.filePath(k)).size)
  }
  return { full: new Uint8Array(readFileSync(store.filePath(k))), ends }
}

/** Where a log file's commit area starts (48 + m) and its records start (after the area, in the current layout). */
export function logParts(bytes: Uint8Array): { areaAt: number; dataStart: number } {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const areaAt = 48 + v.getUint32(12, true)
  return { areaAt, dataStart: areaAt + (v.getUint32(8, true) === file.FLAGS_COMMITTED_LOG ? 128 : 0) }
}

/** Whether `after` keeps `before`'s head and records (up to `before`'s end), whatever its commit area says. */
export function keepsRecords(after: Uint8Array, before: Uint8Array): boolean {
  const { areaAt, dataStart } = logParts(before)
  return same(after.subarray(0, areaAt), before.subarray(0, areaAt)) && same(after.subarray(dataStart, before.length), before.subarray(dataStart))
}
