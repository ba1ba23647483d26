// The go/no-go measurement of the write-ahead log protocol (issue 18,
// docs/WAL.md §1 and §9 item 2): builds and runs the core's example
// crates/core/examples/wal_bench.rs (the raw file-per-key loop, today's core
// FileStore::put, and the core's Wal: timed, a burst of distinct keys, the
// burst with its checkpoint, puts while a checkpoint thread runs, and a
// sustained stream of distinct keys with back-pressure checkpoints), one
// round per run, and lmdb-js (durable: overlappingSync false) in the same
// rounds, the order of the two reversed every other round; prints medians
// with the ratios to the raw loop and to lmdb.
//
//   node bench/wal-protocol.mjs [--rounds 5] [--ms 800] [--burst 2000] [--stream 20000] [--stream1 4000] [--cap-kib 256]
import fs from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import { execFileSync } from 'node:child_process'
import { randomFillSync } from 'node:crypto'
import { open as lmdbOpen } from 'lmdb'
import { serial, inflight, gc, median } from './lib/harness.mjs'

const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`)
  return i < 0 ? def : Number(process.argv[i + 1])
}
const ROUNDS = arg('rounds', 5)
const MS = arg('ms', 800)
const pass = ['ms', 'burst', 'stream', 'stream1', 'cap-kib'].flatMap((n) => (process.argv.includes(`--${n}`) ? [`--${n}`, String(arg(n))] : []))
const root = new URL('..', import.meta.url).pathname
const load = () =>
  os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')

execFileSync('cargo', ['build', '--release', '-q', '-p', 'konserve-core', '--example', 'wal_bench'], { cwd: root, stdio: 'inherit' })
const exe = join(root, 'target/release/examples/wal_bench')

const tmp = fs.mkdtempSync(join(os.tmpdir(), 'ks-walproto-lmdb-'))
let seq = 0
const keyOf = (i) => `k${i.toString(36).padStart(8, '0')}`
async function lmdb(conc, size) {
  const dir = join(tmp, String(seq++))
  const db = lmdbOpen({ path: dir, overlappingSync: false, encoding: 'binary' })
  const value = randomFillSync(Buffer.alloc(size))
  gc()
  const m =
    conc === 1
      ? await serial({ api: 'async', n: 1e6, maxMs: MS, op: (i) => db.put(keyOf(i), value) })
      : await inflight({ n: 1e7, conc, maxMs: MS, op: (i) => db.put(keyOf(i), value) })
  await db.close()
  fs.rmSync(dir, { recursive: true, force: true })
  return m.ops / m.secs
}

const results = new Map() // `${size}/${conc}/${case}` -> [ops/s]
const add = (size, conc, c, ops) => {
  const k = `${size}/${conc}/${c}`
  results.set(k, [...(results.get(k) ?? []), ops])
}
const loadBefore = load()
for (let round = 0; round < ROUNDS; round++) {
  const core = () => {
    const out = execFileSync(exe, ['--rounds', '1', '--json', ...(round % 2 ? ['--reverse'] : []), ...pass], { encoding: 'utf8' })
    for (const line of out.trim().split('\n')) {
      const r = JSON.parse(line)
      add(r.size, r.conc, r.case, r.ops)
    }
  }
  const peer = async () => {
    for (const size of [100, 1024]) for (const conc of [1, 64]) add(size, conc, 'lmdb', await lmdb(conc, size))
  }
  if (round % 2) {
    await peer()
    core()
  } else {
    core()
    await peer()
  }
  process.stderr.write(`round ${round + 1}/${ROUNDS} done (load ${load()})\n`)
}
fs.rmSync(tmp, { recursive: true, force: true })

const fmt = (x) => (x >= 100 ? Math.round(x).toLocaleString('en') : x.toFixed(2))
console.log(`wal-protocol: ${ROUNDS} rounds, ${MS} ms per timed case; load average ${loadBefore} before, ${load()} after`)
console.log('| value | in flight | case | ops/s | × raw | × lmdb |\n|---|--:|---|--:|--:|--:|')
for (const size of [100, 1024])
  for (const conc of [1, 64]) {
    const med = (c) => median(results.get(`${size}/${conc}/${c}`) ?? [])
    const raw = med('raw')
    const lm = med('lmdb')
    for (const c of ['raw', 'store', 'lmdb', 'wal', 'wal/nohold', 'wal/queue', 'burst', 'burst/nohold', 'burst/queue', 'burst+ckpt', 'burst+ckpt/syncfs', 'bg', 'bg/syncfs', 'stream', 'stream/syncfs']) {
      const o = med(c)
      if (Number.isNaN(o)) continue
      console.log(`| ${size} B | ${conc} | ${c} | ${fmt(o)} | ${fmt(o / raw)} | ${fmt(o / lm)} |`)
    }
  }
