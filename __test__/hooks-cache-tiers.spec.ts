/**
 * Write hooks, the read cache (withCache) and the tiered store (tieredStore):
 * hook events for every write op in both forms and none for failed writes; a
 * cache that is never stale for writes through it (random sequences and random
 * async interleavings, checked against the plain store), its bounds, and failed
 * writes; the tiered store's write policies, flush, background errors, read
 * fallback, and an atomic updateIn.
 */
import { deepStrictEqual, strictEqual } from 'node:assert'
import { join } from 'node:path'
import test from 'ava'
import fc from 'fast-check'
import gensync from 'gensync'
import * as k from 'konserve'
import { KonserveError, type Backing, type BlobSink, type NewRecord, type RawWrite, type Store, type WriteEvent } from 'konserve'
import { type Api, type Mode, api, tempDir } from './helpers/api.js'

const modes: Mode[] = ['sync', 'async']

// ---- helpers --------------------------------------------------------------------

const backingOf = (s: Store): Backing => (s as unknown as { backing: Backing }).backing

/** A backing that behaves like `inner` except for the methods given (which may call `inner`). */
function wrapBacking(inner: Backing, overrides: Partial<Backing>): Backing {
  return Object.assign(Object.create(inner) as Backing, overrides)
}

interface Faults {
  /** 'before': the put fails and writes nothing; 'after': it writes, then fails. */
  put?: 'before' | 'after'
  delete?: 'before' | 'after'
  /** Async puts and deletes wait for this before they write. */
  gate?: Promise<void>
  /** Called when an async put or delete starts to wait for the gate. */
  onGate?: () => void
  puts: number
}

const injected = () => new KonserveError('ERR_IO', 'injected fault')

/** A backing over `inner` whose writes fail (or wait) on demand. */
function faulty(inner: Backing): { backing: Backing; faults: Faults } {
  const faults: Faults = { puts: 0 }
  const put = (ws: RawWrite[]) => {
    faults.puts++
    if (faults.put === 'before') throw injected()
    inner.put.sync(ws)
    if (faults.put === 'after') throw injected()
  }
  const del = (ks: Uint8Array[]) => {
    if (faults.delete === 'before') throw injected()
    const r = inner.delete.sync(ks)
    if (faults.delete === 'after') throw injected()
    return r
  }
  // Blob commits and log appends are writes too: they fail like puts.
  const append = (key: Uint8Array, r: NewRecord[], createMeta: Uint8Array) => {
    faults.puts++
    if (faults.put === 'before') throw injected()
    const info = inner.append.sync(key, r, createMeta)
    if (faults.put === 'after') throw injected()
    return info
  }
  const blobWriter = (key: Uint8Array, meta: Uint8Array): BlobSink => {
    const sink = inner.blobWriter.sync(key, meta)
    const commit = () => {
      faults.puts++
      if (faults.put === 'before') {
        sink.abort()
        throw injected()
      }
      sink.commit.sync()
      if (faults.put === 'after') throw injected()
    }
    return { ...sink, commit: gensync({ sync: commit, async: async () => commit() }) }
  }
  const backing = wrapBacking(inner, {
    append: gensync({ sync: append, async: async (key: Uint8Array, r: NewRecord[], m: Uint8Array) => append(key, r, m) }),
    blobWriter: gensync({ sync: blobWriter, async: async (key: Uint8Array, meta: Uint8Array) => blobWriter(key, meta) }),
    put: gensync({
      sync: put,
      async: async (ws: RawWrite[]) => {
        if (faults.gate) {
          faults.onGate?.()
          await faults.gate
        }
        put(ws)
      },
    }),
    delete: gensync({
      sync: del,
      async: async (ks: Uint8Array[]) => {
        if (faults.gate) {
          faults.onGate?.()
          await faults.gate
        }
        return del(ks)
      },
    }),
  })
  return { backing, faults }
}

function faultyMemStore(): { store: Store; plain: Store; faults: Faults } {
  const plain = k.newMemStore({ sync: true })
  const { backing, faults } = faulty(backingOf(plain))
  return { store: new k.Store(backing, {}), plain, faults }
}

/** A backing whose async reads and writes complete when fast-check's scheduler says (they happen at once). */
function scheduled(inner: Backing, s: fc.Scheduler): Backing {
  return wrapBacking(inner, {
    // Every read goes through `get` (no hot path around the scheduler).
    getValue: undefined,
    get: gensync({ sync: inner.get.sync, async: (key: Uint8Array) => s.schedule(inner.get.async(key), 'get') }),
    getMeta: gensync({ sync: inner.getMeta.sync, async: (key: Uint8Array) => s.schedule(inner.getMeta.async(key), 'getMeta') }),
    exists: gensync({ sync: inner.exists.sync, async: (key: Uint8Array) => s.schedule(inner.exists.async(key), 'exists') }),
    put: gensync({ sync: inner.put.sync, async: (ws: RawWrite[]) => s.schedule(inner.put.async(ws), 'put') }),
    delete: gensync({ sync: inner.delete.sync, async: (ks: Uint8Array[]) => s.schedule(inner.delete.async(ks), 'delete') }),
  })
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void
  const promise = new Promise<void>((r) => (resolve = r))
  return { promise, resolve }
}

