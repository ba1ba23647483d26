/**
 * Real-process crash harness: child writers (fixtures/crash-writer.mjs) run a
 * random mixed workload on a file store and are killed with SIGKILL at random
 * moments: during start-up and open, at the start of a write, between writes.
 * Three cases, each on a store directory of its own:
 *
 * - native: one writer on the native core;
 * - pure: one writer on the pure-TypeScript store (KONSERVE_NATIVE=0);
 * - mixed: a native and a pure writer on one directory at once, each on keys
 *   of its own (no cross-process read-modify-write between the two), each
 *   killed at its own moment, so one opens, sweeps and writes while the
 *   other is alive or dying;
 * - native-wal, pure-wal, mixed-wal: the same three on a store switched to
 *   its write-ahead log (docs/WAL.md) with `wal: true` before the writers
 *   start; the writers and the checker open it normally (the marker turns
 *   the log on), so small writes are records of `.konserve.wal` killed
 *   mid-frame, mid-group-commit, mid-checkpoint, and reread by both engines.
 *   A third of the kills of the other cases each.
 *
 * Each writer runs 1 to 4 lanes of calls at once (its async calls are in
 * flight together, so group commits are killed mid-batch), and all its lanes
 * increment one shared counter and append to one shared log. After each kill
 * this process reopens the store (alternately with the native and the pure
 * implementation) and checks that
 *
 * - every acknowledged write is there: each key holds its last acknowledged
 *   value, or the value of the one write of its lane that was in flight at the
 *   kill (begun, not acknowledged; a multiAssoc in flight may have landed on
 *   some keys only);
 * - the shared counter lost no acknowledged increment, and no two increments
 *   returned the same count; the shared log holds every acknowledged element
 *   at the position its append returned, the log from before the run as its
 *   prefix, and otherwise only elements begun in the run, none twice;
 * - every key reads back without error, its metadata type is right, and
 *   `exists` agrees with `get`; `log` and `reduceLog` agree;
 * - `keys()` lists exactly the keys that exist and reports nothing corrupt;
 * - no staging file (`.*.stage`) is left once the store is reopened.
 *
 * One store directory per case is used for every kill, so state accumulates.
 * Quick mode (the default, CI) does 60 kills per case; `KONSERVE_KILLS=5000`
 * runs the long mode.
 *
 * A SIGKILL does not lose the page cache, so this cannot catch a missing fsync;
 * the Rust core's simulated file system tests cover that.
 */
import test from 'ava'
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { isDeepStrictEqual } from 'node:util'
import * as k from 'konserve'
import { tempDir } from './helpers/api.js'
import { processAlive } from '../ts/backends/pure/filelock.js'
import { STAGING } from '../ts/backends/pure/staging.js'

const here = import.meta.dirname ?? new URL('.', import.meta.url).pathname
const WRITER = join(here, 'fixtures', 'crash-writer.mjs')
const KILLS_ALL = Math.max(1, Number(process.env.KONSERVE_KILLS ?? 60) | 0)
const BATCH = 30
const MAX_LANES = 4
const sync = { sync: true } as const

type Impl = 'native' | 'pure'
interface Writer {
  impl: Impl
  /** Every key this writer touches starts with it. */
  prefix: string
}
interface Case {
  name: string
  writers: Writer[]
  /** The store is switched to its write-ahead log before the first writer starts. */
  wal?: boolean
  /** Kills of this case (default KILLS_ALL). */
  kills?: number
}
const WAL_KILLS = Math.max(1, Math.round(KILLS_ALL / 3))
const CASES: Case[] = [
  { name: 'native', writers: [{ impl: 'native', prefix: 'N' }] },
  { name: 'pure', writers: [{ impl: 'pure', prefix: 'P' }] },
  {
    name: 'mixed native+pure',
    writers: [
      { impl: 'native', prefix: 'N' },
      { impl: 'pure', prefix: 'P' },
    ],
  },
  { name: 'native-wal', wal: true, kills: WAL_KILLS, writers: [{ impl: 'native', prefix: 'N' }] },
  { name: 'pure-wal', wal: true, kills: WAL_KILLS, writers: [{ impl: 'pure', prefix: 'P' }] },
  {
    name: 'mixed-wal',
    wal: true,
    kills: WAL_KILLS,
    writers: [
      { impl: 'native', prefix: 'N' },
      { impl: 'pure', prefix: 'P' },
    ],
  },
]

