#!/usr/bin/env node
/**
 * The `konserve` command: a durable store in ./konserve-data from the shell.
 * Arguments are parsed by Node's util.parseArgs; each command lives in the
 * module of its group (docs, blobs, ops).
 */
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { parseArgs } from 'node:util'
import { catCmd, getFileCmd, putFileCmd } from './blobs.js'
import { appendCmd, delCmd, existsCmd, getCmd, getInCmd, keysCmd, logCmd, metaCmd, putCmd, updateInCmd } from './docs.js'
import { EXIT, UsageError, WRITE_OPTIONS, describeError, exitStatus, note, out } from './io.js'
import { type Context, type Globals, KEY_ENV, makeContext } from './open.js'
import { exportCmd, gcCmd, importCmd, statsCmd, verifyCmd } from './ops.js'

type Opt = { type: 'string' | 'boolean'; short?: string }

const GLOBAL_OPTIONS: Record<string, Opt> = {
  dir: { type: 'string' },
  'json-key': { type: 'boolean' },
  'no-sync': { type: 'boolean' },
  json: { type: 'boolean' },
  'no-progress': { type: 'boolean' },
  lz4: { type: 'boolean' },
  'key-env': { type: 'string' },
  'ask-key': { type: 'boolean' },
  'accept-plaintext': { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'v' },
}

interface Command {
  /** The arguments, for the usage line. */
  args: string
  /** How many arguments: [min, max] (max Infinity for any number). */
  count: [number, number]
  summary: string
  /** More text for `konserve CMD --help`. */
  help?: string
  options?: Record<string, Opt & { help: string }>
  run(c: Context): Promise<number>
}

