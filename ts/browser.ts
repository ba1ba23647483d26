/**
 * konserve in the browser (issue 14): the browser entry, chosen by the
 * `browser` export condition (esbuild, Vite, webpack, Rollup read it). The
 * same API functions as the Node entry (ts/index.ts) minus what needs Node:
 * file stores, the registry (directories), Node streams, `rekey` and the CLI
 * (`exportStore`/`importStore` take and give web streams here); plus `connectIdbStore`, a
 * store in IndexedDB holding the file format's bytes (ts/backends/idb/).
 *
 * Nothing here imports a `node:` module or assumes a Node global at module
 * top level (__test__/browser-entry.spec.ts bundles it and fails on either).
 */
import { checkOptions, checks } from './args.js'
import { openIdbBacking } from './backends/idb/index.js'
import { KonserveError } from './errors.js'
import { loadCbor, loadSegments } from './lazy/codecs.js'
import { STORE_OPTIONS, Store, type StoreOptions, badOption } from './store.js'

export * from './portable.js'
export { exportStore, importStore } from './archive/web.js'
export type { ArchiveCounts, ExportOptions, ExportProgress, ImportOptions, ImportProgress, WebArchiveSource } from './archive/web.js'

/** The options of `connectIdbStore`. */
export interface IdbStoreOptions extends StoreOptions {
  /** `{ type: 'lz4' }`: values and blobs compressed (FORMAT.md §4.2). */
  compressor?: { type: 'lz4' } | null
  /** `{ type: 'aes', key }`: every record encrypted with a key derived from `key` (FORMAT.md §4.3), through WebCrypto. */
  encryptor?: { type: 'aes'; key: string | Uint8Array } | null
  /** With an encryptor: a store written in plaintext opens (a migration). */
  acceptPlaintext?: boolean
  /** 'strict' (the default: a write has reached the disk when it resolves) or 'relaxed' (Chrome's default: faster, may be lost on a power cut). */
  durability?: 'strict' | 'relaxed'
  /** How long a lock waits for another tab or worker, in ms (default 60000). */
  lockTimeoutMs?: number
  /** How long opening the database may stay blocked by another tab, in ms (default 10000). */
  openTimeoutMs?: number
  /** Always async: `{ sync: true }` fails with ERR_NOT_SUPPORTED. */
  sync?: false
}

const positive = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? undefined : 'a finite number >= 0')

/**
 * Opens (creating it if needed) the store kept in the IndexedDB database
 * `name` of this origin. Async only: every call on it is async, and a call
 * with `{ sync: true }` fails with ERR_NOT_SUPPORTED. `implementation(store)`
 * is 'idb'.
 */
export async function connectIdbStore(name: string, options: IdbStoreOptions = {}): Promise<Store> {
  if ((options as { sync?: unknown } | undefined)?.sync === true) {
    throw new KonserveError('ERR_NOT_SUPPORTED', 'the idb store has no blocking form: call connectIdbStore without { sync: true }')
  }
  if (typeof name !== 'string' || name === '') throw badOption(`connectIdbStore: name must be a non-empty string, not ${JSON.stringify(name)}`)
  checkOptions(
    'connectIdbStore',
    options,
    {
      ...STORE_OPTIONS,
      compressor: checks.any,
      encryptor: checks.any,
      acceptPlaintext: checks.boolean,
      durability: (v) => (v === 'strict' || v === 'relaxed' ? undefined : "'strict' or 'relaxed'"),
      lockTimeoutMs: positive,
      openTimeoutMs: positive,
    },
    'options',
  )
  let compressor = 0
  if (options.compressor != null) {
    if (options.compressor.type !== 'lz4') throw badOption(`unknown compressor ${JSON.stringify(options.compressor)}; the one compressor is { type: 'lz4' }`)
    compressor = 1
  }
  let encryptionKey: Uint8Array | string | undefined
  if (options.encryptor != null) {
    const { type, key } = options.encryptor
    if (type !== 'aes') throw badOption(`unknown encryptor type ${JSON.stringify(type)}; the one encryptor is { type: 'aes', key }`)
    if (!((typeof key === 'string' || key instanceof Uint8Array) && key.length > 0)) throw badOption('the aes encryptor needs a non-empty key (a string or a Uint8Array)')
    encryptionKey = key
  }
  // cbor-x loads before the store can write with it (reads of CBOR values load it in the backing).
  if (options.serializer === 'cbor') await loadCbor()
  const backing = await openIdbBacking(name, {
    compressor,
    encryptionKey,
    acceptPlaintext: options.acceptPlaintext === true,
    durability: options.durability,
    lockTimeoutMs: options.lockTimeoutMs,
    openTimeoutMs: options.openTimeoutMs,
  })
  return new Store(backing, { serializer: options.serializer, serializers: options.serializers })
}

/**
 * Loads the code that the browser build loads on demand: LZ4, the AES
 * segment code and cbor-x (each its own chunk, fetched the first time a store
 * needs it; connectIdbStore stores do this themselves). Needed only for a
 * blocking call or a store of another kind (newMemStore with the cbor
 * serializer) that uses them before any async call loaded them.
 */
export async function loadCodecs(): Promise<void> {
  await Promise.all([loadSegments(), loadCbor()])
}
