/**
 * The pure engine's writes (ts/backends/pure/staging.ts, vfs.ts): a key file
 * is written with one pwritev (header + meta, then the value), its staging
 * file closed on the calling thread, and a directory fsync is one threadpool
 * task (open and close of the directory on the calling thread), so an async
 * put is open, writev, [fsync,] rename[, fsync]: the tests count the calls.
 */
import test from 'ava'
import fs, { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as k from 'konserve'

const fresh = () => mkdtempSync(join(tmpdir(), 'konserve-pure-writes-'))

/** Counts the calls of `names` on `fs` while `f` runs. */
async function counting<T>(names: string[], f: () => Promise<T> | T): Promise<{ result: T; counts: Record<string, number> }> {
  const counts: Record<string, number> = {}
  const fsAny = fs as unknown as Record<string, (...a: unknown[]) => unknown>
  const saved = names.map((n) => fsAny[n]!)
  names.forEach((n, i) => {
    fsAny[n] = (...args: unknown[]) => {
      counts[n] = (counts[n] ?? 0) + 1
      return saved[i]!(...args)
    }
  })
  try {
    return { result: await f(), counts }
  } finally {
    names.forEach((n, i) => {
      fsAny[n] = saved[i]!
    })
  }
}

// The callback forms: each one is a threadpool task.
const ASYNC = ['open', 'read', 'write', 'writev', 'fsync', 'close', 'rename', 'fstat', 'unlink', 'ftruncate']

for (const durable of [true, false]) {
  test.serial(`async put of a new key (${durable ? 'durable' : 'non-durable'}): open, writev, ${durable ? 'fsync, rename, fsync' : 'rename'} on the threadpool, nothing else`, async (t) => {
    const store = await k.connectFsStore(fresh(), { native: false, syncBlob: durable })
    await k.assoc(store, 'warm', 1) // the clock record and the key check are written once, on open or first write
    const { counts } = await counting(ASYNC, () => k.assoc(store, 'a', { x: 1, s: 'y'.repeat(100) }))
    // open: the revision read (missing) and the staging file
    t.deepEqual(counts, durable ? { open: 2, writev: 1, fsync: 2, rename: 1 } : { open: 2, writev: 1, rename: 1 })
    t.deepEqual(await k.get(store, 'a'), { x: 1, s: 'y'.repeat(100) })
  })
}

test.serial('async delete, durable: the directory fsync is one threadpool task', async (t) => {
  const store = await k.connectFsStore(fresh(), { native: false })
  await k.assoc(store, 'a', 1)
  const { counts } = await counting(ASYNC, () => k.dissoc(store, 'a'))
  t.deepEqual(counts, { unlink: 1, fsync: 1 })
  t.false(await k.exists(store, 'a'))
})

test.serial('sync put: one pwritev writes the whole key file', async (t) => {
  const store = k.connectFsStore(fresh(), { native: false, sync: true })
  k.assoc(store, 'warm', 1, { sync: true })
  const { counts } = await counting(['writeSync', 'writevSync'], () => k.assoc(store, 'a', 'v'.repeat(5000), { sync: true }))
  // writeSync: the lock file's record (FORMAT.md §6), not the key file
  t.deepEqual(counts, { writeSync: 1, writevSync: 1 })
  t.is(k.get(store, 'a', { sync: true }), 'v'.repeat(5000))
})

test.serial('a short pwritev is completed part by part: the file is whole', async (t) => {
  const store = k.connectFsStore(fresh(), { native: false, sync: true })
  k.assoc(store, 'warm', 1, { sync: true })
  const fsAny = fs as unknown as Record<string, unknown>
  const saved = fs.writevSync
  let calls = 0
  // The first pwritev writes 7 bytes only (as a full disk or a signal may make it).
  fsAny.writevSync = (fd: number, parts: Uint8Array[], pos?: number) => {
    if (calls++ === 0) return fs.writeSync(fd, parts[0]!, 0, 7, pos)
    return saved(fd, parts, pos)
  }
  try {
    k.assoc(store, 'a', { long: 'z'.repeat(3000) }, { sync: true })
  } finally {
    fsAny.writevSync = saved
  }
  t.is(calls, 1)
  t.deepEqual(k.get(store, 'a', { sync: true }), { long: 'z'.repeat(3000) })
})
