/**
 * The pure engine's value cache (ts/backends/pure/held.ts): a repeated get of
 * an unchanged key holds its key file open and answers after one stat finds
 * the same inode at the path. What it holds is bounded (the store's
 * `valueCacheBytes`, the process's descriptor budget), given back by `close`
 * and by the garbage collector, and nothing it holds is ever answered after
 * the file changed: replaced or removed by this process, changed in place,
 * or a value's bytes mutated by the caller. The cross-process promises (a
 * writer in another process, a deleted or swapped store directory) are in
 * value-cache.spec.ts, with the native cache's.
 */
import test from 'ava'
import { execFile } from 'node:child_process'
import { mkdirSync, readFileSync, readdirSync, renameSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import * as k from '../ts/index.js'
import { COARSE_SETTLED_MS, type HeldValues, MAX_HELD_FILE, SETTLED_MS, settledBy, testing } from '../ts/backends/pure/held.js'
import type { PureFileBacking } from '../ts/backends/pure/store.js'
import { fdsIn, tempDir } from './helpers/api.js'

const run = promisify(execFile)
const dist = new URL('../dist/index.mjs', import.meta.url).pathname

const heldOf = (s: k.Store): HeldValues => {
  const held = (s as unknown as { backing: PureFileBacking }).backing.held
  if (!held) throw new Error('the store has no value cache')
  return held
}
const open = (dir: string, options: k.FsStoreOptions = {}) => k.connectFsStore(dir, { native: false, durable: false, sync: true, ...options })
const keyFiles = (dir: string) => readdirSync(dir).filter((n) => n.endsWith('.ksv'))
/** Waits until a file written now is old enough to be held past its first repeat (SETTLED_MS). */
const settle = () => new Promise((r) => setTimeout(r, SETTLED_MS + 10))

test('a repeated get holds one descriptor and answers from memory, sync and async', async (t) => {
  const dir = join(tempDir(), 'store')
  const s = open(dir)
  k.assoc(s, 'a', { doc: 1 }, { sync: true })
  await settle()
  const held = heldOf(s)
  t.deepEqual(k.get(s, 'a', { sync: true }), { doc: 1 })
  t.is(held.size, 1)
  t.is(fdsIn(dir), 1, 'the key file is held open')
  const hits = held.hits
  for (let i = 0; i < 10; i++) t.deepEqual(k.get(s, 'a', { sync: true }), { doc: 1 })
  for (let i = 0; i < 10; i++) t.deepEqual(await k.get(s, 'a'), { doc: 1 })
  t.is(held.hits - hits, 20)
  t.is(fdsIn(dir), 1)
  k.close(s, { sync: true })
  t.is(fdsIn(dir), 0, 'close gives it back')
})

test('an async get of a file this process has not seen holds it after the threadpool read: the next async get is a hit', async (t) => {
  const dir = join(tempDir(), 'store')
  // Written by the native core: not warm for the pure engine, so the first async get reads on the threadpool.
  const w = k.connectFsStore(dir, { native: true, durable: false, sync: true })
  k.assoc(w, 'a', { doc: 2 }, { sync: true })
  await settle()
  const s = open(dir)
  const held = heldOf(s)
  t.deepEqual(await k.get(s, 'a'), { doc: 2 })
  t.is(held.size, 1)
  const hits = held.hits
  t.deepEqual(await k.get(s, 'a'), { doc: 2 })
  t.is(held.hits - hits, 1)
  k.assoc(w, 'a', { doc: 3 }, { sync: true })
  t.deepEqual(await k.get(s, 'a'), { doc: 3 })
})

test('close while async gets are on the threadpool: they answer, and no descriptor stays held', async (t) => {
  const dir = join(tempDir(), 'store')
  // Written by the native core: not warm for the pure engine, so each async get reads on the threadpool.
  const w = k.connectFsStore(dir, { native: true, durable: false, sync: true })
  for (let i = 0; i < 20; i++) k.assoc(w, `k${i}`, { i }, { sync: true })
  k.close(w, { sync: true })
  await settle()
  for (const form of ['sync', 'async'] as const) {
    const s = open(dir)
    const gets = Array.from({ length: 20 }, (_, i) => k.get(s, `k${i}`))
    const closing = form === 'sync' ? k.close(s, { sync: true }) : k.close(s)
    const values = await Promise.all(gets)
    await closing
    t.deepEqual(values, Array.from({ length: 20 }, (_, i) => ({ i })), `${form} close`)
    t.is(heldOf(s).size, 0, `${form} close: nothing held`)
    t.is(fdsIn(dir), 0, `${form} close: no descriptor open in the store`)
  }
})

test("this process's put and dissoc drop the entry at once, and the next get reads the new file", async (t) => {
  const dir = join(tempDir(), 'store')
  const s = open(dir)
  k.assoc(s, 'a', 1, { sync: true })
  t.is(k.get(s, 'a', { sync: true }), 1)
  t.is(heldOf(s).size, 1)
  k.assoc(s, 'a', 2, { sync: true })
  t.is(heldOf(s).size, 0, 'the write dropped it')
  t.is(fdsIn(dir), 0)
  t.is(k.get(s, 'a', { sync: true }), 2)
  await k.assoc(s, 'a', 3)
  t.is(await k.get(s, 'a'), 3)
  t.is(k.get(s, 'a', { sync: true }), 3)
  k.dissoc(s, 'a', { sync: true })
  t.is(heldOf(s).size, 0)
  t.is(k.get(s, 'a', { sync: true }), undefined)
  t.is(await k.get(s, 'a'), undefined)
})

test('a second instance on the directory sees the first one write, replace and remove', async (t) => {
  const dir = join(tempDir(), 'store')
  const w = open(dir)
  const r = open(dir)
  for (let i = 0; i < 200; i++) {
    // One size for every value: n from 1000 on is a uint16. Every other value settles first, so its reads are hits.
    k.assoc(w, 'a', { n: 1000 + i }, { sync: true })
    if (i % 2 === 0) await settle()
    for (let j = 0; j < 3; j++) t.is((k.get(r, 'a', { sync: true }) as { n: number }).n, 1000 + i)
    if (i % 7 === 6) {
      k.dissoc(w, 'a', { sync: true })
      t.is(k.get(r, 'a', { sync: true }), undefined)
    }
  }
  t.true(heldOf(r).hits >= 200, `${heldOf(r).hits} hits`)
})

test('a file read within SETTLED_MS of its last change is read again at its first repeat, then held', async (t) => {
  const dir = join(tempDir(), 'store')
  const s = open(dir)
  const held = heldOf(s)
  k.assoc(s, 'a', 1, { sync: true })
  t.is(k.get(s, 'a', { sync: true }), 1)
  const misses = held.misses
  t.is(k.get(s, 'a', { sync: true }), 1)
  t.is(held.misses - misses, 1, 'too fresh: read again')
  await settle()
  t.is(k.get(s, 'a', { sync: true }), 1)
  t.is(held.misses - misses, 2, 'read again once more, now settled')
  const hits = held.hits
  t.is(k.get(s, 'a', { sync: true }), 1)
  t.is(k.get(s, 'a', { sync: true }), 1)
  t.is(held.hits - hits, 2)
})

/** A store holding key 'a' = { n: 1001 }, settled, and another valid key file for 'a' of the same size: { n: 2002 } written by another store. */
async function withReplacement() {
  const dir = join(tempDir(), 'store')
  const other = join(tempDir(), 'other')
  const s = open(dir)
  k.assoc(s, 'a', { n: 1001 }, { sync: true })
  k.assoc(open(other), 'a', { n: 2002 }, { sync: true })
  await settle()
  const [name] = keyFiles(dir)
  return { s, file: join(dir, name!), replacement: readFileSync(join(other, name!)) }
}

test('a key file changed in place (same inode, a later mtime) is read again', async (t) => {
  const { s, file, replacement } = await withReplacement()
  t.is((k.get(s, 'a', { sync: true }) as { n: number }).n, 1001)
  t.is((k.get(s, 'a', { sync: true }) as { n: number }).n, 1001)
  t.true(heldOf(s).hits >= 1, 'held')
  const before = statSync(file)
  // A later clock tick than the file's (timestamps are as coarse as the kernel's tick).
  await new Promise((r) => setTimeout(r, 30))
  writeFileSync(file, replacement)
  t.is(statSync(file).ino, before.ino, 'the same inode')
  t.is((k.get(s, 'a', { sync: true }) as { n: number }).n, 2002)
  t.is(((await k.get(s, 'a')) as { n: number }).n, 2002)
})

test('a key file changed in place right after it was read (within a clock tick) is read again', async (t) => {
  const { s, file, replacement } = await withReplacement()
  t.is((k.get(s, 'a', { sync: true }) as { n: number }).n, 1001)
  // At once, same size, same inode: only the file's ctime, later than the read less SETTLED_MS, tells.
  writeFileSync(file, replacement)
  t.is((k.get(s, 'a', { sync: true }) as { n: number }).n, 2002)
  t.is((k.get(s, 'a', { sync: true }) as { n: number }).n, 2002)
})

test('the settle rule: a ctime on a whole second must be a second older than the read', (t) => {
  const readAt = 1_796_655_612_500
  t.true(settledBy(readAt - SETTLED_MS - 0.5, readAt))
  t.false(settledBy(readAt - SETTLED_MS + 0.5, readAt))
  // 1796655612000 may stand for any moment of that second on a file system that keeps whole seconds.
  t.false(settledBy(1_796_655_612_000, readAt))
  t.false(settledBy(1_796_655_611_000, 1_796_655_612_010), 'less than COARSE_SETTLED_MS before the read')
  t.true(settledBy(readAt - COARSE_SETTLED_MS - 500, readAt))
})

test('on a file system that keeps whole seconds (ext4 with 128-byte inodes), a change in place within the second of the read is seen', async (t) => {
  // A real one: an ext4 image made with 128-byte inodes (no sub-second timestamps), loop-mounted in a
  // private mount namespace (unshare -m) so that the mount goes with the child. Needs root.
  if (process.getuid?.() !== 0) {
    t.fail('this test loop-mounts an ext4 image, which needs root (the CI machine runs as root)')
    return
  }
  const image = join(tempDir(), 'coarse.img')
  const mnt = join(tempDir(), 'mnt')
  mkdirSync(mnt)
  await run('truncate', ['-s', '32M', image])
  // mkfs.ext4 lives in /usr/sbin, which a non-login PATH may lack.
  await run('mkfs.ext4', ['-q', '-F', '-I', '128', image], { env: { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` } })
  // In the child: (1) a key written and read twice early in one second, then changed in place with a
  // same-size file in that second (so its ctime stays the same): the next get must see the change;
  // (2) a key read a second after it was written is held, and a later change in place is still seen.
  const script = `import * as k from ${JSON.stringify(dist)}; import fs from 'node:fs'; import { join } from 'node:path'
    const base = process.argv[1]
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
    const open = (d) => k.connectFsStore(d, { native: false, durable: false, sync: true })
    const out = { inSecond: [] }
    for (let attempt = 0; attempt < 5; attempt++) {
      const dir = join(base, 's' + attempt), other = join(base, 'o' + attempt)
      while (Date.now() % 1000 > 100) await sleep(5)
      const s = open(dir)
      k.assoc(s, 'a', { n: 1001 }, { sync: true })
      k.assoc(open(other), 'a', { n: 2002 }, { sync: true })
      const name = fs.readdirSync(dir).find((n) => n.endsWith('.ksv'))
      const file = join(dir, name)
      const ctime = fs.statSync(file).ctimeMs
      await sleep(${SETTLED_MS + 20})
      const reads = [k.get(s, 'a', { sync: true }).n, k.get(s, 'a', { sync: true }).n]
      fs.writeFileSync(file, fs.readFileSync(join(other, name)))
      const sameCtime = fs.statSync(file).ctimeMs === ctime
      reads.push(k.get(s, 'a', { sync: true }).n, k.get(s, 'a', { sync: true }).n)
      out.inSecond.push({ wholeSecond: ctime % 1000 === 0, sameCtime, reads })
      if (sameCtime) break
    }
    const dir = join(base, 'later'), other = join(base, 'later-other')
    const s = open(dir)
    k.assoc(s, 'b', { n: 3003 }, { sync: true })
    k.assoc(open(other), 'b', { n: 4004 }, { sync: true })
    await sleep(${COARSE_SETTLED_MS + 100})
    const held = s.backing.held
    const reads = [k.get(s, 'b', { sync: true }).n]
    const hits = held.hits
    reads.push(k.get(s, 'b', { sync: true }).n, k.get(s, 'b', { sync: true }).n)
    const name = fs.readdirSync(dir).find((n) => n.endsWith('.ksv'))
    fs.writeFileSync(join(dir, name), fs.readFileSync(join(other, name)))
    reads.push(k.get(s, 'b', { sync: true }).n)
    out.later = { hits: held.hits - hits, reads }
    console.log(JSON.stringify(out))`
  const sh = 'mount -o loop "$1" "$2" && exec "$3" --input-type=module -e "$4" "$2"'
  const { stdout } = await run('unshare', ['-m', '--propagation', 'private', 'sh', '-c', sh, 'sh', image, mnt, process.execPath, script], {
    env: { ...process.env, NODE_OPTIONS: '' },
  })
  const out = JSON.parse(stdout)
  const last = out.inSecond.at(-1)
  t.true(last.wholeSecond, `whole-second timestamps: ${stdout}`)
  t.true(last.sameCtime, `the change in place kept the ctime (within the second): ${stdout}`)
  t.deepEqual(last.reads, [1001, 1001, 2002, 2002])
  t.deepEqual(out.later, { hits: 2, reads: [3003, 3003, 3003, 4004] }, 'held a second later; a later change in place is seen')
})

test.serial('a key file changed in place between a threadpool read and its callback is read again', async (t) => {
  // The async get's read finishes on the threadpool; the JavaScript thread is busy; the file is
  // rewritten in place (same size, same inode); then the read's callback holds the file. The read
  // began before the change, so the change must not look older than it (its ctime is 20 ms
  // older than the callback): the next gets read the new bytes.
  const spin = (ms: number) => {
    const end = performance.now() + ms
    while (performance.now() < end);
  }
  let raced = 0
  for (let round = 0; round < 5 && raced < 2; round++) {
    const dir = join(tempDir(), 'store')
    const other = join(tempDir(), 'other')
    // Written by the native core: not warm for the pure engine, so the async get reads on the threadpool.
    k.assoc(k.connectFsStore(dir, { native: true, durable: false, sync: true }), 'a', { n: 1001 }, { sync: true })
    k.assoc(k.connectFsStore(other, { native: true, durable: false, sync: true }), 'a', { n: 2002 }, { sync: true })
    const [name] = keyFiles(dir)
    const replacement = readFileSync(join(other, name!))
    await settle()
    const s = open(dir)
    const pending = k.get(s, 'a') as Promise<{ n: number }>
    spin(20) // the open finishes on the threadpool
    await new Promise((r) => setImmediate(r)) // its callback has queued the read
    spin(10) // the read finishes
    writeFileSync(join(dir, name!), replacement)
    spin(SETTLED_MS + 20) // the read's callback waits
    const first = (await pending).n
    await settle()
    const later = [(k.get(s, 'a', { sync: true }) as { n: number }).n, ((await k.get(s, 'a')) as { n: number }).n, (k.get(s, 'a', { sync: true }) as { n: number }).n]
    t.deepEqual(later, [2002, 2002, 2002], `round ${round}: the change in place is seen (first get: ${first})`)
    if (first === 1001) raced++
    k.close(s, { sync: true })
  }
  t.true(raced >= 1, 'the read came before the change in at least one round')
})

test("a fake clock (a test suite's fake timers) ahead of the kernel's does not hide a change in place", async (t) => {
  // In a child: Date.now replaced after konserve loaded (as vi.useFakeTimers() and advanceTimersByTime
  // do) runs an hour ahead; then, in another child, replaced before konserve loaded.
  const script = (fakeFirst: boolean) => `import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'; import { join } from 'node:path'
    const realNow = Date.now
    const fake = () => { Date.now = () => realNow() + 3_600_000 }
    ${fakeFirst ? 'fake()' : ''}
    const k = await import(${JSON.stringify(dist)})
    ${fakeFirst ? '' : 'fake()'}
    const base = process.argv[1], dir = join(base, 'store'), other = join(base, 'other')
    const open = (d) => k.connectFsStore(d, { native: false, durable: false, sync: true })
    const s = open(dir)
    k.assoc(s, 'a', { n: 1001 }, { sync: true })
    k.assoc(open(other), 'a', { n: 2002 }, { sync: true })
    const name = readdirSync(dir).find((n) => n.endsWith('.ksv'))
    await new Promise((r) => setTimeout(r, ${SETTLED_MS + 10}))
    const reads = [k.get(s, 'a', { sync: true }).n]
    writeFileSync(join(dir, name), readFileSync(join(other, name)))
    reads.push(k.get(s, 'a', { sync: true }).n, k.get(s, 'a', { sync: true }).n, (await k.get(s, 'a')).n)
    console.log(JSON.stringify({ reads, cache: s.backing.held !== undefined }))`
  for (const fakeFirst of [false, true]) {
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script(fakeFirst), tempDir()], { env: { ...process.env, NODE_OPTIONS: '' } })
    t.deepEqual(JSON.parse(stdout), { reads: [1001, 2002, 2002, 2002], cache: !fakeFirst }, fakeFirst ? 'faked before konserve loaded: no cache' : 'faked after')
  }
})

test('a link at a key path is not followed by a hit: the get fails as the read does (ERR_NOT_A_FILE)', async (t) => {
  const base = tempDir()
  const dir = join(base, 'store')
  const s = open(dir)
  k.assoc(s, 'a', 'v1', { sync: true })
  await settle()
  t.is(k.get(s, 'a', { sync: true }), 'v1')
  t.is(k.get(s, 'a', { sync: true }), 'v1')
  const [name] = keyFiles(dir)
  // The directory moved away (its files' ctimes unchanged), and the key path made a link to the very file held.
  renameSync(dir, join(base, 'real'))
  mkdirSync(dir)
  symlinkSync(join(base, 'real', name!), join(dir, name!))
  t.is(t.throws<k.KonserveError>(() => k.get(s, 'a', { sync: true }))?.code, 'ERR_NOT_A_FILE')
  t.is((await t.throwsAsync<k.KonserveError>(k.get(s, 'a') as Promise<unknown>))?.code, 'ERR_NOT_A_FILE')
})

test('a key file found on a file system the cache cannot use (the store directory swapped for a link) turns the cache off', async (t) => {
  // ramfs (not on the list of local file systems, as NFS or FUSE) mounted in a private mount namespace. Needs root.
  if (process.getuid?.() !== 0) {
    t.fail('this test mounts a ramfs, which needs root (the CI machine runs as root)')
    return
  }
  const base = tempDir()
  const mnt = join(base, 'mnt')
  mkdirSync(mnt)
  const script = `import * as k from ${JSON.stringify(dist)}; import { renameSync, symlinkSync, readdirSync, readlinkSync } from 'node:fs'
    const [base, mnt] = process.argv.slice(1)
    const open = (d) => k.connectFsStore(d, { native: false, durable: false, sync: true })
    const s = open(base + '/s')
    k.assoc(s, 'a', 1, { sync: true })
    const there = open(mnt + '/s')
    k.assoc(there, 'a', 2, { sync: true })
    await new Promise((r) => setTimeout(r, ${SETTLED_MS + 10}))
    const before = [k.get(s, 'a', { sync: true }), k.get(s, 'a', { sync: true })]
    renameSync(base + '/s', base + '/s-old')
    symlinkSync(mnt + '/s', base + '/s')
    const after = []
    for (let i = 0; i < 5; i++) after.push(k.get(s, 'a', { sync: true }))
    const onRamfs = readdirSync('/proc/self/fd').filter((fd) => { try { return readlinkSync('/proc/self/fd/' + fd).startsWith(mnt + '/') } catch { return false } }).length
    console.log(JSON.stringify({ cacheThere: there.backing.held !== undefined, before, after, held: s.backing.held.size, onRamfs }))`
  const sh = 'mount -t ramfs none "$2" && exec "$3" --input-type=module -e "$4" "$1" "$2"'
  const { stdout } = await run('unshare', ['-m', '--propagation', 'private', 'sh', '-c', sh, 'sh', base, mnt, process.execPath, script], {
    env: { ...process.env, NODE_OPTIONS: '' },
  })
  t.deepEqual(JSON.parse(stdout), { cacheThere: false, before: [1, 1], after: [2, 2, 2, 2, 2], held: 0, onRamfs: 0 })
})

test("a caller's changes to a returned value's bytes do not reach the next get", (t) => {
  const dir = join(tempDir(), 'store')
  const s = open(dir)
  k.assoc(s, 'b', { bytes: new Uint8Array([1, 2, 3]) }, { sync: true })
  for (let i = 0; i < 3; i++) {
    const v = k.get(s, 'b', { sync: true }) as { bytes: Uint8Array }
    t.deepEqual([...v.bytes], [1, 2, 3])
    v.bytes.fill(9)
  }
})

test('only small plain values are held: not compressed, encrypted or logged stores, nor files over 16 KiB', (t) => {
  const big = open(join(tempDir(), 'big'))
  k.assoc(big, 'x', 'y'.repeat(MAX_HELD_FILE), { sync: true })
  k.get(big, 'x', { sync: true })
  t.is(heldOf(big).size, 0)
  const lz4 = open(join(tempDir(), 'lz4'), { compressor: { type: 'lz4' } })
  k.assoc(lz4, 'x', 'y'.repeat(200), { sync: true })
  t.is(k.get(lz4, 'x', { sync: true }), 'y'.repeat(200))
  t.is(heldOf(lz4).size, 0)
  const aes = open(join(tempDir(), 'aes'), { encryptor: { type: 'aes', key: 'held s3cret' } })
  k.assoc(aes, 'x', 1, { sync: true })
  t.is(k.get(aes, 'x', { sync: true }), 1)
  t.is(heldOf(aes).size, 0)
  const logged = open(join(tempDir(), 'wal'), { wal: true })
  k.assoc(logged, 'x', 1, { sync: true })
  t.is(k.get(logged, 'x', { sync: true }), 1)
  t.is(heldOf(logged).size, 0)
  const off = open(join(tempDir(), 'off'), { valueCacheBytes: 0 })
  t.is((off as unknown as { backing: PureFileBacking }).backing.held, undefined, 'valueCacheBytes: 0 turns it off')
})

test("a store's valueCacheBytes bounds what it holds", (t) => {
  const dir = join(tempDir(), 'store')
  const s = open(dir, { valueCacheBytes: 4000 })
  for (let i = 0; i < 100; i++) k.assoc(s, `k${i}`, 'v'.repeat(100), { sync: true })
  for (let round = 0; round < 3; round++) for (let i = 0; i < 100; i++) t.is(k.get(s, `k${i}`, { sync: true }), 'v'.repeat(100))
  // Each entry charges its file (about 190 bytes), its path and 96 bytes.
  t.true(heldOf(s).size > 0 && heldOf(s).size <= 12, `${heldOf(s).size} held`)
  t.is(fdsIn(dir), heldOf(s).size)
})

test.serial('the descriptor budget is shared by every store of the process, read ones kept over idle ones', async (t) => {
  testing.setDescriptorBudget(10)
  t.teardown(() => testing.setDescriptorBudget(undefined))
  const a = join(tempDir(), 'a')
  const b = join(tempDir(), 'b')
  const sa = open(a)
  const sb = open(b)
  for (let i = 0; i < 50; i++) {
    k.assoc(sa, `k${i}`, i, { sync: true })
    k.assoc(sb, `k${i}`, i, { sync: true })
  }
  await settle()
  for (let i = 0; i < 50; i++) t.is(k.get(sa, `k${i}`, { sync: true }), i)
  t.is(fdsIn(a), 10)
  // Store b takes the descriptors of a, which nobody reads now.
  for (let round = 0; round < 2; round++) for (let i = 0; i < 5; i++) t.is(k.get(sb, `k${i}`, { sync: true }), i)
  t.is(fdsIn(b), 5)
  t.is(fdsIn(a) + fdsIn(b), 10)
  t.is(testing.descriptorsHeld() >= 10, true)
  k.close(sa, { sync: true })
  k.close(sb, { sync: true })
  t.is(fdsIn(a) + fdsIn(b), 0)
})

test("worker threads' descriptor budgets: the main thread's divided by the number of CPUs", async (t) => {
  // A child with an open-file limit of 800: the main thread may hold 100 (an eighth); a worker
  // thread, whose budget cannot see the main thread's, 100 / CPUs. Each reads 300 keys twice.
  const dir = join(tempDir(), 'store')
  const w = k.connectFsStore(dir, { native: true, durable: false, sync: true })
  for (let i = 0; i < 300; i++) k.assoc(w, `k${i}`, i, { sync: true })
  k.close(w, { sync: true })
  await settle()
  const script = `import * as k from ${JSON.stringify(dist)}; import { readdirSync, readlinkSync } from 'node:fs'
    import { Worker, isMainThread, parentPort } from 'node:worker_threads'; import os from 'node:os'
    const dir = ${JSON.stringify(dir)}
    const held = () => readdirSync('/proc/self/fd').filter((fd) => { try { return readlinkSync('/proc/self/fd/' + fd).startsWith(dir + '/') } catch { return false } }).length
    const readAll = () => {
      const s = k.connectFsStore(dir, { native: false, durable: false, sync: true })
      for (let pass = 0; pass < 2; pass++) for (let i = 0; i < 300; i++) if (k.get(s, 'k' + i, { sync: true }) !== i) throw new Error('k' + i)
      return s
    }
    if (isMainThread) {
      const s = readAll()
      const main = held()
      const worker = new Worker(new URL(import.meta.url), { eval: false })
      worker.once('message', (inWorker) => {
        console.log(JSON.stringify({ main, inWorker, cpus: os.availableParallelism() }))
        worker.postMessage('done')
      })
    } else {
      const s = readAll()
      const before = held()
      parentPort.postMessage(before)
      parentPort.once('message', () => { k.close(s, { sync: true }); process.exit(0) })
    }`
  const file = join(tempDir(), 'budget.mjs')
  writeFileSync(file, script)
  const { stdout } = await run('sh', ['-c', 'ulimit -n 800 && exec "$0" "$1"', process.execPath, file], { env: { ...process.env, NODE_OPTIONS: '' } })
  const { main, inWorker, cpus } = JSON.parse(stdout)
  t.is(main, 100, 'the main thread: an eighth of 800')
  t.is(inWorker - main, Math.floor(100 / cpus), `a worker: 100 / ${cpus} CPUs more`)
})

test('a store dropped without close gives its descriptors back when collected', async (t) => {
  const dir = join(tempDir(), 'store')
  const script = `import * as k from ${JSON.stringify(dist)}; import { readdirSync, readlinkSync } from 'node:fs'
    const dir = ${JSON.stringify(dir)}
    const held = () => readdirSync('/proc/self/fd').filter((fd) => { try { return readlinkSync('/proc/self/fd/' + fd).startsWith(dir + '/') } catch { return false } }).length
    ;(() => {
      const s = k.connectFsStore(dir, { native: false, durable: false, sync: true })
      for (let i = 0; i < 40; i++) k.assoc(s, 'k' + i, i, { sync: true })
      for (let i = 0; i < 40; i++) k.get(s, 'k' + i, { sync: true })
    })()
    const before = held()
    let after = before
    for (let i = 0; i < 50 && after > 0; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 20)); after = held() }
    console.log(JSON.stringify({ before, after }))`
  const { stdout } = await run(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { env: { ...process.env, NODE_OPTIONS: '' } })
  t.deepEqual(JSON.parse(stdout), { before: 40, after: 0 })
})
