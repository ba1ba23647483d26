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
 *   other operations (the pure file engine over its file-system ops).
 *
 * This file is the new shape of `Backing`; it replaces the `…Sync`/`…Async`
 * pairs in ./index.ts when the facade moves onto it.
 */
import gensync from 'gensync'
import { KonserveError } from '../errors.js'
import type { LogInfo, LogRecord, NewRecord, RawEntry, RawListing, RawMeta, RawValue, RawWrite } from './index.js'

/** One backing operation: `.sync(...)`, `.async(...)`, or `yield*` in a gensync generator. */
export type Op<A extends unknown[], R> = gensync.Gensync<A, R>

/** An operation with only blocking code; its async form runs it and resolves. */
export function blockingOp<A extends unknown[], R>(fn: (...args: A) => R): Op<A, R> {
  return gensync({ sync: fn })
}

/** An operation with a blocking and a non-blocking implementation (the N-API binding's twins). */
export function twinOp<A extends unknown[], R>(sync: (...args: A) => R, async: (...args: A) => Promise<R>): Op<A, R> {
  return gensync({ sync, async })
}

/** An operation with no blocking form: `{ sync: true }` calls fail with ERR_NOT_SUPPORTED. */
export function asyncOp<A extends unknown[], R>(kind: string, fn: (...args: A) => Promise<R>): Op<A, R> {
  return gensync<A, R>({
    sync: () => {
      throw notBlocking(kind)
    },
    async: fn,
  })
}

/** The error of a blocking call on a backend that has none. */
export function notBlocking(kind: string): KonserveError {
  return new KonserveError('ERR_NOT_SUPPORTED', `the ${kind} store has no blocking form: call it without { sync: true }`)
}

/** A listing cursor (see Backing.openList): batches of at most `max`, undefined when done. */
export interface ListCursor {
  next: Op<[max: number], RawListing | undefined>
  /** Releases the cursor early; idempotent. */
  close(): void
}

/** A log's records in batches of at most `max`, oldest first, undefined after the last. */
export interface LogCursor {
  next: Op<[max: number], LogRecord[] | undefined>
  close(): void
}

/** A blob being written (the caller holds the key's lock); see ./index.ts BlobSink for the contract. */
export interface BlobSink {
  write: Op<[bytes: Uint8Array], void>
  commit: Op<[], void>
  /** Drops the staged blob; idempotent, and a no-op after commit. */
  abort(): void
}

/** An open blob, a consistent snapshot; see ./index.ts BlobSource for the contract. */
export interface BlobSource {
  readonly size: number
  readonly meta: RawMeta
  read: Op<[offset: number, length: number], Uint8Array>
  /** Optional: reads into memory the caller allocated; resolves to the bytes read. */
  readInto?(offset: number, target: Uint8Array): Promise<number>
  close(): void
  readonly plain?: { file: string; offset: number }
}

/**
 * What a backend implements. Members and their contracts are those of
 * ./index.ts `Backing`, each written once as an `Op`.
 */
export interface Backing {
  /** Which implementation does the work: 'native', 'pure', 'memory', 'idb', 'redis', … */
  readonly implementation: string
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
  getMeta: Op<[key: Uint8Array], RawMeta | undefined>
  exists: Op<[key: Uint8Array], boolean>
  /** Writes all entries; each key's write is atomic and, when durable, synced before returning. */
  put: Op<[writes: RawWrite[]], void>
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

  blobWriter: Op<[key: Uint8Array, meta: Uint8Array], BlobSink>
  openBlob: Op<[key: Uint8Array], BlobSource | undefined>

  append: Op<[key: Uint8Array, records: NewRecord[], createMeta: Uint8Array], LogInfo>
  openLog: Op<[key: Uint8Array], LogCursor | undefined>
  trimLog: Op<[key: Uint8Array, keepFrom: number, meta: Uint8Array], LogInfo>

  /**
   * Optional. Async form: finishes the writes already handed over (queued group
   * commits), then releases what the backend holds. Sync form: releases without
   * waiting, and throws (staying open) if that would drop queued writes.
   */
  close?: Op<[], void>
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

// setImmediate where there is one (Node), else a zero timeout (browsers).
const soon: (f: () => void) => void = typeof setImmediate === 'function' ? (f) => setImmediate(f) : (f) => setTimeout(f, 0)
