/**
 * Value serializers. The id goes into every file's header (docs/FORMAT.md §4.1),
 * so a store can always read what it wrote, even after its default changed.
 */
import { Packr, addExtension as addMsgpackrExtension } from 'msgpackr'
import { isWellFormed } from './format/key.js'
import { KonserveError } from './errors.js'
import { NodeBuffer } from './node-buffer.js'
import { type CborCodec, cborNow } from './lazy/codecs.js'

export interface Serializer {
  /** Wire id: 1..127 are konserve's, 128..255 are yours. Never reuse one. */
  readonly id: number
  readonly name: string
  encode(value: unknown): Uint8Array
  decode(bytes: Uint8Array): unknown
  /**
   * Set if `decode` never keeps a reference to `bytes` (nor a view of them) in
   * what it returns: the store may then decode straight from its read buffers.
   * Unset, `decode` gets bytes of its own.
   */
  readonly copiesInput?: boolean
  /**
   * @internal Set on the built-in serializers: the same bytes always decode
   * to equal values, so a read cache may keep a decoded value and hand out
   * copies of it (RawValue.memo).
   */
  readonly pureDecode?: boolean
}

/** Id 0 in a header marks raw bytes written by `bassoc`; it is not a serializer. */
export const RAW_BYTES_ID = 0

// Records for plain objects, msgpack maps for Map, structured clone for cycles:
// Date, Map, Set, typed arrays, BigInt and shared references all round-trip.
// Each value is self-contained (no shared record structures between values).
const msgpackOptions = {
  useRecords: true,
  mapsAsObjects: false,
  moreTypes: true,
  useBigIntExtension: true,
  structuredClone: true,
  // Binary fields get memory of their own, not views of the bytes read: a
  // decoded value never pins a read buffer (see Serializer.copiesInput).
  copyBuffers: true,
} as const

/**
 * A built-in serializer stores a value only if reading it back gives the same
 * value (Object.is on every leaf, the same kinds of containers, the same
 * prototypes); anything else is refused with ERR_SERIALIZE saying where in the
 * value the problem is and what to do, instead of being silently changed.
 * `checkValue` walks the value once before it is encoded.
 *
 * JSON keeps: null, booleans, finite numbers (-0 too, written `-0`), strings
 * (lone surrogates too, as \uXXXX escapes), arrays without holes, and plain
 * objects; shared sub-values come back as copies. It refuses undefined, NaN,
 * ±Infinity, BigInt, Date, Map, Set, typed arrays, class instances, cycles...
 *
 * msgpack also keeps undefined, NaN, ±Infinity, BigInt, Date, Map, Set,
 * ArrayBuffer, DataView, typed arrays and Buffers, RegExp, cycles and shared
 * references, and instances of classes registered with addMsgpackExtension.
 * It refuses strings with a lone surrogate (UTF-8 cannot carry them), Errors
 * (msgpackr would drop their stack, class and properties),
 * properties named `__proto__` (msgpackr reads them back as `__proto_`),
 * other class instances (it would keep only their fields, as a plain object).
 *
 * CBOR (RFC 8949, written by cbor-x, standard tags only) keeps what msgpack
 * keeps, except ArrayBuffer and DataView (a CBOR byte string reads back as a
 * Buffer: store a Uint8Array) and instances of classes registered with
 * addMsgpackExtension (msgpack extensions are not CBOR tags): it refuses them.
 *
 * All three refuse functions, symbols, symbol-keyed properties, holes in arrays,
 * named properties on arrays, objects with a null prototype (they would come
 * back with Object.prototype) and boxed primitives. Only own enumerable
 * properties are stored, as with structuredClone.
 */
type SerializerName = 'json' | 'msgpack' | 'cbor'

/** Classes registered through addMsgpackExtension: their extension encodes them, so they are not walked. */
// biome-ignore lint/complexity/noBannedTypes: any class (its constructor), tested with instanceof
const extensionClasses: Function[] = []

// biome-ignore lint/complexity/noBannedTypes: compared with `o.constructor`, which TypeScript types as Function
const typedArrayConstructors = new Set<Function>(
  [
    Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array,
    Float32Array, Float64Array, BigInt64Array, BigUint64Array,
  ].concat(NodeBuffer ? [NodeBuffer as unknown as typeof Uint8Array] : []),
)

/** A plain object's prototype: this realm's Object.prototype, or another realm's. */
function isObjectPrototype(proto: object | null): boolean {
  if (proto === Object.prototype) return true
  if (proto === null || Object.getPrototypeOf(proto) !== null) return false
  const c = (proto as { constructor?: unknown }).constructor
  return typeof c === 'function' && c.name === 'Object'
}

