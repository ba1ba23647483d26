/**
 * The command's input and output: stdout written and waited for, JSON in and
 * out (integers beyond 2^53 exact), errors and exit statuses, progress bars.
 */
import { rmSync } from 'node:fs'
import { open, rename, rm } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { SingleBar } from 'cli-progress'
import { isInteger, parse as parseLossless, stringify as stringifyLossless } from 'lossless-json'
import { KonserveError } from '../index'

/** Documented exit statuses (README "The konserve command"). */
export const EXIT = { ok: 0, notFound: 1, damaged: 1, usage: 2, failed: 3, conflict: 4 } as const

/** A bad command line: exit 2, with the command's usage. */
export class UsageError extends Error {}

/** Output that could not be written: exit 3. */
export class OutputError extends Error {}

/** A key or store that is not there: exit 1, message as given. */
export class NotFound extends Error {}

/**
 * Writes to stdout and waits until the write is done or failed: console.log
 * drops write errors (a full disk, a closed pipe), and the exit status must
 * say the output is incomplete.
 */
export function out(text: string | Uint8Array): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const fail = (err: unknown) => reject(outputError(err))
    try {
      process.stdout.write(text, (err) => (err ? fail(err) : resolve()))
    } catch (err) {
      fail(err)
    }
  })
}

export function outputError(err: unknown): OutputError {
  return new OutputError(`cannot write the output: ${(err as Error).message ?? err}`, { cause: err })
}

/** Lines, written in batches of about 64 KiB, each waited for. */
export class LineWriter {
  private batch = ''
  async line(text: string): Promise<void> {
    this.batch += `${text}\n`
    if (this.batch.length >= 65536) await this.flush()
  }
  async flush(): Promise<void> {
    if (!this.batch) return
    const b = this.batch
    this.batch = ''
    await out(b)
  }
}

/** One line on stderr (diagnostics, warnings). */
export function note(text: string): void {
  process.stderr.write(`${text}\n`)
}

/**
 * JSON output for the types msgpack keeps but JSON lacks. BigInts are written
 * as JSON numbers with all their digits (what `put` read as a big integer is
 * printed back exactly).
 */
export function toJson(value: unknown): string {
  const onPath = new Set<object>()
  const plain = (v: unknown): unknown => {
    if (typeof v === 'number') return Number.isFinite(v) ? v : null
    if (typeof v === 'undefined' || typeof v === 'function' || typeof v === 'symbol') return null
    if (v === null || typeof v !== 'object') return v
    if (v instanceof Date) return Number.isNaN(v.getTime()) ? null : v.toISOString()
    if (v instanceof Uint8Array) return { bytes: v.length, base64: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') }
    if (onPath.has(v)) return '<cycle>'
    onPath.add(v)
    try {
      if (v instanceof Map) return Object.fromEntries([...v].map(([k, x]) => [typeof k === 'string' ? k : toJson(k), plain(x)]))
      if (v instanceof Set) return [...v].map(plain)
      if (Array.isArray(v)) return v.map(plain)
      if (ArrayBuffer.isView(v)) return Array.from(v as unknown as ArrayLike<unknown>, plain)
      // fromEntries defines each field: an own "__proto__" stays a field (an assignment would set the prototype).
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]))
    } finally {
      onPath.delete(v)
    }
  }
  return stringifyLossless(plain(value)) ?? 'null'
}

/** A JSON number token: an integer beyond 2^53 becomes a BigInt (exact), any other a number. */
function parseNumber(token: string): number | bigint {
  if (isInteger(token)) {
    const n = Number(token)
    if (!Number.isSafeInteger(n)) return BigInt(token)
    return n
  }
  const n = Number(token)
  // 1e400 would be stored as Infinity and printed back as null.
  if (!Number.isFinite(n)) throw new UsageError(`the number ${token} is beyond a double's range`)
  return n
}

/** JSON (big integers exact), or throws (UsageError for JSON that cannot be stored as written: a number out of range, a duplicated key). */
export function parseJson(text: string): unknown {
  try {
    return parseLossless(text, null, parseNumber)
  } catch (err) {
    if (err instanceof SyntaxError && err.message.startsWith('Duplicate key')) throw new UsageError(`the JSON has a duplicated key: ${err.message}`)
    throw err
  }
}