async function openFile(mode: Mode, dir = join(tempDir(), 'store')): Promise<Store> {
  return mode === 'sync' ? k.connectFsStore(dir, { native: true, sync: true }) : k.connectFsStore(dir, { native: true })
}

async function openMem(mode: Mode): Promise<Store> {
  return mode === 'sync' ? k.newMemStore({ sync: true }) : k.newMemStore()
}

function collect(store: Store, id: k.HookId = 'test'): WriteEvent[] {
  const events: WriteEvent[] = []
  k.addWriteHook(store, id, (e) => {
    events.push(e)
  })
  return events
}

// ---- hooks ----------------------------------------------------------------------

for (const mode of modes) {
  for (const kind of ['memory', 'file'] as const) {
    const open = () => (kind === 'memory' ? openMem(mode) : openFile(mode))
    const title = (s: string) => `hooks ${kind} ${mode}: ${s}`

    test(title('every write op reports its event; reads report none'), async (t) => {
      const s = await open()
      const a = api(mode)
      const events = collect(s)
      await a.assoc(s, 'a', 1)
      await a.assocIn(s, ['m', 'x'], 1)
      await a.update(s, 'a', (x: number) => x + 1)
      await a.updateIn(s, ['m', 'x'], (x: number) => x + 1)
      t.true(await a.dissoc(s, 'a'))
      t.false(await a.dissoc(s, 'a'))
      const bytes = new Uint8Array([1, 2])
      await a.bassoc(s, 'b', bytes)
      await a.append(s, 'l', 'e1')
      await a.append(s, 'l', 'e2')
      await a.multiAssoc(s, [
        ['p', 1],
        ['q', { r: 2 }],
      ])
      await a.multiDissoc(s, ['p', 'zz', 'q'])
      // reads: no events
      await a.get(s, 'm')
      await a.getIn(s, ['m', 'x'])
      await a.getMeta(s, 'm')
      await a.exists(s, 'm')
      await a.keys(s)
      await a.bget(s, 'b', () => 1)
      await a.log(s, 'l')
      await a.reduceLog(s, 'l', (acc: number) => acc + 1, 0)
      await a.multiGet(s, ['m', 'l'])
      // The metadata written is checked in hooks-meta.spec.ts; here: which ops carry it.
      t.deepEqual(
        events.map((e) => e.meta !== undefined),
        [true, true, true, true, false, true, false, false, true, false, false],
      )
      t.deepEqual(events.map(({ meta: _, ...e }) => e), [
        { op: 'assoc', key: 'a', path: ['a'], oldValue: undefined, newValue: 1 },
        { op: 'assocIn', key: 'm', path: ['m', 'x'], oldValue: undefined, newValue: { x: 1 } },
        { op: 'update', key: 'a', path: ['a'], oldValue: 1, newValue: 2 },
        { op: 'updateIn', key: 'm', path: ['m', 'x'], oldValue: { x: 1 }, newValue: { x: 2 } },
        { op: 'dissoc', key: 'a', path: ['a'], oldValue: undefined, newValue: undefined },
        { op: 'bassoc', key: 'b', path: ['b'], oldValue: undefined, newValue: bytes },
        { op: 'append', key: 'l', path: ['l'], oldValue: undefined, newValue: 'e1' },
        { op: 'append', key: 'l', path: ['l'], oldValue: undefined, newValue: 'e2' },
        // one event for the batch, its pairs in order, with the metadata written (hooks-meta.spec.ts checks it)
        { op: 'multiAssoc', kvs: [['p', 1], ['q', { r: 2 }]] },
        { op: 'multiDissoc', key: 'p', path: ['p'], oldValue: undefined, newValue: undefined },
        { op: 'multiDissoc', key: 'q', path: ['q'], oldValue: undefined, newValue: undefined },
      ])
    })

    test(title('a hook runs after the write is durable and the lock is released, before the call returns'), async (t) => {
      const s = await open()
      const a = api(mode)
      const seen: unknown[] = []
      const errors: unknown[] = []
      k.addWriteHook(
        s,
        'probe',
        (e) => {
          if (e.key !== 'x' || e.newValue !== 1) return
          // The value is readable (on a file store: from another Store object on the directory).
          const reader = kind === 'file' ? k.connectFsStore(s.path!, { native: true, sync: true }) : s
          seen.push(k.get(reader, 'x', { sync: true }))
          // The lock is free: a blocking write to the same key would throw ERR_LOCK_BUSY otherwise.
          k.assoc(s, 'x', 2, { sync: true })
        },
        { onHookError: (err) => errors.push(err) },
      )
      await a.assoc(s, 'x', 1)
      t.deepEqual(errors, [])
      t.deepEqual(seen, [1])
      t.is(await a.get(s, 'x'), 2)
    })

    test(title('failed writes call no hook'), async (t) => {
      const s = await open()
      const a = api(mode)
      await a.assoc(s, 'n', 1)
      await a.assoc(s, 'm', { x: 1 })
      const events = collect(s)
      const fails: Array<() => Promise<unknown>> = [
        () => a.assoc(s, 'v', () => 1),
        () => a.assoc(s, Symbol('bad-key'), 1),
        () => a.assocIn(s, ['n', 'x', 'y'], 1),
        () =>
          a.updateIn(s, ['m', 'x'], () => {
            throw new Error('boom')
          }),
        () => a.update(s, 'm', () => () => 1),
        () => a.append(s, 'n', 'e'),
        () => a.bassoc(s, 'b', 42 as unknown as Uint8Array),
        () => a.multiAssoc(s, [['ok', 1], ['bad', () => 1]] as Array<[string, unknown]>),
      ]
      if (mode === 'sync') fails.push(() => a.updateIn(s, ['m', 'x'], async (x: number) => x + 1))
      for (const f of fails) await t.throwsAsync(f())
      t.deepEqual(events, [])
      t.is(await a.get(s, 'n'), 1)
    })

    test(title('a hook that throws or rejects does not fail the write; its error is reported'), async (t) => {
      const s = await open()
      const a = api(mode)
      const reported: Array<[unknown, WriteEvent]> = []
      const onHookError = (err: unknown, e: WriteEvent) => reported.push([err, e])
      k.addWriteHook(
        s,
        'throws',
        () => {
          throw new Error('hook boom')
        },
        { onHookError },
      )
      k.addWriteHook(s, 'rejects', async () => Promise.reject(new Error('async hook boom')), { onHookError })
      const after = collect(s, 'after')
      t.deepEqual(await a.assoc(s, 'x', 1), [undefined, 1])
      t.deepEqual(await a.updateIn(s, ['x'], (v: number) => v + 1), [1, 2])
      t.is(await a.get(s, 'x'), 2)
      t.is(after.length, 2, 'hooks after a throwing one still run')
      await new Promise((r) => setImmediate(r))
      t.deepEqual(
        reported.map(([err, e]) => [(err as Error).message, e.op]).sort(),
        [
          ['async hook boom', 'assoc'],
          ['async hook boom', 'updateIn'],
          ['hook boom', 'assoc'],
          ['hook boom', 'updateIn'],
        ],
      )
    })
  }
}

