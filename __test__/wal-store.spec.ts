/**
 * The facade over a store on its write-ahead log (docs/WAL.md §9 items 3
 * and 4; `wal: true`, experimental), native and pure: small writes are
 * records of `.konserve.wal`, not key files, and every read, listing and
 * write of the facade sees them, in this process, in a second store on the
 * same directory, and in a child process. The mixed native/pure tests
 * (one log shared by both engines) are at the end.
 */
import test from 'ava'
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import * as k from 'konserve'
import { child, dist } from './helpers/child.js'
import { tempDir } from './helpers/api.js'

const keyFiles = (dir: string) => readdirSync(dir).filter((n) => n.endsWith('.ksv'))
/** No idle checkpoint (either engine): these tests look at what is still in the log. */
const quiet = { walIdleCheckpointMs: 0 } as const

/** Writes more than 16 MiB of logged values (1,500 keys of 12,000 bytes, 100 per frame): the write that passes 16 MiB calls for a checkpoint, which runs in the background (a native store's background thread; the pure store's async write starts it and returns, docs/WAL.md §5). */
async function fillPastCheckpoint(store: k.Store): Promise<void> {
  const value = 'f'.repeat(12_000)
  for (let b = 0; b < 15; b++) {
    await k.multiAssoc(store, Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`fill${b * 100 + i}`, value])))
  }
}

