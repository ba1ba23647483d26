/**
 * The pure-TypeScript codec (ts/codec/xxhash.ts, lz4.ts, aes.ts, file.ts) against
 * the golden vectors and independent implementations: xxhash-addon (the C
 * xxHash), lz4-napi and the lz4 command line (LZ4 frames), node:crypto and
 * WebCrypto (both providers), and the Rust core through the native binding.
 */
import test from 'ava'
import fc from 'fast-check'
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { compressFrameSync, decompressFrameSync } from 'lz4-napi'
import type { NativeFileStore } from '../index.js'
import { type CryptoProvider, webCryptoProvider } from '../ts/codec/aes.js'
import * as file from '../ts/format/file.js'
import * as keyfile from '../ts/format/keyfile.js'
import { outcome } from './helpers/errors.js'
import { encodeKey } from '../ts/format/key.js'
import { lz4Compress, lz4Decompress } from '../ts/codec/lz4.js'
import { fileName, xxh32, xxh3_128, xxh3_64 } from '../ts/codec/xxhash.js'
import { nodeCryptoProvider } from '../ts/crypto-node.js'
import { KonserveError } from '../ts/errors.js'

const require = createRequire(import.meta.url)
const native = require('../index.js') as {
  NativeFileStore: typeof NativeFileStore
  fileName(b: Buffer): string
  lz4Compress(b: Buffer): Buffer
  lz4Decompress(b: Buffer): Buffer
}
type Hasher = { hash(b: Buffer): Buffer }
const xxhashAddon = require('xxhash-addon') as { XXHash32: Hasher; XXHash3: Hasher; XXHash128: Hasher }

const vectors = (name: string) => JSON.parse(readFileSync(new URL(`../test-vectors/${name}`, import.meta.url), 'utf8'))
const hex = (s: string) => new Uint8Array(Buffer.from(s, 'hex'))
const toHex = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex')
const buf = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength)
/** Byte equality (ava's deepEqual is slow on megabytes, and tells Buffer from Uint8Array). */
const same = (a: Uint8Array, b: Uint8Array) => buf(a).equals(buf(b))


/** Low-entropy bytes: LZ4 finds matches in them, of every length and offset. */
const lowEntropy = fc
  .tuple(fc.integer({ min: 1, max: 6 }), fc.array(fc.integer({ min: 0, max: 255 }), { maxLength: 3000 }))
  .map(([alphabet, xs]) => Uint8Array.from(xs, (x) => 97 + (x % alphabet)))
const someBytes = fc.oneof(fc.uint8Array({ maxLength: 3000 }), lowEntropy)

// ---- xxHash -------------------------------------------------------------------

function checkXxhash(t: { is: (a: unknown, b: unknown, m?: string) => void }, b: Uint8Array): void {
  const n = b.length
  t.is(xxh32(b), xxhashAddon.XXHash32.hash(buf(b)).readUInt32BE(0), `xxh32, length ${n}`)
  t.is(xxh3_64(b), xxhashAddon.XXHash3.hash(buf(b)).readBigUInt64BE(0), `xxh3_64, length ${n}`)
  t.is(toHex(xxh3_128(b)), xxhashAddon.XXHash128.hash(buf(b)).toString('hex'), `xxh3_128, length ${n}`)
}

test('xxhash: every length 0..1100 equals the reference library', (t) => {
  for (let n = 0; n <= 1100; n++) checkXxhash(t, randomBytes(n))
})

test('xxhash: large inputs, several blocks and unaligned views', (t) => {
  for (const n of [1023, 1024, 1025, 2048 + 63, 65536, 100_003, 1 << 20, (1 << 20) + 7]) {
    const b = randomBytes(n + 3)
    checkXxhash(t, b.subarray(0, n))
    checkXxhash(t, b.subarray(3)) // odd byteOffset
  }
})

