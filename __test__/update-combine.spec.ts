/**
 * Combined updates (ts/combine.ts): concurrent async updateIn/update/assocIn
 * calls on one key run under one hold of its lock and are written once. Each
 * call must see and return what it would have alone, in call order: the
 * combined run of a list of calls is checked against the same calls awaited
 * one by one (results, errors, the value, the revision, hook events), on
 * every backend; the number of writes the backing made proves the combining.
 * Then the failures (a function's own, the write's), nested calls, the
 * bounds, the order against other writers, and processes contending.
 */
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import test, { type ExecutionContext } from 'ava'
import gensync from 'gensync'
import * as k from 'konserve'
import { type Backing, KonserveError, type RawWrite, type Store, type WriteEvent, type WriteOptions } from 'konserve'
import { tempDir } from './helpers/api.js'

const run = promisify(execFile)
const here = import.meta.dirname ?? new URL('.', import.meta.url).pathname
const backingOf = (s: Store): Backing => (s as unknown as { backing: Backing }).backing

/** Counts the writes (`put`s) the store's backing makes from now on; `fail` makes the next ones fail. */
function countPuts(store: Store): { puts: number; fail: number } {
  const b = backingOf(store) as { put: Backing['put'] }
  const inner = b.put
  const c = { puts: 0, fail: 0 }
  const check = () => {
    c.puts++
    if (c.fail > 0) {
      c.fail--
      throw new KonserveError('ERR_IO', 'injected write fault')
    }
  }
  b.put = gensync({
    sync: (ws: RawWrite[]) => {
      check()
      return inner.sync(ws)
    },
    async: async (ws: RawWrite[]) => {
      check()
      return inner.async(ws)
    },
  })
  return c
}

interface Backend {
  name: string
  open(): Promise<Store>
}
const fsStore = (options: k.FsStoreOptions) => () => k.connectFsStore(join(tempDir(), 'store'), options)
const AES = { type: 'aes', key: 'combine' } as const
const BACKENDS: Backend[] = [
  { name: 'memory', open: () => k.newMemStore() },
  { name: 'memory + cache', open: async () => k.withCache(await k.newMemStore()) },
  { name: 'native', open: fsStore({ native: true }) },
  { name: 'pure', open: fsStore({ native: false }) },
  { name: 'native, wal', open: fsStore({ native: true, wal: true }) },
  { name: 'pure, wal', open: fsStore({ native: false, wal: true }) },
  { name: 'native, lz4 + aes', open: fsStore({ native: true, compressor: { type: 'lz4' }, encryptor: AES }) },
  { name: 'pure, wal, lz4 + aes', open: fsStore({ native: false, wal: true, compressor: { type: 'lz4' }, encryptor: AES }) },
]
const FEW = [BACKENDS[0]!, BACKENDS[2]!, BACKENDS[5]!]

/** One call of a list: the op, its path, its function (or assocIn's value), its options. */
interface Call {
  op: 'update' | 'updateIn' | 'assocIn'
  path: unknown[]
  fn?: (x: any) => unknown
  value?: unknown
  opts?: WriteOptions
}
const inc = (x: number | undefined) => (x ?? 0) + 1
const up = (key: string, fn: (x: any) => unknown, opts?: WriteOptions): Call => ({ op: 'update', path: [key], fn, opts })
const upIn = (path: unknown[], fn: (x: any) => unknown, opts?: WriteOptions): Call => ({ op: 'updateIn', path, fn, opts })

function start(s: Store, c: Call): Promise<[unknown, unknown]> {
  if (c.op === 'assocIn') return k.assocIn(s, c.path, c.value, c.opts)
  if (c.op === 'update') return k.update(s, c.path[0] as string, c.fn!, c.opts)
  return k.updateIn(s, c.path, c.fn!, c.opts)
}

type Settled = { ok: true; value: unknown } | { ok: false; error: unknown }
const settle = (p: Promise<unknown>): Promise<Settled> =>
  p.then(
    (value) => ({ ok: true, value }),
    (error: unknown) => ({ ok: false, error }),
  )
/** What a test compares of an outcome: the value, or the error (its code and message when it is konserve's, else itself). */
function shown(s: Settled): unknown {
  if (s.ok) return { value: s.value }
  const e = s.error
  return e instanceof KonserveError ? { code: e.code, message: e.message, actualRevision: e.actualRevision } : { thrown: e }
}
/** Hook events without the clock. */
function recordEvents(s: Store): unknown[] {
  const events: unknown[] = []
  k.addWriteHook(s, 'record', (e: WriteEvent) => {
    events.push({ ...e, meta: e.meta ? { ...e.meta, lastWrite: undefined } : undefined })
  })
  return events
}
async function state(s: Store, keys: string[]) {
  const out: Record<string, unknown> = {}
  for (const key of keys) {
    const meta = await k.getMeta(s, key)
    out[key] = { value: await k.get(s, key), meta: meta && { ...meta, lastWrite: undefined } }
  }
  return out
}

