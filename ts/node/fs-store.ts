/**
 * File stores (Node only): `connectFsStore` opens one on the native Rust core
 * or on the pure TypeScript engine (the same files either way), `deleteStore`
 * removes one. Each is one gensync operation over the file system's blocking
 * and Promise calls, run by `{ sync: true }` or not.
 */
import { accessSync, constants as fsConstants, realpathSync, statSync } from 'node:fs'
import { access, realpath, stat } from 'node:fs/promises'
import { resolve } from 'node:path'
import gensync, { type Handler } from 'gensync'
import { blockingOp, twinOp } from '../backing/index.js'
import { type Spec, checkOptions, checks, isSync } from '../args.js'
import { KonserveError, fromNative } from '../errors.js'
import { FileClock } from '../backends/pure/clock.js'
import { StagingDir } from '../backends/pure/staging.js'
import { type NativeBinding, type NativeFileStore, loadNative, nativeOrWarn } from '../native.js'
import { SerializerSet } from '../serializers.js'
import { type EncryptorOption, type FsStoreOptions, type Ret, STORE_OPTIONS, type SyncOption, Store, badOption, endStoresIn, opened, useDefaultImplementation } from '../store.js'
import { NativeFileBacking } from '../backends/native.js'
import { createPureCodec } from '../backends/pure/codec.js'
import { deleteStorePure, openPureStore } from '../backends/pure/store.js'

/** With `create: false`: the store directory must already be a directory. */
function notADir(dir: string, cause: unknown): KonserveError {
  const missing = (cause as NodeJS.ErrnoException)?.code === 'ENOENT'
  return new KonserveError('ERR_IO', `the store directory ${missing ? 'does not exist' : 'is not a directory'} (create: false): ${dir}`, { file: dir, cause })
}

const statDir = twinOp(
  (dir: string) => statSync(dir),
  (dir: string) => stat(dir),
)

function* existingDir(dir: string): Handler<void> {
  let st
  try {
    st = yield* statDir(dir)
  } catch (err) {
    throw notADir(dir, err)
  }
  if (!st.isDirectory()) throw notADir(dir, undefined)
}

/**
 * A writable open of a directory on read-only media (ERR_READ_ONLY) or
 * without write permission (ERR_PERMISSION) fails with that code and a
 * message that names the way out: `readOnly: true`.
 */
function unwritable(err: unknown, dir: string, readOnly: boolean): unknown {
  const code = (err as KonserveError)?.code
  if (readOnly || (code !== 'ERR_READ_ONLY' && code !== 'ERR_PERMISSION')) return err
  const why = code === 'ERR_READ_ONLY' ? 'is on a read-only file system' : 'cannot be written by this process'
  return new KonserveError(code, `the store directory ${why}: open it with { readOnly: true } to read it (${(err as Error).message})`, {
    file: (err as KonserveError).file ?? dir,
    cause: err,
  })
}

const accessWrite = twinOp(
  (dir: string) => accessSync(dir, fsConstants.W_OK),
  (dir: string) => access(dir, fsConstants.W_OK),
)

/**
 * A writable open checks first that the directory can be written (access(2),
 * which writes nothing): a store on read-only media or in a directory this
 * process may not write fails here, at open, with the way out in its message,
 * rather than at its first write. A missing directory is left to the engine.
 */
function* checkWritableDir(dir: string): Handler<void> {
  try {
    yield* accessWrite(dir)
  } catch (err) {
    const e = notWritable(err, dir)
    if (e) throw e
  }
}

