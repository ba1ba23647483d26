/**
 * The GC guard (konserve.gc-guard): the store's safe point.
 *
 * A writer that builds a new state writes its values first and the pointer
 * that makes them reachable last (a crash then leaves garbage, never a
 * dangling pointer). While such a sequence runs, its values are reachable
 * from nothing, and they were written before a sweep that starts now: a sweep
 * would delete them. So the writer marks the sequence in flight
 * (`beginUnreferencedWrites` / `withUnreferencedWrites`) and every sweep lowers
 * its cutoff to the start of the oldest sequence in flight on the store, in
 * this process and, for file stores, in every process on the directory
 * (docs/FORMAT.md §8).
 *
 * Cost to writers: nothing per write; per sequence, an in-memory entry, plus,
 * for a file store when no other sequence of this process is open on it, one
 * small marker file written (temp + rename, no fsync) and removed at the end.
 */
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import gensync, { type Handler } from 'gensync'
import { badArgument, checkOptions, checks, fail, isSync } from './args.js'
import type { Backing } from './backing/index.js'
import { nowMs } from './clock.js'
import { KonserveError, toKonserveError } from './errors.js'
import { type Identity, identity, liveness } from './backends/pure/filelock.js'
import { type Store, type SyncOption, checkStore } from './store.js'
import { guardSweepsWith } from './gc.js'

type Ret<O, T> = O extends { sync: true } ? T : Promise<T>

/** A sequence of unreferenced writes in flight; `done()` once its pointer has landed (or it failed). */
export interface UnreferencedWrites {
  /** The sequence's start: every value it writes is stamped at or after it. */
  readonly start: Date
  /** Ends the sequence (idempotent). */
  done(): void
}

/** The in-flight sequences of this process on one store (by its lock scope: every connection to a directory shares it). */
interface Scope {
  starts: Map<number, number>
  /** File stores: the store directory and this process's marker in it, while a sequence is open. */
  dir?: string
  marker?: string
}

const scopes = new Map<string, Scope>()
let nextToken = 0

const MARKER_PREFIX = '.konserve.guard.'
const MARKER_NAME = /^\.konserve\.guard\.[0-9a-f]{32}$/
/** This process's marker token (one marker file per store directory per process). */
const processToken = randomBytes(16).toString('hex')

function dirOf(b: Backing): string | undefined {
  return b.lockScope.startsWith('file:') ? b.lockScope.slice(5) : undefined
}

function scopeOf(b: Backing): Scope {
  let s = scopes.get(b.lockScope)
  if (!s) scopes.set(b.lockScope, (s = { starts: new Map(), dir: dirOf(b) }))
  return s
}

/** `konserve-guard 1 <start> <bootId> <pidNs> <pid> <startTicks> <host>\n` */
function markerLine(start: number, w: Identity): string {
  return `konserve-guard 1 ${start} ${w.bootId ?? '-'} ${w.pidNs ?? '-'} ${w.pid} ${w.startTicks ?? '-'} ${w.host ?? '-'}\n`
}

function parseMarker(text: string): { start: number; who: Identity } | undefined {
  if (!text.endsWith('\n')) return undefined
  const f = text.slice(0, -1).split(' ')
  if (f.length !== 8 || f[0] !== 'konserve-guard' || f[1] !== '1' || !/^-?[0-9]+$/.test(f[2]!) || !/^[0-9]+$/.test(f[5]!)) return undefined
  const opt = (s: string) => (s === '-' ? undefined : s)
  return { start: Number(f[2]), who: { bootId: opt(f[3]!), pidNs: opt(f[4]!), pid: Number(f[5]), startTicks: opt(f[6]!), host: opt(f[7]!) } }
}

const markerTemp = (dir: string) => join(dir, `${MARKER_PREFIX}${processToken}.${process.pid}.tmp`)

/** The stamp a sequence starts at: no later than the wall clock and the store's clock (every later stamp is at or above both). */
const startStamp = gensync({
  sync: (b: Backing) => Math.min(Date.now(), b.clock ? b.clock.sync() : nowMs()),
  async: async (b: Backing) => Math.min(Date.now(), b.clock ? await b.clock.async() : nowMs()),
})

