/**
 * Append logs (FORMAT.md §4.6) in the pure-TypeScript file store
 * (ts/backends/pure/log.ts over ts/format/log.ts): round trips, trims, torn
 * tails, damage to acknowledged records, group commits of appends.
 */
import test from 'ava'
import { randomBytes } from 'node:crypto'
import { readFileSync, statSync, writeFileSync } from 'node:fs'
import type { LogRecord, } from '../ts/backing/index.js'
import * as file from '../ts/format/file.js'
import { openLogLayout } from '../ts/format/log.js'
import { xxh3_64 } from '../ts/codec/xxhash.js'
import { forgetVerifiedLogs, } from '../ts/backends/pure/store.js'
import { failure, outcome } from './helpers/errors.js'
import * as H from './helpers/pure.js'
const { appendedLog, META, LOG_META, codecs, codecName, modes, same, key, pattern, tempDir, open, stagingFiles, listAll, listAllAsync, writeBlob, rec, asRecord, info, EMPTY, append, readAll, plainRecords, build, logParts, keepsRecords } = H
type Mode = H.Mode


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
      const meta = mode === 'sync' ? store.getMeta.sync(k)! : (await store.getMeta.async(k))!
      t.deepEqual(meta.log, expected)
      t.true(same(meta.meta, LOG_META))
      t.is(meta.serializer, 0)
      const got = mode === 'sync' ? store.get.sync(k)! : (await store.get.async(k))!
      t.deepEqual(got.log, expected)
      t.is(got.value.length, 0)
      const listing = mode === 'sync' ? listAll(store) : await listAllAsync(store)
      t.deepEqual(listing.entries.map((e) => e.log), [expected])
      const bytes = readFileSync(store.filePath(k))
      const header = file.decodeHeader(bytes, bytes.length)
      t.like(header, { flags: file.FLAGS_COMMITTED_LOG, serializer: 0, valueLen: 128, compressor: c.compressor, encryptor: c.encryptor })
      if (c.encryptor === 0) {
        const whole = appendedLog(c.compressor, k, written, written.map(() => 1))
        t.true(same(bytes, whole), 'the file is exactly the codec encoding of its records')
      }
      t.is(mode === 'sync' ? store.openLog.sync(key('none')) : await store.openLog.async(key('none')), undefined)
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
    const got = i % 2 ? await store.append.async(k, [r], LOG_META) : store.append.sync(k, [r], LOG_META)
    if (got.lastIndex !== i || got.firstIndex !== 0 || got.lastStamp !== r.stamp) t.fail(`append ${i}: ${JSON.stringify(got)}`)
  }
  for (const mode of modes) {
    const all = await readAll(store, k, mode, 128)
    t.is(all.length, 2000)
    all.forEach((r, i) => {
      if (r.index !== i || r.stamp !== 1_700_000_000_000 + i || r.serializer !== 1 + (i % 3) || !same(r.bytes, payload(i))) t.fail(`record ${i}`)
    })
  }
  t.deepEqual(store.getMeta.sync(k)!.log, info(0, 1999, 1_700_000_001_999))
  // A cursor sees the log as it was opened.
  const cursor = store.openLog.sync(k)!
  store.append.sync(k, [rec(2000, pattern(5))], LOG_META)
  let n = 0
  for (let b = cursor.next.sync(500); b; b = cursor.next.sync(500)) n += b.length
  t.is(n, 2000)
  t.is(cursor.next.sync(1), undefined)
  cursor.close()
})

