/**
 * The write-ahead log protocol in the pure engine (ts/backends/pure/wal.ts,
 * docs/WAL.md §4–§6), in the style of crates/core/tests/wal.rs: round trips,
 * group commit sharing one fdatasync, the log lock kept across frames, two
 * instances as two processes, a child process appending while this one
 * reads, a reader whose record a reset reused, checkpoint and reset,
 * back-pressure, growth, torn tails, damage, a missing header, faults; and
 * against the core: test-vectors/wal-log.json (crates/core/tests/
 * wal_log_vectors.rs) holds a log the core created and the log after a fixed
 * sequence of appends, which the pure engine must read and write byte for byte.
 * Not wired into the store: this is the protocol alone.
 */
import test, { type ExecutionContext } from 'ava'
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { KonserveError } from '../ts/errors.js'
import { encodeKey } from '../ts/format/key.js'
import { encodeKeyFileSync } from '../ts/format/file.js'
import {
  FRAMES_AT,
  type NewWalRecord,
  SLOT_A,
  SLOT_B,
  WAL_DELETE,
  WAL_FILE,
  WAL_FILE_NAME,
  WAL_PUT,
  decodeHeader,
  type WalOp,
} from '../ts/format/wal.js'
import { WAL_LOCK_HEX, Wal, type WalOptions, type WalStep, recordHash } from '../ts/backends/pure/wal.js'
import { child } from './helpers/child.js'