const publish = gensync({
  sync: (dir: string, marker: string, line: string) => {
    const tmp = markerTemp(dir)
    fs.writeFileSync(tmp, line, { flag: 'w', mode: 0o644 })
    fs.renameSync(tmp, marker)
  },
  async: async (dir: string, marker: string, line: string) => {
    const tmp = markerTemp(dir)
    await fsp.writeFile(tmp, line, { flag: 'w', mode: 0o644 })
    await fsp.rename(tmp, marker)
  },
})

const beginOp = gensync(function* (store: Store): Handler<UnreferencedWrites> {
  const b = store.backing
  const scope = scopeOf(b)
  const start = yield* startStamp(b)
  const token = ++nextToken
  const first = scope.starts.size === 0
  scope.starts.set(token, start)
  if (first && scope.dir) {
    // The marker holds this process's oldest start: later sequences start later, so it stays valid until the last one ends.
    const marker = join(scope.dir, `${MARKER_PREFIX}${processToken}`)
    scope.marker = marker
    try {
      yield* publish(scope.dir, marker, markerLine(start, identity()))
    } catch (err) {
      scope.starts.delete(token)
      if (scope.starts.size === 0) scope.marker = undefined
      throw toKonserveError(err)
    }
  }
  let open = true
  return {
    start: new Date(start),
    done() {
      if (!open) return
      open = false
      scope.starts.delete(token)
      if (scope.starts.size === 0 && scope.marker) {
        const marker = scope.marker
        scope.marker = undefined
        try {
          fs.unlinkSync(marker)
        } catch {
          // Gone already (the store was deleted): nothing to end.
        }
      }
    },
  }
})

const OPTS = { sync: checks.boolean }

/**
 * Opens a sequence of unreferenced writes on `store` (konserve `writing!`):
 * until its `done()`, no sweep deletes what it writes, in this process or
 * (file stores) any other. Call it before the first value is written; call
 * `done()` once the pointer has landed, also when the sequence fails.
 */
export function beginUnreferencedWrites<O extends SyncOption>(store: Store, opts?: O): Ret<O, UnreferencedWrites> {
  try {
    checkOptions('beginUnreferencedWrites', opts, OPTS)
    checkStore('beginUnreferencedWrites', store)
  } catch (err) {
    return fail(err, opts)
  }
  return (isSync(opts) ? beginOp.sync(store) : beginOp.async(store)) as Ret<O, UnreferencedWrites>
}

/**
 * Runs `fn` as one sequence of unreferenced writes (konserve
 * `with-unreferenced-writes`): the guard is held until `fn` returns, or, in
 * the async form, until the Promise it returns settles. Returns what `fn` returns.
 */
export function withUnreferencedWrites<T, O extends SyncOption>(store: Store, fn: () => T, opts?: O): O extends { sync: true } ? T : Promise<Awaited<T>> {
  if (typeof fn !== 'function') return fail(badArgument('withUnreferencedWrites', 'fn', 'a function', fn), opts)
  if (isSync(opts)) {
    const g = beginUnreferencedWrites(store, { sync: true })
    try {
      const r = fn()
      if (r !== null && typeof r === 'object' && typeof (r as { then?: unknown }).then === 'function') {
        throw new KonserveError('ERR_INVALID_ARGUMENT', 'withUnreferencedWrites: a sync call was given a function that returns a Promise; call it without { sync: true }')
      }
      return r as never
    } finally {
      g.done()
    }
  }
  return (async () => {
    const g = await beginUnreferencedWrites(store)
    try {
      return await fn()
    } finally {
      g.done()
    }
  })() as never
}

