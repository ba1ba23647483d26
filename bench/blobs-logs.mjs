#!/usr/bin/env node
// Streamed blobs and append logs, measured against what a user would do
// instead, in one run:
//
//   blobs  - a large stream ingested by async bassoc (native core, durable),
//            against a plain fs.createWriteStream of the same bytes + fsync;
//            the process's memory growth and the event loop's worst lateness
//            (a 1 ms timer) while it runs; streaming the blob back out; 1 MiB
//            range reads at random offsets.
//   logs   - durable appends to a record log (one at a time, and 16 writers
//            at once, which group-commit) against the two ways to build a log
//            from whole-value writes: konserve's linked list of keys (each
//            append writes the new cell, the previous cell and the head: its
//            writers take turns on the head, so one at a time is its best) and
//            one value rewritten whole on every append; then reduceLog over a
//            long log with its memory growth.
//
// Each blob scenario runs in its own child process, so its memory figures are
// its own. Machines here are shared and noisy: figures are medians of rounds
// where there are rounds, and ratios are what to compare. The stream ingest
// runs in interleaved rounds whose order alternates (raw first, then bassoc
// first), each into a fresh file or store after a `sync`, so the disk's
// writeback of one side does not land on the other's clock.
//
//   node bench/blobs-logs.mjs [--quick] [--gb N] [--rounds N] [--rest SECONDS] [--records N]
//   --rest: seconds to wait after the sync before each timed stream (default 0):
//     lets a disk that slows down after gigabytes of writes recover.
import { execFileSync } from 'node:child_process'
import { closeSync, createWriteStream, fsyncSync, mkdtempSync, openSync, rmSync } from 'node:fs'
import { randomFillSync } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import * as k from '../dist/index.mjs'

const MiB = 1 << 20
const args = process.argv.slice(2)
const quick = args.includes('--quick')
const argOf = (name, dflt) => {
  const i = args.indexOf(name)
  return i >= 0 ? Number(args[i + 1]) : dflt
}
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}
const fmt = (x, d = 1) => (x >= 100 ? x.toFixed(0) : x.toFixed(d))

/** A stream of `total` bytes in 64 KiB pieces, all views of one random buffer (no memory of its own). */
function source(total) {
  const piece = randomFillSync(Buffer.alloc(64 * 1024))
  let sent = 0
  return new Readable({
    highWaterMark: 4,
    objectMode: false,
    read() {
      if (sent >= total) return this.push(null)
      const n = Math.min(piece.length, total - sent)
      sent += n
      this.push(piece.subarray(0, n))
    },
  })
}

/** Samples RSS and a 1 ms timer's lateness while `work` runs. */
async function watched(work) {
  global.gc?.()
  const base = process.memoryUsage.rss()
  let peak = base
  let worstLate = 0
  let expected = performance.now() + 1
  const timer = setInterval(() => {
    const now = performance.now()
    worstLate = Math.max(worstLate, now - expected)
    expected = now + 1
    peak = Math.max(peak, process.memoryUsage.rss())
  }, 1)
  const h = monitorEventLoopDelay({ resolution: 1 })
  h.enable()
  const t0 = performance.now()
  try {
    await work()
  } finally {
    clearInterval(timer)
    h.disable()
  }
  const seconds = (performance.now() - t0) / 1000
  peak = Math.max(peak, process.memoryUsage.rss())
  return { seconds, growthMB: (peak - base) / MiB, worstLateMs: worstLate, loopMaxMs: h.max / 1e6 }
}

// ---- child: one blob scenario ---------------------------------------------------

async function child(scenario, dir, bytes) {
  let r
  if (scenario === 'raw-write') {
    r = await watched(async () => {
      const file = join(dir, 'raw.bin')
      rmSync(file, { force: true })
      await new Promise((resolve, reject) => {
        const out = createWriteStream(file)
        source(bytes).pipe(out).on('finish', resolve).on('error', reject)
      })
      const fd = openSync(file, 'r+')
      fsyncSync(fd)
      closeSync(fd)
    })
  } else {
    const store = await k.connectFsStore(join(dir, 'store'), { native: true })
    if (scenario === 'bassoc') {
      r = await watched(() => k.bassoc(store, 'big', source(bytes)))
    } else if (scenario === 'stream-out') {
      r = await watched(async () => {
        let n = 0
        for await (const c of await k.readBlob(store, 'big', { as: 'stream' })) n += c.length
        if (n !== bytes) throw new Error(`read ${n} of ${bytes} bytes`)
      })
    } else if (scenario === 'ranges') {
      const n = quick ? 200 : 1000
      r = await watched(async () => {
        for (let i = 0; i < n; i++) {
          const offset = Math.floor(Math.random() * (bytes - MiB))
          const b = await k.readBlob(store, 'big', { offset, length: MiB })
          if (b.length !== MiB) throw new Error('short range read')
        }
      })
      r.opsPerSec = n / r.seconds
    }
  }
  process.stdout.write(JSON.stringify(r))
}

