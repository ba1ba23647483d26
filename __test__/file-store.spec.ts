/**
 * What only a file store has: several processes, killed lock holders, corrupt
 * and foreign files, bounded file descriptors, the on-disk names.
 */
import test from 'ava'
import { execFile } from 'node:child_process'
import { readdirSync, readFileSync, writeFileSync, truncateSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import * as k from 'konserve'
import { holdLock } from './helpers/lock-holder.js'
import { fdsIn, tempDir } from './helpers/api.js'

const run = promisify(execFile)
const fixture = (name: string) => join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, 'fixtures', name)
const ksvFiles = (dir: string) => readdirSync(dir).filter((f) => f.endsWith('.ksv'))

// Every test runs against both implementations: the same files, the same promises.
for (const impl of ['native', 'pure'] as const) {
  const native = impl === 'native'

  // [mode, concurrent loops per process]: sync calls cannot overlap within a
  // process, so only the async form runs several loops in each.
  for (const [mode, loops] of [
    ['sync', 1],
    ['mixed', 1],
    ['async', 4],
  ] as const) {
    test(`${impl}: two processes x ${loops} loop(s) x 1000 updateIn (${mode}) on one key lose no update`, async (t) => {
      const dir = join(tempDir(), 'store')
      await k.connectFsStore(dir, { native })
      const args = [fixture('incrementer.mjs'), dir, '1000', mode, String(loops), impl]
      await Promise.all([1, 2].map(() => run(process.execPath, args)))
      const store = await k.connectFsStore(dir, { native })
      t.is(await k.get(store, 'counter'), 2 * loops * 1000)
    })
  }

  test(`${impl}: conditional writes across processes: 2 x 300 optimistic increments lose nothing`, async (t) => {
    const dir = join(tempDir(), 'store')
    await k.connectFsStore(dir, { native })
    const outs = await Promise.all([1, 2].map(() => run(process.execPath, [fixture('optimistic.mjs'), dir, '300', impl])))
    const retries = outs.reduce((sum, o) => sum + Number(o.stdout), 0)
    t.log(`${retries} writes were refused and retried`)
    const store = await k.connectFsStore(dir, { native })
    t.is(await k.get(store, 'counter'), 600)
    t.is((await k.getMeta(store, 'counter'))!.revision, 600)
  })

  test(`${impl}: a process killed while holding a key lock does not wedge the key; its waiters all go on`, async (t) => {
    const dir = join(tempDir(), 'store')
    const store = await k.connectFsStore(dir, { native })
    await k.assoc(store, 'held', 1)
    const h = holdLock(dir, impl)
    await h.locked
    // Three waiters in this process. None may run its function while the holder lives.
    let holderAlive = true
    let ranWhileHeld = 0
    let finished = 0
    const updates = [1, 2, 3].map(() =>
      k
        .updateIn(store, ['held'], (x: number) => {
          if (holderAlive) ranWhileHeld++
          return x + 1
        })
        .then((r) => {
          finished++
          return r
        }),
    )
    // A sync write cannot wait: it is refused while the other process holds the lock.
    t.throws(() => k.assoc(store, 'held', 5, { sync: true }), { code: 'ERR_LOCK_BUSY' } as any)
    // A round trip to the holder (still inside its update) gives the waiters
    // every chance to run, which they must not take.
    await h.ping()
    t.is(finished, 0, 'no waiter finished while the holder lived')
    holderAlive = false
    h.child.kill('SIGKILL')
    const results = await Promise.all(updates)
    t.is(ranWhileHeld, 0, 'no waiter ran while the holder lived')
    t.deepEqual(results.map(([, now]) => now).sort(), [2, 3, 4], 'each waiter updated in turn, none lost')
    t.is(await k.get(store, 'held'), 4)
  })

  test(`${impl}: a write leaves exactly the key file: no staging files, no placeholder`, async (t) => {
    const dir = join(tempDir(), 'store')
    const store = k.connectFsStore(dir, { native, sync: true })
    k.assoc(store, 'a', 1, { sync: true })
    await k.assoc(store, 'b', 2)
    k.multiAssoc(store, { c: 3, d: 4 }, { sync: true })
    const names = readdirSync(dir).sort()
    t.deepEqual(
      names.filter((n) => !n.endsWith('.ksv')),
      ['.konserve.clock'], // the lastWrite watermark (FORMAT.md §7); no lock file outlives its lock (§6)
    )
    t.is(ksvFiles(dir).length, 4)
    for (const n of ksvFiles(dir)) t.regex(n, /^[0-9a-f]{32}\.ksv$/)
  })

  test(`${impl}: corrupt files: typed error naming key and file, other keys unaffected, nothing changed`, async (t) => {
    const dir = join(tempDir(), 'store')
    const store = await k.connectFsStore(dir, { native })
    await k.assoc(store, 'victim', { important: true })
    const [victimFile] = ksvFiles(dir)
    await k.assoc(store, 'healthy', 'fine')
    const path = join(dir, victimFile!)
    const original = readFileSync(path)
    const flipped = Buffer.from(original)
    flipped[flipped.length - 2]! ^= 0x01
    writeFileSync(path, flipped)
    const err = (await t.throwsAsync(k.get(store, 'victim'))) as k.KonserveError
    t.is(err.code, 'ERR_CORRUPT')
    t.is(err.key, 'victim')
    t.true(err.file?.endsWith(victimFile!))
    t.throws(() => k.get(store, 'victim', { sync: true }), { code: 'ERR_CORRUPT' } as any)
    t.deepEqual(readFileSync(path), flipped, 'a failed read changes nothing')
    t.is(await k.get(store, 'healthy'), 'fine')

    truncateSync(path, 30)
    t.is(((await t.throwsAsync(k.get(store, 'victim'))) as k.KonserveError).code, 'ERR_CORRUPT')
    const reported: k.KonserveError[] = []
    const listed = await k.keys(store, { onCorrupt: (e: k.KonserveError) => reported.push(e) })
    t.deepEqual(
      listed.map((m: k.Metadata) => m.key),
      ['healthy'],
    )
    t.is(reported.length, 1)
    t.true(reported[0]!.file?.endsWith(victimFile!))
    t.is(statSync(path).size, 30, 'keys() never touches a file it cannot read')
    // writing the key again repairs it
    await k.assoc(store, 'victim', 'new')
    t.is(await k.get(store, 'victim'), 'new')
  })

  test(`${impl}: a file moved to another key name is refused with ERR_KEY_MISMATCH`, async (t) => {
    const dir = join(tempDir(), 'store')
    const store = await k.connectFsStore(dir, { native })
    await k.assoc(store, 'one', 1)
    const [oneFile] = ksvFiles(dir)
    await k.assoc(store, 'two', 2)
    const twoFile = ksvFiles(dir).find((f) => f !== oneFile)!
    writeFileSync(join(dir, twoFile), readFileSync(join(dir, oneFile!)))
    const err = (await t.throwsAsync(k.get(store, 'two'))) as k.KonserveError
    t.is(err.code, 'ERR_KEY_MISMATCH')
    t.is(err.key, 'two')
  })

  test(`${impl}: foreign files in the directory are ignored and left alone`, async (t) => {
    const dir = join(tempDir(), 'store')
    const store = await k.connectFsStore(dir, { native })
    await k.assoc(store, 'real', 1)
    const foreign = ['.nfs000123', 'notes.txt', 'abc.ksv', `${'f'.repeat(32)}.ksv.bak`, '.hidden']
    for (const f of foreign) writeFileSync(join(dir, f), 'not konserve')
    const listed = await k.keys(store, { onCorrupt: () => t.fail('foreign files are not corrupt keys') })
    t.deepEqual(
      listed.map((m: k.Metadata) => m.key),
      ['real'],
    )
    for (const f of foreign) t.is(readFileSync(join(dir, f), 'utf8'), 'not konserve')
    await k.connectFsStore(dir, { native }) // reopening (recovery sweep) leaves them too
    for (const f of foreign) t.is(readFileSync(join(dir, f), 'utf8'), 'not konserve')
  })

  test(`${impl}: file descriptors stay bounded while listing and writing many keys`, async (t) => {
    const dir = join(tempDir(), 'store')
    // The pure value cache holds a descriptor per cached value by design, within its own bound (pure-held.spec.ts): off here.
    const store = await k.connectFsStore(dir, { native, syncBlob: false, valueCacheBytes: 0 })
    // Only this store's: the file's other tests run at the same time.
    const fds = () => fdsIn(dir)
    const entries = Array.from({ length: 3000 }, (_, i) => [`key-${i}`, { i }] as [string, unknown])
    for (let i = 0; i < entries.length; i += 500) await k.multiAssoc(store, entries.slice(i, i + 500))
    const before = fds()
    const listed = await k.keys(store)
    t.is(listed.length, 3000)
    await Promise.all(entries.slice(0, 200).map(([key]) => k.get(store, key)))
    t.true(fds() <= before + 2, `open fds ${before} -> ${fds()}`)
  })

  test(`${impl}: deleteStore removes the store`, async (t) => {
    const dir = join(tempDir(), 'store')
    const store = await k.connectFsStore(dir, { native })
    await k.assoc(store, 'x', 1)
    await k.deleteStore(dir, { native })
    t.throws(() => readdirSync(dir))
    const again = k.connectFsStore(dir, { native, sync: true })
    t.is(k.get(again, 'x', { sync: true }), undefined)
    k.deleteStore(dir, { native, sync: true })
    t.throws(() => readdirSync(dir))
  })

  test(`${impl}: syncBlob: false stores the same bytes`, async (t) => {
    const a = join(tempDir(), 'a')
    const b = join(tempDir(), 'b')
    const sa = await k.connectFsStore(a, { native })
    const sb = await k.connectFsStore(b, { native, syncBlob: false })
    await k.assoc(sa, 'k', { v: 1 }, { meta: { lastWrite: 0 } })
    await k.assoc(sb, 'k', { v: 1 })
    t.deepEqual(await k.get(sb, 'k'), { v: 1 })
    t.deepEqual(ksvFiles(a), ksvFiles(b))
  })
}