for (const native of [true, false]) {
  const impl = native ? 'native' : 'pure'
  test(`${impl}, wal: true: assoc, get, updateIn, dissoc, keys and bassoc through the log`, async (t) => {
    const dir = tempDir()
    const store = await k.connectFsStore(dir, { ...quiet, native, wal: true })
    t.true(existsSync(join(dir, '.konserve.wal')))
    t.is(readFileSync(join(dir, '.konserve.keycheck'))[8], 3, 'the version-3 marker (docs/WAL.md §4.1)')
    await k.assoc(store, 'a', { n: 1 })
    await k.assoc(store, 'b', 'bee')
    t.deepEqual(keyFiles(dir), [], 'small values are logged, not key files')
    t.deepEqual(await k.get(store, 'a'), { n: 1 })
    t.deepEqual(k.get(store, 'b', { sync: true }), 'bee')
    t.true(await k.exists(store, 'a'))
    t.is((await k.getMeta(store, 'a'))!.revision, 1)
    await k.updateIn(store, ['a', 'n'], (n: number) => n + 1)
    t.deepEqual(await k.get(store, 'a'), { n: 2 })
    t.is((await k.getMeta(store, 'a'))!.revision, 2)
    await t.throwsAsync(k.assoc(store, 'a', 0, { expectedRevision: 1 }), { code: 'ERR_REVISION_MISMATCH' } as never)
    t.deepEqual((await k.keys(store)).map((m) => m.key).sort(), ['a', 'b'])
    await k.dissoc(store, 'b')
    t.is(await k.get(store, 'b'), undefined)
    t.false(await k.exists(store, 'b'))
    t.deepEqual((await k.keys(store)).map((m) => m.key), ['a'])
    // A blob over a logged key goes to its key file, and is read back.
    await k.bassoc(store, 'a', Buffer.from('blob bytes'))
    t.is(keyFiles(dir).length, 1)
    t.is(Buffer.from(k.bget(store, 'a', ({ blob }) => blob!, { sync: true })!).toString(), 'blob bytes')
    // A large value: its key file too.
    const big = 'x'.repeat(40_000) + Math.random()
    await k.assoc(store, 'big', big)
    t.is(await k.get(store, 'big'), big)
    t.is(keyFiles(dir).length, 2)
    await k.close(store)
    // Reopened without the option: the marker decides.
    const again = await k.connectFsStore(dir, { ...quiet, native })
    t.is(await k.get(again, 'big'), big)
    t.is(await k.get(again, 'b'), undefined)
    await k.close(again)
    await k.deleteStore(dir, { native })
    t.false(existsSync(dir))
  })

  test(`${impl}, wal: true: two stores on one directory see each other's logged writes and deletes`, async (t) => {
    const dir = tempDir()
    const a = await k.connectFsStore(dir, { ...quiet, native, wal: true })
    const b = await k.connectFsStore(dir, { ...quiet, native })
    await k.assoc(a, 'shared', 1)
    t.is(await k.get(b, 'shared'), 1)
    t.is(k.get(b, 'shared', { sync: true }), 1)
    await k.updateIn(b, ['shared'], (n: number) => n + 1)
    t.is(await k.get(a, 'shared'), 2)
    t.is((await k.getMeta(a, 'shared'))!.revision, 2)
    await k.dissoc(a, 'shared')
    t.is(await k.get(b, 'shared'), undefined)
    t.deepEqual(await k.keys(b), [])
    await k.close(a)
    await k.close(b)
  })

  test(`${impl}, wal: true: a child process reads a value this process wrote through the log, and writes one back`, async (t) => {
    const dir = tempDir()
    const store = await k.connectFsStore(dir, { ...quiet, native, wal: true })
    await k.assoc(store, 'from-parent', { hello: 'child' })
    t.deepEqual(keyFiles(dir), [])
    const c = child(
      `
      const k = await import(${dist('index.mjs')})
      const store = await k.connectFsStore(process.argv[2], { walIdleCheckpointMs: 0, native: process.argv[3] === 'native' })
      console.log('read ' + JSON.stringify(await k.get(store, 'from-parent')))
      await k.assoc(store, 'from-child', 42)
      await k.close(store)
      console.log('done')
    `,
      [dir, impl],
    )
    await c.saw('read {"hello":"child"}')
    await c.saw('done')
    t.is(await c.exit, 0)
    t.is(await k.get(store, 'from-child'), 42)
    t.deepEqual(keyFiles(dir), [], 'the child logged its write too')
    await k.close(store)
  })

  test(`${impl}, wal: false switches the store back: its values in key files, no log, no marker`, async (t) => {
    const dir = tempDir()
    const store = await k.connectFsStore(dir, { ...quiet, native, wal: true })
    await k.assoc(store, 'kept', 'v')
    await k.assoc(store, 'gone', 'v')
    await k.dissoc(store, 'gone')
    await k.close(store)
    const back = await k.connectFsStore(dir, { ...quiet, native, wal: false })
    t.false(existsSync(join(dir, '.konserve.wal')))
    t.false(existsSync(join(dir, '.konserve.keycheck')))
    t.is(keyFiles(dir).length, 1)
    t.is(await k.get(back, 'kept'), 'v')
    await k.close(back)
    // Now an engine without the log (any build) opens it again.
    const pure = await k.connectFsStore(dir, { ...quiet, native: false })
    t.is(await k.get(pure, 'kept'), 'v')
    t.is(await k.get(pure, 'gone'), undefined)
    await k.close(pure)
  })
}

