/**
 * Argument checks at the API boundary: every exported function checks what it
 * was given before it reads or writes anything, and a wrong kind of argument or
 * an option name it does not know is `ERR_INVALID_ARGUMENT` naming the function
 * and the parameter (thrown in sync form, a rejected Promise otherwise). A
 * misspelt option (`{ snyc: true }`, `{ encrypter }`) is an error, never
 * silently ignored.
 */
import { KonserveError } from './errors.js'

/** Says what a value should be, or undefined when it is fine. */
export type Check = (v: unknown) => string | undefined

/** The options an operation takes and the kind of each (undefined is always allowed). */
export type Spec = Readonly<Record<string, Check>>

const kind =
  (what: string, ok: (v: unknown) => boolean): Check =>
  (v) =>
    ok(v) ? undefined : what

export const isPlainObject = (v: unknown): v is Record<string, unknown> => {
  if (v === null || typeof v !== 'object') return false
  const proto = Object.getPrototypeOf(v)
  return proto === Object.prototype || proto === null
}

export const checks = {
  any: ((): undefined => undefined) as Check,
  boolean: kind('a boolean', (v) => typeof v === 'boolean'),
  function: kind('a function', (v) => typeof v === 'function'),
  object: kind('a plain object', isPlainObject),
  count: kind('a non-negative integer', (v) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0),
}

/** A short description of what was given, for messages. */
export function describe(v: unknown): string {
  if (v === null || v === undefined) return String(v)
  if (Array.isArray(v)) return 'an array'
  if (typeof v === 'function') return 'a function'
  if (typeof v === 'object') {
    const name = (Object.getPrototypeOf(v) as { constructor?: { name?: string } } | null)?.constructor?.name
    return name && name !== 'Object' ? `a ${name}` : 'an object'
  }
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 37)}...` : v)}`
  if (typeof v === 'symbol') return 'a symbol'
  return `${typeof v} ${String(v)}`
}

export function badArgument(fn: string, param: string, expected: string, got: unknown): KonserveError {
  return new KonserveError('ERR_INVALID_ARGUMENT', `${fn}: ${param} must be ${expected}, got ${describe(got)}`)
}

/** Edit distance, for "did you mean". */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]!
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1))
      prev = cur
    }
  }
  return row[b.length]!
}

function unknownOption(fn: string, param: string, key: string, spec: Spec): KonserveError {
  const names = Object.keys(spec)
  const near = names.find((n) => distance(n.toLowerCase(), key.toLowerCase()) <= 2)
  return new KonserveError(
    'ERR_INVALID_ARGUMENT',
    `${fn}: unknown option ${JSON.stringify(key)} in ${param}${near ? ` (did you mean ${JSON.stringify(near)}?)` : ''}; it takes ${names.map((n) => JSON.stringify(n)).join(', ') || 'none'}`,
  )
}

/**
 * Checks an options argument: undefined, or an object (not an array, not null)
 * whose every enumerable key is in `spec` and of the kind it wants.
 */
export function checkOptions(fn: string, opts: unknown, spec: Spec, param = 'opts'): void {
  if (opts === undefined) return
  if (opts === null || typeof opts !== 'object' || Array.isArray(opts)) throw badArgument(fn, param, 'an options object', opts)
  for (const key in opts) {
    if (!Object.hasOwn(spec, key)) throw unknownOption(fn, param, key, spec)
    const v = (opts as Record<string, unknown>)[key]
    if (v === undefined) continue
    const want = spec[key]!(v)
    if (want) throw badArgument(fn, `${param}.${key}`, want, v)
  }
}

/** Whether a call asked for the blocking form (a bad options argument counts as the Promise form). */
export function isSync(opts: unknown): boolean {
  return opts !== null && typeof opts === 'object' && (opts as { sync?: unknown }).sync === true
}

/** `err` as the call's form reports it: thrown (sync) or a rejected Promise. */
// biome-ignore lint/suspicious/noExplicitAny: it stands for whichever result the call would have given.
export function fail(err: unknown, opts: unknown): any {
  if (isSync(opts)) throw err
  return Promise.reject(err)
}
