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
      if (!Object.prototype.hasOwnProperty.call(v, seg)) return MISSING
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

export function setPath(value: unknown, path: Path, leaf: unknown): unknown {
  if (path.length === 0) return leaf
  const [seg, ...rest] = path
  if (value instanceof Map) {
    const m = new Map(value)
    m.set(seg, setPath(value.get(seg), rest, leaf))
    return m
  }
  if (Array.isArray(value)) {
    if (typeof seg !== 'number' || !Number.isInteger(seg) || seg < 0) {
      throw badPath(`cannot index an array with ${String(seg)}`)
    }
    const a = value.slice()
    a[seg] = setPath(value[seg], rest, leaf)
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
    return { ...o, [seg]: setPath(o[seg], rest, leaf) }
  }
  throw badPath(`cannot go into a ${typeof value} at path segment ${String(seg)}`)
}