test('xxhash: random inputs equal the reference library (fast-check)', (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 5000 }), fc.nat({ max: 7 }), (bytes, offset) => {
      const padded = new Uint8Array(bytes.length + offset)
      padded.set(bytes, offset)
      checkXxhash(t, padded.subarray(offset))
    }),
    { numRuns: 300 },
  )
})

// ---- key file names ---------------------------------------------------------------

test('key vectors: file names', (t) => {
  const keys = vectors('keys.json') as Array<{ name: string; cke: string; file: string }>
  t.true(keys.length >= 30)
  for (const v of keys) {
    t.is(fileName(hex(v.cke)), v.file, v.name)
    t.is(toHex(file.keyHashOfFileName(v.file)!), v.file.slice(0, 32))
  }
  t.is(fileName(new Uint8Array()), '99aa06d3014798d86001c324468d497f.ksv')
  t.is(file.keyHashOfFileName('99AA06D3014798D86001C324468D497F.ksv'), undefined)
  t.is(file.keyHashOfFileName('99aa06d3014798d86001c324468d497f.ksv~'), undefined)
})

test('file names equal the native binding for random keys (fast-check)', (t) => {
  fc.assert(
    fc.property(fc.jsonValue(), (v) => {
      const cke = encodeKey(v)
      t.is(fileName(cke), native.fileName(buf(cke)))
    }),
    { numRuns: 300 },
  )
})

// ---- LZ4 ------------------------------------------------------------------------

test('lz4 vectors: compress and decompress', (t) => {
  const lz4 = vectors('lz4.json') as Array<{ name: string; plain: string; frame: string }>
  t.true(lz4.length >= 10)
  for (const v of lz4) {
    t.is(toHex(lz4Compress(hex(v.plain))), v.frame, v.name)
    t.is(toHex(lz4Decompress(hex(v.frame))), v.plain, v.name)
  }
})

test('lz4: frames equal the native compressor and decode everywhere (fast-check)', (t) => {
  fc.assert(
    fc.property(someBytes, (plain) => {
      const frame = lz4Compress(plain)
      t.deepEqual(buf(frame), native.lz4Compress(buf(plain)))
      t.deepEqual(lz4Decompress(frame), plain)
      t.deepEqual(decompressFrameSync(buf(frame)), buf(plain))
    }),
    { numRuns: 300 },
  )
})

test('lz4: reads lz4-napi frames with and without checksums (fast-check)', (t) => {
  fc.assert(
    fc.property(someBytes, fc.boolean(), fc.boolean(), (plain, contentChecksum, blockChecksums) => {
      const frame = compressFrameSync(buf(plain), { contentChecksum, blockChecksums })
      t.deepEqual(lz4Decompress(frame), plain)
    }),
    { numRuns: 200 },
  )
})

test('lz4: long overlapping matches (every period 1..40, runs up to 200 KB) decode equally in both decoders', (t) => {
  // lz4-napi (the reference library) writes these as matches whose offset is
  // shorter than their length: both decoders copy them in doubling pieces.
  for (let period = 1; period <= 40; period++) {
    for (const run of [33, 64 + period, 5000, 200_000]) {
      const plain = new Uint8Array(period + run + 7)
      for (let i = 0; i < period; i++) plain[i] = (i * 67 + period) & 0xff
      for (let i = period; i < period + run; i++) plain[i] = plain[i - period]!
      plain.set([1, 2, 3, 4, 5, 6, 7], period + run)
      for (const frame of [compressFrameSync(buf(plain)), lz4Compress(plain)]) {
        t.true(same(lz4Decompress(frame), plain), `pure, period ${period}, run ${run}`)
        t.true(same(native.lz4Decompress(buf(frame)), plain), `native, period ${period}, run ${run}`)
      }
    }
  }
})

