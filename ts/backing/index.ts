/**
 * The backing-store interface: what a backend implements to get the whole
 * konserve API (paths, serializers, metadata, locking, sync and async) for free.
 *
 * A backend stores, per key, three things: the serializer id, the metadata bytes
 * and the value bytes. Keys arrive as their canonical encoding (CKE, FORMAT.md §2).
 * Every operation exists in a blocking form (`*Sync`) and a Promise form; a
 * backend with no blocking I/O (IndexedDB) throws `ERR_NOT_SUPPORTED` from the
 * sync forms.
 */
import { NodeBuffer } from '../node-buffer.js'

export interface RawEntry {
  serializer: number
  meta: Uint8Array
  /** The value's bytes; empty for a log (read its records with `openLog*`). */
  value: Uint8Array
  /** Set when the key holds an append log (FORMAT.md §4.6). */
  log?: LogInfo
}

/** A key's value as `get` needs it, without its metadata (see Backing.getValueSync). */
export interface RawValue {
  serializer: number
  value: Uint8Array
  /** The key holds an append log: `value` is empty; read its records with `openLog*`. */
  log: boolean
  /**
   * `value` is memory the backing keeps or shares with other values: it must
   * not escape. The facade copies it before handing it out, or to a decoder
   * that may keep it (see Serializer.copiesInput); decoders never write to it.
   */
  shared?: boolean
}

export interface RawMeta {
  /** The key's CKE. */
  key: Uint8Array
  serializer: number
  meta: Uint8Array
  /** Where the key lives, for backends that have files. */
  file?: string
  /** Set when the key holds an append log. */
  log?: LogInfo
}

/** Where an append log stands (FORMAT.md §4.6). */
export interface LogInfo {
  /** Index of the first record; `lastIndex + 1` when there are none. */
  firstIndex: number
  /** Index of the last record; -1 when there are none. */
  lastIndex: number
  /** lastWrite (ms) of the last record; 0 when there are none. */
  lastStamp: number
}

/** One record of an append log: the element as its serializer wrote it. */
export interface LogRecord {
  index: number
  /** lastWrite (ms) of the append that wrote it. */
  stamp: number
  serializer: number
  bytes: Uint8Array
}

/** A new record to append (its index is the next one, chosen by the backing). */
export interface NewRecord {
  serializer: number
  stamp: number
  bytes: Uint8Array
}

/**
 * A log's records in batches of at most `max`, oldest first, `undefined` after
 * the last. Reads see the log as it was when opened (records appended since may
 * or may not be seen). `close` is idempotent.
 */
export interface LogCursor {
  nextSync(max: number): LogRecord[] | undefined
  next(max: number): Promise<LogRecord[] | undefined>
  close(): void
}

/**
 * A blob being written: bytes go to a private staging file; `commit` makes it
 * durable and replaces the key atomically (a reader sees the old blob or the
 * whole new one). The caller holds the key's lock from creation to
 * commit/abort. After a failed write or commit, or `abort`, nothing is left.
 */
export interface BlobSink {
  writeSync(bytes: Uint8Array): void
  write(bytes: Uint8Array): Promise<void>
  commitSync(): void
  commit(): Promise<void>
  /** Drops the staged blob; idempotent, and a no-op after commit. */
  abort(): void
}

/**
 * An open blob: a consistent snapshot (a later write replaces the file, it does
 * not change this one). Every piece is checked before it is returned.
 */
export interface BlobSource {
  /** The blob's length in bytes. */
  readonly size: number
  /** The key's metadata. */
  readonly meta: RawMeta
  /** Up to `length` bytes from `offset` (fewer only at the end of the blob). */
  readSync(offset: number, length: number): Uint8Array
  read(offset: number, length: number): Promise<Uint8Array>
  /**
   * Reads into `target` (up to its length) from `offset`; resolves to the
   * number of bytes read (fewer only at the end of the blob). Lets streams
   * read into memory the JavaScript engine allocated and accounts for.
   */
  readInto?(offset: number, target: Uint8Array): Promise<number>
  close(): void
  /**
   * Where the blob's bytes lie as they are, in one file, when it is stored
   * neither compressed nor encrypted (FORMAT.md §4.5); otherwise undefined.
   */
  readonly plain?: { file: string; offset: number }
}

export interface RawWrite {
  key: Uint8Array
  serializer: number
  meta: Uint8Array
  value: Uint8Array
}

export interface RawCorrupt {
  code: string
  file: string
  message: string
}

export interface RawListing {
  entries: RawMeta[]
  /** Entries that could not be read; `keys` reports them, never deletes them. */
  corrupt: RawCorrupt[]
}

/**
 * A streaming listing: batches of at most `max` entries (entries and corrupt
 * files together), `undefined` once every entry was listed. Keys written or
 * deleted while a cursor runs may or may not be seen. A cursor is used in one
 * form (sync or async) at a time; `close` releases it early (idempotent).
 */
export interface ListCursor {
  nextSync(max: number): RawListing | undefined
  next(max: number): Promise<RawListing | undefined>
  close(): void
}

/** A per-store last-write clock (file stores: the `.konserve.clock` watermark). */
export interface StoreClock {
  /** A lastWrite stamp (ms since epoch) for a write about to happen. */
  nowSync(): number
  now(): Promise<number>
}

export interface Backing {
  /** 'native', 'pure' or 'memory': which implementation does the work. */
  readonly implementation: 'native' | 'pure' | 'memory'
  /** Keys with the same scope share locks (one directory = one scope). */
  readonly lockScope: string
  /** True when a multi-key write is all-or-nothing. */
  readonly atomicMultiKey: boolean

