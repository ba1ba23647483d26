/**
 * The store registry (konserve.store): one config-based entry point for every
 * backend. `config.backend` names the backend ('file', 'memory', or one
 * registered with `registerBackend`); the other fields are the backend's.
 *
 *   createStore(config)   a new store; ERR_STORE_EXISTS if there is one
 *   connectStore(config)  an existing store; ERR_STORE_NOT_FOUND if there is none
 *   storeExists(config)   whether there is one
 *   deleteStore(config)   deletes it (nothing if there is none); stores of this
 *                         process open on it are ended (ERR_STORE_DELETED)
 *   releaseStore(store)   gives back what this connection holds
 *
 * Each takes `{ sync: true }` as its last argument for the blocking form, as
 * everywhere else. The network backends ('redis', 'postgres', 's3') are known
 * by name: the async form loads one from its subpath module (`konserve/redis`,
 * …) on first use, through the loader the Node entry injects (useBackendLoader);
 * they have no blocking form. `deleteStore(path, options)`, the file-store form of
 * store.ts, keeps working: a string first argument goes there.
 */
import { mkdirSync, rmdirSync, statSync } from 'node:fs'
import { mkdir, rmdir, stat } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import gensync, { type Handler } from 'gensync'
import { twinOp } from './backing/index.js'
import { type Spec, badArgument, checkOptions, checks, fail, isPlainObject, isSync } from './args.js'
import { KonserveError, toKonserveError } from './errors.js'
import { fsyncDirSync } from './fsync.js'
import { type FsStoreOptions, type StoreOptions, type SyncOption, Store, close, newMemStore } from './store.js'
import { connectFsStore, deleteStore as deleteFsStore } from './node/fs-store.js'

type Ret<O, T> = O extends { sync: true } ? T : Promise<T>

/** A store's configuration: `backend` names the backend, the rest is the backend's. */
export interface StoreConfig {
  backend: string
  [field: string]: unknown
}

/** `{ backend: 'file', path, ...connectFsStore's options }` (not `create`: createStore or connectStore say it). */
export interface FileStoreConfig extends Omit<FsStoreOptions, 'create'> {
  backend: 'file'
  /** The store directory. */
  path: string
  /** A name for the store, kept with the config (konserve requires one; here it is optional and not used to find the store). */
  id?: string
}

/**
 * `{ backend: 'memory', id?, ...newMemStore's options }`. With an `id` the
 * store is kept in this thread's registry under it: connectStore with the same
 * id gets the same store, until deleteStore. Without one each call makes a new,
 * unregistered store (that never "exists").
 */
export interface MemoryStoreConfig extends StoreOptions {
  backend: 'memory'
  id?: string
}

/** What a backend's functions are called with. */
export interface BackendCallOptions {
  /** The blocking form: return the result itself (or throw), never a Promise. */
  sync: boolean
}

/**
 * A backend, for `registerBackend`. Each function gets the caller's config
 * (its `backend` field included) and `{ sync }`: with `sync: true` it returns
 * its result (or throws); otherwise it may return a Promise. A backend with no
 * blocking form returns a Promise anyway: a sync call then fails with
 * ERR_NOT_SUPPORTED. `create` on an existing store and `connect` on a missing
 * one should throw ERR_STORE_EXISTS / ERR_STORE_NOT_FOUND (`storeExistsError`,
 * `storeNotFoundError`). `release` defaults to `close(store)`.
 */
export interface Backend<C extends StoreConfig = StoreConfig> {
  create(config: C, opts: BackendCallOptions): Store | Promise<Store>
  connect(config: C, opts: BackendCallOptions): Store | Promise<Store>
  exists(config: C, opts: BackendCallOptions): boolean | Promise<boolean>
  delete(config: C, opts: BackendCallOptions): void | Promise<void>
  release?(store: Store, config: C, opts: BackendCallOptions): void | Promise<void>
}

/** ERR_STORE_EXISTS for `what` (say, `the file store at /x`). */
export function storeExistsError(what: string, file?: string): KonserveError {
  return new KonserveError('ERR_STORE_EXISTS', `createStore: ${what} already exists; use connectStore to open it`, file ? { file } : {})
}

