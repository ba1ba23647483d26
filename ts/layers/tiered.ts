/**
 * A tiered store (konserve.tiered): a fast front store (usually memory) over a
 * durable back store (usually a file store).
 *
 * Reads (`readPolicy: 'front-first'`): the front first; on a miss, the back, and
 * what the back returned is written into the front. `keys` lists the back.
 *
 * Writes:
 * - `'write-through'` (default): the back first (durable when the call
 *   returns), then the front. A back write that fails removes the keys from the
 *   front, so reads go to the back and see whatever it holds. A front write that
 *   fails after the back write succeeded removes the keys from the front and the
 *   write counts as done (it is durable); the front's error goes to `onError`.
 * - `'write-behind'`: the front, then the call returns; the back write is
 *   queued and done in the background, in order for each key (queued writes of
 *   one key are coalesced: the last one wins). `flush(store)` resolves once
 *   every write queued before it is in the back. A background write that fails
 *   is reported to `onError` at once (default: a process warning) and makes the
 *   next `flush` reject with it; it is not retried, and this store keeps
 *   answering reads of the key with the value it was given. Until a write is
 *   flushed it is only in memory: a crash loses it, and other processes do not
 *   see it.
 *
 * Locks: the tiered store locks the back store's keys (same lock scope, the
 * back's cross-process lock), so its read-modify-write operations are atomic in
 * this thread. With write-through, a read-modify-write also reads the back
 * (never the front) while it holds the lock, so it stays atomic against other
 * processes writing the back store. Plain reads are served from the front and do
 * not see writes made to the back by other processes or other Store objects.
 * With write-behind, other writers of the back are not coordinated with at all:
 * use it for a back store that only this tiered store writes.
 */
import gensync, { type Handler } from 'gensync'
import {
  type Backing,
  type BlobSink,
  type BlobSource,
  type ListCursor,
  type LogCursor,
  type LogInfo,
  type NewRecord,
  type RawEntry,
  type RawListing,
  type RawMeta,
  type RawWrite,
  type StoreClock,
  copyBytes,
  keyId,
} from '../backing/index.js'
import { KonserveError } from '../errors.js'
import { Store, builtOver, checkStore } from '../store.js'
import { checkOptions, checks } from '../args.js'
import { FillGuard, HeldKeys, copyEntry, ops, storeLike, watchSink } from './cached.js'

export type WritePolicy = 'write-through' | 'write-behind'
export type ReadPolicy = 'front-first'

export interface TieredOptions {
  /** 'write-through' (default) or 'write-behind'. */
  writePolicy?: WritePolicy
  /** 'front-first' (the default and only policy). */
  readPolicy?: ReadPolicy
  /**
   * Gets errors that no caller receives: failed background writes
   * (write-behind) and failed front writes after a durable back write
   * (write-through). Default: `process.emitWarning` (code `KONSERVE_TIER_ERROR`).
   */
  onError?: (err: unknown) => void
}

/** A queued back write (write) or delete (no write) of one key. */
interface Queued {
  id: string
  key: Uint8Array
  seq: number
  write?: RawWrite
  /** The back write failed: the entry stays in `pending` so reads keep seeing it. */
  failed?: boolean
}

function defaultOnError(err: unknown): void {
  const message = `konserve tiered store: ${err instanceof Error ? err.message : String(err)}`
  if (typeof process !== 'undefined' && typeof process.emitWarning === 'function') {
    process.emitWarning(message, { code: 'KONSERVE_TIER_ERROR', detail: err instanceof Error ? err.stack : undefined })
  } else {
    console.warn(message, err)
  }
}

function asEntry(w: RawWrite): RawEntry {
  return copyEntry(w)
}

class TieredBacking implements Backing {
  readonly implementation: Backing['implementation']
  readonly lockScope: string
  readonly atomicMultiKey: boolean
  readonly filePath?: (key: Uint8Array) => string
  /** @internal */ readonly guard = new FillGuard()
  /** @internal */ readonly held = new HeldKeys()
  /** @internal write-behind: the latest queued write of each key not yet in the back */
  readonly pending = new Map<string, Queued>()
  /** @internal */ queue: Queued[] = []
  /** @internal */ seq = 0
  /** @internal */ done = 0
  /** @internal */ worker: Promise<void> | undefined
  /** @internal background errors not yet reported by a flush */
  readonly errors: unknown[] = []

