/**
 * The IndexedDB backing (ts/backends/idb/) in a real headless Chromium
 * (Debian's chromium through playwright-core, __test__/browser/harness.ts),
 * through its Backing interface: round trips with metadata, multi-key
 * atomicity, streamed blobs in bounded memory, logs, record bytes equal to
 * the key files the Node pure engine writes, no plaintext in an encrypted
 * store's IndexedDB, values across a reload and a browser restart, Web Locks
 * across two pages, strict durability, lost connections.
 */
import test from 'ava'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createPureCodec } from '../ts/backends/pure/codec.js'
import { type PureFileBacking, openPureStore } from '../ts/backends/pure/store.js'
import { fileName } from '../ts/codec/xxhash.js'
import { encodeBlobFileAsync } from '../ts/format/blob.js'
import { encodeKeyFileAsync, keyHash } from '../ts/format/file.js'
import { decodeKeyFileAsync } from '../ts/format/keyfile.js'
import { encodeKey } from '../ts/format/key.js'
import { appendLogFileAsync, decodeLogFileAsync, encodeLogFileAsync } from '../ts/format/log.js'
import { type Harness, type TestPage, launch } from './browser/harness.js'
import { pattern, seededCrypto } from './browser/shared.js'

const PAGE = fileURLToPath(new URL('./browser/idb-page.ts', import.meta.url))
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')
const unhex = (s: string) => new Uint8Array(Buffer.from(s, 'hex'))
const key = (k: unknown) => hex(encodeKey(k))
const text = (s: string) => hex(new TextEncoder().encode(s))
const MiB = 1 << 20
const META = text('{meta}')

let h: Harness
let p: TestPage
let dbs = 0
const newDb = (what: string) => `konserve-test-${what}-${++dbs}`

test.before(async () => {
  h = await launch(PAGE, { persistent: true })
  p = await h.newPage()
})
test.after.always(async () => {
  await h?.close()
})

test.serial('the test bundle has no Node built-in (none stubbed)', (t) => {
  t.deepEqual(h.stubbed, [])
})

test.serial('put, get, getMeta, exists, delete, list with metadata', async (t) => {
  const s = await p.call<number>('open', newDb('rt'))
  const big = hex(pattern(3, 0, 100_000)) // a value kept apart from its head
  await p.call('put', s, [
    { key: key('a'), serializer: 1, meta: text('meta-a'), value: text('value-a') },
    { key: key(['b', 2]), serializer: 2, meta: text('meta-b'), value: big },
    { key: key('c'), serializer: 1, meta: text('meta-c'), value: '' },
  ])
  t.deepEqual(await p.call('get', s, key('a')), { serializer: 1, meta: text('meta-a'), value: text('value-a') })
  t.deepEqual(await p.call('get', s, key(['b', 2])), { serializer: 2, meta: text('meta-b'), value: big })
  t.deepEqual(await p.call('get', s, key('c')), { serializer: 1, meta: text('meta-c'), value: '' })
  t.is(await p.call('get', s, key('nope')), undefined)
  t.deepEqual(await p.call('getMeta', s, key('a')), { key: key('a'), serializer: 1, meta: text('meta-a') })
  t.true(await p.call('exists', s, key('a')))
  t.false(await p.call('exists', s, key('nope')))
  // Overwrite a big value with a small one: the old segment goes.
  await p.call('put', s, [{ key: key(['b', 2]), serializer: 1, meta: text('meta-b2'), value: text('small') }])
  t.deepEqual(await p.call('get', s, key(['b', 2])), { serializer: 1, meta: text('meta-b2'), value: text('small') })
  const listed = await p.call<{ batches: number[]; entries: Array<{ key: string; meta: string }>; corrupt: unknown[] }>('list', s, 2)
  t.deepEqual(listed.batches, [2, 1])
  t.deepEqual(
    listed.entries.map((e) => [e.key, e.meta]).sort(),
    [
      [key('a'), text('meta-a')],
      [key(['b', 2]), text('meta-b2')],
      [key('c'), text('meta-c')],
    ].sort(),
  )
  t.deepEqual(await p.call('del', s, [key('a'), key('nope'), key(['b', 2])]), [true, false, true])
  t.is(await p.call('get', s, key('a')), undefined)
  const db = `konserve-test-rt-${dbs}`
  t.deepEqual(await p.call('counts', db), { files: 1, segments: 0, store: 0 })
  // A record that is not a key file is listed as corrupt, not hidden and not fatal.
  await p.call('plantGarbage', db, `${'0'.repeat(32)}.ksv`)
  const again = await p.call<{ entries: unknown[]; corrupt: Array<{ code: string; file: string }> }>('list', s, 10)
  t.is(again.entries.length, 1)
  t.deepEqual(again.corrupt, [{ code: 'ERR_CORRUPT', file: `${db}/${'0'.repeat(32)}.ksv` }])
  await p.call('close', s)
})

