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
import { PureFileBacking } from '../ts/backends/pure/store.js'
import { fileName } from '../ts/codec/xxhash.js'
import { encodeBlobFileAsync } from '../ts/format/blob.js'
import { decodeKeyFileAsync, encodeKeyFileAsync, keyHash } from '../ts/format/file.js'
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

test.serial('the test bundle has no Node built-in but the known stub (node:os in ts/errors.ts)', (t) => {
  t.deepEqual(
    h.stubbed.map((s) => s.split(' ')[0]),
    ['node:os'],
  )
  t.regex(h.stubbed[0]!, /ts\/errors\.ts/)
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