test('log: trims keep indexes, drop the rest, and restart at 0 when nothing is kept', async (t) => {
  const dir = tempDir(t)
  for (const c of codecs) {
    const store = open(dir, c, true)
    const k = key(`trim-${codecName(c)}`)
    const recs = Array.from({ length: 10 }, (_, i) => rec(i, pattern(50 + i, i)))
    for (const r of recs) store.append.sync(k, [r], LOG_META)
    const all = recs.map((r, i) => asRecord(i, r))
    const newMeta = new Uint8Array([0x81, 0xa1, 0x72, 0x05])
    t.deepEqual(store.trimLog.sync(k, 0, newMeta), info(0, 9, recs[9]!.stamp), 'keepFrom 0 keeps all')
    t.deepEqual(plainRecords(await readAll(store, k)), plainRecords(all))
    t.true(same(store.getMeta.sync(k)!.meta, newMeta), 'the new metadata')
    t.deepEqual(await store.trimLog.async(k, 4, LOG_META), info(4, 9, recs[9]!.stamp))
    t.deepEqual(plainRecords(await readAll(store, k, 'async')), plainRecords(all.slice(4)))
    t.deepEqual(store.getMeta.sync(k)!.log, info(4, 9, recs[9]!.stamp))
    t.deepEqual(store.append.sync(k, [rec(10, pattern(3))], LOG_META), info(4, 10, rec(10, pattern(3)).stamp), 'appending continues the indexes')
    t.deepEqual(store.trimLog.sync(k, 10, LOG_META), info(10, 10, rec(10, pattern(3)).stamp), 'only the last kept')
    t.deepEqual(store.trimLog.sync(k, 3, LOG_META), info(10, 10, rec(10, pattern(3)).stamp), 'keepFrom below the first: all kept')
    t.deepEqual(store.trimLog.sync(k, 11, LOG_META), EMPTY, 'nothing kept')
    t.deepEqual(await readAll(store, k), [])
    t.deepEqual(store.getMeta.sync(k)!.log, EMPTY)
    t.deepEqual(store.get.sync(k)!.log, EMPTY)
    t.is(statSync(store.filePath(k)).size, 48 + file.decodeHeader(readFileSync(store.filePath(k)), statSync(store.filePath(k)).size).metaLen + 128)
    t.deepEqual(store.trimLog.sync(k, 0, LOG_META), EMPTY, 'an empty log trimmed')
    t.deepEqual(store.append.sync(k, [rec(0, pattern(4))], LOG_META), info(0, 0, rec(0, pattern(4)).stamp), 'an emptied log restarts at 0')
    t.deepEqual(plainRecords(await readAll(store, k)), plainRecords([asRecord(0, rec(0, pattern(4)))]))
    t.deepEqual(stagingFiles(dir), [])
  }
  // A missing key: nothing written.
  const store = open(dir, codecs[0]!)
  t.deepEqual(store.trimLog.sync(key('missing'), 3, LOG_META), EMPTY)
  t.deepEqual(await store.trimLog.async(key('missing'), 3, LOG_META), EMPTY)
  t.false(store.exists.sync(key('missing')))
  // A trim keeps the log's codec (its records are copied as stored), whatever the store writes now.
  const lz4 = open(dir, { compressor: 1, encryptor: 1 })
  const k = key('codec-kept')
  lz4.append.sync(k, [rec(0, pattern(500))], LOG_META)
  lz4.append.sync(k, [rec(1, pattern(500, 1))], LOG_META)
  const plainOpen = open(dir, { compressor: 0, encryptor: 1 })
  plainOpen.trimLog.sync(k, 1, LOG_META)
  plainOpen.append.sync(k, [rec(2, pattern(7))], LOG_META)
  t.like(file.decodeHeader(readFileSync(lz4.filePath(k)), statSync(lz4.filePath(k)).size), { compressor: 1, encryptor: 1 })
  t.deepEqual(plainRecords(await readAll(plainOpen, k)), plainRecords([asRecord(1, rec(1, pattern(500, 1))), asRecord(2, rec(2, pattern(7)))]))
})


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
    store.append.sync(k, [recs[2]!], LOG_META)
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
      t.deepEqual(store.getMeta.sync(k)!.log, info(0, 1, recs[1]!.stamp), what)
      t.deepEqual(await append(store, mode, k, next), info(0, 2, next.stamp), what)
      if (!keepsRecords(new Uint8Array(readFileSync(path)), good)) t.fail(`${what}: the acknowledged records are untouched`)
      t.deepEqual(plainRecords(await readAll(store, k, mode)), plainRecords([...kept, asRecord(2, next)]), what)
    }
    // A torn large record (larger than the read window).
    writeFileSync(path, good)
    forgetVerifiedLogs()
    const big = rec(2, new Uint8Array(randomBytes(300_000)))
    store.append.sync(k, [big], LOG_META)
    const withBig = new Uint8Array(readFileSync(path))
    for (const n of [ends[1]! + 21, ends[1]! + 100_000, withBig.length - 13, withBig.length - 1, withBig.length]) {
      writeFileSync(path, Buffer.concat([good, withBig.subarray(ends[1]!, n)]))
      forgetVerifiedLogs()
      t.deepEqual(plainRecords(await readAll(store, k)), plainRecords(kept))
      t.is(store.append.sync(k, [next], LOG_META).lastIndex, 2)
      t.deepEqual(plainRecords(await readAll(store, k)), plainRecords([...kept, asRecord(2, next)]))
    }
    writeFileSync(path, withBig)
    t.deepEqual(plainRecords(await readAll(store, k, 'async')), plainRecords([...kept, asRecord(2, big)]))
    // A trim drops a torn tail.
    writeFileSync(path, Buffer.concat([good, third.subarray(0, 10)]))
    t.deepEqual(store.trimLog.sync(k, 1, LOG_META), info(1, 1, recs[1]!.stamp))
    t.deepEqual(plainRecords(await readAll(store, k)), plainRecords(kept.slice(1)))
    // A log with no acknowledged records and a torn one after them; the next append is record 0.
    store.trimLog.sync(k, 100, LOG_META)
    writeFileSync(path, Buffer.concat([readFileSync(path), third.subarray(0, 40)]))
    forgetVerifiedLogs()
    t.deepEqual(await readAll(store, k), [])
    t.deepEqual(store.getMeta.sync(k)!.log, EMPTY)
    t.deepEqual(store.append.sync(k, [recs[0]!], LOG_META), info(0, 0, recs[0]!.stamp))
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
      const a = await failure(() => (mode === 'sync' ? store.append.sync(k, [rec(4, pattern(1))], LOG_META) : store.append.async(k, [rec(4, pattern(1))], LOG_META)))
      if (a.code !== 'ERR_CORRUPT' || a.file !== path) t.fail(`${what}: append ${a.code} ${a.file}`)
      if ((await outcome(() => store.trimLog.sync(k, 0, LOG_META))) !== 'ERR_CORRUPT') t.fail(`${what}: trim`)
      if (!same(new Uint8Array(readFileSync(path)), bad)) t.fail(`${what}: the file is unchanged`)
    }
    t.deepEqual(stagingFiles(dir), [])
    // The records before the damage come first, then the error.
    const mid = full.slice()
    mid[ends[1]! + 25]! ^= 1
    writeFileSync(path, mid)
    const cursor = store.openLog.sync(k)!
    t.deepEqual(plainRecords(cursor.next.sync(10)!), plainRecords(all.slice(0, 2)))
    t.is(await outcome(() => cursor.next.sync(10)), 'ERR_CORRUPT')
    t.is(cursor.next.sync(10), undefined)
    // getMeta reads only the first and the last record: damage in between it does not see.
    t.deepEqual(store.getMeta.sync(k)!.log, info(0, 3, recs[3]!.stamp))
    // Damage in the first or the last record is seen by getMeta, get and the listing too.
    for (const at of [ends[0]! - 15, ends[3]! - 15]) {
      const bad = full.slice()
      bad[at]! ^= 1
      writeFileSync(path, bad)
      t.is(await outcome(() => store.getMeta.sync(k)), 'ERR_CORRUPT')
      t.is(await outcome(() => store.get.async(k)), 'ERR_CORRUPT')
      const listing = listAll(store)
      t.is(listing.corrupt.length, 1)
      t.is(listing.corrupt[0]!.file, path)
    }
    // A process that appended to the log checks its last record again before the next append.
    writeFileSync(path, full)
    forgetVerifiedLogs()
    store.append.sync(k, [rec(4, pattern(4))], LOG_META)
    const whole = new Uint8Array(readFileSync(path))
    whole[whole.length - 20]! ^= 4
    writeFileSync(path, whole)
    t.is(await outcome(() => store.append.sync(k, [rec(5, pattern(5))], LOG_META)), 'ERR_CORRUPT')
    t.true(same(new Uint8Array(readFileSync(path)), whole))
    // One commit slot damaged (as a crash while it is written leaves it): the other holds the commit.
    const { areaAt } = logParts(full)
    for (const at of [areaAt + 3, areaAt + 64 + 3, areaAt + 60, areaAt + 127]) {
      const bad = full.slice()
      bad[at]! ^= 0x40
      writeFileSync(path, bad)
      forgetVerifiedLogs()
      t.deepEqual(plainRecords(await readAll(store, k)), plainRecords(all), `commit byte ${at}`)
      store.append.sync(k, [rec(4, pattern(4))], LOG_META)
      const after = new Uint8Array(readFileSync(path))
      t.true(same(after.subarray(areaAt, areaAt + 64), after.subarray(areaAt + 64, areaAt + 128)), `commit byte ${at}: both slots rewritten`)
    }
    const both = full.slice()
    both[areaAt + 3]! ^= 1
    both[areaAt + 64 + 3]! ^= 1
    writeFileSync(path, both)
    t.is(await outcome(() => readAll(store, k)), 'ERR_CORRUPT')
    t.is(await outcome(() => store.append.sync(k, [rec(4, pattern(4))], LOG_META)), 'ERR_CORRUPT')
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
  const cursor = store.openLog.sync(k)!
  t.is(cursor.next.sync(2)!.length, 2)
  t.is(await outcome(() => cursor.next.sync(2)), 'ERR_DECRYPT')
  cursor.close()
  // Another key's log file under this key's name: the meta segment does not authenticate.
  const other = key('other')
  store.append.sync(other, [recs[0]!], LOG_META)
  writeFileSync(path, readFileSync(store.filePath(other)))
  t.is(await outcome(() => store.openLog.sync(k)), 'ERR_DECRYPT')
})

