/**
 * A store directory removed while a key is locked (another process's
 * deleteStore, or `rm -rf`): the write fails with ERR_STORE_DELETED naming the
 * directory. The lock's release used to fail with ERR_LOCK ("the lock file is
 * gone or no longer ours"), which replaced the write's own error and pointed
 * at a takeover that never happened.
 */
import test from 'ava'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import * as k from 'konserve'
import { tempDir } from './helpers/api.js'

for (const native of [true, false]) {
  const engine = native ? 'native' : 'pure'

  test(`${engine}: an updateIn whose directory is removed under it fails with ERR_STORE_DELETED`, async (t) => {
    const dir = join(tempDir(), 'store')
    const s = await k.connectFsStore(dir, { native })
    await k.assoc(s, 'n', 1)
    const err = await t.throwsAsync(
      k.updateIn(s, ['n'], (n: number) => {
        rmSync(dir, { recursive: true, force: true })
        return n + 1
      }),
    )
    t.is((err as k.KonserveError).code, 'ERR_STORE_DELETED', err?.message)
    t.is((err as k.KonserveError).file, dir)
    t.regex(err!.message, /deleted while a key was locked/)
  })

  test(`${engine}: an import whose directory is removed in the middle fails with ERR_STORE_DELETED`, async (t) => {
    const src = await k.connectFsStore(join(tempDir(), 'src'), { native })
    for (let i = 0; i < 20; i++) await k.assoc(src, `k${i}`, 'v'.repeat(1000))
    await k.bassoc(src, 'blob', Buffer.alloc(4 << 20, 3))
    const chunks: Buffer[] = []
    for await (const c of k.exportStore(src)) chunks.push(c as Buffer)
    const archive = Buffer.concat(chunks)
    const dir = join(tempDir(), 'store')
    const dst = await k.connectFsStore(dir, { native })
    // The blob is the last key: removed while it streams in, holding its lock.
    const cut = archive.length - (2 << 20)
    async function* pieces() {
      for (let at = 0; at < archive.length; at += 65536) {
        if (at >= cut && at < cut + 65536) rmSync(dir, { recursive: true, force: true })
        yield archive.subarray(at, at + 65536)
      }
    }
    const err = await t.throwsAsync(k.importStore(dst, pieces()))
    t.is((err as k.KonserveError).code, 'ERR_STORE_DELETED', err?.message)
    t.is((err as k.KonserveError).file, dir)
    await k.close(src)
  })
}