/** ERR_STORE_NOT_FOUND for `what`. */
export function storeNotFoundError(what: string, file?: string): KonserveError {
  return new KonserveError('ERR_STORE_NOT_FOUND', `connectStore: ${what} does not exist; use createStore to make it`, file ? { file } : {})
}

const backends = new Map<string, Backend>()

/**
 * The backends known by name that load on first use: the module each is in
 * (which registers it at its top level) and the packages it needs.
 */
const known: Record<string, { module: string; needs: string }> = {
  redis: { module: 'konserve/redis', needs: 'ioredis (or redis, for node-redis)' },
  postgres: { module: 'konserve/postgres', needs: 'pg' },
  s3: { module: 'konserve/s3', needs: '@aws-sdk/client-s3 and @aws-sdk/lib-storage' },
}
let loadModule: ((specifier: string) => Promise<unknown>) | undefined
const loading = new Map<string, Promise<void>>()

/** @internal The Node entry's module loader (ts/node/wire.ts), for the backends known by name. */
export function useBackendLoader(load: (specifier: string) => Promise<unknown>): void {
  loadModule = load
}

/** Loads the module of a backend known by name (once); it registers the backend. */
function loadKnown(fn: string, name: string): Promise<void> {
  let p = loading.get(name)
  if (!p) {
    const { module, needs } = known[name]!
    p = (async () => {
      if (!loadModule) throw new KonserveError('ERR_NOT_SUPPORTED', `${fn}: the ${JSON.stringify(name)} backend needs Node (${module}); it is not available here`)
      try {
        await loadModule(module)
      } catch (err) {
        // Node's codes (written so that they are not taken for konserve's: scripts/error-codes.mjs).
        const code = (err as { code?: string })?.code ?? ''
        const notFound = /^(ERR_)?MODULE_NOT_FOUND$/.test(code)
        const message = (err as Error)?.message ?? String(err)
        if (/^ERR_(PACKAGE_PATH_NOT_EXPORTED)$/.test(code) || (notFound && message.includes(module))) {
          throw new KonserveError('ERR_NOT_SUPPORTED', `${fn}: this build of konserve has no ${module}, so no ${JSON.stringify(name)} backend`, { cause: err })
        }
        if (notFound) {
          throw new KonserveError('ERR_NOT_SUPPORTED', `${fn}: the ${JSON.stringify(name)} backend needs ${needs}: npm install ${needs.split(' ')[0]} (${message})`, { cause: err })
        }
        throw toKonserveError(err)
      }
      if (!backends.has(name)) throw new KonserveError('ERR_NOT_SUPPORTED', `${fn}: ${module} was loaded but registered no ${JSON.stringify(name)} backend`)
    })()
    loading.set(name, p)
    // A failed load is tried again next time (the package may have been installed meanwhile).
    p.catch(() => loading.delete(name))
  }
  return p
}
/** The backend and config each store of the registry came from, for releaseStore. */
const origin = new WeakMap<Store, { name: string; backend: Backend; config: StoreConfig }>()

/**
 * Makes a backend available under `name` (replacing one of that name) to
 * createStore, connectStore, storeExists, deleteStore and releaseStore.
 */
export function registerBackend<C extends StoreConfig>(name: string, backend: Backend<C>): void {
  if (typeof name !== 'string' || name === '') throw badArgument('registerBackend', 'name', 'a non-empty string', name)
  if (backend === null || typeof backend !== 'object') throw badArgument('registerBackend', 'backend', 'an object { create, connect, exists, delete, release? }', backend)
  for (const f of ['create', 'connect', 'exists', 'delete'] as const) {
    if (typeof backend[f] !== 'function') throw badArgument('registerBackend', `backend.${f}`, 'a function', backend[f])
  }
  if (backend.release !== undefined && typeof backend.release !== 'function') throw badArgument('registerBackend', 'backend.release', 'a function', backend.release)
  backends.set(name, backend as unknown as Backend)
}

/** The names of the registered backends. */
export function registeredBackends(): string[] {
  return [...backends.keys()]
}

const OPTS: Spec = { sync: checks.boolean }

type Found = { name: string; backend: Backend; config: StoreConfig }

