// Feasibility of a write-ahead log in front of the file-per-key store (issue 18,
// docs/WAL.md): on this machine's disk, what do durable small writes cost
//   raw-each   the raw file-per-key loop of bench/peers.mjs: staging file, write,
//              fsync, close, rename, directory fsync, per put
//   raw-batch  the same with group commit: the puts in flight write and fsync
//              their staging files in parallel, rename, ONE directory fsync
//   log        one append-only file, group commit: every put in flight becomes
//              one record of one write() at the end, ONE fdatasync, then all resolve
//   log-pre    the same into a preallocated (zero-filled, fsynced) file, written in
//              place: fdatasync then has no file size to commit
//   lmdb       lmdb-js durable (overlappingSync: false: a put resolves once synced)
//   ks         konserve native, syncBlob: true (sync API one at a time, async 64 in flight)
// one at a time and with 64 in flight, values of 100 B, 1 KiB and 4 KiB, in
// interleaved rounds (the order reversed every other round), medians.
//
// Then the cost of a checkpoint (moving logged values into their key files),
// per key, for batches of 1000 distinct new keys:
//   ckpt-fsync   staging files written and fsynced in parallel, renamed, one directory fsync
//   ckpt-syncfs  staging files written and renamed without fsync, then ONE syncfs
//                (`sync -f dir`, coreutils; what the core could call, Node cannot)
//   ckpt-nosync  the same without any sync: the kernel's per-file work alone
//   raw-each     the reference, in the same rounds: 1000 puts of the raw loop, 64 in flight
// (--checkpoint-only skips the put cases.)
//
//   node bench/wal-feasibility.mjs [--rounds 5] [--ms 800] [--quick]
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { randomFillSync } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { open as lmdbOpen } from 'lmdb'
import * as k from '../dist/index.mjs'
import { serial, inflight, gc, median, percentile } from './lib/harness.mjs'
import { rawWriteSync, rawWriteAsync } from './lib/drivers.mjs'