  constructor(
    /** @internal */ readonly front: Backing,
    /** @internal */ readonly back: Backing,
    readonly writePolicy: WritePolicy,
    /** @internal */ readonly onError: (err: unknown) => void,
  ) {
    this.implementation = back.implementation
    // Locks are the back's: one scope, and the back's cross-process lock.
    this.lockScope = back.lockScope
    this.atomicMultiKey = front.atomicMultiKey && back.atomicMultiKey && writePolicy === 'write-through'
    if (back.filePath) this.filePath = (key) => back.filePath!(key)
  }

  /** @internal Report an error no caller will see; never throws. */
  report(err: unknown): void {
    try {
      this.onError(err)
    } catch (inner) {
      defaultOnError(inner)
    }
  }

  /** @internal With write-through, a locked key is read from the back. */
  readsBack(id: string): boolean {
    return this.writePolicy === 'write-through' && this.held.has(id)
  }

  getSync(key: Uint8Array) {
    return tGet.sync(this, key)
  }
  getAsync(key: Uint8Array) {
    return tGet.async(this, key)
  }
  getMetaSync(key: Uint8Array) {
    return tGetMeta.sync(this, key)
  }
  getMetaAsync(key: Uint8Array) {
    return tGetMeta.async(this, key)
  }
  existsSync(key: Uint8Array) {
    return tExists.sync(this, key)
  }
  existsAsync(key: Uint8Array) {
    return tExists.async(this, key)
  }
  putSync(writes: RawWrite[]) {
    tPut.sync(this, writes)
  }
  putAsync(writes: RawWrite[]) {
    return tPut.async(this, writes)
  }
  deleteSync(keys: Uint8Array[]) {
    return tDelete.sync(this, keys)
  }
  deleteAsync(keys: Uint8Array[]) {
    return tDelete.async(this, keys)
  }
  listSync() {
    return tList.sync(this)
  }
  listAsync() {
    return tList.async(this)
  }
  /**
   * The back's cursor, with the write-behind queue as it was on open applied:
   * queued keys are dropped from the back's batches and their queued writes
   * (not deletes) come last.
   */
  openList(): ListCursor {
    const queued = new Map(this.pending)
    const back = this.back.openList()
    let tail: Queued[] | undefined
    const filter = (l: RawListing | undefined): RawListing | undefined => {
      if (l && queued.size > 0) l = { entries: l.entries.filter((e) => !queued.has(keyId(e.key))), corrupt: l.corrupt }
      return l
    }
    const fromTail = (max: number): RawListing | undefined => {
      tail ??= [...queued.values()].filter((q) => q.write)
      if (tail.length === 0) return undefined
      const batch = tail.splice(0, Math.max(1, max))
      return { entries: batch.map((q) => ({ key: copyBytes(q.key), serializer: q.write!.serializer, meta: copyBytes(q.write!.meta) })), corrupt: [] }
    }
    let backDone = false
    return {
      nextSync: (max) => {
        if (!backDone) {
          const l = back.nextSync(max)
          if (l) return filter(l)
          backDone = true
        }
        return fromTail(max)
      },
      next: async (max) => {
        if (!backDone) {
          const l = await back.next(max)
          if (l) return filter(l)
          backDone = true
        }
        return fromTail(max)
      },
      close: () => {
        backDone = true
        tail = []
        back.close()
      },
    }
  }
  get clock(): StoreClock | undefined {
    return this.back.clock
  }

  lockSync(keys: Uint8Array[]): void {
    this.back.lockSync(keys)
    this.held.add(keys)
  }
  tryLock(keys: Uint8Array[], waitedMs?: number): boolean {
    const ok = this.back.tryLock(keys, waitedMs)
    if (ok) this.held.add(keys)
    return ok
  }
  unlock(keys: Uint8Array[]): void {
    try {
      this.back.unlock(keys)
    } finally {
      this.held.remove(keys)
    }
  }

  // ---- streamed blobs and logs: the back alone ----
  // They are never held in the front (a blob may be larger than memory; a log
  // grows in place). A write first waits until no queued write of the key is
  // left (write-behind), forgets the key in the front before and after, and
  // goes to the back; reads of them go to the back.

