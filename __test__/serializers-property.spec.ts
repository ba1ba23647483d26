/**
 * Serializers never change a value (issue #12.8): for every built-in
 * serializer and arbitrary values (typed arrays, Maps, Sets, Dates, BigInts,
 * NaN, -0, sparse arrays, null prototypes, __proto__ keys, boxed values,
 * class instances, nested), decode(encode(v)) is exactly v (Object.is on
 * every leaf, the same prototypes) or encode refuses it with ERR_SERIALIZE
 * saying where. Values each one can store are stored, not refused.
 */
import test from 'ava'
import fc from 'fast-check'
import * as k from 'konserve'

const serializers = [k.jsonSerializer(), k.msgpackSerializer(), k.cborSerializer()]

class Point {
  constructor(
    public x: number,
    public y: number,
  ) {}
}
class Unregistered {
  a = 1
}
class Registered {
  constructor(public v: number) {}
}
k.addMsgpackExtension({ Class: Registered, type: 43, write: (r: Registered) => r.v, read: (v: number) => new Registered(v) } as any)

/**
 * Whether `b` is exactly `a`: Object.is on primitives, the same prototype for
 * objects, the same own enumerable string keys in the same order, holes where
 * `a` has holes, Map and Set entries in order. Errors compare by class,
 * message and cause (their stack is not part of the value).
 */
let copiesShared = false
function same(a: unknown, b: unknown, pairs = new Map<object, object>()): boolean {
  if (Object.is(a, b)) return true
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false
  // A sub-value met again: it must be read back as the same object (msgpack
  // keeps shared references and cycles) or an equal copy (JSON, which has no
  // cycles, writes a shared object twice).
  const seen = pairs.get(a)
  if (seen === b) return true
  if (seen !== undefined && !copiesShared) return false
  pairs.set(a, b)
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return false
  if (a instanceof Date) return Object.is(a.getTime(), (b as Date).getTime())
  if (a instanceof RegExp) return a.source === (b as RegExp).source && a.flags === (b as RegExp).flags && a.lastIndex === (b as RegExp).lastIndex
  if (a instanceof Error) {
    const e = b as Error
    if (a.message !== e.message || Object.hasOwn(a, 'cause') !== Object.hasOwn(e, 'cause')) return false
    if (Object.hasOwn(a, 'cause') && !same(a.cause, e.cause, pairs)) return false
  }
  if (a instanceof ArrayBuffer) return Buffer.from(a).equals(Buffer.from(b as ArrayBuffer))
  if (ArrayBuffer.isView(a)) {
    const x = a as unknown as ArrayLike<unknown>
    const y = b as unknown as ArrayLike<unknown>
    if (a instanceof DataView) return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from((b as DataView).buffer, (b as DataView).byteOffset, (b as DataView).byteLength))
    if (x.length !== y.length) return false
    for (let i = 0; i < x.length; i++) if (!Object.is(x[i], y[i])) return false
    return true
  }
  if (a instanceof Map) {
    const x = [...a]
    const y = [...(b as Map<unknown, unknown>)]
    return x.length === y.length && x.every(([k1, v1], i) => same(k1, y[i]![0], pairs) && same(v1, y[i]![1], pairs))
  }
  if (a instanceof Set) {
    const x = [...a]
    const y = [...(b as Set<unknown>)]
    return x.length === y.length && x.every((v, i) => same(v, y[i], pairs))
  }
  if (Array.isArray(a) && (a.length !== (b as unknown[]).length)) return false
  if (Object.prototype.toString.call(a) !== Object.prototype.toString.call(b)) return false
  const ka = Reflect.ownKeys(a).filter((key) => Object.prototype.propertyIsEnumerable.call(a, key))
  const kb = Reflect.ownKeys(b).filter((key) => Object.prototype.propertyIsEnumerable.call(b, key))
  if (ka.length !== kb.length || ka.some((key, i) => key !== kb[i])) return false
  // Boxed primitives: their value, not their (absent) keys.
  if (a instanceof Number || a instanceof String || a instanceof Boolean || a instanceof BigInt) {
    if (!Object.is(a.valueOf(), (b as typeof a).valueOf())) return false
  }
  return ka.every((key) => same((a as Record<PropertyKey, unknown>)[key], (b as Record<PropertyKey, unknown>)[key], pairs))
}

