#!/usr/bin/env node
// The async API of the native file store against its sync API and against the
// floor of any async call, one operation at a time (each call awaited before
// the next): how far the async form is from the sync one, and how much of that
// is the thread hop alone.
//
//   node bench/async-floor.mjs [--rounds=9] [--n=400] [--only=floor,put,get]
//                              [--dist=DIR] [--compare=DIR]
//
// Cases (each round runs every case, in an order reversed every other round;
// a figure is the median over the rounds of the round's mean µs per op):
//   floor   a no-op napi task (the binding's noopAsync: queue, wake a pool
//           thread, wake the JavaScript thread, settle a Promise), Node's own
//           threadpool round trip (fs.fstat with a callback), and a
//           setImmediate turn, against fs.fstatSync; and tasks that spin 100
//           and 400 µs on the pool thread against the same spin on the
//           JavaScript thread (the hop around a task as long as a put, while
//           the JavaScript thread sleeps).
//   put     assoc of new keys on a non-durable store (syncBlob: false), sync
//           and async, a fresh store per round. The async put is broken down
//           by wrapping the binding object's replaceAsync: JS before the task
//           (assoc called → task queued), task (queued → its Promise settled in
//           JavaScript: the hop, the core's work, the hop back), after (settled
//           → assoc's Promise resolved to the caller). The sync put's core call
//           (replaceSync) is timed alike; "task − sync core call" is what the
//           hop costs a put, to compare with the floor measured beside it.
//   get     cold: a fresh instance (opened in the timed run, as in
//           bench/peers.mjs) then each key once (not in the value cache; the
//           OS page cache is warm); warm: the same keys again. The count of
//           threadpool reads (getValueAsync calls) is printed: a cold async get
//           of a cached file takes none.
// Ratios are sync µs ÷ async µs (throughput async ÷ sync, as bench/peers.mjs
// reports them; 1 = as fast as sync).
//
// --dist=DIR: measure the build in DIR (a directory holding dist/ and the
// binding's index.js, as the repository does; default: this repository).
// --compare=DIR: also measure a second build, interleaved with the first in
// every round (e.g. a copy of the repository's dist/, index.js and .node made
// before a change): before/after in one run, on one machine load.
// The load average is printed at the start and the end: the machine is shared.
import fs from 'node:fs'
import os from 'node:os'
import { join, dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createRequire } from 'node:module'

const here = dirname(fileURLToPath(import.meta.url))
const arg = (name, dflt) => (process.argv.find((a) => a.startsWith(`--${name}=`)) ?? `=${dflt}`).split('=').slice(1).join('=')
const ROUNDS = Number(arg('rounds', 9))
const N = Number(arg('n', 400))
const BLOCK = 20
const only = arg('only', 'floor,put,get').split(',')
const builds = [resolve(arg('dist', join(here, '..'))), ...(arg('compare', '') ? [resolve(arg('compare', ''))] : [])]
const label = (i) => (builds.length > 1 ? (i === 0 ? ' [A]' : ' [B]') : '')

const load = () =>
  os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(' ')
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}
const VALUE = { name: 'a document', n: 42, tags: ['x', 'y'], nested: { ok: true } }
const root = fs.mkdtempSync(join(os.tmpdir(), 'konserve-async-floor-'))
let dirs = 0
const freshDir = () => join(root, `s${dirs++}`)

const results = new Map()
const record = (name, us) => {
  if (!results.has(name)) results.set(name, [])
  results.get(name).push(us)
}
const perOp = (t0, n) => ((performance.now() - t0) * 1000) / n