// ---- keys -------------------------------------------------------------------------

type Kind = 'value' | 'counter' | 'ctr' | 'blob' | 'log' | 'sharedCounter' | 'sharedLog'
const LANE_KEYS: Record<string, Kind> = { v0: 'value', v1: 'value', n0: 'counter', ctr: 'ctr', b0: 'blob', l0: 'log' }
const META_TYPE: Record<Kind, string> = {
  value: 'value',
  counter: 'value',
  ctr: 'value',
  blob: 'binary',
  log: 'append-log',
  sharedCounter: 'value',
  sharedLog: 'append-log',
}

/** Every key a writer may touch, with its kind. */
function keysOf(w: Writer): Map<string, Kind> {
  const out = new Map<string, Kind>()
  for (let l = 0; l < MAX_LANES; l++) for (const [name, kind] of Object.entries(LANE_KEYS)) out.set(`${w.prefix}${l}:${name}`, kind)
  out.set(`${w.prefix}:sc`, 'sharedCounter')
  out.set(`${w.prefix}:sl`, 'sharedLog')
  return out
}

/** What a key holds, as this harness observes it (`undefined`: absent). Blobs as {size, sha}. */
type Obs = unknown
type Elem = { i: string | number; v: number }

interface Line {
  t: 'open' | 'B' | 'A' | 'E' | 'timeout'
  i?: number
  l?: number
  s?: boolean
  op?: string
  key?: string
  value?: unknown
  field?: 'a' | 'b'
  entries?: Array<[string, unknown]>
  size?: number
  sha?: string
  elem?: Elem
  r?: unknown
  impl?: string
  lanes?: number
  code?: string
  message?: string
}

const show = (v: unknown) => {
  const s = JSON.stringify(v)
  return s === undefined ? 'undefined' : s.length > 300 ? `${s.slice(0, 300)}...` : s
}
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')
const rand = (n: number) => Math.floor(Math.random() * n)

interface Stats {
  kills: number
  acked: number
  begun: number
  inFlightAtKill: number
  /** Blobs of more than one chunk that a kill caught in flight. */
  multiChunkBlobAtKill: number
  /** Kills that found two or more async calls of one writer in flight: a group commit could be cut. */
  asyncBatchAtKill: number
  inFlightLanded: number
  killedBeforeOpen: number
  stagingLeftByKill: number
  notLoaded: number
  /** Empty lock files left by killed pure writers (a known bug, see verify). */
  emptyLockLeft: number
  syncOps: number
  asyncOps: number
  maxInFlight: number
  sharedIncsAcked: number
  sharedAppendsAcked: number
  ops: Record<string, number>
  impls: Record<string, number>
  verifiedWith: Record<string, number>
  /** Keys (at least) the checks found in the write-ahead log, not in a key file. */
  walReads: number
}

/** What the shared counter and log of one writer did during one run. */
interface SharedRun {
  counterBase: number
  counterBegun: number
  counterAcks: number[]
  logBase: Elem[]
  logBegun: Map<string, Elem>
  logAcks: Array<{ elem: Elem; r: number }>
}

class Harness {
  readonly dir = join(tempDir('konserve-crash-'), 'store')
  readonly kinds = new Map<string, Kind>()
  readonly model = new Map<string, Obs>()
  readonly failures: string[] = []
  readonly stats: Stats = {
    kills: 0,
    acked: 0,
    begun: 0,
    inFlightAtKill: 0,
    multiChunkBlobAtKill: 0,
    asyncBatchAtKill: 0,
    inFlightLanded: 0,
    killedBeforeOpen: 0,
    stagingLeftByKill: 0,
    notLoaded: 0,
    emptyLockLeft: 0,
    syncOps: 0,
    asyncOps: 0,
    maxInFlight: 0,
    sharedIncsAcked: 0,
    sharedAppendsAcked: 0,
    ops: {},
    impls: {},
    verifiedWith: {},
    walReads: 0,
  }

