/**
 * The page side of __test__/browser-compliance.spec.ts: the compliance
 * suite's checks (../helpers/compliance-checks.ts, the same list the Node
 * stores run under ava) on connectIdbStore stores inside Chromium, async
 * form, each on a database of its own. `run(title)` runs one check and
 * returns every failed assertion, as ava would report them.
 */
import * as k from '../../ts/browser.js'
import { type Api, type Env, Point, type T, checks, registerFixtures } from '../helpers/compliance-checks.js'

registerFixtures(k)

/** Deep equality as the checks need it (ava's deepEqual): same prototypes, Object.is on leaves, Map/Set/Date/typed arrays, cycles. */
function equal(a: unknown, b: unknown, seen = new Map<object, object>()): boolean {
  if (Object.is(a, b)) return true
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false
  if (seen.get(a) === b) return true
  seen.set(a, b)
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return false
  if (a instanceof Date) return Object.is(a.getTime(), (b as Date).getTime())
  if (ArrayBuffer.isView(a)) {
    const x = a as unknown as ArrayLike<unknown>
    const y = b as unknown as ArrayLike<unknown>
    return x.length === y.length && Array.from(x).every((v, i) => Object.is(v, y[i]))
  }
  if (a instanceof Map) {
    const m = b as Map<unknown, unknown>
    if (a.size !== m.size) return false
    const xs = [...a]
    const ys = [...m]
    return xs.every(([key, v], i) => equal(key, ys[i]![0], seen) && equal(v, ys[i]![1], seen))
  }
  if (a instanceof Set) {
    const ys = [...(b as Set<unknown>)]
    return a.size === ys.length && [...a].every((v, i) => equal(v, ys[i], seen))
  }
  if (a instanceof Error) return a.message === (b as Error).message && a.name === (b as Error).name
  const ka = Object.keys(a)
  const kb = Object.keys(b)
  if (ka.length !== kb.length) return false
  return ka.every((key) => Object.hasOwn(b, key) && equal((a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key], seen))
}

function show(v: unknown): string {
  try {
    const s = JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? `${x}n` : x instanceof Map ? { Map: [...x] } : x instanceof Set ? { Set: [...x] } : x))
    return s === undefined ? String(v) : s.length > 300 ? `${s.slice(0, 300)}…` : s
  } catch {
    return String(v)
  }
}

/** A `T` that records every failed assertion (and goes on, as ava does). */
function recorder(): { t: T; failures: string[]; count(): number } {
  const failures: string[] = []
  let n = 0
  const check = (ok: boolean, what: string, message?: string) => {
    n++
    if (!ok) failures.push(message ? `${message}: ${what}` : what)
  }
  const t: T = {
    is: (a, b, m) => check(Object.is(a, b), `is: ${show(a)} is not ${show(b)}`, m),
    true: (a, m) => check(a === true, `true: got ${show(a)}`, m),
    false: (a, m) => check(a === false, `false: got ${show(a)}`, m),
    deepEqual: (a, b, m) => check(equal(a, b), `deepEqual: ${show(a)} differs from ${show(b)}`, m),
    regex: (s, re, m) => check(typeof s === 'string' && re.test(s), `regex: ${show(s)} does not match ${re}`, m),
    async throwsAsync(p, expected, m) {
      try {
        await p
      } catch (err) {
        const e = err as { code?: string; message?: string }
        const bad =
          (expected?.code !== undefined && e?.code !== expected.code && `code ${e?.code}, expected ${expected.code}`) ||
          (expected?.message && !expected.message.test(String(e?.message)) && `message ${show(e?.message)} does not match ${expected.message}`) ||
          (expected?.instanceOf && !(err instanceof expected.instanceOf) && `not an instance of ${expected.instanceOf.name}`)
        check(!bad, `throwsAsync: ${bad}`, m)
        return bad ? undefined : err
      }
      check(false, 'throwsAsync: the promise resolved', m)
      return undefined
    },
  }
  return { t, failures, count: () => n }
}

