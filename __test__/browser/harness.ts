/**
 * Runs test code in a real headless Chromium (Debian's `chromium`, driven by
 * playwright-core): the code is bundled with esbuild for the browser, served
 * from an http server on a free loopback port (IndexedDB and Web Locks need a
 * real origin, not file:// or about:blank), and called from ava with
 * `page.call(name, ...args)`; its results come back as JSON.
 *
 * One browser per test file: `launch()` in `test.before`, `close()` in
 * `test.after.always`. A persistent profile directory (`profileDir`) lets a
 * test close the browser and start it again on the same IndexedDB.
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { build, type Plugin } from 'esbuild'
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core'

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

/**
 * Node built-ins a test bundle may stub: none since the core went Node-free
 * (ts/node/wire.ts hands Node's pieces in). Any Node built-in fails the bundle.
 */
const STUBS: Record<string, string> = {}

/** A plugin that fails on Node built-ins (other than STUBS) and records what it stubbed. */
export function noNodeBuiltins(stubbed: Set<string>, stubs: Record<string, string> = STUBS): Plugin {
  const builtin = /^(node:.*|fs|fs\/promises|path|os|crypto|stream|module|util|url|buffer|events|child_process|worker_threads|net|http)$/
  return {
    name: 'no-node-builtins',
    setup(b) {
      b.onResolve({ filter: builtin }, (args) => {
        const id = args.path.startsWith('node:') ? args.path : `node:${args.path}`
        if (id in stubs) {
          stubbed.add(`${id} (from ${args.importer})`)
          return { path: id, namespace: 'stub' }
        }
        return { errors: [{ text: `the browser bundle imports the Node built-in ${args.path} (from ${args.importer})` }] }
      })
      b.onLoad({ filter: /.*/, namespace: 'stub' }, (args) => ({ contents: stubs[args.path], loader: 'js' }))
    },
  }
}

/** Bundles `entry` for the browser (ESM, one file); `stubbed` lists the Node built-ins that had to be stubbed. */
export async function bundle(entry: string, opts: { minify?: boolean } = {}): Promise<{ code: string; stubbed: string[] }> {
  const stubbed = new Set<string>()
  const out = await build({
    entryPoints: [entry],
    bundle: true,
    platform: 'browser',
    format: 'esm',
    target: 'es2022',
    write: false,
    minify: opts.minify ?? false,
    sourcemap: opts.minify ? false : 'inline',
    logLevel: 'silent',
    plugins: [noNodeBuiltins(stubbed)],
  })
  return { code: out.outputFiles[0]!.text, stubbed: [...stubbed] }
}

/** Serves `files` (path -> contents) on 127.0.0.1 at a free port. */
export async function serve(files: Record<string, string>): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!
    const body = files[path]
    if (body === undefined) {
      res.writeHead(404).end()
      return
    }
    const type = path.endsWith('.js') ? 'text/javascript' : 'text/html'
    res.writeHead(200, { 'content-type': `${type}; charset=utf-8`, 'cache-control': 'no-store' }).end(body)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  }
}

/** A page running the bundle: `call(name, ...args)` runs `globalThis.konserveTest[name](...args)` there. */
export interface TestPage {
  page: Page
  call<T = unknown>(name: string, ...args: unknown[]): Promise<T>
  /** Errors the page reported on its console or left uncaught. */
  errors: string[]
}

const HTML = '<!doctype html><meta charset="utf-8"><title>konserve test</title><script type="module" src="/test.js"></script>'

export interface Harness {
  url: string
  /** The persistent profile directory, when there is one. */
  profileDir?: string
  /** Opens a new page (a new tab of the same origin) and waits until the bundle loaded. */
  newPage(): Promise<TestPage>
  /** Closes the browser (and starts it again on the same profile: `restart`). */
  restart(): Promise<void>
  close(): Promise<void>
  stubbed: string[]
}

async function startContext(profileDir: string | undefined): Promise<{ context: BrowserContext; browser?: Browser }> {
  // Precise heap sizes and gc(): the blob tests measure memory.
  const args = ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--enable-precise-memory-info', '--js-flags=--expose-gc']
  if (profileDir) {
    const context = await chromium.launchPersistentContext(profileDir, { executablePath: CHROMIUM, headless: true, args })
    return { context }
  }
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args })
  return { context: await browser.newContext(), browser }
}

/**
 * Bundles `entry`, serves it, launches Chromium. With `persistent`, the
 * browser gets a profile directory of its own (removed by `close`).
 */
export async function launch(entry: string, opts: { persistent?: boolean } = {}): Promise<Harness> {
  const { code, stubbed } = await bundle(entry)
  const server = await serve({ '/': HTML, '/index.html': HTML, '/test.js': code })
  const profileDir = opts.persistent ? mkdtempSync(join(tmpdir(), 'konserve-chromium-')) : undefined
  let ctx = await startContext(profileDir)
  const stop = async () => {
    await ctx.context.close()
    await ctx.browser?.close()
  }
  return {
    url: server.url,
    profileDir,
    stubbed,
    async newPage() {
      const page = await ctx.context.newPage()
      const errors: string[] = []
      page.on('console', (m) => {
        if (m.type() === 'error') errors.push(m.text())
      })
      page.on('pageerror', (e) => errors.push(String(e)))
      await page.goto(`${server.url}/`)
      await page.waitForFunction(() => (globalThis as { konserveTest?: unknown }).konserveTest !== undefined)
      return {
        page,
        errors,
        call: <T>(name: string, ...args: unknown[]) =>
          page.evaluate(
            async ([n, a]) => {
              const t = (globalThis as unknown as { konserveTest: Record<string, (...x: unknown[]) => Promise<unknown>> }).konserveTest
              const f = t[n as string]
              if (!f) throw new Error(`no test function ${n as string} in the page`)
              return f(...(a as unknown[]))
            },
            [name, args] as const,
          ) as Promise<T>,
      }
    },
    async restart() {
      await stop()
      ctx = await startContext(profileDir)
    },
    async close() {
      await stop().catch(() => {})
      await server.close()
      if (profileDir) rmSync(profileDir, { recursive: true, force: true })
    },
  }
}
