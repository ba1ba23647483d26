/**
 * Stores built over stores: a read cache (`withCache`) and tiers
 * (`tieredStore`). The layers themselves are backings over backings
 * (ts/layers/); this module puts a Store over them, with the serializers of
 * the store they were built over, and ends them with it.
 */
import { checkOptions, checks, fail } from './args.js'
import type { Backing } from './backing/seam.js'
import { KonserveError } from './errors.js'
import { type CacheOptions, type CacheStats, cacheStatsOf, cachedBacking } from './layers/cached.js'
import { type ReadPolicy, type SyncReport, type TieredOptions, type WritePolicy, defaultOnError, populatorOf, tieredBacking } from './layers/tiered.js'
import { type Ret, Store, builtOver, checkStore } from './store.js'
import { copyBytes } from './backing/index.js'
import { type Key, decodeKey, encodeKey } from './format/key.js'
import { decodeMeta } from './format/meta.js'
import { afterWrite, hasWriteHooks } from './hooks.js'
import { RAW_BYTES_ID } from './serializers.js'
import { itemsOf } from './sources.js'

/** A Store over `backing` that reads and writes with `like`'s serializers. */
function storeLike(backing: Backing, like: Store): Store {
  const store = new Store(backing, {}, like.path)
  ;(store as { serializers: Store['serializers'] }).serializers = like.serializers
  return store
}

function positiveInt(name: string, v: unknown, dflt: number): number {
  if (v === undefined) return dflt
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) {
    throw new KonserveError('ERR_INVALID_ARGUMENT', `withCache: ${name} must be a positive integer`)
  }
  return v
}

/**
 * A Store that reads through an LRU cache of `store`'s raw entries. The result
 * uses `store`'s serializers and locks; hooks are per Store object, so hooks of
 * `store` do not fire for writes through the cached Store (add them to it).
 */
export function withCache(store: Store, options: CacheOptions = {}): Store {
  checkStore('withCache', store)
  checkOptions('withCache', options, { maxEntries: checks.any, maxBytes: checks.any }, 'options')
  const maxEntries = positiveInt('maxEntries', options.maxEntries, 1000)
  const maxBytes = positiveInt('maxBytes', options.maxBytes, 32 * 1024 * 1024)
  const cached = storeLike(cachedBacking(store.backing, maxEntries, maxBytes), store)
  builtOver(cached, store)
  return cached
}

/** The cache's counters, for a Store made by `withCache` (undefined for any other store). */
export function cacheStats(store: Store): CacheStats | undefined {
  checkStore('cacheStats', store)
  return cacheStatsOf(store.backing)
}

/**
 * A Store that reads `front` first and falls back to `back`, and writes both
 * (see ts/layers/tiered.ts for the policies). It writes with `back`'s
 * serializers and locks `back`'s keys. Hooks are per Store object: add them to
 * the tiered Store.
 */
export function tieredStore(front: Store, back: Store, options: TieredOptions = {}): Store {
  checkStore('tieredStore', front, 'front')
  checkStore('tieredStore', back, 'back')
  checkOptions('tieredStore', options, { writePolicy: checks.any, readPolicy: checks.any, onError: checks.function }, 'options')
  return buildTiered(front, back, options)
}

const WRITE_POLICIES: readonly WritePolicy[] = ['write-through', 'write-behind', 'write-around', 'frontend-only']
const READ_POLICIES: readonly ReadPolicy[] = ['front-first', 'frontend-first', 'frontend-only']

function buildTiered(front: Store, back: Store, options: TieredOptions): Store {
  if (front === back || front.backing === back.backing) {
    throw new KonserveError('ERR_INVALID_ARGUMENT', 'tieredStore: the front and the back must be different stores')
  }
  const writePolicy = options.writePolicy ?? 'write-through'
  if (!WRITE_POLICIES.includes(writePolicy)) {
    throw new KonserveError(
      'ERR_INVALID_ARGUMENT',
      `tieredStore: unknown writePolicy ${JSON.stringify(writePolicy)}; it takes ${WRITE_POLICIES.map((p) => JSON.stringify(p)).join(', ')}`,
    )
  }
  const readPolicy = options.readPolicy ?? 'front-first'
  if (!READ_POLICIES.includes(readPolicy)) {
    throw new KonserveError(
      'ERR_INVALID_ARGUMENT',
      `tieredStore: unknown readPolicy ${JSON.stringify(readPolicy)}; it takes ${READ_POLICIES.map((p) => JSON.stringify(p)).join(', ')}`,
    )
  }
  const tiered = storeLike(
    tieredBacking(front.backing, back.backing, {
      writePolicy,
      readPolicy: readPolicy === 'frontend-only' ? 'frontend-only' : 'front-first',
      onError: options.onError ?? defaultOnError,
      // A read-through fills the front: the front Store's hooks hear of it, as one
      // `assoc` of the whole entry (konserve reports an `:assoc-in` to the front).
      onFill: (cke, raw) => {
        if (!hasWriteHooks(front)) return
        const key = decodeKey(cke)
        const value = raw.serializer === RAW_BYTES_ID ? copyBytes(raw.value) : front.serializers.forId(raw.serializer).decode(raw.value)
        afterWrite(front, { op: 'assoc', key, path: [key], oldValue: undefined, newValue: value, meta: decodeMeta(key, raw.meta) })
      },
    }),
    back,
  )
  builtOver(tiered, front, back)
  return tiered
}

