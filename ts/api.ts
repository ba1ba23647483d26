/**
 * The konserve API. Every operation is written once, as a generator over the
 * backing's primitives, and run either blocking (`{ sync: true }`) or as a
 * Promise, by gensync. Locks: every write and every `bget` holds the key's lock
 * from its read to its write; plain reads need none (a file is replaced by an
 * atomic rename, so a reader sees the old file or the new one).
 */
import { Readable } from 'node:stream'
import gensync, { type Handler } from 'gensync'
import type { Backing, RawEntry, RawMeta, RawWrite } from './backing.js'
import { nowMs } from './clock.js'
import { type Key, decodeKey, encodeKey } from './codec/key.js'
import { type KeyType, type Metadata, decodeMeta, encodeMeta } from './codec/meta.js'
import { KonserveError, withKey } from './errors.js'
import { type WriteOp, afterWrite } from './hooks.js'
import { acquire, acquireSync, lockIds, release } from './locks.js'
import { type Path, getPath, missing, setPath } from './paths.js'
import { RAW_BYTES_ID } from './serializers.js'
import type { Store, SyncOption } from './store.js'

export type { Key, KeyType, Metadata }

/** Options every operation takes: `sync` for the blocking form. */
export interface Options extends SyncOption {}

/** Options of operations that write a key. */
export interface WriteOptions extends Options {
  /** User metadata merged into the key's metadata (konserve's own fields win). */
  meta?: Record<string, unknown>
  /**
   * Write only if the key is at this revision (its metadata's `revision`);
   * `0`: only if the key does not exist yet. Otherwise the call fails with
   * `ERR_REVISION_MISMATCH` (its `actualRevision` says where the key is), no
   * update function runs and nothing is written. Checked under the key's lock,
   * so it holds across processes.
   */
  expectedRevision?: number
}

/** What the write operations take from their options. */
type WriteArgs = Pick<WriteOptions, 'meta' | 'expectedRevision'>
const writeArgs = (o: WriteOptions | undefined): WriteArgs => ({ meta: o?.meta, expectedRevision: o?.expectedRevision })

/** Sync calls return `T`; async calls return `Promise<T>`. */
export type Result<O, T> = O extends { sync: true } ? T : Promise<T>

// ---- primitives: one backing call, blocking or not --------------------------

const bGet = gensync({
  sync: (b: Backing, k: Uint8Array) => b.getSync(k),
  async: (b: Backing, k: Uint8Array) => b.getAsync(k),
})
const bGetMeta = gensync({
  sync: (b: Backing, k: Uint8Array) => b.getMetaSync(k),
  async: (b: Backing, k: Uint8Array) => b.getMetaAsync(k),
})
const bExists = gensync({
  sync: (b: Backing, k: Uint8Array) => b.existsSync(k),
  async: (b: Backing, k: Uint8Array) => b.existsAsync(k),
})
const bPut = gensync({
  sync: (b: Backing, ws: RawWrite[]) => b.putSync(ws),
  async: (b: Backing, ws: RawWrite[]) => b.putAsync(ws),
})
const bDelete = gensync({
  sync: (b: Backing, ks: Uint8Array[]) => b.deleteSync(ks),
  async: (b: Backing, ks: Uint8Array[]) => b.deleteAsync(ks),
})
/** @internal */
export const bGetMetaOp = bGetMeta
/** @internal */
export const bDeleteOp = bDelete
const bList = gensync({
  sync: (b: Backing) => b.listSync(),
  async: (b: Backing) => b.listAsync(),
})

/** A lastWrite stamp: the store's clock (file stores: the watermark), else the process's. */
const stamp = gensync({
  sync: (b: Backing) => new Date(b.clock ? b.clock.nowSync() : nowMs()),
  async: async (b: Backing) => new Date(b.clock ? await b.clock.now() : nowMs()),
})

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return v !== null && (typeof v === 'object' || typeof v === 'function') && typeof (v as { then?: unknown }).then === 'function'
}