function backendOf(fn: string, config: unknown): Found {
  if (!isPlainObject(config)) throw badArgument(fn, 'config', "a plain object { backend: 'file' | 'memory' | ..., ... }", config)
  const name = config.backend
  if (typeof name !== 'string') throw badArgument(fn, 'config.backend', `a backend's name (${names()})`, name)
  const backend = backends.get(name)
  if (!backend) {
    if (Object.hasOwn(known, name)) {
      throw new KonserveError('ERR_NOT_SUPPORTED', `${fn}: the ${JSON.stringify(name)} backend has no blocking form (it loads from ${known[name]!.module} on first use); call it without { sync: true }`)
    }
    throw new KonserveError('ERR_INVALID_ARGUMENT', `${fn}: unknown backend ${JSON.stringify(name)}; the registered backends are ${names()} (registerBackend adds one); known by name: ${unloaded()}`)
  }
  return { name, backend, config: config as StoreConfig }
}

/** backendOf, in the async form: a backend known by name is loaded first. */
async function backendOfAsync(fn: string, config: unknown): Promise<Found> {
  const name = isPlainObject(config) ? config.backend : undefined
  if (typeof name === 'string' && !backends.has(name) && Object.hasOwn(known, name)) await loadKnown(fn, name)
  return backendOf(fn, config)
}

/** Runs `f` with the config's backend: at once in the sync form, after loading it (if need be) in the async one. */
function withBackend<T>(fn: string, config: unknown, sync: boolean, f: (b: Found) => T | Promise<T>): T | Promise<T> {
  return sync ? f(backendOf(fn, config)) : backendOfAsync(fn, config).then(f)
}

function names(): string {
  return [...backends.keys()].map((n) => JSON.stringify(n)).join(', ')
}

function unloaded(): string {
  return Object.keys(known)
    .filter((n) => !backends.has(n))
    .map((n) => `${JSON.stringify(n)} (${known[n]!.module})`)
    .join(', ')
}

function isThenable(x: unknown): x is PromiseLike<unknown> {
  return x !== null && (typeof x === 'object' || typeof x === 'function') && typeof (x as { then?: unknown }).then === 'function'
}

/** Calls a backend function in the caller's form: the value itself when sync (a Promise is refused), else a Promise. */
function call<T>(fn: string, name: string, sync: boolean, f: () => T | Promise<T>): T | Promise<T> {
  if (!sync) {
    try {
      return Promise.resolve(f())
    } catch (err) {
      return Promise.reject(err)
    }
  }
  const r = f()
  if (isThenable(r)) {
    // Nobody will await it: its failure must not surface as an unhandled rejection.
    ;(r as PromiseLike<unknown>).then(undefined, () => {})
    throw new KonserveError('ERR_NOT_SUPPORTED', `${fn}: the ${JSON.stringify(name)} backend has no blocking form; call it without { sync: true }`)
  }
  return r
}

function checkStoreResult(fn: string, name: string, s: unknown): Store {
  if (!(s instanceof Store)) throw new KonserveError('ERR_INVALID_ARGUMENT', `${fn}: the ${JSON.stringify(name)} backend gave ${typeof s === 'object' ? 'an object' : typeof s} that is not a Store`)
  return s
}

function opening<O extends SyncOption>(fn: 'createStore' | 'connectStore', config: StoreConfig, opts?: O): Ret<O, Store> {
  try {
    checkOptions(fn, opts, OPTS)
    const sync = isSync(opts)
    return withBackend(fn, config, sync, (b) => {
      const done = (s: unknown): Store => {
        const store = checkStoreResult(fn, b.name, s)
        origin.set(store, b)
        return store
      }
      const r = call(fn, b.name, sync, () => (fn === 'createStore' ? b.backend.create(b.config, { sync }) : b.backend.connect(b.config, { sync })))
      return sync ? done(r) : (r as Promise<Store>).then(done)
    }) as Ret<O, Store>
  } catch (err) {
    return fail(err, opts)
  }
}

/** Creates a new store; ERR_STORE_EXISTS if the config names one that exists. */
export function createStore<O extends SyncOption>(config: StoreConfig, opts?: O): Ret<O, Store> {
  return opening('createStore', config, opts)
}

/** Opens an existing store; ERR_STORE_NOT_FOUND if the config names none. */
export function connectStore<O extends SyncOption>(config: StoreConfig, opts?: O): Ret<O, Store> {
  return opening('connectStore', config, opts)
}

