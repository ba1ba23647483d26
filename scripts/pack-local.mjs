#!/usr/bin/env node
// Release rehearsal (`npm run pack:local`): what the release workflow does for
// one target, on this machine, and then what a user gets from it.
//
// 1. Builds the linux-x64-gnu binary the way the release does: `napi build -x`
//    (cargo-zigbuild and zig, pinned, from PyPI into target/pack-tools) against
//    glibc 2.17, and checks that napi generated the loader we commit.
// 2. Packs the main package (its `prepack` builds the TypeScript and adds the
//    optionalDependencies, scripts/pack-manifest.mjs) and the
//    konserve-linux-x64-gnu package into pack/.
// 3. In a fresh project whose PATH has no cargo, installs both and checks:
//    implementation() is 'native'; `npx konserve put`/`get` work; no install
//    script of ours exists; the installed .node needs nothing newer than glibc 2.17.
// 4. In another fresh project, installs the main tarball alone (as on a platform
//    with no binary): 'pure', with one warning per process that says how to silence it.
//
// Runs with CI=true, no stdin, as root. Exits non-zero on the first failed check.
import { execFileSync, spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const TRIPLE = 'x86_64-unknown-linux-gnu'
const PLATFORM = 'linux-x64-gnu'
const GLIBC_BASELINE = '2.17'
// Pinned build tools, from PyPI (zig is a Python wheel there).
const TOOLS = ['cargo-zigbuild==0.24.0', 'ziglang==0.17.0']
// Install scripts in the dependency tree that are not ours. msgpackr pulls in
// msgpackr-extract and cbor-x pulls in cbor-extract (optional native
// accelerators by the same author, each with a node-gyp-build install script);
// konserve works without them. Anything else fails the check.
const FOREIGN_INSTALL_SCRIPTS = new Set(['msgpackr-extract', 'cbor-extract'])

const started = Date.now()
const pkgText = readFileSync(join(root, 'package.json'), 'utf8')
const pkg = JSON.parse(pkgText)
const packDir = join(root, 'pack')
const toolsDir = join(root, 'target', 'pack-tools')
const buildDir = join(root, 'target', 'pack-build')
const stageDir = join(root, 'target', 'pack-stage', PLATFORM)
const binaryName = `${pkg.napi.binaryName}.${PLATFORM}.node`

function step(title) {
  console.log(`\n== ${title} (${((Date.now() - started) / 1000).toFixed(0)} s)`)
}
function fail(message) {
  console.error(`\npack:local FAILED: ${message}`)
  process.exit(1)
}
function check(ok, message) {
  if (!ok) fail(message)
  console.log(`ok - ${message}`)
}
/** Runs a command, inheriting output; fails the rehearsal if it fails. */
function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'], ...opts })
  if (r.error) fail(`${cmd}: ${r.error.message}`)
  if (r.status !== 0) fail(`${cmd} ${args.join(' ')} exited with ${r.status}`)
}
/** Runs a command and returns { status, stdout, stderr } without failing. */
function capture(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...opts })
  if (r.error) fail(`${cmd}: ${r.error.message}`)
  return r
}
function kib(bytes) {
  return `${(bytes / 1024).toFixed(1)} KiB`
}
function newestGlibc(file) {
  const out = execFileSync('objdump', ['-T', file], { encoding: 'utf8' })
  const versions = [...new Set(out.match(/GLIBC_[0-9.]+/g) ?? [])].map((v) => v.slice(6))
  versions.sort(compareVersions)
  return versions.at(-1)
}
function compareVersions(a, b) {
  const pa = a.split('.').map(Number)
  const pb = b.split('.').map(Number)
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0)
    if (d !== 0) return d
  }
  return 0
}

if (process.platform !== 'linux' || process.arch !== 'x64') {
  fail(`the rehearsal builds and runs the ${PLATFORM} package, so it needs a linux-x64 host (this is ${process.platform}-${process.arch})`)
}