  getSync(key: Uint8Array): RawEntry | undefined
  /** Optional: `get`'s hot path, the value without metadata (falls back to getSync). */
  getValueSync?(key: Uint8Array): RawValue | undefined
  /** Optional: `get`'s hot path, the value without metadata (falls back to getAsync). */
  getValueAsync?(key: Uint8Array): Promise<RawValue | undefined>
  getAsync(key: Uint8Array): Promise<RawEntry | undefined>
  getMetaSync(key: Uint8Array): RawMeta | undefined
  getMetaAsync(key: Uint8Array): Promise<RawMeta | undefined>
  existsSync(key: Uint8Array): boolean
  existsAsync(key: Uint8Array): Promise<boolean>
  /** Writes all entries; each key's write is atomic and, when durable, synced before returning. */
  putSync(writes: RawWrite[]): void
  putAsync(writes: RawWrite[]): Promise<void>
  /** Deletes the keys; returns whether each existed. */
  deleteSync(keys: Uint8Array[]): boolean[]
  deleteAsync(keys: Uint8Array[]): Promise<boolean[]>
  /** Every entry at once (memory proportional to the store). */
  listSync(): RawListing
  listAsync(): Promise<RawListing>
  /** Every entry, in batches (memory proportional to a batch). */
  openList(): ListCursor
  /** The store's own lastWrite clock; without one, the per-process clock is used. */
  readonly clock?: StoreClock

  /**
   * Locking beyond this JavaScript thread (other threads, other processes).
   * The facade already serializes callers within one thread; a backend that is
   * private to one thread (memory) implements these as no-ops.
   * `lockSync` blocks (at most the store's lock timeout: ERR_LOCK_TIMEOUT);
   * `tryLock` takes every key or none and never blocks. A caller that has
   * been polling `tryLock` for `waitedMs` gets ERR_LOCK_TIMEOUT (naming the
   * holder) instead of `false` once that reaches the lock timeout.
   */
  lockSync(keys: Uint8Array[]): void
  tryLock(keys: Uint8Array[], waitedMs?: number): boolean
  unlock(keys: Uint8Array[]): void

  /** The file holding a key, where there is one. */
  filePath?(key: Uint8Array): string

  // ---- streamed blobs (FORMAT.md §4.5) ----
  /** Starts writing a blob under `key` with this metadata (see BlobSink). */
  blobWriterSync(key: Uint8Array, meta: Uint8Array): BlobSink
  blobWriterAsync(key: Uint8Array, meta: Uint8Array): Promise<BlobSink>
  /** Opens the blob at `key`; undefined when missing; `ERR_NOT_BINARY` when the key holds something else. */
  openBlobSync(key: Uint8Array): BlobSource | undefined
  openBlobAsync(key: Uint8Array): Promise<BlobSource | undefined>

  // ---- append logs (FORMAT.md §4.6) ----
  /**
   * Appends records (one or more, in order) to the log at `key` (the caller
   * holds the key's lock), durably when the store is durable: all of them are
   * written and synced together (one fsync for a group commit). A missing key
   * becomes a new log with metadata `createMeta`; a key holding something else
   * fails with `ERR_NOT_A_LOG` and is not changed. Returns the log after the
   * append.
   */
  appendSync(key: Uint8Array, records: NewRecord[], createMeta: Uint8Array): LogInfo
  appendAsync(key: Uint8Array, records: NewRecord[], createMeta: Uint8Array): Promise<LogInfo>
  /** The records of the log at `key`; undefined when missing; `ERR_NOT_A_LOG` for another kind of key. */
  openLogSync(key: Uint8Array): LogCursor | undefined
  openLogAsync(key: Uint8Array): Promise<LogCursor | undefined>
  /**
   * Replaces the log at `key` atomically by one with metadata `meta` and only
   * the records whose index is at least `keepFrom` (caller holds the lock).
   */
  trimLogSync(key: Uint8Array, keepFrom: number, meta: Uint8Array): LogInfo
  trimLogAsync(key: Uint8Array, keepFrom: number, meta: Uint8Array): Promise<LogInfo>

  // ---- closing (optional; see `close` in store.ts) ----
  /** Finishes the writes already handed to it (queued group commits), then releases what it holds. Called once. */
  close?(): Promise<void>
  /** Releases what it holds without waiting; throws (and stays open) if that would drop queued writes. */
  closeSync?(): void
}


/**
 * A copy of bytes that shares no bytes with them, for backings that keep or
 * hand out bytes. (Not `.slice()`: on a Node Buffer that is a view of the same
 * memory, so a caller changing its buffer would change the store.) In Node a
 * Buffer: small ones come from Node's pool, several times cheaper than a new
 * ArrayBuffer each.
 */
const B = NodeBuffer
export const copyBytes: (b: Uint8Array) => Uint8Array = B ? (b) => B.from(b) : (b) => new Uint8Array(b)

/** A string that identifies a key by its CKE, for maps: one char per byte. */
export function keyId(key: Uint8Array): string {
  // One byte per char; apply() over the array, in pieces that fit on the stack.
  if (key.length <= 4096) return String.fromCharCode.apply(null, key as unknown as number[])
  let s = ''
  for (let i = 0; i < key.length; i += 4096) s += String.fromCharCode.apply(null, key.subarray(i, i + 4096) as unknown as number[])
  return s
}
