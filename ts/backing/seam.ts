/**
 * The sync/async seam (issue 20): every backing operation is written once, as
 * one `Op` (a gensync function), and the facade decides in one place whether
 * it runs blocking (`op.sync(...)`), as a Promise (`op.async(...)`), or inside
 * another operation (`yield* op(...)`).
 *
 * A backend builds its operations with one of these constructors:
 * - `blockingOp(fn)`: blocking code only (memory). Its async form runs the same
 *   code and resolves, for free.
 * - `twinOp(sync, async)`: two real implementations of one operation, where the
 *   platform has both (the N-API binding: a blocking call and a libuv-threadpool
 *   task). The only twins in the code base live behind this constructor.
 * - `asyncOp(kind, fn)`: no blocking form (IndexedDB, Redis, PostgreSQL, S3).
 *   Its sync form fails with ERR_NOT_SUPPORTED, the one place that says so.
 * - `gensync(function* () { ... })`: an operation written as a generator over
 *   other operations (the pure file engine over its file-system ops, the
 *   cache and tier layers over the backing under them).
 *
 * The leaf constructors put the backend's own functions behind `.sync` and
 * `.async` (no generator in between), so a hot path that calls them directly
 * costs what calling the backend costs. `.async` never throws: a synchronous
 * throw becomes a rejected Promise.
 *
 * This file is THE shape of a backing. `./index.ts` adds the raw record
 * types; the layers over a backing (`ts/layers/`) forward to it.
 */
import gensync from 'gensync'
import { KonserveError } from '../errors.js'
import type { LogInfo, LogRecord, NewRecord, RawBlobReplace, RawEntry, RawListing, RawMeta, RawReplace, RawValue, RawWrite } from './index.js'

/** One backing operation: `.sync(...)`, `.async(...)`, or `yield*` in a gensync generator. */
export type Op<A extends unknown[], R> = gensync.Gensync<A, R>

/** An operation with only blocking code; its async form runs it and resolves. */
export function blockingOp<A extends unknown[], R>(fn: (...args: A) => R): Op<A, R> {
  return leaf(fn, (...args) => {
    try {
      return Promise.resolve(fn(...args))
    } catch (err) {
      return Promise.reject(err)
    }
  })
}

/** An operation with a blocking and a non-blocking implementation (the N-API binding's twins). */
export function twinOp<A extends unknown[], R>(sync: (...args: A) => R, nonBlocking: (...args: A) => Promise<R>): Op<A, R> {
  return leaf(sync, (...args) => {
    try {
      return nonBlocking(...args)
    } catch (err) {
      return Promise.reject(err)
    }
  })
}

/** An operation with no blocking form: `{ sync: true }` calls fail with ERR_NOT_SUPPORTED. */
export function asyncOp<A extends unknown[], R>(kind: string, fn: (...args: A) => Promise<R>): Op<A, R> {
  return twinOp<A, R>(() => {
    throw notBlocking(kind)
  }, fn)
}

/** `sync` and `async` (which never throws) as one Op, each called directly by `.sync`/`.async`. */
function leaf<A extends unknown[], R>(sync: (...args: A) => R, async: (...args: A) => Promise<R>): Op<A, R> {
  const op = gensync<A, R>({ sync, async })
  op.sync = sync
  op.async = async
  return op
}

/** The value of an answer that needs no I/O (a cache hit), or MISS. */
export const MISS: unique symbol = Symbol('miss')

/**
 * An operation with a fast answer (`hit`: a cache hit, or MISS) before its
 * general form (`miss`, any Op): one operation, and a hit costs a function
 * call in every form (no generator, no Promise beyond the one returned).
 */
export function withFastPath<A extends unknown[], R>(hit: (...args: A) => R | typeof MISS, miss: Op<A, R>): Op<A, R> {
  const op = gensync(function* (...args: A): gensync.Handler<R> {
    const r = hit(...args)
    return r !== MISS ? r : yield* miss(...args)
  })
  op.sync = (...args) => {
    const r = hit(...args)
    return r !== MISS ? r : miss.sync(...args)
  }
  op.async = (...args) => {
    try {
      const r = hit(...args)
      return r !== MISS ? Promise.resolve(r) : miss.async(...args)
    } catch (err) {
      return Promise.reject(err)
    }
  }
  return op
}

/** The error of a blocking call on a backend that has none. */
export function notBlocking(kind: string): KonserveError {
  return new KonserveError('ERR_NOT_SUPPORTED', `the ${kind} store has no blocking form: call it without { sync: true }`)
}

/**
 * A streaming listing: batches of at most `max` entries (entries and corrupt
 * files together), `undefined` once every entry was listed. Keys written or
 * deleted while a cursor runs may or may not be seen. A cursor is used in one
 * form (sync or async) at a time.
 */
export interface ListCursor {
  next: Op<[max: number], RawListing | undefined>
  /** Releases the cursor early; idempotent. */
  close(): void
}

