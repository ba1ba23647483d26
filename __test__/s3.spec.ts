/**
 * The S3 store beyond the compliance suite (which runs on it too), against a
 * real SeaweedFS server (`weed server -s3`, one per test file, helpers/s3.ts):
 * - no blocking form; the objects are key files byte for byte (a file store
 *   reads them); a 20 MB blob streams in as multipart parts and out as ranged
 *   GETs, no request carrying more than a part; replace and abort;
 * - logs are a head object plus one object per record; trimLog drops records;
 * - foreign or truncated objects are typed errors naming the object;
 * - updateIn from two processes ends exact; a killed client's lock lapses;
 * - a server killed mid-upload gives ERR_BACKEND_UNAVAILABLE and no partial
 *   object, and the store works again once it is back;
 * - the registry (`backend: 's3'`) and the tiering recipe (a file store in
 *   front, write-through).
 */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import test from 'ava'
import { GetObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3'
import * as k from 'konserve'
import { connectS3Store } from 'konserve/s3'
import { child as spawnChild, dist } from './helpers/child.js'
import { tempDir } from './helpers/api.js'
import { ACCESS, BUCKET, type WeedServer, sharedWeed } from './helpers/s3.js'

let n = 0
const prefix = () => `s${process.pid}-${++n}`

async function open(options: object = {}) {
  const server = await sharedWeed()
  const p = prefix()
  const db = await connectS3Store({ bucket: BUCKET, prefix: p, endpoint: server.endpoint, credentials: ACCESS, ...options })
  return { p, db, s3: server.client(), server }
}

async function objects(s3: S3Client, p: string): Promise<string[]> {
  const r = await s3.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: `${p}/` }))
  return (r.Contents ?? []).map((c) => c.Key!).sort()
}

async function body(s3: S3Client, key: string): Promise<Buffer> {
  const r = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }))
  return Buffer.from(await r.Body!.transformToByteArray())
}

/** A client that records every request: operation, request body length, response body length. */
function counting(server: WeedServer) {
  const client = server.client()
  const log: Array<{ op: string; sent: number; got: number }> = []
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const req = args.request as { headers: Record<string, string> }
      const r = await next(args)
      const res = r.response as { headers: Record<string, string> }
      log.push({ op: String(context.commandName), sent: Number(req.headers['content-length'] ?? 0), got: Number(res.headers['content-length'] ?? 0) })
      return r
    },
    { step: 'finalizeRequest' },
  )
  return { client, log }
}

/** A stream of `size` patterned bytes in pieces of 64 KiB; `at(bytes)` runs before each piece. */
function source(size: number, at?: (sent: number) => Promise<void> | void) {
  return Readable.from(
    (async function* () {
      for (let sent = 0; sent < size; sent += 65536) {
        await at?.(sent)
        const piece = Buffer.alloc(Math.min(65536, size - sent))
        for (let i = 0; i < piece.length; i++) piece[i] = ((sent + i) * 31) % 251
        yield piece
      }
    })(),
  )
}

test('no blocking form: sync calls and a sync connect fail with ERR_NOT_SUPPORTED', async (t) => {
  const { db } = await open()
  t.throws(() => k.get(db, 'a', { sync: true }), { code: 'ERR_NOT_SUPPORTED' } as never)
  t.throws(() => k.assoc(db, 'a', 1, { sync: true }), { code: 'ERR_NOT_SUPPORTED' } as never)
  await t.throwsAsync(connectS3Store({ bucket: BUCKET, endpoint: 'http://127.0.0.1:1', sync: true }), { code: 'ERR_NOT_SUPPORTED' } as never)
  await k.close(db)
})

