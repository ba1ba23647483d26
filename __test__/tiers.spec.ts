/**
 * Tiered policies (konserve.tiered): what the front and the back hold after
 * each write under write-through, write-behind, write-around and
 * frontend-only; the frontend-only read policy; syncTiers and
 * connectTieredStore's syncOnConnect; a read-through fires the front's hooks;
 * option checks. On native, pure, memory and cached back stores, sync and async.
 */
import { mkdtempSync, readdirSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import gensync from 'gensync'
import * as k from 'konserve'
import type { Store, WriteEvent } from 'konserve'
import { type Mode, api } from './helpers/api.js'

const modes: Mode[] = ['sync', 'async']
type Kind = 'native' | 'pure' | 'memory' | 'cached'
const kinds: Kind[] = ['native', 'pure', 'memory', 'cached']

async function open(kind: Kind, mode: Mode): Promise<Store> {
  const sync = mode === 'sync'
  const dir = () => join(mkdtempSync(join(tmpdir(), 'konserve-tiers-')), 'store')
  switch (kind) {
    case 'memory':
      return sync ? k.newMemStore({ sync: true }) : k.newMemStore()
    case 'cached':
      return k.withCache(sync ? k.newMemStore({ sync: true }) : await k.newMemStore())
    case 'native':
    case 'pure': {
      const native = kind === 'native'
      return sync ? k.connectFsStore(dir(), { native, sync: true }) : k.connectFsStore(dir(), { native })
    }
  }
}

const keysOf = async (a: ReturnType<typeof api>, s: Store) => ((await a.keys(s)) as Array<{ key: unknown }>).map((m) => m.key).sort()

for (const mode of modes) {
  for (const kind of kinds) {
    const title = (s: string) => `tiers ${kind} ${mode}: ${s}`
    const a = api(mode)
    const mem = () => open('memory', mode)

    test(title('write-through: back, then front; deletes both'), async (t) => {
      const [front, back] = [await mem(), await open(kind, mode)]
      const tier = k.tieredStore(front, back, { writePolicy: 'write-through' })
      await a.assoc(tier, 'x', 1)
      t.is(await a.get(back, 'x'), 1)
      t.is(await a.get(front, 'x'), 1)
      t.true(await a.dissoc(tier, 'x'))
      t.false(await a.exists(back, 'x'))
      t.false(await a.exists(front, 'x'))
    })

    test(title('write-around: the back only, the front forgets the key; the next read fills it'), async (t) => {
      const [front, back] = [await mem(), await open(kind, mode)]
      const tier = k.tieredStore(front, back, { writePolicy: 'write-around' })
      await a.assoc(front, 'x', 'stale')
      await a.assoc(tier, 'x', 1)
      t.is(await a.get(back, 'x'), 1)
      t.false(await a.exists(front, 'x'))
      t.is(await a.get(tier, 'x'), 1)
      t.is(await a.get(front, 'x'), 1, 'filled by the read')
      t.deepEqual(await a.updateIn(tier, ['x'], (n: number) => n + 1), [1, 2])
      t.is(await a.get(back, 'x'), 2)
      t.false(await a.exists(front, 'x'))
      await a.multiAssoc(tier, { p: 1, q: 2 })
      t.deepEqual(await a.multiGet(back, ['p', 'q']), new Map([['p', 1], ['q', 2]]))
      t.deepEqual(await a.multiGet(front, ['p', 'q']), new Map())
      t.true(await a.dissoc(tier, 'x'))
      t.false(await a.exists(back, 'x'))
      t.false(await a.exists(front, 'x'))
    })

    test(title('frontend-only writes: the front only, the back is never written; reads fall through; keys list the front'), async (t) => {
      const [front, back] = [await mem(), await open(kind, mode)]
      await a.assoc(back, 'shared', 'from-back')
      const files = () =>
        back.path
          ? readdirSync(back.path)
              .sort()
              .map((f) => [f, statSync(join(back.path!, f)).mtimeMs, statSync(join(back.path!, f)).size])
          : []
      const before = files()
      const tier = k.tieredStore(front, back, { writePolicy: 'frontend-only' })
      await a.assoc(tier, 'x', 1)
      await a.multiAssoc(tier, { p: 1 })
      await a.append(tier, 'log', 'e1')
      await a.bassoc(tier, 'bin', new Uint8Array([1, 2]))
      t.deepEqual(await keysOf(a, back), ['shared'], 'the back is untouched')
      t.deepEqual(files(), before, 'no file of the back directory was made or changed (no lock, no clock watermark)')
      t.deepEqual(await keysOf(a, front), ['bin', 'log', 'p', 'x'])
      t.deepEqual(await a.log(tier, 'log'), ['e1'])
      t.deepEqual([...((await a.readBlob(tier, 'bin')) as Uint8Array)], [1, 2])
      t.is(await a.get(tier, 'shared'), 'from-back', 'a read falls through to the back')
      t.deepEqual(await keysOf(a, tier), ['bin', 'log', 'p', 'shared', 'x'], 'the read filled the front')
      // A delete removes the front's copy only (as konserve): the back's value reads through again.
      t.true(await a.dissoc(tier, 'shared'))
      t.is(await a.get(back, 'shared'), 'from-back')
      t.is(await a.get(tier, 'shared'), 'from-back')
    })

    test(title('frontend-only reads: a front miss is a miss; keys list the front'), async (t) => {
      const [front, back] = [await mem(), await open(kind, mode)]
      await a.assoc(back, 'b', 1)
      const tier = k.tieredStore(front, back, { readPolicy: 'frontend-only' })
      t.is(await a.get(tier, 'b'), undefined)
      t.false(await a.exists(tier, 'b'))
      t.is(await a.getMeta(tier, 'b'), undefined)
      await a.assoc(tier, 'x', 1)
      t.is(await a.get(back, 'x'), 1, 'write-through still writes the back')
      t.deepEqual(await keysOf(a, tier), ['x'])
      // konserve's spelling of the default read policy is accepted
      const ff = k.tieredStore(await mem(), back, { readPolicy: 'frontend-first' })
      t.is(await a.get(ff, 'b'), 1)
    })

    test(title('syncTiers and connectTieredStore({ syncOnConnect }) populate the front from the back'), async (t) => {
      const back = await open(kind, mode)
      await a.multiAssoc(back, { a: 1, b: 2, c: 3 })
      await a.append(back, 'log', 'e')
      const front = await mem()
      await a.assoc(front, 'a', 'front-a')
      const sync = mode === 'sync'
      const tier = (await (sync
        ? k.connectTieredStore(front, back, { syncOnConnect: true, sync: true })
        : k.connectTieredStore(front, back, { syncOnConnect: true }))) as Store
      t.deepEqual(await keysOf(a, front), ['a', 'b', 'c'], 'missing keys copied; logs stay in the back')
      t.is(await a.get(front, 'a'), 'front-a', 'populate-missing keeps what the front has')
      t.is(await a.get(front, 'b'), 2)
      t.deepEqual(await a.getMeta(front, 'b'), await a.getMeta(back, 'b'), 'metadata copied as it is')
      const full = await (sync ? k.syncTiers(tier, { strategy: 'full', keys: ['a'], sync: true }) : k.syncTiers(tier, { strategy: 'full', keys: ['a'] }))
      t.deepEqual(full, { syncedKeys: 1, frontKeys: 3, backKeys: 4 })
      t.is(await a.get(front, 'a'), 1)
      const front2 = await mem()
      const only = (await (sync
        ? k.connectTieredStore(front2, back, { syncOnConnect: { keys: ['c'] }, sync: true })
        : k.connectTieredStore(front2, back, { syncOnConnect: { keys: ['c'] } }))) as Store
      t.deepEqual(await keysOf(a, front2), ['c'])
      t.truthy(only)
    })

    test(title('a read-through fires the hooks of the front it fills, once'), async (t) => {
      const [front, back] = [await mem(), await open(kind, mode)]
      await a.assoc(back, 'x', { v: 1 })
      const tier = k.tieredStore(front, back)
      const onFront: WriteEvent[] = []
      const onTier: WriteEvent[] = []
      k.addWriteHook(front, 'f', (e) => void onFront.push(e))
      k.addWriteHook(tier, 't', (e) => void onTier.push(e))
      t.deepEqual(await a.get(tier, 'x'), { v: 1 })
      t.deepEqual(await a.get(tier, 'x'), { v: 1 })
      t.is(await a.get(tier, 'missing'), undefined)
      t.deepEqual(onFront, [{ op: 'assoc', key: 'x', path: ['x'], oldValue: undefined, newValue: { v: 1 }, meta: await a.getMeta(back, 'x') }])
      t.deepEqual(onTier, [], 'a read is no write of the tiered store')
    })
  }

  test(`tiers ${mode}: write-behind: the front at once, the back after flush, in write order`, async (t) => {
    const a = api(mode)
    const front = await open('memory', mode)
    const back = await open('native', mode)
    const tier = k.tieredStore(front, back, { writePolicy: 'write-behind' })
    await a.assoc(tier, 'x', 1)
    await a.assoc(tier, 'x', 2)
    await a.assoc(tier, 'y', 1)
    t.true(await a.dissoc(tier, 'y'))
    t.is(await a.get(front, 'x'), 2)
    await k.flush(tier)
    t.is(await a.get(back, 'x'), 2, 'the last write of a key wins')
    t.false(await a.exists(back, 'y'), 'the delete after the write is applied after it')
  })
}

test('tieredStore and connectTieredStore refuse unknown policies and options', async (t) => {
  const front = k.newMemStore({ sync: true })
  const back = k.newMemStore({ sync: true })
  t.throws(() => k.tieredStore(front, back, { writePolicy: 'write-sideways' as never }), { code: 'ERR_INVALID_ARGUMENT', message: /write-around/ })
  t.throws(() => k.tieredStore(front, back, { readPolicy: 'back-first' as never }), { code: 'ERR_INVALID_ARGUMENT', message: /frontend-only/ })
  t.throws(() => k.tieredStore(front, back, { syncOnConnect: true } as never), { code: 'ERR_INVALID_ARGUMENT', message: /unknown option "syncOnConnect"/ })
  t.throws(() => k.connectTieredStore(front, back, { syncOnConect: true, sync: true } as never), { code: 'ERR_INVALID_ARGUMENT', message: /did you mean "syncOnConnect"/ })
  t.throws(() => k.connectTieredStore(front, back, { syncOnConnect: { strategy: 'most' } as never, sync: true }), { code: 'ERR_INVALID_ARGUMENT' })
  t.throws(() => k.syncTiers(front, { sync: true }), { code: 'ERR_INVALID_ARGUMENT', message: /not a tiered store/ })
  await t.throwsAsync(k.syncTiers(front) as Promise<unknown>, { code: 'ERR_INVALID_ARGUMENT' })
})

test('frontend-only writes neither lock the back nor read its clock (a back other peers own)', async (t) => {
  const plain = k.newMemStore({ sync: true })
  const inner = (plain as unknown as { backing: k.Backing }).backing
  const touched: string[] = []
  const backing: k.Backing = Object.assign(Object.create(inner) as k.Backing, {
    lock: gensync({ sync: (keys: Uint8Array[]) => (touched.push('lock'), inner.lock.sync(keys)), async: (keys: Uint8Array[]) => (touched.push('lock'), inner.lock.async(keys)) }),
    clock: gensync({ sync: () => (touched.push('clock'), Date.now()), async: async () => (touched.push('clock'), Date.now()) }),
  })
  const back = new k.Store(backing, {})
  const tier = k.tieredStore(k.newMemStore({ sync: true }), back, { writePolicy: 'frontend-only' })
  k.assoc(tier, 'x', 1, { sync: true })
  await k.updateIn(tier, ['x'], (n: number) => n + 1)
  t.deepEqual(touched, [])
  const through = k.tieredStore(k.newMemStore({ sync: true }), back)
  k.assoc(through, 'x', 1, { sync: true })
  t.deepEqual(touched, ['lock', 'clock'], 'write-through locks the back and uses its clock')
})
