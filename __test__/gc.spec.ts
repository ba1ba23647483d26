/**
 * Garbage collection (`sweep`) and the per-store lastWrite watermark, on the
 * memory store and both file implementations, in sync and async form.
 */
import test from 'ava'
import gensync from 'gensync'
import { execFile } from 'node:child_process'
import { existsSync, readFileSync, readdirSync, realpathSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import * as k from 'konserve'
import { tempDir } from './helpers/api.js'

const run = promisify(execFile)
const fixture = (name: string) => join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, 'fixtures', name)
const ksvFiles = (dir: string) => readdirSync(dir).filter((f) => f.endsWith('.ksv'))
/** Resolves once the wall clock is past `ms`, so the next stamp is later than `ms` (bounded: 10 s). */
async function clockPast(ms: number): Promise<void> {
  for (const until = Date.now() + 10_000; Date.now() <= ms; ) {
    if (Date.now() > until) throw new Error(`the clock did not pass ${ms}`)
    await new Promise((r) => setImmediate(r))
  }
}

type Kind = 'memory' | 'native' | 'pure'
type Mode = 'sync' | 'async'

async function open(kind: Kind, dir = join(tempDir(), 'store')): Promise<k.Store> {
  if (kind === 'memory') return k.newMemStore()
  return k.connectFsStore(dir, { native: kind === 'native', syncBlob: false })
}

function doSweep(mode: Mode, store: k.Store, wl: Iterable<k.Key>, cutoff: Date, opts: k.SweepOptions = {}): Promise<k.Key[]> {
  if (mode === 'sync') {
    const r = k.sweep(store, wl, cutoff, { ...opts, sync: true })
    if (r instanceof Promise) throw new Error('sync sweep returned a Promise')
    return Promise.resolve(r)
  }
  return k.sweep(store, wl, cutoff, opts)
}

const sorted = (ks: k.Key[]) => ks.map((x) => JSON.stringify(x)).sort()

for (const kind of ['memory', 'native', 'pure'] as const) {
  for (const mode of ['sync', 'async'] as const) {
    const name = `${kind} ${mode}`

    test(`${name}: sweep keeps the whitelist and new keys, deletes old ones, in batches`, async (t) => {
      const store = await open(kind)
      for (let i = 0; i < 25; i++) await k.assoc(store, `old${i}`, i)
      await k.append(store, ['log', 1], 'x') // a log is a key like any other
      await k.assoc(store, { map: 'key' }, 1)
      // The cutoff is just past the newest old stamp (stamps never go back, so
      // every old key is older), and 'new' is written once the clock passed it.
      const newest = Math.max(...(await k.keys(store)).map((m) => m.lastWrite.getTime()))
      const cutoff = new Date(newest + 1)
      await clockPast(newest)
      await k.assoc(store, 'new', 1)
      t.true((await k.getMeta(store, 'new'))!.lastWrite >= cutoff, "'new' is not older than the cutoff")
      const progress: k.SweepProgress[] = []
      const deleted = await doSweep(mode, store, ['old0', 'old1', { map: 'key' }, 'not-there'], cutoff, {
        batchSize: 10,
        onProgress: (p) => {
          progress.push(p)
        },
      })
      const want = [...Array.from({ length: 23 }, (_, i) => `old${i + 2}`), ['log', 1]]
      t.deepEqual(sorted(deleted), sorted(want))
      const left = (await k.keys(store)).map((m) => m.key)
      t.deepEqual(sorted(left), sorted(['old0', 'old1', { map: 'key' }, 'new']))
      t.is(progress.length, 3)
      t.deepEqual(
        progress.map((p) => [p.scanned, p.batch]),
        [
          [10, 1],
          [20, 2],
          [28, 3],
        ],
      )
      t.is(progress[2]!.deleted, 24)
      // Nothing older than a cutoff before every write.
      t.deepEqual(await doSweep(mode, store, [], new Date(0)), [])
    })

    test(`${name}: a key rewritten between listing and deletion is kept`, async (t) => {
      const store = await open(kind)
      for (let i = 0; i < 6; i++) await k.assoc(store, `k${i}`, i)
      const backing = (store as unknown as { backing: k.Backing }).backing
      // After each batch is listed, and before sweep locks it, another writer rewrites k2 and k4.
      const rewrite = ['k2', 'k4']
      const wrapped: k.Backing = Object.create(backing)
      ;(wrapped as { openList: () => k.ListCursor }).openList = () => {
        const c = backing.openList()
        const touch = (l: k.RawListing | undefined) => l?.entries.map((e) => k.decodeKey(e.key)).filter((x) => rewrite.includes(x as string)) ?? []
        return {
          next: gensync({
            sync: (max: number) => {
              const l = c.next.sync(max)
              for (const key of touch(l)) k.assoc(store, key, 'rewritten', { sync: true })
              return l
            },
            async: async (max: number) => {
              const l = await c.next.async(max)
              for (const key of touch(l)) await k.assoc(store, key, 'rewritten')
              return l
            },
          }),
          close: () => c.close(),
        }
      }
      const spy = new k.Store(wrapped, {})
      // A cutoff in the future: every stamp qualifies, only the re-check saves the rewritten keys.
      const deleted = await doSweep(mode, spy, [], new Date(Date.now() + 3_600_000), { batchSize: 2 })
      t.deepEqual(sorted(deleted), sorted(['k0', 'k1', 'k3', 'k5']))
      t.is(await k.get(store, 'k2'), 'rewritten')
      t.is(await k.get(store, 'k4'), 'rewritten')
    })

    if (kind !== 'memory') {
      test(`${name}: unreadable files are reported and never deleted`, async (t) => {
        const dir = join(tempDir(), 'store')
        const store = await open(kind, dir)
        await k.assoc(store, 'bad', 1)
        const [badFile] = ksvFiles(dir)
        writeFileSync(join(dir, badFile!), 'not a konserve file at all, long enough for a header.....')
        await k.assoc(store, 'good', 1)
        writeFileSync(join(dir, 'foreign.txt'), 'x')
        const corrupt: k.KonserveError[] = []
        const deleted = await doSweep(mode, store, [], new Date(Date.now() + 3_600_000), { onCorrupt: (e) => corrupt.push(e) })
        t.deepEqual(deleted, ['good'])
        t.is(corrupt.length, 1)
        t.is(corrupt[0]!.file, join(realpathSync(dir), badFile!))
        t.true(existsSync(join(dir, badFile!)))
        t.true(existsSync(join(dir, 'foreign.txt')))
      })
    }
  }
}


