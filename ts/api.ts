/**
 * The konserve API. Every operation is written once, as a generator over the
 * backing's operations (`yield* b.get(k)`, ts/backing/seam.ts), and run either
 * blocking (`{ sync: true }`) or as a Promise by `run`, the one switch. Locks:
 * every write and every `bget` holds the key's lock from its read to its
 * write; plain reads need none (a file is replaced by an atomic rename, so a
 * reader sees the old file or the new one).
 *
 * No Node module is imported here (the browser build uses this file too):
 * Node streams and the process clock are handed in by the Node entry
 * (`useNodeStreams`, `useProcessClock`, see ts/node/wire.ts).
 */
import type { Readable } from 'node:stream'
import gensync, { type Handler } from 'gensync'
import {
  type LogInfo,
  type LogRecord,
  type NewRecord,
  type RawBlobReplace,
  type RawEntry,
  type RawMeta,
  type RawReplace,
  type RawValue,
  type DecodedMemo,
  type RawWrite,
  REPLACE_BUSY,
  REPLACE_MISMATCH,
  REPLACE_UNSURE,
  copyBytes,
  keyId,
  notBlocking,
  twinOp,
} from './backing/index.js'
import { type Backing, type BlobSink, type BlobSource, type LogCursor, MISS } from './backing/seam.js'
import { AppendGroups } from './backing/group-commit.js'
import { NodeBuffer } from './node-buffer.js'
import { type Key, decodeKey, encodeKey } from './format/key.js'
import { type KeyType, type Metadata, decodeMeta, encodeMeta } from './format/meta.js'
import { type Spec, badArgument, checkOptions, checks, fail, isPlainObject } from './args.js'
import { KonserveError, UserThrew, unbox, withKey } from './errors.js'
import { type WriteOp, afterWrite } from './hooks.js'
import { type Frames, acquire, acquireSync, lockIds, release, runHolding, runUser as asUserCode, tryAcquire } from './locks.js'
import { type Batch, alone, combine } from './combine.js'
import { type Path, checkSettable, getPath, missing, setPath } from './paths.js'
import { RAW_BYTES_ID, checkMetadata } from './serializers.js'
import { NOT_PLAIN, copyPlain, plainCopy } from './plain-copy.js'
import { type ByteSource, byteSource, bytesOf, itemsOf } from './sources.js'
import { type Store, type SyncOption, checkStore, closeWaitsFor, whileOpen } from './store.js'

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
/** multiAssoc's options: `meta` for every key, or `metaByKey` per key. */
export interface MultiAssocOptions extends Options {
  meta?: Record<string, unknown>
  metaByKey?: Map<Key, Record<string, unknown>> | Record<string, Record<string, unknown>>
}

type WriteArgs = Pick<WriteOptions, 'meta' | 'expectedRevision'>
const writeArgs = (o: WriteOptions | undefined): WriteArgs => ({ meta: o?.meta, expectedRevision: o?.expectedRevision })

/** Sync calls return `T`; async calls return `Promise<T>`. */
export type Result<O, T> = O extends { sync: true } ? T : Promise<T>

// ---- what the Node entry hands in -------------------------------------------

let last = 0
/** The per-process clock, never behind a stamp it gave out (the Node entry shares ts/clock.ts's). */
let processNow: () => number = () => {
  const t = Date.now()
  last = Math.max(t, last)
  return last
}
/** @internal The per-process lastWrite clock (Node: ts/clock.ts `nowMs`, shared with the file stores' clocks). */
export function useProcessClock(now: () => number): void {
  processNow = now
}

/** Makes a Node Readable of bytes [start, end) of an open blob (ts/node/streams.ts); undefined outside Node. */
type NodeStreamOf = (src: BlobSource, start: number, end: number) => Readable
let nodeStreamOf: NodeStreamOf | undefined
/** @internal Hands in the Node Readable maker (`bget`'s stream, `readBlob`'s `as: 'stream'`). */
export function useNodeStreams(f: NodeStreamOf): void {
  nodeStreamOf = f
}
function nodeStream(src: BlobSource, start: number, end: number): Readable {
  if (!nodeStreamOf) {
    src.close()
    throw new KonserveError('ERR_NOT_SUPPORTED', "Node Readable streams need the Node entry of konserve; use { as: 'web' }")
  }
  return nodeStreamOf(src, start, end)
}

/** A lastWrite stamp: the store's clock (file stores: the watermark), else the process's. */
function* stamp(b: Backing): Handler<Date> {
  return new Date(b.clock ? yield* b.clock() : processNow())
}
const stampOp = gensync(stamp)

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return v !== null && (typeof v === 'object' || typeof v === 'function') && typeof (v as { then?: unknown }).then === 'function'
}

/** Calls user code: awaited in async form; in sync form it must not return a Promise. */
const callUser = gensync({
  sync: (f: (...a: unknown[]) => unknown, args: unknown[]) => {
    let r: unknown
    try {
      r = asUserCode(() => f(...args))
    } catch (err) {
      throw new UserThrew(err)
    }
    if (isThenable(r)) {
      throw new KonserveError('ERR_INVALID_ARGUMENT', 'a { sync: true } call got a function that returned a Promise; use the async form')
    }
    return r
  },
  async: async (f: (...a: unknown[]) => unknown, args: unknown[]) => {
    try {
      return await asUserCode(() => f(...args))
    } catch (err) {
      throw new UserThrew(err)
    }
  },
})

/** This thread's locks: a blocking call cannot wait for them (ERR_LOCK_BUSY), an async call queues. */
const acquireIds = twinOp(acquireSync, acquire)

/** @internal Takes the keys' locks (this thread, then the backing's cross-process lock). */
export function* lockKeys(b: Backing, keys: Uint8Array[]): Handler<string[]> {
  const ids = lockIds(b.lockScope, keys)
  yield* acquireIds(ids)
  try {
    // Waits are bounded: the backing fails with ERR_LOCK_TIMEOUT once it has waited its lockTimeoutMs.
    yield* b.lock(keys)
  } catch (err) {
    release(ids)
    throw err
  }
  return ids
}

/**
 * Runs a generator as a holder of `ids` (see `runHolding`): a lock call made
 * from inside it (an update function writing its own key) fails with
 * ERR_LOCK_REENTRY instead of waiting for itself.
 */
const holding = gensync({
  sync: (ids: string[], body: () => Handler<unknown>): unknown => runHolding(ids, () => runBody.sync(body)),
  async: (ids: string[], body: () => Handler<unknown>): Promise<unknown> => runHolding(ids, () => runBody.async(body)),
})
/** Runs a generator body, made once (not a gensync function per call: making one costs more than the body's bookkeeping). */
const runBody = gensync(function* (body: () => Handler<unknown>): Handler<unknown> {
  return yield* body()
})

/** @internal Runs `body` holding the keys' locks. */
export function* withLock<R>(b: Backing, keys: Uint8Array[], body: () => Handler<R>): Handler<R> {
  const ids = yield* lockKeys(b, keys)
  try {
    return (yield* holding(ids, body)) as R
  } finally {
    try {
      b.unlock(keys)
    } finally {
      release(ids)
    }
  }
}

// ---- encoding helpers -------------------------------------------------------

