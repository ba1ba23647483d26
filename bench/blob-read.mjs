#!/usr/bin/env node
// Reading one blob back, again and again, beside the raw reads of the same
// bytes (issue 17: a blob read at the page cache's pace). One process, the
// cases interleaved per round; medians of the per-read times and their ratios.
//
//   node bench/blob-read.mjs [--mb=10] [--rounds=60] [--dist=DIR]
//
// Cases: bget sync (the whole blob as a Buffer) vs fs.readFileSync; bget async
// (consuming its Node stream) vs fs.createReadStream. The blob is written
// buffered (durable, directBlobs: false), so every case reads the page cache.
import fs from 'node:fs'
import os from 'node:os'
import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'

const arg = (name, dflt) => (process.argv.find((a) => a.startsWith(`--${name}=`)) ?? `=${dflt}`).split('=')[1]
const MB = Number(arg('mb', 10))
const ROUNDS = Number(arg('rounds', 60))
const dist = resolve(arg('dist', join(import.meta.dirname, '..', 'dist')))
const k = await import(pathToFileURL(join(dist, 'index.mjs')).href)

const dir = fs.mkdtempSync(join(os.tmpdir(), 'konserve-blob-read-'))
const store = await k.connectFsStore(join(dir, 'store'), { native: true, directBlobs: false })
const blob = Buffer.alloc(MB << 20)
for (let i = 0; i < blob.length; i += 4096) blob[i] = i & 255
await k.bassoc(store, 'b', blob)
const raw = join(dir, 'raw')
fs.writeFileSync(raw, blob)

const ms = (t0) => Number(process.hrtime.bigint() - t0) / 1e6
const median = (a) => [...a].sort((x, y) => x - y)[a.length >> 1]
const drain = async (stream) => {
  let n = 0
  for await (const c of stream) n += c.length
  return n
}
const cases = {
  'bget sync': () => k.bget(store, 'b', ({ blob }) => blob.length, { sync: true }),
  readFileSync: () => fs.readFileSync(raw).length,
  'bget stream': () => k.bget(store, 'b', ({ stream }) => drain(stream)),
  createReadStream: () => drain(fs.createReadStream(raw, { highWaterMark: 1 << 20 })),
}
const times = Object.fromEntries(Object.keys(cases).map((c) => [c, []]))
for (let r = 0; r < ROUNDS; r++) {
  const order = r % 2 ? Object.keys(cases).reverse() : Object.keys(cases)
  for (const c of order) {
    const t0 = process.hrtime.bigint()
    const n = await cases[c]()
    times[c].push(ms(t0))
    if (n !== blob.length) throw new Error(`${c} read ${n} bytes`)
  }
}
const med = Object.fromEntries(Object.entries(times).map(([c, t]) => [c, median(t)]))
console.log(`${MB} MB blob, ${ROUNDS} rounds, load ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`)
for (const [c, m] of Object.entries(med)) console.log(`  ${c.padEnd(17)} ${m.toFixed(2)} ms  ${((MB * 1.048576) / m * 1000).toFixed(0)} MB/s`)
console.log(`  bget sync ÷ readFileSync (time): ${(med['bget sync'] / med.readFileSync).toFixed(2)}×`)
console.log(`  bget stream ÷ createReadStream (time): ${(med['bget stream'] / med.createReadStream).toFixed(2)}×`)
await k.close(store)
fs.rmSync(dir, { recursive: true, force: true })
