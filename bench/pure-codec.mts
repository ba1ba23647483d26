// Speed of the pure-TypeScript codec primitives on 1 MB (moved out of
// __test__/pure-codec.spec.ts, where it asserted nothing): xxHash, LZ4 (with
// the Rust core's LZ4 beside it), and a whole lz4+aes key file encoded and
// decoded with each crypto provider. Figures only; nothing is asserted.
//
//   node --import=tsx bench/pure-codec.mts
import { randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
import { webCryptoProvider } from '../ts/codec/aes.js'
import * as file from '../ts/format/file.js'
import * as keyfile from '../ts/format/keyfile.js'
import { encodeKey } from '../ts/format/key.js'
import { lz4Compress, lz4Decompress } from '../ts/codec/lz4.js'
import { xxh32, xxh3_128, xxh3_64 } from '../ts/codec/xxhash.js'
import { nodeCryptoProvider } from '../ts/crypto-node.js'

const native = createRequire(import.meta.url)('../index.js') as { lz4Compress(b: Buffer): Buffer; lz4Decompress(b: Buffer): Buffer }
const buf = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength)

const WARM_UP = 5
const RUNS = 10

function time(f: () => unknown): number {
  for (let i = 0; i < WARM_UP; i++) f()
  const start = performance.now()
  for (let i = 0; i < RUNS; i++) f()
  return (performance.now() - start) / RUNS
}

async function timeAsync(f: () => Promise<unknown>): Promise<number> {
  for (let i = 0; i < WARM_UP; i++) await f()
  const start = performance.now()
  for (let i = 0; i < RUNS; i++) await f()
  return (performance.now() - start) / RUNS
}

const random = randomBytes(1 << 20)
const items = Array.from({ length: 30000 }, (_, i) => ({ id: i, name: `item ${i}`, tags: ['a', 'b'] }))
const text = new TextEncoder().encode(JSON.stringify(items)).slice(0, 1 << 20)
const ms = (x: number) => `${x.toFixed(2)} ms`
console.log(`xxh3_64: ${ms(time(() => xxh3_64(random)))}, xxh3_128: ${ms(time(() => xxh3_128(random)))}, xxh32: ${ms(time(() => xxh32(random)))}`)
for (const [name, data] of [['JSON text', text], ['random', random]] as const) {
  const frame = lz4Compress(data)
  console.log(
    `lz4 ${name} (${data.length} -> ${frame.length} bytes): compress ${ms(time(() => lz4Compress(data)))}, decompress ${ms(time(() => lz4Decompress(frame)))}` +
      ` (native: ${ms(time(() => native.lz4Compress(buf(data))))}, ${ms(time(() => native.lz4Decompress(buf(frame))))})`,
  )
}
const keyCke = encodeKey('big')
const input = { compressor: 1, encryptor: 1, secret: 's3cr3t', keyCke, serializer: 2, meta: new Uint8Array(20), value: text }
const ctx = { secret: 's3cr3t', keyHash: file.keyHash(keyCke) }
const flavours = [
  {
    name: 'node:crypto sync',
    encode: async () => file.encodeKeyFileSync({ ...input, crypto: nodeCryptoProvider }),
    decode: async (b: Uint8Array) => keyfile.decodeKeyFileSync(b, { ...ctx, crypto: nodeCryptoProvider }),
  },
  ...([['node:crypto async', nodeCryptoProvider], ['WebCrypto async', webCryptoProvider]] as const).map(([name, crypto]) => ({
    name,
    encode: () => file.encodeKeyFileAsync({ ...input, crypto }),
    decode: (b: Uint8Array) => keyfile.decodeKeyFileAsync(b, { ...ctx, crypto }),
  })),
]
for (const fl of flavours) {
  const bytes = await fl.encode()
  const enc = await timeAsync(() => fl.encode())
  const dec = await timeAsync(() => fl.decode(bytes))
  console.log(`lz4+aes file of 1 MB JSON, ${fl.name}: encode ${ms(enc)}, decode ${ms(dec)}`)
}
