// 64 durable assoc in flight, N new keys, native + WAL: throughput, per-write
// latency p50/p99/max, the longest gap between two resolutions (a stall), and
// how many key files exist at the end (keys a checkpoint moved out of the log).
// usage: node bench/wal-inflight.mjs BUILD_DIR [N] [CONC]   (BUILD_DIR: this checkout, or a copy of
// its dist/, index.js, .node file and package.json with a node_modules link, to set builds side by side)
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
const root = process.argv[2]
const N = Number(process.argv[3] ?? 40000)
const CONC = Number(process.argv[4] ?? 64)
const k = await import(pathToFileURL(path.join(root, 'dist/index.mjs')).href)
const VALUE = {
  id: 12345, name: 'konserve benchmark value', tags: ['alpha', 'beta', 'gamma'], createdAt: new Date(0),
  nested: { a: 1, b: 2.5, c: true, d: null, text: 'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor' },
  counts: [1, 2, 3, 4, 5, 6, 7, 8],
}
const dir = fs.mkdtempSync(path.join(process.env.BENCH_TMP ?? os.tmpdir(), 'ckpt-'))
const store = await k.connectFsStore(dir, { native: true, wal: true })
const lat = new Float64Array(N)
let next = 0, last = 0, maxGap = 0, gapAt = 0
const t0 = performance.now()
last = t0
await Promise.all(Array.from({ length: CONC }, async () => {
  while (next < N) {
    const i = next++
    const a = performance.now()
    await k.assoc(store, `key-${i}`, VALUE)
    const b = performance.now()
    lat[i] = b - a
    if (b - last > maxGap) { maxGap = b - last; gapAt = i }
    last = b
  }
}))
const secs = (performance.now() - t0) / 1000
const files = fs.readdirSync(dir).filter((f) => f.endsWith('.ksv') || /^[0-9a-f]{32}/.test(f)).length
const s = Array.from(lat).sort((x, y) => x - y)
const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))]
await k.close?.(store)
console.log(JSON.stringify({ build: root, n: N, opsPerSec: Math.round(N / secs), p50: +q(0.5).toFixed(2), p99: +q(0.99).toFixed(2), max: +s[s.length - 1].toFixed(1), maxGapMs: +maxGap.toFixed(1), gapAtWrite: gapAt, keyFilesAtEnd: files, load: os.loadavg()[0].toFixed(1) }))
fs.rmSync(dir, { recursive: true, force: true, maxRetries: 20, retryDelay: 100 })
