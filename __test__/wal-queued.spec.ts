/**
 * The queued fast path of a lock-free replace (docs/WAL.md §4.1.1), native
 * engine: an async assoc on a store on its log (marker version 3) is queued
 * from the JavaScript thread straight for the log's committer
 * (`replaceQueued`, no threadpool task), and its Promise settles in a batch
 * through the store's one threadsafe function:
 * - many in flight all resolve, with the right revisions; a mismatch and a
 *   key locked by another process reach their own callers;
 * - a store poisoned by a failed fdatasync of the log rejects every pending
 *   write with a KonserveError of the right code (child process, strace);
 * - a process with writes pending stays alive until they are durable, and
 *   one with none exits by itself (child processes);
 * - closing a store with writes pending settles them.
 * Each test also counts the binding calls: the writes took the fast path,
 * none the threadpool's `replaceAsync` (which is what fails without it).
 */
import test from 'ava'
import { execFile, spawn, spawnSync } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { promisify } from 'node:util'
import * as k from 'konserve'
import { tempDir } from './helpers/api.js'
import { holdLock } from './helpers/lock-holder.js'
import { injectFault, injectedLines } from './helpers/strace.js'

const run = promisify(execFile)
const here = import.meta.dirname ?? new URL('.', import.meta.url).pathname
const writer = join(here, 'fixtures', 'queued-writer.mjs')
const straceVersion = spawnSync('strace', ['-V']).status === 0

/** Counts this process's binding calls of both async replace paths (queued: accepted ones). */
const calls = { queued: 0, pool: 0 }
{
  const proto = createRequire(import.meta.url)('../index.js').NativeFileStore.prototype
  const queued = proto.replaceQueued
  proto.replaceQueued = function (this: unknown, ...args: unknown[]) {
    const id = queued.apply(this, args)
    if (id >= 0) calls.queued++
    return id
  }
  const pool = proto.replaceAsync
  proto.replaceAsync = function (this: unknown, ...args: unknown[]) {
    calls.pool++
    return pool.apply(this, args)
  }
}

const walStore = async () => {
  const dir = join(tempDir('konserve-queued-'), 'store')
  const store = await k.connectFsStore(dir, { native: true, wal: true })
  return { dir, store }
}
const revisionOf = async (store: k.Store, key: string) => (await k.getMeta(store, key))?.revision

test.serial('256 assocs in flight resolve with their revisions; a mismatch rejects its own caller', async (t) => {
  const { store } = await walStore()
  for (let i = 0; i < 256; i += 2) await k.assoc(store, `k${i}`, 'old')
  const before = { ...calls }
  const writes = Array.from({ length: 256 }, (_, i) =>
    // Every 8th expects a revision the key is not at.
    k.assoc(store, `k${i}`, i, i % 8 === 3 ? { expectedRevision: 5 } : undefined),
  )
  const settled = await Promise.allSettled(writes)
  for (let i = 0; i < 256; i++) {
    const r = settled[i]!
    if (i % 8 === 3) {
      t.is(r.status, 'rejected', `k${i}`)
      if (r.status === 'rejected') {
        t.true(r.reason instanceof k.KonserveError)
        t.is(r.reason.code, 'ERR_REVISION_MISMATCH')
        t.is(r.reason.actualRevision, 0)
      }
    } else {
      t.is(r.status, 'fulfilled', `k${i}`)
      t.is(await revisionOf(store, `k${i}`), i % 2 === 0 ? 2 : 1, `k${i}`)
      t.is(await k.get(store, `k${i}`), i)
    }
  }
  t.is(calls.queued - before.queued, 256, 'every write was queued')
  t.is(calls.pool - before.pool, 0, 'none took a threadpool task')
  await k.close(store)
})

test.serial('a key locked by another process: its assoc waits for the lock; the others resolve', async (t) => {
  const { dir, store } = await walStore()
  await k.assoc(store, 'held', 1)
  const h = holdLock(dir, 'native')
  await h.locked
  const before = { ...calls }
  let heldSettled = false
  const held = k.assoc(store, 'held', 2, { expectedRevision: 1 }).finally(() => {
    heldSettled = true
  })
  const others = await Promise.all(Array.from({ length: 64 }, (_, i) => k.assoc(store, `o${i}`, i)))
  t.is(others.length, 64)
  for (let i = 0; i < 5; i++) {
    await h.ping()
    t.false(heldSettled, `the locked key's write waits for the holder (ping ${i})`)
  }
  t.is(calls.queued - before.queued, 65, 'the locked key was queued too (and answered busy)')
  t.is(await k.get(store, 'held'), 1)
  await h.kill()
  await held
  t.is(await k.get(store, 'held'), 2)
  t.is(await revisionOf(store, 'held'), 2)
  await k.close(store)
})