/** The cases of one build: [name, run()] pairs; run records its figures. */
function casesOf(b, i) {
  const k = createRequire(join(b, 'package.json'))(join(b, 'dist', 'index.js'))
  const nb = createRequire(join(b, 'package.json'))(join(b, 'index.js'))
  const L = label(i)
  const cases = []
  if (only.includes('floor') && i === 0) {
    const fd = fs.openSync(root, 'r')
    const hop = async (name, f) => {
      const t0 = performance.now()
      for (let j = 0; j < N; j++) await f()
      record(name, perOp(t0, N))
    }
    if (nb.noopAsync) cases.push(['noop', () => hop('floor: napi no-op task (noopAsync)', () => nb.noopAsync())])
    // The hop around a task as long as a put: the pool thread spins, the JavaScript thread sleeps.
    for (const us of [100, 400]) {
      if (nb.noopAsync) cases.push([`busy-${us}`, () => hop(`floor: napi task spinning ${us} µs`, () => nb.noopAsync(us))])
      cases.push([
        `spin-${us}`,
        () => {
          const t0 = performance.now()
          for (let j = 0; j < N; j++) {
            const end = performance.now() + us / 1000
            while (performance.now() < end);
          }
          record(`floor: ${us} µs spun on the JavaScript thread`, perOp(t0, N))
        },
      ])
    }
    cases.push(['fstat-cb', () => hop('floor: libuv fs.fstat (callback)', () => new Promise((r) => fs.fstat(fd, r)))])
    cases.push(['immediate', () => hop('floor: setImmediate turn', () => new Promise((r) => setImmediate(r)))])
    cases.push([
      'fstat-sync',
      () => {
        const t0 = performance.now()
        for (let j = 0; j < N; j++) fs.fstatSync(fd)
        record('floor: fs.fstatSync', perOp(t0, N))
      },
    ])
  }
  if (only.includes('put')) {
    // Sync and async puts (and no-op tasks) in alternating blocks of BLOCK ops,
    // so that both forms meet the same disk and the same load.
    cases.push([
      'put',
      async () => {
        const ss = k.connectFsStore(freshDir(), { native: true, durable: false, sync: true })
        const sa = await k.connectFsStore(freshDir(), { native: true, durable: false })
        const t = { sync: 0, async: 0, noop: 0 }
        const m = { syncBefore: [], syncCore: [], syncAfter: [], before: [], task: [], after: [] }
        let entered = 0
        let left = 0
        const ns = ss.backing.native
        const replaceSync = ns.replaceSync
        ns.replaceSync = function (w) {
          entered = performance.now()
          const r = replaceSync.call(this, w)
          left = performance.now()
          return r
        }
        const na = sa.backing.native
        let tasks = 0
        const replaceAsync = na.replaceAsync
        na.replaceAsync = function (w) {
          entered = performance.now()
          tasks++
          return replaceAsync.call(this, w).then((r) => {
            left = performance.now()
            return r
          })
        }
        const forms = {
          sync: (j) => {
            const a = performance.now()
            k.assoc(ss, `key-${j}`, VALUE, { sync: true })
            const d = performance.now()
            m.syncBefore.push(entered - a)
            m.syncCore.push(left - entered)
            m.syncAfter.push(d - left)
            return d - a
          },
          async: async (j) => {
            const a = performance.now()
            await k.assoc(sa, `key-${j}`, VALUE)
            const d = performance.now()
            m.before.push(entered - a)
            m.task.push(left - entered)
            m.after.push(d - left)
            return d - a
          },
          noop: async () => {
            const a = performance.now()
            await nb.noopAsync()
            return performance.now() - a
          },
        }
        const names = nb.noopAsync && i === 0 ? ['sync', 'async', 'noop'] : ['sync', 'async']
        for (let j0 = 0, b = 0; j0 < N; j0 += BLOCK, b++) {
          for (const f of b % 2 ? [...names].reverse() : names) {
            for (let j = j0; j < Math.min(N, j0 + BLOCK); j++) t[f] += await forms[f](j)
          }
        }
        if (tasks !== N) throw new Error(`expected ${N} replaceAsync tasks, saw ${tasks}`)
        const us = (xs) => median(xs) * 1000
        record(`put sync${L}`, (t.sync * 1000) / N)
        record(`put async${L}`, (t.async * 1000) / N)
        if (names.includes('noop')) record('floor: napi no-op task, interleaved with put', (t.noop * 1000) / N)
        record(`put sync${L}: JS before the core call`, us(m.syncBefore))
        record(`put sync${L}: core call (replaceSync)`, us(m.syncCore))
        record(`put sync${L}: JS after the core call`, us(m.syncAfter))
        record(`put async${L}: JS before the task`, us(m.before))
        record(`put async${L}: task (queued → settled)`, us(m.task))
        record(`put async${L}: JS after (settled → resolved)`, us(m.after))
        // What the thread hop costs a put: the task less the same core call made on the JavaScript thread.
        record(`put async${L}: task − sync core call`, us(m.task) - us(m.syncCore))
        await k.close(sa)
      },
    ])
  }
  if (only.includes('get')) {
    const dir = freshDir()
    const w = k.connectFsStore(dir, { native: true, durable: false, sync: true })
    for (let j = 0; j < N; j++) k.assoc(w, `key-${j}`, VALUE, { sync: true })
    const keys = Array.from({ length: N }, (_, j) => `key-${(j * 7919) % N}`)
    const check = (v) => {
      if (v?.n !== 42) throw new Error('a written key reads back wrong')
    }
    cases.push([
      'get-sync',
      () => {
        const t0 = performance.now()
        const s = k.connectFsStore(dir, { native: true, durable: false, sync: true })
        const opened = performance.now()
        for (const key of keys) check(k.get(s, key, { sync: true }))
        record(`get cold sync${L} (open included)`, perOp(t0, N))
        record(`get cold sync${L}: open (ms)`, (opened - t0) * 1000)
        const t1 = performance.now()
        for (const key of keys) check(k.get(s, key, { sync: true }))
        record(`get warm sync${L}`, perOp(t1, N))
      },
    ])
    cases.push([
      'get-async',
      async () => {
        const t0 = performance.now()
        const s = await k.connectFsStore(dir, { native: true, durable: false })
        const opened = performance.now()
        const n = s.backing.native
        let hops = 0
        const getValueAsync = n.getValueAsync
        n.getValueAsync = function (key) {
          hops++
          return getValueAsync.call(this, key)
        }
        for (const key of keys) check(await k.get(s, key))
        record(`get cold async${L} (open included)`, perOp(t0, N))
        record(`get cold async${L}: open (ms)`, (opened - t0) * 1000)
        record(`get cold async${L}: threadpool reads`, hops)
        const t1 = performance.now()
        for (const key of keys) check(await k.get(s, key))
        record(`get warm async${L}`, perOp(t1, N))
      },
    ])
  }
  return cases
}

