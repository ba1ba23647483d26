/**
 * No dual-package hazard (issue #12.6): a process that both imports the ESM
 * entry (dist/index.mjs) and requires the CommonJS entry (dist/index.js) gets
 * one library: the same KonserveError and Store classes (instanceof holds
 * across entries) and the same module state (write hooks, locks). Run in a
 * plain Node child process, without the test's TypeScript loader.
 */
import { spawnSync } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import test from 'ava'

const dist = resolve('dist')

const script = `
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'
const require = createRequire(import.meta.url)
const esm = await import(pathToFileURL(${JSON.stringify(join(dist, 'index.mjs'))}).href)
const cjs = require(${JSON.stringify(join(dist, 'index.js'))})
const out = {}
out.sameErrorClass = esm.KonserveError === cjs.KonserveError
out.sameStoreClass = esm.Store === cjs.Store
// A store opened through one entry works with the other's functions.
const db = cjs.newMemStore({ sync: true })
esm.assoc(db, 'a', 1, { sync: true })
out.crossRead = cjs.get(db, 'a', { sync: true })
// An error thrown through the ESM entry is an instance of the CJS entry's class, and back.
try { esm.get({}, 'a', { sync: true }) } catch (e) { out.esmErrIsCjs = e instanceof cjs.KonserveError; out.code = e.code }
try { await cjs.get(db, 'a', { snyc: true }) } catch (e) { out.cjsErrIsEsm = e instanceof esm.KonserveError }
// One hook table: a hook added through one entry sees writes through the other.
let seen = 0
esm.addWriteHook(db, 'probe', () => { seen++ })
cjs.assoc(db, 'b', 2, { sync: true })
out.hookSeen = seen
console.log(JSON.stringify(out))
`

test('the ESM and CommonJS entries share one library in one process', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'konserve-dual-'))
  const file = join(dir, 'probe.mjs')
  writeFileSync(file, script)
  const r = spawnSync(process.execPath, [file], { encoding: 'utf8', env: { ...process.env, KONSERVE_NATIVE: '0', NODE_OPTIONS: '' } })
  t.is(r.status, 0, r.stderr)
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!)
  t.deepEqual(out, {
    sameErrorClass: true,
    sameStoreClass: true,
    crossRead: 1,
    esmErrIsCjs: true,
    code: 'ERR_INVALID_ARGUMENT',
    cjsErrIsEsm: true,
    hookSeen: 1,
  })
})
