/**
 * Cheap async writes on the native store: the revision read of an async
 * replacing write (assoc, bassoc, multiAssoc) is answered on the calling
 * thread when the key's file is cached, or known missing (the binding's getMetaNow,
 * never a wait for the disk), so the write costs one threadpool task (its
 * put), not two. These tests pin down that the shortcut answers exactly what
 * the blocking read answers, and hands what it cannot answer (append logs,
 * long heads) to the threadpool.
 */
import test from 'ava'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { mkdtempSync, copyFileSync, readdirSync, realpathSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as k from 'konserve'
import { holdLock, untilCalls } from './helpers/lock-holder.js'

interface NativeLike {
  getMetaNow(key: Buffer): unknown
  getMetaSync(key: Buffer): unknown
  filePath(key: Buffer): string
}
const fresh = () => mkdtempSync(join(tmpdir(), 'konserve-cheap-async-'))
const nativeOf = (store: k.Store) => (store.backing as unknown as { native: NativeLike }).native
const cke = (key: string) => Buffer.from(k.encodeKey(key))

test('getMetaNow answers what getMetaSync answers for cached and missing keys, and refuses a file of another key', async (t) => {
  const store = k.connectFsStore(fresh(), { native: true, sync: true })
  k.assoc(store, 'a', { v: 1 }, { sync: true, meta: { owner: 'me' } })
  const n = nativeOf(store)
  t.deepEqual(n.getMetaNow(cke('a')), n.getMetaSync(cke('a')))
  // A missing key: at once once its (negative) lookup is cached, i.e. after a first lookup.
  t.is(n.getMetaSync(cke('missing')), null)
  t.is(n.getMetaNow(cke('missing')), null)
  copyFileSync(n.filePath(cke('a')), n.filePath(cke('b')))
  t.throws(() => n.getMetaNow(cke('b')), { message: /another key/ })
  await t.throwsAsync(k.getMeta(store, 'b'), { code: 'ERR_KEY_MISMATCH' })
})

test('getMetaNow leaves append logs and heads past its first read to the threadpool (false)', async (t) => {
  const store = k.connectFsStore(fresh(), { native: true, sync: true })
  k.append(store, 'log', 1, { sync: true })
  k.assoc(store, 'long', 1, { sync: true, meta: { pad: 'p'.repeat(5000) } })
  const n = nativeOf(store)
  t.is(n.getMetaNow(cke('log')), false)
  t.is(n.getMetaNow(cke('long')), false)
  // The async forms still read them right, through the threadpool.
  t.deepEqual(await k.getMeta(store, 'log'), k.getMeta(store, 'log', { sync: true }))
  t.is((await k.getMeta(store, 'long'))?.pad, 'p'.repeat(5000))
})

test('async writes count revisions on from what the shortcut read, also after another instance wrote', async (t) => {
  const dir = fresh()
  const store = await k.connectFsStore(dir, { native: true })
  for (let i = 1; i <= 5; i++) {
    await k.assoc(store, 'x', i)
    t.is((await k.getMeta(store, 'x'))?.revision, i)
  }
  // Another instance (the pure engine, same files) writes twice: the next async write counts on from 7.
  const other = k.connectFsStore(dir, { native: false, sync: true })
  k.assoc(other, 'x', 6, { sync: true })
  k.assoc(other, 'x', 7, { sync: true })
  await k.assoc(store, 'x', 8, { expectedRevision: 7 })
  t.is((await k.getMeta(store, 'x'))?.revision, 8)
  await t.throwsAsync(k.assoc(store, 'x', 9, { expectedRevision: 7 }), { code: 'ERR_REVISION_MISMATCH' })
  t.is(await k.get(store, 'x'), 8)
})

// ---- the fused replacing write (Backing.replace): one threadpool task per async assoc ----

/** Counts the calls the backing makes to its binding object, by method name. */
function countCalls(store: k.Store): Record<string, number> {
  const b = store.backing as unknown as { native: Record<string | symbol, unknown> }
  const inner = b.native
  const calls: Record<string, number> = {}
  b.native = new Proxy(inner, {
    get(target, p) {
      const v = target[p]
      if (typeof v !== 'function') return v
      return (...args: unknown[]) => {
        calls[String(p)] = (calls[String(p)] ?? 0) + 1
        return (v as (...a: unknown[]) => unknown).apply(target, args)
      }
    },
  })
  return calls
}
const tasks = (calls: Record<string, number>) => Object.entries(calls).reduce((n, [m, c]) => (m.endsWith('Async') ? n + c : n), 0)
const onThisThread = (calls: Record<string, number>) => (calls.tryLock ?? 0) + (calls.lockSync ?? 0) + (calls.unlock ?? 0)

test('500 async assocs of new keys are 500 threadpool tasks, with no lock file taken on the JavaScript thread', async (t) => {
  const store = await k.connectFsStore(fresh(), { native: true, durable: false })
  const calls = countCalls(store)
  for (let i = 0; i < 500; i++) await k.assoc(store, `new-${i}`, { i })
  t.is(tasks(calls), 500, JSON.stringify(calls))
  t.is(calls.replaceAsync, 500)
  t.is(onThisThread(calls), 0, 'the lock files were taken and released in the tasks')
  // Replacing them costs the same, and each counts its revision on.
  for (let i = 0; i < 500; i++) await k.assoc(store, `new-${i}`, { i: i + 1 })
  t.is(tasks(calls), 1000)
  t.is((await k.getMeta(store, 'new-7'))?.revision, 2)
  t.deepEqual(await k.get(store, 'new-7'), { i: 8 })
})

test('a durable store: a lone async assoc is fused; concurrent ones still share group commits', async (t) => {
  const store = await k.connectFsStore(fresh(), { native: true })
  const calls = countCalls(store)
  for (let i = 0; i < 5; i++) await k.assoc(store, `lone-${i}`, i)
  t.is(calls.replaceAsync, 5)
  t.is(tasks(calls), 5)
  await Promise.all(Array.from({ length: 64 }, (_, i) => k.assoc(store, `many-${i}`, i)))
  // A fused write in flight sends the others to the group commit: batches, far fewer than the writes.
  t.true((calls.putAsync ?? 0) >= 1 && (calls.putAsync ?? 0) < 32, JSON.stringify(calls))
  for (let i = 0; i < 64; i++) t.is(await k.get(store, `many-${i}`), i)
})

for (const sync of [false, true]) {
  test(`fused assoc (${sync ? 'sync' : 'async'}): expectedRevision on new and existing keys, hooks, and the pure engine reads the same revisions`, async (t) => {
    const dir = fresh()
    const store = k.connectFsStore(dir, { native: true, durable: false, sync: true })
    const calls = countCalls(store)
    const seen: unknown[] = []
    k.addWriteHook(store, 'seen', (e) => seen.push(e.op === 'multiAssoc' ? [] : [e.key, e.meta?.revision]))
    const assoc = (key: string, v: unknown, o: k.WriteOptions = {}) => (sync ? k.assoc(store, key, v, { ...o, sync: true }) : k.assoc(store, key, v, o))
    await assoc('x', 1, { expectedRevision: 0, meta: { owner: 'me' } })
    const e1 = await t.throwsAsync(async () => assoc('x', 2, { expectedRevision: 0 }), { code: 'ERR_REVISION_MISMATCH', message: /must not exist yet, but it is at revision 1/ })
    t.is((e1 as k.KonserveError).actualRevision, 1)
    await t.throwsAsync(async () => assoc('x', 2, { expectedRevision: 5 }), { code: 'ERR_REVISION_MISMATCH', message: /expected revision 5, but the key is at revision 1/ })
    await assoc('x', 2, { expectedRevision: 1 })
    await t.throwsAsync(async () => assoc('fresh', 1, { expectedRevision: 3 }), { code: 'ERR_REVISION_MISMATCH' })
    t.false(k.exists(store, 'fresh', { sync: true }), 'a mismatch writes nothing')
    // A user field named revision is konserve's; big revisions take the longer encodings.
    for (let i = 0; i < 300; i++) await assoc('many', i, { meta: { revision: 'mine', n: i } })
    t.is(calls[sync ? 'replaceSync' : 'replaceAsync'], 305)
    t.deepEqual(seen.slice(0, 2), [
      ['x', 1],
      ['x', 2],
    ])
    const pure = k.connectFsStore(dir, { native: false, sync: true })
    t.deepEqual(k.get(pure, 'x', { sync: true }), 2)
    const m = k.getMeta(pure, 'x', { sync: true })!
    t.is(m.revision, 2)
    t.is(m.owner, undefined, 'a replacing write keeps no old user field')
    t.is(k.getMeta(pure, 'many', { sync: true })?.revision, 300)
    t.is(k.getMeta(pure, 'many', { sync: true })?.n, 299)
    // The pure engine writes on from there, and the native store counts on from what it wrote.
    k.assoc(pure, 'x', 3, { sync: true, expectedRevision: 2 })
    await assoc('x', 4, { expectedRevision: 3 })
    t.is(k.getMeta(pure, 'x', { sync: true })?.revision, 4)
  })
}

test('a key the core cannot read the revision of (an append log) takes the general path', async (t) => {
  const store = await k.connectFsStore(fresh(), { native: true, durable: false })
  await k.append(store, 'log', 1)
  await k.append(store, 'log', 2)
  await t.throwsAsync(k.assoc(store, 'log', 'v', { expectedRevision: 1 }), { code: 'ERR_REVISION_MISMATCH', message: /at revision 2/ })
  await k.assoc(store, 'log', 'v', { expectedRevision: 2 })
  t.is(await k.get(store, 'log'), 'v')
  t.is((await k.getMeta(store, 'log'))?.revision, 3)
})

for (const holder of ['native', 'pure'] as const) {
  test(`a fused async assoc waits for a key locked by a ${holder} process, then writes on its revision`, async (t) => {
    const dir = fresh()
    const store = await k.connectFsStore(dir, { native: true, durable: false })
    await k.assoc(store, 'held', 1)
    const h = holdLock(dir, holder)
    await h.locked
    const calls = countCalls(store)
    let done = false
    const write = k.assoc(store, 'held', 2, { expectedRevision: 1 }).then((r) => {
      done = true
      return r
    })
    // The fused attempt found the lock busy and polls; one round trip to the holder later it still waits.
    await untilCalls(calls, 'tryLock', 2)
    await h.ping()
    t.false(done, 'no write while another process holds the lock')
    t.is(await k.get(store, 'held'), 1)
    await h.kill()
    await write
    t.is(calls.replaceAsync, 2, 'one busy attempt, then one write holding the lock')
    const pure = k.connectFsStore(dir, { native: false, sync: true })
    t.is(k.get(pure, 'held', { sync: true }), 2)
    t.is(k.getMeta(pure, 'held', { sync: true })?.revision, 2)
    t.deepEqual(readdirSync(dir).filter((n) => /\.(lock|lkt|brk)$/.test(n)), [], 'no lock file left')
  })
}

test('an async open is one thread hop: the writable check runs beside the open, and the canonical directory comes from the core', async (t) => {
  const real = fresh()
  const link = join(fresh(), 'link')
  symlinkSync(real, link)
  k.assoc(k.connectFsStore(real, { native: true, sync: true }), 'a', 1, { sync: true })
  const fixture = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, 'fixtures', 'open-hops.mjs')
  const { stdout } = await promisify(execFile)(process.execPath, [fixture, link])
  const { started, lockScope } = JSON.parse(stdout) as { started: Record<string, number>; lockScope: string }
  // One access(2) and the open task, started together; no realpath of the facade's own.
  t.is(started.FSREQPROMISE, 1, stdout)
  t.is(Object.values(started).reduce((a, b) => a + b, 0), 2, stdout)
  // The lock scope is the canonical directory, the one the pure engine and a sync open use.
  t.is(lockScope, `file:${realpathSync(real)}`)
  t.is(k.connectFsStore(link, { native: false, sync: true }).backing.lockScope, lockScope)
  const store = await k.connectFsStore(link, { native: true })
  t.is(store.backing.lockScope, lockScope)
  t.is(await k.get(store, 'a'), 1)
})
