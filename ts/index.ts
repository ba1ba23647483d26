/**
 * konserve: a durable key-value document store with Clojure-style path access,
 * in sync and async form. See README.md.
 */
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
export type { BlobAccess, BlobFile, BlobInput, GetOptions, ReadBlobOptions, TrimLogOptions, Key, KeyType, KeysOptions, Metadata, Options, Result, WriteOptions } from './api.js'
export { Store, close, connectFsStore, deleteStore, implementation, newMemStore } from './store.js'
export type { CompressorOption, EncryptorOption, FsStoreOptions, StoreOptions, SyncOption } from './store.js'
export { KonserveError } from './errors.js'
export type { ErrorCode } from './errors.js'
export {
  addMsgpackExtension,
  jsonSerializer,
  msgpackSerializer,
  registerSerializer,
} from './serializers.js'
export type { Serializer, SerializerOption } from './serializers.js'
export type {
  Backing,
  BlobSink,
  BlobSource,
  ListCursor,
  LogCursor,
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
export type { SweepOptions, SweepProgress } from './gc.js'
export { decodeKey, encodeKey } from './format/key.js'
export { addWriteHook, removeWriteHook } from './hooks.js'
export type { HookId, WriteEvent, WriteHook, WriteHookOptions, WriteOp } from './hooks.js'
export { cacheStats, withCache } from './layers/cached.js'
export type { CacheOptions, CacheStats } from './layers/cached.js'
export { flush, tieredStore } from './layers/tiered.js'
export type { ReadPolicy, TieredOptions, WritePolicy } from './layers/tiered.js'
