/**
 * The Redis store beyond the compliance suite (which runs on it too): what is
 * particular to a network backend, against real redis-servers on loopback.
 * - the bytes are a key file's: a value or blob written to Redis reads back
 *   from a file store (native and pure) once its parts are put in a file;
 * - updateIn from two processes ends exact; a killed client's lock lapses
 *   after its lease and the other writer proceeds; a write whose lock was
 *   lost is refused (fenced) and writes nothing;
 * - blobs are chunk generations (a replaced one stays readable for the grace
 *   period), logs are lists, multi-key writes are one call;
 * - foreign data under the prefix is a typed error; a server that dies gives
 *   ERR_BACKEND_UNAVAILABLE and the store works again once it is back;
 * - a 3-node Redis Cluster: every operation, keys across all masters;
 * - no blocking form (ERR_NOT_SUPPORTED).
 */
import { createRequire } from 'node:module'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import test from 'ava'
import Redis from 'ioredis'
import Keyv from 'keyv'
import * as k from 'konserve'
import { konserveKeyv } from 'konserve/keyv'
import { connectRedisStore } from 'konserve/redis'
import { child, dist } from './helpers/child.js'
import { tempDir } from './helpers/api.js'
import { type RedisServer, sharedRedis, startCluster, startRedis } from './helpers/redis.js'

let n = 0
const prefix = () => `r${process.pid}-${++n}`

async function open(server: RedisServer, options: object = {}) {
  const p = prefix()
  return { p, db: await connectRedisStore({ url: server.url, prefix: p, ...options }), redis: new Redis(server.port) }
}

test('no blocking form: sync calls and a sync connect fail with ERR_NOT_SUPPORTED', async (t) => {
  const { db, redis } = await open(await sharedRedis())
  t.throws(() => k.get(db, 'a', { sync: true }), { code: 'ERR_NOT_SUPPORTED' } as never)
  t.throws(() => k.assoc(db, 'a', 1, { sync: true }), { code: 'ERR_NOT_SUPPORTED' } as never)
  await t.throwsAsync(connectRedisStore({ url: 'redis://127.0.0.1:1', sync: true }), { code: 'ERR_NOT_SUPPORTED' } as never)
  await k.close(db)
  redis.disconnect()
})

for (const [name, codec] of [
  ['plain', {}],
  ['lz4+aes', { compressor: { type: 'lz4' as const }, encryptor: { type: 'aes' as const, key: 'k' } }],
] as const) {
  test(`${name}: a value and a blob in Redis are key files byte for byte (read back by native and pure file stores)`, async (t) => {
    const { p, db, redis } = await open(await sharedRedis(), codec)
    const blob = Buffer.alloc(2.5 * 1024 * 1024 + 7)
    for (let i = 0; i < blob.length; i++) blob[i] = (i * 31) % 251
    await k.assoc(db, ['doc', 1], { hello: 'world', n: [1, 2, 3] })
    await k.bassoc(db, 'blob', blob)
    const dir = tempDir()
    const mains = (await redis.keys(`${p}:k:*`)).sort()
    t.is(mains.length, 2)
    for (const main of mains) {
      const hex = main.slice(main.indexOf('{') + 1, -1)
      const f = await redis.hgetallBuffer(main)
      const parts: Buffer[] = [f.h!]
      if (f.v) parts.push(f.v)
      else {
        // A blob: its chunks (three of 1 MiB at most), then the table and trailer.
        const chunks = await redis.hgetallBuffer(`${p}:c:{${hex}}:${f.g!.toString()}`)
        t.is(Object.keys(chunks).length, 3)
        for (let i = 0; i < 3; i++) parts.push(chunks[String(i)]!)
        parts.push(f.t!)
      }
      writeFileSync(join(dir, `${hex}.ksv`), Buffer.concat(parts))
    }
    for (const native of [true, false]) {
      const fs = await k.connectFsStore(dir, { native, ...codec })
      t.deepEqual(await k.get(fs, ['doc', 1]), { hello: 'world', n: [1, 2, 3] })
      t.true(Buffer.from((await k.readBlob(fs, 'blob'))!).equals(blob))
      await k.close(fs)
    }
    await k.close(db)
    redis.disconnect()
  })
}

