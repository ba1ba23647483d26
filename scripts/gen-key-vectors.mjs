#!/usr/bin/env node
// Regenerates test-vectors/keys.json: for each key (a JavaScript expression),
// its canonical encoding (FORMAT.md §2) and its file name (§3).
//
// Run after `npm run build`, only when the spec changes: the vectors pin the
// format, so a diff in this file is a format change. Review it by hand
// against FORMAT.md; cargo test and npm test both check the committed file.
import { createRequire } from 'node:module'
import { writeFileSync } from 'node:fs'
import { encodeKey } from '../dist/index.mjs'

const require = createRequire(import.meta.url)
const { fileName } = require('../index.js')

const keys = [
  ['null', 'null'],
  ['false', 'false'],
  ['true', 'true'],
  ['zero', '0'],
  ['negative zero is zero', '-0'],
  ['one', '1'],
  ['minus one', '-1'],
  ['max safe integer', 'Number.MAX_SAFE_INTEGER'],
  ['min safe integer', 'Number.MIN_SAFE_INTEGER'],
  ['2^53 is a float', '2 ** 53'],
  ['one and a half', '1.5'],
  ['negative fraction', '-7.5'],
  ['NaN is canonical', 'NaN'],
  ['infinity', 'Infinity'],
  ['negative infinity', '-Infinity'],
  ['large float', '1e300'],
  ['smallest subnormal', '5e-324'],
  ['empty string', '""'],
  ['string a', '"a"'],
  ['string foo', '"foo"'],
  ['accented', '"h\\u00e9llo"'],
  ['emoji (one 4-byte sequence)', '"\\u{1F600}"'],
  ['lone high surrogate', '"\\uD800"'],
  ['low then high surrogate (not a pair)', '"\\uDC00\\uD800"'],
  ['NUL inside', '"a\\u0000b"'],
  ['path shaped', '"../../etc/passwd"'],
  ['absolute path', '"/etc/passwd"'],
  ['windows device name', '"CON"'],
  ['long string', '"k".repeat(1000)'],
  ['empty bytes', 'new Uint8Array([])'],
  ['bytes a (not the string a)', 'new Uint8Array([0x61])'],
  ['bytes 0 255', 'new Uint8Array([0, 255])'],
  ['empty array', '[]'],
  ['array', '[1, "a", null]'],
  ['nested arrays', '[[[]], [true, [false]]]'],
  ['empty object', '({})'],
  ['object keys are sorted', '({ b: 1, a: 2 })'],
  ['empty object key sorts first', '({ a: 1, "": 0 })'],
  ['prefix sorts first', '({ aa: 1, a: 2 })'],
  ['object keys sort by WTF-8 bytes, not UTF-16', '({ "\\u{1F600}": 1, "\\uFF61": 2, a: null })'],
  ['nested object', '({ user: { id: 42, tags: ["x", new Uint8Array([1])] } })'],
  ['konserve style path key', '["user", 42]'],
]

const vectors = keys.map(([name, js]) => {
  const key = new Function(`return (${js})`)()
  const cke = Buffer.from(encodeKey(key))
  return { name, js, cke: cke.toString('hex'), file: fileName(cke) }
})
writeFileSync(new URL('../test-vectors/keys.json', import.meta.url), `${JSON.stringify(vectors, null, 2)}\n`)
console.log(`wrote ${vectors.length} key vectors`)
