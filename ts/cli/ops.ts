/** Operator commands: verify, stats, gc, export, import. */
import { createReadStream, existsSync } from 'node:fs'
import { open, readFile, readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { type Key, type KeyType, KonserveError, type Store, exists, exportStore, get, importStore, logStream, readBlob, scanStore, sweep } from '../index'
import { HEADER_LEN, decodeHeader } from '../archive/format.js'
import type { Context } from './open.js'
import { LineWriter, UsageError, bytesText, note, out, outputError, progress, readStdin, toJson, writeFileAtomic } from './io.js'

/** How many key files the store directory holds (`<32 hex>.ksv`, FORMAT.md §3): a progress bar's total. */
async function keyFileCount(dir: string): Promise<number | undefined> {
  try {
    return (await readdir(dir)).filter((n) => /^[0-9a-f]{32}\.ksv$/.test(n)).length
  } catch {
    return undefined
  }
}

interface Damage {
  key?: unknown
  file?: string
  code: string
  message: string
}

function damageOf(err: unknown, key: unknown, file: string | undefined): Damage {
  const e = err instanceof KonserveError ? err : new KonserveError('ERR_IO', String((err as Error)?.message ?? err))
  const d: Damage = { code: e.code, message: e.message }
  if (key !== undefined) d.key = key
  const f = e.file ?? file
  if (f) d.file = f
  return d
}

/** Reads every byte of a key through the API: each checksum and MAC is checked on the way. */
async function readWhole(store: Store, key: Key, type: KeyType): Promise<void> {
  if (type === 'binary') {
    const s = await readBlob(store, key, { as: 'stream' })
    if (s) for await (const _ of s) void _
  } else if (type === 'append-log') {
    for await (const _ of logStream(store, key)) void _
  } else {
    await get(store, key)
  }
}

export async function verifyCmd(c: Context): Promise<number> {
  const store = await c.store(false)
  const bar = progress(c.g.progress && !c.g.json, 'verify', await keyFileCount(c.g.dir), 'keys')
  const damaged: Damage[] = []
  let checked = 0
  const w = new LineWriter()
  const report = async (d: Damage) => {
    damaged.push(d)
    if (!c.g.json) {
      await w.line(`DAMAGED ${d.key === undefined ? '(key unreadable)' : toJson(d.key)} file ${d.file ?? '-'}: ${d.code}: ${d.message}`)
    }
  }
  try {
    for await (const e of scanStore(store)) {
      checked++
      if (e.error) await report(damageOf(e.error, undefined, e.file))
      else {
        try {
          await readWhole(store, e.key, e.meta.type)
        } catch (err) {
          // Deleted since it was listed: not damage.
          if (!(await scanAgain(store, e.key))) continue
          await report(damageOf(err, e.key, e.file))
        }
      }
      bar.set(checked)
    }
  } finally {
    bar.stop()
  }
  if (c.g.json) await w.line(toJson({ ok: damaged.length === 0, checked, damaged }))
  else await w.line(`verify: ${checked} keys checked, ${damaged.length} damaged`)
  await w.flush()
  return damaged.length === 0 ? 0 : 1
}

/** Whether the key still exists (a key deleted while verify read it is not damaged). */
async function scanAgain(store: Store, key: Key): Promise<boolean> {
  try {
    return await exists(store, key)
  } catch {
    return true
  }
}

const SERIALIZERS: Record<number, string> = { 0: 'binary', 1: 'msgpack', 2: 'json' }

export async function statsCmd(c: Context): Promise<number> {
  const store = await c.store(false)
  const top = c.opts.top === undefined ? 10 : Number(c.opts.top)
  if (!Number.isSafeInteger(top) || top < 0) throw new UsageError(`--top takes a count, not ${c.opts.top}`)
  const byType: Record<string, number> = { value: 0, binary: 0, 'append-log': 0 }
  const compressor: Record<string, number> = {}
  const encryptor: Record<string, number> = {}
  const serializer: Record<string, number> = {}
  let keys = 0
  let bytes = 0
  let unreadable = 0
  let largest: { key: unknown; type: string; bytes: number; file?: string }[] = []
  const head = Buffer.alloc(8)
  const bar = progress(c.g.progress && !c.g.json, 'stats', await keyFileCount(c.g.dir), 'keys')
  try {
    for await (const e of scanStore(store)) {
      bar.add(1)
      if (e.error) {
        unreadable++
        continue
      }
      keys++
      byType[e.meta.type] = (byType[e.meta.type] ?? 0) + 1
      let size = 0
      if (e.file) {
        // The header's ids (FORMAT.md §4): serializer at byte 5, compressor 6, encryptor 7.
        try {
          const fh = await open(e.file, 'r')
          try {
            size = (await fh.stat()).size
            await fh.read(head, 0, 8, 0)
          } finally {
            await fh.close()
          }
          const comp = head[6] === 0 ? 'none' : head[6] === 1 ? 'lz4' : `id ${head[6]}`
          const enc = head[7] === 0 ? 'none' : head[7] === 1 ? 'aes' : `id ${head[7]}`
          const ser = SERIALIZERS[head[5]!] ?? `id ${head[5]}`
          compressor[comp] = (compressor[comp] ?? 0) + 1
          encryptor[enc] = (encryptor[enc] ?? 0) + 1
          serializer[ser] = (serializer[ser] ?? 0) + 1
        } catch {
          continue // deleted meanwhile
        }
      }
      bytes += size
      if (top > 0 && (largest.length < top || size > largest[largest.length - 1]!.bytes)) {
        largest.push({ key: e.key, type: e.meta.type, bytes: size, ...(e.file ? { file: e.file } : {}) })
        largest.sort((a, b) => b.bytes - a.bytes)
        largest = largest.slice(0, top)
      }
    }
  } finally {
    bar.stop()
  }
  const stats = {
    dir: store.path,
    implementation: store.implementation,
    encrypted: existsSync(join(store.path!, '.konserve.keycheck')),
    keys,
    unreadable,
    bytes,
    byType,
    serializer,
    compressor,
    encryptor,
    largest,
  }
  if (c.g.json) {
    await out(`${toJson(stats)}\n`)
    return 0
  }
  const lines = [
    `store           ${stats.dir}`,
    `implementation  ${stats.implementation}`,
    `encrypted       ${stats.encrypted ? 'yes (key check present)' : 'no'}`,
    `keys            ${keys}${unreadable ? ` (+${unreadable} unreadable: run verify)` : ''}`,
    `bytes on disk   ${bytes} (${bytesText(bytes)})`,
    `by type         ${Object.entries(byType).map(([k, v]) => `${k} ${v}`).join(', ')}`,
    `serializers     ${Object.entries(serializer).map(([k, v]) => `${k} ${v}`).join(', ') || '-'}`,
    `compressors     ${Object.entries(compressor).map(([k, v]) => `${k} ${v}`).join(', ') || '-'}`,
    `encryptors      ${Object.entries(encryptor).map(([k, v]) => `${k} ${v}`).join(', ') || '-'}`,
    `largest keys`,
    ...largest.map((l) => `  ${String(l.bytes).padStart(12)}  ${l.type.padEnd(10)}  ${toJson(l.key)}`),
  ]
  await out(`${lines.join('\n')}\n`)
  return 0
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 }

/** `7d`, `12h`, `30m`, `90s`, `2w`, `500ms` before now, or an ISO date. */
export function cutoffOf(text: string, now = Date.now()): Date {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$/.exec(text)
  if (m) {
    const d = new Date(now - Number(m[1]) * UNITS[m[2]!]!)
    if (!Number.isNaN(d.getTime())) return d
  }
  const ymd = /^(\d{4})-(\d{2})-(\d{2})/.exec(text)
  if (ymd) {
    const d = new Date(text)
    // The date part must be a day of the calendar: Date reads 2024-02-30 as March 1.
    const [y, mo, da] = [Number(ymd[1]), Number(ymd[2]), Number(ymd[3])]
    const day = new Date(Date.UTC(y, mo - 1, da))
    const onCalendar = day.getUTCFullYear() === y && day.getUTCMonth() === mo - 1 && day.getUTCDate() === da
    if (onCalendar && !Number.isNaN(d.getTime())) return d
  }
  throw new UsageError(`--older-than takes a duration (7d, 12h, 30m, 90s, 2w) or an ISO date, not ${JSON.stringify(text)}`)
}

/** The keys to keep: one per line (JSON with --json-key); empty lines and lines starting with # are skipped. */
async function keepList(c: Context, file: string | undefined): Promise<Key[]> {
  if (file === undefined) return []
  let text: string
  try {
    text = file === '-' ? (await readStdin()).toString('utf8') : await readFile(file, 'utf8')
  } catch (err) {
    throw new KonserveError('ERR_IO', `cannot read --keep ${file}: ${(err as Error).message}`, { file, cause: err })
  }
  return text
    .split(/\r?\n/)
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => c.key(l))
}

