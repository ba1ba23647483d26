/**
 * konserve/keyv: the published @keyv/test-suite (API, values, namespaces) on
 * a real memory store, a native file store and a pure file store, plus what
 * the suite does not reach: the adapter's own iterator and TTL, and that it
 * keeps to its keys.
 */
import { join } from 'node:path'
import keyvTestSuite from '@keyv/test-suite'
import test from 'ava'
import Keyv from 'keyv'
import * as k from 'konserve'
import { konserveKeyv } from 'konserve/keyv'
import { tempDir } from './helpers/api.js'
import { vitestShim } from './helpers/vitest-shim.js'

const kinds: Array<[string, () => k.Store]> = [
  ['memory', () => k.newMemStore({ sync: true })],
  ['native file', () => k.connectFsStore(join(tempDir(), 'store'), { native: true, sync: true })],
  ['pure file', () => k.connectFsStore(join(tempDir(), 'store'), { native: false, sync: true })],
]

for (const [name, open] of kinds) {
  const db = open()
  keyvTestSuite(vitestShim(`keyv suite on ${name}`) as any, Keyv as any, () => konserveKeyv(db))

  test.serial(`${name}: TTL expires entries, iterator keeps to the namespace, other keys untouched`, async (t) => {
    const s = open()
    await k.assoc(s, 'mine', 1)
    const keyv = new Keyv({ store: konserveKeyv(s), namespace: 'ns' })
    const adapter = konserveKeyv(s)
    await keyv.set('a', 'A')
    await keyv.set('short', 'S', 1)
    await new Keyv({ store: adapter, namespace: 'other' }).set('b', 'B')
    const until = Date.now() + 2
    while (Date.now() <= until) await new Promise((r) => setImmediate(r))
    t.is(await keyv.get('short'), undefined)
    t.is(await adapter.get('ns:short'), undefined)
    const seen: string[] = []
    for await (const [key] of adapter.iterator('ns')) seen.push(key)
    t.deepEqual(seen, ['ns:a'])
    await keyv.clear()
    t.is(await keyv.get('a'), undefined)
    t.is(await new Keyv({ store: adapter, namespace: 'other' }).get('b'), 'B')
    t.is(await k.get(s, 'mine'), 1)
    t.deepEqual(await k.get(s, ['keyv', 'other:b']), { v: JSON.stringify({ value: 'B' }) })
  })
}