/** Calls user code: awaited in async form; in sync form it must not return a Promise. */
const callUser = gensync({
  sync: (f: (...a: unknown[]) => unknown, args: unknown[]) => {
    const r = f(...args)
    if (isThenable(r)) {
      throw new KonserveError('ERR_INVALID_ARGUMENT', 'a { sync: true } call got a function that returned a Promise; use the async form')
    }
    return r
  },
  async: async (f: (...a: unknown[]) => unknown, args: unknown[]) => f(...args),
})

// Async lock waits poll the cross-process lock with a short, growing pause.
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** @internal Takes the keys' locks (this thread, then the backing's cross-process lock). */
export const lockKeys = gensync({
  sync: (b: Backing, keys: Uint8Array[]): string[] => {
    const ids = lockIds(b.lockScope, keys)
    acquireSync(ids)
    try {
      b.lockSync(keys)
    } catch (err) {
      release(ids)
      throw err
    }
    return ids
  },
  async: async (b: Backing, keys: Uint8Array[]): Promise<string[]> => {
    const ids = lockIds(b.lockScope, keys)
    await acquire(ids)
    try {
      for (let pause = 0; !b.tryLock(keys); pause = Math.min(pause * 2 || 0.25, 8)) {
        await (pause < 1 ? new Promise<void>((r) => setImmediate(r)) : sleep(pause))
      }
    } catch (err) {
      release(ids)
      throw err
    }
    return ids
  },
})

/** @internal Runs `body` holding the keys' locks. */
export function* withLock<R>(b: Backing, keys: Uint8Array[], body: () => Handler<R>): Handler<R> {
  const ids = yield* lockKeys(b, keys)
  try {
    return yield* body()
  } finally {
    try {
      b.unlock(keys)
    } finally {
      release(ids)
    }
  }
}

// ---- encoding helpers -------------------------------------------------------

function decodeValue(store: Store, raw: RawEntry): unknown {
  if (raw.serializer === RAW_BYTES_ID) return raw.value
  const s = store.serializers.forId(raw.serializer)
  try {
    return s.decode(raw.value)
  } catch (err) {
    throw new KonserveError('ERR_DESERIALIZE', `the ${s.name} serializer cannot decode the stored value: ${(err as Error).message}`, {
      cause: err,
    })
  }
}

function encodeValue(store: Store, value: unknown): { serializer: number; bytes: Uint8Array } {
  const s = store.serializers.write
  try {
    return { serializer: s.id, bytes: s.encode(value) }
  } catch (err) {
    if (err instanceof KonserveError) throw err
    throw new KonserveError('ERR_SERIALIZE', `the ${s.name} serializer cannot encode the value: ${(err as Error).message}`, {
      cause: err,
    })
  }
}

/** @internal */
export function readMeta(key: Key, raw: { meta: Uint8Array }): Metadata {
  return decodeMeta(key, raw.meta)
}

/** A key's revision: 0 when it is missing; files from before revisions count as 1. */
function revisionOf(meta: Metadata | undefined): number {
  if (!meta) return 0
  return typeof meta.revision === 'number' ? meta.revision : 1
}

function checkRevision(w: WriteArgs, current: Metadata | undefined): void {
  if (w.expectedRevision === undefined) return
  const actual = revisionOf(current)
  if (actual !== w.expectedRevision) {
    const e = new KonserveError(
      'ERR_REVISION_MISMATCH',
      w.expectedRevision === 0
        ? `the key must not exist yet, but it is at revision ${actual}`
        : `expected revision ${w.expectedRevision}, but the key is at revision ${actual}`,
    )
    e.actualRevision = actual
    throw e
  }
}

/**
 * The metadata of a write: `prev`'s fields if `keep` (updates keep them,
 * replacing writes do not), the user's, then konserve's own, which win; the
 * revision counts on from `prev`'s.
 */
function nextMeta(key: Key, type: KeyType, prev: Metadata | undefined, w: WriteArgs, keep: boolean, lastWrite: Date): Metadata {
  return { ...(keep ? prev : undefined), ...w.meta, key, type, lastWrite, revision: revisionOf(prev) + 1 }
}

/**
 * The current metadata of a key that a replacing write (assoc, bassoc,
 * multiAssoc) is about to overwrite, for its revision. An unreadable old file
 * must not stop the write that repairs it: it restarts at revision 1, unless
 * the caller asked for a revision, which cannot then be checked.
 */
