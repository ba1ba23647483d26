#!/usr/bin/env node
// konserve against its peers and against the disk, side by side in one run.
//
// Every case runs every store that can do it, in rounds whose order alternates
// (reversed every other round); each figure is the median of the rounds'
// throughputs, latencies are pooled over the rounds (p50/p99), peak memory is
// the largest growth of the process's RSS over its level at the start of a
// run, and the event loop's worst delay is measured (monitorEventLoopDelay)
// during every async run. Ratios are each store's median throughput divided by
// the reference's, which is konserve's native file store through the sync API
// (for "64 in flight": the native store through the async API, the only form of
// ours that can have 64 in flight). Above 1 the store is faster than ours.
//
// Durable and non-durable writes are separate tables: a store runs in the
// durable tables only if a write has reached the disk (fsync) when it returns.
//
//   node bench/peers.mjs [--quick]        (npm run bench [-- --quick])
//   --quick: fewer ops, 10 MB blobs only, keys at 10k only; < 2 minutes.
//   --many-blobs=COUNT[:MIN_KB-MAX_KB]: the "many blobs at once" case's size
//     (default 10,000 blobs of 64 KB–4 MB; --quick: 200).
//   --only=a,b: run only the cases (tables) whose id starts with one of these,
//     e.g. --only=put-inflight or --only=get (debugging, profiling).
//   --before=DIR: also run "konserve native (async) before", another build of
//     konserve in DIR (a copy of dist/, index.js, the .node file, package.json
//     and a node_modules link), in the many-blobs case: old and new in one run,
//     in alternating order, e.g. --only=many-blobs --before=/tmp/old.
//
// Writes bench/results/latest.md (all tables) and bench/results/latest.svg
// (quick.* for --quick, partial.* for --only: neither is committed).
import fs from 'node:fs'
import os from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { execFile, execFileSync } from 'node:child_process'
import { randomFillSync } from 'node:crypto'
import { pack } from 'msgpackr'
import * as D from './lib/drivers.mjs'
import { serial, inflight, once, gc, shuffled, median, manyBlobSizes } from './lib/harness.mjs'
import { markdown, svg } from './lib/report.mjs'

const here = dirname(fileURLToPath(import.meta.url))
// The build of konserve this run measures (dist/ is rebuilt by others; say which one ran).
const distStamp = (() => {
  try {
    const f = join(here, '..', 'dist', 'index.mjs')
    return `dist/index.mjs of ${fs.statSync(f).mtime.toISOString()}, git ${execFileSync('git', ['-C', join(here, '..'), 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim()}`
  } catch {
    return '?'
  }
})()
const quick = process.argv.includes('--quick')
const only = (process.argv.find((a) => a.startsWith('--only=')) ?? '').slice(7).split(',').filter(Boolean)
const wanted = (id) => !only.length || only.some((o) => id.startsWith(o))
// A group of cases runs if a wanted id names the group or one of its tables.
const wantedGroup = (g) => !only.length || only.some((o) => o.startsWith(g) || g.startsWith(o))

const MB = 1 << 20
/** `--many-blobs=COUNT[:MIN_KB-MAX_KB]`: the "many blobs at once" case's blob count and size range. */
const manyArg = (process.argv.find((a) => a.startsWith('--many-blobs=')) ?? '').slice(13)
/** `--before=DIR`: another build of konserve to set beside this one (see the header). */
const beforeDir = (process.argv.find((a) => a.startsWith('--before=')) ?? '').slice(9)
const C = quick
  ? {
      rounds: 3,
      durablePut: { n: 150, maxMs: 250 },
      inflight: { n: 400, maxMs: 250, conc: 64 },
      ndPut: { n: 500, maxMs: 150 },
      get: { keys: 600, warmPasses: 3 },
      updateDurable: { n: 100, maxMs: 200 },
      updateInflight: { n: 400, maxMs: 300, conc: 16, keys: 4 },
      updateNd: { n: 300, maxMs: 150 },
      blobs: [{ size: 10 * MB, label: '10 MB', count: 2, rounds: 3 }],
      manyBlobs: { count: 200, minSize: 64 * 1024, maxSize: 4 * MB, conc: 16, rounds: 3 },
      keys: [{ n: 10_000, label: '10k', rounds: 2 }],
    }
  : {
      rounds: 5,
      durablePut: { n: 1000, maxMs: 700 },
      inflight: { n: 4000, maxMs: 700, conc: 64 },
      ndPut: { n: 2000, maxMs: 400 },
      get: { keys: 2000, warmPasses: 3 },
      updateDurable: { n: 500, maxMs: 500 },
      updateInflight: { n: 4000, maxMs: 800, conc: 16, keys: 4 },
      updateNd: { n: 1000, maxMs: 300 },
      blobs: [
        { size: 10 * MB, label: '10 MB', count: 3, rounds: 5 },
        { size: 1024 * MB, label: '1 GB', count: 1, rounds: 2 },
      ],
      manyBlobs: { count: 10_000, minSize: 64 * 1024, maxSize: 4 * MB, conc: 16, rounds: 3 },
      keys: [
        { n: 10_000, label: '10k', rounds: 5 },
        { n: 100_000, label: '100k', rounds: 3, skip: ['cacache'] },
        { n: 1_000_000, label: '1M', rounds: 1, skip: ['cacache', 'node-persist', 'unstorage', 'keyv-file'] },
      ],
    }

