/**
 * The shared golden vectors (test-vectors/): the TypeScript key encoding and the
 * native file naming must agree byte for byte with what the Rust tests check.
 */
import test from 'ava'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { decodeKey, encodeKey } from 'konserve'

const root = new URL('../', import.meta.url)
const vectors = JSON.parse(readFileSync(new URL('test-vectors/keys.json', root), 'utf8')) as Array<{
  name: string
  js: string
  cke: string
  file: string
}>
const binding = createRequire(import.meta.url)('../index.js') as { fileName(b: Buffer): string }

test('there are key vectors', (t) => {
  t.true(vectors.length >= 30)
})

for (const v of vectors) {
  test(`key vector: ${v.name}`, (t) => {
    const key = new Function(`return (${v.js})`)()
    const cke = Buffer.from(encodeKey(key))
    t.is(cke.toString('hex'), v.cke)
    t.is(binding.fileName(cke), v.file)
    const back = decodeKey(new Uint8Array(Buffer.from(v.cke, 'hex')))
    t.is(Buffer.from(encodeKey(back)).toString('hex'), v.cke, 'decode then encode is the identity')
  })
}