for (const [name, codec] of [
  ['plain', {}],
  ['lz4+aes', { compressor: { type: 'lz4' as const }, encryptor: { type: 'aes' as const, key: 'k' } }],
] as const) {
  test(`${name}: a value and a blob in S3 are key files byte for byte (read back by native and pure file stores)`, async (t) => {
    const { p, db, s3 } = await open(codec)
    const blob = Buffer.alloc(2.5 * 1024 * 1024 + 7)
    for (let i = 0; i < blob.length; i++) blob[i] = (i * 31) % 251
    await k.assoc(db, ['doc', 1], { hello: 'world', n: [1, 2, 3] })
    await k.bassoc(db, 'blob', blob)
    const dir = tempDir()
    const mains = (await objects(s3, p)).filter((o) => o.startsWith(`${p}/k/`))
    t.is(mains.length, 2)
    for (const main of mains) {
      const bytes = await body(s3, main)
      // Encrypted: no plaintext in the object (DESIGN.md §4.8).
      if (name === 'lz4+aes') t.false(bytes.includes('world'), main)
      writeFileSync(join(dir, `${main.slice(main.lastIndexOf('/') + 1)}.ksv`), bytes)
    }
    for (const native of [true, false]) {
      const fs = await k.connectFsStore(dir, { native, ...codec })
      t.deepEqual(await k.get(fs, ['doc', 1]), { hello: 'world', n: [1, 2, 3] })
      t.true(Buffer.from((await k.readBlob(fs, 'blob'))!).equals(blob))
      await k.close(fs)
    }
    await k.close(db)
  })
}

test('a 20 MB blob streams in as multipart parts and out as ranged GETs: no request carries more than a part', async (t) => {
  const server = await sharedWeed()
  const { client, log } = counting(server)
  const p = prefix()
  const partSize = 5 * 1024 * 1024
  const db = await connectS3Store({ bucket: BUCKET, prefix: p, client, partSize })
  const size = 20 * 1024 * 1024 + 3
  await k.bassoc(db, 'big', source(size))
  const uploads = log.filter((r) => r.op === 'UploadPartCommand')
  t.is(uploads.length, 5) // 21 chunks: the first 5 held for part 1 (sent at commit with the head), parts 2-4 of 5 chunks as they fill, part 5 the last chunk + table
  t.true(log.every((r) => r.sent <= partSize + 2 * 1024 * 1024), JSON.stringify(log.map((r) => r.sent)))
  t.true(log.some((r) => r.op === 'CompleteMultipartUploadCommand'))
  log.length = 0
  let got = 0
  let at = 0
  let same = true
  for await (const piece of (await k.readBlob(db, 'big', { as: 'stream' }))!) {
    for (let i = 0; i < piece.length; i++) if (piece[i] !== ((at + i) * 31) % 251) same = false
    at += piece.length
    got++
  }
  t.true(same)
  t.is(at, size)
  t.true(got >= 20)
  const gets = log.filter((r) => r.op === 'GetObjectCommand')
  t.true(gets.every((r) => r.got <= 2 * 1024 * 1024), JSON.stringify(gets.map((r) => r.got)))
  // A range read fetches only the chunks it touches.
  log.length = 0
  const mid = (await k.readBlob(db, 'big', { offset: 10 * 1024 * 1024 + 5, length: 10 }))!
  t.is(mid.length, 10)
  t.is(mid[0], ((10 * 1024 * 1024 + 5) * 31) % 251)
  t.true(log.reduce((a, r) => a + r.got, 0) < 1.2 * 1024 * 1024)
  await k.close(db)
  client.destroy()
})

test('a blob replaced, and a blob write that fails midway: the old blob stays, no upload is left behind', async (t) => {
  const { p, db, s3 } = await open({ partSize: 5 * 1024 * 1024 })
  await k.bassoc(db, 'b', Buffer.from('old'))
  await k.bassoc(db, 'b', Buffer.from('newer'))
  t.is((await k.readBlob(db, 'b'))!.toString(), 'newer')
  const boom = source(12 * 1024 * 1024, (sent) => {
    if (sent >= 11 * 1024 * 1024) throw new Error('source failed')
  })
  await t.throwsAsync(k.bassoc(db, 'b', boom))
  t.is((await k.readBlob(db, 'b'))!.toString(), 'newer')
  const uploads = async () => (await s3.send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: `${p}/` }))).Uploads ?? []
  // The abort is sent when the write fails; a later close waits for nothing: poll the server's list.
  for (let i = 0; i < 100 && (await uploads()).length > 0; i++) await new Promise((r) => setTimeout(r, 50))
  t.deepEqual(await uploads(), [])
  await k.close(db)
})