function kindOf(o: object): string {
  const proto = Object.getPrototypeOf(o)
  if (proto === null) return 'an object with a null prototype'
  const name = (proto as { constructor?: { name?: unknown } }).constructor?.name
  return typeof name === 'string' && name ? `a ${name}` : 'an object of an unknown class'
}

/** What the walk found that encoding must take care of. */
interface Found {
  negativeZero: boolean
  /** cbor: a Date that tag 1 (seconds, a float 64) would not keep to the millisecond. */
  farDate: boolean
}

/** A step into a value: an array index, a property name, or (in an object) a Map key or entry, or a Set member. */
type Step = number | string | { mapKey: unknown } | { mapGet: unknown } | { setMember: true }

/** Where in a value a walk is, for messages (built only when one is thrown). */
function pathOf(steps: Step[]): string {
  if (steps.length === 0) return 'the top level'
  return steps
    .map((st) => {
      if (typeof st === 'number') return `[${st}]`
      if (typeof st === 'string') return /^[A-Za-z_$][\w$]*$/.test(st) ? `.${st}` : `[${JSON.stringify(st)}]`
      if ('mapKey' in st) return '<a Map key>'
      if ('mapGet' in st) return `.get(${describeMapKey(st.mapGet)})`
      return '<a Set member>'
    })
    .join('')
}

/**
 * Checks a write's user metadata (the `meta` option) as a msgpack value is
 * checked: metadata is stored with msgpack whatever the store's serializer,
 * and what it cannot store unchanged (a lone surrogate, a `__proto__` field)
 * would otherwise come back changed. ERR_SERIALIZE, naming where.
 */
export function checkMetadata(meta: object): void {
  try {
    checkValue(meta, 'msgpack')
  } catch (err) {
    if (err instanceof KonserveError) throw new KonserveError(err.code, `metadata: ${err.message}`, { cause: err })
    throw err
  }
}