  constructor(readonly c: Case) {
    for (const w of c.writers) for (const [key, kind] of keysOf(w)) this.kinds.set(key, kind)
    for (const key of this.kinds.keys()) this.model.set(key, undefined)
  }

  /** The new state of each key a begun write of a lane touches, if it lands. */
  candidates(b: Line): Map<string, Obs> {
    const key = b.key!
    switch (b.op) {
      case 'assoc':
        return new Map([[key, b.value]])
      case 'inc':
        return new Map([[key, ((this.model.get(key) as number | undefined) ?? 0) + 1]])
      case 'incIn': {
        const old = (this.model.get(key) as Record<string, number> | undefined) ?? {}
        return new Map([[key, { ...old, [b.field!]: (old[b.field!] ?? 0) + 1 }]])
      }
      case 'multiAssoc':
        return new Map(b.entries!)
      case 'dissoc':
        return new Map([[key, undefined]])
      case 'bassoc':
        return new Map([[key, { size: b.size, sha: b.sha }]])
      case 'append':
        return new Map([[key, [...((this.model.get(key) as unknown[] | undefined) ?? []), b.elem]]])
      default:
        throw new Error(`no candidates for ${JSON.stringify(b)}`)
    }
  }

  newShared(w: Writer): SharedRun {
    return {
      counterBase: (this.model.get(`${w.prefix}:sc`) as number | undefined) ?? 0,
      counterBegun: 0,
      counterAcks: [],
      logBase: (this.model.get(`${w.prefix}:sl`) as Elem[] | undefined) ?? [],
      logBegun: new Map(),
      logAcks: [],
    }
  }

  /** Checks an acknowledgment against the model and applies it. Returns an error message or undefined. */
  acknowledge(b: Line, a: Line, shared: SharedRun): string | undefined {
    const key = b.key!
    if (b.op === 'incShared') {
      const r = a.r as number
      if (shared.counterAcks.includes(r)) return `two increments of ${key} returned ${r}: an update was lost`
      if (!(r > shared.counterBase && r <= shared.counterBase + shared.counterBegun)) {
        return `an increment of ${key} returned ${r}; it started at ${shared.counterBase} with ${shared.counterBegun} increments begun`
      }
      shared.counterAcks.push(r)
      this.stats.sharedIncsAcked++
      return undefined
    }
    if (b.op === 'appendShared') {
      const r = a.r as number
      if (shared.logAcks.some((x) => x.r === r)) return `two appends to ${key} returned length ${r}`
      if (!(r > shared.logBase.length && r <= shared.logBase.length + shared.logBegun.size)) {
        return `an append to ${key} returned length ${r}; it started at ${shared.logBase.length} with ${shared.logBegun.size} appends begun`
      }
      shared.logAcks.push({ elem: b.elem!, r })
      this.stats.sharedAppendsAcked++
      return undefined
    }
    const cands = this.candidates(b)
    if (b.op === 'inc' || b.op === 'incIn') {
      if (!isDeepStrictEqual(a.r, cands.get(key))) {
        return `${b.op} ${key} returned ${show(a.r)}, but the acknowledged state was ${show(this.model.get(key))}: an update was lost`
      }
    } else if (b.op === 'append') {
      const want = (cands.get(key) as unknown[]).length
      if (a.r !== want) return `append to ${key} returned length ${show(a.r)}, expected ${want}`
    } else if (b.op === 'dissoc') {
      const existed = this.model.get(key) !== undefined
      if (a.r !== existed) return `dissoc ${key} returned ${show(a.r)}, but the key ${existed ? 'existed' : 'did not exist'}`
    }
    for (const [key2, v] of cands) this.model.set(key2, v)
    return undefined
  }