if (manyArg) {
  const m = /^(\d+)(?::(\d+)-(\d+))?$/.exec(manyArg)
  if (!m) throw new Error(`--many-blobs=${manyArg}: expected COUNT or COUNT:MIN_KB-MAX_KB`)
  C.manyBlobs.count = Number(m[1])
  if (m[2]) Object.assign(C.manyBlobs, { minSize: Number(m[2]) * 1024, maxSize: Number(m[3]) * 1024 })
}

// The value: a small document whose msgpack encoding is about 200 bytes.
const VALUE = {
  id: 12345,
  name: 'konserve benchmark value',
  tags: ['alpha', 'beta', 'gamma'],
  createdAt: new Date(0),
  nested: { a: 1, b: 2.5, c: true, d: null, text: 'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor' },
  counts: [1, 2, 3, 4, 5, 6, 7, 8],
}
const VALUE_BYTES = pack(VALUE).length

// ---------------------------------------------------------------- bookkeeping

const t0 = performance.now()
const loadStart = os.loadavg().map((x) => x.toFixed(2)).join(' ')
const elapsed = () => `${((performance.now() - t0) / 1000).toFixed(0)}s`
const log = (...a) => console.error(`[${elapsed()}]`, ...a)

const root = fs.mkdtempSync(join(os.tmpdir(), 'konserve-peers-'))
let dirSeq = 0
const freshDir = (id) => {
  const d = join(root, `${id}-${++dirSeq}`)
  fs.mkdirSync(d)
  return d
}
const rmDir = (d) => fs.rmSync(d, { recursive: true, force: true })
// Directories of many small files are deleted only when the run ends: deleting
// thousands of files slows the file creations that follow on some file
// systems (an ext4 without a journal scans its recently deleted inodes on
// every create: bench/fs-costs.mjs shows the cost), which would tax whichever
// store runs next. The blob cases' few large files are deleted at once.
const retired = []
const retire = (d) => retired.push(d)
/** Deletes directories with one `rm -rf` each, all at once. */
const rmDirs = (dirs) =>
  Promise.all(dirs.map((d) => new Promise((resolve) => execFile('rm', ['-rf', d], () => resolve()))))
const cleanup = () => {
  try {
    execFileSync('rm', ['-rf', root])
  } catch {}
}
process.on('exit', cleanup)
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130))

/** tables: { id, title, unit, refId, notes, rows: Map(id -> row) } */
const tables = []
function table(id, title, unit, refId, notes = []) {
  const t = { id, title, unit, refId, notes, rows: new Map() }
  tables.push(t)
  return t
}
function row(t, d, op) {
  if (!t.rows.has(d.id)) t.rows.set(d.id, { d, op, tps: [], lat: [], rss: 0, loop: undefined, maxOp: 0, extra: {}, error: undefined })
  return t.rows.get(d.id)
}
/** Records one run's measurement (m from the harness) into table t. */
function record(t, d, op, m, extra = {}) {
  const r = row(t, d, op)
  const amount = t.unit === 'MB/s' ? m.bytes / MB : m.ops
  r.tps.push(amount / m.secs)
  for (const x of m.lat) r.lat.push(x)
  r.rss = Math.max(r.rss, m.rss)
  if (m.loopMax !== undefined) r.loop = Math.max(r.loop ?? 0, m.loopMax)
  r.maxOp = Math.max(r.maxOp, m.maxOp ?? 0)
  for (const [key, v] of Object.entries(extra)) (r.extra[key] ??= []).push(v)
}
function fail(t, d, op, e) {
  const r = row(t, d, op)
  r.error = String(e?.message ?? e).split('\n')[0].slice(0, 160)
  log(`  ${d.name} failed in ${t.id}: ${r.error}`)
}
const failed = (t, d) => t.rows.get(d.id)?.error !== undefined
/** Round r's order: the list, reversed every other round. */
const orderOf = (list, r) => (r % 2 ? [...list].reverse() : list)