function runChild(scenario, dir, bytes) {
  const out = execFileSync(process.execPath, ['--expose-gc', fileURLToPath(import.meta.url), '--child', scenario, dir, String(bytes), ...(quick ? ['--quick'] : [])], {
    encoding: 'utf8',
    maxBuffer: 1 << 20,
  })
  return JSON.parse(out)
}

// ---- logs -------------------------------------------------------------------------

async function logs(dir) {
  const n = quick ? 300 : 1000
  const rounds = quick ? 3 : 5
  const elem = { event: 'click', at: 1700000000000, user: 'someone', payload: 'x'.repeat(60) }
  const rates = { records: [], grouped: [], linked: [], rewrite: [] }
  const sync = { sync: true }
  for (let round = 0; round < rounds; round++) {
    const s = await k.connectFsStore(join(dir, `logs-${round}`), { native: true })
    let t0 = performance.now()
    for (let i = 0; i < n; i++) k.append(s, 'log', elem, sync)
    rates.records.push(n / ((performance.now() - t0) / 1000))

    // 16 writers appending to one log at once: group commit (one write + one fsync per batch).
    t0 = performance.now()
    let next = 0
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < n) {
          next++
          await k.append(s, 'shared', elem)
        }
      }),
    )
    rates.grouped.push(n / ((performance.now() - t0) / 1000))

    // konserve's linked list: [cell id] -> { elem, next }, head -> { first, last }.
    t0 = performance.now()
    for (let i = 0; i < n; i++) {
      const id = `cell-${i}`
      k.assoc(s, id, { elem, next: null }, sync)
      if (i > 0) k.assocIn(s, [`cell-${i - 1}`, 'next'], id, sync)
      k.assoc(s, 'head', { first: 'cell-0', last: id }, sync)
    }
    rates.linked.push(n / ((performance.now() - t0) / 1000))

    t0 = performance.now()
    for (let i = 0; i < n; i++) k.update(s, 'whole', (xs) => [...(xs ?? []), elem], sync)
    rates.rewrite.push(n / ((performance.now() - t0) / 1000))
    if (round === 0 && (await k.reduceLog(s, 'log', (a) => a + 1, 0)) !== n) throw new Error('log length')
    if (round === 0 && (await k.reduceLog(s, 'shared', (a) => a + 1, 0)) !== n) throw new Error('shared log length')
  }

  // reduceLog over a long log, in bounded memory.
  const records = argOf('--records', quick ? 100_000 : 1_000_000)
  const s = await k.connectFsStore(join(dir, 'long-log'), { native: true, syncBlob: false })
  for (let i = 0; i < records; i++) k.append(s, 'long', i, { sync: true })
  const r = await watched(async () => {
    const sum = await k.reduceLog(s, 'long', (a, e) => a + e, 0)
    if (sum !== (records * (records - 1)) / 2) throw new Error('reduceLog sum')
  })
  return { n, rounds, rates: Object.fromEntries(Object.entries(rates).map(([k2, v]) => [k2, median(v)])), records, reduce: r }
}

// ---- main -------------------------------------------------------------------------

