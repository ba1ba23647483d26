/**
 * Stores: a backing plus the serializers it writes and reads with.
 * `connectFsStore` and `newMemStore` return a Store; every API function takes it first.
 */
import { realpathSync, statSync } from 'node:fs'
import { realpath, stat } from 'node:fs/promises'
import { resolve } from 'node:path'
import type { Backing } from './backing.js'
import { KonserveError, toKonserveError } from './errors.js'
import { FileClock } from './clock.js'
import { type NativeBinding, type NativeFileStore, loadNative, nativeOrWarn } from './native.js'
import { type Serializer, type SerializerOption, SerializerSet } from './serializers.js'
import { MemoryBacking } from './stores/memory.js'
import { NativeFileBacking } from './stores/native-file.js'
import { createPureCodec } from './stores/pure-codec.js'
import { PureFileBacking, deleteStorePure } from './stores/pure-file.js'

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
    if (typeof opts.compressor !== 'object' || opts.compressor.type !== 'lz4') {
      throw badOption(`unknown compressor ${JSON.stringify(opts.compressor)}; the one compressor is { type: 'lz4' }`)
    }
    compressor = 1
  }
  if (opts.encryptor == null) return { compressor }
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

export class Store {
  /** @internal */
  readonly serializers: SerializerSet

  constructor(
    /** @internal */ readonly backing: Backing,
    options: StoreOptions,
    /** The store directory, for file stores. */
    readonly path?: string,
  ) {
    this.serializers = new SerializerSet(options.serializer, options.serializers)
  }

  /** Which implementation does the work: 'native' (Rust core), 'pure' (TypeScript) or 'memory'. */
  get implementation(): 'native' | 'pure' | 'memory' {
    return this.backing.implementation
  }
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
    throw toKonserveError(err)
  }
}

/** Opens (creating if needed) a file store in the directory `path`. */
export function connectFsStore<O extends FsStoreOptions & SyncOption>(path: string, options?: O): Ret<O, Store> {
  const opts: FsStoreOptions & SyncOption = options ?? {}
  const nativeOptions = () => ({ syncBlob: opts.syncBlob ?? true, lockTimeoutMs: lockTimeout(opts), ...codecOptions(opts) })
  if (opts.sync) {
    const dir = checkPath(path)
    if (opts.create === false) existingDirSync(dir)
    const openOptions = nativeOptions()
    const native = chooseNative(opts)
    if (!native) {
      const codec = createPureCodec(openOptions.compressor, openOptions.encryptionKey, openOptions.acceptPlaintext)
      return new Store(PureFileBacking.openSync(dir, codec, openOptions), opts, dir) as Ret<O, Store>
    }
    // The core creates the directory, fsyncing each new level into its parent.
    let store
    try {
      store = native.NativeFileStore.open(dir, openOptions)
    } catch (err) {
      throw toKonserveError(err)
    }
    return new Store(nativeBacking(store, realpathSync(dir), openOptions.syncBlob), opts, dir) as Ret<O, Store>
  }
  return (async () => {
    const dir = checkPath(path)
    if (opts.create === false) await existingDir(dir)
    const openOptions = nativeOptions()
    const native = chooseNative(opts)
    if (!native) {
      const codec = createPureCodec(openOptions.compressor, openOptions.encryptionKey, openOptions.acceptPlaintext)
      return new Store(await PureFileBacking.open(dir, codec, openOptions), opts, dir)
    }
    const store = await native.NativeFileStore.openAsync(dir, openOptions).catch((err: unknown) => {
      throw toKonserveError(err)
    })
    return new Store(nativeBacking(store, await realpath(dir), openOptions.syncBlob), opts, dir)
  })() as Ret<O, Store>
}

/** A new, empty store in memory, private to this thread. */
export function newMemStore<O extends StoreOptions & SyncOption>(options?: O): Ret<O, Store> {
  const given = (options ?? {}) as FsStoreOptions
  // Refused, never silently dropped: a user asking for encryption must not get plaintext.
  if (given.compressor != null || given.encryptor != null) {
    throw badOption('the memory store keeps values in memory and neither compresses nor encrypts; use a file store')
  }
  const store = new Store(new MemoryBacking(), options ?? {})
  return (options?.sync ? store : Promise.resolve(store)) as Ret<O, Store>
}

/** Deletes a file store's files (konserve files only: anything else and the directory stay if not empty). */
export function deleteStore<O extends SyncOption & { native?: boolean }>(path: string, options?: O): Ret<O, void> {
  if (options?.sync) {
    const dir = checkPath(path)
    const native = chooseNative(options)
    try {
      return (native ? native.deleteStoreSync(dir) : deleteStorePure(dir)) as Ret<O, void>
    } catch (err) {
      throw toKonserveError(err)
    }
  }
  return (async () => {
    const dir = checkPath(path)
    const native = chooseNative(options ?? {})
    try {
      await (native ? native.deleteStoreAsync(dir) : deleteStorePure(dir))
    } catch (err) {
      throw toKonserveError(err)
    }
  })() as Ret<O, void>
}

/**
 * Which implementation a store uses: 'native' (the Rust core), 'pure'
 * (TypeScript, the same files) or 'memory'. Without a store: which one a new
 * file store would use here ('native' if its binary loads and KONSERVE_NATIVE
 * is not 0).
 */
export function implementation(store?: Store): 'native' | 'pure' | 'memory' {
  if (store) return store.implementation
  return chooseNative({}) ? 'native' : 'pure'
}