/** The browser entry's calls, each asserted to return a Promise (as ./helpers/api.ts does for the async form). */
const calls = {
  get: k.get,
  getIn: k.getIn,
  getMeta: k.getMeta,
  exists: k.exists,
  assoc: k.assoc,
  assocIn: k.assocIn,
  update: k.update,
  updateIn: k.updateIn,
  dissoc: k.dissoc,
  keys: k.keys,
  bassoc: k.bassoc,
  bget: k.bget,
  readBlob: k.readBlob,
  trimLog: k.trimLog,
  append: k.append,
  log: k.log,
  reduceLog: k.reduceLog,
  multiGet: k.multiGet,
  multiAssoc: k.multiAssoc,
  multiDissoc: k.multiDissoc,
} as unknown as Record<string, (...a: unknown[]) => unknown>
const api = Object.fromEntries(
  Object.entries(calls).map(([name, f]) => [
    name,
    (...args: unknown[]) => {
      const r = f(...args)
      return r instanceof Promise ? r : Promise.reject(new Error(`${name} did not return a Promise`))
    },
  ]),
) as unknown as Api
;(api as { mode: string }).mode = 'async'

async function readWeb(rs: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = []
  const r = rs.getReader()
  for (;;) {
    const { done, value } = await r.read()
    if (done) break
    parts.push(value)
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

let dbs = 0
const opened: k.Store[] = []
const env: Env = {
  mode: 'async',
  modes: ['async'],
  async setup(options = {}) {
    const s = await k.connectIdbStore(`compliance-${Date.now()}-${++dbs}`, options as k.IdbStoreOptions)
    opened.push(s)
    return [s, api]
  },
  api: () => api,
  KonserveError: k.KonserveError,
  // A web ReadableStream (the browser's bget has no Node stream).
  body(t, b) {
    t.true(b.web instanceof ReadableStream)
    return readWeb(b.web!)
  },
  bytes: (values) => Uint8Array.from(values),
}

const testApi = {
  /** The recorder against known answers: which of these assertions it failed (each named by its index). */
  async selfCheck() {
    const r = recorder()
    const cyclic: Record<string, unknown> = {}
    cyclic.self = cyclic
    const cyclic2: Record<string, unknown> = {}
    cyclic2.self = cyclic2
    const asserts: Array<() => unknown> = [
      () => r.t.deepEqual({ a: 1 }, { a: 2 }),
      () => r.t.deepEqual(new Map([[1, 2]]), new Map([[1, 3]])),
      () => r.t.deepEqual(new Set([1]), new Set([2])),
      () => r.t.deepEqual(new Date(1), new Date(2)),
      () => r.t.deepEqual(new Uint8Array([1]), new Int8Array([1])),
      () => r.t.deepEqual(new Point(1, 2), { x: 1, y: 2 }),
      () => r.t.deepEqual([1, 2], [1, 2, 3]),
      () => r.t.is(0, -0),
      () => r.t.true(1),
      () => r.t.regex('abc', /x/),
      () => r.t.throwsAsync(Promise.resolve(1)),
      () => r.t.throwsAsync(Promise.reject(new k.KonserveError('ERR_IO', 'x')), { code: 'ERR_CORRUPT' }),
      // These hold.
      () => r.t.deepEqual(cyclic, cyclic2),
      () => r.t.deepEqual(new Map<unknown, unknown>([['a', { b: [1n] }]]), new Map<unknown, unknown>([['a', { b: [1n] }]])),
      () => r.t.deepEqual({ a: 1, b: 2 }, { b: 2, a: 1 }),
      () => r.t.throwsAsync(Promise.reject(new k.KonserveError('ERR_IO', 'x')), { code: 'ERR_IO', instanceOf: k.KonserveError }),
    ]
    const failed: number[] = []
    for (const [i, a] of asserts.entries()) {
      const before = r.failures.length
      await a()
      if (r.failures.length > before) failed.push(i)
    }
    return failed
  },
  /** The titles of the checks that apply to the idb store (async only). */
  titles: async () => checks.filter((c) => !c.when || c.when(env)).map((c) => c.title),
  /** Runs one check: its failed assertions (an error thrown counts as one), and how many assertions ran. */
  async run(title: string) {
    const c = checks.find((x) => x.title === title)
    if (!c) return { failures: [`no check titled ${title}`], assertions: 0 }
    const r = recorder()
    try {
      await c.fn(r.t, env)
    } catch (err) {
      r.failures.push(`threw: ${(err as Error)?.stack ?? String(err)}`)
    }
    await Promise.allSettled(opened.splice(0).map((s) => k.close(s)))
    return { failures: r.failures, assertions: r.count() }
  },
}

;(globalThis as { konserveTest?: unknown }).konserveTest = testApi