function* metaBeforeReplace(store: Store, key: Key, cke: Uint8Array, w: WriteArgs): Handler<Metadata | undefined> {
  try {
    const raw = yield* bGetMeta(store.backing, cke)
    return raw ? readMeta(key, raw) : undefined
  } catch (err) {
    if (w.expectedRevision !== undefined) throw err
    return undefined
  }
}

function checkPath(path: unknown): asserts path is readonly [Key, ...unknown[]] {
  if (!Array.isArray(path) || path.length === 0) {
    throw new KonserveError('ERR_INVALID_PATH', 'a path is a non-empty array whose first element is the key')
  }
}

/** @internal */
export function run<A extends unknown[], R>(op: gensync.Gensync<A, R>, opts: Options | undefined, args: A): R | Promise<R> {
  if (opts?.sync) return op.sync(...args)
  try {
    return op.async(...args)
  } catch (err) {
    return Promise.reject(err)
  }
}

/** Runs `body` with errors about `key` typed and carrying the key. */
function* about<R>(key: unknown, body: () => Handler<R>): Handler<R> {
  try {
    return yield* body()
  } catch (err) {
    throw withKey(err, key)
  }
}

// ---- reads ------------------------------------------------------------------

const existsOp = gensync(function* (store: Store, key: Key) {
  return yield* about(key, function* () {
    return yield* bExists(store.backing, encodeKey(key))
  })
})

/** Whether `key` is in the store. */
export function exists<O extends Options>(store: Store, key: Key, opts?: O): Result<O, boolean> {
  return run(existsOp, opts, [store, key]) as Result<O, boolean>
}

function* readValue(store: Store, key: Key): Handler<{ found: boolean; value: unknown; meta?: Metadata }> {
  const raw = yield* bGet(store.backing, encodeKey(key))
  if (!raw) return { found: false, value: undefined }
  return { found: true, value: decodeValue(store, raw), meta: readMeta(key, raw) }
}

const getInOp = gensync(function* (store: Store, path: Path, notFound: unknown) {
  checkPath(path)
  const [key, ...rest] = path
  return yield* about(key, function* () {
    const { found, value } = yield* readValue(store, key)
    if (!found) return notFound
    const v = getPath(value, rest)
    return v === missing ? notFound : v
  })
})

export interface GetOptions extends Options {
  /** Returned when the key is missing (default undefined). */
  notFound?: unknown
}

/** The value of `key`, or `opts.notFound` (default undefined) when it is missing. */
export function get<O extends GetOptions>(store: Store, key: Key, opts?: O): Result<O, unknown> {
  return run(getInOp, opts, [store, [key], opts?.notFound]) as Result<O, unknown>
}

/**
 * The value at `path` = [key, ...inner path], or `notFound` when the key or any
 * step of the inner path is missing.
 */
export function getIn<O extends Options>(store: Store, path: Path, notFound?: unknown, opts?: O): Result<O, unknown> {
  return run(getInOp, opts, [store, path, notFound]) as Result<O, unknown>
}

const getMetaOp = gensync(function* (store: Store, key: Key) {
  return yield* about(key, function* () {
    const raw: RawMeta | undefined = yield* bGetMeta(store.backing, encodeKey(key))
    return raw ? readMeta(key, raw) : undefined
  })
})

/** The metadata of `key` (`{ key, type, lastWrite, ... }`), or undefined. Reads no value. */
export function getMeta<O extends Options>(store: Store, key: Key, opts?: O): Result<O, Metadata | undefined> {
  return run(getMetaOp, opts, [store, key]) as Result<O, Metadata | undefined>
}

export interface KeysOptions extends Options {
  /** Called for each file that cannot be read (it is skipped, never changed). Default: a process warning. */
  onCorrupt?: (err: KonserveError) => void
}

/** @internal */
export function warnCorrupt(err: KonserveError): void {
  if (typeof process !== 'undefined' && typeof process.emitWarning === 'function') {
    process.emitWarning(err.message, { code: err.code, detail: err.file })
  } else {
    console.warn(err)
  }
}