// ---------------------------------------------------------------- drivers

const ks = (impl, api, durable, cached = false) => D.konserve({ impl, api, durable, cached })
const before = beforeDir ? await import(pathToFileURL(join(beforeDir, 'dist', 'index.mjs')).href) : undefined
const P = {
  ksNAbefore: before && D.konserve({ impl: 'native', api: 'async', durable: true, lib: before, label: 'before' }),
  ksNS: ks('native', 'sync', true),
  ksNA: ks('native', 'async', true),
  ksNSwal: D.konserve({ impl: 'native', api: 'sync', durable: true, wal: true }),
  ksNAwal: D.konserve({ impl: 'native', api: 'async', durable: true, wal: true }),
  ksPSwal: D.konserve({ impl: 'pure', api: 'sync', durable: true, wal: true }),
  ksPAwal: D.konserve({ impl: 'pure', api: 'async', durable: true, wal: true }),
  ksNSndWal: D.konserve({ impl: 'native', api: 'sync', durable: false, wal: true }),
  ksNAndWal: D.konserve({ impl: 'native', api: 'async', durable: false, wal: true }),
  ksPS: ks('pure', 'sync', true),
  ksPA: ks('pure', 'async', true),
  ksNSnd: ks('native', 'sync', false),
  ksNAnd: ks('native', 'async', false),
  ksPSnd: ks('pure', 'sync', false),
  ksNScached: ks('native', 'sync', false, true),
  mem: D.konserveMem(),
  lmdb: await D.lmdb({ durable: true }),
  lmdbNd: await D.lmdb({ durable: false }),
  level: await D.classicLevel({ durable: true }),
  levelNd: await D.classicLevel({ durable: false }),
  persist: await D.nodePersist(),
  cacache: await D.cacacheDriver(),
  unstorage: await D.unstorageFs(),
  keyv: await D.keyvFile(),
  wfaS: await D.writeFileAtomicDriver({ durable: true, api: 'sync' }),
  wfaA: await D.writeFileAtomicDriver({ durable: true, api: 'async' }),
  wfaSnd: await D.writeFileAtomicDriver({ durable: false, api: 'sync' }),
  rawS: D.raw({ durable: true, api: 'sync' }),
  rawA: D.raw({ durable: true, api: 'async' }),
  rawSnd: D.raw({ durable: false, api: 'sync' }),
  rawDecode: D.raw({ durable: false, api: 'sync', decode: true }),
  rawListRead: D.rawList({ readEach: true }),
  rawList: D.rawList({ readEach: false }),
}
// In the read tables the mode is irrelevant: reads use the non-durable
// drivers' stores, shown without a mode.
const DURABLE_WRITERS = [P.ksNS, P.ksNA, P.ksNSwal, P.ksNAwal, P.ksPS, P.ksPSwal, P.lmdb, P.level, P.wfaS, P.rawS]
const INFLIGHT_WRITERS = [P.ksNA, P.ksNAwal, P.ksPA, P.ksPAwal, P.lmdb, P.level, P.wfaA, P.rawA]
const ND_WRITERS = [P.ksNSnd, P.ksNAnd, P.ksNSndWal, P.ksNAndWal, P.ksPSnd, P.mem, P.lmdbNd, P.levelNd, P.persist, P.cacache, P.unstorage, P.keyv, P.wfaSnd, P.rawSnd]
const READERS = [P.ksNSnd, P.ksNAnd, P.ksPSnd, P.ksNScached, P.mem, P.lmdbNd, P.levelNd, P.persist, P.cacache, P.unstorage, P.keyv, P.rawSnd, P.rawDecode]

