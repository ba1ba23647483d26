/**
 * The shared directory fsync of the pure engine (ts/backends/pure/staging.ts
 * DirSync, as crates/core/src/dirsync.rs): async writers of one store that
 * renamed at about the same time share one directory fsync, and none is
 * acknowledged before a directory fsync that started after its rename ended.
 */
import test from 'ava'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { DirSync } from '../ts/backends/pure/staging.js'
import * as H from './helpers/pure.js'
const { tempDir } = H

/** A DirSync over a fake fsync that the test ends by hand; it logs starts, ends and acknowledgements. */
function harness() {
  const log: string[] = []
  const pending: Array<{ resolve: () => void; reject: (e: Error) => void }> = []
  let started = 0
  const ds = new DirSync(() => {
    const n = started++
    log.push(`start ${n}`)
    return new Promise<void>((resolve, reject) => {
      pending[n] = {
        resolve: () => {
          log.push(`end ${n}`)
          resolve()
        },
        reject: (e) => {
          log.push(`fail ${n}`)
          reject(e)
        },
      }
    })
  })
  const call = (who: string) =>
    ds.sync().then(
      () => void log.push(`${who} ok`),
      (e: Error) => void log.push(`${who} ${e.message}`),
    )
  const settle = () => new Promise((r) => setImmediate(r))
  return { ds, log, pending, call, settle, started: () => started }
}

test('dirsync: callers that come while an fsync runs wait for it, then share the next one', async (t) => {
  const h = harness()
  const first = h.call('a')
  const rest = Array.from({ length: 15 }, (_, i) => h.call(`w${i}`))
  await h.settle()
  t.deepEqual(h.log, ['start 0'], 'the waiters do not take the running fsync (it may predate their renames)')
  h.pending[0]!.resolve()
  await first
  await h.settle()
  t.deepEqual(h.log, ['start 0', 'end 0', 'a ok', 'start 1'], 'no waiter is acknowledged by fsync 0; one fsync starts for all of them')
  h.pending[1]!.resolve()
  await Promise.all(rest)
  t.is(h.started(), 2, '16 callers, 2 fsyncs')
  t.deepEqual(h.log.slice(4), ['end 1', ...Array.from({ length: 15 }, (_, i) => `w${i} ok`)])
  // Nothing runs now: the next caller starts its own at once.
  const late = h.call('late')
  t.is(h.started(), 3)
  h.pending[2]!.resolve()
  await late
})

test('dirsync: a failed fsync rejects every caller it covered, and only them', async (t) => {
  const h = harness()
  const first = h.call('a')
  const covered = [h.call('b'), h.call('c')]
  h.pending[0]!.resolve()
  await first
  await h.settle()
  h.pending[1]!.reject(new Error('EIO'))
  await Promise.all(covered)
  t.deepEqual(h.log, ['start 0', 'end 0', 'a ok', 'start 1', 'fail 1', 'b EIO', 'c EIO'])
  const after = h.call('d')
  h.pending[2]!.resolve()
  await after
  t.deepEqual(h.log.slice(7), ['start 2', 'end 2', 'd ok'], 'a later caller runs a fresh fsync')
})

test('dirsync: 16 concurrent async blob writes of the pure store share directory fsyncs (strace)', async (t) => {
  const { spawnSync } = await import('node:child_process')
  const { pathToFileURL } = await import('node:url')
  const probe = spawnSync('strace', ['-f', '-c', '-e', 'trace=fsync', 'true'], { encoding: 'utf8' })
  if (probe.error || probe.status !== 0) {
    t.fail(`strace is not usable here (Debian: apt-get install strace): ${probe.error?.message ?? probe.stderr}`)
    return
  }
  const dir = tempDir(t)
  const script = join(dir, 'blobs.mts')
  const src = pathToFileURL(join(import.meta.dirname, '../ts')).href
  writeFileSync(
    script,
    `import { openPureStore } from '${src}/backends/pure/store.ts'
import { createPureCodec } from '${src}/backends/pure/codec.ts'
import { encodeKey } from '${src}/format/key.ts'
const [dir, mode] = process.argv.slice(2)
const store = openPureStore.sync(dir, createPureCodec(0, undefined), { syncBlob: true })
const meta = new Uint8Array(Buffer.from('81a474797065a662696e617279', 'hex'))
const blob = async (i) => {
  const w = await store.blobWriter.async(encodeKey('b' + i), meta)
  await w.write.async(new Uint8Array(256 << 10).fill(i))
  await w.commit.async()
}
if (mode === 'concurrent') await Promise.all(Array.from({ length: 16 }, (_, i) => blob(i)))
else for (let i = 0; i < 16; i++) await blob(i)
for (let i = 0; i < 16; i++) if (store.get.sync(encodeKey('b' + i)).value[0] !== i) throw new Error('blob ' + i)
`,
  )
  // The fsyncs of the store directory itself (strace -y names each descriptor's path).
  const dirFsyncs = (mode: string): number => {
    const store = join(dir, mode)
    const run = spawnSync('strace', ['-f', '-y', '-e', 'trace=fsync', process.execPath, '--import=tsx', script, store, mode], {
      encoding: 'utf8',
      cwd: join(import.meta.dirname, '..'),
    })
    if (run.status !== 0) throw new Error(`the script failed: ${run.stderr}`)
    return run.stderr.split('\n').filter((l) => l.includes(`fsync(`) && l.includes(`<${store}>`)).length
  }
  const sequential = dirFsyncs('sequential')
  const concurrent = dirFsyncs('concurrent')
  t.log(`directory fsyncs for 16 blobs: ${sequential} one after another, ${concurrent} concurrent`)
  t.true(sequential >= 16, `one after another, each blob fsyncs the directory: ${sequential}`)
  t.true(concurrent < sequential - 4, `concurrent blobs share directory fsyncs: ${concurrent} of ${sequential}`)
})
