/**
 * Copies of plain data: the trees of primitives, plain objects, arrays and
 * Dates that most stored values decode to. A read cache keeps such a tree once and
 * answers each hit with a copy, several times cheaper than decoding the
 * value's bytes again (msgpack records: each value carries its own record
 * definitions, which every decode must read).
 * Anything else (a Map, Set, typed array, class instance, a shared or
 * cyclic reference, a `__proto__` key) makes the tree not plain: it is then
 * decoded on every read, as before.
 */

/** What `plainCopy` answers for a value that is not plain data. */
export const NOT_PLAIN: unique symbol = Symbol('not plain')

/**
 * A deep copy of `v` if it is plain data, each object and array reached once
 * (no shared references, no cycles), else NOT_PLAIN. Strings and other
 * primitives are immutable: shared, not copied.
 */
export function plainCopy(v: unknown): unknown {
  const seen = new Set<object>()
  const walk = (x: unknown): unknown => {
    if (typeof x !== 'object' || x === null) return typeof x === 'function' || typeof x === 'symbol' ? NOT_PLAIN : x
    if (seen.has(x)) return NOT_PLAIN
    seen.add(x)
    const proto = Object.getPrototypeOf(x)
    if (proto === Array.prototype) {
      const src = x as unknown[]
      const out = new Array(src.length)
      for (let i = 0; i < src.length; i++) {
        if (!(i in src)) return NOT_PLAIN
        const c = walk(src[i])
        if (c === NOT_PLAIN) return NOT_PLAIN
        out[i] = c
      }
      // Named properties on an array (refused by the serializers, but a decoder may make them).
      return Object.keys(src).length === src.length ? out : NOT_PLAIN
    }
    // A Date (as decoders make them: no properties of its own) is copied by its time.
    if (proto === Date.prototype) return Reflect.ownKeys(x).length === 0 ? new Date((x as Date).getTime()) : NOT_PLAIN
    if (proto !== Object.prototype || Object.getOwnPropertySymbols(x).length > 0) return NOT_PLAIN
    const out: Record<string, unknown> = {}
    for (const k of Object.keys(x)) {
      const d = Object.getOwnPropertyDescriptor(x, k)
      if (k === '__proto__' || !d || !('value' in d)) return NOT_PLAIN
      const c = walk(d.value)
      if (c === NOT_PLAIN) return NOT_PLAIN
      out[k] = c
    }
    // Non-enumerable own properties would be lost: not plain.
    return Object.getOwnPropertyNames(x).length === Object.keys(x).length ? out : NOT_PLAIN
  }
  return walk(v)
}

/** A deep copy of a tree that `plainCopy` made (known plain: no checks). */
export function copyPlain(x: unknown): unknown {
  return typeof x === 'object' && x !== null ? copyNode(x) : x
}

/**
 * Shallow copies (a spread, a slice: V8's fast clones of the same shape),
 * then the nested objects and arrays replaced by their copies: a third
 * faster than building each object key by key.
 */
function copyNode(x: object): object {
  if (Array.isArray(x)) {
    const out = x.slice()
    for (let i = 0; i < out.length; i++) {
      const v = out[i]
      if (typeof v === 'object' && v !== null) out[i] = copyNode(v)
    }
    return out
  }
  if (x instanceof Date) return new Date(x.getTime())
  const out: Record<string, unknown> = { ...x }
  for (const k of Object.keys(out)) {
    const v = out[k]
    if (typeof v === 'object' && v !== null) out[k] = copyNode(v)
  }
  return out
}