for (const native of [true, false]) {
  const impl = native ? 'native' : 'pure'
  test(`rekey of a store on its log (${impl}): checkpointed, rekeyed, and back on a log under the new key`, async (t) => {
    const dir = tempDir()
    const A = { type: 'aes', key: 'key A' } as const
    const store = await k.connectFsStore(dir, { ...quiet, native, wal: true })
    await k.assoc(store, 'k', 'v')
    await k.assoc(store, 'k', 'v2')
    await k.close(store)
    t.deepEqual(keyFiles(dir), [], 'the value is in the log')
    // A wrong `from` is refused before anything is written: the log stays.
    const before = readdirSync(dir).sort()
    const wal = readFileSync(join(dir, '.konserve.wal'))
    await t.throwsAsync(k.rekey(dir, { from: A, to: null }), { code: 'ERR_DECRYPT' } as never)
    t.deepEqual(readdirSync(dir).sort(), before)
    t.true(readFileSync(join(dir, '.konserve.wal')).equals(wal), 'the log as it was')

    t.deepEqual(await k.rekey(dir, { from: null, to: A }), { rewritten: 1, skipped: 0 })
    const marker = readFileSync(join(dir, '.konserve.keycheck'))
    t.true(marker[8]! >= 2, 'back on a log: the marker')
    t.true(existsSync(join(dir, '.konserve.wal')))
    t.is(keyFiles(dir).length, 1, 'the checkpointed value, in its key file under A')
    await t.throwsAsync(k.connectFsStore(dir, { native }), { code: 'ERR_DECRYPT' } as never)
    for (const reader of [native, !native]) {
      const keyed = await k.connectFsStore(dir, { native: reader, encryptor: A })
      t.is(await k.get(keyed, 'k'), 'v2')
      t.is((await k.getMeta(keyed, 'k'))!.revision, 2)
      await k.close(keyed)
    }
    // A logged write under A, then back to plaintext: the same again.
    const keyed = await k.connectFsStore(dir, { ...quiet, native, encryptor: A })
    await k.assoc(keyed, 'l', 'logged under A')
    await k.close(keyed)
    t.deepEqual(k.rekey(dir, { from: A, to: null, sync: true }), { rewritten: 2, skipped: 0 })
    const plain = await k.connectFsStore(dir, { ...quiet, native })
    t.truthy(plain)
    t.is(await k.get(plain, 'l'), 'logged under A')
    t.true(readFileSync(join(dir, '.konserve.keycheck'))[8]! >= 2)
    await k.assoc(plain, 'm', 'logged again')
    t.is(keyFiles(dir).length, 2, 'a new small write goes to the log')
    await k.close(plain)
  })

  test(`${impl}, wal: true on an encrypted store: the marker keeps its key check, values in the log are encrypted`, async (t) => {
    const dir = tempDir()
    const A = { type: 'aes', key: 'key A' } as const
    await k.close(await k.connectFsStore(dir, { ...quiet, native, encryptor: A }))
    const v1 = readFileSync(join(dir, '.konserve.keycheck'))
    const store = await k.connectFsStore(dir, { ...quiet, native, encryptor: A, wal: true })
    const v2 = readFileSync(join(dir, '.konserve.keycheck'))
    t.is(v2[8], 3)
    t.deepEqual(v2.subarray(9, 9 + 64), v1.subarray(9, 9 + 64), 'the same salt and check')
    await k.assoc(store, 'secret', 'plaintext-marker-xyz')
    t.false(readFileSync(join(dir, '.konserve.wal')).includes('plaintext-marker-xyz'))
    await k.close(store)
    await t.throwsAsync(k.connectFsStore(dir, { ...quiet, native: !native }), { code: 'ERR_DECRYPT' } as never)
    const other = await k.connectFsStore(dir, { ...quiet, native: !native, encryptor: A })
    t.is(await k.get(other, 'secret'), 'plaintext-marker-xyz')
    await k.close(other)
  })
}

test('wal: true upgrades a store to the same bytes in both engines: the marker byte for byte, a log of the same length, and no other file', async (t) => {
  const A = { type: 'aes', key: 'key A' } as const
  for (const keyed of [false, true]) {
    const made: Array<{ marker: Buffer; walLen: number; names: string[] }> = []
    const template = tempDir()
    await k.close(await k.connectFsStore(template, { ...quiet, native: true, ...(keyed ? { encryptor: A } : {}) }))
    for (const native of [true, false]) {
      const dir = tempDir()
      for (const n of readdirSync(template)) writeFileSync(join(dir, n), readFileSync(join(template, n)))
      const store = await k.connectFsStore(dir, { ...quiet, native, wal: true, ...(keyed ? { encryptor: A } : {}) })
      await k.close(store)
      made.push({ marker: readFileSync(join(dir, '.konserve.keycheck')), walLen: statSync(join(dir, '.konserve.wal')).size, names: readdirSync(dir).sort() })
    }
    t.deepEqual(made[1]!.marker, made[0]!.marker, keyed ? 'encrypted' : 'plaintext')
    t.is(made[1]!.walLen, made[0]!.walLen)
    t.deepEqual(made[1]!.names, made[0]!.names)
  }
})

