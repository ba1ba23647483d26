/**
 * An archive's logs are written whole beside the key and committed over it at
 * their END (Backing.logWriter, the file stores): an import that fails or
 * dies inside a log leaves the key as it was, and a log trimmed far is
 * restored without writing its trimmed records as placeholders.
 */
import test from 'ava'
import { spawn } from 'node:child_process'
import { readdirSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { once } from 'node:events'
import * as k from 'konserve'
import { tempDir } from './helpers/api.js'
import { archiveReader } from './helpers/archive.js'
import {
  FRAME_END,
  FRAME_KEY,
  FRAME_RECORD,
  FRAME_TRAILER,
  chain,
  decodeKeyFrame,
  decodeRecordFrame,
  decodeTrailer,
  encodeEndFrame,
  encodeHeader,
  encodeKeyFrame,
  encodeRecordFrame,
  encodeTrailer,
  frame,
  readFrame,
} from '../ts/archive/format.js'

const CHILD = new URL('./fixtures/import-child.mjs', import.meta.url).pathname
const ENGINES = ['native', 'pure'] as const

async function archiveOf(s: k.Store): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const p of k.exportStore(s)) parts.push(p as Buffer)
  return Buffer.concat(parts)
}

const stagingFiles = (dir: string) => readdirSync(dir).filter((n) => n.endsWith('.stage'))

/** A store holding an old log and a value, in `dir`. */
async function withOldLog(dir: string, native: boolean): Promise<k.Store> {
  const s = await k.connectFsStore(dir, { native })
  for (let i = 0; i < 5; i++) await k.append(s, 'log', `old ${i}`)
  await k.assoc(s, 'doc', 'kept')
  return s
}
const OLD = [0, 1, 2, 3, 4].map((i) => `old ${i}`)

let bigArchive: Buffer | undefined
/** An archive of one log of 20,000 records (about 2.4 MB). */
async function big(): Promise<Buffer> {
  if (!bigArchive) {
    const src = await k.newMemStore()
    // Concurrent appends share group commits.
    await Promise.all(Array.from({ length: 20_000 }, (_, i) => k.append(src, 'log', { i, pad: 'x'.repeat(80) })))
    bigArchive = await archiveOf(src)
  }
  return bigArchive
}

for (const engine of ENGINES) {
  test(`${engine}: an import killed inside a log leaves the old log whole, and the next open removes the staged one`, async (t) => {
    const archive = await big()
    const file = join(tempDir(), 'a.ksva')
    writeFileSync(file, archive)
    const dir = join(tempDir(), 'store')
    await k.close(await withOldLog(dir, engine === 'native'))
    const child = spawn(process.execPath, [CHILD, dir, engine, file, String(Math.floor(archive.length * 0.7))], { stdio: ['ignore', 'pipe', 'inherit'] })
    t.teardown(() => child.kill('SIGKILL'))
    let out = ''
    child.stdout.on('data', (b) => (out += b))
    while (!out.includes('held')) {
      if (child.exitCode !== null) return t.fail(`the child ended (${child.exitCode}) before it held the archive`)
      await new Promise((r) => setTimeout(r, 20))
    }
    // 70 % of the records are in the staged log (flushed in batches of 1024).
    const staged = stagingFiles(dir)
    t.is(staged.length, 1)
    t.true(statSync(join(dir, staged[0]!)).size > 1_000_000, 'the import was writing the log when it died')
    const exited = once(child, 'exit')
    t.is(child.exitCode, null, 'the child is still inside the import')
    child.kill('SIGKILL')
    await exited
    for (const native of [true, false]) {
      const s = await k.connectFsStore(dir, { native })
      t.deepEqual(await k.log(s, 'log'), OLD, 'the old log, whole')
      t.is(await k.get(s, 'doc'), 'kept')
      await k.close(s)
    }
    t.deepEqual(stagingFiles(dir), [], "the dead import's staging file is swept at open")
    const s = await k.connectFsStore(dir, { native: engine === 'native' })
    await k.importStore(s, archive)
    const log = (await k.log(s, 'log')) as Array<{ i: number }>
    t.is(log.length, 20_000)
    t.is(log[19_999]!.i, 19_999)
  })

  test(`${engine}: an import that fails inside a log leaves the old log as it was`, async (t) => {
    const archive = await big()
    const s = await withOldLog(join(tempDir(), 'store'), engine === 'native')
    const err = (await t.throwsAsync(k.importStore(s, archive.subarray(0, archive.length - 100)))) as k.KonserveError
    t.is(err.code, 'ERR_CORRUPT')
    t.is(err.key, 'log')
    t.deepEqual(await k.log(s, 'log'), OLD)
    t.deepEqual(stagingFiles(s.path!), [])
    t.is(await k.append(s, 'log', 'old 5'), 6, 'the old log takes appends as before')
  })
}

