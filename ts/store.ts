/**
 * Stores: a backing plus the serializers it writes and reads with. Every API
 * function takes a Store first. This module has no Node in it (the browser
 * build uses it too): `newMemStore` is here, file stores are opened by
 * ts/node/fs-store.ts (`connectFsStore`, `deleteStore`).
 */
import type { Backing } from './backing/seam.js'
import { type Op, twinOp } from './backing/index.js'
import gensync, { type Handler } from 'gensync'
import { type Spec, badArgument, checkOptions, checks, fail, isSync } from './args.js'
import { KonserveError } from './errors.js'
import { type Serializer, type SerializerOption, SerializerSet } from './serializers.js'
import { MemoryBacking } from './backends/memory.js'

export interface StoreOptions {
  /** Serializer for new writes: 'msgpack' (default), 'json', or your own. */
  serializer?: SerializerOption
  /** More serializers to read with (ids 128..255). */
  serializers?: Serializer[]
}

/** LZ4 compression of values and metadata (docs/FORMAT.md §4.2). */
export interface CompressorOption {
  type: 'lz4'
}

/**
 * AES-256-CBC encryption of values and metadata, authenticated with
 * HMAC-SHA256, keys derived per segment with HKDF from `key` (docs/FORMAT.md §4.3).
 */
export interface EncryptorOption {
  type: 'aes'
  /** The secret: a string (its UTF-8 bytes are used) or bytes. */
  key: string | Uint8Array
}

export interface FsStoreOptions extends StoreOptions {
  /**
   * Durable writes: fsync each write's file and the directory before a write
   * returns (default true). With false, a crash may lose recent writes, and on
   * file systems that do not order data before renames (XFS, for one) may
   * leave a key torn: it then reads as ERR_CORRUPT, never as a wrong value.
   * (Not to be confused with `sync`, which asks for a blocking call.)
   */
  durable?: boolean
  /** The seed's name of `durable` (konserve's `:sync-blob?`), still accepted; give one of the two. */
  syncBlob?: boolean
  /** Compress new writes. Files are always read by the compressor their header names. */
  compressor?: CompressorOption | null
  /**
   * Encrypt new writes; needed to read encrypted files. An encrypted store
   * refuses (ERR_DECRYPT) every file that is not encrypted: anyone who can
   * write the directory could have planted it.
   */
  encryptor?: EncryptorOption | null
  /**
   * With an `encryptor`: also read files that are not encrypted, for the
   * explicit migration of a plaintext store (rewrite each key to encrypt it).
   * Default false.
   */
  acceptPlaintext?: boolean
  /**
   * Which implementation writes the files (the same bytes either way): `true`
   * requires the native Rust core (`ERR_NATIVE_UNAVAILABLE` without it),
   * `false` uses pure TypeScript. Default: native where its binary loads,
   * else pure with one warning; `KONSERVE_NATIVE=0` makes pure the default.
   */
  native?: boolean
  /**
   * Create the store directory (and its missing parents) if it does not exist
   * (default true). With false, opening a missing directory fails with ERR_IO
   * (its cause ENOENT) and creates nothing: for tools that only read.
   */
  create?: boolean
  /**
   * How long a write waits for a key locked by another process (or thread)
   * before it fails with ERR_LOCK_TIMEOUT naming the holder (default 60000).
   * Keep it above the 30 s lease after which a holder on another host counts
   * as dead (docs/FORMAT.md §6).
   */
  lockTimeoutMs?: number
  /**
   * Open the store read-only (default false), for a directory on read-only
   * media or without write permission: the directory must exist; opening
   * creates nothing, sweeps no staging files, writes no key check or clock,
   * and reads take no lock (a key file is only ever replaced by a rename, so
   * a read sees the old file or the new one, whole). Every write and lock
   * (assoc, updateIn, dissoc, bassoc, append, trimLog, multi-key writes)
   * fails with ERR_READ_ONLY naming the directory, before it touches a file.
   */
  readOnly?: boolean
  /**
   * The native core's value cache, in bytes of memory per store (default
   * 4 MiB; 0 turns it off): small values read before are answered from memory
   * until the kernel reports a change to their file (inotify on Linux, local
   * file systems only; a write acknowledged in any process before a get
   * begins is always seen, docs/RELIABILITY.md). Elsewhere, and in the pure
   * implementation, it has no effect.
   */
  valueCacheBytes?: number
  /**
   * Experimental (docs/WAL.md), in the native core and the pure engine alike (they share one log): `true` switches the store
   * to a write-ahead log (small puts and deletes become records of
   * `.konserve.wal`, acknowledged after one `fdatasync`, moved into key files
   * by checkpoints); `false` switches it back (a full checkpoint, then the
   * log removed). Absent: the store stays as it is. A store with the log is
   * refused by builds that do not know it (ERR_UNSUPPORTED_VERSION); `rekey`
   * checkpoints it, rekeys it and puts it back on a new log.
   * No other process may have the store open while it is switched.
   */
  wal?: boolean
  /**
   * With the write-ahead log: how long (ms) the log must see no append before
   * it is checkpointed in the background (default 100; 0: never, the log is
   * then checkpointed by the write that takes it past 16 MiB, by
   * `wal: false`, or by another process). The native core runs it on a
   * thread of its own, the pure engine from an `unref`ed timer.
   */
  walIdleCheckpointMs?: number
  /**
   * Native core, Linux, with `durable`: write large blobs past the page cache
   * (`O_DIRECT`). Once more than 1 MiB of a blob has arrived, the rest goes to
   * the disk in aligned 1 MiB writes, which runs at the disk's pace where the
   * page cache's writeback does not (README, "Blobs"). The bytes are the same;
   * a blob just written direct is then read from the disk, not from memory.
   * `'auto'` (the default): only while the process ingests at volume (more
   * than 1 GiB of durable blobs in the last 10–20 s, all stores); `true`: every
   * large blob; `false`: every blob through the page cache. A file system that
   * refuses direct I/O gets buffered writes anyway. The pure engine always
   * writes buffered.
   */
  directBlobs?: boolean | 'auto'
}

