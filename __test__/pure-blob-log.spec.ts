/**
 * Chunked blobs (FORMAT.md §4.5) and append logs (§4.6) in the pure-TypeScript
 * file store (ts/backends/pure/store.ts over ts/format/blob.ts and log.ts): round
 * trips for every codec in both calling forms, range reads, damage and
 * truncation as typed errors, aborts, torn tails, trims, and files written by
 * one implementation read by the other (the native binding is required: without
 * it those tests fail).
 */
import test from 'ava'
import { randomBytes } from 'node:crypto'
import { appendFileSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { BlobSource, LogInfo, LogRecord, NewRecord } from '../ts/backing/index.js'
import { encodeBlobFileSync } from '../ts/format/blob.js'
import * as file from '../ts/format/file.js'
import { encodeKey } from '../ts/format/key.js'
import { appendLogFileSync, encodeLogFileSync } from '../ts/format/log.js'
import { xxh3_64 } from '../ts/codec/xxhash.js'
import { nodeCryptoProvider } from '../ts/crypto-node.js'
import { KonserveError } from '../ts/errors.js'
import { createPureCodec } from '../ts/backends/pure/codec.js'
import { PureFileBacking, forgetVerifiedLogs } from '../ts/backends/pure/store.js'

const MiB = 1 << 20

/** A plain log file as a store writes it: created with the first `sizes[0]` records, each next batch appended by itself. */
function appendedLog(compressor: number, k: Uint8Array, written: ReadonlyArray<LogRecord>, sizes: number[]): Uint8Array {
  let at = sizes[0]!
  let bytes = encodeLogFileSync({ compressor, encryptor: 0, keyCke: k, meta: LOG_META, records: written.slice(0, at) })
  for (const n of sizes.slice(1)) {
    bytes = appendLogFileSync(bytes, { keyCke: k, records: written.slice(at, at + n) })
    at += n
  }
  return bytes
}
const SECRET = 'blob and log s3cr3t'
const META = new Uint8Array(Buffer.from('81a474797065a662696e617279', 'hex')) // {type: "binary"}
const LOG_META = new Uint8Array(Buffer.from('81a474797065aa617070656e642d6c6f67', 'hex')) // {type: "append-log"}

interface Codec {
  compressor: number
  encryptor: number
}
const codecs: Codec[] = [0, 1].flatMap((compressor) => [0, 1].map((encryptor) => ({ compressor, encryptor })))
const codecName = (c: Codec) => ['none', 'lz4', 'aes', 'lz4+aes'][c.compressor + 2 * c.encryptor]!
type Mode = 'sync' | 'async'
const modes: Mode[] = ['sync', 'async']

const buf = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength)
const same = (a: Uint8Array, b: Uint8Array) => buf(a).equals(buf(b))
const key = (s: string) => encodeKey(s)

/** A blob that compresses, and differs from chunk to chunk. */
function pattern(n: number, seed = 0): Uint8Array {
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) out[i] = (i * 7 + (i >> 10) + seed) & 0xff
  return out
}