  observe(store: k.Store, key: string): Obs {
    const kind = this.kinds.get(key)!
    let obs: Obs
    if (kind === 'blob') {
      obs = k.bget(store, key, ({ size, blob }) => ({ size, sha: sha256(blob!) }), sync)
      if (obs !== undefined && (obs as { size: number }).size === 0) throw new Error(`blob ${key} read back empty`)
    } else if (kind === 'log' || kind === 'sharedLog') {
      obs = k.log(store, key, sync)
      const elems = (obs as Elem[] | undefined) ?? []
      const viaReduce = k.reduceLog(store, key, (acc: { n: number; sum: number }, e: Elem) => ({ n: acc.n + 1, sum: acc.sum + e.v }), { n: 0, sum: 0 }, sync)
      const direct = { n: elems.length, sum: elems.reduce((s, e) => s + e.v, 0) }
      if (!isDeepStrictEqual(viaReduce, direct)) {
        throw new Error(`log and reduceLog disagree on ${key}: ${show(direct)} vs ${show(viaReduce)}`)
      }
    } else {
      obs = k.get(store, key, sync)
    }
    const exists = k.exists(store, key, sync)
    if (exists !== (obs !== undefined)) throw new Error(`exists(${key}) is ${exists} but the read gave ${show(obs)}`)
    const meta = k.getMeta(store, key, sync)
    if (obs !== undefined && meta?.type !== META_TYPE[kind]) {
      throw new Error(`getMeta(${key}).type is ${show(meta?.type)}, expected ${META_TYPE[kind]}`)
    }
    return obs
  }

  /** Checks what the shared counter and log hold after a run. */
  checkShared(w: Writer, sh: SharedRun, observed: Map<string, Obs>): string[] {
    const errors: string[] = []
    const sc = `${w.prefix}:sc`
    const v = (observed.get(sc) as number | undefined) ?? 0
    const lo = Math.max(sh.counterBase + sh.counterAcks.length, ...sh.counterAcks)
    const hi = sh.counterBase + sh.counterBegun
    if (v < lo || v > hi) {
      errors.push(`${sc} holds ${v}: with ${sh.counterAcks.length} of ${sh.counterBegun} increments acknowledged from ${sh.counterBase} (the highest returned ${Math.max(0, ...sh.counterAcks)}), it must be in ${lo}..${hi}`)
    }
    const sl = `${w.prefix}:sl`
    const log = (observed.get(sl) as Elem[] | undefined) ?? []
    if (!isDeepStrictEqual(log.slice(0, sh.logBase.length), sh.logBase)) {
      errors.push(`${sl}: the ${sh.logBase.length} elements from before the run changed: ${show(log.slice(0, sh.logBase.length))}`)
    }
    for (const { elem, r } of sh.logAcks) {
      if (!isDeepStrictEqual(log[r - 1], elem)) errors.push(`${sl}: the element acknowledged at ${r} is ${show(log[r - 1])}, not ${show(elem)}`)
    }
    const seen = new Set<string>()
    for (const e of log.slice(sh.logBase.length)) {
      const id = String(e?.i)
      if (seen.has(id)) errors.push(`${sl}: element ${id} appears twice`)
      seen.add(id)
      if (!isDeepStrictEqual(sh.logBegun.get(id), e)) errors.push(`${sl}: element ${show(e)} was never appended in this run`)
    }
    return errors
  }

