/**
 * Metadata in hooks and batches (konserve 0.9): multiAssoc takes uniform
 * metadata (`meta`) or per-key metadata (`metaByKey`, a Map or an object);
 * a multiAssoc is ONE hook event carrying its pairs in order and the metadata
 * written for each key; write hooks get the metadata they wrote. On native,
 * pure, memory and cached stores, sync and async.
 */
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import * as k from 'konserve'
import type { Store, WriteEvent } from 'konserve'
import { type Mode, api } from './helpers/api.js'

const modes: Mode[] = ['sync', 'async']
type Kind = 'native' | 'pure' | 'memory' | 'cached'
const kinds: Kind[] = ['native', 'pure', 'memory', 'cached']

async function open(kind: Kind, mode: Mode): Promise<Store> {
  const sync = mode === 'sync'
  const dir = join(mkdtempSync(join(tmpdir(), 'konserve-hooks-meta-')), 'store')
  switch (kind) {
    case 'memory':
      return sync ? k.newMemStore({ sync: true }) : k.newMemStore()
    case 'cached':
      return k.withCache(sync ? k.newMemStore({ sync: true }) : await k.newMemStore())
    default: {
      const native = kind === 'native'
      return sync ? k.connectFsStore(dir, { native, sync: true }) : k.connectFsStore(dir, { native })
    }
  }
}

function collect(store: Store): WriteEvent[] {
  const events: WriteEvent[] = []
  k.addWriteHook(store, 'meta', (e) => void events.push(e))
  return events
}

for (const mode of modes) {
  for (const kind of kinds) {
    const title = (s: string) => `hooks-meta ${kind} ${mode}: ${s}`
    const a = api(mode)

    test(title('multiAssoc with metaByKey (a Map) gives each key its own metadata; one batch event, pairs in order'), async (t) => {
      const s = await open(kind, mode)
      const events = collect(s)
      const pairs: Array<[k.Key, unknown]> = [
        ['z', 1],
        [['nested', 1], { v: 2 }],
        ['a', 'three'],
      ]
      const metaByKey = new Map<k.Key, Record<string, unknown>>([
        ['z', { owner: 'zed' }],
        [['nested', 1], { immutable: true }],
      ])
      t.deepEqual(await a.multiAssoc(s, pairs, { metaByKey }), new Map(pairs.map(([key]) => [key, true])))
      const mz = await a.getMeta(s, 'z')
      const mn = await a.getMeta(s, ['nested', 1])
      const ma = await a.getMeta(s, 'a')
      t.is(mz.owner, 'zed')
      t.is(mz.immutable, undefined)
      t.is(mn.immutable, true)
      t.is(ma.owner, undefined, 'a key metaByKey does not name gets no user metadata')
      t.is(events.length, 1, 'one event for the batch, not one per key')
      t.deepEqual(events[0], {
        op: 'multiAssoc',
        kvs: pairs,
        meta: new Map<k.Key, unknown>([
          ['z', mz],
          [['nested', 1], mn],
          ['a', ma],
        ]),
      })
      t.deepEqual([...(events[0] as k.BatchWriteEvent).meta.keys()], pairs.map(([key]) => key), 'meta in batch order')
    })

    test(title('multiAssoc with metaByKey as an object, and with uniform meta'), async (t) => {
      const s = await open(kind, mode)
      await a.multiAssoc(s, { p: 1, q: 2 }, { metaByKey: { q: { tag: 'q' } } })
      t.is((await a.getMeta(s, 'q')).tag, 'q')
      t.is((await a.getMeta(s, 'p')).tag, undefined)
      await a.multiAssoc(s, { p: 1, q: 2 }, { meta: { tag: 'all' } })
      t.is((await a.getMeta(s, 'p')).tag, 'all')
      t.is((await a.getMeta(s, 'q')).tag, 'all')
    })

    test(title('multiAssoc refuses meta with metaByKey, a key not in the batch, and non-object metadata; nothing is written'), async (t) => {
      const s = await open(kind, mode)
      const events = collect(s)
      await t.throwsAsync(a.multiAssoc(s, { p: 1 }, { meta: {}, metaByKey: {} }), { code: 'ERR_INVALID_ARGUMENT', message: /not both/ })
      await t.throwsAsync(a.multiAssoc(s, { p: 1 }, { metaByKey: { x: { a: 1 } } }), {
        code: 'ERR_INVALID_ARGUMENT',
        message: /"x", which is not in the batch/,
      })
      await t.throwsAsync(a.multiAssoc(s, { p: 1 }, { metaByKey: { p: 3 } }), { code: 'ERR_INVALID_ARGUMENT' })
      await t.throwsAsync(a.multiAssoc(s, { p: 1 }, { metaByKey: [['p', {}]] }), { code: 'ERR_INVALID_ARGUMENT', message: /a Map or a plain object/ })
      t.false(await a.exists(s, 'p'))
      t.deepEqual(events, [])
    })

    test(title('write hooks get the metadata written, as getMeta returns it'), async (t) => {
      const s = await open(kind, mode)
      const events = collect(s)
      await a.assoc(s, 'x', 1, { meta: { who: 'ada' } })
      const m1 = await a.getMeta(s, 'x')
      await a.update(s, 'x', (n: number) => n + 1)
      const m2 = await a.getMeta(s, 'x')
      await a.assocIn(s, ['y', 'a'], 1)
      const m3 = await a.getMeta(s, 'y')
      await a.bassoc(s, 'b', new Uint8Array([7]))
      const m4 = await a.getMeta(s, 'b')
      t.deepEqual(
        events.map((e) => e.meta),
        [m1, m2, m3, m4],
      )
      t.is(m1.who, 'ada')
      t.is(m2.who, 'ada', 'an update keeps the user metadata')
      t.is(m2.revision, m1.revision + 1)
    })
  }
}

test('user metadata that msgpack cannot store unchanged is refused (ERR_SERIALIZE), as the same value is, and nothing is written', async (t) => {
  // A first version stored a "__proto__" field as "__proto_" and a lone surrogate as U+FFFD.
  for (const kind of kinds) {
    const s = await open(kind, 'async')
    for (const meta of [JSON.parse('{"__proto__":1,"y":2}'), { x: '\ud800' }]) {
      const e = await t.throwsAsync(k.assoc(s, 'm', 1, { meta }) as Promise<unknown>, { code: 'ERR_SERIALIZE' }, kind)
      t.regex(e?.message ?? '', /^metadata: /)
      const m = await t.throwsAsync(k.multiAssoc(s, [['m', 1]], { meta }) as Promise<unknown>, { code: 'ERR_SERIALIZE' }, kind)
      t.truthy(m)
    }
    t.false(await k.exists(s, 'm'), `${kind}: nothing written`)
    await k.close(s)
  }
})
