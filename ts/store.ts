/**
 * Stores: a backing plus the serializers it writes and reads with.
 * `connectFsStore` and `newMemStore` return a Store; every API function takes it first.
 */
import { realpathSync, statSync } from 'node:fs'
import { realpath, stat } from 'node:fs/promises'
import { resolve } from 'node:path'
import type { Backing } from './backing/index.js'
import { type Spec, badArgument, checkOptions, checks, fail, isSync } from './args.js'
import { KonserveError, fromNative } from './errors.js'
import { FileClock } from './backends/pure/clock.js'
import { type NativeBinding, type NativeFileStore, loadNative, nativeOrWarn } from './native.js'
import { type Serializer, type SerializerOption, SerializerSet } from './serializers.js'
import { MemoryBacking } from './backends/memory.js'
import { NativeFileBacking } from './backends/native.js'
import { createPureCodec } from './backends/pure/codec.js'
import { deleteStorePure, openPureStore } from './backends/pure/store.js'
import { toLegacy } from './backing/legacy.js'

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
   * fsync each write's file and the directory before a write returns (default
   * true). With false, a crash may lose recent writes, and on file systems that
   * do not order data before renames (XFS, for one) may leave a key torn: it
   * then reads as ERR_CORRUPT, never as a wrong value.
   */
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
}

/** With `create: false`: the store directory must already be a directory. */
function notADir(dir: string, cause: unknown): KonserveError {
  const missing = (cause as NodeJS.ErrnoException)?.code === 'ENOENT'
  return new KonserveError('ERR_IO', `the store directory ${missing ? 'does not exist' : 'is not a directory'} (create: false): ${dir}`, { file: dir, cause })
}

function existingDirSync(dir: string): void {
  let st
  try {
    st = statSync(dir)
  } catch (err) {
    throw notADir(dir, err)
  }
  if (!st.isDirectory()) throw notADir(dir, undefined)
}

async function existingDir(dir: string): Promise<void> {
  let st
  try {
    st = await stat(dir)
  } catch (err) {
    throw notADir(dir, err)
  }
  if (!st.isDirectory()) throw notADir(dir, undefined)
}

function badOption(message: string): KonserveError {
  return new KonserveError('ERR_INVALID_ARGUMENT', message)
}

/** Checks the codec options and turns them into the binding's form. */
function codecOptions(opts: FsStoreOptions): { compressor: number; encryptionKey?: Buffer; acceptPlaintext?: boolean } {
  let compressor = 0
  if (opts.compressor != null) {
    checkOptions('connectFsStore', opts.compressor, { type: checks.any }, 'options.compressor')
    if (typeof opts.compressor !== 'object' || opts.compressor.type !== 'lz4') {
      throw badOption(`unknown compressor ${JSON.stringify(opts.compressor)}; the one compressor is { type: 'lz4' }`)
    }
    compressor = 1
  }
  if (opts.encryptor == null) return { compressor }
  checkOptions('connectFsStore', opts.encryptor, { type: checks.any, key: checks.any }, 'options.encryptor')
  const { type, key } = opts.encryptor as Partial<EncryptorOption>
  if (type !== 'aes') throw badOption(`unknown encryptor type ${JSON.stringify(type)}; the one encryptor is { type: 'aes', key }`)
  const bytes = typeof key === 'string' ? Buffer.from(key, 'utf8') : key instanceof Uint8Array ? Buffer.from(key) : undefined
  if (!bytes || bytes.length === 0) throw badOption('the aes encryptor needs a non-empty key (a string or a Uint8Array)')
  return { compressor, encryptionKey: bytes, acceptPlaintext: opts.acceptPlaintext === true }
}