// ---------------------------------------------------------------- cases

async function casePut(t, drivers, { n, maxMs, conc }) {
  const rounds = C.rounds
  for (let r = 0; r < rounds; r++) {
    log(`${t.id}: round ${r + 1}/${rounds}`)
    for (const d of orderOf(drivers, r)) {
      if (failed(t, d)) continue
      const dir = freshDir(d.id)
      try {
        const inst = await d.open(dir)
        const keys = Array.from({ length: n }, (_, i) => `key-${i}`)
        const op = (i) => d.put(inst, keys[i], VALUE)
        const m = conc ? await inflight({ n, conc, maxMs, op }) : await serial({ api: D.apiOf(d, 'put'), n, maxMs, op })
        await d.close(inst)
        record(t, d, 'put', m)
      } catch (e) {
        fail(t, d, 'put', e)
      } finally {
        retire(dir)
      }
    }
  }
}

async function caseGet(cold, warm, drivers, { keys: nKeys, warmPasses }) {
  const keys = Array.from({ length: nKeys }, (_, i) => `key-${i}`)
  const order1 = shuffled(keys, 1)
  const order2 = shuffled(keys, 2)
  const state = new Map()
  log(`get: writing ${nKeys} keys into each store (all stores at once: setup, not measured)`)
  await Promise.all(
    drivers.map(async (d) => {
      const dir = freshDir(d.id)
      try {
        const inst = await d.open(dir)
        await d.populate(inst, keys, VALUE)
        const probe = await d.get(inst, keys[nKeys - 1])
        if (!probe) throw new Error('a written key reads back empty')
        if (!d.inMemory) await d.close(inst)
        state.set(d, { dir, inst: d.inMemory ? inst : undefined })
      } catch (e) {
        fail(cold, d, 'get', e)
        fail(warm, d, 'get', e)
        retire(dir)
      }
    }),
  )
  for (let r = 0; r < C.rounds; r++) {
    log(`get: round ${r + 1}/${C.rounds}`)
    for (const d of orderOf(drivers, r)) {
      const s = state.get(d)
      if (!s || failed(warm, d)) continue
      const api = D.apiOf(d, 'get')
      try {
        let inst = s.inst
        if (!d.inMemory) {
          const o0 = performance.now()
          inst = await d.open(s.dir)
          const openMs = performance.now() - o0
          const m = await serial({ api, n: nKeys, op: (i) => d.get(inst, order1[i]) })
          m.secs += openMs / 1000
          record(cold, d, 'get', m, { openMs })
        }
        const m = await serial({ api, n: nKeys * warmPasses, op: (i) => d.get(inst, order2[i % nKeys]) })
        record(warm, d, 'get', m)
        if (!d.inMemory) await d.close(inst)
      } catch (e) {
        fail(cold, d, 'get', e)
        fail(warm, d, 'get', e)
      }
    }
  }
  for (const st of state.values()) retire(st.dir)
}

/**
 * updateIn of counters: one `counter` updated one call at a time, or (with
 * `conc`) `conc` calls in flight on `keys` hot counters, whose writers contend
 * for each key's lock (atomic updaters only there). The counters are checked
 * after each run, wherever the driver can read them back.
 */
async function caseUpdate(t, drivers, { n, maxMs, conc, keys: hot = 1 }) {
  const counter = (i) => (conc ? `counter-${i % hot}` : 'counter')
  for (let r = 0; r < C.rounds; r++) {
    log(`${t.id}: round ${r + 1}/${C.rounds}`)
    for (const d of orderOf(drivers, r)) {
      if (failed(t, d)) continue
      const dir = freshDir(d.id)
      try {
        const inst = await d.open(dir)
        for (let i = 0; i < hot; i++) await d.update(inst, counter(i)) // the keys exist before the timed updates
        const op = (i) => d.update(inst, counter(i))
        const m = conc ? await inflight({ n, conc, maxMs, op }) : await serial({ api: D.apiOf(d, 'update'), n, maxMs, op })
        if (d.get && d.kind !== 'raw') {
          let sum = 0
          for (let i = 0; i < hot; i++) sum += await d.get(inst, counter(i))
          if (sum !== m.ops + hot) throw new Error(`the counters sum to ${sum} after ${m.ops + hot} increments`)
        }
        await d.close(inst)
        record(t, d, 'updateIn', m)
      } catch (e) {
        fail(t, d, 'updateIn', e)
      } finally {
        retire(dir)
      }
    }
  }
}

