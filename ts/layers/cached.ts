/**
 * A read cache: `withCache(store, { maxEntries, maxBytes })` returns a Store
 * whose backing keeps the raw entries (serializer id, metadata bytes, value
 * bytes) of recently used keys in an LRU cache (the `lru-cache` package) over
 * the given store's backing, bounded by entry count and by total bytes.
 *
 * What it sees: every write made through the returned Store updates the cache
 * before the write returns; a write that fails removes the key from the cache
 * (a failed write may have written some keys of a batch, or none), so the cache
 * never holds a value that was not written. Writes made by other processes, or
 * through any other Store object (the store given to `withCache` included), are
 * NOT seen: reads may return the value the cache holds until it is evicted.
 *
 * Read-modify-write operations (updateIn, update, assocIn, append, bget) read
 * the underlying store while they hold the key's lock, never the cache, so they
 * stay atomic against other writers (other processes too) exactly as on the
 * underlying store; what they read refreshes the cache. `keys` always lists the
 * underlying store. The cache remembers missing keys too, so repeated reads of
 * a missing key do not touch the disk.
 *
 * A read that races with a write of the same key (both async) never fills the
 * cache with what it read: see FillGuard.
 *
 * The cache is a forwarding layer (./forward.ts): it has its own get,
 * getValue, getMeta, exists, put, delete, lock/unlock, and the writes of
 * blobs and logs (which forget the key); everything else is the inner
 * backing's. `withCache` (ts/stacked.ts) puts a Store over it.
 */
import gensync, { type Handler } from 'gensync'
import { LRUCache } from 'lru-cache'
import { type DecodedMemo, type LogInfo, MISS, type NewRecord, type RawEntry, type RawMeta, type RawValue, type RawWrite, copyBytes, keyId, withFastPath } from '../backing/index.js'
import type { Backing, BlobSink } from '../backing/seam.js'
import { FillGuard, HeldKeys, copyEntry, forward, watchSink } from './forward.js'

export interface CacheOptions {
  /** At most this many keys are cached (default 1000). */
  maxEntries?: number
  /** At most this many bytes (keys, metadata and values) are cached (default 32 MiB). A larger entry is not cached. */
  maxBytes?: number
}

export interface CacheStats {
  /** Keys cached now (missing keys that are remembered count too). */
  entries: number
  /** Bytes cached now. */
  bytes: number
  /** Reads answered by the cache. */
  hits: number
  /** Reads that went to the underlying store. */
  misses: number
}

/** A missing key, remembered. */
const ABSENT = Object.freeze({ absent: true as const })
/**
 * What the cache keeps of a key. `meta` is absent when a `get` missed and read
 * the value alone (the inner backing's getValue, its hot path: half the cost
 * of reading the whole entry); a read that needs the metadata then reads the
 * whole entry and keeps that instead.
 */
type Kept = Omit<RawEntry, 'meta'> & { meta?: Uint8Array; absent?: undefined; memo?: DecodedMemo }
type Slot = Kept | typeof ABSENT

// Per-entry bookkeeping of the LRU and the Map, roughly.
const OVERHEAD = 64
/**
 * Values up to this many bytes are also kept decoded, once read (RawValue.memo:
 * a hit then costs a copy of plain data instead of a decode), and charged
 * MEMO_FACTOR times their bytes more for it (a decoded tree is larger than its
 * bytes); never an entry that would then take more than 1/16 of maxBytes.
 */
const MEMO_MAX = 4096
const MEMO_FACTOR = 4

function sizeOf(id: string, slot: Slot): number {
  if (slot.absent) return id.length + OVERHEAD
  return id.length + OVERHEAD + (slot.meta?.byteLength ?? 0) + slot.value.byteLength * (slot.memo ? 1 + MEMO_FACTOR : 1)
}

/** A cached entry's value as getValue answers it: the cache's own bytes, lent (shared), with its memo. */
function lent(slot: Kept): RawValue {
  return { serializer: slot.serializer, value: slot.value, log: slot.log !== undefined, shared: true, memo: slot.memo }
}

/** getMeta's answer from an entry with its metadata: copies, so nothing the cache keeps escapes. */
function metaOf(key: Uint8Array, e: Kept): RawMeta {
  const m: RawMeta = { key: copyBytes(key), serializer: e.serializer, meta: copyBytes(e.meta!) }
  if (e.log) m.log = { ...e.log }
  return m
}

/** A copy of what a read or write gave, for the cache to keep. */
function keep(e: Kept): Kept {
  if (e.meta) return copyEntry(e as RawEntry)
  return { serializer: e.serializer, value: copyBytes(e.value) }
}