/** JSON if it parses as JSON (big integers exact), else the text itself; JSON that cannot be stored as written is a UsageError. */
export function parseValue(text: string): unknown {
  try {
    return parseJson(text)
  } catch (err) {
    if (err instanceof UsageError) throw err
    return text
  }
}

/** A JSON argument, from the argument or from stdin for `-`: UsageError when it is not JSON. */
export async function jsonArg(arg: string, what: string): Promise<unknown> {
  const text = arg === '-' ? (await readStdin()).toString('utf8') : arg
  try {
    return parseJson(text)
  } catch (err) {
    if (err instanceof UsageError) throw err
    throw new UsageError(`${what} takes a JSON value, not ${JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}…` : text)} (${(err as Error).message}); quote a string as '"text"'`)
  }
}

/** All of stdin, as bytes. */
export async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of process.stdin) chunks.push(c as Buffer)
  return Buffer.concat(chunks)
}

/** A value argument: from the argument, or from stdin for `-` (a final newline dropped from a string). */
export async function valueArg(arg: string): Promise<unknown> {
  if (arg !== '-') return parseValue(arg)
  const text = (await readStdin()).toString('utf8')
  const v = parseValue(text)
  return typeof v === 'string' ? v.replace(/\r?\n$/, '') : v
}

/** What the write commands take: --meta JSON (user fields) and --expected-revision N (a compare-and-set). */
export const WRITE_OPTIONS = {
  meta: { type: 'string', help: 'user metadata for the key, a JSON object (getMeta and `konserve meta` return its fields)' },
  'expected-revision': {
    type: 'string',
    help: 'write only if the key is at revision N (0: only if it does not exist); else exit 4 (ERR_REVISION_MISMATCH) and change nothing',
  },
} as const

/** The --meta and --expected-revision options of a write command, checked, as the library's write options. */
export function writeOptions(opts: Record<string, string | boolean | undefined>): { meta?: Record<string, unknown>; expectedRevision?: number } {
  const r: { meta?: Record<string, unknown>; expectedRevision?: number } = {}
  const meta = opts.meta
  if (typeof meta === 'string') {
    let v: unknown
    try {
      v = parseJson(meta)
    } catch (err) {
      throw new UsageError(`--meta takes a JSON object, not ${JSON.stringify(meta)} (${(err as Error).message})`)
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new UsageError(`--meta takes a JSON object, not ${meta}`)
    r.meta = v as Record<string, unknown>
  }
  const rev = opts['expected-revision']
  if (typeof rev === 'string') {
    if (!/^(0|[1-9][0-9]*)$/.test(rev) || !Number.isSafeInteger(Number(rev))) throw new UsageError(`--expected-revision takes a revision number (0, 1, 2, ...), not ${JSON.stringify(rev)}`)
    r.expectedRevision = Number(rev)
  }
  return r
}

/** The exit status for an error. */
export function exitStatus(err: unknown): number {
  if (err instanceof UsageError) return EXIT.usage
  if (err instanceof NotFound) return EXIT.notFound
  if (err instanceof KonserveError) {
    if (['ERR_INVALID_ARGUMENT', 'ERR_INVALID_KEY', 'ERR_INVALID_PATH'].includes(err.code)) return EXIT.usage
    // A lost compare-and-set: its own status, so a script can re-read and retry.
    if (err.code === 'ERR_REVISION_MISMATCH') return EXIT.conflict
  }
  return EXIT.failed
}

/**
 * The command's own codes, beside the library's (ERROR_CODES in ts/errors.ts);
 * scripts/error-codes.mjs checks every ERR_ name against both lists.
 */
export const CLI_CODES = ['ERR_NOT_FOUND', 'ERR_OUTPUT', 'ERR_FAILED'] as const

/** The one line (or JSON object, for `--json`) an error is reported with on stderr. */
export function describeError(err: unknown, json: boolean): string {
  const code = err instanceof KonserveError ? err.code : err instanceof UsageError ? 'ERR_INVALID_ARGUMENT' : err instanceof NotFound ? 'ERR_NOT_FOUND' : err instanceof OutputError ? 'ERR_OUTPUT' : 'ERR_FAILED'
  const message = (err as Error)?.message ?? String(err)
  const file = err instanceof KonserveError ? err.file : undefined
  if (json) {
    const e: Record<string, unknown> = { code, message }
    if (file) e.file = file
    if (err instanceof KonserveError && 'key' in err) e.key = err.key
    return toJson({ error: e, exit: exitStatus(err) })
  }
  return `konserve: ${code}: ${message}${file ? ` (file ${file})` : ''}`
}

/**
 * Writes `produce`'s bytes to `path` through a temporary file beside it,
 * synced and renamed: PATH is whole or untouched. `onOpenFailed` runs when
 * the temporary file cannot be created.
 */
export async function writeFileAtomic(path: string, produce: (dest: NodeJS.WritableStream) => Promise<void>, onOpenFailed?: () => void): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.konserve-${process.pid}.tmp`)
  // Ctrl-C or a kill while it is written: the partial file goes (it may be a plaintext copy of an
  // encrypted store's data), then the signal takes its course (exit 130 for SIGINT). Listening
  // from before the file exists: a signal between its create and the next turn must find it too.
  const onSignal = (signal: NodeJS.Signals) => {
    rmSync(tmp, { force: true })
    for (const s of CLEANUP_SIGNALS) process.removeListener(s, onSignal)
    process.kill(process.pid, signal)
  }
  for (const s of CLEANUP_SIGNALS) process.on(s, onSignal)
  let fh
  try {
    fh = await open(tmp, 'wx')
  } catch (err) {
    for (const s of CLEANUP_SIGNALS) process.removeListener(s, onSignal)
    onOpenFailed?.()
    throw new OutputError(`cannot write ${path}: ${(err as Error).message}`, { cause: err })
  }
  try {
    await produce(fh.createWriteStream())
    // The stream closed the file: sync it through a new descriptor, then rename it into place.
    const again = await open(tmp, 'r')
    try {
      await again.sync()
    } finally {
      await again.close()
    }
    await rename(tmp, path)
    // The rename is durable once the directory is synced.
    const dir = await open(dirname(path), 'r')
    try {
      await dir.sync()
    } finally {
      await dir.close()
    }
  } catch (err) {
    await fh.close().catch(() => {})
    await rm(tmp, { force: true })
    throw err
  } finally {
    for (const s of CLEANUP_SIGNALS) process.removeListener(s, onSignal)
  }
}