for (const native of [true, false]) for (const wal of [true, false]) test(`${native ? 'native' : 'pure'}, wal: ${wal}: sweep lists and deletes the keys older than the cutoff (logged ones with the log), keeping the whitelist`, async (t) => {
  const dir = tempDir()
  const store = await k.connectFsStore(dir, { ...quiet, native, wal })
  for (const key of ['old1', 'old2', 'kept']) await k.assoc(store, key, key)
  const cutoff = new Date((await k.getMeta(store, 'kept'))!.lastWrite.getTime() + 1)
  if (wal) t.deepEqual(keyFiles(dir), [], 'every key is logged')
  const deleted = await k.sweep(store, ['kept'], cutoff)
  t.deepEqual([...deleted].sort(), ['old1', 'old2'])
  t.deepEqual((await k.keys(store)).map((m) => m.key).sort(), ['kept'])
  t.is(await k.get(store, 'old1'), undefined)
  await k.close(store)
})

// ---- the pure engine's blocking and async calls on one store ---------------------

test('pure, wal: true: blocking and async calls mixed on one store (awaited, reads during writes, a blocking write beside pending ones) neither fail nor hang', async (t) => {
  const dir = tempDir()
  const store = await k.connectFsStore(dir, { ...quiet, native: false, wal: true })
  for (let i = 0; i < 20; i++) {
    if (i % 2 === 0) k.assoc(store, `k${i % 5}`, i, { sync: true })
    else await k.assoc(store, `k${i % 5}`, i)
    t.is(k.get(store, `k${i % 5}`, { sync: true }), i)
    t.is(await k.get(store, `k${i % 5}`), i)
  }
  // Blocking reads while async writes are in flight: reads take no lock.
  const pending = Array.from({ length: 32 }, (_, i) => k.assoc(store, `p${i}`, i))
  const seen: unknown[] = []
  const reader = setInterval(() => {
    seen.push(k.get(store, 'k0', { sync: true }), k.keys(store, { sync: true }).length)
  }, 0)
  // A blocking write issued beside the pending async writes, before they reach the log.
  k.updateIn(store, ['blocking'], (n: number | undefined) => (n ?? 0) + 1, { sync: true })
  await Promise.all(pending)
  clearInterval(reader)
  t.true(seen.every((v) => typeof v === 'number'))
  t.is(k.get(store, 'blocking', { sync: true }), 1)
  for (let i = 0; i < 32; i++) t.is(k.get(store, `p${i}`, { sync: true }), i)
  t.is(k.keys(store, { sync: true }).length, 5 + 32 + 1)
  t.deepEqual(keyFiles(dir), [], 'everything was logged')
  await k.close(store)
})

test('pure, wal: true: blocking writes from callbacks while async writes are in flight on one store all succeed and none is lost (the log is never held across an await)', async (t) => {
  const dir = tempDir()
  const store = await k.connectFsStore(dir, { ...quiet, native: false, wal: true })
  await k.assoc(store, 'logged', 0)
  const pending = Array.from({ length: 200 }, (_, i) => k.assoc(store, `a${i % 20}`, i))
  let rounds = 0
  let done = false
  const all = Promise.all(pending).then(() => (done = true))
  while (!done) {
    await new Promise<void>((r) => setImmediate(r))
    k.assoc(store, `fresh${rounds}`, rounds, { sync: true })
    k.updateIn(store, ['logged'], (n: number) => n + 1, { sync: true })
    if (rounds % 3 === 0) k.dissoc(store, `fresh${rounds}`, { sync: true })
    rounds++
  }
  await all
  t.true(rounds > 0)
  t.is(await k.get(store, 'logged'), rounds)
  for (let i = 0; i < rounds; i++) t.is(await k.get(store, `fresh${i}`), i % 3 === 0 ? undefined : i)
  for (let i = 180; i < 200; i++) t.is(await k.get(store, `a${i % 20}`), i)
  t.deepEqual(keyFiles(dir), [], 'everything was logged')
  await k.close(store)
})

// ---- native and pure on one store with the log ----------------------------------