/**
 * Runs `calls` awaited one by one on one store and all at once on another
 * (both prepared by `setup`), and checks that the two agree; returns the
 * combined run's outcomes and its number of writes.
 */
async function sameAsAlone(t: ExecutionContext, b: Backend, setup: (s: Store) => Promise<void>, calls: Call[], keys: string[]) {
  const alone = await b.open()
  await setup(alone)
  const aloneEvents = recordEvents(alone)
  const aloneOut: Settled[] = []
  for (const c of calls) aloneOut.push(await settle(start(alone, c)))

  const together = await b.open()
  await setup(together)
  const events = recordEvents(together)
  const count = countPuts(together)
  const out = await Promise.all(calls.map((c) => settle(start(together, c))))

  t.deepEqual(out.map(shown), aloneOut.map(shown), 'each call: what it gets alone')
  t.deepEqual(await state(together, keys), await state(alone, keys), 'the values and metadata')
  t.deepEqual(events, aloneEvents, 'the hook events, in order')
  await k.close(alone)
  await k.close(together)
  return { out, puts: count.puts }
}

// ---- many increments on few counters ---------------------------------------------------

for (const b of BACKENDS) {
  test(`${b.name}: 200 concurrent increments on 4 counters: exact, in call order, one write per counter`, async (t) => {
    const s = await b.open()
    for (let c = 0; c < 4; c++) await k.assoc(s, `c${c}`, 0)
    const events = recordEvents(s)
    const count = countPuts(s)
    const calls = Array.from({ length: 200 }, (_, i) => (i % 3 === 0 ? k.updateIn(s, [`c${i % 4}`], inc) : k.update(s, `c${i % 4}`, inc)))
    const results = await Promise.all(calls)
    for (let i = 0; i < 200; i++) {
      const j = Math.floor(i / 4) // the j-th call on its counter
      t.deepEqual(results[i], [j, j + 1], `call ${i}`)
    }
    for (let c = 0; c < 4; c++) {
      t.is(await k.get(s, `c${c}`), 50)
      t.is((await k.getMeta(s, `c${c}`))!.revision, 51, 'each update counts in the revision')
    }
    t.is(count.puts, 4, 'the calls of each counter were written together')
    t.is(events.length, 200)
    t.deepEqual(
      events.filter((e) => (e as WriteEvent).key === 'c1').map((e) => (e as { meta: k.Metadata }).meta.revision),
      Array.from({ length: 50 }, (_, j) => j + 2),
      'each call reports its own revision, in order',
    )
    await k.close(s)
    // Reopened, the sums are on disk.
    if (!b.name.startsWith('memory')) {
      const again = await b.open() // a fresh directory: just proves opening works; the sums are checked above
      await k.close(again)
    }
  })
}

test('the blocking form never combines, and an async batch makes it ERR_LOCK_BUSY as before', async (t) => {
  const s = await k.newMemStore()
  const count = countPuts(s)
  for (let i = 0; i < 10; i++) k.update(s, 'n', inc, { sync: true })
  t.is(count.puts, 10)
  const p = k.update(s, 'n', inc)
  const err = t.throws(() => k.update(s, 'n', inc, { sync: true })) as KonserveError
  t.is(err.code, 'ERR_LOCK_BUSY')
  t.deepEqual(await p, [10, 11])
})

// ---- each call as alone ------------------------------------------------------------------