/** How far ahead of now `gc --older-than` takes a cutoff (see gcCmd). */
const FUTURE_SLACK_MS = 86_400_000

export async function gcCmd(c: Context): Promise<number> {
  if (typeof c.opts['older-than'] !== 'string') throw new UsageError('gc needs --older-than (for example --older-than 7d): it deletes every key not written since')
  const cutoff = cutoffOf(c.opts['older-than'])
  // A date far in the future matches every key: most likely a mistyped year, and it would empty
  // the store. Up to a day ahead is allowed: a store's clock may run ahead of this machine's, and a
  // date without a time is UTC midnight, ahead of the local day east of Greenwich.
  if (cutoff.getTime() > Date.now() + FUTURE_SLACK_MS) {
    throw new UsageError(
      `--older-than ${c.opts['older-than']} is more than a day in the future, so every key would be deleted (a mistyped year?); to delete every key on purpose, give a date within a day from now`,
    )
  }
  const keep = await keepList(c, c.opts.keep as string | undefined)
  const dryRun = c.opts['dry-run'] === true
  // A dry run only reads: it opens the store read-only.
  const store = await c.store(false, !dryRun)
  const corrupt: KonserveError[] = []
  const bar = progress(c.g.progress && !c.g.json, dryRun ? 'gc (dry run)' : 'gc', await keyFileCount(c.g.dir), 'keys')
  let deleted: Key[]
  try {
    deleted = await sweep(store, keep, cutoff, {
      dryRun,
      onCorrupt: (e) => corrupt.push(e),
      onProgress: (p) => bar.set(p.scanned),
    })
  } finally {
    bar.stop()
  }
  for (const e of corrupt) note(`konserve: warning: ${e.code}: ${e.message}${e.file ? ` (file ${e.file})` : ''} (kept)`)
  if (c.g.json) {
    await out(`${toJson({ dryRun, cutoff, kept: keep.length, deleted, count: deleted.length, unreadable: corrupt.length })}\n`)
    return 0
  }
  const w = new LineWriter()
  for (const k of deleted) await w.line(toJson(k))
  await w.flush()
  note(`gc: ${deleted.length} key${deleted.length === 1 ? '' : 's'} ${dryRun ? 'would be deleted (dry run: nothing deleted)' : 'deleted'}, not written since ${cutoff.toISOString()}`)
  return 0
}

