/**
 * The browser entry's public API on connectIdbStore stores in a real headless
 * Chromium (__test__/browser/api-page.ts): moving a store between the browser
 * and Node (exportStore/importStore, one archive format, docs/ARCHIVE.md)
 * with every value, blob and log identical, both ways, plain and LZ4+AES;
 * sweep; write hooks; withCache; tieredStore with memory in front of idb.
 */
import test from 'ava'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import * as k from 'konserve'
import { tempDir } from './helpers/api.js'
import { type Harness, type TestPage, launch } from './browser/harness.js'
import { type DumpApi, dumpStore, fillStore } from './browser/shared.js'

const PAGE = fileURLToPath(new URL('./browser/api-page.ts', import.meta.url))
const nodeApi = k as unknown as DumpApi
type Dump = Array<Record<string, unknown>>

let h: Harness
let p: TestPage
let dbs = 0
const newDb = (what: string) => `konserve-api-${what}-${++dbs}`
const CODECS = { compressor: { type: 'lz4' }, encryptor: { type: 'aes', key: 'moving key' } } as const

/** What the page reported, but the 404 of the favicon the test server does not have. */
const pageErrors = () => p.errors.filter((e) => !/^Failed to load resource: .*404/.test(e))

test.before(async () => {
  h = await launch(PAGE)
  p = await h.newPage()
})
test.after.always(async () => {
  await h?.close()
})

async function bytesOf(r: Readable): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const x of r) parts.push(x as Buffer)
  return Buffer.concat(parts)
}

const NODE_SIDES: Array<{ name: string; opts: k.FsStoreOptions }> = [
  { name: 'native', opts: { native: true } },
  { name: 'pure', opts: { native: false } },
  { name: 'native lz4+aes', opts: { native: true, ...CODECS } },
  { name: 'pure lz4+aes', opts: { native: false, ...CODECS } },
]

for (const [label, opts] of [
  ['plain', {}],
  ['lz4+aes', CODECS],
] as const) {
  test.serial(`browser → Node (${label} idb store): exported in the page, imported into native and pure file stores, every key identical`, async (t) => {
    const out = await p.call<{ archive: string; pieces: number; dump: Dump }>('exportFilled', newDb('export'), opts, 11)
    t.true(out.pieces > 1, 'the archive streams out in pieces')
    t.is(out.dump.length, 9)
    const archive = Buffer.from(out.archive, 'hex')
    for (const side of NODE_SIDES) {
      const s = await k.connectFsStore(join(tempDir(), 'store'), { syncBlob: false, ...side.opts })
      const counts = await k.importStore(s, archive)
      t.like(counts, { keys: 9, values: 3, blobs: 3, logs: 3 }, side.name)
      t.deepEqual(await dumpStore(nodeApi, s), out.dump, side.name)
      await k.close(s)
    }
    t.deepEqual(pageErrors(), [])
  })
}

test.serial('Node → browser: a native and a pure store exported in Node, imported in the page (Blob, ReadableStream, bytes), every key identical', async (t) => {
  for (const side of NODE_SIDES) {
    const s = await k.connectFsStore(join(tempDir(), 'store'), { syncBlob: false, ...side.opts })
    await fillStore(nodeApi, s, 5)
    const want = await dumpStore(nodeApi, s)
    const archive = await bytesOf(k.exportStore(s))
    await k.close(s)
    for (const [as, idbOpts] of [
      ['blob', {}],
      ['stream', CODECS],
      ['bytes', { compressor: { type: 'lz4' } }],
    ] as const) {
      const r = await p.call<{ counts: Record<string, number>; dump: Dump }>('importArchive', newDb('import'), idbOpts, archive.toString('hex'), as)
      t.like(r.counts, { keys: 9, values: 3, blobs: 3, logs: 3 }, `${side.name} as ${as}`)
      t.deepEqual(r.dump, want, `${side.name} as ${as}`)
    }
  }
  t.deepEqual(pageErrors(), [])
})

test.serial('a damaged archive fails ERR_CORRUPT in the page', async (t) => {
  const s = await k.newMemStore()
  await fillStore(nodeApi, s, 3)
  const archive = await bytesOf(k.exportStore(s))
  t.is(await p.call('importDamaged', newDb('damaged'), archive.toString('hex')), 'ERR_CORRUPT')
})

test.serial('sweep on idb: old values, blobs and logs deleted; the whitelist and newer keys kept; a dry run deletes nothing', async (t) => {
  const r = await p.call<Record<string, unknown>>('sweep', newDb('sweep'))
  const old = ['"old"', '"old blob"', '"old log"'].sort()
  t.deepEqual(r.dry, old)
  t.deepEqual(r.afterDry, ['"new"', '"new blob"', '"old"', '"old blob"', '"old log"', '["old","kept"]'].sort())
  t.deepEqual(r.deleted, old)
  t.deepEqual(r.left, ['"new"', '"new blob"', '["old","kept"]'].sort())
  t.deepEqual(r.reads, [undefined, 2, 3, undefined, [1, 2, 3]])
  t.is((r.progress as number[]).at(-1), 3)
})

test.serial('write hooks on idb: one event per put, update, delete, append, blob and batch; none for a failed write or after removal', async (t) => {
  const r = await p.call<{ events: Array<Record<string, unknown>>; failed: string }>('hooks', newDb('hooks'))
  t.is(r.failed, 'ERR_NOT_A_LOG')
  t.deepEqual(r.events, [
    { op: 'assoc', key: 'a', oldValue: undefined, newValue: 1, revision: 1 },
    { op: 'updateIn', key: 'a', oldValue: 1, newValue: 2, revision: 2 },
    { op: 'assocIn', key: 'b', oldValue: undefined, newValue: { c: 'deep' }, revision: 1 },
    { op: 'append', key: 'log', oldValue: undefined, newValue: 'e1', revision: undefined },
    { op: 'append', key: 'log', oldValue: undefined, newValue: 'e2', revision: undefined },
    { op: 'bassoc', key: 'blob', oldValue: undefined, newValue: new Uint8Array([9]), revision: 1 },
    { op: 'multiAssoc', kvs: [['m1', 1], ['m2', 2]], revisions: [1, 1] },
    { op: 'dissoc', key: 'a', oldValue: undefined, newValue: undefined, revision: undefined },
    { op: 'multiDissoc', key: 'm1', oldValue: undefined, newValue: undefined, revision: undefined },
    { op: 'trimLog', key: 'log', oldValue: undefined, newValue: undefined, revision: undefined },
  ])
})

test.serial('withCache over idb: a random sequence through the cache agrees with a model and with the idb store read directly', async (t) => {
  for (const seed of [1, 2, 3]) {
    const r = await p.call<{ mismatches: string[]; hits: number; entries: number }>('cache', newDb('cache'), seed, 300)
    t.deepEqual(r.mismatches, [], `seed ${seed}`)
    t.true(r.hits > 0, `seed ${seed}: the cache answered reads`)
    t.true(r.entries <= 4)
  }
})

test.serial('tieredStore: memory in front of idb, writes reach idb; a fresh front reads through and fills', async (t) => {
  const r = await p.call<Record<string, unknown>>('tiered', newDb('tiered'))
  t.deepEqual(r.inBack, { a: { v: 2 }, blob: [4, 5, 6], log: ['r1'] })
  t.is(r.frontBefore, undefined)
  t.deepEqual(r.read, { v: 2 })
  t.deepEqual(r.frontAfter, { v: 2 })
  t.deepEqual(r.both, ['both', 'both'])
  t.deepEqual(pageErrors(), [])
})
