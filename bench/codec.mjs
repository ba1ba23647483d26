#!/usr/bin/env node
// Native core vs pure TypeScript on the same store options, side by side in
// one run: writes (bassoc) and reads (get) of 1 KB and 1 MB values with
// LZ4 + AES. Durability is off (syncBlob: false) so that the figures compare
// the implementations, not the disk's fsync latency; the sync API is used so
// no event-loop scheduling enters the timings.
//
// Rounds alternate between the implementations; each figure is the median of
// the rounds' throughputs, and the ratio is native / pure.
//
// The crypto floor: AES-256-CBC and HMAC-SHA256 over the bytes a key file
// holds, timed with node:crypto (OpenSSL, AES-NI and SHA-NI where the CPU has
// them). Both implementations run this part in native code (the core with
// RustCrypto, the pure path with node:crypto), so native / pure can be at most
// pure's time divided by the floor: the "ceiling" column.
//
//   node bench/codec.mjs [--quick]
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto'
import * as k from '../dist/index.mjs'

const quick = process.argv.includes('--quick')
const rounds = quick ? 3 : 7
const options = { compressor: { type: 'lz4' }, encryptor: { type: 'aes', key: 'bench-key' }, syncBlob: false, sync: true }

/** Half random, half repetitive: LZ4 has work to do and something to gain. */
function sampleValue(size) {
  const v = Buffer.alloc(size)
  randomBytes(size >> 1).copy(v)
  v.fill('konserve ', size >> 1)
  return v
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

function timeOps(n, op) {
  const start = process.hrtime.bigint()
  for (let i = 0; i < n; i++) op(i)
  return Number(process.hrtime.bigint() - start) / 1e9
}

/** Bytes in the store's regular files, per key written. */
function bytesPerKey(dir, keys) {
  let total = 0
  for (const name of readdirSync(dir)) {
    const st = statSync(join(dir, name))
    if (st.isFile()) total += st.size
  }
  return Math.round(total / keys)
}

/** Median seconds of the crypto a write (encrypt + MAC) or a read (MAC + decrypt) of `n` bytes must do. */
function cryptoFloor(n, ops) {
  const bytes = randomBytes(n - (n % 16))
  const key = randomBytes(32)
  const iv = randomBytes(16)
  const enc = createCipheriv('aes-256-cbc', key, iv).setAutoPadding(false)
  const ct = Buffer.concat([enc.update(bytes), enc.final()])
  const write = () => {
    const c = createCipheriv('aes-256-cbc', key, iv).setAutoPadding(false)
    createHmac('sha256', key).update(c.update(bytes)).digest()
  }
  const read = () => {
    createHmac('sha256', key).update(ct).digest()
    createDecipheriv('aes-256-cbc', key, iv).setAutoPadding(false).update(ct)
  }
  const med = (f) => median(Array.from({ length: 5 }, () => timeOps(ops, f) / ops))
  return { write: med(write), read: med(read) }
}

const cases = [
  { name: '1 KB', size: 1024, ops: quick ? 500 : 2000 },
  { name: '1 MB', size: 1 << 20, ops: quick ? 10 : 40 },
]
const impls = ['native', 'pure']
const results = []
for (const c of cases) {
  const value = sampleValue(c.size)
  const perImpl = Object.fromEntries(impls.map((impl) => [impl, { write: [], read: [] }]))
  let fileBytes = 0
  for (let r = 0; r < rounds; r++) {
    for (const impl of r % 2 ? [...impls].reverse() : impls) {
      const dir = mkdtempSync(join(tmpdir(), 'konserve-bench-'))
      const store = k.connectFsStore(dir, { ...options, native: impl === 'native' })
      const keys = Array.from({ length: c.ops }, (_, i) => `key-${i}`)
      const w = timeOps(c.ops, (i) => k.bassoc(store, keys[i], value, { sync: true }))
      const rd = timeOps(c.ops, (i) => k.get(store, keys[i], { sync: true }))
      fileBytes = bytesPerKey(dir, c.ops)
      perImpl[impl].write.push(c.ops / w)
      perImpl[impl].read.push(c.ops / rd)
      rmSync(dir, { recursive: true, force: true })
    }
  }
  const floor = cryptoFloor(fileBytes, c.ops)
  for (const op of ['write', 'read']) {
    const nat = median(perImpl.native[op])
    const pure = median(perImpl.pure[op])
    const mbps = (x) => ((x * c.size) / (1 << 20)).toFixed(1)
    results.push({
      case: `${op} ${c.name} lz4+aes`,
      native: `${nat.toFixed(0)} ops/s (${mbps(nat)} MB/s)`,
      pure: `${pure.toFixed(0)} ops/s (${mbps(pure)} MB/s)`,
      'native / pure': `${(nat / pure).toFixed(2)}x`,
      'crypto floor': `${(floor[op] * 1e6).toFixed(0)} µs of ${fileBytes} B`,
      ceiling: `${(1 / pure / floor[op]).toFixed(2)}x`,
    })
  }
}
console.log(`konserve codec benchmark: native core vs pure TypeScript, ${rounds} rounds, medians (node ${process.version}, ${new Date().toISOString()})`)
console.table(results)
