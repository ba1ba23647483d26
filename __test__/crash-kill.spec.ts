/**
 * Real-process crash harness: a child (fixtures/crash-writer.mjs) runs a random
 * mixed workload on a file store and is killed with SIGKILL at random moments:
 * during start-up and open, in the middle of a write, between writes. After
 * each kill this process reopens the store and checks that
 *
 * - every acknowledged write is there: each key holds its last acknowledged
 *   value, or the value of the one write that was in flight at the kill (begun,
 *   not acknowledged; a multiAssoc in flight may have landed on some keys only);
 * - every key reads back without error, its metadata type is right, and
 *   `exists` agrees with `get`;
 * - `keys()` lists exactly the keys that exist and reports nothing corrupt;
 * - no staging file (`.*.stage`) is left once the store is reopened;
 * - counters and logs are consistent: an acknowledged increment returned the
 *   acknowledged count + 1, an append the log's length + 1, and `log` and
 *   `reduceLog` agree.
 *
 * One store directory is used for every kill, so state accumulates. Quick mode
 * (the default, CI) does 200 kills; `KONSERVE_KILLS=5000` runs the long mode.
 *
 * A SIGKILL does not lose the page cache, so this cannot catch a missing fsync;
 * the Rust core's simulated file system tests cover that.
 */
import test from 'ava'
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { isDeepStrictEqual } from 'node:util'
import * as k from 'konserve'
import { tempDir } from './helpers/api.js'

const here = import.meta.dirname ?? new URL('.', import.meta.url).pathname
const WRITER = join(here, 'fixtures', 'crash-writer.mjs')
const TOTAL_KILLS = Math.max(1, Number(process.env.KONSERVE_KILLS ?? 200) | 0)
const BATCH = 50
const sync = { sync: true } as const

// ---- the model: what each key may hold ---------------------------------------

type Kind = 'value' | 'counter' | 'ctr' | 'blob' | 'log'
const KEYS: Record<string, Kind> = {
  v0: 'value',
  v1: 'value',
  v2: 'value',
  v3: 'value',
  n0: 'counter',
  n1: 'counter',
  ctr: 'ctr',
  b0: 'blob',
  b1: 'blob',
  l0: 'log',
}
const META_TYPE: Record<Kind, string> = { value: 'value', counter: 'value', ctr: 'value', blob: 'binary', log: 'append-log' }

/** What a key holds, as this harness observes it (`undefined`: absent). Blobs as {size, sha}. */
type Obs = unknown
const model = new Map<string, Obs>(Object.keys(KEYS).map((key) => [key, undefined]))

interface Line {
  t: 'open' | 'B' | 'A' | 'timeout'
  i?: number
  s?: boolean
  op?: string
  key?: string
  value?: unknown
  field?: 'a' | 'b'
  entries?: Array<[string, unknown]>
  size?: number
  sha?: string
  elem?: unknown
  r?: unknown
}

/** The new state of each key the begun write touches, if it lands. */
function candidates(b: Line): Map<string, Obs> {
  const key = b.key!
  switch (b.op) {
    case 'assoc':
      return new Map([[key, b.value]])
    case 'inc':
      return new Map([[key, ((model.get(key) as number | undefined) ?? 0) + 1]])
    case 'incIn': {
      const old = (model.get(key) as Record<string, number> | undefined) ?? {}
      return new Map([[key, { ...old, [b.field!]: (old[b.field!] ?? 0) + 1 }]])
    }
    case 'multiAssoc':
      return new Map(b.entries!)
    case 'dissoc':
      return new Map([[key, undefined]])
    case 'bassoc':
      return new Map([[key, { size: b.size, sha: b.sha }]])
    case 'append':
      return new Map([[key, [...((model.get(key) as unknown[] | undefined) ?? []), b.elem]]])
    default:
      throw new Error(`unknown op in ${JSON.stringify(b)}`)
  }
}

const show = (v: unknown) => {
  const s = JSON.stringify(v)
  return s === undefined ? 'undefined' : s.length > 300 ? `${s.slice(0, 300)}...` : s
}

/** Checks an acknowledgment against the model and applies it. Returns an error message or undefined. */
function acknowledge(b: Line, a: Line): string | undefined {
  const cands = candidates(b)
  const key = b.key!
  if (b.op === 'inc' || b.op === 'incIn') {
    if (!isDeepStrictEqual(a.r, cands.get(key))) {
      return `${b.op} ${key} returned ${show(a.r)}, but the acknowledged state was ${show(model.get(key))}: an update was lost`
    }
  } else if (b.op === 'append') {
    const want = (cands.get(key) as unknown[]).length
    if (a.r !== want) return `append to ${key} returned length ${show(a.r)}, expected ${want}`
  } else if (b.op === 'dissoc') {
    const existed = model.get(key) !== undefined
    if (a.r !== existed) return `dissoc ${key} returned ${show(a.r)}, but the key ${existed ? 'existed' : 'did not exist'}`
  }
  for (const [key2, v] of cands) model.set(key2, v)
  return undefined
}

// ---- observing the store after a kill ------------------------------------------

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')

