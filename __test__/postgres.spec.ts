/**
 * The PostgreSQL store beyond the compliance suite (which runs on it too):
 * what is particular to it, against real PostgreSQL servers on loopback
 * (__test__/helpers/postgres.ts).
 * - no blocking form (ERR_NOT_SUPPORTED); a bad table name is refused;
 * - the bytes are a key file's: a value or blob written to PostgreSQL reads
 *   back from a file store (native and pure) once its row (and chunks) are
 *   put in a file;
 * - blobs go out chunk by chunk as they are written and come back chunk by
 *   chunk as they are read (bounded memory); a replaced generation stays
 *   readable for the grace period; an aborted write leaves nothing;
 * - logs are rows of the records table; trimLog deletes from the front;
 * - foreign or damaged rows are typed errors naming the key, never a crash;
 * - updateIn from two processes ends exact; a killed client's lock ends with
 *   its connection (while it lives, ERR_LOCK_TIMEOUT naming its pid);
 * - a server stopped mid-operation gives ERR_BACKEND_UNAVAILABLE and no
 *   partial value; the store works again once it is back;
 * - the registry: import 'konserve/postgres', then createStore/connectStore/
 *   storeExists/deleteStore with backend 'postgres' (which ends the stores of this process open on the table); a given pool is not ended.
 */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import test from 'ava'
import pg from 'pg'
import * as k from 'konserve'
import { connectPostgresStore } from 'konserve/postgres'
import { child, dist } from './helpers/child.js'
import { tempDir } from './helpers/api.js'
import { type PostgresServer, sharedPostgres, startPostgres } from './helpers/postgres.js'

let n = 0
const table = () => `p${process.pid}_${++n}`

/** A store on its own table, and a raw pool to look at its rows. */
async function open(server: PostgresServer, options: object = {}) {
  const t = table()
  const raw = new pg.Pool({ connectionString: server.url, max: 2 })
  raw.on('error', () => {})
  return { t, raw, db: await connectPostgresStore({ connectionString: server.url, table: t, maxConnections: 4, ...options }) }
}

/** A pg Pool whose connections report every query they run (text and values) to `seen`. */
function spyPool(server: PostgresServer, seen: Array<{ text: string; values?: unknown[] }>) {
  const pool = new pg.Pool({ connectionString: server.url, max: 4 })
  pool.on('error', () => {})
  const wrap = (c: { query: (...a: unknown[]) => unknown }) => {
    if ((c as { spied?: boolean }).spied) return c
    const q = c.query.bind(c)
    c.query = (...a: unknown[]) => {
      const cfg = a[0] as string | { text: string; values?: unknown[] }
      seen.push(typeof cfg === 'string' ? { text: cfg, values: a[1] as unknown[] } : cfg)
      return q(...a)
    }
    ;(c as { spied?: boolean }).spied = true
    return c
  }
  pool.on('connect', (c) => void wrap(c as never))
  return pool
}

test('no blocking form: sync calls and a sync connect fail with ERR_NOT_SUPPORTED; a bad table name is refused', async (t) => {
  const server = await sharedPostgres()
  const { db, raw } = await open(server)
  t.throws(() => k.get(db, 'a', { sync: true }), { code: 'ERR_NOT_SUPPORTED' } as never)
  t.throws(() => k.assoc(db, 'a', 1, { sync: true }), { code: 'ERR_NOT_SUPPORTED' } as never)
  await t.throwsAsync(connectPostgresStore({ connectionString: server.url, sync: true }), { code: 'ERR_NOT_SUPPORTED' } as never)
  for (const bad of ['x; DROP TABLE y', 'a"b', '1abc', 'a.b.c', '', 'x'.repeat(51)]) {
    await t.throwsAsync(connectPostgresStore({ connectionString: server.url, table: bad }), { code: 'ERR_INVALID_ARGUMENT' } as never, bad)
  }
  await k.close(db)
  await raw.end()
})