  /**
   * The sync form cannot wait for a queued write of the key to reach the back.
   * A log operation over a queued value fails as it would after the flush
   * (the key holds a value); anything else asks for the async form.
   */
  private settledSync(key: Uint8Array, log = false): void {
    const p = this.pending.get(keyId(key))
    if (!p) return
    if (log && p.write) throw new KonserveError('ERR_NOT_A_LOG', 'the key holds something other than an append log')
    throw new KonserveError(
      'ERR_NOT_SUPPORTED',
      'a write of this key is still queued (write-behind): use the async form, or flush first',
    )
  }
  private async settled(key: Uint8Array, log = false): Promise<void> {
    const id = keyId(key)
    while (this.pending.has(id) && this.worker) await this.worker
    this.settledSync(key, log)
  }
  private forgetSync(key: Uint8Array): void {
    this.guard.wrote([keyId(key)])
    this.front.deleteSync([key])
  }
  private async forget(key: Uint8Array): Promise<void> {
    this.guard.wrote([keyId(key)])
    await this.front.deleteAsync([key])
  }
  /** A queued write or delete of the key, which reads must see instead of the back. */
  private queued(key: Uint8Array, kind: 'ERR_NOT_BINARY' | 'ERR_NOT_A_LOG'): { found: boolean } | undefined {
    const p = this.pending.get(keyId(key))
    if (!p) return undefined
    if (p.write) throw new KonserveError(kind, kind === 'ERR_NOT_BINARY' ? 'the key holds a value, not binary data' : 'the key holds something other than an append log')
    return { found: false }
  }

  blobWriterSync(key: Uint8Array, meta: Uint8Array): BlobSink {
    this.settledSync(key)
    this.forgetSync(key)
    return watchSink(this.back.blobWriterSync(key, meta), () => this.guard.wrote([keyId(key)]))
  }
  async blobWriterAsync(key: Uint8Array, meta: Uint8Array): Promise<BlobSink> {
    await this.settled(key)
    await this.forget(key)
    return watchSink(await this.back.blobWriterAsync(key, meta), () => this.guard.wrote([keyId(key)]))
  }
  openBlobSync(key: Uint8Array): BlobSource | undefined {
    return this.queued(key, 'ERR_NOT_BINARY') ? undefined : this.back.openBlobSync(key)
  }
  async openBlobAsync(key: Uint8Array): Promise<BlobSource | undefined> {
    return this.queued(key, 'ERR_NOT_BINARY') ? undefined : this.back.openBlobAsync(key)
  }
  appendSync(key: Uint8Array, records: NewRecord[], createMeta: Uint8Array): LogInfo {
    this.settledSync(key, true)
    this.forgetSync(key)
    try {
      return this.back.appendSync(key, records, createMeta)
    } finally {
      this.guard.wrote([keyId(key)])
    }
  }
  async appendAsync(key: Uint8Array, records: NewRecord[], createMeta: Uint8Array): Promise<LogInfo> {
    await this.settled(key, true)
    await this.forget(key)
    try {
      return await this.back.appendAsync(key, records, createMeta)
    } finally {
      this.guard.wrote([keyId(key)])
    }
  }
  openLogSync(key: Uint8Array): LogCursor | undefined {
    return this.queued(key, 'ERR_NOT_A_LOG') ? undefined : this.back.openLogSync(key)
  }
  async openLogAsync(key: Uint8Array): Promise<LogCursor | undefined> {
    return this.queued(key, 'ERR_NOT_A_LOG') ? undefined : this.back.openLogAsync(key)
  }
  trimLogSync(key: Uint8Array, keepFrom: number, meta: Uint8Array): LogInfo {
    this.settledSync(key, true)
    this.forgetSync(key)
    try {
      return this.back.trimLogSync(key, keepFrom, meta)
    } finally {
      this.guard.wrote([keyId(key)])
    }
  }
  async trimLogAsync(key: Uint8Array, keepFrom: number, meta: Uint8Array): Promise<LogInfo> {
    await this.settled(key, true)
    await this.forget(key)
    try {
      return await this.back.trimLogAsync(key, keepFrom, meta)
    } finally {
      this.guard.wrote([keyId(key)])
    }
  }

  // ---- write-behind queue ----

