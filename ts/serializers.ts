/**
 * Value serializers. The id goes into every file's header (docs/FORMAT.md §4.1),
 * so a store can always read what it wrote, even after its default changed.
 */
import { Packr, addExtension as addMsgpackrExtension } from 'msgpackr'
import { isWellFormed } from './codec/key.js'
import { KonserveError } from './errors.js'
import { NodeBuffer } from './node-buffer.js'

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
 * msgpackr turns functions into `undefined` without a word, and writes strings
 * as UTF-8, which turns a lone UTF-16 surrogate into U+FFFD: a store must
 * refuse such values instead of silently changing them. (JSON keeps lone
 * surrogates, as \uXXXX escapes, so it only refuses functions and symbols.)
 */
function assertEncodable(value: unknown, serializer: string, utf8Strings: boolean): void {
  const seen = new Set<object>()
  const checkString = (s: string, path: string): void => {
    if (utf8Strings && !isWellFormed(s)) {
      throw new KonserveError(
        'ERR_SERIALIZE',
        `${serializer} cannot store a string with a lone UTF-16 surrogate (at ${path || 'the top level'}) without changing it; ` +
          'fix the string (String.prototype.toWellFormed) or use the json serializer',
      )
    }
  }
  const visit = (v: unknown, path: string): void => {
    const t = typeof v
    if (t === 'function' || t === 'symbol') {
      throw new KonserveError('ERR_SERIALIZE', `${serializer} cannot serialize a ${t} at ${path || 'the top level'}`)
    }
    if (t === 'string') return checkString(v as string, path)
    if (t !== 'object' || v === null || ArrayBuffer.isView(v) || v instanceof Date) return
    const o = v as object
    if (seen.has(o)) return
    seen.add(o)
    if (o instanceof Map) {
      for (const [k, x] of o) {
        visit(k, `${path}<map key>`)
        visit(x, `${path}.get(${String(k)})`)
      }
    } else if (o instanceof Set) {
      for (const x of o) visit(x, `${path}<set item>`)
    } else if (Array.isArray(o)) {
      for (let i = 0; i < o.length; i++) visit(o[i], `${path}[${i}]`)
    } else {
      for (const k of Object.keys(o)) {
        const at = path ? `${path}.${k}` : k
        checkString(k, `${at} (a property name)`)
        visit((o as Record<string, unknown>)[k], at)
      }
    }
  }
  visit(value, '')
}


export function msgpackSerializer(): Serializer {
  const packr = new Packr(msgpackOptions)
  return {
    id: 1,
    name: 'msgpack',
    copiesInput: true,
    encode(value) {
      assertEncodable(value, 'msgpack', true)
      return packr.pack(value)
    },
    decode(bytes) {
      // Binary fields come back as the input's kind: Buffers in Node whichever
      // store read the bytes (a view, no copy), Uint8Arrays in browsers.
      return packr.unpack(NodeBuffer && !NodeBuffer.isBuffer(bytes) ? NodeBuffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength) : bytes)
    },
  }
}


/**
 * Registers a msgpackr extension (a class and its wire form), as konserve does
 * for records with incognito. msgpackr extensions are process-wide.
 */
export const addMsgpackExtension = addMsgpackrExtension

const utf8Encoder = new TextEncoder()
const utf8Decoder = new TextDecoder('utf-8', { fatal: true })

export function jsonSerializer(): Serializer {
  return {
    id: 2,
    name: 'json',
    copiesInput: true,
    encode(value) {
      assertEncodable(value, 'json', false)
      const text = JSON.stringify(value)
      if (text === undefined) throw new KonserveError('ERR_SERIALIZE', 'json cannot serialize undefined')
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

export type SerializerOption = 'msgpack' | 'json' | Serializer

/** The serializers one store writes with and reads with. */
export class SerializerSet {
  readonly write: Serializer
  private readonly byId = new Map<number, Serializer>()

  constructor(option: SerializerOption = 'msgpack', extra: readonly Serializer[] = []) {
    this.byId.set(1, msgpackSerializer())
    this.byId.set(2, jsonSerializer())
    for (const s of extra) {
      checkUserSerializer(s)
      this.byId.set(s.id, s)
    }
    if (typeof option === 'string') {
      const s = [...this.byId.values()].find((x) => x.name === option)
      if (!s) throw new KonserveError('ERR_INVALID_ARGUMENT', `unknown serializer ${option}`)
      this.write = s
    } else {
      if (option.id !== 1 && option.id !== 2) checkUserSerializer(option)
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
