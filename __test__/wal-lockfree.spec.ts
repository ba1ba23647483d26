/**
 * The lock-free replace on a version-3 store (docs/WAL.md §4.1) in the pure
 * engine, and its idle checkpoint (§5):
 * - an assoc (with or without expectedRevision, sync or async) on a
 *   version-3 store takes no key lock file; on a version-2 store it still does;
 * - a key lock file held by another process makes the assoc wait for it
 *   (REPLACE_BUSY, then the general path's wait) and then write;
 * - two processes doing compare-and-set increments (assoc with
 *   expectedRevision) and updateIn on one counter lose no update, pure with
 *   pure and native with pure (the native core learns version 3 in its own
 *   branch: until then a native process refuses the store);
 * - the idle checkpoint empties a log idle for 100 ms, from a timer that
 *   never keeps the process alive.
 */
import test from 'ava'
import { execFile } from 'node:child_process'
import { readFileSync, readdirSync, realpathSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { promisify } from 'node:util'
import * as k from 'konserve'
import { xxh3_64 } from '../ts/codec/xxhash.js'
import { KEY_CHECK_FILE, KEY_CHECK_FILE_LEN } from '../ts/format/keycheck.js'
import type { PureFileBacking } from '../ts/backends/pure/store.js'
import { FileLocker } from '../ts/backends/pure/filelock.js'
import { CHECKPOINT_LOCK_HEX, WAL_LOCK_HEX } from '../ts/backends/pure/wal.js'
import { tempDir } from './helpers/api.js'
import { holdLock } from './helpers/lock-holder.js'

const run = promisify(execFile)
const here = import.meta.dirname ?? new URL('.', import.meta.url).pathname
const fixture = (name: string) => join(here, 'fixtures', name)
const keyFiles = (dir: string) => readdirSync(dir).filter((n) => n.endsWith('.ksv'))
const backing = (s: k.Store) => (s as unknown as { backing: PureFileBacking }).backing

/** Rewrites the store's marker as `version` (its checksum fixed): a store some other build upgraded. */
function setMarkerVersion(dir: string, version: number): void {
  const b = Uint8Array.from(readFileSync(join(dir, KEY_CHECK_FILE)))
  b[8] = version
  new DataView(b.buffer).setBigUint64(KEY_CHECK_FILE_LEN - 8, xxh3_64(b.subarray(0, KEY_CHECK_FILE_LEN - 8)), true)
  writeFileSync(join(dir, KEY_CHECK_FILE), b)
}

/** Counts the key lock files the pure store takes (its locker's acquisitions, the log's own locks aside). */
function countKeyLocks(s: k.Store): { n: number } {
  const locker = backing(s).locker
  const count = { n: 0 }
  const orig = locker.tryAcquire.bind(locker)
  locker.tryAcquire = (hex: string) => {
    if (hex !== WAL_LOCK_HEX && hex !== CHECKPOINT_LOCK_HEX) count.n++
    return orig(hex)
  }
  return count
}

/** Opens a pure store on its log with marker `version` (3: as `wal: true` upgrades it now; 2: as the build before). */
async function pureStore(version: 2 | 3, dir = join(tempDir(), 'store')) {
  await k.close(await k.connectFsStore(dir, { native: false, wal: true }))
  if (version !== 3) setMarkerVersion(dir, version)
  const store = await k.connectFsStore(dir, { native: false })
  return { dir, store }
}

test('pure: wal: true upgrades to marker version 3, and the store has the fused replace', async (t) => {
  const { dir, store } = await pureStore(3)
  t.is(readFileSync(join(dir, KEY_CHECK_FILE))[8], 3)
  t.true(backing(store).lockFree)
  t.is(typeof backing(store).replace, 'function')
  await k.close(store)
  const v2 = await pureStore(2)
  t.false(backing(v2.store).lockFree)
  t.is(backing(v2.store).replace, undefined)
  await k.close(v2.store)
})

for (const version of [3, 2] as const) {
  test(`pure, version ${version}: assoc ${version === 3 ? 'takes no key lock file' : 'still takes its key lock file'} (async, sync, with expectedRevision)`, async (t) => {
    const { store } = await pureStore(version)
    const locks = countKeyLocks(store)
    const before = backing(store).wal!.stats()
    await Promise.all(Array.from({ length: 40 }, (_, i) => k.assoc(store, `k${i}`, i)))
    const after = backing(store).wal!.stats()
    // The replaces in flight share frames and fdatasyncs (the group commit).
    t.is(after.records - before.records, 40)
    t.true(after.frames - before.frames < 20, `40 writes in ${after.frames - before.frames} frames`)
    t.true(after.dataSyncs - before.dataSyncs < 20, `40 writes with ${after.dataSyncs - before.dataSyncs} fdatasyncs`)
    for (let i = 0; i < 10; i++) k.assoc(store, `s${i}`, i, { sync: true })
    await k.assoc(store, 'k0', 'again', { expectedRevision: 1 })
    k.assoc(store, 's0', 'again', { sync: true, expectedRevision: 1 })
    await t.throwsAsync(k.assoc(store, 'k0', 'stale', { expectedRevision: 1 }), { code: 'ERR_REVISION_MISMATCH' })
    t.throws(() => k.assoc(store, 'new', 1, { sync: true, expectedRevision: 3 }), { code: 'ERR_REVISION_MISMATCH' })
    if (version === 3) t.is(locks.n, 0, 'no key lock file was taken')
    else t.true(locks.n >= 53, `every write took its key lock file (${locks.n})`)
    t.is(await k.get(store, 'k0'), 'again')
    t.is((await k.getMeta(store, 'k0'))!.revision, 2)
    t.is((await k.getMeta(store, 's0'))!.revision, 2)
    t.is(await k.get(store, 'k39'), 39)
    t.is(await k.get(store, 'new'), undefined)
    // A locked writer (updateIn) takes its lock file on either version, and counts on from the logged revision.
    await k.updateIn(store, ['k0'], (v) => `${v}!`)
    t.is((await k.getMeta(store, 'k0'))!.revision, 3)
    t.true(locks.n > 0)
    await k.close(store)
  })
}

test('pure, version 3: a locked writer passes through the log lock after taking its key lock file, before it reads (else a lock-free write in flight could be lost to it)', async (t) => {
  const { dir } = await pureStore(3)
  const store = await k.connectFsStore(dir, { native: false, lockTimeoutMs: 300 })
  await k.assoc(store, 'x', 1)
  // The log lock held elsewhere (as a lock-free writer of another process holds it between its check and its frame).
  const locker = new FileLocker(realpathSync(dir))
  const held = locker.tryAcquire(WAL_LOCK_HEX)
  if (!('taken' in held)) return t.fail('the log lock was busy')
  let called = 0
  const inc = (v: unknown) => {
    called++
    return (v as number) + 1
  }
  const err = t.throws(() => k.updateIn(store, ['x'], inc, { sync: true })) as k.KonserveError
  t.is(err.code, 'ERR_LOCK_TIMEOUT')
  t.is(err.file, locker.lockPath(WAL_LOCK_HEX), 'it waited for the log lock')
  t.is(called, 0, 'nothing was read under the key lock before the pass')
  t.deepEqual(
    readdirSync(dir).filter((n) => n.endsWith('.lock') && n !== `.${WAL_LOCK_HEX}.lock`),
    [],
    'the key lock was released',
  )
  locker.release(WAL_LOCK_HEX, held.taken.token)
  await k.updateIn(store, ['x'], inc)
  t.is(await k.get(store, 'x'), 2)
  t.is(called, 1)
  await k.close(store)
})

for (const holder of ['pure', 'native'] as const) {
  test(`pure, version 3: a key lock held by another (${holder}) process makes the assoc wait for it, then write`, async (t) => {
    const { dir, store } = await pureStore(3)
    await k.assoc(store, 'held', 1)
    const h = holdLock(dir, holder)
    await h.locked
    let settled = false
    const write = k.assoc(store, 'held', 2, { expectedRevision: 1 }).finally(() => {
      settled = true
    })
    // Round trips to the holder: it still holds the lock, and the write still waits.
    for (let i = 0; i < 5; i++) {
      await h.ping()
      t.false(settled, `the write waited for the holder (ping ${i})`)
    }
    t.is(await k.get(store, 'held'), 1)
    await h.kill()
    await write
    t.is(await k.get(store, 'held'), 2)
    t.is((await k.getMeta(store, 'held'))!.revision, 2)
    await k.close(store)
    t.deepEqual(
      readdirSync(dir).filter((n) => n.endsWith('.lock')),
      [],
      'no lock file outlives its lock',
    )
  })
}

for (const [a, b] of [
  ['pure', 'pure'],
  ['native', 'pure'],
] as const) {
  test(`version 3: ${a} + ${b} processes doing compare-and-set assocs and updateIn on one counter lose no update`, async (t) => {
    const { dir, store } = await pureStore(3)
    await k.close(store)
    const n = 120
    const env = (impl: string) => ({ ...process.env, KONSERVE_NATIVE: impl === 'native' ? '1' : '0' })
    const outs = await Promise.all(
      [a, b].map((impl) => run(process.execPath, [fixture('cas-incrementer.mjs'), dir, String(n), 'updatein', '1', impl], { env: env(impl) })),
    )
    const done = outs.reduce((sum, o) => sum + Number(o.stdout.trim()), 0)
    t.is(done, 2 * n)
    const check = await k.connectFsStore(dir, { native: false })
    t.is(await k.get(check, 'counter'), done)
    t.is((await k.getMeta(check, 'counter'))!.revision, done)
    await k.close(check)
    t.deepEqual(
      readdirSync(dir).filter((n) => n.endsWith('.lock')),
      [],
      'no lock file outlives its lock',
    )
  })
}

test('pure: the idle checkpoint moves an idle log into key files (no write, no close needed)', async (t) => {
  const { dir, store } = await pureStore(3)
  await Promise.all(Array.from({ length: 20 }, (_, i) => k.assoc(store, `k${i}`, i)))
  const wal = backing(store).wal!
  t.true(wal.logBytes() > 0)
  const deadline = performance.now() + 20_000
  while (wal.logBytes() > 0 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20))
  t.is(wal.logBytes(), 0, 'checkpointed within the deadline')
  t.is(wal.idleError, undefined)
  t.is(keyFiles(dir).length, 20)
  t.is(await k.get(store, 'k19'), 19)
  await k.close(store)
})

test('pure: a child process that writes through the log exits at once: the idle checkpoint timer never keeps it alive', async (t) => {
  const { dir, store } = await pureStore(3)
  await k.close(store)
  const script = join(tempDir(), 'child.mjs')
  writeFileSync(
    script,
    `import * as k from ${JSON.stringify(pathToFileURL(resolve('dist/index.js')).href)}
const s = await k.connectFsStore(${JSON.stringify(dir)}, { native: false, wal: true, walIdleCheckpointMs: 60000 })
await k.assoc(s, 'a', 1)
k.assoc(s, 'b', 2, { sync: true })
`,
  )
  const { stdout } = await run(process.execPath, [script])
  t.is(stdout, '')
  // It exited with its records still in the log: its idle timer (a minute here) did not hold it.
  t.deepEqual(keyFiles(dir), [])
  const check = await k.connectFsStore(dir, { native: false })
  t.is(await k.get(check, 'b'), 2)
  await k.close(check)
})
