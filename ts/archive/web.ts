/**
 * Moving a store, the web forms (the browser entry, ts/browser.ts):
 * `exportStore` gives a web ReadableStream of the archive (docs/ARCHIVE.md),
 * `importStore` reads one from a ReadableStream, a Blob, bytes or an async
 * iterable. The same format and code as the Node forms (./index.ts), which
 * differ only in giving a Node Readable.
 */
import { checkOptions, checks } from '../args.js'
import { type Store, checkStore } from '../store.js'
import type { ArchiveCounts } from './format.js'
import { type ExportOptions, exportPieces } from './export.js'
import { type ImportOptions, importFrom } from './import.js'

export type { ArchiveCounts } from './format.js'
export type { ExportOptions, ExportProgress } from './export.js'
export type { ImportOptions, ImportProgress } from './import.js'

/**
 * The whole store (values, metadata, blobs, logs) as one archive: a
 * ReadableStream of bytes, produced as it is read (memory bounded by one
 * value; blobs and logs stream). As the Node form: values decrypted and
 * decompressed, the archive not encrypted; a key that cannot be read errors
 * the stream unless `onCorrupt` is given. Cancelling the stream stops the export.
 */
export function exportStore(store: Store, opts?: ExportOptions): ReadableStream<Uint8Array> {
  checkOptions('exportStore', opts, { onCorrupt: checks.function, onProgress: checks.function })
  checkStore('exportStore', store)
  const pieces = exportPieces(store, opts)
  return new ReadableStream<Uint8Array>(
    {
      async pull(c) {
        const r = await pieces.next()
        if (r.done) c.close()
        else c.enqueue(r.value)
      },
      async cancel() {
        await pieces.return(undefined as never)
      },
    },
    { highWaterMark: 0 },
  )
}

/** What the web `importStore` reads. */
export type WebArchiveSource = ReadableStream<Uint8Array> | Blob | Uint8Array | ArrayBuffer | AsyncIterable<Uint8Array> | Iterable<Uint8Array>

/**
 * Reads an archive of `exportStore` (either entry's: one format) into
 * `store`, streamed; the semantics of the Node form (keys replaced byte for
 * byte, other keys kept, ERR_CORRUPT on a damaged archive, write hooks not
 * called). Resolves to the archive's counts.
 */
export async function importStore(store: Store, source: WebArchiveSource, opts?: ImportOptions): Promise<ArchiveCounts> {
  checkOptions('importStore', opts, { onProgress: checks.function })
  checkStore('importStore', store)
  return importFrom(store, source, opts)
}