  /** Reopens the store with `impl` and checks it against the model; the observed state is the next run's. */
  verify(impl: Impl, inFlight: Line[], shared: Map<string, SharedRun>): string[] {
    const errors: string[] = []
    const dir = this.dir
    this.stats.verifiedWith[impl] = (this.stats.verifiedWith[impl] ?? 0) + 1
    // Staging files the killed writers left (they died between creating one
    // and renaming it): the reopen below must sweep them. (The first writer
    // may die before it has created the directory.)
    if (existsSync(dir) && readdirSync(dir).some((n) => n.endsWith('.stage'))) this.stats.stagingLeftByKill++
    // A writer killed between the exclusive create of a lock file and the
    // write of its record leaves an empty lock file (FORMAT.md §6): it blocks
    // that key until it is 5 s old, then is taken over by its next writer.
    // Count them (an old protocol wedged the key forever).
    if (existsSync(dir)) {
      for (const n of readdirSync(dir).filter((x) => /^\.[0-9a-f]{32}\.lock$/.test(x))) {
        if (statSync(join(dir, n)).size === 0) this.stats.emptyLockLeft++
      }
    }
    let store: k.Store
    try {
      store = k.connectFsStore(dir, { ...sync, native: impl === 'native' })
    } catch (err) {
      return [`reopening the store (${impl}) failed: ${(err as Error).message}`]
    }
    // A staging file of a live process is kept (FORMAT.md §5). The killed
    // writer is dead and reaped by now, but on a machine whose pid space is
    // small (pid_max 32768 here) and busy its pid may already name another
    // process or thread: then the sweep rightly keeps its files, and a later
    // open takes them. Only files of pids that are gone count as left over.
    const staging = readdirSync(dir).filter((n) => {
      const m = STAGING.exec(n)
      return n.endsWith('.stage') && !(m && processAlive(Number(m[2])))
    })
    if (staging.length > 0) errors.push(`staging files left after reopening (${impl}): ${staging.join(', ')}`)

    const pending = new Map<string, { obs: Obs; line: Line }>()
    for (const b of inFlight) {
      if (b.op === 'incShared' || b.op === 'appendShared') continue
      for (const [key, obs] of this.candidates(b)) pending.set(key, { obs, line: b })
    }
    const observed = new Map<string, Obs>()
    for (const key of this.kinds.keys()) {
      let obs: Obs
      try {
        obs = this.observe(store, key)
      } catch (err) {
        errors.push(`reading ${key} (${impl}) failed: ${(err as Error & { code?: string }).code ?? ''} ${(err as Error).message}`)
        continue
      }
      observed.set(key, obs)
      const kind = this.kinds.get(key)!
      if (kind === 'sharedCounter' || kind === 'sharedLog') continue
      const acked = this.model.get(key)
      if (isDeepStrictEqual(obs, acked)) continue
      const p = pending.get(key)
      if (p && isDeepStrictEqual(obs, p.obs)) {
        this.stats.inFlightLanded++
        continue
      }
      errors.push(
        `${key} holds ${show(obs)}; expected the acknowledged ${show(acked)}` +
          (p ? ` or the in-flight ${show(p.obs)} (${p.line.op} #${p.line.i})` : ' (no write to it was in flight)'),
      )
    }
    for (const w of this.c.writers) errors.push(...this.checkShared(w, shared.get(w.prefix)!, observed))

    const corrupt: string[] = []
    let listed: string[] = []
    try {
      listed = k
        .keys(store, { ...sync, onCorrupt: (e: k.KonserveError) => corrupt.push(`${e.code} ${e.file}: ${e.message}`) })
        .map((m: k.Metadata) => m.key as string)
        .sort()
    } catch (err) {
      errors.push(`keys() failed: ${(err as Error).message}`)
    }
    if (corrupt.length > 0) errors.push(`keys() reported corrupt files: ${corrupt.join('; ')}`)
    const present = [...observed].filter(([, v]) => v !== undefined).map(([key]) => key).sort()
    if (!isDeepStrictEqual(listed, present)) errors.push(`keys() lists ${show(listed)} but the keys that exist are ${show(present)}`)
    // Keys that exist without a key file: their values were read from the write-ahead log.
    this.stats.walReads += Math.max(0, present.length - readdirSync(dir).filter((n) => n.endsWith('.ksv')).length)

    // The observed state is the acknowledged state of the next run. A shared
    // log that grew long starts over (every append reads it whole).
    for (const [key, v] of observed) this.model.set(key, v)
    if (errors.length === 0) {
      for (const w of this.c.writers) {
        const sl = `${w.prefix}:sl`
        if (((observed.get(sl) as unknown[] | undefined) ?? []).length > 200) {
          k.dissoc(store, sl, sync)
          this.model.set(sl, undefined)
        }
      }
    }
    return errors
  }
}

// ---- one run: start the writers, kill them ------------------------------------------

interface RunResult {
  errors: string[]
  inFlight: Line[]
  opened: boolean
  how: string
  notLoaded?: boolean
}