test('blobs are swapped in by generation: a blob opened before a replace reads on; the old generation expires', async (t) => {
  const { p, db, redis } = await open(await sharedRedis(), { blobGraceMs: 60_000 })
  const old = Buffer.alloc(3 << 20, 1)
  await k.bassoc(db, 'b', old)
  const stream = (await k.readBlob(db, 'b', { as: 'stream' }))!
  const first: Buffer[] = []
  const it = stream[Symbol.asyncIterator]()
  first.push((await it.next()).value)
  await k.bassoc(db, 'b', Buffer.from('new'))
  for (let r = await it.next(); !r.done; r = await it.next()) first.push(r.value)
  t.true(Buffer.concat(first).equals(old))
  t.is((await k.readBlob(db, 'b'))!.toString(), 'new')
  const gens = await redis.keys(`${p}:c:*`)
  t.is(gens.length, 2)
  const ttls = await Promise.all(gens.map((g) => redis.pttl(g)))
  t.deepEqual(ttls.map((x) => x === -1).sort(), [false, true]) // the new one persists, the old one expires
  await k.dissoc(db, 'b')
  t.is(await redis.exists(`${p}:k:*`), 0)
  await k.close(db)
  redis.disconnect()
})

test('logs are Redis lists of records; trimLog drops from the left', async (t) => {
  const { p, db, redis } = await open(await sharedRedis())
  for (let i = 0; i < 5; i++) await k.append(db, 'log', { i })
  const [list] = await redis.keys(`${p}:l:*`)
  t.is(await redis.llen(list!), 5)
  await k.trimLog(db, 'log', { keepLast: 2 })
  t.is(await redis.llen(list!), 2)
  t.deepEqual(await k.log(db, 'log'), [{ i: 3 }, { i: 4 }])
  t.is(await k.append(db, 'log', { i: 5 }), 3)
  await k.close(db)
  redis.disconnect()
})

test('foreign or damaged data under the prefix is a typed error, never a crash', async (t) => {
  const { p, db, redis } = await open(await sharedRedis())
  await k.assoc(db, 'a', 1)
  const [main] = await redis.keys(`${p}:k:*`)
  const f = await redis.hgetallBuffer(main!)
  await redis.hset(main!, 'v', f.v!.subarray(0, f.v!.length - 1)) // truncated
  await t.throwsAsync(k.get(db, 'a'), { code: 'ERR_CORRUPT' } as never)
  await redis.hset(main!, 'h', 'not a konserve head')
  await t.throwsAsync(k.get(db, 'a'), { code: 'ERR_CORRUPT' } as never)
  await redis.hset(`${p}:k:{00000000000000000000000000000000}`, 'x', 'y') // no head at all
  const bad: k.KonserveError[] = []
  t.deepEqual(await k.keys(db, { onCorrupt: (e) => bad.push(e) }), [])
  t.deepEqual(bad.map((e) => e.code).sort(), ['ERR_CORRUPT', 'ERR_CORRUPT'])
  await k.close(db)
  redis.disconnect()
})


test('updateIn from two processes x 1000 on one key ends exact (one on ioredis, one on node-redis)', async (t) => {
  const server = await sharedRedis()
  const p = prefix()
  const script = `
    const { updateIn, close } = await import(${dist('index.mjs')})
    const { connectRedisStore } = await import(${dist('redis.mjs')})
    let client
    if (process.argv[4] === 'node-redis') {
      client = (await import(${JSON.stringify(createRequire(import.meta.url).resolve('redis'))})).createClient({ url: process.argv[2] })
      await client.connect()
    }
    const db = await connectRedisStore(client ? { client, prefix: process.argv[3] } : { url: process.argv[2], prefix: process.argv[3] })
    for (let i = 0; i < 1000; i++) await updateIn(db, ['n'], (x = 0) => x + 1)
    await close(db)
    await client?.close()
  `
  const a = child(script, [server.url, p, 'ioredis'])
  const b = child(script, [server.url, p, 'node-redis'])
  t.deepEqual(await Promise.all([a.exit, b.exit]), [0, 0])
  const db = await connectRedisStore({ url: server.url, prefix: p })
  t.is(await k.get(db, 'n'), 2000)
  t.is((await k.getMeta(db, 'n'))!.revision, 2000)
  await k.close(db)
})

