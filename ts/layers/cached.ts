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
 */
import gensync, { type Handler } from 'gensync'
import { LRUCache } from 'lru-cache'
import {
  type Backing,
  type BlobSink,
  type ListCursor,
  type LogInfo,
  type NewRecord,
  type RawEntry,
  type RawListing,
  type RawMeta,
  type RawValue,
  type RawWrite,
  type StoreClock,
  copyBytes,
  keyId,
} from '../backing/index.js'
import { KonserveError } from '../errors.js'
import { Store, builtOver, checkStore } from '../store.js'
import { checkOptions, checks } from '../args.js'

// ---- shared with the tiered store -------------------------------------------

/** The backing's primitives as gensync operations: one code path for sync and async. */
export const ops = {
  get: gensync({
    sync: (b: Backing, k: Uint8Array) => b.getSync(k),
    async: (b: Backing, k: Uint8Array) => b.getAsync(k),
  }),
  getMeta: gensync({
    sync: (b: Backing, k: Uint8Array) => b.getMetaSync(k),
    async: (b: Backing, k: Uint8Array) => b.getMetaAsync(k),
  }),
  exists: gensync({
    sync: (b: Backing, k: Uint8Array) => b.existsSync(k),
    async: (b: Backing, k: Uint8Array) => b.existsAsync(k),
  }),
  put: gensync({
    sync: (b: Backing, ws: RawWrite[]) => b.putSync(ws),
    async: (b: Backing, ws: RawWrite[]) => b.putAsync(ws),
  }),
  delete: gensync({
    sync: (b: Backing, ks: Uint8Array[]) => b.deleteSync(ks),
    async: (b: Backing, ks: Uint8Array[]) => b.deleteAsync(ks),
  }),
  list: gensync({
    sync: (b: Backing) => b.listSync(),
    async: (b: Backing) => b.listAsync(),
  }),
}

/** A key's canonical encoding as a Map key. */

/** A copy that shares no memory with `e` (decoders may return views into their input). */
export function copyEntry(e: RawEntry): RawEntry {
  const c: RawEntry = { serializer: e.serializer, meta: copyBytes(e.meta), value: copyBytes(e.value) }
  if (e.log) c.log = { ...e.log }
  return c
}

/** `sink`, calling `done` once it is committed or aborted (whether that worked or not). */
export function watchSink(sink: BlobSink, done: () => void): BlobSink {
  return {
    writeSync: (b) => sink.writeSync(b),
    write: (b) => sink.write(b),
    commitSync: () => {
      try {
        sink.commitSync()
      } finally {
        done()
      }
    },
    commit: async () => {
      try {
        await sink.commit()
      } finally {
        done()
      }
    },
    abort: () => {
      try {
        sink.abort()
      } finally {
        done()
      }
    },
  }
}

/**
 * Says whether what a read got may be put into a cache. A read that began
 * before a write of the same key ended may have read the old value; putting it
 * into the cache after the write updated the cache would make the cache stale.
 * Writes call `wrote` when they start and when they end; a read calls `begin`,
 * asks `clean` before (and after) filling, and calls `end`. Only writes made
 * while some read is in flight are remembered, so the table stays small.
 */
export class FillGuard {
  private gen = 0
  private floor = 0
  private readers = 0
  private readonly lastWrite = new Map<string, number>()

  wrote(ids: readonly string[]): void {
    const g = ++this.gen
    if (this.readers === 0) return // a read that begins later sees this write
    for (const id of ids) this.lastWrite.set(id, g)
    if (this.lastWrite.size > 4096) {
      // Bounded: forget the table, and let no read that began before now fill.
      this.lastWrite.clear()
      this.floor = g
    }
  }

  begin(): number {
    this.readers++
    return this.gen
  }

  /** No write of `id` started or ended since the read that began at `g0`. */
  clean(id: string, g0: number): boolean {
    return g0 >= this.floor && !((this.lastWrite.get(id) ?? -1) > g0)
  }

  end(): void {
    if (--this.readers === 0) this.lastWrite.clear()
  }
}

/**
 * The keys this backing's facade holds locked (a facade locks a key before a
 * read-modify-write). Reads of those keys skip the cache tier.
 */
export class HeldKeys {
  private readonly counts = new Map<string, number>()
  add(keys: Uint8Array[]): void {
    for (const k of keys) {
      const id = keyId(k)
      this.counts.set(id, (this.counts.get(id) ?? 0) + 1)
    }
  }
  remove(keys: Uint8Array[]): void {
    for (const k of keys) {
      const id = keyId(k)
      const n = (this.counts.get(id) ?? 0) - 1
      if (n > 0) this.counts.set(id, n)
      else this.counts.delete(id)
    }
  }
  has(id: string): boolean {
    return this.counts.has(id)
  }
}

/** A Store over `backing` that reads and writes with `like`'s serializers. */
export function storeLike(backing: Backing, like: Store): Store {
  const store = new Store(backing, {}, like.path)
  ;(store as { serializers: Store['serializers'] }).serializers = like.serializers
  return store
}

// ---- the cache ----------------------------------------------------------------

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
type Slot = (RawEntry & { absent?: undefined }) | typeof ABSENT