/** What `syncTiers` copies: the keys missing from the front (default) or every key; only `keys` when given. */
export interface SyncTiersOptions {
  /** 'missing' (default; konserve's populate-missing-strategy) or 'full' (full-sync-strategy). */
  strategy?: 'missing' | 'full'
  /** Only these keys (konserve's sync-keys-to-frontend!). */
  keys?: Iterable<Key>
  sync?: boolean
}

const SYNC_SPEC = { strategy: checks.any, keys: checks.any, sync: checks.boolean }

function syncArgs(fn: string, opts: SyncTiersOptions | undefined): [Uint8Array[] | undefined, boolean] {
  checkOptions(fn, opts, SYNC_SPEC)
  const strategy = opts?.strategy ?? 'missing'
  if (strategy !== 'missing' && strategy !== 'full') {
    throw new KonserveError('ERR_INVALID_ARGUMENT', `${fn}: unknown strategy ${JSON.stringify(strategy)}; it takes "missing", "full"`)
  }
  const keys = opts?.keys === undefined ? undefined : itemsOf(opts.keys, fn).map((k) => encodeKey(k))
  return [keys, strategy === 'full']
}

/**
 * Copies entries of a tiered Store's back into its front (konserve's
 * sync-on-connect / perform-sync): by default the keys the front lacks. Logs
 * stay in the back; no hooks fire. Returns `{ syncedKeys, frontKeys, backKeys }`.
 */
export function syncTiers<O extends SyncTiersOptions>(store: Store, opts?: O): Ret<O, SyncReport> {
  try {
    checkStore('syncTiers', store)
    const populate = populatorOf(store.backing)
    if (!populate) throw new KonserveError('ERR_INVALID_ARGUMENT', 'syncTiers: the store is not a tiered store')
    const args = syncArgs('syncTiers', opts)
    return (opts?.sync ? populate.sync(...args) : populate.async(...args)) as Ret<O, SyncReport>
  } catch (err) {
    return fail(err, opts)
  }
}

/** `tieredStore`'s options plus `syncOnConnect`: populate the front before the store is handed out. */
export interface ConnectTieredOptions extends TieredOptions {
  /** true: the keys the front lacks; or `{ strategy, keys }` as `syncTiers` takes them. */
  syncOnConnect?: boolean | Omit<SyncTiersOptions, 'sync'>
  sync?: boolean
}

/**
 * `tieredStore`, then (with `syncOnConnect`) `syncTiers` before the Store is
 * returned (konserve's :tiered store with sync-on-connect).
 */
export function connectTieredStore<O extends ConnectTieredOptions>(front: Store, back: Store, opts?: O): Ret<O, Store> {
  try {
    checkStore('connectTieredStore', front, 'front')
    checkStore('connectTieredStore', back, 'back')
    checkOptions(
      'connectTieredStore',
      opts,
      { writePolicy: checks.any, readPolicy: checks.any, onError: checks.function, syncOnConnect: checks.any, sync: checks.boolean },
      'opts',
    )
    const { syncOnConnect, sync, ...tierOpts } = opts ?? {}
    const soc = syncOnConnect === true ? {} : syncOnConnect === false || syncOnConnect === undefined ? undefined : syncOnConnect
    if (soc !== undefined && (soc === null || typeof soc !== 'object')) {
      throw new KonserveError('ERR_INVALID_ARGUMENT', 'connectTieredStore: opts.syncOnConnect must be a boolean or { strategy, keys }')
    }
    const args = soc ? syncArgs('connectTieredStore', soc as SyncTiersOptions) : undefined
    const tiered = buildTiered(front, back, tierOpts)
    if (!args) return (sync ? tiered : Promise.resolve(tiered)) as Ret<O, Store>
    const populate = populatorOf(tiered.backing)!
    if (sync) {
      populate.sync(...args)
      return tiered as Ret<O, Store>
    }
    return populate.async(...args).then(() => tiered) as Ret<O, Store>
  } catch (err) {
    return fail(err, opts)
  }
}

/**
 * Resolves once every write queued (write-behind) before the call is in the
 * back store, durably. Rejects with the error of any background write that
 * failed since the last flush (an AggregateError if several did). Resolves at
 * once for a write-through tiered store and for any other store.
 */
export async function flush(store: Store): Promise<void> {
  checkStore('flush', store)
  await store.backing.flush?.()
}
