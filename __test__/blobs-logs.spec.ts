/**
 * Streamed blobs and append logs through the public API, on every store kind,
 * in sync and async form: sizes around the 1 MiB chunk, byte ranges, stream
 * inputs and outputs, failures that must leave the old blob, and logs with
 * revisions, trimming and streaming reads.
 */
import test from 'ava'
import { readFileSync, readdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { Readable } from 'node:stream'
import * as k from 'konserve'
import { type Api, type Mode, api, storeKinds } from './helpers/api.js'

const MiB = 1 << 20
const modes: Mode[] = ['sync', 'async']

/** Deterministic bytes that LZ4 compresses a little. */
function pattern(n: number, seed = 1): Buffer {
  const b = Buffer.alloc(n)
  let x = seed
  for (let i = 0; i < n; i++) {
    if (i % 64 === 0) x = (x * 1103515245 + 12345) >>> 0
    b[i] = (x >>> 16) + (i & 7)
  }
  return b
}

async function readAll(stream: AsyncIterable<Uint8Array | string>): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of stream) chunks.push(Buffer.from(c as Uint8Array))
  return Buffer.concat(chunks)
}

/** Pieces of odd sizes, as a socket would give them. */
function* pieces(b: Buffer): Generator<Buffer> {
  const sizes = [1, 7, 65536, 3, MiB + 5, 100000]
  for (let at = 0, i = 0; at < b.length; i++) {
    const n = sizes[i % sizes.length]!
    yield b.subarray(at, at + n)
    at += n
  }
}

function stagingFiles(s: k.Store): string[] {
  const dir = s.path
  if (!dir) return []
  return readdirSync(dir).filter((n) => n.endsWith('.stage'))
}