/** The cache of one cached backing. */
class Cache {
  readonly lru: LRUCache<string, Slot>
  readonly guard = new FillGuard()
  readonly held = new HeldKeys()
  hits = 0
  misses = 0

  constructor(
    maxEntries: number,
    readonly maxBytes: number,
  ) {
    this.lru = new LRUCache<string, Slot>({ max: maxEntries, maxSize: maxBytes, sizeCalculation: (slot, id) => sizeOf(id, slot) })
  }

  /** Caches `slot` (a copy of it), and returns what it keeps; undefined when it is too big. */
  remember(id: string, slot: Slot): Slot | undefined {
    if (sizeOf(id, slot) > this.maxBytes) {
      this.lru.delete(id) // too big to cache: and never keep an older value
      return undefined
    }
    if (slot.absent) {
      this.lru.set(id, ABSENT)
      return ABSENT
    }
    const kept = keep(slot)
    if (kept.log === undefined && kept.value.byteLength <= MEMO_MAX) {
      kept.memo = {}
      if (sizeOf(id, kept) * 16 > this.maxBytes) kept.memo = undefined
    }
    this.lru.set(id, kept)
    return kept
  }

  /**
   * The cached slot, unless the key is locked (then the caller reads the
   * underlying store) or the read needs the metadata the slot lacks.
   */
  lookup(id: string, needsMeta = false): Slot | undefined {
    if (this.held.has(id)) return undefined
    let slot = this.lru.get(id)
    if (slot && needsMeta && !slot.absent && !slot.meta) slot = undefined
    if (slot) this.hits++
    else this.misses++
    return slot
  }

  /** Streamed blobs and logs are never cached: a write forgets the key before and after it. */
  forget(key: Uint8Array): void {
    const id = keyId(key)
    this.guard.wrote([id])
    this.lru.delete(id)
  }
}

const caches = new WeakMap<Backing, Cache>()

