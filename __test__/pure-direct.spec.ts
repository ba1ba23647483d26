/**
 * Large durable blobs written past the page cache by the pure engine
 * (ts/backends/pure/direct.ts, the core's `directBlobs`): with
 * `directBlobs: true` a descriptor opened O_DIRECT on the staging file takes
 * the blob's whole blocks (seen in /proc/self/fdinfo while the blob is
 * written), and the file is byte for byte the buffered path's, for every
 * codec, both calling forms, sizes around 1 MiB and the 4096-byte block, and
 * any cut into pieces; not direct with `false`, without durability, or below
 * the volume of `'auto'`. A file system that refuses a direct write (a
 * misaligned buffer gets the kernel's EINVAL, as a file system without direct
 * I/O gives) gets the bytes buffered, and the store stops trying. An aborted
 * writer gives its descriptor and aligned buffer back.
 */
import test from 'ava'
import { randomBytes } from 'node:crypto'
import { constants, readFileSync, realpathSync } from 'node:fs'
import * as k from 'konserve'
import { encodeBlobFileSync } from '../ts/format/blob.js'
import { createPureCodec } from '../ts/backends/pure/codec.js'
import { testing } from '../ts/backends/pure/direct.js'
import { type PureFileBacking, openPureStore } from '../ts/backends/pure/store.js'
import { descriptorsIn, fdsIn } from './helpers/api.js'
import * as H from './helpers/pure.js'
const { MiB, SECRET, META, codecs, codecName, modes, same, key, pattern, tempDir, stagingFiles, cut } = H

const O_DIRECT = (constants as { O_DIRECT?: number }).O_DIRECT ?? 0

/** Whether a descriptor of this process is open with O_DIRECT on a staging file in `dir`. */
function directOpenIn(dir: string): boolean {
  return descriptorsIn(dir).some(({ fd, path }) => {
    if (!path.endsWith('.stage')) return false
    let info: string
    try {
      info = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8')
    } catch {
      return false // closed since the listing
    }
    const flags = /^flags:\s*([0-7]+)$/m.exec(info)?.[1]
    return flags !== undefined && (Number.parseInt(flags, 8) & O_DIRECT) !== 0
  })
}

function openStore(
  dir: string,
  c: H.Codec,
  options: { syncBlob?: boolean; directBlobs?: boolean; directBlobsVolume?: number } = {},
): PureFileBacking {
  const codec = createPureCodec(c.compressor, c.encryptor ? new TextEncoder().encode(SECRET) : undefined)
  return openPureStore.sync(dir, codec, { syncBlob: true, directBlobs: true, directBlobsVolume: 0, ...options })
}

/** Writes `pieces` as the blob `k`; returns whether an O_DIRECT descriptor was open on its staging file after any piece. */
async function writeWatched(store: PureFileBacking, mode: H.Mode, k: Uint8Array, pieces: Uint8Array[]): Promise<boolean> {
  let seen = false
  const sink = mode === 'sync' ? store.blobWriter.sync(k, META) : await store.blobWriter.async(k, META)
  for (const p of pieces) {
    if (mode === 'sync') sink.write.sync(p)
    else await sink.write.async(p)
    seen ||= directOpenIn(store.dir)
  }
  if (mode === 'sync') sink.commit.sync()
  else await sink.commit.async()
  return seen
}

const SIZES = [MiB - 1, MiB + 1, MiB + 4097, 3 * MiB, 5 * MiB + 13]

