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

test('scripts/browser-bundle-size.mjs: the app bundles with esbuild and reports its minified and gzipped sizes', async (t) => {
  const { stdout } = await promisify(execFile)(process.execPath, [script, '--json'], { cwd: root })
  const r = JSON.parse(stdout) as { minified: number; gzipped: number; modules: Record<string, number> }
  t.true(r.gzipped > 0 && r.gzipped < r.minified, stdout)
  t.true('ts/backends/idb/store.ts' in r.modules)
  t.false(Object.keys(r.modules).some((m) => /^node:|ts\/node\/|backends\/(native|pure)|ts\/native\.ts/.test(m)), Object.keys(r.modules).join(' '))
})

test('Vite builds the app from the package and the build runs in Chromium', async (t) => {
  const { APP } = (await import(script)) as { APP: string }
  const { build } = await import('vite')
  // Inside the package directory, so that `konserve` resolves to this package (a self-reference) through its exports.
  const dir = mkdtempSync(join(root, '.vite-app-'))
  try {
    writeFileSync(join(dir, 'index.html'), '<!doctype html><meta charset="utf-8"><body>loading</body><script type="module" src="./main.js"></script>')
    writeFileSync(join(dir, 'main.js'), APP)
    await build({ root: dir, configFile: false, logLevel: 'silent', build: { outDir: join(dir, 'dist'), emptyOutDir: true } })
    const assets = readdirSync(join(dir, 'dist', 'assets'))
    const js = assets.filter((f) => f.endsWith('.js'))
    t.is(js.length, 1, assets.join(' '))
    const code = readFileSync(join(dir, 'dist', 'assets', js[0]!), 'utf8')
    t.notRegex(code, /["']node:|\brequire\(["']/)
    t.log(`Vite's minified app: ${code.length} B, gzipped ${gzipSync(code, { level: 9 }).length} B`)
    const html = readFileSync(join(dir, 'dist', 'index.html'), 'utf8')
    const server = await serve({ '/': html, [`/assets/${js[0]}`]: code })
    const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] })
    try {
      const page = await browser.newPage()
      const errors: string[] = []
      page.on('pageerror', (e) => errors.push(String(e)))
      await page.goto(`${server.url}/`)
      await page.waitForFunction(() => document.body.textContent !== 'loading')
      t.deepEqual(JSON.parse((await page.textContent('body')) ?? ''), { name: 'Ada', visits: 1 })
      t.deepEqual(errors, [])
    } finally {
      await browser.close()
      await server.close()
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})
