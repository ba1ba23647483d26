/**
 * konserve: a durable key-value document store with Clojure-style path access,
 * in sync and async form. See README.md.
 *
 * The Node entry: the core (api, store, backing, layers, format, codec) has
 * no Node in it; ./node/ hands it what Node has (./node/wire.ts) and adds the
 * file stores (./node/fs-store.ts).
 */
import './node/wire.js'
export * from './portable.js'
// Node only: blobs as files, file stores, the registry (directories), rekey, the store archive's streams, the GC guard's markers.
export { blobFile } from './api.js'
export type { BlobFile } from './api.js'
export type { FsStoreOptions } from './store.js'
export { connectFsStore } from './node/fs-store.js'
export { connectStore, createStore, deleteStore, registerBackend, registeredBackends, releaseStore, storeExists, storeExistsError, storeNotFoundError } from './registry.js'
export type { Backend, BackendCallOptions, FileStoreConfig, MemoryStoreConfig, StoreConfig } from './registry.js'
export { rekey } from './rekey.js'
export type { RekeyOptions, RekeyProgress, RekeyResult } from './rekey.js'
export { exportStore, importStore, scanStore } from './archive/index.js'
export type { ArchiveCounts, ArchiveSource, ExportOptions, ExportProgress, ImportOptions, ImportProgress, ScanEntry } from './archive/index.js'
export { beginUnreferencedWrites, gcCutoff, unreferencedWritesInFlight, withUnreferencedWrites } from './gc-guard.js'
export type { UnreferencedWrites } from './gc-guard.js'