test('logs: a head object and one object per record; trimLog drops records', async (t) => {
  const { p, db, s3 } = await open()
  for (let i = 0; i < 5; i++) await k.append(db, 'log', { i })
  const records = async () => (await objects(s3, p)).filter((o) => o.startsWith(`${p}/l/`))
  t.is((await records()).length, 5)
  await k.trimLog(db, 'log', { keepLast: 2 })
  t.is((await records()).length, 2)
  t.deepEqual(await k.log(db, 'log'), [{ i: 3 }, { i: 4 }])
  t.is(await k.append(db, 'log', { i: 5 }), 3)
  t.deepEqual(await k.log(db, 'log'), [{ i: 3 }, { i: 4 }, { i: 5 }])
  t.is((await k.getMeta(db, "log"))!.type, 'append-log')
  await k.dissoc(db, 'log')
  // Closed: the lock object (kept a moment after the unlock for a next write) is gone too.
  await k.close(db)
  t.deepEqual(await objects(s3, p), [])
})

test('foreign or truncated objects under the prefix are typed errors naming the object, never a crash', async (t) => {
  const { p, db, s3 } = await open()
  await k.assoc(db, 'a', { x: 'some value' })
  const [main] = (await objects(s3, p)).filter((o) => o.startsWith(`${p}/k/`))
  const whole = await body(s3, main!)
  await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: main!, Body: whole.subarray(0, whole.length - 3) }))
  const e1 = (await t.throwsAsync(k.get(db, 'a'), { code: 'ERR_CORRUPT' } as never)) as k.KonserveError | undefined
  t.is(e1!.file, `s3://${BUCKET}/${main}`)
  t.is(e1!.key, 'a')
  await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: main!, Body: 'not a konserve object at all, longer than a header is: 48 bytes+' }))
  await t.throwsAsync(k.get(db, 'a'), { code: 'ERR_CORRUPT' } as never)
  await t.throwsAsync(k.getMeta(db, 'a'), { code: 'ERR_CORRUPT' } as never)
  await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: `${p}/k/README.txt`, Body: 'hello' }))
  const bad: k.KonserveError[] = []
  t.deepEqual(await k.keys(db, { onCorrupt: (e) => bad.push(e) }), [])
  t.deepEqual(bad.map((e) => e.code).sort(), ['ERR_CORRUPT', 'ERR_CORRUPT'])
  t.true(bad.some((e) => e.file === `s3://${BUCKET}/${p}/k/README.txt`))
  // A damaged key is replaced by a write.
  await k.assoc(db, 'a', 2)
  t.is(await k.get(db, 'a'), 2)
  await k.close(db)
})

/** A child with the AWS SDK's Node-version warning silenced. */
const child = (script: string, args: string[]) => spawnChild(script, args, { nodeOptions: '--no-warnings' })
const connect = `connectS3Store({ bucket: ${JSON.stringify(BUCKET)}, prefix: process.argv[3], endpoint: process.argv[2], credentials: ${JSON.stringify(ACCESS)}`

test('updateIn from two processes x 200 on one key ends exact', async (t) => {
  const server = await sharedWeed()
  const p = prefix()
  const script = `
    const { updateIn, close } = await import(${dist('index.mjs')})
    const { connectS3Store } = await import(${dist('s3.mjs')})
    const db = await ${connect} })
    for (let i = 0; i < 200; i++) await updateIn(db, ['n'], (x = 0) => x + 1)
    await close(db)
  `
  const a = child(script, [server.endpoint, p])
  const b = child(script, [server.endpoint, p])
  t.deepEqual(await Promise.all([a.exit, b.exit]), [0, 0])
  const db = await connectS3Store({ bucket: BUCKET, prefix: p, endpoint: server.endpoint, credentials: ACCESS })
  t.is(await k.get(db, 'n'), 400)
  t.is((await k.getMeta(db, 'n'))!.revision, 400)
  await k.close(db)
})

