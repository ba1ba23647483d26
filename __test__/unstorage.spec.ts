/**
 * konserve/unstorage: the cases unstorage runs on each of its own drivers
 * (its test/drivers/utils.ts: state, keys and depth, serialization, raw
 * values, bulk reads and writes, falsy values, remove, clear), on a real
 * memory store, native file store and pure file store; plus what is ours
 * (metadata, raw bytes as blobs, keeping to its own keys).
 */
import { join } from 'node:path'
import test from 'ava'
import * as k from 'konserve'
import konserveDriver from 'konserve/unstorage'
import { createStorage, restoreSnapshot } from 'unstorage'
import { tempDir } from './helpers/api.js'

const kinds: Array<[string, () => Promise<k.Store>]> = [
  ['memory', () => k.newMemStore()],
  ['native file', () => k.connectFsStore(join(tempDir(), 'store'), { native: true })],
  ['pure file', () => k.connectFsStore(join(tempDir(), 'store'), { native: false })],
]

const sorted = (xs: string[]) => [...xs].sort()

for (const [name, open] of kinds) {
  const storage = async () => {
    const db = await open()
    const driver = konserveDriver({ store: db })
    return { db, driver, s: createStorage({ driver }) }
  }
  const title = (x: string) => `unstorage on ${name}: ${x}`

  test(title('a snapshot restores; an empty storage has nothing'), async (t) => {
    const { s } = await storage()
    t.is(await s.hasItem('s1:a'), false)
    t.is(await s.getItem('s2:a'), null)
    t.deepEqual(await s.getKeys(), [])
    await restoreSnapshot(s, { initial: 'works' })
    t.is(await s.getItem('initial'), 'works')
  })

  test(title('setItem, hasItem, getItem; a query string is not part of the key'), async (t) => {
    const { s } = await storage()
    await s.setItem('s1:a', 'test_data')
    await s.setItem('s2:a', 'test_data')
    await s.setItem('s3:a?q=1', 'test_data')
    t.true(await s.hasItem('s1:a'))
    t.is(await s.getItem('s1:a'), 'test_data')
    t.is(await s.getItem('s3:a?q=2'), 'test_data')
    t.deepEqual(sorted(await s.getKeys()), ['s1:a', 's2:a', 's3:a'])
    t.deepEqual(await s.getKeys('s1'), ['s1:a'])
  })

  test(title('getKeys with maxDepth'), async (t) => {
    const { s } = await storage()
    for (const key of ['depth0_0', 'depth0:depth1:depth2_0', 'depth0:depth1:depth2_1', 'depth0:depth1_0', 'depth0:depth1_1']) await s.setItem(key, 'x')
    t.deepEqual(await s.getKeys(undefined, { maxDepth: 0 }), ['depth0_0'])
    t.deepEqual(sorted(await s.getKeys(undefined, { maxDepth: 1 })), ['depth0:depth1_0', 'depth0:depth1_1', 'depth0_0'])
    t.deepEqual(sorted(await s.getKeys(undefined, { maxDepth: 2 })), [
      'depth0:depth1:depth2_0',
      'depth0:depth1:depth2_1',
      'depth0:depth1_0',
      'depth0:depth1_1',
      'depth0_0',
    ])
  })

  test(title('objects, primitives and toJSON serialize; other objects are refused'), async (t) => {
    const { s } = await storage()
    await s.setItem('/data/test.json', { json: 'works' })
    t.deepEqual(await s.getItem('/data/test.json'), { json: 'works' })
    await s.setItem('/data/true.json', true)
    t.is(await s.getItem('/data/true.json'), true)
    await s.setItem('/data/s1.json', { toJSON: () => 'SERIALIZED' })
    t.is(await s.getItem('/data/s1.json'), 'SERIALIZED')
    await s.setItem('/data/s2.json', { toJSON: () => ({ serializedObj: 'works' }) })
    t.deepEqual(await s.getItem('/data/s2.json'), { serializedObj: 'works' })
    class Opaque {}
    await t.throwsAsync(s.setItem('/data/bad.json', new Opaque()), { message: /Cannot stringify value/ })
    t.is(await s.getItem('zero'), null)
    await s.setItem('zero', 0)
    t.is(await s.getItem('zero'), 0)
    await s.setItem('my-false-flag', false)
    t.is(await s.getItem('my-false-flag'), false)
  })

  test(title('raw bytes round-trip, stored as a konserve blob'), async (t) => {
    const { s, db } = await storage()
    const bytes = new Uint8Array([1, 2, 3])
    await s.setItemRaw('/data/raw.bin', bytes)
    const back = (await s.getItemRaw('/data/raw.bin')) as Uint8Array
    t.deepEqual(Buffer.from(back), Buffer.from(bytes))
    t.is((await k.getMeta(db, ['unstorage', 'data:raw.bin']))?.type, 'binary')
    // A string value read raw is the string.
    await s.setItem('plain', 'text')
    t.is(await s.getItemRaw('plain'), 'text')
  })

  test(title('setItems and getItems'), async (t) => {
    const { s } = await storage()
    await s.setItems([
      { key: 't:1', value: 'test_data_t1' },
      { key: 't:2', value: 'test_data_t2' },
    ])
    t.is(await s.getItem('t:1'), 'test_data_t1')
    t.is(await s.getItem('t:2'), 'test_data_t2')
    await s.setItem('v3:a?q=1', 'test_data_v3')
    await s.setItem('v1:a', 'test_data_v1')
    t.deepEqual(await s.getItems([{ key: 'v1:a' }, 't:2', { key: 'v3:a?q=1' }, 'v4:undefined']), [
      { key: 'v1:a', value: 'test_data_v1' },
      { key: 't:2', value: 'test_data_t2' },
      { key: 'v3:a', value: 'test_data_v3' },
      { key: 'v4:undefined', value: null },
    ])
  })

  test(title('removeItem, clear (twice, and by base), getMeta; other keys untouched'), async (t) => {
    const { s, db, driver } = await storage()
    await k.assoc(db, 'not-ours', 1)
    await s.setItem('s1:a', 'x')
    await s.setItem('s2:a', 'y')
    const meta = await s.getMeta('s1:a')
    t.true(meta.mtime instanceof Date)
    t.is(meta.revision, 1)
    await s.removeItem('s1:a')
    t.false(await s.hasItem('s1:a'))
    t.is(await s.getItem('s1:a'), null)
    await s.setItem('s3:b', 'z')
    // (unstorage's own clear(base) reaches no driver mounted at the root: the driver's, called as a mount would.)
    await driver.clear!('s2:', {})
    t.deepEqual(await s.getKeys(), ['s3:b'])
    await s.clear()
    t.deepEqual(await s.getKeys(), [])
    await s.clear()
    t.deepEqual(await s.getKeys(), [])
    t.is(await k.get(db, 'not-ours'), 1)
  })
}

test('konserveDriver without a store is a typed error', (t) => {
  t.throws(() => konserveDriver(undefined as never), { code: 'ERR_INVALID_ARGUMENT' } as never)
})