test.serial('a multi-key put is one transaction: a failure half-way writes none of it', async (t) => {
  const s = await p.call<number>('open', newDb('atomic'))
  await p.call('put', s, [{ key: key('x'), serializer: 1, meta: META, value: text('old x') }])
  await p.call('failNthPut', 1) // the second put of the next transaction (y's record) throws
  const err = await p.call<{ code: string }>('putError', s, [
    { key: key('x'), serializer: 1, meta: META, value: text('new x') },
    { key: key('y'), serializer: 1, meta: META, value: text('new y') },
  ])
  t.is(err?.code, 'ERR_IO')
  t.is((await p.call<{ value: string }>('get', s, key('x')))!.value, text('old x'))
  t.is(await p.call('get', s, key('y')), undefined)
  await p.call('close', s)
})

test.serial('writes ask for strict durability by default, relaxed when told', async (t) => {
  const before = (await p.call<unknown[]>('transactions')).length
  const s = await p.call<number>('open', newDb('durable'))
  await p.call('put', s, [{ key: key('d'), serializer: 1, meta: META, value: text('v') }])
  await p.call('del', s, [key('d')])
  const strict = (await p.call<Array<{ mode: string; asked?: string; has?: string }>>('transactions')).slice(before)
  const writes = strict.filter((x) => x.mode === 'readwrite')
  t.true(writes.length >= 2)
  for (const w of writes) t.deepEqual([w.asked, w.has], ['strict', 'strict'])
  await p.call('close', s)
  const mid = (await p.call<unknown[]>('transactions')).length
  const r = await p.call<number>('open', newDb('relaxed'), { durability: 'relaxed' })
  await p.call('put', r, [{ key: key('d'), serializer: 1, meta: META, value: text('v') }])
  const relaxed = (await p.call<Array<{ mode: string; asked?: string; has?: string }>>('transactions')).slice(mid).filter((x) => x.mode === 'readwrite')
  t.deepEqual(relaxed.at(-1), { mode: 'readwrite', asked: 'relaxed', has: 'relaxed' })
  await p.call('close', r)
})

