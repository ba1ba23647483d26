/**
 * Files that are not what their names say (issue #23 items 3 and 4), for the
 * native core and the pure TypeScript store:
 * - a FIFO or a directory named like a key file is ERR_NOT_A_FILE naming the
 *   file on every read path (get, getMeta, keys, blob read, log read, GC
 *   sweep), never a wait (store files are opened O_NONBLOCK and fstat'ed);
 * - a key file that is a symbolic link to a file elsewhere is never read
 *   (O_NOFOLLOW: ERR_NOT_A_FILE), listing reports it and goes on;
 * - a `.konserve.lock` link never makes the store create its target;
 * - a store path that is a link to a directory is that directory: deleteStore
 *   deletes its store files and leaves the link and the directory in place.
 */
import test from 'ava'
import { spawnSync } from 'node:child_process'
import { existsSync, lstatSync, mkdirSync, readdirSync, realpathSync, rmSync, symlinkSync, unlinkSync } from 'node:fs'
import { join } from 'node:path'
import * as k from 'konserve'
import { tempDir } from './helpers/api.js'

const ksv = (dir: string) => readdirSync(dir).filter((n) => n.endsWith('.ksv'))

/** The key file `key` has in `dir` (written once, then removed). */
async function keyFileOf(dir: string, native: boolean, key: string): Promise<string> {
  const s = await k.connectFsStore(dir, { native })
  const before = new Set(ksv(dir))
  await k.assoc(s, key, 1)
  const name = ksv(dir).find((n) => !before.has(n))!
  const file = join(realpathSync(dir), name)
  unlinkSync(file)
  return file
}

for (const impl of ['native', 'pure'] as const) {
  const native = impl === 'native'

  for (const kind of ['FIFO', 'directory'] as const) {
    test(`${impl}: a ${kind} named like a key file is ERR_NOT_A_FILE on every read path, never a wait`, async (t) => {
      t.timeout(30_000)
      const dir = join(tempDir(), 'store')
      const file = await keyFileOf(dir, native, 'odd')
      if (kind === 'FIFO') t.is(spawnSync('mkfifo', [file]).status, 0)
      else mkdirSync(file)
      const s = await k.connectFsStore(dir, { native })
      await k.assoc(s, 'good', 'v')
      const expectOdd = async (what: string, f: () => unknown) => {
        let err: unknown
        try {
          await f()
        } catch (e) {
          err = e
        }
        t.true(err instanceof k.KonserveError, `${what}: ${String(err)}`)
        t.is((err as k.KonserveError).code, 'ERR_NOT_A_FILE', `${what}: ${(err as Error).message}`)
        t.is((err as k.KonserveError).file, file, what)
      }
      for (const sync of [true, false]) {
        const o = sync ? { sync: true as const } : {}
        await expectOdd(`get (sync: ${sync})`, () => k.get(s, 'odd', o))
        await expectOdd(`getMeta (sync: ${sync})`, () => k.getMeta(s, 'odd', o))
        await expectOdd(`bget (sync: ${sync})`, () => k.bget(s, 'odd', () => 1, o))
        await expectOdd(`log (sync: ${sync})`, () => k.log(s, 'odd', o))
        await expectOdd(`append (sync: ${sync})`, () => k.append(s, 'odd', 1, o))
        const corrupt: k.KonserveError[] = []
        const listed = await k.keys(s, { ...o, onCorrupt: (e: k.KonserveError) => corrupt.push(e) })
        t.deepEqual(listed.map((m) => m.key), ['good'])
        t.deepEqual(corrupt.map((e) => [e.code, e.file]), [['ERR_NOT_A_FILE', file]])
        const swept: k.KonserveError[] = []
        t.deepEqual(await k.sweep(s, ['good'], new Date(Date.now() + 3_600_000), { ...o, onCorrupt: (e) => swept.push(e) }), [])
        t.deepEqual(swept.map((e) => e.code), ['ERR_NOT_A_FILE'])
      }
      t.true(existsSync(file), 'nothing removed it')
    })
  }

  test(`${impl}: a key file that is a symbolic link is never followed out of the store`, async (t) => {
    const root = tempDir()
    const elsewhere = join(root, 'elsewhere')
    const other = await k.connectFsStore(elsewhere, { native })
    await k.assoc(other, 'k', 'secret')
    const [target] = ksv(elsewhere)
    const dir = join(root, 'store')
    mkdirSync(dir)
    symlinkSync(join(elsewhere, target!), join(dir, target!))
    // The lock file a link to a file that does not exist yet.
    const lockTarget = join(root, 'created-through-the-lock-link')
    symlinkSync(lockTarget, join(dir, '.konserve.lock'))
    let s: k.Store
    try {
      s = await k.connectFsStore(dir, { native })
    } catch (err) {
      // Refusing the planted lock link at open is as good as never following it.
      t.is((err as k.KonserveError).code, 'ERR_NOT_A_FILE')
      t.false(existsSync(lockTarget))
      unlinkSync(join(dir, '.konserve.lock'))
      s = await k.connectFsStore(dir, { native })
    }
    const err = await t.throwsAsync(k.get(s, 'k'))
    t.is((err as k.KonserveError).code, 'ERR_NOT_A_FILE', err?.message)
    t.is((err as k.KonserveError).file, join(realpathSync(dir), target!))
    t.is((t.throws(() => k.getMeta(s, 'k', { sync: true })) as k.KonserveError).code, 'ERR_NOT_A_FILE')
    const corrupt: k.KonserveError[] = []
    t.deepEqual(await k.keys(s, { onCorrupt: (e: k.KonserveError) => corrupt.push(e) }), [])
    t.is(corrupt.length, 1)
    await k.updateIn(s, ['n'], (x: number | undefined) => (x ?? 0) + 1)
    t.false(existsSync(lockTarget), 'the lock link was followed')
    t.is(await k.get(other, 'k'), 'secret', 'the file elsewhere is untouched')
  })

  test(`${impl}: deleteStore through a symbolic link deletes the store files there, keeps the link and the directory, and the path opens again`, async (t) => {
    const root = tempDir()
    const real = join(root, 'real')
    const link = join(root, 'link')
    mkdirSync(real)
    symlinkSync(real, link)
    const s = await k.connectFsStore(link, { native })
    await k.assoc(s, 'a', 1)
    await k.multiAssoc(s, { b: 2, c: 3 })
    for (const sync of [true, false]) {
      if (sync) k.deleteStore(link, { sync: true, native })
      else await k.deleteStore(link, { native })
      t.true(lstatSync(link).isSymbolicLink())
      t.deepEqual(readdirSync(real), [])
      const again = await k.connectFsStore(link, { native })
      t.deepEqual(await k.keys(again), [])
      await k.assoc(again, 'a', 1)
    }
    // A plain directory path still goes away whole.
    rmSync(link)
    const plain = join(root, 'plain')
    await k.assoc(await k.connectFsStore(plain, { native }), 'x', 1)
    await k.deleteStore(plain, { native })
    t.false(existsSync(plain))
  })
}