const keysOp = gensync(function* (store: Store, onCorrupt: (err: KonserveError) => void) {
  const listing = yield* bList(store.backing)
  const out: Metadata[] = []
  for (const c of listing.corrupt) {
    onCorrupt(new KonserveError(c.code as KonserveError['code'], c.message, { file: c.file }))
  }
  for (const e of listing.entries) {
    try {
      out.push(readMeta(decodeKey(e.key), e))
    } catch (err) {
      const ke = withKey(err, undefined)
      if (e.file) ke.file = e.file
      onCorrupt(ke)
    }
  }
  return out
})

/** The metadata of every key in the store: `{ key, type, lastWrite, ... }` each. */
export function keys<O extends KeysOptions>(store: Store, opts?: O): Result<O, Metadata[]> {
  return run(keysOp, opts, [store, opts?.onCorrupt ?? warnCorrupt]) as Result<O, Metadata[]>
}

// ---- writes -----------------------------------------------------------------

function buildWrite(store: Store, cke: Uint8Array, value: unknown, meta: Metadata): RawWrite {
  const { serializer, bytes } = encodeValue(store, value)
  return { key: cke, serializer, meta: encodeMeta(meta), value: bytes }
}

const assocOp = gensync(function* (store: Store, key: Key, value: unknown, w: WriteArgs) {
  return yield* about(key, function* () {
    const cke = encodeKey(key)
    // Encode before locking: a value that cannot be stored fails with nothing written.
    const { serializer, bytes } = encodeValue(store, value)
    yield* withLock(store.backing, [cke], function* () {
      const prev = yield* metaBeforeReplace(store, key, cke, w)
      checkRevision(w, prev)
      const meta = encodeMeta(nextMeta(key, 'value', prev, w, false, yield* stamp(store.backing)))
      yield* bPut(store.backing, [{ key: cke, serializer, meta, value: bytes }])
    })
    afterWrite(store, { op: 'assoc', key, path: [key], oldValue: undefined, newValue: value })
    return [undefined, value] as [undefined, unknown]
  })
})

/**
 * Stores `value` under `key`, replacing any old value and metadata.
 * Returns `[undefined, value]`: the old value is not read.
 */
export function assoc<O extends WriteOptions>(store: Store, key: Key, value: unknown, opts?: O): Result<O, [undefined, unknown]> {
  return run(assocOp, opts, [store, key, value, writeArgs(opts)]) as Result<O, [undefined, unknown]>
}

type Updater = (old: unknown) => unknown

const updateInOp = gensync(function* (store: Store, path: Path, fn: Updater, w: WriteArgs, op: WriteOp) {
  checkPath(path)
  const [key, ...rest] = path
  return yield* about(key, function* () {
    const cke = encodeKey(key)
    const result = yield* withLock(store.backing, [cke], function* () {
      const raw = yield* bGet(store.backing, cke)
      const old = raw ? decodeValue(store, raw) : undefined
      const oldMeta = raw ? readMeta(key, raw) : undefined
      checkRevision(w, oldMeta)
      if (raw && raw.serializer === RAW_BYTES_ID && rest.length > 0) {
        throw new KonserveError('ERR_INVALID_PATH', 'cannot go into a binary value')
      }
      const at = getPath(old, rest)
      const leaf = yield* callUser(fn as (...a: unknown[]) => unknown, [at === missing ? undefined : at])
      const next = setPath(old, rest, leaf)
      yield* bPut(store.backing, [buildWrite(store, cke, next, nextMeta(key, 'value', oldMeta, w, true, yield* stamp(store.backing)))])
      return [old, next] as [unknown, unknown]
    })
    afterWrite(store, { op, key, path: [key, ...rest], oldValue: result[0], newValue: result[1] })
    return result
  })
})

/**
 * Atomically replaces the value at `path` with `fn(current)` (undefined when
 * missing; missing maps along the path are created). No other writer runs in
 * between, in this process or another. Returns `[old, new]` of the whole
 * top-level value. In async form `fn` may return a Promise.
 */