// Per-entry bookkeeping of the LRU and the Map, roughly.
const OVERHEAD = 64

class CachedBacking implements Backing {
  readonly implementation: Backing['implementation']
  readonly lockScope: string
  readonly atomicMultiKey: boolean
  readonly filePath?: (key: Uint8Array) => string
  /** @internal */ readonly lru: LRUCache<string, Slot>
  /** @internal */ readonly guard = new FillGuard()
  /** @internal */ readonly held = new HeldKeys()
  /** @internal */ hits = 0
  /** @internal */ misses = 0
  /** @internal */ readonly maxBytes: number

  constructor(
    /** @internal */ readonly inner: Backing,
    maxEntries: number,
    maxBytes: number,
  ) {
    this.implementation = inner.implementation
    // The same lock scope: a cached store and its underlying store exclude each other.
    this.lockScope = inner.lockScope
    this.atomicMultiKey = inner.atomicMultiKey
    if (inner.filePath) this.filePath = (key) => inner.filePath!(key)
    this.maxBytes = maxBytes
    this.lru = new LRUCache<string, Slot>({
      max: maxEntries,
      maxSize: maxBytes,
      sizeCalculation: (slot, id) => sizeOf(id, slot),
    })
  }

  /** @internal */
  remember(id: string, slot: Slot): void {
    if (sizeOf(id, slot) > this.maxBytes) {
      this.lru.delete(id) // too big to cache: and never keep an older value
      return
    }
    this.lru.set(id, slot.absent ? ABSENT : copyEntry(slot))
  }

  getSync(key: Uint8Array) {
    return cGet.sync(this, key)
  }
  getAsync(key: Uint8Array) {
    return cGet.async(this, key)
  }
  /** `get`'s hot path: a hit lends the cached bytes, marked shared (the facade copies them where they could escape). */
  getValueSync(key: Uint8Array): RawValue | undefined {
    const id = keyId(key)
    const slot = lookup(this, id)
    const raw = slot ? (slot.absent ? undefined : slot) : cFill.sync(this, key, id)
    if (!raw) return undefined
    return { serializer: raw.serializer, value: raw.value, log: raw.log !== undefined, shared: slot !== undefined }
  }
  getMetaSync(key: Uint8Array) {
    return cGetMeta.sync(this, key)
  }
  getMetaAsync(key: Uint8Array) {
    return cGetMeta.async(this, key)
  }
  existsSync(key: Uint8Array) {
    return cExists.sync(this, key)
  }
  existsAsync(key: Uint8Array) {
    return cExists.async(this, key)
  }
  putSync(writes: RawWrite[]) {
    cPut.sync(this, writes)
  }
  putAsync(writes: RawWrite[]) {
    return cPut.async(this, writes)
  }
  deleteSync(keys: Uint8Array[]) {
    return cDelete.sync(this, keys)
  }
  deleteAsync(keys: Uint8Array[]) {
    return cDelete.async(this, keys)
  }
  listSync(): RawListing {
    return this.inner.listSync()
  }
  /** The underlying store's: a listing never goes through the cache. */
  openList(): ListCursor {
    return this.inner.openList()
  }
  get clock(): StoreClock | undefined {
    return this.inner.clock
  }
  listAsync(): Promise<RawListing> {
    return this.inner.listAsync()
  }

  lockSync(keys: Uint8Array[]): void {
    this.inner.lockSync(keys)
    this.held.add(keys)
  }
  tryLock(keys: Uint8Array[], waitedMs?: number): boolean {
    const ok = this.inner.tryLock(keys, waitedMs)
    if (ok) this.held.add(keys)
    return ok
  }
  unlock(keys: Uint8Array[]): void {
    try {
      this.inner.unlock(keys)
    } finally {
      this.held.remove(keys)
    }
  }

  // Streamed blobs and logs are never cached: a write forgets the key before
  // and after it, and reads go to the underlying store.
  private forget(key: Uint8Array): void {
    const id = keyId(key)
    this.guard.wrote([id])
    this.lru.delete(id)
  }
  blobWriterSync(key: Uint8Array, meta: Uint8Array): BlobSink {
    this.forget(key)
    return watchSink(this.inner.blobWriterSync(key, meta), () => this.forget(key))
  }
  async blobWriterAsync(key: Uint8Array, meta: Uint8Array): Promise<BlobSink> {
    this.forget(key)
    return watchSink(await this.inner.blobWriterAsync(key, meta), () => this.forget(key))
  }
  openBlobSync(key: Uint8Array) {
    return this.inner.openBlobSync(key)
  }
  openBlobAsync(key: Uint8Array) {
    return this.inner.openBlobAsync(key)
  }
  appendSync(key: Uint8Array, records: NewRecord[], createMeta: Uint8Array): LogInfo {
    this.forget(key)
    try {
      return this.inner.appendSync(key, records, createMeta)
    } finally {
      this.forget(key)
    }
  }
  async appendAsync(key: Uint8Array, records: NewRecord[], createMeta: Uint8Array): Promise<LogInfo> {
    this.forget(key)
    try {
      return await this.inner.appendAsync(key, records, createMeta)
    } finally {
      this.forget(key)
    }
  }
  openLogSync(key: Uint8Array) {
    return this.inner.openLogSync(key)
  }
  openLogAsync(key: Uint8Array) {
    return this.inner.openLogAsync(key)
  }
  trimLogSync(key: Uint8Array, keepFrom: number, meta: Uint8Array): LogInfo {
    this.forget(key)
    try {
      return this.inner.trimLogSync(key, keepFrom, meta)
    } finally {
      this.forget(key)
    }
  }
  async trimLogAsync(key: Uint8Array, keepFrom: number, meta: Uint8Array): Promise<LogInfo> {
    this.forget(key)
    try {
      return await this.inner.trimLogAsync(key, keepFrom, meta)
    } finally {
      this.forget(key)
    }
  }

