/**
 * Moving a store: `exportStore` / `importStore` (the archive format of
 * docs/ARCHIVE.md) and `scanStore` (every key's metadata, streamed), the Node
 * forms. The format and the streaming code are in ./format.ts, ./export.ts
 * and ./import.ts, without Node built-ins.
 */
import { Readable } from 'node:stream'
import type { KonserveError } from '../errors.js'
import type { Key } from '../format/key.js'
import type { Metadata } from '../format/meta.js'
import { type Store, checkStore } from '../store.js'
import { checkOptions, checks } from '../args.js'
import type { ArchiveCounts } from './format.js'
import { type ExportOptions, exportPieces } from './export.js'
import { type ImportOptions, importFrom } from './import.js'
import { listRaw } from './raw.js'

export type { ArchiveCounts } from './format.js'
export type { ExportOptions, ExportProgress } from './export.js'
export type { ImportOptions, ImportProgress } from './import.js'

/**
 * The whole store (values, metadata, blobs, logs) as one archive
 * (docs/ARCHIVE.md): a Node Readable of bytes, produced as it is read (memory
 * bounded by one value; blobs and logs stream). Values are archived as their
 * serializer wrote them, decrypted and decompressed: the archive is not
 * encrypted. Each key is archived as it was at one moment; keys written
 * while the export runs may or may not be in it. A key that cannot be read
 * fails the stream, unless `onCorrupt` is given (it is then skipped).
 */
export function exportStore(store: Store, opts?: ExportOptions): Readable {
  checkOptions('exportStore', opts, { onCorrupt: checks.function, onProgress: checks.function })
  checkStore('exportStore', store)
  return Readable.from(exportPieces(store, opts), { objectMode: false, highWaterMark: 1 << 20 })
}

/** What `importStore` reads: a Node Readable, a web ReadableStream, an async iterable of byte pieces, or bytes. */
export type ArchiveSource = NodeJS.ReadableStream | ReadableStream<Uint8Array> | AsyncIterable<Uint8Array> | Iterable<Uint8Array> | Uint8Array

/**
 * Reads an archive of `exportStore` into `store`, streamed: each key in the
 * archive replaces the key of the same name (values, metadata and revisions
 * byte for byte as exported; the store's own compressor and encryptor apply);
 * other keys stay. Every frame is checked before it is written; a value or
 * blob is written only once whole. A damaged or truncated archive fails with
 * ERR_CORRUPT: the keys before the damage are imported, the key being read
 * is not (a log is deleted again). Write hooks are not called. Resolves to
 * the archive's counts.
 */
export async function importStore(store: Store, source: ArchiveSource, opts?: ImportOptions): Promise<ArchiveCounts> {
  checkOptions('importStore', opts, { onProgress: checks.function })
  checkStore('importStore', store)
  return importFrom(store, source, opts)
}

/** One key found by `scanStore`, or a file it could not read. */
export type ScanEntry =
  | { key: Key; meta: Metadata; file?: string; error?: undefined }
  | { error: KonserveError; key?: undefined; meta?: undefined; file?: string }

/**
 * Every key's metadata as an async iterable, read in batches (memory bounded
 * by a batch, whatever the store's size; `keys` returns them all at once).
 * A file that cannot be read is yielded as `{ error }` (its `file` named),
 * never skipped silently and never changed.
 */
export async function* scanStore(store: Store, opts?: { batchSize?: number }): AsyncGenerator<ScanEntry, void, undefined> {
  checkOptions('scanStore', opts, { batchSize: checks.count })
  checkStore('scanStore', store)
  for await (const e of listRaw(store, opts?.batchSize || 1024)) {
    if ('error' in e) yield { error: e.error, ...(e.error.file ? { file: e.error.file } : {}) }
    else yield { key: e.key, meta: e.meta, ...(e.file ? { file: e.file } : {}) }
  }
}