/** Whether the config names a store that exists. */
export function storeExists<O extends SyncOption>(config: StoreConfig, opts?: O): Ret<O, boolean> {
  try {
    checkOptions('storeExists', opts, OPTS)
    const sync = isSync(opts)
    return withBackend('storeExists', config, sync, (b) => call('storeExists', b.name, sync, () => b.backend.exists(b.config, { sync }))) as Ret<O, boolean>
  } catch (err) {
    return fail(err, opts)
  }
}

/**
 * Deletes the store a config names (nothing if there is none). Stores of this
 * process open on it are ended first: their later calls fail with
 * ERR_STORE_DELETED. The older form `deleteStore(path, { sync?, native? })`
 * deletes a file store by its directory.
 */
export function deleteStore<O extends SyncOption & { native?: boolean }>(path: string, options?: O): Ret<O, void>
export function deleteStore<O extends SyncOption>(config: StoreConfig, opts?: O): Ret<O, void>
export function deleteStore<O extends SyncOption>(target: string | StoreConfig, opts?: O): Ret<O, void> {
  if (typeof target === 'string') return deleteFsStore(target, opts as O & { native?: boolean })
  try {
    checkOptions('deleteStore', opts, OPTS)
    const sync = isSync(opts)
    return withBackend('deleteStore', target, sync, (b) => call('deleteStore', b.name, sync, () => b.backend.delete(b.config, { sync }))) as Ret<O, void>
  } catch (err) {
    return fail(err, opts)
  }
}

/**
 * Gives back what this connection holds. A file store (or any store not
 * opened through the registry) is closed; a memory store with an id stays in
 * the registry, with its contents, until deleteStore (as konserve does): the
 * connection can keep being used. Other backends do what their `release` does.
 */
export function releaseStore<O extends SyncOption>(store: Store, opts?: O): Ret<O, void> {
  try {
    checkOptions('releaseStore', opts, OPTS)
    if (!(store instanceof Store)) throw badArgument('releaseStore', 'store', 'a Store', store)
    const sync = isSync(opts)
    const b = origin.get(store)
    if (!b?.backend.release) return close(store, opts)
    return call('releaseStore', b.name, sync, () => b.backend.release!(store, b.config, { sync })) as Ret<O, void>
  } catch (err) {
    return fail(err, opts)
  }
}

// ---- 'file' -----------------------------------------------------------------------

/** Fields of a file config that are the registry's, not connectFsStore's options. */
function fileArgs(fn: string, config: StoreConfig): { dir: string; options: FsStoreOptions } {
  const { backend: _backend, path, id, ...options } = config
  if (typeof path !== 'string' || path === '') throw badArgument(fn, 'config.path', 'the store directory (a non-empty string)', path)
  if (id !== undefined && typeof id !== 'string') throw badArgument(fn, 'config.id', 'a string', id)
  if ('create' in options) throw badArgument(fn, 'config.create', 'absent (createStore creates, connectStore does not)', options.create)
  if ('sync' in options) throw badArgument(fn, 'config.sync', 'absent (pass { sync: true } as the last argument)', options.sync)
  return { dir: resolve(path), options: options as FsStoreOptions }
}

function isDirSync(dir: string): boolean {
  try {
    return statSync(dir).isDirectory()
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return false
    throw toKonserveError(err)
  }
}

async function isDir(dir: string): Promise<boolean> {
  try {
    return (await stat(dir)).isDirectory()
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return false
    throw toKonserveError(err)
  }
}

const makeDir = twinOp(
  (dir: string) => {
    mkdirSync(dir)
  },
  (dir: string) => mkdir(dir),
)
/**
 * Claims the directory for a new store: mkdir (not recursive), so of two
 * creators only one gets it. True if it made the directory; false if the
 * parent is missing (connectFsStore then creates the levels, fsyncing each).
 */
const claimOp = gensync(function* (dir: string, syncBlob: boolean): Handler<boolean> {
  try {
    yield* makeDir(dir)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'EEXIST') throw storeExistsError(`the file store at ${dir}`, dir)
    if (code === 'ENOENT') return false
    throw toKonserveError(err)
  }
  if (syncBlob) fsyncDirSync(dirname(dir))
  return true
})
const claimSync = claimOp.sync
const claim = claimOp.async

