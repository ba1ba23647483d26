/**
 * Group commits of async puts in the pure-TypeScript file store
 * (ts/backends/pure/store.ts, ts/backing/group-commit.ts): every put lands,
 * each caller gets its own result, and far fewer fsyncs than one by one.
 */
import test from 'ava'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { KonserveError } from '../ts/errors.js'
import * as H from './helpers/pure.js'
const { META, codecs, same, key, tempDir, open, stagingFiles, listAll } = H

// ---- group commits of async puts ---------------------------------------------------------------

const value = (i: number) => new Uint8Array(Buffer.from(`value ${i} `.repeat(1 + (i % 5))))

test('puts: 64 concurrent async puts all land, each resolving, in few batches', async (t) => {
  const dir = tempDir(t)
  const store = open(dir, codecs[1]!, true)
  const results = await Promise.allSettled(
    Array.from({ length: 64 }, (_, i) => store.put.async([{ key: key(`k${i}`), serializer: 1, meta: META, value: value(i) }])),
  )
  t.deepEqual(results.map((r) => r.status), Array(64).fill('fulfilled'))
  for (let i = 0; i < 64; i++) if (!same(store.get.sync(key(`k${i}`))!.value, value(i))) t.fail(`k${i}`)
  t.deepEqual(stagingFiles(dir), [])
  // Multi-key puts and puts of the same key in one batch: in order, the later wins.
  const same1 = Array.from({ length: 10 }, (_, i) =>
    store.put.async([
      { key: key('shared'), serializer: 1, meta: META, value: value(100 + i) },
      { key: key(`own${i}`), serializer: 1, meta: META, value: value(i) },
    ]),
  )
  await Promise.all(same1)
  t.true(same(store.get.sync(key('shared'))!.value, value(109)), 'the last put of the key wins')
  for (let i = 0; i < 10; i++) t.true(same(store.get.sync(key(`own${i}`))!.value, value(i)))
  t.is(listAll(store).entries.length, 64 + 11)
  await store.put.async([])
})

test('puts: a failing batch gives each caller its own result', async (t) => {
  const dir = tempDir(t)
  const store = open(dir, codecs[0]!, true)
  // A directory where the bad key's file goes: its rename fails.
  const { mkdirSync } = await import('node:fs')
  mkdirSync(store.filePath(key('bad')))
  // The first put starts a batch at once; the rest queue behind it and go as one batch.
  const first = store.put.async([{ key: key('first'), serializer: 1, meta: META, value: value(0) }])
  const rest = Array.from({ length: 12 }, (_, i) =>
    store.put.async([{ key: key(i === 5 ? 'bad' : `good${i}`), serializer: 1, meta: META, value: value(i) }]),
  )
  await first
  const results = await Promise.allSettled(rest)
  results.forEach((r, i) => {
    if (i === 5) {
      t.is(r.status, 'rejected')
      const e = (r as PromiseRejectedResult).reason as KonserveError
      t.true(e instanceof KonserveError)
      // rename(2) over a directory is EISDIR: ERR_NOT_A_FILE (docs/RELIABILITY.md, the errno table).
      t.is(e.code, 'ERR_NOT_A_FILE')
      t.is(e.file, store.filePath(key('bad')))
    } else {
      t.is(r.status, 'fulfilled', `caller ${i}`)
      t.true(same(store.get.sync(key(`good${i}`))!.value, value(i)), `caller ${i}`)
    }
  })
  t.deepEqual(stagingFiles(dir), [])
  // The store still writes.
  await store.put.async([{ key: key('after'), serializer: 1, meta: META, value: value(1) }])
  t.true(same(store.get.sync(key('after'))!.value, value(1)))
})

test('puts: 64 concurrent async puts take far fewer fsyncs than 64 puts one after another (strace)', async (t) => {
  const { spawnSync } = await import('node:child_process')
  const { pathToFileURL } = await import('node:url')
  // strace is required, as in faults.spec.ts (.ci/run installs it): without it this fails.
  const probe = spawnSync('strace', ['-f', '-c', '-e', 'trace=fsync', 'true'], { encoding: 'utf8' })
  if (probe.error || probe.status !== 0) {
    t.fail(`strace is not usable here (Debian: apt-get install strace): ${probe.error?.message ?? probe.stderr}`)
    return
  }
  const dir = tempDir(t)
  const script = join(dir, 'puts.mts')
  const src = pathToFileURL(join(import.meta.dirname, '../ts')).href
  writeFileSync(
    script,
    `import { openPureStore } from '${src}/backends/pure/store.ts'
import { createPureCodec } from '${src}/backends/pure/codec.ts'
import { encodeKey } from '${src}/format/key.ts'
const [dir, mode] = process.argv.slice(2)
const store = openPureStore.sync(dir, createPureCodec(0, undefined), { syncBlob: true })
const put = (i) => store.put.async([{ key: encodeKey('k' + i), serializer: 1, meta: new Uint8Array([0x80]), value: new Uint8Array([i]) }])
if (mode === 'concurrent') await Promise.all(Array.from({ length: 64 }, (_, i) => put(i)))
else for (let i = 0; i < 64; i++) await put(i)
`,
  )
  const fsyncs = (mode: string): number => {
    const run = spawnSync('strace', ['-f', '-c', '-e', 'trace=fsync', process.execPath, '--import=tsx', script, join(dir, mode), mode], {
      encoding: 'utf8',
      cwd: join(import.meta.dirname, '..'),
    })
    if (run.status !== 0) throw new Error(`the script failed: ${run.stderr}`)
    const line = run.stderr.split('\n').find((l) => /\sfsync$/.test(l))
    if (!line) throw new Error(`no fsync count in ${run.stderr}`)
    // strace -c columns: % time, seconds, usecs/call, calls, [errors], syscall
    return Number(line.trim().split(/\s+/)[3])
  }
  const sequential = fsyncs('sequential')
  const concurrent = fsyncs('concurrent')
  t.log(`fsyncs for 64 puts: ${sequential} one after another, ${concurrent} concurrent`)
  // One after another: 64 staging files and 64 directory fsyncs (plus the store's own at open).
  t.true(sequential >= 128, `${sequential}`)
  // Concurrent: 64 staging files, and a directory fsync per batch (a handful).
  t.true(concurrent - (sequential - 128) <= 64 + 8, `${concurrent}`)
})