/**
 * A log's records in batches of at most `max`, oldest first, `undefined` after
 * the last. Reads see the log as it was when opened (records appended since may
 * or may not be seen). `close` is idempotent.
 */
export interface LogCursor {
  next: Op<[max: number], LogRecord[] | undefined>
  close(): void
}

/**
 * A blob being written: bytes go to a private staging area; `commit` makes it
 * durable and replaces the key atomically (a reader sees the old blob or the
 * whole new one). The caller holds the key's lock from creation to
 * commit/abort. After a failed write or commit, or `abort`, nothing is left.
 */
export interface BlobSink {
  write: Op<[bytes: Uint8Array], void>
  commit: Op<[], void>
  /**
   * Optional: `write(bytes)` then `commit()`, for the blob's last bytes, which
   * the sink reads only during the call: it may store them without the copy a
   * `write` makes of a last partial chunk (more bytes might follow a write).
   */
  commitWith?: Op<[bytes: Uint8Array], void>
  /** Drops the staged blob; idempotent, and a no-op after commit. */
  abort(): void
}

/**
 * A whole log being written (an archive's import): records go to a private
 * staging area in batches, indexes consecutive from the first index given;
 * `commit` makes the log durable and replaces the key atomically (a reader
 * sees the old contents or the whole new log, even after a crash). The
 * caller holds the key's lock from creation to commit/abort. After a failed
 * append or commit, or `abort`, nothing is left.
 */
export interface LogWriter {
  append: Op<[records: NewRecord[]], void>
  commit: Op<[], LogInfo>
  /** Drops the staged log; idempotent, and a no-op after commit. */
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
  read: Op<[offset: number, length: number], Uint8Array>
  /**
   * Optional: reads into `target` (up to its length) from `offset`; resolves
   * to the number of bytes read (fewer only at the end of the blob). Lets
   * streams read into memory the JavaScript engine allocated and accounts for.
   */
  readInto?(offset: number, target: Uint8Array): Promise<number>
  close(): void
  /**
   * Where the blob's bytes lie as they are, in one file, when it is stored
   * neither compressed nor encrypted (FORMAT.md §4.5); otherwise undefined.
   */
  readonly plain?: { file: string; offset: number }
}

/**
 * What a backend implements to get the whole konserve API (paths,
 * serializers, metadata, locking, sync and async) for free. A backend stores,
 * per key, the serializer id, the metadata bytes and the value bytes (or a
 * blob, or an append log); keys arrive as their canonical encoding (CKE,
 * FORMAT.md §2). Every operation is one `Op`; the facade runs it blocking or
 * as a Promise.
 */
export interface Backing {
  /** Which implementation does the work: 'native', 'pure', 'memory' (later 'idb', 'redis', …). */
  readonly implementation: 'native' | 'pure' | 'memory' | (string & {})
  /** Keys with the same scope share locks (one directory = one scope). */
  readonly lockScope: string
  /** True when a multi-key write is all-or-nothing. */
  readonly atomicMultiKey: boolean
  /**
   * False for a backend with no blocking I/O: the facade then fails every
   * `{ sync: true }` call with ERR_NOT_SUPPORTED before it does anything.
   */
  readonly blocking: boolean

  get: Op<[key: Uint8Array], RawEntry | undefined>
  /** Optional hot path of `get`: the value without metadata, possibly lent (RawValue.shared). */
  getValue?: Op<[key: Uint8Array], RawValue | undefined>
  /**
   * Optional: `getValue` answered on this thread when that is not expected
   * to wait for the disk (a cached or logged key; in the pure engine, a file
   * written or read by an async get lately: backends/pure/warm.ts), else
   * MISS. The async `get` tries it first, so such a read costs one resolved
   * Promise, not a chain of them.
   */
  getValueNow?: (key: Uint8Array) => RawValue | undefined | typeof MISS
  getMeta: Op<[key: Uint8Array], RawMeta | undefined>
  exists: Op<[key: Uint8Array], boolean>
  /** Writes all entries; each key's write is atomic and, when durable, synced before returning. */
  put: Op<[writes: RawWrite[]], void>
  /**
   * Optional: a replacing write with the revision read fused in, for a
   * backing where that saves a round trip (the native store: one threadpool
   * task, its lock files taken and released inside it). Under the key's
   * lock (taken here when `w.lock`, one attempt), reads the revision the key
   * is at (0: missing), checks `w.expectedRevision`, writes with the next
   * revision in `w.meta`'s slot. Returns the new revision, or REPLACE_BUSY
   * (the lock is held elsewhere), REPLACE_UNSURE (nothing done: use the
   * general path), `REPLACE_MISMATCH - actual` (not written). Layers do not
   * forward it, so a layer's writes take the general path. A backing with it
   * has no `clock`, or one whose blocking form is what its async form runs:
   * the async assoc stamps its write with `clock.sync()`, no Promise.
   */
  replace?: Op<[w: RawReplace], number>
  /** Deletes the keys; returns whether each existed. */
  delete: Op<[keys: Uint8Array[]], boolean[]>
  /** Every entry, in batches (memory proportional to a batch). */
  openList(): ListCursor
  /** The store's own lastWrite clock (ms since epoch); without one the process clock is used. */
  readonly clock?: Op<[], number>