test.serial('blobs of several chunks stream in and out, for every codec, and replace or abort cleanly', async (t) => {
  for (const opts of [{}, { compressor: 1 }, { compressor: 1, encryptionKey: 'blob key' }]) {
    const db = newDb('blob')
    const s = await p.call<number>('open', db, opts)
    const size = 3 * MiB + 12345
    await p.call('writeBlob', s, key('blob'), text('blob-meta'), size, 300_000, 5)
    const got = await p.call<{ size: number; reads: number; bad: number; meta: string }>('readBlob', s, key('blob'), 256 * 1024, 5)
    t.deepEqual(got, { size, reads: Math.ceil(size / (256 * 1024)), bad: -1, meta: text('blob-meta') }, JSON.stringify(opts))
    // Four chunks and the table, then replaced by a smaller blob: the old generation's segments go.
    t.is((await p.call<{ segments: number }>('counts', db)).segments, 5)
    await p.call('writeBlob', s, key('blob'), text('blob-meta'), 10, 3, 6)
    t.deepEqual(await p.call('readBlob', s, key('blob'), 4, 6), { size: 10, reads: 3, bad: -1, meta: text('blob-meta') })
    t.is((await p.call<{ segments: number }>('counts', db)).segments, 2)
    // An aborted blob leaves nothing, and the old one stays.
    await p.call('abortBlob', s, key('blob'), 2 * MiB + 1)
    t.deepEqual(await p.call('counts', db), { files: 1, segments: 2, store: 'encryptionKey' in opts ? 1 : 0 })
    t.deepEqual(await p.call('readBlob', s, key('blob'), 4, 6), { size: 10, reads: 3, bad: -1, meta: text('blob-meta') })
    await p.call('put', s, [{ key: key('v'), serializer: 1, meta: META, value: text('v') }])
    t.is((await p.call<{ code: string }>('openBlobError', s, key('v')))?.code, 'ERR_NOT_BINARY')
    await p.call('close', s)
  }
})

test.serial('a large blob streams in and out in bounded memory', async (t) => {
  const s = await p.call<number>('open', newDb('bigblob'))
  const size = 64 * MiB
  const { peak } = await p.call<{ peak: number }>('writeBlob', s, key('big'), META, size, MiB, 9, true)
  // A writer holding the blob would grow the heap by 64 MiB; one chunk (and one piece) is what it may hold.
  t.true(peak < 16 * MiB, `heap grew by ${(peak / MiB).toFixed(1)} MiB while 64 MiB streamed in`)
  t.log(`peak heap growth while 64 MiB streamed in: ${(peak / MiB).toFixed(1)} MiB`)
  // The control: the same measure sees a writer that keeps the blob.
  const control = await p.call<{ peak: number }>('writeBlob', s, key('big2'), META, 32 * MiB, MiB, 9, true, true)
  t.true(control.peak > 24 * MiB, `the control kept 32 MiB, the measure saw ${(control.peak / MiB).toFixed(1)} MiB`)
  const got = await p.call<{ size: number; bad: number }>('readBlob', s, key('big'), MiB, 9)
  t.is(got.size, size)
  t.is(got.bad, -1)
  await p.call('close', s)
})

test.serial('a writer that died leaves a stage the next open removes', async (t) => {
  const db = newDb('stage')
  const other = await h.newPage()
  const s = await other.call<number>('open', db)
  await other.call('put', s, [{ key: key('kept'), serializer: 1, meta: META, value: text('kept') }])
  await other.call('startBlob', s, key('half'), 2 * MiB + 5)
  t.like(await p.call('counts', db), { files: 1, segments: 2, store: 1 })
  await other.page.close() // the tab goes: its stage lock with it
  t.true((await p.call<number>('awaitStageLocks', db)) <= 1)
  const again = await p.call<number>('open', db)
  t.deepEqual(await p.call('counts', db), { files: 1, segments: 0, store: 0 })
  t.is((await p.call<{ value: string }>('get', again, key('kept')))!.value, text('kept'))
  await p.call('close', again)
})