  /** @internal */
  enqueue(items: Array<{ key: Uint8Array; write?: RawWrite }>): void {
    for (const { key, write } of items) {
      const q: Queued = { id: keyId(key), key, seq: ++this.seq, write }
      this.pending.set(q.id, q)
      this.queue.push(q)
    }
    this.worker ??= this.drain()
  }

  private async drain(): Promise<void> {
    try {
      // Let the writes of this tick join the first batch.
      await null
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0)
        // In order per key: the last queued operation of each key is its final state.
        const last = new Map<string, Queued>()
        for (const q of batch) last.set(q.id, q)
        const puts = [...last.values()].filter((q) => q.write)
        const dels = [...last.values()].filter((q) => !q.write)
        const failed = new Set<Queued>()
        if (puts.length > 0) {
          try {
            await this.back.putAsync(puts.map((q) => q.write!))
          } catch (err) {
            for (const q of puts) failed.add(q)
            this.fail(err, 'write', puts)
          }
        }
        if (dels.length > 0) {
          try {
            await this.back.deleteAsync(dels.map((q) => q.key))
          } catch (err) {
            for (const q of dels) failed.add(q)
            this.fail(err, 'delete', dels)
          }
        }
        for (const q of last.values()) {
          if (this.pending.get(q.id) !== q) continue // a newer write of the key is queued
          if (failed.has(q)) q.failed = true
          else this.pending.delete(q.id)
        }
        this.done = batch[batch.length - 1]!.seq
      }
    } finally {
      this.worker = undefined
    }
  }

  private fail(err: unknown, what: string, qs: Queued[]): void {
    const e =
      err instanceof KonserveError
        ? err
        : new KonserveError('ERR_IO', `${err instanceof Error ? err.message : String(err)}`, { cause: err })
    const wrapped = new KonserveError(
      e.code,
      `a background ${what} of ${qs.length} key(s) to the back store failed (write-behind): ${e.message}`,
      { cause: err, file: e.file },
    )
    this.errors.push(wrapped)
    this.report(wrapped)
  }

  /** close: the queued write-behind writes go to the back first (rejects like flush if one failed). */
  close(): Promise<void> {
    return this.flushAsync()
  }
  /** A sync close cannot wait for queued writes: refused while some are queued. */
  closeSync(): void {
    if (this.pending.size > 0 || this.done < this.seq) {
      throw new KonserveError('ERR_NOT_SUPPORTED', 'close: write-behind writes are still queued; use the async form of close, or flush first')
    }
  }

  /** @internal */
  async flushAsync(): Promise<void> {
    const upTo = this.seq
    while (this.done < upTo && this.worker) await this.worker
    const errs = this.errors.splice(0)
    if (errs.length === 1) throw errs[0]
    if (errs.length > 1) throw new AggregateError(errs, `${errs.length} background writes to the back store failed`)
  }
}

/** Removes keys from the front; false if that failed (the front may then be stale). */
function* dropFront(self: TieredBacking, keys: Uint8Array[]): Handler<boolean> {
  try {
    yield* ops.delete(self.front, keys)
    return true
  } catch {
    return false
  }
}

/** Puts what the back returned into the front, unless a write of the key came in between. */
function* fill(self: TieredBacking, id: string, key: Uint8Array, raw: RawEntry | undefined, g0: number): Handler<void> {
  if (!self.guard.clean(id, g0)) return
  // Logs stay in the back (see "streamed blobs and logs").
  if (raw?.log) return
  if (!raw) {
    // The back has no such key: a front entry of it (written outside) is stale.
    if (self.readsBack(id)) yield* dropFront(self, [key])
    return
  }
  try {
    yield* ops.put(self.front, [{ key, serializer: raw.serializer, meta: raw.meta, value: raw.value }])
  } catch {
    return // a front that cannot take the entry: it is a cache, the read still succeeds
  }
  // A write that began while the fill was landing may have landed first: drop
  // the filled entry, the next read goes to the back (removing is always safe).
  if (!self.guard.clean(id, g0)) yield* dropFront(self, [key])
}

const tGet = gensync(function* (self: TieredBacking, key: Uint8Array): Handler<RawEntry | undefined> {
  const id = keyId(key)
  const p = self.pending.get(id)
  if (p) return p.write ? asEntry(p.write) : undefined
  if (!self.readsBack(id)) {
    const hit = yield* ops.get(self.front, key)
    if (hit) return hit
  }
  const g0 = self.guard.begin()
  try {
    const raw = yield* ops.get(self.back, key)
    yield* fill(self, id, key, raw, g0)
    return raw
  } finally {
    self.guard.end()
  }
})

