#!/usr/bin/env node
// konserve's Redis store against raw ioredis on the same server, < 1 minute.
//
// Starts a redis-server (no persistence) on a free loopback port, then in
// interleaved rounds (the order of ours and raw alternates every round) runs:
//   put:      assoc(db, key, value)        vs  SET key <the same bytes>
//   get:      get(db, key)                 vs  GET key
//   updateIn: updateIn(db, [key], n => n+1) vs  WATCH key, GET, MULTI, SET, EXEC (retried on a conflict)
// each op `OPS` times in a row on one key per round. Each figure is the median
// over the rounds of the mean time per op; ratio = ours / raw (above 1 ours is
// slower). "cmds/op" counts the Redis commands each side sends per operation
// (every command through the client's sendCommand, counted by a wrapper; a
// script call is one command) and "trips/op" the round trips: a command sent
// while none of that client's is in flight starts one; one sent while others
// are in flight rides along (pipelined: our unlock, sent without waiting, goes
// with the next operation's first command).
//
//   node bench/redis.mjs          (needs dist/: npx tsup)
import { spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import Redis from 'ioredis'

const here = dirname(fileURLToPath(import.meta.url))
const k = await import(join(here, '..', 'dist', 'index.mjs'))
const { connectRedisStore } = await import(join(here, '..', 'dist', 'redis.mjs'))

const ROUNDS = 9
const OPS = 300

const port = await new Promise((resolve, reject) => {
  const s = createServer()
  s.once('error', reject)
  s.listen(0, '127.0.0.1', () => {
    const p = s.address().port
    s.close(() => resolve(p))
  })
})
const dir = mkdtempSync(join(tmpdir(), 'konserve-bench-redis-'))
const server = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: ['ignore', 'pipe', 'inherit'] })
await new Promise((resolve, reject) => {
  let out = ''
  server.stdout.on('data', (d) => {
    out += d
    if (out.includes('Ready to accept connections')) resolve()
  })
  server.once('exit', (c) => reject(new Error(`redis-server exited (${c}): ${out}`)))
})
server.stdout.resume()

/** An ioredis client whose commands are counted: `sent` all of them, `trips` those sent with none in flight. */
function counted() {
  const c = new Redis(port)
  c.sent = 0
  c.trips = 0
  let inFlight = 0
  const orig = c.sendCommand
  const done = () => inFlight--
  c.sendCommand = function (command, ...rest) {
    c.sent++
    if (inFlight++ === 0) c.trips++
    const p = orig.call(this, command, ...rest)
    if (p && typeof p.then === 'function') p.then(done, done)
    else done()
    return p
  }
  return c
}

const ourClient = counted()
const rawClient = counted()
const db = await connectRedisStore({ client: ourClient, prefix: 'bench' })
const value = { name: 'a document', tags: ['x', 'y', 'z'], n: 12345, text: 'x'.repeat(900) }
// The raw side stores the bytes our store's serializer (msgpack, the default) makes of the value, as a Buffer.
const { pack } = await import('msgpackr')
const bytes = pack(value)

const cases = {
  put: {
    ours: (i) => k.assoc(db, `p${i % 8}`, value),
    raw: (i) => rawClient.set(`raw:p${i % 8}`, bytes),
  },
  get: {
    ours: (i) => k.get(db, `p${i % 8}`),
    raw: (i) => rawClient.getBuffer(`raw:p${i % 8}`),
  },
  updateIn: {
    ours: () => k.updateIn(db, ['n'], (n = 0) => n + 1),
    async raw() {
      for (;;) {
        await rawClient.watch('raw:n')
        const n = Number((await rawClient.get('raw:n')) ?? 0)
        const r = await rawClient.multi().set('raw:n', String(n + 1)).exec()
        if (r) return
      }
    },
  },
}

async function run(name, side) {
  const f = cases[name][side]
  const client = side === 'ours' ? ourClient : rawClient
  const sent0 = client.sent
  const trips0 = client.trips
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < OPS; i++) await f(i)
  const ns = Number(process.hrtime.bigint() - t0)
  return { us: ns / OPS / 1000, cmds: (client.sent - sent0) / OPS, trips: (client.trips - trips0) / OPS }
}

// Warm up (scripts loaded, keys present, JIT).
for (const name of Object.keys(cases)) for (const side of ['ours', 'raw']) await run(name, side)

const results = {}
for (let round = 0; round < ROUNDS; round++) {
  for (const name of Object.keys(cases)) {
    const order = round % 2 === 0 ? ['ours', 'raw'] : ['raw', 'ours']
    for (const side of order) {
      const r = await run(name, side)
      ;((results[name] ??= { ours: [], raw: [] })[side]).push(r)
    }
  }
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}
console.log(`konserve Redis store vs raw ioredis, redis-server on 127.0.0.1:${port}, ${ROUNDS} interleaved rounds x ${OPS} ops, value ${bytes.length} B`)
console.log('| op | ours µs/op | raw µs/op | ours/raw | ours cmds/op | raw cmds/op | ours trips/op | raw trips/op |')
console.log('|---|---:|---:|---:|---:|---:|---:|---:|')
for (const [name, r] of Object.entries(results)) {
  const o = median(r.ours.map((x) => x.us))
  const w = median(r.raw.map((x) => x.us))
  console.log(`| ${name} | ${o.toFixed(1)} | ${w.toFixed(1)} | ${(o / w).toFixed(2)} | ${median(r.ours.map((x) => x.cmds)).toFixed(2)} | ${median(r.raw.map((x) => x.cmds)).toFixed(2)} | ${median(r.ours.map((x) => x.trips)).toFixed(2)} | ${median(r.raw.map((x) => x.trips)).toFixed(2)} |`)
}

await k.close(db)
ourClient.disconnect()
rawClient.disconnect()
server.kill('SIGTERM')
await new Promise((r) => server.once('exit', r))
rmSync(dir, { recursive: true, force: true })