test('lz4: several blocks, empty and incompressible input', (t) => {
  const big = new Uint8Array((4 << 20) * 2 + 12345)
  for (let i = 0; i < big.length; i++) big[i] = (i * 31) ^ (i >> 9)
  for (const plain of [new Uint8Array(), big, randomBytes(5 << 20), new Uint8Array(1 << 20).fill(7)]) {
    const frame = lz4Compress(plain)
    t.true(same(frame, native.lz4Compress(buf(plain))), `${plain.length} bytes`)
    t.true(same(lz4Decompress(frame), plain))
    t.true(same(decompressFrameSync(buf(frame)), plain))
  }
})

// The lz4 command line (Debian's lz4, installed by .ci/run) writes the frame
// variants our writer never does: linked blocks, every block size.
test('lz4: reads frames of the lz4 command line (linked blocks, every block size, checksums)', (t) => {
  const plain = new Uint8Array(700_000)
  for (let i = 0; i < plain.length; i++) plain[i] = 97 + ((i * 7 + (i >> 11)) % 13)
  plain.set(randomBytes(50_000), 300_000)
  const flagSets = [[], ['-BD'], ['-B4', '-BD', '-BX'], ['-B5', '--content-size'], ['-B6', '--no-frame-crc'], ['-B7', '-BD', '--content-size', '-BX']]
  for (const flags of flagSets) {
    const frame = execFileSync('lz4', [...flags, '-c'], { input: plain, maxBuffer: 1 << 26, stdio: ['pipe', 'pipe', 'ignore'] })
    t.true(same(lz4Decompress(frame), plain), flags.join(' '))
  }
})

test('lz4: a linked block may reach into the previous block, an independent one may not', async (t) => {
  const first = randomBytes(60_000)
  const frameOf = (flg: number) => {
    const head = Buffer.from([0x04, 0x22, 0x4d, 0x18, flg, 0x40, 0])
    head[6] = (xxh32(head.subarray(4, 6)) >>> 8) & 0xff
    const raw = Buffer.alloc(4)
    raw.writeUInt32LE((first.length | 0x80000000) >>> 0)
    // One match of the whole first block at offset 60000, then an empty last sequence.
    const extra = first.length - 19
    const lengthBytes = [...Array(Math.floor(extra / 255)).fill(255), extra % 255]
    const block = Buffer.from([0x0f, first.length & 0xff, first.length >> 8, ...lengthBytes, 0x00])
    const size = Buffer.alloc(4)
    size.writeUInt32LE(block.length)
    return Buffer.concat([head, raw, first, size, block, Buffer.alloc(4)])
  }
  const linked = frameOf(0b0100_0000)
  t.true(same(lz4Decompress(linked), Buffer.concat([first, first])))
  t.true(same(native.lz4Decompress(linked), Buffer.concat([first, first])))
  t.is(await outcome(() => lz4Decompress(frameOf(0b0110_0000))), 'ERR_CORRUPT')
})

test('lz4: refuses dictionaries, skippable frames, second frames and trailing bytes', async (t) => {
  const frame = lz4Compress(new TextEncoder().encode('konserve konserve konserve konserve'))
  const dict = Buffer.from(frame)
  dict[4]! |= 1
  dict[14] = (xxh32(dict.subarray(4, 14)) >>> 8) & 0xff
  t.is(await outcome(() => lz4Decompress(dict)), 'ERR_CORRUPT')
  const skippable = Buffer.from([0x50, 0x2a, 0x4d, 0x18, 0, 0, 0, 0])
  t.is(await outcome(() => lz4Decompress(skippable)), 'ERR_CORRUPT')
  t.is(await outcome(() => lz4Decompress(Buffer.concat([frame, frame]))), 'ERR_CORRUPT')
  t.is(await outcome(() => lz4Decompress(Buffer.concat([frame, skippable]))), 'ERR_CORRUPT')
  t.is(await outcome(() => lz4Decompress(Buffer.concat([frame, Buffer.from([0])]))), 'ERR_CORRUPT')
})