test.serial('hooks: the default report of a failing hook is a process warning', async (t) => {
  const s = k.newMemStore({ sync: true })
  k.addWriteHook(s, 'bad', () => {
    throw new Error('nope')
  })
  const warning = new Promise<Error & { code?: string }>((resolve) => process.once('warning', resolve))
  k.assoc(s, 'x', 1, { sync: true })
  const w = await warning
  t.is(w.code, 'KONSERVE_HOOK_ERROR')
  t.regex(w.message, /nope/)
  t.is(k.get(s, 'x', { sync: true }), 1)
})

test('hooks: a backing failure calls no hook, for every write op', async (t) => {
  for (const mode of modes) {
    for (const when of ['before', 'after'] as const) {
      const { store: s, faults } = faultyMemStore()
      const a = api(mode)
      await a.assoc(s, 'x', 1)
      await a.append(s, 'l', 1)
      const events = collect(s)
      faults.put = when
      faults.delete = when
      for (const f of [
        () => a.assoc(s, 'x', 2),
        () => a.assocIn(s, ['y', 'z'], 2),
        () => a.update(s, 'x', (v: number) => v + 1),
        () => a.updateIn(s, ['x'], (v: number) => v + 1),
        () => a.dissoc(s, 'x'),
        () => a.bassoc(s, 'b', new Uint8Array([1])),
        () => a.append(s, 'l', 2),
        () => a.multiAssoc(s, { p: 1, q: 2 }),
        () => a.multiDissoc(s, ['x', 'l']),
      ]) {
        await t.throwsAsync(f(), { code: 'ERR_IO' } as any)
      }
      t.deepEqual(events, [], `${mode} ${when}`)
    }
  }
})

test('hooks: removeWriteHook, replacing by id, and hooks are per Store object', async (t) => {
  const s = k.newMemStore({ sync: true })
  const first: unknown[] = []
  const second: unknown[] = []
  k.addWriteHook(s, 'h', (e) => first.push(e.newValue))
  k.assoc(s, 'x', 1, { sync: true })
  k.addWriteHook(s, 'h', (e) => second.push(e.newValue)) // same id: replaces
  k.assoc(s, 'x', 2, { sync: true })
  t.deepEqual(first, [1])
  t.deepEqual(second, [2])
  t.true(k.removeWriteHook(s, 'h'))
  t.false(k.removeWriteHook(s, 'h'))
  k.assoc(s, 'x', 3, { sync: true })
  t.deepEqual(second, [2])

  // A cached or tiered Store is another Store object: its own hooks only.
  const base = collect(s, 'base')
  const cached = k.withCache(s)
  const viaCache = collect(cached)
  await k.assoc(cached, 'c', 1)
  t.deepEqual(viaCache.map((e) => e.key), ['c'])
  t.deepEqual(base, [])
  const tiered = k.tieredStore(k.newMemStore({ sync: true }), s)
  const viaTier = collect(tiered)
  await k.assoc(tiered, 't', 1)
  t.deepEqual(viaTier.map((e) => e.key), ['t'])
  t.deepEqual(base, [])
})