test.serial('closing a store with queued writes pending settles them, and they are durable', async (t) => {
  const { dir, store } = await walStore()
  const before = { ...calls }
  const writes = Array.from({ length: 100 }, (_, i) => k.assoc(store, `c${i}`, i))
  await k.close(store)
  const settled = await Promise.allSettled(writes)
  t.true(
    settled.every((r) => r.status === 'fulfilled'),
    'each resolved',
  )
  t.is(calls.queued - before.queued, 100)
  const again = await k.connectFsStore(dir, { native: true })
  for (let i = 0; i < 100; i++) t.is(await k.get(again, `c${i}`), i)
  await k.close(again)
})

test('a process exits by itself once its queued writes resolved, the store left open', async (t) => {
  const dir = join(tempDir('konserve-queued-'), 'store')
  // A process kept alive by the settler would run into the timeout (killed: an error here).
  const { stdout } = await run(process.execPath, [writer, 'exit', dir], { timeout: 60_000 })
  const report = JSON.parse(stdout.trim())
  t.true(report.done)
  t.is(report.queued, 200)
  t.is(report.pool, 0)
  const store = await k.connectFsStore(dir, { native: true })
  t.deepEqual(await k.get(store, 'k199'), { i: 199 })
  await k.close(store)
})

// The process's event loop empties while the core's background thread may be
// checkpointing the log: the exit stops the checkpoint after its slice and waits
// for it, so its lock file goes with it (a kill would leave one naming a dead
// process, taken over at once, but a plain exit leaves none), and nothing is lost.
test('a process that exits by itself during an idle checkpoint leaves no lock file and loses nothing', async (t) => {
  for (let round = 0; round < 3; round++) {
    const dir = join(tempDir('konserve-queued-'), 'store')
    const { stdout } = await run(process.execPath, [writer, 'checkpoint-exit', dir], { timeout: 60_000 })
    t.true(JSON.parse(stdout.trim()).done)
    t.deepEqual(
      readdirSync(dir).filter((n) => /\.(lock|lkt|brk)$/.test(n)),
      [],
      `round ${round}: no lock file outlives its process`,
    )
    const store = await k.connectFsStore(dir, { native: true })
    for (let i = 0; i < 3000; i += 7) t.deepEqual(await k.get(store, `k${i}`), { i }, `round ${round}: k${i}`)
    t.deepEqual(await k.get(store, 'k2999'), { i: 2999 })
    await k.close(store)
  }
})

test('a pending queued write keeps its process alive until it is durable and resolved', async (t) => {
  const dir = join(tempDir('konserve-queued-'), 'store')
  const { stdout } = await run(process.execPath, [writer, 'pending', dir], { timeout: 60_000 })
  t.deepEqual(JSON.parse(stdout.trim()), { resolved: true, queued: 1, pool: 0 }, 'the Promise resolved before the process ended')
  const store = await k.connectFsStore(dir, { native: true })
  t.is(await k.get(store, 'pending'), 'durable')
  await k.close(store)
})

test('a failed fdatasync of the log rejects every pending queued write with a KonserveError', async (t) => {
  if (!straceVersion) {
    t.fail('strace is not installed (Debian: apt-get install strace; .ci/run installs it)')
    return
  }
  const tmp = tempDir('konserve-queued-')
  const dir = join(tmp, 'store')
  const child = spawn(process.execPath, [writer, 'poison', dir], { stdio: ['pipe', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.setEncoding('utf8')
  const line = () =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const onData = () => {
        const nl = out.indexOf('\n')
        if (nl < 0) return
        const l = out.slice(0, nl)
        out = out.slice(nl + 1)
        child.stdout.off('data', onData)
        child.off('close', onClose)
        resolve(JSON.parse(l))
      }
      const onClose = (code: number | null) => reject(new Error(`the child ended (${code}) before it reported`))
      child.stdout.on('data', (d: string) => {
        out += d
      })
      child.stdout.on('data', onData)
      child.once('close', onClose)
      onData()
    })
  const first = line()
  const { pid } = (await first) as { pid: number }
  const log = join(tmp, 'strace.log')
  const { strace } = await injectFault({ pid, syscalls: ['fdatasync'], inject: 'error=EIO:when=1', paths: [join(dir, '.konserve.wal')], log })
  try {
    const report = line()
    child.stdin.write('go\n')
    const { results, queued, pool } = (await report) as { results: { ok: boolean; code?: string; konserve?: boolean; message?: string }[]; queued: number; pool: number }
    t.is(results.length, 64)
    for (const r of results) {
      t.false(r.ok, 'rejected')
      t.true(r.konserve, `a KonserveError: ${r.message}`)
      t.true(r.code === 'ERR_FSYNC' || r.code === 'ERR_STORE_POISONED', `${r.code}: ${r.message}`)
    }
    // The failed fdatasync is the first frame's (ERR_FSYNC for its writes, ERR_STORE_POISONED
    // after it): the child runs no idle checkpoint, whose fdatasync could come first.
    t.log(results.map((r) => r.code).join(' '))
    t.true(injectedLines(log).length >= 1, 'the fault was injected')
    // The warm-up write went the fast path too; the 64 were queued (a later one may be refused before it is queued: poisoned).
    t.true(queued >= 2, `queued ${queued}`)
    t.is(pool + queued, 65)
  } finally {
    strace.kill('SIGKILL')
    child.kill('SIGKILL')
  }
})
