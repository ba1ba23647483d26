/**
 * The facade's hot paths written as plain code beside the general (gensync)
 * machinery: the blocking assoc (api.ts assocSync: the fused write, or the
 * locked general write), the blocking exists, getMeta and dissoc, and short
 * ASCII string keys' encoding (format/key.ts encodeStringKey). Each must do exactly what the general path does: same
 * metadata, same revisions, same errors naming the key, same hooks, same
 * locks, same key bytes. The async assoc still takes the general path on
 * a store without a fused write (memory, pure without a log), so comparing
 * the two forms store by store pins the blocking one down.
 */
import { readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import test from 'ava'
import * as k from 'konserve'
import { encodeKey, wtf8Encode } from '../ts/format/key.js'
import { tempDir } from './helpers/api.js'

interface Kind {
  name: string
  open(sync: boolean): Promise<k.Store>
}

const fileKind = (name: string, o: k.FsStoreOptions): Kind => ({
  name,
  async open(sync) {
    const dir = join(tempDir(), 'store')
    return sync ? k.connectFsStore(dir, { ...o, sync: true }) : k.connectFsStore(dir, o)
  },
})

const kinds: Kind[] = [
  { name: 'memory', open: async (sync) => (sync ? k.newMemStore({ sync: true }) : k.newMemStore()) },
  fileKind('native file', { native: true }),
  fileKind('native file + WAL', { native: true, wal: true }),
  fileKind('pure file', { native: false }),
  fileKind('pure file + WAL', { native: false, wal: true }),
  {
    name: 'cached native file',
    open: async (sync) => k.withCache(await fileKind('', { native: true }).open(sync), { maxEntries: 8, maxBytes: 1 << 20 }),
  },
]

/** What a store's key looks like after `steps`, minus the clock: metadata, revisions, errors, hook events. */
async function trace(store: k.Store, sync: boolean): Promise<unknown[]> {
  const o = (x: object = {}) => (sync ? { ...x, sync: true } : x)
  const out: unknown[] = []
  const noClock = (m: k.Metadata | undefined) => m && { ...m, lastWrite: m.lastWrite instanceof Date }
  k.addWriteHook(store, 'trace', (e) => {
    out.push({ hook: { ...e, meta: noClock(e.meta as k.Metadata | undefined) } })
  })
  const step = async (f: () => unknown) => {
    try {
      out.push({ result: await f() })
    } catch (err) {
      const e = err as k.KonserveError
      out.push({ error: { name: e.name, code: e.code, message: e.message, key: e.key, actualRevision: e.actualRevision } })
    }
  }
  const v = { a: 1, when: new Date(5), list: [1, 'two', null] }
  await step(() => k.assoc(store, 'k', v, o()))
  await step(() => k.assoc(store, 'k', { b: 2 }, o({ meta: { note: 'user', type: 'not konserve' } })))
  await step(() => k.assoc(store, 'k', 3, o({ expectedRevision: 2 })))
  await step(() => k.assoc(store, 'k', 4, o({ expectedRevision: 2 })))
  await step(() => k.assoc(store, 'k', 5, o({ expectedRevision: 0 })))
  await step(() => k.assoc(store, 'new', 6, o({ expectedRevision: 1 })))
  await step(() => k.assoc(store, 'new', 7, o({ expectedRevision: 0 })))
  await step(() => k.assoc(store, ['a', 'compound', 1], 'x', o()))
  await step(() => k.assoc(store, 'bad', () => 1, o()))
  await step(() => k.assoc(store, 'bad', undefined, o({ expectedRevision: -1 })))
  await step(() => k.assoc(store, undefined as never, 1, o()))
  // The other single-key operations with blocking forms of their own: exists, getMeta, dissoc.
  await step(() => k.assoc(store, 'gone', 'soon', o()))
  await step(async () => [await k.exists(store, 'gone', o()), await k.exists(store, 'never', o())])
  await step(async () => [noClock(await k.getMeta(store, 'gone', o())), await k.getMeta(store, 'never', o())])
  await step(() => k.dissoc(store, 'gone', o({ expectedRevision: 2 })))
  await step(() => k.dissoc(store, 'gone', o({ expectedRevision: 1 })))
  await step(() => k.dissoc(store, 'gone', o()))
  await step(() => k.dissoc(store, 'never', o({ expectedRevision: 0 })))
  await step(async () => [await k.exists(store, 'gone', o()), await k.getMeta(store, 'gone', o())])
  await step(() => k.exists(store, undefined as never, o()))
  await step(() => k.getMeta(store, undefined as never, o()))
  await step(() => k.dissoc(store, undefined as never, o()))
  for (const key of ['k', 'new', 'bad', ['a', 'compound', 1]]) {
    out.push({ key, meta: noClock(await k.getMeta(store, key, o())), value: await k.get(store, key, o()) })
  }
  return out
}

for (const kind of kinds) {
  test(`${kind.name}: the blocking assoc, exists, getMeta and dissoc write, fail and report exactly as the async ones`, async (t) => {
    const syncStore = await kind.open(true)
    const asyncStore = await kind.open(false)
    const got = await trace(syncStore, true)
    t.deepEqual(got, await trace(asyncStore, false))
    // The trace saw what it must: revisions counting, mismatches naming the key, hooks only for writes.
    type Entry = { result?: unknown; error?: { code: string; key: unknown; actualRevision?: number }; hook?: unknown; key?: unknown }
    const entries = got as Entry[]
    const steps = entries.filter((x) => 'result' in x || 'error' in x)
    t.is(steps.length, 22)
    t.deepEqual(steps[12], { result: [true, false] })
    t.like(steps[14], { error: { code: 'ERR_REVISION_MISMATCH', key: 'gone', actualRevision: 1 } })
    t.deepEqual([steps[15], steps[16], steps[17], steps[18]], [{ result: true }, { result: false }, { result: false }, { result: [false, undefined] }])
    for (const i of [19, 20, 21]) t.like(steps[i], { error: { code: 'ERR_INVALID_KEY' } })
    t.deepEqual(steps[2], { result: [undefined, 3] })
    t.like(steps[3], { error: { code: 'ERR_REVISION_MISMATCH', key: 'k', actualRevision: 3 } })
    t.like(steps[4], { error: { code: 'ERR_REVISION_MISMATCH', key: 'k', actualRevision: 3 } })
    t.like(steps[5], { error: { code: 'ERR_REVISION_MISMATCH', key: 'new', actualRevision: 0 } })
    t.like(steps[8], { error: { code: 'ERR_SERIALIZE', key: 'bad' } })
    t.like(steps[9], { error: { code: 'ERR_INVALID_ARGUMENT' } })
    t.like(steps[10], { error: { code: 'ERR_INVALID_KEY' } })
    t.like(entries.find((x) => x.key === 'k'), { meta: { revision: 3, type: 'value', key: 'k' }, value: 3 })
    t.like(entries.find((x) => (x.hook as k.KeyWriteEvent | undefined)?.meta?.revision === 2), { hook: { op: 'assoc', key: 'k', meta: { note: 'user', type: 'value' } } })
    t.is(entries.filter((x) => x.hook).length, 7)
  })

  test(`${kind.name}: the blocking assoc and dissoc meet this thread's locks as the general path does`, async (t) => {
    const store = await kind.open(true)
    const S = { sync: true } as const
    // An async update of the key holds its lock: a blocking write cannot wait for it.
    let inside!: () => void
    const entered = new Promise<void>((r) => {
      inside = r
    })
    let finish!: () => void
    const update = k.updateIn(store, ['held'], async () => {
      inside()
      await new Promise<void>((r) => {
        finish = r
      })
      return 'updated'
    })
    await entered
    const busy = t.throws(() => k.assoc(store, 'held', 1, S))
    t.is((busy as k.KonserveError).code, 'ERR_LOCK_BUSY')
    t.is((busy as k.KonserveError).key, 'held')
    t.like(t.throws(() => k.dissoc(store, 'held', S)), { code: 'ERR_LOCK_BUSY', key: 'held' })
    finish()
    await update
    t.is(k.get(store, 'held', S), 'updated')
    // From inside an update function: its own key would wait for itself; another key is written.
    const reentry = t.throws(() =>
      k.updateIn(store, ['outer'], () => {
        k.assoc(store, 'outer', 'inner write', S)
        return 'never'
      }, S),
    )
    t.is((reentry as k.KonserveError).code, 'ERR_LOCK_REENTRY')
    t.is(k.get(store, 'outer', S), undefined)
    k.updateIn(store, ['outer'], () => {
      k.assoc(store, 'other', 'written inside', S)
      return 'outer value'
    }, S)
    t.deepEqual([k.get(store, 'outer', S), k.get(store, 'other', S)], ['outer value', 'written inside'])
    // Every lock was released: the keys take blocking writes again.
    t.notThrows(() => k.assoc(store, 'held', 2, S))
    t.notThrows(() => k.assoc(store, 'outer', 2, S))
  })
}

test('pure file: the blocking assoc repairs an unreadable key file, unless a revision was asked for; getMeta and dissoc name it', async (t) => {
  for (const sync of [true, false]) {
    const dir = join(tempDir(), 'store')
    const store = sync ? k.connectFsStore(dir, { native: false, sync: true }) : await k.connectFsStore(dir, { native: false })
    const o = (x: object = {}) => (sync ? { ...x, sync: true } : x)
    await k.assoc(store, 'broken', 'v1', o())
    const files = readdirSync(dir).filter((f) => f.endsWith('.ksv'))
    t.is(files.length, 1)
    writeFileSync(join(dir, files[0]!), 'not a konserve file')
    const err = await t.throwsAsync(async () => k.assoc(store, 'broken', 'v2', o({ expectedRevision: 1 })))
    t.is((err as k.KonserveError).key, 'broken', `sync: ${sync}`)
    t.not((err as k.KonserveError).code, 'ERR_REVISION_MISMATCH')
    const metaErr = await t.throwsAsync(async () => k.getMeta(store, 'broken', o()))
    t.like(metaErr, { code: (err as k.KonserveError).code, key: 'broken' })
    const dissocErr = await t.throwsAsync(async () => k.dissoc(store, 'broken', o({ expectedRevision: 1 })))
    t.like(dissocErr, { code: (err as k.KonserveError).code, key: 'broken' })
    await k.assoc(store, 'broken', 'v3', o())
    t.is(await k.get(store, 'broken', o()), 'v3')
    t.is((await k.getMeta(store, 'broken', o()))?.revision, 1)
  }
})

test('encodeKey: short string keys (the ASCII loop) give the bytes of the general encoding', (t) => {
  const general = (s: string) => {
    const b = wtf8Encode(s)
    return Uint8Array.from([0x05, b.length >>> 24, (b.length >>> 16) & 0xff, (b.length >>> 8) & 0xff, b.length & 0xff, ...b])
  }
  const odd = ['\u007f', '\u0080', '\u00e9', '\u20ac', '\u{1f600}', '\ud800', '\udc00', '\u0000']
  let n = 0
  for (let len = 0; len <= 70; len++) {
    const ascii = Array.from({ length: len }, (_, i) => String.fromCharCode(32 + ((i * 7) % 95))).join('')
    t.deepEqual(encodeKey(ascii), general(ascii), `ascii of ${len}`)
    n++
    for (const c of odd) {
      for (const at of [0, Math.floor(len / 2), len]) {
        const s = ascii.slice(0, at) + c + ascii.slice(at)
        t.deepEqual(encodeKey(s), general(s), JSON.stringify(s))
        n++
      }
    }
  }
  t.true(n > 1500)
  // The key's bytes are its own: two encodings never share memory.
  const a = encodeKey('same')
  a[5] = 0
  t.is(encodeKey('same')[5], 's'.charCodeAt(0))
})