function lockTimeout(opts: FsStoreOptions): number {
  const ms = opts.lockTimeoutMs ?? 60_000
  if (typeof ms !== 'number' || !(ms >= 0) || !Number.isFinite(ms)) {
    throw badOption(`lockTimeoutMs must be a finite number >= 0, not ${String(ms)}`)
  }
  return ms
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

  /** Which implementation does the work: 'native' (Rust core), 'pure' (TypeScript) or 'memory'. */
  get implementation(): 'native' | 'pure' | 'memory' {
    return this.backing.implementation
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

type Ret<O, T> = O extends { sync: true } ? T : Promise<T>

function checkPath(path: unknown): string {
  if (typeof path !== 'string' || path === '') {
    throw new KonserveError('ERR_INVALID_ARGUMENT', 'a file store needs a directory path (a non-empty string)')
  }
  return resolve(path)
}

/** The native binding if this store should use it, else undefined (pure TypeScript). */
function chooseNative(opts: FsStoreOptions): NativeBinding | undefined {
  if (opts.native === true) return loadNative()
  if (opts.native === false || process.env.KONSERVE_NATIVE === '0') return undefined
  return nativeOrWarn()
}

/** The backing over an opened native store in the canonical directory `real`, with its clock. */
function nativeBacking(store: NativeFileStore, real: string, syncBlob: boolean): NativeFileBacking {
  try {
    return new NativeFileBacking(store, `file:${real}`, FileClock.openSync(real, syncBlob))
  } catch (err) {
    throw fromNative(err)
  }
}

const STORE_OPTIONS: Spec = {
  serializer: (v) => (typeof v === 'string' || (v !== null && typeof v === 'object') ? undefined : "a serializer's name or a Serializer"),
  serializers: (v) => (Array.isArray(v) ? undefined : 'an array of Serializers'),
  sync: checks.boolean,
}
const FS_STORE_OPTIONS: Spec = {
  ...STORE_OPTIONS,
  syncBlob: checks.boolean,
  compressor: (v) => (v === null || typeof v === 'object' ? undefined : "{ type: 'lz4' } or null"),
  encryptor: (v) => (v === null || typeof v === 'object' ? undefined : "{ type: 'aes', key } or null"),
  native: checks.boolean,
  create: checks.boolean,
  acceptPlaintext: checks.boolean,
  lockTimeoutMs: (v) => (typeof v === 'number' ? undefined : 'a number of milliseconds >= 0'),
}
const DELETE_OPTIONS: Spec = { sync: checks.boolean, native: checks.boolean }
const CLOSE_OPTIONS: Spec = { sync: checks.boolean }

/** Checks connectFsStore's arguments; returns the serializers and the binding's options. Opens nothing. */
function checkFsArgs(path: unknown, options: unknown): { dir: string; serializers: SerializerSet; open: ReturnType<typeof codecOptions> & { syncBlob: boolean; lockTimeoutMs?: number } } {
  checkOptions('connectFsStore', options, FS_STORE_OPTIONS, 'options')
  const opts = (options ?? {}) as FsStoreOptions
  const dir = checkPath(path)
  const serializers = new SerializerSet(opts.serializer, opts.serializers)
  return { dir, serializers, open: { syncBlob: opts.syncBlob ?? true, lockTimeoutMs: lockTimeout(opts), ...codecOptions(opts) } }
}

/** Opens (creating if needed) a file store in the directory `path`. */
export function connectFsStore<O extends FsStoreOptions & SyncOption>(path: string, options?: O): Ret<O, Store> {
  const opts: FsStoreOptions & SyncOption = options ?? {}
  if (isSync(options)) {
    const { dir, serializers, open: openOptions } = checkFsArgs(path, options)
    if (opts.create === false) existingDirSync(dir)
    const native = chooseNative(opts)
    if (!native) {
      const codec = createPureCodec(openOptions.compressor, openOptions.encryptionKey, openOptions.acceptPlaintext)
      return opened(new Store(toLegacy(openPureStore.sync(dir, codec, openOptions)), serializers, dir)) as Ret<O, Store>
    }
    // The core creates the directory, fsyncing each new level into its parent.
    let store
    try {
      store = native.NativeFileStore.open(dir, openOptions)
    } catch (err) {
      throw fromNative(err)
    }
    return opened(new Store(nativeBacking(store, realpathSync(dir), openOptions.syncBlob), serializers, dir)) as Ret<O, Store>
  }
  return (async () => {
    const { dir, serializers, open: openOptions } = checkFsArgs(path, options)
    if (opts.create === false) await existingDir(dir)
    const native = chooseNative(opts)
    if (!native) {
      const codec = createPureCodec(openOptions.compressor, openOptions.encryptionKey, openOptions.acceptPlaintext)
      return opened(new Store(toLegacy(await openPureStore.async(dir, codec, openOptions)), serializers, dir))
    }
    const store = await native.NativeFileStore.openAsync(dir, openOptions).catch((err: unknown) => {
      throw fromNative(err)
    })
    return opened(new Store(nativeBacking(store, await realpath(dir), openOptions.syncBlob), serializers, dir))
  })() as Ret<O, Store>
}

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

/** Registers a newly opened file store. */
function opened(store: Store): Store {
  const scope = store.backing.lockScope
  const ref = new WeakRef(store)
  let set = openStores.get(scope)
  if (!set) openStores.set(scope, (set = new Set()))
  set.add(ref)
  forget.register(store, { scope, ref })
  trackCursors(store.backing)
  return store
}

/** The stores of this process open on the directory `dir` (canonical path), or none. */
function storesOn(dir: string): Store[] {
  let real: string
  try {
    real = realpathSync(dir)
  } catch {
    return []
  }
  const out: Store[] = []
  for (const ref of openStores.get(`file:${real}`) ?? []) {
    const s = ref.deref()
    if (s && !s.ended) out.push(s)
  }
  return out
}

/**
 * Deletes a file store's files (konserve files only: anything else and the
 * directory stay if not empty). Stores of this process still open on the
 * directory are ended first: their later calls fail with ERR_STORE_DELETED.
 */
export function deleteStore<O extends SyncOption & { native?: boolean }>(path: string, options?: O): Ret<O, void> {
  if (isSync(options)) {
    checkOptions('deleteStore', options, DELETE_OPTIONS, 'options')
    const dir = checkPath(path)
    const native = chooseNative(options!)
    for (const s of storesOn(dir)) endSync(s, deleted(dir))
    try {
      return (native ? native.deleteStoreSync(dir) : deleteStorePure(dir)) as Ret<O, void>
    } catch (err) {
      throw fromNative(err)
    }
  }
  return (async () => {
    checkOptions('deleteStore', options, DELETE_OPTIONS, 'options')
    const dir = checkPath(path)
    const native = chooseNative(options ?? {})
    await Promise.allSettled(storesOn(dir).map((s) => end(s, deleted(dir))))
    try {
      await (native ? native.deleteStoreAsync(dir) : deleteStorePure(dir))
    } catch (err) {
      throw fromNative(err)
    }
  })() as Ret<O, void>
}

const deleted = (dir: string): Ended => ({ code: 'ERR_STORE_DELETED', why: `the store's directory was deleted (deleteStore ${dir})` })
const closed: Ended = { code: 'ERR_CLOSED', why: 'the store is closed' }

/**
 * Which implementation a store uses: 'native' (the Rust core), 'pure'
 * (TypeScript, the same files) or 'memory'. Without a store: which one a new
 * file store would use here ('native' if its binary loads and KONSERVE_NATIVE
 * is not 0).
 */
export function implementation(store?: Store): 'native' | 'pure' | 'memory' {
  if (store !== undefined) {
    checkStore('implementation', store)
    return store.implementation
  }
  return chooseNative({}) ? 'native' : 'pure'
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
  if (isSync(opts)) return endSync(store, closed) as Ret<O, void>
  return end(store, closed) as Ret<O, void>
}

/** What a backing may implement to be closed (see Backing.close). */
interface Closable {
  close?(): Promise<void>
  closeSync?(): void
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

/** Ends `store` (and the stores over it) now, without waiting for queued writes. */
function endSync(store: Store, why: Ended): void {
  if (store.ended) return
  const b = store.backing as Backing & Closable
  // A tiered store that cannot drop its queue without losing writes refuses first.
  b.closeSync?.()
  store.ended = why
  for (const s of dependents(store)) endSync(s, why)
  seal(b, why, store.path)
  closeCursors(b, why, store.path)
}

/**
 * Ends `store` (and the stores over it), waiting for the writes already handed
 * to it: new calls are refused at once; the backing is sealed once its queues
 * have drained.
 */
async function end(store: Store, why: Ended): Promise<void> {
  if (store.ended) return
  store.ended = why
  const b = store.backing as Backing & Closable
  // Stores over this one first: a write-behind store's queue goes into this one.
  const results = await Promise.allSettled(dependents(store).map((s) => end(s, why)))
  try {
    // The operations called before close end first; then the backing's own queues.
    await idle(b)
    await b.close?.()
  } finally {
    seal(b, why, store.path)
    closeCursors(b, why, store.path)
  }
  for (const r of results) if (r.status === 'rejected') throw r.reason
}

const SYNC_METHODS = [
  'getSync', 'getValueSync', 'getMetaSync', 'existsSync', 'putSync', 'deleteSync', 'listSync', 'openList', 'lockSync',
  'tryLock', 'blobWriterSync', 'openBlobSync', 'appendSync', 'openLogSync', 'trimLogSync',
] as const
const ASYNC_METHODS = [
  'getAsync', 'getValueAsync', 'getMetaAsync', 'existsAsync', 'putAsync', 'deleteAsync', 'listAsync', 'blobWriterAsync',
  'openBlobAsync', 'appendAsync', 'openLogAsync', 'trimLogAsync', 'flushAsync',
] as const

/**
 * Makes every operation of an ended backing fail with the store's error, for
 * whatever reaches it (the API, sweep, a cached or tiered store over it):
 * own properties shadowing the methods, so an open store pays nothing.
 * `unlock` and `filePath` keep working: an operation under way releases its locks.
 */
function seal(b: Backing, why: Ended, path: string | undefined): void {
  const error = () => new KonserveError(why.code, why.why, path ? { file: path } : {})
  const target = b as unknown as Record<string, unknown>
  for (const m of SYNC_METHODS) {
    if (typeof target[m] === 'function') {
      target[m] = () => {
        throw error()
      }
    }
  }
  for (const m of ASYNC_METHODS) if (typeof target[m] === 'function') target[m] = () => Promise.reject(error())
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
  const target = b as unknown as Record<string, (...a: unknown[]) => unknown>
  for (const m of ['openList', 'openBlobSync', 'openLogSync'] as const) {
    const f = target[m]!.bind(b)
    target[m] = (...a) => track(f(...a) as Closes | undefined)
  }
  for (const m of ['openBlobAsync', 'openLogAsync'] as const) {
    const f = target[m]!.bind(b)
    target[m] = async (...a) => track((await f(...a)) as Closes | undefined)
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
    for (const m of ['readSync', 'nextSync']) {
      if (typeof target[m] === 'function') {
        target[m] = () => {
          throw error()
        }
      }
    }
    for (const m of ['read', 'readInto', 'next']) if (typeof target[m] === 'function') target[m] = () => Promise.reject(error())
  }
  open.clear()
}

/** @internal Records that `wrapper` was built over `inner`: it ends when `inner` does. */
export function builtOver(wrapper: Store, ...inner: Store[]): void {
  for (const s of inner) s.over.add(new WeakRef(wrapper))
}
