/**
 * A small app on the browser entry (get, assoc, updateIn on connectIdbStore,
 * scripts/browser-bundle-size.mjs) bundles with esbuild and with Vite from the
 * package name, and the Vite build runs in headless Chromium. Needs dist/
 * built (`npx tsup`).
 */
import test from 'ava'
import { execFile } from 'node:child_process'
import { gzipSync } from 'node:zlib'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { chromium } from 'playwright-core'
import { CHROMIUM, serve } from './browser/harness.js'

const root = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..')
const script = join(root, 'scripts', 'browser-bundle-size.mjs')

/** Text only the lazily loaded code holds: cbor-x's decoder, and the LZ4 code's errors. */
const LAZY_MARKERS = [/Unexpected end of CBOR data/, /invalid LZ4 frame/]

type Part = { minified: number; gzipped: number; chunks: Array<{ file: string; minified: number; gzipped: number }> }
type Measured = { initial: Part; lazy: Part; packagedInitialModules: Record<string, number>; packagedLazyModules: Record<string, number>; initialModules: Record<string, number>; lazyModules: Record<string, number> }

test('scripts/browser-bundle-size.mjs: the app bundles with esbuild; cbor-x and LZ4 are in lazy chunks, not the initial one', async (t) => {
  const { stdout } = await promisify(execFile)(process.execPath, [script, '--json'], { cwd: root })
  const r = JSON.parse(stdout) as Measured
  t.true(r.initial.gzipped > 0 && r.initial.gzipped < r.initial.minified, stdout)
  t.true(r.lazy.chunks.length >= 2, 'LZ4/AES and cbor-x are chunks of their own')
  t.true('ts/backends/idb/store.ts' in r.initialModules)
  t.false(Object.keys(r.initialModules).some((m) => /^node:|ts\/node\/|backends\/(native|pure)|ts\/native\.ts/.test(m)), Object.keys(r.initialModules).join(' '))
  // The lazy code, from the sources and from the package: in the lazy chunks only.
  const lazyCode = /node_modules\/cbor-x\/|ts\/codec\/lz4\.ts|ts\/serializers-cbor\.ts|dist\/browser\/(segments|serializers-cbor)-/
  const initial = [...Object.keys(r.initialModules), ...Object.keys(r.packagedInitialModules)]
  t.deepEqual(initial.filter((m) => lazyCode.test(m)), [])
  for (const m of ['node_modules/cbor-x/decode.js', 'node_modules/cbor-x/encode.js', 'ts/codec/lz4.ts', 'ts/serializers-cbor.ts']) t.true(m in r.lazyModules, m)
  t.true(Object.keys(r.packagedLazyModules).some((m) => m.startsWith('node_modules/cbor-x/')))
  t.true(Object.keys(r.packagedLazyModules).some((m) => /^dist\/browser\/segments-/.test(m)))
  t.true(r.lazy.minified > 30_000, `${r.lazy.minified} B lazy`)
  t.log(`initial ${r.initial.minified} B (${r.initial.gzipped} B gzipped); lazy ${r.lazy.minified} B (${r.lazy.gzipped} B gzipped)`)
})

test('Vite builds the app from the package and the build runs in Chromium', async (t) => {
  const { APP } = (await import(script)) as { APP: string }
  const { build } = await import('vite')
  // Inside the package directory, so that `konserve` resolves to this package (a self-reference) through its exports.
  const dir = mkdtempSync(join(root, '.vite-app-'))
  try {
    writeFileSync(join(dir, 'index.html'), '<!doctype html><meta charset="utf-8"><body>loading</body><script type="module" src="./main.js"></script>')
    // The measured app, then (at #codecs) a store with LZ4, AES and CBOR: the lazy chunks load and work.
    writeFileSync(
      join(dir, 'main.js'),
      `${APP}
if (location.hash === '#codecs') {
  const c = await connectIdbStore('codecs', { serializer: 'cbor', compressor: { type: 'lz4' }, encryptor: { type: 'aes', key: 'k' } })
  await assoc(c, 'v', { big: 12345678901234567890n, when: new Date(0), text: 'x'.repeat(1000) })
  const v = await get(c, 'v')
  document.body.textContent = JSON.stringify([v.big.toString(), v.when.toISOString(), v.text.length])
}
`,
    )
    await build({ root: dir, configFile: false, logLevel: 'silent', build: { outDir: join(dir, 'dist'), emptyOutDir: true } })
    const assets = readdirSync(join(dir, 'dist', 'assets'))
    const js = assets.filter((f) => f.endsWith('.js'))
    const code = Object.fromEntries(js.map((f) => [f, readFileSync(join(dir, 'dist', 'assets', f), 'utf8')]))
    for (const c of Object.values(code)) t.notRegex(c, /["']node:|\brequire\(["']/)
    const html = readFileSync(join(dir, 'dist', 'index.html'), 'utf8')
    const entry = /src="\/assets\/([^"]+\.js)"/.exec(html)?.[1]
    t.truthy(entry && entry in code, html)
    // Vite too keeps cbor-x and LZ4 out of the app's entry chunk.
    for (const m of LAZY_MARKERS) t.notRegex(code[entry!]!, m)
    for (const m of LAZY_MARKERS) t.true(Object.values(code).some((c) => m.test(c)), `${m} in a lazy chunk`)
    t.log(`Vite's minified app: entry ${code[entry!]!.length} B, gzipped ${gzipSync(code[entry!]!, { level: 9 }).length} B; ${js.length} chunks`)
    const server = await serve({ '/': html, ...Object.fromEntries(js.map((f) => [`/assets/${f}`, code[f]!])) })
    const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] })
    try {
      const page = await browser.newPage()
      const errors: string[] = []
      const fetched: string[] = []
      page.on('pageerror', (e) => errors.push(String(e)))
      page.on('request', (r) => fetched.push(new URL(r.url()).pathname.replace('/assets/', '')))
      await page.goto(`${server.url}/`)
      await page.waitForFunction(() => document.body.textContent !== 'loading')
      t.deepEqual(JSON.parse((await page.textContent('body')) ?? ''), { name: 'Ada', visits: 1 })
      t.deepEqual(errors, [])
      // The app without codecs never fetched the lazy code.
      const lazyFetched = () => fetched.filter((f) => f in code && LAZY_MARKERS.some((m) => m.test(code[f]!)))
      t.deepEqual(lazyFetched(), [])
      // With them: fetched on demand, and they work.
      await page.goto(`${server.url}/#codecs`)
      await page.reload()
      await page.waitForFunction(() => document.body.textContent?.startsWith('["'))
      t.deepEqual(JSON.parse((await page.textContent('body')) ?? ''), ['12345678901234567890', '1970-01-01T00:00:00.000Z', 1000])
      t.deepEqual(errors, [])
      t.true(lazyFetched().length >= 2, fetched.join(' '))
    } finally {
      await browser.close()
      await server.close()
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})
