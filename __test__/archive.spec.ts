/** exportStore / importStore: the archive format of docs/ARCHIVE.md, across stores and codecs. */
import test from 'ava'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import * as k from 'konserve'
import { tempDir } from './helpers/api.js'
import { archiveReader } from './helpers/archive.js'
import { readFileSync } from 'node:fs'
import {
  DATA_MAX,
  FRAME_DATA,
  FRAME_END,
  FRAME_HEAD_LEN,
  FRAME_KEY,
  FRAME_SUM_LEN,
  FRAME_TRAILER,
  HEADER_LEN,
  type ReadFrame,
  decodeKeyFrame,
  readFrame,
} from '../ts/archive/format.js'

type Side = { name: string; open(): Promise<k.Store> }
const file = (name: string, opts: k.FsStoreOptions): Side => ({ name, open: () => k.connectFsStore(join(tempDir(), 'store'), { syncBlob: false, ...opts }) })
const SIDES: Side[] = [
  file('native', { native: true }),
  file('pure', { native: false }),
  { name: 'memory', open: () => k.newMemStore() },
  file('native lz4+aes', { native: true, compressor: { type: 'lz4' }, encryptor: { type: 'aes', key: 'one key' } }),
  file('pure aes', { native: false, encryptor: { type: 'aes', key: 'another key' } }),
  file('pure lz4 json', { native: false, compressor: { type: 'lz4' }, serializer: 'json' }),
]

async function bytesOf(r: Readable): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const p of r) parts.push(p as Buffer)
  return Buffer.concat(parts)
}

/** Every frame of an archive, in order. */
async function framesOf(archive: Uint8Array): Promise<ReadFrame[]> {
  const { r, version } = await archiveReader(archive)
  const frames: ReadFrame[] = []
  for (;;) {
    const f = await readFrame(r, version)
    frames.push(f)
    if (f.type === FRAME_TRAILER) return frames
  }
}

/** key (hex CKE) -> the bytes of its frames (KEY to END, an END's running checksum left out). */
async function parse(archive: Uint8Array): Promise<Record<string, Buffer>> {
  const keys = new Map<string, Buffer>()
  let current: string | undefined
  for (const f of await framesOf(archive)) {
    if (f.type === FRAME_TRAILER) return Object.fromEntries([...keys].sort(([a], [b]) => (a < b ? -1 : 1)))
    if (f.type === FRAME_KEY) current = Buffer.from(decodeKeyFrame(f.body).key).toString('hex')
    const body = f.type === FRAME_END ? f.body.subarray(0, 8) : f.body
    const framed = Buffer.concat([Buffer.from([f.type]), Buffer.from(body)])
    keys.set(current!, Buffer.concat([keys.get(current!) ?? Buffer.alloc(0), framed]))
  }
  throw new Error('no trailer')
}

const big = Buffer.alloc(2.5 * 1024 * 1024 + 17)
for (let i = 0; i < big.length; i++) big[i] = (i * 31 + (i >> 11)) & 0xff

/** A store with every kind of key: values (user metadata, big integers), blobs, logs (trimmed, emptied). */
async function fill(s: k.Store, json: boolean): Promise<void> {
  await k.assoc(s, 'doc', { name: 'ana', n: json ? '12345678901234567890' : 12345678901234567890n, list: [1, 2.5, 'x'], nested: { deep: true } }, { meta: { owner: 'ops' } })
  await k.update(s, 'doc', (d: any) => ({ ...d, version: 2 }))
  await k.assoc(s, ['user', 42], 'composite key')
  await k.assoc(s, 'empty string', '')
  await k.bassoc(s, 'small blob', Buffer.from([0, 1, 2, 255]), { meta: { mime: 'application/octet-stream' } })
  await k.bassoc(s, 'big blob', big)
  await k.bassoc(s, 'empty blob', new Uint8Array(0))
  for (let i = 0; i < 5; i++) await k.append(s, 'log', { i })
  for (let i = 0; i < 7; i++) await k.append(s, 'trimmed log', i)
  await k.trimLog(s, 'trimmed log', { keepLast: 3 })
  await k.append(s, 'emptied log', 'gone')
  await k.trimLog(s, 'emptied log', { keepLast: 0 })
}

