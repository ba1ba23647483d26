/**
 * The compliance suite: every store runs every check, in sync and in async form.
 * It ports konserve's own compliance checks and adds ours (key types, value
 * types, errors, metadata, concurrency).
 */
import test from 'ava'
import { Readable } from 'node:stream'
import { KonserveError, type Metadata, type Store, addMsgpackExtension, registerSerializer } from 'konserve'
import { type Api, type Mode, api, storeKinds } from './helpers/api.js'
import { redisKinds } from './helpers/redis.js'
import { postgresKinds } from './helpers/postgres.js'
import { s3Kinds } from './helpers/s3.js'

const modes: Mode[] = ['sync', 'async']

function stripLastWrite(ms: Metadata[]) {
  return ms
    .map(({ lastWrite: _l, ...rest }) => rest)
    .sort((a, b) => JSON.stringify(a.key).localeCompare(JSON.stringify(b.key)))
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of stream) chunks.push(Buffer.from(c))
  return Buffer.concat(chunks)
}

/** A user class, stored through a msgpackr extension (konserve uses incognito for records). */
class Point {
  constructor(
    readonly x: number,
    readonly y: number,
  ) {}
  norm(): number {
    return Math.hypot(this.x, this.y)
  }
}
addMsgpackExtension({ Class: Point, type: 42, write: (p: Point) => [p.x, p.y], read: ([x, y]: [number, number]) => new Point(x, y) })

registerSerializer({
  id: 200,
  name: 'upper-json',
  encode: (v) => new TextEncoder().encode(JSON.stringify(v).toUpperCase()),
  decode: (b) => JSON.parse(new TextDecoder().decode(b)),
})

