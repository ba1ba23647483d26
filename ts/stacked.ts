/**
 * Stores built over stores: a read cache (`withCache`) and tiers
 * (`tieredStore`). The layers themselves are backings over backings
 * (ts/layers/); this module puts a Store over them, with the serializers of
 * the store they were built over, and ends them with it.
 */
import { checkOptions, checks } from './args.js'
import type { Backing } from './backing/seam.js'
import { KonserveError } from './errors.js'
import { type CacheOptions, type CacheStats, cacheStatsOf, cachedBacking } from './layers/cached.js'
import { type TieredOptions, defaultOnError, tieredBacking } from './layers/tiered.js'
import { Store, builtOver, checkStore } from './store.js'

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
  if (front === back || front.backing === back.backing) {
    throw new KonserveError('ERR_INVALID_ARGUMENT', 'tieredStore: the front and the back must be different stores')
  }
  const writePolicy = options.writePolicy ?? 'write-through'
  if (writePolicy !== 'write-through' && writePolicy !== 'write-behind') {
    throw new KonserveError('ERR_INVALID_ARGUMENT', `tieredStore: unknown writePolicy ${JSON.stringify(writePolicy)}`)
  }
  const readPolicy = options.readPolicy ?? 'front-first'
  if (readPolicy !== 'front-first') {
    throw new KonserveError('ERR_INVALID_ARGUMENT', `tieredStore: unknown readPolicy ${JSON.stringify(readPolicy)}`)
  }
  const tiered = storeLike(tieredBacking(front.backing, back.backing, writePolicy, options.onError ?? defaultOnError), back)
  builtOver(tiered, front, back)
  return tiered
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