const COMMANDS: Record<string, Command> = {
  get: {
    args: 'KEY',
    count: [1, 1],
    summary: 'print the value as JSON (a blob as {"bytes":N,"base64":"..."}, streamed)',
    run: getCmd,
  },
  put: {
    args: 'KEY VALUE|-',
    count: [2, 2],
    summary: 'store a value: JSON if it parses (integers beyond 2^53 exact), else the string; - reads stdin',
    help: 'With -, a final newline is dropped from a string value. A value that starts with - goes after --: konserve put n -- -5',
    options: WRITE_OPTIONS,
    run: putCmd,
  },
  'get-in': {
    args: 'KEY STEP...',
    count: [1, Infinity],
    summary: 'print the value at a path inside a value (an integer STEP indexes an array)',
    run: getInCmd,
  },
  'update-in': {
    args: 'KEY STEP... JSON|-',
    count: [2, Infinity],
    summary: 'set the value at a path (maps along it are created), atomically; prints the new value',
    options: WRITE_OPTIONS,
    run: updateInCmd,
  },
  meta: { args: 'KEY', count: [1, 1], summary: "print the key's metadata (type, lastWrite, revision, user fields)", run: metaCmd },
  exists: { args: 'KEY', count: [1, 1], summary: 'print true or false', run: existsCmd },
  del: {
    args: 'KEY',
    count: [1, 1],
    summary: 'delete a key; prints whether it existed',
    options: { 'expected-revision': WRITE_OPTIONS['expected-revision'] },
    run: delCmd,
  },
  keys: {
    args: '',
    count: [0, 0],
    summary: "print every key's metadata, one JSON line each (streamed)",
    options: {
      prefix: { type: 'string', help: 'only string keys starting with P (with --json-key: P is JSON; an array keeps array keys starting with its elements)' },
      type: { type: 'string', help: 'only keys of this type: value, binary or append-log' },
    },
    run: keysCmd,
  },
  append: { args: 'KEY VALUE|-', count: [2, 2], summary: 'append an element to a log (created if missing); prints its length', run: appendCmd },
  log: { args: 'KEY', count: [1, 1], summary: "print a log's elements, one JSON line each (streamed)", run: logCmd },
  'put-file': {
    args: 'KEY PATH|-',
    count: [2, 2],
    summary: "store a file's bytes (or stdin's) as a blob, streamed",
    options: WRITE_OPTIONS,
    run: putFileCmd,
  },
  cat: { args: 'KEY', count: [1, 1], summary: "write a blob's bytes to stdout, streamed", run: catCmd },
  'get-file': {
    args: 'KEY PATH|-',
    count: [2, 2],
    summary: "write a blob's bytes to PATH (whole or not at all: a temporary file renamed), streamed",
    run: getFileCmd,
  },
  verify: {
    args: '',
    count: [0, 0],
    summary: 'read every key and check its checksums and MACs; lists damaged keys with their files; exit 1 if any',
    run: verifyCmd,
  },
  stats: {
    args: '',
    count: [0, 0],
    summary: 'key count, bytes, counts by type, codecs, largest keys, implementation',
    options: { top: { type: 'string', help: 'how many of the largest keys to list (default 10)' } },
    run: statsCmd,
  },
  gc: {
    args: '--older-than AGE',
    count: [0, 0],
    summary: 'delete every key not written within AGE (7d, 12h, 30m, 2w, or an ISO date), except those in --keep',
    help: 'Prints each deleted key (one JSON line), and a summary on stderr. A key written while gc runs is never deleted; unreadable files are reported and kept.',
    options: {
      'older-than': { type: 'string', help: 'the age (7d, 12h, 30m, 90s, 2w) or an ISO date' },
      keep: { type: 'string', help: 'a file of keys to keep, one per line (JSON with --json-key); - reads stdin' },
      'dry-run': { type: 'boolean', help: 'print what would be deleted; delete nothing' },
    },
    run: gcCmd,
  },
  export: {
    args: '[FILE|-]',
    count: [0, 1],
    summary: 'write the whole store as one archive (docs/ARCHIVE.md) to FILE or stdout, streamed',
    help: 'The archive holds values decrypted: protect it as you protect the key. A FILE is written whole or not at all.',
    options: { 'skip-damaged': { type: 'boolean', help: 'leave out keys that cannot be read (each reported; exit 1) instead of failing' } },
    run: exportCmd,
  },
  import: {
    args: '[FILE|-]',
    count: [0, 1],
    summary: 'read an archive from FILE or stdin into the store (each key replaced; others stay); prints its counts',
    run: importCmd,
  },
}

const GLOBAL_HELP = `Options (any command):
  --dir DIR            the store directory (default ./konserve-data)
  --json-key           parse KEY (and path steps) as JSON: 42 is a number, ["a",1] an array
  --json               machine output: results as JSON, errors as one JSON line on stderr
  --no-progress        no progress bars (they are shown only when stderr is a terminal)
  --no-sync            skip fsync (faster; a crash may lose the latest writes)
  --lz4                compress what this command writes (LZ4)
  --key-env NAME       the encryption key is in environment variable NAME (default ${KEY_ENV})
  --ask-key            ask for the encryption key on the terminal (not echoed)
  --accept-plaintext   with a key: also read files that are not encrypted (a migration)
  -h, --help           help (konserve COMMAND --help for a command)
  -v, --version        the version

The encryption key is never taken from the command line (shell history keeps
it): set ${KEY_ENV}, or use --key-env or --ask-key. With a key, every write is
encrypted (AES-256, authenticated) and the store refuses unencrypted files.

Exit status: 0 done; 1 not found (key or store) or damage found (verify,
export --skip-damaged); 2 usage (a bad command line, key or path); 3 any
other error, including I/O and output that could not be written; 4 a
revision mismatch (--expected-revision: the key changed; nothing written).`

function usage(): string {
  const width = Math.max(...Object.entries(COMMANDS).map(([n, c]) => n.length + c.args.length + 1))
  const lines = Object.entries(COMMANDS).map(([n, c]) => `  ${`${n} ${c.args}`.padEnd(width)}  ${c.summary}`)
  return `usage: konserve [options] <command> [args]\n\nCommands:\n${lines.join('\n')}\n\n${GLOBAL_HELP}`
}

