/**
 * Every error konserve throws (or rejects with) is a `KonserveError` with a
 * stable `code` to branch on, and, where they are known, the key and the file.
 */

/**
 * Every error code, once: the one list (issue 20). The `ErrorCode` type and
 * the check of codes that cross from the native binding are made from it;
 * `scripts/error-codes.mjs` (run by `__test__/error-codes.spec.ts`) checks the
 * others against it: the core's `ErrorCode::as_str` (crates/core/src/error.rs)
 * may only use codes listed here, the README's "Errors" table must describe
 * each code here and no other, and no `ERR_*` name in README.md, docs/, ts/
 * or the Rust sources may be one that is not here.
 *
 * To add a code: add it here; if the Rust core raises it, add the variant to
 * `ErrorCode` in crates/core/src/error.rs with the same string in `as_str`;
 * add a row to README.md's "Errors" table; then `node scripts/error-codes.mjs`.
 */
export const ERROR_CODES = [
  'ERR_IO',
  'ERR_CORRUPT',
  'ERR_UNSUPPORTED_VERSION',
  'ERR_UNSUPPORTED_CODEC',
  'ERR_KEY_MISMATCH',
  'ERR_INVALID_KEY',
  'ERR_STORE_POISONED',
  'ERR_LOCK',
  'ERR_LOCK_BUSY',
  'ERR_LOCK_TIMEOUT',
  'ERR_LOCK_REENTRY',
  'ERR_FSYNC',
  'ERR_NO_SPACE',
  'ERR_READ_ONLY',
  'ERR_PERMISSION',
  'ERR_TOO_MANY_FILES',
  'ERR_NOT_A_DIRECTORY',
  'ERR_NOT_A_FILE',
  'ERR_DECRYPT',
  'ERR_REVISION_MISMATCH',
  'ERR_SERIALIZE',
  'ERR_DESERIALIZE',
  'ERR_SERIALIZER_NOT_FOUND',
  'ERR_NOT_A_LOG',
  'ERR_NOT_BINARY',
  'ERR_INVALID_PATH',
  'ERR_INVALID_ARGUMENT',
  'ERR_NOT_SUPPORTED',
  'ERR_NATIVE_UNAVAILABLE',
  'ERR_SOURCE',
  // A network backend's server cannot be reached or failed the command (docs/BACKENDS.md).
  'ERR_BACKEND_UNAVAILABLE',
  // The store's life cycle (close, deleteStore): see README "Closing a store".
  'ERR_CLOSED',
  'ERR_STORE_DELETED',
  // The store registry (createStore, connectStore): see README "The store registry".
  'ERR_STORE_EXISTS',
  'ERR_STORE_NOT_FOUND',
] as const

export type ErrorCode = (typeof ERROR_CODES)[number]

export class KonserveError extends Error {
  override name = 'KonserveError'
  readonly code: ErrorCode
  // `declare`: no class field is emitted, so `'key' in err` says whether a key
  // was attached (an ES2022 field would always exist, set to undefined).
  /** The key the operation was about, when there is one. */
  declare key?: unknown
  /** The file involved, for file stores. */
  declare file?: string
  /** For `ERR_REVISION_MISMATCH`: the revision the key is at. */
  declare actualRevision?: number

  constructor(code: ErrorCode, message: string, details: { key?: unknown; file?: string; cause?: unknown } = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause })
    this.code = code
    if ('key' in details) this.key = details.key
    if (details.file) this.file = details.file
  }
}

/** Attaches the key to an error thrown while working on it, and types foreign errors. */
export function withKey(err: unknown, key: unknown): KonserveError {
  // The user's own error passes untouched (see UserThrew).
  if (err instanceof UserThrew) return err as unknown as KonserveError
  const e = toKonserveError(err)
  if (!('key' in e)) {
    e.key = key
    e.message = `${e.message} (key ${describeKey(key)})`
  }
  return e
}

/**
 * The one errno table (docs/RELIABILITY.md "One fault, one code"; the core's
 * `ErrorCode::of_io` is the same table): the code an OS error gets wherever it
 * happens, or undefined for an errno the table does not name (then the
 * operation's own code applies: ERR_IO, or ERR_LOCK for a lock call).
 */