/** The outcome of storing `v`: 'exact', or 'refused' (with the error), or a failure message. */
function roundTrip(s: k.Serializer, v: unknown): { ok: true; refused?: k.KonserveError } | { ok: false; why: string } {
  let bytes: Uint8Array
  try {
    bytes = s.encode(v)
  } catch (err) {
    if (err instanceof k.KonserveError && err.code === 'ERR_SERIALIZE') {
      if (!/\(at [^)]*\)/.test(err.message)) return { ok: false, why: `refused without saying where: ${err.message}` }
      return { ok: true, refused: err }
    }
    return { ok: false, why: `encode threw ${(err as Error)?.constructor?.name}: ${(err as Error)?.message}` }
  }
  let back: unknown
  try {
    back = s.decode(bytes)
  } catch (err) {
    return { ok: false, why: `decode threw: ${(err as Error).message}` }
  }
  return same(v, back) ? { ok: true } : { ok: false, why: 'read back changed' }
}

const extraValues = [
  fc.bigInt(),
  fc.date({ noInvalidDate: false }),
  fc.constantFrom(-0, 0, NaN, Infinity, -Infinity, undefined, null, 2 ** 53 + 2, -(2 ** 63), Number.MIN_VALUE),
  fc.constant(null).map(() => new Point(1, -0)),
  fc.constant(null).map(() => new Unregistered()),
  fc.integer().map((n) => new Registered(n)),
  fc.constantFrom(/a+/gi, /x/),
  fc.constant(null).map(() => Object.assign(/y/g, { lastIndex: 1 })),
  fc.string().map((m) => new Error(m)),
  fc.string().map((m) => new TypeError(m, { cause: -0 })),
  fc.string().map((m) => Object.assign(new RangeError(m), { code: 'E' })),
  fc.uint8Array().map((u) => Buffer.from(u)),
  fc.uint8Array().map((u) => u.slice().buffer),
  fc.uint8Array().map((u) => new DataView(u.slice().buffer)),
  fc.constant(null).map(() => Object.assign([1, 2], { named: true })),
  fc.constant(null).map(() => ({ [Symbol('s')]: 1, a: 1 })),
  fc.constant(null).map(() => JSON.parse('{"__proto__": {"polluted": true}, "b": 1}')),
  fc.constant(null).map(() => new Map([[-0, -0]])),
  fc.string({ unit: 'binary' }),
]

const anything = fc.anything({
  maxDepth: 3,
  withBigInt: true,
  withBoxedValues: true,
  withDate: true,
  withMap: true,
  withNullPrototype: true,
  withObjectString: true,
  withSet: true,
  withSparseArray: true,
  withTypedArray: true,
  stringUnit: 'binary',
  key: fc.oneof(fc.string({ unit: 'binary' }), fc.constantFrom('__proto__', 'constructor', 'toString', '0', '10', 'length', '')),
  values: [fc.boolean(), fc.integer(), fc.double(), fc.string(), ...extraValues],
})

for (const s of serializers) {
  test(`${s.name}: decode(encode(v)) is exactly v, or encode refuses it with ERR_SERIALIZE saying where`, (t) => {
    let refused = 0
    let stored = 0
    fc.assert(
      fc.property(anything, (v) => {
        copiesShared = s.name === 'json'
        const r = roundTrip(s, v)
        if (!r.ok) {
          t.log(r.why)
          return false
        }
        if (r.refused) refused++
        else stored++
        return true
      }),
      { numRuns: 3000 },
    )
    t.log(`${stored} stored exactly, ${refused} refused`)
    t.true(stored > 100 && refused > 100, 'both outcomes are exercised')
  })
}

// The json serializer stores every JSON value (including -0), unchanged.
test('json stores every JSON value, -0 included', (t) => {
  const json = k.jsonSerializer()
  copiesShared = true
  fc.assert(
    fc.property(fc.jsonValue(), fc.constantFrom(-0, 0), (v, z) => {
      const value = { v, z, list: [z, v] }
      return same(value, json.decode(json.encode(value)))
    }),
    { numRuns: 1000 },
  )
  t.is(new TextDecoder().decode(json.encode([-0, { a: -0 }])), '[-0,{"a":-0}]')
})

// msgpack stores everything it claims to (no over-eager refusals).
test('msgpack stores Maps, Sets, Dates, typed arrays, BigInts, NaN, -0, undefined, nested, unchanged', (t) => {
  const msgpack = k.msgpackSerializer()
  copiesShared = false
  const storable = fc.anything({
    maxDepth: 3,
    withBigInt: true,
    withDate: true,
    withMap: true,
    withSet: true,
    withTypedArray: true,
    key: fc.string().filter((x) => x !== '__proto__'),
  })
  fc.assert(
    fc.property(storable, (v) => same(v, msgpack.decode(msgpack.encode(v)))),
    { numRuns: 2000 },
  )
  t.pass()
})

