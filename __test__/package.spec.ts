/**
 * The package as npm ships it: what the main tarball holds, the per-platform
 * packages behind `optionalDependencies`, no install script, how the generated
 * loader picks glibc or musl, and the one warning on a platform with no binary.
 * The full release rehearsal (build against glibc 2.17, install the tarballs in
 * a project with no cargo) is `npm run pack:local` (scripts/pack-local.mjs), in CI.
 */
import test from 'ava'
import { execFile } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, symlinkSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import vm from 'node:vm'
import { parseTriple } from '@napi-rs/cli'
import { tempDir } from './helpers/api.js'

const run = promisify(execFile)
const root = new URL('../', import.meta.url).pathname
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))

test('the main tarball holds LICENSE, README, the loader and the ESM and CJS entries with types, nothing else', async (t) => {
  // --ignore-scripts: the test runs on the build `npm test` just made; `npm pack` itself builds in prepack.
  const { stdout } = await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root })
  const packed: string[] = JSON.parse(stdout)[0].files.map((f: { path: string }) => f.path).sort()
  // The browser entry's chunks (shared code; LZ4/AES and cbor-x, loaded on demand), named by their content's hash.
  const chunks = packed.filter((f) => f.startsWith('dist/browser/'))
  t.deepEqual(chunks.filter((f) => !/^dist\/browser\/(chunk|segments|serializers-cbor)-[A-Z0-9]+\.mjs$/.test(f)), [])
  t.true(chunks.some((f) => f.startsWith('dist/browser/segments-')) && chunks.some((f) => f.startsWith('dist/browser/serializers-cbor-')), chunks.join(' '))
  const files = packed.filter((f) => !chunks.includes(f))
  t.deepEqual(files, [
    'LICENSE',
    'README.md',
    // The browser entry (the `browser` condition of "."): ESM only.
    'dist/browser.d.mts',
    'dist/browser.mjs',
    'dist/cli.js',
    'dist/index.d.mts',
    'dist/index.d.ts',
    'dist/index.js',
    'dist/index.mjs',
    // The subpath entries (konserve/keyv, konserve/postgres, konserve/redis, konserve/s3, konserve/unstorage), in both formats with types.
    ...['keyv', 'postgres', 'redis', 's3', 'unstorage'].flatMap((e) => [`dist/${e}.d.mts`, `dist/${e}.d.ts`, `dist/${e}.js`, `dist/${e}.mjs`]),
    'index.js',
    'package.json',
  ])
  // What the entries in package.json point at is in the tarball.
  const conditions = Object.entries(pkg.exports as Record<string, unknown>).filter(([p]) => p !== './package.json').flatMap(([, c]) => Object.values(c as object))
  const entries = [pkg.main, pkg.module, pkg.types, pkg.bin.konserve, ...conditions.flatMap((c) => Object.values(c as object))]
  for (const e of entries) t.true(files.includes(e.replace(/^\.\//, '')), `${e} is packed`)
  t.regex(readFileSync(join(root, 'LICENSE'), 'utf8'), /^Eclipse Public License - v 1\.0/)
  t.is(pkg.license, 'EPL-1.0')
  t.truthy(pkg.repository?.url)
})

test('the packed package.json names a complete konserve-<platform> package for every napi target, at the same version', async (t) => {
  const { withOptionalDependencies, withoutOptionalDependencies } = await import('../scripts/pack-manifest.mjs')
  // Committed without them (npm ci needs a lockfile entry for each, and they are not on npm yet);
  // prepack adds them, postpack takes them out again, byte for byte.
  t.is(pkg.optionalDependencies, undefined)
  const packed = await withOptionalDependencies(pkg)
  t.is(`${JSON.stringify(withoutOptionalDependencies(packed), null, 2)}\n`, readFileSync(join(root, 'package.json'), 'utf8'))
  t.deepEqual(Object.keys(packed).indexOf('optionalDependencies'), Object.keys(packed).indexOf('dependencies') + 1)
  t.regex(pkg.scripts.prepack, /pack-manifest\.mjs add/)
  t.regex(pkg.scripts.postpack, /pack-manifest\.mjs restore/)
  const expected: Record<string, string> = {}
  for (const triple of pkg.napi.targets as string[]) {
    const { platformArchABI, platform, arch, abi } = parseTriple(triple)
    const dir = join(root, 'npm', platformArchABI)
    const p = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'))
    const node = `${pkg.napi.binaryName}.${platformArchABI}.node`
    t.is(p.name, `${pkg.name}-${platformArchABI}`)
    t.is(p.version, pkg.version, `${p.name} has the main package's version`)
    t.deepEqual(p.os, [platform], `${p.name} os`)
    t.deepEqual(p.cpu, [arch], `${p.name} cpu`)
    if (platform === 'linux') t.deepEqual(p.libc, [abi === 'musl' ? 'musl' : 'glibc'], `${p.name} libc`)
    else t.is(p.libc, undefined)
    t.is(p.main, node)
    t.deepEqual(p.files, [node])
    t.is(p.license, pkg.license)
    t.is(p.repository?.url, pkg.repository.url, 'provenance needs the repository')
    t.is(p.engines?.node, pkg.engines.node)
    t.true(existsSync(join(dir, 'README.md')))
    t.is(p.scripts, undefined)
    expected[p.name] = pkg.version
  }
  t.deepEqual(packed.optionalDependencies, expected)
  t.deepEqual(readdirSync(join(root, 'npm')).sort(), (pkg.napi.targets as string[]).map((tr) => parseTriple(tr).platformArchABI).sort(), 'no stale npm/ folder')
})

test('postpack keeps the optionalDependencies under npm publish, which re-reads package.json for the registry', async (t) => {
  const dir = tempDir('konserve-manifest-')
  mkdirSync(join(dir, 'scripts'))
  cpSync(join(root, 'scripts/pack-manifest.mjs'), join(dir, 'scripts/pack-manifest.mjs'))
  cpSync(join(root, 'package.json'), join(dir, 'package.json'))
  symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'))
  const script = join(dir, 'scripts/pack-manifest.mjs')
  const read = () => JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'))
  await run(process.execPath, [script, 'add'])
  t.is(Object.keys(read().optionalDependencies).length, pkg.napi.targets.length)
  await run(process.execPath, [script, 'restore'], { env: { ...process.env, npm_command: 'publish' } })
  t.truthy(read().optionalDependencies, 'kept for npm publish')
  await run(process.execPath, [script, 'restore'], { env: { ...process.env, npm_command: 'pack' } })
  t.is(readFileSync(join(dir, 'package.json'), 'utf8'), readFileSync(join(root, 'package.json'), 'utf8'), 'restored after npm pack')
})

test("no script that a consumer's npm would run or flag: the build runs in prepack", (t) => {
  for (const s of ['preinstall', 'install', 'postinstall', 'prepare']) t.is(pkg.scripts[s], undefined, `no ${s} script`)
  t.false(existsSync(join(root, 'binding.gyp')), 'no binding.gyp (npm would run node-gyp)')
  t.regex(pkg.scripts.prepack, /tsup/)
  t.is(pkg.scripts['pack:local'], 'node scripts/pack-local.mjs')
})

test('Cargo.toml declares the rust-version that napi 3 needs, and CI checks it', (t) => {
  const ws = readFileSync(join(root, 'Cargo.toml'), 'utf8')
  const want = /^rust-version = "(\d+\.\d+)"$/m.exec(ws)?.[1]
  t.truthy(want, 'workspace.package.rust-version')
  const [maj, min] = want!.split('.').map(Number)
  t.true(maj! > 1 || min! >= 88, `rust-version ${want} >= 1.88`)
  t.regex(ws, /^rust-version\.workspace = true$/m, 'the binding crate inherits it')
  t.regex(readFileSync(join(root, 'crates/core/Cargo.toml'), 'utf8'), /^rust-version\.workspace = true$/m, 'the core crate inherits it')
  const ci = readFileSync(join(root, '.ci/run'), 'utf8')
  t.notRegex(ci, /apt-get install[^\n]*\brustc\b/, "no fallback to Debian's rustc")
  t.regex(ci, /rust-version/)
})

/**
 * Runs the generated loader (index.js) with a fake `require` and `process`, as on
 * a Linux x64 machine whose libc the options describe; returns what it required.
 */
function loadAs(opts: { ldd?: string; report?: object }) {
  const tried: string[] = []
  const binding = { loaded: true }
  const fakeRequire = (id: string) => {
    if (id === 'fs') {
      return {
        readFileSync: (file: string) => {
          if (file === '/usr/bin/ldd' && opts.ldd !== undefined) return opts.ldd
          throw Object.assign(new Error(`ENOENT: ${file}`), { code: 'ENOENT' })
        },
      }
    }
    if (id === 'child_process') return { execSync: () => 'ldd (GNU libc) 2.36' }
    tried.push(id)
    if (id.endsWith('/package.json')) return { version: pkg.version }
    if (id === 'konserve-linux-x64-gnu' || id === 'konserve-linux-x64-musl') return binding
    throw Object.assign(new Error(`Cannot find module '${id}'`), { code: 'MODULE_NOT_FOUND' })
  }
  const fakeProcess = { platform: 'linux', arch: 'x64', env: {}, config: { variables: {} }, report: { getReport: () => opts.report ?? null } }
  const module = { exports: {} as Record<string, unknown> }
  vm.runInNewContext(`(function (require, module, exports, process) {${readFileSync(join(root, 'index.js'), 'utf8')}\n})`)(
    Object.assign(fakeRequire, { resolve: fakeRequire }),
    module,
    module.exports,
    fakeProcess,
  )
  return { tried: tried.filter((id) => !id.endsWith('/package.json')), loaded: module.exports === binding }
}

test('the loader picks the glibc or the musl binary by the libc it finds', (t) => {
  const glibcLdd = '#!/bin/bash\n# ldd from the GNU C Library\nTEXTDOMAIN=libc\n'
  const muslLdd = '#!/bin/sh\nexec /lib/ld-musl-x86_64.so.1 --list "$@"\n'
  const gnu = { tried: ['./konserve.linux-x64-gnu.node', 'konserve-linux-x64-gnu'], loaded: true }
  const musl = { tried: ['./konserve.linux-x64-musl.node', 'konserve-linux-x64-musl'], loaded: true }
  t.deepEqual(loadAs({ ldd: glibcLdd }), gnu)
  t.deepEqual(loadAs({ ldd: muslLdd }), musl)
  // No /usr/bin/ldd (a slim image): Node's process report tells.
  t.deepEqual(loadAs({ report: { header: { glibcVersionRuntime: '2.36' }, sharedObjects: [] } }), gnu)
  t.deepEqual(loadAs({ report: { header: {}, sharedObjects: ['/lib/ld-musl-x86_64.so.1'] } }), musl)
})

/** The package as a platform without its binary sees it: the tarball's files, no .node, no konserve-<platform>. */
function packageWithoutBinary(): string {
  const dir = join(tempDir('konserve-alone-'), 'node_modules', 'konserve')
  mkdirSync(dir, { recursive: true })
  for (const f of ['dist', 'index.js', 'package.json']) cpSync(join(root, f), join(dir, f), { recursive: true })
  symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'))
  return dir
}

test('with no binary: one warning per process in our words, naming what it tried and how to silence it', async (t) => {
  const dir = packageWithoutBinary()
  const script = `
    const k = require(process.argv[1])
    const store = process.argv[2]
    ;(async () => {
      const esm = await import(process.argv[1] + '/dist/index.mjs')
      const a = k.implementation(), b = esm.implementation()
      const s = k.connectFsStore(store, { sync: true }), e = await esm.connectFsStore(store)
      let insist
      try { k.connectFsStore(store, { native: true, sync: true }) } catch (err) { insist = err.message }
      console.log(JSON.stringify({ impl: [a, b, k.implementation(s), esm.implementation(e)], insist }))
    })().catch((err) => { console.error('FAILED', err); process.exit(1) })`
  const store = join(tempDir(), 'store')
  const env = { ...process.env }
  delete env.KONSERVE_NATIVE
  const { stdout, stderr } = await run(process.execPath, ['-e', script, dir, store], { env })
  const out = JSON.parse(stdout)
  t.deepEqual(out.impl, ['pure', 'pure', 'pure', 'pure'])
  const warnings = stderr.split('\n').filter((l) => l.includes('KONSERVE_PURE_FALLBACK'))
  t.is(warnings.length, 1, `one warning though both the CJS and the ESM build loaded:\n${stderr}`)
  const w = warnings[0]!
  const platform = `${process.platform}-${process.arch}`
  t.true(w.includes(`no native core for ${platform}`), w)
  if (platform === 'linux-x64') t.regex(w, /tried konserve\.linux-x64-(gnu|musl)\.node, konserve-linux-x64-(gnu|musl)\b/)
  t.regex(w, /Set KONSERVE_NATIVE=0 to choose it and silence this warning\.$/)
  t.notRegex(w, /package-lock|node_modules|npm\/cli|Cannot find native binding/, 'none of napi-rs generic advice')
  t.true(w.length < 400, `short: ${w.length} characters`)
  t.regex(out.insist, /^the native core could not be loaded: tried /, '{ native: true } says the same in its error')

  const quiet = await run(process.execPath, ['-e', script, dir, join(tempDir(), 'store2')], { env: { ...env, KONSERVE_NATIVE: '0' } })
  t.notRegex(quiet.stderr, /KONSERVE_PURE_FALLBACK/)
})

test('the README install section names what a user runs', (t) => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8')
  t.regex(readme, /npm install konserve/)
  t.regex(readme, /npm run pack:local/)
})

test('the release workflow builds every napi target, with the rehearsal pins, and publishes with provenance', (t) => {
  const wf = readFileSync(join(root, '.github/workflows/release.yml'), 'utf8')
  for (const triple of pkg.napi.targets as string[]) t.regex(wf, new RegExp(`target: ${triple},`), `a build job for ${triple}`)
  const pins = /const TOOLS = \[([^\]]*)\]/.exec(readFileSync(join(root, 'scripts/pack-local.mjs'), 'utf8'))![1]!.match(/'([^']+)'/g)!
  for (const pin of pins) t.true(wf.includes(pin.slice(1, -1)), `the workflow installs ${pin}`)
  t.regex(wf, /npm publish --provenance/)
  t.regex(wf, /id-token: write/)
  t.regex(wf, /npm run pack:local/)
})