function commandUsage(name: string, c: Command): string {
  const opts = Object.entries(c.options ?? {}).map(([n, o]) => `  --${n}${o.type === 'string' ? ' VALUE' : ''}\n      ${o.help}`)
  return [
    `usage: konserve [options] ${name} ${c.args}`.trimEnd(),
    '',
    c.summary,
    ...(c.help ? ['', c.help] : []),
    ...(opts.length ? ['', 'Options:', ...opts] : []),
    '',
    'Global options and exit statuses: konserve --help',
  ].join('\n')
}

function version(): string {
  // dist/cli.js beside ../package.json; ts/cli/index.ts (through tsx) two levels down.
  for (let dir = __dirname, i = 0; i < 3; i++, dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name: string; version: string }
      if (pkg.name === 'konserve') return pkg.version
    } catch {}
  }
  return 'unknown'
}

async function main(argv: string[]): Promise<number> {
  const all: Record<string, Opt> = { ...GLOBAL_OPTIONS }
  for (const c of Object.values(COMMANDS)) for (const [n, o] of Object.entries(c.options ?? {})) all[n] = { type: o.type }
  let parsed
  try {
    parsed = parseArgs({ args: argv, options: all, allowPositionals: true, strict: true, tokens: true })
  } catch (err) {
    throw new UsageError(`${(err as Error).message}\n\n${usage()}`)
  }
  const { values, positionals, tokens } = parsed
  const [name, ...args] = positionals
  if (values.version) {
    await out(`${version()}\n`)
    return 0
  }
  if (!name) {
    if (values.help) {
      await out(`${usage()}\n`)
      return 0
    }
    throw new UsageError(`no command given\n\n${usage()}`)
  }
  const cmd = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined
  if (!cmd) throw new UsageError(`unknown command: ${name}\n\n${usage()}`)
  if (values.help) {
    await out(`${commandUsage(name, cmd)}\n`)
    return 0
  }
  for (const t of tokens ?? []) {
    if (t.kind === 'option' && !(t.name in GLOBAL_OPTIONS) && !(t.name in (cmd.options ?? {}))) {
      throw new UsageError(`${name} takes no option --${t.name}\n\n${commandUsage(name, cmd)}`)
    }
  }
  const [min, max] = cmd.count
  if (args.length < min || args.length > max) {
    const n = min === max ? `${min}` : max === Infinity ? `at least ${min}` : `${min} to ${max}`
    throw new UsageError(`${name} takes ${n} argument${n === '1' ? '' : 's'}, got ${args.length}\n\n${commandUsage(name, cmd)}`)
  }
  const g: Globals = {
    dir: (values.dir as string | undefined) ?? 'konserve-data',
    jsonKey: values['json-key'] === true,
    noSync: values['no-sync'] === true,
    json: values.json === true,
    progress: values['no-progress'] !== true,
    lz4: values.lz4 === true,
    keyEnv: values['key-env'] as string | undefined,
    askKey: values['ask-key'] === true,
    acceptPlaintext: values['accept-plaintext'] === true,
  }
  return cmd.run(makeContext(g, args, values as Record<string, string | boolean | undefined>))
}

// A failed write to stdout also emits 'error': it is reported through the write's callback, not thrown at the process.
process.stdout.on('error', () => {})

const argv = process.argv.slice(2)
let settled = false
main(argv).then(
  (code) => {
    settled = true
    process.exitCode = code
  },
  (err: unknown) => {
    settled = true
    note(describeError(err, argv.includes('--json')))
    process.exitCode = exitStatus(err)
  },
)
// A command whose work stopped without finishing (nothing left to wait for) must not exit 0.
process.on('exit', () => {
  if (!settled) {
    note('konserve: ERR_FAILED: the command stopped before it finished')
    process.exitCode = EXIT.failed
  }
})
