#!/usr/bin/env node
// The pure-TypeScript file store beside the native one, case by case (issue 17:
// "pure TypeScript vs native ≥ 0.5× on every case without compression or
// encryption"). Each case runs native then pure (pure then native every other
// round) on fresh directories; a figure is the median over the rounds of the
// wall time per op and of the process's CPU time (user + system, all threads:
// the threadpool's work counts) per op. The ratio is native's time / pure's
// (throughput pure / native: above 0.5 meets the issue's goal).
//
//   node bench/pure-native.mjs [--rounds=N] [--only=blob,get,...] [--mb=10] [--before=DIR]
//   --before=DIR: also run the pure store of another build (DIR/index.mjs, a
//     copy of an earlier dist/ whose ../index.js is the binding), interleaved.
//
// Cases: blob writes (a 10 MB Buffer, durable and not, sync and async, and a
// stream of 64 KiB pieces), puts (durable and not, sync and async, 64 in
// flight), gets (sync, async, and cold: a fresh instance reading each key once),
// keys (one call on a fresh instance), updateIn. Nothing is written to bench/results.
import fs from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { randomFillSync } from 'node:crypto'
import { pathToFileURL } from 'node:url'
import * as current from '../dist/index.mjs'

const arg = (name, dflt) => (process.argv.find((a) => a.startsWith(`--${name}=`)) ?? `=${dflt}`).split('=')[1]
const ROUNDS = Number(arg('rounds', 5))
const only = arg('only', '').split(',').filter(Boolean)
const MB = 1 << 20
const BLOB = Number(arg('mb', 10)) * MB
const SYNC = { sync: true }
const VALUE = { id: 12345, name: 'Ada Lovelace', tags: ['math', 'engines', 'notes'], born: 1815, active: true, score: 0.75 }

const root = fs.mkdtempSync(join(os.tmpdir(), 'konserve-pure-native-'))
let seq = 0
const fresh = () => {
  const d = join(root, `s${++seq}`)
  fs.mkdirSync(d)
  return d
}
const beforeDir = arg('before', '')
const kb = beforeDir ? await import(pathToFileURL(join(beforeDir, 'index.mjs')).href) : undefined
// `native`: true (native), false (pure), 'before' (the pure store of --before).
const lib = (native) => (native === 'before' ? kb : current)
const open = (dir, native, sync, durable) => lib(native).connectFsStore(dir, { native: native === true, sync, syncBlob: durable })
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

const blob = (() => {
  const block = randomFillSync(Buffer.alloc(MB))
  const b = Buffer.allocUnsafe(BLOB)
  for (let off = 0; off < BLOB; off += MB) block.copy(b, off)
  return b
})()
const pieces = (buf, size) => Readable.from((function* () {
  for (let off = 0; off < buf.length; off += size) yield buf.subarray(off, off + size)
})(), { objectMode: true })

/** Times `n` calls of `op(i)` (awaited when async): wall ms and CPU ms per op. */
async function time(n, async, op) {
  const c0 = process.cpuUsage()
  const t0 = performance.now()
  if (async) for (let i = 0; i < n; i++) await op(i)
  else for (let i = 0; i < n; i++) op(i)
  const wall = performance.now() - t0
  const c = process.cpuUsage(c0)
  return { wall: wall / n, cpu: (c.user + c.system) / 1000 / n }
}

/** `conc` at a time. */
async function timeInflight(n, conc, op) {
  const c0 = process.cpuUsage()
  const t0 = performance.now()
  let next = 0
  await Promise.all(Array.from({ length: conc }, async () => {
    while (next < n) await op(next++)
  }))
  const wall = performance.now() - t0
  const c = process.cpuUsage(c0)
  return { wall: wall / n, cpu: (c.user + c.system) / 1000 / n }
}

const keys = Array.from({ length: 2000 }, (_, i) => `key-${i}`)

