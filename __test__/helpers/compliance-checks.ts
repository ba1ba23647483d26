/**
 * The compliance suite's checks, apart from any test runner: each is
 * `{ title, fn(t, env) }` with a small assertion interface `T` (the subset of
 * ava's that the checks use) and an `Env` that opens stores and gives the
 * calling form. __test__/compliance.spec.ts runs every check under ava on the
 * Node stores, in sync and in async form; __test__/browser/compliance-page.ts
 * runs them inside Chromium on connectIdbStore stores (async), reporting to
 * __test__/browser-compliance.spec.ts. No Node built-in and no import of
 * konserve here: what differs between the two (the error class, blob bodies,
 * byte buffers) comes in through `Env`.
 */

/** What the checks assert with: ava's `t`, or the page's recorder (./compliance-t.ts). */
export interface T {
  is(actual: unknown, expected: unknown, message?: string): void
  true(actual: unknown, message?: string): void
  false(actual: unknown, message?: string): void
  deepEqual(actual: unknown, expected: unknown, message?: string): void
  regex(actual: string, re: RegExp, message?: string): void
  /** The error the promise rejected with (undefined, and a failure, when it did not reject or not as expected). */
  throwsAsync(p: Promise<unknown>, expected?: { code?: string; message?: RegExp; instanceOf?: abstract new (...a: never[]) => unknown }, message?: string): Promise<any>
}

/** The API's calls in one calling form (__test__/helpers/api.ts's `api(mode)` in Node). */
type Call = (...args: any[]) => Promise<any>
export type Api = { mode: 'sync' | 'async' } & Record<
  | 'get' | 'getIn' | 'getMeta' | 'exists' | 'assoc' | 'assocIn' | 'update' | 'updateIn' | 'dissoc' | 'keys'
  | 'bassoc' | 'bget' | 'readBlob' | 'trimLog' | 'append' | 'log' | 'reduceLog' | 'multiGet' | 'multiAssoc' | 'multiDissoc',
  Call
>

/** What `bget` hands its callback. */
export interface BlobArg {
  size: number
  blob?: Uint8Array
  stream?: unknown
  web?: ReadableStream<Uint8Array>
}

export interface Env {
  mode: 'sync' | 'async'
  /** The calling forms the store kind has. */
  modes: ReadonlyArray<'sync' | 'async'>
  /** A new, empty store (with these options) and the API in this env's form. */
  setup(options?: Record<string, unknown>): Promise<[any, Api]>
  /** The API in a given form. */
  api(mode: 'sync' | 'async'): Api
  /** The entry's error class. */
  KonserveError: abstract new (...a: never[]) => Error
  /** A blob's whole bytes from what bget hands its callback, asserting its form (a Buffer in sync form, a stream in async form). */
  body(t: T, b: BlobArg): Uint8Array | Promise<Uint8Array>
  /** Bytes as a user of this platform has them (a Buffer in Node). */
  bytes(values: number[]): Uint8Array
  /** updateIn calls per loop in the contention check (default 1000; fewer for a store that pays HTTP requests per update). */
  contendedUpdates?: number
}

export interface Check {
  title: string
  /** Runs alone (it moves the wall clock). */
  serial?: boolean
  /** Runs only where this holds. */
  when?: (env: Env) => boolean
  fn(t: T, env: Env): Promise<void>
}

/** A user class, stored through a msgpackr extension (konserve uses incognito for records). */
export class Point {
  constructor(
    readonly x: number,
    readonly y: number,
  ) {}
  norm(): number {
    return Math.hypot(this.x, this.y)
  }
}

/** Registers the checks' msgpack extension and user serializer with the library (once per process or page). */
export function registerFixtures(lib: { addMsgpackExtension(e: any): void; registerSerializer(s: any): void }): void {
  lib.addMsgpackExtension({ Class: Point, type: 42, write: (p: Point) => [p.x, p.y], read: ([x, y]: [number, number]) => new Point(x, y) })
  lib.registerSerializer({
    id: 200,
    name: 'upper-json',
    encode: (v: unknown) => new TextEncoder().encode(JSON.stringify(v).toUpperCase()),
    decode: (b: Uint8Array) => JSON.parse(new TextDecoder().decode(b)),
  })
}