/** @internal An invalid option. */
export function badOption(message: string): KonserveError {
  return new KonserveError('ERR_INVALID_ARGUMENT', message)
}

export interface SyncOption {
  /** Return the result (or throw) instead of a Promise. */
  sync?: boolean
}

/** Why a store refuses every call: it was closed, or its directory deleted (see `close`). */
interface Ended {
  code: 'ERR_CLOSED' | 'ERR_STORE_DELETED'
  why: string
}

export class Store {
  /** @internal */
  readonly serializers: SerializerSet
  /** @internal Set once the store is closed (or its directory deleted): every call then fails. */
  ended?: Ended
  /** @internal The stores built over this one (withCache, tieredStore): they end with it. */
  readonly over = new Set<WeakRef<Store>>()

  constructor(
    /** @internal */ readonly backing: Backing,
    options: StoreOptions | SerializerSet,
    /** The store directory, for file stores. */
    readonly path?: string,
  ) {
    this.serializers = options instanceof SerializerSet ? options : new SerializerSet(options.serializer, options.serializers)
  }

  /** Which implementation does the work: 'native' (Rust core), 'pure' (TypeScript), 'memory' or 'idb' (IndexedDB, the browser entry). */
  get implementation(): 'native' | 'pure' | 'memory' | 'idb' {
    return this.backing.implementation as 'native' | 'pure' | 'memory' | 'idb'
  }

  /** @internal The error a call named `fn` gets on an ended store. */
  endedError(fn: string): KonserveError {
    const e = this.ended!
    return new KonserveError(e.code, `${fn}: ${e.why}`, this.path ? { file: this.path } : {})
  }
}

// `await using db = await connectFsStore(dir)` and `using db = connectFsStore(dir, { sync: true })`.
const asyncDispose: symbol = (Symbol as { asyncDispose?: symbol }).asyncDispose ?? Symbol.for('nodejs.asyncDispose')
const dispose: symbol = (Symbol as { dispose?: symbol }).dispose ?? Symbol.for('nodejs.dispose')
Object.defineProperty(Store.prototype, asyncDispose, {
  value: function (this: Store): Promise<void> {
    return close(this)
  },
  writable: true,
  configurable: true,
})
Object.defineProperty(Store.prototype, dispose, {
  value: function (this: Store): void {
    close(this, { sync: true })
  },
  writable: true,
  configurable: true,
})

/**
 * @internal Checks a store argument at the API boundary: a Store, not closed.
 * Throws ERR_INVALID_ARGUMENT, ERR_CLOSED or ERR_STORE_DELETED.
 */