function tempDir(t: { teardown(f: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'konserve-blob-log-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

function open(dir: string, c: Codec, syncBlob = false): PureFileBacking {
  return PureFileBacking.openSync(dir, createPureCodec(c.compressor, c.encryptor ? new TextEncoder().encode(SECRET) : undefined), { syncBlob })
}

const stagingFiles = (dir: string) => readdirSync(dir).filter((n) => n.endsWith('.stage'))

/** The error code a call fails with ('OK' if it succeeds); anything but a KonserveError fails the test. */
async function outcome(f: () => unknown): Promise<string> {
  try {
    await f()
    return 'OK'
  } catch (err) {
    if (err instanceof KonserveError) return err.code
    throw new Error(`not a KonserveError: ${String(err)}`, { cause: err })
  }
}

async function failure(f: () => unknown): Promise<KonserveError> {
  try {
    await f()
  } catch (err) {
    if (err instanceof KonserveError) return err
    throw new Error(`not a KonserveError: ${String(err)}`, { cause: err })
  }
  throw new Error('did not fail')
}

/** Writes a blob in `pieces` through the store's writer, in one calling form. */
async function writeBlob(store: PureFileBacking, mode: Mode, k: Uint8Array, pieces: Uint8Array[], meta = META): Promise<void> {
  if (mode === 'sync') {
    const sink = store.blobWriterSync(k, meta)
    for (const p of pieces) sink.writeSync(p)
    sink.commitSync()
  } else {
    const sink = await store.blobWriterAsync(k, meta)
    for (const p of pieces) await sink.write(p)
    await sink.commit()
  }
}

const openBlob = async (store: PureFileBacking, mode: Mode, k: Uint8Array): Promise<BlobSource | undefined> =>
  mode === 'sync' ? store.openBlobSync(k) : store.openBlobAsync(k)
const readRange = async (src: BlobSource, mode: Mode, offset: number, length: number): Promise<Uint8Array> =>
  mode === 'sync' ? src.readSync(offset, length) : src.read(offset, length)

/** `bytes` cut into pieces of the given sizes (cycled), the last one what is left. */
function cut(bytes: Uint8Array, sizes: number[]): Uint8Array[] {
  const out: Uint8Array[] = []
  let at = 0
  for (let i = 0; at < bytes.length; i++) {
    const n = sizes[i % sizes.length]!
    out.push(bytes.subarray(at, at + n))
    at += n
  }
  return out
}

// ---- blobs: round trips -------------------------------------------------------------

const SIZES = [0, 1, MiB - 1, MiB, MiB + 1, 3.5 * MiB]

for (const c of codecs) {
  for (const mode of modes) {
    test(`blob round trip (${codecName(c)}, ${mode}): sizes 0, 1, 1 MiB - 1, 1 MiB, 1 MiB + 1, 3.5 MiB`, async (t) => {
      const dir = tempDir(t)
      const store = open(dir, c, mode === 'sync')
      for (const [i, n] of SIZES.entries()) {
        const k = key(`blob-${n}`)
        const blob = i % 2 ? pattern(n, i) : new Uint8Array(randomBytes(n))
        await writeBlob(store, mode, k, cut(blob, [333_333, 1, MiB + 7, 0, 65_536]))
        t.deepEqual(stagingFiles(dir), [], 'no staging file is left')
        const got = mode === 'sync' ? store.getSync(k)! : (await store.getAsync(k))!
        t.true(same(got.value, blob), `get of ${n} bytes`)
        t.is(got.serializer, 0)
        t.true(same(got.meta, META))
        t.is(got.log, undefined)
        const src = (await openBlob(store, mode, k))!
        t.is(src.size, n)
        t.true(same(src.meta.key, k))
        t.true(same(src.meta.meta, META))
        t.true(same(await readRange(src, mode, 0, n + 10), blob), `read all ${n} bytes`)
        const bytes = readFileSync(store.filePath(k))
        const header = file.decodeHeader(bytes, bytes.length)
        t.is(header.flags, file.FLAG_CHUNKED)
        t.like(header, { serializer: 0, compressor: c.compressor, encryptor: c.encryptor })
        if (c.compressor === 0 && c.encryptor === 0) {
          t.deepEqual(src.plain, { file: store.filePath(k), offset: 48 + header.metaLen })
          t.true(same(bytes.subarray(src.plain!.offset, src.plain!.offset + n), blob), 'the plain blob lies in the file')
        } else {
          t.is(src.plain, undefined)
        }
        if (c.encryptor === 0) {
          // Without encryption the file is deterministic: exactly the codec's whole-file encoding.
          const whole = encodeBlobFileSync({ compressor: c.compressor, encryptor: 0, keyCke: k, meta: META, value: blob })
          t.true(same(bytes, whole), `the streamed file equals the whole-file encoding (${n} bytes)`)
        } else if (n >= 16) {
          t.false(bytes.includes(buf(blob.subarray(0, 16))), 'no plaintext in an encrypted file')
        }
        src.close()
        src.close()
        t.is(await outcome(() => src.readSync(0, 1)), 'ERR_INVALID_ARGUMENT', 'a closed blob is not read')
        const meta = mode === 'sync' ? store.getMetaSync(k)! : (await store.getMetaAsync(k))!
        t.is(meta.log, undefined)
        t.true(same(meta.meta, META))
      }
      const listed = store.listSync()
      t.is(listed.entries.length, SIZES.length)
      t.deepEqual(listed.corrupt, [])
    })
  }
}

test('blob: odd-sized writes (empty ones, single bytes, pieces across chunk ends) make the same file', async (t) => {
  const dir = tempDir(t)
  const c = { compressor: 1, encryptor: 0 }
  const store = open(dir, c)
  const blob = pattern(2 * MiB + 12_345, 3)
  const whole = encodeBlobFileSync({ compressor: 1, encryptor: 0, keyCke: key('odd'), meta: META, value: blob })
  const splits = [[1], [0, 1, 0, 2], [MiB - 1, 2], [MiB], [MiB + 1], [2 * MiB], [7, 65_536, 999_999], [blob.length]]
  for (const [i, sizes] of splits.entries()) {
    const pieces = i === 0 ? cut(blob.subarray(0, 5000), sizes).concat([blob.subarray(5000)]) : cut(blob, sizes)
    await writeBlob(store, i % 2 ? 'async' : 'sync', key('odd'), pieces)
    t.true(same(readFileSync(store.filePath(key('odd'))), whole), `pieces of ${sizes.join(', ')}`)
  }
  // A writer's bytes are copied as it goes: changing them after write() changes nothing.
  const sink = store.blobWriterSync(key('copied'), META)
  const piece = pattern(1000)
  sink.writeSync(piece)
  piece.fill(0)
  sink.commitSync()
  t.true(same(store.getSync(key('copied'))!.value, pattern(1000)))
})

test('blob: range reads at chunk boundaries, in both forms, for every codec', async (t) => {
  const dir = tempDir(t)
  for (const c of codecs) {
    const store = open(dir, c)
    const k = key(`ranges-${codecName(c)}`)
    const n = 3.5 * MiB
    const blob = pattern(n, 11)
    await writeBlob(store, 'sync', k, [blob])
    for (const mode of modes) {
      const src = (await openBlob(store, mode, k))!
      let reads = 0
      const wrong: string[] = []
      const offsets = [0, 1, 2, n - 2, n - 1, n]
      for (let b = 1; b <= 3; b++) for (const d of [-2, -1, 0, 1, 2]) offsets.push(b * MiB + d)
      for (const o of offsets) {
        for (const len of [0, 1, 2, 3, MiB - 1, MiB, MiB + 1, 2 * MiB + 7, n]) {
          const got = await readRange(src, mode, o, len)
          reads++
          if (!same(got, blob.subarray(o, o + len))) wrong.push(`${o} + ${len}`)
        }
      }
      t.deepEqual(wrong, [], `${codecName(c)} ${mode}: every range read right`)
      t.is(reads, offsets.length * 9)
      t.is((await readRange(src, mode, n, 5)).length, 0, 'at the end: nothing')
      for (const [o, len] of [[n + 1, 1], [-1, 1], [0, -1], [0.5, 1], [Number.NaN, 1]] as const) {
        const e = await failure(() => readRange(src, mode, o, len))
        t.is(e.code, 'ERR_INVALID_ARGUMENT', `read ${o} + ${len}`)
      }
      src.close()
    }
  }
})

test('blob: an open blob is a snapshot; a new blob replaces it atomically', async (t) => {
  const dir = tempDir(t)
  const store = open(dir, { compressor: 1, encryptor: 1 })
  const k = key('snap')
  const first = pattern(MiB + 100, 1)
  const second = pattern(5, 2)
  await writeBlob(store, 'sync', k, [first])
  const src = store.openBlobSync(k)!
  await writeBlob(store, 'async', k, [second])
  t.true(same(src.readSync(0, first.length), first), 'the open blob reads as it was')
  t.true(same(store.getSync(k)!.value, second))
  src.close()
  // A blob replaces a value, and a value a blob.
  store.putSync([{ key: k, serializer: 1, meta: META, value: new Uint8Array([0xa1, 0x61]) }])
  t.is(store.getSync(k)!.serializer, 1)
  await writeBlob(store, 'sync', k, [first])
  t.true(same(store.getSync(k)!.value, first))
})

test('blob: abort leaves no staging file and the old blob; closed writers refuse', async (t) => {
  const dir = tempDir(t)
  const store = open(dir, { compressor: 0, encryptor: 1 }, true)
  const k = key('aborted')
  const old = pattern(1000, 5)
  await writeBlob(store, 'sync', k, [old])
  for (const mode of modes) {
    const sink = mode === 'sync' ? store.blobWriterSync(k, META) : await store.blobWriterAsync(k, META)
    const staged = stagingFiles(dir)
    t.is(staged.length, 1, 'a staging file while writing')
    t.regex(staged[0]!, new RegExp(`^\\.${store.filePath(k).slice(-36, -4)}\\.${process.pid}\\.\\d+\\.stage$`))
    // Another open of the store does not sweep a write in flight.
    open(dir, { compressor: 0, encryptor: 1 })
    t.is(stagingFiles(dir).length, 1)
    if (mode === 'sync') sink.writeSync(pattern(2 * MiB + 3))
    else await sink.write(pattern(2 * MiB + 3))
    sink.abort()
    sink.abort()
    t.deepEqual(stagingFiles(dir), [])
    t.true(same(store.getSync(k)!.value, old), 'the key keeps its blob')
    t.is(await outcome(() => sink.writeSync(new Uint8Array(1))), 'ERR_INVALID_ARGUMENT')
    t.is(await outcome(() => sink.write(new Uint8Array(1))), 'ERR_INVALID_ARGUMENT')
    t.is(await outcome(() => sink.commitSync()), 'ERR_INVALID_ARGUMENT')
    t.is(await outcome(() => sink.commit()), 'ERR_INVALID_ARGUMENT')
  }
  // After a commit: abort is a no-op, a second commit refused.
  const sink = store.blobWriterSync(k, META)
  sink.writeSync(pattern(10))
  sink.commitSync()
  sink.abort()
  t.true(same(store.getSync(k)!.value, pattern(10)))
  t.is(await outcome(() => sink.commitSync()), 'ERR_INVALID_ARGUMENT')
  // An abort while an async write runs: the file goes once the write is done.
  const racing = await store.blobWriterAsync(key('racing'), META)
  const pending = racing.write(pattern(3 * MiB))
  racing.abort()
  t.is(await outcome(() => pending), 'ERR_INVALID_ARGUMENT')
  t.deepEqual(stagingFiles(dir), [])
  t.false(store.existsSync(key('racing')))
  // Two calls at once on one writer: the second is refused, the first goes on.
  const twice = await store.blobWriterAsync(key('twice'), META)
  const one = twice.write(pattern(MiB + 5))
  t.is(await outcome(() => twice.write(pattern(1))), 'ERR_INVALID_ARGUMENT')
  await one
  await twice.commit()
  t.true(same(store.getSync(key('twice'))!.value, pattern(MiB + 5)))
  t.deepEqual(stagingFiles(dir), [])
})

test('blob: values, logs and missing keys; old whole raw values are served', async (t) => {
  const dir = tempDir(t)
  const store = open(dir, { compressor: 1, encryptor: 0 })
  t.is(store.openBlobSync(key('missing')), undefined)
  t.is(await store.openBlobAsync(key('missing')), undefined)
  store.putSync([{ key: key('msgpack'), serializer: 1, meta: META, value: new Uint8Array([0xa1, 0x61]) }])
  const e = await failure(() => store.openBlobSync(key('msgpack')))
  t.is(e.code, 'ERR_NOT_BINARY')
  t.is(e.file, store.filePath(key('msgpack')))
  store.appendSync(key('log'), [{ serializer: 1, stamp: 1, bytes: new Uint8Array([1]) }], LOG_META)
  const l = await failure(() => store.openBlobAsync(key('log')))
  t.is(l.code, 'ERR_NOT_BINARY')
  t.is(l.file, store.filePath(key('log')))
  // A raw blob written whole (flags 0, serializer 0), as before chunking.
  const old = pattern(3000, 9)
  store.putSync([{ key: key('old'), serializer: 0, meta: META, value: old }])
  const src = store.openBlobSync(key('old'))!
  t.is(src.size, 3000)
  t.true(same(src.readSync(1000, 10), old.subarray(1000, 1010)))
  t.true(same(await src.read(2990, 100), old.subarray(2990)))
  t.is(src.plain, undefined, 'compressed: no plain bytes')
  src.close()
  const plainStore = open(dir, { compressor: 0, encryptor: 0 })
  plainStore.putSync([{ key: key('old-plain'), serializer: 0, meta: META, value: old }])
  const p = plainStore.openBlobSync(key('old-plain'))!
  t.true(same(readFileSync(p.plain!.file).subarray(p.plain!.offset, p.plain!.offset + 3000), old))
  p.close()
  // A wrong key cannot read an encrypted blob.
  const enc = open(dir, { compressor: 0, encryptor: 1 })
  await writeBlob(enc, 'sync', key('secret'), [pattern(MiB + 1)])
  const other = PureFileBacking.openSync(dir, createPureCodec(0, new TextEncoder().encode('wrong')), { syncBlob: false })
  t.is(await outcome(() => other.openBlobSync(key('secret'))), 'ERR_DECRYPT')
  t.is(await outcome(() => open(dir, { compressor: 0, encryptor: 0 }).openBlobSync(key('secret'))), 'ERR_DECRYPT')
})

// ---- blobs: damage -------------------------------------------------------------------

/** Fixes the header's checksums after an edit: the value checksum over `table || trailer` of a chunked file. */
function resealChunked(f: Uint8Array, tailLen: number): void {
  const v = new DataView(f.buffer, f.byteOffset, f.byteLength)
  const m = v.getUint32(12, true)
  v.setBigUint64(24, xxh3_64(f.subarray(48, 48 + m)), true)
  v.setBigUint64(32, xxh3_64(f.subarray(f.length - tailLen)), true)
  v.setBigUint64(40, xxh3_64(f.subarray(0, 40)), true)
}

for (const c of [{ compressor: 1, encryptor: 0 }, { compressor: 1, encryptor: 1 }]) {
  test(`blob damage (${codecName(c)}): flipped bytes and truncations are typed errors`, async (t) => {
    const dir = tempDir(t)
    const store = open(dir, c)
    const k = key('damaged')
    const blob = pattern(2 * MiB + 1000, 4)
    await writeBlob(store, 'sync', k, [blob])
    const path = store.filePath(k)
    const good = new Uint8Array(readFileSync(path))
    const metaLen = new DataView(good.buffer).getUint32(12, true)
    const tailLen = 12 * 3 + 12
    const ctx = { secret: c.encryptor ? SECRET : null, keyHash: file.keyHash(k), crypto: nodeCryptoProvider }
    // Every byte of the header, the meta segment, the table and the trailer; the chunks sampled.
    const positions = new Set<number>()
    for (let i = 0; i < 48 + metaLen; i++) positions.add(i)
    for (let i = good.length - tailLen; i < good.length; i++) positions.add(i)
    for (let i = 48 + metaLen; i < good.length - tailLen; i += 101) positions.add(i)
    for (const i of positions) {
      const f = good.slice()
      f[i]! ^= 0x04
      const code = await outcome(() => file.decodeKeyFileSync(f, ctx))
      if (code !== 'ERR_CORRUPT') t.fail(`flipped byte ${i}: ${code}`)
      const short = await outcome(() => file.decodeKeyFileSync(good.subarray(0, i), ctx))
      if (short !== 'ERR_CORRUPT') t.fail(`truncated to ${i}: ${short}`)
    }
    t.is(await outcome(() => file.decodeKeyFileSync(Buffer.concat([good, new Uint8Array(1)]), ctx)), 'ERR_CORRUPT', 'one byte longer')
    // Through the store: get, openBlob and reads fail with the code and the file.
    const sampled = [0, 10, 45, 50, 48 + metaLen + 3, 48 + metaLen + 5000, good.length - tailLen - 5, good.length - 20, good.length - 1]
    for (const i of sampled) {
      const f = good.slice()
      f[i]! ^= 0x04
      writeFileSync(path, f)
      const errs: KonserveError[] = []
      for (const op of [() => store.getSync(k), () => store.getAsync(k), async () => {
        const src = await store.openBlobAsync(k)
        try {
          await src!.read(0, blob.length)
        } finally {
          src?.close()
        }
      }]) errs.push(await failure(op))
      for (const e of errs) {
        t.is(e.code, 'ERR_CORRUPT', `flipped byte ${i}`)
        t.is(e.file, path)
      }
    }
    // A range away from a damaged chunk still reads: only the chunks it overlaps are read.
    const f = good.slice()
    f[good.length - tailLen - 5]! ^= 0x04 // in the last chunk
    writeFileSync(path, f)
    const src = store.openBlobSync(k)!
    t.true(same(src.readSync(10, MiB), blob.subarray(10, 10 + MiB)))
    t.is(await outcome(() => src.readSync(2 * MiB, 10)), 'ERR_CORRUPT')
    src.close()
    for (const n of [0, 47, 48 + metaLen, good.length - 1]) {
      writeFileSync(path, good.subarray(0, n))
      t.is(await outcome(() => store.openBlobSync(k)), 'ERR_CORRUPT', `truncated to ${n}`)
      t.is(await outcome(() => store.getSync(k)), 'ERR_CORRUPT', `truncated to ${n}`)
    }
    const listing = store.listSync()
    t.is(listing.corrupt.length, 1)
    t.is(listing.corrupt[0]!.file, path)
    t.is(listing.corrupt[0]!.code, 'ERR_CORRUPT')
    writeFileSync(path, good)
    t.true(same(store.getSync(k)!.value, blob))
  })
}

test('blob damage (aes): chunks edited, reordered or dropped with the checksums fixed do not authenticate', async (t) => {
  const dir = tempDir(t)
  const store = open(dir, { compressor: 0, encryptor: 1 })
  const k = key('sealed')
  const path = store.filePath(k)
  const blob = pattern(3 * MiB, 8)
  await writeBlob(store, 'sync', k, [blob])
  const good = new Uint8Array(readFileSync(path))
  const v = new DataView(good.buffer)
  const m = v.getUint32(12, true)
  const stored = MiB + 16 + 64
  const start = 48 + m
  const tailLen = 3 * 12 + 12
  const tableAt = good.length - tailLen
  const expect = async (f: Uint8Array, what: string, code = 'ERR_DECRYPT') => {
    writeFileSync(path, f)
    t.is(await outcome(() => store.getSync(k)), code, what)
  }
  // A ciphertext byte changed, its chunk's checksum and the table's fixed.
  let f = good.slice()
  f[start + 100]! ^= 1
  new DataView(f.buffer).setBigUint64(tableAt + 4, xxh3_64(f.subarray(start, start + stored)), true)
  resealChunked(f, tailLen)
  await expect(f, 'an edited chunk')
  // Chunks 0 and 1 swapped (and their table entries).
  f = good.slice()
  f.set(good.subarray(start + stored, start + 2 * stored), start)
  f.set(good.subarray(start, start + stored), start + stored)
  f.set(good.subarray(tableAt + 12, tableAt + 24), tableAt)
  f.set(good.subarray(tableAt, tableAt + 12), tableAt + 12)
  resealChunked(f, tailLen)
  await expect(f, 'two chunks swapped')
  // The last chunk dropped: a blob of 2 MiB whose chunk 1 was sealed as not the last.
  const header = file.decodeHeader(good, good.length)
  const table = new Uint8Array(2 * 12 + 12)
  table.set(good.subarray(tableAt, tableAt + 24))
  const tv = new DataView(table.buffer)
  tv.setBigUint64(24, BigInt(2 * MiB), true)
  tv.setUint32(32, 2, true)
  const body = good.subarray(start, start + 2 * stored)
  const h = file.encodeHeader({ ...header, valueLen: body.length + table.length, valueChecksum: xxh3_64(table) })
  f = Buffer.concat([h, good.subarray(48, start), body, table])
  await expect(f, 'the last chunk dropped')
  // Moved to another key: the key hash is in the MAC (and the meta segment names the key).
  writeFileSync(path, good)
  writeFileSync(store.filePath(key('elsewhere')), good)
  t.is(await outcome(() => store.getSync(key('elsewhere'))), 'ERR_DECRYPT')
  t.true(same(store.getSync(k)!.value, blob))
})

// ---- logs ---------------------------------------------------------------------------

const rec = (i: number, bytes: Uint8Array, serializer = 1): NewRecord => ({ serializer, stamp: 1_700_000_000_000 + i, bytes })
const asRecord = (index: number, r: NewRecord): LogRecord => ({ index, stamp: r.stamp, serializer: r.serializer, bytes: r.bytes })
const info = (first: number, last: number, stamp: number): LogInfo => ({ firstIndex: first, lastIndex: last, lastStamp: stamp })
const EMPTY: LogInfo = { firstIndex: 0, lastIndex: -1, lastStamp: 0 }

async function append(store: PureFileBacking, mode: Mode, k: Uint8Array, r: NewRecord): Promise<LogInfo> {
  return mode === 'sync' ? store.appendSync(k, [r], LOG_META) : store.appendAsync(k, [r], LOG_META)
}

/** Every record of the log, read in batches of `batch`. */
async function readAll(store: PureFileBacking, k: Uint8Array, mode: Mode = 'sync', batch = 3): Promise<LogRecord[]> {
  const cursor = mode === 'sync' ? store.openLogSync(k) : await store.openLogAsync(k)
  if (!cursor) throw new Error('no log')
  const out: LogRecord[] = []
  try {
    for (;;) {
      const b = mode === 'sync' ? cursor.nextSync(batch) : await cursor.next(batch)
      if (!b) return out
      if (b.length === 0 || b.length > batch) throw new Error(`a batch of ${b.length}`)
      out.push(...b)
    }
  } finally {
    cursor.close()
  }
}

const plainRecords = (rs: LogRecord[]) => rs.map((r) => ({ ...r, bytes: buf(r.bytes).toString('hex') }))

for (const c of codecs) {
  for (const mode of modes) {
    test(`log round trip (${codecName(c)}, ${mode}): records of every size, info, get, listing`, async (t) => {
      const dir = tempDir(t)
      const store = open(dir, c, true)
      const k = key('events')
      const payloads = [new Uint8Array(0), pattern(1), pattern(100, 1), new Uint8Array(randomBytes(70_000)), pattern(1_200_000, 2), pattern(3, 3)]
      const written: LogRecord[] = []
      for (const [i, p] of payloads.entries()) {
        const r = rec(i, p, i === 2 ? 200 : 1)
        t.deepEqual(await append(store, mode, k, r), info(0, i, r.stamp), `append ${i}`)
        written.push(asRecord(i, r))
        t.deepEqual(stagingFiles(dir), [])
      }
      for (const batch of [1, 2, 1000]) t.deepEqual(plainRecords(await readAll(store, k, mode, batch)), plainRecords(written), `batches of ${batch}`)
      const last = written[written.length - 1]!
      const expected = info(0, written.length - 1, last.stamp)
      const meta = mode === 'sync' ? store.getMetaSync(k)! : (await store.getMetaAsync(k))!
      t.deepEqual(meta.log, expected)
      t.true(same(meta.meta, LOG_META))
      t.is(meta.serializer, 0)
      const got = mode === 'sync' ? store.getSync(k)! : (await store.getAsync(k))!
      t.deepEqual(got.log, expected)
      t.is(got.value.length, 0)
      const listing = mode === 'sync' ? store.listSync() : await store.listAsync()
      t.deepEqual(listing.entries.map((e) => e.log), [expected])
      const bytes = readFileSync(store.filePath(k))
      const header = file.decodeHeader(bytes, bytes.length)
      t.like(header, { flags: file.FLAGS_COMMITTED_LOG, serializer: 0, valueLen: 128, compressor: c.compressor, encryptor: c.encryptor })
      if (c.encryptor === 0) {
        const whole = appendedLog(c.compressor, k, written, written.map(() => 1))
        t.true(same(bytes, whole), 'the file is exactly the codec encoding of its records')
      }
      t.is(mode === 'sync' ? store.openLogSync(key('none')) : await store.openLogAsync(key('none')), undefined)
    })
  }
}

test('log: 2000 appends read back in order, in bounded batches', async (t) => {
  const dir = tempDir(t)
  const store = open(dir, { compressor: 1, encryptor: 0 })
  const k = key('many')
  const payload = (i: number) => new TextEncoder().encode(`record ${i} `.repeat(1 + (i % 7)))
  for (let i = 0; i < 2000; i++) {
    const r = rec(i, payload(i), 1 + (i % 3))
    const got = i % 2 ? await store.appendAsync(k, [r], LOG_META) : store.appendSync(k, [r], LOG_META)
    if (got.lastIndex !== i || got.firstIndex !== 0 || got.lastStamp !== r.stamp) t.fail(`append ${i}: ${JSON.stringify(got)}`)
  }
  for (const mode of modes) {
    const all = await readAll(store, k, mode, 128)
    t.is(all.length, 2000)
    all.forEach((r, i) => {
      if (r.index !== i || r.stamp !== 1_700_000_000_000 + i || r.serializer !== 1 + (i % 3) || !same(r.bytes, payload(i))) t.fail(`record ${i}`)
    })
  }
  t.deepEqual(store.getMetaSync(k)!.log, info(0, 1999, 1_700_000_001_999))
  // A cursor sees the log as it was opened.
  const cursor = store.openLogSync(k)!
  store.appendSync(k, [rec(2000, pattern(5))], LOG_META)
  let n = 0
  for (let b = cursor.nextSync(500); b; b = cursor.nextSync(500)) n += b.length
  t.is(n, 2000)
  t.is(cursor.nextSync(1), undefined)
  cursor.close()
})

test('log: trims keep indexes, drop the rest, and restart at 0 when nothing is kept', async (t) => {
  const dir = tempDir(t)
  for (const c of codecs) {
    const store = open(dir, c, true)
    const k = key(`trim-${codecName(c)}`)
    const recs = Array.from({ length: 10 }, (_, i) => rec(i, pattern(50 + i, i)))
    for (const r of recs) store.appendSync(k, [r], LOG_META)
    const all = recs.map((r, i) => asRecord(i, r))
    const newMeta = new Uint8Array([0x81, 0xa1, 0x72, 0x05])
    t.deepEqual(store.trimLogSync(k, 0, newMeta), info(0, 9, recs[9]!.stamp), 'keepFrom 0 keeps all')
    t.deepEqual(plainRecords(await readAll(store, k)), plainRecords(all))
    t.true(same(store.getMetaSync(k)!.meta, newMeta), 'the new metadata')
    t.deepEqual(await store.trimLogAsync(k, 4, LOG_META), info(4, 9, recs[9]!.stamp))
    t.deepEqual(plainRecords(await readAll(store, k, 'async')), plainRecords(all.slice(4)))
    t.deepEqual(store.getMetaSync(k)!.log, info(4, 9, recs[9]!.stamp))
    t.deepEqual(store.appendSync(k, [rec(10, pattern(3))], LOG_META), info(4, 10, rec(10, pattern(3)).stamp), 'appending continues the indexes')
    t.deepEqual(store.trimLogSync(k, 10, LOG_META), info(10, 10, rec(10, pattern(3)).stamp), 'only the last kept')
    t.deepEqual(store.trimLogSync(k, 3, LOG_META), info(10, 10, rec(10, pattern(3)).stamp), 'keepFrom below the first: all kept')
    t.deepEqual(store.trimLogSync(k, 11, LOG_META), EMPTY, 'nothing kept')
    t.deepEqual(await readAll(store, k), [])
    t.deepEqual(store.getMetaSync(k)!.log, EMPTY)
    t.deepEqual(store.getSync(k)!.log, EMPTY)
    t.is(statSync(store.filePath(k)).size, 48 + file.decodeHeader(readFileSync(store.filePath(k)), statSync(store.filePath(k)).size).metaLen + 128)
    t.deepEqual(store.trimLogSync(k, 0, LOG_META), EMPTY, 'an empty log trimmed')
    t.deepEqual(store.appendSync(k, [rec(0, pattern(4))], LOG_META), info(0, 0, rec(0, pattern(4)).stamp), 'an emptied log restarts at 0')
    t.deepEqual(plainRecords(await readAll(store, k)), plainRecords([asRecord(0, rec(0, pattern(4)))]))
    t.deepEqual(stagingFiles(dir), [])
  }
  // A missing key: nothing written.
  const store = open(dir, codecs[0]!)
  t.deepEqual(store.trimLogSync(key('missing'), 3, LOG_META), EMPTY)
  t.deepEqual(await store.trimLogAsync(key('missing'), 3, LOG_META), EMPTY)
  t.false(store.existsSync(key('missing')))
  // A trim keeps the log's codec (its records are copied as stored), whatever the store writes now.
  const lz4 = open(dir, { compressor: 1, encryptor: 1 })
  const k = key('codec-kept')
  lz4.appendSync(k, [rec(0, pattern(500))], LOG_META)
  lz4.appendSync(k, [rec(1, pattern(500, 1))], LOG_META)
  const plainOpen = open(dir, { compressor: 0, encryptor: 1 })
  plainOpen.trimLogSync(k, 1, LOG_META)
  plainOpen.appendSync(k, [rec(2, pattern(7))], LOG_META)
  t.like(file.decodeHeader(readFileSync(lz4.filePath(k)), statSync(lz4.filePath(k)).size), { compressor: 1, encryptor: 1 })
  t.deepEqual(plainRecords(await readAll(plainOpen, k)), plainRecords([asRecord(1, rec(1, pattern(500, 1))), asRecord(2, rec(2, pattern(7)))]))
})

/** Builds a log of `recs` and returns its bytes and each record's end offset. */
function build(store: PureFileBacking, k: Uint8Array, recs: NewRecord[]): { full: Uint8Array; ends: number[] } {
  const ends: number[] = []
  for (const r of recs) {
    store.appendSync(k, [r], LOG_META)
    ends.push(statSync(store.filePath(k)).size)
  }
  return { full: new Uint8Array(readFileSync(store.filePath(k))), ends }
}

/** Where a log file's commit area starts (48 + m) and its records start (after the area, in the current layout). */
function logParts(bytes: Uint8Array): { areaAt: number; dataStart: number } {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const areaAt = 48 + v.getUint32(12, true)
  return { areaAt, dataStart: areaAt + (v.getUint32(8, true) === file.FLAGS_COMMITTED_LOG ? 128 : 0) }
}

/** Whether `after` keeps `before`'s head and records (up to `before`'s end), whatever its commit area says. */
function keepsRecords(after: Uint8Array, before: Uint8Array): boolean {
  const { areaAt, dataStart } = logParts(before)
  return same(after.subarray(0, areaAt), before.subarray(0, areaAt)) && same(after.subarray(dataStart, before.length), before.subarray(dataStart))
}

for (const c of codecs) {
  test(`log torn tails (${codecName(c)}): bytes past the acknowledged records are ignored, cut by the next append`, async (t) => {
    const dir = tempDir(t)
    const store = open(dir, c)
    const k = key('torn')
    const path = store.filePath(k)
    const recs = [0, 1, 2].map((i) => rec(i, pattern(20 + 30 * i, i)))
    // The log after two appends, then the third's bytes: what a crash during
    // the third can leave is the first with some of them after it.
    const { full: good, ends } = build(store, k, recs.slice(0, 2))
    store.appendSync(k, [recs[2]!], LOG_META)
    const third = new Uint8Array(readFileSync(path)).subarray(ends[1]!)
    const kept = recs.slice(0, 2).map((r, i) => asRecord(i, r))
    const next = rec(2, new TextEncoder().encode('replacement'))
    const tails: Uint8Array[] = []
    for (let n = 0; n <= third.length; n++) tails.push(Buffer.concat([good, third.subarray(0, n)]))
    tails.push(Buffer.concat([good, third, third, Buffer.from('junk')]))
    // Cut records followed by zeros (the size reached the disk, the data did not).
    for (const n of [1, 5, 21, 40, 100]) for (const at of [0, 4, 30]) tails.push(Buffer.concat([good, third.subarray(0, at), new Uint8Array(n)]))
    for (const [i, torn] of tails.entries()) {
      const what = `torn file of ${torn.length} bytes (${i})`
      const mode: Mode = i % 2 ? 'async' : 'sync'
      writeFileSync(path, torn)
      forgetVerifiedLogs()
      t.deepEqual(plainRecords(await readAll(store, k, mode)), plainRecords(kept), what)
      t.deepEqual(store.getMetaSync(k)!.log, info(0, 1, recs[1]!.stamp), what)
      t.deepEqual(await append(store, mode, k, next), info(0, 2, next.stamp), what)
      if (!keepsRecords(new Uint8Array(readFileSync(path)), good)) t.fail(`${what}: the acknowledged records are untouched`)
      t.deepEqual(plainRecords(await readAll(store, k, mode)), plainRecords([...kept, asRecord(2, next)]), what)
    }
    // A torn large record (larger than the read window).
    writeFileSync(path, good)
    forgetVerifiedLogs()
    const big = rec(2, new Uint8Array(randomBytes(300_000)))
    store.appendSync(k, [big], LOG_META)
    const withBig = new Uint8Array(readFileSync(path))
    for (const n of [ends[1]! + 21, ends[1]! + 100_000, withBig.length - 13, withBig.length - 1, withBig.length]) {
      writeFileSync(path, Buffer.concat([good, withBig.subarray(ends[1]!, n)]))
      forgetVerifiedLogs()
      t.deepEqual(plainRecords(await readAll(store, k)), plainRecords(kept))
      t.is(store.appendSync(k, [next], LOG_META).lastIndex, 2)
      t.deepEqual(plainRecords(await readAll(store, k)), plainRecords([...kept, asRecord(2, next)]))
    }
    writeFileSync(path, withBig)
    t.deepEqual(plainRecords(await readAll(store, k, 'async')), plainRecords([...kept, asRecord(2, big)]))
    // A trim drops a torn tail.
    writeFileSync(path, Buffer.concat([good, third.subarray(0, 10)]))
    t.deepEqual(store.trimLogSync(k, 1, LOG_META), info(1, 1, recs[1]!.stamp))
    t.deepEqual(plainRecords(await readAll(store, k)), plainRecords(kept.slice(1)))
    // A log with no acknowledged records and a torn one after them; the next append is record 0.
    store.trimLogSync(k, 100, LOG_META)
    writeFileSync(path, Buffer.concat([readFileSync(path), third.subarray(0, 40)]))
    forgetVerifiedLogs()
    t.deepEqual(await readAll(store, k), [])
    t.deepEqual(store.getMetaSync(k)!.log, EMPTY)
    t.deepEqual(store.appendSync(k, [recs[0]!], LOG_META), info(0, 0, recs[0]!.stamp))
    t.deepEqual(plainRecords(await readAll(store, k)), plainRecords(kept.slice(0, 1)))
  })
}

for (const c of [{ compressor: 0, encryptor: 0 }, { compressor: 1, encryptor: 1 }]) {
  test(`log damage to acknowledged records (${codecName(c)}): ERR_CORRUPT, never a shorter log, the file never written over`, async (t) => {
    const dir = tempDir(t)
    const store = open(dir, c)
    const k = key('damaged')
    const path = store.filePath(k)
    const recs = [0, 1, 2, 3].map((i) => rec(i, pattern(20 + 30 * i, i)))
    const { full, ends } = build(store, k, recs)
    const all = recs.map((r, i) => asRecord(i, r))
    const { dataStart } = logParts(full)
    // Every byte of record 1 (in the middle) and of record 3 (the last), and every shorter length.
    const damages: Array<[string, Uint8Array]> = []
    for (let at = ends[0]!; at < ends[3]!; at++) {
      if (at >= ends[1]! && at < ends[2]!) continue
      const bad = full.slice()
      bad[at]! ^= 0x10
      damages.push([`byte ${at} flipped`, bad])
    }
    for (let n = dataStart; n < full.length; n += 3) damages.push([`cut to ${n} bytes`, full.slice(0, n)])
    for (const [i, [what, bad]] of damages.entries()) {
      writeFileSync(path, bad)
      // Changed behind this process's back: the next append must scan.
      forgetVerifiedLogs()
      const mode: Mode = i % 2 ? 'async' : 'sync'
      const e = await failure(() => readAll(store, k, mode))
      if (e.code !== 'ERR_CORRUPT' || e.file !== path) t.fail(`${what}: read ${e.code} ${e.file}`)
      const a = await failure(() => (mode === 'sync' ? store.appendSync(k, [rec(4, pattern(1))], LOG_META) : store.appendAsync(k, [rec(4, pattern(1))], LOG_META)))
      if (a.code !== 'ERR_CORRUPT' || a.file !== path) t.fail(`${what}: append ${a.code} ${a.file}`)
      if ((await outcome(() => store.trimLogSync(k, 0, LOG_META))) !== 'ERR_CORRUPT') t.fail(`${what}: trim`)
      if (!same(new Uint8Array(readFileSync(path)), bad)) t.fail(`${what}: the file is unchanged`)
    }
    t.deepEqual(stagingFiles(dir), [])
    // The records before the damage come first, then the error.
    const mid = full.slice()
    mid[ends[1]! + 25]! ^= 1
    writeFileSync(path, mid)
    const cursor = store.openLogSync(k)!
    t.deepEqual(plainRecords(cursor.nextSync(10)!), plainRecords(all.slice(0, 2)))
    t.is(await outcome(() => cursor.nextSync(10)), 'ERR_CORRUPT')
    t.is(cursor.nextSync(10), undefined)
    // getMeta reads only the first and the last record: damage in between it does not see.
    t.deepEqual(store.getMetaSync(k)!.log, info(0, 3, recs[3]!.stamp))
    // Damage in the first or the last record is seen by getMeta, get and the listing too.
    for (const at of [ends[0]! - 15, ends[3]! - 15]) {
      const bad = full.slice()
      bad[at]! ^= 1
      writeFileSync(path, bad)
      t.is(await outcome(() => store.getMetaSync(k)), 'ERR_CORRUPT')
      t.is(await outcome(() => store.getAsync(k)), 'ERR_CORRUPT')
      const listing = store.listSync()
      t.is(listing.corrupt.length, 1)
      t.is(listing.corrupt[0]!.file, path)
    }
    // A process that appended to the log checks its last record again before the next append.
    writeFileSync(path, full)
    forgetVerifiedLogs()
    store.appendSync(k, [rec(4, pattern(4))], LOG_META)
    const whole = new Uint8Array(readFileSync(path))
    whole[whole.length - 20]! ^= 4
    writeFileSync(path, whole)
    t.is(await outcome(() => store.appendSync(k, [rec(5, pattern(5))], LOG_META)), 'ERR_CORRUPT')
    t.true(same(new Uint8Array(readFileSync(path)), whole))
    // One commit slot damaged (as a crash while it is written leaves it): the other holds the commit.
    const { areaAt } = logParts(full)
    for (const at of [areaAt + 3, areaAt + 64 + 3, areaAt + 60, areaAt + 127]) {
      const bad = full.slice()
      bad[at]! ^= 0x40
      writeFileSync(path, bad)
      forgetVerifiedLogs()
      t.deepEqual(plainRecords(await readAll(store, k)), plainRecords(all), `commit byte ${at}`)
      store.appendSync(k, [rec(4, pattern(4))], LOG_META)
      const after = new Uint8Array(readFileSync(path))
      t.true(same(after.subarray(areaAt, areaAt + 64), after.subarray(areaAt + 64, areaAt + 128)), `commit byte ${at}: both slots rewritten`)
    }
    const both = full.slice()
    both[areaAt + 3]! ^= 1
    both[areaAt + 64 + 3]! ^= 1
    writeFileSync(path, both)
    t.is(await outcome(() => readAll(store, k)), 'ERR_CORRUPT')
    t.is(await outcome(() => store.appendSync(k, [rec(4, pattern(4))], LOG_META)), 'ERR_CORRUPT')
  })
}

test('log (aes): a record moved or reindexed does not authenticate', async (t) => {
  const dir = tempDir(t)
  const store = open(dir, { compressor: 0, encryptor: 1 })
  const k = key('sealed')
  const path = store.filePath(k)
  const recs = [0, 1, 2].map((i) => rec(i, new TextEncoder().encode('same size')))
  const { full, ends } = build(store, k, recs)
  const len = ends[1]! - ends[0]!
  // Record 2's slot gets record 1's payload, with the index and the checksum fixed up.
  const f = full.slice()
  f.set(full.subarray(ends[0]!, ends[1]!), ends[1]!)
  const v = new DataView(f.buffer, ends[1]!, len)
  v.setUint32(4, 2, true)
  v.setBigUint64(len - 12, xxh3_64(f.subarray(ends[1]!, ends[1]! + len - 12)), true)
  writeFileSync(path, f)
  const cursor = store.openLogSync(k)!
  t.is(cursor.nextSync(2)!.length, 2)
  t.is(await outcome(() => cursor.nextSync(2)), 'ERR_DECRYPT')
  cursor.close()
  // Another key's log file under this key's name: the meta segment does not authenticate.
  const other = key('other')
  store.appendSync(other, [recs[0]!], LOG_META)
  writeFileSync(path, readFileSync(store.filePath(other)))
  t.is(await outcome(() => store.openLogSync(k)), 'ERR_DECRYPT')
})

test('log operations on other keys: ERR_NOT_A_LOG, nothing changed', async (t) => {
  const dir = tempDir(t)
  const store = open(dir, { compressor: 1, encryptor: 0 })
  const k = key('value')
  store.putSync([{ key: k, serializer: 1, meta: META, value: new Uint8Array([0xa1, 0x61]) }])
  const blob = key('blob')
  await writeBlob(store, 'sync', blob, [pattern(100)])
  for (const kk of [k, blob]) {
    const path = store.filePath(kk)
    const before = readFileSync(path)
    for (const op of [
      () => store.appendSync(kk, [rec(0, pattern(1))], LOG_META),
      () => store.appendAsync(kk, [rec(0, pattern(1))], LOG_META),
      () => store.openLogSync(kk),
      () => store.openLogAsync(kk),
      () => store.trimLogSync(kk, 0, LOG_META),
      () => store.trimLogAsync(kk, 0, LOG_META),
    ]) {
      const e = await failure(op)
      t.is(e.code, 'ERR_NOT_A_LOG')
      t.is(e.file, path)
    }
    t.true(readFileSync(path).equals(before))
  }
  t.deepEqual(stagingFiles(dir), [])
})

// ---- group commits of appends ---------------------------------------------------------------

for (const c of codecs) {
  test(`log group commits (${codecName(c)}): records of one append get consecutive indexes, in both forms`, async (t) => {
    const dir = tempDir(t)
    const store = open(dir, c, true)
    const k = key('batched')
    const written: LogRecord[] = []
    // A new log of 3, then batches of 1, 4 (one record larger than a read window) and 2, sync and async in turn.
    const sizes = [3, 1, 4, 2]
    for (const [b, n] of sizes.entries()) {
      const first = written.length
      const batch = Array.from({ length: n }, (_, j) => rec(first + j, b === 2 && j === 1 ? pattern(1_100_000, 7) : pattern(10 * (first + j), first + j), 1 + (j % 2)))
      const got = b % 2 ? await store.appendAsync(k, batch, LOG_META) : store.appendSync(k, batch, LOG_META)
      t.deepEqual(got, info(0, first + n - 1, batch[n - 1]!.stamp), `batch ${b}`)
      batch.forEach((r, j) => written.push(asRecord(first + j, r)))
      t.deepEqual(stagingFiles(dir), [])
    }
    for (const mode of modes) t.deepEqual(plainRecords(await readAll(store, k, mode, 4)), plainRecords(written))
    t.deepEqual(store.getMetaSync(k)!.log, info(0, 9, written[9]!.stamp))
    if (c.encryptor === 0) {
      const whole = appendedLog(c.compressor, k, written, sizes)
      t.true(same(readFileSync(store.filePath(k)), whole), 'the same bytes as the codec appending the same batches')
    }
    // Another process (nothing remembered) appends a batch after a torn tail: cut, then written.
    const path = store.filePath(k)
    const before = readFileSync(path)
    writeFileSync(path, Buffer.concat([before, Buffer.from([1, 2, 3, 4, 5, 6, 7, 8, 9])]))
    forgetVerifiedLogs()
    const more = [rec(10, pattern(5)), rec(11, pattern(6))]
    t.deepEqual(await store.appendAsync(k, more, LOG_META), info(0, 11, more[1]!.stamp))
    t.true(keepsRecords(new Uint8Array(readFileSync(path)), new Uint8Array(before)), 'the records before are untouched')
    t.deepEqual(plainRecords(await readAll(store, k)), plainRecords([...written, asRecord(10, more[0]!), asRecord(11, more[1]!)]))
  })
}

test('log group commits: no records, or one bad record, writes nothing', async (t) => {
  const dir = tempDir(t)
  const store = open(dir, codecs[3]!)
  const k = key('bad-batch')
  for (const op of [() => store.appendSync(k, [], LOG_META), () => store.appendAsync(k, [], LOG_META)]) {
    t.is(await outcome(op), 'ERR_INVALID_ARGUMENT')
  }
  t.false(store.existsSync(k), 'no new log')
  const bad = [rec(0, pattern(3)), { serializer: 256, stamp: 1, bytes: pattern(2) }]
  t.is(await outcome(() => store.appendSync(k, bad, LOG_META)), 'ERR_INVALID_ARGUMENT')
  t.false(store.existsSync(k), 'no new log from a batch with a bad record')
  store.appendSync(k, [rec(0, pattern(3))], LOG_META)
  const before = readFileSync(store.filePath(k))
  for (const op of [
    () => store.appendSync(k, [], LOG_META),
    () => store.appendAsync(k, bad, LOG_META),
    () => store.appendSync(k, [rec(1, pattern(1)), { serializer: 1, stamp: -5, bytes: pattern(1) }], LOG_META),
  ]) {
    t.is(await outcome(op), 'ERR_INVALID_ARGUMENT')
    t.true(readFileSync(store.filePath(k)).equals(before), 'the log unchanged')
  }
  t.deepEqual(store.appendSync(k, [rec(1, pattern(1))], LOG_META).lastIndex, 1)
  t.deepEqual(stagingFiles(dir), [])
})

// ---- reading a blob into the caller's memory ---------------------------------------------------

for (const c of codecs) {
  test(`blob readInto (${codecName(c)}): the bytes of read, in the caller's buffer, at chunk boundaries`, async (t) => {
    const dir = tempDir(t)
    const store = open(dir, c)
    const k = key('into')
    const n = 2 * MiB + 1000
    const blob = pattern(n, 5)
    await writeBlob(store, 'sync', k, [blob])
    const src = store.openBlobSync(k)!
    t.is(typeof src.readInto, 'function')
    const cases: Array<[number, number]> = [
      [0, 0], [0, 1], [0, MiB], [0, MiB + 1], [MiB - 1, 1], [MiB - 1, 2], [MiB, MiB], [MiB - 10, MiB + 20],
      [1, 2 * MiB], [2 * MiB, 1000], [2 * MiB, 5000], [n - 1, 1], [n - 1, 10], [n, 0], [n, 5], [0, n], [12345, 3 * MiB],
    ]
    for (const [off, len] of cases) {
      for (const target of [Buffer.alloc(len + 7, 0xee), new Uint8Array(len + 7).fill(0xee)]) {
        const got = await src.readInto!(off, target.subarray(0, len))
        const want = blob.subarray(off, off + len)
        if (got !== want.length || !same(target.subarray(0, got), want)) t.fail(`${len} at ${off}`)
        if (!target.subarray(got).every((b) => b === 0xee)) t.fail(`${len} at ${off}: written past the count`)
      }
    }
    // A stream's loop: one buffer, reused.
    const piece = new Uint8Array(MiB)
    const parts: Buffer[] = []
    for (let at = 0, got; (got = await src.readInto!(at, piece)) > 0; at += got) parts.push(Buffer.from(piece.subarray(0, got)))
    t.true(same(Buffer.concat(parts), blob), 'streamed whole')
    // Reads mixed with readInto use the kept chunk correctly.
    t.true(same(src.readSync(MiB + 5, 10), blob.subarray(MiB + 5, MiB + 15)))
    t.is(await src.readInto!(MiB, piece), MiB)
    t.true(same(piece, blob.subarray(MiB, 2 * MiB)))
    for (const off of [n + 1, -1, 0.5, Number.NaN]) t.is(await outcome(() => src.readInto!(off, piece)), 'ERR_INVALID_ARGUMENT', `offset ${off}`)
    src.close()
    t.is(await outcome(() => src.readInto!(0, piece)), 'ERR_INVALID_ARGUMENT', 'closed')
  })
}

test('blob readInto: a damaged chunk is ERR_CORRUPT, read straight into the buffer or not; old whole blobs', async (t) => {
  const dir = tempDir(t)
  for (const c of [codecs[0]!, codecs[3]!]) {
    const store = open(dir, c)
    const k = key(`damaged-into-${codecName(c)}`)
    const blob = new Uint8Array(randomBytes(2 * MiB + 10))
    await writeBlob(store, 'sync', k, [blob])
    const path = store.filePath(k)
    const f = readFileSync(path)
    const start = 48 + f.readUInt32LE(12)
    const good = store.openBlobSync(k)!
    // A byte in the middle of chunk 1 (for codec none at start + 1.5 MiB).
    f[start + MiB + (c.encryptor || c.compressor ? 1000 : MiB / 2)]! ^= 1
    writeFileSync(path, f)
    const src = store.openBlobSync(k)!
    const target = new Uint8Array(3 * MiB)
    for (const [off, len] of [[MiB, MiB], [0, 3 * MiB], [MiB + 5, 10], [MiB - 1, 2]] as const) {
      const e = await failure(() => src.readInto!(off, target.subarray(0, len)))
      t.is(e.code, 'ERR_CORRUPT', `${codecName(c)}: ${len} at ${off}`)
      t.is(e.file, path)
    }
    t.is(await src.readInto!(0, target.subarray(0, MiB)), MiB)
    t.true(same(target.subarray(0, MiB), blob.subarray(0, MiB)), 'the chunk before it still reads')
    t.is(await src.readInto!(2 * MiB, target), 10)
    src.close()
    good.close()
  }
  // A raw value written whole, before chunking.
  const store = open(dir, codecs[1]!)
  const old = pattern(3000, 9)
  store.putSync([{ key: key('old'), serializer: 0, meta: META, value: old }])
  const src = store.openBlobSync(key('old'))!
  const target = new Uint8Array(100)
  t.is(await src.readInto!(2950, target), 50)
  t.true(same(target.subarray(0, 50), old.subarray(2950)))
  t.is(await src.readInto!(3000, target), 0)
  src.close()
})

// ---- group commits of async puts ---------------------------------------------------------------

const value = (i: number) => new Uint8Array(Buffer.from(`value ${i} `.repeat(1 + (i % 5))))

test('puts: 64 concurrent async puts all land, each resolving, in few batches', async (t) => {
  const dir = tempDir(t)
  const store = open(dir, codecs[1]!, true)
  const results = await Promise.allSettled(
    Array.from({ length: 64 }, (_, i) => store.putAsync([{ key: key(`k${i}`), serializer: 1, meta: META, value: value(i) }])),
  )
  t.deepEqual(results.map((r) => r.status), Array(64).fill('fulfilled'))
  for (let i = 0; i < 64; i++) if (!same(store.getSync(key(`k${i}`))!.value, value(i))) t.fail(`k${i}`)
  t.deepEqual(stagingFiles(dir), [])
  // Multi-key puts and puts of the same key in one batch: in order, the later wins.
  const same1 = Array.from({ length: 10 }, (_, i) =>
    store.putAsync([
      { key: key('shared'), serializer: 1, meta: META, value: value(100 + i) },
      { key: key(`own${i}`), serializer: 1, meta: META, value: value(i) },
    ]),
  )
  await Promise.all(same1)
  t.true(same(store.getSync(key('shared'))!.value, value(109)), 'the last put of the key wins')
  for (let i = 0; i < 10; i++) t.true(same(store.getSync(key(`own${i}`))!.value, value(i)))
  t.is(store.listSync().entries.length, 64 + 11)
  await store.putAsync([])
})

test('puts: a failing batch gives each caller its own result', async (t) => {
  const dir = tempDir(t)
  const store = open(dir, codecs[0]!, true)
  // A directory where the bad key's file goes: its rename fails.
  const { mkdirSync } = await import('node:fs')
  mkdirSync(store.filePath(key('bad')))
  // The first put starts a batch at once; the rest queue behind it and go as one batch.
  const first = store.putAsync([{ key: key('first'), serializer: 1, meta: META, value: value(0) }])
  const rest = Array.from({ length: 12 }, (_, i) =>
    store.putAsync([{ key: key(i === 5 ? 'bad' : `good${i}`), serializer: 1, meta: META, value: value(i) }]),
  )
  await first
  const results = await Promise.allSettled(rest)
  results.forEach((r, i) => {
    if (i === 5) {
      t.is(r.status, 'rejected')
      const e = (r as PromiseRejectedResult).reason as KonserveError
      t.true(e instanceof KonserveError)
      // rename(2) over a directory is EISDIR: ERR_NOT_A_FILE (docs/RELIABILITY.md, the errno table).
      t.is(e.code, 'ERR_NOT_A_FILE')
      t.is(e.file, store.filePath(key('bad')))
    } else {
      t.is(r.status, 'fulfilled', `caller ${i}`)
      t.true(same(store.getSync(key(`good${i}`))!.value, value(i)), `caller ${i}`)
    }
  })
  t.deepEqual(stagingFiles(dir), [])
  // The store still writes.
  await store.putAsync([{ key: key('after'), serializer: 1, meta: META, value: value(1) }])
  t.true(same(store.getSync(key('after'))!.value, value(1)))
})

test('puts: 64 concurrent async puts take far fewer fsyncs than 64 puts one after another (strace)', async (t) => {
  const { spawnSync } = await import('node:child_process')
  const { pathToFileURL } = await import('node:url')
  // strace is required, as in faults.spec.ts (.ci/run installs it): without it this fails.
  const probe = spawnSync('strace', ['-f', '-c', '-e', 'trace=fsync', 'true'], { encoding: 'utf8' })
  if (probe.error || probe.status !== 0) {
    t.fail(`strace is not usable here (Debian: apt-get install strace): ${probe.error?.message ?? probe.stderr}`)
    return
  }
  const dir = tempDir(t)
  const script = join(dir, 'puts.mts')
  const src = pathToFileURL(join(import.meta.dirname, '../ts')).href
  writeFileSync(
    script,
    `import { PureFileBacking } from '${src}/backends/pure/store.ts'
import { createPureCodec } from '${src}/backends/pure/codec.ts'
import { encodeKey } from '${src}/format/key.ts'
const [dir, mode] = process.argv.slice(2)
const store = PureFileBacking.openSync(dir, createPureCodec(0, undefined), { syncBlob: true })
const put = (i) => store.putAsync([{ key: encodeKey('k' + i), serializer: 1, meta: new Uint8Array([0x80]), value: new Uint8Array([i]) }])
if (mode === 'concurrent') await Promise.all(Array.from({ length: 64 }, (_, i) => put(i)))
else for (let i = 0; i < 64; i++) await put(i)
`,
  )
  const fsyncs = (mode: string): number => {
    const run = spawnSync('strace', ['-f', '-c', '-e', 'trace=fsync', process.execPath, '--import=tsx', script, join(dir, mode), mode], {
      encoding: 'utf8',
      cwd: join(import.meta.dirname, '..'),
    })
    if (run.status !== 0) throw new Error(`the script failed: ${run.stderr}`)
    const line = run.stderr.split('\n').find((l) => /\sfsync$/.test(l))
    if (!line) throw new Error(`no fsync count in ${run.stderr}`)
    // strace -c columns: % time, seconds, usecs/call, calls, [errors], syscall
    return Number(line.trim().split(/\s+/)[3])
  }
  const sequential = fsyncs('sequential')
  const concurrent = fsyncs('concurrent')
  t.log(`fsyncs for 64 puts: ${sequential} one after another, ${concurrent} concurrent`)
  // One after another: 64 staging files and 64 directory fsyncs (plus the store's own at open).
  t.true(sequential >= 128, `${sequential}`)
  // Concurrent: 64 staging files, and a directory fsync per batch (a handful).
  t.true(concurrent - (sequential - 128) <= 64 + 8, `${concurrent}`)
})

// ---- the native core: the same files ------------------------------------------------------

interface NativeLike {
  NativeFileStore: { open(dir: string, o: { syncBlob: boolean; compressor: number; encryptionKey?: Buffer }): NativeStore }
  blobWriterOpenSync?(s: NativeStore, key: Buffer, meta: Buffer): { writeSync(b: Buffer): void; commitSync(): void }
  blobOpenSync?(s: NativeStore, key: Buffer): { size: number; readSync(o: number, n: number): Buffer; close(): void; plainOffset: number | null } | null
  logAppendSync?(s: NativeStore, key: Buffer, records: Array<{ serializer: number; stamp: number; bytes: Buffer }>, createMeta: Buffer): LogInfo
  logOpenSync?(s: NativeStore, key: Buffer): { nextBatchSync(max: number): LogRecord[] | null; close(): void } | null
  logTrimSync?(s: NativeStore, key: Buffer, keepFrom: number, meta: Buffer): LogInfo
}
interface NativeStore {
  getSync(key: Buffer): { serializer: number; meta: Buffer; value: Buffer } | null
  getMetaSync(key: Buffer): { log?: unknown } | null
  filePath(key: Buffer): string
}

let native: NativeLike | undefined
let nativeError = ''
try {
  native = createRequire(import.meta.url)('../index.js') as NativeLike
} catch (err) {
  nativeError = String(err)
}
const hasBlobs = !!(native?.blobWriterOpenSync && native.blobOpenSync)
const hasLogs = !!(native?.logAppendSync && native.logOpenSync && native.logTrimSync)

const nativeStore = (dir: string, c: Codec) =>
  native!.NativeFileStore.open(dir, { syncBlob: false, compressor: c.compressor, encryptionKey: c.encryptor ? Buffer.from(SECRET) : undefined })

// The native binding is built before the tests (npm test builds it): without
// it, or without its blob and log functions, these fail rather than pass unchecked.
if (!hasBlobs) {
  test('cross blobs: the native binding has the blob functions', (t) => {
    t.fail(native ? 'the binding has no blobWriterOpenSync/blobOpenSync' : `the binding does not load: ${nativeError}`)
  })
} else {
  for (const c of codecs) {
    test(`cross blobs (${codecName(c)}): pure files read by native and native files read by pure`, async (t) => {
      const dir = tempDir(t)
      const pure = open(dir, c)
      const nat = nativeStore(dir, c)
      for (const n of [0, 5, MiB, MiB + 1, 2.5 * MiB]) {
        const blob = pattern(n, n & 0xff)
        // Pure writes, native reads.
        const kp = key(`pure-${n}`)
        await writeBlob(pure, 'sync', kp, cut(blob, [100_000, MiB + 3]))
        const r = native!.blobOpenSync!(nat, buf(kp))!
        t.is(r.size, n)
        t.true(same(r.readSync(0, n), blob), `native reads pure's ${n} bytes`)
        if (n > MiB) t.true(same(r.readSync(MiB - 2, 5), blob.subarray(MiB - 2, MiB + 3)))
        r.close()
        t.true(same(nat.getSync(buf(kp))!.value, blob), `native get of pure's ${n} bytes`)
        // Native writes, pure reads.
        const kn = key(`native-${n}`)
        const w = native!.blobWriterOpenSync!(nat, buf(kn), buf(META))
        for (const p of cut(blob, [77_777, MiB])) w.writeSync(buf(p))
        w.commitSync()
        const src = pure.openBlobSync(kn)!
        t.is(src.size, n)
        t.true(same(src.readSync(0, n), blob), `pure reads native's ${n} bytes`)
        src.close()
        t.true(same(pure.getSync(kn)!.value, blob))
        t.is(nat.filePath(buf(kn)), pure.filePath(kn))
        if (c.encryptor === 0) {
          // The same input gives the same bytes.
          const ours = encodeBlobFileSync({ compressor: c.compressor, encryptor: 0, keyCke: kn, meta: META, value: blob })
          t.true(same(readFileSync(pure.filePath(kn)), ours), `native's file of ${n} bytes is byte for byte ours`)
        }
      }
    })
  }
}

if (!hasLogs) {
  test('cross logs: the native binding has the log functions', (t) => {
    t.fail(native ? 'the binding has no logAppendSync/logOpenSync/logTrimSync' : `the binding does not load: ${nativeError}`)
  })
} else {
  for (const c of codecs) {
    test(`cross logs (${codecName(c)}): appends and trims by either, read by both`, async (t) => {
      const dir = tempDir(t)
      const pure = open(dir, c)
      const nat = nativeStore(dir, c)
      const k = key('shared-log')
      const written: LogRecord[] = []
      const nativeAll = (): LogRecord[] => {
        const cur = native!.logOpenSync!(nat, buf(k))!
        const out: LogRecord[] = []
        for (let b = cur.nextBatchSync(3); b; b = cur.nextBatchSync(3)) out.push(...b)
        cur.close()
        return out
      }
      for (let i = 0; i < 12; i++) {
        const r = rec(i, pattern(i * 37, i), 1 + (i % 2))
        if (i % 3 === 1) native!.logAppendSync!(nat, buf(k), [{ serializer: r.serializer, stamp: r.stamp, bytes: buf(r.bytes) }], buf(LOG_META))
        else pure.appendSync(k, [r], LOG_META)
        written.push(asRecord(i, r))
      }
      t.deepEqual(plainRecords(await readAll(pure, k)), plainRecords(written))
      t.deepEqual(plainRecords(nativeAll()), plainRecords(written))
      const trimmed = native!.logTrimSync!(nat, buf(k), 4, buf(LOG_META))
      t.like(trimmed, { firstIndex: 4, lastIndex: 11 })
      t.deepEqual(plainRecords(await readAll(pure, k)), plainRecords(written.slice(4)))
      pure.trimLogSync(k, 6, LOG_META)
      t.deepEqual(plainRecords(nativeAll()), plainRecords(written.slice(6)))
      t.deepEqual(pure.getMetaSync(k)!.log, info(6, 11, written[11]!.stamp))
      if (c.encryptor === 0) {
        // The same records give the same file.
        const k2 = key('pure-only')
        const k3 = key('native-only')
        for (const [i, r] of written.entries()) {
          pure.appendSync(k2, [{ serializer: r.serializer, stamp: r.stamp, bytes: r.bytes }], LOG_META)
          native!.logAppendSync!(nat, buf(k3), [{ serializer: r.serializer, stamp: r.stamp, bytes: buf(r.bytes) }], buf(LOG_META))
          void i
        }
        const a = readFileSync(pure.filePath(k2))
        const b = readFileSync(pure.filePath(k3))
        const metaEnd = (f: Buffer) => logParts(f).dataStart
        t.true(a.subarray(metaEnd(a)).equals(b.subarray(metaEnd(b))), 'the same record bytes')
      }
      // A torn tail (bytes past the acknowledged records) left by one is cut by the other.
      const path = pure.filePath(k)
      appendFileSync(path, pattern(50))
      t.is(pure.appendSync(k, [rec(12, pattern(3))], LOG_META).lastIndex, 12)
      t.deepEqual(plainRecords(nativeAll()), plainRecords([...written.slice(6), asRecord(12, rec(12, pattern(3)))]))
      appendFileSync(path, pattern(50))
      t.is(native!.logAppendSync!(nat, buf(k), [{ serializer: 1, stamp: 77, bytes: buf(pattern(4)) }], buf(LOG_META)).lastIndex, 13)
      t.deepEqual((await readAll(pure, k)).map((r) => r.index), [6, 7, 8, 9, 10, 11, 12, 13])
      // Damage to an acknowledged record is ERR_CORRUPT to both, and neither appends over it.
      truncateSync(path, statSync(path).size - 7)
      t.is(await outcome(() => pure.appendSync(k, [rec(14, pattern(3))], LOG_META)), 'ERR_CORRUPT')
      t.throws(() => native!.logAppendSync!(nat, buf(k), [{ serializer: 1, stamp: 77, bytes: buf(pattern(4)) }], buf(LOG_META)), { code: 'ERR_CORRUPT' })
    })
  }
}

if (hasLogs) {
  test('cross group commits: batches appended by either read by both, the same bytes', async (t) => {
    const dir = tempDir(t)
    const c: Codec = { compressor: 1, encryptor: 0 }
    const pure = open(dir, c)
    const nat = nativeStore(dir, c)
    const k = key('shared-batches')
    const written: LogRecord[] = []
    const nativeRecords = (rs: NewRecord[]) => rs.map((r) => ({ serializer: r.serializer, stamp: r.stamp, bytes: buf(r.bytes) }))
    for (const [b, n] of [3, 1, 5, 2, 4].entries()) {
      const first = written.length
      const batch = Array.from({ length: n }, (_, j) => rec(first + j, pattern(20 * (first + j) + 1, j), 1 + (j % 2)))
      const got = b % 2 ? native!.logAppendSync!(nat, buf(k), nativeRecords(batch), buf(LOG_META)) : pure.appendSync(k, batch, LOG_META)
      t.like(got, { firstIndex: 0, lastIndex: first + n - 1, lastStamp: batch[n - 1]!.stamp })
      batch.forEach((r, j) => written.push(asRecord(first + j, r)))
    }
    t.deepEqual(plainRecords(await readAll(pure, k)), plainRecords(written))
    const whole = appendedLog(c.compressor, k, written, [3, 1, 5, 2, 4])
    t.true(same(readFileSync(pure.filePath(k)), whole), 'the same file whoever wrote which batch')
    // A new log of several records, by native: the same bytes as by pure.
    const k2 = key('native-new')
    const k3 = key('pure-new')
    const recs = written.slice(0, 4).map((r) => ({ serializer: r.serializer, stamp: r.stamp, bytes: r.bytes }))
    native!.logAppendSync!(nat, buf(k2), nativeRecords(recs), buf(LOG_META))
    pure.appendSync(k3, recs, LOG_META)
    const metaEnd = (f: Buffer) => logParts(f).dataStart
    const a = readFileSync(pure.filePath(k2))
    const b2 = readFileSync(pure.filePath(k3))
    t.true(a.subarray(metaEnd(a)).equals(b2.subarray(metaEnd(b2))))
  })
}
