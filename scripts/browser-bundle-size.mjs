/**
 * The size of a small browser app on konserve (issue 14): get, assoc and
 * updateIn on a connectIdbStore store, bundled by esbuild (--bundle --minify
 * --platform=browser --format=esm) from the package (`konserve` resolves
 * through the `browser` condition to dist/browser.mjs: run `npx tsup` first),
 * then gzip -9. Prints the two sizes, then the bytes each source module adds
 * (from a second bundle of the same app over ts/browser.ts).
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

async function bundle(alias) {
  return build({
    stdin: { contents: APP, resolveDir: root, loader: 'js' },
    bundle: true,
    minify: true,
    platform: 'browser',
    format: 'esm',
    target: 'es2022',
    write: false,
    metafile: true,
    logLevel: 'silent',
    alias,
  })
}

/** Bundles the app: its sizes, and the bytes each module adds. */
export async function measure() {
  const packaged = await bundle(undefined)
  const code = packaged.outputFiles[0].contents
  const sizes = { minified: code.length, gzipped: gzipSync(code, { level: 9 }).length }
  const fromSource = await bundle({ konserve: resolve(root, 'ts/browser.ts') })
  const inputs = Object.values(fromSource.metafile.outputs)[0].inputs
  const byModule = Object.entries(inputs)
    .map(([f, i]) => [f.replace(/^.*node_modules\//, 'node_modules/'), i.bytesInOutput])
    .sort((a, b) => b[1] - a[1])
  return { ...sizes, byModule }
}

async function main() {
  const { byModule, ...sizes } = await measure()
  if (process.argv.includes('--json')) {
    console.log(JSON.stringify({ ...sizes, modules: Object.fromEntries(byModule) }))
  } else {
    console.log(`minified ${sizes.minified} B, gzipped ${sizes.gzipped} B (esbuild --minify, gzip -9)`)
    console.log('largest modules (bytes in the minified bundle of the source):')
    for (const [f, n] of byModule.slice(0, 20)) console.log(String(n).padStart(8), f)
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main()