  /**
   * Takes every key's lock beyond this JavaScript thread (other threads and
   * processes), all or none, waiting at most the store's lock timeout
   * (ERR_LOCK_TIMEOUT naming the holder). The async form never blocks the
   * event loop. The facade already serializes callers within one thread; a
   * backend private to one thread (memory) makes this a no-op.
   */
  lock: Op<[keys: Uint8Array[]], void>
  unlock(keys: Uint8Array[]): void
  /** The file holding a key, where there is one. */
  filePath?(key: Uint8Array): string

  // ---- streamed blobs (FORMAT.md §4.5) ----
  /** Starts writing a blob under `key` with this metadata (see BlobSink). */
  blobWriter: Op<[key: Uint8Array, meta: Uint8Array], BlobSink>
  /**
   * Optional: `blobWriter` with the lock and the revision read of a replacing
   * write fused in, as `replace` does for a value (the native store: the open
   * is one threadpool task, and the commit's task releases the lock, so no
   * lock file is touched on the JavaScript thread). Under the key's lock
   * (taken here when `w.lock`, one attempt, and then released by the sink's
   * commit or abort), reads the revision the key is at, checks
   * `w.expectedRevision`, and opens a sink whose metadata carries the next
   * revision in `w.meta`'s slot. Returns the sink with that revision, or a
   * number as `replace` answers (REPLACE_BUSY, REPLACE_UNSURE,
   * `REPLACE_MISMATCH - actual`: nothing opened, the lock as it was). Layers
   * do not forward it.
   */
  blobReplace?: Op<[w: RawBlobReplace], { sink: BlobSink; revision: number } | number>
  /** Opens the blob at `key`; undefined when missing; `ERR_NOT_BINARY` when the key holds something else. */
  openBlob: Op<[key: Uint8Array], BlobSource | undefined>

  // ---- append logs (FORMAT.md §4.6) ----
  /**
   * Appends records (one or more, in order) to the log at `key` (the caller
   * holds the key's lock), durably when the store is durable: all of them are
   * written and synced together (one fsync for a group commit). A missing key
   * becomes a new log with metadata `createMeta`; a key holding something else
   * fails with `ERR_NOT_A_LOG` and is not changed. Returns the log after the
   * append.
   */
  append: Op<[key: Uint8Array, records: NewRecord[], createMeta: Uint8Array], LogInfo>
  /** The records of the log at `key`; undefined when missing; `ERR_NOT_A_LOG` for another kind of key. */
  openLog: Op<[key: Uint8Array], LogCursor | undefined>
  /**
   * Replaces the log at `key` atomically by one with metadata `meta` and only
   * the records whose index is at least `keepFrom` (caller holds the lock).
   */
  trimLog: Op<[key: Uint8Array, keepFrom: number, meta: Uint8Array], LogInfo>
  /**
   * Optional: starts writing a whole new log for `key` with metadata `meta`
   * whose first record will have index `firstIndex` (see LogWriter). Without
   * it an import deletes the key and appends to it (an interrupted import
   * then leaves the log part-written). Layers do not forward it.
   */
  logWriter?: Op<[key: Uint8Array, meta: Uint8Array, firstIndex: number], LogWriter>

  /**
   * Optional. Async form: finishes the writes already handed over (queued group
   * commits), then releases what the backend holds. Sync form: releases without
   * waiting, and throws (staying open) if that would drop queued writes.
   */
  close?: Op<[], void>
  /**
   * Optional: resolves once the writes handed to the backing so far are where
   * they belong (a write-behind tier: in the back store), rejecting with what
   * failed since the last flush. Without it a flush has nothing to wait for.
   */
  flush?(): Promise<void>
}

/**
 * Builds a `lock` op from a non-blocking all-or-none attempt and a blocking
 * wait: the async form polls `tryLock` with short growing pauses (never
 * blocking the loop); `tryLock` fails with ERR_LOCK_TIMEOUT once `waitedMs`
 * reaches the store's lock timeout.
 */
export function pollingLock(
  tryLock: (keys: Uint8Array[], waitedMs: number) => boolean,
  lockBlocking: (keys: Uint8Array[]) => void,
): Op<[keys: Uint8Array[]], void> {
  return twinOp(lockBlocking, async (keys) => {
    const start = performance.now()
    for (let pause = 0; !tryLock(keys, performance.now() - start); pause = Math.min(pause * 2 || 0.25, 8)) {
      await new Promise<void>((r) => (pause < 1 ? soon(r) : setTimeout(r, pause)))
    }
  })
}

/** setImmediate where there is one (Node), else a zero timeout (browsers); looked up when called. */
function soon(f: () => void): void {
  const g = globalThis as { setImmediate?: (f: () => void) => unknown }
  if (typeof g.setImmediate === 'function') g.setImmediate(f)
  else setTimeout(f, 0)
}