/** Walks `value`, throwing ERR_SERIALIZE at the first part `serializer` cannot store unchanged. */
function checkValue(value: unknown, serializer: SerializerName): Found {
  const json = serializer === 'json'
  const found: Found = { negativeZero: false, farDate: false }
  const at: Step[] = []
  // msgpack: objects already checked (cycles and shared references are kept).
  // json: the objects on the current path (a cycle is refused; a shared object is written twice, which reads back equal).
  const seen = new Set<object>()
  const refuse = (what: string, hint = ''): never => {
    throw new KonserveError('ERR_SERIALIZE', `${serializer} cannot store ${what} (at ${pathOf(at)}) without changing it${hint ? `; ${hint}` : ''}`)
  }
  const checkString = (s: string, what: string): void => {
    if (!json && !isWellFormed(s)) {
      refuse(`${what} with a lone UTF-16 surrogate`, 'fix the string (String.prototype.toWellFormed) or use the json serializer')
    }
  }
  const visit = (v: unknown): void => {
    switch (typeof v) {
      case 'string':
        checkString(v, 'a string')
        return
      case 'number':
        if (v === 0) {
          if (1 / v < 0) found.negativeZero = true
        } else if (json && !Number.isFinite(v)) {
          refuse(String(v), 'JSON has no such number (it would read back as null); use the msgpack serializer')
        }
        return
      case 'boolean':
        return
      case 'undefined':
        if (json) refuse('undefined', 'JSON has no undefined (a property would be dropped, an array element read back as null); use null or the msgpack serializer')
        return
      case 'bigint':
        if (json) refuse('a BigInt', 'JSON numbers are doubles; store it as a string, or use the msgpack serializer')
        return
      case 'function':
      case 'symbol':
        refuse(`a ${typeof v}`)
    }
    if (v === null) return
    const o = v as object
    if (seen.has(o)) {
      if (json) refuse('a cycle (an object that contains itself)', 'use the msgpack serializer, which keeps cycles')
      return
    }
    if (serializer === 'msgpack') {
      for (const c of extensionClasses) if (o instanceof c) return
    }
    const proto = Object.getPrototypeOf(o)
    seen.add(o)
    if (Array.isArray(o)) {
      if (proto !== Array.prototype && !isObjectPrototypeOfArray(proto)) refuse(kindOf(o), 'store a plain array')
      const n = o.length
      for (let i = 0; i < n; i++) {
        at.push(i)
        if (!(i in o)) refuse('a hole in a sparse array', 'fill it (Array.from(a) turns holes into undefined)')
        visit(o[i])
        at.pop()
      }
      if (Object.keys(o).length !== n) {
        const extra = Object.keys(o).find((k) => !(String(Number(k)) === k && Number(k) < n))
        refuse(`an array with a named property (${JSON.stringify(extra)})`, 'an array keeps only its elements')
      }
      if (Object.getOwnPropertySymbols(o).length > 0) refuse('a symbol-keyed property')
    } else if (isObjectPrototype(proto)) {
      for (const k of Object.keys(o)) {
        at.push(k)
        if (!json && k === '__proto__') refuse('a property named __proto__', `${serializer === 'cbor' ? 'cbor-x' : 'msgpackr'} reads it back as __proto_; rename it, use a Map, or use the json serializer`)
        checkString(k, 'a property name')
        visit((o as Record<string, unknown>)[k])
        at.pop()
      }
      if (Object.getOwnPropertySymbols(o).length > 0) refuse('a symbol-keyed property')
    } else if (json) {
      refuse(
        kindOf(o),
        proto === null
          ? 'copy it into a plain object ({ ...o })'
          : o instanceof Date
            ? 'JSON would read it back as a string; store date.toISOString() or use the msgpack serializer'
            : 'JSON keeps only plain objects, arrays, strings, finite numbers, booleans and null; use the msgpack serializer',
      )
    } else {
      const c = proto === null ? undefined : proto.constructor
      if (c === Map && proto === Map.prototype) {
        for (const [k, x] of o as Map<unknown, unknown>) {
          at.push({ mapKey: k })
          visit(k)
          at.pop()
          at.push({ mapGet: k })
          visit(x)
          at.pop()
        }
      } else if (c === Set && proto === Set.prototype) {
        at.push({ setMember: true })
        for (const x of o as Set<unknown>) visit(x)
        at.pop()
      } else if (serializer === 'cbor' && (c === ArrayBuffer || c === DataView) && proto === c.prototype) {
        refuse(kindOf(o), 'CBOR has one kind of byte string, read back as a Buffer (Uint8Array in browsers); store a Uint8Array, or use the msgpack serializer')
      } else if ((c === Date || c === ArrayBuffer || c === DataView || typedArrayConstructors.has(c)) && proto === c.prototype) {
        if (serializer === 'cbor' && c === Date && !dateAsSeconds((o as Date).getTime())) found.farDate = true
        // Leaves msgpackr (and cbor-x) store exactly.
      } else if (c === RegExp && proto === RegExp.prototype) {
        if ((o as RegExp).lastIndex !== 0) refuse('a RegExp with a lastIndex', `${serializer} keeps its source and flags; reset lastIndex to 0`)
      } else if (o instanceof Error) {
        // msgpackr keeps name, message and cause, but not the stack, the class
        // of a subclass, other properties, nor whether there was a cause.
        refuse(kindOf(o), serializer === 'cbor' ? 'cbor does not keep an Error whole (its stack, class and properties); store { name, message }' : 'msgpack does not keep an Error whole (its stack, class and properties); store { name, message } or register an extension')
      } else {
        refuse(
          kindOf(o),
          proto === null
            ? 'copy it into a plain object ({ ...o })'
            : serializer === 'cbor'
              ? 'cbor would keep only its fields, as a plain object; store a plain object (or use the msgpack serializer with addMsgpackExtension)'
              : `msgpack would keep only its fields, as a plain object; register its class with addMsgpackExtension, or store a plain object`,
        )
      }
    }
    if (json) seen.delete(o)
  }
  try {
    visit(value)
  } catch (err) {
    if (err instanceof RangeError) refuse('a value nested this deeply')
    throw err
  }
  return found
}

/** An array's prototype from another realm (its own Array.prototype). */
function isObjectPrototypeOfArray(proto: object | null): boolean {
  if (proto === null) return false
  const c = (proto as { constructor?: unknown }).constructor
  return typeof c === 'function' && c.name === 'Array' && Array.isArray(proto)
}

function describeMapKey(k: unknown): string {
  if (typeof k === 'string') return JSON.stringify(k.length > 40 ? `${k.slice(0, 37)}...` : k)
  if (typeof k === 'bigint') return `${k}n`
  if (k !== null && typeof k === 'object') return `${kindOf(k).replace(/^an? /, '<')}>`
  return String(k)
}

