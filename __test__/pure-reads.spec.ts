/**
 * The pure engine's reads (ts/backends/pure/keyfile.ts): a key file's first
 * read lands in a reused buffer (blocking form) or an unfilled one (async
 * form) and only the bytes read are copied out, so a small value never keeps
 * a 64 KiB read buffer alive; and a read that holds the whole file, as its
 * header says, needs no fstat (the core's open_head does the same). Files
 * that are not regular files still fail as ERR_NOT_A_FILE (odd-files.spec.ts).
 */
import test from 'ava'
import { execFileSync } from 'node:child_process'
import fs, { mkdtempSync, truncateSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as k from 'konserve'
import { type Mode, api } from './helpers/api.js'

const fresh = () => mkdtempSync(join(tmpdir(), 'konserve-pure-reads-'))

for (const mode of ['sync', 'async'] as Mode[]) {
  const a = api(mode)
  test(`${mode}: a small value read by the pure engine holds only its file's bytes, not a 64 KiB read buffer`, async (t) => {
    const store = mode === 'sync' ? k.connectFsStore(fresh(), { native: false, sync: true }) : await k.connectFsStore(fresh(), { native: false })
    await a.assoc(store, 'raw', new Uint8Array([1, 2, 3]))
    const v = (await a.get(store, 'raw')) as Uint8Array
    t.deepEqual([...v], [1, 2, 3])
    t.true(v.buffer.byteLength < 1024, `the value's memory is ${v.buffer.byteLength} bytes`)
    // Reading it again gives bytes of their own: the reused buffer is never handed out.
    const w = (await a.get(store, 'raw')) as Uint8Array
    w.fill(9)
    t.deepEqual([...v], [1, 2, 3])
    t.deepEqual([...((await a.get(store, 'raw')) as Uint8Array)], [1, 2, 3])
  })

  test(`${mode}: a file shorter than its header says is still corrupt, and a longer value still reads whole`, async (t) => {
    const dir = fresh()
    const store = mode === 'sync' ? k.connectFsStore(dir, { native: false, sync: true }) : await k.connectFsStore(dir, { native: false })
    const big = 'z'.repeat(100_000) // past the 64 KiB first read: sized by fstat
    await a.assoc(store, 'big', big)
    t.is(await a.get(store, 'big'), big)
    await a.assoc(store, 'cut', { a: 1, b: 'x'.repeat(100) })
    truncateSync(store.backing.filePath!(k.encodeKey('cut')), 60)
    await t.throwsAsync(a.get(store, 'cut'), { code: 'ERR_CORRUPT' })
  })
}

/** Counts the calls of the fs functions `patched` that `fn` makes. */
async function fsCalls(patched: ReadonlyArray<'open' | 'read' | 'fstat' | 'openSync'>, fn: () => Promise<unknown>): Promise<Record<string, number>> {
  const counts: Record<string, number> = {}
  const saved = patched.map((f) => fs[f])
  patched.forEach((f, i) => {
    ;(fs as unknown as Record<string, unknown>)[f] = (...args: unknown[]) => {
      counts[f] = (counts[f] ?? 0) + 1
      return (saved[i] as (...a: unknown[]) => unknown)(...args)
    }
  })
  try {
    await fn()
  } finally {
    patched.forEach((f, i) => {
      ;(fs as unknown as Record<string, unknown>)[f] = saved[i]
    })
  }
  return counts
}

/** Counts the async fs calls `fn` makes (the threadpool's: open, read, fstat). */
const threadpoolCalls = (fn: () => Promise<unknown>) => fsCalls(['open', 'read', 'fstat'], fn)

test.serial('async: a small key file is read with one open and one read (no fstat, no read to find the end)', async (t) => {
  const dir = fresh()
  // Written by the native core: this process's pure engine has not read or written the file lately (backends/pure/warm.ts).
  const writer = await k.connectFsStore(dir, { native: true })
  await k.assoc(writer, 'a', { x: 1 })
  await k.close(writer)
  const store = await k.connectFsStore(dir, { native: false })
  t.deepEqual(await threadpoolCalls(async () => t.deepEqual(await k.get(store, 'a'), { x: 1 })), { open: 1, read: 1 })
})

test.serial('sync: opens that miss leave the stack trace limit as it was, and errors that reach the caller keep their stack', (t) => {
  const store = k.connectFsStore(fresh(), { native: false, sync: true })
  const before = Error.stackTraceLimit
  Error.stackTraceLimit = 17
  try {
    t.is(k.get(store, 'missing', { sync: true }), undefined) // the key file's open fails with ENOENT
    k.assoc(store, 'new', 1, { sync: true }) // the revision read of a new key misses too
    t.is(Error.stackTraceLimit, 17)
    // A failure that reaches the caller: a key file that is a directory.
    fs.mkdirSync(store.backing.filePath!(k.encodeKey('dir')))
    const err = t.throws(() => k.get(store, 'dir', { sync: true }), { code: 'ERR_NOT_A_FILE' })
    t.true((err?.stack ?? '').includes('\n    at '), 'the typed error has a stack')
    t.is(Error.stackTraceLimit, 17)
  } finally {
    Error.stackTraceLimit = before
  }
})

test('sync: the pure engine works where intrinsics are frozen (the stack trace limit cannot be set)', (t) => {
  const dir = fresh()
  const script = join(dir, 'frozen.mjs')
  fs.writeFileSync(
    script,
    `import * as k from ${JSON.stringify(new URL('../dist/index.mjs', import.meta.url).href)}
const s = k.connectFsStore(${JSON.stringify(join(dir, 'store'))}, { native: false, sync: true })
k.assoc(s, 'a', 1, { sync: true })
k.assoc(s, 'a', 2, { sync: true })
console.log(JSON.stringify([k.get(s, 'a', { sync: true }), k.get(s, 'missing', { sync: true }) ?? null]))
`,
  )
  const out = execFileSync(process.execPath, ['--frozen-intrinsics', '--no-warnings', script], { encoding: 'utf8' })
  t.deepEqual(JSON.parse(out), [2, null])
})

test.serial('async: a key file this process wrote or read lately is read on the calling thread, and still read each time', async (t) => {
  const dir = fresh()
  const store = await k.connectFsStore(dir, { native: false })
  await k.assoc(store, 'a', { v: 1 })
  t.deepEqual(await threadpoolCalls(async () => t.deepEqual(await k.get(store, 'a'), { v: 1 })), {}, 'written here: no threadpool read')
  // Another writer (the native core, as another process would) replaces the file: the next get reads the new one.
  const other = await k.connectFsStore(dir, { native: true })
  await k.assoc(other, 'a', { v: 2 })
  t.deepEqual(await threadpoolCalls(async () => t.deepEqual(await k.get(store, 'a'), { v: 2 })), {})
  // A key file removed by the other writer: answered missing.
  await k.dissoc(other, 'a')
  t.is(await k.get(store, 'a'), undefined)
  // A key written only by the other writer is not warm: read on the threadpool once, then warm.
  await k.assoc(other, 'b', { v: 3 })
  t.deepEqual(await threadpoolCalls(async () => t.deepEqual(await k.get(store, 'b'), { v: 3 })), { open: 1, read: 1 })
  t.deepEqual(await threadpoolCalls(async () => t.deepEqual(await k.get(store, 'b'), { v: 3 })), {})
  await k.close(other)
})

test.serial(
  'async: a write getValueNow could not answer (compressed, or too large for one read) is not noted warm, so it is not read twice',
  async (t) => {
    const lz4 = await k.connectFsStore(fresh(), { native: false, compressor: { type: 'lz4' } })
    await k.assoc(lz4, 'a', { v: 'x'.repeat(200) })
    t.deepEqual(
      await fsCalls(['openSync'], async () => t.deepEqual(await k.get(lz4, 'a'), { v: 'x'.repeat(200) })),
      {},
      'compressed: no read on the calling thread',
    )
    const plain = await k.connectFsStore(fresh(), { native: false })
    const big = 'y'.repeat(100_000) // past the 64 KiB one read
    await k.assoc(plain, 'big', big)
    t.deepEqual(await fsCalls(['openSync'], async () => t.is(await k.get(plain, 'big'), big)), {}, 'large: no read on the calling thread')
    t.deepEqual(await fsCalls(['openSync'], async () => t.is(await k.get(plain, 'big'), big)), {}, 'nor after an async get of it')
  },
)
