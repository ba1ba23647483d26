/**
 * The API boundary, complementing arguments.spec.ts, close.spec.ts,
 * path-steps.spec.ts and dual-package.spec.ts:
 * - every operation on a closed (or deleted) store fails in both forms, cache
 *   hits of a cached store over it included;
 * - async close writes the queued group commits (puts) first; a sync close of a
 *   write-behind store with queued writes is refused and the store stays open;
 * - `await using` / `using` close at the end of the block;
 * - flush and cacheStats check their store too;
 * - a 'constructor' step into an existing object is its own field, not
 *   Object (setPath reads own properties only).
 */
import test, { type ExecutionContext } from 'ava'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import * as k from 'konserve'
import { tempDir } from './helpers/api.js'


/** Each exported operation called with good arguments except `store` and `opts`. */
const ops: Record<string, (s: any, o?: any) => any> = {
  get: (s, o) => k.get(s, 'key', o),
  getIn: (s, o) => k.getIn(s, ['key', 'a'], undefined, o),
  getMeta: (s, o) => k.getMeta(s, 'key', o),
  exists: (s, o) => k.exists(s, 'key', o),
  keys: (s, o) => k.keys(s, o),
  assoc: (s, o) => k.assoc(s, 'key', 2, o),
  assocIn: (s, o) => k.assocIn(s, ['key', 'a'], 2, o),
  update: (s, o) => k.update(s, 'key', () => 2, o),
  updateIn: (s, o) => k.updateIn(s, ['key', 'a'], () => 2, o),
  dissoc: (s, o) => k.dissoc(s, 'key', o),
  bassoc: (s, o) => k.bassoc(s, 'blob', new Uint8Array([1]), o),
  bget: (s, o) => k.bget(s, 'blob', () => 1, o),
  readBlob: (s, o) => k.readBlob(s, 'blob', o),
  blobFile: (s, o) => k.blobFile(s, 'blob', o),
  append: (s, o) => k.append(s, 'log', 1, o),
  log: (s, o) => k.log(s, 'log', o),
  reduceLog: (s, o) => k.reduceLog(s, 'log', (a: number) => a + 1, 0, o),
  trimLog: (s, o) => k.trimLog(s, 'log', o === undefined ? { keepLast: 1 } : { keepLast: 1, ...o }),
  multiGet: (s, o) => k.multiGet(s, ['key'], o),
  multiAssoc: (s, o) => k.multiAssoc(s, { key: 2 }, o),
  multiDissoc: (s, o) => k.multiDissoc(s, ['key'], o),
  close: (s, o) => k.close(s, o),
}

/** Calls `call`; asserts ERR_INVALID_ARGUMENT matching `message`, thrown (sync) or rejected (async). */
async function refused(t: ExecutionContext, label: string, sync: boolean, call: () => unknown, message: RegExp, code: k.ErrorCode = 'ERR_INVALID_ARGUMENT') {
  let result: unknown
  try {
    result = call()
  } catch (err) {
    t.true(sync, `${label}: the async form threw instead of rejecting: ${(err as Error).message}`)
    t.true(err instanceof k.KonserveError, `${label}: ${err}`)
    t.is((err as k.KonserveError).code, code, `${label}: ${(err as Error).message}`)
    t.regex((err as Error).message, message, label)
    return
  }
  t.false(sync, `${label}: the sync form did not throw`)
  t.true(result instanceof Promise, `${label}: returned ${String(result)}`)
  const err = await (result as Promise<unknown>).then(
    () => undefined,
    (e: unknown) => e,
  )
  t.true(err instanceof k.KonserveError, `${label}: resolved or rejected with ${err}`)
  t.is((err as k.KonserveError).code, code, `${label}: ${(err as Error).message}`)
  t.regex((err as Error).message, message, label)
}

const fileVariants = [
  { name: 'native', options: { native: true } },
  { name: 'pure', options: { native: false } },
] as const

/** Every operation on a closed store fails with `code`, in both forms; logStream's first step too. */
async function allRefused(t: ExecutionContext, s: k.Store, code: k.ErrorCode, label: string) {
  for (const [name, call] of Object.entries(ops)) {
    if (name === 'close') continue
    await refused(t, `${label}: ${name}`, false, () => call(s), new RegExp(`^${name}: `), code)
    await refused(t, `${label}: ${name} sync`, true, () => call(s, { sync: true }), new RegExp(`^${name}: `), code)
  }
  await refused(t, `${label}: logStream`, false, () => k.logStream(s, 'log').next(), /^logStream: /, code)
  await refused(t, `${label}: implementation`, true, () => k.implementation(s), /^implementation: /, code)
}