test('lz4: damaged frames fail as the Rust decoder does, with ERR_CORRUPT (fast-check)', async (t) => {
  const damage = fc.oneof(
    fc.record({ at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }).map((d) => (f: Buffer) => {
      const g = Buffer.from(f)
      g[d.at % g.length] = d.byte
      return g
    }),
    fc.nat().map((n) => (f: Buffer) => f.subarray(0, n % f.length)),
    fc.uint8Array({ minLength: 1, maxLength: 8 }).map((tail) => (f: Buffer) => Buffer.concat([f, tail])),
  )
  await fc.assert(
    fc.asyncProperty(someBytes, fc.boolean(), fc.array(damage, { minLength: 1, maxLength: 3 }), async (plain, napi, damages) => {
      let frame = napi ? compressFrameSync(buf(plain), { blockChecksums: true, contentChecksum: true }) : buf(lz4Compress(plain))
      for (const d of damages) frame = d(frame)
      let expected: Buffer | string
      try {
        expected = native.lz4Decompress(frame)
      } catch (err) {
        expected = (err as { code: string }).code
      }
      let got: Uint8Array | string
      try {
        got = lz4Decompress(frame)
      } catch (err) {
        t.true(err instanceof KonserveError, String(err))
        got = (err as KonserveError).code
      }
      t.deepEqual(typeof got === 'string' ? got : buf(got), expected)
    }),
    { numRuns: 1500 },
  )
})

test('lz4: random garbage never throws anything but ERR_CORRUPT (fast-check)', async (t) => {
  const header = Buffer.from(lz4Compress(new Uint8Array(0)).subarray(0, 15))
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ maxLength: 200 }), fc.boolean(), async (tail, withHeader) => {
      const frame = withHeader ? Buffer.concat([header, tail]) : tail
      t.true(['OK', 'ERR_CORRUPT'].includes(await outcome(() => lz4Decompress(frame))))
    }),
    { numRuns: 1000 },
  )
})

// ---- key files -------------------------------------------------------------------

interface FileVector {
  name: string
  compressor: number
  encryptor: number
  secret: string | null
  key: string
  serializer: number
  meta: string
  value: string
  random: string | null
  file: string
}
const fileVectors = vectors('files.json') as FileVector[]

/** One way of running the codec: the blocking form with node:crypto, or the async form with either provider. */
interface Flavour {
  name: string
  encode(input: file.EncodeInput): Promise<Uint8Array>
  decode(bytes: Uint8Array, ctx: file.DecodeContext): Promise<file.DecodedFile>
  head(prefix: Uint8Array, length: number, ctx: file.DecodeContext): Promise<file.DecodedHead>
}

/** A blocking call must not return a Promise. */
function blocking<T>(value: T): Promise<T> {
  if (value instanceof Promise) throw new Error('a Sync function returned a Promise')
  return Promise.resolve(value)
}

const asyncFlavour = (name: string, crypto: CryptoProvider): Flavour => ({
  name,
  encode: (input) => file.encodeKeyFileAsync({ ...input, crypto }),
  decode: (bytes, ctx) => keyfile.decodeKeyFileAsync(bytes, { ...ctx, crypto }),
  head: (prefix, length, ctx) => file.decodeKeyFileHeadAsync(prefix, length, { ...ctx, crypto }),
})
const flavours: Flavour[] = [
  {
    name: 'node:crypto sync',
    encode: async (input) => blocking(file.encodeKeyFileSync({ ...input, crypto: nodeCryptoProvider })),
    decode: async (bytes, ctx) => blocking(keyfile.decodeKeyFileSync(bytes, { ...ctx, crypto: nodeCryptoProvider })),
    head: async (prefix, length, ctx) => blocking(file.decodeKeyFileHeadSync(prefix, length, { ...ctx, crypto: nodeCryptoProvider })),
  },
  asyncFlavour('node:crypto async', nodeCryptoProvider),
  asyncFlavour('WebCrypto async', webCryptoProvider),
]