// ---- the read cache -------------------------------------------------------------

type Cmd =
  | { op: 'assoc'; key: string; value: number }
  | { op: 'big'; key: string; size: number }
  | { op: 'updateIn'; key: string; by: number }
  | { op: 'dissoc'; key: string }
  | { op: 'get'; key: string }
  | { op: 'exists'; key: string }
  | { op: 'getMeta'; key: string }
  | { op: 'multiAssoc'; keys: string[]; value: number }
  | { op: 'multiDissoc'; keys: string[] }

const KEYS = ['a', 'b', 'c', 'd', 'e']
const keyArb = fc.constantFrom(...KEYS)
const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  fc.record({ op: fc.constant('assoc' as const), key: keyArb, value: fc.integer() }),
  fc.record({ op: fc.constant('big' as const), key: keyArb, size: fc.integer({ min: 0, max: 6000 }) }),
  fc.record({ op: fc.constant('updateIn' as const), key: keyArb, by: fc.integer({ min: 1, max: 9 }) }),
  fc.record({ op: fc.constant('dissoc' as const), key: keyArb }),
  fc.record({ op: fc.constant('get' as const), key: keyArb }),
  fc.record({ op: fc.constant('exists' as const), key: keyArb }),
  fc.record({ op: fc.constant('getMeta' as const), key: keyArb }),
  fc.record({ op: fc.constant('multiAssoc' as const), keys: fc.uniqueArray(keyArb, { maxLength: 3 }), value: fc.integer() }),
  fc.record({ op: fc.constant('multiDissoc' as const), keys: fc.uniqueArray(keyArb, { maxLength: 3 }) }),
)

/** Runs one command; the result (or the error code) is what the two stores must agree on. */
async function apply(a: Api, s: Store, c: Cmd): Promise<unknown> {
  try {
    switch (c.op) {
      case 'assoc':
        return await a.assoc(s, c.key, { n: c.value })
      case 'big':
        return await a.assoc(s, c.key, { n: c.size, pad: 'x'.repeat(c.size) })
      case 'updateIn':
        return await a.updateIn(s, [c.key, 'n'], (x?: number) => (x ?? 0) + c.by)
      case 'dissoc':
        return await a.dissoc(s, c.key)
      case 'get':
        return await a.get(s, c.key)
      case 'exists':
        return await a.exists(s, c.key)
      case 'getMeta': {
        const m = await a.getMeta(s, c.key)
        return m && { key: m.key, type: m.type }
      }
      case 'multiAssoc':
        return await a.multiAssoc(s, new Map(c.keys.map((key) => [key, { n: c.value }])))
      case 'multiDissoc':
        return await a.multiDissoc(s, c.keys)
    }
  } catch (err) {
    return { error: (err as KonserveError).code ?? String(err) }
  }
}

/** Every key reads the same through both stores (value, existence, metadata type). */
async function sameState(a: Api, x: Store, y: Store): Promise<void> {
  for (const key of KEYS) {
    deepStrictEqual(await a.get(x, key), await a.get(y, key), `get ${key}`)
    strictEqual(await a.exists(x, key), await a.exists(y, key), `exists ${key}`)
    deepStrictEqual((await a.getMeta(x, key))?.type, (await a.getMeta(y, key))?.type, `getMeta ${key}`)
  }
}

for (const mode of modes) {
  for (const under of ['memory', 'file'] as const) {
    test(`cache over ${under} ${mode}: random command sequences agree with the plain store`, async (t) => {
      const a = api(mode)
      await fc.assert(
        fc.asyncProperty(fc.array(cmdArb, { minLength: 1, maxLength: 40 }), async (cmds) => {
          const cached = k.withCache(under === 'memory' ? await openMem(mode) : await openFile(mode), {
            maxEntries: 3,
            maxBytes: 8 * 1024,
          })
          const plain = await openMem(mode)
          for (const c of cmds) deepStrictEqual(await apply(a, cached, c), await apply(a, plain, c), JSON.stringify(c))
          await sameState(a, cached, plain)
          const stats = k.cacheStats(cached)!
          strictEqual(stats.entries <= 3 && stats.bytes <= 8 * 1024, true)
        }),
        { numRuns: under === 'memory' ? 150 : 25 },
      )
      t.pass()
    })
  }
}