step('tools: cargo-zigbuild and zig from PyPI, pinned')
const stamp = join(toolsDir, 'konserve-tools.txt')
if (!existsSync(stamp) || readFileSync(stamp, 'utf8') !== TOOLS.join('\n')) {
  rmSync(toolsDir, { recursive: true, force: true })
  const venv = capture('python3', ['-m', 'venv', toolsDir])
  if (venv.status !== 0) fail(`python3 -m venv failed (on Debian: apt-get install python3-venv):\n${venv.stderr}`)
  run(join(toolsDir, 'bin', 'pip'), ['install', '--quiet', '--disable-pip-version-check', ...TOOLS])
  writeFileSync(stamp, TOOLS.join('\n'))
}
// cargo-zigbuild finds zig as `python3 -m ziglang` through the venv's python3.
const buildPath = [join(toolsDir, 'bin'), process.env.PATH].join(delimiter)
console.log(capture(join(toolsDir, 'bin', 'cargo-zigbuild'), ['--version']).stdout.trim())
console.log(`zig ${capture(join(toolsDir, 'bin', 'python3'), ['-m', 'ziglang', 'version']).stdout.trim()}`)

step(`build: ${TRIPLE} against glibc ${GLIBC_BASELINE} (napi build -x, release)`)
const buildStart = Date.now()
rmSync(buildDir, { recursive: true, force: true })
run(
  join(root, 'node_modules', '.bin', 'napi'),
  ['build', '--platform', '--release', '--no-const-enum', '-x', '--target', `${TRIPLE}.${GLIBC_BASELINE}`, '--output-dir', buildDir],
  { cwd: root, env: { ...process.env, PATH: buildPath } },
)
console.log(`built in ${((Date.now() - buildStart) / 1000).toFixed(0)} s`)
for (const generated of ['index.js', 'index.d.ts']) {
  const same = readFileSync(join(buildDir, generated), 'utf8') === readFileSync(join(root, generated), 'utf8')
  check(same, `the committed ${generated} is the one napi generates (if not: npm run build:native, then commit it)`)
}
const builtGlibc = newestGlibc(join(buildDir, binaryName))
check(compareVersions(builtGlibc, GLIBC_BASELINE) <= 0, `${binaryName} needs glibc ${builtGlibc} at most (baseline ${GLIBC_BASELINE})`)

