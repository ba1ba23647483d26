/**
 * XXH3 in WebAssembly (ts/codec/xxh3-wasm.ts: the long loop, and the 17..240
 * byte paths of XXH3-64 and XXH3-128): the same hashes as the JavaScript code and the
 * reference library (xxhash-addon) at every boundary of the loop and of the
 * copy window, on unaligned inputs; the module is small enough for a
 * browser's main thread to compile it synchronously; without WebAssembly the
 * JavaScript code still hashes; and the short paths (the JavaScript ones'
 * 64-bit products from Math.imul and a double) match too.
 */
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
import { resolve } from 'node:path'
import { toHex, useWasmXxh3, wasmXxh3, xxh3_128, xxh3_64 } from '../ts/codec/xxhash.js'
import { WINDOW, xxh3Module } from '../ts/codec/xxh3-wasm.js'

const require = createRequire(import.meta.url)
type Hasher = { hash(b: Buffer): Buffer }
const ref = require('xxhash-addon') as { XXHash3: Hasher; XXHash128: Hasher }
const buf = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength)

/** Both loops' hashes of `b`, the reference's, and whether the WebAssembly one ran. */
function both(b: Uint8Array) {
  useWasmXxh3(false)
  const js = { h64: xxh3_64(b), h128: toHex(xxh3_128(b)) }
  useWasmXxh3(true)
  const wasm = { h64: xxh3_64(b), h128: toHex(xxh3_128(b)) }
  return { js, wasm, ref: { h64: ref.XXHash3.hash(buf(b)).readBigUInt64BE(0), h128: ref.XXHash128.hash(buf(b)).toString('hex') } }
}

// Around the long path's start (241), a block (1024), a block plus a stripe,
// the copy window (1 MiB) and several windows, each at an odd offset.
const LENGTHS = [
  241, 256, 1023, 1024, 1025, 1087, 1088, 1089, 1100, 2047, 2048, 2049, 4096 + 63, 65536,
  WINDOW - 1, WINDOW, WINDOW + 1, WINDOW + 64, WINDOW + 1024, WINDOW + 1025, 2 * WINDOW + 1024 + 65, 3 * WINDOW + 77,
]

test('the WebAssembly loop gives the JavaScript loop\'s and the reference\'s XXH3-64 and XXH3-128 at every boundary', (t) => {
  t.true(wasmXxh3(), 'WebAssembly is available in Node')
  for (const n of LENGTHS) {
    const b = randomBytes(n + 3).subarray(3)
    const r = both(b)
    t.deepEqual(r.wasm, r.ref, `length ${n}`)
    t.deepEqual(r.js, r.ref, `length ${n} (JavaScript)`)
  }
})

test('random lengths and offsets: the two loops agree (property)', (t) => {
  const pool = randomBytes(3 * WINDOW)
  for (let i = 0; i < 60; i++) {
    const n = 241 + Math.floor(Math.random() ** 3 * (2 * WINDOW))
    const at = Math.floor(Math.random() * (pool.length - n))
    const r = both(pool.subarray(at, at + n))
    t.deepEqual(r.wasm, r.js, `length ${n} at ${at}`)
  }
  // Inputs that are all zeros or all ones (carries through every word).
  for (const fill of [0x00, 0xff]) {
    const r = both(new Uint8Array(WINDOW + 4321).fill(fill))
    t.deepEqual(r.wasm, r.ref)
  }
})

test('the module is under 4 KiB: a browser main thread may compile it synchronously', (t) => {
  const bytes = xxh3Module()
  t.true(bytes.length < 4096, `${bytes.length} bytes`)
  t.true(WebAssembly.validate(bytes))
})

test('where WebAssembly is refused (as by a content security policy), the JavaScript loop hashes (same result)', (t) => {
  // Bytes the child makes too: 2^16 + 999 bytes counting up.
  const b = Buffer.from(Array.from({ length: 65536 + 999 }, (_, i) => (i * 7) & 0xff))
  const script = `WebAssembly.Module = function () { throw new WebAssembly.CompileError('refused by policy') }
const m = await import(${JSON.stringify(resolve('ts/codec/xxhash.ts'))})
const x = m.xxh3_64 ? m : m.default
const b = Buffer.from(Array.from({ length: 65536 + 999 }, (_, i) => (i * 7) & 0xff))
console.log(JSON.stringify({ wasm: x.wasmXxh3(), h64: String(x.xxh3_64(b)) }))`
  const out = JSON.parse(execFileSync(process.execPath, ['--import=tsx', '--input-type=module', '-e', script], { encoding: 'utf8' }))
  t.deepEqual(out, { wasm: false, h64: String(ref.XXHash3.hash(b).readBigUInt64BE(0)) })
})

test('short inputs (0..240 bytes: the JavaScript paths and their 64-bit products, and the WebAssembly 17..240-byte paths): the reference\'s hashes (property)', (t) => {
  for (let i = 0; i < 3000; i++) {
    const n = i % 241
    // Random bytes at an odd offset, and every few all 0xff (the largest products) or all zeros.
    const b = i % 7 === 0 ? new Uint8Array(n).fill(0xff) : i % 11 === 0 ? new Uint8Array(n) : randomBytes(n + 1).subarray(1)
    const r = both(b)
    t.deepEqual(r.js, r.ref, `length ${n}`)
    t.deepEqual(r.wasm, r.ref, `length ${n} (WebAssembly)`)
  }
})
