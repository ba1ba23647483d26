/**
 * konserve: a durable key-value document store with Clojure-style path access,
 * in sync and async form. See README.md.
 *
 * The Node entry: the core (api, store, backing, layers, format, codec) has
 * no Node in it; ./node/ hands it what Node has (./node/wire.ts) and adds the
 * file stores (./node/fs-store.ts).
 */
import './node/wire.js'
export {
  append,
  assoc,
  assocIn,
  bassoc,
  bget,
  blobFile,
  dissoc,
  exists,
  get,
  getIn,
  getMeta,
  keys,
  log,
  logStream,
  multiAssoc,
  multiDissoc,
  multiGet,
  readBlob,
  reduceLog,
  trimLog,
  update,
  updateIn,
} from './api.js'
export type { BlobAccess, BlobFile, BlobInput, GetOptions, ReadBlobOptions, TrimLogOptions, Key, KeyType, KeysOptions, Metadata, MultiAssocOptions, Options, Result, WriteOptions } from './api.js'
export { Store, close, implementation, newMemStore } from './store.js'
export { connectFsStore } from './node/fs-store.js'
export { connectStore, createStore, deleteStore, registerBackend, registeredBackends, releaseStore, storeExists, storeExistsError, storeNotFoundError } from './registry.js'
export type { Backend, BackendCallOptions, FileStoreConfig, MemoryStoreConfig, StoreConfig } from './registry.js'
export type { CompressorOption, EncryptorOption, FsStoreOptions, StoreOptions, SyncOption } from './store.js'
export { KonserveError } from './errors.js'
export type { ErrorCode } from './errors.js'
export {
  addMsgpackExtension,
  cborSerializer,
  jsonSerializer,
  msgpackSerializer,
  registerSerializer,
} from './serializers.js'
export type { Serializer, SerializerOption } from './serializers.js'
export type { Backing, BlobSink, BlobSource, ListCursor, LogCursor } from './backing/seam.js'
// For third-party backends (docs/BACKENDS.md): the op constructors and `new Store(backing, options)`.
export { type Op, asyncOp, blockingOp, notBlocking, pollingLock, twinOp } from './backing/seam.js'
export type {
  LogInfo,
  LogRecord,
  NewRecord,
  RawEntry,
  RawListing,
  RawMeta,
  RawWrite,
  StoreClock,
} from './backing/index.js'
export { rekey } from './rekey.js'
export { exportStore, importStore, scanStore } from './archive/index.js'
export type { ArchiveCounts, ArchiveSource, ExportOptions, ExportProgress, ImportOptions, ImportProgress, ScanEntry } from './archive/index.js'
export type { RekeyOptions, RekeyProgress, RekeyResult } from './rekey.js'
export { sweep } from './gc.js'
export { beginUnreferencedWrites, gcCutoff, unreferencedWritesInFlight, withUnreferencedWrites } from './gc-guard.js'
export type { UnreferencedWrites } from './gc-guard.js'
export type { SweepOptions, SweepProgress } from './gc.js'
export { decodeKey, encodeKey } from './format/key.js'
export { addWriteHook, removeWriteHook } from './hooks.js'
export type { BatchWriteEvent, HookId, KeyWriteEvent, WriteEvent, WriteHook, WriteHookOptions, WriteOp } from './hooks.js'
export { cacheStats, connectTieredStore, flush, syncTiers, tieredStore, withCache } from './stacked.js'
export type { ConnectTieredOptions, SyncTiersOptions } from './stacked.js'
export type { CacheOptions, CacheStats } from './layers/cached.js'
export type { ReadPolicy, SyncReport, TieredOptions, WritePolicy } from './layers/tiered.js'