for (const [writer, reader] of [
  [true, false],
  [false, true],
] as const) {
  const w = writer ? 'native' : 'pure'
  const r = reader ? 'native' : 'pure'
  test(`mixed, wal: true: ${w} writes, ${r} reads at once (puts, deletes, updateIn, a checkpoint, a blob and a large value over logged keys)`, async (t) => {
    const dir = tempDir()
    const a = await k.connectFsStore(dir, { ...quiet, native: writer, wal: true })
    const b = await k.connectFsStore(dir, { ...quiet, native: reader })
    await k.assoc(a, 'x', { v: 1 })
    await k.multiAssoc(a, { y: 'why', z: 26 })
    t.deepEqual(keyFiles(dir), [])
    t.deepEqual(await k.get(b, 'x'), { v: 1 })
    t.is(k.get(b, 'y', { sync: true }), 'why')
    t.deepEqual((await k.keys(b)).map((m) => m.key).sort(), ['x', 'y', 'z'])
    await k.updateIn(b, ['x', 'v'], (n: number) => n + 1)
    t.deepEqual(await k.get(a, 'x'), { v: 2 })
    t.is((await k.getMeta(a, 'x'))!.revision, 2)
    await k.dissoc(a, 'z')
    t.false(await k.exists(b, 'z'))
    t.deepEqual((await k.keys(b)).map((m) => m.key).sort(), ['x', 'y'])
    // A checkpoint by the writer (its log passed 16 MiB): the reader reads the key files.
    await k.dissoc(a, 'y')
    await fillPastCheckpoint(a)
    // The 14th batch took the log past 16 MiB: everything up to it goes to key files, in the
    // background while the writes go on (which may take the 15th too).
    await waitUntil(20_000, 'the background checkpoint', () => keyFiles(dir).length >= 1 + 1400)
    t.deepEqual(await k.get(b, 'x'), { v: 2 })
    t.is(await k.get(b, 'y'), undefined)
    t.is(await k.get(b, 'fill1499'), 'f'.repeat(12_000))
    t.is((await k.keys(b)).length, 1 + 1500)
    // A blob written by the reader over a key the writer logged.
    await k.assoc(a, 'blob', 'logged first')
    await k.bassoc(b, 'blob', Buffer.from('blob bytes'))
    t.is(Buffer.from(k.bget(a, 'blob', ({ blob }) => blob!, { sync: true })!).toString(), 'blob bytes')
    // A large value by the reader over a key the writer logged, then logged again by the writer.
    const big = 'L'.repeat(40_000)
    await k.assoc(a, 'big', 'small')
    await k.assoc(b, 'big', big)
    t.is(await k.get(a, 'big'), big)
    await k.assoc(a, 'big', 'small again')
    t.is(await k.get(b, 'big'), 'small again')
    // An append log by one over a key the other deleted through the log.
    await k.assoc(a, 'events', 1)
    await k.dissoc(b, 'events')
    await k.append(a, 'events', { e: 1 })
    t.deepEqual(await k.log(b, 'events'), [{ e: 1 }])
    await k.close(a)
    await k.close(b)
  })
}

for (const [parent, kid] of [
  ['native', 'pure'],
  ['pure', 'native'],
] as const) {
  test(`mixed, wal: true: a ${kid} child process and this ${parent} store see each other's acknowledged writes and deletes at once`, async (t) => {
    const dir = tempDir()
    const store = await k.connectFsStore(dir, { ...quiet, native: parent === 'native', wal: true })
    await k.assoc(store, 'from-parent', 1)
    await k.assoc(store, 'doomed', 'x')
    const c = child(
      `
      const k = await import(${dist('index.mjs')})
      const store = await k.connectFsStore(process.argv[2], { walIdleCheckpointMs: 0, native: process.argv[3] === 'native' })
      console.log('read ' + JSON.stringify(await k.get(store, 'from-parent')))
      await k.dissoc(store, 'doomed')
      await k.assoc(store, 'from-child', 2)
      console.log('wrote')
      await k.close(store)
    `,
      [dir, kid],
    )
    await c.saw('read 1')
    await c.saw('wrote')
    t.is(await c.exit, 0)
    t.is(await k.get(store, 'from-child'), 2)
    t.is(await k.get(store, 'doomed'), undefined)
    t.deepEqual((await k.keys(store)).map((m) => m.key).sort(), ['from-child', 'from-parent'])
    t.deepEqual(keyFiles(dir), [])
    await k.close(store)
  })
}

