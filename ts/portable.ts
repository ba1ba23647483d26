/**
 * The public API both entries share: everything that runs without Node (the
 * Node entry ts/index.ts and the browser entry ts/browser.ts each re-export
 * this, then add their own stores). One list, so the entries cannot drift.
 */
export {
  append,
  assoc,
  assocIn,
  bassoc,
  bget,
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
export type { BlobAccess, BlobInput, GetOptions, ReadBlobOptions, TrimLogOptions, Key, KeyType, KeysOptions, Metadata, MultiAssocOptions, Options, Result, WriteOptions } from './api.js'
export { Store, close, implementation, newMemStore } from './store.js'
export type { CompressorOption, EncryptorOption, StoreOptions, SyncOption } from './store.js'
export { KonserveError } from './errors.js'
export type { ErrorCode } from './errors.js'
export { addMsgpackExtension, cborSerializer, jsonSerializer, msgpackSerializer, registerSerializer } from './serializers.js'
export type { Serializer, SerializerOption } from './serializers.js'
export type { Backing, BlobSink, BlobSource, ListCursor, LogCursor } from './backing/seam.js'
// For third-party backends (docs/BACKENDS.md): the op constructors and `new Store(backing, options)`.
export { type Op, asyncOp, blockingOp, notBlocking, pollingLock, twinOp } from './backing/seam.js'
export type { LogInfo, LogRecord, NewRecord, RawEntry, RawListing, RawMeta, RawWrite, StoreClock } from './backing/index.js'
export { sweep } from './gc.js'
export type { SweepOptions, SweepProgress } from './gc.js'
export { decodeKey, encodeKey } from './format/key.js'
export { addWriteHook, removeWriteHook } from './hooks.js'
export type { BatchWriteEvent, HookId, KeyWriteEvent, WriteEvent, WriteHook, WriteHookOptions, WriteOp } from './hooks.js'
export { cacheStats, connectTieredStore, flush, syncTiers, tieredStore, withCache } from './stacked.js'
export type { ConnectTieredOptions, SyncTiersOptions } from './stacked.js'
export type { CacheOptions, CacheStats } from './layers/cached.js'
export type { ReadPolicy, SyncReport, TieredOptions, WritePolicy } from './layers/tiered.js'