test('cache: random async interleavings never leave it stale (fast-check scheduler)', async (t) => {
  await fc.assert(
    fc.asyncProperty(fc.scheduler(), fc.subarray(KEYS), fc.array(cmdArb, { minLength: 2, maxLength: 25 }), async (s, initial, cmds) => {
      const a = api('async')
      const mem = k.newMemStore({ sync: true })
      for (const key of initial) k.assoc(mem, key, { n: -1 }, { sync: true })
      // The cache sits over a backing whose async calls complete in an order the scheduler picks.
      const slow = new k.Store(scheduled(backingOf(mem), s), {})
      const cached = k.withCache(slow, { maxEntries: 4, maxBytes: 16 * 1024 })
      await s.waitFor(Promise.all(cmds.map((c) => apply(a, cached, c))))
      for (const key of KEYS) {
        deepStrictEqual(await s.waitFor(k.get(cached, key)), k.get(mem, key, { sync: true }), `get ${key}`)
        strictEqual(await s.waitFor(k.exists(cached, key)), k.exists(mem, key, { sync: true }), `exists ${key}`)
      }
    }),
    { numRuns: 300 },
  )
  t.pass()
})

test('cache: holds at most maxEntries, evicting the least recently used', async (t) => {
  const base = k.newMemStore({ sync: true })
  const cached = k.withCache(base, { maxEntries: 3 })
  for (const key of ['k1', 'k2', 'k3']) k.assoc(cached, key, key, { sync: true })
  t.is(k.cacheStats(cached)!.entries, 3)
  k.get(cached, 'k1', { sync: true }) // k1 is now the most recently used; k2 the least
  k.assoc(cached, 'k4', 'k4', { sync: true })
  t.is(k.cacheStats(cached)!.entries, 3)
  // Change every key behind the cache's back: a cached key reads the old value, an evicted one the new.
  for (const key of ['k1', 'k2', 'k3', 'k4']) k.assoc(base, key, `${key} changed`, { sync: true })
  t.is(k.get(cached, 'k1', { sync: true }), 'k1')
  t.is(k.get(cached, 'k3', { sync: true }), 'k3')
  t.is(k.get(cached, 'k4', { sync: true }), 'k4')
  t.is(k.get(cached, 'k2', { sync: true }), 'k2 changed', 'k2 was evicted')
  const stats = k.cacheStats(cached)!
  t.is(stats.entries, 3)
  t.is(stats.hits, 4)
  t.is(stats.misses, 1)
})

test('cache: holds at most maxBytes; an entry larger than maxBytes is not cached', async (t) => {
  const base = k.newMemStore({ sync: true })
  const cached = k.withCache(base, { maxEntries: 100, maxBytes: 4096 })
  for (let i = 0; i < 10; i++) {
    await k.assoc(cached, `k${i}`, 'x'.repeat(1000))
    t.true(k.cacheStats(cached)!.bytes <= 4096)
  }
  const { entries } = k.cacheStats(cached)!
  t.true(entries >= 3 && entries <= 4, `${entries} entries of ~1.1 KB in 4 KB`)
  // The most recent ones are the cached ones.
  k.assoc(base, 'k9', 'changed', { sync: true })
  k.assoc(base, 'k0', 'changed', { sync: true })
  t.is(k.get(cached, 'k9', { sync: true }), 'x'.repeat(1000))
  t.is(k.get(cached, 'k0', { sync: true }), 'changed')
  // Too big: not cached, and an older cached value of the key is dropped.
  await k.assoc(cached, 'k9', 'y'.repeat(10_000))
  const before = k.cacheStats(cached)!.misses
  t.is(k.get(cached, 'k9', { sync: true }), 'y'.repeat(10_000))
  t.is(k.cacheStats(cached)!.misses, before + 1)
  t.true(k.cacheStats(cached)!.bytes <= 4096)
})

for (const mode of modes) {
  test(`cache ${mode}: a failed write leaves no stale entry`, async (t) => {
    const a = api(mode)
    for (const when of ['before', 'after'] as const) {
      const { store, plain, faults } = faultyMemStore()
      const cached = k.withCache(store)
      await a.assoc(cached, 'x', 1)
      await a.assoc(cached, 'y', 1)
      t.is(await a.get(cached, 'x'), 1) // cached
      faults.put = when
      faults.delete = when
      await t.throwsAsync(a.assoc(cached, 'x', 2))
      await t.throwsAsync(a.multiAssoc(cached, { x: 3, y: 3 }))
      await t.throwsAsync(a.updateIn(cached, ['y'], (v: number) => v + 10))
      await t.throwsAsync(a.dissoc(cached, 'y'))
      faults.put = undefined
      faults.delete = undefined
      // Whatever the store holds ('before': the old values; 'after': the new ones), the cache agrees.
      for (const key of ['x', 'y']) {
        t.deepEqual(await a.get(cached, key), k.get(plain, key, { sync: true }), `${when} ${key}`)
        t.is(await a.exists(cached, key), k.exists(plain, key, { sync: true }))
      }
      if (when === 'after') {
        t.is(k.get(plain, 'x', { sync: true }), 3)
        t.false(k.exists(plain, 'y', { sync: true }))
      } else {
        t.is(k.get(plain, 'x', { sync: true }), 1)
      }
    }
  })

  test(`cache ${mode}: reads are served from the cache; updateIn reads the store under the lock`, async (t) => {
    const a = api(mode)
    const base = await openFile(mode)
    const cached = k.withCache(base)
    await a.assoc(cached, 'x', 1)
    t.is(await a.get(cached, 'x'), 1)
    t.false(await a.exists(cached, 'missing'))
    const { hits } = k.cacheStats(cached)!
    t.true(hits >= 1)
    // A write through another Store object is not seen by plain reads (documented) ...
    await a.assoc(base, 'x', 10)
    await a.assoc(base, 'missing', 1)
    t.is(await a.get(cached, 'x'), 1)
    t.false(await a.exists(cached, 'missing'))
    t.is((await a.keys(cached)).length, 2, 'keys lists the store itself')
    // ... but a read-modify-write reads the store itself while it holds the lock, and refreshes the cache.
    t.deepEqual(await a.updateIn(cached, ['x'], (v: number) => v + 1), [10, 11])
    t.is(await a.get(cached, 'x'), 11)
    t.is(await a.get(base, 'x'), 11)
    t.is(await a.append(cached, 'missing-log', 1), 1)
  })
}

