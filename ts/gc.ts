/**
 * Garbage collection: delete every key that is neither whitelisted nor
 * written since a cutoff, in bounded memory and without ever deleting a key
 * that was written after it was listed.
 *
 * The store is listed through the backing's cursor (`openList`), `batchSize`
 * entries at a time. For each batch, the candidates (not whitelisted,
 * lastWrite < cutoff) are locked (the same locks as every write takes), their
 * metadata read again, and only those whose metadata is unchanged since the
 * listing (same bytes: no write in between) and still older than the cutoff
 * are deleted. Memory: one batch, the whitelist, and the deleted keys.
 */
import gensync, { type Handler } from 'gensync'
import { readMeta, run, warnCorrupt, withLock } from './api.js'
import type { Key, Metadata, Result } from './api.js'
import { type RawListing, type RawMeta, keyId } from './backing/index.js'
import { decodeKey, encodeKey } from './format/key.js'
import { KonserveError, withKey } from './errors.js'
import { afterWrite } from './hooks.js'
import { type Backing, type Op, blockingOp } from './backing/index.js'
import { type Store, type SyncOption, checkStore } from './store.js'
import { badArgument, checkOptions, checks, fail } from './args.js'

/**
 * The GC guard's view (ts/gc-guard.ts): the start of the oldest sequence of
 * unreferenced writes in flight on a backing (Infinity: none). The guard keeps
 * per-process marker files, so it is Node code: it plugs itself in here when
 * loaded (the Node entry loads it), which keeps this module free of Node.
 */
let oldestInFlight: Op<[b: Backing], number> = blockingOp((_b: Backing) => Infinity)
/** @internal Called by ts/gc-guard.ts. */
export function guardSweepsWith(op: Op<[b: Backing], number>): void {
  oldestInFlight = op
}

export interface SweepProgress {
  /** Entries listed so far (readable or not). */
  scanned: number
  /** Keys deleted so far. */
  deleted: number
  /** Batches done so far (1 after the first). */
  batch: number
}

export interface SweepOptions extends SyncOption {
  /** Entries listed, and at most keys deleted, per batch (default 1000). */
  batchSize?: number
  /** Called after each batch. In async form it may return a Promise, which is awaited. */
  onProgress?: (p: SweepProgress) => unknown
  /** Called for each file that cannot be read: it is reported and never deleted. Default: a process warning. */
  onCorrupt?: (err: KonserveError) => void
  /** Report the keys that would be deleted (listed older than the cutoff, not whitelisted) and delete nothing. */
  dryRun?: boolean
}


const callProgress = gensync({
  sync: (f: (p: SweepProgress) => unknown, p: SweepProgress) => {
    f(p)
  },
  async: async (f: (p: SweepProgress) => unknown, p: SweepProgress) => {
    await f(p)
  },
})

/** The CKE of a key as a Map/Set key (one char per byte). */
const idOf = keyId

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

function lastWriteOf(meta: Metadata): number | undefined {
  const lw = meta.lastWrite as unknown
  const t = lw instanceof Date ? lw.getTime() : typeof lw === 'number' ? lw : Number.NaN
  return Number.isFinite(t) ? t : undefined
}

interface Candidate {
  key: Key
  cke: Uint8Array
  meta: Uint8Array
}

function reportRaw(listing: RawListing, onCorrupt: (e: KonserveError) => void): void {
  for (const c of listing.corrupt) onCorrupt(new KonserveError(c.code as KonserveError['code'], c.message, { file: c.file }))
}

/** Decodes a listed entry; undefined (after reporting it) when it cannot be read. */
function decodeListed(e: RawMeta, onCorrupt: (e: KonserveError) => void): { key: Key; meta: Metadata } | undefined {
  try {
    const key = decodeKey(e.key)
    return { key, meta: readMeta(key, e) }
  } catch (err) {
    const ke = withKey(err, undefined)
    if (e.file) ke.file = e.file
    onCorrupt(ke)
    return undefined
  }
}

/** Deletes the candidates that still are garbage, under their locks. */
function* collect(store: Store, cands: Candidate[], cutoff: number, onCorrupt: (e: KonserveError) => void): Handler<Key[]> {
  const b = store.backing
  return yield* withLock(b, cands.map((c) => c.cke), function* () {
    const doomed: Candidate[] = []
    for (const c of cands) {
      let raw: RawMeta | undefined
      try {
        raw = yield* b.getMeta(c.cke)
      } catch (err) {
        onCorrupt(withKey(err, c.key))
        continue
      }
      if (!raw) continue // deleted meanwhile
      // Written since it was listed (whatever its stamp says): it stays.
      if (!sameBytes(raw.meta, c.meta)) continue
      let meta: Metadata
      try {
        meta = readMeta(c.key, raw)
      } catch (err) {
        onCorrupt(withKey(err, c.key))
        continue
      }
      const t = lastWriteOf(meta)
      if (t === undefined || t >= cutoff) continue
      doomed.push(c)
    }
    if (doomed.length === 0) return []
    const existed = yield* b.delete(doomed.map((c) => c.cke))
    return doomed.filter((_, i) => existed[i] === true).map((c) => c.key)
  })
}

