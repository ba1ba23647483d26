/**
 * Clojure-style path access into a value: plain objects, arrays and Maps.
 * Updates copy along the path and never mutate the value they were given.
 */
import { KonserveError } from './errors.js'

export type Path = readonly unknown[]

const MISSING: unique symbol = Symbol('missing')
export type Missing = typeof MISSING
export const missing: Missing = MISSING

export function getPath(value: unknown, path: Path): unknown {
  let v: unknown = value
  for (const seg of path) {
    if (v instanceof Map) {
      if (!v.has(seg)) return MISSING
      v = v.get(seg)
    } else if (v !== null && typeof v === 'object' && (typeof seg === 'string' || typeof seg === 'number')) {
      if (!Object.hasOwn(v, seg)) return MISSING
      v = (v as Record<string, unknown>)[seg]
    } else {
      return MISSING
    }
  }
  return v
}

function badPath(message: string): KonserveError {
  return new KonserveError('ERR_INVALID_PATH', message)
}

/** The largest array index (2^32 - 2): a larger "index" would be a named property, which no serializer keeps on an array. */
const MAX_INDEX = 2 ** 32 - 2

/**
 * Throws ERR_INVALID_PATH where `setPath(value, path, leaf)` would, without
 * building anything: a write checks its path before it runs the caller's
 * function, so a path that cannot be written is refused with nothing done.
 */
export function checkSettable(value: unknown, path: Path): void {
  let v: unknown = value
  for (const seg of path) {
    if (v instanceof Map) {
      v = v.get(seg)
    } else if (Array.isArray(v)) {
      checkIndex(seg)
      v = v[seg as number]
    } else if (typeof seg !== 'string' && typeof seg !== 'number') {
      throw badPath(`an object path segment must be a string or a number, got ${typeof seg}`)
    } else if (v === undefined || v === null) {
      return
    } else if (typeof v === 'object' && !ArrayBuffer.isView(v) && !(v instanceof Date) && !(v instanceof Set)) {
      v = Object.hasOwn(v, seg) ? (v as Record<string, unknown>)[seg] : undefined
    } else {
      throw badPath(`cannot go into a ${typeof v} at path segment ${String(seg)}`)
    }
  }
}

function checkIndex(seg: unknown): void {
  if (typeof seg !== 'number' || !Number.isInteger(seg) || seg < 0 || seg > MAX_INDEX) {
    throw badPath(`cannot index an array with ${String(seg)} (an index is an integer from 0 to 2^32 - 2)`)
  }
}

export function setPath(value: unknown, path: Path, leaf: unknown): unknown {
  if (path.length === 0) return leaf
  const [seg, ...rest] = path
  if (value instanceof Map) {
    const m = new Map(value)
    m.set(seg, setPath(value.get(seg), rest, leaf))
    return m
  }
  if (Array.isArray(value)) {
    checkIndex(seg)
    const a = value.slice()
    a[seg as number] = setPath(value[seg as number], rest, leaf)
    return a
  }
  if (typeof seg !== 'string' && typeof seg !== 'number') {
    throw badPath(`an object path segment must be a string or a number, got ${typeof seg}`)
  }
  if (value === undefined || value === null) {
    return { [seg]: setPath(undefined, rest, leaf) }
  }
  if (typeof value === 'object' && !ArrayBuffer.isView(value) && !(value instanceof Date) && !(value instanceof Set)) {
    const o = value as Record<string, unknown>
    // Own properties only: o['__proto__'] would be Object.prototype.
    const own = Object.hasOwn(o, seg) ? o[seg] : undefined
    return { ...o, [seg]: setPath(own, rest, leaf) }
  }
  throw badPath(`cannot go into a ${typeof value} at path segment ${String(seg)}`)
}