test('each serializer says what it refuses and where', (t) => {
  const [json, msgpack] = serializers as [k.Serializer, k.Serializer]
  const refuses = (s: k.Serializer, v: unknown, message: RegExp) => {
    const err = t.throws(() => s.encode(v), { instanceOf: k.KonserveError }) as k.KonserveError
    t.is(err.code, 'ERR_SERIALIZE')
    t.regex(err.message, message)
  }
  refuses(json, { a: new Set([1]) }, /json cannot store a Set \(at \.a\)/)
  refuses(json, { a: { b: new Map() } }, /a Map \(at \.a\.b\)/)
  refuses(json, [1, new Uint8Array([1])], /a Uint8Array \(at \[1\]\)/)
  refuses(json, { n: NaN }, /NaN \(at \.n\)/)
  refuses(json, { n: [Infinity] }, /Infinity \(at \.n\[0\]\)/)
  refuses(json, { u: undefined }, /undefined \(at \.u\)/)
  refuses(json, undefined, /undefined \(at the top level\)/)
  refuses(json, { d: new Date(0) }, /a Date \(at \.d\).*toISOString/)
  refuses(json, { 'odd key': 10n }, /a BigInt \(at \["odd key"\]\)/)
  // biome-ignore lint/suspicious/noSparseArray: a hole is what is tested
  refuses(json, [1, , 3], /hole in a sparse array \(at \[1\]\)/)
  refuses(json, Object.create(null), /null prototype/)
  refuses(json, new Point(1, 2), /a Point/)
  refuses(json, new Number(1), /a Number/)
  const cyclic: Record<string, unknown> = {}
  cyclic.self = { back: cyclic }
  refuses(json, cyclic, /cycle \(an object that contains itself\) \(at \.self\.back\)/)
  const shared = { x: 1 }
  t.deepEqual(json.decode(json.encode({ a: shared, b: shared })), { a: { x: 1 }, b: { x: 1 } }, 'a shared object is not a cycle')

  // biome-ignore lint/suspicious/noSparseArray: a hole is what is tested
  refuses(msgpack, [1, , 3], /hole in a sparse array \(at \[1\]\)/)
  refuses(msgpack, { p: new Point(1, 2) }, /a Point \(at \.p\).*addMsgpackExtension/)
  refuses(msgpack, JSON.parse('{"a": {"__proto__": 1}}'), /property named __proto__ \(at \.a\.__proto__\)/)
  refuses(msgpack, { o: Object.create(null) }, /null prototype \(at \.o\)/)
  refuses(msgpack, new Map([['k', new String('s')]]), /a String \(at \.get\("k"\)\)/)
  refuses(msgpack, Object.assign([1], { x: 1 }), /named property \("x"\)/)
  refuses(msgpack, { s: 'a\uD800' }, /lone UTF-16 surrogate \(at \.s\)/)
  refuses(msgpack, { e: new Error('e') }, /an? Error \(at \.e\).*stack/)
  refuses(msgpack, new (class MyError extends Error {})('m'), /a MyError/)

  // What msgpack keeps that it used to change: -0 everywhere, in every container.
  copiesShared = false
  const zeros = { z: -0, list: [-0, 0, { deep: -0 }], map: new Map([['k', -0]]), set: new Set([{ in: -0 }]) }
  const back = msgpack.decode(msgpack.encode(zeros)) as typeof zeros
  t.true(same(zeros, back))
  t.true(Object.is(back.list[0], -0) && Object.is(back.list[1], 0))
  // -0 is written as a standard MessagePack float 64, readable by any reader.
  t.is(Buffer.from(msgpack.encode(-0)).toString('hex'), 'cb8000000000000000')
  // Cycles and shared references with -0 inside keep their shape.
  const loop: Record<string, unknown> = { z: -0 }
  loop.self = loop
  const l = msgpack.decode(msgpack.encode({ a: loop, b: loop })) as { a: typeof loop; b: typeof loop }
  t.is(l.a, l.b)
  t.is(l.a.self, l.a)
  t.true(Object.is(l.a.z, -0))
  // Registered classes go through their extension.
  t.true((msgpack.decode(msgpack.encode({ r: new Registered(-3) })) as { r: Registered }).r instanceof Registered)
})

