/**
 * Chunked blobs (FORMAT.md §4.5) in the pure-TypeScript file store
 * (ts/backends/pure/blob.ts over ts/format/blob.ts): round trips for every
 * codec in both calling forms, range reads, reads into the caller's memory,
 * damage and truncation as typed errors, aborts.
 */
import test from 'ava'
import { randomBytes } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { encodeBlobFileSync } from '../ts/format/blob.js'
import * as file from '../ts/format/file.js'
import * as keyfile from '../ts/format/keyfile.js'
import { xxh3_64 } from '../ts/codec/xxhash.js'
import { nodeCryptoProvider } from '../ts/crypto-node.js'
import type { KonserveError } from '../ts/errors.js'
import { createPureCodec } from '../ts/backends/pure/codec.js'
import { openPureStore } from '../ts/backends/pure/store.js'
import { failure, outcome } from './helpers/errors.js'
import * as H from './helpers/pure.js'
const { MiB, SECRET, META, LOG_META, codecs, codecName, modes, buf, same, key, pattern, tempDir, open, stagingFiles, listAll, writeBlob, openBlob, readRange, cut } = H

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
        const got = mode === 'sync' ? store.get.sync(k)! : (await store.get.async(k))!
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
        t.is(await outcome(() => src.read.sync(0, 1)), 'ERR_INVALID_ARGUMENT', 'a closed blob is not read')
        const meta = mode === 'sync' ? store.getMeta.sync(k)! : (await store.getMeta.async(k))!
        t.is(meta.log, undefined)
        t.true(same(meta.meta, META))
      }
      const listed = listAll(store)
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
  const sink = store.blobWriter.sync(key('copied'), META)
  const piece = pattern(1000)
  sink.write.sync(piece)
  piece.fill(0)
  sink.commit.sync()
  t.true(same(store.get.sync(key('copied'))!.value, pattern(1000)))
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
  const src = store.openBlob.sync(k)!
  await writeBlob(store, 'async', k, [second])
  t.true(same(src.read.sync(0, first.length), first), 'the open blob reads as it was')
  t.true(same(store.get.sync(k)!.value, second))
  src.close()
  // A blob replaces a value, and a value a blob.
  store.put.sync([{ key: k, serializer: 1, meta: META, value: new Uint8Array([0xa1, 0x61]) }])
  t.is(store.get.sync(k)!.serializer, 1)
  await writeBlob(store, 'sync', k, [first])
  t.true(same(store.get.sync(k)!.value, first))
})

test('blob: abort leaves no staging file and the old blob; closed writers refuse', async (t) => {
  const dir = tempDir(t)
  const store = open(dir, { compressor: 0, encryptor: 1 }, true)
  const k = key('aborted')
  const old = pattern(1000, 5)
  await writeBlob(store, 'sync', k, [old])
  for (const mode of modes) {
    const sink = mode === 'sync' ? store.blobWriter.sync(k, META) : await store.blobWriter.async(k, META)
    const staged = stagingFiles(dir)
    t.is(staged.length, 1, 'a staging file while writing')
    t.regex(staged[0]!, new RegExp(`^\\.${store.filePath(k).slice(-36, -4)}\\.${process.pid}\\.\\d+\\.stage$`))
    // Another open of the store does not sweep a write in flight.
    open(dir, { compressor: 0, encryptor: 1 })
    t.is(stagingFiles(dir).length, 1)
    if (mode === 'sync') sink.write.sync(pattern(2 * MiB + 3))
    else await sink.write.async(pattern(2 * MiB + 3))
    sink.abort()
    sink.abort()
    t.deepEqual(stagingFiles(dir), [])
    t.true(same(store.get.sync(k)!.value, old), 'the key keeps its blob')
    t.is(await outcome(() => sink.write.sync(new Uint8Array(1))), 'ERR_INVALID_ARGUMENT')
    t.is(await outcome(() => sink.write.async(new Uint8Array(1))), 'ERR_INVALID_ARGUMENT')
    t.is(await outcome(() => sink.commit.sync()), 'ERR_INVALID_ARGUMENT')
    t.is(await outcome(() => sink.commit.async()), 'ERR_INVALID_ARGUMENT')
  }
  // After a commit: abort is a no-op, a second commit refused.
  const sink = store.blobWriter.sync(k, META)
  sink.write.sync(pattern(10))
  sink.commit.sync()
  sink.abort()
  t.true(same(store.get.sync(k)!.value, pattern(10)))
  t.is(await outcome(() => sink.commit.sync()), 'ERR_INVALID_ARGUMENT')
  // An abort while an async write runs: the file goes once the write is done.
  const racing = await store.blobWriter.async(key('racing'), META)
  const pending = racing.write.async(pattern(3 * MiB))
  racing.abort()
  t.is(await outcome(() => pending), 'ERR_INVALID_ARGUMENT')
  t.deepEqual(stagingFiles(dir), [])
  t.false(store.exists.sync(key('racing')))
  // Two calls at once on one writer: the second is refused, the first goes on.
  const twice = await store.blobWriter.async(key('twice'), META)
  const one = twice.write.async(pattern(MiB + 5))
  t.is(await outcome(() => twice.write.async(pattern(1))), 'ERR_INVALID_ARGUMENT')
  await one
  await twice.commit.async()
  t.true(same(store.get.sync(key('twice'))!.value, pattern(MiB + 5)))
  t.deepEqual(stagingFiles(dir), [])
})

