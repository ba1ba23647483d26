/**
 * The read cache's miss of a `get` reads the value alone (the underlying
 * store's getValue, its hot path) and keeps it without metadata. These tests
 * pin what that must not change: a read that needs the metadata (getMeta)
 * reads the whole entry and keeps it, so it never answers metadata of one
 * version with the value of another; a log is answered, not kept; missing
 * keys are remembered; and the counters say what was a hit.
 */
import test from 'ava'
import * as k from 'konserve'
import { api, tempDir } from './helpers/api.js'

const kinds = {
  'native file': () => k.connectFsStore(tempDir(), { native: true, sync: true }),
  'pure file': () => k.connectFsStore(tempDir(), { native: false, sync: true }),
  memory: () => k.newMemStore({ sync: true }),
}

for (const mode of ['sync', 'async'] as const) {
  const a = api(mode)
  for (const [kind, open] of Object.entries(kinds)) {
    test(`${mode}, ${kind}: getMeta of a key a get cached reads and keeps the whole entry`, async (t) => {
      const base = open()
      const cached = k.withCache(base, { maxEntries: 100 })
      await a.assoc(base, 'doc', { v: 1 })
      t.deepEqual(await a.get(cached, 'doc'), { v: 1 })
      t.like(k.cacheStats(cached), { entries: 1, hits: 0, misses: 1 })

      // Written behind the cache's back: the value kept is still answered...
      await a.assoc(base, 'doc', { v: 2 })
      t.deepEqual(await a.get(cached, 'doc'), { v: 1 })
      t.like(k.cacheStats(cached), { hits: 1, misses: 1 })

      // ...but the metadata was never kept: getMeta reads the whole entry (revision 2)
      // and keeps it, so the value answered from then on is the one of that revision.
      const meta = await a.getMeta(cached, 'doc')
      t.is(meta?.revision, 2)
      t.like(k.cacheStats(cached), { hits: 1, misses: 2 })
      t.deepEqual(await a.get(cached, 'doc'), { v: 2 })
      t.deepEqual(await a.getMeta(cached, 'doc'), meta)
      t.like(k.cacheStats(cached), { entries: 1, hits: 3, misses: 2 })
    })

    test(`${mode}, ${kind}: a get miss remembers a missing key, answers a log without keeping it, and a write replaces what it kept`, async (t) => {
      const base = open()
      const cached = k.withCache(base, { maxEntries: 100 })
      t.is(await a.get(cached, 'nothing'), undefined)
      await a.assoc(base, 'nothing', 'written behind the cache')
      t.is(await a.get(cached, 'nothing'), undefined, 'the missing key was remembered')
      t.false(await a.exists(cached, 'nothing'))

      await a.append(base, 'log', 'first')
      const viaBase = await a.get(base, 'log')
      t.deepEqual(await a.get(cached, 'log'), viaBase)
      await a.append(base, 'log', 'second')
      t.deepEqual(await a.get(cached, 'log'), await a.get(base, 'log'), 'a log is read each time')

      await a.assoc(base, 'doc', 'old')
      t.is(await a.get(cached, 'doc'), 'old')
      await a.assoc(cached, 'doc', 'new')
      t.is(await a.get(cached, 'doc'), 'new')
      t.is((await a.getMeta(cached, 'doc'))?.revision, 2)
    })
  }
}