/** Runs one writer until it is killed; returns the protocol errors and the writes in flight at the kill. */
async function runAndKill(h: Harness, w: Writer, seed: number, shared: SharedRun, turn: number): Promise<RunResult> {
  const lanes = 1 + rand(MAX_LANES)
  const env = { ...process.env, KONSERVE_NATIVE: w.impl === 'pure' ? '0' : '1' }
  const child = spawn(process.execPath, [WRITER, h.dir, String(seed), '30', String(lanes), w.prefix], { stdio: ['ignore', 'pipe', 'pipe'], env })
  const { stats } = h
  const errors: string[] = []
  let stderr = ''
  let buffered = ''
  const inFlight = new Map<number, Line>()
  let opened = false
  let killed = false
  const kill = () => {
    if (!killed) {
      killed = true
      child.kill('SIGKILL')
    }
  }

  // Where the kill lands: during start-up and open, right at the start of a
  // write (synchronously, on the next turn, or a few ms in), at the start of a
  // blob of several chunks, or at a random time. Every tenth run of a writer
  // kills it at once (before it can open the store) and every tenth at a big
  // blob, so that those moments are reached in every case.
  const strategy = rand(100)
  let killAtBegin = -1
  let killAtBigBlob = false
  let how: string
  if (turn % 10 === 0) {
    how = 'at-spawn'
    kill()
  } else if (turn % 10 === 5) {
    how = 'at-big-blob'
    killAtBigBlob = true
  } else if (strategy < 15) {
    how = 'startup'
    setTimeout(kill, rand(150))
  } else if (strategy < 85) {
    killAtBegin = 1 + rand(40)
    how = 'at-begin'
  } else {
    how = 'after-open'
  }
  const beginDelay = rand(4) // 0: at once; 1: setImmediate; 2, 3: a few ms
  let begins = 0
  // The writer should be dead long before this; if not, say so.
  const watchdog = setTimeout(() => {
    errors.push('the writer never reached the moment chosen for the kill')
    kill()
  }, 20_000)

  const onLine = (text: string) => {
    let line: Line
    try {
      line = JSON.parse(text) as Line
    } catch {
      errors.push(`unparsable line from the writer: ${show(text)}`)
      return
    }
    if (line.t === 'open') {
      opened = true
      stats.impls[line.impl!] = (stats.impls[line.impl!] ?? 0) + 1
      if (line.impl !== w.impl) errors.push(`the writer runs ${line.impl}, not ${w.impl}`)
      if (how === 'after-open') setTimeout(kill, rand(300))
    } else if (line.t === 'B') {
      for (const b of inFlight.values()) if (b.l === line.l) errors.push(`write ${line.i} began while write ${b.i} of its lane was in flight`)
      inFlight.set(line.i!, line)
      stats.maxInFlight = Math.max(stats.maxInFlight, inFlight.size)
      if (line.op === 'incShared') shared.counterBegun++
      if (line.op === 'appendShared') shared.logBegun.set(String(line.elem!.i), line.elem!)
      stats.begun++
      stats.ops[line.op!] = (stats.ops[line.op!] ?? 0) + 1
      if (line.s) stats.syncOps++
      else stats.asyncOps++
      if (++begins === killAtBegin || (killAtBigBlob && line.op === 'bassoc' && line.size! > 1 << 20)) {
        if (beginDelay === 0) kill()
        else if (beginDelay === 1) setImmediate(kill)
        else setTimeout(kill, Math.random() * 3 * beginDelay)
      }
    } else if (line.t === 'A') {
      const b = inFlight.get(line.i!)
      if (!b) {
        errors.push(`acknowledgment of write ${line.i} that was not in flight`)
        return
      }
      const err = h.acknowledge(b, line, shared)
      if (err) errors.push(err)
      stats.acked++
      inFlight.delete(line.i!)
    } else if (line.t === 'E') {
      const b = inFlight.get(line.i!)
      errors.push(`${b?.op} #${line.i} on ${b?.key} (${b?.s ? 'sync' : 'async'}) failed: ${line.code} ${line.message}`)
    } else if (line.t === 'timeout') {
      errors.push('the writer ran out of time before it was killed')
    }
  }
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (chunk: string) => {
    buffered += chunk
    let nl
    while ((nl = buffered.indexOf('\n')) >= 0) {
      onLine(buffered.slice(0, nl))
      buffered = buffered.slice(nl + 1)
    }
  })
  child.stderr.setEncoding('utf8')
  child.stderr.on('data', (chunk: string) => {
    stderr += chunk
  })
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
    child.once('close', (c, s) => resolve([c, s])),
  )
  clearTimeout(watchdog)
  // A trailing line without its newline was cut by the kill: if it was a
  // begin, the write had not started; if an acknowledgment, the write stays
  // "in flight" (old or new value both allowed), which is only less strict.
  const flying = [...inFlight.values()]
  if (signal !== 'SIGKILL') {
    // On a developer's machine `npm run build` may be replacing dist/ right
    // now (tsup cleans it first): a writer that could not even load konserve
    // wrote nothing, and the caller retries it after a pause.
    if (!opened && /ERR_MODULE_NOT_FOUND|does not provide an export named/.test(stderr)) {
      return { errors, inFlight: flying, opened, how, notLoaded: true }
    }
    errors.push(`the writer exited by itself (code ${code}, signal ${signal}): ${stderr.slice(0, 2000)}`)
  }
  if (flying.length > 0) stats.inFlightAtKill++
  if (flying.filter((b) => !b.s).length >= 2) stats.asyncBatchAtKill++
  if (flying.some((b) => b.op === 'bassoc' && b.size! > 1 << 20)) stats.multiChunkBlobAtKill++
  if (!opened) stats.killedBeforeOpen++
  return { errors, inFlight: flying, opened, how }
}

