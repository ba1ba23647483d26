/**
 * A native and a pure store on one directory in one process: the sweep on
 * open of either leaves the other's live staging files alone. Their names
 * carry this process's pid, so each engine used to take the other's for the
 * leftovers of a dead process of the same pid and remove them, failing the
 * write in flight (found when an import opened a pure backing beside a
 * native store that was streaming a blob).
 */
import test from 'ava'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import * as k from 'konserve'
import { tempDir } from './helpers/api.js'

const stagingFiles = (dir: string) => readdirSync(dir).filter((n) => n.endsWith('.stage'))

for (const [writer, opener] of [
  ['native', 'pure'],
  ['pure', 'native'],
  ['native', 'native'],
  ['pure', 'pure'],
] as const) {
  test(`a ${writer} blob streaming while a ${opener} store opens on the same directory is committed`, async (t) => {
    const dir = join(tempDir(), 'store')
    const s = await k.connectFsStore(dir, { native: writer === 'native' })
    const input = new PassThrough()
    const chunk = Buffer.alloc(1 << 20, 7)
    input.write(chunk)
    const written = k.bassoc(s, 'blob', input)
    while (stagingFiles(dir).length === 0) await new Promise((r) => setTimeout(r, 5))
    // Another store on the directory: its open sweeps staging files.
    const other = await k.connectFsStore(dir, { native: opener === 'native' })
    t.is(stagingFiles(dir).length, 1, "the live staging file is still there after the other's open")
    input.end(chunk)
    await written
    t.deepEqual(await k.readBlob(other, 'blob'), Buffer.concat([chunk, chunk]))
    t.deepEqual(stagingFiles(dir), [])
    await k.close(other)
    await k.close(s)
  })
}

test("a dead process's staging file with this process's pid is still swept by both engines", async (t) => {
  const { writeFileSync } = await import('node:fs')
  for (const native of [true, false]) {
    const dir = join(tempDir(), 'store')
    await k.close(await k.connectFsStore(dir, { native }))
    const leftover = `.${'ab'.repeat(16)}.${process.pid}.999999.stage`
    writeFileSync(join(dir, leftover), 'left by a process that had our pid')
    await k.close(await k.connectFsStore(dir, { native }))
    t.deepEqual(stagingFiles(dir), [], native ? 'native' : 'pure')
  }
})