test('cache: bad options are refused; flush and cacheStats on other stores', async (t) => {
  const s = k.newMemStore({ sync: true })
  t.throws(() => k.withCache(s, { maxEntries: 0 }), { code: 'ERR_INVALID_ARGUMENT' } as any)
  t.throws(() => k.withCache(s, { maxBytes: 1.5 }), { code: 'ERR_INVALID_ARGUMENT' } as any)
  t.throws(() => k.withCache({} as Store), { code: 'ERR_INVALID_ARGUMENT' } as any)
  t.is(k.cacheStats(s), undefined)
  await t.notThrowsAsync(k.flush(s))
  await t.notThrowsAsync(k.flush(k.withCache(s)))
})

// ---- the tiered store -------------------------------------------------------------

for (const mode of modes) {
  const title = (s: string) => `tiered ${mode}: ${s}`

  test(title('write-through: the back is written durably, then the front, before the call returns'), async (t) => {
    const a = api(mode)
    const front = await openMem(mode)
    const back = await openFile(mode)
    const tier = k.tieredStore(front, back, { writePolicy: 'write-through' })
    await a.assoc(tier, 'x', { v: 1 })
    // Durable: another Store object on the directory reads it.
    t.deepEqual(k.get(k.connectFsStore(back.path!, { native: true, sync: true }), 'x', { sync: true }), { v: 1 })
    t.deepEqual(await a.get(front, 'x'), { v: 1 })
    t.deepEqual(await a.updateIn(tier, ['x', 'v'], (n: number) => n + 1), [{ v: 1 }, { v: 2 }])
    t.deepEqual(await a.get(back, 'x'), { v: 2 })
    t.deepEqual(await a.get(front, 'x'), { v: 2 })
    await a.multiAssoc(tier, { p: 1, q: 2 })
    t.deepEqual(await a.multiGet(back, ['p', 'q']), new Map([['p', 1], ['q', 2]]))
    t.true(await a.dissoc(tier, 'x'))
    t.false(await a.exists(back, 'x'))
    t.false(await a.exists(front, 'x'))
    t.false(await a.dissoc(tier, 'x'))
    t.is(tier.implementation, 'native')
    t.is(tier.path, back.path)
  })

  test(title('write-through: a failed back write fails the call and leaves the front without the key'), async (t) => {
    const a = api(mode)
    const front = await openMem(mode)
    const { store: back, faults } = faultyMemStore()
    const tier = k.tieredStore(front, back)
    await a.assoc(tier, 'x', 1)
    t.is(await a.get(front, 'x'), 1)
    faults.put = 'before'
    await t.throwsAsync(a.assoc(tier, 'x', 2), { code: 'ERR_IO' } as any)
    t.false(await a.exists(front, 'x'))
    t.is(await a.get(tier, 'x'), 1, 'read from the back, which kept the old value')
    faults.put = 'after'
    await t.throwsAsync(a.assoc(tier, 'x', 3))
    t.is(await a.get(tier, 'x'), 3, 'the back took it: so does the tiered store')
  })

  test(title('write-through: a failed front write after a durable back write succeeds and is reported'), async (t) => {
    const a = api(mode)
    const { store: front, faults } = faultyMemStore()
    const back = await openMem(mode)
    const errors: unknown[] = []
    const tier = k.tieredStore(front, back, { onError: (e) => errors.push(e) })
    await a.assoc(tier, 'x', 1)
    faults.put = 'before'
    t.deepEqual(await a.assoc(tier, 'x', 2), [undefined, 2])
    t.is(errors.length, 1)
    t.is(await a.get(back, 'x'), 2)
    t.false(await a.exists(front, 'x'), 'the stale front entry was removed')
    t.is(await a.get(tier, 'x'), 2)
  })

  test(title('front-first reads fall back to the back and fill the front'), async (t) => {
    const a = api(mode)
    for (const writePolicy of ['write-through', 'write-behind'] as const) {
      const front = await openMem(mode)
      const back = await openFile(mode)
      await a.assoc(back, 'only-back', { v: 'b' }, { meta: { tag: 1 } })
      const tier = k.tieredStore(front, back, { writePolicy })
      t.true(await a.exists(tier, 'only-back'))
      t.is((await a.getMeta(tier, 'only-back')).tag, 1)
      t.false(await a.exists(front, 'only-back'), 'exists and getMeta do not fill')
      t.deepEqual(await a.get(tier, 'only-back'), { v: 'b' })
      t.deepEqual(await a.get(front, 'only-back'), { v: 'b' }, 'filled')
      t.is((await a.getMeta(front, 'only-back')).tag, 1, 'with its metadata')
      // Now served by the front: a change behind it is not seen by plain reads.
      await a.assoc(back, 'only-back', { v: 'changed' })
      t.deepEqual(await a.get(tier, 'only-back'), { v: 'b' })
      t.is(await a.get(tier, 'nowhere'), undefined)
      t.false(await a.exists(front, 'nowhere'))
      t.deepEqual((await a.keys(tier)).map((m: k.Metadata) => m.key), ['only-back'])
      if (writePolicy === 'write-through') {
        // A read-modify-write reads the back under its lock (atomic against other writers).
        t.deepEqual(await a.updateIn(tier, ['only-back', 'v'], (v: string) => `${v}!`), [{ v: 'changed' }, { v: 'changed!' }])
        t.deepEqual(await a.get(tier, 'only-back'), { v: 'changed!' })
      }
      await k.flush(tier)
    }
  })

  test(title('write-behind: the call returns before the back write; flush waits for it'), async (t) => {
    const a = api(mode)
    const front = await openMem(mode)
    const { store: back, plain, faults } = faultyMemStore()
    const tier = k.tieredStore(front, back, { writePolicy: 'write-behind' })
    const gate = deferred()
    faults.gate = gate.promise
    const waiting = deferred()
    faults.onGate = waiting.resolve
    await a.assoc(tier, 'x', 1)
    await a.multiAssoc(tier, { p: 1, q: 2 })
    await a.updateIn(tier, ['x'], (v: number) => v + 1)
    t.is(await a.get(tier, 'x'), 2)
    t.is(await a.get(front, 'x'), 2)
    t.false(k.exists(plain, 'x', { sync: true }), 'not in the back yet')
    t.deepEqual(
      (await a.keys(tier)).map((m: k.Metadata) => m.key).sort(),
      ['p', 'q', 'x'],
      'keys include queued writes',
    )
    let flushed = false
    const f = k.flush(tier).then(() => (flushed = true))
    // The queued write is held at the gate; a flush that did not wait for it
    // would have settled within the microtasks that run before setImmediate.
    await waiting.promise
    await new Promise((r) => setImmediate(r))
    t.false(flushed, 'flush waits for the queued write')
    gate.resolve()
    await f
    t.is(k.get(plain, 'x', { sync: true }), 2)
    t.is(k.get(plain, 'q', { sync: true }), 2)

    // A delete: gone at once for the tiered store, from the back after the flush.
    const gate2 = deferred()
    faults.gate = gate2.promise
    t.true(await a.dissoc(tier, 'x'))
    t.is(await a.get(tier, 'x'), undefined)
    t.false(await a.exists(tier, 'x'))
    t.is(await a.getMeta(tier, 'x'), undefined)
    t.false(await a.dissoc(tier, 'x'))
    t.deepEqual(await a.multiDissoc(tier, ['p', 'never']), new Map([['p', true], ['never', false]]))
    t.true(k.exists(plain, 'x', { sync: true }), 'still in the back')
    t.deepEqual((await a.keys(tier)).map((m: k.Metadata) => m.key), ['q'], 'keys leave out queued deletes')
    gate2.resolve()
    await k.flush(tier)
    t.false(k.exists(plain, 'x', { sync: true }))
    t.false(k.exists(plain, 'p', { sync: true }))
    t.deepEqual((await a.keys(tier)).map((m: k.Metadata) => m.key), ['q'])
  })

  test(title('write-behind: background errors are reported and make flush reject'), async (t) => {
    const a = api(mode)
    const front = await openMem(mode)
    const { store: back, plain, faults } = faultyMemStore()
    const errors: unknown[] = []
    // Resolves once `n` background errors were reported.
    const reported: Array<[number, () => void]> = []
    const errorCount = (n: number) => new Promise<void>((r) => (errors.length >= n ? r() : reported.push([n, r])))
    const onError = (e: unknown) => {
      errors.push(e)
      for (const [n, r] of reported) if (errors.length >= n) r()
    }
    const tier = k.tieredStore(front, back, { writePolicy: 'write-behind', onError })
    await a.assoc(tier, 'x', 1)
    await k.flush(tier)
    faults.put = 'before'
    await a.assoc(tier, 'x', 2) // succeeds: the back write fails later
    const err = await t.throwsAsync(k.flush(tier), { instanceOf: KonserveError })
    t.is(err?.code, 'ERR_IO')
    t.regex(err!.message, /background/)
    t.is(errors.length, 1)
    t.is(errors[0], err)
    t.is(await a.get(tier, 'x'), 2, 'the tiered store keeps the value it was given')
    t.is(k.get(plain, 'x', { sync: true }), 1)
    await t.notThrowsAsync(k.flush(tier), 'an error is reported by one flush')
    // Two failures: an AggregateError.
    await a.assoc(tier, 'y', 1)
    await k.flush(tier).catch(() => {})
    await a.assoc(tier, 'z', 1)
    await errorCount(3) // z's batch failed
    await a.assoc(tier, 'w', 1)
    const agg = await t.throwsAsync(k.flush(tier), { instanceOf: AggregateError })
    t.is((agg as AggregateError).errors.length, 2)
    t.is(errors.length, 4)
    faults.put = undefined
    await a.assoc(tier, 'x', 3)
    await k.flush(tier)
    t.is(k.get(plain, 'x', { sync: true }), 3)
  })
}