async function snapshot(s: k.Store) {
  const out: Record<string, unknown> = {}
  for (const m of await k.keys(s)) {
    const id = JSON.stringify(m.key)
    if (m.type === 'binary') out[id] = { m, v: Buffer.from((await k.readBlob(s, m.key))!) }
    else if (m.type === 'append-log') out[id] = { m, v: await k.log(s, m.key) }
    else out[id] = { m, v: await k.get(s, m.key) }
  }
  return out
}

// Each side once as the source and once as the target (a ring), and native onto itself.
const PAIRS = [...SIDES.map((from, i) => [from, SIDES[(i + 1) % SIDES.length]!] as const), [SIDES[0]!, SIDES[0]!] as const]
for (const [from, to] of PAIRS) {
    test(`round trip ${from.name} -> ${to.name}: every byte of every value and its metadata`, async (t) => {
      const src = await from.open()
      await fill(src, from.name.includes('json'))
      const a = await bytesOf(k.exportStore(src))
      const dst = await to.open()
      await k.assoc(dst, 'doc', 'will be replaced')
      await k.assoc(dst, 'other', 'stays')
      const counts = await k.importStore(dst, Readable.from([a.subarray(0, 1000), a.subarray(1000)]))
      t.deepEqual(counts, { keys: 9, values: 3, blobs: 3, logs: 3, records: 8, bytes: counts.bytes })
      t.true(counts.bytes > big.length + 4)
      t.is(await k.get(dst, 'other'), 'stays')
      await k.dissoc(dst, 'other')
      // The archive of the copy holds the same frames for every key: serializer, metadata and value bytes, records.
      const b = await bytesOf(k.exportStore(dst))
      t.deepEqual(await parse(b), await parse(a))
      // And through the API: values, metadata (revision, lastWrite, user fields), blobs, logs.
      t.deepEqual(await snapshot(dst), await snapshot(src))
      t.is((await k.getMeta(dst, 'trimmed log'))!.revision, (await k.getMeta(src, 'trimmed log'))!.revision)
      t.deepEqual(await k.log(dst, 'trimmed log'), [4, 5, 6])
      // The imported logs keep working: indexes go on from where they were.
      t.is(await k.append(dst, 'trimmed log', 7), 4)
      t.is(await k.append(dst, 'emptied log', 'again'), 1)
    })
}

test('a value written by a serializer the target does not know is kept as bytes and reads where it is known', async (t) => {
  const custom: k.Serializer = { id: 200, name: 'upper', encode: (v) => Buffer.from(String(v).toUpperCase()), decode: (b) => Buffer.from(b).toString() }
  const src = await k.newMemStore({ serializer: custom })
  await k.assoc(src, 'x', 'hello')
  const a = await bytesOf(k.exportStore(src))
  const plain = await k.connectFsStore(join(tempDir(), 's'), { native: false })
  await k.importStore(plain, a)
  await t.throwsAsync(k.get(plain, 'x'), { code: 'ERR_SERIALIZER_NOT_FOUND' } as any)
  const knowing = await k.connectFsStore(plain.path!, { native: true, serializers: [custom] })
  t.is(await k.get(knowing, 'x'), 'HELLO')
})