export function updateIn<O extends WriteOptions>(
  store: Store,
  path: Path,
  fn: (old: any) => unknown,
  opts?: O,
): Result<O, [unknown, unknown]> {
  return run(updateInOp, opts, [store, path, fn, writeArgs(opts), 'updateIn']) as Result<O, [unknown, unknown]>
}

/** `updateIn(store, [key], fn)`. */
export function update<O extends WriteOptions>(store: Store, key: Key, fn: (old: any) => unknown, opts?: O): Result<O, [unknown, unknown]> {
  return run(updateInOp, opts, [store, [key], fn, writeArgs(opts), 'update']) as Result<O, [unknown, unknown]>
}

/** Sets the value at `path` (creating maps along it). Returns `[old, new]` of the top-level value. */
export function assocIn<O extends WriteOptions>(store: Store, path: Path, value: unknown, opts?: O): Result<O, [unknown, unknown]> {
  return run(updateInOp, opts, [store, path, () => value, writeArgs(opts), 'assocIn']) as Result<O, [unknown, unknown]>
}

const dissocOp = gensync(function* (store: Store, key: Key, w: WriteArgs) {
  return yield* about(key, function* () {
    const cke = encodeKey(key)
    const existed = yield* withLock(store.backing, [cke], function* () {
      if (w.expectedRevision !== undefined) {
        const raw = yield* bGetMeta(store.backing, cke)
        checkRevision(w, raw ? readMeta(key, raw) : undefined)
      }
      const [existed] = yield* bDelete(store.backing, [cke])
      return existed === true
    })
    if (existed) afterWrite(store, { op: 'dissoc', key, path: [key], oldValue: undefined, newValue: undefined })
    return existed
  })
})

/** Removes `key`. Returns whether it existed. Takes `expectedRevision` like the writes. */
export function dissoc<O extends Options & Pick<WriteOptions, 'expectedRevision'>>(store: Store, key: Key, opts?: O): Result<O, boolean> {
  return run(dissocOp, opts, [store, key, { expectedRevision: opts?.expectedRevision }]) as Result<O, boolean>
}

// ---- binary blobs -------------------------------------------------------------

function toBytes(input: unknown): Uint8Array {
  if (input instanceof Uint8Array) return input
  if (input instanceof ArrayBuffer) return new Uint8Array(input)
  if (ArrayBuffer.isView(input)) return new Uint8Array(input.buffer, input.byteOffset, input.byteLength)
  if (typeof input === 'string') return new TextEncoder().encode(input)
  throw new KonserveError('ERR_INVALID_ARGUMENT', 'bassoc takes a Uint8Array, Buffer, ArrayBuffer, typed array or string')
}

const bassocOp = gensync(function* (store: Store, key: Key, input: unknown, w: WriteArgs) {
  return yield* about(key, function* () {
    const cke = encodeKey(key)
    const bytes = toBytes(input)
    yield* withLock(store.backing, [cke], function* () {
      const prev = yield* metaBeforeReplace(store, key, cke, w)
      checkRevision(w, prev)
      const meta = encodeMeta(nextMeta(key, 'binary', prev, w, false, yield* stamp(store.backing)))
      yield* bPut(store.backing, [{ key: cke, serializer: RAW_BYTES_ID, meta, value: bytes }])
    })
    afterWrite(store, { op: 'bassoc', key, path: [key], oldValue: undefined, newValue: bytes })
    return true as const
  })
})

/** Stores raw bytes under `key` (no serializer). Returns true. */
export function bassoc<O extends WriteOptions>(store: Store, key: Key, bytes: Uint8Array | ArrayBuffer | string, opts?: O): Result<O, true> {
  return run(bassocOp, opts, [store, key, bytes, writeArgs(opts)]) as Result<O, true>
}

/** What `bget`'s callback gets: `blob` in sync form, `stream` in async form. */
export interface BlobAccess {
  size: number
  blob?: Buffer
  stream?: Readable
}

function asBuffer(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength)
}