for (const kind of [...storeKinds, ...redisKinds, ...postgresKinds, ...s3Kinds]) {
  for (const mode of kind.modes ?? modes) {
    const title = (s: string) => `${kind.name} ${mode}: ${s}`
    const setup = async (options = {}): Promise<[Store, Api]> => [await kind.open(mode, options), api(mode)]

    test(title('append log: two appends, log, reduceLog, metadata'), async (t) => {
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
    })

    test(title('append to a non-log key is a typed error and changes nothing'), async (t) => {
      const [s, k] = await setup()
      await k.assoc(s, 'plain', 1)
      const err = await t.throwsAsync(k.append(s, 'plain', 2), { instanceOf: KonserveError })
      t.is(err?.code, 'ERR_NOT_A_LOG')
      t.is(err?.key, 'plain')
      await t.throwsAsync(k.log(s, 'plain'), { code: 'ERR_NOT_A_LOG' } as any)
      t.is(await k.get(s, 'plain'), 1)
    })

    test(title('core API: missing keys, overwrite, not-found defaults, updateIn, nested assocIn, dissoc'), async (t) => {
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
    })

    test(title('stored null and false are values, not missing'), async (t) => {
      const [s, k] = await setup()
      await k.assoc(s, 'n', null)
      await k.assoc(s, 'f', false)
      t.is(await k.get(s, 'n', { notFound: 'nf' }), null)
      t.is(await k.get(s, 'f', { notFound: 'nf' }), false)
      t.true(await k.exists(s, 'n'))
    })

    test(title('paths into Maps and arrays'), async (t) => {
      const [s, k] = await setup()
      await k.assoc(s, 'm', new Map<unknown, unknown>([['a', { b: [1, 2, 3] }], [7, 'seven']]))
      t.is(await k.getIn(s, ['m', 7]), 'seven')
      t.is(await k.getIn(s, ['m', 'a', 'b', 1]), 2)
      const [, next] = await k.assocIn(s, ['m', 'a', 'b', 1], 20)
      t.deepEqual((next as Map<string, { b: number[] }>).get('a')!.b, [1, 20, 3])
      const err = await t.throwsAsync(k.assocIn(s, ['m', 7, 'x'], 1))
      t.is((err as KonserveError).code, 'ERR_INVALID_PATH')
      t.is(await k.getIn(s, ['m', 7]), 'seven')
    })

    test(title('updateIn with an async function (async form) or a Promise in sync form'), async (t) => {
      const [s, k] = await setup()
      await k.assoc(s, 'x', 1)
      if (mode === 'async') {
        t.deepEqual(await k.updateIn(s, ['x'], async (v: number) => v + 10), [1, 11])
      } else {
        const err = await t.throwsAsync(k.updateIn(s, ['x'], async (v: number) => v + 10))
        t.is((err as KonserveError).code, 'ERR_INVALID_ARGUMENT')
        t.is(await k.get(s, 'x'), 1)
      }
    })

    test(title('an update function that throws leaves the old value'), async (t) => {
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
    })

    test(title('binary round trip with bassoc and bget'), async (t) => {
      const [s, k] = await setup()
      const bytes = Uint8Array.from({ length: 10 }, (_, i) => i)
      t.true(await k.bassoc(s, 'binbar', bytes))
      const got = await k.bget(s, 'binbar', (b: { size: number; blob?: Buffer; stream?: Readable }) => {
        t.is(b.size, 10)
        if (mode === 'sync') {
          t.true(Buffer.isBuffer(b.blob))
          return Buffer.from(b.blob!)
        }
        t.true(b.stream instanceof Readable)
        return readAll(b.stream!)
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
      const text = await k.bget(s, 'str', (b: { blob?: Buffer; stream?: Readable }) =>
        mode === 'sync' ? b.blob!.toString() : readAll(b.stream!).then((x) => x.toString()),
      )
      t.is(text, 'hello konserve')
      t.deepEqual(Buffer.from((await k.get(s, 'binbar')) as Uint8Array), Buffer.from(bytes))
      t.is((await k.getMeta(s, 'binbar')).type, 'binary')
      await k.assoc(s, 'notbin', 1)
      await t.throwsAsync(k.bget(s, 'notbin', () => 1), { code: 'ERR_NOT_BINARY' } as any)
    })

    test(title('stored bytes are copies: changing the writer or reader buffer changes nothing'), async (t) => {
      const [s, k] = await setup()
      const input = Buffer.from([1, 2, 3])
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
    })

    test(title('keys returns the exact set of metadata'), async (t) => {
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
    })

    test(title('custom metadata is merged on write and kept by updates'), async (t) => {
      const [s, k] = await setup()
      await k.assoc(s, 'doc', 1, { meta: { owner: 'ana', type: 'ignored' } })
      const m1 = await k.getMeta(s, 'doc')
      t.is(m1.owner, 'ana')
      t.is(m1.type, 'value')
      await k.updateIn(s, ['doc'], (x: number) => x + 1)
      t.is((await k.getMeta(s, 'doc')).owner, 'ana')
      await k.assoc(s, 'doc', 5)
      t.is((await k.getMeta(s, 'doc')).owner, undefined, 'assoc rebuilds metadata')
    })

    test(title('revisions: every write counts one up; expectedRevision guards writes'), async (t) => {
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
    })

    // Serial: it moves this process's wall clock (Date.now) back an hour
    // while it runs, and ava runs serial tests alone, before the others.
    test.serial(title('lastWrite never goes backwards, also when the wall clock steps back'), async (t) => {
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
    })

    test(title('multi-key operations'), async (t) => {
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
    })

    test(title('multiAssoc writes nothing when one value cannot be encoded'), async (t) => {
      const [s, k] = await setup()
      const err = await t.throwsAsync(k.multiAssoc(s, [['a', 1], ['b', () => 1]] as Array<[string, unknown]>))
      t.is((err as KonserveError).code, 'ERR_SERIALIZE')
      t.is((err as KonserveError).key, 'b')
      t.false(await k.exists(s, 'a'))
    })

    test(title('every key type round-trips through keys()'), async (t) => {
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
    })

    test(title('invalid keys are typed errors and write nothing'), async (t) => {
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
    })

    test(title('msgpack values: Date, Map, Set, typed arrays, BigInt, cycles'), async (t) => {
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
    })

    test(title('classes round-trip through a msgpackr extension'), async (t) => {
      const [s, k] = await setup()
      await k.assoc(s, 'shape', { corners: [new Point(3, 4), new Point(0, 1)] })
      const back = (await k.get(s, 'shape')) as { corners: Point[] }
      t.true(back.corners[0] instanceof Point)
      t.is(back.corners[0]!.norm(), 5)
      t.deepEqual(await k.updateIn(s, ['shape', 'corners', 1], (p: Point) => new Point(p.x + 1, p.y)), [
        { corners: [new Point(3, 4), new Point(0, 1)] },
        { corners: [new Point(3, 4), new Point(1, 1)] },
      ])
    })

    test(title('unserializable values are typed errors and keep the old value'), async (t) => {
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
    })

    test(title('msgpack refuses strings with a lone surrogate rather than change them; JSON keeps them'), async (t) => {
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
    })

    test(title('JSON and user serializers'), async (t) => {
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
    })

    // Sync calls cannot overlap within one thread, so this runs in async form
    // only; the sync form's exclusion is tested across processes (file-store.spec.ts).
    const per = 'contendedUpdates' in kind && typeof kind.contendedUpdates === 'number' ? kind.contendedUpdates : 1000
    if (mode === 'async') test(title(`concurrency: 8 async updateIn loops x ${per} on one key end at ${8 * per}`), async (t) => {
      const [s, k] = await setup()
      const loops = Array.from({ length: 8 }, async () => {
        for (let i = 0; i < per; i++) await k.updateIn(s, ['counter'], (x?: number) => (x ?? 0) + 1)
      })
      await Promise.all(loops)
      t.is(await k.get(s, 'counter'), 8 * per)
    })

    if ((kind.modes ?? modes).includes('sync')) test(title('a sync write on a key an async op holds fails fast instead of deadlocking'), async (t) => {
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
    })

    test(title('errors carry a code and the key'), async (t) => {
      const [s, k] = await setup()
      const err = await t.throwsAsync(k.getIn(s, 'not-a-path' as unknown as unknown[]))
      t.is((err as KonserveError).code, 'ERR_INVALID_PATH')
      const e2 = (await t.throwsAsync(k.assoc(s, ['k', 1], () => 1))) as KonserveError
      t.true(e2 instanceof KonserveError)
      t.deepEqual(e2.key, ['k', 1])
      t.regex(e2.message, /\["k",1\]/)
    })
  }
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
