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
 *   every write queued before it is in the back (checked after each batch:
 *   writes queued later do not hold it up). A background write that fails
 *   is reported to `onError` at once (default: a process warning) and makes the
 *   next `flush` reject with it; it is not retried, and this store keeps
 *   answering reads of the key with the value it was given (until a blob or
 *   log write of the key lands in the back). Until a write is
 *   flushed it is only in memory: a crash loses it, and other processes do not
 *   see it.
 *
 * - `'write-around'`: the back (durable when the call returns), then the keys
 *   are removed from the front; the next read fills it. Deletes as write-through.
 * - `'frontend-only'` (cache mode): the front only. The back is never written,
 *   deleted from or locked (locks, listing, blobs and logs are the front's); a
 *   delete removes the front's copy, so a key the back holds reads through again.
 *
 * Reads with `readPolicy: 'frontend-only'` never reach the back; `keys` then
 * lists the front (as it does in cache mode).
 *
 * A read-through that fills the front calls `onFill` (ts/stacked.ts fires the
 * front Store's hooks with it). `populatorOf` gives the sync-on-connect copy.
 *
 * Locks: the tiered store locks the back store's keys (same lock scope, the
 * back's cross-process lock), so its read-modify-write operations are atomic in
 * this thread. With write-through, a read-modify-write also reads the back
 * (never the front) while it holds the lock, so it stays atomic against other
 * processes writing the back store. Plain reads are served from the front and do
 * not see writes made to the back by other processes or other Store objects.
 * With write-behind, other writers of the back are not coordinated with at all:
 * use it for a back store that only this tiered store writes.
 *
 * The tiers are a forwarding layer over the back (./forward.ts) with their own
 * reads, writes, locks, listing and flush; `tieredStore` (ts/stacked.ts) puts
 * a Store over them.
 */
import gensync, { type Handler } from 'gensync'
import { type LogInfo, type NewRecord, type RawEntry, type RawListing, type RawMeta, type RawWrite, copyBytes, keyId, twinOp } from '../backing/index.js'
import type { Backing, BlobSink, BlobSource, ListCursor, LogCursor } from '../backing/seam.js'
import { KonserveError } from '../errors.js'
import { RAW_BYTES_ID } from '../serializers.js'
import { FillGuard, HeldKeys, copyEntry, forward, watchSink } from './forward.js'

export type WritePolicy = 'write-through' | 'write-behind' | 'write-around' | 'frontend-only'
/** `'frontend-first'` is konserve's name for `'front-first'`. */
export type ReadPolicy = 'front-first' | 'frontend-first' | 'frontend-only'

export interface TieredOptions {
  /** 'write-through' (default), 'write-behind', 'write-around' or 'frontend-only'. */
  writePolicy?: WritePolicy
  /** 'front-first' (default; konserve's 'frontend-first') or 'frontend-only'. */
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

/** @internal */
export function defaultOnError(err: unknown): void {
  const message = `konserve tiered store: ${err instanceof Error ? err.message : String(err)}`
  const p = (globalThis as { process?: { emitWarning?: (m: string, o: object) => void } }).process
  if (typeof p?.emitWarning === 'function') {
    p.emitWarning(message, { code: 'KONSERVE_TIER_ERROR', detail: err instanceof Error ? err.stack : undefined })
  } else {
    console.warn(message, err)
  }
}

/** Waits for a Promise in async form; the blocking form cannot wait (false). */
const waitFor = twinOp(
  (_p: Promise<unknown>) => false,
  async (p: Promise<unknown>) => {
    await p
    return true
  },
)

/** The tiers' state: the write-behind queue and what reads must know. */
class Tiers {
  readonly guard = new FillGuard()
  readonly held = new HeldKeys()
  /** write-behind: the latest queued write of each key not yet in the back */
  readonly pending = new Map<string, Queued>()
  queue: Queued[] = []
  seq = 0
  done = 0
  worker: Promise<void> | undefined
  /** Settled after each batch of the worker (and when it stops): waiters re-check, instead of waiting for the whole queue to empty. */
  private batchEnd: { promise: Promise<void>; resolve: () => void } | undefined
  /** background errors not yet reported by a flush */
  readonly errors: unknown[] = []

  constructor(
    readonly front: Backing,
    readonly back: Backing,
    readonly writePolicy: WritePolicy,
    readonly onError: (err: unknown) => void,
    readonly onFill: ((key: Uint8Array, raw: RawEntry) => void) | undefined,
  ) {}

  /** Report an error no caller will see; never throws. */
  report(err: unknown): void {
    try {
      this.onError(err)
    } catch (inner) {
      defaultOnError(inner)
    }
  }

  /** With write-through and write-around, a locked key is read from the back. */
  readsBack(id: string): boolean {
    return (this.writePolicy === 'write-through' || this.writePolicy === 'write-around') && this.held.has(id)
  }

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
            await this.back.put.async(puts.map((q) => q.write!))
          } catch (err) {
            for (const q of puts) failed.add(q)
            this.fail(err, 'write', puts)
          }
        }
        if (dels.length > 0) {
          try {
            await this.back.delete.async(dels.map((q) => q.key))
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
        this.endBatch()
      }
    } finally {
      this.worker = undefined
      this.endBatch()
    }
  }

  /** A Promise settled when the worker's current batch is done (or the worker stops). */
  nextBatch(): Promise<void> {
    if (!this.batchEnd) {
      let resolve!: () => void
      const promise = new Promise<void>((r) => {
        resolve = r
      })
      this.batchEnd = { promise, resolve }
    }
    return this.batchEnd.promise
  }

  private endBatch(): void {
    const b = this.batchEnd
    this.batchEnd = undefined
    b?.resolve()
  }

  /** A queued write of the key not yet in the back (a failed one is not: it will not be retried). */
  queuedWrite(id: string): Queued | undefined {
    const p = this.pending.get(id)
    return p && !p.failed ? p : undefined
  }

  /** Whether any write is still queued (failed ones aside). */
  anyQueued(): boolean {
    for (const q of this.pending.values()) if (!q.failed) return true
    return this.done < this.seq
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

  /** Resolves once every write queued before the call is in the back; rejects with the background errors since the last flush. */
  async flush(): Promise<void> {
    const upTo = this.seq
    // Batch by batch: a writer that keeps queueing must not keep this waiting.
    while (this.done < upTo && this.worker) await this.nextBatch()
    const errs = this.errors.splice(0)
    if (errs.length === 1) throw errs[0]
    if (errs.length > 1) throw new AggregateError(errs, `${errs.length} background writes to the back store failed`)
  }

  // ---- streamed blobs and logs: the back alone ----
  // They are never held in the front (a blob may be larger than memory; a log
  // grows in place). A write first waits until no queued write of the key is
  // left (write-behind), forgets the key in the front before and after, and
  // goes to the back; reads of them go to the back.

  /**
   * Waits (async form) until no queued write of the key is left. The blocking
   * form cannot wait: a log operation over a queued value fails as it would
   * after the flush (the key holds a value); anything else asks for the async
   * form.
   */
  *settled(key: Uint8Array, log = false): Handler<void> {
    const id = keyId(key)
    while (this.queuedWrite(id) && this.worker) if (!(yield* waitFor(this.nextBatch()))) break
    const p = this.queuedWrite(id)
    if (!p) return
    if (log && p.write) throw new KonserveError('ERR_NOT_A_LOG', 'the key holds something other than an append log')
    throw new KonserveError('ERR_NOT_SUPPORTED', 'a write of this key is still queued (write-behind): use the async form, or flush first')
  }

  *forget(key: Uint8Array): Handler<void> {
    this.guard.wrote([keyId(key)])
    yield* this.front.delete([key])
  }

  /**
   * After a blob or log write to the back (done or failed): a read during it
   * may have filled the front from the back's old entry, so the front
   * forgets the key again (a front that cannot is reported: it may answer
   * the old value); a failed write-behind entry of the key is superseded.
   */
  *forgetAfter(key: Uint8Array, ok: boolean): Handler<void> {
    const id = keyId(key)
    this.guard.wrote([id])
    if (ok && this.pending.get(id)?.failed) this.pending.delete(id)
    if (!(yield* this.dropFront([key]))) this.report(new KonserveError('ERR_IO', 'the front store could not forget a key written to the back (a blob or a log): it may answer the old value'))
  }

  /** A queued write or delete of the key, which reads must see instead of the back. */
  queued(key: Uint8Array, kind: 'ERR_NOT_BINARY' | 'ERR_NOT_A_LOG'): { found: boolean } | undefined {
    const p = this.pending.get(keyId(key))
    if (!p) return undefined
    if (p.write) throw new KonserveError(kind, kind === 'ERR_NOT_BINARY' ? 'the key holds a value, not binary data' : 'the key holds something other than an append log')
    return { found: false }
  }

  /** Removes keys from the front; false if that failed (the front may then be stale). */
  *dropFront(keys: Uint8Array[]): Handler<boolean> {
    try {
      yield* this.front.delete(keys)
      return true
    } catch {
      return false
    }
  }

  /** Puts what the back returned into the front, unless a write of the key came in between. */
  *fill(id: string, key: Uint8Array, raw: RawEntry | undefined, g0: number): Handler<void> {
    if (!this.guard.clean(id, g0)) return
    // Logs and blobs stay in the back (see "streamed blobs and logs"), but in cache mode, whose blobs are the front's.
    if (raw?.log || (raw?.serializer === RAW_BYTES_ID && this.writePolicy !== 'frontend-only')) return
    if (!raw) {
      // The back has no such key: a front entry of it (written outside) is stale.
      if (this.readsBack(id)) yield* this.dropFront([key])
      return
    }
    try {
      yield* this.front.put([{ key, serializer: raw.serializer, meta: raw.meta, value: raw.value }])
    } catch {
      return // a front that cannot take the entry: it is a cache, the read still succeeds
    }
    // A write that began while the fill was landing may have landed first: drop
    // the filled entry, the next read goes to the back (removing is always safe).
    if (!this.guard.clean(id, g0)) {
      yield* this.dropFront([key])
      return
    }
    // The front was written: its hooks hear of it (konserve's read-through does).
    try {
      this.onFill?.(key, raw)
    } catch (err) {
      this.report(err)
    }
  }
}

/** The tiers' settings, checked by `tieredStore`. */
export interface TierConfig {
  writePolicy: WritePolicy
  readPolicy: 'front-first' | 'frontend-only'
  onError: (err: unknown) => void
  /** Called after a read-through put a back entry into the front. */
  onFill?: (key: Uint8Array, raw: RawEntry) => void
}

/** A backing over `front` and `back` (see the module comment for the policies). */
export function tieredBacking(front: Backing, back: Backing, cfg: TierConfig): Backing {
  const { writePolicy, readPolicy } = cfg
  const t = new Tiers(front, back, writePolicy, cfg.onError, cfg.onFill)
  /** Reads that never reach the back. */
  const frontOnly = readPolicy === 'frontend-only'
  /** The back is never written (nor locked): a cache over a back other peers own. */
  const cacheMode = writePolicy === 'frontend-only'
  /** The tier that holds streamed blobs and logs, and whose keys are listed and locked. */
  const home = cacheMode ? front : back
  const listed = cacheMode || frontOnly ? front : back

  /** Runs a blob or log write on the back: queued writes of the key first, the front forgets it. */
  function* onBack<R>(key: Uint8Array, log: boolean, write: () => Handler<R>): Handler<R> {
    yield* t.settled(key, log)
    yield* t.forget(key)
    let ok = false
    try {
      const r = yield* write()
      ok = true
      return r
    } finally {
      yield* t.forgetAfter(key, ok)
    }
  }

  const b = forward(back, {
    // Locks are the back's: one scope (forwarded), and the back's cross-process lock.
    get atomicMultiKey() {
      if (cacheMode) return front.atomicMultiKey
      return front.atomicMultiKey && back.atomicMultiKey && writePolicy === 'write-through'
    },
    get blocking() {
      return front.blocking && back.blocking
    },
    // Cache mode locks the front's keys and stamps lastWrite with the front's
    // clock: a file back's clock would write its watermark into the back.
    get lockScope() {
      return home.lockScope
    },
    clock: home.clock,
    // The tiers' reads go through `get`: no lent bytes from either tier.
    getValue: undefined,

    get: gensync(function* (key: Uint8Array): Handler<RawEntry | undefined> {
      const id = keyId(key)
      const p = t.pending.get(id)
      if (p) return p.write ? copyEntry(p.write) : undefined
      if (frontOnly) return yield* front.get(key)
      if (!t.readsBack(id)) {
        const hit = yield* front.get(key)
        if (hit) return hit
      }
      const g0 = t.guard.begin()
      try {
        const raw = yield* back.get(key)
        yield* t.fill(id, key, raw, g0)
        return raw
      } finally {
        t.guard.end()
      }
    }),

    getMeta: gensync(function* (key: Uint8Array): Handler<RawMeta | undefined> {
      const id = keyId(key)
      const p = t.pending.get(id)
      if (p) return p.write ? { key: copyBytes(key), serializer: p.write.serializer, meta: copyBytes(p.write.meta) } : undefined
      if (frontOnly) return yield* front.getMeta(key)
      if (!t.readsBack(id)) {
        const hit = yield* front.getMeta(key)
        if (hit) return hit
      }
      return yield* back.getMeta(key)
    }),

    exists: gensync(function* (key: Uint8Array): Handler<boolean> {
      const id = keyId(key)
      const p = t.pending.get(id)
      if (p) return p.write !== undefined
      if (frontOnly) return yield* front.exists(key)
      if (!t.readsBack(id) && (yield* front.exists(key))) return true
      return yield* back.exists(key)
    }),

    put: gensync(function* (writes: RawWrite[]): Handler<void> {
      const ids = writes.map((w) => keyId(w.key))
      const keys = writes.map((w) => w.key)
      t.guard.wrote(ids)
      try {
        if (cacheMode) {
          yield* front.put(writes)
          return
        }
        if (writePolicy === 'write-around') {
          // The back only; the front forgets the keys (the next read fills it).
          try {
            yield* back.put(writes)
          } finally {
            if (!(yield* t.dropFront(keys))) t.report(new KonserveError('ERR_IO', 'write-around: the front store could not forget the keys written'))
          }
          return
        }
        if (writePolicy === 'write-through') {
          try {
            yield* back.put(writes)
          } catch (err) {
            yield* t.dropFront(keys)
            throw err
          }
          try {
            yield* front.put(writes)
          } catch (err) {
            // Durable in the back; the front must not keep the old value.
            if (!(yield* t.dropFront(keys))) throw err
            t.report(err)
          }
          return
        }
        // write-behind
        try {
          yield* front.put(writes)
        } catch (err) {
          // Nothing is queued; keys the front may have taken are dropped (reads
          // then see the queued or back value, as before this write).
          yield* t.dropFront(keys)
          throw err
        }
        // Copies: the queue outlives the caller's buffers.
        t.enqueue(writes.map((w) => ({ key: copyBytes(w.key), write: { key: copyBytes(w.key), ...copyEntry(w) } })))
      } finally {
        t.guard.wrote(ids)
      }
    }),

    delete: gensync(function* (keys: Uint8Array[]): Handler<boolean[]> {
      const ids = keys.map(keyId)
      t.guard.wrote(ids)
      try {
        // Cache mode: the front only; a key the back holds reads through again.
        if (cacheMode) return yield* front.delete(keys)
        if (writePolicy === 'write-through' || writePolicy === 'write-around') {
          let existed: boolean[]
          try {
            existed = yield* back.delete(keys)
          } catch (err) {
            yield* t.dropFront(keys)
            throw err
          }
          // If this fails the front may still hold a deleted key: the caller must know.
          yield* front.delete(keys)
          return existed
        }
        // write-behind: whether each key existed, as this store sees it
        const before = ids.map((id) => t.pending.get(id))
        const inFront = yield* front.delete(keys)
        const existed: boolean[] = []
        for (let i = 0; i < keys.length; i++) {
          const p = before[i]
          existed.push(p ? p.write !== undefined : inFront[i] === true || (yield* back.exists(keys[i]!)))
        }
        t.enqueue(keys.map((k) => ({ key: copyBytes(k) })))
        return existed
      } finally {
        t.guard.wrote(ids)
      }
    }),

    /**
     * The back's cursor, with the write-behind queue as it was on open applied:
     * queued keys are dropped from the back's batches and their queued writes
     * (not deletes) come last.
     */
    openList(): ListCursor {
      if (listed === front) return front.openList()
      const queued = new Map(t.pending)
      const cursor = back.openList()
      let tail: Queued[] | undefined
      let backDone = false
      const filter = (l: RawListing): RawListing =>
        queued.size > 0 ? { entries: l.entries.filter((e) => !queued.has(keyId(e.key))), corrupt: l.corrupt } : l
      const fromTail = (max: number): RawListing | undefined => {
        tail ??= [...queued.values()].filter((q) => q.write)
        if (tail.length === 0) return undefined
        const batch = tail.splice(0, Math.max(1, max))
        return { entries: batch.map((q) => ({ key: copyBytes(q.key), serializer: q.write!.serializer, meta: copyBytes(q.write!.meta) })), corrupt: [] }
      }
      return {
        next: gensync(function* (max: number): Handler<RawListing | undefined> {
          if (!backDone) {
            const l = yield* cursor.next(max)
            if (l) return filter(l)
            backDone = true
          }
          return fromTail(max)
        }),
        close: () => {
          backDone = true
          tail = []
          cursor.close()
        },
      }
    },

    lock: gensync(function* (keys: Uint8Array[]): Handler<void> {
      yield* home.lock(keys)
      t.held.add(keys)
    }),
    unlock(keys: Uint8Array[]): void {
      try {
        home.unlock(keys)
      } finally {
        t.held.remove(keys)
      }
    },

    blobWriter: gensync(function* (key: Uint8Array, meta: Uint8Array): Handler<BlobSink> {
      if (cacheMode) return yield* front.blobWriter(key, meta)
      yield* t.settled(key)
      yield* t.forget(key)
      // A commit forgets the key in the front again; an abort leaves the back as it was, so a fill of it stands.
      return watchSink(
        yield* back.blobWriter(key, meta),
        () => t.guard.wrote([keyId(key)]),
        (ok) => t.forgetAfter(key, ok),
      )
    }),
    openBlob: gensync(function* (key: Uint8Array): Handler<BlobSource | undefined> {
      if (cacheMode || frontOnly) {
        const own = yield* front.openBlob(key)
        if (own || frontOnly) return own
      }
      return t.queued(key, 'ERR_NOT_BINARY') ? undefined : yield* back.openBlob(key)
    }),
    append: gensync(function* (key: Uint8Array, records: NewRecord[], createMeta: Uint8Array): Handler<LogInfo> {
      if (cacheMode) return yield* front.append(key, records, createMeta)
      return yield* onBack(key, true, () => back.append(key, records, createMeta))
    }),
    openLog: gensync(function* (key: Uint8Array): Handler<LogCursor | undefined> {
      if (cacheMode || frontOnly) {
        const own = yield* front.openLog(key)
        if (own || frontOnly) return own
      }
      return t.queued(key, 'ERR_NOT_A_LOG') ? undefined : yield* back.openLog(key)
    }),
    trimLog: gensync(function* (key: Uint8Array, keepFrom: number, meta: Uint8Array): Handler<LogInfo> {
      if (cacheMode) return yield* front.trimLog(key, keepFrom, meta)
      return yield* onBack(key, true, () => back.trimLog(key, keepFrom, meta))
    }),

    /**
     * close, async: the queued write-behind writes go to the back first
     * (rejects like flush if one failed). Blocking: cannot wait for queued
     * writes, so refused while some are queued.
     */
    close: twinOp(
      () => {
        if (t.anyQueued()) {
          throw new KonserveError('ERR_NOT_SUPPORTED', 'close: write-behind writes are still queued; use the async form of close, or flush first')
        }
      },
      () => t.flush(),
    ),
    flush: () => t.flush(),
  })
  populators.set(b, gensync(function* (only: Uint8Array[] | undefined, full: boolean): Handler<SyncReport> {
    return yield* populate(t, only, full)
  }))
  return b
}

/** What a sync of the front from the back did (konserve's sync-on-connect report). */
export interface SyncReport {
  /** Keys copied into the front. */
  syncedKeys: number
  /** Keys the front held before. */
  frontKeys: number
  /** Keys the back holds. */
  backKeys: number
}

const populators = new WeakMap<Backing, gensync.Gensync<[Uint8Array[] | undefined, boolean], SyncReport>>()

/** @internal The sync-on-connect of a tiered backing, or undefined for any other backing. */
export function populatorOf(b: Backing): gensync.Gensync<[Uint8Array[] | undefined, boolean], SyncReport> | undefined {
  return populators.get(b)
}

function* listAll(b: Backing): Handler<Uint8Array[]> {
  const cursor = b.openList()
  const out: Uint8Array[] = []
  try {
    for (;;) {
      const l = yield* cursor.next(1000)
      if (!l) return out
      for (const e of l.entries) out.push(e.key)
    }
  } finally {
    cursor.close()
  }
}

/**
 * Copies back entries into the front: those missing from the front (`full`
 * false, konserve's populate-missing-strategy) or all of them (`full`,
 * full-sync-strategy); only the keys `only` names when given. Logs stay in the
 * back. Raw entries are copied as they are (metadata included). No hooks fire
 * (konserve writes the front's protocol directly, too).
 */
function* populate(t: Tiers, only: Uint8Array[] | undefined, full: boolean): Handler<SyncReport> {
  const frontIds = new Set((yield* listAll(t.front)).map(keyId))
  const backKeys = yield* listAll(t.back)
  const wanted = only ? new Set(only.map(keyId)) : undefined
  let syncedKeys = 0
  for (const key of backKeys) {
    const id = keyId(key)
    if (wanted && !wanted.has(id)) continue
    if (!full && frontIds.has(id)) continue
    if (t.pending.has(id)) continue // a queued write-behind write is newer
    const g0 = t.guard.begin()
    try {
      const raw = yield* t.back.get(key)
      if (!raw) continue
      if (raw.log || (raw.serializer === RAW_BYTES_ID && t.writePolicy !== 'frontend-only')) continue
      if (!t.guard.clean(id, g0)) continue
      yield* t.front.put([{ key, serializer: raw.serializer, meta: raw.meta, value: raw.value }])
      if (!t.guard.clean(id, g0)) yield* t.dropFront([key])
      else syncedKeys++
    } finally {
      t.guard.end()
    }
  }
  return { syncedKeys, frontKeys: frontIds.size, backKeys: backKeys.length }
}