/** The error's fields the checks read (the class itself comes through Env). */
type KonserveError = Error & { code?: string; key?: unknown; actualRevision?: number }

type Metadata = { key: unknown; lastWrite: Date; [f: string]: unknown }

function stripLastWrite(ms: Metadata[]) {
  return ms
    .map(({ lastWrite: _l, ...rest }) => rest)
    .sort((a, b) => JSON.stringify(a.key).localeCompare(JSON.stringify(b.key)))
}

function normalize(v: unknown): unknown {
  if (v instanceof Uint8Array) return { bytes: [...v] }
  if (Array.isArray(v)) return v.map(normalize)
  if (v && typeof v === 'object') {
    return Object.fromEntries(Object.keys(v).sort().map((key) => [key, normalize((v as Record<string, unknown>)[key])]))
  }
  if (typeof v === 'string') return `s:${v}`
  return v
}

export const checks: Check[] = [
  {
    title: 'append log: two appends, log, reduceLog, metadata',
    fn: async (t, env) => {
      const { setup } = env
      const [s, k] = await setup()
      t.is(await k.append(s, 'foolog', { bar: 42 }), 1)
      t.is(await k.append(s, 'foolog', { bar: 43 }), 2)
      t.deepEqual(await k.log(s, 'foolog'), [{ bar: 42 }, { bar: 43 }])
      t.deepEqual(await k.reduceLog(s, 'foolog', (acc: unknown[], e: unknown) => [...acc, e], []), [{ bar: 42 }, { bar: 43 }])
      t.is(await k.reduceLog(s, 'foolog', (acc: number, e: { bar: number }) => acc + e.bar, 0), 85)
      const meta = await k.getMeta(s, 'foolog')
      t.is(meta.key, 'foolog')
      t.is(meta.type, 'append-log')
      t.true(meta.lastWrite instanceof Date)
      t.is(await k.log(s, 'nolog'), undefined)
      t.is(await k.reduceLog(s, 'nolog', (a: number) => a + 1, 7), 7)
    },
  },

  {
    title: 'append to a non-log key is a typed error and changes nothing',
    fn: async (t, env) => {
      const { setup, KonserveError } = env
      const [s, k] = await setup()
      await k.assoc(s, 'plain', 1)
      const err = await t.throwsAsync(k.append(s, 'plain', 2), { instanceOf: KonserveError })
      t.is(err?.code, 'ERR_NOT_A_LOG')
      t.is(err?.key, 'plain')
      await t.throwsAsync(k.log(s, 'plain'), { code: 'ERR_NOT_A_LOG' } as any)
      t.is(await k.get(s, 'plain'), 1)
    },
  },

  {
    title: 'core API: missing keys, overwrite, not-found defaults, updateIn, nested assocIn, dissoc',
    fn: async (t, env) => {
      const { setup } = env
      const [s, k] = await setup()
      t.is(await k.get(s, 'foo'), undefined)
      t.false(await k.exists(s, 'foo'))
      t.is(await k.getMeta(s, 'foo'), undefined)
      t.deepEqual(await k.assoc(s, 'foo', 'bar'), [undefined, 'bar'])
      t.true(await k.exists(s, 'foo'))
      t.is(await k.get(s, 'foo'), 'bar')
      t.deepEqual(await k.assocIn(s, ['foo'], 'bar2'), ['bar', 'bar2'])
      t.is(await k.get(s, 'foo'), 'bar2')
      t.is(await k.getIn(s, ['fuu'], 'default'), 'default')
      t.is(await k.get(s, 'fuu', { notFound: 'nf' }), 'nf')
      t.deepEqual(await k.updateIn(s, ['foo'], (x: string) => x.toUpperCase()), ['bar2', 'BAR2'])
      t.deepEqual(await k.assocIn(s, ['baz'], { bar: 42 }), [undefined, { bar: 42 }])
      t.deepEqual(await k.assocIn(s, ['baz', 'barf'], 43), [{ bar: 42 }, { bar: 42, barf: 43 }])
      t.is(await k.getIn(s, ['baz', 'bar']), 42)
      t.is(await k.getIn(s, ['baz', 'nope'], 'nf'), 'nf')
      t.is(await k.getIn(s, ['baz', 'bar', 'deeper'], 'nf'), 'nf')
      t.deepEqual(await k.updateIn(s, ['baz', 'bar'], (x: number) => x + 1), [
        { bar: 42, barf: 43 },
        { bar: 43, barf: 43 },
      ])
      t.deepEqual(await k.updateIn(s, ['baz', 'bar'], (x: number) => x + 2 + 3), [
        { bar: 43, barf: 43 },
        { bar: 48, barf: 43 },
      ])
      t.deepEqual(await k.update(s, 'counter', (x?: number) => (x ?? 0) + 1), [undefined, 1])
      t.deepEqual(await k.assocIn(s, ['deep', 'a', 'b'], 1), [undefined, { a: { b: 1 } }])
      t.true(await k.dissoc(s, 'foo'))
      t.false(await k.dissoc(s, 'not-there'))
      t.is(await k.getIn(s, ['foo']), undefined)
      t.false(await k.exists(s, 'foo'))
    },
  },

  {
    title: 'stored null and false are values, not missing',
    fn: async (t, env) => {
      const { setup } = env
      const [s, k] = await setup()
      await k.assoc(s, 'n', null)
      await k.assoc(s, 'f', false)
      t.is(await k.get(s, 'n', { notFound: 'nf' }), null)
      t.is(await k.get(s, 'f', { notFound: 'nf' }), false)
      t.true(await k.exists(s, 'n'))
    },
  },

  {
    title: 'paths into Maps and arrays',
    fn: async (t, env) => {
      const { setup } = env
      const [s, k] = await setup()
      await k.assoc(s, 'm', new Map<unknown, unknown>([['a', { b: [1, 2, 3] }], [7, 'seven']]))
      t.is(await k.getIn(s, ['m', 7]), 'seven')
      t.is(await k.getIn(s, ['m', 'a', 'b', 1]), 2)
      const [, next] = await k.assocIn(s, ['m', 'a', 'b', 1], 20)
      t.deepEqual((next as Map<string, { b: number[] }>).get('a')!.b, [1, 20, 3])
      const err = await t.throwsAsync(k.assocIn(s, ['m', 7, 'x'], 1))
      t.is((err as KonserveError).code, 'ERR_INVALID_PATH')
      t.is(await k.getIn(s, ['m', 7]), 'seven')
    },
  },

  {
    title: 'updateIn with an async function (async form) or a Promise in sync form',
    fn: async (t, env) => {
      const { setup, mode } = env
      const [s, k] = await setup()
      await k.assoc(s, 'x', 1)
      if (mode === 'async') {
        t.deepEqual(await k.updateIn(s, ['x'], async (v: number) => v + 10), [1, 11])
      } else {
        const err = await t.throwsAsync(k.updateIn(s, ['x'], async (v: number) => v + 10))
        t.is((err as KonserveError).code, 'ERR_INVALID_ARGUMENT')
        t.is(await k.get(s, 'x'), 1)
      }
    },
  },

  {
    title: 'an update function that throws leaves the old value',
    fn: async (t, env) => {
      const { setup } = env
      const [s, k] = await setup()
      await k.assoc(s, 'x', { a: 1 })
      await t.throwsAsync(
        k.updateIn(s, ['x', 'a'], () => {
          throw new Error('boom')
        }),
        { message: /boom/ },
      )
      t.deepEqual(await k.get(s, 'x'), { a: 1 })
      // and the lock was released
      t.deepEqual(await k.updateIn(s, ['x', 'a'], (v: number) => v + 1), [{ a: 1 }, { a: 2 }])
    },
  },

  {
    title: 'binary round trip with bassoc and bget',
    fn: async (t, env) => {
      const { setup, mode, body } = env
      const [s, k] = await setup()
      const bytes = Uint8Array.from({ length: 10 }, (_, i) => i)
      t.true(await k.bassoc(s, 'binbar', bytes))
      const got = await k.bget(s, 'binbar', (b: BlobArg) => {
        t.is(b.size, 10)
        return body(t, b)
      })
      t.deepEqual([...got], [...bytes])
      if (mode === 'sync') {
        const err = await t.throwsAsync(k.bget(s, 'binbar', async () => 1))
        t.is((err as KonserveError).code, 'ERR_INVALID_ARGUMENT', 'a sync bget callback must not return a Promise')
      }
      let called = false
      t.is(
        await k.bget(s, 'nobin', () => {
          called = true
        }),
        undefined,
      )
      t.false(called)
      t.true(await k.bassoc(s, 'str', 'hello konserve'))
      const text = new TextDecoder().decode(await k.bget(s, 'str', (b: BlobArg) => body(t, b)))
      t.is(text, 'hello konserve')
      t.deepEqual([...((await k.get(s, 'binbar')) as Uint8Array)], [...bytes])
      t.is((await k.getMeta(s, 'binbar')).type, 'binary')
      await k.assoc(s, 'notbin', 1)
      await t.throwsAsync(k.bget(s, 'notbin', () => 1), { code: 'ERR_NOT_BINARY' } as any)
    },
  },

  {
    title: 'stored bytes are copies: changing the writer or reader buffer changes nothing',
    fn: async (t, env) => {
      const { setup, bytes } = env
      const [s, k] = await setup()
      const input = bytes([1, 2, 3])
      await k.bassoc(s, 'b', input)
      input[0] = 99
      const got = (await k.get(s, 'b')) as Uint8Array
      t.deepEqual([...got], [1, 2, 3])
      got[1] = 77
      t.deepEqual([...((await k.get(s, 'b')) as Uint8Array)], [1, 2, 3])
      const doc = { list: [1] }
      await k.assoc(s, 'doc', doc)
      doc.list.push(2)
      t.deepEqual(await k.get(s, 'doc'), { list: [1] })
    },
  },

  {
    title: 'keys returns the exact set of metadata',
    fn: async (t, env) => {
      const { setup } = env
      const [s, k] = await setup()
      t.deepEqual(await k.keys(s), [])
      await k.assocIn(s, ['baz'], { bar: 42 })
      await k.bassoc(s, 'binbar', new Uint8Array([1, 2, 3]))
      await k.append(s, 'foolog', { bar: 42 })
      await k.append(s, 'foolog', { bar: 43 })
      const all = await k.keys(s)
      t.deepEqual(stripLastWrite(all), [
        { key: 'baz', type: 'value', revision: 1 },
        { key: 'binbar', type: 'binary', revision: 1 },
        { key: 'foolog', type: 'append-log', revision: 2 },
      ])
      for (const m of all) t.true(m.lastWrite instanceof Date)
    },
  },

  {
    title: 'custom metadata is merged on write and kept by updates',
    fn: async (t, env) => {
      const { setup } = env
      const [s, k] = await setup()
      await k.assoc(s, 'doc', 1, { meta: { owner: 'ana', type: 'ignored' } })
      const m1 = await k.getMeta(s, 'doc')
      t.is(m1.owner, 'ana')
      t.is(m1.type, 'value')
      await k.updateIn(s, ['doc'], (x: number) => x + 1)
      t.is((await k.getMeta(s, 'doc')).owner, 'ana')
      await k.assoc(s, 'doc', 5)
      t.is((await k.getMeta(s, 'doc')).owner, undefined, 'assoc rebuilds metadata')
    },
  },

  {
    title: 'revisions: every write counts one up; expectedRevision guards writes',
    fn: async (t, env) => {
      const { setup } = env
      const [s, k] = await setup()
      const rev = async (key: string) => (await k.getMeta(s, key))?.revision
      await k.assoc(s, 'doc', { n: 1 })
      t.is(await rev('doc'), 1)
      await k.assocIn(s, ['doc', 'n'], 2)
      await k.updateIn(s, ['doc', 'n'], (n: number) => n + 1)
      await k.assoc(s, 'doc', { n: 10 }, { meta: { revision: 99 } })
      t.is(await rev('doc'), 4, 'replacing writes count on; user metadata cannot set the revision')
      // A mismatch: typed error, the function never runs, nothing is written.
      let ran = false
      const err = (await t.throwsAsync(
        k.updateIn(s, ['doc', 'n'], () => {
          ran = true
          return 0
        }, { expectedRevision: 3 }),
      )) as KonserveError
      t.is(err.code, 'ERR_REVISION_MISMATCH')
      t.is(err.actualRevision, 4)
      t.is(err.key, 'doc')
      t.false(ran)
      t.deepEqual(await k.get(s, 'doc'), { n: 10 })
      for (const attempt of [
        () => k.assoc(s, 'doc', 'x', { expectedRevision: 1 }),
        () => k.assocIn(s, ['doc', 'n'], 0, { expectedRevision: 5 }),
        () => k.update(s, 'doc', () => 0, { expectedRevision: 0 }),
        () => k.bassoc(s, 'doc', new Uint8Array([1]), { expectedRevision: 2 }),
        () => k.dissoc(s, 'doc', { expectedRevision: 3 }),
      ]) {
        t.is(((await t.throwsAsync(attempt())) as KonserveError).code, 'ERR_REVISION_MISMATCH')
      }
      t.deepEqual(await k.get(s, 'doc'), { n: 10 })
      t.is(await rev('doc'), 4)
      // The right revision writes.
      t.deepEqual(await k.updateIn(s, ['doc', 'n'], (n: number) => n + 1, { expectedRevision: 4 }), [{ n: 10 }, { n: 11 }])
      t.is(await rev('doc'), 5)
      // 0: the key must not exist yet.
      await k.assoc(s, 'fresh', 1, { expectedRevision: 0 })
      t.is(((await t.throwsAsync(k.assoc(s, 'fresh', 2, { expectedRevision: 0 }))) as KonserveError).code, 'ERR_REVISION_MISMATCH')
      t.is(await k.get(s, 'fresh'), 1)
      await k.append(s, 'log', 'a', { expectedRevision: 0 })
      await k.append(s, 'log', 'b', { expectedRevision: 1 })
      t.is(((await t.throwsAsync(k.append(s, 'log', 'c', { expectedRevision: 1 }))) as KonserveError).code, 'ERR_REVISION_MISMATCH')
      t.deepEqual(await k.log(s, 'log'), ['a', 'b'])
      t.true(await k.dissoc(s, 'fresh', { expectedRevision: 1 }))
      // A deleted key starts over.
      await k.assoc(s, 'fresh', 3, { expectedRevision: 0 })
      t.is(await rev('fresh'), 1)
      await k.multiAssoc(s, { fresh: 4, other: 5 })
      t.is(await rev('fresh'), 2)
      t.is(await rev('other'), 1)
    },
  },

  // Serial: it moves this process's wall clock (Date.now) back an hour
  // while it runs, and ava runs serial tests alone, before the others.
  {
    title: 'lastWrite never goes backwards, also when the wall clock steps back',
    serial: true,
    fn: async (t, env) => {
      const { setup } = env
      const [s, k] = await setup()
      const realNow = Date.now
      let prev = 0
      const check = async (i: number) => {
        await k.assoc(s, `k${i % 3}`, i)
        const m = await k.getMeta(s, `k${i % 3}`)
        t.true(m.lastWrite.getTime() >= prev, `write ${i}: lastWrite ${m.lastWrite.getTime()} is behind ${prev}`)
        prev = m.lastWrite.getTime()
      }
      try {
        for (let i = 0; i < 10; i++) await check(i)
        // The wall clock steps back an hour (an NTP correction, a VM restore).
        const back = realNow() - 3_600_000
        Date.now = () => back
        t.true(Date.now() < prev, 'the clock is now behind the last stamp')
        for (let i = 10; i < 20; i++) await check(i)
      } finally {
        Date.now = realNow
      }
      // The clock comes back: stamps go on from the real time.
      await check(20)
    },
  },

  {
    title: 'multi-key operations',
    fn: async (t, env) => {
      const { setup } = env
      const [s, k] = await setup()
      t.deepEqual(
        await k.multiAssoc(s, { multi1: 42, multi2: 'value' }),
        new Map<unknown, unknown>([
          ['multi1', true],
          ['multi2', true],
        ]),
      )
      t.is(await k.get(s, 'multi1'), 42)
      t.is(await k.get(s, 'multi2'), 'value')
      const ordered: Array<[unknown, unknown]> = [
        [['ord', 1], 'a'],
        [['ord', 2], 'b'],
      ]
      t.deepEqual(
        await k.multiAssoc(s, ordered, { meta: { immutable: true } }),
        new Map<unknown, unknown>([
          [ordered[0]![0], true],
          [ordered[1]![0], true],
        ]),
      )
      await k.assoc(s, 'ord-root', 'r')
      t.true((await k.getMeta(s, ['ord', 1])).immutable)
      t.is((await k.getMeta(s, 'ord-root')).immutable, undefined)
      t.deepEqual(
        await k.multiGet(s, ['multi1', 'multi2', 'nope']),
        new Map<unknown, unknown>([
          ['multi1', 42],
          ['multi2', 'value'],
        ]),
      )
      t.deepEqual(await k.multiGet(s, ['nope', 'nada']), new Map())
      t.deepEqual(await k.multiGet(s, []), new Map())
      t.deepEqual(
        await k.multiDissoc(s, ['multi1', 'nope']),
        new Map<unknown, unknown>([
          ['multi1', true],
          ['nope', false],
        ]),
      )
      t.false(await k.exists(s, 'multi1'))
      t.true(await k.exists(s, 'multi2'))
      t.deepEqual(await k.multiDissoc(s, ['gone1', 'gone2']), new Map<unknown, unknown>([['gone1', false], ['gone2', false]]))
    },
  },

  {
    title: 'multiAssoc writes nothing when one value cannot be encoded',
    fn: async (t, env) => {
      const { setup } = env
      const [s, k] = await setup()
      const err = await t.throwsAsync(k.multiAssoc(s, [['a', 1], ['b', () => 1]] as Array<[string, unknown]>))
      t.is((err as KonserveError).code, 'ERR_SERIALIZE')
      t.is((err as KonserveError).key, 'b')
      t.false(await k.exists(s, 'a'))
    },
  },

  {
    title: 'every key type round-trips through keys()',
    fn: async (t, env) => {
      const { setup } = env
      const [s, k] = await setup()
      const ks: unknown[] = [
        'plain',
        '',
        42,
        -7.5,
        true,
        false,
        null,
        new Uint8Array([0, 1, 255]),
        ['user', 42, null, [true]],
        { b: 1, a: [2, { c: 'd' }] },
        '../../etc/passwd',
        '/absolute/path',
        'nul\u0000byte',
        'CON',
        'lone \uD800 surrogate',
        '😀 emoji',
        'x'.repeat(100_000),
      ]
      for (const [i, key] of ks.entries()) await k.assoc(s, key, i)
      for (const [i, key] of ks.entries()) t.is(await k.get(s, key), i, `key ${i}`)
      const listed = await k.keys(s)
      t.is(listed.length, ks.length)
      for (const [i, key] of ks.entries()) {
        t.true(
          listed.some((m: Metadata) => {
            try {
              return JSON.stringify(normalize(m.key)) === JSON.stringify(normalize(key))
            } catch {
              return false
            }
          }),
          `key ${i} listed`,
        )
      }
      // strings and bytes, 1 and 1.0, -0 and 0 follow the canonical encoding
      await k.assoc(s, 'a', 'string-a')
      await k.assoc(s, new Uint8Array([0x61]), 'bytes-a')
      t.is(await k.get(s, 'a'), 'string-a')
      await k.assoc(s, -0, 'zero')
      t.is(await k.get(s, 0), 'zero')
      t.is(await k.get(s, { a: 2, b: 1 }), undefined)
      await k.assoc(s, { a: 2, b: 1 }, 'obj')
      t.is(await k.get(s, { b: 1, a: 2 }), 'obj', 'object key order does not matter')
    },
  },

  {
    title: 'invalid keys are typed errors and write nothing',
    fn: async (t, env) => {
      const { setup } = env
      const [s, k] = await setup()
      class Thing {}
      const bad: unknown[] = [undefined, () => 1, Symbol('s'), new Date(), new Map(), new Set(), new Thing(), 10n, ['ok', () => 1], { a: Symbol('x') }]
      for (const key of bad) {
        const err = await t.throwsAsync(k.assoc(s, key, 1))
        t.is((err as KonserveError).code, 'ERR_INVALID_KEY', String(key?.toString?.() ?? key))
      }
      const cyclic: unknown[] = []
      cyclic.push(cyclic)
      t.is(((await t.throwsAsync(k.assoc(s, cyclic, 1))) as KonserveError).code, 'ERR_INVALID_KEY')
      t.deepEqual(await k.keys(s), [])
    },
  },

  {
    title: 'msgpack values: Date, Map, Set, typed arrays, BigInt, cycles',
    fn: async (t, env) => {
      const { setup } = env
      const [s, k] = await setup()
      const cyclic: Record<string, unknown> = { name: 'loop' }
      cyclic.self = cyclic
      const value = {
        date: new Date(1700000000123),
        map: new Map<unknown, unknown>([[1, 'one'], ['k', { nested: true }]]),
        set: new Set([1, 'two']),
        u8: new Uint8Array([1, 2, 3]),
        f64: new Float64Array([1.5, -2]),
        i32: new Int32Array([-1, 7]),
        big: 12345678901234567890n,
        small: 5n,
        list: [1, 'a', null, { x: [true] }],
        unicode: 'héllo 😀',
      }
      await k.assoc(s, 'v', value)
      t.deepEqual(await k.get(s, 'v'), value)
      await k.assoc(s, 'cyc', cyclic)
      const back = (await k.get(s, 'cyc')) as Record<string, unknown>
      t.is(back.self, back)
    },
  },

  {
    title: 'classes round-trip through a msgpackr extension',
    fn: async (t, env) => {
      const { setup } = env
      const [s, k] = await setup()
      await k.assoc(s, 'shape', { corners: [new Point(3, 4), new Point(0, 1)] })
      const back = (await k.get(s, 'shape')) as { corners: Point[] }
      t.true(back.corners[0] instanceof Point)
      t.is(back.corners[0]!.norm(), 5)
      t.deepEqual(await k.updateIn(s, ['shape', 'corners', 1], (p: Point) => new Point(p.x + 1, p.y)), [
        { corners: [new Point(3, 4), new Point(0, 1)] },
        { corners: [new Point(3, 4), new Point(1, 1)] },
      ])
    },
  },

  {
    title: 'unserializable values are typed errors and keep the old value',
    fn: async (t, env) => {
      const { setup } = env
      const [s, k] = await setup()
      await k.assoc(s, 'v', 'old')
      for (const bad of [() => 1, { f: () => 1 }, Symbol('x'), [Symbol('y')], new Map([['f', () => 1]])]) {
        const err = await t.throwsAsync(k.assoc(s, 'v', bad))
        t.is((err as KonserveError).code, 'ERR_SERIALIZE')
        t.is((err as KonserveError).key, 'v')
      }
      t.is(await k.get(s, 'v'), 'old')
      const err = await t.throwsAsync(k.updateIn(s, ['v'], () => () => 1))
      t.is((err as KonserveError).code, 'ERR_SERIALIZE')
      t.is(await k.get(s, 'v'), 'old')
    },
  },

  {
    title: 'msgpack refuses strings with a lone surrogate rather than change them; JSON keeps them',
    fn: async (t, env) => {
      const { setup } = env
      const [s, k] = await setup()
      await k.assoc(s, 'v', 'old')
      for (const bad of ['a\uD83Db', { text: 'x\uDC00' }, { 'key\uD800': 1 }, new Map([['m', ['\uDFFF']]]), new Set(['\uD83D'])]) {
        const err = (await t.throwsAsync(k.assoc(s, 'v', bad))) as KonserveError
        t.is(err.code, 'ERR_SERIALIZE')
        t.regex(err.message, /lone UTF-16 surrogate/)
      }
      t.is(await k.get(s, 'v'), 'old')
      await k.assoc(s, 'emoji', 'paired \uD83D\uDE00 is fine')
      t.is(await k.get(s, 'emoji'), 'paired \uD83D\uDE00 is fine')
      const [js] = await setup({ serializer: 'json' })
      await k.assoc(js, 'lone', { text: 'a\uD83Db' })
      t.deepEqual(await k.get(js, 'lone'), { text: 'a\uD83Db' })
    },
  },

  {
    title: 'JSON and user serializers',
    fn: async (t, env) => {
      const { setup } = env
      const [js, k] = await setup({ serializer: 'json' })
      await k.assoc(js, 'j', { a: [1, 2], s: 'x' })
      t.deepEqual(await k.get(js, 'j'), { a: [1, 2], s: 'x' })
      t.is(((await t.throwsAsync(k.assoc(js, 'cyc', (() => { const o: any = {}; o.o = o; return o })()))) as KonserveError).code, 'ERR_SERIALIZE')
      const [us] = await setup({
        serializer: {
          id: 201,
          name: 'reverse-json',
          encode: (v: unknown) => new TextEncoder().encode([...JSON.stringify(v)].reverse().join('')),
          decode: (b: Uint8Array) => JSON.parse([...new TextDecoder().decode(b)].reverse().join('')),
        },
      })
      await k.assoc(us, 'u', { hello: 'world' })
      t.deepEqual(await k.get(us, 'u'), { hello: 'world' })
    },
  },

  // Sync calls cannot overlap within one thread, so this runs in async form
  // only; the sync form's exclusion is tested across processes (file-store.spec.ts).
  {
    title: 'concurrency: 8 async updateIn loops on one key (x 1000, or the kind\'s contendedUpdates) end exact',
    when: (env) => env.mode === 'async',
    fn: async (t, env) => {
      const { setup } = env
      const per = env.contendedUpdates ?? 1000
      const [s, k] = await setup()
      const loops = Array.from({ length: 8 }, async () => {
        for (let i = 0; i < per; i++) await k.updateIn(s, ['counter'], (x?: number) => (x ?? 0) + 1)
      })
      await Promise.all(loops)
      t.is(await k.get(s, 'counter'), 8 * per)
    },
  },

  {
    title: 'a sync write on a key an async op holds fails fast instead of deadlocking',
    when: (env) => env.modes.includes('sync'),
    fn: async (t, env) => {
      const { setup, api } = env
      const [s, k] = await setup()
      await k.assoc(s, 'x', 0)
      const sk = api('sync')
      let inside!: () => void
      const entered = new Promise<void>((r) => (inside = r))
      // The async update holds the lock until the sync write has been refused.
      let letGo!: () => void
      const held = new Promise<void>((r) => (letGo = r))
      const pending = api('async').updateIn(s, ['x'], async (v: number) => {
        inside()
        await held
        return v + 1
      })
      await entered
      const err = await t.throwsAsync(sk.assoc(s, 'x', 99))
      letGo()
      t.is((err as KonserveError).code, 'ERR_LOCK_BUSY')
      await pending
      t.is(await k.get(s, 'x'), 1)
      await sk.assoc(s, 'x', 2)
      t.is(await k.get(s, 'x'), 2)
    },
  },

  {
    title: 'errors carry a code and the key',
    fn: async (t, env) => {
      const { setup, KonserveError } = env
      const [s, k] = await setup()
      const err = await t.throwsAsync(k.getIn(s, 'not-a-path' as unknown as unknown[]))
      t.is((err as KonserveError).code, 'ERR_INVALID_PATH')
      const e2 = (await t.throwsAsync(k.assoc(s, ['k', 1], () => 1))) as KonserveError
      t.true(e2 instanceof KonserveError)
      t.deepEqual(e2.key, ['k', 1])
      t.regex(e2.message, /\["k",1\]/)
    },
  },
]