function decodeValue(store: Store, raw: { serializer: number; value: Uint8Array; shared?: boolean; memo?: DecodedMemo }): unknown {
  // Binary data is a Buffer in Node from every store (the pure engine's reads are plain Uint8Arrays).
  if (raw.serializer === RAW_BYTES_ID) return asBuffer(raw.shared ? copyBytes(raw.value) : raw.value)
  const s = store.serializers.forId(raw.serializer)
  const memo = s.pureDecode ? raw.memo : undefined
  // A value a read cache holds, decoded before: a copy of its plain tree.
  if (memo?.done && memo.tree !== NOT_PLAIN) return copyPlain(memo.tree)
  try {
    const v = s.decode(raw.shared && !s.copiesInput ? copyBytes(raw.value) : raw.value)
    if (memo && !memo.done) {
      memo.tree = plainCopy(v)
      memo.done = true
    }
    return v
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

/**
 * @internal The metadata of a key as users see it. A log grows in place, so
 * its revision and lastWrite come from its records (FORMAT.md §4.6).
 */
export function readMeta(key: Key, raw: { meta: Uint8Array; log?: LogInfo }): Metadata {
  const m = decodeMeta(key, raw.meta)
  if (raw.log) {
    m.revision = (typeof m.revision === 'number' ? m.revision : 0) + raw.log.lastIndex + 1
    if (raw.log.lastStamp > m.lastWrite.getTime()) m.lastWrite = new Date(raw.log.lastStamp)
  }
  return m
}

/** A key's revision: 0 when it is missing; files from before revisions count as 1. */
function revisionOf(meta: Metadata | undefined): number {
  if (!meta) return 0
  return typeof meta.revision === 'number' ? meta.revision : 1
}

function checkRevision(w: WriteArgs, current: Metadata | undefined, b: Backing, cke: Uint8Array): void {
  if (w.expectedRevision === undefined) return
  const actual = revisionOf(current)
  if (actual !== w.expectedRevision) throw revisionMismatch(w.expectedRevision, actual, b, cke)
}

/** ERR_REVISION_MISMATCH, naming the key's file where the backing has files (the caller adds the key). */
function revisionMismatch(expected: number, actual: number, b: Backing, cke: Uint8Array): KonserveError {
  const file = b.filePath?.(cke)
  const e = new KonserveError(
    'ERR_REVISION_MISMATCH',
    expected === 0 ? `the key must not exist yet, but it is at revision ${actual}` : `expected revision ${expected}, but the key is at revision ${actual}`,
    file ? { file } : {},
  )
  e.actualRevision = actual
  return e
}

/** `fixstr 'revision'` then REVISION_SLOT: where a replacing write's meta leaves the backing its revision. */
const SLOT_AFTER_NAME = Uint8Array.of(0xa8, 0x72, 0x65, 0x76, 0x69, 0x73, 0x69, 0x6f, 0x6e, 0xce, 0xff, 0xff, 0xff, 0xff)

/** Where REVISION_SLOT is in `meta` (after the 'revision' name), or -1 unless it is there exactly once. */
function revisionSlot(meta: Uint8Array): number {
  let found = -1
  outer: for (let i = 0; i + SLOT_AFTER_NAME.length <= meta.length; i++) {
    for (let j = 0; j < SLOT_AFTER_NAME.length; j++) if (meta[i + j] !== SLOT_AFTER_NAME[j]) continue outer
    if (found >= 0) return -1
    found = i + 9
  }
  return found
}

/**
 * A replacing write through the backing's fused op (Backing.replace), when it
 * has one: this thread's lock here; the cross-process lock, the revision read
 * and the write in the backing (the native store: one threadpool task, lock
 * files taken off the JavaScript thread). The metadata written, or undefined
 * when the backing leaves the write to the general path (nothing written).
 */
function* fusedReplace(store: Store, key: Key, cke: Uint8Array, type: KeyType, serializer: number, value: Uint8Array, w: WriteArgs): Handler<Metadata> {
  const b = store.backing
  const ids = lockIds(b.lockScope, [cke])
  yield* acquireIds(ids)
  try {
    const written = nextMeta(key, type, undefined, w, false, yield* stamp(b))
    written.revision = 0xffffffff
    const meta = encodeMeta(written)
    const revisionAt = revisionSlot(meta)
    // Left to the general path: written still holding this thread's lock (call order).
    if (revisionAt < 0) return yield* assocHeld(store, key, cke, serializer, value, w)
    const r: RawReplace = { key: cke, serializer, meta, revisionAt, value, expectedRevision: w.expectedRevision, lock: true }
    let n = yield* b.replace!(r)
    if (n === REPLACE_BUSY) {
      // Held elsewhere: waited for as the general path waits, then written holding it.
      yield* b.lock([cke])
      try {
        r.lock = false
        n = yield* b.replace!(r)
      } finally {
        b.unlock([cke])
      }
    }
    return replacedAs(n, w, written, b, cke) ?? (yield* assocHeld(store, key, cke, serializer, value, w))
  } finally {
    release(ids)
  }
}

/** A fused replace's answer `n` (not busy): the metadata written with its revision, undefined when unsure (the general path decides), or the mismatch. */
function replacedAs(n: number, w: WriteArgs, written: Metadata, b: Backing, cke: Uint8Array): Metadata | undefined {
  if (n === REPLACE_UNSURE) return undefined
  if (n <= REPLACE_MISMATCH) throw revisionMismatch(w.expectedRevision!, REPLACE_MISMATCH - n, b, cke)
  written.revision = n
  return written
}

/**
 * The metadata of a write: `prev`'s fields if `keep` (updates keep them,
 * replacing writes do not), the user's, then konserve's own, which win; the
 * revision counts on from `prev`'s.
 */
function nextMeta(key: Key, type: KeyType, prev: Metadata | undefined, w: WriteArgs, keep: boolean, lastWrite: Date): Metadata {
  if (w.meta) checkMetadata(w.meta)
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
    return oldMeta(key, yield* store.backing.getMeta(cke))
  } catch (err) {
    return unreadableOldMeta(err, w)
  }
}

const oldMeta = (key: Key, raw: RawMeta | undefined) => (raw ? readMeta(key, raw) : undefined)

/** metaBeforeReplace's rule for an old file it cannot read: no metadata (revision 1 next), unless a revision was asked for. */
function unreadableOldMeta(err: unknown, w: WriteArgs): undefined {
  if (w.expectedRevision !== undefined) throw err
  return undefined
}

function checkPath(path: unknown): asserts path is readonly [Key, ...unknown[]] {
  if (!Array.isArray(path) || path.length === 0) {
    throw new KonserveError('ERR_INVALID_PATH', 'a path is a non-empty array whose first element is the key')
  }
  // A '__proto__' step reaches an object's prototype, not a field: a write
  // there would be lost (msgpack) or pollute; refused on reads too, alike.
  for (let i = 1; i < path.length; i++) {
    if (path[i] === '__proto__') {
      throw new KonserveError('ERR_INVALID_PATH', `a path step cannot be '__proto__' (step ${i}); use a Map for such keys`)
    }
  }
}

/**
 * @internal The one place a blocking call meets a backend without blocking
 * I/O (IndexedDB, Redis, …): it fails with ERR_NOT_SUPPORTED before any work.
 */
export function checkBlocking(store: Store): void {
  if (!store.backing.blocking) throw notBlocking(store.implementation)
}

/**
 * @internal The run switch: `{ sync: true }` runs the operation blocking and
 * returns its result (or throws); otherwise it runs as a Promise that close
 * waits for. `args[0]` is the store.
 */
export function run<A extends unknown[], R>(op: gensync.Gensync<A, R>, opts: Options | undefined, args: A): R | Promise<R> {
  if (opts?.sync) {
    checkBlocking(args[0] as Store)
    return op.sync(...args)
  }
  try {
    // close waits for the operations called before it (args[0] is the store).
    return whileOpen((args[0] as Store).backing, op.async(...args))
  } catch (err) {
    return Promise.reject(err)
  }
}

/**
 * `run` for operations that call the caller's function: what that function
 * threw reaches the caller as it was thrown (same object), never relabelled.
 */
function runUser<A extends unknown[], R>(op: gensync.Gensync<A, R>, opts: Options | undefined, args: A): R | Promise<R> {
  if (opts?.sync) {
    checkBlocking(args[0] as Store)
    try {
      return op.sync(...args)
    } catch (err) {
      throw unbox(err)
    }
  }
  try {
    return whileOpen((args[0] as Store).backing, op.async(...args).catch((err: unknown) => Promise.reject(unbox(err))))
  } catch (err) {
    return Promise.reject(unbox(err))
  }
}

// ---- argument checks (see args.ts): every exported function checks its
// arguments before it reads or writes anything, and knows its options by name.

const O_READ: Spec = { sync: checks.boolean }
const O_GET: Spec = { sync: checks.boolean, notFound: checks.any }
const O_WRITE: Spec = { sync: checks.boolean, meta: checks.object, expectedRevision: checks.count }
const O_DISSOC: Spec = { sync: checks.boolean, expectedRevision: checks.count }
const O_KEYS: Spec = { sync: checks.boolean, onCorrupt: checks.function }
const O_READ_BLOB: Spec = { sync: checks.boolean, as: checks.any, offset: checks.count, length: checks.count }
const O_TRIM: Spec = { sync: checks.boolean, expectedRevision: checks.count, keepLast: checks.count, dropFirst: checks.count }
const O_MULTI_ASSOC: Spec = {
  sync: checks.boolean,
  meta: checks.object,
  metaByKey: (v) => (v instanceof Map || isPlainObject(v) ? undefined : 'a Map or a plain object'),
}

/** The error for a call's bad store or options (and `fn` when given), or undefined when they are fine. */
function invalid(name: string, store: unknown, opts: unknown, spec: Spec, fn?: [string, unknown]): unknown {
  try {
    checkOptions(name, opts, spec)
    checkStore(name, store)
    if (fn && typeof fn[1] !== 'function') throw badArgument(name, fn[0], 'a function', fn[1])
    return undefined
  } catch (err) {
    return err
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
    return yield* store.backing.exists(encodeKey(key))
  })
})

/** Whether `key` is in the store. */
export function exists<O extends Options>(store: Store, key: Key, opts?: O): Result<O, boolean> {
  const bad = invalid('exists', store, opts, O_READ)
  if (bad) return fail(bad, opts) as Result<O, boolean>
  if (opts?.sync) {
    // existsOp's blocking form, without its generators.
    checkBlocking(store)
    try {
      return store.backing.exists.sync(encodeKey(key)) as Result<O, boolean>
    } catch (err) {
      throw withKey(err, key)
    }
  }
  return run(existsOp, opts, [store, key]) as Result<O, boolean>
}

/** A key's value; a log's is the array of its elements. */
function* entryValue(store: Store, cke: Uint8Array, raw: RawEntry): Handler<unknown> {
  if (raw.log) return (yield* readLog(store, cke)) ?? []
  return decodeValue(store, raw)
}

/**
 * A key's value. Its metadata is not decoded: the file's checksums already
 * vouch for every byte, and metadata is checked where it is used (getMeta,
 * keys, writes).
 */
