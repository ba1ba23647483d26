/**
 * Path steps that a stored value cannot hold (issue #23.6): a '__proto__' step
 * and an array index of 2^32 - 1 or more used to return the new value and store
 * nothing. They are ERR_INVALID_PATH in getIn, assocIn and updateIn, with
 * both serializers, in both forms, before the update function runs and with
 * nothing written. 'constructor' and 'prototype' are plain fields and round-trip.
 */
import test from 'ava'
import * as k from 'konserve'
import type { KonserveError } from 'konserve'

const serializers = ['msgpack', 'json'] as const
const forms = ['sync', 'async'] as const

async function code(f: () => unknown): Promise<string | undefined> {
  try {
    await f()
  } catch (err) {
    return (err as KonserveError).code
  }
  return undefined
}

for (const serializer of serializers) {
  for (const form of forms) {
    const o = form === 'sync' ? { sync: true as const } : {}
    test(`${serializer} (${form}): '__proto__' steps and array indexes past 2^32 - 2 are ERR_INVALID_PATH, nothing written`, async (t) => {
      const db = k.newMemStore({ serializer, sync: true })
      k.assoc(db, 'arr', [1, 2], { sync: true })
      k.assoc(db, 'obj', { a: 1 }, { sync: true })
      let called = 0
      const fn = () => {
        called++
        return 'x'
      }
      for (const path of [
        ['obj', '__proto__'],
        ['obj', '__proto__', 'polluted'],
        ['fresh', '__proto__', 'x'],
        ['obj', 'a', '__proto__'],
      ]) {
        t.is(await code(() => k.assocIn(db, path, 'x', o)), 'ERR_INVALID_PATH', `assocIn ${path}`)
        t.is(await code(() => k.updateIn(db, path, fn, o)), 'ERR_INVALID_PATH', `updateIn ${path}`)
        t.is(await code(() => k.getIn(db, path, undefined, o)), 'ERR_INVALID_PATH', `getIn ${path}`)
      }
      for (const index of [2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1]) {
        t.is(await code(() => k.assocIn(db, ['arr', index], 'x', o)), 'ERR_INVALID_PATH', `assocIn [arr, ${index}]`)
        t.is(await code(() => k.updateIn(db, ['arr', index], fn, o)), 'ERR_INVALID_PATH', `updateIn [arr, ${index}]`)
      }
      t.is(called, 0, 'the update function never ran')
      t.false(k.exists(db, 'fresh', { sync: true }))
      t.deepEqual(k.get(db, 'arr', { sync: true }), [1, 2])
      t.deepEqual(k.get(db, 'obj', { sync: true }), { a: 1 })
      t.is(({} as Record<string, unknown>).polluted, undefined)
    })

    test(`${serializer} (${form}): 'constructor' and 'prototype' steps are plain fields that round-trip`, async (t) => {
      const db = k.newMemStore({ serializer, sync: true })
      await k.assocIn(db, ['c', 'constructor'], 1, o)
      await k.assocIn(db, ['c', 'prototype', 'x'], 2, o)
      await k.updateIn(db, ['c', 'constructor'], (v: number) => v + 1, o)
      t.deepEqual(await k.get(db, 'c', o), { constructor: 2, prototype: { x: 2 } })
      t.is(await k.getIn(db, ['c', 'prototype', 'x'], undefined, o), 2)
      t.is(await code(() => k.getIn(db, ['c', 'toString'], undefined, o)), undefined)
      t.is(await k.getIn(db, ['c', 'toString'], 'nf', o), 'nf', 'inherited properties are not fields')
    })
  }
}