const tGetMeta = gensync(function* (self: TieredBacking, key: Uint8Array): Handler<RawMeta | undefined> {
  const id = keyId(key)
  const p = self.pending.get(id)
  if (p) return p.write ? { key: copyBytes(key), serializer: p.write.serializer, meta: copyBytes(p.write.meta) } : undefined
  if (!self.readsBack(id)) {
    const hit = yield* ops.getMeta(self.front, key)
    if (hit) return hit
  }
  return yield* ops.getMeta(self.back, key)
})

const tExists = gensync(function* (self: TieredBacking, key: Uint8Array): Handler<boolean> {
  const id = keyId(key)
  const p = self.pending.get(id)
  if (p) return p.write !== undefined
  if (!self.readsBack(id) && (yield* ops.exists(self.front, key))) return true
  return yield* ops.exists(self.back, key)
})

const tList = gensync(function* (self: TieredBacking): Handler<RawListing> {
  const listing = yield* ops.list(self.back)
  if (self.pending.size === 0) return listing
  // write-behind: the back, with the queued writes applied
  const entries = listing.entries.filter((e) => !self.pending.has(keyId(e.key)))
  for (const q of self.pending.values()) {
    if (q.write) entries.push({ key: copyBytes(q.key), serializer: q.write.serializer, meta: copyBytes(q.write.meta) })
  }
  return { entries, corrupt: listing.corrupt }
})

const tPut = gensync(function* (self: TieredBacking, writes: RawWrite[]): Handler<void> {
  const ids = writes.map((w) => keyId(w.key))
  const keys = writes.map((w) => w.key)
  self.guard.wrote(ids)
  try {
    if (self.writePolicy === 'write-through') {
      try {
        yield* ops.put(self.back, writes)
      } catch (err) {
        yield* dropFront(self, keys)
        throw err
      }
      try {
        yield* ops.put(self.front, writes)
      } catch (err) {
        // Durable in the back; the front must not keep the old value.
        if (!(yield* dropFront(self, keys))) throw err
        self.report(err)
      }
      return
    }
    // write-behind
    try {
      yield* ops.put(self.front, writes)
    } catch (err) {
      // Nothing is queued; keys the front may have taken are dropped (reads
      // then see the queued or back value, as before this write).
      yield* dropFront(self, keys)
      throw err
    }
    // Copies: the queue outlives the caller's buffers.
    self.enqueue(writes.map((w) => ({ key: copyBytes(w.key), write: { key: copyBytes(w.key), ...copyEntry(w) } })))
  } finally {
    self.guard.wrote(ids)
  }
})

const tDelete = gensync(function* (self: TieredBacking, keys: Uint8Array[]): Handler<boolean[]> {
  const ids = keys.map(keyId)
  self.guard.wrote(ids)
  try {
    if (self.writePolicy === 'write-through') {
      let existed: boolean[]
      try {
        existed = yield* ops.delete(self.back, keys)
      } catch (err) {
        yield* dropFront(self, keys)
        throw err
      }
      // If this fails the front may still hold a deleted key: the caller must know.
      yield* ops.delete(self.front, keys)
      return existed
    }
    // write-behind: whether each key existed, as this store sees it
    const before = ids.map((id) => self.pending.get(id))
    const inFront = yield* ops.delete(self.front, keys)
    const existed: boolean[] = []
    for (let i = 0; i < keys.length; i++) {
      const p = before[i]
      existed.push(p ? p.write !== undefined : inFront[i] === true || (yield* ops.exists(self.back, keys[i]!)))
    }
    self.enqueue(keys.map((k) => ({ key: copyBytes(k) })))
    return existed
  } finally {
    self.guard.wrote(ids)
  }
})

/**
 * A Store that reads `front` first and falls back to `back`, and writes both
 * (see the module comment for the policies). It writes with `back`'s
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
  const tiered = storeLike(new TieredBacking(front.backing, back.backing, writePolicy, options.onError ?? defaultOnError), back)
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
  const b = store.backing as { flushAsync?: () => Promise<void> }
  if (typeof b.flushAsync === 'function') await b.flushAsync()
}