step(`pack: the main package and konserve-${PLATFORM}`)
rmSync(packDir, { recursive: true, force: true })
mkdirSync(packDir)
// The platform package: its package.json and README from npm/, the binary, and the LICENSE.
const platformDir = join(root, 'npm', PLATFORM)
const platformPkg = JSON.parse(readFileSync(join(platformDir, 'package.json'), 'utf8'))
check(platformPkg.version === pkg.version, `konserve-${PLATFORM} has the main package's version ${pkg.version}`)
rmSync(stageDir, { recursive: true, force: true })
mkdirSync(stageDir, { recursive: true })
for (const f of ['package.json', 'README.md']) copyFileSync(join(platformDir, f), join(stageDir, f))
copyFileSync(join(root, 'LICENSE'), join(stageDir, 'LICENSE'))
copyFileSync(join(buildDir, binaryName), join(stageDir, binaryName))
const packs = {}
for (const [name, dir] of [
  [pkg.name, root],
  [platformPkg.name, stageDir],
]) {
  // The main package's prepack builds the TypeScript (without source maps).
  const r = capture('npm', ['pack', '--json', '--pack-destination', packDir], { cwd: dir, stdio: ['ignore', 'pipe', 'inherit'] })
  if (r.status !== 0) fail(`npm pack of ${name} failed`)
  const json = /^\[\s*$/m.exec(r.stdout)
  if (!json) fail(`npm pack of ${name} printed no JSON:\n${r.stdout}`)
  const info = JSON.parse(r.stdout.slice(json.index))[0]
  packs[name] = info
  console.log(`${info.filename}: ${kib(info.size)} packed, ${kib(info.unpackedSize)} unpacked, ${info.entryCount} files`)
  for (const f of info.files) console.log(`  ${String(f.size).padStart(8)}  ${f.path}`)
}
const packedPkg = JSON.parse(execFileSync('tar', ['-xOzf', join(packDir, packs[pkg.name].filename), 'package/package.json'], { encoding: 'utf8' }))
const platforms = pkg.napi.targets.length
check(
  Object.keys(packedPkg.optionalDependencies ?? {}).length === platforms && Object.values(packedPkg.optionalDependencies).every((v) => v === pkg.version),
  `the packed package.json depends optionally on all ${platforms} konserve-<platform> packages at ${pkg.version}: ${Object.keys(packedPkg.optionalDependencies ?? {}).join(', ')}`,
)
check(packedPkg.optionalDependencies[platformPkg.name] === pkg.version, `among them ${platformPkg.name}@${pkg.version}`)
check(readFileSync(join(root, 'package.json'), 'utf8') === pkgText, 'postpack restored the committed package.json')
const mainFiles = packs[pkg.name].files.map((f) => f.path).sort()
// Every file package.json's "exports" names (the main entry, the browser entry, the subpaths), with its types.
const exportTargets = []
const collect = (v) => (typeof v === 'string' ? exportTargets.push(v.replace(/^\.\//, '')) : v && Object.values(v).forEach(collect))
collect(pkg.exports)
const exported = new Set(exportTargets.filter((f) => f.startsWith('dist/')))
// dist/browser/*.mjs: the browser entry's chunks, loaded on demand by dynamic import() (LZ4, the AES segment code, cbor-x).
const allowed = [/^LICENSE$/, /^README\.md$/, /^package\.json$/, /^index\.js$/, /^dist\/cli\.js$/, /^dist\/chunk-[A-Z0-9]+\.mjs$/, /^dist\/browser\/[a-z0-9-]+-[A-Z0-9]+\.mjs$/i]
const unexpected = mainFiles.filter((f) => !allowed.some((re) => re.test(f)) && !exported.has(f))
check(unexpected.length === 0, `the main tarball holds only LICENSE, README, the loader, the CLI, the browser entry's lazy chunks and the files its exports name (${exported.size})${unexpected.length ? ` (also: ${unexpected.join(', ')})` : ''}`)
// Every lazy chunk the browser entry imports is in the tarball (a missing one would fail only when a store first compresses or reads CBOR).
const browserEntry = exportTargets.find((f) => f.startsWith('dist/browser') && f.endsWith('.mjs'))
const chunkRefs = new Set()
for (const f of [browserEntry, ...mainFiles.filter((f) => f.startsWith('dist/browser/'))]) {
  const text = execFileSync('tar', ['-xOzf', join(packDir, packs[pkg.name].filename), `package/${f}`], { encoding: 'utf8' })
  for (const m of text.matchAll(/["'](\.\/(?:browser\/)?[A-Za-z0-9_-]+\.mjs)["']/g)) chunkRefs.add(join(dirname(f), m[1]).replace(/\\/g, '/'))
}
const missingChunks = [...chunkRefs].filter((f) => !mainFiles.includes(f))
check(missingChunks.length === 0, `the browser entry's ${chunkRefs.size} chunk imports are all in the tarball${missingChunks.length ? ` (missing: ${missingChunks.join(', ')})` : ''}`)
for (const need of ['LICENSE', 'README.md', 'index.js', 'dist/index.js', 'dist/index.mjs', 'dist/index.d.ts', 'dist/index.d.mts', 'dist/cli.js', ...exported]) {
  check(mainFiles.includes(need), `the main tarball holds ${need}`)
}
const platformFiles = packs[platformPkg.name].files.map((f) => f.path).sort()
check(JSON.stringify(platformFiles) === JSON.stringify(['LICENSE', 'README.md', binaryName, 'package.json'].sort()), `konserve-${PLATFORM} holds LICENSE, README.md, package.json and ${binaryName}`)
const mainTgz = join(packDir, packs[pkg.name].filename)
const platformTgz = join(packDir, packs[platformPkg.name].filename)

// A PATH with no cargo or rustc on it: the user's machine has no Rust.
const userPath = (process.env.PATH ?? '')
  .split(delimiter)
  .filter((d) => d && !['cargo', 'rustc', 'rustup'].some((tool) => existsSync(join(d, tool))))
  .concat(existsSync(join(dirname(process.execPath), 'cargo')) ? [] : [dirname(process.execPath)])
  .join(delimiter)
const userEnv = { ...process.env, PATH: userPath }
for (const k of Object.keys(userEnv)) if (k.startsWith('npm_') || k === 'KONSERVE_NATIVE' || k.startsWith('NAPI_RS_')) delete userEnv[k]
userEnv.npm_config_audit = 'false'
userEnv.npm_config_fund = 'false'
userEnv.npm_config_update_notifier = 'false'

function freshProject(label) {
  const dir = mkdtempSync(join(tmpdir(), `konserve-${label}-`))
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: `rehearsal-${label}`, private: true, version: '1.0.0' }))
  return dir
}
function install(dir, tarballs) {
  const r = capture('npm', ['install', '--prefer-offline', '--foreground-scripts', ...tarballs], { cwd: dir, env: userEnv })
  if (r.status !== 0) fail(`npm install in ${dir} failed:\n${r.stdout}\n${r.stderr}`)
  process.stdout.write(r.stdout)
  process.stderr.write(r.stderr)
  return r
}
/** Packages in the installed tree that have an install script (npm records it in the lockfile). */
function installScripts(dir) {
  const lock = JSON.parse(readFileSync(join(dir, 'package-lock.json'), 'utf8'))
  return Object.entries(lock.packages)
    .filter(([path, p]) => path && p.hasInstallScript)
    .map(([path]) => path.replace(/^.*node_modules\//, ''))
}
function node(dir, code, env = {}) {
  return capture(process.execPath, ['-e', code], { cwd: dir, env: { ...userEnv, ...env } })
}
function npx(dir, args, env = {}) {
  return capture('npx', ['--no-install', 'konserve', ...args], { cwd: dir, env: { ...userEnv, ...env } })
}

step(`a user on ${PLATFORM}: both tarballs into a fresh project, no cargo on PATH`)
const userDir = freshProject('native')
check(capture('sh', ['-c', 'command -v cargo || command -v rustc'], { env: userEnv }).status !== 0, 'neither cargo nor rustc is on the PATH')
const nativeInstall = install(userDir, [mainTgz, platformTgz])
const scripts = installScripts(userDir)
const ours = scripts.filter((p) => p === pkg.name || p.startsWith(`${pkg.name}-`))
const foreign = scripts.filter((p) => !ours.includes(p))
check(ours.length === 0 && !/konserve@[^ ]* \((pre|post)?install|konserve@[^ ]* \(prepare/.test(nativeInstall.stderr), 'no install or prepare script of konserve ran or was flagged')
check(foreign.every((p) => FOREIGN_INSTALL_SCRIPTS.has(p)), `no other install script in the tree than ${[...FOREIGN_INSTALL_SCRIPTS].join(', ')} (found: ${foreign.join(', ') || 'none'})`)
if (foreign.length > 0) console.log(`note: a dependency's install script remains: ${foreign.join(', ')} (msgpackr's optional native accelerator; konserve does not need it)`)
const cjs = node(userDir, "const k = require('konserve'); console.log(k.implementation())")
check(cjs.status === 0 && cjs.stdout.trim() === 'native', `require('konserve').implementation() is 'native' (got ${JSON.stringify(cjs.stdout.trim())}, stderr ${JSON.stringify(cjs.stderr.trim())})`)
check(cjs.stderr.trim() === '', 'no warning on stderr')
const esm = capture(process.execPath, ['--input-type=module', '-e', "import { implementation } from 'konserve'; console.log(implementation())"], { cwd: userDir, env: userEnv })
check(esm.status === 0 && esm.stdout.trim() === 'native', `import { implementation } from 'konserve' gives 'native' (got ${JSON.stringify(esm.stdout.trim())})`)
const where = node(userDir, `console.log(require.resolve('${platformPkg.name}'))`).stdout.trim()
check(where.endsWith(join('node_modules', platformPkg.name, binaryName)), `the binary comes from the ${platformPkg.name} package (${where})`)
const installedGlibc = newestGlibc(where)
check(compareVersions(installedGlibc, GLIBC_BASELINE) <= 0, `objdump -T of the installed binary: newest GLIBC symbol version ${installedGlibc}, not newer than ${GLIBC_BASELINE}`)
const put = npx(userDir, ['put', 'greeting', '"hello"'])
check(put.status === 0, `npx konserve put greeting '"hello"' works (${put.stderr.trim()})`)
const get = npx(userDir, ['get', 'greeting'])
check(get.status === 0 && get.stdout.trim() === '"hello"', `npx konserve get greeting prints "hello" (got ${JSON.stringify(get.stdout.trim())})`)
check(put.stderr.trim() === '' && get.stderr.trim() === '', 'the CLI prints no warning')
check(existsSync(join(userDir, 'node_modules', pkg.name, 'dist', 'index.d.ts')), 'types are installed')

step('a user on a platform with no binary: the main tarball alone')
const aloneDir = freshProject('alone')
install(aloneDir, [mainTgz])
check(!existsSync(join(aloneDir, 'node_modules', platformPkg.name)), `${platformPkg.name} is not installed`)
const probe = `
const k = require('konserve')
const a = k.implementation(), b = k.implementation()
const s = k.connectFsStore(process.argv[1], { sync: true })
k.assoc(s, 'x', 1, { sync: true })
const t = k.connectFsStore(process.argv[1], { sync: true })
console.log(JSON.stringify([a, b, k.implementation(s), k.get(t, 'x', { sync: true })]))
`
const storeDir = join(aloneDir, 'store')
const pure = capture(process.execPath, ['-e', probe, storeDir], { cwd: aloneDir, env: userEnv })
check(pure.status === 0 && pure.stdout.trim() === '["pure","pure","pure",1]', `implementation() is 'pure' and the store works (got ${pure.stdout.trim()} ${pure.stderr.trim()})`)
const warnings = pure.stderr.match(/KONSERVE_PURE_FALLBACK/g) ?? []
console.log(`the warning:\n${pure.stderr.trim()}`)
check(warnings.length === 1, `one warning for the whole process (got ${warnings.length})`)
check(/KONSERVE_NATIVE=0/.test(pure.stderr) && /silence/.test(pure.stderr), 'the warning says how to silence it')
check(pure.stderr.includes(platformPkg.name), `the warning names what it tried (${platformPkg.name})`)
check(!/package-lock|node_modules directory|npm\/cli\/issues/.test(pure.stderr), "the warning is in our words (no napi-rs advice to delete the lockfile)")
const quiet = capture(process.execPath, ['-e', probe, join(aloneDir, 'store2')], { cwd: aloneDir, env: { ...userEnv, KONSERVE_NATIVE: '0' } })
check(quiet.status === 0 && quiet.stderr.trim() === '', 'KONSERVE_NATIVE=0 silences it')
const alonePut = npx(aloneDir, ['put', 'greeting', '"hello"'])
const aloneGet = npx(aloneDir, ['get', 'greeting'])
check(alonePut.status === 0 && aloneGet.stdout.trim() === '"hello"', 'npx konserve put/get work on the pure store')

rmSync(userDir, { recursive: true, force: true })
rmSync(aloneDir, { recursive: true, force: true })
const sizes = Object.values(packs).map((p) => `${p.filename} ${kib(p.size)} (${kib(p.unpackedSize)} unpacked)`)
console.log(`\npack:local passed in ${((Date.now() - started) / 1000).toFixed(0)} s: ${sizes.join('; ')}; glibc baseline ${GLIBC_BASELINE}, newest symbol GLIBC_${installedGlibc}`)
console.log(`tarballs in ${packDir}: ${readdirSync(packDir).map((f) => `${f} (${statSync(join(packDir, f)).size} B)`).join(', ')}`)
