/**
 * The chunked blob encoder (ts/format/blob.ts ChunkedEncoder): a blob stored
 * as is (no compression, no encryption) seals each full chunk at once, from
 * the caller's bytes when they hold it whole (no copy), and a blob of whole
 * chunks gets no extra empty chunk at the end. Its bytes are the format's
 * (built here independently of the encoder) for every size and way of cutting
 * the blob into pieces, and the native core's.
 */
import test from 'ava'
import { readFileSync } from 'node:fs'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as k from 'konserve'
import { xxh3_64 } from '../ts/codec/xxhash.js'
import { CHUNK_SIZE, ChunkedEncoder, encodeBlobTail } from '../ts/format/blob.js'
import { segmentCodec } from '../ts/format/file.js'

const MiB = CHUNK_SIZE
const raw = segmentCodec(0, 0, {})
const pattern = (n: number) => {
  const b = new Uint8Array(n)
  for (let i = 0; i < n; i++) b[i] = (i * 31 + (i >> 12)) & 0xff
  return b
}

/** The value segment the format prescribes for a blob stored as is: its chunks, the table and the trailer. */
function expectedValue(blob: Uint8Array): Uint8Array {
  const chunks: Uint8Array[] = []
  for (let at = 0; at < blob.length; at += MiB) chunks.push(blob.subarray(at, at + MiB))
  if (chunks.length === 0) chunks.push(new Uint8Array(0))
  const tail = encodeBlobTail(
    chunks.map((c) => ({ length: c.length, checksum: xxh3_64(c) })),
    blob.length,
  )
  return Buffer.concat([...chunks, tail])
}

/**
 * Encodes `blob` cut into `pieces` (lengths; the rest as the last piece): the
 * value segment and what the sink was handed. `last`: the rest goes through
 * finishWith (the blob's last bytes, as a one-piece bassoc hands them), not
 * write + finish.
 */
function encode(blob: Uint8Array, pieces: number[], last = false) {
  const enc = new ChunkedEncoder(raw)
  const parts: Uint8Array[] = []
  const handed: Uint8Array[] = []
  const sink = function* (stored: Uint8Array) {
    handed.push(stored)
    parts.push(stored.slice())
  }
  const run = <T>(g: Generator<unknown, T, unknown>): T => {
    const r = g.next()
    if (!r.done) throw new Error('the encoder yielded')
    return r.value
  }
  let at = 0
  for (const n of pieces) {
    run(enc.write(blob.subarray(at, Math.min(blob.length, at + n)), sink))
    at = Math.min(blob.length, at + n)
  }
  let tail: Uint8Array
  if (last) tail = run(enc.finishWith(blob.subarray(at), sink))
  else {
    if (at < blob.length) run(enc.write(blob.subarray(at), sink))
    tail = run(enc.finish(sink))
  }
  return { value: Buffer.concat([...parts, tail]), handed, length: enc.valueLength }
}

test("stored as is: the format's bytes for every size around whole chunks, whatever the pieces (property)", (t) => {
  const sizes = [0, 1, MiB - 1, MiB, MiB + 1, 2 * MiB, 2 * MiB + 5, 3 * MiB]
  const cuts = [[], [MiB], [MiB, MiB], [1, MiB, MiB - 1], [4099, 7, MiB], [MiB - 1, 1]]
  for (let i = 0; i < 20; i++) cuts.push(Array.from({ length: 1 + Math.floor(Math.random() * 6) }, () => Math.floor(Math.random() * 1.5 * MiB)))
  for (const size of sizes) {
    const blob = pattern(size)
    const want = expectedValue(blob)
    for (const pieces of cuts) {
      for (const last of [false, true]) {
        const got = encode(blob, pieces, last)
        t.true(Buffer.from(want).equals(got.value), `size ${size}, pieces ${pieces.join(',')}${last ? ', the rest by finishWith' : ''}`)
        t.is(got.length, want.length)
      }
    }
  }
})

test("stored as is: a whole chunk in the caller's bytes goes to the sink without a copy, and a blob of whole chunks has no empty chunk after them", (t) => {
  const blob = pattern(2 * MiB)
  // One piece of two chunks, and two pieces of one chunk each: the sink gets the caller's memory.
  for (const pieces of [[2 * MiB], [MiB, MiB]]) {
    const { handed } = encode(blob, pieces)
    t.is(handed.length, 2, `pieces ${pieces}`)
    for (const h of handed) t.is(h.buffer, blob.buffer, "the caller's bytes, not a copy")
  }
  const { value } = encode(blob, [MiB, MiB])
  // table: 2 entries of 12 bytes, trailer 12 bytes
  t.is(value.length, 2 * MiB + 2 * 12 + 12)
})

test("stored as is: finishWith hands the sink every chunk of a one-piece blob, its last partial one too, from the caller's bytes", (t) => {
  for (const size of [1, MiB - 1, MiB + 1, 3 * MiB + 5]) {
    const blob = pattern(size)
    const { handed } = encode(blob, [], true)
    t.is(handed.length, Math.ceil(size / MiB), `size ${size}`)
    for (const h of handed) t.is(h.buffer, blob.buffer, `size ${size}: the caller's bytes, not a copy`)
  }
  // After a piece that left a partial chunk held, the rest is copied into it as write does: the same bytes.
  const blob = pattern(2 * MiB + 9)
  t.true(Buffer.from(expectedValue(blob)).equals(encode(blob, [7], true).value))
})

test('blobs of whole chunks, streamed in 1 MiB pieces: native and pure write the same value segment', async (t) => {
  const stores = {
    native: await k.connectFsStore(mkdtempSync(join(tmpdir(), 'konserve-enc-n-')), { native: true }),
    pure: await k.connectFsStore(mkdtempSync(join(tmpdir(), 'konserve-enc-p-')), { native: false }),
  }
  t.is(stores.native.backing.implementation, 'native')
  for (const size of [0, MiB, 2 * MiB, 3 * MiB + 1]) {
    const blob = pattern(size)
    const values: Buffer[] = []
    for (const s of [stores.native, stores.pure]) {
      const pieces = async function* () {
        for (let at = 0; at < size; at += MiB) yield blob.subarray(at, at + MiB)
      }
      await k.bassoc(s, 'b', pieces())
      const f = readFileSync(s.backing.filePath!(k.encodeKey('b')))
      const metaLen = f.readUInt32LE(12)
      values.push(f.subarray(48 + metaLen))
      t.true(Buffer.from(k.bget(s, 'b', ({ blob: b }) => b as Uint8Array, { sync: true }) as Uint8Array).equals(Buffer.from(blob)))
    }
    t.true(values[0]!.equals(values[1]!), `size ${size}`)
    t.true(values[1]!.equals(expectedValue(blob)), `size ${size}: the format's bytes`)
  }
})