function blobOf(size) {
  const block = randomFillSync(Buffer.alloc(Math.min(size, MB)))
  const b = Buffer.allocUnsafe(size)
  for (let off = 0; off < size; off += block.length) block.copy(b, off)
  return b
}

async function caseBlob(spec, tDurable, tNd, tRead) {
  const { size, count, rounds } = spec
  let buf = blobOf(size)
  const groups = [
    { t: tDurable, drivers: [P.ksNS, P.ksNA, P.ksPS, P.lmdb, P.level, P.wfaS, P.rawS], readers: new Set([P.ksNS, P.ksNA, P.ksPS, P.lmdb, P.level, P.rawS]) },
    { t: tNd, drivers: [P.ksNSnd, P.mem, P.lmdbNd, P.levelNd, P.cacache, P.unstorage, P.wfaSnd, P.rawSnd], readers: new Set([P.mem, P.cacache, P.unstorage]) },
  ]
  for (let r = 0; r < rounds; r++) {
    for (const g of orderOf(groups, r)) {
      log(`${g.t.id}: round ${r + 1}/${rounds}`)
      for (const d of orderOf(g.drivers, r)) {
        if (failed(g.t, d)) continue
        const dir = freshDir(d.id)
        try {
          let inst = await d.open(dir, { binary: true })
          gc()
          const wm = await serial({ api: D.apiOf(d, 'bput'), n: count, op: (i) => d.bput(inst, `blob-${i}`, buf), bytesPerOp: size })
          record(g.t, d, 'bassoc', wm)
          if (g.readers.has(d)) {
            if (!d.inMemory) {
              await d.close(inst)
              inst = await d.open(dir, { binary: true })
            }
            gc()
            const check = (n) => {
              if (n !== size) throw new Error(`read ${n} bytes, wrote ${size}`)
            }
            const api = D.apiOf(d, 'bget')
            const op = api === 'sync' ? (i) => check(d.bget(inst, `blob-${i}`)) : async (i) => check(await d.bget(inst, `blob-${i}`))
            const rm = await serial({ api, n: count, op, bytesPerOp: size })
            record(tRead, d, 'bget', rm)
          }
          await d.close(inst)
        } catch (e) {
          fail(g.t, d, 'bassoc', e)
        } finally {
          rmDir(dir)
          gc()
        }
      }
    }
  }
  buf = undefined
  gc()
}

/**
 * Many blobs at once: `count` blobs of `minSize`..`maxSize` bytes (sizes
 * log-uniform, the same for every store), `conc` writes in flight, into one
 * fresh directory per store and round. Each blob is a different slice of one
 * random pool, so no two blobs are alike (cacache stores content by hash).
 */
async function caseManyBlobs(t, drivers, { count, minSize, maxSize, conc, rounds }) {
  const sizes = manyBlobSizes(count, minSize, maxSize)
  const pool = blobOf(2 * maxSize)
  const offsets = sizes.map((_, i) => (i * 4099) % (pool.length - maxSize))
  const total = sizes.reduce((a, b) => a + b, 0)
  t.notes.push(`${count} blobs of ${fmtSize(minSize)}–${fmtSize(maxSize)} (log-uniform sizes, ${fmtSize(total)} in all), ${conc} in flight, ${rounds} rounds; latency is per blob, from its call to its resolution`)
  const cpu = new Map()
  for (let r = 0; r < rounds; r++) {
    log(`${t.id}: round ${r + 1}/${rounds}`)
    for (const d of orderOf(drivers, r)) {
      if (failed(t, d)) continue
      const dir = freshDir(d.id)
      try {
        const inst = await d.open(dir, { binary: true })
        gc()
        const c0 = process.cpuUsage()
        const m = await inflight({
          n: count,
          conc,
          op: (i) => d.bput(inst, `blob-${i}`, pool.subarray(offsets[i], offsets[i] + sizes[i])),
          bytesOf: (i) => sizes[i],
        })
        const c = process.cpuUsage(c0)
        await d.close(inst)
        ;(cpu.get(d) ?? cpu.set(d, []).get(d)).push((c.user + c.system) / 1000 / (m.bytes / MB))
        record(t, d, 'bassoc', m)
      } catch (e) {
        fail(t, d, 'bassoc', e)
      } finally {
        await rmDirs([dir])
        gc()
      }
    }
  }
  const tp = (d) => (t.rows.get(d.id)?.error === undefined && t.rows.get(d.id) ? median(t.rows.get(d.id).tps) : NaN)
  const ours = tp(drivers[0])
  const vs = drivers.slice(1).map((d) => `${(ours / tp(d)).toFixed(2)}× ${d.name}`)
  t.notes.push(`${drivers[0].name} ÷ the others (median throughputs): ${vs.join(', ')}; goal ≥ 1.5× the raw loop, ≥ 3× cacache, loop delay ≤ 10 ms`)
  t.notes.push(`CPU time of the whole process per MB written (median of rounds, all threads): ${drivers.filter((d) => cpu.has(d)).map((d) => `${d.name} ${median(cpu.get(d)).toFixed(2)} ms`).join(', ')}`)
}
const fmtSize = (b) => (b >= MB ? `${+(b / MB).toFixed(1)} MB` : `${Math.round(b / 1024)} KB`)