/** The key file of a row: the file column, with a blob's chunks put between its head and its table. */
async function keyFile(raw: pg.Pool, t: string, row: { name: string; kind: number; head_len: number; file: Buffer; gen: string }) {
  if (row.kind !== 1) return { file: row.file, chunks: 0 }
  const chunks = await raw.query(`SELECT data FROM "${t}_chunks" WHERE name = $1 AND gen = $2 ORDER BY idx`, [row.name, row.gen])
  const file = Buffer.concat([row.file.subarray(0, row.head_len), ...chunks.rows.map((c) => c.data), row.file.subarray(row.head_len)])
  return { file, chunks: chunks.rows.length }
}

for (const [name, codec] of [
  ['plain', {}],
  ['lz4+aes', { compressor: { type: 'lz4' as const }, encryptor: { type: 'aes' as const, key: 'k' } }],
] as const) {
  test(`${name}: a value and a blob in PostgreSQL are key files byte for byte (read back by native and pure file stores)`, async (t) => {
    const { t: tb, db, raw } = await open(await sharedPostgres(), codec)
    const blob = Buffer.alloc(2.5 * 1024 * 1024 + 7)
    for (let i = 0; i < blob.length; i++) blob[i] = (i * 31) % 251
    await k.assoc(db, ['doc', 1], { hello: 'world', n: [1, 2, 3] })
    await k.bassoc(db, 'blob', blob)
    const dir = tempDir()
    const rows = await raw.query(`SELECT name, kind, head_len, file, gen FROM "${tb}" ORDER BY name`)
    t.is(rows.rows.length, 2)
    t.deepEqual(rows.rows.map((r) => r.kind).sort(), [0, 1])
    for (const row of rows.rows) {
      const { file, chunks } = await keyFile(raw, tb, row)
      if (row.kind === 1) t.is(chunks, 3) // three chunks of 1 MiB at most
      writeFileSync(join(dir, `${row.name}.ksv`), file)
    }
    for (const native of [true, false]) {
      const fs = await k.connectFsStore(dir, { native, ...codec })
      t.deepEqual(await k.get(fs, ['doc', 1]), { hello: 'world', n: [1, 2, 3] })
      t.true(Buffer.from((await k.readBlob(fs, 'blob'))!).equals(blob))
      await k.close(fs)
    }
    await k.close(db)
    await raw.end()
  })
}