const inputOf = (v: FileVector): file.EncodeInput => ({
  compressor: v.compressor,
  encryptor: v.encryptor,
  secret: v.secret,
  keyCke: hex(v.key),
  serializer: v.serializer,
  meta: hex(v.meta),
  value: hex(v.value),
  random: v.random === null ? undefined : hex(v.random),
})
const contextOf = (v: FileVector): file.DecodeContext => ({ secret: v.secret, keyHash: file.keyHash(hex(v.key)) })

/** Fixes the segment checksums and the header checksum after an edit, so the later checks are reached. */
function reseal(f: Uint8Array): void {
  const v = new DataView(f.buffer, f.byteOffset, f.byteLength)
  const m = v.getUint32(12, true)
  v.setBigUint64(24, xxh3_64(f.subarray(48, 48 + m)), true)
  v.setBigUint64(32, xxh3_64(f.subarray(48 + m)), true)
  v.setBigUint64(40, xxh3_64(f.subarray(0, 40)), true)
}

test('there are file vectors of every codec', (t) => {
  for (const c of [0, 1]) for (const e of [0, 1]) t.true(fileVectors.some((v) => v.compressor === c && v.encryptor === e))
})

for (const fl of flavours) {
  for (const v of fileVectors) {
    test(`file vector (${fl.name}): ${v.name}`, async (t) => {
      const bytes = hex(v.file)
      t.is(toHex(await fl.encode(inputOf(v))), v.file, 'encoding with the fixed random gives the vector')
      const d = await fl.decode(bytes, contextOf(v))
      t.is(toHex(d.key), v.key)
      t.is(toHex(d.meta), v.meta)
      t.is(toHex(d.value), v.value)
      t.is(d.serializer, v.serializer)
      t.like(d.header, { serializer: v.serializer, compressor: v.compressor, encryptor: v.encryptor })
      const h = await fl.head(bytes.subarray(0, 48 + d.header.metaLen), bytes.length, contextOf(v))
      t.is(toHex(h.key), v.key)
      t.is(toHex(h.meta), v.meta)
      if (v.encryptor === 1) {
        t.is(await outcome(() => fl.decode(bytes, { ...contextOf(v), secret: 'wrong' })), 'ERR_DECRYPT')
        t.is(await outcome(() => fl.decode(bytes, { ...contextOf(v), secret: null })), 'ERR_DECRYPT')
        const otherHash = file.keyHash(new Uint8Array([0]))
        t.is(await outcome(() => fl.decode(bytes, { ...contextOf(v), keyHash: otherHash })), 'ERR_DECRYPT')
        if (v.value.length >= 16) t.false(Buffer.from(v.file, 'hex').includes(Buffer.from(v.value, 'hex')), 'no plaintext')
      }
    })

    test(`file vector (${fl.name}): every truncation and flipped byte is a typed error: ${v.name}`, async (t) => {
      const bytes = hex(v.file)
      const ctx = contextOf(v)
      for (let n = 0; n < bytes.length; n++) {
        t.is(await outcome(() => fl.decode(bytes.subarray(0, n), ctx)), 'ERR_CORRUPT', `truncated to ${n}`)
      }
      t.is(await outcome(() => fl.decode(Buffer.concat([bytes, Buffer.from([0])]), ctx)), 'ERR_CORRUPT', 'one byte longer')
      for (let i = 0; i < bytes.length; i++) {
        const f = bytes.slice()
        f[i]! ^= 0x01
        t.is(await outcome(() => fl.decode(f, ctx)), 'ERR_CORRUPT', `flipped byte ${i}`)
        if (i >= 48) {
          // A deliberate edit that also fixes the checksums: the MAC catches it.
          reseal(f)
          const code = await outcome(() => fl.decode(f, ctx))
          if (v.encryptor === 1) t.is(code, 'ERR_DECRYPT', `resealed flipped byte ${i}`)
          else t.true(['OK', 'ERR_CORRUPT'].includes(code), `resealed flipped byte ${i}: ${code}`)
        }
      }
    })
  }
}