test.serial('tiered: a background error with no onError is a process warning', async (t) => {
  const { store: back, faults } = faultyMemStore()
  const tier = k.tieredStore(k.newMemStore({ sync: true }), back, { writePolicy: 'write-behind' })
  faults.put = 'before'
  const warning = new Promise<Error & { code?: string }>((resolve) => process.once('warning', resolve))
  k.assoc(tier, 'x', 1, { sync: true })
  const w = await warning
  t.is(w.code, 'KONSERVE_TIER_ERROR')
  await t.throwsAsync(k.flush(tier))
})

test('tiered: bad options are refused', (t) => {
  const a = k.newMemStore({ sync: true })
  const b = k.newMemStore({ sync: true })
  t.throws(() => k.tieredStore(a, b, { writePolicy: 'write-sideways' as any }), { code: 'ERR_INVALID_ARGUMENT' } as any)
  t.throws(() => k.tieredStore(a, b, { readPolicy: 'front-only' as any }), { code: 'ERR_INVALID_ARGUMENT' } as any)
  t.throws(() => k.tieredStore(a, a), { code: 'ERR_INVALID_ARGUMENT' } as any)
})

test('tiered write-behind: a random sequence of writes reaches the back in order per key', async (t) => {
  const front = k.newMemStore({ sync: true })
  const back = await openFile('async')
  const tier = k.tieredStore(front, back, { writePolicy: 'write-behind' })
  const ref = k.newMemStore({ sync: true })
  const cmds = fc.sample(fc.array(cmdArb, { minLength: 300, maxLength: 300 }), { numRuns: 1, seed: 42 })[0]!
  for (const [i, c] of cmds.entries()) {
    const a = api(i % 2 === 0 ? 'sync' : 'async')
    deepStrictEqual(await apply(a, tier, c), await apply(a, ref, c), JSON.stringify(c))
  }
  await k.flush(tier)
  const a = api('async')
  await sameState(a, back, ref)
  await sameState(a, tier, ref)
  t.pass()
})