for (const impl of ['native', 'pure'] as const) {
  test(`${impl}: lastWrite never goes back across a restart with the wall clock stepped back`, async (t) => {
    const dir = join(tempDir(), 'store')
    const day = 24 * 3600 * 1000
    // A process whose wall clock runs 10 days ahead writes 'a' ...
    const first = JSON.parse((await run(process.execPath, [fixture('gc-clock-writer.mjs'), dir, impl, 'a', String(10 * day)])).stdout)
    t.true(first.lastWrite > Date.now() + 9 * day)
    const mark = Number(/^konserve-clock 2 (\d+) /.exec(readFileSync(join(dir, '.konserve.clock'), 'latin1'))![1])
    t.true(mark > first.lastWrite, 'the watermark is ahead of every stamp given out')
    // ... then the clock is corrected: a new process writes 'b'.
    const second = JSON.parse((await run(process.execPath, [fixture('gc-clock-writer.mjs'), dir, impl, 'b', '0'])).stdout)
    t.true(second.lastWrite >= first.lastWrite, `b (${second.lastWrite}) is not older than a (${first.lastWrite})`)
    // A sweep with a cutoff between them deletes 'a' and keeps 'b'.
    const store = await k.connectFsStore(dir, { native: impl === 'native' })
    const deleted = await k.sweep(store, [], new Date(first.lastWrite + 1))
    t.deepEqual(deleted, ['a'])
    t.deepEqual((await k.keys(store)).map((m) => m.key), ['b'])
    // Writes in this process stay at or above every earlier stamp (FORMAT.md §7: the
    // projection of the ahead clock's last write, not its 60 s cap).
    await k.assoc(store, 'c', 1)
    t.true((await k.getMeta(store, 'c'))!.lastWrite.getTime() >= second.lastWrite)
    // The clock file is not a key, and deleteStore removes it.
    await k.deleteStore(dir, { native: impl === 'native' })
    t.false(existsSync(dir))
  })
}

// 60,000 keys in CI (creating the files is most of the time); KONSERVE_GC_KEYS=1000000 for the full claim.
const gcKeys = Number(process.env.KONSERVE_GC_KEYS ?? 60_000)

test(`native: sweep of ${gcKeys} keys runs in bounded memory (vs the whole listing held at once)`, async (t) => {
  const dir = join(tempDir(), 'store')
  const child = async (...args: string[]) =>
    JSON.parse((await run(process.execPath, [fixture('gc-memory.mjs'), dir, ...args], { maxBuffer: 1 << 20 })).stdout)
  t.timeout(Math.max(170_000, gcKeys * 2))
  const n = gcKeys
  // Creating the files is most of this test's time (one writer: several contend on the directory).
  const created = await child('create', String(n))
  t.is(created.created, n)
  const all = await child('keys')
  t.is(all.count, n)
  const listing = await child('list')
  t.is(listing.count, n)
  // Deletes the first 10,000 keys written; lists (one batch at a time) all of them.
  const swept = await child('sweep', String(created.cutoff))
  t.is(swept.scanned, n)
  t.true(swept.count > 0 && swept.count < n)
  const mb = (x: number) => (x / 2 ** 20).toFixed(0)
  t.log(`whole listing: +${mb(listing.growth)} MB RSS; keys(): +${mb(all.growth)} MB in ${all.ms} ms; sweep: +${mb(swept.growth)} MB in ${swept.ms} ms (${swept.count} deleted)`)
  // Bounded: sweep's growth is one batch's worth whatever the store's size (+58 MB
  // at 60,000 keys and at 200,000 here), while the whole listing grows with the
  // store (+151 MB and +445 MB). (keys() reads through the cursor too; only its
  // result grows with the store.)
  t.true(swept.growth < 96 * 2 ** 20, `sweep grew RSS by ${swept.growth} bytes`)
  t.true(swept.growth < listing.growth / 2, `sweep grew RSS by ${swept.growth}, the whole listing by ${listing.growth}`)
  await k.deleteStore(dir)
})
