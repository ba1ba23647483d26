/**
 * The Node stream of a blob (bget's `stream`, readBlob's `as: 'stream'`,
 * ts/node/streams.ts) reads pieces ahead of its consumer, two at a time:
 * the pieces still arrive whole and in order; a damaged chunk fails the
 * stream at its turn, after every piece before it; a stream destroyed with
 * reads in flight leaves no unhandled rejection behind (ava fails a test
 * file on one) and its source closed. Both engines.
 */
import test from 'ava'
import { openSync, writeSync, closeSync, readSync } from 'node:fs'
import { join } from 'node:path'
import { randomFillSync } from 'node:crypto'
import type { Readable } from 'node:stream'
import * as k from 'konserve'
import { tempDir } from './helpers/api.js'

const MiB = 1 << 20
const SIZE = 5 * MiB + 12345

for (const native of [true, false]) {
  const engine = native ? 'native' : 'pure'

  test(`${engine}: a streamed blob arrives whole, in order, in pieces of at most 1 MiB`, async (t) => {
    const store = await k.connectFsStore(join(tempDir('konserve-stream-'), 's'), { native })
    const blob = randomFillSync(Buffer.alloc(SIZE))
    await k.bassoc(store, 'b', blob)
    const pieces = await k.bget(store, 'b', async ({ stream }) => {
      const got: Buffer[] = []
      for await (const p of stream as Readable) got.push(p as Buffer)
      return got
    })
    t.true(pieces!.every((p) => p.length <= MiB))
    t.is(pieces!.length, 6)
    t.true(Buffer.concat(pieces!).equals(blob))
    // A range starting mid-chunk: the first piece ends at the chunk boundary.
    const range = (await k.readBlob(store, 'b', { as: 'stream', offset: MiB + 7, length: 2 * MiB })) as Readable
    const got: Buffer[] = []
    for await (const p of range) got.push(p as Buffer)
    t.deepEqual(
      got.map((p) => p.length),
      [MiB - 7, MiB, 7],
    )
    t.true(Buffer.concat(got).equals(blob.subarray(MiB + 7, 3 * MiB + 7)))
    await k.close(store)
  })

  test(`${engine}: a damaged chunk fails the stream after the pieces before it`, async (t) => {
    const store = await k.connectFsStore(join(tempDir('konserve-stream-'), 's'), { native })
    const blob = randomFillSync(Buffer.alloc(SIZE))
    await k.bassoc(store, 'b', blob)
    const where = (await k.blobFile(store, 'b'))!
    // Flip a byte of chunk 3 in the file.
    const fd = openSync(where.file, 'r+')
    const one = Buffer.alloc(1)
    readSync(fd, one, 0, 1, where.offset + 3 * MiB + 100)
    one[0] = one[0]! ^ 0xff
    writeSync(fd, one, 0, 1, where.offset + 3 * MiB + 100)
    closeSync(fd)
    const got: Buffer[] = []
    const err = await t.throwsAsync(
      k.bget(store, 'b', async ({ stream }) => {
        for await (const p of stream as Readable) got.push(p as Buffer)
      }),
    )
    t.is((err as k.KonserveError).code, 'ERR_CORRUPT')
    t.is(got.length, 3, 'the three pieces before the damaged chunk')
    t.true(Buffer.concat(got).equals(blob.subarray(0, 3 * MiB)))
    await k.close(store)
  })

  test(`${engine}: a stream destroyed with reads in flight leaves nothing behind`, async (t) => {
    const store = await k.connectFsStore(join(tempDir('konserve-stream-'), 's'), { native })
    await k.bassoc(store, 'b', randomFillSync(Buffer.alloc(SIZE)))
    for (let i = 0; i < 20; i++) {
      const s = (await k.readBlob(store, 'b', { as: 'stream' })) as Readable
      await new Promise<void>((resolve) => {
        s.once('data', () => {
          s.destroy()
          resolve()
        })
      })
    }
    // The key is writable at once (no read holds anything that blocks it) and reads back.
    await k.bassoc(store, 'b', Buffer.from('after'))
    t.is(await k.bget(store, 'b', async ({ stream }) => {
      let s = ''
      for await (const p of stream as Readable) s += p.toString()
      return s
    }), 'after')
    // Reads that settle after the destroy must not surface as unhandled rejections.
    await new Promise((resolve) => setTimeout(resolve, 50))
    await k.close(store)
  })
}
