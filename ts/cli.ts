#!/usr/bin/env node
/**
 * The `konserve` command: a durable store in ./konserve-data from the shell.
 */
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { assoc, bassoc, connectFsStore, dissoc, exists, get, keys, KonserveError, type Key } from './index.js'

const USAGE = `usage: konserve [--dir DIR] [--json-key] [--no-sync] <command> [args]

Commands:
  put <key> <value>     store a value (JSON if it parses as JSON, else the string)
  put-file <key> <path> store a file's bytes as a binary blob
  get <key>             print the value as JSON (exit 1 if missing)
  exists <key>          print true or false
  keys                  print every key with its type and last write, one per line
  del <key>             delete a key (prints whether it existed)

Options:
  --dir DIR     the store directory (default ./konserve-data)
  --json-key    parse <key> as JSON (so 42 is a number and ["a",1] an array)
  --no-sync     skip fsync (faster, may lose the latest writes on a crash)
  -h, --help    this text`

/** JSON output for the types msgpack keeps but JSON lacks. */
function toJson(value: unknown): string {
  return JSON.stringify(
    value,
    function (this: unknown, k, v) {
      const raw = (this as Record<string, unknown>)[k]
      if (typeof raw === 'bigint') return raw.toString()
      if (raw instanceof Date) return raw.toISOString()
      if (raw instanceof Map) return Object.fromEntries(raw)
      if (raw instanceof Set) return [...raw]
      if (raw instanceof Uint8Array) return { bytes: raw.length, base64: Buffer.from(raw).toString('base64') }
      return v
    },
    0,
  )
}

function parseValue(text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      dir: { type: 'string', default: 'konserve-data' },
      'json-key': { type: 'boolean', default: false },
      'no-sync': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  })
  const [command, ...args] = positionals
  if (values.help || !command) {
    console.log(USAGE)
    return values.help ? 0 : 2
  }
  const need = (n: number): void => {
    if (args.length !== n) throw new KonserveError('ERR_INVALID_ARGUMENT', `${command} takes ${n} argument(s)\n\n${USAGE}`)
  }
  const keyOf = (text: string): Key => (values['json-key'] ? (JSON.parse(text) as Key) : text)
  const store = await connectFsStore(values.dir!, { syncBlob: !values['no-sync'] })

  switch (command) {
    case 'put':
      need(2)
      await assoc(store, keyOf(args[0]!), parseValue(args[1]!))
      return 0
    case 'put-file':
      need(2)
      await bassoc(store, keyOf(args[0]!), readFileSync(args[1]!))
      return 0
    case 'get': {
      need(1)
      const missing = Symbol('missing')
      const v = await get(store, keyOf(args[0]!), { notFound: missing })
      if (v === missing) {
        console.error(`not found: ${args[0]}`)
        return 1
      }
      console.log(toJson(v))
      return 0
    }
    case 'exists':
      need(1)
      console.log(await exists(store, keyOf(args[0]!)))
      return 0
    case 'keys':
      need(0)
      for (const m of await keys(store)) console.log(toJson(m))
      return 0
    case 'del':
      need(1)
      console.log(await dissoc(store, keyOf(args[0]!)))
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
    if (err instanceof KonserveError) {
      console.error(`konserve: ${err.code}: ${err.message}${err.file ? ` (file ${err.file})` : ''}`)
    } else {
      console.error(`konserve: ${(err as Error).message ?? err}`)
    }
    process.exitCode = 2
  },
)
