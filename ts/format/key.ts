/**
 * The canonical key encoding (CKE) of docs/FORMAT.md §2.
 *
 * One key has exactly one encoding, in every implementation, so the same key
 * always hashes to the same file name. Imports nothing from `node:` so the
 * browser store can use it.
 */
import { KonserveError } from '../errors.js'

/** What konserve accepts as a key. */
export type Key = null | boolean | number | string | Uint8Array | readonly Key[] | { readonly [k: string]: Key }

const T_NULL = 0x00
const T_FALSE = 0x01
const T_TRUE = 0x02
const T_INT = 0x03
const T_FLOAT = 0x04
const T_STRING = 0x05
const T_BYTES = 0x06
const T_ARRAY = 0x07
const T_MAP = 0x08

const utf8 = new TextEncoder()
const utf8Fatal = new TextDecoder('utf-8', { fatal: true })

/** Growable byte buffer, big-endian writers. */
class Writer {
  buf = new Uint8Array(64)
  view = new DataView(this.buf.buffer)
  len = 0

  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return
    let size = this.buf.length * 2
    while (size < this.len + n) size *= 2
    const next = new Uint8Array(size)
    next.set(this.buf.subarray(0, this.len))
    this.buf = next
    this.view = new DataView(next.buffer)
  }

  u8(v: number): void {
    this.reserve(1)
    this.buf[this.len++] = v
  }

  u32(v: number): void {
    this.reserve(4)
    this.view.setUint32(this.len, v)
    this.len += 4
  }

  bytes(b: Uint8Array): void {
    this.reserve(b.length)
    this.buf.set(b, this.len)
    this.len += b.length
  }

  i64(v: number): void {
    this.reserve(8)
    this.view.setBigInt64(this.len, BigInt(v))
    this.len += 8
  }

  f64(v: number): void {
    this.reserve(8)
    if (Number.isNaN(v)) {
      this.view.setUint32(this.len, 0x7ff80000)
      this.view.setUint32(this.len + 4, 0)
    } else {
      this.view.setFloat64(this.len, v)
    }
    this.len += 8
  }

  result(): Uint8Array {
    return this.buf.slice(0, this.len)
  }
}

/** Whether a string has no lone UTF-16 surrogate (String.prototype.isWellFormed, or its equivalent before Node 20). */
export const isWellFormed: (s: string) => boolean =
  typeof (String.prototype as { isWellFormed?: unknown }).isWellFormed === 'function'
    ? (s) => (s as unknown as { isWellFormed(): boolean }).isWellFormed()
    : (s) => !/[\uD800-\uDFFF]/.test(s.replace(/[\uD800-\uDBFF][\uDC00-\uDFFF]/g, ''))

/** WTF-8: UTF-8 that also carries unpaired surrogates, so every JS string round-trips. */
export function wtf8Encode(s: string): Uint8Array {
  if (isWellFormed(s)) return utf8.encode(s)
  const out: number[] = []
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i)
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1)
      if (d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00)
        i++
      }
    }
    if (c < 0x80) out.push(c)
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 0x3f))
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f))
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 0x3f), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f))
  }
  return Uint8Array.from(out)
}

export function wtf8Decode(b: Uint8Array): string {
  try {
    return utf8Fatal.decode(b)
  } catch {
    // Not plain UTF-8: decode strictly by hand, allowing only lone surrogates.
  }
  const units: number[] = []
  let i = 0
  // Set when the last code point was a high surrogate written on its own.
  let afterHighSurrogate = false
  const bad = (): never => {
    throw new KonserveError('ERR_INVALID_KEY', 'key string is not valid WTF-8')
  }
  const cont = (j: number): number => {
    const x = b[j]
    if (x === undefined || (x & 0xc0) !== 0x80) bad()
    return x! & 0x3f
  }
  while (i < b.length) {
    const x = b[i]!
    let cp: number
    if (x < 0x80) {
      cp = x
      i += 1
    } else if (x >= 0xc2 && x < 0xe0) {
      cp = ((x & 0x1f) << 6) | cont(i + 1)
      i += 2
    } else if (x >= 0xe0 && x < 0xf0) {
      cp = ((x & 0x0f) << 12) | (cont(i + 1) << 6) | cont(i + 2)
      if (cp < 0x800) bad()
      i += 3
    } else if (x >= 0xf0 && x < 0xf5) {
      cp = ((x & 0x07) << 18) | (cont(i + 1) << 12) | (cont(i + 2) << 6) | cont(i + 3)
      if (cp < 0x10000 || cp > 0x10ffff) bad()
      i += 4
    } else {
      return bad()
    }
    if (cp >= 0x10000) {
      cp -= 0x10000
      units.push(0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff))
      afterHighSurrogate = false
      continue
    } else {
      // A high surrogate directly followed by a low one must have been one 4-byte sequence.
      if (afterHighSurrogate && cp >= 0xdc00 && cp <= 0xdfff) bad()
      units.push(cp)
    }
    afterHighSurrogate = cp >= 0xd800 && cp <= 0xdbff
  }
  let out = ''
  for (let j = 0; j < units.length; j += 8192) out += String.fromCharCode(...units.slice(j, j + 8192))
  return out
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!
  return a.length - b.length
}