test("a killed client's lock lapses after its lease and the other writer proceeds", async (t) => {
  const server = await sharedWeed()
  const p = prefix()
  const holder = child(
    `
    const { updateIn } = await import(${dist('index.mjs')})
    const { connectS3Store } = await import(${dist('s3.mjs')})
    const db = await ${connect}, lockLeaseMs: 1500 })
    await updateIn(db, ['k'], async () => { console.log('locked'); await new Promise(() => {}) })
  `,
    [server.endpoint, p],
  )
  await holder.saw('locked')
  const base = { bucket: BUCKET, prefix: p, endpoint: server.endpoint, credentials: ACCESS }
  // While the holder lives (renewing), a short wait times out naming it.
  const short = await connectS3Store({ ...base, lockTimeoutMs: 100 })
  const err = await t.throwsAsync(k.assoc(short, 'k', 0), { code: 'ERR_LOCK_TIMEOUT' } as never)
  t.regex(err!.message, new RegExp(`:${holder.proc.pid}`))
  holder.proc.kill('SIGKILL')
  await holder.exit
  const db = await connectS3Store({ ...base, lockTimeoutMs: 20_000 })
  t.deepEqual(await k.updateIn(db, ['k'], (x: number | undefined) => (x ?? 0) + 1), [undefined, 1])
  await k.close(db)
  await k.close(short)
})

test('a write whose lock lapsed while another writer wrote is refused (fenced) and writes nothing', async (t) => {
  const { p, db, s3 } = await open()
  // What another writer would write: the key file of k = 10 (the same bytes under any prefix).
  const elsewhere = await open()
  await k.assoc(elsewhere.db, 'k', 10)
  const [theirs] = (await objects(s3, elsewhere.p)).filter((o) => o.startsWith(`${elsewhere.p}/k/`))
  await k.assoc(db, 'k', 1)
  const err = await t.throwsAsync(
    k.updateIn(db, ['k'], async (x: number) => {
      // Our lease lapsed; another client took the lock over and wrote.
      const [lock] = (await objects(s3, p)).filter((o) => o.startsWith(`${p}/x/`))
      await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: lock!, Body: 'someone else' }))
      await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: `${p}/k/${theirs!.slice(theirs!.lastIndexOf('/') + 1)}`, Body: await body(s3, theirs!) }))
      return x + 1
    }),
  )
  t.is((err as k.KonserveError).code, 'ERR_LOCK')
  t.is(await k.get(db, 'k'), 10)
  await k.close(db)
  await k.close(elsewhere.db)
})

test.serial('a server killed mid-upload: ERR_BACKEND_UNAVAILABLE, no partial object; the store works again once it is back', async (t) => {
  const { p, db, s3, server } = await open({ partSize: 5 * 1024 * 1024, maxAttempts: 1 })
  await k.assoc(db, 'a', 'before')
  let killed = false
  const src = source(16 * 1024 * 1024, async (sent) => {
    // Parts 2 and 3 have gone up (the first 5 MiB are held for part 1): kill the server.
    if (!killed && sent >= 15 * 1024 * 1024) {
      killed = true
      await server.kill()
    }
  })
  await t.throwsAsync(k.bassoc(db, 'a', src), { code: 'ERR_BACKEND_UNAVAILABLE' } as never)
  t.true(killed)
  await t.throwsAsync(k.get(db, 'a'), { code: 'ERR_BACKEND_UNAVAILABLE' } as never)
  await t.throwsAsync(connectS3Store({ bucket: BUCKET, endpoint: server.endpoint, credentials: ACCESS, maxAttempts: 1 }), { code: 'ERR_BACKEND_UNAVAILABLE' } as never)
  await server.restart()
  t.is(await k.get(db, 'a'), 'before')
  t.deepEqual((await objects(s3, p)).filter((o) => !o.startsWith(`${p}/x/`)).length, 1)
  // The upload the failure left: aborted by the store's next blob write, once the server is back.
  await k.bassoc(db, 'b', Buffer.from('after'))
  t.is((await k.readBlob(db, 'b'))!.toString(), 'after')
  const uploads = async () => (await s3.send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: `${p}/` }))).Uploads ?? []
  for (let i = 0; i < 100 && (await uploads()).length > 0; i++) await new Promise((r) => setTimeout(r, 50))
  t.deepEqual(await uploads(), [])
  await k.close(db)
})