async function main() {
  if (args[0] === '--child') return child(args[1], args[2], Number(args[3]))
  const gb = argOf('--gb', quick ? 1 : 4)
  const bytes = Math.round(gb * 1024 * MiB)
  const dir = mkdtempSync(join(tmpdir(), 'konserve-bench-blobs-'))
  try {
    console.log(`# Blobs: ${gb} GiB stream, native file store, durable (node ${process.version})\n`)
    const rounds = argOf('--rounds', quick ? 2 : 4)
    const rest = argOf('--rest', 0)
    if (rest > 0) console.log(`each timed stream starts ${rest} s after a sync\n`)
    const raws = []
    const ings = []
    for (let round = 0; round < rounds; round++) {
      // A fresh store each round: replacing the last round's blob would add its unlink to the clock.
      rmSync(join(dir, 'store'), { recursive: true, force: true })
      rmSync(join(dir, 'raw.bin'), { force: true })
      const order = round % 2 === 0 ? ['raw-write', 'bassoc'] : ['bassoc', 'raw-write']
      for (const scenario of order) {
        execFileSync('sync')
        if (rest > 0) await new Promise((r) => setTimeout(r, rest * 1000))
        const r = runChild(scenario, dir, bytes)
        ;(scenario === 'raw-write' ? raws : ings).push(r)
      }
      const mb = (r) => bytes / MiB / r.seconds
      console.log(`round ${round + 1} (${order.join(' then ')}): raw ${fmt(mb(raws.at(-1)))} MB/s, bassoc ${fmt(mb(ings.at(-1)))} MB/s, ratio ${(mb(ings.at(-1)) / mb(raws.at(-1))).toFixed(2)}`)
    }
    console.log('')
    rmSync(join(dir, 'raw.bin'), { force: true })
    // The median round of each side (by time); the memory and loop figures are their worst over the rounds.
    const mid = (rs) => ({
      seconds: median(rs.map((r) => r.seconds)),
      growthMB: Math.max(...rs.map((r) => r.growthMB)),
      worstLateMs: Math.max(...rs.map((r) => r.worstLateMs)),
      loopMaxMs: Math.max(...rs.map((r) => r.loopMaxMs)),
    })
    const raw = mid(raws)
    const ing = mid(ings)
    const ratios = ings.map((r, i) => raws[i].seconds / r.seconds)
    // This disk writes the first 4 GiB after a rest much faster than the next
    // 4 GiB: each side's runs are also compared by their place in the round.
    const byPlace = (first) => {
      const pick = (rs, isRawFirst) => rs.filter((_, i) => (i % 2 === 0) === isRawFirst).map((r) => bytes / MiB / r.seconds)
      const raw = median(pick(raws, first))
      const ing = median(pick(ings, !first))
      return `${first ? 'run first' : 'run second'}: raw ${fmt(raw)}, bassoc ${fmt(ing)} MB/s, ratio ${(ing / raw).toFixed(2)}`
    }
    const out = runChild('stream-out', dir, bytes)
    const ranges = runChild('ranges', dir, bytes)
    const mbs = (r) => bytes / MiB / r.seconds
    console.log(`median of ${rounds} interleaved rounds; ratio of the medians ${(raw.seconds / ing.seconds).toFixed(2)}, median of the per-round ratios ${median(ratios).toFixed(2)} (memory and loop: the worst round)`)
    if (rounds >= 2) console.log(`by place in the round (medians): ${byPlace(true)}; ${byPlace(false)}`)
    console.log('')
    console.log('| case | MB/s | ratio | memory growth | worst 1 ms timer lateness | loop delay max |')
    console.log('|---|---|---|---|---|---|')
    console.log(`| fs.createWriteStream + fsync | ${fmt(mbs(raw))} | 1.00 | ${fmt(raw.growthMB)} MB | ${fmt(raw.worstLateMs)} ms | ${fmt(raw.loopMaxMs)} ms |`)
    console.log(`| bassoc(stream), async | ${fmt(mbs(ing))} | ${(mbs(ing) / mbs(raw)).toFixed(2)} | ${fmt(ing.growthMB)} MB | ${fmt(ing.worstLateMs)} ms | ${fmt(ing.loopMaxMs)} ms |`)
    console.log(`| readBlob(as: 'stream') | ${fmt(mbs(out))} | | ${fmt(out.growthMB)} MB | ${fmt(out.worstLateMs)} ms | ${fmt(out.loopMaxMs)} ms |`)
    console.log(`| readBlob 1 MiB at random offsets | ${fmt(ranges.opsPerSec)} reads/s | | ${fmt(ranges.growthMB)} MB | ${fmt(ranges.worstLateMs)} ms | ${fmt(ranges.loopMaxMs)} ms |`)

    const L = await logs(dir)
    console.log(`\n# Logs: ${L.n} durable appends of a ~100-byte element, median of ${L.rounds} rounds\n`)
    console.log('| way | appends/s | one at a time: append ÷ this | 16 writers: append ÷ this |')
    console.log('|---|---|---|---|')
    const r = L.rates
    console.log(`| append, one at a time (records in the log's file) | ${fmt(r.records)} | 1.0 | |`)
    console.log(`| append, 16 writers at once (group commit) | ${fmt(r.grouped)} | | 1.0 |`)
    console.log(`| linked list of keys (konserve's log), one at a time | ${fmt(r.linked)} | ${(r.records / r.linked).toFixed(1)}x | ${(r.grouped / r.linked).toFixed(1)}x |`)
    console.log(`| one value rewritten per append (update), one at a time | ${fmt(r.rewrite)} | ${(r.records / r.rewrite).toFixed(1)}x | ${(r.grouped / r.rewrite).toFixed(1)}x |`)
    console.log(`\nreduceLog over ${L.records.toLocaleString('en')} records: ${fmt(L.reduce.seconds)} s, memory growth ${fmt(L.reduce.growthMB)} MB`)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

await main()
