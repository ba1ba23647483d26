/**
 * The pure engine's hot read (store.ts getValue: one open, one read, one
 * close, decodePlainValue) beside its general read (getG, the generators):
 * for every kind of key file, intact or damaged, both forms of both must give
 * the same serializer and bytes, or fail with the same code and message. A
 * fast path that skipped a check (a checksum, the key, the header's length,
 * the codec, the store's key) answers where the general read fails, and
 * fails here.
 */
import test from 'ava'
import fs, { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as k from 'konserve'
import type { RawEntry, RawValue } from '../ts/backing/index.js'
import { xxh3_64 } from '../ts/codec/xxhash.js'

const fresh = () => mkdtempSync(join(tmpdir(), 'konserve-pure-get-fast-'))

type Outcome = { serializer: number; value: number[]; log: boolean } | { code: unknown; message: string } | undefined

const ofValue = (v: RawValue | undefined): Outcome => v && { serializer: v.serializer, value: [...v.value], log: v.log }
const ofEntry = (e: RawEntry | undefined): Outcome => e && { serializer: e.serializer, value: [...e.value], log: e.log !== undefined }
const failure = (err: unknown): Outcome => ({ code: (err as k.KonserveError).code, message: (err as Error).message })

async function outcomes(store: k.Store, key: string): Promise<Outcome[]> {
  const b = store.backing
  const cke = k.encodeKey(key)
  const run = async (f: () => Outcome | Promise<Outcome>) => {
    try {
      return await f()
    } catch (err) {
      return failure(err)
    }
  }
  return [
    await run(() => ofValue(b.getValue!.sync(cke))),
    await run(async () => ofValue(await b.getValue!.async(cke))),
    await run(() => ofEntry(b.get.sync(cke))),
    await run(async () => ofEntry(await b.get.async(cke))),
  ]
}

/** Every form agrees; returns what they gave. */
async function agree(t: import('ava').ExecutionContext, store: k.Store, key: string): Promise<Outcome> {
  const [fastSync, fastAsync, sync, async] = await outcomes(store, key)
  t.deepEqual(fastSync, sync, `${key}: blocking getValue vs get`)
  t.deepEqual(fastAsync, async, `${key}: async getValue vs get`)
  t.deepEqual(sync, async, `${key}: blocking vs async get`)
  return sync
}

const S = { sync: true } as const

/** A plain store with files of every kind, and one of them damaged in each way. */
function plainStore(dir = fresh()) {
  const store = k.connectFsStore(dir, { native: false, sync: true })
  k.assoc(store, 'doc', { a: 1, s: 'x'.repeat(50) }, S)
  k.assoc(store, 'empty', '', S)
  k.bassoc(store, 'raw0', new Uint8Array(0), S)
  k.bassoc(store, 'raw', new Uint8Array([1, 2, 3]), S)
  k.append(store, 'log', { e: 1 }, S)
  k.bassoc(store, 'blob', Buffer.alloc(3 << 20, 7), S)
  return store
}

const path = (store: k.Store, key: string) => store.backing.filePath!(k.encodeKey(key))

test('intact files of every kind: the fast and the general read agree', async (t) => {
  const store = plainStore()
  // Around the 64 KiB first read: files that one read holds whole, exactly, and not.
  for (const n of [65536 - 200, 65536 - 90, 65536 - 80, 65536 - 70, 65536, 70000]) k.bassoc(store, `size${n}`, Buffer.alloc(n, n & 0xff), S)
  for (const key of ['doc', 'empty', 'raw0', 'raw', 'log', 'blob', 'missing', ...[65536 - 200, 65536 - 90, 65536 - 80, 65536 - 70, 65536, 70000].map((n) => `size${n}`)]) {
    await agree(t, store, key)
  }
  t.deepEqual(await agree(t, store, 'raw'), { serializer: 0, value: [1, 2, 3], log: false })
  t.is(await agree(t, store, 'missing'), undefined)
  t.true(((await agree(t, store, 'log')) as { log: boolean }).log)
})

/** Damage to one byte (or the length) of `key`'s file. */
const damages: Array<[string, (file: string) => void]> = [
  ['magic', (f) => flip(f, 0)],
  ['header checksum', (f) => flip(f, 44)],
  ['flags', (f) => rewriteHeader(f, (v) => v.setUint32(8, 8, true))],
  ['compressor id', (f) => rewriteHeader(f, (v) => v.setUint8(6, 1))],
  ['encryptor id', (f) => rewriteHeader(f, (v) => v.setUint8(7, 1))],
  ['unknown compressor', (f) => rewriteHeader(f, (v) => v.setUint8(6, 9))],
  ['version', (f) => rewriteHeader(f, (v) => v.setUint8(4, 2))],
  ['meta byte', (f) => flip(f, 50)],
  ['last metadata byte', (f) => flip(f, 48 + fs.readFileSync(f).readUInt32LE(12) - 1)],
  ['value byte', (f) => flip(f, fs.statSync(f).size - 1)],
  ['cut', (f) => fs.truncateSync(f, fs.statSync(f).size - 1)],
  ['extended', (f) => fs.appendFileSync(f, Buffer.from([0]))],
  ['header only', (f) => fs.truncateSync(f, 48)],
  ['shorter than a header', (f) => fs.truncateSync(f, 20)],
  ['empty', (f) => fs.truncateSync(f, 0)],
]

function flip(file: string, at: number): void {
  const b = fs.readFileSync(file)
  b[at]! ^= 0x40
  fs.writeFileSync(file, b)
}

/** Changes header fields, then fixes the header checksum (so the change itself is what the reads meet). */
function rewriteHeader(file: string, change: (v: DataView) => void): void {
  const b = fs.readFileSync(file)
  change(new DataView(b.buffer, b.byteOffset, 48))
  b.set(new Uint8Array(new BigUint64Array([headerChecksum(b.subarray(0, 40))]).buffer), 40)
  fs.writeFileSync(file, b)
}

// The format's own header checksum (XXH3-64 of the first 40 bytes).
const headerChecksum = (b: Uint8Array) => xxh3_64(b)

for (const [what, damage] of damages) {
  test(`a key file with its ${what} damaged: the fast and the general read fail alike`, async (t) => {
    const store = plainStore()
    for (const key of ['doc', 'raw', 'empty']) {
      damage(path(store, key))
      const o = await agree(t, store, key)
      t.truthy(o && 'code' in o, `${key}: ${JSON.stringify(o)}`)
    }
  })
}

test("another key's file under a key's name: ERR_KEY_MISMATCH from both reads", async (t) => {
  const store = plainStore()
  fs.copyFileSync(path(store, 'doc'), path(store, 'raw'))
  const o = await agree(t, store, 'raw')
  t.is((o as { code: unknown }).code, 'ERR_KEY_MISMATCH')
})

test('a directory and a symbolic link in place of a key file fail alike', async (t) => {
  const store = plainStore()
  const dir = path(store, 'doc')
  fs.rmSync(dir)
  fs.mkdirSync(dir)
  const link = path(store, 'raw')
  fs.rmSync(link)
  fs.symlinkSync(path(store, 'empty'), link)
  for (const key of ['doc', 'raw']) {
    const o = await agree(t, store, key)
    t.truthy(o && 'code' in o, `${key}: ${JSON.stringify(o)}`)
  }
})

test('a store with a key, a compressor, or its log: the same answers through getValue', async (t) => {
  for (const o of [
    { encryptor: { type: 'aes' as const, key: 'secret' } },
    { compressor: { type: 'lz4' as const } },
    { wal: true },
  ] as k.FsStoreOptions[]) {
    const store = k.connectFsStore(fresh(), { native: false, sync: true, ...o })
    k.assoc(store, 'doc', { a: 1, s: 'y'.repeat(300) }, S)
    k.bassoc(store, 'raw', new Uint8Array([4, 5]), S)
    for (const key of ['doc', 'raw', 'missing']) await agree(t, store, key)
    t.deepEqual(k.get(store, 'doc', S), { a: 1, s: 'y'.repeat(300) })
  }
})

test('a plaintext file planted in an encrypted store is refused by the fast read too', async (t) => {
  const dir = fresh()
  const plain = plainStore()
  const store = k.connectFsStore(dir, { native: false, sync: true, encryptor: { type: 'aes', key: 'secret' } })
  k.assoc(store, 'doc', 1, S)
  fs.copyFileSync(path(plain, 'doc'), path(store, 'doc'))
  const o = await agree(t, store, 'doc')
  t.is((o as { code: unknown }).code, 'ERR_DECRYPT')
})

test('a value read by the fast path is its own memory, never a view of the reused read buffer', async (t) => {
  const store = plainStore()
  const b = store.backing
  const first = b.getValue!.sync(k.encodeKey('raw'))!
  t.true(first.value.buffer.byteLength < 1024)
  b.getValue!.sync(k.encodeKey('doc'))
  await b.getValue!.async(k.encodeKey('doc'))
  t.deepEqual([...first.value], [1, 2, 3])
  t.falsy(first.shared)
})

/** A listing's view of `key`: its entry (key, serializer, meta) or the code of the corrupt file, in both forms. */
async function listed(store: k.Store, key: string): Promise<unknown[]> {
  const file = path(store, key)
  const pick = (l: { entries: { key: Uint8Array; serializer: number; meta: Uint8Array; file?: string }[]; corrupt: { code: unknown; file: string }[] }) => {
    const e = l.entries.find((x) => x.file === file)
    if (e) return { key: [...e.key], serializer: e.serializer, meta: [...e.meta] }
    const c = l.corrupt.find((x) => x.file === file)
    return c ? { code: c.code } : 'absent'
  }
  const all = async (async: boolean) => {
    const cursor = store.backing.openList()
    const out = { entries: [] as never[], corrupt: [] as never[] }
    try {
      for (;;) {
        const l = async ? await cursor.next.async(1000) : cursor.next.sync(1000)
        if (!l) return out
        out.entries.push(...(l.entries as never[]))
        out.corrupt.push(...(l.corrupt as never[]))
      }
    } finally {
      cursor.close()
    }
  }
  return [pick(await all(false)), pick(await all(true))]
}

/** What the general head read (getMeta: openKeyFile and its generators) says of `key`, as a listing would. */
function byGetMeta(store: k.Store, key: string): unknown {
  try {
    const m = store.backing.getMeta.sync(k.encodeKey(key))
    return m ? { key: [...m.key], serializer: m.serializer, meta: [...m.meta] } : 'absent'
  } catch (err) {
    return { code: (err as k.KonserveError).code }
  }
}

for (const [what, damage] of [['intact', () => {}], ...damages] as Array<[string, (file: string) => void]>) {
  test(`a listing of a key file (${what}) agrees with the general head read`, async (t) => {
    const store = plainStore()
    for (const key of ['doc', 'raw', 'empty', 'raw0', 'log', 'blob']) {
      if (!['log', 'blob'].includes(key)) damage(path(store, key))
      const [sync, async] = await listed(store, key)
      t.deepEqual(sync, byGetMeta(store, key), `${key}: blocking listing`)
      t.deepEqual(async, sync, `${key}: async listing`)
    }
  })
}

test("a listing of another key's file under a key's name reports ERR_KEY_MISMATCH", async (t) => {
  const store = plainStore()
  fs.copyFileSync(path(store, 'doc'), path(store, 'raw'))
  t.deepEqual(await listed(store, 'raw'), [{ code: 'ERR_KEY_MISMATCH' }, { code: 'ERR_KEY_MISMATCH' }])
})
