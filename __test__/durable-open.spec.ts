/**
 * Opening a store in a new directory makes the directory durable: every level
 * it creates is fsynced into its parent (docs/FORMAT.md §5), whichever
 * implementation and form opens it. Watched with strace (required, as in
 * faults.spec.ts).
 */
import test from 'ava'
import { execFile } from 'node:child_process'
import { mkdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { tempDir } from './helpers/api.js'

const run = promisify(execFile)
const dist = new URL('../dist/index.mjs', import.meta.url).pathname

for (const [name, call] of [
  ['native sync', `k.connectFsStore(dir, { sync: true, native: true })`],
  ['native async', `await k.connectFsStore(dir, { native: true })`],
  ['pure sync', `k.connectFsStore(dir, { sync: true, native: false })`],
  ['pure async', `await k.connectFsStore(dir, { native: false })`],
] as const) {
  test(`${name}: each new directory level is fsynced into its parent`, async (t) => {
    const root = join(tempDir(), 'root')
    mkdirSync(root)
    const dir = join(root, 'a', 'b', 'store')
    const log = join(tempDir(), 'strace.log')
    const script = `import * as k from ${JSON.stringify(dist)}; const dir = ${JSON.stringify(dir)}; ${call}`
    await run('strace', ['-f', '-y', '-e', 'trace=fsync', '-o', log, process.execPath, '--input-type=module', '-e', script])
    const synced = [...readFileSync(log, 'utf8').matchAll(/fsync\(\d+<([^>]+)>\) = 0/g)].map((m) => m[1])
    for (const parent of [root, join(root, 'a'), join(root, 'a', 'b')]) t.true(synced.includes(parent), `${parent} fsynced; saw ${synced}`)
  })
}
