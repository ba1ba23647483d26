/**
 * The facade over a native store on its write-ahead log (docs/WAL.md §9
 * item 4; `wal: true`, experimental): small writes are records of
 * `.konserve.wal`, not key files, and every read, listing and write of the
 * facade sees them, in this process, in a second store on the same
 * directory, and in a child process. The pure engine refuses `wal: true`
 * and still refuses a store with the log (wal-marker.spec.ts).
 */
import test from 'ava'
import { existsSync, readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import * as k from 'konserve'
import { child, dist } from './helpers/child.js'
import { tempDir } from './helpers/api.js'

const keyFiles = (dir: string) => readdirSync(dir).filter((n) => n.endsWith('.ksv'))

test('native, wal: true: assoc, get, updateIn, dissoc, keys and bassoc through the log', async (t) => {
  const dir = tempDir()
  const store = await k.connectFsStore(dir, { native: true, wal: true })
  t.true(existsSync(join(dir, '.konserve.wal')))
  t.is(readFileSync(join(dir, '.konserve.keycheck'))[8], 2, 'the version-2 marker')
  await k.assoc(store, 'a', { n: 1 })
  await k.assoc(store, 'b', 'bee')
  t.deepEqual(keyFiles(dir), [], 'small values are logged, not key files')
  t.deepEqual(await k.get(store, 'a'), { n: 1 })
  t.deepEqual(k.get(store, 'b', { sync: true }), 'bee')
  t.true(await k.exists(store, 'a'))
  t.is((await k.getMeta(store, 'a'))!.revision, 1)
  await k.updateIn(store, ['a', 'n'], (n: number) => n + 1)
  t.deepEqual(await k.get(store, 'a'), { n: 2 })
  t.is((await k.getMeta(store, 'a'))!.revision, 2)
  await t.throwsAsync(k.assoc(store, 'a', 0, { expectedRevision: 1 }), { code: 'ERR_REVISION_MISMATCH' } as never)
  t.deepEqual((await k.keys(store)).map((m) => m.key).sort(), ['a', 'b'])
  await k.dissoc(store, 'b')
  t.is(await k.get(store, 'b'), undefined)
  t.false(await k.exists(store, 'b'))
  t.deepEqual((await k.keys(store)).map((m) => m.key), ['a'])
  // A blob over a logged key goes to its key file, and is read back.
  await k.bassoc(store, 'a', Buffer.from('blob bytes'))
  t.is(keyFiles(dir).length, 1)
  t.is(Buffer.from(k.bget(store, 'a', ({ blob }) => blob!, { sync: true })!).toString(), 'blob bytes')
  // A large value: its key file too.
  const big = 'x'.repeat(40_000) + Math.random()
  await k.assoc(store, 'big', big)
  t.is(await k.get(store, 'big'), big)
  t.is(keyFiles(dir).length, 2)
  await k.close(store)
  // Reopened without the option: the marker decides.
  const again = await k.connectFsStore(dir, { native: true })
  t.is(await k.get(again, 'big'), big)
  t.is(await k.get(again, 'b'), undefined)
  await k.close(again)
  await k.deleteStore(dir)
  t.false(existsSync(dir))
})

test('native, wal: true: two stores on one directory see each other\'s logged writes and deletes', async (t) => {
  const dir = tempDir()
  const a = await k.connectFsStore(dir, { native: true, wal: true })
  const b = await k.connectFsStore(dir, { native: true })
  await k.assoc(a, 'shared', 1)
  t.is(await k.get(b, 'shared'), 1)
  t.is(k.get(b, 'shared', { sync: true }), 1)
  await k.updateIn(b, ['shared'], (n: number) => n + 1)
  t.is(await k.get(a, 'shared'), 2)
  t.is((await k.getMeta(a, 'shared'))!.revision, 2)
  await k.dissoc(a, 'shared')
  t.is(await k.get(b, 'shared'), undefined)
  t.deepEqual(await k.keys(b), [])
  await k.close(a)
  await k.close(b)
})

test('native, wal: true: a child process reads a value this process wrote through the log, and writes one back', async (t) => {
  const dir = tempDir()
  const store = await k.connectFsStore(dir, { native: true, wal: true })
  await k.assoc(store, 'from-parent', { hello: 'child' })
  t.deepEqual(keyFiles(dir), [])
  const c = child(
    `
    const k = await import(${dist('index.mjs')})
    const store = await k.connectFsStore(process.argv[2], { native: true })
    console.log('read ' + JSON.stringify(await k.get(store, 'from-parent')))
    await k.assoc(store, 'from-child', 42)
    await k.close(store)
    console.log('done')
  `,
    [dir],
  )
  await c.saw('read {"hello":"child"}')
  await c.saw('done')
  t.is(await c.exit, 0)
  t.is(await k.get(store, 'from-child'), 42)
  t.deepEqual(keyFiles(dir), [], 'the child logged its write too')
  await k.close(store)
})

test('native, wal: false switches the store back: its values in key files, no log, no marker', async (t) => {
  const dir = tempDir()
  const store = await k.connectFsStore(dir, { native: true, wal: true })
  await k.assoc(store, 'kept', 'v')
  await k.assoc(store, 'gone', 'v')
  await k.dissoc(store, 'gone')
  await k.close(store)
  const back = await k.connectFsStore(dir, { native: true, wal: false })
  t.false(existsSync(join(dir, '.konserve.wal')))
  t.false(existsSync(join(dir, '.konserve.keycheck')))
  t.is(keyFiles(dir).length, 1)
  t.is(await k.get(back, 'kept'), 'v')
  await k.close(back)
  // Now the pure engine opens it again.
  const pure = await k.connectFsStore(dir, { native: false })
  t.is(await k.get(pure, 'kept'), 'v')
  t.is(await k.get(pure, 'gone'), undefined)
  await k.close(pure)
})

test('pure: wal: true is refused (the pure engine has no log yet)', async (t) => {
  const dir = tempDir()
  await t.throwsAsync(k.connectFsStore(dir, { native: false, wal: true }), { code: 'ERR_NOT_SUPPORTED' } as never)
})

test('rekey refuses a store on its log (ERR_UNSUPPORTED_VERSION, nothing written) until it is switched back', async (t) => {
  const dir = tempDir()
  const A = { type: 'aes', key: 'key A' } as const
  const store = await k.connectFsStore(dir, { native: true, wal: true })
  await k.assoc(store, 'k', 'v')
  await k.close(store)
  const before = readdirSync(dir).sort()
  await t.throwsAsync(k.rekey(dir, { from: null, to: A }), { code: 'ERR_UNSUPPORTED_VERSION' } as never)
  t.deepEqual(readdirSync(dir).sort(), before)
  await k.close(await k.connectFsStore(dir, { native: true, wal: false }))
  t.deepEqual(await k.rekey(dir, { from: null, to: A }), { rewritten: 1, skipped: 0 })
  const keyed = await k.connectFsStore(dir, { native: true, encryptor: A })
  t.is(await k.get(keyed, 'k'), 'v')
  await k.close(keyed)
})