/**
 * -0 for msgpackr, which writes every -0 as the integer 0: a marker its
 * extension writes as a standard MessagePack float 64 -0 (no extension type
 * in the bytes), which every reader reads back as -0.
 */
/** @internal */
export class NegativeZero {}
const NEGATIVE_ZERO = new NegativeZero()
addMsgpackrExtension({
  Class: NegativeZero,
  type: 0x7f, // never written: pack writes the float itself and returns nothing
  pack(_v: unknown, allocate: (size: number) => { target: Uint8Array; position: number }) {
    const { target, position } = allocate(9)
    target[position] = 0xcb
    new DataView(target.buffer, target.byteOffset, target.byteLength).setFloat64(position + 1, -0)
  },
  unpack: () => -0,
} as unknown as Parameters<typeof addMsgpackrExtension>[0])

/**
 * A copy of `value` with every -0 replaced by the marker; only values holding
 * a -0 are copied (rare). Keeps cycles and shared references as they are.
 * `checkValue` has passed: only arrays, plain objects, Maps and Sets hold values.
 */
function markNegativeZeros(value: unknown, freshMarkers = false, farDates = false): unknown {
  const copies = new Map<object, unknown>()
  const copy = (v: unknown): unknown => {
    if (typeof v === 'number') return v === 0 && 1 / v < 0 ? (freshMarkers ? new NegativeZero() : NEGATIVE_ZERO) : v
    if (v === null || typeof v !== 'object') return v
    if (farDates && v instanceof Date && !dateAsSeconds(v.getTime())) return new FarDate(v.toISOString())
    const done = copies.get(v)
    if (done !== undefined) return done
    for (const c of extensionClasses) if (v instanceof c) return v
    if (Array.isArray(v)) {
      const out: unknown[] = new Array(v.length)
      copies.set(v, out)
      for (let i = 0; i < v.length; i++) out[i] = copy(v[i])
      return out
    }
    if (v instanceof Map && Object.getPrototypeOf(v) === Map.prototype) {
      const out = new Map()
      copies.set(v, out)
      for (const [k, x] of v) out.set(copy(k), copy(x))
      return out
    }
    if (v instanceof Set && Object.getPrototypeOf(v) === Set.prototype) {
      const out = new Set()
      copies.set(v, out)
      for (const x of v) out.add(copy(x))
      return out
    }
    if (!isObjectPrototype(Object.getPrototypeOf(v))) return v
    const out: Record<string, unknown> = {}
    copies.set(v, out)
    for (const k of Object.keys(v)) out[k] = copy((v as Record<string, unknown>)[k])
    return out
  }
  return copy(value)
}

export function msgpackSerializer(): Serializer {
  const packr = new Packr(msgpackOptions)
  return {
    id: 1,
    name: 'msgpack',
    copiesInput: true,
    pureDecode: true,
    encode(value) {
      const found = checkValue(value, 'msgpack')
      return packr.pack(found.negativeZero ? markNegativeZeros(value) : value)
    },
    decode(bytes) {
      // Binary fields come back as the input's kind: Buffers in Node whichever
      // store read the bytes (a view, no copy), Uint8Arrays in browsers.
      return packr.unpack(NodeBuffer && !NodeBuffer.isBuffer(bytes) ? NodeBuffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength) : bytes)
    },
  }
}

/**
 * Whether CBOR tag 1 (seconds since the epoch, a float 64 unless whole, read
 * back by cbor-x as `Math.round(seconds * 1000)`) keeps this time exactly: true
 * within about 70,000 years of 1970, and for an invalid Date (NaN).
 */
export function dateAsSeconds(ms: number): boolean {
  return Number.isNaN(ms) || Math.round((ms / 1000) * 1000) === ms
}

/** @internal A Date beyond that: written as tag 0, its ISO 8601 text (extended year), which keeps the millisecond. */
export class FarDate {
  constructor(readonly iso: string) {}
}
/**
 * The CBOR serializer (RFC 8949, written by cbor-x: ./serializers-cbor.ts).
 * cbor-x is reached through ./lazy/codecs.ts: in the browser build it loads
 * the first time a store needs it (connectIdbStore with `serializer: 'cbor'`,
 * or a CBOR value read); before that, a call fails with ERR_NOT_SUPPORTED.
 */