const bgetOp = gensync(function* (store: Store, key: Key, cb: (blob: BlobAccess) => unknown, streaming: boolean) {
  return yield* about(key, function* () {
    const cke = encodeKey(key)
    return yield* withLock(store.backing, [cke], function* () {
      const raw = yield* bGet(store.backing, cke)
      if (!raw) return undefined
      if (raw.serializer !== RAW_BYTES_ID) {
        throw new KonserveError('ERR_NOT_BINARY', 'the key holds a value, not binary data written by bassoc')
      }
      const blob = asBuffer(raw.value)
      const access: BlobAccess = streaming ? { size: blob.length, stream: Readable.from([blob]) } : { size: blob.length, blob }
      return yield* callUser(cb as (...a: unknown[]) => unknown, [access])
    })
  })
})

/**
 * Calls `cb` with the key's bytes while the key is locked and returns what `cb`
 * returns (awaited in async form). Sync form: `{ size, blob }`; async form:
 * `{ size, stream }`. A missing key returns undefined without calling `cb`.
 */
export function bget<O extends Options, R>(store: Store, key: Key, cb: (blob: BlobAccess) => R, opts?: O): Result<O, Awaited<R> | undefined> {
  return run(bgetOp, opts, [store, key, cb as (b: BlobAccess) => unknown, !opts?.sync]) as Result<O, Awaited<R> | undefined>
}

// ---- append-only logs -----------------------------------------------------------

function* readLog(store: Store, key: Key): Handler<unknown[] | undefined> {
  const { found, value, meta } = yield* readValue(store, key)
  if (!found) return undefined
  if (meta?.type !== 'append-log' || !Array.isArray(value)) {
    throw new KonserveError('ERR_NOT_A_LOG', 'the key holds something other than an append log')
  }
  return value
}

const appendOp = gensync(function* (store: Store, key: Key, elem: unknown, w: WriteArgs) {
  return yield* about(key, function* () {
    const cke = encodeKey(key)
    const [old, next] = yield* withLock(store.backing, [cke], function* () {
      const raw = yield* bGet(store.backing, cke)
      const oldMeta = raw ? readMeta(key, raw) : undefined
      const old = raw ? decodeValue(store, raw) : []
      if (raw && (oldMeta?.type !== 'append-log' || !Array.isArray(old))) {
        throw new KonserveError('ERR_NOT_A_LOG', 'the key holds something other than an append log')
      }
      checkRevision(w, oldMeta)
      // The whole log is one file replaced atomically: a crash leaves the log
      // before or after this append, never a half-linked list.
      const next = [...(old as unknown[]), elem]
      yield* bPut(store.backing, [buildWrite(store, cke, next, nextMeta(key, 'append-log', oldMeta, w, true, yield* stamp(store.backing)))])
      return [raw ? old : undefined, next] as const
    })
    afterWrite(store, { op: 'append', key, path: [key], oldValue: old, newValue: next })
    return next.length
  })
})

/** Appends `elem` to the log at `key` (creating it). Returns the log's length after the append. */
export function append<O extends WriteOptions>(store: Store, key: Key, elem: unknown, opts?: O): Result<O, number> {
  return run(appendOp, opts, [store, key, elem, writeArgs(opts)]) as Result<O, number>
}

const logOp = gensync(function* (store: Store, key: Key) {
  return yield* about(key, () => readLog(store, key))
})

/** The elements of the log at `key`, oldest first, or undefined when there is no log. */
export function log<O extends Options>(store: Store, key: Key, opts?: O): Result<O, unknown[] | undefined> {
  return run(logOp, opts, [store, key]) as Result<O, unknown[] | undefined>
}

const reduceLogOp = gensync(function* (store: Store, key: Key, fn: (acc: unknown, elem: unknown) => unknown, init: unknown) {
  return yield* about(key, function* () {
    const elems = (yield* readLog(store, key)) ?? []
    let acc = init
    for (const e of elems) acc = yield* callUser(fn as (...a: unknown[]) => unknown, [acc, e])
    return acc
  })
})

/** Folds the log at `key` oldest first: `fn(acc, elem)`, starting from `init`. */
export function reduceLog<O extends Options, A>(
  store: Store,
  key: Key,
  fn: (acc: A, elem: any) => A | Promise<A>,
  init: A,
  opts?: O,
): Result<O, A> {
  return run(reduceLogOp, opts, [store, key, fn as (a: unknown, e: unknown) => unknown, init]) as Result<O, A>
}

