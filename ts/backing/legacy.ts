/**
 * TEMPORARY (issue 20, while the code moves onto ./seam.ts): the old shape
 * of `Backing` (…Sync/…Async pairs) and `fromLegacy`, which shows a backing
 * of that shape through the new interface. The facade, the memory and native
 * backends and the layers are on the seam; the pure file engine
 * (ts/backends/pure/) is the last one in the old shape, wrapped by
 * ts/node/fs-store.ts and ts/rekey.ts. Deleted when it moves.
 */
import type { LogInfo, LogRecord, NewRecord, RawEntry, RawListing, RawMeta, RawValue, RawWrite, StoreClock } from './index.js'
import * as New from './seam.js'

/** The old interfaces, under the names this file used for them. */
declare namespace Old {
  type Backing = LegacyBacking
  type ListCursor = LegacyListCursor
  type LogCursor = LegacyLogCursor
  type BlobSink = LegacyBlobSink
  type BlobSource = LegacyBlobSource
  type RawListing = import('./index.js').RawListing
}

/** An old-shape backing seen through the new interface (for a facade already moved). */
export function fromLegacy(o: Old.Backing): New.Backing {
  const listCursor = (c: Old.ListCursor): New.ListCursor => ({ next: New.twinOp((m) => c.nextSync(m), (m) => c.next(m)), close: () => c.close() })
  const logCursor = (c: Old.LogCursor): New.LogCursor => ({ next: New.twinOp((m) => c.nextSync(m), (m) => c.next(m)), close: () => c.close() })
  const sink = (s: Old.BlobSink): New.BlobSink => ({
    write: New.twinOp((x) => s.writeSync(x), (x) => s.write(x)),
    commit: New.twinOp(() => s.commitSync(), () => s.commit()),
    abort: () => s.abort(),
  })
  const source = (s: Old.BlobSource): New.BlobSource => ({
    get size() {
      return s.size
    },
    get meta() {
      return s.meta
    },
    get plain() {
      return s.plain
    },
    read: New.twinOp((a, l) => s.readSync(a, l), (a, l) => s.read(a, l)),
    readInto: s.readInto ? (a, t) => s.readInto!(a, t) : undefined,
    close: () => s.close(),
  })
  const getValue = o.getValueSync && o.getValueAsync ? New.twinOp(o.getValueSync.bind(o), o.getValueAsync.bind(o)) : undefined
  return {
    implementation: o.implementation,
    lockScope: o.lockScope,
    atomicMultiKey: o.atomicMultiKey,
    blocking: true,
    get: New.twinOp((k) => o.getSync(k), (k) => o.getAsync(k)),
    getValue,
    getMeta: New.twinOp((k) => o.getMetaSync(k), (k) => o.getMetaAsync(k)),
    exists: New.twinOp((k) => o.existsSync(k), (k) => o.existsAsync(k)),
    put: New.twinOp((w) => o.putSync(w), (w) => o.putAsync(w)),
    delete: New.twinOp((k) => o.deleteSync(k), (k) => o.deleteAsync(k)),
    openList: () => listCursor(o.openList()),
    clock: o.clock ? New.twinOp(() => o.clock!.nowSync(), () => o.clock!.now()) : undefined,
    lock: New.pollingLock((k, w) => o.tryLock(k, w), (k) => o.lockSync(k)),
    unlock: (k) => o.unlock(k),
    filePath: o.filePath?.bind(o),
    blobWriter: New.twinOp(
      (k, m) => sink(o.blobWriterSync(k, m)),
      async (k, m) => sink(await o.blobWriterAsync(k, m)),
    ),
    openBlob: New.twinOp(
      (k) => {
        const s = o.openBlobSync(k)
        return s && source(s)
      },
      async (k) => {
        const s = await o.openBlobAsync(k)
        return s && source(s)
      },
    ),
    append: New.twinOp((k, r, m) => o.appendSync(k, r, m), (k, r, m) => o.appendAsync(k, r, m)),
    openLog: New.twinOp(
      (k) => {
        const c = o.openLogSync(k)
        return c && logCursor(c)
      },
      async (k) => {
        const c = await o.openLogAsync(k)
        return c && logCursor(c)
      },
    ),
    trimLog: New.twinOp((k, f, m) => o.trimLogSync(k, f, m), (k, f, m) => o.trimLogAsync(k, f, m)),
    close:
      o.close || o.closeSync
        ? New.twinOp(
            () => o.closeSync?.(),
            async () => {
              await o.close?.()
            },
          )
        : undefined,
  }
}

// ---- the old shape (…Sync/…Async pairs), until ts/backends/pure/ moves onto the seam ----

/**
 * A streaming listing: batches of at most `max` entries (entries and corrupt
 * files together), `undefined` once every entry was listed. Keys written or
 * deleted while a cursor runs may or may not be seen. A cursor is used in one
 * form (sync or async) at a time; `close` releases it early (idempotent).
 */
export interface LegacyListCursor {
  nextSync(max: number): RawListing | undefined
  next(max: number): Promise<RawListing | undefined>
  close(): void
}

/**
 * A log's records in batches of at most `max`, oldest first, `undefined` after
 * the last. Reads see the log as it was when opened (records appended since may
 * or may not be seen). `close` is idempotent.
 */
export interface LegacyLogCursor {
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
export interface LegacyBlobSink {
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
export interface LegacyBlobSource {
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

/** The old shape of Backing: every operation a …Sync/…Async pair. */
export interface LegacyBacking {
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
  openList(): LegacyListCursor
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
  /** Starts writing a blob under `key` with this metadata (see LegacyBlobSink). */
  blobWriterSync(key: Uint8Array, meta: Uint8Array): LegacyBlobSink
  blobWriterAsync(key: Uint8Array, meta: Uint8Array): Promise<LegacyBlobSink>
  /** Opens the blob at `key`; undefined when missing; `ERR_NOT_BINARY` when the key holds something else. */
  openBlobSync(key: Uint8Array): LegacyBlobSource | undefined
  openBlobAsync(key: Uint8Array): Promise<LegacyBlobSource | undefined>

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
  openLogSync(key: Uint8Array): LegacyLogCursor | undefined
  openLogAsync(key: Uint8Array): Promise<LegacyLogCursor | undefined>
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