async function caseKeys(spec, t, populateRates) {
  const { n, rounds, skip = [] } = spec
  const keys = Array.from({ length: n }, (_, i) => `key-${i}`)
  // One konserve directory serves ours (native sync/async, pure: the same files)
  // and the raw listing; every peer gets its own directory.
  const groups = [
    { writer: P.ksNAnd, readers: [P.ksNSnd, P.ksNAnd, P.ksPSnd, P.rawListRead, P.rawList] },
    { writer: P.mem, readers: [P.mem] },
    { writer: P.lmdbNd, readers: [P.lmdbNd] },
    { writer: P.levelNd, readers: [P.levelNd] },
    { writer: P.persist, readers: [P.persist] },
    { writer: P.cacache, readers: [P.cacache] },
    { writer: P.unstorage, readers: [P.unstorage] },
    { writer: P.keyv, readers: [P.keyv] },
  ].filter((g) => !skip.includes(g.writer.id))
  const state = new Map()
  log(`${t.id}: writing ${n} keys into each store (all stores at once: setup, not measured)`)
  await Promise.all(
    groups.map(async (g) => {
      const dir = freshDir(g.writer.id)
      try {
        const p0 = performance.now()
        const inst = await g.writer.open(dir)
        await g.writer.populate(inst, keys, VALUE)
        if (!g.writer.inMemory) await g.writer.close(inst)
        const secs = (performance.now() - p0) / 1000
        populateRates.push({ n, store: g.writer.name, secs })
        for (const d of g.readers) state.set(d, { dir, inst: g.writer.inMemory ? inst : undefined })
      } catch (e) {
        for (const d of g.readers) fail(t, d, 'keys', e)
      }
    }),
  )
  const readers = groups.flatMap((g) => g.readers)
  for (let r = 0; r < rounds; r++) {
    log(`${t.id}: round ${r + 1}/${rounds}`)
    for (const d of orderOf(readers, r)) {
      const s = state.get(d)
      if (!s || failed(t, d)) continue
      try {
        gc()
        let inst = s.inst
        let openMs = 0
        if (!d.inMemory) {
          const o0 = performance.now()
          inst = await d.open(s.dir)
          openMs = performance.now() - o0
        }
        const m = await once(D.apiOf(d, 'keys'), () => d.keys(inst))
        if (m.result !== n) throw new Error(`keys returned ${m.result} keys, ${n} written`)
        m.ops = n
        const callMs = m.secs * 1000
        m.secs += openMs / 1000 // a fresh instance's listing: open + keys
        if (!d.inMemory) await d.close(inst)
        record(t, d, 'keys', m, { openMs, callMs })
      } catch (e) {
        fail(t, d, 'keys', e)
      }
    }
  }
  const dirs = new Set([...state.values()].map((s) => s.dir))
  log(`${t.id}: deleting ${dirs.size} directories`)
  await rmDirs([...dirs])
  state.clear()
  gc()
}

// ---------------------------------------------------------------- run