test('pure, wal: true: an async write that takes the log past 16 MiB returns before the checkpoint; a blocking one runs it', async (t) => {
  const dir = tempDir()
  const store = await k.connectFsStore(dir, { ...quiet, native: false, wal: true, syncBlob: false })
  const value = 'f'.repeat(12_000)
  const batch = (b: number) => Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`fill${b * 100 + i}`, value]))
  // The 14th batch takes the log past 16 MiB.
  for (let b = 0; b < 14; b++) await k.multiAssoc(store, batch(b))
  // Only microtasks ran since its write returned: the checkpoint it started has renamed nothing yet.
  t.is(keyFiles(dir).length, 0, 'the async write did not wait for the checkpoint')
  await waitUntil(20_000, 'the background checkpoint', () => keyFiles(dir).length >= 1400)
  t.is(await k.get(store, 'fill1399'), value)
  // Blocking writes: the one that takes the log past 16 MiB again runs the checkpoint before it returns.
  for (let b = 14; b < 28; b++) k.multiAssoc(store, batch(b), { sync: true })
  t.true(keyFiles(dir).length >= 2800, `${keyFiles(dir).length} key files`)
  const other = await k.connectFsStore(dir, { native: true })
  t.is(await k.get(other, 'fill2799'), value)
  await k.close(other)
  await k.close(store)
})

for (const native of [true, false]) {
  const impl = native ? 'native' : 'pure'
  test(`${impl}, wal: true: a multiAssoc of more small values than one 8 MiB frame holds is logged frame by frame`, async (t) => {
    const dir = tempDir()
    const store = await k.connectFsStore(dir, { ...quiet, native, wal: true, syncBlob: false })
    // 700 values of 15,000 bytes: about 10.5 MB of records, more than one frame (8 MiB) holds.
    const batch = (tag: string) => Object.fromEntries(Array.from({ length: 700 }, (_, i) => [`m${i}`, `${tag}${i}`.padEnd(15_000, '.')]))
    await k.multiAssoc(store, batch('async'))
    t.deepEqual(keyFiles(dir), [], 'all logged, no key file')
    // The second batch takes the log past 16 MiB: checkpointed into key files (natively on the background thread).
    k.multiAssoc(store, batch('sync'), { sync: true })
    const other = await k.connectFsStore(dir, { native: !native })
    for (const i of [0, 350, 699]) t.is(await k.get(other, `m${i}`), `sync${i}`.padEnd(15_000, '.'))
    t.is((await k.getMeta(other, 'm699'))!.revision, 2)
    await k.close(other)
    await k.close(store)
  })
}

for (const native of [true, false]) {
  const impl = native ? 'native' : 'pure'
  test(`${impl}: a keyed open of a plaintext store on its log is refused (its records are plaintext), unless acceptPlaintext`, async (t) => {
    const dir = tempDir()
    const A = { type: 'aes', key: 'key A' } as const
    const store = await k.connectFsStore(dir, { native, wal: true })
    await k.assoc(store, 'k', 'plain')
    await k.close(store)
    const marker = readFileSync(join(dir, '.konserve.keycheck'))
    const e = await t.throwsAsync(k.connectFsStore(dir, { native, encryptor: A }), { code: 'ERR_DECRYPT', message: /write-ahead log and has no key/ } as never)
    t.is((e as k.KonserveError).file, join(dir, '.konserve.keycheck'))
    t.deepEqual(readFileSync(join(dir, '.konserve.keycheck')), marker, 'no key check adopted')
    const plain = await k.connectFsStore(dir, { native })
    t.is(await k.get(plain, 'k'), 'plain')
    await k.close(plain)
    // acceptPlaintext migrates key by key: the logged plaintext value is read, a new write is encrypted.
    const migrating = await k.connectFsStore(dir, { native, encryptor: A, acceptPlaintext: true })
    t.is(await k.get(migrating, 'k'), 'plain')
    await k.assoc(migrating, 'k', 'secret now')
    await k.close(migrating)
    const keyed = await k.connectFsStore(dir, { native: !native, encryptor: A })
    t.is(await k.get(keyed, 'k'), 'secret now')
    await k.close(keyed)
  })
}