test('a damaged archive fails with ERR_CORRUPT and never writes the damaged key', async (t) => {
  const src = await k.newMemStore()
  await k.assoc(src, 'a', 1)
  await k.bassoc(src, 'blob', big)
  await k.assoc(src, 'z', 2)
  const good = await bytesOf(k.exportStore(src))
  // Flip a byte inside the blob's data.
  const at = good.indexOf(big.subarray(1 << 20, (1 << 20) + 64))
  t.true(at > 0)
  const flipped = Buffer.from(good)
  flipped[at + 10]! ^= 0x40
  const dst = await k.connectFsStore(join(tempDir(), 's'), { native: false })
  await k.bassoc(dst, 'blob', Buffer.from('old blob'))
  const err = (await t.throwsAsync(k.importStore(dst, flipped))) as k.KonserveError
  t.is(err.code, 'ERR_CORRUPT')
  t.regex(err.message, /frame checksum/)
  t.deepEqual(err.key, 'blob')
  t.is((await k.readBlob(dst, 'blob'))!.toString(), 'old blob', 'the blob being read when the damage was found is not replaced')
  // Truncated anywhere: ERR_CORRUPT, never a silent success.
  for (const cut of [3, HEADER_LEN, HEADER_LEN + 7, good.length - 70, good.length - 1]) {
    const e = (await t.throwsAsync(k.importStore(await k.newMemStore(), good.subarray(0, cut)))) as k.KonserveError
    t.is(e.code, 'ERR_CORRUPT', `cut at ${cut}`)
  }
  const trailing = (await t.throwsAsync(k.importStore(await k.newMemStore(), Buffer.concat([good, Buffer.from([0])])))) as k.KonserveError
  t.regex(trailing.message, /bytes follow the trailer/)
  const notArchive = (await t.throwsAsync(k.importStore(await k.newMemStore(), Buffer.from('{"json": true}\n'.repeat(3))))) as k.KonserveError
  t.regex(notArchive.message, /no archive magic/)
})

/** The bytes of frame `f` of `archive` (head, body, checksum). */
const frameBytes = (archive: Buffer, f: ReadFrame) => archive.subarray(f.offset, f.offset + FRAME_HEAD_LEN + f.body.length + FRAME_SUM_LEN)

test('frames each intact but out of order fail at their END, before the key is written', async (t) => {
  const src = await k.newMemStore()
  // (Not `big`: its pattern repeats every 2^20 bytes, so its chunks are equal.)
  const blob = Buffer.concat([Buffer.alloc(DATA_MAX, 1), Buffer.alloc(DATA_MAX, 2), Buffer.from('end')])
  await k.bassoc(src, 'blob', blob)
  await k.assoc(src, 'doc', { v: 1 })
  const good = await bytesOf(k.exportStore(src))
  const frames = await framesOf(good)
  const data = frames.filter((f) => f.type === FRAME_DATA && f.body.length === DATA_MAX)
  t.is(data.length, 2)
  t.true(frames.indexOf(data[1]!) === frames.indexOf(data[0]!) + 1)
  // The blob's first two chunks swapped: every frame checks out on its own.
  const [a, b] = [frameBytes(good, data[0]!), frameBytes(good, data[1]!)]
  const swapped = Buffer.concat([good.subarray(0, data[0]!.offset), b, a, good.subarray(data[1]!.offset + b.length)])
  t.is(swapped.length, good.length)
  for (const native of [true, false]) {
    const dst = await k.connectFsStore(join(tempDir(), 's'), { native })
    await k.bassoc(dst, 'blob', Buffer.from('old blob'))
    const err = (await t.throwsAsync(k.importStore(dst, swapped))) as k.KonserveError
    t.is(err.code, 'ERR_CORRUPT')
    t.regex(err.message, /archive checksum at the end of a key/)
    t.is(err.key, 'blob')
    t.is((await k.readBlob(dst, 'blob'))!.toString(), 'old blob', 'the reordered blob is never committed')
  }
  // A whole key's frames from another archive spliced in: found at that key's END.
  const other = await k.newMemStore()
  await k.assoc(other, 'doc', { v: 'forged' })
  const otherArchive = await bytesOf(k.exportStore(other))
  const theirs = (await framesOf(otherArchive)).filter((f) => f.type !== FRAME_TRAILER)
  const at = frames.filter((f) => f.type === FRAME_KEY)[1]!.offset // the doc's KEY frame, after the blob's END
  const end = frames[frames.length - 2]! // the doc's END
  const spliced = Buffer.concat([good.subarray(0, at), ...theirs.map((f) => frameBytes(otherArchive, f)), good.subarray(end.offset + frameBytes(good, end).length)])
  const dst = await k.newMemStore()
  await k.assoc(dst, 'doc', 'mine')
  const err = (await t.throwsAsync(k.importStore(dst, spliced))) as k.KonserveError
  t.regex(err.message, /archive checksum at the end of a key/)
  t.is(await k.get(dst, 'doc'), 'mine')
  t.deepEqual(await k.readBlob(dst, 'blob'), blob, 'the keys before the damage are imported')
})

