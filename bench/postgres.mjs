#!/usr/bin/env node
// konserve/postgres against raw node-postgres doing the same work, on a
// PostgreSQL server this script starts (initdb in a temp directory, a free
// loopback port, fsync on; as the postgres user when run as root) and removes.
//
//   node bench/postgres.mjs [--rounds=5] [--n=200]      (needs `npx tsup` first: it loads dist/)
//
// Operations, each on a ~200-byte msgpack document over 100 keys:
//   put      ours: assoc                raw: INSERT … ON CONFLICT DO UPDATE of the same value bytes
//   get      ours: get                  raw: SELECT of them
//   updateIn ours: updateIn (+1)        raw: BEGIN; SELECT … FOR UPDATE; UPDATE; COMMIT
// Rounds interleave ours and raw (the order flips every round); each figure is
// the median of the rounds' ops/s, and ratio = ours / raw (below 1: slower).
// Round trips per operation are counted by wrapping every pooled connection's
// query (a query call is one round trip: node-postgres never pipelines).
import { execFileSync } from 'node:child_process'
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { pack } from 'msgpackr'

const here = dirname(fileURLToPath(import.meta.url))
const k = await import(join(here, '..', 'dist', 'index.mjs'))
const { connectPostgresStore } = await import(join(here, '..', 'dist', 'postgres.mjs'))
const arg = (name, dflt) => Number((process.argv.find((a) => a.startsWith(`--${name}=`)) ?? '').split('=')[1] ?? dflt) || dflt
const ROUNDS = arg('rounds', 5)
const N = arg('n', 200)
const KEYS = 100

// ---- a server ----
const root = '/usr/lib/postgresql'
const version = readdirSync(root)
  .filter((v) => existsSync(join(root, v, 'bin', 'initdb')))
  .sort((a, b) => Number(b) - Number(a))[0]
if (!version) throw new Error('no /usr/lib/postgresql/*/bin/initdb: apt-get install postgresql')
const bin = join(root, version, 'bin')
const asRoot = process.getuid?.() === 0
const pgRun = (program, args) =>
  asRoot
    ? execFileSync('runuser', ['-u', 'postgres', '--', join(bin, program), ...args], { stdio: 'pipe' })
    : execFileSync(join(bin, program), args, { stdio: 'pipe' })
const port = await new Promise((resolve, reject) => {
  const s = createServer()
  s.once('error', reject)
  s.listen(0, '127.0.0.1', () => {
    const p = s.address().port
    s.close(() => resolve(p))
  })
})
const dir = mkdtempSync(join(tmpdir(), 'konserve-pg-bench-'))
if (asRoot) chownSync(dir, Number(execFileSync('id', ['-u', 'postgres'])), Number(execFileSync('id', ['-g', 'postgres'])))
const data = join(dir, 'data')
pgRun('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8', '--locale', 'C'])
pgRun('pg_ctl', ['-D', data, '-l', join(dir, 'log'), '-w', '-o', `-c fsync=on -c listen_addresses=127.0.0.1 -p ${port} -k ${dir}`, 'start'])
const stopServer = () => {
  try {
    pgRun('pg_ctl', ['-D', data, '-m', 'immediate', 'stop'])
  } catch {}
  rmSync(dir, { recursive: true, force: true })
}
process.on('exit', stopServer)
const url = `postgres://postgres@127.0.0.1:${port}/postgres`

// ---- counted pools ----
let trips = 0
function countedPool() {
  const pool = new pg.Pool({ connectionString: url, max: 4 })
  pool.on('connect', (c) => {
    const q = c.query.bind(c)
    c.query = (...a) => {
      trips++
      return q(...a)
    }
  })
  return pool
}

const doc = (i) => ({ id: i, name: `document ${i}`, tags: ['a', 'b', 'c'], n: 0, body: 'x'.repeat(120) })
const keys = Array.from({ length: KEYS }, (_, i) => `key${i}`)

const oursPool = countedPool()
const db = await connectPostgresStore({ pool: oursPool, table: 'bench' })
const rawPool = countedPool()
await rawPool.query('CREATE TABLE IF NOT EXISTS raw (k text PRIMARY KEY, v bytea NOT NULL)')

const ours = {
  put: (i) => k.assoc(db, keys[i % KEYS], doc(i)),
  get: (i) => k.get(db, keys[i % KEYS]),
  updateIn: (i) => k.updateIn(db, [keys[i % KEYS], 'n'], (n) => n + 1),
}
const raw = {
  put: (i) => rawPool.query('INSERT INTO raw (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v', [keys[i % KEYS], pack(doc(i))]),
  get: async (i) => (await rawPool.query('SELECT v FROM raw WHERE k = $1', [keys[i % KEYS]])).rows[0]?.v,
  updateIn: async (i) => {
    const c = await rawPool.connect()
    try {
      await c.query('BEGIN')
      const r = await c.query('SELECT v FROM raw WHERE k = $1 FOR UPDATE', [keys[i % KEYS]])
      const { unpack } = await import('msgpackr')
      const v = unpack(r.rows[0].v)
      v.n++
      await c.query('UPDATE raw SET v = $2 WHERE k = $1', [keys[i % KEYS], pack(v)])
      await c.query('COMMIT')
    } finally {
      c.release()
    }
  },
}

async function timed(f) {
  const t0 = performance.now()
  for (let i = 0; i < N; i++) await f(i)
  return N / ((performance.now() - t0) / 1000)
}
async function roundTrips(f) {
  trips = 0
  for (let i = 0; i < 50; i++) await f(i)
  // Let the unlock that follows a write land before counting stops.
  await new Promise((r) => setTimeout(r, 50))
  return trips / 50
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

// Warm up both (connections, plans, keys present).
for (const side of [ours, raw]) for (let i = 0; i < KEYS; i++) await side.put(i)

const rows = []
for (const op of ['put', 'get', 'updateIn']) {
  const o = []
  const r = []
  for (let round = 0; round < ROUNDS; round++) {
    if (round % 2 === 0) {
      o.push(await timed(ours[op]))
      r.push(await timed(raw[op]))
    } else {
      r.push(await timed(raw[op]))
      o.push(await timed(ours[op]))
    }
  }
  rows.push({ op, ours: median(o), raw: median(r), oursTrips: await roundTrips(ours[op]), rawTrips: await roundTrips(raw[op]) })
}

console.log(
  `konserve/postgres vs raw pg: PostgreSQL ${version} on loopback (fsync on), ${ROUNDS} interleaved rounds x ${N} sequential ops, ${KEYS} keys`,
)
console.log('| op | ours ops/s | raw ops/s | ours/raw | round trips/op ours | raw |')
console.log('|---|---:|---:|---:|---:|---:|')
for (const x of rows) {
  console.log(
    `| ${x.op} | ${x.ours.toFixed(0)} | ${x.raw.toFixed(0)} | ${(x.ours / x.raw).toFixed(2)} | ${x.oursTrips.toFixed(1)} | ${x.rawTrips.toFixed(1)} |`,
  )
}
await k.close(db)
await oursPool.end()
await rawPool.end()