// ---- several keys at once ---------------------------------------------------------

function entriesOf(kvs: unknown): Array<[Key, unknown]> {
  if (kvs instanceof Map) return [...kvs.entries()] as Array<[Key, unknown]>
  if (kvs !== null && typeof kvs === 'object' && Symbol.iterator in kvs) return [...(kvs as Iterable<[Key, unknown]>)]
  if (kvs !== null && typeof kvs === 'object') return Object.entries(kvs) as Array<[Key, unknown]>
  throw new KonserveError('ERR_INVALID_ARGUMENT', 'multiAssoc takes a Map, an iterable of [key, value] pairs, or an object')
}

const multiGetOp = gensync(function* (store: Store, ks: Key[]) {
  const out = new Map<Key, unknown>()
  for (const k of ks) {
    const { found, value } = yield* about(k, () => readValue(store, k))
    if (found) out.set(k, value)
  }
  return out
})

/** The values of the keys that exist, as a Map from key to value. */
export function multiGet<O extends Options>(store: Store, ks: Iterable<Key>, opts?: O): Result<O, Map<Key, unknown>> {
  return run(multiGetOp, opts, [store, [...ks]]) as Result<O, Map<Key, unknown>>
}

const multiAssocOp = gensync(function* (store: Store, kvs: unknown, extra: Record<string, unknown> | undefined) {
  const entries = entriesOf(kvs)
  const w: WriteArgs = { meta: extra }
  // Encode every value before locking: one that cannot be stored fails the batch with nothing written.
  const encoded = entries.map(([k, v]) => {
    try {
      return { key: k, cke: encodeKey(k), ...encodeValue(store, v) }
    } catch (err) {
      throw withKey(err, k)
    }
  })
  const ckes = encoded.map((e) => e.cke)
  yield* withLock(store.backing, ckes, function* () {
    const writes: RawWrite[] = []
    const lastWrite = yield* stamp(store.backing)
    for (const e of encoded) {
      const prev = yield* about(e.key, () => metaBeforeReplace(store, e.key, e.cke, w))
      writes.push({ key: e.cke, serializer: e.serializer, meta: encodeMeta(nextMeta(e.key, 'value', prev, w, false, lastWrite)), value: e.bytes })
    }
    yield* bPut(store.backing, writes)
  })
  afterWrite(store, () => entries.map(([k, v]) => ({ op: 'multiAssoc', key: k, path: [k], oldValue: undefined, newValue: v })))
  return new Map(entries.map(([k]) => [k, true as const]))
})

/**
 * Writes several keys; nothing is written if any value cannot be encoded.
 * Memory stores apply the batch atomically; file stores make each key atomic
 * and durable, with one directory sync for the batch. Returns Map key -> true.
 */
export function multiAssoc<O extends WriteOptions>(
  store: Store,
  kvs: Map<Key, unknown> | Iterable<readonly [Key, unknown]> | Record<string, unknown>,
  opts?: O,
): Result<O, Map<Key, true>> {
  return run(multiAssocOp, opts, [store, kvs, opts?.meta]) as Result<O, Map<Key, true>>
}

const multiDissocOp = gensync(function* (store: Store, ks: Key[]) {
  const ckes = ks.map((k) => {
    try {
      return encodeKey(k)
    } catch (err) {
      throw withKey(err, k)
    }
  })
  const existed = yield* withLock(store.backing, ckes, function* () {
    return yield* bDelete(store.backing, ckes)
  })
  afterWrite(store, () =>
    ks.filter((_, i) => existed[i] === true).map((k) => ({ op: 'multiDissoc', key: k, path: [k], oldValue: undefined, newValue: undefined })),
  )
  return new Map(ks.map((k, i) => [k, existed[i] === true]))
})

/** Removes several keys. Returns Map key -> whether it existed. */
export function multiDissoc<O extends Options>(store: Store, ks: Iterable<Key>, opts?: O): Result<O, Map<Key, boolean>> {
  return run(multiDissocOp, opts, [store, [...ks]]) as Result<O, Map<Key, boolean>>
}
