/** Document commands: get, put, get-in, update-in, meta, exists, del, keys, append, log. */
import { append, assoc, assocIn, bget, dissoc, exists, get, getIn, getMeta, logStream, scanStore } from '../index'
import type { Context } from './open.js'
import { LineWriter, NotFound, UsageError, jsonArg, note, out, toJson, valueArg, writeOptions } from './io.js'

/** A path step: JSON with --json-key; otherwise an integer literal is a number (an array index), anything else a string. */
function step(c: Context, text: string): unknown {
  if (c.g.jsonKey) return c.key(text)
  return /^(0|[1-9][0-9]*)$/.test(text) && Number.isSafeInteger(Number(text)) ? Number(text) : text
}

const MISSING = Symbol('missing')

/** A blob printed as `get` prints bytes, `{"bytes":N,"base64":"..."}`, streamed (bounded memory). */
async function printBlobJson(size: number, stream: AsyncIterable<Buffer>): Promise<void> {
  await out(`{"bytes":${size},"base64":"`)
  let carry = Buffer.alloc(0)
  for await (const piece of stream) {
    const all = carry.length ? Buffer.concat([carry, piece]) : piece
    const whole = all.length - (all.length % 3)
    if (whole > 0) await out(all.subarray(0, whole).toString('base64'))
    carry = Buffer.from(all.subarray(whole))
  }
  await out(`${carry.toString('base64')}"}\n`)
}

export async function getCmd(c: Context): Promise<number> {
  const [keyText] = c.args
  const store = await c.store(false)
  const key = c.key(keyText!)
  const m = await getMeta(store, key)
  if (!m) throw new NotFound(`not found: ${keyText}`)
  if (m.type === 'binary') {
    // Streamed as base64 in bounded memory (the blob may be larger than memory).
    const done = await bget(store, key, async ({ size, stream }) => {
      await printBlobJson(size, stream as AsyncIterable<Buffer>)
      return true
    })
    if (done) return 0
  }
  const v = await get(store, key, { notFound: MISSING })
  if (v === MISSING) throw new NotFound(`not found: ${keyText}`)
  await out(`${toJson(v)}\n`)
  return 0
}

export async function putCmd(c: Context): Promise<number> {
  const [keyText, valueText] = c.args
  const key = c.key(keyText!)
  const o = writeOptions(c.opts)
  const value = await valueArg(valueText!)
  await assoc(await c.store(true), key, value, o)
  return 0
}

export async function getInCmd(c: Context): Promise<number> {
  const [keyText, ...steps] = c.args
  const store = await c.store(false)
  const v = await getIn(store, [c.key(keyText!), ...steps.map((s) => step(c, s))], MISSING)
  if (v === MISSING) throw new NotFound(`not found: ${[keyText, ...steps].join(' ')}`)
  await out(`${toJson(v)}\n`)
  return 0
}

export async function updateInCmd(c: Context): Promise<number> {
  const args = c.args
  const o = writeOptions(c.opts)
  const keyText = args[0]!
  const steps = args.slice(1, -1)
  const valueText = args[args.length - 1]!
  // JSON only, from stdin too (a bare word there is no more a string than it is here).
  const value = await jsonArg(valueText, 'update-in')
  const [, now] = await assocIn(await c.store(true), [c.key(keyText), ...steps.map((s) => step(c, s))], value, o)
  await out(`${toJson(now)}\n`)
  return 0
}

export async function metaCmd(c: Context): Promise<number> {
  const m = await getMeta(await c.store(false), c.key(c.args[0]!))
  if (!m) throw new NotFound(`not found: ${c.args[0]}`)
  await out(`${toJson(m)}\n`)
  return 0
}

export async function existsCmd(c: Context): Promise<number> {
  await out(`${await exists(await c.store(false), c.key(c.args[0]!))}\n`)
  return 0
}

export async function delCmd(c: Context): Promise<number> {
  const { expectedRevision } = writeOptions(c.opts)
  await out(`${await dissoc(await c.store(true), c.key(c.args[0]!), { expectedRevision })}\n`)
  return 0
}

/** Whether `key` starts with `prefix`: strings by their text, arrays by their first elements (compared as JSON). */
export function hasPrefix(key: unknown, prefix: unknown): boolean {
  if (typeof prefix === 'string') return typeof key === 'string' && key.startsWith(prefix)
  if (Array.isArray(prefix)) {
    return Array.isArray(key) && key.length >= prefix.length && prefix.every((p, i) => toJson(p) === toJson(key[i]))
  }
  return toJson(key) === toJson(prefix)
}

export async function keysCmd(c: Context): Promise<number> {
  const store = await c.store(false)
  const prefix = typeof c.opts.prefix === 'string' ? (c.g.jsonKey ? c.key(c.opts.prefix) : c.opts.prefix) : undefined
  const type = c.opts.type as string | undefined
  if (type !== undefined && !['value', 'binary', 'append-log'].includes(type)) throw new UsageError(`--type is value, binary or append-log, not ${type}`)
  const w = new LineWriter()
  for await (const e of scanStore(store)) {
    if (e.error) {
      note(`konserve: warning: ${e.error.code}: ${e.error.message}${e.error.file ? ` (file ${e.error.file})` : ''}`)
      continue
    }
    if (prefix !== undefined && !hasPrefix(e.key, prefix)) continue
    if (type !== undefined && e.meta.type !== type) continue
    await w.line(toJson(e.meta))
  }
  await w.flush()
  return 0
}

export async function appendCmd(c: Context): Promise<number> {
  const key = c.key(c.args[0]!)
  const value = await valueArg(c.args[1]!)
  await out(`${await append(await c.store(true), key, value)}\n`)
  return 0
}

export async function logCmd(c: Context): Promise<number> {
  const store = await c.store(false)
  const key = c.key(c.args[0]!)
  const m = await getMeta(store, key)
  if (!m) throw new NotFound(`not found: ${c.args[0]}`)
  const w = new LineWriter()
  // Streamed in batches: memory does not grow with the log.
  for await (const elem of logStream(store, key)) await w.line(toJson(elem))
  await w.flush()
  return 0
}