function invalid(message: string): KonserveError {
  return new KonserveError('ERR_INVALID_KEY', message)
}

function isPlainObject(v: object): boolean {
  const proto = Object.getPrototypeOf(v)
  return proto === Object.prototype || proto === null
}

function write(w: Writer, key: unknown, depth: number, seen: Set<object>): void {
  if (key === null) {
    w.u8(T_NULL)
    return
  }
  switch (typeof key) {
    case 'boolean':
      w.u8(key ? T_TRUE : T_FALSE)
      return
    case 'number':
      if (Number.isSafeInteger(key)) {
        w.u8(T_INT)
        w.i64(key === 0 ? 0 : key) // -0 is 0
      } else {
        w.u8(T_FLOAT)
        w.f64(key)
      }
      return
    case 'string': {
      const b = wtf8Encode(key)
      w.u8(T_STRING)
      w.u32(b.length)
      w.bytes(b)
      return
    }
    case 'object':
      break
    default:
      throw invalid(`a key cannot contain a ${typeof key}`)
  }
  const obj = key as object
  if (obj instanceof Uint8Array) {
    w.u8(T_BYTES)
    w.u32(obj.length)
    w.bytes(obj)
    return
  }
  if (seen.has(obj)) throw invalid('a key cannot contain a cycle')
  if (depth > 256) throw invalid('a key is nested more than 256 levels deep')
  seen.add(obj)
  if (Array.isArray(obj)) {
    w.u8(T_ARRAY)
    w.u32(obj.length)
    for (let i = 0; i < obj.length; i++) write(w, obj[i], depth + 1, seen)
  } else if (isPlainObject(obj)) {
    if (Object.getOwnPropertySymbols(obj).length > 0) throw invalid('a key object cannot have symbol properties')
    const entries = Object.keys(obj).map((k) => [wtf8Encode(k), (obj as Record<string, unknown>)[k]] as const)
    entries.sort((a, b) => compareBytes(a[0], b[0]))
    w.u8(T_MAP)
    w.u32(entries.length)
    for (const [k, v] of entries) {
      w.u8(T_STRING)
      w.u32(k.length)
      w.bytes(k)
      write(w, v, depth + 1, seen)
    }
  } else {
    const name = (obj as { constructor?: { name?: string } }).constructor?.name ?? 'object'
    throw invalid(`a key cannot contain a ${name}; keys are null, booleans, numbers, strings, Uint8Arrays, arrays and plain objects`)
  }
  seen.delete(obj)
}

/** Encodes a key canonically. Throws `ERR_INVALID_KEY` for anything else. */
export function encodeKey(key: unknown): Uint8Array {
  if (typeof key === 'string') return encodeStringKey(key)
  if (key === undefined) throw invalid('a key cannot be undefined')
  const w = new Writer()
  write(w, key, 0, new Set())
  if (w.len > 0xffffffff) throw invalid('a key encodes to more than 4 GiB')
  return w.result()
}

/** Keys up to this many UTF-16 units take encodeStringKey's ASCII loop (it must stay below 256). */
const SHORT_KEY = 64

/**
 * The CKE of a string key (the common case, on every get): the same bytes as
 * the general writer, encoded straight into one array.
 */
