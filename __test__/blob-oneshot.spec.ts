/**
 * The fused blob open of the native store (Backing.blobReplace): an async
 * bassoc takes its key's lock file, reads the revision and creates the
 * staging file in the writer's open task, and its commit task releases the
 * lock: no lock file is touched on the JavaScript thread, where a directory
 * change (create, link, unlink) waits for the file system's journal while
 * other blobs are being fsynced. These tests pin down that it keeps every
 * guarantee of the general path: the lock across processes (native and pure
 * holders), expectedRevision, the revision hooks see, the old blob after a
 * failed write, and errors that name the key.
 */
import test from 'ava'
import { execFile } from 'node:child_process'
import { mkdtempSync, readdirSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { promisify } from 'node:util'
import * as k from 'konserve'
import { holdLock, untilCalls } from './helpers/lock-holder.js'

const root = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..')
const fresh = () => mkdtempSync(join(tmpdir(), 'konserve-blob-oneshot-'))
/** A blob as text (or its length), read blocking. */
const text = (s: k.Store, key: string) => k.bget(s, key, ({ blob }) => blob!.toString(), { sync: true })
const size = (s: k.Store, key: string) => k.bget(s, key, ({ blob }) => blob!.length, { sync: true })
const lockFiles = (dir: string) => readdirSync(dir).filter((n) => /\.(lock|lkt|brk)$/.test(n))
/** The binding module the store calls its free functions on (the blob ones). */
const binding = createRequire(import.meta.url)('../index.js') as Record<string, unknown>

/**
 * Counts the calls the store makes on the JavaScript thread that touch lock
 * files (tryLock, lockSync, unlock on its binding object), and the binding's
 * blob calls, by name. Own properties over the object's methods: the object
 * itself is still what the binding's free functions receive.
 */
function countCalls(store: k.Store): { calls: Record<string, number>; restore: () => void } {
  const native = (store.backing as unknown as { native: Record<string, unknown> }).native
  const calls: Record<string, number> = {}
  const undo: (() => void)[] = []
  const wrap = (target: Record<string, unknown>, name: string) => {
    const f = target[name] as (...a: unknown[]) => unknown
    const own = Object.hasOwn(target, name)
    target[name] = function (this: unknown, ...args: unknown[]) {
      calls[name] = (calls[name] ?? 0) + 1
      return f.apply(this, args)
    }
    undo.push(() => (own ? (target[name] = f) : delete target[name]))
  }
  for (const m of ['tryLock', 'lockSync', 'unlock', 'getMetaNow', 'getMetaAsync', 'getMetaSync']) wrap(native, m)
  for (const m of ['blobReplaceAsync', 'blobReplaceSync', 'blobWriterOpenAsync', 'blobWriterOpenSync']) wrap(binding, m)
  return {
    calls,
    restore: () => {
      for (const u of undo.reverse()) u()
    },
  }
}
const onThisThread = (calls: Record<string, number>) => (calls.tryLock ?? 0) + (calls.lockSync ?? 0) + (calls.unlock ?? 0)

/** A stream of `n` pieces of `size` bytes, each piece filled with its index. */
const pieces = (n: number, size: number) => Readable.from((function* () {
  for (let i = 0; i < n; i++) yield Buffer.alloc(size, i)
})())

test.serial('100 async bassocs (bytes and streams) take no lock file and read no revision on the JavaScript thread', async (t) => {
  const dir = fresh()
  const store = await k.connectFsStore(dir, { native: true })
  const { calls, restore } = countCalls(store)
  t.teardown(restore)
  const blob = Buffer.alloc(200_000, 7)
  // 16 in flight, as the bench's many-blobs case: new keys, then the same keys again.
  for (const round of [1, 2]) {
    await Promise.all(Array.from({ length: 50 }, (_, i) => k.bassoc(store, `b-${i}`, i % 2 ? blob : pieces(3, 70_000))))
    t.is(calls.blobReplaceAsync, 50 * round, JSON.stringify(calls))
  }
  t.is(onThisThread(calls), 0, `lock calls on the JavaScript thread: ${JSON.stringify(calls)}`)
  t.is((calls.getMetaNow ?? 0) + (calls.getMetaAsync ?? 0) + (calls.getMetaSync ?? 0), 0, 'the revision was read in the open task')
  t.is(calls.blobWriterOpenAsync ?? 0, 0)
  t.is((await k.getMeta(store, 'b-1'))?.revision, 2)
  t.is((await k.getMeta(store, 'b-2'))?.revision, 2)
  t.deepEqual(k.bget(store, 'b-1', ({ blob }) => blob, { sync: true }), blob)
  t.is(size(store, 'b-2'), 210_000)
  t.deepEqual(lockFiles(dir), [], 'every lock file was released by its commit')
})

for (const sync of [false, true]) {
  test.serial(`fused bassoc (${sync ? 'sync' : 'async'}): expectedRevision, the revision hooks see, and the pure engine reads the same`, async (t) => {
    const dir = fresh()
    const store = k.connectFsStore(dir, { native: true, sync: true })
    const { calls } = countCalls(store)
    const seen: unknown[] = []
    k.addWriteHook(store, 'seen', (e) => seen.push([e.op, e.key, (e.meta as k.Metadata | undefined)?.revision, (e.meta as k.Metadata | undefined)?.type]))
    const bassoc = (key: string, v: Uint8Array, o: k.WriteOptions = {}) => (sync ? k.bassoc(store, key, v, { ...o, sync: true }) : k.bassoc(store, key, v, o))
    await bassoc('x', Buffer.from('one'), { expectedRevision: 0, meta: { owner: 'me' } })
    const e1 = await t.throwsAsync(async () => bassoc('x', Buffer.from('two'), { expectedRevision: 0 }), {
      code: 'ERR_REVISION_MISMATCH',
      message: /must not exist yet, but it is at revision 1/,
    })
    t.is((e1 as k.KonserveError).actualRevision, 1)
    t.is((e1 as k.KonserveError & { key?: unknown }).key, 'x', 'the error names the key')
    await t.throwsAsync(async () => bassoc('x', Buffer.from('two'), { expectedRevision: 5 }), { code: 'ERR_REVISION_MISMATCH', message: /expected revision 5, but the key is at revision 1/ })
    await bassoc('x', Buffer.from('two'), { expectedRevision: 1 })
    await t.throwsAsync(async () => bassoc('fresh', Buffer.from('z'), { expectedRevision: 3 }), { code: 'ERR_REVISION_MISMATCH' })
    t.false(k.exists(store, 'fresh', { sync: true }), 'a mismatch writes nothing')
    for (let i = 0; i < 300; i++) await bassoc('many', Buffer.from([i & 255]), { meta: { revision: 'mine', n: i } })
    t.is(calls[sync ? 'blobReplaceSync' : 'blobReplaceAsync'], 305)
    t.is(onThisThread(calls), 0)
    t.deepEqual(seen.slice(0, 2), [
      ['bassoc', 'x', 1, 'binary'],
      ['bassoc', 'x', 2, 'binary'],
    ])
    t.deepEqual(seen.at(-1), ['bassoc', 'many', 300, 'binary'])
    const pure = k.connectFsStore(dir, { native: false, sync: true })
    t.is(text(pure, 'x'), 'two')
    const m = k.getMeta(pure, 'x', { sync: true })!
    t.is(m.revision, 2)
    t.is(m.owner, undefined, 'a replacing write keeps no old user field')
    t.is(k.getMeta(pure, 'many', { sync: true })?.revision, 300)
    t.is(k.getMeta(pure, 'many', { sync: true })?.n, 299)
    // The pure engine writes on from there, and the native store counts on from what it wrote.
    k.bassoc(pure, 'x', Buffer.from('three'), { sync: true, expectedRevision: 2 })
    await bassoc('x', Buffer.from('four'), { expectedRevision: 3 })
    t.is(k.getMeta(pure, 'x', { sync: true })?.revision, 4)
    t.deepEqual(lockFiles(dir), [])
  })
}

test.serial('a failed fused bassoc leaves the old blob, releases the lock, and names the key', async (t) => {
  const dir = fresh()
  const store = await k.connectFsStore(dir, { native: true })
  await k.bassoc(store, 'k', Buffer.from('old blob'))
  const failing = Readable.from((async function* () {
    yield Buffer.alloc(3 << 20, 1)
    throw new Error('the source broke')
  })())
  const err = await t.throwsAsync(k.bassoc(store, 'k', failing), { message: /the source broke/ })
  t.is((err as Error & { key?: unknown }).key, 'k')
  t.is(text(store, 'k'), 'old blob')
  t.is((await k.getMeta(store, 'k'))?.revision, 1)
  t.deepEqual(lockFiles(dir), [], 'the abort released the lock')
  t.deepEqual(readdirSync(dir).filter((n) => n.endsWith('.stage')), [], 'no staging file left')
  // Another process (the pure engine) can take the key at once and writes on from revision 1.
  const pure = k.connectFsStore(dir, { native: false, sync: true, lockTimeoutMs: 1 })
  k.bassoc(pure, 'k', Buffer.from('new'), { sync: true, expectedRevision: 1 })
  t.is(text(store, 'k'), 'new')
})

test.serial('a key the core cannot read the revision of (an append log) takes the general path', async (t) => {
  const store = await k.connectFsStore(fresh(), { native: true })
  await k.append(store, 'log', 1)
  await k.append(store, 'log', 2)
  const { calls } = countCalls(store)
  await t.throwsAsync(k.bassoc(store, 'log', Buffer.from('b'), { expectedRevision: 1 }), { code: 'ERR_REVISION_MISMATCH', message: /at revision 2/ })
  await k.bassoc(store, 'log', Buffer.from('b'), { expectedRevision: 2 })
  t.is(calls.blobReplaceAsync, 2, 'tried, and left to the general path')
  t.is(calls.blobWriterOpenAsync, 1)
  t.is(text(store, 'log'), 'b')
  t.is((await k.getMeta(store, 'log'))?.revision, 3)
})

for (const holder of ['native', 'pure'] as const) {
  test.serial(`a fused async bassoc waits for a key locked by a ${holder} process, then writes on its revision`, async (t) => {
    const dir = fresh()
    const store = await k.connectFsStore(dir, { native: true })
    await k.bassoc(store, 'held', Buffer.from('one'))
    const h = holdLock(dir, holder)
    await h.locked
    const { calls } = countCalls(store)
    let done = false
    const write = k.bassoc(store, 'held', pieces(2, 1000), { expectedRevision: 1 }).then((r) => {
      done = true
      return r
    })
    // The fused open found the lock busy and polls; one round trip to the holder later it still waits.
    await untilCalls(calls, 'tryLock', 2)
    await h.ping()
    t.false(done, 'no write while another process holds the lock')
    t.is(text(store, 'held'), 'one')
    await h.kill()
    t.true(await write)
    t.is(calls.blobReplaceAsync, 2, 'one busy attempt, then one open holding the lock')
    const pure = k.connectFsStore(dir, { native: false, sync: true })
    t.is(size(pure, 'held'), 2000)
    t.is(k.getMeta(pure, 'held', { sync: true })?.revision, 2)
    t.deepEqual(lockFiles(dir), [], 'no lock file left')
  })
}

test.serial('a blob writer holding the lock keeps other processes out until its commit', async (t) => {
  const dir = fresh()
  const store = await k.connectFsStore(dir, { native: true })
  // A stream that waits for the parent's go: the fused open holds the lock meanwhile.
  let go!: () => void
  const gate = new Promise<void>((r) => (go = r))
  let started!: () => void
  const opened = new Promise<void>((r) => (started = r))
  const src = Readable.from((async function* () {
    started()
    await gate
    yield Buffer.from('written while locked')
  })())
  const write = k.bassoc(store, 'held', src)
  await opened
  // The stream may be read ahead of the open: wait (on the loop, not on time) for the lock file.
  while (lockFiles(dir).length === 0) await new Promise((r) => setImmediate(r))
  // Another process, each engine, tries to write the key meanwhile: it times out on the lock.
  for (const native of [false, true]) {
    const script = `import * as k from 'konserve'
      const s = k.connectFsStore(process.argv[1], { native: ${native}, sync: true, lockTimeoutMs: 50 })
      try { k.bassoc(s, 'held', Buffer.from('other'), { sync: true }); console.log('written') } catch (e) { console.log(e.code) }`
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script, dir], { cwd: root })
    t.is(stdout.trim(), 'ERR_LOCK_TIMEOUT', `a ${native ? 'native' : 'pure'} process waited for the writer's lock`)
  }
  go()
  await write
  const pure = k.connectFsStore(dir, { native: false, sync: true })
  k.bassoc(pure, 'held', Buffer.from('after'), { sync: true, expectedRevision: 1 })
  t.is(text(store, 'held'), 'after')
})

