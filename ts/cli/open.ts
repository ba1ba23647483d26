/**
 * Opening the store a command works on: the directory, the implementation
 * (native where it loads, else pure, without a warning on every call), the
 * compressor, and the encryption key, which comes from an environment
 * variable or a prompt, never from the command line (shell history keeps it).
 */
import { closeSync, openSync, readSync, writeSync } from 'node:fs'
import { ReadStream } from 'node:tty'
import { type FsStoreOptions, type Key, KonserveError, type Store, connectFsStore } from '../index'
import { NotFound, UsageError, parseJson } from './io.js'

/** The options every command takes (see GLOBAL_OPTIONS in index.ts). */
export interface Globals {
  dir: string
  jsonKey: boolean
  noSync: boolean
  json: boolean
  progress: boolean
  lz4: boolean
  keyEnv?: string
  askKey: boolean
  acceptPlaintext: boolean
}

/** What a command gets: its arguments, its options, and the store (opened on first use). */
export interface Context {
  g: Globals
  args: string[]
  opts: Record<string, string | boolean | undefined>
  /**
   * Opens the store; `create: false` for the commands that only read, which
   * open it read-only (`readOnly: true`: no lock, no sweep, nothing written,
   * so they work on read-only media and never change the store they inspect)
   * unless `write` says the command writes after all (gc).
   */
  store(create: boolean, write?: boolean): Promise<Store>
  /** A key from the command line: a string, or JSON with --json-key. */
  key(text: string): Key
}

/** The default environment variable of the encryption key. */
export const KEY_ENV = 'KONSERVE_KEY'

/** Reads a line from the terminal without echoing it. */
function promptHidden(question: string): string {
  let fd: number
  try {
    fd = openSync('/dev/tty', 'r+')
  } catch (err) {
    throw new UsageError(`--ask-key needs a terminal to ask on (${(err as Error).message}); set ${KEY_ENV} instead`)
  }
  const tty = new ReadStream(fd)
  try {
    tty.setRawMode(true)
    writeSync(fd, question)
    let line = ''
    const buf = Buffer.alloc(1)
    for (;;) {
      const n = readSync(fd, buf, 0, 1, null)
      if (n === 0) break
      const c = buf[0]!
      if (c === 13 || c === 10) break
      if (c === 3) {
        writeSync(fd, '\n')
        throw new UsageError('no key entered (interrupted)')
      }
      if (c === 127 || c === 8) line = line.slice(0, -1)
      else line += String.fromCharCode(c)
    }
    writeSync(fd, '\n')
    return Buffer.from(line, 'latin1').toString('utf8')
  } finally {
    try {
      tty.setRawMode(false)
    } catch {}
    tty.destroy()
    try {
      closeSync(fd)
    } catch {}
  }
}

/** The encryption key, if any: --ask-key prompts; --key-env NAME or KONSERVE_KEY reads the environment. */
export function encryptionKey(g: Globals): string | undefined {
  if (g.askKey) {
    const k = promptHidden('encryption key: ')
    if (!k) throw new UsageError('no key entered')
    return k
  }
  const name = g.keyEnv ?? KEY_ENV
  const v = process.env[name]
  if (g.keyEnv !== undefined && !v) throw new UsageError(`--key-env ${name}: the environment variable ${name} is not set or empty`)
  return v || undefined
}

export function makeContext(g: Globals, args: string[], opts: Record<string, string | boolean | undefined>): Context {
  let opened: Promise<Store> | undefined
  let secret: string | undefined | null = null
  return {
    g,
    args,
    opts,
    key(text: string): Key {
      if (!g.jsonKey) return text
      try {
        return parseJson(text) as Key
      } catch (err) {
        throw new UsageError(`--json-key: ${JSON.stringify(text)} is not JSON (${(err as Error).message})`)
      }
    },
    store(create: boolean, write = create): Promise<Store> {
      if (secret === null) secret = encryptionKey(g)
      const options: FsStoreOptions = {
        syncBlob: !g.noSync,
        create,
        readOnly: !write,
        ...(g.lz4 ? { compressor: { type: 'lz4' as const } } : {}),
        ...(secret ? { encryptor: { type: 'aes' as const, key: secret }, acceptPlaintext: g.acceptPlaintext } : {}),
      }
      opened ??= openStore(g.dir, options, create)
      return opened
    },
  }
}

async function openStore(dir: string, options: FsStoreOptions, create: boolean): Promise<Store> {
  try {
    // Native where its binary loads; pure TypeScript (the same files) otherwise, without the library's warning.
    if (process.env.KONSERVE_NATIVE === '0') return await connectFsStore(dir, { ...options, native: false })
    try {
      return await connectFsStore(dir, { ...options, native: true })
    } catch (err) {
      if ((err as KonserveError).code !== 'ERR_NATIVE_UNAVAILABLE') throw err
      return await connectFsStore(dir, { ...options, native: false })
    }
  } catch (err) {
    const cause = (err as { cause?: NodeJS.ErrnoException }).cause
    if (!create && err instanceof KonserveError && cause?.code === 'ENOENT') {
      throw new NotFound(`no store at ${dir} (the directory does not exist)`)
    }
    throw err
  }
}
