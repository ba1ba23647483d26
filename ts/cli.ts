#!/usr/bin/env node
/**
 * The `konserve` command: a durable store in ./konserve-data from the shell.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { isInteger, parse as parseLossless, stringify as stringifyLossless } from 'lossless-json'
import { assoc, bassoc, connectFsStore, dissoc, exists, get, keys, KonserveError, type Key } from './index.js'

const USAGE = `usage: konserve [--dir DIR] [--json-key] [--no-sync] <command> [args]

Commands:
  put <key> <value>     store a value (JSON if it parses as JSON, else the string;
                        integers beyond 2^53 are kept exactly, as BigInt);
                        <value> - reads it from stdin (a final newline is dropped
                        from a string)
  put-file <key> <path> store a file's bytes as a binary blob (- for stdin)
  get <key>             print the value as JSON (exit 1 if missing)
  exists <key>          print true or false
  keys                  print every key with its type and last write, one per line
  del <key>             delete a key (prints whether it existed)

get, exists and keys only read: they create nothing, and a store directory
that does not exist is an error (exit 1).

Exit status: 0 done, 1 not found (key or store), 2 any error, including
output that could not be written (a full disk, a closed pipe).

Options:
  --dir DIR     the store directory (default ./konserve-data)
  --json-key    parse <key> as JSON (so 42 is a number and ["a",1] an array)
  --no-sync     skip fsync (faster, may lose the latest writes on a crash)
  -v, --version print the version
  -h, --help    this text`

/** Output that could not be written: reported, with exit status 2. */
class OutputError extends Error {}

/**
 * Writes to stdout and waits until the write is done or failed: console.log
 * drops write errors (a full disk, a closed pipe), and the exit status must
 * say the output is incomplete.
 */
function out(text: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const fail = (err: unknown) => reject(new OutputError(`cannot write the output: ${(err as Error).message ?? err}`, { cause: err }))
    try {
      process.stdout.write(text, (err) => (err ? fail(err) : resolve()))
    } catch (err) {
      fail(err)
    }
  })
}
// A failed write also emits 'error': it is reported through the write's callback, not thrown at the process.
process.stdout.on('error', () => {})

/** Lines, written in batches of about 64 KiB, each waited for. */
async function outLines(lines: Iterable<string>): Promise<void> {
  let batch = ''
  for (const line of lines) {
    batch += `${line}\n`
    if (batch.length >= 65536) {
      await out(batch)
      batch = ''
    }
  }
  if (batch) await out(batch)
}

/**
 * JSON output for the types msgpack keeps but JSON lacks. BigInts are written
 * as JSON numbers with all their digits (what `put` read as a big integer is
 * printed back exactly).
 */
function toJson(value: unknown): string {
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
      const o: Record<string, unknown> = {}
      for (const [k, x] of Object.entries(v)) o[k] = plain(x)
      return o
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
  return Number(token)
}

/** JSON if it parses as JSON (big integers exact), else the text itself. */
function parseValue(text: string): unknown {
  try {
    return parseLossless(text, null, parseNumber)
  } catch {
    return text
  }
}

/** All of stdin, as bytes. */
async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of process.stdin) chunks.push(c as Buffer)
  return Buffer.concat(chunks)
}

/** The value of `put`: from the argument, or from stdin for `-` (a final newline dropped from a string). */
async function valueArg(arg: string): Promise<unknown> {
  if (arg !== '-') return parseValue(arg)
  const text = (await readStdin()).toString('utf8')
  const v = parseValue(text)
  return typeof v === 'string' ? v.replace(/\r?\n$/, '') : v
}

function version(): string {
  // dist/cli.js beside ../package.json; ts/cli.ts (tests through tsx) too.
  return (JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')) as { version: string }).version
}

/** The commands that only read: their store is opened with create: false. */
const READS = new Set(['get', 'exists', 'keys'])

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      dir: { type: 'string', default: 'konserve-data' },
      'json-key': { type: 'boolean', default: false },
      'no-sync': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
      version: { type: 'boolean', short: 'v', default: false },
    },
  })
  const [command, ...args] = positionals
  if (values.version) {
    await out(`${version()}\n`)
    return 0
  }
  if (values.help || !command) {
    if (values.help) await out(`${USAGE}\n`)
    else console.error(USAGE)
    return values.help ? 0 : 2
  }
  const need = (n: number): void => {
    if (args.length !== n) throw new KonserveError('ERR_INVALID_ARGUMENT', `${command} takes ${n} argument(s)\n\n${USAGE}`)
  }
  const keyOf = (text: string): Key => (values['json-key'] ? (JSON.parse(text) as Key) : text)
  if (!READS.has(command) && !['put', 'put-file', 'del'].includes(command)) {
    console.error(`unknown command: ${command}\n\n${USAGE}`)
    return 2
  }
  let store
  try {
    store = await connectFsStore(values.dir!, { syncBlob: !values['no-sync'], create: !READS.has(command) })
  } catch (err) {
    const cause = (err as { cause?: NodeJS.ErrnoException }).cause
    if (READS.has(command) && cause?.code === 'ENOENT') {
      console.error(`konserve: no store at ${values.dir} (the directory does not exist)`)
      return 1
    }
    throw err
  }

  switch (command) {
    case 'put':
      need(2)
      await assoc(store, keyOf(args[0]!), await valueArg(args[1]!))
      return 0
    case 'put-file':
      need(2)
      await bassoc(store, keyOf(args[0]!), args[1] === '-' ? process.stdin : readFileSync(args[1]!))
      return 0
    case 'get': {
      need(1)
      const missing = Symbol('missing')
      const v = await get(store, keyOf(args[0]!), { notFound: missing })
      if (v === missing) {
        console.error(`not found: ${args[0]}`)
        return 1
      }
      await out(`${toJson(v)}\n`)
      return 0
    }
    case 'exists':
      need(1)
      await out(`${await exists(store, keyOf(args[0]!))}\n`)
      return 0
    case 'keys':
      need(0)
      await outLines((await keys(store)).map((m) => toJson(m)))
      return 0
    case 'del':
      need(1)
      await out(`${await dissoc(store, keyOf(args[0]!))}\n`)
      return 0
    default:
      console.error(`unknown command: ${command}\n\n${USAGE}`)
      return 2
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
  },
  (err: unknown) => {
    if (err instanceof OutputError) {
      console.error(`konserve: ${err.message}`)
    } else if (err instanceof KonserveError) {
      console.error(`konserve: ${err.code}: ${err.message}${err.file ? ` (file ${err.file})` : ''}`)
    } else {
      console.error(`konserve: ${(err as Error).message ?? err}`)
    }
    process.exitCode = 2
  },
)