test.serial('a stream piece of 128 KB or more goes to the core as it is (no copy on the JavaScript thread); smaller ones are gathered', async (t) => {
  const store = await k.connectFsStore(fresh(), { native: true })
  const written: Uint8Array[] = []
  // The writers the fused open gives: each write's bytes recorded as the binding gets them.
  const open = binding.blobReplaceAsync as (...a: unknown[]) => Promise<unknown>
  binding.blobReplaceAsync = async (...a: unknown[]) => {
    const w = (await open(...a)) as Record<string, unknown> | number
    if (typeof w === 'number') return w
    const write = w.writeAsync as (x: Uint8Array) => Promise<void>
    w.writeAsync = (x: Uint8Array) => (written.push(x), write.call(w, x))
    return w
  }
  t.teardown(() => (binding.blobReplaceAsync = open))
  const big = [Buffer.allocUnsafeSlow(256 << 10).fill(1), Buffer.allocUnsafeSlow(128 << 10).fill(2)]
  await k.bassoc(store, 'big', Readable.from(big))
  t.is(written.length, 2)
  for (const [i, w] of written.entries()) t.true(w.buffer === big[i]!.buffer && w.byteOffset === big[i]!.byteOffset, `piece ${i} written in place`)
  written.length = 0
  await k.bassoc(store, 'small', Readable.from(Array.from({ length: 40 }, (_, i) => Buffer.alloc(10_000, i))))
  t.is(written.length, 1, 'forty 10 KB pieces, one write')
  t.is(size(store, 'small'), 400_000)
  t.deepEqual(k.bget(store, 'big', ({ blob }) => blob, { sync: true }), Buffer.concat(big))
})

test.serial('a source that refills one buffer for every piece is stored right when its pieces are written as they are', async (t) => {
  const store = await k.connectFsStore(fresh(), { native: true })
  const shared = Buffer.alloc(200_000)
  // Each next() refills the same buffer: a piece written late would hold the next piece's bytes.
  const refilling = {
    [Symbol.asyncIterator]() {
      let i = 0
      return {
        next: async () => (i < 6 ? { done: false, value: shared.fill(++i) } : { done: true, value: undefined }),
      }
    },
  }
  await k.bassoc(store, 'r', refilling as AsyncIterable<Uint8Array>)
  const got = k.bget(store, 'r', ({ blob }) => blob!, { sync: true })!
  t.is(got.length, 1_200_000)
  for (let i = 0; i < 6; i++) t.true(got.subarray(i * 200_000, (i + 1) * 200_000).every((x) => x === i + 1), `piece ${i + 1}`)
})