for (const v of fileVariants) {
  test(`${v.name}: close writes the queued group commits first, then every call fails with ERR_CLOSED`, async (t) => {
    const dir = join(tempDir(), 'store')
    const s = await k.connectFsStore(dir, v.options)
    const settled: boolean[] = []
    const writes = Array.from({ length: 40 }, (_, i) => k.assoc(s, `k${i}`, i).then(() => (settled[i] = true)))
    await k.close(s)
    t.is(settled.filter(Boolean).length, 40, 'every put handed to the store was written before close resolved')
    await Promise.all(writes)
    await allRefused(t, s, 'ERR_CLOSED', v.name)
    const again = await k.connectFsStore(dir, v.options)
    t.is((await k.keys(again)).length, 40)
    k.close(again, { sync: true })
  })

  test(`${v.name}: deleteStore (both forms) ends the stores open on the directory, a cache over them included; nothing is recreated`, async (t) => {
    const dir = join(tempDir(), 'store')
    const s = await k.connectFsStore(dir, v.options)
    const sync = k.connectFsStore(dir, { ...v.options, sync: true })
    const cached = k.withCache(s)
    await k.assoc(s, 'key', 1)
    t.is(await k.get(cached, 'key'), 1) // now in the cache
    await k.deleteStore(dir, v.options)
    t.false(existsSync(dir))
    await allRefused(t, s, 'ERR_STORE_DELETED', `${v.name} async-opened`)
    await refused(t, 'the sync-opened store', true, () => k.get(sync, 'key', { sync: true }), /directory was deleted/, 'ERR_STORE_DELETED')
    await refused(t, 'a cache hit over it', false, () => k.get(cached, 'key'), /directory was deleted/, 'ERR_STORE_DELETED')
    t.false(existsSync(dir), 'no call recreated the directory')
    const s2 = k.connectFsStore(dir, { ...v.options, sync: true })
    k.deleteStore(dir, { ...v.options, sync: true })
    await refused(t, 'after a sync deleteStore', true, () => k.assoc(s2, 'key', 2, { sync: true }), /directory was deleted/, 'ERR_STORE_DELETED')
    t.false(existsSync(dir))
  })
}

test('await using and using close the store at the end of the block', async (t) => {
  const dir = join(tempDir(), 'store')
  let kept: k.Store | undefined
  {
    // @ts-expect-error Store's type declares no [Symbol.asyncDispose] (ts/store.ts adds it at run time), so a user's `await using` fails tsc too
    await using db = await k.connectFsStore(dir)
    await k.assoc(db, 'key', 1)
    kept = db
  }
  await refused(t, 'after await using', false, () => k.get(kept!, 'key'), /the store is closed/, 'ERR_CLOSED')
  {
    // @ts-expect-error Store's type declares no [Symbol.dispose] (see above)
    using db = k.connectFsStore(dir, { sync: true })
    t.is(k.get(db, 'key', { sync: true }), 1)
    kept = db
  }
  await refused(t, 'after using', true, () => k.get(kept!, 'key', { sync: true }), /the store is closed/, 'ERR_CLOSED')
})

test('write-behind: a sync close with queued writes is refused and the store stays open; the async close writes them', async (t) => {
  const back = await k.connectFsStore(join(tempDir(), 'store'))
  const tier = k.tieredStore(await k.newMemStore(), back, { writePolicy: 'write-behind' })
  // Each write returns once the front has it; its write to the back (a durable
  // file write, on the threadpool) is still queued when the last one returns.
  for (let i = 0; i < 30; i++) await k.assoc(tier, `k${i}`, i)
  await refused(t, 'sync close with queued writes', true, () => k.close(tier, { sync: true }), /write-behind writes are still queued/, 'ERR_NOT_SUPPORTED')
  t.is(await k.get(tier, 'k3'), 3)
  await k.close(tier)
  t.is((await k.keys(back)).length, 30, 'the queue went to the back before close resolved')
  await allRefused(t, tier, 'ERR_CLOSED', 'tiered')
  t.is(await k.get(back, 'k29'), 29, 'the back stays open')
  await refused(t, 'flush of a closed store', false, () => k.flush(tier), /^flush: the store is closed/, 'ERR_CLOSED')
  await refused(t, 'flush(undefined)', false, () => k.flush(undefined as any), /^flush: store must be a Store/)
  await refused(t, 'cacheStats({})', true, () => k.cacheStats({} as any), /^cacheStats: store must be a Store/)
})

for (const serializer of ['msgpack', 'json'] as const) {
  test(`${serializer}: a 'constructor' step into an existing object writes its own field (not into Object)`, async (t) => {
    const s = await k.newMemStore({ serializer })
    await k.assoc(s, 'obj', {})
    t.deepEqual((await k.assocIn(s, ['obj', 'constructor', 'x'], 1))[1], { constructor: { x: 1 } })
    const seen: unknown[] = []
    await k.updateIn(s, ['obj', 'toString', 'y'], (old) => {
      seen.push(old)
      return 2
    })
    t.deepEqual(seen, [undefined])
    t.deepEqual(await k.get(s, 'obj'), { constructor: { x: 1 }, toString: { y: 2 } })
  })
}