function* readValue(store: Store, key: Key): Handler<{ found: boolean; value: unknown }> {
  const cke = encodeKey(key)
  const raw = yield* store.backing.get(cke)
  if (!raw) return { found: false, value: undefined }
  return { found: true, value: yield* entryValue(store, cke, raw) }
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

/** A plain object with at least one key, every key one of `spec`'s: an options argument. */
function isOptionsObject(v: unknown, spec: Spec): boolean {
  if (!isPlainObject(v)) return false
  let n = 0
  for (const k in v) {
    if (!Object.hasOwn(spec, k)) return false
    n++
  }
  return n > 0
}

export interface GetOptions extends Options {
  /** Returned when the key is missing (default undefined). */
  notFound?: unknown
}

/** The value of `key`, or `opts.notFound` (default undefined) when it is missing. */
export function get<O extends GetOptions>(store: Store, key: Key, opts?: O): Result<O, unknown> {
  if (opts !== undefined && (opts === null || typeof opts !== 'object' || Array.isArray(opts))) {
    // get(store, key, 'default'): the default for a missing key is an option.
    return fail(badArgument('get', 'opts', 'an options object (a default for a missing key goes in { notFound })', opts), opts) as Result<O, unknown>
  }
  const bad = invalid('get', store, opts, O_GET)
  if (bad) return fail(bad, opts) as Result<O, unknown>
  if (!opts?.sync) {
    try {
      return readKey(store, key, undefined, opts?.notFound, opts) as Result<O, unknown>
    } catch (err) {
      return Promise.reject(err) as Result<O, unknown>
    }
  }
  return readKey(store, key, undefined, opts.notFound, opts) as Result<O, unknown>
}

/** The value `raw` holds, at the inner path `rest` (none: the whole value). */
function valueAt(store: Store, raw: RawValue | RawEntry | undefined, rest: Path | undefined, notFound: unknown): unknown {
  if (!raw) return notFound
  const value = decodeValue(store, raw)
  if (!rest) return value
  const v = getPath(value, rest)
  return v === missing ? notFound : v
}

/**
 * The hot read path, without gensync's generator machinery (a get is a few
 * microseconds of work, and the generators cost as much again): `key`'s value
 * at the inner path `rest`. Logs take the general path.
 */
function readKey(store: Store, key: Key, rest: Path | undefined, notFound: unknown, opts: Options | undefined): unknown {
  if (opts?.sync) {
    checkBlocking(store)
    const b = store.backing
    let raw: RawValue | RawEntry | undefined
    try {
      raw = (b.getValue ?? b.get).sync(encodeKey(key))
    } catch (err) {
      throw withKey(err, key)
    }
    if (!raw?.log) return valueAt(store, raw, rest, notFound)
    return getInOp.sync(store, [key, ...(rest ?? [])], notFound)
  }
  const b = store.backing
  if (b.getValueNow) {
    // Answered on this thread (a cached or logged key): one resolved Promise.
    const cke = encodeKey(key)
    let now: RawValue | undefined | typeof MISS
    try {
      now = b.getValueNow(cke)
    } catch (err) {
      return Promise.reject(withKey(err, key))
    }
    if (now !== MISS) {
      if (now?.log) return getInOp.async(store, [key, ...(rest ?? [])], notFound)
      try {
        return Promise.resolve(valueAt(store, now, rest, notFound))
      } catch (err) {
        return Promise.reject(err)
      }
    }
  }
  return (async () => {
    let raw: RawValue | RawEntry | undefined
    try {
      raw = await (b.getValue ?? b.get).async(encodeKey(key))
    } catch (err) {
      throw withKey(err, key)
    }
    if (!raw?.log) return valueAt(store, raw, rest, notFound)
    return getInOp.async(store, [key, ...(rest ?? [])], notFound)
  })()
}

/**
 * The value at `path` = [key, ...inner path], or `notFound` when the key or any
 * step of the inner path is missing.
 */
export function getIn<O extends GetOptions>(store: Store, path: Path, notFound?: unknown, opts?: O): Result<O, unknown> {
  // getIn(store, path, { sync: true }): a third and last argument is the
  // options when it is a plain object whose keys are all getIn's options
  // (`sync`, `notFound`); any other value (an empty object too) is notFound.
  // biome-ignore lint/complexity/noArguments: get(store, key, opts) and get(store, key, notFound) are told apart by arity
  if (arguments.length === 3 && isOptionsObject(notFound, O_GET)) {
    opts = notFound as O
    notFound = undefined
  }
  const bad = invalid('getIn', store, opts, O_GET)
  if (bad) return fail(bad, opts) as Result<O, unknown>
  if (opts?.notFound !== undefined) {
    if (notFound !== undefined) {
      return fail(new KonserveError('ERR_INVALID_ARGUMENT', 'getIn: notFound given twice (as an argument and as opts.notFound)'), opts) as Result<O, unknown>
    }
    notFound = opts.notFound
  }
  const read = () => {
    checkPath(path)
    return readKey(store, path[0], path.length > 1 ? path.slice(1) : undefined, notFound, opts)
  }
  if (!opts?.sync) {
    try {
      return read() as Result<O, unknown>
    } catch (err) {
      return Promise.reject(err) as Result<O, unknown>
    }
  }
  return read() as Result<O, unknown>
}

const getMetaOp = gensync(function* (store: Store, key: Key) {
  return yield* about(key, function* () {
    const raw: RawMeta | undefined = yield* store.backing.getMeta(encodeKey(key))
    return raw ? readMeta(key, raw) : undefined
  })
})

/** The metadata of `key` (`{ key, type, lastWrite, ... }`), or undefined. Reads no value. */
export function getMeta<O extends Options>(store: Store, key: Key, opts?: O): Result<O, Metadata | undefined> {
  const bad = invalid('getMeta', store, opts, O_READ)
  if (bad) return fail(bad, opts) as Result<O, Metadata | undefined>
  if (opts?.sync) {
    // getMetaOp's blocking form, without its generators.
    checkBlocking(store)
    try {
      const raw = store.backing.getMeta.sync(encodeKey(key))
      return (raw ? readMeta(key, raw) : undefined) as Result<O, Metadata | undefined>
    } catch (err) {
      throw withKey(err, key)
    }
  }
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

/** How many keys' raw entries `keys` holds at once, on top of its result. */
const KEYS_BATCH = 4096

const keysOp = gensync(function* (store: Store, onCorrupt: (err: KonserveError) => void) {
  // Read through the listing cursor: only the result grows with the store.
  const cursor = store.backing.openList()
  const out: Metadata[] = []
  try {
    for (let listing = yield* cursor.next(KEYS_BATCH); listing; listing = yield* cursor.next(KEYS_BATCH)) {
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
    }
  } finally {
    cursor.close()
  }
  return out
})

/** The metadata of every key in the store: `{ key, type, lastWrite, ... }` each. */
export function keys<O extends KeysOptions>(store: Store, opts?: O): Result<O, Metadata[]> {
  const bad = invalid('keys', store, opts, O_KEYS)
  if (bad) return fail(bad, opts) as Result<O, Metadata[]>
  return run(keysOp, opts, [store, opts?.onCorrupt ?? warnCorrupt]) as Result<O, Metadata[]>
}

// ---- writes -----------------------------------------------------------------

function buildWrite(store: Store, cke: Uint8Array, value: unknown, meta: Metadata): RawWrite {
  const { serializer, bytes } = encodeValue(store, value)
  return { key: cke, serializer, meta: encodeMeta(meta), value: bytes }
}

/** assoc's write by the general path: under the key's lock, its revision read, then put. */
function* assocLocked(store: Store, key: Key, cke: Uint8Array, serializer: number, bytes: Uint8Array, w: WriteArgs): Handler<Metadata> {
  return yield* withLock(store.backing, [cke], () => assocBody(store, key, cke, serializer, bytes, w))
}

/** assoc's general write under the key's locks: the revision read, the stamp, the put. */
function* assocBody(store: Store, key: Key, cke: Uint8Array, serializer: number, bytes: Uint8Array, w: WriteArgs): Handler<Metadata> {
  const prev = yield* metaBeforeReplace(store, key, cke, w)
  checkRevision(w, prev, store.backing, cke)
  const written = nextMeta(key, 'value', prev, w, false, yield* stamp(store.backing))
  yield* store.backing.put([{ key: cke, serializer, meta: encodeMeta(written), value: bytes }])
  return written
}

/**
 * assoc's general write for a caller that already holds this thread's lock
 * of the key (a fused write the backing left to the general path): the
 * backing's lock, then assocBody. Releasing this thread's lock and asking
 * again would let a later call of this thread (an update of the key) go
 * first, out of call order.
 */
function* assocHeld(store: Store, key: Key, cke: Uint8Array, serializer: number, bytes: Uint8Array, w: WriteArgs): Handler<Metadata> {
  const b = store.backing
  yield* b.lock([cke])
  try {
    return yield* assocBody(store, key, cke, serializer, bytes, w)
  } finally {
    b.unlock([cke])
  }
}
const assocHeldOp = gensync(assocHeld)

/** assoc after encoding: the fused write (when `fused`), else the general path; then the hooks. */
function* assocEncoded(store: Store, key: Key, value: unknown, cke: Uint8Array, serializer: number, bytes: Uint8Array, w: WriteArgs, fused: boolean): Handler<[undefined, unknown]> {
  let written: Metadata | undefined = fused ? yield* fusedReplace(store, key, cke, 'value', serializer, bytes, w) : undefined
  if (!written) written = yield* assocLocked(store, key, cke, serializer, bytes, w)
  afterWrite(store, { op: 'assoc', key, path: [key], oldValue: undefined, newValue: value, meta: written })
  return [undefined, value]
}

const assocOp = gensync(function* (store: Store, key: Key, value: unknown, w: WriteArgs) {
  return yield* about(key, function* () {
    const cke = encodeKey(key)
    // Encode before locking: a value that cannot be stored fails with nothing written.
    const { serializer, bytes } = encodeValue(store, value)
    return yield* assocEncoded(store, key, value, cke, serializer, bytes, w, store.backing.replace !== undefined)
  })
})

/**
 * assoc's blocking form as plain code: the steps of assocOp (the fused write
 * through fusedReplace when the backing has one, else assocLocked's: this
 * thread's lock, the backing's, the revision read, the stamp, the put; then
 * the hooks; errors carrying the key), in the same order, without gensync's
 * generators (a memory put is a few microseconds of work, and the generators
 * and closures cost as much again). The locked part runs no user code, so it
 * needs no holder frame (runHolding): only a user call inside it could ask
 * for its lock again.
 */
function assocSync(store: Store, key: Key, value: unknown, w: WriteArgs): [undefined, unknown] {
  checkBlocking(store)
  try {
    const cke = encodeKey(key)
    // Encode before locking: a value that cannot be stored fails with nothing written.
    const { serializer, bytes } = encodeValue(store, value)
    let written = store.backing.replace ? fusedReplaceSync(store, key, cke, serializer, bytes, w) : undefined
    if (!written) written = assocLockedSync(store, key, cke, serializer, bytes, w)
    afterWrite(store, { op: 'assoc', key, path: [key], oldValue: undefined, newValue: value, meta: written })
    return [undefined, value]
  } catch (err) {
    throw withKey(err, key)
  }
}

/** fusedReplace's blocking form as plain code (see assocSync): the same steps, in the same order. */
function fusedReplaceSync(store: Store, key: Key, cke: Uint8Array, serializer: number, value: Uint8Array, w: WriteArgs): Metadata | undefined {
  const b = store.backing
  const ids = lockIds(b.lockScope, [cke])
  acquireSync(ids)
  try {
    const written = nextMeta(key, 'value', undefined, w, false, new Date(b.clock ? b.clock.sync() : processNow()))
    written.revision = 0xffffffff
    const meta = encodeMeta(written)
    const revisionAt = revisionSlot(meta)
    if (revisionAt < 0) return undefined
    const r: RawReplace = { key: cke, serializer, meta, revisionAt, value, expectedRevision: w.expectedRevision, lock: true }
    let n = b.replace!.sync(r)
    if (n === REPLACE_BUSY) {
      // Held elsewhere: waited for as the general path waits, then written holding it.
      b.lock.sync([cke])
      try {
        r.lock = false
        n = b.replace!.sync(r)
      } finally {
        b.unlock([cke])
      }
    }
    return replacedAs(n, w, written, b, cke)
  } finally {
    release(ids)
  }
}

/**
 * withLock's blocking form as plain code, for a body that runs no user code
 * (so it needs no holder frame, see assocSync): lockKeys, the body, the
 * backing's unlock, this thread's release, in withLock's order.
 */
function withLockSync<R>(b: Backing, keys: Uint8Array[], body: () => R): R {
  const ids = lockIds(b.lockScope, keys)
  acquireSync(ids)
  try {
    b.lock.sync(keys)
  } catch (err) {
    release(ids)
    throw err
  }
  try {
    return body()
  } finally {
    try {
      b.unlock(keys)
    } finally {
      release(ids)
    }
  }
}

/** assocLocked's blocking form as plain code (see assocSync): under the key's lock, metaBeforeReplace, stamp, put. */
function assocLockedSync(store: Store, key: Key, cke: Uint8Array, serializer: number, bytes: Uint8Array, w: WriteArgs): Metadata {
  const b = store.backing
  return withLockSync(b, [cke], () => {
    let prev: Metadata | undefined
    try {
      prev = oldMeta(key, b.getMeta.sync(cke))
    } catch (err) {
      prev = unreadableOldMeta(err, w)
    }
    checkRevision(w, prev, store.backing, cke)
    const written = nextMeta(key, 'value', prev, w, false, new Date(b.clock ? b.clock.sync() : processNow()))
    b.put.sync([{ key: cke, serializer, meta: encodeMeta(written), value: bytes }])
    return written
  })
}

/** The part of an async assoc that assocFused leaves to the general machinery (see there). */
const assocEncodedOp = gensync(function* (store: Store, key: Key, value: unknown, cke: Uint8Array, serializer: number, bytes: Uint8Array, w: WriteArgs, fused: boolean) {
  return yield* about(key, () => assocEncoded(store, key, value, cke, serializer, bytes, w, fused))
})

/** A fused write whose key was locked elsewhere (REPLACE_BUSY): waited for as the general path waits, then written holding it. */
const replaceWhenFreeOp = gensync(function* (b: Backing, r: RawReplace): Handler<number> {
  yield* b.lock([r.key])
  try {
    return yield* b.replace!({ ...r, lock: false })
  } finally {
    b.unlock([r.key])
  }
})

/**
 * assoc's async form over a backing with the fused write (Backing.replace),
 * as plain Promise code: the steps of assocOp through fusedReplace (this
 * thread's lock, the stamp, the metadata with its revision slot, the one
 * fused call, the hooks, errors carrying the key), without gensync's
 * generators and the Promise each of their steps adds. Its task is queued
 * within the call, and its result reaches the caller through two `then`s
 * (bench/async-floor.mjs: the JavaScript around the thread hop). Whatever is
 * off this path goes on through assocEncodedOp, in the order the general
 * path takes: the key's lock held by another async call of this thread
 * (queued behind it), a revision slot not found or the backing leaving the
 * write to the general path (REPLACE_UNSURE). A key locked elsewhere
 * (REPLACE_BUSY) is waited for still holding this thread's lock, as
 * fusedReplace does.
 */
function assocFused(store: Store, key: Key, value: unknown, w: WriteArgs): Promise<[undefined, unknown]> {
  const b = store.backing
  let cke: Uint8Array
  let serializer: number
  let bytes: Uint8Array
  let ids: string[] | undefined
  let written: Metadata
  let r: RawReplace
  let task: Promise<number>
  try {
    cke = encodeKey(key)
    // Encode before locking: a value that cannot be stored fails with nothing written.
    ;({ serializer, bytes } = encodeValue(store, value))
    const wanted = lockIds(b.lockScope, [cke])
    if (!tryAcquire(wanted)) return assocEncodedOp.async(store, key, value, cke, serializer, bytes, w, true)
    ids = wanted
    // A backing with `replace` has a clock whose blocking form is what its async form runs (seam.ts).
    written = nextMeta(key, 'value', undefined, w, false, new Date(b.clock ? b.clock.sync() : processNow()))
    written.revision = 0xffffffff
    const meta = encodeMeta(written)
    const revisionAt = revisionSlot(meta)
    r = { key: cke, serializer, meta, revisionAt, value: bytes, expectedRevision: w.expectedRevision, lock: true }
    task = revisionAt < 0 ? Promise.resolve(REPLACE_UNSURE) : b.replace!.async(r)
  } catch (err) {
    if (ids) release(ids)
    return Promise.reject(withKey(err, key))
  }
  const held = ids
  const failed = (err: unknown): never => {
    release(held)
    throw withKey(err, key)
  }
  const done = (n: number): [undefined, unknown] | Promise<[undefined, unknown]> => {
    // Left to the general path: written still holding this thread's lock, so that a later call of the key waits (call order).
    if (n === REPLACE_UNSURE) {
      return assocHeldOp.async(store, key, cke, serializer, bytes, w).then((meta) => {
        release(held)
        afterWrite(store, { op: 'assoc', key, path: [key], oldValue: undefined, newValue: value, meta })
        return [undefined, value] as [undefined, unknown]
      }, failed)
    }
    release(held)
    if (n <= REPLACE_MISMATCH) throw withKey(revisionMismatch(w.expectedRevision!, REPLACE_MISMATCH - n, b, cke), key)
    written.revision = n
    afterWrite(store, { op: 'assoc', key, path: [key], oldValue: undefined, newValue: value, meta: written })
    return [undefined, value]
  }
  return task.then((n) => (n === REPLACE_BUSY ? replaceWhenFreeOp.async(b, r).then(done, failed) : done(n)), failed)
}

/**
 * Stores `value` under `key`, replacing any old value and metadata.
 * Returns `[undefined, value]`: the old value is not read.
 */
export function assoc<O extends WriteOptions>(store: Store, key: Key, value: unknown, opts?: O): Result<O, [undefined, unknown]> {
  const bad = invalid('assoc', store, opts, O_WRITE)
  if (bad) return fail(bad, opts) as Result<O, [undefined, unknown]>
  if (!opts?.sync && store.backing.replace) return whileOpen(store.backing, assocFused(store, key, value, writeArgs(opts))) as Result<O, [undefined, unknown]>
  if (opts?.sync) return assocSync(store, key, value, writeArgs(opts)) as Result<O, [undefined, unknown]>
  return run(assocOp, opts, [store, key, value, writeArgs(opts)]) as Result<O, [undefined, unknown]>
}

type Updater = (old: unknown) => unknown

/** One updateIn call (ts/combine.ts runs several of one key under one hold), and what it did. */
interface UpdateCall {
  key: Key
  rest: unknown[]
  fn: Updater
  w: WriteArgs
}
interface Updated {
  old: unknown
  next: unknown
  meta: Metadata
}

/** Waits for a Promise the async form started (the blocking form has none). */
const awaited = gensync({
  sync: (p: Promise<unknown>): unknown => p,
  async: (p: Promise<unknown>): Promise<unknown> => p,
})

/**
 * Starts the user's function as the code of the call that gave it (its
 * frames, holding `ids`: see locks.ts): its value, or (async form) the
 * Promise it returned, not awaited yet (what it threw: UserThrew).
 */
const startUser = gensync({
  sync: (frames: Frames, ids: string[], f: Updater, arg: unknown): { value: unknown } => ({
    value: runHolding(ids, () => callUser.sync(f as (...a: unknown[]) => unknown, [arg]), frames),
  }),
  async: async (frames: Frames, ids: string[], f: Updater, arg: unknown): Promise<{ value: unknown } | { pending: Promise<unknown> }> => {
    let r: unknown
    try {
      r = runHolding(ids, () => asUserCode(() => f(arg)), frames)
    } catch (err) {
      throw new UserThrew(err)
    }
    if (!isThenable(r)) return { value: r }
    const pending = Promise.resolve(r).catch((err: unknown) => Promise.reject(new UserThrew(err)))
    pending.catch(() => {}) // awaited later; a rejection before that is not unhandled
    return { pending }
  },
})

/**
 * Runs a batch of updates of one key (ts/combine.ts; one call in the blocking
 * form) under one hold of its lock: each call on the value the calls before
 * it left, its revision checked against theirs, its own failure its own;
 * then one write of the last value. A function that returns a Promise is
 * awaited only once the calls before it are written and settled: whatever it
 * waits for (their results, say) never waits for it.
 */
function* updateBatch(store: Store, cke: Uint8Array, ids: string[], batch: Batch<UpdateCall, Updated>): Handler<void> {
  const b = store.backing
  // withLock's, without its holder frame: each function runs as a holder of its own (startUser).
  yield* lockKeys(b, [cke])
  try {
    let raw = yield* b.get(cke)
    let meta: Metadata | undefined
    // The value the calls so far left, unwritten, or undefined: the stored one.
    let left: RawWrite | undefined
    let dirty = false
    let storedRead = false
    let lastWrite: Date | undefined
    const write = function* () {
      if (dirty) yield* b.put([left!])
      dirty = false
    }
    for (let e = batch.take(); e; e = batch.take()) {
      const { key, rest, fn, w } = e.arg
      let old: unknown
      let started: { value: unknown } | { pending: Promise<unknown> }
      try {
        if (left) {
          // What a call after a written one would read back.
          old = decodeValue(store, { serializer: left.serializer, value: left.value, shared: true })
          meta = readMeta(key, left)
        } else {
          // After calls that failed, read again: a function may have changed what it was given.
          if (storedRead) raw = yield* b.get(cke)
          storedRead = true
          old = raw ? yield* entryValue(store, cke, raw) : undefined
          meta = raw ? readMeta(key, raw) : undefined
        }
        checkRevision(w, meta, b, cke)
        if (!left && raw && raw.serializer === RAW_BYTES_ID && rest.length > 0) {
          throw new KonserveError('ERR_INVALID_PATH', 'cannot go into a binary value')
        }
        // A path that cannot be written is refused before the function runs.
        checkSettable(old, rest)
        const at = getPath(old, rest)
        started = yield* startUser(e.frames, ids, fn, at === missing ? undefined : at)
      } catch (err) {
        batch.failed(e, err)
        continue
      }
      if ('pending' in started) {
        // Before the function is awaited: a write that fails here fails the batch.
        yield* write()
        batch.settle()
      }
      try {
        const leaf = 'pending' in started ? yield* awaited(started.pending) : started.value
        const next = setPath(old, rest, leaf)
        lastWrite ??= yield* stamp(b)
        const written = nextMeta(key, 'value', meta, w, true, lastWrite)
        left = buildWrite(store, cke, next, written)
        dirty = true
        batch.done(e, { old, next, meta: written })
      } catch (err) {
        batch.failed(e, err)
      }
    }
    yield* write()
  } finally {
    try {
      b.unlock([cke])
    } finally {
      release(ids)
    }
  }
}
const updateBatchOp = gensync(updateBatch)

/** One update: in the async form, combined with the other waiting updates of its key (ts/combine.ts); else alone. */
const updateKey = gensync({
  sync: (store: Store, cke: Uint8Array, call: UpdateCall): Updated => {
    const batch = alone<UpdateCall, Updated>(call)
    updateBatchOp.sync(store, cke, lockIds(store.backing.lockScope, [cke]), batch)
    return batch.only()
  },
  async: (store: Store, cke: Uint8Array, call: UpdateCall): Promise<Updated> => {
    const ids = lockIds(store.backing.lockScope, [cke])
    const combined = combine<UpdateCall, Updated>(store, ids[0]!, call, (batch) => updateBatchOp.async(store, cke, ids, batch))
    if (combined) return combined
    const batch = alone<UpdateCall, Updated>(call)
    return updateBatchOp.async(store, cke, ids, batch).then(() => batch.only())
  },
})

const updateInOp = gensync(function* (store: Store, path: Path, fn: Updater, w: WriteArgs, op: Exclude<WriteOp, 'multiAssoc'>) {
  checkPath(path)
  const [key, ...rest] = path
  return yield* about(key, function* () {
    const done = yield* updateKey(store, encodeKey(key), { key, rest, fn, w })
    afterWrite(store, { op, key, path: [key, ...rest], oldValue: done.old, newValue: done.next, meta: done.meta })
    return [done.old, done.next] as [unknown, unknown]
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
  // biome-ignore lint/suspicious/noExplicitAny: the user's function may type its argument as it likes
  fn: (old: any) => unknown,
  opts?: O,
): Result<O, [unknown, unknown]> {
  const bad = invalid('updateIn', store, opts, O_WRITE, ['fn', fn])
  if (bad) return fail(bad, opts) as Result<O, [unknown, unknown]>
  return runUser(updateInOp, opts, [store, path, fn, writeArgs(opts), 'updateIn']) as Result<O, [unknown, unknown]>
}

/** `updateIn(store, [key], fn)`. */
// biome-ignore lint/suspicious/noExplicitAny: the user's function may type its argument as it likes
export function update<O extends WriteOptions>(store: Store, key: Key, fn: (old: any) => unknown, opts?: O): Result<O, [unknown, unknown]> {
  const bad = invalid('update', store, opts, O_WRITE, ['fn', fn])
  if (bad) return fail(bad, opts) as Result<O, [unknown, unknown]>
  return runUser(updateInOp, opts, [store, [key], fn, writeArgs(opts), 'update']) as Result<O, [unknown, unknown]>
}

/** Sets the value at `path` (creating maps along it). Returns `[old, new]` of the top-level value. */
export function assocIn<O extends WriteOptions>(store: Store, path: Path, value: unknown, opts?: O): Result<O, [unknown, unknown]> {
  const bad = invalid('assocIn', store, opts, O_WRITE)
  if (bad) return fail(bad, opts) as Result<O, [unknown, unknown]>
  return run(updateInOp, opts, [store, path, () => value, writeArgs(opts), 'assocIn']) as Result<O, [unknown, unknown]>
}

const dissocOp = gensync(function* (store: Store, key: Key, w: WriteArgs) {
  return yield* about(key, function* () {
    const cke = encodeKey(key)
    const existed = yield* withLock(store.backing, [cke], function* () {
      if (w.expectedRevision !== undefined) {
        const raw = yield* store.backing.getMeta(cke)
        checkRevision(w, raw ? readMeta(key, raw) : undefined, store.backing, cke)
      }
      const [existed] = yield* store.backing.delete([cke])
      return existed === true
    })
    if (existed) afterWrite(store, { op: 'dissoc', key, path: [key], oldValue: undefined, newValue: undefined })
    return existed
  })
})

/** dissocOp's blocking form as plain code (see assocSync): the same steps, in the same order. */
function dissocSync(store: Store, key: Key, w: WriteArgs): boolean {
  checkBlocking(store)
  try {
    const b = store.backing
    const cke = encodeKey(key)
    const existed = withLockSync(b, [cke], () => {
      if (w.expectedRevision !== undefined) {
        const raw = b.getMeta.sync(cke)
        checkRevision(w, raw ? readMeta(key, raw) : undefined, b, cke)
      }
      const [existed] = b.delete.sync([cke])
      return existed === true
    })
    if (existed) afterWrite(store, { op: 'dissoc', key, path: [key], oldValue: undefined, newValue: undefined })
    return existed
  } catch (err) {
    throw withKey(err, key)
  }
}

/** Removes `key`. Returns whether it existed. Takes `expectedRevision` like the writes. */
export function dissoc<O extends Options & Pick<WriteOptions, 'expectedRevision'>>(store: Store, key: Key, opts?: O): Result<O, boolean> {
  const bad = invalid('dissoc', store, opts, O_DISSOC)
  if (bad) return fail(bad, opts) as Result<O, boolean>
  if (opts?.sync) return dissocSync(store, key, { expectedRevision: opts.expectedRevision }) as Result<O, boolean>
  return run(dissocOp, opts, [store, key, { expectedRevision: opts?.expectedRevision }]) as Result<O, boolean>
}

// ---- binary blobs -------------------------------------------------------------
// A blob is written through the backing's BlobSink: streamed to a staging file
// chunk by chunk (FORMAT.md §4.5), so memory stays bounded whatever its size,
// and committed atomically. Reads open a BlobSource: a snapshot of the file
// that serves any byte range, each chunk checked before it is released. Reads
// take no lock: a writer replaces the file, it never changes it.

/** What `bassoc` takes: bytes, an Iterable of byte pieces, or (async form only) a stream of them. */
export type BlobInput =
  | Uint8Array
  | ArrayBuffer
  | ArrayBufferView
  | string
  /** konserve's vector of byte numbers: integers 0-255. */
  | readonly number[]
  | Iterable<Uint8Array | string>
  | AsyncIterable<Uint8Array | string>
  | ReadableStream<Uint8Array>
  | Blob

/** Pieces handed to the backing: at least this much is gathered (fewer crossings into the core). */
const GATHER = 1 << 20
/**
 * A piece at least this large goes to the backing as it is, not through the
 * gather buffer: on the JavaScript thread, one more crossing into the core
 * costs less than copying it (a stream's 256 KB pieces were copied there at
 * about 0.3 ms per MB; bench/blob-stalls.mjs --form=stream).
 */
const DIRECT = 128 << 10
/**
 * A larger piece is cut to this size, so a backing never copies more than this
 * at once. Large: the core seals whole chunks straight from the caller's bytes,
 * except a slice's last chunk (it might be the blob's last), which it copies.
 */
const SLICE = 64 << 20

/** The next piece of a source: a sync form reads only sync Iterables (checked before). */
const nextPiece = gensync({
  sync: (src: ByteSource) => src.nextSync(),
  async: (src: ByteSource) => src.next(),
})
/** Stops reading a source early; the sync form does not wait for an iterator's `return`. */
const closeSource = gensync({
  sync: (src: ByteSource, reason: unknown) => void src.close(reason),
  async: (src: ByteSource, reason: unknown) => src.close(reason),
})
/** Whether this is the sync form (gensync runs the matching function). */
const isSyncForm = gensync({
  sync: () => true,
  async: async () => false,
})

/** Writes bytes to the sink in slices of at most SLICE. */
function* writeBytes(sink: BlobSink, bytes: Uint8Array): Handler<void> {
  for (let at = 0; at < bytes.length; at += SLICE) yield* sink.write(bytes.subarray(at, at + SLICE))
}

/** Writes a whole blob's bytes and commits: the last slice through `commitWith` where the sink has it (no copy of its last chunk). */
function* writeAllAndCommit(sink: BlobSink, bytes: Uint8Array): Handler<void> {
  if (!sink.commitWith) {
    yield* writeBytes(sink, bytes)
    return yield* sink.commit()
  }
  const last = bytes.length === 0 ? 0 : Math.floor((bytes.length - 1) / SLICE) * SLICE
  yield* writeBytes(sink, bytes.subarray(0, last))
  yield* sink.commitWith(bytes.subarray(last))
}

/**
 * Drains a stream into the sink. Small pieces are copied into one reused
 * GATHER-sized buffer (a stream may reuse its own buffer for the next piece,
 * and fewer, larger writes cost fewer crossings into the core); the sink is
 * done with the bytes once its write has resolved, so the buffer is reused.
 * A piece of DIRECT bytes or more is written as it is, and its write resolved
 * before the next piece is asked for, so a reused buffer is never read late.
 */
function* writeStream(sink: BlobSink, src: ByteSource): Handler<number> {
  let gather: Uint8Array | undefined
  let held = 0
  let total = 0
  const flushGathered = function* (): Handler<void> {
    if (held === 0) return
    yield* sink.write(gather!.subarray(0, held))
    held = 0
  }
  for (;;) {
    const r = yield* nextPiece(src)
    if (r.done) break
    const piece = r.value
    total += piece.length
    if (piece.length >= DIRECT) {
      yield* flushGathered()
      yield* writeBytes(sink, piece)
      continue
    }
    gather ??= new Uint8Array(GATHER)
    let at = 0
    while (at < piece.length) {
      const n = Math.min(GATHER - held, piece.length - at)
      gather.set(piece.subarray(at, at + n), held)
      held += n
      at += n
      if (held === GATHER) yield* flushGathered()
    }
  }
  yield* flushGathered()
  return total
}

/**
 * bassoc through the backing's fused blob open (Backing.blobReplace), as
 * fusedReplace does for assoc: this thread's lock here; the cross-process
 * lock, the revision read and the staging file in the backing's open (the
 * native store: one threadpool task), the lock released by the sink's commit
 * (its task) or abort. `fill` writes the blob and commits. The metadata
 * written, or undefined when the backing leaves the write to the general
 * path (nothing opened, nothing read from the source).
 */
function* fusedBlobReplace(store: Store, key: Key, cke: Uint8Array, w: WriteArgs, fill: (sink: BlobSink) => Handler<void>): Handler<Metadata | undefined> {
  const b = store.backing
  const ids = lockIds(b.lockScope, [cke])
  yield* acquireIds(ids)
  try {
    const written = nextMeta(key, 'binary', undefined, w, false, yield* stamp(b))
    written.revision = 0xffffffff
    const meta = encodeMeta(written)
    const revisionAt = revisionSlot(meta)
    if (revisionAt < 0) return undefined
    const r: RawBlobReplace = { key: cke, meta, revisionAt, expectedRevision: w.expectedRevision, lock: true }
    const opened = yield* b.blobReplace!(r)
    if (opened !== REPLACE_BUSY) return yield* filled(opened)
    // Held elsewhere: waited for as the general path waits, then opened and written holding it.
    yield* b.lock([cke])
    try {
      r.lock = false
      return yield* filled(yield* b.blobReplace!(r))
    } finally {
      b.unlock([cke])
    }
    function* filled(o: { sink: BlobSink; revision: number } | number): Handler<Metadata | undefined> {
      if (typeof o === 'number') {
        if (o <= REPLACE_MISMATCH) throw revisionMismatch(w.expectedRevision!, REPLACE_MISMATCH - o, b, cke)
        return undefined
      }
      yield* fill(o.sink)
      written.revision = o.revision
      return written
    }
  } finally {
    release(ids)
  }
}

const bassocOp = gensync(function* (store: Store, key: Key, input: unknown, w: WriteArgs) {
  return yield* about(key, function* () {
    const cke = encodeKey(key)
    const bytes = bytesOf(input)
    // Listened to from here on: a source that fails while we wait for the lock is reported, not thrown at the process.
    const src = bytes ? undefined : byteSource(input)
    let written!: Metadata
    if (!bytes && !src) {
      throw new KonserveError(
        'ERR_INVALID_ARGUMENT',
        'bassoc takes a Uint8Array, Buffer, ArrayBuffer, typed array, string, an array of byte numbers (0-255), an Iterable of byte pieces, or (async form) a Readable, ReadableStream or AsyncIterable of them',
      )
    }
    try {
      if (src && !src.sync && (yield* isSyncForm())) {
        throw new KonserveError('ERR_INVALID_ARGUMENT', `${/^[AEIOU]/.test(src.kind) ? 'an' : 'a'} ${src.kind} can only be stored with the async form of bassoc`)
      }
      const fill = function* (sink: BlobSink): Handler<void> {
        try {
          if (bytes) yield* writeAllAndCommit(sink, bytes)
          else {
            yield* writeStream(sink, src!)
            yield* sink.commit()
          }
        } catch (err) {
          // Nothing of the new blob is left; a failing abort must not hide why.
          try {
            sink.abort()
          } catch {}
          throw err
        }
      }
      const fused = store.backing.blobReplace ? yield* fusedBlobReplace(store, key, cke, w, fill) : undefined
      if (fused) written = fused
      else yield* withLock(store.backing, [cke], function* () {
        const prev = yield* metaBeforeReplace(store, key, cke, w)
        checkRevision(w, prev, store.backing, cke)
        written = nextMeta(key, 'binary', prev, w, false, yield* stamp(store.backing))
        const meta = encodeMeta(written)
        yield* fill(yield* store.backing.blobWriter(cke, meta))
      })
    } catch (err) {
      // A source we stop reading is told so (a Readable is destroyed, a web stream cancelled).
      if (src) yield* closeSource(src, err)
      throw err
    }
    afterWrite(store, { op: 'bassoc', key, path: [key], oldValue: undefined, newValue: bytes, meta: written })
    return true as const
  })
})

/**
 * Stores binary data under `key` (no serializer): bytes, or in async form a
 * Node Readable, a web ReadableStream or any AsyncIterable of byte pieces,
 * streamed to disk with bounded memory. Atomic and, by default, durable: a
 * reader sees the old blob or the whole new one. Returns true.
 */
export function bassoc<O extends WriteOptions>(store: Store, key: Key, input: BlobInput, opts?: O): Result<O, true> {
  const bad = invalid('bassoc', store, opts, O_WRITE)
  if (bad) return fail(bad, opts) as Result<O, true>
  return run(bassocOp, opts, [store, key, input, writeArgs(opts)]) as Result<O, true>
}

/** What `bget`'s callback gets: `blob` in sync form, `stream` in async form. */
export interface BlobAccess {
  size: number
  blob?: Buffer
  stream?: Readable
  /** Async form where there are no Node streams (the browser entry): the blob as a web ReadableStream, instead of `stream`. */
  web?: ReadableStream<Uint8Array>
}

/** A Buffer view of `b` where there are Buffers (Node), else `b`. */
function asBuffer(b: Uint8Array): Buffer {
  const B = NodeBuffer
  return (B && !B.isBuffer(b) ? B.from(b.buffer, b.byteOffset, b.byteLength) : b) as Buffer
}

/** How much a blob stream reads at a time: one chunk (FORMAT.md §4.5), so reads stay chunk-aligned. */
export const READ_PIECE = 1 << 20

/**
 * @internal The bytes from `pos` up to the next chunk boundary (or `end`), into a Buffer the JavaScript engine allocated where the
 * source can fill one: V8 then counts that memory and collects it in time
 * (memory made outside it is invisible to its heuristics).
 */
export async function readPiece(src: BlobSource, pos: number, end: number): Promise<Buffer> {
  // Up to the next chunk boundary: reads stay chunk-aligned.
  const n = Math.min(READ_PIECE - (pos % READ_PIECE), end - pos)
  if (!src.readInto) return asBuffer(await src.read.async(pos, n))
  const target = (NodeBuffer ? NodeBuffer.allocUnsafeSlow(n) : new Uint8Array(n)) as Buffer
  const got = await src.readInto(pos, target)
  return got === n ? target : target.subarray(0, got)
}

/** Closes `src` the first time it is called. */
function closeOnce(src: BlobSource): () => void {
  let open = true
  return () => {
    if (open) {
      open = false
      src.close()
    }
  }
}

/** The bytes [start, end) of an open blob as a web ReadableStream; closes the source when done. */
function webStream(src: BlobSource, start: number, end: number, closeSrc = closeOnce(src)): ReadableStream<Uint8Array> {
  let pos = start
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        if (pos >= end) {
          closeSrc()
          controller.close()
          return
        }
        try {
          const b = await readPiece(src, pos, end)
          pos += b.length
          controller.enqueue(b)
        } catch (err) {
          closeSrc()
          controller.error(err)
        }
      },
      cancel() {
        closeSrc()
      },
    },
    { highWaterMark: 1 },
  )
}

function checkRange(offset: unknown, length: unknown): void {
  for (const [name, v] of [
    ['offset', offset],
    ['length', length],
  ] as const) {
    if (v !== undefined && (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)) {
      throw new KonserveError('ERR_INVALID_ARGUMENT', `${name} must be a non-negative integer`)
    }
  }
}

/** [start, end) of a range within a blob of `size` bytes (clamped to it). */
function rangeOf(size: number, offset = 0, length?: number): [number, number] {
  const start = Math.min(offset, size)
  return [start, length === undefined ? size : Math.min(size, start + length)]
}

const bgetOp = gensync(function* (store: Store, key: Key, cb: (blob: BlobAccess) => unknown, streaming: boolean) {
  return yield* about(key, function* () {
    const src = yield* store.backing.openBlob(encodeKey(key))
    if (!src) return undefined
    let stream: Readable | undefined
    let web: (() => void) | undefined
    try {
      if (streaming && !nodeStreamOf) {
        web = closeOnce(src)
        const webStreamOf = webStream(src, 0, src.size, web)
        return yield* callUser(cb as (...a: unknown[]) => unknown, [{ size: src.size, web: webStreamOf }])
      }
      if (streaming) {
        stream = nodeStream(src, 0, src.size)
        return yield* callUser(cb as (...a: unknown[]) => unknown, [{ size: src.size, stream }])
      }
      const blob = asBuffer(yield* src.read(0, src.size))
      return yield* callUser(cb as (...a: unknown[]) => unknown, [{ size: src.size, blob }])
    } finally {
      // The stream is the callback's to consume while it runs (konserve's bget contract).
      if (stream) stream.destroy()
      else if (web) web()
      else src.close()
    }
  })
})

/**
 * Calls `cb` with the blob at `key` and returns what `cb` returns (awaited in
 * async form). Sync form: `{ size, blob }` (a Buffer); async form: `{ size,
 * stream }` (a Node Readable, streamed from disk, to be consumed before `cb`
 * settles). A missing key returns undefined without calling `cb`. For a stream
 * that outlives a callback, a web stream or a byte range, use `readBlob`.
 */
export function bget<O extends Options, R>(store: Store, key: Key, cb: (blob: BlobAccess) => R, opts?: O): Result<O, Awaited<R> | undefined> {
  const bad = invalid('bget', store, opts, O_READ, ['cb', cb])
  if (bad) return fail(bad, opts) as Result<O, Awaited<R> | undefined>
  return runUser(bgetOp, opts, [store, key, cb as (b: BlobAccess) => unknown, !opts?.sync]) as Result<O, Awaited<R> | undefined>
}

export interface ReadBlobOptions extends Options {
  /** `'buffer'` (default), `'stream'` (a Node Readable) or `'web'` (a web ReadableStream); streams are async only. */
  as?: 'buffer' | 'stream' | 'web'
  /** First byte to read (default 0). */
  offset?: number
  /** How many bytes to read (default: to the end). A range past the end is cut at the end. */
  length?: number
}

type ReadBlobResult<O> = O extends { as: 'stream' } ? Readable : O extends { as: 'web' } ? ReadableStream<Uint8Array> : Buffer

const readBlobOp = gensync(function* (store: Store, key: Key, o: ReadBlobOptions) {
  return yield* about(key, function* () {
    checkRange(o.offset, o.length)
    const as = o.as ?? 'buffer'
    if (as !== 'buffer' && as !== 'stream' && as !== 'web') {
      throw new KonserveError('ERR_INVALID_ARGUMENT', `readBlob: unknown 'as' ${JSON.stringify(as)}`)
    }
    if (as !== 'buffer' && o.sync) throw new KonserveError('ERR_INVALID_ARGUMENT', 'readBlob: streams are only given by the async form')
    const src = yield* store.backing.openBlob(encodeKey(key))
    if (!src) return undefined
    const [start, end] = rangeOf(src.size, o.offset, o.length)
    if (as === 'stream') return nodeStream(src, start, end)
    if (as === 'web') return webStream(src, start, end)
    try {
      return asBuffer(yield* src.read(start, end - start))
    } finally {
      src.close()
    }
  })
})

/**
 * The blob at `key` (or the byte range `offset`, `length` of it) as a Buffer,
 * a Node Readable (`as: 'stream'`) or a web ReadableStream (`as: 'web'`);
 * undefined when the key is missing. Only the chunks the range touches are
 * read, each checked before it is returned. Streams read one chunk at a time
 * and hold the file open until they end or are destroyed.
 */
export function readBlob<O extends ReadBlobOptions>(store: Store, key: Key, opts?: O): Result<O, ReadBlobResult<O> | undefined> {
  const bad = invalid('readBlob', store, opts, O_READ_BLOB)
  if (bad) return fail(bad, opts) as Result<O, ReadBlobResult<O> | undefined>
  return run(readBlobOp, opts, [store, key, opts ?? {}]) as Result<O, ReadBlobResult<O> | undefined>
}

/** Where a blob's bytes lie in a plain file (see `blobFile`). */
export interface BlobFile {
  /** The key file. */
  file: string
  /** Where the blob's bytes begin in it. */
  offset: number
  /** How many bytes the blob has. */
  length: number
}

const blobFileOp = gensync(function* (store: Store, key: Key) {
  return yield* about(key, function* () {
    const src = yield* store.backing.openBlob(encodeKey(key))
    if (!src) return undefined
    try {
      if (!src.plain) {
        throw new KonserveError(
          'ERR_NOT_SUPPORTED',
          'the blob is not stored as plain bytes in a file (a memory store, or a compressed or encrypted one)',
        )
      }
      return { file: src.plain.file, offset: src.plain.offset, length: src.size }
    } finally {
      src.close()
    }
  })
})

/**
 * Where the blob at `key` lies as plain bytes, for tools that want a file:
 * `length` bytes at `offset` of `file` (e.g. `fs.createReadStream(file, { start:
 * offset, end: offset + length - 1 })`). Only for file stores with neither
 * compression nor encryption (otherwise `ERR_NOT_SUPPORTED`). A later write of
 * the key replaces the file (rename), never changes it: a descriptor opened on
 * it keeps reading this blob.
 */
export function blobFile<O extends Options>(store: Store, key: Key, opts?: O): Result<O, BlobFile | undefined> {
  const bad = invalid('blobFile', store, opts, O_READ)
  if (bad) return fail(bad, opts) as Result<O, BlobFile | undefined>
  return run(blobFileOp, opts, [store, key]) as Result<O, BlobFile | undefined>
}

// ---- append-only logs -----------------------------------------------------------
// A log is its own file of records (FORMAT.md §4.6): an append writes one
// length-prefixed, checksummed record at the end and syncs the file; a torn
// tail from a crash is dropped, never misread. Reads stream the records.

/** Records read per batch: bounded memory whatever the log's length. */
const LOG_BATCH = 256

/** ERR_NOT_A_LOG, naming the key's file where the backing has files. */
const notALog = (b: Backing, cke: Uint8Array) => {
  const file = b.filePath?.(cke)
  return new KonserveError('ERR_NOT_A_LOG', 'the key holds something other than an append log', file ? { file } : {})
}

function decodeRecord(store: Store, r: LogRecord): unknown {
  return decodeValue(store, { serializer: r.serializer, value: r.bytes })
}

/** Every element of the log at `cke`, or undefined when it is missing. */
function* readLog(store: Store, cke: Uint8Array): Handler<unknown[] | undefined> {
  const out: unknown[] = []
  const found = yield* eachRecord(store, cke, function* (e) {
    out.push(e)
  })
  return found ? out : undefined
}

/** Calls `f` on each element of the log, oldest first; false when the key is missing. */
function* eachRecord(store: Store, cke: Uint8Array, f: (elem: unknown) => Handler<void>): Handler<boolean> {
  const cursor = yield* store.backing.openLog(cke)
  if (!cursor) return false
  try {
    for (;;) {
      const batch = yield* cursor.next(LOG_BATCH)
      if (!batch) return true
      for (const r of batch) yield* f(decodeRecord(store, r))
    }
  } finally {
    cursor.close()
  }
}

const appendOp = gensync(function* (store: Store, key: Key, elem: unknown, w: WriteArgs) {
  return yield* about(key, function* () {
    const cke = encodeKey(key)
    // Encoded before locking: an element that cannot be stored fails with nothing written.
    const { serializer, bytes } = encodeValue(store, elem)
    const info = yield* withLock(store.backing, [cke], function* () {
      if (w.expectedRevision !== undefined) {
        const raw = yield* store.backing.getMeta(cke)
        if (raw && !raw.log) throw notALog(store.backing, cke)
        checkRevision(w, raw ? readMeta(key, raw) : undefined, store.backing, cke)
      }
      const lastWrite = yield* stamp(store.backing)
      // Used only if the log is new; its revision (0) plus the records' count is the log's revision.
      const createMeta = encodeMeta({ ...w.meta, key, type: 'append-log', lastWrite, revision: 0 })
      return yield* store.backing.append(cke, [{ serializer, bytes, stamp: lastWrite.getTime() }], createMeta)
    })
    afterWrite(store, { op: 'append', key, path: [key], oldValue: undefined, newValue: elem })
    return info.lastIndex - info.firstIndex + 1
  })
})

/** A record an async append hands to its log's group commit, with the metadata of a new log. */
interface AppendItem {
  record: NewRecord
  meta: Record<string, unknown> | undefined
}
const appendGroups = new WeakMap<Backing, AppendGroups<AppendItem>>()
const lockKeysOp = gensync(lockKeys)

/**
 * An async append through its log's group commit (ts/backing/group-commit.ts):
 * appends of one key that come while one is written go together as the next
 * write, one fsync. (Appends with `expectedRevision` check the revision on
 * their own, through the plain path.)
 */
function appendGrouped(store: Store, key: Key, elem: unknown, w: WriteArgs): Promise<number> {
  const cke = encodeKey(key)
  const { serializer, bytes } = encodeValue(store, elem)
  const b = store.backing
  let groups = appendGroups.get(b)
  if (!groups) appendGroups.set(b, (groups = new AppendGroups()))
  return groups.append(
    lockIds(b.lockScope, [cke])[0]!,
    { record: { serializer, bytes, stamp: 0 }, meta: w.meta },
    async () => {
      const ids = await lockKeysOp.async(b, [cke])
      return () => {
        try {
          b.unlock([cke])
        } finally {
          release(ids)
        }
      }
    },
    async (batch) => {
      const at = (await stampOp.async(b)).getTime()
      for (const x of batch) x.record.stamp = at
      // Used only if the log is new; its revision (0) plus the records' count is the log's revision.
      const createMeta = encodeMeta({ ...batch[0]!.meta, key, type: 'append-log', lastWrite: new Date(at), revision: 0 })
      return b.append.async(
        cke,
        batch.map((x) => x.record),
        createMeta,
      )
    },
    // close waits for the queue to be written.
    (run) => closeWaitsFor(b, run),
  )
}

async function appendAsyncOp(store: Store, key: Key, elem: unknown, w: WriteArgs): Promise<number> {
  try {
    const count = await appendGrouped(store, key, elem, w)
    afterWrite(store, { op: 'append', key, path: [key], oldValue: undefined, newValue: elem })
    return count
  } catch (err) {
    throw withKey(err, key)
  }
}

/**
 * Appends `elem` to the log at `key`, creating the log (with `opts.meta`) if
 * the key is missing. Durable when it returns: one record written at the end of
 * the log's file and synced (concurrent async appends to one log share one
 * write and one sync). Returns the number of elements in the log.
 */
export function append<O extends WriteOptions>(store: Store, key: Key, elem: unknown, opts?: O): Result<O, number> {
  const bad = invalid('append', store, opts, O_WRITE)
  if (bad) return fail(bad, opts) as Result<O, number>
  if (!opts?.sync && opts?.expectedRevision === undefined) {
    try {
      return whileOpen(store.backing, appendAsyncOp(store, key, elem, writeArgs(opts))) as Result<O, number>
    } catch (err) {
      return Promise.reject(err) as Result<O, number>
    }
  }
  return run(appendOp, opts, [store, key, elem, writeArgs(opts)]) as Result<O, number>
}

const logOp = gensync(function* (store: Store, key: Key) {
  return yield* about(key, () => readLog(store, encodeKey(key)))
})

/**
 * The elements of the log at `key`, oldest first, or undefined when there is
 * no log. This holds them all: for long logs use `reduceLog` or `logStream`.
 */
export function log<O extends Options>(store: Store, key: Key, opts?: O): Result<O, unknown[] | undefined> {
  const bad = invalid('log', store, opts, O_READ)
  if (bad) return fail(bad, opts) as Result<O, unknown[] | undefined>
  return run(logOp, opts, [store, key]) as Result<O, unknown[] | undefined>
}

const reduceLogOp = gensync(function* (store: Store, key: Key, fn: (acc: unknown, elem: unknown) => unknown, init: unknown) {
  return yield* about(key, function* () {
    let acc = init
    yield* eachRecord(store, encodeKey(key), function* (e) {
      acc = yield* callUser(fn as (...a: unknown[]) => unknown, [acc, e])
    })
    return acc
  })
})

/**
 * Folds the log at `key` oldest first: `fn(acc, elem)`, starting from `init`
 * (returned as is when there is no log). Reads the log in batches: memory does
 * not grow with its length.
 */
export function reduceLog<O extends Options, A>(
  store: Store,
  key: Key,
  // biome-ignore lint/suspicious/noExplicitAny: the user's function may type the element as it likes
  fn: (acc: A, elem: any) => A | Promise<A>,
  init: A,
  opts?: O,
): Result<O, A> {
  const bad = invalid('reduceLog', store, opts, O_READ, ['fn', fn])
  if (bad) return fail(bad, opts) as Result<O, A>
  return runUser(reduceLogOp, opts, [store, key, fn as (a: unknown, e: unknown) => unknown, init]) as Result<O, A>
}

/**
 * The elements of the log at `key`, oldest first, as an async iterable read in
 * batches (bounded memory). Nothing when there is no log. Breaking out of the
 * loop closes the log.
 */
export async function* logStream(store: Store, key: Key): AsyncGenerator<unknown, void, undefined> {
  checkStore('logStream', store)
  const cke = encodeKey(key)
  let cursor: LogCursor | undefined
  try {
    cursor = await store.backing.openLog.async(cke)
  } catch (err) {
    throw withKey(err, key)
  }
  if (!cursor) return
  try {
    for (;;) {
      let batch: LogRecord[] | undefined
      try {
        batch = await cursor.next.async(LOG_BATCH)
      } catch (err) {
        throw withKey(err, key)
      }
      if (!batch) return
      for (const r of batch) yield decodeRecordAbout(store, r, key)
    }
  } finally {
    cursor.close()
  }
}

function decodeRecordAbout(store: Store, r: LogRecord, key: Key): unknown {
  try {
    return decodeRecord(store, r)
  } catch (err) {
    throw withKey(err, key)
  }
}

export interface TrimLogOptions extends Pick<WriteOptions, 'expectedRevision' | 'sync'> {
  /** Keep only the newest `keepLast` elements. */
  keepLast?: number
  /** Drop the oldest `dropFirst` elements. */
  dropFirst?: number
}

const trimLogOp = gensync(function* (store: Store, key: Key, o: TrimLogOptions) {
  return yield* about(key, function* () {
    if ((o.keepLast === undefined) === (o.dropFirst === undefined)) {
      throw new KonserveError('ERR_INVALID_ARGUMENT', 'trimLog takes exactly one of keepLast and dropFirst')
    }
    checkRange(o.keepLast, o.dropFirst)
    const cke = encodeKey(key)
    const removed = yield* withLock(store.backing, [cke], function* () {
      const raw = yield* store.backing.getMeta(cke)
      if (!raw) {
        checkRevision(o, undefined, store.backing, cke)
        return 0
      }
      if (!raw.log) throw notALog(store.backing, cke)
      const current = readMeta(key, raw)
      checkRevision(o, current, store.backing, cke)
      const { firstIndex, lastIndex } = raw.log
      const count = lastIndex - firstIndex + 1
      const keepFrom = o.keepLast !== undefined ? firstIndex + Math.max(0, count - o.keepLast) : firstIndex + Math.min(count, o.dropFirst!)
      if (keepFrom === firstIndex) return 0
      // The log's revision goes up by one (FORMAT.md §4.6).
      const revision = revisionOf(current) + 1 - (keepFrom <= lastIndex ? lastIndex + 1 : 0)
      const meta = encodeMeta({ ...decodeMeta(key, raw.meta), lastWrite: yield* stamp(store.backing), revision })
      yield* store.backing.trimLog(cke, keepFrom, meta)
      return keepFrom - firstIndex
    })
    if (removed > 0) afterWrite(store, { op: 'trimLog', key, path: [key], oldValue: undefined, newValue: undefined })
    return removed
  })
})

/**
 * Removes the oldest elements of the log at `key`: all but the newest
 * `keepLast`, or the oldest `dropFirst`. The log is rewritten atomically.
 * Returns how many elements were removed (0 when there is no log).
 */
export function trimLog<O extends TrimLogOptions>(store: Store, key: Key, opts: O): Result<O, number> {
  const bad = opts === undefined ? badArgument('trimLog', 'opts', '{ keepLast } or { dropFirst }', opts) : invalid('trimLog', store, opts, O_TRIM)
  if (bad) return fail(bad, opts) as Result<O, number>
  return run(trimLogOp, opts, [store, key, opts]) as Result<O, number>
}

// ---- several keys at once ---------------------------------------------------------

function entriesOf(kvs: unknown): Array<[Key, unknown]> {
  if (kvs instanceof Map) return [...kvs.entries()] as Array<[Key, unknown]>
  if (kvs !== null && typeof kvs === 'object' && Symbol.iterator in kvs) return itemsOf(kvs as Iterable<[Key, unknown]>, 'multiAssoc')
  if (kvs !== null && typeof kvs === 'object') return Object.entries(kvs) as Array<[Key, unknown]>
  throw new KonserveError('ERR_INVALID_ARGUMENT', 'multiAssoc takes a Map, an iterable of [key, value] pairs, or an object')
}

const multiGetOp = gensync(function* (store: Store, keys: Iterable<Key>) {
  const ks = itemsOf(keys, 'multiGet')
  const out = new Map<Key, unknown>()
  for (const k of ks) {
    const { found, value } = yield* about(k, () => readValue(store, k))
    if (found) out.set(k, value)
  }
  return out
})

/** The values of the keys that exist, as a Map from key to value. */
export function multiGet<O extends Options>(store: Store, ks: Iterable<Key>, opts?: O): Result<O, Map<Key, unknown>> {
  const bad = invalid('multiGet', store, opts, O_READ)
  if (bad) return fail(bad, opts) as Result<O, Map<Key, unknown>>
  return run(multiGetOp, opts, [store, ks]) as Result<O, Map<Key, unknown>>
}

/** The per-key metadata of a multiAssoc (`metaByKey`), by encoded key; every key must be in the batch. */
function metaByKeyOf(metaByKey: unknown, encoded: Array<{ key: Key; cke: Uint8Array }>): Map<string, Record<string, unknown>> {
  const out = new Map<string, Record<string, unknown>>()
  if (metaByKey === undefined) return out
  const inBatch = new Set(encoded.map((e) => keyId(e.cke)))
  const pairs: Array<[unknown, unknown]> =
    metaByKey instanceof Map ? [...metaByKey.entries()] : Object.entries(metaByKey as Record<string, unknown>)
  for (const [k, m] of pairs) {
    if (!isPlainObject(m)) throw badArgument('multiAssoc', `opts.metaByKey's entry for ${JSON.stringify(k)}`, 'a plain object', m)
    let id: string
    try {
      id = keyId(encodeKey(k))
    } catch (err) {
      throw withKey(err, k as Key)
    }
    if (!inBatch.has(id)) {
      throw new KonserveError('ERR_INVALID_ARGUMENT', `multiAssoc: opts.metaByKey names the key ${JSON.stringify(k)}, which is not in the batch`)
    }
    out.set(id, m)
  }
  return out
}

const multiAssocOp = gensync(function* (store: Store, kvs: unknown, extra: Record<string, unknown> | undefined, metaByKey: unknown) {
  const entries = entriesOf(kvs)
  // Encode every value before locking: one that cannot be stored fails the batch with nothing written.
  const encoded = entries.map(([k, v]) => {
    try {
      return { key: k, cke: encodeKey(k), ...encodeValue(store, v) }
    } catch (err) {
      throw withKey(err, k)
    }
  })
  const perKey = metaByKeyOf(metaByKey, encoded)
  const ckes = encoded.map((e) => e.cke)
  const metas: Metadata[] = []
  yield* withLock(store.backing, ckes, function* () {
    const writes: RawWrite[] = []
    const lastWrite = yield* stamp(store.backing)
    for (const e of encoded) {
      const w: WriteArgs = { meta: perKey.get(keyId(e.cke)) ?? extra }
      const prev = yield* about(e.key, () => metaBeforeReplace(store, e.key, e.cke, w))
      const meta = nextMeta(e.key, 'value', prev, w, false, lastWrite)
      metas.push(meta)
      writes.push({ key: e.cke, serializer: e.serializer, meta: encodeMeta(meta), value: e.bytes })
    }
    yield* store.backing.put(writes)
  })
  // One event for the batch, its pairs in order, as konserve reports a multi-assoc.
  afterWrite(store, () => [{ op: 'multiAssoc', kvs: entries, meta: new Map(entries.map(([k], i) => [k, metas[i]!])) }])
  return new Map(entries.map(([k]) => [k, true as const]))
})

/**
 * Writes several keys; nothing is written if any value cannot be encoded.
 * Memory stores apply the batch atomically; file stores make each key atomic
 * and durable, with one directory sync for the batch. Returns Map key -> true.
 * `opts.meta` is merged into every key's metadata; `opts.metaByKey` (a Map
 * from key to metadata, or an object by string key) gives each key its own
 * (konserve's per-key `meta`; the two cannot be combined).
 */
export function multiAssoc<O extends MultiAssocOptions>(
  store: Store,
  kvs: Map<Key, unknown> | Iterable<readonly [Key, unknown]> | Record<string, unknown>,
  opts?: O,
): Result<O, Map<Key, true>> {
  let bad = invalid('multiAssoc', store, opts, O_MULTI_ASSOC)
  if (!bad && opts?.meta !== undefined && opts.metaByKey !== undefined) {
    bad = new KonserveError('ERR_INVALID_ARGUMENT', 'multiAssoc: give opts.meta (every key) or opts.metaByKey (per key), not both')
  }
  if (bad) return fail(bad, opts) as Result<O, Map<Key, true>>
  return run(multiAssocOp, opts, [store, kvs, opts?.meta, opts?.metaByKey]) as Result<O, Map<Key, true>>
}

const multiDissocOp = gensync(function* (store: Store, keys: Iterable<Key>) {
  const ks = itemsOf(keys, 'multiDissoc')
  const ckes = ks.map((k) => {
    try {
      return encodeKey(k)
    } catch (err) {
      throw withKey(err, k)
    }
  })
  // A key named twice is deleted once: whether it existed before the call answers for every mention
  // (the backings differ on a repeated key: one says false the second time, a log says true twice).
  const firstOf = new Map<string, number>()
  const unique: Uint8Array[] = []
  const slots = ckes.map((c) => {
    const id = keyId(c)
    let j = firstOf.get(id)
    if (j === undefined) {
      j = unique.length
      firstOf.set(id, j)
      unique.push(c)
    }
    return j
  })
  const existed = yield* withLock(store.backing, unique, function* () {
    return yield* store.backing.delete(unique)
  })
  afterWrite(store, () => {
    const seen = new Set<number>()
    return ks.flatMap((k, i) => {
      const j = slots[i]!
      if (seen.has(j) || existed[j] !== true) return []
      seen.add(j)
      return [{ op: 'multiDissoc' as const, key: k, path: [k], oldValue: undefined, newValue: undefined }]
    })
  })
  return new Map(ks.map((k, i) => [k, existed[slots[i]!] === true]))
})

/** Removes several keys. Returns Map key -> whether it existed. */
export function multiDissoc<O extends Options>(store: Store, ks: Iterable<Key>, opts?: O): Result<O, Map<Key, boolean>> {
  const bad = invalid('multiDissoc', store, opts, O_READ)
  if (bad) return fail(bad, opts) as Result<O, Map<Key, boolean>>
  return run(multiDissocOp, opts, [store, ks]) as Result<O, Map<Key, boolean>>
}