const REF_SYNC = P.ksNS.id
const REF_ND = P.ksNSnd.id
const valueNote = `value: a ${VALUE_BYTES}-byte msgpack document (msgpackr.pack of one object)`

if (wantedGroup('put')) {
  const a = table('put-durable', 'Durable put, one at a time (new keys)', 'ops/s', REF_SYNC, [valueNote])
  if (wanted(a.id)) await casePut(a, DURABLE_WRITERS, C.durablePut)
  const b = table('put-inflight', 'Durable put, 64 in flight (async APIs)', 'ops/s', P.ksNA.id, [
    'reference: konserve native through the async API (the sync API cannot have 64 in flight)',
    'latency is per put, from its call to its resolution, so it includes queueing behind the other 63',
  ])
  if (wanted(b.id)) await casePut(b, INFLIGHT_WRITERS, C.inflight)
  const c = table('put-nd', 'Non-durable put, one at a time (new keys)', 'ops/s', REF_ND, [
    'reference: konserve native sync with syncBlob: false',
  ])
  if (wanted(c.id)) await casePut(c, ND_WRITERS, C.ndPut)
}
if (wantedGroup('get')) {
  const cold = table('get-cold', `Get, cold: a fresh store instance, then each of ${C.get.keys} keys once`, 'ops/s', REF_ND, [
    'throughput includes opening the instance (its own column); the OS page cache is warm (it cannot be dropped on a shared machine)',
    'the memory store has no cold state and is left out; cacache and the raw loop have no instance',
  ])
  const warm = table('get-warm', `Get, warm: the same instance, ${C.get.warmPasses} more passes over the ${C.get.keys} keys`, 'ops/s', REF_ND, [
    'raw syscalls: fs.readFileSync only, no decode; raw readFileSync + msgpack decode: the least a get of a document must do; every other store returns the decoded document',
    'konserve native + read cache: withCache over the native store; its first pass (cold) fills the cache, the warm passes are hits',
  ])
  await caseGet(cold, warm, READERS, C.get)
}
if (wantedGroup('update')) {
  const a = table('update-durable', 'updateIn of a counter, durable', 'ops/s', REF_SYNC, [
    'ours: updateIn(store, [key], x => x + 1) under the key lock; lmdb: a write transaction (atomic); the others: get + put, not atomic',
  ])
  if (wanted(a.id)) await caseUpdate(a, DURABLE_WRITERS.filter((d) => d.update), C.updateDurable)
  const c = table('update-inflight', `updateIn, durable, ${C.updateInflight.conc} in flight on ${C.updateInflight.keys} counters (async APIs)`, 'ops/s', P.ksNA.id, [
    'contention: the writers of one counter take turns on its lock (lmdb: its write transactions); only atomic updaters, checked by the counters\' sum',
  ])
  if (wanted(c.id)) await caseUpdate(c, [P.ksNA, P.ksNAwal, P.ksPA, P.ksPAwal, P.lmdb], C.updateInflight)
  const b = table('update-nd', 'updateIn of a counter, non-durable', 'ops/s', REF_ND)
  if (wanted(b.id)) await caseUpdate(b, ND_WRITERS.filter((d) => d.update), C.updateNd)
}
if (wantedGroup('blob')) {
  for (const spec of C.blobs) {
    const tag = spec.label.replace(' ', '')
    const tw = table(`blob${tag}-write-durable`, `${spec.label} blob write, durable`, 'MB/s', REF_SYNC, [
      `ours: bassoc; ${spec.count} blobs a round, ${spec.rounds} rounds; peers: their put of bytes`,
    ])
    const tn = table(`blob${tag}-write-nd`, `${spec.label} blob write, non-durable`, 'MB/s', REF_ND, [
      'node-persist and keyv-file are left out: they store JSON (a Buffer becomes an array of numbers), not blobs',
    ])
    const memNote = 'konserve memory: bassoc keeps the caller\'s Buffer without copying it and bget hands out that same Buffer (mutating either changes the stored blob), so its blob figures measure no copy at all'
    tn.notes.push(memNote)
    const tr = table(`blob${tag}-read`, `${spec.label} blob read`, 'MB/s', REF_SYNC, [
      'ours: bget (sync: the whole blob as a Buffer; async: consuming the stream); read from a fresh instance on the files the write just made',
      'konserve native (async): the bget stream reads the blob from disk as it is consumed; its peak ΔRSS counts the chunks the garbage collector has not freed yet, and stays bounded as blobs grow (a 200 MB blob streams with tens of MB, not 200)',
      memNote,
    ])
    await caseBlob(spec, tw, tn, tr)
  }
}
if (wantedGroup('many-blobs')) {
  const t = table('many-blobs', 'Many blobs at once, durable', 'MB/s', P.ksNA.id, [
    'ours: bassoc through the async API (file and directory fsynced before each resolves); raw: the same system calls per blob with fs.promises (open O_EXCL, write, fsync, close, rename, open + fsync + close the directory); cacache: put, which never fsyncs (not durable: a bound, not a peer in kind)',
  ])
  await caseManyBlobs(t, [P.ksNA, ...(before ? [P.ksNAbefore] : []), P.ksPA, P.rawA, P.cacache], C.manyBlobs)
}
const populateRates = []
const keysTables = []
if (wantedGroup('keys')) {
  for (const spec of C.keys) {
    const t = table(`keys-${spec.label}`, `keys on a store of ${spec.label} keys`, 'keys/s', REF_ND, [
      `one call on a freshly opened instance, ${spec.rounds} round(s); keys/s and × ours count open + keys (keyv-file does its work when it opens: it parses its whole file)`,
      'ours (native sync/async, pure) and the raw listings read one and the same konserve directory',
      ...(spec.skip ? [`left out at ${spec.label}: ${spec.skip.join(', ')}. Writing ${spec.label} keys through them takes minutes each on this disk (see the write times of the smaller stores below), which the full mode's ~15 minutes cannot hold; their growth shows between the sizes they ran at`] : []),
    ])
    keysTables.push({ t, n: spec.n })
    await caseKeys(spec, t, populateRates)
  }
}