if (O_DIRECT !== 0) {
  for (const c of codecs) {
    for (const mode of modes) {
      test(`directBlobs: true (${codecName(c)}, ${mode}): whole blocks go through an O_DIRECT descriptor; the file is the buffered path's, read back whole`, async (t) => {
        const dir = realpathSync(tempDir(t))
        const store = openStore(dir, c)
        for (const [i, n] of SIZES.entries()) {
          const blob = i % 2 ? pattern(n, i) : new Uint8Array(randomBytes(n))
          const k = key(`blob-${i}`)
          // Odd pieces: the aligned buffer fills across writes, and the switch comes mid-piece.
          const direct = await writeWatched(store, mode, k, cut(blob, [333_333, 1, MiB + 7, 65_536]))
          t.deepEqual(stagingFiles(dir), [], 'no staging file is left')
          t.is(fdsIn(dir), 0, 'no descriptor is left')
          // A chunk is stored once the next byte arrives, so only a blob past 1 MiB has one stored (and
          // the switch made) before its commit; compressed, its chunks may stay under the threshold.
          if (c.compressor === 0 && n > MiB) t.true(direct, `${n} bytes: an O_DIRECT descriptor was open on the staging file`)
          const bytes = readFileSync(store.filePath(k))
          if (c.encryptor === 0) {
            const whole = encodeBlobFileSync({ compressor: c.compressor, encryptor: 0, keyCke: k, meta: META, value: blob })
            t.true(same(bytes, whole), `${n} bytes: the file equals the whole-file encoding`)
          }
          const got = mode === 'sync' ? store.get.sync(k)! : (await store.get.async(k))!
          t.true(same(got.value, blob), `${n} bytes read back`)
        }
      })
    }
  }

  test('not direct with directBlobs: false, without durability, or below the volume of auto; a blob at 1 MiB or less never', async (t) => {
    const blob = pattern(3 * MiB)
    const plain = { compressor: 0, encryptor: 0 }
    const cases: Array<[string, Parameters<typeof openStore>[2]]> = [
      ['directBlobs: false', { directBlobs: false }],
      ['not durable', { syncBlob: false }],
      ["'auto', below its volume", { directBlobsVolume: 2 ** 40 }],
    ]
    for (const [what, options] of cases) {
      const dir = realpathSync(tempDir(t))
      const store = openStore(dir, plain, options)
      t.false(await writeWatched(store, 'async', key('b'), cut(blob, [MiB / 2])), what)
      t.true(same(store.get.sync(key('b'))!.value, blob), `${what}: read back`)
    }
    const dir = realpathSync(tempDir(t))
    const store = openStore(dir, plain)
    t.false(await writeWatched(store, 'async', key('small'), cut(pattern(MiB - 200), [4096])), 'a blob that ends below the threshold')
  })

  // Serial: the misaligned buffer is the module's, for every store while it is set.
  test.serial(
    'a refused direct write (EINVAL: a misaligned buffer, as a file system without direct I/O answers) is written through the page cache: the same file; the store stops trying',
    async (t) => {
      const dir = realpathSync(tempDir(t))
      const store = openStore(dir, { compressor: 0, encryptor: 0 })
      testing.misalign = true
      t.teardown(() => {
        testing.misalign = false
      })
      for (const mode of modes) {
        for (const [i, n] of [MiB + 4097, 4 * MiB + 5].entries()) {
          const blob = pattern(n, i)
          const k = key(`${mode}-${i}`)
          await writeWatched(store, mode, k, cut(blob, [700_001]))
          const whole = encodeBlobFileSync({ compressor: 0, encryptor: 0, keyCke: k, meta: META, value: blob })
          t.true(same(readFileSync(store.filePath(k)), whole), `${mode}, ${n} bytes: the file equals the whole-file encoding`)
          t.deepEqual(stagingFiles(dir), [])
        }
      }
      // Refused once, the store writes buffered from then on, even with aligned buffers.
      testing.misalign = false
      t.false(await writeWatched(store, 'async', key('later'), cut(pattern(3 * MiB), [MiB])), 'no O_DIRECT descriptor after the refusal')
      const again = openStore(dir, { compressor: 0, encryptor: 0 })
      t.true(await writeWatched(again, 'async', key('reopened'), cut(pattern(3 * MiB), [MiB])), 'a store opened again tries direct writes again')
    },
  )

  test('an aborted writer gives back its descriptor and aligned buffer: no file left, and 40 blobs after it (more than the pool holds) still go direct', async (t) => {
    const dir = realpathSync(tempDir(t))
    const store = openStore(dir, { compressor: 0, encryptor: 0 })
    for (let i = 0; i < 40; i++) {
      const sink = await store.blobWriter.async(key('aborted'), META)
      await sink.write.async(pattern(2 * MiB + 9, i))
      t.true(directOpenIn(dir))
      sink.abort()
    }
    t.deepEqual(stagingFiles(dir), [])
    t.is(fdsIn(dir), 0)
    for (let i = 0; i < 40; i++) t.true(await writeWatched(store, i % 2 ? 'sync' : 'async', key(`b${i}`), [pattern(MiB + 5000, i)]), `blob ${i}`)
  })

  test('through the public API: connectFsStore(dir, { native: false, directBlobs: true }) writes a streamed blob direct', async (t) => {
    const dir = realpathSync(tempDir(t))
    const store = await k.connectFsStore(dir, { native: false, directBlobs: true })
    const blob = randomBytes(4 * MiB + 3)
    let seen = false
    const pieces = async function* () {
      for (let at = 0; at < blob.length; at += 500_000) {
        seen ||= directOpenIn(dir)
        yield blob.subarray(at, at + 500_000)
      }
    }
    await k.bassoc(store, 'streamed', pieces())
    t.true(seen)
    t.true(Buffer.from((await k.readBlob(store, 'streamed'))!).equals(blob))
    await k.close(store)
  })
}