test('a key from another export of the same store is refused at its END: every archive has its own id', async (t) => {
  const src = await k.newMemStore()
  await k.assoc(src, 'a', 'first')
  await k.assoc(src, 'w', 'one')
  const first = await bytesOf(k.exportStore(src))
  await k.assoc(src, 'w', 'two')
  const second = await bytesOf(k.exportStore(src))
  t.notDeepEqual(first.subarray(12, 16), second.subarray(12, 16), 'two exports, two ids')
  // The first archive with the second's frames of `w` in place of its own (same offsets: same sizes).
  const [f1, f2] = [await framesOf(first), await framesOf(second)]
  const wAt = (fs: ReadFrame[]) => fs.filter((f) => f.type === FRAME_KEY)[1]!.offset
  const trailerAt = (fs: ReadFrame[]) => fs[fs.length - 1]!.offset
  const spliced = Buffer.concat([first.subarray(0, wAt(f1)), second.subarray(wAt(f2), trailerAt(f2)), first.subarray(trailerAt(f1))])
  const dst = await k.newMemStore()
  const err = (await t.throwsAsync(k.importStore(dst, spliced))) as k.KonserveError
  t.regex(err.message, /archive checksum at the end of a key/)
  t.is(err.key, 'w')
  t.is(await k.get(dst, 'a'), 'first')
  t.false(await k.exists(dst, 'w'), "the other export's value is never written")
})

test("a damaged frame length is refused at the frame's head, before its body is read", async (t) => {
  const src = await k.newMemStore()
  await k.assoc(src, 'a', 'x'.repeat(1000))
  await k.bassoc(src, 'blob', big)
  const good = await bytesOf(k.exportStore(src))
  const key = (await framesOf(good)).find((f) => f.type === FRAME_KEY)!
  const bad = Buffer.from(good)
  bad[key.offset + 4]! ^= 0x80 // the length's top byte: 2 GiB more
  let pulled = 0
  const source = async function* () {
    for (let at = 0; at < bad.length; at += 4096) {
      pulled += 4096
      yield bad.subarray(at, at + 4096)
    }
  }
  const err = (await t.throwsAsync(k.importStore(await k.newMemStore(), source()))) as k.KonserveError
  t.is(err.code, 'ERR_CORRUPT')
  t.regex(err.message, /head check does not match/)
  t.true(pulled <= 8192, `the archive was read no further than the frame's head (${pulled} bytes pulled)`)
})

