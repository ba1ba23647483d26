/**
 * The JavaScript around the native store's async assoc (bench/async-floor.mjs):
 * its one threadpool task is queued within the assoc call (no Promise, no
 * microtask before it), and its result reaches the caller within four
 * microtask turns of the task settling. And the guarantees that path keeps:
 * this thread's lock and the order of writes to one key, lock re-entry,
 * hooks, revisions, errors carrying the key, close waiting for it.
 */
import test from 'ava'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as k from 'konserve'

const fresh = () => mkdtempSync(join(tmpdir(), 'konserve-async-floor-'))

interface Gate {
  /** replaceAsync calls made so far. */
  calls: number
  /** Lets the held task's Promise settle (with what the real task gave). */
  open: () => Promise<void>
}

/** Holds each replaceAsync's Promise until `open`: the real task runs, its result is handed on when the test says. */
function gateReplace(store: k.Store): Gate {
  const n = (store.backing as unknown as { native: Record<string, (...a: unknown[]) => Promise<number>> }).native
  const real = n.replaceAsync!.bind(n)
  const pending: Array<() => Promise<void>> = []
  const gate: Gate = {
    calls: 0,
    open: async () => {
      const next = pending.shift()
      if (!next) throw new Error('no task to let through')
      await next()
    },
  }
  n.replaceAsync = (w: unknown) => {
    gate.calls++
    const task = real(w)
    return new Promise<number>((resolve, reject) => {
      pending.push(() => task.then(resolve, reject))
    })
  }
  return gate
}

/** Microtask turns until `p` settles (the `then` below counts as one). */
async function turnsUntil(p: Promise<unknown>): Promise<number> {
  let settled = false
  p.then(
    () => (settled = true),
    () => (settled = true),
  )
  let turns = 0
  while (!settled && turns < 100) {
    await null
    turns++
  }
  return turns
}

test('an async assoc queues its one threadpool task within the call, and resolves within four microtask turns of it', async (t) => {
  const store = await k.connectFsStore(fresh(), { native: true, durable: false })
  const gate = gateReplace(store)
  for (let i = 0; i < 3; i++) {
    const written = k.assoc(store, `key-${i}`, { i })
    t.is(gate.calls, i + 1, 'the task is queued before assoc returns')
    await gate.open()
    t.true((await turnsUntil(written)) <= 4)
    t.deepEqual(await written, [undefined, { i }])
  }
  t.deepEqual(await k.get(store, 'key-2'), { i: 2 })
  t.is((await k.getMeta(store, 'key-2'))?.revision, 1)
})

test('async assocs of one key made together are written in call order, one revision each, hooks in order', async (t) => {
  const store = await k.connectFsStore(fresh(), { native: true, durable: false })
  const seen: Array<[unknown, number | undefined]> = []
  k.addWriteHook(store, 'seen', (e) => {
    if (e.op !== 'multiAssoc') seen.push([e.newValue, e.meta?.revision])
  })
  await Promise.all([1, 2, 3, 4].map((v) => k.assoc(store, 'k', v)))
  t.is(await k.get(store, 'k'), 4)
  t.is((await k.getMeta(store, 'k'))?.revision, 4)
  t.deepEqual(seen, [
    [1, 1],
    [2, 2],
    [3, 3],
    [4, 4],
  ])
  // expectedRevision is checked in that order too.
  const rs = await Promise.allSettled([k.assoc(store, 'k', 5, { expectedRevision: 4 }), k.assoc(store, 'k', 6, { expectedRevision: 4 })])
  t.is(rs[0].status, 'fulfilled')
  t.is(rs[1].status === 'rejected' && (rs[1].reason as k.KonserveError).code, 'ERR_REVISION_MISMATCH')
  t.is(await k.get(store, 'k'), 5)
})

test('an async assoc of the key an update function holds fails with ERR_LOCK_REENTRY, naming the key', async (t) => {
  const store = await k.connectFsStore(fresh(), { native: true, durable: false })
  await k.assoc(store, 'k', 1)
  let inner: unknown
  await k.update(store, 'k', async (v: unknown) => {
    inner = await k.assoc(store, 'k', 99).catch((e: unknown) => e)
    return (v as number) + 1
  })
  t.is((inner as k.KonserveError).code, 'ERR_LOCK_REENTRY')
  t.is((inner as k.KonserveError).key, 'k')
  t.is(await k.get(store, 'k'), 2)
})

test('async assoc errors carry the key; a value that cannot be encoded writes nothing and holds no lock', async (t) => {
  const store = await k.connectFsStore(fresh(), { native: true, durable: false })
  const e = await t.throwsAsync(k.assoc(store, 'bad', { f: () => 1 }))
  t.is((e as k.KonserveError).key, 'bad')
  t.false(await k.exists(store, 'bad'))
  await k.assoc(store, 'bad', 'fine')
  t.is(await k.get(store, 'bad'), 'fine')
  const m = await t.throwsAsync(k.assoc(store, 'bad', 'x', { expectedRevision: 7 }), { code: 'ERR_REVISION_MISMATCH' })
  t.is((m as k.KonserveError).key, 'bad')
  t.is((m as k.KonserveError).actualRevision, 1)
})

test('close waits for an async assoc whose task is still out', async (t) => {
  const store = await k.connectFsStore(fresh(), { native: true, durable: false })
  const gate = gateReplace(store)
  let written = false
  const w = k.assoc(store, 'k', 1).then(() => (written = true))
  let closed = false
  const c = k.close(store).then(() => (closed = true))
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r))
  t.false(closed, 'close waits for the write')
  await gate.open()
  await Promise.all([w, c])
  t.true(written && closed)
})