export async function exportCmd(c: Context): Promise<number> {
  const target = c.args[0] ?? '-'
  if (target === '-' && process.stdout.isTTY) throw new UsageError('the archive is binary: give a FILE or redirect stdout (konserve export > store.ksvarchive)')
  const store = await c.store(false)
  const skip = c.opts['skip-damaged'] === true
  const skipped: KonserveError[] = []
  const bar = progress(c.g.progress, 'export', await keyFileCount(c.g.dir), 'keys')
  let counts
  const archive = exportStore(store, {
    ...(skip ? { onCorrupt: (e: KonserveError) => skipped.push(e) } : {}),
    onProgress: (p) => {
      counts = p
      bar.set(p.keys + skipped.length)
    },
  })
  try {
    if (target === '-') {
      let writeFailed: unknown
      let readFailed: unknown
      process.stdout.on('error', (err) => (writeFailed ??= err))
      archive.on('error', (err) => (readFailed ??= err))
      try {
        await pipeline(archive, process.stdout)
      } catch (err) {
        // pipeline destroys stdout with a read's error too (a damaged key): that is no output error.
        throw writeFailed !== undefined && writeFailed !== readFailed ? outputError(writeFailed) : err
      }
    } else {
      await writeFileAtomic(target, (dest) => pipeline(archive, dest))
    }
  } finally {
    bar.stop()
  }
  for (const e of skipped) note(`konserve: skipped damaged key: ${e.code}: ${e.message}${e.file ? ` (file ${e.file})` : ''}`)
  const summary = { ...(counts ?? {}), skipped: skipped.length }
  if (c.g.json) note(toJson(summary))
  return skipped.length > 0 ? 1 : 0
}

/**
 * The pieces of `input` with the archive header read and checked first
 * (ERR_CORRUPT, ERR_UNSUPPORTED_VERSION), then handed on with the rest.
 */
async function checkedArchive(input: AsyncIterable<Uint8Array>): Promise<AsyncIterable<Uint8Array>> {
  const it = input[Symbol.asyncIterator]()
  const head: Uint8Array[] = []
  let got = 0
  try {
    while (got < HEADER_LEN) {
      const r = await it.next()
      if (r.done) break
      head.push(r.value)
      got += r.value.length
    }
    decodeHeader(Buffer.concat(head))
  } catch (err) {
    await it.return?.()
    throw err
  }
  return (async function* () {
    try {
      yield* head
      for (let r = await it.next(); !r.done; r = await it.next()) yield r.value
    } finally {
      await it.return?.()
    }
  })()
}

export async function importCmd(c: Context): Promise<number> {
  const source = c.args[0] ?? '-'
  if (source === '-' && process.stdin.isTTY) throw new UsageError('import reads an archive: give a FILE or redirect stdin (konserve import < store.ksvarchive)')
  let total: number | undefined
  if (source !== '-') {
    try {
      total = (await stat(source)).size
    } catch (err) {
      throw new KonserveError('ERR_IO', `cannot read ${source}: ${(err as Error).message}`, { file: source, cause: err })
    }
  }
  // The header first: what is not an archive opens (and creates) no store.
  const archive = await checkedArchive(source === '-' ? process.stdin : createReadStream(source, { highWaterMark: 1 << 20 }))
  const store = await c.store(true)
  const bar = progress(c.g.progress, 'import', total, 'bytes')
  let counts
  try {
    counts = await importStore(store, archive, { onProgress: (p) => bar.set(p.archiveBytes) })
  } finally {
    bar.stop()
  }
  await out(`${toJson(counts)}\n`)
  return 0
}
