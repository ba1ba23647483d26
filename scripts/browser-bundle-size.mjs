/**
 * The size of a small browser app on konserve (issue 14): get, assoc and
 * updateIn on a connectIdbStore store, bundled by esbuild (--bundle --minify
 * --splitting --platform=browser --format=esm) from the package (`konserve`
 * resolves through the `browser` condition to dist/browser.mjs: run
 * `npx tsup` first), each output gzipped (-9). The initial chunk (what the
 * page loads: the entry and what it imports statically) and the lazy chunks
 * (LZ4 and cbor-x: fetched by dynamic import() only when a store compresses,
 * encrypts or uses CBOR; the AES code itself stays in the initial chunk) are
 * reported apart, then the bytes each source module adds to each (from a second bundle of the same app over ts/browser.ts, with the
 * browser build's swap of ts/lazy/codecs.ts).
 *   node scripts/browser-bundle-size.mjs [--json]
 */
import { build } from 'esbuild'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { gzipSync } from 'node:zlib'

const root = resolve(import.meta.dirname, '..')
export const APP = `import { assoc, connectIdbStore, get, updateIn } from 'konserve'
const db = await connectIdbStore('app')
await assoc(db, 'user', { name: 'Ada', visits: 0 })
await updateIn(db, ['user', 'visits'], (n) => n + 1)
document.body.textContent = JSON.stringify(await get(db, 'user'))
`

/** As tsup.config.ts's lazyCodecs: ts/lazy/codecs.ts becomes its browser form (for the bundle of the sources). */
const lazyCodecs = {
  name: 'lazy-codecs',
  setup(b) {
    b.onResolve({ filter: /[\\/]lazy[\\/]codecs\.js$/ }, (args) =>
      resolve(args.resolveDir, args.path) === resolve(root, 'ts/lazy/codecs.js') ? { path: resolve(root, 'ts/lazy/codecs.browser.ts') } : undefined,
    )
  },
}

async function bundle(alias) {
  return build({
    stdin: { contents: APP, resolveDir: root, loader: 'js', sourcefile: 'app.js' },
    bundle: true,
    minify: true,
    splitting: true,
    outdir: resolve(root, '.bundle-size-out'),
    platform: 'browser',
    format: 'esm',
    target: 'es2022',
    write: false,
    metafile: true,
    logLevel: 'silent',
    alias,
    plugins: alias ? [lazyCodecs] : [],
  })
}

/** The outputs split into the initial chunk (the entry and its static imports) and the lazy ones. */
function split(result) {
  const outputs = result.metafile.outputs
  const entry = Object.keys(outputs).find((o) => outputs[o].entryPoint)
  const initial = new Set()
  const visit = (o) => {
    if (initial.has(o)) return
    initial.add(o)
    for (const i of outputs[o].imports) if (i.kind === 'import-statement' && !i.external) visit(i.path)
  }
  visit(entry)
  const files = new Map(result.outputFiles.map((f) => [f.path.slice(root.length + 1), f.contents]))
  const js = Object.keys(outputs).filter((o) => o.endsWith('.js'))
  const part = (names) => {
    const sizes = names.map((o) => ({ file: o, minified: files.get(o).length, gzipped: gzipSync(files.get(o), { level: 9 }).length }))
    return { minified: sizes.reduce((n, s) => n + s.minified, 0), gzipped: sizes.reduce((n, s) => n + s.gzipped, 0), chunks: sizes }
  }
  const modules = (names) =>
    Object.fromEntries(
      names
        .flatMap((o) => Object.entries(outputs[o].inputs))
        .map(([f, i]) => [f.replace(/^.*node_modules\//, 'node_modules/'), i.bytesInOutput])
        .filter(([, n]) => n > 0)
        .sort((a, b) => b[1] - a[1]),
    )
  const lazy = js.filter((o) => !initial.has(o))
  return { initial: part([...initial]), lazy: part(lazy), initialModules: modules([...initial]), lazyModules: modules(lazy) }
}

/** Bundles the app: the initial chunk's and the lazy chunks' sizes, and the bytes each module adds to each. */
export async function measure() {
  const packaged = split(await bundle(undefined))
  const fromSource = split(await bundle({ konserve: resolve(root, 'ts/browser.ts') }))
  return {
    initial: packaged.initial,
    lazy: packaged.lazy,
    // The package's inputs (dist files, node_modules) per part: what a test checks stays out of the initial chunk.
    packagedInitialModules: packaged.initialModules,
    packagedLazyModules: packaged.lazyModules,
    initialModules: fromSource.initialModules,
    lazyModules: fromSource.lazyModules,
  }
}

async function main() {
  const r = await measure()
  if (process.argv.includes('--json')) {
    console.log(JSON.stringify(r))
    return
  }
  console.log(`initial chunk: minified ${r.initial.minified} B, gzipped ${r.initial.gzipped} B (esbuild --minify --splitting, gzip -9)`)
  console.log(`lazy chunks (LZ4 and cbor-x, loaded when a store compresses, encrypts or uses CBOR): minified ${r.lazy.minified} B, gzipped ${r.lazy.gzipped} B, in ${r.lazy.chunks.length} files`)
  console.log('largest modules in the initial chunk (bytes in the minified bundle of the sources):')
  for (const [f, n] of Object.entries(r.initialModules).slice(0, 15)) console.log(String(n).padStart(8), f)
  console.log('modules in the lazy chunks:')
  for (const [f, n] of Object.entries(r.lazyModules)) console.log(String(n).padStart(8), f)
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main()