test('through a store: the refused value names the key and leaves the old value', async (t) => {
  for (const serializer of ['json', 'msgpack', 'cbor'] as const) {
    const s = await k.newMemStore({ serializer })
    await k.assoc(s, 'k', { ok: true })
    // biome-ignore lint/suspicious/noSparseArray: a hole is what is tested
    const err = (await t.throwsAsync(k.assoc(s, 'k', { when: { set: new Set([1]), sparse: [1, , 2] } }))) as k.KonserveError
    t.is(err.code, 'ERR_SERIALIZE')
    t.is(err.key, 'k')
    t.regex(err.message, /\(key "k"\)/)
    t.regex(err.message, serializer === 'json' ? /a Set \(at \.when\.set\)/ : /sparse array \(at \.when\.sparse\[1\]\)/)
    t.deepEqual(await k.get(s, 'k'), { ok: true })
    await k.assoc(s, 'z', { z: -0 })
    t.true(Object.is(((await k.get(s, 'z')) as { z: number }).z, -0), `${serializer} keeps -0`)
  }
})

// cbor stores everything it claims to (what msgpack stores but ArrayBuffer, DataView and extension classes).
test('cbor stores Maps, Sets, Dates, typed arrays, BigInts, NaN, -0, undefined, cycles, nested, unchanged', (t) => {
  const cbor = k.cborSerializer()
  copiesShared = false
  const storable = fc.anything({
    maxDepth: 3,
    withBigInt: true,
    withDate: true,
    withMap: true,
    withSet: true,
    withTypedArray: true,
    key: fc.string().filter((x) => x !== '__proto__'),
    values: [fc.boolean(), fc.integer(), fc.double(), fc.string(), fc.bigInt(), fc.constantFrom(-0, NaN, undefined, -Infinity, 2 ** 53 + 2), fc.uint8Array().map((u) => Buffer.from(u))],
  })
  fc.assert(
    fc.property(storable, (v) => same(v, cbor.decode(cbor.encode(v)))),
    { numRuns: 2000 },
  )
  const loop: Record<string, unknown> = { z: -0, r: /x/g }
  loop.self = loop
  const l = cbor.decode(cbor.encode({ a: loop, b: loop })) as { a: typeof loop; b: typeof loop }
  t.is(l.a, l.b)
  t.is(l.a.self, l.a)
  t.true(Object.is(l.a.z, -0))
  // Standard CBOR: -0 is a float 64 (no shared-reference tag around it), Map is tag 259, Set tag 258, Date tag 1.
  t.is(Buffer.from(cbor.encode([-0, -0])).toString('hex'), '82fb8000000000000000fb8000000000000000')
  t.is(Buffer.from(cbor.encode(new Map([[1, 2]]))).toString('hex'), 'd90103a10102')
  t.is(Buffer.from(cbor.encode(new Set([1]))).toString('hex'), 'd901028101')
  t.is(Buffer.from(cbor.encode(new Date(0))).toString('hex').slice(0, 2), 'c1')
})

test('cbor says what it refuses and where', (t) => {
  const cbor = k.cborSerializer()
  const refuses = (v: unknown, message: RegExp) => {
    const err = t.throws(() => cbor.encode(v), { instanceOf: k.KonserveError }) as k.KonserveError
    t.is(err.code, 'ERR_SERIALIZE')
    t.regex(err.message, message)
  }
  refuses({ b: new ArrayBuffer(2) }, /cbor cannot store a ArrayBuffer \(at \.b\).*Uint8Array/)
  refuses([new DataView(new ArrayBuffer(1))], /a DataView \(at \[0\]\)/)
  refuses({ r: new Registered(1) }, /a Registered \(at \.r\).*plain object/)
  refuses({ p: new Point(1, 2) }, /a Point \(at \.p\)/)
  refuses(JSON.parse('{"a": {"__proto__": 1}}'), /property named __proto__ \(at \.a\.__proto__\).*cbor-x/)
  refuses({ s: 'a\uD800' }, /lone UTF-16 surrogate \(at \.s\)/)
  refuses({ e: new TypeError('e') }, /a TypeError \(at \.e\)/)
  // biome-ignore lint/suspicious/noSparseArray: the hole is what is tested
  refuses([1, , 3], /hole in a sparse array \(at \[1\]\)/)
  refuses({ o: Object.create(null) }, /null prototype \(at \.o\)/)
})
