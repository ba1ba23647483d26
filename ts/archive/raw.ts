/**
 * Every call the archive code (and `scanStore`) makes on a store's backing, in
 * one place: the values' serializer ids and bytes and the metadata bytes as
 * stored are below the public API. When the Backing interface changes, this
 * is the one module of ts/archive/ to adapt.
 */
import gensync from 'gensync'
import { lockKeys, readMeta } from '../api.js'
import type { LogRecord, NewRecord, RawMeta } from '../backing/index.js'
import { KonserveError, withKey } from '../errors.js'
import { type Key, decodeKey } from '../format/key.js'
import type { Metadata } from '../format/meta.js'
import { release } from '../locks.js'
import type { Store } from '../store.js'

/** A key found by a listing: its decoded key and metadata, and the raw entry. */
export interface Listed {
  key: Key
  cke: Uint8Array
  meta: Metadata
  /** The serializer id (0 for blobs and logs). */
  serializer: number
  /** True when the key holds an append log. */
  log: boolean
  /** The file holding the key, for file stores. */
  file?: string
}

/** A file or entry the listing could not read: the error names the file (and the key when known). */
export interface Unreadable {
  error: KonserveError
}

/** Every key of the store, read through the backing's listing cursor in batches (bounded memory). */
export async function* listRaw(store: Store, batch = 1024): AsyncGenerator<Listed | Unreadable, void, undefined> {
  const cursor = store.backing.openList()
  try {
    for (let listing = await cursor.next.async(batch); listing; listing = await cursor.next.async(batch)) {
      for (const c of listing.corrupt) {
        yield { error: new KonserveError(c.code as KonserveError['code'], c.message, { file: c.file }) }
      }
      for (const e of listing.entries) {
        try {
          const key = decodeKey(e.key)
          yield { key, cke: e.key, meta: readMeta(key, e), serializer: e.serializer, log: e.log !== undefined, ...(e.file ? { file: e.file } : {}) }
        } catch (err) {
          const ke = withKey(err, undefined)
          if (e.file) ke.file = e.file
          yield { error: ke }
        }
      }
    }
  } finally {
    cursor.close()
  }
}

/** The file holding a key, for file stores. */
export function fileOf(store: Store, cke: Uint8Array): string | undefined {
  return store.backing.filePath?.(cke)
}

/** A key's entry as stored: serializer id, metadata bytes, value bytes (whole), whether it is a log. */
export async function readEntry(store: Store, cke: Uint8Array): Promise<{ serializer: number; meta: Uint8Array; value: Uint8Array; log: boolean } | undefined> {
  const e = await store.backing.get.async(cke)
  return e && { serializer: e.serializer, meta: e.meta, value: e.value, log: e.log !== undefined }
}

/** An open blob: its size, its metadata bytes, reads of checked pieces. */
export interface RawBlob {
  size: number
  meta: Uint8Array
  read(offset: number, length: number): Promise<Uint8Array>
  close(): void
}

/** The blob at `cke` (undefined when missing; ERR_NOT_BINARY when the key holds something else). */
export async function openBlob(store: Store, cke: Uint8Array): Promise<RawBlob | undefined> {
  const src = await store.backing.openBlob.async(cke)
  if (!src) return undefined
  return { size: src.size, meta: src.meta.meta, read: (o, n) => src.read.async(o, n), close: () => src.close() }
}

/** An open log: its metadata bytes and its records in batches. */
export interface RawLog {
  meta: Uint8Array
  next(max: number): Promise<LogRecord[] | undefined>
  close(): void
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/**
 * The log at `cke` with the metadata its records belong to (undefined when
 * missing; ERR_NOT_A_LOG for another kind of key). The metadata is read
 * before and after the log is opened: equal bytes mean no trim (which always
 * writes new metadata) came in between, so metadata and records agree.
 */
export async function openLog(store: Store, cke: Uint8Array): Promise<RawLog | undefined> {
  const b = store.backing
  for (let attempt = 0; ; attempt++) {
    const before: RawMeta | undefined = await b.getMeta.async(cke)
    if (!before) return undefined
    if (!before.log) throw new KonserveError('ERR_NOT_A_LOG', 'the key does not hold an append log')
    const cursor = await b.openLog.async(cke)
    if (!cursor) return undefined
    const after = await b.getMeta.async(cke)
    if (after && same(before.meta, after.meta)) {
      return { meta: before.meta, next: (max) => cursor.next.async(max), close: () => cursor.close() }
    }
    cursor.close()
    if (attempt >= 100) throw new KonserveError('ERR_LOCK_BUSY', 'the log is trimmed faster than it can be read')
  }
}

/** Takes `cke`'s lock (this thread's and the backing's, as every write does); returns its release. */
export async function lockKey(store: Store, cke: Uint8Array): Promise<() => void> {
  const ids = await gensync(lockKeys).async(store.backing, [cke])
  let held = true
  return () => {
    if (!held) return
    held = false
    try {
      store.backing.unlock([cke])
    } finally {
      release(ids)
    }
  }
}

/** Writes a value as given (the caller holds the key's lock). */
export async function putEntry(store: Store, cke: Uint8Array, serializer: number, meta: Uint8Array, value: Uint8Array): Promise<void> {
  await store.backing.put.async([{ key: cke, serializer, meta, value }])
}

/** Deletes a key (the caller holds its lock); whether it existed. */
export async function deleteKey(store: Store, cke: Uint8Array): Promise<boolean> {
  const [existed] = await store.backing.delete.async([cke])
  return existed === true
}

/** A blob being written with `meta` as its metadata bytes (the caller holds the key's lock). */
export interface RawBlobSink {
  write(bytes: Uint8Array): Promise<void>
  commit(): Promise<void>
  abort(): void
}

export async function blobWriter(store: Store, cke: Uint8Array, meta: Uint8Array): Promise<RawBlobSink> {
  const sink = await store.backing.blobWriter.async(cke, meta)
  return { write: (b) => sink.write.async(b), commit: () => sink.commit.async(), abort: () => sink.abort() }
}

/** A whole log being written with `meta` as its metadata bytes (the caller holds the key's lock). */
export interface RawLogSink {
  append(records: NewRecord[]): Promise<void>
  commit(): Promise<void>
  abort(): void
}

/**
 * A whole new log for `cke`, staged and committed at once over whatever the
 * key holds (the caller holds its lock); undefined when the backing has no
 * staged log writer (an import then deletes the key and appends).
 */
export async function logWriter(store: Store, cke: Uint8Array, meta: Uint8Array, firstIndex: number): Promise<RawLogSink | undefined> {
  const open = store.backing.logWriter
  if (!open) return undefined
  const w = await open.async(cke, meta, firstIndex)
  return { append: (records) => w.append.async(records), commit: async () => void (await w.commit.async()), abort: () => w.abort() }
}

/** Appends records to the log at `cke`, created with `meta` if missing (the caller holds the key's lock). */
export async function appendRecords(store: Store, cke: Uint8Array, records: NewRecord[], meta: Uint8Array): Promise<void> {
  await store.backing.append.async(cke, records, meta)
}

/** Rewrites the log at `cke` with metadata `meta` and the records from index `keepFrom` on (the caller holds the lock). */
export async function trimRecords(store: Store, cke: Uint8Array, keepFrom: number, meta: Uint8Array): Promise<void> {
  await store.backing.trimLog.async(cke, keepFrom, meta)
}