test('log operations on other keys: ERR_NOT_A_LOG, nothing changed', async (t) => {
  const dir = tempDir(t)
  const store = open(dir, { compressor: 1, encryptor: 0 })
  const k = key('value')
  store.put.sync([{ key: k, serializer: 1, meta: META, value: new Uint8Array([0xa1, 0x61]) }])
  const blob = key('blob')
  await writeBlob(store, 'sync', blob, [pattern(100)])
  for (const kk of [k, blob]) {
    const path = store.filePath(kk)
    const before = readFileSync(path)
    for (const op of [
      () => store.append.sync(kk, [rec(0, pattern(1))], LOG_META),
      () => store.append.async(kk, [rec(0, pattern(1))], LOG_META),
      () => store.openLog.sync(kk),
      () => store.openLog.async(kk),
      () => store.trimLog.sync(kk, 0, LOG_META),
      () => store.trimLog.async(kk, 0, LOG_META),
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
      const got = b % 2 ? await store.append.async(k, batch, LOG_META) : store.append.sync(k, batch, LOG_META)
      t.deepEqual(got, info(0, first + n - 1, batch[n - 1]!.stamp), `batch ${b}`)
      batch.forEach((r, j) => {
        written.push(asRecord(first + j, r))
      })
      t.deepEqual(stagingFiles(dir), [])
    }
    for (const mode of modes) t.deepEqual(plainRecords(await readAll(store, k, mode, 4)), plainRecords(written))
    t.deepEqual(store.getMeta.sync(k)!.log, info(0, 9, written[9]!.stamp))
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
    t.deepEqual(await store.append.async(k, more, LOG_META), info(0, 11, more[1]!.stamp))
    t.true(keepsRecords(new Uint8Array(readFileSync(path)), new Uint8Array(before)), 'the records before are untouched')
    t.deepEqual(plainRecords(await readAll(store, k)), plainRecords([...written, asRecord(10, more[0]!), asRecord(11, more[1]!)]))
  })
}

test('log group commits: no records, or one bad record, writes nothing', async (t) => {
  const dir = tempDir(t)
  const store = open(dir, codecs[3]!)
  const k = key('bad-batch')
  for (const op of [() => store.append.sync(k, [], LOG_META), () => store.append.async(k, [], LOG_META)]) {
    t.is(await outcome(op), 'ERR_INVALID_ARGUMENT')
  }
  t.false(store.exists.sync(k), 'no new log')
  const bad = [rec(0, pattern(3)), { serializer: 256, stamp: 1, bytes: pattern(2) }]
  t.is(await outcome(() => store.append.sync(k, bad, LOG_META)), 'ERR_INVALID_ARGUMENT')
  t.false(store.exists.sync(k), 'no new log from a batch with a bad record')
  store.append.sync(k, [rec(0, pattern(3))], LOG_META)
  const before = readFileSync(store.filePath(k))
  for (const op of [
    () => store.append.sync(k, [], LOG_META),
    () => store.append.async(k, bad, LOG_META),
    () => store.append.sync(k, [rec(1, pattern(1)), { serializer: 1, stamp: -5, bytes: pattern(1) }], LOG_META),
  ]) {
    t.is(await outcome(op), 'ERR_INVALID_ARGUMENT')
    t.true(readFileSync(store.filePath(k)).equals(before), 'the log unchanged')
  }
  t.deepEqual(store.append.sync(k, [rec(1, pattern(1))], LOG_META).lastIndex, 1)
  t.deepEqual(stagingFiles(dir), [])
})


test('a reader whose length of the log was read before an append still reads it (readers take no lock)', async (t) => {
  // The pure store's reader hands openLogLayout the length it read when it
  // opened the file, and `lengthNow` for a second look: an append that landed
  // after that length was read, and before the commit was, is not damage.
  const dir = tempDir(t)
  const store = open(dir, codecs[0]!, true)
  const k = key('events')
  for (let i = 0; i < 3; i++) await append(store, 'async', k, rec(i, pattern(10, i)))
  const before = readFileSync(store.filePath(k)).length
  await append(store, 'async', k, rec(3, pattern(10, 3)))
  const bytes = new Uint8Array(readFileSync(store.filePath(k)))
  const head = file.decodeKeyFileHeadSync(bytes, bytes.length, {})
  const codec = file.segmentCodec(head.header.compressor, head.header.encryptor, {})
  const layout = (length?: number) =>
    openLogLayout.sync(
      file.bytesReader(bytes),
      head.header,
      bytes,
      codec,
      before,
      length === undefined
        ? undefined
        : function* () {
            return length
          },
    )
  t.is((await failure(() => layout())).code, 'ERR_CORRUPT', 'a length read before the append, and no second look')
  t.is(layout(bytes.length).commit!.end, bytes.length)
  t.regex((await failure(() => layout(before))).message, /shorter than its acknowledged records/, 'still shorter on the second look: damage')
  // Through the store: all four records.
  t.is((await readAll(store, k, 'async', 10)).length, 4)
})