export function checkStore(fn: string, store: unknown, param = 'store'): asserts store is Store {
  if (!(store instanceof Store)) {
    throw badArgument(fn, param, 'a Store (from connectFsStore, newMemStore, withCache or tieredStore)', store)
  }
  if (store.ended) throw store.endedError(fn)
}

/** @internal */
export type Ret<O, T> = O extends { sync: true } ? T : Promise<T>

/** @internal The options every store takes. */
export const STORE_OPTIONS: Spec = {
  serializer: (v) => (typeof v === 'string' || (v !== null && typeof v === 'object') ? undefined : "a serializer's name or a Serializer"),
  serializers: (v) => (Array.isArray(v) ? undefined : 'an array of Serializers'),
  sync: checks.boolean,
}
const CLOSE_OPTIONS: Spec = { sync: checks.boolean }

/** A new, empty store in memory, private to this thread. */
export function newMemStore<O extends StoreOptions & SyncOption>(options?: O): Ret<O, Store> {
  try {
    checkOptions('newMemStore', options, { ...STORE_OPTIONS, compressor: checks.any, encryptor: checks.any }, 'options')
    const given = (options ?? {}) as FsStoreOptions
    // Refused, never silently dropped: a user asking for encryption must not get plaintext.
    if (given.compressor != null || given.encryptor != null) {
      throw badOption('the memory store keeps values in memory and neither compresses nor encrypts; use a file store')
    }
    const store = new Store(new MemoryBacking(), options ?? {})
    return (isSync(options) ? store : Promise.resolve(store)) as Ret<O, Store>
  } catch (err) {
    return fail(err, options) as unknown as Ret<O, Store>
  }
}

// ---- the open file stores of this process, for deleteStore ----------------------
// By canonical directory (the backing's lock scope): deleteStore ends the
// stores open on the directory it deletes. Weak: a store nobody holds is not kept.

const openStores = new Map<string, Set<WeakRef<Store>>>()
const forget = new FinalizationRegistry<{ scope: string; ref: WeakRef<Store> }>(({ scope, ref }) => {
  const set = openStores.get(scope)
  set?.delete(ref)
  if (set?.size === 0) openStores.delete(scope)
})

/** @internal Registers a newly opened file store (its backing's lock scope names its directory). */
export function opened(store: Store): Store {
  const scope = store.backing.lockScope
  const ref = new WeakRef(store)
  let set = openStores.get(scope)
  if (!set) openStores.set(scope, (set = new Set()))
  set.add(ref)
  forget.register(store, { scope, ref })
  trackCursors(store.backing)
  return store
}

/** The stores of this process open on the lock scope `scope` (a file store's: `file:<canonical dir>`). */
function storesIn(scope: string): Store[] {
  const out: Store[] = []
  for (const ref of openStores.get(scope) ?? []) {
    const s = ref.deref()
    if (s && !s.ended) out.push(s)
  }
  return out
}

/**
 * @internal Ends the stores open on `scope` (deleteStore: their directory is
 * going). A store that refuses to end (a blocking close with write-behind
 * writes queued) stops it; errors of stores that did end are theirs.
 */
export function* endStoresIn(scope: string, dir: string): Handler<void> {
  for (const s of storesIn(scope)) {
    try {
      yield* endStore(s, deleted(dir))
    } catch (err) {
      if (!s.ended) throw err
    }
  }
}

const deleted = (dir: string): Ended => ({ code: 'ERR_STORE_DELETED', why: `the store's directory was deleted (deleteStore ${dir})` })
const closed: Ended = { code: 'ERR_CLOSED', why: 'the store is closed' }

/**
 * Which implementation a store uses: 'native' (the Rust core), 'pure'
 * (TypeScript, the same files) or 'memory'. Without a store: which one a new
 * file store would use here ('native' if its binary loads and KONSERVE_NATIVE
 * is not 0).
 */
export function implementation(store?: Store): 'native' | 'pure' | 'memory' | 'idb' {
  if (store !== undefined) {
    checkStore('implementation', store)
    return store.implementation
  }
  return defaultImplementation()
}