const fresh = (t: ExecutionContext) => {
  const dir = mkdtempSync(join(tmpdir(), 'konserve-pure-wal-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}
const SMALL: WalOptions = { growStep: 64 * 1024, growMargin: 4096 }
const key = (k: string) => encodeKey(k)
const h = (k: string) => recordHash(key(k))
const te = new TextEncoder()
const payload = (k: string, v: string | Uint8Array) =>
  encodeKeyFileSync({
    compressor: 0,
    encryptor: 0,
    keyCke: key(k),
    serializer: 0,
    meta: new Uint8Array([0x80]),
    value: typeof v === 'string' ? te.encode(v) : v,
  })
const put = (k: string, v: string | Uint8Array): NewWalRecord => ({ op: WAL_PUT, keyHash: h(k), payload: payload(k, v) })
const op = (o: WalOp, k: string): NewWalRecord => ({ op: o, keyHash: h(k), payload: new Uint8Array(0) })
const hex = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex')
const keyFile = (dir: string, k: string) => join(dir, `${hex(h(k))}.ksv`)
const errno = (code: string) => Object.assign(new Error(`${code} (injected)`), { code })
const lockFile = (dir: string) => join(dir, `.${WAL_LOCK_HEX}.lock`)

async function codeOf(p: Promise<unknown> | (() => unknown)): Promise<KonserveError> {
  try {
    await (typeof p === 'function' ? p() : p)
  } catch (err) {
    if (err instanceof KonserveError) return err
    throw err
  }
  throw new Error('expected a KonserveError')
}

for (const mode of ['sync', 'async'] as const) {
  const append = (w: Wal, r: NewWalRecord[]) => (mode === 'sync' ? Promise.resolve(w.append.sync(r)) : w.append.async(r))
  const get = (w: Wal, k: string) => (mode === 'sync' ? Promise.resolve(w.get.sync(h(k))) : w.get.async(h(k)))
  const open = (dir: string, o: WalOptions = SMALL) => (mode === 'sync' ? Promise.resolve(Wal.open.sync(dir, o)) : Wal.open.async(dir, o))

  test(`${mode}: puts, deletes and file records round trip and survive a reopen; no key file is written`, async (t) => {
    const dir = fresh(t)
    const w = await open(dir)
    await append(w, [put('a', 'a1')])
    await append(w, [put('b', 'b1')])
    await append(w, [put('a', 'a2')])
    await append(w, [op(WAL_DELETE, 'b')])
    await append(w, [op(WAL_FILE, 'c')])
    await append(w, [put('a', 'a3'), put('d', 'd1')])
    const check = async (w: Wal) => {
      t.deepEqual(await get(w, 'a'), { kind: 'put', payload: payload('a', 'a3') })
      t.deepEqual(await get(w, 'b'), { kind: 'deleted' })
      t.deepEqual(await get(w, 'c'), { kind: 'file' })
      t.deepEqual(await get(w, 'd'), { kind: 'put', payload: payload('d', 'd1') })
      t.deepEqual(await get(w, 'e'), { kind: 'absent' })
    }
    await check(w)
    t.is(w.stats().frames, 6)
    t.is(w.stats().dataSyncs, 6)
    w.close.sync()
    const again = await open(dir)
    await check(again)
    again.close.sync()
    t.false(existsSync(keyFile(dir, 'a')))
    t.false(existsSync(lockFile(dir)), 'no lock file is left')
  })

  test(`${mode}: malformed appends are refused before anything is written`, async (t) => {
    const dir = fresh(t)
    const w = await open(dir)
    const before = readFileSync(join(dir, WAL_FILE_NAME))
    t.is((await codeOf(() => append(w, []))).code, 'ERR_INVALID_ARGUMENT')
    t.is((await codeOf(() => append(w, [{ op: WAL_PUT, keyHash: h('a'), payload: new Uint8Array(10) }]))).code, 'ERR_INVALID_ARGUMENT')
    t.is((await codeOf(() => append(w, [{ op: WAL_DELETE, keyHash: h('a'), payload: new Uint8Array(1) }]))).code, 'ERR_INVALID_ARGUMENT')
    t.deepEqual(readFileSync(join(dir, WAL_FILE_NAME)), before)
    t.is(w.stats().frames, 0)
  })

  test(`${mode}: a put payload of another key is refused on read, naming the log and the offset`, async (t) => {
    const dir = fresh(t)
    const w = await open(dir)
    await append(w, [{ op: WAL_PUT, keyHash: h('a'), payload: payload('b', "not a's") }])
    const e = await codeOf(() => get(w, 'a'))
    t.is(e.code, 'ERR_KEY_MISMATCH')
    t.is(e.file, join(dir, WAL_FILE_NAME))
    t.regex(e.message, /offset \d+/)
  })

  test(`${mode}: a torn tail is ignored and written over`, async (t) => {
    const dir = fresh(t)
    const w = await open(dir)
    await append(w, [put('a', 'a1')])
    await append(w, [put('b', 'b1')])
    const end = FRAMES_AT + w.logBytes()
    w.close.sync()
    // Half of a third frame, never acknowledged: its head holds, its body is cut.
    const file = readFileSync(join(dir, WAL_FILE_NAME))
    const torn = new Uint8Array(readFileSync(join(dir, WAL_FILE_NAME)).subarray(FRAMES_AT, end))
    file.set(torn.subarray(0, 40), end)
    writeFileSync(join(dir, WAL_FILE_NAME), file)
    const again = await open(dir)
    t.is(again.logBytes(), end - FRAMES_AT)
    t.deepEqual(await get(again, 'b'), { kind: 'put', payload: payload('b', 'b1') })
    await append(again, [put('c', 'c1')])
    again.close.sync()
    const third = await open(dir)
    t.deepEqual(await get(third, 'c'), { kind: 'put', payload: payload('c', 'c1') })
    t.deepEqual(await get(third, 'a'), { kind: 'put', payload: payload('a', 'a1') })
  })

  test(`${mode}: damage before a later frame is ERR_CORRUPT naming the log and the offset`, async (t) => {
    const dir = fresh(t)
    const w = await open(dir)
    await append(w, [put('a', 'a1')])
    await append(w, [put('b', 'b1')])
    w.close.sync()
    const file = readFileSync(join(dir, WAL_FILE_NAME))
    file[FRAMES_AT + 40]! ^= 1
    writeFileSync(join(dir, WAL_FILE_NAME), file)
    const e = await codeOf(() => open(dir))
    t.is(e.code, 'ERR_CORRUPT')
    t.is(e.file, join(dir, WAL_FILE_NAME))
    t.regex(e.message, new RegExp(`offset ${FRAMES_AT}\\b`))
  })

  test(`${mode}: a log without a valid header slot is ERR_CORRUPT, never an empty log`, async (t) => {
    const dir = fresh(t)
    const w = await open(dir)
    await append(w, [put('a', 'a1')])
    w.close.sync()
    const file = readFileSync(join(dir, WAL_FILE_NAME))
    file[SLOT_A + 3]! ^= 1
    file[SLOT_B + 3]! ^= 1
    writeFileSync(join(dir, WAL_FILE_NAME), file)
    const e = await codeOf(() => open(dir))
    t.is(e.code, 'ERR_CORRUPT')
    t.is(e.file, join(dir, WAL_FILE_NAME))
  })

  test(`${mode}: a failed fdatasync rejects the frame with ERR_FSYNC and poisons the log`, async (t) => {
    const dir = fresh(t)
    let fail = false
    const w = await open(dir, {
      ...SMALL,
      fault: (step) => {
        if (step === 'fdatasync' && fail) throw errno('EIO')
      },
    })
    await append(w, [put('a', 'a1')])
    fail = true
    const e = await codeOf(() => append(w, [put('a', 'a2')]))
    t.is(e.code, 'ERR_FSYNC')
    t.is(e.file, join(dir, WAL_FILE_NAME))
    fail = false
    t.is((await codeOf(() => append(w, [put('a', 'a3')]))).code, 'ERR_STORE_POISONED')
    t.is((await codeOf(() => (mode === 'sync' ? w.checkpoint.sync() : w.checkpoint.async()))).code, 'ERR_STORE_POISONED')
    t.false(w.holdsLogLock(), 'the log lock is released after the failure')
    t.false(existsSync(lockFile(dir)))
  })

  test(`${mode}: a failed frame write rejects the batch, acknowledges nothing, and the next append writes over it`, async (t) => {
    const dir = fresh(t)
    let fail: WalStep | undefined
    const w = await open(dir, {
      ...SMALL,
      fault: (step) => {
        if (step === fail) {
          fail = undefined
          throw errno('ENOSPC')
        }
      },
    })
    await append(w, [put('a', 'a1')])
    fail = 'frame'
    t.is((await codeOf(() => append(w, [put('a', 'a2')]))).code, 'ERR_NO_SPACE')
    t.false(w.holdsLogLock())
    await append(w, [put('a', 'a3')])
    t.deepEqual(await get(w, 'a'), { kind: 'put', payload: payload('a', 'a3') })
    t.is(w.stats().frames, 2)
    w.close.sync()
    const again = await open(dir)
    t.deepEqual(await get(again, 'a'), { kind: 'put', payload: payload('a', 'a3') })
    t.is(again.logBytes(), w.logBytes())
  })

  test(`${mode}: a frame whose hint write failed is kept whole and the next frame follows it`, async (t) => {
    const dir = fresh(t)
    let fail: WalStep | undefined
    const w = await open(dir, {
      ...SMALL,
      fault: (step) => {
        if (step === fail) {
          fail = undefined
          throw errno('EIO')
        }
      },
    })
    await append(w, [put('a', 'a1')])
    const one = w.logBytes()
    fail = 'hint'
    t.is((await codeOf(() => append(w, [put('b', 'b1')]))).code, 'ERR_IO')
    t.true(w.logBytes() > one, 'the rejected frame is in the index')
    await append(w, [put('c', 'c1')])
    w.close.sync()
    const again = await open(dir)
    // Rejected, yet whole: it may appear, as after a failed fdatasync; the next frame follows it.
    t.deepEqual(await get(again, 'b'), { kind: 'put', payload: payload('b', 'b1') })
    t.deepEqual(await get(again, 'c'), { kind: 'put', payload: payload('c', 'c1') })
  })

  test(`${mode}: checkpoint writes key files byte-identical to the payloads, unlinks deleted keys, resets, and new appends follow`, async (t) => {
    const dir = fresh(t)
    const w = await open(dir)
    writeFileSync(keyFile(dir, 'b'), payload('b', 'old b'))
    await append(w, [put('a', 'a1'), put('b', 'b1')])
    await append(w, [put('a', 'a2'), put('c', 'c1')])
    await append(w, [op(WAL_DELETE, 'b'), op(WAL_FILE, 'd')])
    const before = decodeHeader(readFileSync(join(dir, WAL_FILE_NAME)))
    t.true(mode === 'sync' ? w.checkpoint.sync() : await w.checkpoint.async())
    t.deepEqual(readFileSync(keyFile(dir, 'a')), Buffer.from(payload('a', 'a2')))
    t.deepEqual(readFileSync(keyFile(dir, 'c')), Buffer.from(payload('c', 'c1')))
    t.false(existsSync(keyFile(dir, 'b')))
    t.false(existsSync(keyFile(dir, 'd')))
    const s = w.stats()
    t.deepEqual([s.checkpoints, s.resets, s.checkpointedKeys], [1, 1, 3])
    t.is(w.logBytes(), 0)
    const after = decodeHeader(readFileSync(join(dir, WAL_FILE_NAME)))
    t.not(after.generation, before.generation)
    t.is(after.first, before.first + 3n)
    t.deepEqual(await get(w, 'a'), { kind: 'absent' })
    await append(w, [put('e', 'e1')])
    t.deepEqual(await get(w, 'e'), { kind: 'put', payload: payload('e', 'e1') })
    w.close.sync()
    const again = await open(dir)
    t.deepEqual(await get(again, 'e'), { kind: 'put', payload: payload('e', 'e1') })
    t.deepEqual(await get(again, 'a'), { kind: 'absent' })
    t.is(readFileSync(join(dir, WAL_FILE_NAME)).length, 64 * 1024)
    t.deepEqual(
      readdirSync(dir).filter((n) => n.endsWith('.stage') || n.endsWith('.lock')),
      [],
      'no staging or lock file is left',
    )
  })

  test(`${mode}: the log grows in steps and reads across them`, async (t) => {
    const dir = fresh(t)
    const w = await open(dir, { growStep: 16_384, growMargin: 4096 })
    const big = new Uint8Array(20_000).map((_, i) => i % 251)
    await append(w, [put('a', big)])
    await append(w, [put('b', big)])
    const len = readFileSync(join(dir, WAL_FILE_NAME)).length
    t.is(len % 16_384, 0)
    t.true(len >= FRAMES_AT + w.logBytes() + 4096)
    w.close.sync()
    const again = await open(dir, { growStep: 16_384, growMargin: 4096 })
    t.deepEqual(await get(again, 'b'), { kind: 'put', payload: payload('b', big) })
  })

  test(`${mode}: back-pressure checkpoints before appending past the cap`, async (t) => {
    const dir = fresh(t)
    const w = await open(dir, { ...SMALL, checkpointCap: 300 })
    for (let i = 0; i < 6; i++) await append(w, [put(`k${i}`, `v${i}`.repeat(20))])
    t.true(w.stats().checkpoints >= 1)
    t.true(w.logBytes() <= 300 + 200)
    t.deepEqual(readFileSync(keyFile(dir, 'k0')), Buffer.from(payload('k0', 'v0'.repeat(20))))
  })

  test(`${mode}: two instances on one directory see each other's appends and deletes on the next get`, async (t) => {
    const dir = fresh(t)
    const a = await open(dir)
    const b = await open(dir)
    await append(a, [put('x', 'from a')])
    t.deepEqual(await get(b, 'x'), { kind: 'put', payload: payload('x', 'from a') })
    await append(b, [op(WAL_DELETE, 'x'), put('y', 'from b')])
    t.deepEqual(await get(a, 'x'), { kind: 'deleted' })
    t.deepEqual(await get(a, 'y'), { kind: 'put', payload: payload('y', 'from b') })
    // b checkpoints and resets; a catches up by the hint's new generation.
    t.true(mode === 'sync' ? b.checkpoint.sync() : await b.checkpoint.async())
    t.deepEqual(await get(a, 'y'), { kind: 'absent' })
    await append(a, [put('z', 'after the reset')])
    t.deepEqual(await get(b, 'z'), { kind: 'put', payload: payload('z', 'after the reset') })
  })
}

test('many concurrent async appends share one fdatasync per frame', async (t) => {
  const dir = fresh(t)
  let syncs = 0
  const w = await Wal.open.async(dir, { ...SMALL, fault: (step) => void (step === 'fdatasync' && syncs++) })
  // The first append starts a frame alone; the 63 made meanwhile are the next frame.
  await Promise.all(Array.from({ length: 64 }, (_, i) => w.append.async([put(`k${i}`, `v${i}`)])))
  t.is(syncs, 2)
  const s = w.stats()
  t.deepEqual([s.frames, s.records, s.dataSyncs], [2, 64, 2])
  for (let i = 0; i < 64; i++) t.deepEqual(await w.get.async(h(`k${i}`)), { kind: 'put', payload: payload(`k${i}`, `v${i}`) })
})

const holding: WalOptions = { ...SMALL, lockHoldMs: 3_600_000, leaseMs: 86_400_000 }

test('a committer keeps the log lock file across frames while appends are queued and releases it when idle', async (t) => {
  const dir = fresh(t)
  const w = await Wal.open.async(dir, holding)
  const created = w.stats().logLocks // creating the log took it once
  let observed = 0
  const first = w.append.async([put('k0', 'v0')])
  // Queued while the first frame is committed: the next frame.
  const rest = Array.from({ length: 10 }, (_, i) => w.append.async([put(`k${i + 1}`, 'v')]))
  await first
  observed = existsSync(lockFile(dir)) ? 1 : 0
  await Promise.all(rest)
  t.is(observed, 1, 'between the two frames the lock file stayed')
  const s = w.stats()
  t.is(s.frames, 2)
  t.is(s.logLocks - created, 1, 'taken once for both frames')
  t.false(w.holdsLogLock())
  t.false(existsSync(lockFile(dir)), 'released once the queue is empty')
})

test('with no hold (lockHoldMs 0) the lock file is taken for every frame', async (t) => {
  const dir = fresh(t)
  const w = await Wal.open.async(dir, { ...SMALL, lockHoldMs: 0 })
  const created = w.stats().logLocks
  await Promise.all(Array.from({ length: 10 }, (_, i) => w.append.async([put(`k${i}`, 'v')])))
  t.is(w.stats().frames, 2)
  t.is(w.stats().logLocks - created, 2)
})

test('a frame that fails under a kept log lock releases it, and the other writers of the frame get the error', async (t) => {
  const dir = fresh(t)
  let calls = 0
  const w = await Wal.open.async(dir, {
    ...holding,
    fault: (step) => {
      if (step === 'frame' && ++calls === 2) throw errno('ENOSPC')
    },
  })
  const first = w.append.async([put('k0', 'v0')])
  const rest = Array.from({ length: 5 }, (_, i) => w.append.async([put(`k${i + 1}`, 'v')]))
  await first
  const results = await Promise.allSettled(rest)
  t.true(results.every((r) => r.status === 'rejected' && (r.reason as KonserveError).code === 'ERR_NO_SPACE'))
  t.false(w.holdsLogLock())
  t.false(existsSync(lockFile(dir)))
  await w.append.async([put('k9', 'v9')])
  t.deepEqual(await w.get.async(h('k9')), { kind: 'put', payload: payload('k9', 'v9') })
})

test('another instance waiting for the log lock gets it once the holder is idle, and catches up first', async (t) => {
  const dir = fresh(t)
  const a = await Wal.open.async(dir, holding)
  const b = await Wal.open.async(dir, holding)
  const burstA = Array.from({ length: 20 }, (_, i) => a.append.async([put(`a${i}`, 'x')]))
  const burstB = Array.from({ length: 20 }, (_, i) => b.append.async([put(`b${i}`, 'y')]))
  await Promise.all([...burstA, ...burstB])
  for (let i = 0; i < 20; i++) {
    t.deepEqual(await a.get.async(h(`b${i}`)), { kind: 'put', payload: payload(`b${i}`, 'y') })
    t.deepEqual(await b.get.async(h(`a${i}`)), { kind: 'put', payload: payload(`a${i}`, 'x') })
  }
  a.close.sync()
  b.close.sync()
  // Frames never interleaved: a fresh reader scans them all, in seq order.
  const c = Wal.open.sync(dir, SMALL)
  t.is(c.logBytes(), a.logBytes())
  t.is(a.stats().frames + b.stats().frames, 4)
})

test('a blocking call cannot wait for an async one of this process holding the log lock: ERR_LOCK_TIMEOUT at once', async (t) => {
  const dir = fresh(t)
  let inner: unknown
  let w: Wal | undefined
  w = await Wal.open.async(dir, {
    ...SMALL,
    fault: (step) => {
      // Inside the async frame's commit, under the log lock: a blocking append now cannot wait.
      if (step !== 'fdatasync' || inner !== undefined) return
      try {
        w!.append.sync([put('b', 'b1')])
        inner = 'no error'
      } catch (err) {
        inner = err
      }
    },
  })
  await w.append.async([put('a', 'a1')])
  t.is((inner as KonserveError).code, 'ERR_LOCK_TIMEOUT')
  t.deepEqual(w.get.sync(h('b')), { kind: 'absent' })
  w.append.sync([put('c', 'c1')])
  t.deepEqual(w.get.sync(h('c')), { kind: 'put', payload: payload('c', 'c1') })
})

test('a reader whose record a reset reused re-validates: a new generation means catch up and look again', async (t) => {
  const dir = fresh(t)
  const writer = Wal.open.sync(dir, SMALL)
  let reuse: (() => void) | undefined
  const reader = Wal.open.sync(dir, {
    ...SMALL,
    fault: (step) => {
      if (step !== 'payload' || !reuse) return
      const f = reuse
      reuse = undefined
      f()
    },
  })
  writer.append.sync([put('a', 'a1')])
  t.deepEqual(reader.get.sync(h('a')), { kind: 'put', payload: payload('a', 'a1') })
  // Between the reader's catch-up and its read of a's payload: a checkpoint
  // resets the log and b's record takes the offset a's had.
  reuse = () => {
    t.true(writer.checkpoint.sync())
    writer.append.sync([put('b', 'b is longer, so a is cut')])
  }
  t.deepEqual(reader.get.sync(h('a')), { kind: 'absent' }, 'a lives in its key file now')
  t.true(reuse === undefined, 'the reuse happened during the read')
  t.deepEqual(readFileSync(keyFile(dir, 'a')), Buffer.from(payload('a', 'a1')))
  t.deepEqual(reader.get.sync(h('b')), { kind: 'put', payload: payload('b', 'b is longer, so a is cut') })
})

test('a checkpoint does not reset over a frame appended after it started', async (t) => {
  const dir = fresh(t)
  const other = Wal.open.sync(dir, SMALL)
  let once = true
  const w = Wal.open.sync(dir, {
    ...SMALL,
    fault: (step) => {
      if (step === 'stage' && once) {
        once = false
        other.append.sync([put('late', 'appended during the checkpoint')])
      }
    },
  })
  w.append.sync([put('a', 'a1')])
  t.true(w.checkpoint.sync())
  t.deepEqual(readFileSync(keyFile(dir, 'a')), Buffer.from(payload('a', 'a1')))
  t.is(w.stats().resets, 0)
  t.deepEqual(w.get.sync(h('late')), { kind: 'put', payload: payload('late', 'appended during the checkpoint') })
  // The next one takes the rest and resets.
  t.true(w.checkpoint.sync())
  t.is(w.stats().resets, 1)
  t.deepEqual(readFileSync(keyFile(dir, 'late')), Buffer.from(payload('late', 'appended during the checkpoint')))
})

test('a child process appending while this process reads: every acknowledged append is seen', async (t) => {
  const dir = fresh(t)
  const mod = (f: string) => JSON.stringify(resolve(f))
  const script = `
    import { Wal, recordHash } from ${mod('ts/backends/pure/wal.ts')}
    import { encodeKey } from ${mod('ts/format/key.ts')}
    import { encodeKeyFileSync } from ${mod('ts/format/file.ts')}
    const w = await Wal.open.async(process.argv[2], { growStep: 65536, growMargin: 4096 })
    for (let i = 0; i < 40; i++) {
      const k = encodeKey('c' + i)
      const payload = encodeKeyFileSync({ compressor: 0, encryptor: 0, keyCke: k, serializer: 0, meta: new Uint8Array([0x80]), value: new TextEncoder().encode('v' + i) })
      await w.append.async([{ op: 1, keyHash: recordHash(k), payload }])
      console.log('ack ' + i)
    }
    await w.close.async()
    console.log('done')
  `
  const reader = await Wal.open.async(dir, SMALL)
  const c = child(script, [dir], { nodeOptions: '--import=tsx' })
  for (const i of [0, 9, 19, 39]) {
    await c.saw(`ack ${i}\n`)
    // Acknowledged in the child: this process sees it on its next get (and every one before it).
    for (let j = 0; j <= i; j++) t.deepEqual(await reader.get.async(h(`c${j}`)), { kind: 'put', payload: payload(`c${j}`, `v${j}`) })
  }
  await c.saw('done')
  t.is(await c.exit, 0)
})

// ---- against the core: test-vectors/wal-log.json ---------------------------------------------

interface LogVector {
  name: string
  growStep: number
  growMargin: number
  empty: string
  appends: { op: number; keyHash: string; payload: string }[][]
  log: string
  lookups: { keyHash: string; kind: string; payload: string }[]
}
const vector = (JSON.parse(readFileSync(join(import.meta.dirname, '..', 'test-vectors', 'wal-log.json'), 'utf8')) as LogVector[])[0]!
const unhex = (s: string) => new Uint8Array(Buffer.from(s, 'hex'))
const vopts: WalOptions = { growStep: vector.growStep, growMargin: vector.growMargin }

async function lookupsMatch(t: ExecutionContext, w: Wal) {
  for (const l of vector.lookups) {
    const got = await w.get.async(unhex(l.keyHash))
    t.is(got.kind as string, l.kind)
    if (got.kind === 'put') t.is(hex(got.payload), l.payload)
  }
}

test('core vector: the pure engine reads a log the core wrote', async (t) => {
  const dir = fresh(t)
  writeFileSync(join(dir, WAL_FILE_NAME), unhex(vector.log))
  const w = await Wal.open.async(dir, vopts)
  await lookupsMatch(t, w)
  // And checkpoints it into key files byte-identical to the core's records.
  t.true(await w.checkpoint.async())
  for (const l of vector.lookups.filter((l) => l.kind === 'put')) t.is(hex(readFileSync(join(dir, `${l.keyHash}.ksv`))), l.payload)
})

for (const mode of ['sync', 'async'] as const) {
  test(`core vector (${mode}): the same appends on the core's empty log give the core's log file byte for byte`, async (t) => {
    const dir = fresh(t)
    writeFileSync(join(dir, WAL_FILE_NAME), unhex(vector.empty))
    const w = mode === 'sync' ? Wal.open.sync(dir, vopts) : await Wal.open.async(dir, vopts)
    for (const frame of vector.appends) {
      const records = frame.map((r) => ({ op: r.op as WalOp, keyHash: unhex(r.keyHash), payload: unhex(r.payload) }))
      if (mode === 'sync') w.append.sync(records)
      else await w.append.async(records)
    }
    t.true(hex(readFileSync(join(dir, WAL_FILE_NAME))) === vector.log, "the log file equals the core's")
    await lookupsMatch(t, w)
  })
}

test("core vector: a log the pure engine creates with the core's generation is the core's empty log byte for byte", async (t) => {
  const dir = fresh(t)
  const generation = decodeHeader(unhex(vector.empty)).generation
  Wal.open.sync(dir, { ...vopts, generation: () => generation })
  t.true(hex(readFileSync(join(dir, WAL_FILE_NAME))) === vector.empty)
})

test('a process killed while holding the log lock file is taken over, and its frames are kept', async (t) => {
  const dir = fresh(t)
  const mod = (f: string) => JSON.stringify(resolve(f))
  // The child appends one frame, then takes the log's lock file the way a
  // committer keeping it between frames holds it, and is killed.
  const script = `
    import { Wal, recordHash, WAL_LOCK_HEX } from ${mod('ts/backends/pure/wal.ts')}
    import { FileLocker } from ${mod('ts/backends/pure/filelock.ts')}
    import { encodeKey } from ${mod('ts/format/key.ts')}
    import { encodeKeyFileSync } from ${mod('ts/format/file.ts')}
    const w = Wal.open.sync(process.argv[2], { growStep: 65536, growMargin: 4096 })
    const k = encodeKey('dead')
    const payload = encodeKeyFileSync({ compressor: 0, encryptor: 0, keyCke: k, serializer: 0, meta: new Uint8Array([0x80]), value: new TextEncoder().encode('acknowledged') })
    w.append.sync([{ op: 1, keyHash: recordHash(k), payload }])
    if (!('taken' in new FileLocker(process.argv[2]).tryAcquire(WAL_LOCK_HEX))) process.exit(3)
    console.log('holding')
    setInterval(() => {}, 1000)
  `
  const c = child(script, [dir], { nodeOptions: '--import=tsx' })
  await c.saw('holding\n')
  t.true(existsSync(lockFile(dir)))
  c.proc.kill('SIGKILL')
  await c.exit
  const w = await Wal.open.async(dir, SMALL)
  await w.append.async([put('alive', 'after the takeover')])
  t.deepEqual(await w.get.async(h('dead')), { kind: 'put', payload: payload('dead', 'acknowledged') })
  t.deepEqual(await w.get.async(h('alive')), { kind: 'put', payload: payload('alive', 'after the takeover') })
  t.false(existsSync(lockFile(dir)))
})

test('read-only: no log is created (ERR_READ_ONLY, nothing written); an existing log is read and refuses writes', async (t) => {
  const dir = fresh(t)
  t.is((await codeOf(() => Wal.open.async(dir, { ...SMALL, readOnly: true }))).code, 'ERR_READ_ONLY')
  t.deepEqual(readdirSync(dir), [])
  const w = await Wal.open.async(dir, SMALL)
  await w.append.async([put('a', 'a1')])
  await w.close.async()
  const r = await Wal.open.async(dir, { ...SMALL, readOnly: true })
  t.deepEqual(await r.get.async(h('a')), { kind: 'put', payload: payload('a', 'a1') })
  t.is((await codeOf(() => r.append.async([put('a', 'a2')]))).code, 'ERR_READ_ONLY')
  t.is((await codeOf(() => r.checkpoint.async())).code, 'ERR_READ_ONLY')
  t.deepEqual(readdirSync(dir), [WAL_FILE_NAME])
})

test('async gets racing async appends in one instance: every acknowledged append is seen, the index never goes back', async (t) => {
  const dir = fresh(t)
  const w = await Wal.open.async(dir, SMALL)
  const other = await Wal.open.async(dir, SMALL)
  const seen = await Promise.all(
    Array.from({ length: 100 }, async (_, i) => {
      const writer = i % 3 === 0 ? other : w
      // Gets of keys not written yet run alongside, each catching up on its own.
      const early = w.get.async(h(`r${i + 1}`))
      await writer.append.async([put(`r${i}`, `v${i}`)])
      const [mine, before] = await Promise.all([w.get.async(h(`r${i}`)), early])
      return mine.kind === 'put' && hex(mine.payload) === hex(payload(`r${i}`, `v${i}`)) && (before.kind === 'absent' || before.kind === 'put')
    }),
  )
  t.true(seen.every(Boolean))
  for (let i = 0; i < 100; i++) t.deepEqual(await w.get.async(h(`r${i}`)), { kind: 'put', payload: payload(`r${i}`, `v${i}`) })
})