test("a killed client's lock lapses after its lease and the other writer proceeds", async (t) => {
  const server = await sharedRedis()
  const p = prefix()
  const holder = child(
    `
    const { updateIn } = await import(${dist('index.mjs')})
    const { connectRedisStore } = await import(${dist('redis.mjs')})
    const db = await connectRedisStore({ url: process.argv[2], prefix: process.argv[3], lockLeaseMs: 1500 })
    await updateIn(db, ['k'], async () => { console.log('locked'); await new Promise(() => {}) })
  `,
    [server.url, p],
  )
  await holder.saw('locked')
  const db = await connectRedisStore({ url: server.url, prefix: p, lockTimeoutMs: 20_000 })
  // While the holder lives (renewing), a short wait times out naming it.
  const short = await connectRedisStore({ url: server.url, prefix: p, lockTimeoutMs: 100 })
  const err = await t.throwsAsync(k.assoc(short, 'k', 0), { code: 'ERR_LOCK_TIMEOUT' } as never)
  t.regex(err!.message, new RegExp(`:${holder.proc.pid}`))
  holder.proc.kill('SIGKILL')
  await holder.exit
  t.deepEqual(await k.updateIn(db, ['k'], (x: number | undefined) => (x ?? 0) + 1), [undefined, 1])
  await k.close(db)
  await k.close(short)
})

test('a write whose lock lapsed meanwhile is refused (fenced) and writes nothing', async (t) => {
  const { p, db, redis } = await open(await sharedRedis())
  await k.assoc(db, 'k', 1)
  const err = await t.throwsAsync(
    k.updateIn(db, ['k'], async (x: number) => {
      // Another client took the lock after ours lapsed.
      const [lock] = await redis.keys(`${p}:x:*`)
      await redis.set(lock!, 'someone-else')
      return x + 1
    }),
  )
  t.is((err as k.KonserveError).code, 'ERR_LOCK')
  await redis.del((await redis.keys(`${p}:x:*`))[0]!)
  t.is(await k.get(db, 'k'), 1)
  await k.close(db)
  redis.disconnect()
})

test('a server that dies gives ERR_BACKEND_UNAVAILABLE and no partial value; the store recovers when it returns', async (t) => {
  const server = await startRedis()
  const db = await connectRedisStore({ url: server.url, prefix: 'x' })
  await k.assoc(db, 'a', 1)
  await server.stop()
  await t.throwsAsync(k.assoc(db, 'a', 2), { code: 'ERR_BACKEND_UNAVAILABLE' } as never)
  await t.throwsAsync(k.get(db, 'a'), { code: 'ERR_BACKEND_UNAVAILABLE' } as never)
  await t.throwsAsync(connectRedisStore({ url: server.url }), { code: 'ERR_BACKEND_UNAVAILABLE' } as never)
  const again = await startRedis([], server.port) // empty: no persistence in tests
  await k.assoc(db, 'a', 3)
  t.is(await k.get(db, 'a'), 3)
  await k.close(db)
  await again.stop()
})

test('keyv over a Redis store', async (t) => {
  const { db, redis } = await open(await sharedRedis())
  const keyv = new Keyv({ store: konserveKeyv(db) })
  await keyv.set('a', { b: 1 })
  t.deepEqual(await keyv.get('a'), { b: 1 })
  await k.close(db)
  redis.disconnect()
})

test('a 3-node Redis Cluster: values, multi-key writes across slots, blobs, logs, listing every master, updateIn', async (t) => {
  const cluster = await startCluster()
  const client = new Redis.Cluster(cluster.nodes.map((n) => ({ host: '127.0.0.1', port: n.port })))
  try {
    const db = await connectRedisStore({ client, prefix: 'c' })
    const many = new Map<string, number>(Array.from({ length: 50 }, (_, i) => [`key${i}`, i]))
    await k.multiAssoc(db, many)
    t.is((await k.keys(db)).length, 50)
    // The keys are spread over every master.
    const perNode = await Promise.all(client.nodes('master').map((node) => node.dbsize()))
    t.true(perNode.every((x) => x > 0), String(perNode))
    await Promise.all(Array.from({ length: 20 }, () => k.updateIn(db, ['key0'], (x: number) => x + 1)))
    t.is(await k.get(db, 'key0'), 20)
    const blob = Buffer.alloc((1 << 20) + 5, 7)
    await k.bassoc(db, 'blob', blob)
    t.true((await k.readBlob(db, 'blob'))!.equals(blob))
    await k.append(db, 'log', 1)
    await k.append(db, 'log', 2)
    t.deepEqual(await k.log(db, 'log'), [1, 2])
    t.deepEqual([...(await k.multiDissoc(db, ['key1', 'nope'])).values()], [true, false])
    await k.close(db)
  } finally {
    client.disconnect()
    await cluster.stop()
  }
})