/** Which implementation a new file store would use here (the Node entry knows; elsewhere none is there). */
let defaultImplementation: () => 'native' | 'pure' | 'memory' = () => 'memory'
/** @internal Hands in `implementation()`'s answer without a store (ts/node/fs-store.ts). */
export function useDefaultImplementation(f: () => 'native' | 'pure' | 'memory'): void {
  defaultImplementation = f
}

// ---- close ----------------------------------------------------------------------

/**
 * Closes a store: later calls on it (and on the stores built over it with
 * withCache or tieredStore) fail with ERR_CLOSED. The async form first waits
 * for the writes already handed to the store (queued group commits, queued
 * write-behind writes of a tiered store), then releases what it holds (open
 * listing, blob and log cursors, caches, the memory store's contents).
 * Closing again does nothing. A cached or tiered store closes only itself:
 * the stores it was built over stay open (they are yours to close).
 */
export function close<O extends SyncOption>(store: Store, opts?: O): Ret<O, void> {
  try {
    checkOptions('close', opts, CLOSE_OPTIONS)
    if (!(store instanceof Store)) throw badArgument('close', 'store', 'a Store', store)
  } catch (err) {
    return fail(err, opts) as unknown as Ret<O, void>
  }
  if (isSync(opts)) {
    if (!store.backing.blocking && !store.ended) {
      // The facade's one refusal of blocking calls, for a close (ts/api.ts checkBlocking).
      throw new KonserveError('ERR_NOT_SUPPORTED', `the ${store.implementation} store has no blocking form: call close without { sync: true }`)
    }
    return endOp.sync(store, closed) as Ret<O, void>
  }
  return endOp.async(store, closed) as Ret<O, void>
}

/** The stores built over `store` (withCache, tieredStore), still alive and open. */
function dependents(store: Store): Store[] {
  const out: Store[] = []
  for (const ref of store.over) {
    const s = ref.deref()
    if (s && !s.ended) out.push(s)
  }
  return out
}

/** How many async operations are under way on a backing, and who waits for none to be. */
interface Work {
  n: number
  idle?: Promise<void>
  wake?: () => void
}
const working = new WeakMap<Backing, Work>()

function started(b: Backing): () => void {
  let w = working.get(b)
  if (!w) working.set(b, (w = { n: 0 }))
  w.n++
  return () => {
    if (--w.n === 0 && w.wake) {
      w.wake()
      w.wake = w.idle = undefined
    }
  }
}

/** Resolves once no async operation is under way on `b`. */
function idle(b: Backing): Promise<void> {
  const w = working.get(b)
  if (!w || w.n === 0) return Promise.resolve()
  w.idle ??= new Promise<void>((resolve) => (w.wake = resolve))
  return w.idle
}

/** @internal Makes close wait for `p`, work already handed to the backing (grouped appends). */
export function closeWaitsFor(b: Backing, p: Promise<unknown>): void {
  const done = started(b)
  p.then(done, done)
}

/**
 * @internal An async operation called on an open store: close waits for it
 * to end. Returns the promise to hand to the caller (a rejection nobody
 * handles is still reported as unhandled).
 */
export function whileOpen<R>(b: Backing, p: Promise<R>): Promise<R> {
  const done = started(b)
  return p.then(
    (r) => {
      done()
      return r
    },
    (err: unknown) => {
      done()
      throw err
    },
  )
}

/** Whether the running operation is the blocking form. */
const inBlockingForm = twinOp(
  () => true,
  async () => false,
)
/** What a backing's async operations leave to wait for; a blocking close waits for nothing. */
const untilIdle = twinOp(
  (_b: Backing) => {},
  (b: Backing) => idle(b),
)
const closeBacking = gensync(function* (b: Backing): Handler<void> {
  if (b.close) yield* b.close()
})

/**
 * Ends `store` and the stores over it. Async form: new calls are refused at
 * once; the stores over this one end first (a write-behind store's queue goes
 * into this one), then the operations called before close, then the
 * backing's own queues (its close), then the backing is sealed. Blocking
 * form: waits for nothing; the stores over this one end first, and one that
 * would drop queued writes refuses (its close throws), and so does a backing
 * of this store's own: this store then stays open. (A first version closed
 * this backing before asking the stores over it: a write-behind tier over it
 * refused, but its queued writes could no longer reach this store.)
 */
