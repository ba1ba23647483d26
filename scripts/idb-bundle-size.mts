/**
 * The size of a browser app that uses the IndexedDB backing (issue 14):
 * esbuild --bundle --minify --platform=browser of a small app that opens a
 * store, puts and gets, then gzip -9. Prints the sizes, the Node built-ins
 * that had to be stubbed, and the bytes each source file contributes.
 *   npx tsx scripts/idb-bundle-size.mts
 */
import { build } from 'esbuild'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { gzipSync } from 'node:zlib'
import { noNodeBuiltins } from '../__test__/browser/harness.ts'

const root = resolve(import.meta.dirname, '..')
const dir = mkdtempSync(join(tmpdir(), 'konserve-size-'))
const app = join(dir, 'app.ts')
writeFileSync(
  app,
  `import { openIdbBacking } from '${root}/ts/backends/idb/index.ts'
const b = await openIdbBacking('app')
await b.put.async([{ key: new Uint8Array([1]), serializer: 1, meta: new Uint8Array([0x80]), value: new Uint8Array([1]) }])
console.log(await b.get.async(new Uint8Array([1])))
`,
)
try {
  const stubbed = new Set<string>()
  const r = await build({ entryPoints: [app], bundle: true, platform: 'browser', format: 'esm', minify: true, write: false, metafile: true, plugins: [noNodeBuiltins(stubbed)] })
  const code = r.outputFiles[0]!.contents
  console.log(`minified ${code.length} B, gzipped ${gzipSync(code, { level: 9 }).length} B; stubbed: ${[...stubbed].join(', ') || 'none'}`)
  const out = Object.values(r.metafile.outputs)[0]!
  for (const [f, i] of Object.entries(out.inputs).sort((a, b) => b[1].bytesInOutput - a[1].bytesInOutput)) {
    console.log(String(i.bytesInOutput).padStart(7), f.replace(`${root}/`, ''))
  }
} finally {
  rmSync(dir, { recursive: true, force: true })
}