test.serial('logs: appends, batched reads, trim, log info in get, getMeta and list', async (t) => {
  const s = await p.call<number>('open', newDb('log'))
  const rec = (i: number) => ({ serializer: 1, stamp: 1000 + i, bytes: text(`record ${i}`) })
  t.deepEqual(await p.call('append', s, key('log'), [rec(0), rec(1), rec(2)], text('log-meta')), { firstIndex: 0, lastIndex: 2, lastStamp: 1002 })
  t.deepEqual(await p.call('append', s, key('log'), [rec(3)], text('ignored')), { firstIndex: 0, lastIndex: 3, lastStamp: 1003 })
  t.deepEqual(await p.call('append', s, key('log'), [rec(4)], text('ignored')), { firstIndex: 0, lastIndex: 4, lastStamp: 1004 })
  const read = await p.call<{ batches: number[]; records: unknown[] }>('readLog', s, key('log'), 2)
  t.deepEqual(read.batches, [2, 2, 1])
  t.deepEqual(read.records, [0, 1, 2, 3, 4].map((i) => ({ index: i, ...rec(i) })))
  const info = { firstIndex: 0, lastIndex: 4, lastStamp: 1004 }
  t.deepEqual(await p.call('getMeta', s, key('log')), { key: key('log'), serializer: 0, meta: text('log-meta'), log: info })
  t.deepEqual(await p.call('get', s, key('log')), { serializer: 0, meta: text('log-meta'), value: '', log: info })
  t.deepEqual(await p.call('trimLog', s, key('log'), 3, text('trimmed')), { firstIndex: 3, lastIndex: 4, lastStamp: 1004 })
  t.deepEqual((await p.call<{ records: unknown[] }>('readLog', s, key('log'), 10)).records, [3, 4].map((i) => ({ index: i, ...rec(i) })))
  t.deepEqual(await p.call('append', s, key('log'), [rec(5)], text('ignored')), { firstIndex: 3, lastIndex: 5, lastStamp: 1005 })
  t.deepEqual((await p.call<{ entries: unknown[] }>('list', s, 10)).entries, [{ key: key('log'), meta: text('trimmed'), log: { firstIndex: 3, lastIndex: 5, lastStamp: 1005 } }])
  await p.call('put', s, [{ key: key('v'), serializer: 1, meta: META, value: text('v') }])
  t.is((await p.call<{ code: string }>('appendError', s, key('v')))?.code, 'ERR_NOT_A_LOG')
  t.is(await p.call('readLog', s, key('missing'), 1), undefined)
  await p.call('close', s)
})

