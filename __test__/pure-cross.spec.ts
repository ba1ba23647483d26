/**
 * The pure-TypeScript file store and the native core write the same blob
 * and log files: files written by one implementation read and appended by the
 * other (the native binding is required: without it these tests fail).
 */
import test from 'ava'
import { appendFileSync, readFileSync, statSync, truncateSync, } from 'node:fs'
import type { LogInfo, LogRecord, NewRecord } from '../ts/backing/index.js'
import { encodeBlobFileSync } from '../ts/format/blob.js'
import { outcome } from './helpers/errors.js'
import * as H from './helpers/pure.js'
const { MiB, appendedLog, SECRET, META, LOG_META, codecs, codecName, buf, same, key, pattern, tempDir, open, writeBlob, cut, rec, asRecord, info, readAll, plainRecords, logParts } = H
type Codec = H.Codec

import { createRequire } from 'node:module'
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
        const src = pure.openBlob.sync(kn)!
        t.is(src.size, n)
        t.true(same(src.read.sync(0, n), blob), `pure reads native's ${n} bytes`)
        src.close()
        t.true(same(pure.get.sync(kn)!.value, blob))
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
        else pure.append.sync(k, [r], LOG_META)
        written.push(asRecord(i, r))
      }
      t.deepEqual(plainRecords(await readAll(pure, k)), plainRecords(written))
      t.deepEqual(plainRecords(nativeAll()), plainRecords(written))
      const trimmed = native!.logTrimSync!(nat, buf(k), 4, buf(LOG_META))
      t.like(trimmed, { firstIndex: 4, lastIndex: 11 })
      t.deepEqual(plainRecords(await readAll(pure, k)), plainRecords(written.slice(4)))
      pure.trimLog.sync(k, 6, LOG_META)
      t.deepEqual(plainRecords(nativeAll()), plainRecords(written.slice(6)))
      t.deepEqual(pure.getMeta.sync(k)!.log, info(6, 11, written[11]!.stamp))
      if (c.encryptor === 0) {
        // The same records give the same file.
        const k2 = key('pure-only')
        const k3 = key('native-only')
        for (const [i, r] of written.entries()) {
          pure.append.sync(k2, [{ serializer: r.serializer, stamp: r.stamp, bytes: r.bytes }], LOG_META)
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
      t.is(pure.append.sync(k, [rec(12, pattern(3))], LOG_META).lastIndex, 12)
      t.deepEqual(plainRecords(nativeAll()), plainRecords([...written.slice(6), asRecord(12, rec(12, pattern(3)))]))
      appendFileSync(path, pattern(50))
      t.is(native!.logAppendSync!(nat, buf(k), [{ serializer: 1, stamp: 77, bytes: buf(pattern(4)) }], buf(LOG_META)).lastIndex, 13)
      t.deepEqual((await readAll(pure, k)).map((r) => r.index), [6, 7, 8, 9, 10, 11, 12, 13])
      // Damage to an acknowledged record is ERR_CORRUPT to both, and neither appends over it.
      truncateSync(path, statSync(path).size - 7)
      t.is(await outcome(() => pure.append.sync(k, [rec(14, pattern(3))], LOG_META)), 'ERR_CORRUPT')
      t.throws(() => native!.logAppendSync!(nat, buf(k), [{ serializer: 1, stamp: 77, bytes: buf(pattern(4)) }], buf(LOG_META)), { code: 'ERR_CORRUPT' } as never)
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
      const got = b % 2 ? native!.logAppendSync!(nat, buf(k), nativeRecords(batch), buf(LOG_META)) : pure.append.sync(k, batch, LOG_META)
      t.like(got, { firstIndex: 0, lastIndex: first + n - 1, lastStamp: batch[n - 1]!.stamp })
      batch.forEach((r, j) => {
        written.push(asRecord(first + j, r))
      })
    }
    t.deepEqual(plainRecords(await readAll(pure, k)), plainRecords(written))
    const whole = appendedLog(c.compressor, k, written, [3, 1, 5, 2, 4])
    t.true(same(readFileSync(pure.filePath(k)), whole), 'the same file whoever wrote which batch')
    // A new log of several records, by native: the same bytes as by pure.
    const k2 = key('native-new')
    const k3 = key('pure-new')
    const recs = written.slice(0, 4).map((r) => ({ serializer: r.serializer, stamp: r.stamp, bytes: r.bytes }))
    native!.logAppendSync!(nat, buf(k2), nativeRecords(recs), buf(LOG_META))
    pure.append.sync(k3, recs, LOG_META)
    const metaEnd = (f: Buffer) => logParts(f).dataStart
    const a = readFileSync(pure.filePath(k2))
    const b2 = readFileSync(pure.filePath(k3))
    t.true(a.subarray(metaEnd(a)).equals(b2.subarray(metaEnd(b2))))
  })
}

