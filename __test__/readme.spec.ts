/**
 * Every `js` and `ts` code block of README.md runs as the README says: saved
 * as example.mjs (node) or example.mts (npx tsx), alone, in an empty
 * directory. The Redis, PostgreSQL and S3 examples get real servers (REDIS_URL,
 * DATABASE_URL, S3_ENDPOINT with S3_BUCKET and AWS_* credentials), the secret one
 * its key (KONSERVE_KEY), and the browser example is bundled with esbuild and
 * run in Chromium. A block the README adds later is run too: there is no list.
 */
import test from 'ava'
import { spawn } from 'node:child_process'
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'
import { chromium } from 'playwright-core'
import { CHROMIUM, serve } from './browser/harness.js'
import { sharedPostgres } from './helpers/postgres.js'
import { sharedRedis } from './helpers/redis.js'
import { ACCESS, BUCKET, sharedWeed } from './helpers/s3.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')

interface Example {
  line: number
  lang: 'js' | 'ts'
  code: string
}

/** The README's code blocks tagged js or ts, with the line each starts on. */
function examples(): Example[] {
  const lines = readFileSync(join(root, 'README.md'), 'utf8').split('\n')
  const found: Example[] = []
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(js|ts)\s*$/.exec(lines[i]!)
    if (!open) continue
    const start = i
    const body: string[] = []
    for (i++; i < lines.length && lines[i] !== '```'; i++) body.push(lines[i]!)
    found.push({ line: start + 1, lang: open[1] as 'js' | 'ts', code: `${body.join('\n')}\n` })
  }
  return found
}

/**
 * A fresh directory under the package (not /tmp): there `import 'konserve'`
 * resolves to this package's build by its own name, as it does for a user
 * who installed it.
 */
function workDir(line: number): string {
  const dir = join(root, 'target', 'readme-examples', `line-${line}-${process.pid}`)
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  return dir
}

function run(cmd: string[], cwd: string, env: Record<string, string>): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, cmd, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (out += d.toString()))
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, out }))
  })
}

/** Bundles the example as the README says (esbuild, browser, ESM) and runs it in a page; resolves with its console output. */
async function runInBrowser(dir: string, code: string): Promise<string> {
  writeFileSync(join(dir, 'app.js'), code)
  const out = await build({ entryPoints: [join(dir, 'app.js')], bundle: true, format: 'esm', platform: 'browser', write: false, logLevel: 'silent' })
  const html = '<!doctype html><meta charset="utf-8"><script type="module" src="/out.js"></script>'
  // The favicon too: the browser asks for it, and a 404 is logged as a console error.
  const server = await serve({ '/': html, '/out.js': out.outputFiles[0]!.text, '/favicon.ico': '' })
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] })
  try {
    const page = await browser.newPage()
    const logged = new Promise<string>((resolve, reject) => {
      page.on('console', (m) => (m.type() === 'error' ? reject(new Error(m.text())) : resolve(m.text())))
      page.on('pageerror', reject)
    })
    await page.goto(server.url)
    return await logged
  } finally {
    await browser.close()
    await server.close()
  }
}

for (const ex of examples()) {
  test(`README example at line ${ex.line} runs as written`, async (t) => {
    const dir = workDir(ex.line)
    try {
      if (ex.code.includes('connectIdbStore')) {
        // It ran to its console.log, with no error on the way.
        t.truthy(await runInBrowser(dir, ex.code))
        return
      }
      const env: Record<string, string> = { KONSERVE_KEY: 'a passphrase for the README example' }
      if (ex.code.includes('konserve/redis')) env.REDIS_URL = (await sharedRedis()).url
      if (ex.code.includes('konserve/postgres')) env.DATABASE_URL = (await sharedPostgres()).url
      if (ex.code.includes('konserve/s3')) {
        Object.assign(env, { S3_ENDPOINT: (await sharedWeed()).endpoint, S3_BUCKET: BUCKET, AWS_ACCESS_KEY_ID: ACCESS.accessKeyId, AWS_SECRET_ACCESS_KEY: ACCESS.secretAccessKey })
      }
      const file = ex.lang === 'ts' ? 'example.mts' : 'example.mjs'
      writeFileSync(join(dir, file), ex.code)
      const r = await run(ex.lang === 'ts' ? ['--import', 'tsx', file] : [file], dir, env)
      t.is(r.code, 0, `README.md line ${ex.line} failed:\n${r.out}`)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
}

test('the README has runnable examples, and each is a whole program (it imports what it uses)', (t) => {
  const all = examples()
  t.true(all.length >= 10)
  for (const ex of all) t.regex(ex.code, /^import /m, `README.md line ${ex.line}: an example starts from its imports`)
})