const sweepOp = gensync(function* (
  store: Store,
  whitelist: Iterable<Key>,
  cutoff: Date,
  batchSize: number,
  onProgress: ((p: SweepProgress) => unknown) | undefined,
  onCorrupt: (e: KonserveError) => void,
  dryRun = false,
) {
  const keep = new Set<string>()
  for (const k of whitelist) {
    try {
      keep.add(idOf(encodeKey(k)))
    } catch (err) {
      throw withKey(err, k)
    }
  }
  // The GC guard: nothing a sequence of unreferenced writes still in flight
  // (here or in another process) wrote is older than its start.
  const limit = Math.min(cutoff.getTime(), yield* oldestInFlight(store.backing))
  const deleted: Key[] = []
  const progress: SweepProgress = { scanned: 0, deleted: 0, batch: 0 }
  const cursor = store.backing.openList()
  try {
    for (;;) {
      const listing = yield* cursor.next(batchSize)
      if (!listing) break
      progress.scanned += listing.entries.length + listing.corrupt.length
      reportRaw(listing, onCorrupt)
      const cands: Candidate[] = []
      for (const e of listing.entries) {
        if (keep.has(idOf(e.key))) continue
        const d = decodeListed(e, onCorrupt)
        if (!d) continue
        const t = lastWriteOf(d.meta)
        // No readable stamp: not known to be old, so never deleted.
        if (t === undefined || t >= limit) continue
        cands.push({ key: d.key, cke: e.key, meta: e.meta })
      }
      if (dryRun) {
        for (const c of cands) deleted.push(c.key)
        progress.deleted += cands.length
      } else if (cands.length > 0) {
        const gone = yield* collect(store, cands, limit, onCorrupt)
        for (const k of gone) deleted.push(k)
        progress.deleted += gone.length
        if (gone.length > 0) {
          afterWrite(store, () => gone.map((k) => ({ op: 'dissoc', key: k, path: [k], oldValue: undefined, newValue: undefined })))
        }
      }
      progress.batch++
      if (onProgress) yield* callProgress(onProgress, { ...progress })
    }
  } finally {
    cursor.close()
  }
  return deleted
})

/**
 * Deletes every key that is not in `whitelist` and whose `lastWrite` is older
 * than `cutoff`, listing the store in batches of `batchSize` (memory bounded
 * by a batch, the whitelist and the result). A key is locked and its metadata
 * read again before it is deleted: a key written after it was listed is never
 * deleted. The cutoff is lowered to the start of the oldest sequence of
 * unreferenced writes in flight on the store (gc-guard.ts), so a sweep never
 * deletes what such a sequence wrote; take the cutoff from `gcCutoff` before
 * computing the whitelist. Unreadable files are reported to `onCorrupt` and never deleted.
 * Returns the deleted keys.
 */
export function sweep<O extends SweepOptions>(store: Store, whitelist: Iterable<Key>, cutoff: Date, opts?: O): Result<O, Key[]> {
  try {
    checkOptions('sweep', opts, { sync: checks.boolean, batchSize: checks.any, onProgress: checks.function, onCorrupt: checks.function, dryRun: checks.boolean })
    checkStore('sweep', store)
    const w = whitelist as unknown
    if (w === null || typeof w !== 'object' || typeof (w as Iterable<Key>)[Symbol.iterator] !== 'function') {
      throw badArgument('sweep', 'whitelist', 'an iterable of keys', w)
    }
  } catch (err) {
    return fail(err, opts) as Result<O, Key[]>
  }
  if (!(cutoff instanceof Date) || Number.isNaN(cutoff.getTime())) {
    const e = new KonserveError('ERR_INVALID_ARGUMENT', 'sweep takes a valid Date as its cutoff')
    if (opts?.sync) throw e
    return Promise.reject(e) as Result<O, Key[]>
  }
  const batchSize = opts?.batchSize ?? 1000
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    const e = new KonserveError('ERR_INVALID_ARGUMENT', 'batchSize must be a positive integer')
    if (opts?.sync) throw e
    return Promise.reject(e) as Result<O, Key[]>
  }
  return run(sweepOp, opts, [store, whitelist, cutoff, batchSize, opts?.onProgress, opts?.onCorrupt ?? warnCorrupt, opts?.dryRun === true]) as Result<O, Key[]>
}