// ---- the core's background thread: the idle checkpoint, the idle hold, and exit ----

const LOG_LOCK = '.57414c57414c57414c57414c57414c57.lock'

/** Polls `done` until it holds, failing after `ms` (a condition, never a bare sleep). */
async function waitUntil(ms: number, what: string, done: () => boolean): Promise<void> {
  const deadline = Date.now() + ms
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`)
    await new Promise((r) => setTimeout(r, 5))
  }
}

for (const native of [true, false]) {
  test(`${native ? 'native' : 'pure'}, wal: true: an idle store checkpoints its log into key files by itself (walIdleCheckpointMs; 0 keeps the records)`, async (t) => {
    const [on, off] = [tempDir(), tempDir()]
    const a = await k.connectFsStore(on, { native, wal: true, walIdleCheckpointMs: 50 })
    const b = await k.connectFsStore(off, { native, wal: true, walIdleCheckpointMs: 0 })
    for (const s of [a, b]) {
      await k.assoc(s, 'x', 1)
      k.assoc(s, 'y', 2, { sync: true })
      await k.dissoc(s, 'y')
    }
    await waitUntil(20_000, 'the idle checkpoint', () => keyFiles(on).length === 1)
    t.deepEqual(await k.get(a, 'x'), 1)
    t.is(await k.get(a, 'y'), undefined)
    t.deepEqual(keyFiles(off), [], 'with 0 the values stay in the log')
    t.is(await k.get(b, 'x'), 1)
    await t.throwsAsync(k.connectFsStore(tempDir(), { native, walIdleCheckpointMs: -1 }), { code: 'ERR_INVALID_ARGUMENT' } as never)
    await k.close(a)
    await k.close(b)
    t.false(existsSync(join(on, LOG_LOCK)), 'close released the log lock')
  })
}

for (const ending of ['close', 'end', 'process.exit'] as const) {
  const how = { close: 'writes, closes and ends', end: 'writes and ends without closing', 'process.exit': 'writes and calls process.exit' }[ending]
  // Serial: a test beside it that blocks this worker's event loop (the mixed ones' blocking calls) would delay the child's exit event.
  test.serial(`native, wal: true: a node process that ${how} exits at once and leaves no log lock file (the background thread keeps nothing alive)`, async (t) => {
    const dir = tempDir()
    const c = child(
      `
      const k = await import(${dist('index.mjs')})
      const store = await k.connectFsStore(process.argv[2], { native: true, wal: true })
      await k.assoc(store, 'async', 2)
      await Promise.all([k.assoc(store, 'a', 3), k.assoc(store, 'b', 4)])
      ${ending === 'close' ? 'await k.close(store)' : ''}
      // The last write blocks: the lock file is kept for 2 ms after it, longer than the exit takes.
      ${ending === 'close' ? '' : "k.assoc(store, 'sync', 1, { sync: true })"}
      console.log('wrote ' + Date.now())
      ${ending === 'process.exit' ? 'process.exit(0)' : ''}
    `,
      [dir],
    )
    let wrote = 0
    await new Promise<void>((r) =>
      c.proc.stdout.on('data', (d: Buffer) => {
        const m = /wrote (\d+)/.exec(d.toString())
        if (m) {
          wrote = Number(m[1])
          r()
        }
      }),
    )
    t.is(await c.exit, 0)
    const took = Date.now() - wrote
    t.true(took < 2000, `exited ${took} ms after its last write`)
    t.false(existsSync(join(dir, LOG_LOCK)), 'the log lock file was released (close, or at exit)')
    const again = await k.connectFsStore(dir, { native: true, lockTimeoutMs: 2000 })
    t.deepEqual([await k.get(again, 'async'), await k.get(again, 'a'), await k.get(again, 'b')], [2, 3, 4])
    if (ending !== 'close') t.is(await k.get(again, 'sync'), 1)
    await k.assoc(again, 'after', 5)
    await k.close(again)
  })
}
