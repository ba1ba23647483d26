/**
 * Choosing the implementation: with no loadable binary (an unsupported
 * platform) konserve falls back to pure TypeScript with one warning and never
 * crashes; KONSERVE_NATIVE=0 and { native: false } choose pure TypeScript on
 * purpose; { native: true } insists on the binary.
 */
import test from 'ava'
import { execFile } from 'node:child_process'
import { cpSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { tempDir } from './helpers/api.js'

const run = promisify(execFile)
const root = new URL('../', import.meta.url).pathname

/** The built package as a platform without a prebuilt binary sees it: dist/ and package.json, no index.js or .node. */
function packageWithoutBinary(): string {
  const pkg = join(tempDir('konserve-nobinary-'), 'konserve')
  mkdirSync(pkg)
  cpSync(join(root, 'dist'), join(pkg, 'dist'), { recursive: true })
  cpSync(join(root, 'package.json'), join(pkg, 'package.json'))
  symlinkSync(join(root, 'node_modules'), join(pkg, 'node_modules'))
  return pkg
}

const script = `
const k = require(process.argv[2])
const dir = process.argv[3]
;(async () => {
  const s = await k.connectFsStore(dir)
  const t = k.connectFsStore(dir, { sync: true })
  await k.assoc(s, 'x', { ok: true })
  let insist
  try { k.connectFsStore(dir, { native: true, sync: true }); insist = 'opened' } catch (e) { insist = e.code }
  console.log(JSON.stringify({ impl: [k.implementation(s), k.implementation(t), k.implementation()], value: k.get(t, 'x', { sync: true }), insist }))
})().catch((e) => { console.error('FAILED', e); process.exit(1) })
`

async function runScript(pkg: string, env: NodeJS.ProcessEnv = {}) {
  const dir = join(tempDir(), 'store')
  const file = join(tempDir(), 'probe.cjs')
  writeFileSync(file, script)
  const { stdout, stderr } = await run(process.execPath, [file, pkg, dir], { env: { ...process.env, ...env } })
  return { out: JSON.parse(stdout), stderr, dir }
}

test('no loadable binary: pure TypeScript, one warning, the same files', async (t) => {
  const { out, stderr, dir } = await runScript(packageWithoutBinary())
  t.deepEqual(out.impl, ['pure', 'pure', 'pure'])
  t.deepEqual(out.value, { ok: true })
  t.is(out.insist, 'ERR_NATIVE_UNAVAILABLE', '{ native: true } refuses to fall back')
  t.is(stderr.match(/\[KONSERVE_PURE_FALLBACK\]/g)?.length, 1, `one warning, got: ${stderr}`)
  // The native core reads what the fallback wrote.
  const k = await import('konserve')
  t.deepEqual(await k.get(await k.connectFsStore(dir, { native: true }), 'x'), { ok: true })
})

test('KONSERVE_NATIVE=0 chooses pure TypeScript without a warning', async (t) => {
  const { out, stderr } = await runScript(root, { KONSERVE_NATIVE: '0' })
  t.deepEqual(out.impl, ['pure', 'pure', 'pure'])
  t.is(out.insist, 'opened', '{ native: true } still opens the native store')
  t.notRegex(stderr, /KONSERVE_PURE_FALLBACK/)
})

test('by default the native core is used', async (t) => {
  const { out, stderr } = await runScript(root)
  t.deepEqual(out.impl, ['native', 'native', 'native'])
  t.notRegex(stderr, /KONSERVE_PURE_FALLBACK/)
})