test('header checks come in the order of FORMAT.md §4, with the core codes', async (t) => {
  const v = fileVectors[0]!
  const ctx = contextOf(v)
  const sealed = (edit: (f: Uint8Array) => void) => {
    const f = hex(v.file)
    edit(f)
    new DataView(f.buffer).setBigUint64(40, xxh3_64(f.subarray(0, 40)), true)
    return f
  }
  const code = (f: Uint8Array) => outcome(() => keyfile.decodeKeyFileSync(f, ctx))
  const unsealed = hex(v.file)
  unsealed[4] = 2
  t.is(await code(unsealed), 'ERR_CORRUPT', 'the header checksum comes before the version')
  t.is(await code(sealed((f) => (f[4] = 2))), 'ERR_UNSUPPORTED_VERSION')
  t.is(await code(sealed((f) => (f[8] = 3))), 'ERR_UNSUPPORTED_CODEC')
  t.is(await code(sealed((f) => (f[6] = 9))), 'ERR_UNSUPPORTED_CODEC')
  t.is(await code(sealed((f) => (f[7] = 9))), 'ERR_UNSUPPORTED_CODEC')
  t.is(await code(sealed((f) => f.fill(0xff, 16, 24))), 'ERR_CORRUPT', 'a value length past 2^64')
  t.is(await code(sealed((f) => (f[0] = 0))), 'ERR_CORRUPT', 'bad magic')
  // A meta segment whose key length points past its end.
  const f = hex(v.file)
  f[48] = 200
  reseal(f)
  t.is(await code(f), 'ERR_CORRUPT')
  // A meta segment too short to hold the key length.
  const g = file.encodeHeader({ serializer: 1, compressor: 0, encryptor: 0, metaLen: 3, valueLen: 0, metaChecksum: xxh3_64(new Uint8Array(3)), valueChecksum: xxh3_64(new Uint8Array()) })
  t.is(await code(Buffer.concat([g, new Uint8Array(3)])), 'ERR_CORRUPT')
  // The head reader needs the whole meta segment.
  t.is(await outcome(() => file.decodeKeyFileHeadSync(hex(v.file).subarray(0, 50), v.file.length / 2, ctx)), 'ERR_CORRUPT')
})

test('argument errors: unknown codec ids, no secret, no key hash, used-up randomness, async-only provider', async (t) => {
  const v = fileVectors.find((x) => x.encryptor === 1)!
  const input = inputOf(v)
  t.is(await outcome(() => file.encodeKeyFileSync({ ...input, compressor: 2, crypto: nodeCryptoProvider })), 'ERR_UNSUPPORTED_CODEC')
  t.is(await outcome(() => file.encodeKeyFileSync({ ...input, encryptor: 2, crypto: nodeCryptoProvider })), 'ERR_UNSUPPORTED_CODEC')
  t.is(await outcome(() => file.encodeKeyFileSync({ ...input, secret: null, crypto: nodeCryptoProvider })), 'ERR_DECRYPT')
  t.is(await outcome(() => file.encodeKeyFileSync({ ...input, random: hex(v.random!).subarray(0, 40), crypto: nodeCryptoProvider })), 'ERR_INVALID_ARGUMENT')
  t.is(await outcome(() => file.encodeKeyFileSync({ ...input, crypto: webCryptoProvider })), 'ERR_NOT_SUPPORTED')
  t.is(await outcome(() => keyfile.decodeKeyFileSync(hex(v.file), { secret: v.secret, crypto: nodeCryptoProvider })), 'ERR_INVALID_ARGUMENT')
  // Without encryption no provider is needed, even in the blocking form.
  const plain = fileVectors.find((x) => x.encryptor === 0 && x.compressor === 1)!
  t.is(toHex(file.encodeKeyFileSync({ ...inputOf(plain), crypto: webCryptoProvider })), plain.file)
})

// ---- round trips and the native core as an oracle ---------------------------------------

const codecs = [0, 1].flatMap((compressor) => [0, 1].map((encryptor) => ({ compressor, encryptor })))