export function cborSerializer(): Serializer {
  let codec: CborCodec | undefined
  const ready = (): CborCodec => {
    if (codec) return codec
    const make = cborNow()
    if (!make) {
      throw new KonserveError(
        'ERR_NOT_SUPPORTED',
        "the cbor serializer's code (cbor-x) is loaded on demand in the browser and is not loaded yet: open the store with connectIdbStore(name, { serializer: 'cbor' }), or await loadCodecs() first",
      )
    }
    codec = make()
    return codec
  }
  return {
    id: 3,
    name: 'cbor',
    copiesInput: true,
    pureDecode: true,
    encode(value) {
      const c = ready()
      const found = checkValue(value, 'cbor')
      // A marker per -0: with structuredClone one shared marker would be written once and referenced (tags 28/29).
      return c.encode(found.negativeZero || found.farDate ? markNegativeZeros(value, true, found.farDate) : value)
    },
    decode(bytes) {
      // Byte strings come back as the input's kind: Buffers in Node, Uint8Arrays in browsers.
      return ready().decode(NodeBuffer && !NodeBuffer.isBuffer(bytes) ? NodeBuffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength) : bytes)
    },
  }
}

/**
 * Registers a msgpackr extension (a class and its wire form), as konserve does
 * for records with incognito. msgpackr extensions are process-wide. Instances
 * of a registered class are stored through it (the msgpack serializer refuses
 * other class instances rather than keep only their fields).
 */
export function addMsgpackExtension(extension: Parameters<typeof addMsgpackrExtension>[0]): void {
  addMsgpackrExtension(extension)
  const c = (extension as { Class?: unknown }).Class
  if (typeof c === 'function' && !extensionClasses.includes(c)) extensionClasses.push(c)
}

const utf8Encoder = new TextEncoder()
const utf8Decoder = new TextDecoder('utf-8', { fatal: true })

/** JSON.stringify writes -0 as 0: a placeholder no value can hold (random) is written instead, then replaced by -0. */
const NEGATIVE_ZERO_TEXT = `\u0000konserve-negative-zero-${Math.random().toString(36).slice(2)}${Date.now().toString(36)}`
const NEGATIVE_ZERO_QUOTED = JSON.stringify(NEGATIVE_ZERO_TEXT)
const markNegativeZero = (_k: string, v: unknown): unknown => (v === 0 && 1 / (v as number) < 0 ? NEGATIVE_ZERO_TEXT : v)

export function jsonSerializer(): Serializer {
  return {
    id: 2,
    name: 'json',
    copiesInput: true,
    pureDecode: true,
    encode(value) {
      const found = checkValue(value, 'json')
      const text = found.negativeZero ? JSON.stringify(value, markNegativeZero).replaceAll(NEGATIVE_ZERO_QUOTED, '-0') : JSON.stringify(value)
      return utf8Encoder.encode(text)
    },
    decode(bytes) {
      return JSON.parse(utf8Decoder.decode(bytes))
    },
  }
}

const userSerializers = new Map<number, Serializer>()

/** Makes a user serializer (id 128..255) readable by every store in this process. */
export function registerSerializer(serializer: Serializer): void {
  checkUserSerializer(serializer)
  userSerializers.set(serializer.id, serializer)
}

function checkUserSerializer(s: Serializer): void {
  if (!Number.isInteger(s.id) || s.id < 128 || s.id > 255) {
    throw new KonserveError('ERR_INVALID_ARGUMENT', `user serializer ids are 128..255, got ${s.id}`)
  }
}

export type SerializerOption = 'msgpack' | 'json' | 'cbor' | Serializer

/** The serializers one store writes with and reads with. */
export class SerializerSet {
  readonly write: Serializer
  private readonly byId = new Map<number, Serializer>()

  constructor(option: SerializerOption = 'msgpack', extra: readonly Serializer[] = []) {
    this.byId.set(1, msgpackSerializer())
    this.byId.set(2, jsonSerializer())
    this.byId.set(3, cborSerializer())
    for (const s of extra) {
      checkUserSerializer(s)
      this.byId.set(s.id, s)
    }
    if (typeof option === 'string') {
      const s = [...this.byId.values()].find((x) => x.name === option)
      if (!s) throw new KonserveError('ERR_INVALID_ARGUMENT', `unknown serializer ${option}`)
      this.write = s
    } else {
      if (option.id !== 1 && option.id !== 2 && option.id !== 3) checkUserSerializer(option)
      this.byId.set(option.id, option)
      this.write = option
    }
  }

  forId(id: number): Serializer {
    const s = this.byId.get(id) ?? userSerializers.get(id)
    if (!s) throw new KonserveError('ERR_SERIALIZER_NOT_FOUND', `no serializer with id ${id} is registered`)
    return s
  }
}