function* endStore(store: Store, why: Ended): Handler<void> {
  if (store.ended) return
  const b = store.backing
  const blocking = yield* inBlockingForm()
  if (blocking) {
    for (const s of dependents(store)) yield* endStore(s, why)
    yield* closeBacking(b)
    store.ended = why
    seal(b, why, store.path)
    closeCursors(b, why, store.path)
    return
  }
  store.ended = why
  let failed: { err: unknown } | undefined
  for (const s of dependents(store)) {
    try {
      yield* endStore(s, why)
    } catch (err) {
      failed ??= { err }
    }
  }
  try {
    yield* untilIdle(b)
    yield* closeBacking(b)
  } finally {
    seal(b, why, store.path)
    closeCursors(b, why, store.path)
  }
  if (failed) throw failed.err
}
const endOp = gensync(endStore)

/** The operations of a backing (its Ops); `lock` too: a write that starts after the end fails at once. */
const OPS = ['get', 'getValue', 'getMeta', 'exists', 'put', 'delete', 'lock', 'blobWriter', 'blobReplace', 'openBlob', 'append', 'openLog', 'trimLog', 'logWriter'] as const

/** An Op that fails with `error()` in every form. */
function failing(error: () => KonserveError): Op<unknown[], never> {
  return twinOp(
    () => {
      throw error()
    },
    () => Promise.reject(error()),
  )
}

/** Replaces a member of `target` by an own property (a layer's members may be getters). */
function shadow(target: object, name: string, value: unknown): void {
  Object.defineProperty(target, name, { value, writable: true, configurable: true, enumerable: true })
}

/**
 * Makes every operation of an ended backing fail with the store's error, for
 * whatever reaches it (the API, sweep, a cached or tiered store over it):
 * own properties shadowing the members, so an open store pays nothing.
 * `unlock` and `filePath` keep working: an operation under way releases its locks.
 */
function seal(b: Backing, why: Ended, path: string | undefined): void {
  const error = () => new KonserveError(why.code, why.why, path ? { file: path } : {})
  for (const m of OPS) if (b[m]) shadow(b, m, failing(error))
  const throwing = () => {
    throw error()
  }
  shadow(b, 'openList', throwing)
  if (b.getValueNow) shadow(b, 'getValueNow', throwing)
  if (b.flush) shadow(b, 'flush', () => Promise.reject(error()))
}

// ---- open cursors, closed with their store ------------------------------------------

interface Closes {
  close(): void
}
const cursors = new WeakMap<Backing, Set<Closes>>()

/** Wraps the backing's cursor openers so that close can close what is still open. */
function trackCursors(b: Backing): void {
  const open = new Set<Closes>()
  cursors.set(b, open)
  const track = <C extends Closes | undefined>(c: C): C => {
    if (!c) return c
    const inner = c.close.bind(c)
    open.add(c)
    c.close = () => {
      open.delete(c)
      inner()
    }
    return c
  }
  const list = b.openList.bind(b)
  shadow(b, 'openList', () => track(list()))
  for (const m of ['openBlob', 'openLog'] as const) {
    const op = b[m] as Op<[Uint8Array], Closes | undefined>
    shadow(b, m, twinOp(
      (key: Uint8Array) => track(op.sync(key)),
      async (key: Uint8Array) => track(await op.async(key)),
    ))
  }
}

/**
 * Closes the cursors still open on `b`; a later read through one of them (a
 * blob stream being consumed, a log iterator) fails with the store's error
 * (ERR_CLOSED, ERR_STORE_DELETED), not with the cursor's own "closed".
 */
function closeCursors(b: Backing, why: Ended, path: string | undefined): void {
  const open = cursors.get(b)
  if (!open) return
  const error = () => new KonserveError(why.code, why.why, path ? { file: path } : {})
  for (const c of [...open]) {
    try {
      c.close()
    } catch {
      // Closing is best effort: the cursor is dropped either way.
    }
    const target = c as unknown as Record<string, unknown>
    for (const m of ['read', 'next']) if (target[m]) shadow(c, m, failing(error))
    if (target.readInto) shadow(c, 'readInto', () => Promise.reject(error()))
  }
  open.clear()
}

/** @internal Records that `wrapper` was built over `inner`: it ends when `inner` does. */
export function builtOver(wrapper: Store, ...inner: Store[]): void {
  for (const s of inner) s.over.add(new WeakRef(wrapper))
}