/** The same writes through the Node pure engine (a real file store in a temporary directory): the key files' bytes by key. */
async function pureFiles(compressor: number, run: (b: PureFileBacking) => Promise<void>, keys: string[]): Promise<Record<string, string>> {
  const dir = mkdtempSync(join(tmpdir(), 'konserve-idb-vs-pure-'))
  try {
    const b = await openPureStore.async(dir, createPureCodec(compressor), { syncBlob: false })
    await run(b)
    await b.close?.async()
    return Object.fromEntries(keys.map((k) => [k, hex(readFileSync(join(dir, fileName(unhex(k)))))]))
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

test.serial("a record's bytes are the key file the Node pure engine writes for the same input", async (t) => {
  const rec = (i: number) => ({ serializer: 1, stamp: 2000 + i, bytes: text(`log record ${i} `.repeat(i + 1)) })
  const small = text('a small value, compressible compressible compressible')
  const large = hex(pattern(2, 0, 200_000))
  const keys = [key('small'), key('large'), key('blob'), key('log')]
  for (const compressor of [0, 1]) {
    const want = await pureFiles(
      compressor,
      async (b) => {
        await b.put.async([
          { key: unhex(keys[0]!), serializer: 1, meta: unhex(META), value: unhex(small) },
          { key: unhex(keys[1]!), serializer: 2, meta: unhex(META), value: unhex(large) },
        ])
        const sink = await b.blobWriter.async(unhex(keys[2]!), unhex(META))
        for (let at = 0; at < 2 * MiB + 77; at += 700_000) await sink.write.async(pattern(4, at, Math.min(700_000, 2 * MiB + 77 - at)))
        await sink.commit.async()
        const r = (i: number) => ({ ...rec(i), bytes: unhex(rec(i).bytes) })
        await b.append.async(unhex(keys[3]!), [r(0), r(1)], unhex(META))
        await b.append.async(unhex(keys[3]!), [r(2)], unhex(META))
        await b.append.async(unhex(keys[3]!), [r(3), r(4)], unhex(META))
        await b.trimLog.async(unhex(keys[3]!), 1, unhex(text('trimmed meta')))
        await b.append.async(unhex(keys[3]!), [r(5)], unhex(META))
      },
      keys,
    )
    const s = await p.call<number>('open', newDb('bytes'), { compressor })
    await p.call('put', s, [
      { key: keys[0], serializer: 1, meta: META, value: small },
      { key: keys[1], serializer: 2, meta: META, value: large },
    ])
    await p.call('writeBlob', s, keys[2], META, 2 * MiB + 77, 700_000, 4)
    await p.call('append', s, keys[3], [rec(0), rec(1)], META)
    await p.call('append', s, keys[3], [rec(2)], META)
    await p.call('append', s, keys[3], [rec(3), rec(4)], META)
    await p.call('trimLog', s, keys[3], 1, text('trimmed meta'))
    await p.call('append', s, keys[3], [rec(5)], META)
    for (const k of keys) {
      const got = await p.call<string>('fileBytes', s, k)
      t.is(got.length, want[k]!.length, `compressor ${compressor}, key ${k}: length`)
      t.true(got === want[k], `compressor ${compressor}, key ${k}: bytes differ`)
    }
    await p.call('close', s)
  }
})

test.serial('encrypted records are the bytes the format writes with the same salts, and Node decodes them', async (t) => {
  const secret = 'an encryption key'
  const k = key(['enc', 1])
  for (const compressor of [0, 1]) {
    // The browser store draws: the key check's salt, then the segments' salts and IVs, in order.
    const seed = 40 + compressor
    const s = await p.call<number>('open', newDb('encbytes'), { compressor, encryptionKey: secret, seed })
    const node = seededCrypto(seed)
    await node.async.randomBytes(32)
    await p.call('put', s, [{ key: k, serializer: 1, meta: META, value: text('secret value') }])
    const want = await encodeKeyFileAsync({ compressor, encryptor: 1, secret, crypto: node, keyCke: unhex(k), serializer: 1, meta: unhex(META), value: unhex(text('secret value')) })
    const got = unhex(await p.call<string>('fileBytes', s, k))
    t.true(hex(got) === hex(want), `compressor ${compressor}: value file`)
    t.deepEqual((await decodeKeyFileAsync(got, { secret, keyHash: keyHash(unhex(k)) })).value, unhex(text('secret value')))

    await p.call('writeBlob', s, key('eblob'), META, MiB + 3, 100_000, 8)
    const blob = await encodeBlobFileAsync({ compressor, encryptor: 1, secret, crypto: node, keyCke: encodeKey('eblob'), meta: unhex(META), value: pattern(8, 0, MiB + 3) })
    t.true((await p.call<string>('fileBytes', s, key('eblob'))) === hex(blob), `compressor ${compressor}: blob file`)

    const recs = [0, 1, 2].map((i) => ({ index: i, serializer: 1, stamp: 10 + i, bytes: new TextEncoder().encode(`secret record ${i}`) }))
    const asPage = (r: (typeof recs)[number]) => ({ serializer: r.serializer, stamp: r.stamp, bytes: hex(r.bytes) })
    await p.call('append', s, key('elog'), recs.slice(0, 2).map(asPage), META)
    await p.call('append', s, key('elog'), recs.slice(2).map(asPage), META)
    let log = await encodeLogFileAsync({ compressor, encryptor: 1, secret, crypto: node, keyCke: encodeKey('elog'), meta: unhex(META), records: recs.slice(0, 2) })
    log = await appendLogFileAsync(log, { secret, crypto: node, keyCke: encodeKey('elog'), records: recs.slice(2) })
    const gotLog = unhex(await p.call<string>('fileBytes', s, key('elog')))
    t.true(hex(gotLog) === hex(log), `compressor ${compressor}: log file`)
    t.deepEqual((await decodeLogFileAsync(gotLog, { secret, keyHash: keyHash(encodeKey('elog')) })).records, recs)
    await p.call('close', s)
  }
})

test.serial("an encrypted store's IndexedDB holds no plaintext of values, metadata or keys", async (t) => {
  const needles = ['KEY-PLAINTEXT', 'META-PLAINTEXT', 'VALUE-PLAINTEXT', 'BLOB-PLAINTEXT', 'LOG-PLAINTEXT']
  const fill = async (db: string, opts: object) => {
    const s = await p.call<number>('open', db, opts)
    await p.call('put', s, [{ key: key('KEY-PLAINTEXT-1'), serializer: 1, meta: text('META-PLAINTEXT'), value: text('VALUE-PLAINTEXT '.repeat(3000)) }])
    await p.call('put', s, [{ key: key(['KEY-PLAINTEXT-2']), serializer: 1, meta: text('META-PLAINTEXT'), value: text('VALUE-PLAINTEXT') }])
    await p.call('append', s, key('KEY-PLAINTEXT-3'), [{ serializer: 1, stamp: 1, bytes: text('LOG-PLAINTEXT') }], text('META-PLAINTEXT'))
    await p.call('close', s)
    // A blob of plaintext, through the page's pattern writer replaced by a put of bytes.
    const b = await p.call<number>('open', db, opts)
    await p.call('put', b, [{ key: key('KEY-PLAINTEXT-4'), serializer: 0, meta: text('META-PLAINTEXT'), value: text('BLOB-PLAINTEXT '.repeat(100)) }])
    await p.call('close', b)
  }
  // The control: without a key the search finds every needle (it is not vacuous).
  const plainDb = newDb('plain')
  await fill(plainDb, {})
  const plain = await p.call<{ found: string[]; bytes: number }>('searchDb', plainDb, needles)
  t.deepEqual(plain.found, needles)
  for (const compressor of [0, 1]) {
    const encDb = newDb('cipher')
    await fill(encDb, { encryptionKey: 'k3y', compressor })
    const enc = await p.call<{ found: string[]; bytes: number; counts: Record<string, number> }>('searchDb', encDb, needles)
    t.true(enc.bytes > 48_000 / (compressor ? 100 : 1))
    t.deepEqual(enc.found, [], `compressor ${compressor}`)
  }
})

test.serial('a store opens only with its key', async (t) => {
  const db = newDb('keycheck')
  const s = await p.call<number>('open', db, { encryptionKey: 'right' })
  await p.call('put', s, [{ key: key('k'), serializer: 1, meta: META, value: text('v') }])
  await p.call('close', s)
  t.is((await p.call<{ code: string }>('openError', db, { encryptionKey: 'wrong' }))?.code, 'ERR_DECRYPT')
  t.is((await p.call<{ code: string }>('openError', db, {}))?.code, 'ERR_DECRYPT')
  const plainDb = newDb('keycheck-plain')
  const q = await p.call<number>('open', plainDb)
  await p.call('put', q, [{ key: key('k'), serializer: 1, meta: META, value: text('v') }])
  await p.call('close', q)
  t.is((await p.call<{ code: string }>('openError', plainDb, { encryptionKey: 'k' }))?.code, 'ERR_DECRYPT')
  const migrating = await p.call<number>('open', plainDb, { encryptionKey: 'k', acceptPlaintext: true })
  t.is((await p.call<{ value: string }>('get', migrating, key('k')))!.value, text('v'))
  await p.call('close', migrating)
})

test.serial('values survive a page reload and a browser restart (persistent profile)', async (t) => {
  const db = newDb('persist')
  const s = await p.call<number>('open', db, { compressor: 1, encryptionKey: 'persist' })
  await p.call('put', s, [{ key: key('p'), serializer: 1, meta: META, value: text('persisted') }])
  await p.call('writeBlob', s, key('pb'), META, MiB + 10, 65536, 3)
  await p.call('append', s, key('pl'), [{ serializer: 1, stamp: 5, bytes: text('r') }], META)
  await p.page.reload()
  await p.page.waitForFunction(() => (globalThis as { konserveTest?: unknown }).konserveTest !== undefined)
  const check = async (page: TestPage) => {
    const r = await page.call<number>('open', db, { compressor: 1, encryptionKey: 'persist' })
    t.is((await page.call<{ value: string }>('get', r, key('p')))!.value, text('persisted'))
    t.like(await page.call('readBlob', r, key('pb'), MiB, 3), { size: MiB + 10, bad: -1 })
    t.is((await page.call<{ records: unknown[] }>('readLog', r, key('pl'), 5))!.records.length, 1)
    await page.call('close', r)
  }
  await check(p)
  await h.restart()
  p = await h.newPage()
  await check(p)
})

test.serial('two pages doing locked read-modify-write increments end exact; a held lock times out', async (t) => {
  const db = newDb('locks')
  const q = await h.newPage()
  const a = await p.call<number>('open', db)
  const b = await q.call<number>('open', db)
  const n = 40
  await Promise.all([p.call('increments', a, key('counter'), n), q.call('increments', b, key('counter'), n)])
  const v = (await p.call<{ value: string }>('get', a, key('counter')))!.value
  t.is(new DataView(unhex(v).buffer).getUint32(0, true), 2 * n)
  // Page q holds two keys; page p wants one of them and gives up after its timeout, holding none.
  t.is(await q.call('hold', b, [key('x'), key('y')]), 'held')
  const c = await p.call<number>('open', db, { lockTimeoutMs: 200 })
  const err = await p.call<{ code: string; message: string }>('lockError', c, [key('w'), key('y')])
  t.is(err?.code, 'ERR_LOCK_TIMEOUT')
  t.regex(err!.message, /held by the tab or worker with client id|another tab/)
  await q.call('release', b, [key('x'), key('y')])
  t.is(await p.call('hold', c, [key('w'), key('y')]), 'held')
  await p.call('release', c, [key('w'), key('y')])
  await q.page.close()
  for (const s of [a, c]) await p.call('close', s)
})

test.serial('through the seam: a blocking call fails ERR_NOT_SUPPORTED; lock, put and get in async form', async (t) => {
  const s = await p.call<number>('open', newDb('seam'))
  t.deepEqual(await p.call('seamRoundTrip', s, key('l')), { syncError: 'ERR_NOT_SUPPORTED', value: 'seam', implementation: 'idb', blocking: false })
  await p.call('close', s)
})

test.serial('a lost connection reopens and retries; a deleted database fails typed and is not re-created', async (t) => {
  const db = newDb('lost')
  const s = await p.call<number>('open', db)
  t.deepEqual(await p.call('closeBehind', s, key('k')), { reopened: 1, value: 'after close' })
  const up = await p.call<{ upgraded: string; reopened: number; value: string }>('upgradeFromElsewhere', s, db, key('k'))
  t.deepEqual(up, { upgraded: 'upgraded', reopened: 1, value: text('after close') })
  const del = await p.call<{ deleted: string; err: { code: string }; recreated: boolean }>('deleteFromElsewhere', s, db, key('k'))
  t.is(del.deleted, 'deleted')
  t.is(del.err?.code, 'ERR_STORE_DELETED')
  t.false(del.recreated)
})

test.serial('appends from two pages that take no lock lose no record: a log changed under an append is appended to again', async (t) => {
  const db = newDb('append-race')
  const q = await h.newPage()
  const a = await p.call<number>('open', db)
  const b = await q.call<number>('open', db)
  await p.call('append', a, key('race'), [{ serializer: 1, stamp: 0, bytes: text('first') }], META)
  await Promise.all([p.call('appendMany', a, key('race'), 15, 'p'), q.call('appendMany', b, key('race'), 15, 'q')])
  const log = await p.call<{ records: Array<{ index: number; bytes: string }> }>('readLog', a, key('race'), 100)
  t.deepEqual(
    log.records.map((r) => r.index),
    Array.from({ length: 31 }, (_, i) => i),
  )
  const got = log.records.map((r) => Buffer.from(r.bytes, 'hex').toString()).sort()
  t.deepEqual(got, ['first', ...Array.from({ length: 15 }, (_, i) => [`p${i}`, `q${i}`]).flat()].sort())
  await q.page.close()
  await p.call('close', a)
})