// Each case: (native) => Promise<{ wall, cpu }> on a fresh store.
const cases = {
  'blob-buf-durable-sync': async (native) => {
    const k = lib(native)
    const s = open(fresh(), native, true, true)
    return time(4, false, (i) => k.bassoc(s, `b${i}`, blob, SYNC))
  },
  'blob-buf-durable-async': async (native) => {
    const k = lib(native)
    const s = await open(fresh(), native, false, true)
    return time(4, true, (i) => k.bassoc(s, `b${i}`, blob))
  },
  'blob-buf-nd-sync': async (native) => {
    const k = lib(native)
    const s = open(fresh(), native, true, false)
    return time(4, false, (i) => k.bassoc(s, `b${i}`, blob, SYNC))
  },
  'blob-buf-nd-async': async (native) => {
    const k = lib(native)
    const s = await open(fresh(), native, false, false)
    return time(4, true, (i) => k.bassoc(s, `b${i}`, blob))
  },
  'blob-stream-durable-async': async (native) => {
    const k = lib(native)
    const s = await open(fresh(), native, false, true)
    return time(4, true, (i) => k.bassoc(s, `b${i}`, pieces(blob, 64 * 1024)))
  },
  'blob-stream-nd-async': async (native) => {
    const k = lib(native)
    const s = await open(fresh(), native, false, false)
    return time(4, true, (i) => k.bassoc(s, `b${i}`, pieces(blob, 64 * 1024)))
  },
  'put-durable-sync': async (native) => {
    const k = lib(native)
    const s = open(fresh(), native, true, true)
    return time(150, false, (i) => k.assoc(s, keys[i], VALUE, SYNC))
  },
  'put-durable-async': async (native) => {
    const k = lib(native)
    const s = await open(fresh(), native, false, true)
    return time(150, true, (i) => k.assoc(s, keys[i], VALUE))
  },
  'put-durable-c64': async (native) => {
    const k = lib(native)
    const s = await open(fresh(), native, false, true)
    return timeInflight(1000, 64, (i) => k.assoc(s, keys[i], VALUE))
  },
  'put-nd-sync': async (native) => {
    const k = lib(native)
    const s = open(fresh(), native, true, false)
    return time(1000, false, (i) => k.assoc(s, keys[i], VALUE, SYNC))
  },
  'put-nd-async': async (native) => {
    const k = lib(native)
    const s = await open(fresh(), native, false, false)
    return time(1000, true, (i) => k.assoc(s, keys[i], VALUE))
  },
  'get-sync': async (native) => {
    const k = lib(native)
    const dir = fresh()
    await current.multiAssoc(await open(dir, true, false, false), new Map(keys.map((key) => [key, VALUE])))
    const s = open(dir, native, true, false)
    return time(6000, false, (i) => k.get(s, keys[i % 2000], SYNC))
  },
  'get-async': async (native) => {
    const k = lib(native)
    const dir = fresh()
    await current.multiAssoc(await open(dir, true, false, false), new Map(keys.map((key) => [key, VALUE])))
    const s = await open(dir, native, false, false)
    return time(6000, true, (i) => k.get(s, keys[i % 2000]))
  },
  'get-cold-sync': async (native) => {
    // A fresh instance reads each key once (its open counted): the OS page cache is warm.
    const k = lib(native)
    const dir = fresh()
    await current.multiAssoc(await open(dir, true, false, false), new Map(keys.map((key) => [key, VALUE])))
    let s
    const r = await time(1, false, () => {
      s = open(dir, native, true, false)
      for (const key of keys) k.get(s, key, SYNC)
    })
    return { wall: r.wall / keys.length, cpu: r.cpu / keys.length }
  },
  'keys-sync': async (native) => {
    // One keys call on a fresh instance of a 2000-key store (its open counted), per key.
    const k = lib(native)
    const dir = fresh()
    await current.multiAssoc(await open(dir, true, false, false), new Map(keys.map((key) => [key, VALUE])))
    const r = await time(1, false, () => k.keys(open(dir, native, true, false), SYNC))
    return { wall: r.wall / keys.length, cpu: r.cpu / keys.length }
  },
  'update-durable-sync': async (native) => {
    const k = lib(native)
    const s = open(fresh(), native, true, true)
    k.assoc(s, 'n', 0, SYNC)
    return time(100, false, () => k.updateIn(s, ['n'], (x) => x + 1, SYNC))
  },
  'update-nd-sync': async (native) => {
    const k = lib(native)
    const s = open(fresh(), native, true, false)
    k.assoc(s, 'n', 0, SYNC)
    return time(1000, false, () => k.updateIn(s, ['n'], (x) => x + 1, SYNC))
  },
  'update-nd-async': async (native) => {
    const k = lib(native)
    const s = await open(fresh(), native, false, false)
    await k.assoc(s, 'n', 0)
    return time(1000, true, () => k.updateIn(s, ['n'], (x) => x + 1))
  },
}

const chosen = Object.keys(cases).filter((c) => !only.length || only.some((o) => c.startsWith(o)))
const impls = beforeDir ? [true, false, 'before'] : [true, false]
const name = (native) => (native === 'before' ? 'before' : native ? 'native' : 'pure')
const results = Object.fromEntries(chosen.map((c) => [c, { native: [], pure: [], before: [] }]))
const load0 = os.loadavg().map((x) => x.toFixed(2)).join(' ')
for (let r = 0; r < ROUNDS; r++) {
  for (const c of chosen) {
    for (const native of r % 2 ? [...impls].reverse() : impls) {
      results[c][name(native)].push(await cases[c](native))
    }
  }
  fs.rmSync(root, { recursive: true, force: true })
  fs.mkdirSync(root)
  process.stderr.write(`round ${r + 1}/${ROUNDS}\n`)
}
fs.rmSync(root, { recursive: true, force: true })
const f = (x) => (x >= 100 ? x.toFixed(0) : x >= 1 ? x.toFixed(2) : x.toFixed(4))
console.log(`load ${load0} → ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}; ${ROUNDS} rounds; medians per op (ms); ratio = native / pure (≥ 0.5 is the goal)`)
const b = beforeDir ? ' before wall | before wall ratio | before CPU | before CPU ratio |' : ''
console.log(`| case | native wall | pure wall | wall ratio | native CPU | pure CPU | CPU ratio |${b}`)
console.log(`|---|---|---|---|---|---|---|${beforeDir ? '---|---|---|---|' : ''}`)
for (const c of chosen) {
  const m = (impl, what) => median(results[c][impl].map((x) => x[what]))
  const nw = m('native', 'wall')
  const nc = m('native', 'cpu')
  const cols = (impl) => `${f(m(impl, 'wall'))} | ${(nw / m(impl, 'wall')).toFixed(2)} | ${f(m(impl, 'cpu'))} | ${(nc / m(impl, 'cpu')).toFixed(2)} |`
  const pw = m('pure', 'wall')
  const pc = m('pure', 'cpu')
  console.log(`| ${c} | ${f(nw)} | ${f(pw)} | ${(nw / pw).toFixed(2)} | ${f(nc)} | ${f(pc)} | ${(nc / pc).toFixed(2)} |${beforeDir ? ` ${cols('before')}` : ''}`)
}