  /** Lets `flush` reach a tiered store under the cache. @internal */
  flushAsync(): Promise<void> {
    const f = (this.inner as { flushAsync?: () => Promise<void> }).flushAsync
    return f ? f.call(this.inner) : Promise.resolve()
  }
  /** close: the cache goes; the store under it stays open. */
  closeSync(): void {
    this.lru.clear()
  }
  async close(): Promise<void> {
    this.lru.clear()
  }
}

function sizeOf(id: string, slot: Slot): number {
  return id.length + OVERHEAD + (slot.absent ? 0 : slot.meta.byteLength + slot.value.byteLength)
}

/** The cached slot, unless the key is locked (then the caller reads the underlying store). */
function lookup(self: CachedBacking, id: string): Slot | undefined {
  if (self.held.has(id)) return undefined
  const slot = self.lru.get(id)
  if (slot) self.hits++
  else self.misses++
  return slot
}

const cGet = gensync(function* (self: CachedBacking, key: Uint8Array): Handler<RawEntry | undefined> {
  const id = keyId(key)
  const slot = lookup(self, id)
  if (slot) return slot.absent ? undefined : copyEntry(slot)
  return yield* cFill(self, key, id)
})

/** A miss: reads the underlying store and caches what it read, unless a write raced it. */
const cFill = gensync(function* (self: CachedBacking, key: Uint8Array, id: string): Handler<RawEntry | undefined> {
  const g0 = self.guard.begin()
  try {
    const raw = yield* ops.get(self.inner, key)
    if (self.guard.clean(id, g0)) self.remember(id, raw ?? ABSENT)
    return raw
  } finally {
    self.guard.end()
  }
})

const cGetMeta = gensync(function* (self: CachedBacking, key: Uint8Array): Handler<RawMeta | undefined> {
  const id = keyId(key)
  const slot = lookup(self, id)
  if (slot) {
    if (slot.absent) return undefined
    const m: RawMeta = { key: copyBytes(key), serializer: slot.serializer, meta: copyBytes(slot.meta) }
    if (slot.log) m.log = { ...slot.log }
    return m
  }
  const g0 = self.guard.begin()
  try {
    const raw = yield* ops.getMeta(self.inner, key)
    if (!raw && self.guard.clean(id, g0)) self.remember(id, ABSENT)
    return raw
  } finally {
    self.guard.end()
  }
})

const cExists = gensync(function* (self: CachedBacking, key: Uint8Array): Handler<boolean> {
  const id = keyId(key)
  const slot = lookup(self, id)
  if (slot) return !slot.absent
  const g0 = self.guard.begin()
  try {
    const found = yield* ops.exists(self.inner, key)
    if (!found && self.guard.clean(id, g0)) self.remember(id, ABSENT)
    return found
  } finally {
    self.guard.end()
  }
})

const cPut = gensync(function* (self: CachedBacking, writes: RawWrite[]): Handler<void> {
  const ids = writes.map((w) => keyId(w.key))
  self.guard.wrote(ids)
  try {
    yield* ops.put(self.inner, writes)
  } catch (err) {
    // Some, all or none of the keys may have been written: cache none of them.
    for (const id of ids) self.lru.delete(id)
    throw err
  } finally {
    self.guard.wrote(ids)
  }
  writes.forEach((w, i) => self.remember(ids[i]!, w))
})

const cDelete = gensync(function* (self: CachedBacking, keys: Uint8Array[]): Handler<boolean[]> {
  const ids = keys.map(keyId)
  self.guard.wrote(ids)
  let existed: boolean[]
  try {
    existed = yield* ops.delete(self.inner, keys)
  } catch (err) {
    for (const id of ids) self.lru.delete(id)
    throw err
  } finally {
    self.guard.wrote(ids)
  }
  for (const id of ids) self.remember(id, ABSENT)
  return existed
})

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
  const cached = storeLike(new CachedBacking(store.backing, maxEntries, maxBytes), store)
  builtOver(cached, store)
  return cached
}

/** The cache's counters, for a Store made by `withCache` (undefined for any other store). */
export function cacheStats(store: Store): CacheStats | undefined {
  checkStore('cacheStats', store)
  const b = store.backing
  if (!(b instanceof CachedBacking)) return undefined
  return { entries: b.lru.size, bytes: b.lru.calculatedSize, hits: b.hits, misses: b.misses }
}