function encodeStringKey(key: string): Uint8Array {
  // A short ASCII key (the usual one) is copied unit by unit: TextEncoder's
  // call, the subarray and the well-formedness check cost ten times as much.
  const len = key.length
  if (len <= SHORT_KEY) {
    const out = new Uint8Array(5 + len)
    let i = 0
    for (; i < len; i++) {
      const c = key.charCodeAt(i)
      if (c >= 0x80) break
      out[5 + i] = c
    }
    if (i === len) {
      out[0] = T_STRING
      out[4] = len // < 256: the length's upper bytes stay 0
      return out
    }
  }
  if (key.length > 0x3fffffff || !isWellFormed(key)) {
    const w = new Writer()
    write(w, key, 0, new Set())
    if (w.len > 0xffffffff) throw invalid('a key encodes to more than 4 GiB')
    return w.result()
  }
  // Sized for ASCII first (one byte per unit); otherwise for the most UTF-8
  // can take (3 bytes per UTF-16 unit), then cut to size.
  let out = new Uint8Array(5 + key.length)
  let { read, written: n } = utf8.encodeInto(key, out.subarray(5))
  if (read < key.length) {
    const wide = new Uint8Array(5 + key.length * 3)
    n = utf8.encodeInto(key, wide.subarray(5)).written
    out = wide.slice(0, 5 + n)
  }
  out[0] = T_STRING
  out[1] = n >>> 24
  out[2] = (n >>> 16) & 0xff
  out[3] = (n >>> 8) & 0xff
  out[4] = n & 0xff
  return out
}

class Reader {
  pos = 0
  readonly view: DataView
  constructor(readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  }
  need(n: number): void {
    if (this.pos + n > this.buf.length) throw invalid('key encoding ends early')
  }
  u8(): number {
    this.need(1)
    return this.buf[this.pos++]!
  }
  u32(): number {
    this.need(4)
    const v = this.view.getUint32(this.pos)
    this.pos += 4
    return v
  }
  bytes(n: number): Uint8Array {
    this.need(n)
    // A view: a caller that keeps the bytes copies them.
    const b = this.buf.subarray(this.pos, this.pos + n)
    this.pos += n
    return b
  }
}

function read(r: Reader, depth: number): Key {
  if (depth > 256) throw invalid('key encoding nested too deep')
  const tag = r.u8()
  switch (tag) {
    case T_NULL:
      return null
    case T_FALSE:
      return false
    case T_TRUE:
      return true
    case T_INT: {
      r.need(8)
      const v = r.view.getBigInt64(r.pos)
      r.pos += 8
      const n = Number(v)
      if (!Number.isSafeInteger(n) || BigInt(n) !== v) throw invalid('key integer outside the safe range')
      return n
    }
    case T_FLOAT: {
      r.need(8)
      const hi = r.view.getUint32(r.pos)
      const lo = r.view.getUint32(r.pos + 4)
      const v = r.view.getFloat64(r.pos)
      r.pos += 8
      if (Number.isSafeInteger(v)) throw invalid('key float should have been encoded as an integer')
      if (Number.isNaN(v) && (hi !== 0x7ff80000 || lo !== 0)) throw invalid('non-canonical NaN in key')
      return v
    }
    case T_STRING:
      return wtf8Decode(r.bytes(r.u32()))
    case T_BYTES:
      // A copy, and a plain Uint8Array whatever the encoding came in (a Node
      // Buffer from some engines): the same key from every store.
      return new Uint8Array(r.bytes(r.u32()))
    case T_ARRAY: {
      const n = r.u32()
      const out: Key[] = []
      for (let i = 0; i < n; i++) out.push(read(r, depth + 1))
      return out
    }
    case T_MAP: {
      const n = r.u32()
      const out: Record<string, Key> = {}
      let prev: Uint8Array | undefined
      for (let i = 0; i < n; i++) {
        if (r.u8() !== T_STRING) throw invalid('map key in key encoding is not a string')
        const kb = r.bytes(r.u32())
        if (prev && compareBytes(prev, kb) >= 0) throw invalid('map keys in key encoding are not sorted and unique')
        prev = kb
        Object.defineProperty(out, wtf8Decode(kb), { value: read(r, depth + 1), enumerable: true, writable: true, configurable: true })
      }
      return out
    }
    default:
      throw invalid(`unknown tag 0x${tag.toString(16)} in key encoding`)
  }
}

/** Decodes a CKE back into the key. Strict: rejects non-canonical input. */
export function decodeKey(bytes: Uint8Array): Key {
  const r = new Reader(bytes)
  const key = read(r, 0)
  if (r.pos !== bytes.length) throw invalid('trailing bytes after key encoding')
  return key
}