test('blobs stream: each chunk goes to the server as it is written and comes back as it is read (bounded memory)', async (t) => {
  const server = await sharedPostgres()
  const seen: Array<{ text: string; values?: unknown[] }> = []
  const pool = spyPool(server, seen)
  const db = await connectPostgresStore({ pool, table: table() })
  const MiB = 1 << 20
  const inserts = () => seen.filter((q) => q.text.includes('_chunks" (name, gen, idx, data)'))
  const sent: number[] = []
  async function* source() {
    for (let i = 0; i < 12; i++) {
      // What went out before this piece: every chunk sealed so far (stored as is, a chunk goes out once it is whole; nothing is kept back).
      sent.push(inserts().length)
      yield Buffer.alloc(MiB, i)
    }
  }
  await k.bassoc(db, 'big', source())
  t.deepEqual(sent, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
  t.is(inserts().length, 12)
  // Each insert carries one chunk (1 MiB), as a binary parameter.
  for (const q of inserts()) t.true(Buffer.isBuffer(q.values![3]) && (q.values![3] as Buffer).length <= MiB + 1024)
  // Reading: one chunk per query, fetched as the stream is consumed: at most
  // two chunks ahead of it (a Node stream reads two pieces ahead, ts/node/streams.ts).
  seen.length = 0
  const chunkReads = () => seen.filter((q) => /SELECT data FROM .*_chunks" WHERE name = \$1 AND gen = \$2 AND idx = \$3/.test(q.text)).length
  const stream = (await k.readBlob(db, 'big', { as: 'stream' }))!
  let bytes = 0
  let i = 0
  for await (const piece of stream) {
    bytes += piece.length
    t.true(chunkReads() <= Math.floor((bytes - 1) / MiB) + 1 + 2, `${chunkReads()} chunks read after ${bytes} bytes`)
    if (i++ === 0) t.true(chunkReads() <= 3)
  }
  t.is(bytes, 12 * MiB)
  t.is(chunkReads(), 12)
  await k.close(db)
  // The store did not end a pool it was given.
  t.is((await pool.query('SELECT 1 AS x')).rows[0].x, 1)
  await pool.end()
})

test('blobs: a blob opened before a replace reads on (grace); an aborted write leaves nothing and keeps the old blob', async (t) => {
  const { t: tb, db, raw } = await open(await sharedPostgres(), { blobGraceMs: 60_000 })
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
  const gens = await raw.query(`SELECT gen, count(*)::int AS n, bool_and(until IS NOT NULL) AS dropped FROM "${tb}_chunks" GROUP BY gen ORDER BY n`)
  // The new one (one chunk) is live, the old one (three) waits out its grace.
  t.deepEqual(
    gens.rows.map((r) => [r.n, r.dropped]),
    [
      [1, false],
      [3, true],
    ],
  )
  // An aborted write: a source that fails after two chunks.
  async function* failing() {
    yield Buffer.alloc(2 << 20, 9)
    throw new Error('source broke')
  }
  await t.throwsAsync(k.bassoc(db, 'b', failing()))
  t.is((await k.readBlob(db, 'b'))!.toString(), 'new')
  t.is((await raw.query(`SELECT count(*)::int AS n FROM "${tb}_chunks"`)).rows[0].n, 4)
  // Past the grace, a later write deletes the old generation.
  await raw.query(`UPDATE "${tb}_chunks" SET until = now() - interval '1 second' WHERE until IS NOT NULL`)
  await k.dissoc(db, 'b')
  t.is((await raw.query(`SELECT count(*)::int AS n FROM "${tb}_chunks" WHERE until IS NULL`)).rows[0].n, 0)
  t.is((await raw.query(`SELECT count(*)::int AS n FROM "${tb}"`)).rows[0].n, 0)
  await k.close(db)
  await raw.end()
})

test('logs are rows of the records table; trimLog deletes from the front', async (t) => {
  const { t: tb, db, raw } = await open(await sharedPostgres())
  for (let i = 0; i < 5; i++) await k.append(db, 'log', { i })
  const count = async () => (await raw.query(`SELECT count(*)::int AS n FROM "${tb}_records"`)).rows[0].n
  t.is(await count(), 5)
  await k.trimLog(db, 'log', { keepLast: 2 })
  t.is(await count(), 2)
  t.deepEqual(await k.log(db, 'log'), [{ i: 3 }, { i: 4 }])
  t.is(await k.append(db, 'log', { i: 5 }), 3)
  t.deepEqual(
    (await raw.query(`SELECT idx FROM "${tb}_records" ORDER BY idx`)).rows.map((r) => Number(r.idx)),
    [3, 4, 5],
  )
  // A log replaced by a value leaves no records behind.
  await k.assoc(db, 'log', 'plain')
  t.is(await count(), 0)
  await k.close(db)
  await raw.end()
})

test('foreign or damaged rows are typed errors naming the key, never a crash', async (t) => {
  const { t: tb, db, raw } = await open(await sharedPostgres())
  await k.assoc(db, 'a', 1)
  await k.bassoc(db, 'b', Buffer.alloc(3 << 20, 2))
  await k.append(db, 'l', 1)
  const nameOf = async (kind: number) => (await raw.query(`SELECT name FROM "${tb}" WHERE kind = $1`, [kind])).rows[0].name as string
  const [a, b, l] = [await nameOf(0), await nameOf(1), await nameOf(2)]
  const corrupt = async (key: string, p: Promise<unknown>, code: k.KonserveError['code'] = 'ERR_CORRUPT') => {
    const err = await t.throwsAsync(p, { instanceOf: k.KonserveError })
    t.is(err!.code, code, err!.message)
    t.is(err!.key, key)
  }
  // A truncated value.
  await raw.query(`UPDATE "${tb}" SET file = substring(file from 1 for length(file) - 1) WHERE name = $1`, [a])
  await corrupt('a', k.get(db, 'a'))
  // A head that is not konserve's, and a row cut short of its head.
  await raw.query(`UPDATE "${tb}" SET file = 'not a konserve head, but long enough to be one: 0123456789' WHERE name = $1`, [a])
  await corrupt('a', k.get(db, 'a'))
  await corrupt('a', k.getMeta(db, 'a'))
  await raw.query(`UPDATE "${tb}" SET file = '\\x00' WHERE name = $1`, [a])
  await corrupt('a', k.get(db, 'a'))
  await raw.query(`UPDATE "${tb}" SET kind = 7 WHERE name = $1`, [a])
  await corrupt('a', k.get(db, 'a'))
  // A blob missing a chunk, and a damaged one.
  await raw.query(`DELETE FROM "${tb}_chunks" WHERE name = $1 AND idx = 1`, [b])
  await corrupt('b', k.get(db, 'b'))
  await corrupt('b', k.readBlob(db, 'b'), 'ERR_IO')
  await raw.query(`UPDATE "${tb}_chunks" SET data = substring(data from 2) WHERE name = $1 AND idx = 0`, [b])
  await corrupt('b', k.readBlob(db, 'b'))
  // A damaged log record.
  await raw.query(`UPDATE "${tb}_records" SET data = substring(data from 2) WHERE name = $1`, [l])
  await corrupt('l', k.log(db, 'l'))
  // A foreign row: listed as corrupt, not thrown.
  await raw.query(`INSERT INTO "${tb}" (name, kind, head_len, file) VALUES ('foreign', 0, 0, '\\x00')`)
  const bad: k.KonserveError[] = []
  const keys = await k.keys(db, { onCorrupt: (e) => bad.push(e) })
  t.deepEqual(keys.map((m) => m.key).sort(), ['b', 'l'])
  t.deepEqual(bad.map((e) => e.code).sort(), ['ERR_CORRUPT', 'ERR_CORRUPT'])
  t.true(bad.some((e) => /foreign/.test(e.file ?? '')))
  await k.close(db)
  await raw.end()
})


test('updateIn from two processes x 1000 on one key ends exact', async (t) => {
  const server = await sharedPostgres()
  const tb = table()
  const script = `
    const { updateIn, close } = await import(${dist('index.mjs')})
    const { connectPostgresStore } = await import(${dist('postgres.mjs')})
    const db = await connectPostgresStore({ connectionString: process.argv[2], table: process.argv[3] })
    for (let i = 0; i < 1000; i++) await updateIn(db, ['n'], (x = 0) => x + 1)
    await close(db)
  `
  const a = child(script, [server.url, tb])
  const b = child(script, [server.url, tb])
  t.deepEqual(await Promise.all([a.exit, b.exit]), [0, 0])
  const db = await connectPostgresStore({ connectionString: server.url, table: tb })
  t.is(await k.get(db, 'n'), 2000)
  t.is((await k.getMeta(db, 'n'))!.revision, 2000)
  await k.close(db)
})

test("a killed client's lock ends with its connection and the other writer proceeds", async (t) => {
  const server = await sharedPostgres()
  const tb = table()
  const holder = child(
    `
    const { updateIn } = await import(${dist('index.mjs')})
    const { connectPostgresStore } = await import(${dist('postgres.mjs')})
    const db = await connectPostgresStore({ connectionString: process.argv[2], table: process.argv[3] })
    await updateIn(db, ['k'], async () => { console.log('locked'); await new Promise(() => {}) })
  `,
    [server.url, tb],
  )
  await holder.saw('locked')
  // While the holder lives, a short wait times out naming it (host:pid).
  const short = await connectPostgresStore({ connectionString: server.url, table: tb, lockTimeoutMs: 100 })
  const err = await t.throwsAsync(k.assoc(short, 'k', 0), { code: 'ERR_LOCK_TIMEOUT' } as never)
  t.regex(err!.message, new RegExp(`:${holder.proc.pid}\\b`))
  // Other keys are not blocked.
  await k.assoc(short, 'other', 1)
  const db = await connectPostgresStore({ connectionString: server.url, table: tb, lockTimeoutMs: 30_000 })
  const waiting = k.updateIn(db, ['k'], (x: number | undefined) => (x ?? 0) + 1)
  holder.proc.kill('SIGKILL')
  await holder.exit
  t.deepEqual(await waiting, [undefined, 1])
  await k.close(db)
  await k.close(short)
})

test('a server stopped mid-operation gives ERR_BACKEND_UNAVAILABLE and no partial value; the store recovers when it returns', async (t) => {
  const server = await startPostgres()
  try {
    const db = await connectPostgresStore({ connectionString: server.url })
    const blob = Buffer.alloc(3 << 20, 5)
    await k.assoc(db, 'a', 1)
    await k.multiAssoc(db, { m1: 1, m2: 1 })
    await k.bassoc(db, 'blob', blob)
    // Mid updateIn: the lock is held, the new value not yet written.
    await t.throwsAsync(
      k.updateIn(db, ['a'], async (x: number) => {
        await server.stop()
        return x + 1
      }),
      { code: 'ERR_BACKEND_UNAVAILABLE' } as never,
    )
    await t.throwsAsync(k.get(db, 'a'), { code: 'ERR_BACKEND_UNAVAILABLE' } as never)
    await t.throwsAsync(k.multiAssoc(db, { m1: 2, m2: 2 }), { code: 'ERR_BACKEND_UNAVAILABLE' } as never)
    await t.throwsAsync(connectPostgresStore({ connectionString: server.url }), { code: 'ERR_BACKEND_UNAVAILABLE' } as never)
    await server.start()
    // Mid blob write: two chunks are out, then the server goes.
    async function* source() {
      yield Buffer.alloc(2 << 20, 6)
      yield Buffer.alloc(1 << 20, 6)
      await server.stop()
      yield Buffer.alloc(1 << 20, 6)
    }
    await t.throwsAsync(k.bassoc(db, 'blob', source()), { code: 'ERR_BACKEND_UNAVAILABLE' } as never)
    await server.start()
    // Nothing partial: the old values, the old blob.
    t.is(await k.get(db, 'a'), 1)
    t.deepEqual([await k.get(db, 'm1'), await k.get(db, 'm2')], [1, 1])
    t.true((await k.readBlob(db, 'blob'))!.equals(blob))
    // And it works again.
    t.deepEqual(await k.updateIn(db, ['a'], (x: number) => x + 1), [1, 2])
    await k.bassoc(db, 'blob', Buffer.from('small'))
    t.is((await k.readBlob(db, 'blob'))!.toString(), 'small')
    await k.close(db)
  } finally {
    await server.remove()
  }
})

test("the registry: import 'konserve/postgres', then createStore, connectStore, storeExists, deleteStore with backend 'postgres'", async (t) => {
  const server = await sharedPostgres()
  const config = { backend: 'postgres', connectionString: server.url, table: `public.${table()}` }
  t.true(k.registeredBackends().includes('postgres'))
  t.false(await k.storeExists(config))
  await t.throwsAsync(k.connectStore(config), { code: 'ERR_STORE_NOT_FOUND' } as never)
  const db = await k.createStore(config)
  await k.assoc(db, 'x', { y: 1 })
  t.true(await k.storeExists(config))
  await t.throwsAsync(k.createStore(config), { code: 'ERR_STORE_EXISTS' } as never)
  const again = await k.connectStore(config)
  t.deepEqual(await k.get(again, 'x'), { y: 1 })
  t.throws(() => k.connectStore(config, { sync: true }), { code: 'ERR_NOT_SUPPORTED' } as never)
  await k.releaseStore(again)
  await k.close(db)
  // A store of this process still open on the table is ended by deleteStore: ERR_STORE_DELETED, not a missing relation.
  const open = await k.connectStore(config)
  await k.deleteStore(config)
  t.false(await k.storeExists(config))
  await t.throwsAsync(k.get(open, 'x'), { code: 'ERR_STORE_DELETED' } as never)
  // With a pool of the caller's: used, not ended.
  const pool = new pg.Pool({ connectionString: server.url, max: 2 })
  const withPool = { backend: 'postgres', pool, table: table() }
  const s = await k.createStore(withPool)
  await k.assoc(s, 'z', 1)
  await k.close(s)
  t.true(await k.storeExists(withPool))
  await k.deleteStore(withPool)
  t.false(await k.storeExists(withPool))
  await pool.end()
})