/** The error of a failed access(W_OK) of `dir`, or undefined when it is none of ours (a missing directory). */
function notWritable(err: unknown, dir: string): unknown {
  const errno = (err as NodeJS.ErrnoException).code
  if (errno === 'EROFS') return unwritable(new KonserveError('ERR_READ_ONLY', String((err as Error).message), { file: dir, cause: err }), dir, false)
  if (errno === 'EACCES' || errno === 'EPERM') {
    return unwritable(new KonserveError('ERR_PERMISSION', String((err as Error).message), { file: dir, cause: err }), dir, false)
  }
  return undefined
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

/** `durable`, or its seed spelling `syncBlob` (default true); both given must agree. */
function durableOf(opts: FsStoreOptions): boolean {
  if (opts.durable !== undefined && opts.syncBlob !== undefined && opts.durable !== opts.syncBlob) {
    throw badOption('durable and syncBlob are one option (syncBlob is its older name): give one of them')
  }
  return opts.durable ?? opts.syncBlob ?? true
}

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

useDefaultImplementation(() => (chooseNative({}) ? 'native' : 'pure'))

/**
 * The backing over an opened native store in the canonical directory `real`,
 * with its clock, and a pure backing on the same files for what the core
 * does not write itself (an import's staged log, NativeFileBacking.logWriter).
 */
function nativeBacking(store: NativeFileStore, real: string, open: OpenOptions): NativeFileBacking {
  const durable = open.syncBlob
  const twin = function* () {
    const codec = createPureCodec(open.compressor, open.encryptionKey, open.acceptPlaintext)
    // No key check and no write-ahead log: the core checked the key, and the twin is not used on a log.
    return yield* openPureStore(real, codec, { syncBlob: durable, lockTimeoutMs: open.lockTimeoutMs, readOnly: open.readOnly, valueCacheBytes: 0, skipKeyCheck: true })
  }
  try {
    return new NativeFileBacking(store, `file:${real}`, FileClock.openSync(real, durable, new StagingDir(real, durable, open.readOnly)), durable, twin)
  } catch (err) {
    throw fromNative(err)
  }
}

const FS_STORE_OPTIONS: Spec = {
  ...STORE_OPTIONS,
  durable: checks.boolean,
  syncBlob: checks.boolean,
  compressor: (v) => (v === null || typeof v === 'object' ? undefined : "{ type: 'lz4' } or null"),
  encryptor: (v) => (v === null || typeof v === 'object' ? undefined : "{ type: 'aes', key } or null"),
  native: checks.boolean,
  create: checks.boolean,
  acceptPlaintext: checks.boolean,
  lockTimeoutMs: (v) => (typeof v === 'number' ? undefined : 'a number of milliseconds >= 0'),
  readOnly: checks.boolean,
  valueCacheBytes: (v) => (typeof v === 'number' && v >= 0 && Number.isFinite(v) ? undefined : 'a number of bytes >= 0'),
  wal: checks.boolean,
  walIdleCheckpointMs: (v) => (typeof v === 'number' && v >= 0 && Number.isFinite(v) ? undefined : 'a number of milliseconds >= 0'),
  directBlobs: (v) => (typeof v === 'boolean' || v === 'auto' ? undefined : "true, false or 'auto'"),
}
const DELETE_OPTIONS: Spec = { sync: checks.boolean, native: checks.boolean }

type OpenOptions = ReturnType<typeof codecOptions> & {
  syncBlob: boolean
  lockTimeoutMs?: number
  readOnly: boolean
  valueCacheBytes?: number
  wal?: boolean
  walIdleCheckpointMs?: number
  directBlobs?: boolean
  directBlobsVolume?: number
}

/** Checks connectFsStore's arguments; returns the serializers and the binding's options. Opens nothing. */
function checkFsArgs(path: unknown, options: unknown): { dir: string; serializers: SerializerSet; open: OpenOptions } {
  checkOptions('connectFsStore', options, FS_STORE_OPTIONS, 'options')
  const opts = (options ?? {}) as FsStoreOptions
  const dir = checkPath(path)
  const serializers = new SerializerSet(opts.serializer, opts.serializers)
  // The engines' option keeps the seed's name, `syncBlob`.
  const open: OpenOptions = { syncBlob: durableOf(opts), lockTimeoutMs: lockTimeout(opts), readOnly: opts.readOnly === true, ...codecOptions(opts) }
  if (opts.valueCacheBytes !== undefined) open.valueCacheBytes = opts.valueCacheBytes
  if (opts.wal !== undefined) open.wal = opts.wal
  if (opts.walIdleCheckpointMs !== undefined) open.walIdleCheckpointMs = opts.walIdleCheckpointMs
  // 'auto' (the default): direct once the process ingests at volume (the core's DIRECT_VOLUME); true: from the first large blob on.
  if (opts.directBlobs === false) open.directBlobs = false
  else if (opts.directBlobs === true) Object.assign(open, { directBlobs: true, directBlobsVolume: 0 })
  return { dir, serializers, open }
}

/**
 * Opens the native store (the core creates the directory, fsyncing each new
 * level into its parent); a writable open checks the directory first
 * (checkWritableDir). The async form runs the check and the open at once,
 * on two threads: an async open waits for one thread hop, not two.
 */
const openNative = twinOp(
  (native: NativeBinding, dir: string, o: OpenOptions) => {
    if (!o.readOnly) {
      try {
        accessSync(dir, fsConstants.W_OK)
      } catch (err) {
        const refused = notWritable(err, dir)
        if (refused) throw refused
      }
    }
    try {
      return native.NativeFileStore.open(dir, o)
    } catch (err) {
      throw unwritable(fromNative(err), dir, o.readOnly)
    }
  },
  async (native: NativeBinding, dir: string, o: OpenOptions) => {
    const [checked, store] = await Promise.allSettled([o.readOnly ? undefined : access(dir, fsConstants.W_OK), native.NativeFileStore.openAsync(dir, o)])
    const refused = checked.status === 'rejected' ? notWritable(checked.reason, dir) : undefined
    if (refused) throw refused
    if (store.status === 'rejected') throw unwritable(fromNative(store.reason), dir, o.readOnly)
    return store.value
  },
)
const canonical = twinOp(
  (dir: string) => realpathSync(dir),
  (dir: string) => realpath(dir),
)

const connectOp = gensync(function* (path: string, options: (FsStoreOptions & SyncOption) | undefined): Handler<Store> {
  const { dir, serializers, open } = checkFsArgs(path, options)
  const opts = options ?? {}
  if (opts.create === false || open.readOnly) yield* existingDir(dir)
  const native = chooseNative(opts)
  if (!native) {
    if (!open.readOnly) yield* checkWritableDir(dir)
    const codec = createPureCodec(open.compressor, open.encryptionKey, open.acceptPlaintext)
    try {
      return opened(new Store(yield* openPureStore(dir, codec, open), serializers, dir))
    } catch (err) {
      throw unwritable(err, dir, open.readOnly)
    }
  }
  const store: NativeFileStore = yield* openNative(native, dir, open)
  // The core's canonical directory: no realpath of our own (another thread hop in async form).
  return opened(new Store(nativeBacking(store, store.dir, open), serializers, dir))
})

/** Opens (creating if needed) a file store in the directory `path`. */
export function connectFsStore<O extends FsStoreOptions & SyncOption>(path: string, options?: O): Ret<O, Store> {
  return (isSync(options) ? connectOp.sync(path, options) : connectOp.async(path, options)) as Ret<O, Store>
}

/** The canonical path of `dir`, or undefined when it does not exist. */
function* canonicalOrNone(dir: string): Handler<string | undefined> {
  try {
    return yield* canonical(dir)
  } catch {
    return undefined
  }
}

const deleteNative = twinOp(
  (native: NativeBinding, dir: string) => native.deleteStoreSync(dir),
  (native: NativeBinding, dir: string) => native.deleteStoreAsync(dir),
)
const deletePure = blockingOp((dir: string) => deleteStorePure(dir))

const deleteOp = gensync(function* (path: string, options: (SyncOption & { native?: boolean }) | undefined): Handler<void> {
  checkOptions('deleteStore', options, DELETE_OPTIONS, 'options')
  const dir = checkPath(path)
  const native = chooseNative(options ?? {})
  const real = yield* canonicalOrNone(dir)
  if (real !== undefined) yield* endStoresIn(`file:${real}`, dir)
  try {
    yield* native ? deleteNative(native, dir) : deletePure(dir)
  } catch (err) {
    throw fromNative(err)
  }
})

/**
 * Deletes a file store's files (konserve files only: anything else and the
 * directory stay if not empty). Stores of this process still open on the
 * directory are ended first: their later calls fail with ERR_STORE_DELETED.
 */
export function deleteStore<O extends SyncOption & { native?: boolean }>(path: string, options?: O): Ret<O, void> {
  return (isSync(options) ? deleteOp.sync(path, options) : deleteOp.async(path, options)) as Ret<O, void>
}
