/**
 * Writing a store as an archive (docs/ARCHIVE.md): an async iterable of byte
 * pieces, produced as it is consumed, so a store larger than memory streams
 * out with memory bounded by one value (a blob or a log: by one chunk or one
 * batch of records). No `node:` imports: shared with the browser store.
 */
import type { KonserveError } from '../errors.js'
import { withKey } from '../errors.js'
import {
  type ArchiveCounts,
  DATA_MAX,
  FRAME_DATA,
  FRAME_END,
  FRAME_KEY,
  FRAME_RECORD,
  FRAME_TRAILER,
  KIND_BLOB,
  KIND_LOG,
  KIND_VALUE,
  chain,
  encodeEndFrame,
  encodeHeader,
  encodeKeyFrame,
  encodeRecordFrame,
  encodeTrailer,
  frame,
} from './format.js'
import { type Listed, fileOf, listRaw, openBlob, openLog, readEntry } from './raw.js'
import type { Store } from '../store.js'

export interface ExportProgress extends ArchiveCounts {
  /** Bytes of archive produced so far. */
  archiveBytes: number
}

export interface ExportOptions {
  /**
   * Called for each key or file that cannot be read; the export then goes on
   * without it. Without this option the export fails on the first one (an
   * archive silently missing keys would look like a good backup).
   */
  onCorrupt?: (err: KonserveError) => void
  /** Called after each key. */
  onProgress?: (p: ExportProgress) => void
}

/** Log records read per batch. */
const LOG_BATCH = 1024

/** The pieces of a whole archive of `store`. */
export async function* exportPieces(store: Store, opts: ExportOptions = {}): AsyncGenerator<Uint8Array, ArchiveCounts, undefined> {
  const counts: ArchiveCounts = { keys: 0, values: 0, blobs: 0, logs: 0, records: 0, bytes: 0 }
  let archiveBytes = 0
  const header = encodeHeader()
  let checksum = new DataView(header.buffer).getBigUint64(16, true)
  archiveBytes += header.length
  yield header
  function* emit(type: number, body: Uint8Array): Generator<Uint8Array> {
    const f = frame(type, body)
    checksum = chain(checksum, f.sum)
    archiveBytes += f.head.length + f.body.length + f.tail.length
    yield f.head
    if (f.body.length > 0) yield f.body
    yield f.tail
  }

  async function* dataOf(k: Listed, kind: typeof KIND_VALUE | typeof KIND_BLOB, serializer: number, meta: Uint8Array, bytes: Uint8Array) {
    yield* emit(FRAME_KEY, encodeKeyFrame({ kind, serializer, key: k.cke, meta, size: bytes.length }))
    for (let at = 0; at < bytes.length; at += DATA_MAX) yield* emit(FRAME_DATA, bytes.subarray(at, at + DATA_MAX))
    yield* emit(FRAME_END, encodeEndFrame(bytes.length, checksum))
    counts.bytes += bytes.length
    if (kind === KIND_BLOB) counts.blobs++
    else counts.values++
  }

  /** The key as read whole: any kind (a log goes to `asLog`). */
  async function* asEntry(k: Listed): AsyncGenerator<Uint8Array, boolean> {
    const e = await readEntry(store, k.cke)
    if (!e) return false
    if (e.log) return yield* asLog(k, false)
    yield* dataOf(k, e.serializer === 0 ? KIND_BLOB : KIND_VALUE, e.serializer, e.meta, e.value)
    return true
  }

  async function* asBlob(k: Listed): AsyncGenerator<Uint8Array, boolean> {
    let blob
    try {
      blob = await openBlob(store, k.cke)
    } catch (err) {
      // Written over with another kind since it was listed.
      if ((err as KonserveError).code === 'ERR_NOT_BINARY') return yield* asEntry(k)
      throw err
    }
    if (!blob) return false
    try {
      yield* emit(FRAME_KEY, encodeKeyFrame({ kind: KIND_BLOB, serializer: 0, key: k.cke, meta: blob.meta, size: blob.size }))
      for (let at = 0; at < blob.size; ) {
        const piece = await blob.read(at, Math.min(DATA_MAX, blob.size - at))
        if (piece.length === 0) throw new Error(`the blob ended at byte ${at} of ${blob.size}`)
        yield* emit(FRAME_DATA, piece)
        at += piece.length
      }
      yield* emit(FRAME_END, encodeEndFrame(blob.size, checksum))
    } finally {
      blob.close()
    }
    counts.bytes += blob.size
    counts.blobs++
    return true
  }

  async function* asLog(k: Listed, fallback = true): AsyncGenerator<Uint8Array, boolean> {
    let log
    try {
      log = await openLog(store, k.cke)
    } catch (err) {
      if (fallback && (err as KonserveError).code === 'ERR_NOT_A_LOG') return yield* asEntry(k)
      throw err
    }
    if (!log) return false
    try {
      let batch = await log.next(LOG_BATCH)
      const first = batch?.[0]?.index ?? 0
      yield* emit(FRAME_KEY, encodeKeyFrame({ kind: KIND_LOG, serializer: 0, key: k.cke, meta: log.meta, size: first }))
      let n = 0
      for (; batch; batch = await log.next(LOG_BATCH)) {
        for (const r of batch) {
          yield* emit(FRAME_RECORD, encodeRecordFrame(r))
          n++
        }
      }
      yield* emit(FRAME_END, encodeEndFrame(n, checksum))
      counts.records += n
      counts.logs++
    } finally {
      log.close()
    }
    return true
  }

  for await (const item of listRaw(store)) {
    if ('error' in item) {
      if (!opts.onCorrupt) throw item.error
      opts.onCorrupt(item.error)
      continue
    }
    // A key's frames are produced whole or not at all: a read fails before
    // its KEY frame, or (a damaged chunk in the middle of a blob) the export fails.
    let started = false
    try {
      const gen = item.log ? asLog(item) : item.serializer === 0 ? asBlob(item) : asEntry(item)
      let r = await gen.next()
      for (; !r.done; r = await gen.next()) {
        started = true
        yield r.value
      }
      if (r.value) counts.keys++
    } catch (err) {
      const ke = withKey(err, item.key)
      if (!ke.file) {
        const file = item.file ?? fileOf(store, item.cke)
        if (file) ke.file = file
      }
      if (!opts.onCorrupt || started) throw ke
      opts.onCorrupt(ke)
      continue
    }
    opts.onProgress?.({ ...counts, archiveBytes })
  }
  yield* emit(FRAME_TRAILER, encodeTrailer(counts, checksum))
  opts.onProgress?.({ ...counts, archiveBytes })
  return counts
}