/** The signals that end the command, on which a temporary file is removed first. */
const CLEANUP_SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP']

// ---- progress -----------------------------------------------------------------------

/** Human sizes: 1.5 MiB. */
export function bytesText(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  let v = n
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024
    i++
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`
}

export interface Progress {
  /** Adds `n` to the count done. */
  add(n: number): void
  /** Sets the count done. */
  set(n: number): void
  stop(): void
}

const NO_PROGRESS: Progress = { add() {}, set() {}, stop() {} }

/**
 * A progress bar on stderr when it is a terminal (never when piped or with
 * --json / --no-progress): bytes or items, rate, ETA (cli-progress).
 */
export function progress(enabled: boolean, what: string, total: number | undefined, unit: 'bytes' | 'keys'): Progress {
  if (!enabled || !process.stderr.isTTY) return NO_PROGRESS
  const show = unit === 'bytes' ? bytesText : (n: number) => String(n)
  const known = total !== undefined && total > 0
  const bar = new SingleBar({
    stream: process.stderr,
    format: known
      ? `${what} [{bar}] {percentage}% | {done} of {all} | {rate}/s | ETA {eta_formatted}`
      : `${what} {done} | {rate}/s | {duration_formatted}`,
    hideCursor: true,
    clearOnComplete: false,
    etaBuffer: 50,
    barsize: 30,
  })
  const start = performance.now()
  let done = 0
  const payload = () => ({ done: show(done), all: show(total ?? 0), rate: show(Math.round(done / Math.max(0.001, (performance.now() - start) / 1000))) })
  bar.start(known ? total : 1, 0, payload())
  return {
    add(n) {
      done += n
      bar.update(known ? done : 0, payload())
    },
    set(n) {
      done = n
      bar.update(known ? done : 0, payload())
    },
    stop() {
      bar.update(known ? done : 0, payload())
      bar.stop()
    },
  }
}