/** The archive `a` with every log's indexes moved up by `by` (its first index too), re-framed and re-chained. */
async function shifted(a: Buffer, by: number): Promise<Buffer> {
  const { r, version } = await archiveReader(a)
  const header = encodeHeader()
  let sum = Buffer.from(header).readBigUInt64LE(16)
  const out: Uint8Array[] = [header]
  const emit = (type: number, body: Uint8Array) => {
    const f = frame(type, body)
    sum = chain(sum, f.sum)
    out.push(f.head, f.body, f.tail)
  }
  for (;;) {
    const f = await readFrame(r, version)
    if (f.type === FRAME_TRAILER) {
      emit(FRAME_TRAILER, encodeTrailer(decodeTrailer(f.body).counts, sum))
      return Buffer.concat(out)
    }
    if (f.type === FRAME_KEY) {
      const key = decodeKeyFrame(f.body)
      emit(FRAME_KEY, encodeKeyFrame({ ...key, size: key.size + by }))
    } else if (f.type === FRAME_RECORD) {
      const rec = decodeRecordFrame(f.body)
      emit(FRAME_RECORD, encodeRecordFrame({ ...rec, index: rec.index + by }))
    } else if (f.type === FRAME_END) {
      emit(FRAME_END, encodeEndFrame(Buffer.from(f.body).readUInt32LE(0), sum))
    }
  }
}

/** The size field of an archive's first KEY frame (a log's: its first index). */
async function firstIndexIn(a: Buffer): Promise<number> {
  const { r, version } = await archiveReader(a)
  return decodeKeyFrame((await readFrame(r, version)).body).size
}

test('a log trimmed far is restored with its indexes, without its trimmed records written as placeholders', async (t) => {
  const src = await k.newMemStore()
  for (const x of ['a', 'b', 'c']) await k.append(src, 'log', x)
  const far = 50_000_000
  const archive = await shifted(await archiveOf(src), far)
  for (const native of [true, false]) {
    const s = await k.connectFsStore(join(tempDir(), 'store'), { native })
    t.is((await k.importStore(s, archive)).records, 3)
    t.deepEqual(await k.log(s, 'log'), ['a', 'b', 'c'])
    let file: string | undefined
    for await (const e of k.scanStore(s)) if (e.key === 'log') file = e.file
    t.true(statSync(file!).size < 4096, `the log file holds its 3 records (${statSync(file!).size} bytes)`)
    // The indexes are as archived: the store's own archive starts the log at the same index.
    t.is(await firstIndexIn(await archiveOf(s)), far)
    t.is(await k.append(s, 'log', 'd'), 4)
  }
})

test('stores on a write-ahead log import logs: native on the live key, as before; pure staged, after moving the logged value', async (t) => {
  const archive = await big()
  for (const native of [true, false]) {
    const s = await k.connectFsStore(join(tempDir(), 'store'), { native, wal: true })
    t.is(s.backing.logWriter === undefined, native)
    await k.append(s, 'log', 'old')
    await k.importStore(s, archive)
    t.is(((await k.log(s, 'log')) as unknown[]).length, 20_000)
    await k.close(s)
  }
})

for (const engine of ENGINES) {
  test(`${engine}: a log this process has read and appended to is replaced by the import, and appends go on from the archived indexes`, async (t) => {
    const src = await k.newMemStore()
    for (let i = 0; i < 7; i++) await k.append(src, 'log', `new ${i}`)
    await k.trimLog(src, 'log', { keepLast: 4 })
    const archive = await archiveOf(src)
    const s = await withOldLog(join(tempDir(), 'store'), engine === 'native')
    // Warm: the log read, appended to (verified by this process), its metadata read.
    t.deepEqual(await k.log(s, 'log'), OLD)
    t.is(await k.append(s, 'log', 'old 5'), 6)
    t.truthy(await k.getMeta(s, 'log'))
    await k.importStore(s, archive)
    t.deepEqual(await k.log(s, 'log'), ['new 3', 'new 4', 'new 5', 'new 6'])
    t.deepEqual(await k.getMeta(s, 'log'), await k.getMeta(src, 'log'))
    t.is(await k.append(s, 'log', 'new 7'), 5)
    t.is(await k.append(src, 'log', 'new 7'), 5)
    t.deepEqual(await k.log(s, 'log'), await k.log(src, 'log'))
    t.is(await k.get(s, 'doc'), 'kept')
  })
}

for (const engine of ENGINES) {
  test(`${engine}: a close called during an import waits for it, as for any write under way`, async (t) => {
    const archive = await big()
    const dir = join(tempDir(), 'store')
    const s = await k.connectFsStore(dir, { native: engine === 'native' })
    let release!: () => void
    const gate = new Promise<void>((r) => (release = r))
    let handed = 0
    // The archive in pieces; halfway, the source waits for the gate (the import is inside the log).
    const pieces = async function* () {
      for (let at = 0; at < archive.length; at += 65536) {
        if (at >= archive.length / 2 && handed++ === 0) await gate
        yield archive.subarray(at, at + 65536)
      }
    }
    const order: string[] = []
    const imported = k.importStore(s, pieces()).then(() => order.push('import'))
    while (handed === 0) await new Promise((r) => setTimeout(r, 5))
    const closed = k.close(s).then(() => order.push('close'))
    await new Promise((r) => setTimeout(r, 50))
    t.deepEqual(order, [], 'close waits')
    release()
    await Promise.all([imported, closed])
    t.deepEqual(order, ['import', 'close'])
    const again = await k.connectFsStore(dir, { native: engine === 'native' })
    t.is(((await k.log(again, 'log')) as unknown[]).length, 20_000)
    t.deepEqual(stagingFiles(dir), [])
  })
}