const fileInput = fc.record({
  key: fc.jsonValue(),
  serializer: fc.integer({ min: 0, max: 255 }),
  meta: someBytes,
  value: someBytes,
  secret: fc.oneof(fc.string(), fc.uint8Array({ maxLength: 64 })),
  random: fc.uint8Array({ minLength: 64, maxLength: 64 }),
})

for (const { compressor, encryptor } of codecs) {
  const codec = `compressor ${compressor}, encryptor ${encryptor}`
  test(`round trip through every flavour, equal bytes from both providers (${codec}) (fast-check)`, async (t) => {
    await fc.assert(
      fc.asyncProperty(fileInput, async (r) => {
        const keyCke = encodeKey(r.key)
        const input = { compressor, encryptor, keyCke, serializer: r.serializer, meta: r.meta, value: r.value, secret: r.secret }
        // A reader with a key refuses plaintext files (FORMAT.md §4.3): it gets the key only for encrypted ones.
        const ctx = { secret: encryptor === 1 ? r.secret : undefined, keyHash: file.keyHash(keyCke) }
        const fixed = await Promise.all(flavours.map((fl) => fl.encode({ ...input, random: r.random })))
        t.deepEqual(fixed[1], fixed[0])
        t.deepEqual(fixed[2], fixed[0])
        for (const fl of flavours) {
          const bytes = await fl.encode(input)
          for (const other of flavours) {
            const d = await other.decode(bytes, ctx)
            t.true(same(d.key, keyCke) && same(d.meta, r.meta) && same(d.value, r.value), `${fl.name} -> ${other.name}`)
            t.is(d.serializer, r.serializer)
          }
        }
      }),
      { numRuns: 40 },
    )
  })

  test(`the native core reads our files and we read its files (${codec}) (fast-check)`, (t) => {
    const secret = 'native s3cr3t'
    const theirs = mkdtempSync(join(tmpdir(), 'pure-codec-'))
    const dir = mkdtempSync(join(tmpdir(), 'pure-codec-'))
    t.teardown(() => {
      rmSync(theirs, { recursive: true, force: true })
      rmSync(dir, { recursive: true, force: true })
    })
    const store = native.NativeFileStore.open(theirs, {
      syncBlob: false,
      compressor,
      encryptionKey: encryptor === 1 ? Buffer.from(secret) : undefined,
    })
    const ours = native.NativeFileStore.open(dir, {
      syncBlob: false,
      compressor,
      encryptionKey: encryptor === 1 ? Buffer.from(secret) : undefined,
    })
    fc.assert(
      fc.property(fileInput, (r) => {
        const keyCke = encodeKey(r.key)
        // Ours, read by the core.
        const parts = file.encodeKeyFilePartsSync({
          compressor,
          encryptor,
          secret,
          keyCke,
          serializer: r.serializer,
          meta: r.meta,
          value: r.value,
          crypto: nodeCryptoProvider,
        })
        writeFileSync(join(dir, fileName(keyCke)), Buffer.concat([parts.head, parts.value]))
        const got = ours.getSync(buf(keyCke))
        t.true(got !== null && got.serializer === r.serializer && same(got.meta, r.meta) && same(got.value, r.value))
        // The core's, read by us.
        store.putSync([{ key: buf(keyCke), serializer: r.serializer, meta: buf(r.meta), value: buf(r.value) }])
        const bytes = readFileSync(store.filePath(buf(keyCke)))
        const d = keyfile.decodeKeyFileSync(bytes, {
          secret: encryptor === 1 ? secret : undefined,
          keyHash: file.keyHashOfFileName(fileName(keyCke)),
          crypto: nodeCryptoProvider,
        })
        t.true(same(d.key, keyCke) && same(d.meta, r.meta) && same(d.value, r.value))
        t.is(d.serializer, r.serializer)
        t.like(d.header, { compressor, encryptor })
      }),
      { numRuns: 100 },
    )
    t.true(readdirSync(dir).length > 1)
  })
}

// The speed of these primitives is measured, not tested: bench/pure-codec.mts.