// ---- the tests --------------------------------------------------------------------

for (const c of CASES) {
  const h = new Harness(c)
  const KILLS = c.kills ?? KILLS_ALL
  const batches = Math.ceil(KILLS / BATCH)
  for (let b = 0; b < batches; b++) {
    const first = b * BATCH + 1
    const last = Math.min(KILLS, (b + 1) * BATCH)
    test.serial(`${c.name}: SIGKILL the writers at random moments: kills ${first}..${last} of ${KILLS}`, async (t) => {
      if (h.failures.length > 0) {
        t.fail(`an earlier batch failed; not continuing on that state`)
        return
      }
      if (c.wal && b === 0) {
        // Switched to its log before any writer starts; nobody passes `wal` after this.
        k.close(k.connectFsStore(h.dir, { ...sync, native: c.writers[0]!.impl === 'native', wal: true }), sync)
      }
      const started = Date.now()
      const before = { ...h.stats }
      for (let n = first; n <= last; n++) {
        const seed = (Date.now() ^ (n * 2654435761)) >>> 0
        let runs: RunResult[] = []
        let errors: string[]
        try {
          let shared = new Map(c.writers.map((w) => [w.prefix, h.newShared(w)] as const))
          runs = await Promise.all(c.writers.map((w, j) => runAndKill(h, w, seed + j, shared.get(w.prefix)!, n + 3 * j)))
          for (let retry = 0; runs.some((r) => r.notLoaded) && retry < 5; retry++) {
            // Only a run that wrote nothing can be retried; a partner that ran has to be verified first.
            if (runs.some((r) => !r.notLoaded && r.opened)) break
            h.stats.notLoaded++
            await new Promise((r) => setTimeout(r, 5000))
            shared = new Map(c.writers.map((w) => [w.prefix, h.newShared(w)] as const))
            runs = await Promise.all(c.writers.map((w, j) => runAndKill(h, w, seed + j, shared.get(w.prefix)!, n + 3 * j)))
          }
          for (const r of runs) if (r.notLoaded) r.errors.push('the writer could not load konserve (is dist/ built?)')
          h.stats.kills++
          const verifier: Impl = n % 2 === 0 ? 'native' : 'pure'
          errors = [
            ...runs.flatMap((r) => r.errors),
            ...h.verify(
              verifier,
              runs.flatMap((r) => r.inFlight),
              shared,
            ),
          ]
        } catch (err) {
          errors = [`the harness threw: ${(err as Error).stack}`]
        }
        if (errors.length > 0) {
          const where =
            `kill ${n} (${runs.map((r) => r.how).join('+')}, writer seed ${seed}, in flight: ` +
            `${runs.flatMap((r) => r.inFlight.map((x) => `${x.op} #${x.i}`)).join(', ') || 'none'}), store ${h.dir}`
          h.failures.push(where)
          t.fail(`${c.name}: ${where}:\n  ${errors.join('\n  ')}`)
          return
        }
      }
      t.log(
        `${last - first + 1} kills survived, ${h.stats.acked - before.acked} acknowledged writes verified, ` +
          `${h.stats.inFlightAtKill - before.inFlightAtKill} kills with a write in flight, ` +
          `${h.stats.asyncBatchAtKill - before.asyncBatchAtKill} with several async calls in flight, in ${((Date.now() - started) / 1000).toFixed(1)} s`,
      )
      t.is(h.stats.kills - before.kills, last - first + 1)
    })
  }

  test.serial(`${c.name}: crash harness summary: the kills landed where they were meant to`, (t) => {
    const s = h.stats
    t.log(`kills survived: ${s.kills}; acknowledged writes verified: ${s.acked} (of ${s.begun} begun)`)
    t.log(
      `kills with a write in flight: ${s.inFlightAtKill} (it landed on a key ${s.inFlightLanded} times); ` +
        `with several async calls in flight: ${s.asyncBatchAtKill}; with a blob of 2 or 3 chunks in flight: ${s.multiChunkBlobAtKill}; most calls in flight at once: ${s.maxInFlight}; ` +
        `kills before the store was open: ${s.killedBeforeOpen}; ` +
        `kills that left a staging file to sweep: ${s.stagingLeftByKill}; sync/async calls: ${s.syncOps}/${s.asyncOps}`,
    )
    t.log(`shared counter increments acknowledged: ${s.sharedIncsAcked}; shared log appends acknowledged: ${s.sharedAppendsAcked}`)
    t.log(`calls begun by op: ${JSON.stringify(s.ops)}; writers by implementation: ${JSON.stringify(s.impls)}; verified with: ${JSON.stringify(s.verifiedWith)}`)
    t.log(`empty lock files left by a kill (each taken over once 5 s old): ${s.emptyLockLeft}`)
    if (s.notLoaded > 0) t.log(`writers rerun because dist/ was being rebuilt: ${s.notLoaded}`)
    t.is(h.failures.length, 0)
    t.is(s.kills, KILLS)
    // Not vacuous: each implementation ran, most kills interrupt a write,
    // several calls were in flight together, every kind of call ran in both
    // forms, and the store was reopened by both implementations.
    for (const w of c.writers) t.true((s.impls[w.impl] ?? 0) > 0, `a ${w.impl} writer opened the store`)
    t.deepEqual(Object.keys(s.impls).sort(), [...new Set(c.writers.map((w) => w.impl))].sort(), 'only the implementations of this case wrote')
    t.true(s.acked >= KILLS * 3, 'the writers acknowledged writes')
    t.true(s.inFlightAtKill >= KILLS * 0.4, 'most kills landed with a write in flight')
    if (KILLS >= 30) {
      t.true(s.asyncBatchAtKill > 0, 'some kills landed with several async calls in flight')
      t.true(s.multiChunkBlobAtKill > 0, 'some kills landed with a blob of several chunks in flight')
      t.true(s.maxInFlight >= 3, 'calls ran concurrently')
      t.true(s.sharedIncsAcked > 0 && s.sharedAppendsAcked > 0, 'lanes updated the shared counter and log')
      t.true(s.killedBeforeOpen > 0, 'some kills landed before the store was open')
      t.true(s.stagingLeftByKill > 0, 'some kills landed between creating a staging file and its rename')
      t.true((s.verifiedWith.native ?? 0) > 0 && (s.verifiedWith.pure ?? 0) > 0, 'both implementations reopened the store')
      for (const op of ['assoc', 'inc', 'incIn', 'incShared', 'multiAssoc', 'dissoc', 'bassoc', 'append', 'appendShared']) {
        t.true((s.ops[op] ?? 0) > 0, `${op} ran`)
      }
    }
    t.true(s.syncOps > 0 && s.asyncOps > 0, 'both sync and async forms ran')
    if (c.wal) {
      // Not vacuous: the store stayed on its log, and the checks read values from it.
      t.true(existsSync(join(h.dir, '.konserve.wal')), 'the log is there')
      t.is(readFileSync(join(h.dir, '.konserve.keycheck'))[8], 3, 'the marker is there (version 3, docs/WAL.md §4.1)')
      t.log(`keys found in the log, not in a key file, by the checks: ${s.walReads}`)
      t.true(s.walReads > 0, 'the checker read values from the log')
    }
  })
}