// ---------------------------------------------------------------- report

const totalSecs = (performance.now() - t0) / 1000
const versions = {}
for (const p of ['lmdb', 'classic-level', 'node-persist', 'cacache', 'unstorage', 'keyv', 'keyv-file', 'write-file-atomic', 'msgpackr']) {
  try {
    versions[p] = JSON.parse(fs.readFileSync(join(here, '..', 'node_modules', p, 'package.json'), 'utf8')).version
  } catch {
    versions[p] = '?'
  }
}
const sh = (cmd, args) => {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8' }).trim()
  } catch {
    return '?'
  }
}
const meta = {
  date: new Date().toISOString(),
  nproc: sh('nproc', []),
  cpu: os.cpus()[0]?.model ?? '?',
  memGiB: (os.totalmem() / 2 ** 30).toFixed(0),
  kernel: `${os.type()} ${os.release()}`,
  fs: sh('findmnt', ['-no', 'FSTYPE,OPTIONS', '-T', os.tmpdir()]).replace(/\s+/, ', mounted '),
  tmpdir: os.tmpdir(),
  node: process.version,
  command: process.env.npm_lifecycle_event === 'bench' ? `npm run bench${quick ? ' -- --quick' : ''}` : `node bench/peers.mjs ${process.argv.slice(2).join(' ')}`.trim(),
  mode: quick ? 'quick' : 'full',
  loadStart: loadStart,
  loadEnd: os.loadavg().map((x) => x.toFixed(2)).join(' '),
  totalSecs,
  versions,
  dist: beforeDir ? `${distStamp}; before: ${beforeDir}` : distStamp,
  valueBytes: VALUE_BYTES,
  rounds: C.rounds,
}
const drivers = Object.values(P).filter(Boolean)
// Tables that --only skipped are left out of the report.
const ran = tables.filter((t) => t.rows.size > 0)
const md = markdown({ meta, tables: ran, drivers, keysTables, populateRates })
// A partial (--only) or quick run must not replace the latest full run's results.
const base = only.length ? 'partial' : quick ? 'quick' : 'latest'
fs.mkdirSync(join(here, 'results'), { recursive: true })
fs.writeFileSync(join(here, 'results', `${base}.md`), md)
fs.writeFileSync(join(here, 'results', `${base}.svg`), svg({ meta, tables: ran }))
console.log(md)
log(`done in ${totalSecs.toFixed(0)} s; wrote bench/results/${base}.md and ${base}.svg; deleting ${retired.length} store directories`)
process.exit(0)