const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`)
  return i < 0 ? def : Number(process.argv[i + 1])
}
const QUICK = process.argv.includes('--quick')
const ROUNDS = arg('rounds', QUICK ? 2 : 5)
const MS = arg('ms', QUICK ? 300 : 800)
const SIZES = [100, 1024, 4096]
const CONC = 64
const root = fs.mkdtempSync(join(os.tmpdir(), 'ks-walfeas-'))
let dirSeq = 0
const freshDir = () => {
  const d = join(root, String(dirSeq++))
  fs.mkdirSync(d)
  return d
}

const keyOf = (i) => `k${i.toString(36).padStart(8, '0')}`

// ------------------------------------------------------------ the log stand-in
// A record as docs/WAL.md lays it out (sizes only; the checksum is not computed:
// an xxh3 of 4 KiB is ~1 µs, far below an fsync).
const REC_HEAD = 32
class Log {
  constructor(dir, prealloc) {
    this.fd = fs.openSync(join(dir, 'wal'), 'w+')
    this.end = 0
    if (prealloc) {
      const z = Buffer.alloc(1 << 20)
      for (let i = 0; i < 64; i++) fs.writeSync(this.fd, z, 0, z.length, i << 20)
      fs.fsyncSync(this.fd)
    }
    this.queue = []
    this.running = false
  }
  record(key, value) {
    const kb = Buffer.from(key)
    const b = Buffer.allocUnsafe(REC_HEAD + kb.length + value.length)
    b.writeUInt32LE(b.length, 0)
    kb.copy(b, REC_HEAD)
    value.copy(b, REC_HEAD + kb.length)
    return b
  }
  putSync(key, value) {
    const r = this.record(key, value)
    fs.writeSync(this.fd, r, 0, r.length, this.end)
    this.end += r.length
    fs.fdatasyncSync(this.fd)
  }
  put(key, value) {
    return new Promise((resolve, reject) => {
      this.queue.push({ r: this.record(key, value), resolve, reject })
      if (!this.running) this.run()
    })
  }
  async run() {
    this.running = true
    while (this.queue.length) {
      const batch = this.queue.splice(0)
      const buf = Buffer.concat(batch.map((w) => w.r))
      try {
        await new Promise((res, rej) => fs.write(this.fd, buf, 0, buf.length, this.end, (e) => (e ? rej(e) : res())))
        this.end += buf.length
        await new Promise((res, rej) => fs.fdatasync(this.fd, (e) => (e ? rej(e) : res())))
        for (const w of batch) w.resolve()
      } catch (e) {
        for (const w of batch) w.reject(e)
      }
    }
    this.running = false
  }
  close() {
    fs.closeSync(this.fd)
  }
}

// ------------------------------------------------------------ file-per-key with group commit
class RawBatch {
  constructor(dir) {
    this.dir = dir
    this.queue = []
    this.running = false
    this.seq = 0
  }
  put(key, value) {
    return new Promise((resolve, reject) => {
      this.queue.push({ key, value, resolve, reject })
      if (!this.running) this.run()
    })
  }
  async stage(w) {
    const stage = join(this.dir, `.${w.key}.${process.pid}.${++this.seq}.stage`)
    const fh = await fsp.open(stage, 'wx')
    try {
      await fh.write(w.value, 0, w.value.length)
      await fh.sync()
    } finally {
      await fh.close()
    }
    return stage
  }
  async run() {
    this.running = true
    while (this.queue.length) {
      const batch = this.queue.splice(0)
      try {
        const stages = await Promise.all(batch.map((w) => this.stage(w)))
        await Promise.all(batch.map((w, i) => fsp.rename(stages[i], join(this.dir, w.key))))
        const d = await fsp.open(this.dir, 'r')
        await d.sync()
        await d.close()
        for (const w of batch) w.resolve()
      } catch (e) {
        for (const w of batch) w.reject(e)
      }
    }
    this.running = false
  }
}

// ------------------------------------------------------------ the contenders
const SYNC = { sync: true }
const STORES = [
  {
    id: 'raw-each',
    open: (dir) => dir,
    one: (dir, key, v) => rawWriteSync(dir, key, v, true),
    many: (dir, key, v) => rawWriteAsync(dir, key, v, true),
  },
  { id: 'raw-batch', open: (dir) => new RawBatch(dir), many: (s, key, v) => s.put(key, v) },
  {
    id: 'log',
    open: (dir) => new Log(dir, false),
    close: (s) => s.close(),
    one: (s, key, v) => s.putSync(key, v),
    many: (s, key, v) => s.put(key, v),
  },
  {
    id: 'log-pre',
    open: (dir) => new Log(dir, true),
    close: (s) => s.close(),
    one: (s, key, v) => s.putSync(key, v),
    many: (s, key, v) => s.put(key, v),
  },
  {
    id: 'lmdb',
    open: (dir) => lmdbOpen({ path: dir, overlappingSync: false, encoding: 'binary' }),
    close: (db) => db.close(),
    oneAsync: true,
    one: (db, key, v) => db.put(key, v),
    many: (db, key, v) => db.put(key, v),
  },
  {
    id: 'ks',
    open: (dir) => k.connectFsStore(dir, { sync: true, native: true, syncBlob: true }),
    close: (s) => k.close?.(s, SYNC),
    one: (s, key, v) => k.bassoc(s, key, v, SYNC),
    many: (s, key, v) => k.bassoc(s, key, v),
  },
]

async function runOne(store, mode, size) {
  const dir = freshDir()
  const s = await store.open(dir)
  const value = randomFillSync(Buffer.alloc(size))
  gc()
  let m
  if (mode === 'one') {
    const api = store.oneAsync ? 'async' : 'sync'
    m = await serial({ api, n: 1e6, maxMs: MS, op: (i) => store.one(s, keyOf(i), value) })
  } else {
    m = await inflight({ n: 1e7, conc: CONC, maxMs: MS, op: (i) => store.many(s, keyOf(i), value) })
  }
  await store.close?.(s)
  return { ops: m.ops / m.secs, lat: m.lat }
}

const CASES = []
if (!process.argv.includes('--checkpoint-only')) for (const mode of ['one', 'many'])
  for (const size of SIZES) CASES.push({ mode, size, stores: STORES.filter((s) => s[mode]) })

const results = new Map() // `${mode}/${size}/${id}` -> { ops: [], lat: [] }
for (let round = 0; round < ROUNDS; round++) {
  for (const c of CASES) {
    const order = round % 2 ? [...c.stores].reverse() : c.stores
    for (const st of order) {
      const r = await runOne(st, c.mode, c.size)
      const key = `${c.mode}/${c.size}/${st.id}`
      const acc = results.get(key) ?? { ops: [], lat: [] }
      acc.ops.push(r.ops)
      acc.lat.push(...r.lat)
      results.set(key, acc)
    }
  }
  process.stderr.write(`round ${round + 1}/${ROUNDS} done\n`)
}

// ------------------------------------------------------------ checkpoint cost
const CKPT = 1000
async function checkpoint(kind, size) {
  const dir = freshDir()
  const value = randomFillSync(Buffer.alloc(size))
  gc()
  const t0 = performance.now()
  const names = Array.from({ length: CKPT }, (_, i) => keyOf(i))
  const stage = async (name) => {
    const p = join(dir, `.${name}.stage`)
    const fh = await fsp.open(p, 'wx')
    await fh.write(value, 0, value.length)
    if (kind === 'ckpt-fsync') await fh.sync()
    await fh.close()
    await fsp.rename(p, join(dir, name))
  }
  if (kind === 'raw-each') {
    let next = 0
    const worker = async () => {
      while (next < CKPT) {
        const name = names[next++]
        await rawWriteAsync(dir, name, value, true)
      }
    }
    await Promise.all(Array.from({ length: CONC }, worker))
  } else for (let i = 0; i < CKPT; i += 64) await Promise.all(names.slice(i, i + 64).map(stage))
  if (kind === 'ckpt-fsync') {
    const d = await fsp.open(dir, 'r')
    await d.sync()
    await d.close()
  } else if (kind === 'ckpt-syncfs') execFileSync('sync', ['-f', dir])
  return CKPT / ((performance.now() - t0) / 1000)
}
const CKPT_KINDS = ['raw-each', 'ckpt-fsync', 'ckpt-syncfs', 'ckpt-nosync']
const ckpt = new Map()
for (let round = 0; round < ROUNDS; round++)
  for (const size of SIZES)
    for (const kind of round % 2 ? [...CKPT_KINDS].reverse() : CKPT_KINDS) {
      const acc = ckpt.get(`${size}/${kind}`) ?? []
      acc.push(await checkpoint(kind, size))
      ckpt.set(`${size}/${kind}`, acc)
    }
fs.rmSync(root, { recursive: true, force: true })

const fmt = (x) => (x >= 100 ? Math.round(x).toLocaleString('en') : x.toPrecision(3))
const ratio = (a, b) => (b ? `${(a / b).toFixed(2)}×` : '–')
console.log(`# WAL feasibility (${new Date().toISOString()}, ${ROUNDS} rounds of ${MS} ms, node ${process.version}, ${os.cpus().length} cpus, load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')})`)
console.log(`durable writes into ${os.tmpdir()}; ops/s = median of rounds; p50/p99 latency pooled (ms)\n`)
for (const c of CASES) {
  const med = (id) => median(results.get(`${c.mode}/${c.size}/${id}`)?.ops ?? [])
  const raw = med('raw-each')
  const lmdb = med('lmdb')
  console.log(`## ${c.mode === 'one' ? 'one at a time' : `${CONC} in flight`}, ${c.size} B values`)
  console.log('| store | ops/s | × raw-each | × lmdb | p50 | p99 |\n|---|--:|--:|--:|--:|--:|')
  for (const st of c.stores) {
    const r = results.get(`${c.mode}/${c.size}/${st.id}`)
    const o = median(r.ops)
    console.log(`| ${st.id} | ${fmt(o)} | ${ratio(o, raw)} | ${ratio(o, lmdb)} | ${fmt(percentile(r.lat, 50))} | ${fmt(percentile(r.lat, 99))} |`)
  }
  console.log()
}
console.log(`## checkpoint: ${CKPT} distinct new keys per batch, 64 file writes in flight (keys/s, median of rounds)`)
console.log(`| value | ${CKPT_KINDS.join(' | ')} |\n|---|${CKPT_KINDS.map(() => '--:').join('|')}|`)
for (const size of SIZES) console.log(`| ${size} B | ${CKPT_KINDS.map((k) => fmt(median(ckpt.get(`${size}/${k}`)))).join(' | ')} |`)