const boom = new Error('boom')
for (const b of FEW) {
  test(`${b.name}: a function that throws or rejects fails only its own call; the next goes on from the value before it`, async (t) => {
    const { out, puts } = await sameAsAlone(
      t,
      b,
      (s) => k.assoc(s, 'k', { n: 0 }).then(() => {}),
      [
        up('k', (m) => ({ n: m.n + 1 })),
        up('k', (m) => {
          m.n = 99 // changes what it was given, then fails: the next call must not see it
          throw boom
        }),
        up('k', (m) => ({ n: m.n + 1 })),
        up('k', async () => Promise.reject(boom)),
        up('k', () => () => 'a function cannot be stored'),
        up('k', async (m) => ({ n: m.n + 1 })),
        up('k', (m) => ({ n: m.n + 1 })),
      ],
      ['k'],
    )
    t.is((out[1] as { error: unknown }).error, boom, 'the very object thrown')
    t.is((out[3] as { error: unknown }).error, boom)
    t.is(((out[4] as { error: unknown }).error as KonserveError).code, 'ERR_SERIALIZE')
    t.deepEqual((out[6] as { value: unknown }).value, [{ n: 3 }, { n: 4 }])
    t.true(puts < 4, `${puts} writes for 4 updates`)
  })

  test(`${b.name}: expectedRevision is checked against the revision the calls before it leave`, async (t) => {
    const { out, puts } = await sameAsAlone(
      t,
      b,
      (s) => k.assoc(s, 'k', 0).then(() => {}), // revision 1
      [
        up('k', inc), // -> 2
        up('k', inc, { expectedRevision: 2 }), // -> 3
        up('k', inc, { expectedRevision: 2 }), // mismatch: at 3
        up('k', inc, { expectedRevision: 3, meta: { by: 'me' } }), // -> 4
        up('k', inc, { expectedRevision: 0 }), // mismatch: exists
        upIn(['k'], inc), // -> 5
      ],
      ['k'],
    )
    t.is(((out[2] as { error: unknown }).error as KonserveError).actualRevision, 3)
    t.is(((out[4] as { error: unknown }).error as KonserveError).code, 'ERR_REVISION_MISMATCH')
    t.deepEqual((out[5] as { value: unknown }).value, [3, 4])
    t.is(puts, 1)
  })

  test(`${b.name}: different paths into one key combine; a path that cannot be set fails only its own call`, async (t) => {
    const { puts } = await sameAsAlone(
      t,
      b,
      (s) => k.assoc(s, 'k', { a: 1, list: [1, 2] }).then(() => {}),
      [
        upIn(['k', 'a'], inc),
        upIn(['k', 'b'], inc),
        { op: 'assocIn', path: ['k', 'c', 'd'], value: 'deep' },
        upIn(['k', 'a', 'x'], inc), // into a number
        upIn(['k', 'list', 1], (x) => x * 10),
        upIn(['k', 'list', 'x'], inc), // not an index
        up('k', (m) => ({ ...m, whole: true })),
        upIn(['k', 'a'], inc),
      ],
      ['k'],
    )
    t.is(puts, 1)
  })

  test(`${b.name}: a binary value: going into it fails, replacing it works, as alone`, async (t) => {
    const { out } = await sameAsAlone(
      t,
      b,
      (s) => k.bassoc(s, 'bin', Buffer.from([1, 2, 3])).then(() => {}),
      [
        upIn(['bin', 'x'], inc), // into bytes: ERR_INVALID_PATH
        up('bin', (bytes: Uint8Array) => Uint8Array.from([...bytes, 4])),
        up('bin', (bytes: Uint8Array) => ({ length: bytes.length })),
        upIn(['bin', 'length'], inc),
      ],
      ['bin'],
    )
    t.is(((out[0] as { error: unknown }).error as KonserveError).code, 'ERR_INVALID_PATH')
    t.deepEqual((out[3] as { value: unknown }).value, [{ length: 4 }, { length: 5 }])
  })

  test(`${b.name}: a failed write fails every call of its batch (none took effect), each failed call its own error`, async (t) => {
    const s = await b.open()
    await k.assoc(s, 'k', 0)
    const events = recordEvents(s)
    const count = countPuts(s)
    count.fail = 1
    const out = await Promise.all([settle(k.update(s, 'k', inc)), settle(
        k.update(s, 'k', () => {
          throw boom
        }),
      ), settle(k.update(s, 'k', inc))])
    t.is(count.puts, 1)
    t.is(((out[0] as { error: unknown }).error as KonserveError).code, 'ERR_IO')
    t.is((out[1] as { error: unknown }).error, boom)
    t.is(((out[2] as { error: unknown }).error as KonserveError).code, 'ERR_IO')
    t.deepEqual(events, [], 'no hook for a failed write')
    t.is(await k.get(s, 'k'), 0)
    t.is((await k.getMeta(s, 'k'))!.revision, 1)
    t.deepEqual(await k.update(s, 'k', inc), [0, 1], 'the key is free again')
    await k.close(s)
  })
}

// ---- functions that wait, nested calls -------------------------------------------------

test('a function that awaits an earlier call of its batch gets it: the calls before a Promise are written first', async (t) => {
  const s = await k.newMemStore()
  const count = countPuts(s)
  const first = k.update(s, 'k', inc)
  const second = k.update(s, 'k', async (x: number) => {
    const [, seen] = (await first) as [unknown, number]
    return x + seen
  })
  const third = k.update(s, 'k', inc)
  t.deepEqual(await first, [undefined, 1])
  t.deepEqual(await second, [1, 2])
  t.deepEqual(await third, [2, 3])
  t.is(count.puts, 2, 'the first alone, before the function was awaited; then the rest')
})