const all = builds.flatMap((b, i) => casesOf(b, i))
console.log(`load average at start: ${load()}; ${ROUNDS} rounds of ${N} ops; builds: ${builds.map((b, i) => `${b}${label(i)}`).join(', ')}`)
for (let r = 0; r < ROUNDS; r++) {
  for (const [, run] of r % 2 ? [...all].reverse() : all) await run()
}
console.log(`load average at end: ${load()}\n`)
const fmt = (x) => (x >= 100 ? x.toFixed(0) : x.toFixed(1))
for (const [name, xs] of results) {
  const unit = name.endsWith('(ms)') ? 'ms' : name.endsWith('reads') ? '' : 'µs/op'
  const m = name.endsWith('(ms)') ? median(xs) / 1000 : median(xs)
  console.log(
    `${name.padEnd(48)} ${fmt(m).padStart(7)} ${unit.padEnd(5)}  rounds: ${xs.map((x) => fmt(name.endsWith('(ms)') ? x / 1000 : x)).join(' ')}`,
  )
}
console.log('\nratios (throughput async ÷ sync; per round, then the median):')
for (let i = 0; i < builds.length; i++) {
  const L = label(i)
  for (const [what, s, a] of [
    ['put', `put sync${L}`, `put async${L}`],
    ['get cold', `get cold sync${L} (open included)`, `get cold async${L} (open included)`],
    ['get warm', `get warm sync${L}`, `get warm async${L}`],
  ]) {
    const ss = results.get(s)
    const as = results.get(a)
    if (!ss || !as) continue
    const per = ss.map((x, r) => x / as[r])
    console.log(`${`${what}${L}`.padEnd(16)} ${median(per).toFixed(2)}×   rounds: ${per.map((x) => x.toFixed(2)).join(' ')}`)
  }
}
fs.rmSync(root, { recursive: true, force: true })
