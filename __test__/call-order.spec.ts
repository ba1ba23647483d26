/**
 * Async calls of one thread keep their call order on the keys they share
 * (README: "no call made after another write of the key ... joins it, so
 * writes keep their call order"), as the blocking forms do. Cases an
 * adversarial review found out of order (2026-12-07), each checked to fail
 * before its fix:
 * - an append called after a dissoc of its log joined the group commit of
 *   an append called before the dissoc, and went first: the log ended empty;
 * - on a durable native store, an assoc the core left to the general path
 *   (a group commit busy: REPLACE_UNSURE) gave up its lock and asked again,
 *   so an update called after it went first and was overwritten;
 * - a multi-key write awaited each key's lock before asking for the next,
 *   so a later write of its second key went first.
 * Also: a multiDissoc naming a key twice answered false (or, on a logged
 * store, true with two hook events): now true, one event.
 */
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import * as k from 'konserve'
import type { Store } from 'konserve'

const dir = () => join(mkdtempSync(join(tmpdir(), 'konserve-call-order-')), 'store')
const kinds: Record<string, () => Promise<Store>> = {
  memory: async () => k.newMemStore() as Promise<Store>,
  native: async () => k.connectFsStore(dir(), { native: true }) as Promise<Store>,
  pure: async () => k.connectFsStore(dir(), { native: false }) as Promise<Store>,
  'native, wal': async () => k.connectFsStore(dir(), { native: true, wal: true }) as Promise<Store>,
  'pure, wal': async () => k.connectFsStore(dir(), { native: false, wal: true }) as Promise<Store>,
}

for (const [kind, open] of Object.entries(kinds)) {
  test(`${kind}: append, dissoc, append, called in that order without waiting: the log holds the last append`, async (t) => {
    const s = await open()
    const r = await Promise.all([k.append(s, 'L', 1), k.dissoc(s, 'L'), k.append(s, 'L', 2)])
    t.deepEqual(r, [1, true, 1])
    t.deepEqual(await k.log(s, 'L'), [2])
    await k.close(s)
  })

  test(`${kind}: multiAssoc or multiDissoc of two keys, then an assoc of the second: the assoc comes last`, async (t) => {
    const s = await open()
    await Promise.all([k.multiAssoc(s, [['a', 7], ['b', 8]]), k.assoc(s, 'b', 9)])
    t.is(await k.get(s, 'b'), 9)
    await Promise.all([k.multiDissoc(s, ['a', 'b']), k.assoc(s, 'b', 10)])
    t.is(await k.get(s, 'b'), 10)
    await k.close(s)
  })

  test(`${kind}: binary data read by get is a Buffer (README: binary comes back as Buffers in Node)`, async (t) => {
    // A first version answered the pure engine's plain Uint8Array.
    const s = await open()
    await k.bassoc(s, 'blob', new Uint8Array([1, 2, 3]))
    const v = await k.get(s, 'blob')
    t.true(Buffer.isBuffer(v), String((v as object)?.constructor?.name))
    t.deepEqual([...(v as Uint8Array)], [1, 2, 3])
    await k.close(s)
  })

  test(`${kind}: ERR_NOT_A_LOG from trimLog and from append with expectedRevision names the key and, on a file store, its file`, async (t) => {
    const s = await open()
    await k.assoc(s, 'v', 1)
    for (const call of [() => k.trimLog(s, 'v', { keepLast: 1 }), () => k.append(s, 'v', 2, { expectedRevision: 1 })]) {
      const e = await t.throwsAsync<k.KonserveError>(call() as Promise<unknown>, { code: 'ERR_NOT_A_LOG' })
      t.is(e?.key, 'v')
      if (kind !== 'memory') t.regex(e?.file ?? '', /\.ksv$/)
    }
    await k.close(s)
  })

  test(`${kind}: multiDissoc naming a key twice: it existed (both mentions say so), one hook event`, async (t) => {
    const s = await open()
    await k.assoc(s, 'b', 1)
    const events: string[] = []
    k.addWriteHook(s, 'h', (e) => events.push(`${e.op}:${String(e.key)}`))
    t.deepEqual([...((await k.multiDissoc(s, ['b', 'c', 'b'])) as Map<unknown, boolean>)], [['b', true], ['c', false]])
    t.deepEqual(events, ['multiDissoc:b'])
    t.false(await k.exists(s, 'b'))
    await k.close(s)
  })

  test(`${kind}: assocs in flight, then assoc and update of one key: the update sees the assoc`, async (t) => {
    const s = await open()
    for (let round = 0; round < 20; round++) {
      const r = await Promise.all([k.assoc(s, 'other', round), k.assoc(s, 'n', 10), k.update(s, 'n', (x: number) => x + 1)])
      t.deepEqual(r[2], [10, 11], `round ${round}`)
      t.is(await k.get(s, 'n'), 11)
    }
    await k.close(s)
  })
}

for (const [kind, open] of Object.entries(kinds)) {
  test(`${kind}: a binary key comes back from keys() as a plain Uint8Array of its own`, async (t) => {
    const s = await open()
    const key = [Uint8Array.of(1, 2, 3), 'x']
    await k.assoc(s, key, 'v')
    await k.assoc(s, Uint8Array.of(9), 'w')
    const listed = (await k.keys(s)).map((m) => m.key)
    const flat = listed.flatMap((x) => (Array.isArray(x) ? x : [x])).filter((x): x is Uint8Array => x instanceof Uint8Array)
    t.is(flat.length, 2)
    for (const b of flat) {
      t.is(b.constructor.name, 'Uint8Array', 'not a Buffer (a Buffer from some engines, a Uint8Array from others)')
      t.is(b.byteOffset, 0)
      t.is(b.buffer.byteLength, b.length, 'its own memory, not a view of a listing')
    }
    for (const x of listed) t.is(await k.get(s, x), x instanceof Uint8Array ? 'w' : 'v')
    await k.close(s)
  })
}

for (const [kind, open] of Object.entries(kinds)) {
  test(`${kind}: a log trimmed to no records reads as an empty list, sync and async`, async (t) => {
    const s = await open()
    await k.append(s, 'E', 'x')
    await k.trimLog(s, 'E', { keepLast: 0 })
    // Twice: the second get may be answered from a cache.
    for (let i = 0; i < 2; i++) {
      t.deepEqual(await k.get(s, 'E'), [])
      t.deepEqual(k.get(s, 'E', { sync: true }), [])
    }
    t.deepEqual(await k.log(s, 'E'), [])
    await k.close(s)
  })
}
