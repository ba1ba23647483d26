/**
 * close(store) (issue #12.5): later calls fail with ERR_CLOSED (thrown in sync
 * form, rejected in async form); the async form waits for writes already
 * handed to the store (grouped appends, write-behind queues); open cursors and
 * their file descriptors are released; `Symbol.asyncDispose` closes; closing
 * again does nothing; deleteStore ends the stores open on its directory.
 */
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import * as k from 'konserve'
import type { KonserveError, Store } from 'konserve'
import { fdsIn } from './helpers/api.js'

type Kind = 'memory' | 'native' | 'pure'
const kinds: Kind[] = ['memory', 'native', 'pure']

const freshDir = () => join(mkdtempSync(join(tmpdir(), 'konserve-close-')), 'store')

function open(kind: Kind, dir = freshDir()): Store {
  if (kind === 'memory') return k.newMemStore({ sync: true })
  return k.connectFsStore(dir, { native: kind === 'native', sync: true })
}

async function codeOf(f: () => unknown): Promise<string | undefined> {
  try {
    await f()
  } catch (err) {
    return (err as KonserveError).code
  }
  return undefined
}

for (const kind of kinds) {
  for (const form of ['sync', 'async'] as const) {
    test(`${kind} (${form}): calls after close fail with ERR_CLOSED; closing again does nothing`, async (t) => {
      const db = open(kind)
      k.assoc(db, 'a', 1, { sync: true })
      if (form === 'sync') t.is(k.close(db, { sync: true }), undefined)
      else t.is(await k.close(db), undefined)
      t.throws(() => k.get(db, 'a', { sync: true }), { code: 'ERR_CLOSED' } as any)
      t.throws(() => k.assoc(db, 'b', 2, { sync: true }), { code: 'ERR_CLOSED' } as any)
      const p = k.keys(db)
      t.true(p instanceof Promise)
      t.is(await codeOf(() => p), 'ERR_CLOSED')
      t.is(await codeOf(() => k.update(db, 'a', (x: number) => x + 1)), 'ERR_CLOSED')
      t.is(
        await codeOf(async () => {
          for await (const _ of k.logStream(db, 'l')) {
            // nothing
          }
        }),
        'ERR_CLOSED',
      )
      // Again: nothing happens, both forms.
      t.is(k.close(db, { sync: true }), undefined)
      t.is(await k.close(db), undefined)
    })
  }

  test(`${kind}: Symbol.asyncDispose closes the store`, async (t) => {
    const db = open(kind)
    const asyncDispose = (Symbol as { asyncDispose?: symbol }).asyncDispose ?? Symbol.for('nodejs.asyncDispose')
    await (db as unknown as Record<symbol, () => Promise<void>>)[asyncDispose]!()
    t.is(await codeOf(() => k.get(db, 'a')), 'ERR_CLOSED')
  })
}

for (const kind of ['native', 'pure'] as const) {
  test(`${kind}: async close waits for the appends already handed to the store`, async (t) => {
    const dir = freshDir()
    const db = open(kind, dir)
    const n = 50
    const appends = Array.from({ length: n }, (_, i) => k.append(db, 'log', i))
    await k.close(db)
    t.deepEqual(
      (await Promise.all(appends)).sort((a, b) => a - b),
      Array.from({ length: n }, (_, i) => i + 1),
    )
    const again = open(kind, dir)
    t.deepEqual(
      k.log(again, 'log', { sync: true }),
      Array.from({ length: n }, (_, i) => i),
    )
    k.close(again, { sync: true })
  })

  // Serial: other tests of this file open and close descriptors too.
  test.serial(`${kind}: close releases open blob streams and log cursors (their descriptors)`, async (t) => {
    const dir = freshDir()
    const db = open(kind, dir)
    k.bassoc(db, 'blob', Buffer.alloc(3 << 20, 7), { sync: true })
    for (let i = 0; i < 3; i++) k.append(db, 'log', i, { sync: true })
    const before = fdsIn(dir)
    const streams = await Promise.all([1, 2, 3].map(() => k.readBlob(db, 'blob', { as: 'stream' })))
    const iter = k.logStream(db, 'log')[Symbol.asyncIterator]()
    t.is((await iter.next()).value, 0)
    t.true(fdsIn(dir) > before, `the streams hold descriptors: ${fdsIn(dir)} vs ${before}`)
    await k.close(db)
    t.is(fdsIn(dir), before, 'close released every descriptor')
    // A stream whose store was closed fails when read on, never hangs.
    for (const s of streams) {
      const err = await t.throwsAsync(async () => {
        for await (const _ of s!) {
          // nothing
        }
      })
      t.is((err as KonserveError).code, 'ERR_CLOSED', String(err))
    }
  })

  test(`${kind}: deleteStore ends the stores open on the directory: ERR_STORE_DELETED`, async (t) => {
    const dir = freshDir()
    const db = open(kind, dir)
    k.assoc(db, 'a', 1, { sync: true })
    await k.deleteStore(dir, { native: kind === 'native' })
    t.is(await codeOf(() => k.get(db, 'a')), 'ERR_STORE_DELETED')
    t.throws(() => k.assoc(db, 'a', 1, { sync: true }), { code: 'ERR_STORE_DELETED' } as any)
  })
}

test('write-behind: async close writes the queue to the back first', async (t) => {
  const back = k.newMemStore({ sync: true })
  const front = k.newMemStore({ sync: true })
  const tiered = k.tieredStore(front, back, { writePolicy: 'write-behind' })
  for (let i = 0; i < 20; i++) await k.assoc(tiered, `k${i}`, i)
  await k.close(tiered)
  t.is(await codeOf(() => k.get(tiered, 'k0')), 'ERR_CLOSED')
  // The back stays open (it is the caller's) and holds every write.
  t.deepEqual(
    (
      await k.multiGet(
        back,
        Array.from({ length: 20 }, (_, i) => `k${i}`),
      )
    ).size,
    20,
  )
})

test('closing a store ends the cached and tiered stores built over it', async (t) => {
  const base = k.newMemStore({ sync: true })
  const cached = k.withCache(base)
  const tiered = k.tieredStore(k.newMemStore({ sync: true }), base)
  await k.close(base)
  t.is(await codeOf(() => k.get(cached, 'a')), 'ERR_CLOSED')
  t.is(await codeOf(() => k.get(tiered, 'a')), 'ERR_CLOSED')
})