/** The starts of the live sequences of other processes on `dir`; markers of dead processes are removed. */
const othersOp = gensync({
  sync: (dir: string): number[] => {
    let names: string[]
    try {
      names = fs.readdirSync(dir)
    } catch (err) {
      throw toKonserveError(err)
    }
    const out: number[] = []
    for (const n of names) {
      if (!MARKER_NAME.test(n) || n === `${MARKER_PREFIX}${processToken}`) continue
      let text: string
      try {
        text = fs.readFileSync(join(dir, n), 'latin1')
      } catch {
        continue // ended meanwhile
      }
      judge(dir, n, text, out)
    }
    return out
  },
  async: async (dir: string): Promise<number[]> => {
    let names: string[]
    try {
      names = await fsp.readdir(dir)
    } catch (err) {
      throw toKonserveError(err)
    }
    const out: number[] = []
    for (const n of names) {
      if (!MARKER_NAME.test(n) || n === `${MARKER_PREFIX}${processToken}`) continue
      let text: string
      try {
        text = await fsp.readFile(join(dir, n), 'latin1')
      } catch {
        continue
      }
      judge(dir, n, text, out)
    }
    return out
  },
})

/**
 * A marker's start, if its process may be alive. A marker that is not one
 * valid line counts as a sequence started at 0 (nothing is swept): markers are
 * written whole by rename, so it is not ours to judge. One of a dead process
 * is removed (its sequence is garbage now). A process whose liveness cannot be
 * told (another host or pid namespace) counts as alive.
 */
function judge(dir: string, name: string, text: string, out: number[]): void {
  const m = parseMarker(text)
  if (!m) {
    out.push(0)
    return
  }
  if (liveness(identity(), m.who) === 'dead') {
    try {
      fs.unlinkSync(join(dir, name))
    } catch {
      // Removed by another sweeper.
    }
    return
  }
  out.push(m.start)
}

/**
 * @internal The start of the oldest sequence in flight on the store's
 * backing, here or in another process; +Infinity when there is none.
 */
export const oldestInFlight = gensync(function* (b: Backing): Handler<number> {
  const scope = scopes.get(b.lockScope)
  let oldest = Infinity
  for (const t of scope?.starts.values() ?? []) oldest = Math.min(oldest, t)
  const dir = dirOf(b)
  if (dir) for (const t of yield* othersOp(dir)) oldest = Math.min(oldest, t)
  return oldest
})

guardSweepsWith(oldestInFlight)

const cutoffOp = gensync(function* (store: Store, startedAt: number | undefined): Handler<Date> {
  // The caller's start is read before the guard (konserve `cutoff`): a sequence
  // that opens after this read writes later than it, one that closes before
  // the guard is read has landed its pointer, which the whitelist (computed
  // after this call) sees.
  const now = startedAt ?? Date.now()
  const oldest = yield* oldestInFlight(store.backing)
  return new Date(Math.min(now, oldest))
})

/**
 * The sweep cutoff (konserve `gc-guard/cutoff`): the earlier of `startedAt`
 * (default: now) and the start of the oldest sequence of unreferenced writes in
 * flight on the store. Call it BEFORE computing the whitelist.
 */
export function gcCutoff<O extends SyncOption>(store: Store, startedAt?: Date, opts?: O): Ret<O, Date> {
  try {
    checkOptions('gcCutoff', opts, OPTS)
    checkStore('gcCutoff', store)
    if (startedAt !== undefined && (!(startedAt instanceof Date) || Number.isNaN(startedAt.getTime()))) throw badArgument('gcCutoff', 'startedAt', 'a valid Date', startedAt)
  } catch (err) {
    return fail(err, opts)
  }
  const at = startedAt?.getTime()
  return (isSync(opts) ? cutoffOp.sync(store, at) : cutoffOp.async(store, at)) as Ret<O, Date>
}

/** Whether a sequence of unreferenced writes is in flight on the store, here or (file stores) in another process. */
export function unreferencedWritesInFlight<O extends SyncOption>(store: Store, opts?: O): Ret<O, boolean> {
  try {
    checkOptions('unreferencedWritesInFlight', opts, OPTS)
    checkStore('unreferencedWritesInFlight', store)
  } catch (err) {
    return fail(err, opts)
  }
  if (isSync(opts)) return (oldestInFlight.sync(store.backing) !== Infinity) as Ret<O, boolean>
  return oldestInFlight.async(store.backing).then((t) => t !== Infinity) as Ret<O, boolean>
}
