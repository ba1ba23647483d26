/**
 * An async updateIn on the native engine crosses no threadpool task when it
 * can (docs/WAL.md §4.1.2): its read is answered on the JavaScript thread
 * when the key is logged or its file cached (`getNow`), and on a store on
 * its log (marker version 3) its write is queued straight for the log's
 * committer (`putQueued`), settled in a batch like a queued assoc. What
 * neither can answer (a value larger than a record, a key file the first
 * read does not hold whole) takes the threadpool as before.
 * Each test counts the binding calls, so it fails without the fast paths.
 */
import test from 'ava'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import * as k from 'konserve'
import { tempDir } from './helpers/api.js'
import { holdLock } from './helpers/lock-holder.js'

/** This process's binding calls: getNow answered / declined, putQueued accepted / declined, and the threadpool reads and puts. */
const calls = { nowHit: 0, nowMiss: 0, queued: 0, declined: 0, getAsync: 0, putAsync: 0 }
{
  const proto = createRequire(import.meta.url)('../index.js').NativeFileStore.prototype
  const wrap = (name: string, count: (r: unknown) => void) => {
    const f = proto[name]
    proto[name] = function (this: unknown, ...args: unknown[]) {
      const r = f.apply(this, args)
      count(r)
      return r
    }
  }
  wrap('getNow', (r) => (r === false ? calls.nowMiss++ : calls.nowHit++))
  wrap('putQueued', (r) => ((r as number) >= 0 ? calls.queued++ : calls.declined++))
  wrap('getAsync', () => calls.getAsync++)
  wrap('putAsync', () => calls.putAsync++)
}
const since = (before: typeof calls) => Object.fromEntries(Object.entries(calls).map(([n, v]) => [n, v - before[n as keyof typeof calls]]))

const store = (opts: k.FsStoreOptions = {}) => k.connectFsStore(join(tempDir('konserve-upd-queued-'), 'store'), { native: true, ...opts })

test.serial('16 updates in flight on 4 counters: every increment counted, no threadpool task but a first read of each new key', async (t) => {
  const s = await store({ wal: true })
  const before = { ...calls }
  let next = 0
  const worker = async () => {
    while (next < 2000) {
      const key = `c${next++ % 4}`
      await k.updateIn(s, [key], (x) => ((x as number | undefined) ?? 0) + 1)
    }
  }
  await Promise.all(Array.from({ length: 16 }, worker))
  for (let i = 0; i < 4; i++) t.is(await k.get(s, `c${i}`), 500)
  t.is((await k.getMeta(s, 'c0'))?.revision, 500)
  const d = since(before)
  t.true(d.queued! > 0 && d.nowHit! > 0, JSON.stringify(d))
  t.is(d.putAsync, 0, JSON.stringify(d))
  // Only a new key's first read may take the threadpool (a missing file's lookup may not be cached).
  t.true(d.getAsync! <= 4, JSON.stringify(d))
  await k.releaseStore(s)
  // Read back by a fresh instance: durable in the log.
  const again = await k.connectFsStore(s.path!, { native: true })
  t.is(await k.get(again, 'c3'), 500)
  await k.releaseStore(again)
})

test.serial('a value larger than a log record is declined by the queue and written through the threadpool', async (t) => {
  const s = await store({ wal: true })
  const big = 'x'.repeat(200_000)
  const before = { ...calls }
  t.deepEqual(await k.updateIn(s, ['big'], () => big), [undefined, big])
  t.deepEqual(await k.updateIn(s, ['big'], (v) => `${v as string}y`), [big, `${big}y`])
  const d = since(before)
  t.true(d.declined! >= 2, JSON.stringify(d))
  t.true(d.putAsync! >= 2, JSON.stringify(d))
  // The second read: a key file larger than the first read holds.
  t.true(d.getAsync! >= 1, JSON.stringify(d))
  t.is(await k.get(s, 'big'), `${big}y`)
  await k.releaseStore(s)
})

test.serial('on a store without a log, updates read on the JavaScript thread when cached and write through the threadpool', async (t) => {
  const s = await store()
  const before = { ...calls }
  for (let i = 0; i < 20; i++) await k.update(s, 'n', (x) => ((x as number | undefined) ?? 0) + 1)
  const d = since(before)
  t.is(await k.get(s, 'n'), 20)
  t.true(d.nowHit! >= 19, JSON.stringify(d))
  t.is(d.queued, 0)
  t.true(d.putAsync! >= 20, JSON.stringify(d))
  await k.releaseStore(s)
})

test.serial('encrypted and compressed, on its log: the read decodes on the JavaScript thread, the updates all count', async (t) => {
  const s = await store({ wal: true, compressor: { type: 'lz4' }, encryptor: { type: 'aes', key: 'k3y' } })
  const before = { ...calls }
  await Promise.all(Array.from({ length: 50 }, () => k.update(s, 'e', (x) => ((x as number | undefined) ?? 0) + 1)))
  await Promise.all(Array.from({ length: 50 }, () => k.updateIn(s, ['e'], (x) => (x as number) + 1)))
  t.is(await k.get(s, 'e'), 100)
  const d = since(before)
  t.true(d.nowHit! > 0 && d.queued! > 0, JSON.stringify(d))
  t.true(d.getAsync! <= 1, JSON.stringify(d))
  t.is(d.putAsync, 0, JSON.stringify(d))
  await k.releaseStore(s)
})

test.serial('a key locked by another process: the update waits for it, then counts', async (t) => {
  const s = await store({ wal: true })
  await k.assoc(s, 'held', 1)
  const h = holdLock(s.path!, 'native')
  await h.locked
  let done = false
  const update = k.update(s, 'held', (x) => (x as number) + 1).then((r) => {
    done = true
    return r
  })
  await h.ping()
  await new Promise((r) => setTimeout(r, 50))
  t.false(done, 'waits while the other process holds the key')
  await h.kill()
  t.deepEqual(await update, [1, 2])
  t.is(await k.get(s, 'held'), 2)
  await k.releaseStore(s)
})