for (const writePolicy of ['write-through', 'write-behind'] as const) {
  test(`tiered ${writePolicy}: random async interleavings keep front, back and reads consistent`, async (t) => {
    await fc.assert(
      fc.asyncProperty(fc.scheduler(), fc.subarray(KEYS), fc.array(cmdArb, { minLength: 2, maxLength: 25 }), async (s, initial, cmds) => {
        const a = api('async')
        const front = k.newMemStore({ sync: true })
        const mem = k.newMemStore({ sync: true })
        // Keys already in the back: the front misses them, and reads fill it.
        for (const key of initial) k.assoc(mem, key, { n: -1 }, { sync: true })
        const back = new k.Store(scheduled(backingOf(mem), s), {})
        const tier = k.tieredStore(front, back, { writePolicy })
        await s.waitFor(Promise.all(cmds.map((c) => apply(a, tier, c))))
        await s.waitFor(k.flush(tier))
        for (const key of KEYS) {
          const truth = k.get(mem, key, { sync: true })
          deepStrictEqual(await s.waitFor(k.get(tier, key)), truth, `get ${key}`)
          const f = k.get(front, key, { sync: true })
          if (f !== undefined) deepStrictEqual(f, truth, `front ${key}`)
        }
      }),
      { numRuns: 200 },
    )
    t.pass()
  })

  test(`tiered ${writePolicy}: updateIn is atomic under 8 concurrent async loops x 200`, async (t) => {
    const front = await k.newMemStore()
    const back = await openFile('async')
    const tier = k.tieredStore(front, back, { writePolicy })
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        for (let i = 0; i < 200; i++) await k.updateIn(tier, ['counter', 'n'], (x?: number) => (x ?? 0) + 1)
      }),
    )
    t.deepEqual(await k.get(tier, 'counter'), { n: 1600 })
    await k.flush(tier)
    t.deepEqual(await k.get(back, 'counter'), { n: 1600 })
    t.deepEqual(await k.get(front, 'counter'), { n: 1600 })
  })
}
