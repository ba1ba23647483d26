/**
 * A backend written outside the package, from its public exports only
 * (docs/BACKENDS.md): the op constructors and `new Store(backing, options)`.
 * Here an async-only backend whose every op is `asyncOp` over a memory
 * store's ops, as a network backend would be over its client.
 */
import test from 'ava'
import * as k from 'konserve'

async function toyStore(): Promise<{ store: k.Store; calls: string[] }> {
  const inner = (await k.newMemStore()).backing
  const calls: string[] = []
  const wrap = <A extends unknown[], R>(name: string, op: k.Op<A, R>): k.Op<A, R> =>
    k.asyncOp('toy', (...args: A) => {
      calls.push(name)
      return op.async(...args)
    })
  // The ops this test does not wrap (listing, blobs, logs, unlock) come from the memory backing.
  const backing: k.Backing = Object.assign(Object.create(inner) as k.Backing, {
    implementation: 'toy',
    blocking: false,
    get: wrap('get', inner.get),
    getValue: undefined,
    getMeta: wrap('getMeta', inner.getMeta),
    exists: wrap('exists', inner.exists),
    put: wrap('put', inner.put),
    delete: wrap('delete', inner.delete),
    lock: wrap('lock', inner.lock),
  })
  return { store: new k.Store(backing, {}), calls }
}

test('a third-party async-only backend built from the public op constructors runs the API', async (t) => {
  const { store, calls } = await toyStore()
  t.is(k.implementation(store), 'toy' as never)
  t.deepEqual(await k.updateIn(store, ['visits'], (n = 0) => (n as number) + 1), [undefined, 1])
  t.deepEqual(await k.updateIn(store, ['visits'], (n = 0) => (n as number) + 1), [1, 2])
  t.is(await k.get(store, 'visits'), 2)
  t.true(await k.exists(store, 'visits'))
  t.true(calls.includes('lock') && calls.includes('put') && calls.includes('get'))
  const before = calls.length
  const err = t.throws(() => k.get(store, 'visits', { sync: true })) as k.KonserveError
  t.is(err.code, 'ERR_NOT_SUPPORTED')
  t.regex(err.message, /toy store has no blocking form/)
  t.is(calls.length, before, 'a refused blocking call touches no backing op')
})
