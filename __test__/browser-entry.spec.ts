/**
 * The browser entry (issue 14): `import ... from 'konserve'` bundled for the
 * browser resolves, through the `browser` export condition, to
 * dist/browser.mjs (built by tsup from ts/browser.ts), which reaches no Node
 * built-in; in a real headless Chromium its connectIdbStore store answers the
 * public API, async, across two pages at once and across a reload.
 * Needs dist/ built (`npx tsup`).
 */
import test from 'ava'
import { build } from 'esbuild'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { bassoc, newMemStore, readBlob } from 'konserve'
import { type Harness, type TestPage, launch, noNodeBuiltins } from './browser/harness.js'

const root = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..')
const page = join(root, '__test__', 'browser', 'entry-page.ts')

/** What the pages reported, but the 404 of the favicon the test server does not have. */
const pageErrors = (...ps: TestPage[]) => ps.flatMap((p) => p.errors).filter((e) => !/^Failed to load resource: .*404/.test(e))

let h: Harness
test.before(async () => {
  h = await launch(page)
})
test.after.always(async () => {
  await h?.close()
})

test('`konserve` bundled for the browser is dist/browser.mjs, with no Node built-in and nothing stubbed', async (t) => {
  t.true(existsSync(join(root, 'dist', 'browser.mjs')), 'dist/browser.mjs is built')
  const stubbed = new Set<string>()
  const r = await build({
    stdin: { contents: "export * from 'konserve'", resolveDir: root, loader: 'js' },
    bundle: true,
    platform: 'browser',
    format: 'esm',
    write: false,
    metafile: true,
    logLevel: 'silent',
    plugins: [noNodeBuiltins(stubbed, {})],
  })
  t.deepEqual(r.errors, [])
  t.deepEqual([...stubbed], [])
  t.deepEqual(h.stubbed, [])
  const inputs = Object.keys(r.metafile.inputs)
  t.true(inputs.includes('dist/browser.mjs'), inputs.join(' '))
  t.false(inputs.some((f) => /dist\/index\.m?js|\.node$/.test(f)))
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
  t.deepEqual(Object.keys(pkg.exports['.'])[0], 'browser', 'the browser condition comes before import and require')
  const text = readFileSync(join(root, 'dist', 'browser.mjs'), 'utf8')
  t.notRegex(text, /from ["']node:|import\(["']node:|\brequire\(["']/)
})

test('connectIdbStore in Chromium: the public API, async; sync calls fail ERR_NOT_SUPPORTED', async (t) => {
  const p = await h.newPage()
  const r = await p.call<Record<string, unknown>>('basics', 'basics')
  t.deepEqual(pageErrors(p), [])
  t.is(r.implementation, 'idb')
  t.is(r.missing, undefined)
  t.deepEqual(r.assoc, [undefined, { x: 1, tags: ['t'] }])
  t.deepEqual(r.get, { x: 1, tags: ['t'] })
  t.deepEqual(r.getIn, 2)
  t.deepEqual(r.updateIn, [
    { x: 1, tags: ['t'], y: { z: 2 } },
    { x: 11, tags: ['t'], y: { z: 2 } },
  ])
  t.deepEqual(r.update, [undefined, 1])
  t.deepEqual(r.exists, [true, false])
  t.deepEqual(r.multiGet, [['m1', 1], ['m2', 'two'], [['vec', 3], { v: 3 }]])
  t.deepEqual(r.multiDissoc, [['m1', true], ['absent', false]])
  t.deepEqual(r.dissoc, [true, undefined])
  t.is(r.blobSize, (3 << 20) + 3)
  t.true(r.blobSame)
  t.deepEqual(r.rs, [1, 2, 3, 4, 5, 6])
  t.deepEqual(r.bget, [6, true, [1, 2, 3, 4, 5, 6]])
  t.deepEqual(r.log, [{ e: 1 }, { e: 2 }, { e: 3 }])
  t.is(r.reduceLog, 6)
  t.is(r.meta, 'a')
  t.deepEqual(r.keys, ['"a"', '"blob"', '"log"', '"m2"', '"rs"', '["vec",3]'])
  t.is(r.syncGet, 'ERR_NOT_SUPPORTED')
  t.is(r.syncAssoc, 'ERR_NOT_SUPPORTED')
  t.is(r.syncConnect, 'ERR_NOT_SUPPORTED')
  t.is(r.badOption, 'ERR_INVALID_ARGUMENT')
  await p.page.close()
})

test('two pages running updateIn on one key at once end exact', async (t) => {
  const [a, b] = await Promise.all([h.newPage(), h.newPage()])
  const n = 40
  await Promise.all([a.call('count', 'count', n), b.call('count', 'count', n)])
  t.deepEqual(await a.call('read', 'count', 'counter'), { n: 2 * n })
  t.deepEqual(pageErrors(a, b), [])
  await Promise.all([a.page.close(), b.page.close()])
})

test('values survive a page reload', async (t) => {
  const p = await h.newPage()
  await p.call('put', 'reload', 'k', { kept: [1, 2, 3] })
  await p.page.reload()
  await p.page.waitForFunction(() => (globalThis as { konserveTest?: unknown }).konserveTest !== undefined)
  t.deepEqual(await p.call('read', 'reload', 'k'), { kept: [1, 2, 3] })
  await p.page.close()
})

test('LZ4 and AES through the browser entry: values round trip, IndexedDB holds no plaintext of values or keys', async (t) => {
  const p = await h.newPage()
  const r = await p.call<{ same: boolean; plainValue: boolean; plainKey: boolean; rawLength: number }>('codecs', 'codecs')
  t.true(r.same)
  t.false(r.plainValue)
  t.false(r.plainKey)
  t.true(r.rawLength > 0)
  await p.page.close()
})

test('cbor-x loads on demand: a CBOR store writes; a fresh page reads its values and log with the default serializer; a memory store needs loadCodecs', async (t) => {
  const a = await h.newPage()
  await a.call('cborWrite', 'cbor')
  await a.page.close()
  const b = await h.newPage()
  t.deepEqual(await b.call('cborRead', 'cbor'), ['12345678901234567890', 5, [[1, 'one']], [7]])
  await b.page.close()
  const c = await h.newPage()
  t.deepEqual(await c.call('cborMemory'), { before: 'ERR_NOT_SUPPORTED', after: [1] })
  t.deepEqual(pageErrors(a, b, c), [])
  await c.page.close()
})

test('bassoc takes a Blob (streamed through its ReadableStream) in Node too, async form', async (t) => {
  const s = await newMemStore()
  await bassoc(s, 'b', new Blob([new Uint8Array([1, 2]), 'xy']))
  t.deepEqual([...(await readBlob(s, 'b'))!], [1, 2, 0x78, 0x79])
})
