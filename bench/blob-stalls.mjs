#!/usr/bin/env node
// Where the event loop's stalls come from while many blobs are written at
// once (the "many blobs at once" case of bench/peers.mjs, one store, one run):
// a 1 ms timer records every gap over 5 ms with what the main thread did
// meanwhile, from /proc/self/task/<pid>/schedstat (Linux): on a core (JS,
// GC, system calls), runnable but waiting for a core (the run queue), or
// neither (blocked: a system call waiting for the disk, a lock, a GC helper).
// Garbage collections over 2 ms are listed from perf_hooks.
//
//   node bench/blob-stalls.mjs [--dist=DIR] [--impl=native|pure|raw] [--form=buffer|stream] [--direct=true|false|auto]
//                              [--count=N] [--conc=N]
//   --dist: the konserve build to load (DIR/dist/index.mjs; default this one)
//   --impl=raw: the raw per-file loop of bench/peers.mjs (fs.promises), for comparison
// Prints one JSON line: MB/s, loop max and p99 (monitorEventLoopDelay), the
// 5 longest stalls with their split, the split summed over all stalls, GCs.
import { monitorEventLoopDelay, PerformanceObserver, performance } from 'node:perf_hooks'
import { randomFillSync } from 'node:crypto'
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { Readable } from 'node:stream'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { manyBlobSizes } from './lib/harness.mjs'

const arg = (name, dflt) => (process.argv.find((a) => a.startsWith(`--${name}=`)) ?? `=${dflt}`).split('=').slice(1).join('=')
const dist = arg('dist', join(dirname(fileURLToPath(import.meta.url)), '..'))
const impl = arg('impl', 'native')
const form = arg('form', 'buffer')
const count = Number(arg('count', 2000))
const conc = Number(arg('conc', 16))
const k = await import(pathToFileURL(join(dist, 'dist', 'index.mjs')).href)

const MB = 1 << 20
const minSize = 64 * 1024
const maxSize = 4 * MB
// The sizes and pool of bench/peers.mjs's case.
const sizes = manyBlobSizes(count, minSize, maxSize)
const pool = randomFillSync(Buffer.allocUnsafe(2 * maxSize))
const offsets = sizes.map((_, i) => (i * 4099) % (pool.length - maxSize))
const dir = fs.mkdtempSync(join(os.tmpdir(), 'konserve-blob-stalls-'))
// --direct=true|false|auto: the native store's directBlobs (default: its default, 'auto').
const direct = arg('direct', '')
const directBlobs = direct === '' ? {} : { directBlobs: direct === 'auto' ? 'auto' : direct === 'true' }
const store = impl === 'raw' ? undefined : await k.connectFsStore(dir, { native: impl === 'native', syncBlob: true, ...directBlobs })

const gcs = []
new PerformanceObserver((l) => {
  for (const e of l.getEntries()) gcs.push({ at: e.startTime, ms: e.duration, kind: e.detail?.kind })
}).observe({ entryTypes: ['gc'] })
const schedFile = `/proc/self/task/${process.pid}/schedstat`
const sched = () => fs.readFileSync(schedFile, 'latin1').split(' ').map(Number)
const stalls = []
let last = performance.now()
let lastS = sched()
const timer = setInterval(() => {
  const now = performance.now()
  const sNow = sched()
  if (now - last > 5) stalls.push({ ms: now - last, cpu: (sNow[0] - lastS[0]) / 1e6, runq: (sNow[1] - lastS[1]) / 1e6 })
  last = now
  lastS = sNow
}, 1)
const h = monitorEventLoopDelay({ resolution: 1 })
h.enable()

const put = async (i) => {
  const b = pool.subarray(offsets[i], offsets[i] + sizes[i])
  if (impl === 'raw') {
    const f = join(dir, `b${i}`)
    const fh = await fsp.open(`${f}.tmp`, 'wx')
    await fh.write(b)
    await fh.sync()
    await fh.close()
    await fsp.rename(`${f}.tmp`, f)
    const d = await fsp.open(dir, 'r')
    await d.sync()
    await d.close()
    return
  }
  if (form === 'stream') {
    const pieces = function* () {
      for (let at = 0; at < b.length; at += 256 * 1024) yield b.subarray(at, at + 256 * 1024)
    }
    return k.bassoc(store, `blob-${i}`, Readable.from(pieces()))
  }
  return k.bassoc(store, `blob-${i}`, b)
}
let next = 0
const t0 = performance.now()
await Promise.all(Array.from({ length: conc }, async () => {
  while (next < count) await put(next++)
}))
const secs = (performance.now() - t0) / 1000
h.disable()
clearInterval(timer)
const total = sizes.reduce((a, b) => a + b, 0)
const sum = (f) => stalls.reduce((a, x) => a + f(x), 0)
const [gap, cpu, runq] = [sum((x) => x.ms), sum((x) => x.cpu), sum((x) => x.runq)]
const f1 = (x) => +x.toFixed(1)
console.log(JSON.stringify({
  impl, form, count, conc, load: os.loadavg()[0].toFixed(2),
  MBps: f1(total / MB / secs),
  loopMaxMs: f1(h.max / 1e6),
  loopP99Ms: f1(h.percentile(99) / 1e6),
  stallsOver10ms: stalls.filter((x) => x.ms > 10).length,
  longest: stalls.sort((a, b) => b.ms - a.ms).slice(0, 5).map((x) => `${f1(x.ms)} ms = cpu ${f1(x.cpu)} + runq ${f1(x.runq)} + blocked ${f1(x.ms - x.cpu - x.runq)}`),
  allStalls: `${gap.toFixed(0)} ms = cpu ${cpu.toFixed(0)} + runq ${runq.toFixed(0)} + blocked ${(gap - cpu - runq).toFixed(0)}`,
  gcOver2ms: gcs.filter((g) => g.ms > 2).sort((a, b) => b.ms - a.ms).slice(0, 5).map((g) => `${f1(g.ms)} ms (kind ${g.kind})`),
  gcTotalMs: f1(gcs.reduce((a, g) => a + g.ms, 0)),
}))
fs.rmSync(dir, { recursive: true, force: true })