test("the registry: createStore / connectStore / storeExists / deleteStore with { backend: 's3' }", async (t) => {
  const server = await sharedWeed()
  const config = { backend: 's3', bucket: BUCKET, prefix: prefix(), endpoint: server.endpoint, credentials: ACCESS }
  t.false(await k.storeExists(config))
  await t.throwsAsync(k.connectStore(config), { code: 'ERR_STORE_NOT_FOUND' } as never)
  const db = await k.createStore(config)
  await k.assoc(db, 'a', 1)
  await t.throwsAsync(k.createStore(config), { code: 'ERR_STORE_EXISTS' } as never)
  t.true(await k.storeExists(config))
  const again = await k.connectStore(config)
  t.is(await k.get(again, 'a'), 1)
  t.throws(() => k.storeExists(config, { sync: true }), { code: 'ERR_NOT_SUPPORTED' } as never)
  await k.releaseStore(again)
  await k.releaseStore(db)
  // A store of this process still open on the prefix is ended by deleteStore: ERR_STORE_DELETED,
  // not an empty store that a later write would quietly fill again (objects under a deleted store's prefix).
  const open = await k.connectStore(config)
  const direct = await connectS3Store({ bucket: BUCKET, prefix: config.prefix, endpoint: server.endpoint, credentials: ACCESS })
  const elsewhere = await k.createStore({ ...config, prefix: prefix() })
  await k.deleteStore(config)
  t.false(await k.storeExists(config))
  t.deepEqual(await objects(server.client(), config.prefix), [])
  await t.throwsAsync(k.get(open, 'a'), { code: 'ERR_STORE_DELETED', message: /was deleted \(deleteStore\)/ } as never)
  await t.throwsAsync(k.assoc(direct, 'b', 2), { code: 'ERR_STORE_DELETED' } as never)
  t.deepEqual(await objects(server.client(), config.prefix), [])
  // A store on another prefix is not touched.
  await k.assoc(elsewhere, 'c', 3)
  t.is(await k.get(elsewhere, 'c'), 3)
  await k.close(elsewhere)
})

test('tiering: a file store in front of S3, write-through; the blobs read back from S3 alone', async (t) => {
  const server = await sharedWeed()
  const p = prefix()
  // The recipe (docs/BACKENDS.md "S3: a file store in front"):
  const front = await k.connectFsStore(join(tempDir(), 'front'))
  const back = await connectS3Store({ bucket: BUCKET, prefix: p, endpoint: server.endpoint, credentials: ACCESS })
  const db = k.tieredStore(front, back, { writePolicy: 'write-through' })
  const blobs = new Map<string, Buffer>()
  for (let i = 0; i < 3; i++) {
    const b = Buffer.alloc((i + 1) * 700_000, i + 1)
    blobs.set(`blob${i}`, b)
    await k.bassoc(db, `blob${i}`, b)
  }
  await k.close(db)
  const alone = await connectS3Store({ bucket: BUCKET, prefix: p, endpoint: server.endpoint, credentials: ACCESS })
  for (const [key, b] of blobs) t.true((await k.readBlob(alone, key))!.equals(b), key)
  t.is((await k.keys(alone)).length, 3)
  await k.close(alone)
})