for (const kind of storeKinds) {
  for (const mode of modes) {
    const title = (s: string) => `${kind.name} ${mode}: ${s}`
    const setup = async (options = {}): Promise<[k.Store, Api]> => [await kind.open(mode, options), api(mode)]

    test(title('blobs around the chunk size round-trip, whole and in ranges'), async (t) => {
      const [s, a] = await setup()
      for (const n of [0, 1, MiB - 1, MiB, MiB + 1, 2 * MiB + MiB / 2]) {
        const data = pattern(n, n)
        t.true(await a.bassoc(s, ['blob', n], data))
        t.true(Buffer.from(await a.readBlob(s, ['blob', n])).equals(data), `size ${n}`)
        for (const [offset, length] of [
          [0, 10],
          [MiB - 3, 10],
          [MiB, 1],
          [n - 1, 5],
          [n + 10, 5],
          [5, undefined],
        ] as Array<[number, number | undefined]>) {
          if (offset < 0) continue
          const got = Buffer.from(await a.readBlob(s, ['blob', n], { offset, length }))
          const want = data.subarray(Math.min(offset, n), length === undefined ? n : Math.min(n, offset + length))
          t.true(got.equals(want), `size ${n} range ${offset}+${length}`)
        }
        const meta = await a.getMeta(s, ['blob', n])
        t.is(meta.type, 'binary')
      }
    })

    test(title('bget gives the blob (sync) or a stream (async); missing keys and values'), async (t) => {
      const [s, a] = await setup()
      const data = pattern(MiB + 17)
      await a.bassoc(s, 'b', data)
      const got = await a.bget(
        s,
        'b',
        mode === 'sync'
          ? (acc: k.BlobAccess) => {
              t.is(acc.size, data.length)
              return acc.blob!
            }
          : async (acc: k.BlobAccess) => {
              t.is(acc.size, data.length)
              return await readAll(acc.stream!)
            },
      )
      t.true(Buffer.from(got).equals(data))
      t.is(await a.bget(s, 'missing', () => t.fail('called for a missing key')), undefined)
      t.is(await a.readBlob(s, 'missing'), undefined)
      await a.assoc(s, 'value', { not: 'binary' })
      await t.throwsAsync(a.readBlob(s, 'value'), { code: 'ERR_NOT_BINARY' } as any)
      // A sync blob or log write cannot wait for a queued write of its key (write-behind).
      if (kind.name.includes('write-behind')) {
        if (mode === 'sync') await t.throwsAsync(a.bassoc(s, 'value', 'text'), { code: 'ERR_NOT_SUPPORTED' } as any)
        await k.flush(s)
      }
      // A blob replaces a value and a value replaces a blob.
      await a.bassoc(s, 'value', 'text')
      t.is(Buffer.from(await a.readBlob(s, 'value')).toString(), 'text')
      await a.assoc(s, 'b', 1)
      t.is(await a.get(s, 'b'), 1)
      await t.throwsAsync(a.readBlob(s, 'b'), { code: 'ERR_NOT_BINARY' } as any)
    })

    if (mode === 'async') {
      test(title('bassoc streams Readables, web streams and async iterables; readBlob streams out'), async (t) => {
        const [s] = await setup()
        const data = pattern(3 * MiB + 12345)
        await k.bassoc(s, 'node', Readable.from(pieces(data)))
        await k.bassoc(s, 'web', Readable.toWeb(Readable.from(pieces(data))) as ReadableStream<Uint8Array>)
        await k.bassoc(
          s,
          'iter',
          (async function* () {
            yield* pieces(data)
          })(),
        )
        for (const key of ['node', 'web', 'iter']) {
          t.true((await k.readBlob(s, key))!.equals(data), key)
          t.true((await readAll((await k.readBlob(s, key, { as: 'stream' }))!)).equals(data), `${key} as stream`)
          t.true((await readAll((await k.readBlob(s, key, { as: 'web' }))! as any)).equals(data), `${key} as web`)
          const part = await readAll((await k.readBlob(s, key, { as: 'stream', offset: MiB - 100, length: MiB + 200 }))!)
          t.true(part.equals(data.subarray(MiB - 100, 2 * MiB + 100)), `${key} range stream`)
        }
        t.is((await k.getMeta(s, 'node'))!.revision, 1)
      })

      test(title('a stream that fails leaves the old blob and nothing staged'), async (t) => {
        const [s] = await setup()
        const old = pattern(1000)
        await k.bassoc(s, 'b', old)
        const failing = (async function* () {
          yield pattern(2 * MiB)
          throw new Error('the source broke')
        })()
        await t.throwsAsync(k.bassoc(s, 'b', failing), { message: /the source broke/ })
        t.true((await k.readBlob(s, 'b'))!.equals(old))
        t.deepEqual(stagingFiles(s), [])
        await t.throwsAsync(k.bassoc(s, 'b', (async function* () { yield 42 as any })()), { code: 'ERR_INVALID_ARGUMENT' } as any)
        t.true((await k.readBlob(s, 'b'))!.equals(old))
        t.is((await k.getMeta(s, 'b'))!.revision, 1)
      })
    } else {
      test(title('streams need the async form'), async (t) => {
        const [s] = await setup()
        t.throws(() => k.bassoc(s, 'b', Readable.from([Buffer.from('x')]), { sync: true }), { code: 'ERR_INVALID_ARGUMENT' } as any)
        t.false(k.exists(s, 'b', { sync: true }))
        k.bassoc(s, 'b', 'x', { sync: true })
        t.throws(() => k.readBlob(s, 'b', { sync: true, as: 'stream' }), { code: 'ERR_INVALID_ARGUMENT' } as any)
      })
    }

    test(title('blobFile points at the plain bytes, or refuses'), async (t) => {
      const [s, a] = await setup()
      const data = pattern(2 * MiB + 3)
      await a.bassoc(s, 'b', data)
      t.is(await a.blobFile(s, 'missing'), undefined)
      const plain = kind.name === 'file' || kind.name === 'pure file' || kind.name.startsWith('cached') || kind.name.startsWith('tiered')
      if (!plain) {
        await t.throwsAsync(a.blobFile(s, 'b'), { code: 'ERR_NOT_SUPPORTED' } as any)
        return
      }
      const where = await a.blobFile(s, 'b')
      t.is(where.length, data.length)
      t.is<string | undefined, string | undefined>(dirname(where.file), s.path)
      t.true(readFileSync(where.file).subarray(where.offset, where.offset + where.length).equals(data))
    })

    test(title('logs: appends, revisions, streaming reads, trimming'), async (t) => {
      const [s, a] = await setup()
      const n = 300
      for (let i = 0; i < n; i++) t.is(await a.append(s, 'log', { i }), i + 1)
      const meta = await a.getMeta(s, 'log')
      t.is(meta.type, 'append-log')
      t.is(meta.revision, n)
      t.deepEqual(await a.log(s, 'log'), Array.from({ length: n }, (_, i) => ({ i })))
      t.deepEqual(await a.get(s, 'log'), Array.from({ length: n }, (_, i) => ({ i })))
      t.is(await a.reduceLog(s, 'log', (acc: number, e: { i: number }) => acc + e.i, 0), (n * (n - 1)) / 2)
      if (mode === 'async') {
        let count = 0
        for await (const e of k.logStream(s, 'log')) t.is((e as { i: number }).i, count++)
        t.is(count, n)
        for await (const _ of k.logStream(s, 'nolog')) t.fail('a missing log has no elements')
      }
      // Trimming: the revision goes up by one; appends continue.
      t.is(await a.trimLog(s, 'log', { keepLast: 10 }), n - 10)
      t.is((await a.getMeta(s, 'log')).revision, n + 1)
      t.deepEqual(await a.log(s, 'log'), Array.from({ length: 10 }, (_, i) => ({ i: n - 10 + i })))
      t.is(await a.append(s, 'log', 'next'), 11)
      t.is((await a.getMeta(s, 'log')).revision, n + 2)
      t.is(await a.trimLog(s, 'log', { dropFirst: 3 }), 3)
      t.is((await a.log(s, 'log'))[0].i, n - 7)
      t.is(await a.trimLog(s, 'log', { keepLast: 100 }), 0)
      t.is(await a.trimLog(s, 'log', { keepLast: 0 }), 8)
      t.deepEqual(await a.log(s, 'log'), [])
      t.is((await a.getMeta(s, 'log')).revision, n + 4)
      t.is(await a.append(s, 'log', 'again'), 1)
      t.is((await a.getMeta(s, 'log')).revision, n + 5)
      t.deepEqual(await a.log(s, 'log'), ['again'])
      await t.throwsAsync(a.trimLog(s, 'log', { keepLast: 1, dropFirst: 1 }), { code: 'ERR_INVALID_ARGUMENT' } as any)
      t.is(await a.trimLog(s, 'nolog', { keepLast: 1 }), 0)
      // Conditional appends and trims.
      const err = await t.throwsAsync(a.append(s, 'log', 'x', { expectedRevision: 1 }), { code: 'ERR_REVISION_MISMATCH' } as any)
      t.is((err as k.KonserveError).actualRevision, n + 5)
      t.is(await a.append(s, 'log', 'x', { expectedRevision: n + 5 }), 2)
      await t.throwsAsync(a.trimLog(s, 'log', { keepLast: 0, expectedRevision: 3 }), { code: 'ERR_REVISION_MISMATCH' } as any)
      t.is(await a.append(s, 'fresh', 1, { expectedRevision: 0 }), 1)
      await t.throwsAsync(a.append(s, 'fresh', 1, { expectedRevision: 0 }), { code: 'ERR_REVISION_MISMATCH' } as any)
      // keys lists logs with their revision; dissoc removes a log whole.
      const listed = (await a.keys(s)).find((m: k.Metadata) => m.key === 'log')
      t.is(listed.revision, n + 6)
      t.true(await a.dissoc(s, 'log'))
      t.is(await a.log(s, 'log'), undefined)
      // A sync log or blob write waits for no queued write (write-behind): flush first.
      if (kind.name.includes('write-behind')) await k.flush(s)
      t.is(await a.append(s, 'log', 'reborn'), 1)
      t.is((await a.getMeta(s, 'log')).revision, 1)
      // A value written over a log replaces it.
      await a.assoc(s, 'log', 'plain')
      await t.throwsAsync(a.append(s, 'log', 1), { code: 'ERR_NOT_A_LOG' } as any)
      await t.throwsAsync(a.trimLog(s, 'log', { keepLast: 1 }), { code: 'ERR_NOT_A_LOG' } as any)
      t.is(await a.get(s, 'log'), 'plain')
    })

    test(title('a log keeps its metadata and takes the newest record time as lastWrite'), async (t) => {
      const [s, a] = await setup()
      await a.append(s, 'l', 1, { meta: { owner: 'me' } })
      const first = (await a.getMeta(s, 'l')).lastWrite.getTime()
      // The next stamp is later than the first once the wall clock has passed it.
      for (const until = Date.now() + 10_000; Date.now() <= first; ) {
        if (Date.now() > until) throw new Error(`the clock did not pass ${first}`)
        await new Promise((r) => setImmediate(r))
      }
      await a.append(s, 'l', 2)
      const m = await a.getMeta(s, 'l')
      t.is(m.owner, 'me')
      t.true(m.lastWrite.getTime() > first)
    })
  }
}
