/**
 * The tiered store under interleavings an adversarial review found wrong
 * (2026-12-07), each checked to fail before its fix:
 * - a read while a blob is being written to the back filled the front with
 *   the old value, answered for good after the blob committed;
 * - a blocking close of the back store that a write-behind tier over it
 *   refused had closed the back anyway: the tier's acknowledged queued
 *   writes could no longer reach it;
 * - `flush` waited for the write-behind queue to be empty, so a writer that
 *   kept writing kept it waiting;
 * - a background write that failed (and was reported) left its key counted
 *   as queued for good: blob writes of the key and blocking closes refused.
 */
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import gensync from 'gensync'
import * as k from 'konserve'
import type { Store } from 'konserve'

const fileStore = () => k.connectFsStore(join(mkdtempSync(join(tmpdir(), 'konserve-tier-races-')), 'store'), { durable: false }) as Promise<Store>

for (const writePolicy of ['write-through', 'write-around', 'write-behind'] as const) {
  test(`${writePolicy}: a get while a blob is written to the back does not leave the old value in the front`, async (t) => {
    const back = await fileStore()
    await k.assoc(back, 'b', { old: true })
    const tier = k.tieredStore(k.newMemStore({ sync: true }), back, { writePolicy })
    let release!: () => void
    const gate = new Promise<void>((r) => {
      release = r
    })
    async function* source() {
      yield new Uint8Array([1, 2, 3])
      await gate
      yield new Uint8Array([4])
    }
    const writing = k.bassoc(tier, 'b', source())
    await new Promise((r) => setTimeout(r, 50))
    // The blob is not committed: the back's old value, which this read may copy into the front.
    t.deepEqual(await k.get(tier, 'b'), { old: true })
    release()
    await writing
    t.deepEqual([...((await k.get(tier, 'b')) as Uint8Array)], [1, 2, 3, 4], 'the blob, not the old value')
    t.deepEqual([...((await k.get(back, 'b')) as Uint8Array)], [1, 2, 3, 4])
    // A blob read through the tier stays in the back (README: streamed blobs and logs live in the back only).
    const front = k.newMemStore({ sync: true })
    const other = k.tieredStore(front, back, { writePolicy })
    t.deepEqual([...((await k.get(other, 'b')) as Uint8Array)], [1, 2, 3, 4])
    t.false(k.exists(front, 'b', { sync: true }), 'not copied into the front')
  })
}

test('a blocking close of the back that a write-behind tier over it refuses leaves both open, and the queued write lands', async (t) => {
  const dir = join(mkdtempSync(join(tmpdir(), 'konserve-tier-races-')), 'store')
  const back = (await k.connectFsStore(dir, { durable: false })) as Store
  const tier = k.tieredStore(k.newMemStore({ sync: true }), back, { writePolicy: 'write-behind', onError: () => {} })
  await k.assoc(tier, 'big', 'v'.repeat(2_000_000))
  await k.assoc(tier, 'x', 'acknowledged')
  t.throws(() => k.close(back, { sync: true }), { code: 'ERR_NOT_SUPPORTED', message: /still queued/ })
  t.is(await k.get(back, 'nothing'), undefined, 'the back is still open')
  await k.flush(tier)
  t.is(await k.get(back, 'x'), 'acknowledged')
  await k.close(back)
  const again = (await k.connectFsStore(dir, { durable: false })) as Store
  t.is(await k.get(again, 'x'), 'acknowledged', 'on disk')
  t.is(((await k.get(again, 'big')) as string).length, 2_000_000)
})

test('flush resolves once the writes queued before it are in the back, while a writer keeps writing', async (t) => {
  const back = await fileStore()
  const tier = k.tieredStore(k.newMemStore({ sync: true }), back, { writePolicy: 'write-behind' })
  let stop = false
  let n = 0
  const writer = (async () => {
    while (!stop) {
      await k.assoc(tier, `k${n % 50}`, 'x'.repeat(20_000) + n++)
      await new Promise((r) => setImmediate(r))
    }
  })()
  await new Promise((r) => setTimeout(r, 100))
  await k.assoc(tier, 'marker', 'm')
  const started = performance.now()
  await k.flush(tier)
  const waited = performance.now() - started
  const written = n
  stop = true
  await writer
  t.is(await k.get(back, 'marker'), 'm')
  t.true(written > 0, 'the writer was writing')
  t.true(waited < 2_000, `flush took ${waited.toFixed(0)} ms while the writer ran (it waited for the queue to empty before)`)
  await k.flush(tier)
})

test('a background write that failed and was reported does not count as queued: blob writes and a blocking close go on', async (t) => {
  const mem = k.newMemStore({ sync: true })
  const inner = (mem as unknown as { backing: k.Backing }).backing
  let failPut = true
  const backing: k.Backing = Object.assign(Object.create(inner) as k.Backing, {
    put: gensync({
      sync: (w: Parameters<k.Backing['put']['sync']>[0]) => {
        if (failPut) throw new Error('disk full')
        return inner.put.sync(w)
      },
      async: async (w: Parameters<k.Backing['put']['sync']>[0]) => {
        if (failPut) throw new Error('disk full')
        return inner.put.async(w)
      },
    }),
  })
  const back = new k.Store(backing, {})
  const errors: unknown[] = []
  const tier = k.tieredStore(k.newMemStore({ sync: true }), back, { writePolicy: 'write-behind', onError: (e) => errors.push(e) })
  await k.assoc(tier, 'x', 1)
  await t.throwsAsync(k.flush(tier) as Promise<unknown>, { message: /disk full/ })
  t.is(errors.length, 1)
  t.is(await k.get(tier, 'x'), 1, 'the tier still answers the value it was given')
  failPut = false
  await k.flush(tier)
  t.true(await k.bassoc(tier, 'x', new Uint8Array([7])))
  t.deepEqual([...((await k.get(tier, 'x')) as Uint8Array)], [7], 'the blob, not the failed write')
  t.notThrows(() => k.close(tier, { sync: true }))
})
