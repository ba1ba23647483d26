/**
 * The read cache keeps small values decoded (RawValue.memo): a hit hands out a
 * copy of the plain tree instead of decoding the bytes again. What must hold:
 * every hit is a fresh value equal to what was written (mutating one never
 * shows in the next), values that are not plain data (Map, Set, typed
 * arrays, shared and cyclic references) still come back exactly as before
 * (JSON: shared sub-values as copies, as always),
 * a write replaces what is kept, and a user serializer is decoded every time.
 */
import { join } from 'node:path'
import test from 'ava'
import * as k from 'konserve'
import { api, tempDir } from './helpers/api.js'

const modes = ['sync', 'async'] as const

const samples: Array<[string, () => unknown]> = [
  ['a document', () => ({ name: 'x'.repeat(100), n: 42, tags: ['a', 'b', 'c'], nested: { a: 1, b: [1, 2, 3] } })],
  ['-0, undefined, NaN, big and small numbers', () => ({ z: -0, u: undefined, nan: Number.NaN, big: 2 ** 60, arr: [-0, undefined, null, true] })],
  ['numeric-looking keys (their order)', () => ({ 2: 'two', 1: 'one', b: 'b', a: 'a', 10: 'ten' })],
  ['Dates in a document', () => ({ createdAt: new Date(0), list: [new Date(1234567890123), { at: new Date(-5) }] })],
  ['a Date, a Map, a Set, a Uint8Array', () => ({ d: new Date(1234567890123), m: new Map<unknown, unknown>([['x', { y: 1 }]]), s: new Set([1, 'a']), u8: new Uint8Array([1, 2, 3]) })],
  ['a shared reference', () => {
    const shared = { x: 1 }
    return { a: shared, b: shared }
  }],
  ['a cycle', () => {
    const o: Record<string, unknown> = { name: 'loop' }
    o.self = o
    return o
  }],
  ['a top-level array and strings', () => ['a', 'b', [1, [2, [3]]]]],
  ['a string', () => 'just a string'],
  ['a number', () => 42],
]

for (const mode of modes) {
  const a = api(mode)
  for (const serializer of ['msgpack', 'json', 'cbor'] as const) {
    test(`${mode}, ${serializer}: every hit is a fresh value equal to the one written, whatever it holds`, async (t) => {
      const store = k.withCache(await k.connectFsStore(join(tempDir(), 's'), { serializer }), { maxEntries: 100, maxBytes: 1 << 20 })
      for (const [name, make] of samples) {
        const value = make()
        // JSON keeps only plain data: the others are refused at the write, as without a cache.
        const refused = await a.assoc(store, name, value).then(
          () => false,
          () => true,
        )
        if (refused) {
          t.is(serializer, 'json', `${name}: only json refuses values`)
          continue
        }
        const first = await a.get(store, name)
        const second = await a.get(store, name)
        const third = await a.get(store, name)
        t.deepEqual(first, value, name)
        t.deepEqual(second, value, name)
        t.deepEqual(third, value, name)
        if (typeof value === 'object' && value !== null) {
          t.not(second, first, `${name}: a hit is a value of its own`)
          t.not(third, second, name)
        }
        if (name === 'a shared reference' && serializer !== 'json') t.is((third as { a: unknown }).a, (third as { b: unknown }).b, 'the reference stays shared')
        if (name === 'a cycle') t.is((third as { self: unknown }).self, third, 'the cycle stays a cycle')
        if (name.startsWith('-0')) t.true(Object.is((third as { z: number }).z, -0))
        if (name === 'Dates in a document') {
          const d = third as { createdAt: Date; list: [Date, { at: Date }] }
          t.true(d.createdAt instanceof Date && d.list[0] instanceof Date && d.list[1].at instanceof Date)
          t.not(d.createdAt, (second as { createdAt: Date }).createdAt, 'a Date of its own per hit')
        }
        if (name.startsWith('numeric')) t.deepEqual(Object.keys(third as object), Object.keys(value as object))
      }
      t.true(k.cacheStats(store)!.hits >= 2 * 7, 'the reads were hits')
    })
  }

  test(`${mode}: mutating a value read from the cache never shows in the next read`, async (t) => {
    const store = k.withCache(await k.connectFsStore(join(tempDir(), 's')))
    await a.assoc(store, 'doc', { list: [1, 2], inner: { x: 1 }, at: new Date(7) })
    for (let i = 0; i < 3; i++) {
      const v = (await a.get(store, 'doc')) as { list: number[]; inner: { x: number; y?: number }; at: Date }
      t.deepEqual(v, { list: [1, 2], inner: { x: 1 }, at: new Date(7) }, `read ${i}`)
      v.list.push(99)
      v.inner.x = 100
      v.inner.y = 5
      v.at.setTime(99)
    }
    t.deepEqual(await a.getIn(store, ['doc', 'inner']), { x: 1 })
    t.deepEqual(await a.getIn(store, ['doc', 'at']), new Date(7))
  })

  test(`${mode}: a write replaces the kept value; an update sees what was written`, async (t) => {
    const store = k.withCache(await k.connectFsStore(join(tempDir(), 's')))
    await a.assoc(store, 'doc', { v: 1 })
    t.deepEqual(await a.get(store, 'doc'), { v: 1 })
    t.deepEqual(await a.get(store, 'doc'), { v: 1 })
    await a.assoc(store, 'doc', { v: 2, more: ['x'] })
    t.deepEqual(await a.get(store, 'doc'), { v: 2, more: ['x'] })
    await a.updateIn(store, ['doc', 'v'], (v: number) => v + 1)
    t.deepEqual(await a.get(store, 'doc'), { v: 3, more: ['x'] })
    t.deepEqual(await a.get(store, 'doc'), { v: 3, more: ['x'] })
    await a.dissoc(store, 'doc')
    t.is(await a.get(store, 'doc'), undefined)
  })
}

test('a user serializer is decoded on every read, even on a hit', async (t) => {
  let decodes = 0
  const counting: k.Serializer = {
    id: 200,
    name: 'counting-json',
    encode: (v) => new TextEncoder().encode(JSON.stringify(v)),
    decode: (b) => {
      decodes++
      return JSON.parse(new TextDecoder().decode(b))
    },
  }
  const store = k.withCache(await k.connectFsStore(join(tempDir(), 's'), { serializer: counting }))
  await k.assoc(store, 'doc', { a: 1 })
  for (let i = 0; i < 3; i++) t.deepEqual(k.get(store, 'doc', { sync: true }), { a: 1 })
  t.is(decodes, 3)
})