export function codeOfErrno(errno: string | undefined): ErrorCode | undefined {
  switch (errno) {
    case 'EACCES':
    case 'EPERM':
      return 'ERR_PERMISSION'
    case 'EROFS':
      return 'ERR_READ_ONLY'
    case 'ENOSPC':
    case 'EDQUOT':
      return 'ERR_NO_SPACE'
    case 'EMFILE':
    case 'ENFILE':
      return 'ERR_TOO_MANY_FILES'
    case 'ENOTDIR':
      return 'ERR_NOT_A_DIRECTORY'
    case 'ELOOP':
    case 'EISDIR':
      return 'ERR_NOT_A_FILE'
    default:
      return undefined
  }
}

/**
 * The code of a Node OS error done in an operation whose own code is
 * `fallback` (ERR_IO for ordinary file calls, ERR_LOCK for lock calls).
 * ERR_FSYNC is never overridden: a failed fsync is always ERR_FSYNC.
 */
export function codeOfOsError(err: unknown, fallback: ErrorCode = 'ERR_IO'): ErrorCode {
  if (fallback === 'ERR_FSYNC') return fallback
  return codeOfErrno(errnoName(err)) ?? fallback
}

/** The errno's name of a Node OS error (libuv names no EDQUOT: 'Unknown system error -122'). */
function errnoName(err: unknown): string | undefined {
  const e = err as NodeJS.ErrnoException | undefined
  if (typeof e?.code !== 'string') return undefined
  if (e.code.startsWith('E') || typeof e.errno !== 'number') return e.code
  return errnoConstants()[-e.errno]
}

let byNumber: Record<number, string> | undefined
/** @internal Hands in the platform's errno numbers by name (Node: `os.constants.errno`, ts/node/wire.ts). */
export function useErrnoNames(errno: Record<string, number>): void {
  byNumber = Object.fromEntries(Object.entries(errno).map(([name, n]) => [n, name]))
}
function errnoConstants(): Record<number, string> {
  if (!byNumber) {
    // Not handed in (a module loaded without the Node entry): Node's own table where it can be had.
    const os = (globalThis as { process?: { getBuiltinModule?: (id: string) => { constants?: { errno?: Record<string, number> } } | undefined } }).process?.getBuiltinModule?.('node:os')
    useErrnoNames(os?.constants?.errno ?? {})
  }
  return byNumber!
}

/**
 * What the user's own code threw (an update function, a reduceLog fold, a bget
 * callback), boxed on its way through konserve so that no layer types or
 * relabels it; the API unboxes it and the caller gets the very value thrown.
 */
export class UserThrew {
  constructor(readonly thrown: unknown) {}
}

/** The value a user's function threw, or `err` itself. */
export function unbox(err: unknown): unknown {
  return err instanceof UserThrew ? err.thrown : err
}

/** Types a foreign error (a Node OS error, anything else) as a KonserveError. */
export function toKonserveError(err: unknown): KonserveError {
  if (err instanceof KonserveError) return err
  const message = err instanceof Error ? err.message : String(err)
  const file = (err as NodeJS.ErrnoException | undefined)?.path
  return new KonserveError(codeOfOsError(err), message, { cause: err, file: typeof file === 'string' ? file : undefined })
}

/** Every code, for checking a code that crossed from the native binding. */
const CODES: ReadonlySet<string> = new Set<string>(ERROR_CODES)

/**
 * Types an error thrown by the native binding (and only there: call it where
 * the binding is called; the binding never runs the user's code). The core's
 * errors cross as JavaScript Errors whose `code` property is the konserve
 * code and whose `file` property, when there is one, is the file (src/lib.rs
 * `js_error`); nothing is read out of the message, so a path or a message
 * cannot forge a code or a file. Any other error (napi-rs's own argument
 * errors, with codes such as `InvalidArg`) is typed as a foreign error.
 */
export function fromNative(err: unknown): KonserveError {
  if (err instanceof KonserveError) return err
  if (err instanceof Error) {
    const { code, file } = err as { code?: unknown; file?: unknown }
    if (typeof code === 'string' && CODES.has(code)) {
      return new KonserveError(code as ErrorCode, err.message, { file: typeof file === 'string' && file ? file : undefined, cause: err })
    }
  }
  return toKonserveError(err)
}

/** A short, printable form of a key for messages (keys can be 100 KB). */
export function describeKey(key: unknown): string {
  let s: string
  try {
    s = JSON.stringify(key, (_k, v) => (v instanceof Uint8Array ? `<${v.length} bytes>` : v)) ?? String(key)
  } catch {
    s = String(key)
  }
  return s.length > 120 ? `${s.slice(0, 117)}...` : s
}
