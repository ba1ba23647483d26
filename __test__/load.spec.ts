/**
 * Load across processes: 4 processes x 2000 updateIn over 10 shared keys,
 * sync and async calls mixed, 4 async loops per process. Every increment
 * must count: each key ends at exactly 800.
 */
import test from 'ava'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import * as k from 'konserve'
import { tempDir } from './helpers/api.js'

const run = promisify(execFile)
const fixture = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, 'fixtures', 'multi-incrementer.mjs')

for (const impl of ['native', 'pure'] as const) {
  test(`${impl}: 4 processes x 2000 updateIn over 10 keys, sync and async mixed, lose nothing`, async (t) => {
    const dir = join(tempDir(), 'store')
    const native = impl === 'native'
    await k.connectFsStore(dir, { native })
    const started = Date.now()
    await Promise.all([1, 2, 3, 4].map(() => run(process.execPath, [fixture, dir, '2000', impl])))
    t.log(`${impl}: 8000 durable updateIn in ${Date.now() - started} ms`)
    const store = await k.connectFsStore(dir, { native })
    for (let i = 0; i < 10; i++) t.is(await k.get(store, `k${i}`), 800, `key k${i}`)
  })
}