/** A backing that reads through an LRU cache of `inner`'s raw entries (see the module comment). */
export function cachedBacking(inner: Backing, maxEntries: number, maxBytes: number): Backing {
  const cache = new Cache(maxEntries, maxBytes)

  /**
   * A miss: reads the underlying store and caches what it read, unless a
   * write raced it. Returns what it read, and what the cache keeps of it.
   */
  const fill = gensync(function* (key: Uint8Array, id: string): Handler<[RawEntry | undefined, Slot | undefined]> {
    const g0 = cache.guard.begin()
    try {
      const raw = yield* inner.get(key)
      return [raw, cache.guard.clean(id, g0) ? cache.remember(id, raw ?? ABSENT) : undefined]
    } finally {
      cache.guard.end()
    }
  })
  const fillKey = gensync(function* (key: Uint8Array) {
    return (yield* fill(key, keyId(key)))[0]
  })

  /**
   * A miss of getValue: reads the value alone where the underlying store can
   * (its getValue), caches it without metadata, and answers what the cache
   * keeps (lent, with its memo). A log's value is answered, not cached.
   */
  const innerGetValue = inner.getValue
  const fillValue = gensync(function* (key: Uint8Array): Handler<RawValue | undefined> {
    const id = keyId(key)
    if (!innerGetValue) {
      const [raw, kept] = yield* fill(key, id)
      if (!raw) return undefined
      if (kept && !kept.absent) return lent(kept)
      return { serializer: raw.serializer, value: raw.value, log: raw.log !== undefined }
    }
    const g0 = cache.guard.begin()
    try {
      const v = yield* innerGetValue(key)
      if (v?.log || !cache.guard.clean(id, g0)) return v
      const kept = cache.remember(id, v ? { serializer: v.serializer, value: v.value } : ABSENT)
      // What the cache now keeps, lent with its memo: the miss's decode fills it, and hits only copy.
      return kept && !kept.absent ? lent(kept) : v
    } finally {
      cache.guard.end()
    }
  })

  /** Reads that missed the cache: the underlying store's answer, remembered when the key is missing. */
  const missing = <R>(read: (key: Uint8Array) => Handler<R>, found: (r: R) => boolean) =>
    gensync(function* (key: Uint8Array): Handler<R> {
      const id = keyId(key)
      const g0 = cache.guard.begin()
      try {
        const r = yield* read(key)
        if (!found(r) && cache.guard.clean(id, g0)) cache.remember(id, ABSENT)
        return r
      } finally {
        cache.guard.end()
      }
    })

  /** A write of `ids`: some, all or none may be written if it fails, so none is cached then. */
  function* writing<R>(ids: string[], write: () => Handler<R>): Handler<R> {
    cache.guard.wrote(ids)
    try {
      return yield* write()
    } catch (err) {
      for (const id of ids) cache.lru.delete(id)
      throw err
    } finally {
      cache.guard.wrote(ids)
    }
  }

  /** A blob or log write: the key is forgotten before and after it. */
  function* forgetting<R>(key: Uint8Array, write: () => Handler<R>): Handler<R> {
    cache.forget(key)
    try {
      return yield* write()
    } finally {
      cache.forget(key)
    }
  }

  const missingMeta = missing((key) => inner.getMeta(key), (r) => r !== undefined)

  const b = forward(inner, {
    get: withFastPath((key: Uint8Array) => {
      const slot = cache.lookup(keyId(key), true)
      if (!slot) return MISS
      return slot.absent ? undefined : copyEntry(slot as RawEntry)
    }, fillKey),

    /** `get`'s hot path: a hit lends the cached bytes, marked shared (the facade copies them where they could escape). */
    getValue: withFastPath(
      (key: Uint8Array): RawValue | undefined | typeof MISS => {
        const slot = cache.lookup(keyId(key))
        if (!slot) return MISS
        if (slot.absent) return undefined
        return lent(slot)
      },
      fillValue,
    ),

    getMeta: withFastPath(
      (key: Uint8Array): RawMeta | undefined | typeof MISS => {
        const slot = cache.lookup(keyId(key), true)
        if (!slot) return MISS
        return slot.absent ? undefined : metaOf(key, slot)
      },
      gensync(function* (key: Uint8Array): Handler<RawMeta | undefined> {
        // A key cached without its metadata: the whole entry is read and kept instead.
        const id = keyId(key)
        const slot = cache.held.has(id) ? undefined : cache.lru.peek(id)
        if (slot && !slot.absent) {
          const [raw] = yield* fill(key, id)
          return raw && metaOf(key, raw)
        }
        return yield* missingMeta(key)
      }),
    ),

    exists: withFastPath((key: Uint8Array) => {
      const slot = cache.lookup(keyId(key))
      return slot ? !slot.absent : MISS
    }, missing((key) => inner.exists(key), (found) => found)),

    put: gensync(function* (writes: RawWrite[]): Handler<void> {
      const ids = writes.map((w) => keyId(w.key))
      yield* writing(ids, () => inner.put(writes))
      writes.forEach((w, i) => {
        cache.remember(ids[i]!, w)
      })
    }),

    delete: gensync(function* (keys: Uint8Array[]): Handler<boolean[]> {
      const ids = keys.map(keyId)
      const existed = yield* writing(ids, () => inner.delete(keys))
      for (const id of ids) cache.remember(id, ABSENT)
      return existed
    }),

    // The same lock scope (forwarded): a cached store and its underlying store exclude each other.
    lock: gensync(function* (keys: Uint8Array[]): Handler<void> {
      yield* inner.lock(keys)
      cache.held.add(keys)
    }),
    unlock(keys: Uint8Array[]): void {
      try {
        inner.unlock(keys)
      } finally {
        cache.held.remove(keys)
      }
    },

    // Streamed blobs and logs are never cached; reads of them go to the underlying store (forwarded).
    blobWriter: gensync(function* (key: Uint8Array, meta: Uint8Array): Handler<BlobSink> {
      cache.forget(key)
      return watchSink(yield* inner.blobWriter(key, meta), () => cache.forget(key))
    }),
    append: gensync(function* (key: Uint8Array, records: NewRecord[], createMeta: Uint8Array): Handler<LogInfo> {
      return yield* forgetting(key, () => inner.append(key, records, createMeta))
    }),
    trimLog: gensync(function* (key: Uint8Array, keepFrom: number, meta: Uint8Array): Handler<LogInfo> {
      return yield* forgetting(key, () => inner.trimLog(key, keepFrom, meta))
    }),

    /** close: the cache goes; the store under it stays open. */
    close: gensync({
      sync: () => {
        cache.lru.clear()
      },
    }),
  })
  caches.set(b, cache)
  return b
}

/** The counters of a backing made by `cachedBacking` (undefined for any other). */
export function cacheStatsOf(b: Backing): CacheStats | undefined {
  const c = caches.get(b)
  return c && { entries: c.lru.size, bytes: c.lru.calculatedSize, hits: c.hits, misses: c.misses }
}