function observe(store: k.Store, key: string): Obs {
  const kind = KEYS[key]!
  let obs: Obs
  if (kind === 'blob') {
    obs = k.bget(store, key, ({ size, blob }) => ({ size, sha: sha256(blob!) }), sync)
    if (obs !== undefined && (obs as { size: number }).size === 0) throw new Error(`blob ${key} read back empty`)
  } else if (kind === 'log') {
    obs = k.log(store, key, sync)
    const elems = (obs as Array<{ v: number }> | undefined) ?? []
    const viaReduce = k.reduceLog(store, key, (acc: { n: number; sum: number }, e: { v: number }) => ({ n: acc.n + 1, sum: acc.sum + e.v }), { n: 0, sum: 0 }, sync)
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

// ---- one kill ---------------------------------------------------------------------

interface Stats {
  kills: number
  acked: number
  begun: number
  inFlightAtKill: number
  inFlightLanded: number
  killedBeforeOpen: number
  stagingLeftByKill: number
  notLoaded: number
  syncOps: number
  asyncOps: number
  ops: Record<string, number>
}
const stats: Stats = { kills: 0, acked: 0, begun: 0, inFlightAtKill: 0, inFlightLanded: 0, killedBeforeOpen: 0, stagingLeftByKill: 0, notLoaded: 0, syncOps: 0, asyncOps: 0, ops: {} }
const failures: string[] = []

const rand = (n: number) => Math.floor(Math.random() * n)

/** Runs the writer until it is killed; returns the protocol errors and the write in flight at the kill. */
async function runAndKill(dir: string, seed: number): Promise<{ errors: string[]; inFlight?: Line; opened: boolean; how: string; notLoaded?: boolean }> {
  const child = spawn(process.execPath, [WRITER, dir, String(seed)], { stdio: ['ignore', 'pipe', 'pipe'] })
  const errors: string[] = []
  let stderr = ''
  let buffered = ''
  let inFlight: Line | undefined
  let opened = false
  let killed = false
  const kill = () => {
    if (!killed) {
      killed = true
      child.kill('SIGKILL')
    }
  }

  // Where the kill lands: during start-up and open, right at the start of a
  // write (synchronously, on the next turn, or a few ms in), or at a random time.
  const strategy = rand(100)
  let killAtBegin = -1
  let how: string
  if (strategy < 15) {
    how = 'startup'
    setTimeout(kill, rand(150))
  } else if (strategy < 85) {
    killAtBegin = 1 + rand(40)
    how = 'at-begin'
  } else {
    how = 'after-open'
  }
  const beginDelay = rand(4) // 0: at once; 1: setImmediate; 2, 3: a few ms
  // The writer should be dead long before this; if not, say so.
  const watchdog = setTimeout(() => {
    errors.push('the writer never reached the moment chosen for the kill')
    kill()
  }, 10_000)

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
      if (how === 'after-open') setTimeout(kill, rand(300))
    } else if (line.t === 'B') {
      if (inFlight) errors.push(`write ${line.i} began while write ${inFlight.i} was in flight`)
      inFlight = line
      stats.begun++
      stats.ops[line.op!] = (stats.ops[line.op!] ?? 0) + 1
      if (line.s) stats.syncOps++
      else stats.asyncOps++
      if (line.i === killAtBegin) {
        if (beginDelay === 0) kill()
        else if (beginDelay === 1) setImmediate(kill)
        else setTimeout(kill, Math.random() * 3 * beginDelay)
      }
    } else if (line.t === 'A') {
      if (!inFlight || inFlight.i !== line.i) {
        errors.push(`acknowledgment of write ${line.i} that was not in flight`)
        return
      }
      const err = acknowledge(inFlight, line)
      if (err) errors.push(err)
      stats.acked++
      inFlight = undefined
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
  if (signal !== 'SIGKILL') {
    // On a developer's machine `npm run build` may be replacing dist/ right
    // now (tsup cleans it first): a writer that could not even load konserve
    // wrote nothing, and the caller retries it after a pause.
    if (!opened && /ERR_MODULE_NOT_FOUND|does not provide an export named/.test(stderr)) {
      return { errors, inFlight, opened, how, notLoaded: true }
    }
    errors.push(`the writer exited by itself (code ${code}, signal ${signal}): ${stderr.slice(0, 2000)}`)
  }
  return { errors, inFlight, opened, how }
}

function verify(dir: string, inFlight: Line | undefined): string[] {
  const errors: string[] = []
  // Staging files the killed writer left (it died between creating one and
  // renaming it): the reopen below must sweep them.
  // (The first writer may die before it has created the directory.)
  if (existsSync(dir) && readdirSync(dir).some((n) => n.endsWith('.stage'))) stats.stagingLeftByKill++
  let store: k.Store
  try {
    store = k.connectFsStore(dir, sync)
  } catch (err) {
    return [`reopening the store failed: ${(err as Error).message}`]
  }
  const staging = readdirSync(dir).filter((n) => n.endsWith('.stage'))
  if (staging.length > 0) errors.push(`staging files left after reopening: ${staging.join(', ')}`)

  const pending = inFlight ? candidates(inFlight) : new Map<string, Obs>()
  const observed = new Map<string, Obs>()
  for (const key of Object.keys(KEYS)) {
    let obs: Obs
    try {
      obs = observe(store, key)
    } catch (err) {
      errors.push(`reading ${key} failed: ${(err as Error & { code?: string }).code ?? ''} ${(err as Error).message}`)
      continue
    }
    observed.set(key, obs)
    const acked = model.get(key)
    if (isDeepStrictEqual(obs, acked)) continue
    if (pending.has(key) && isDeepStrictEqual(obs, pending.get(key))) {
      stats.inFlightLanded++
      continue
    }
    errors.push(
      `${key} holds ${show(obs)}; expected the acknowledged ${show(acked)}` +
        (pending.has(key) ? ` or the in-flight ${show(pending.get(key))} (${inFlight!.op} #${inFlight!.i})` : ' (no write to it was in flight)'),
    )
  }

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

  // The observed state is the acknowledged state of the next run.
  for (const [key, v] of observed) model.set(key, v)
  return errors
}

// ---- the tests --------------------------------------------------------------------

const dir = join(tempDir('konserve-crash-'), 'store')

const batches = Math.ceil(TOTAL_KILLS / BATCH)
for (let b = 0; b < batches; b++) {
  const first = b * BATCH + 1
  const last = Math.min(TOTAL_KILLS, (b + 1) * BATCH)
  test.serial(`SIGKILL the writer at random moments: kills ${first}..${last} of ${TOTAL_KILLS}`, async (t) => {
    if (failures.length > 0) {
      t.fail(`an earlier batch failed; not continuing on that state`)
      return
    }
    const started = Date.now()
    const before = { ...stats }
    for (let n = first; n <= last; n++) {
      const seed = (Date.now() ^ (n * 2654435761)) >>> 0
      let run: Awaited<ReturnType<typeof runAndKill>> | undefined
      let errors: string[]
      try {
        run = await runAndKill(dir, seed)
        for (let retry = 0; run.notLoaded && retry < 5; retry++) {
          stats.notLoaded++
          await new Promise((r) => setTimeout(r, 5000))
          run = await runAndKill(dir, seed)
        }
        if (run.notLoaded) run.errors.push('the writer could not load konserve (is dist/ built?)')
        stats.kills++
        if (run.inFlight) stats.inFlightAtKill++
        if (!run.opened) stats.killedBeforeOpen++
        errors = [...run.errors, ...verify(dir, run.inFlight)]
      } catch (err) {
        errors = [`the harness threw: ${(err as Error).stack}`]
      }
      if (errors.length > 0) {
        const where = `kill ${n} (${run?.how}, writer seed ${seed}, in flight: ${run?.inFlight ? `${run.inFlight.op} #${run.inFlight.i}` : 'none'}), store ${dir}`
        failures.push(where)
        t.fail(`${where}:\n  ${errors.join('\n  ')}`)
        return
      }
    }
    t.log(
      `${last - first + 1} kills survived, ${stats.acked - before.acked} acknowledged writes verified, ` +
        `${stats.inFlightAtKill - before.inFlightAtKill} kills with a write in flight, in ${((Date.now() - started) / 1000).toFixed(1)} s`,
    )
    t.pass()
  })
}

test.serial('crash harness summary: the kills landed where they were meant to', (t) => {
  t.log(`kills survived: ${stats.kills}; acknowledged writes verified: ${stats.acked} (of ${stats.begun} begun)`)
  t.log(
    `kills with a write in flight: ${stats.inFlightAtKill} (it landed on a key ${stats.inFlightLanded} times); ` +
      `kills before the store was open: ${stats.killedBeforeOpen}; ` +
      `kills that left a staging file to sweep: ${stats.stagingLeftByKill}; sync/async calls: ${stats.syncOps}/${stats.asyncOps}`,
  )
  t.log(`calls begun by op: ${JSON.stringify(stats.ops)}`)
  if (stats.notLoaded > 0) t.log(`writers rerun because dist/ was being rebuilt: ${stats.notLoaded}`)
  t.is(failures.length, 0)
  t.is(stats.kills, TOTAL_KILLS)
  // Not vacuous: most kills interrupt a write, some interrupt start-up, and
  // every kind of call ran in both forms.
  t.true(stats.acked >= TOTAL_KILLS * 3, 'the writer acknowledged writes')
  t.true(stats.inFlightAtKill >= TOTAL_KILLS * 0.4, 'most kills landed with a write in flight')
  if (TOTAL_KILLS >= 100) {
    t.true(stats.killedBeforeOpen > 0, 'some kills landed before the store was open')
    t.true(stats.stagingLeftByKill > 0, 'some kills landed between creating a staging file and its rename')
  }
  for (const op of ['assoc', 'inc', 'incIn', 'multiAssoc', 'dissoc', 'bassoc', 'append']) {
    t.true((stats.ops[op] ?? 0) > 0, `${op} ran`)
  }
  t.true(stats.syncOps > 0 && stats.asyncOps > 0, 'both sync and async forms ran')
})