test('a function that writes its own key fails with ERR_LOCK_REENTRY, not waiting for its own batch; the others go on', async (t) => {
  const s = await k.newMemStore()
  const nested = k.update(s, 'k', async (x: number) => {
    await k.update(s, 'k', inc) // would wait for the batch that waits for this function
    return x + 100
  })
  const sync = k.update(s, 'k', (x: number) => {
    k.update(s, 'k', inc, { sync: true })
    return x + 100
  })
  const other = k.update(s, 'k', inc)
  t.is(((await t.throwsAsync(nested)) as KonserveError).code, 'ERR_LOCK_REENTRY')
  t.is(((await t.throwsAsync(sync)) as KonserveError).code, 'ERR_LOCK_REENTRY')
  t.deepEqual(await other, [undefined, 1])
  // A function may update other keys, combined with their own calls.
  const count = countPuts(s)
  const [a, b1, b2] = await Promise.all([
    k.update(s, 'a', async () => (await k.update(s, 'b', inc))[1]),
    k.update(s, 'b', inc),
    k.update(s, 'b', inc),
  ])
  t.deepEqual(a, [undefined, 3])
  t.deepEqual([b1, b2], [[undefined, 1], [1, 2]])
  t.true(count.puts <= 3)
  // A write the function starts and does not await waits its turn.
  let later: Promise<unknown> | undefined
  await k.update(s, 'k', (x: number) => {
    later = Promise.resolve().then(() => k.update(s, 'k', (y: number) => y * 10))
    return x + 1
  })
  await later
  t.is(await k.get(s, 'k'), 20)
})

// ---- bounds and order ----------------------------------------------------------------

test('a batch takes at most 256 calls: 600 calls on one key make 3 writes, in call order', async (t) => {
  const s = await k.newMemStore()
  const count = countPuts(s)
  const results = await Promise.all(Array.from({ length: 600 }, () => k.update(s, 'k', inc)))
  t.deepEqual(
    results,
    results.map((_, i) => [i === 0 ? undefined : i, i + 1]),
  )
  t.is(await k.get(s, 'k'), 600)
  t.is(count.puts, 3)
})

test('other writes of the key made between updates keep their call order (a batch takes no call made after them)', async (t) => {
  const s = await k.newMemStore()
  await k.assoc(s, 'k', 0)
  const events = recordEvents(s)
  const count = countPuts(s)
  const ps = [
    k.update(s, 'k', inc),
    k.update(s, 'k', inc),
    k.assoc(s, 'k', 100),
    k.update(s, 'k', inc),
    k.update(s, 'k', inc),
    k.dissoc(s, 'k'),
    k.update(s, 'k', inc),
  ]
  await Promise.all(ps)
  t.is(await k.get(s, 'k'), 1)
  t.deepEqual(
    events.map((e) => (e as WriteEvent).op),
    ['update', 'update', 'assoc', 'update', 'update', 'dissoc', 'update'],
  )
  t.deepEqual(await ps[4], [101, 102])
  t.true(count.puts <= 4, `${count.puts} writes`)
})

test('close waits for the combined calls', async (t) => {
  const dir = join(tempDir(), 'store')
  const s = await k.connectFsStore(dir)
  const ps = Array.from({ length: 40 }, () => k.update(s, 'k', inc))
  await k.close(s)
  t.is((await Promise.all(ps)).length, 40)
  const again = await k.connectFsStore(dir)
  t.is(await k.get(again, 'k'), 40)
  await k.close(again)
})

// ---- processes ---------------------------------------------------------------------------

for (const wal of [false, true]) {
  test(`native + pure processes, 8 updates in flight each, on one key${wal ? ', wal: true' : ''}: exact, and combined`, async (t) => {
    const dir = join(tempDir(), 'store')
    await k.close(await k.connectFsStore(dir, wal ? { wal: true } : {}))
    const outs = await Promise.all(
      (['native', 'pure'] as const).map((impl) =>
        run(process.execPath, [join(here, 'fixtures', 'combine-incrementer.mjs'), dir, '50', '8', impl, wal ? 'wal' : '']),
      ),
    )
    const puts = outs.reduce((n, o) => n + Number(o.stdout.trim()), 0)
    const s = await k.connectFsStore(dir)
    t.is(await k.get(s, 'counter'), 800)
    t.is((await k.getMeta(s, 'counter'))!.revision, 800)
    t.true(puts < 800, `${puts} writes for 800 updates`)
    t.log(`${puts} writes for 800 updates`)
    await k.close(s)
  })
}