const fileBackend: Backend = {
  exists(config, { sync }) {
    const { dir } = fileArgs('storeExists', config)
    return sync ? isDirSync(dir) : isDir(dir)
  },
  create(config, { sync }) {
    const { dir, options } = fileArgs('createStore', config)
    const syncBlob = options.syncBlob !== false
    if (sync) {
      const made = claimSync(dir, syncBlob)
      try {
        return connectFsStore(dir, { ...options, create: true, sync: true })
      } catch (err) {
        // A bad option: leave no directory behind, so the create can be retried.
        if (made) rmdirIfEmptySync(dir)
        throw err
      }
    }
    return (async () => {
      const made = await claim(dir, syncBlob)
      try {
        return await connectFsStore(dir, { ...options, create: true })
      } catch (err) {
        if (made) await rmdir(dir).catch(() => {})
        throw err
      }
    })()
  },
  connect(config, { sync }) {
    const { dir, options } = fileArgs('connectStore', config)
    if (sync) {
      if (!isDirSync(dir)) throw storeNotFoundError(`the file store at ${dir}`, dir)
      return connectFsStore(dir, { ...options, create: false, sync: true })
    }
    return (async () => {
      if (!(await isDir(dir))) throw storeNotFoundError(`the file store at ${dir}`, dir)
      return connectFsStore(dir, { ...options, create: false })
    })()
  },
  delete(config, { sync }) {
    const { dir, options } = fileArgs('deleteStore', config)
    const native = options.native
    if (sync) {
      if (!isDirSync(dir)) return
      deleteFsStore(dir, { sync: true, native })
      return
    }
    return (async () => {
      if (!(await isDir(dir))) return
      await deleteFsStore(dir, { native })
    })()
  },
}

function rmdirIfEmptySync(dir: string): void {
  try {
    rmdirSync(dir)
  } catch {
    // Not empty, or gone: nothing to undo.
  }
}

// ---- 'memory' ---------------------------------------------------------------------

/** The memory stores with an id, in this thread. */
const memoryStores = new Map<string, Store>()

function memoryArgs(fn: string, config: StoreConfig): { id: string | undefined; options: StoreOptions } {
  const { backend: _backend, id, ...options } = config
  if (id !== undefined && (typeof id !== 'string' || id === '')) throw badArgument(fn, 'config.id', 'a non-empty string', id)
  if ('sync' in options) throw badArgument(fn, 'config.sync', 'absent (pass { sync: true } as the last argument)', options.sync)
  return { id, options: options as StoreOptions }
}

/** The live store registered under `id` (a store closed meanwhile has lost its contents: it is forgotten). */
function registered(id: string): Store | undefined {
  const s = memoryStores.get(id)
  if (s?.ended) {
    memoryStores.delete(id)
    return undefined
  }
  return s
}

const memoryBackend: Backend = {
  exists(config) {
    const { id } = memoryArgs('storeExists', config)
    return id !== undefined && registered(id) !== undefined
  },
  create(config) {
    const { id, options } = memoryArgs('createStore', config)
    if (id !== undefined && registered(id)) throw storeExistsError(`the memory store ${JSON.stringify(id)}`)
    const store = newMemStore({ ...options, sync: true })
    if (id !== undefined) memoryStores.set(id, store)
    return store
  },
  connect(config) {
    const { id, options } = memoryArgs('connectStore', config)
    if (id === undefined) return newMemStore({ ...options, sync: true })
    const s = registered(id)
    if (!s) throw storeNotFoundError(`the memory store ${JSON.stringify(id)}`)
    return s
  },
  delete(config, { sync }) {
    const { id } = memoryArgs('deleteStore', config)
    if (id === undefined) return
    const s = registered(id)
    memoryStores.delete(id)
    if (!s) return
    const why = { code: 'ERR_STORE_DELETED' as const, why: `the memory store ${JSON.stringify(id)} was deleted (deleteStore)` }
    if (sync) {
      close(s, { sync: true })
      s.ended = why
      return
    }
    return close(s).then(() => {
      s.ended = why
    })
  },
  release() {
    // As konserve: the store stays registered, with its contents, until deleteStore.
  },
}

registerBackend('file', fileBackend)
registerBackend('memory', memoryBackend)