test('a version 1 archive (no head checks, no running checksums) still imports', async (t) => {
  const v1 = readFileSync(new URL('../test-vectors/archive-v1.ksva', import.meta.url))
  t.is(v1.readUInt16LE(8), 1)
  const blob = Buffer.alloc(3000)
  for (let i = 0; i < blob.length; i++) blob[i] = (i * 31 + (i >> 11)) & 0xff
  for (const s of [await k.newMemStore(), await k.connectFsStore(join(tempDir(), 's'), { native: true }), await k.connectFsStore(join(tempDir(), 's'), { native: false })]) {
    const c = await k.importStore(s, v1)
    t.deepEqual({ ...c, bytes: 0 }, { keys: 4, values: 2, blobs: 1, logs: 1, records: 3, bytes: 0 })
    t.true(c.bytes > blob.length)
    t.deepEqual(await k.get(s, 'doc'), { name: 'ana', list: [1, 2.5, 'x'] })
    t.is((await k.getMeta(s, 'doc'))!.owner, 'ops')
    t.is(await k.get(s, ['user', 42]), 'composite key')
    t.deepEqual(await k.readBlob(s, 'blob'), blob)
    t.deepEqual(await k.log(s, 'log'), [4, 5, 6])
    t.is(await k.append(s, 'log', 7), 4)
  }
  // A newer version than this build reads is refused as such.
  const v9 = Buffer.from(v1)
  v9.writeUInt16LE(9, 8)
  const { xxh3_64 } = await import('../ts/codec/xxhash.js')
  v9.writeBigUInt64LE(xxh3_64(v9.subarray(0, 16)), 16)
  const err = (await t.throwsAsync(k.importStore(await k.newMemStore(), v9))) as k.KonserveError
  t.is(err.code, 'ERR_UNSUPPORTED_VERSION')
})

test('a log whose import fails part-way is deleted, not left short', async (t) => {
  const src = await k.newMemStore()
  for (let i = 0; i < 3000; i++) await k.append(src, 'log', i)
  const good = await bytesOf(k.exportStore(src))
  const dst = await k.connectFsStore(join(tempDir(), 's'), { native: true })
  const e = (await t.throwsAsync(k.importStore(dst, good.subarray(0, good.length - 200)))) as k.KonserveError
  t.is(e.code, 'ERR_CORRUPT')
  t.false(await k.exists(dst, 'log'))
})

test('exportStore fails on a damaged key, naming it and its file; onCorrupt skips it', async (t) => {
  const { readFileSync, writeFileSync } = await import('node:fs')
  const dir = join(tempDir(), 's')
  const s = await k.connectFsStore(dir, { native: true })
  await k.assoc(s, 'good', 'fine')
  await k.assoc(s, 'bad', 'x'.repeat(100))
  let entry: k.ScanEntry | undefined
  for await (const e of k.scanStore(s)) if (e.key === 'bad') entry = e
  if (!entry) return t.fail()
  const bytes = readFileSync(entry.file!)
  bytes[bytes.length - 5]! ^= 1
  writeFileSync(entry.file!, bytes)
  const err = (await t.throwsAsync(bytesOf(k.exportStore(s)))) as k.KonserveError
  t.is(err.code, 'ERR_CORRUPT')
  t.is(err.key, 'bad')
  t.is(err.file, entry.file)
  const seen: k.KonserveError[] = []
  const a = await bytesOf(k.exportStore(s, { onCorrupt: (e) => seen.push(e) }))
  t.is(seen.length, 1)
  const dst = await k.newMemStore()
  t.is((await k.importStore(dst, a)).keys, 1)
  t.is(await k.get(dst, 'good'), 'fine')
})

test('exportStore streams: a store larger than what is read at once is produced piece by piece', async (t) => {
  const s = await k.newMemStore()
  await k.bassoc(s, 'b', big)
  const stream = k.exportStore(s)
  let largest = 0
  let n = 0
  for await (const p of stream) {
    largest = Math.max(largest, (p as Buffer).length)
    n++
  }
  t.true(largest <= 2 << 20, `pieces of about a chunk (largest ${largest})`)
  t.true(n >= 3)
})

test('scanStore lists every key in batches', async (t) => {
  const s = await k.connectFsStore(join(tempDir(), 's'), { native: false })
  for (let i = 0; i < 50; i++) await k.assoc(s, `k${i}`, i)
  const seen = []
  for await (const e of k.scanStore(s, { batchSize: 7 })) seen.push(e.key)
  t.deepEqual(seen.sort(), Array.from({ length: 50 }, (_, i) => `k${i}`).sort())
})