test('blob: values, logs and missing keys; old whole raw values are served', async (t) => {
  const dir = tempDir(t)
  const store = open(dir, { compressor: 1, encryptor: 0 })
  t.is(store.openBlob.sync(key('missing')), undefined)
  t.is(await store.openBlob.async(key('missing')), undefined)
  store.put.sync([{ key: key('msgpack'), serializer: 1, meta: META, value: new Uint8Array([0xa1, 0x61]) }])
  const e = await failure(() => store.openBlob.sync(key('msgpack')))
  t.is(e.code, 'ERR_NOT_BINARY')
  t.is(e.file, store.filePath(key('msgpack')))
  store.append.sync(key('log'), [{ serializer: 1, stamp: 1, bytes: new Uint8Array([1]) }], LOG_META)
  const l = await failure(() => store.openBlob.async(key('log')))
  t.is(l.code, 'ERR_NOT_BINARY')
  t.is(l.file, store.filePath(key('log')))
  // A raw blob written whole (flags 0, serializer 0), as before chunking.
  const old = pattern(3000, 9)
  store.put.sync([{ key: key('old'), serializer: 0, meta: META, value: old }])
  const src = store.openBlob.sync(key('old'))!
  t.is(src.size, 3000)
  t.true(same(src.read.sync(1000, 10), old.subarray(1000, 1010)))
  t.true(same(await src.read.async(2990, 100), old.subarray(2990)))
  t.is(src.plain, undefined, 'compressed: no plain bytes')
  src.close()
  const plainStore = open(dir, { compressor: 0, encryptor: 0 })
  plainStore.put.sync([{ key: key('old-plain'), serializer: 0, meta: META, value: old }])
  const p = plainStore.openBlob.sync(key('old-plain'))!
  t.true(same(readFileSync(p.plain!.file).subarray(p.plain!.offset, p.plain!.offset + 3000), old))
  p.close()
  // A wrong key cannot read an encrypted blob.
  const enc = open(dir, { compressor: 0, encryptor: 1 })
  await writeBlob(enc, 'sync', key('secret'), [pattern(MiB + 1)])
  const other = openPureStore.sync(dir, createPureCodec(0, new TextEncoder().encode('wrong')), { syncBlob: false })
  t.is(await outcome(() => other.openBlob.sync(key('secret'))), 'ERR_DECRYPT')
  t.is(await outcome(() => open(dir, { compressor: 0, encryptor: 0 }).openBlob.sync(key('secret'))), 'ERR_DECRYPT')
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
      const code = await outcome(() => keyfile.decodeKeyFileSync(f, ctx))
      if (code !== 'ERR_CORRUPT') t.fail(`flipped byte ${i}: ${code}`)
      const short = await outcome(() => keyfile.decodeKeyFileSync(good.subarray(0, i), ctx))
      if (short !== 'ERR_CORRUPT') t.fail(`truncated to ${i}: ${short}`)
    }
    t.is(await outcome(() => keyfile.decodeKeyFileSync(Buffer.concat([good, new Uint8Array(1)]), ctx)), 'ERR_CORRUPT', 'one byte longer')
    // Through the store: get, openBlob and reads fail with the code and the file.
    const sampled = [0, 10, 45, 50, 48 + metaLen + 3, 48 + metaLen + 5000, good.length - tailLen - 5, good.length - 20, good.length - 1]
    for (const i of sampled) {
      const f = good.slice()
      f[i]! ^= 0x04
      writeFileSync(path, f)
      const errs: KonserveError[] = []
      for (const op of [() => store.get.sync(k), () => store.get.async(k), async () => {
        const src = await store.openBlob.async(k)
        try {
          await src!.read.async(0, blob.length)
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
    const src = store.openBlob.sync(k)!
    t.true(same(src.read.sync(10, MiB), blob.subarray(10, 10 + MiB)))
    t.is(await outcome(() => src.read.sync(2 * MiB, 10)), 'ERR_CORRUPT')
    src.close()
    for (const n of [0, 47, 48 + metaLen, good.length - 1]) {
      writeFileSync(path, good.subarray(0, n))
      t.is(await outcome(() => store.openBlob.sync(k)), 'ERR_CORRUPT', `truncated to ${n}`)
      t.is(await outcome(() => store.get.sync(k)), 'ERR_CORRUPT', `truncated to ${n}`)
    }
    const listing = listAll(store)
    t.is(listing.corrupt.length, 1)
    t.is(listing.corrupt[0]!.file, path)
    t.is(listing.corrupt[0]!.code, 'ERR_CORRUPT')
    writeFileSync(path, good)
    t.true(same(store.get.sync(k)!.value, blob))
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
    t.is(await outcome(() => store.get.sync(k)), code, what)
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
  t.is(await outcome(() => store.get.sync(key('elsewhere'))), 'ERR_DECRYPT')
  t.true(same(store.get.sync(k)!.value, blob))
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
    const src = store.openBlob.sync(k)!
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
    t.true(same(src.read.sync(MiB + 5, 10), blob.subarray(MiB + 5, MiB + 15)))
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
    const good = store.openBlob.sync(k)!
    // A byte in the middle of chunk 1 (for codec none at start + 1.5 MiB).
    f[start + MiB + (c.encryptor || c.compressor ? 1000 : MiB / 2)]! ^= 1
    writeFileSync(path, f)
    const src = store.openBlob.sync(k)!
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
  store.put.sync([{ key: key('old'), serializer: 0, meta: META, value: old }])
  const src = store.openBlob.sync(key('old'))!
  const target = new Uint8Array(100)
  t.is(await src.readInto!(2950, target), 50)
  t.true(same(target.subarray(0, 50), old.subarray(2950)))
  t.is(await src.readInto!(3000, target), 0)
  src.close()
})

