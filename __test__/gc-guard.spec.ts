/**
 * The GC guard (konserve.gc-guard): a sweep never deletes what a sequence of
 * unreferenced writes (values first, the pointer that reaches them last) wrote
 * while it is in flight, in this process or in another one (file stores,
 * native and pure, mixed); it still collects garbage when nothing is in
 * flight. Children are real processes; every step waits for a message, no sleeps.
 */
import test from 'ava'
import { spawn } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import * as k from 'konserve'
import { tempDir } from './helpers/api.js'

const WRITER = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'gc-guard-writer.mjs')

/** A child writer: `next()` is its next JSON report, `send(m)` an order. */
function writer(dir: string, impl: string, mode: string, guard: 'on' | 'off', rounds: number) {
  const child = spawn(process.execPath, [WRITER, dir, impl, mode, guard, String(rounds)], { stdio: ['pipe', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d) => (stderr += d))
  const reports = createInterface({ input: child.stdout })[Symbol.asyncIterator]()
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve))
  return {
    async next(): Promise<any> {
      const r = await reports.next()
      if (r.done) throw new Error(`the writer ended early (exit ${await exited}): ${stderr}`)
      return JSON.parse(r.value)
    },
    send(m: unknown) {
      child.stdin.write(`${JSON.stringify(m)}\n`)
    },
    async end() {
      child.stdin.end()
      const code = await exited
      if (code !== 0) throw new Error(`the writer exited ${code}: ${stderr}`)
    },
  }
}

const id = (key: unknown) => JSON.stringify(key)

/** The whitelist: the root and what it points to. */
async function live(store: k.Store): Promise<k.Key[]> {
  const root = (await k.get(store, 'root')) as { keys: k.Key[] } | undefined
  return ['root', ...(root?.keys ?? [])]
}

for (const [sweeper, child] of [['native', 'pure'], ['pure', 'native']] as const) {
  test(`a ${sweeper} sweep spares the values a ${child} writer in another process has in flight; it collects them once unreferenced`, async (t) => {
    const dir = join(tempDir(), 'store')
    const store = await k.connectFsStore(dir, { native: sweeper === 'native', syncBlob: false })
    const rounds = 15
    const w = writer(dir, child, 'barrier', 'on', rounds)
    let collected = 0
    for (let r = 0; r < rounds; r++) {
      // Nothing in flight: a sweep now collects the values no root reaches (two rounds back).
      t.false(await k.unreferencedWritesInFlight(store))
      const before = await k.gcCutoff(store)
      collected += (await k.sweep(store, await live(store), before)).length
      w.send({ go: r })
      const m = await w.next()
      t.is(m.written, r)
      t.true(m.inFlight)
      t.true(await k.unreferencedWritesInFlight(store), 'the other process marks its sequence in flight')
      // A sweep whose cutoff is after the values were stamped, whose
      // whitelist (the root) does not reach them yet: without the guard it
      // deletes them (see the control below).
      const cutoff = new Date(m.lastStamp + 1)
      t.true((await k.gcCutoff(store, cutoff)).getTime() <= m.lastStamp, 'gcCutoff is at or before the sequence start')
      const deleted = new Set((await k.sweep(store, await live(store), cutoff)).map(id))
      for (const key of m.keys) t.false(deleted.has(id(key)), `round ${r}: ${id(key)} was deleted while in flight`)
      w.send({ ack: r })
      t.is((await w.next()).done, r)
      for (const key of (await k.get(store, 'root') as { keys: k.Key[] }).keys) t.true(await k.exists(store, key), `round ${r}: ${id(key)} reachable`)
    }
    await w.end()
    t.true(collected >= (rounds - 2) * 4, `garbage is still collected (${collected})`)
    // The writer's marker is gone with its last sequence.
    t.deepEqual(readdirSync(dir).filter((f) => f.startsWith('.konserve.guard')), [])
    await k.close(store)
  })
}

test('control: without the guard the same sweep deletes the values in flight (the race is real)', async (t) => {
  const dir = join(tempDir(), 'store')
  const store = await k.connectFsStore(dir, { syncBlob: false })
  const w = writer(dir, 'native', 'barrier', 'off', 3)
  for (let r = 0; r < 3; r++) {
    w.send({ go: r })
    const m = await w.next()
    t.false(m.inFlight)
    const deleted = new Set((await k.sweep(store, await live(store), new Date(m.lastStamp + 1))).map(id))
    for (const key of m.keys) t.true(deleted.has(id(key)), `round ${r}: ${id(key)} deleted`)
    w.send({ ack: r })
    await w.next()
  }
  await w.end()
  await k.close(store)
})

for (const [sweeper, child] of [['native', 'native'], ['pure', 'pure']] as const) {
  test(`${sweeper} sweeps racing a ${child} writer: no in-flight value is ever deleted, garbage is`, async (t) => {
    const dir = join(tempDir(), 'store')
    const store = await k.connectFsStore(dir, { native: sweeper === 'native', syncBlob: false })
    const w = writer(dir, child, 'race', 'on', 300)
    const finished = w.next()
    let done = false
    finished.then(() => (done = true), () => (done = true))
    let sweeps = 0
    let collected = 0
    while (!done) {
      // konserve's order: the cutoff first, then the whitelist.
      const cutoff = await k.gcCutoff(store)
      collected += (await k.sweep(store, await live(store), cutoff, { batchSize: 7 })).length
      sweeps++
    }
    const m = await finished
    await w.end()
    t.is(m.finished, 300)
    t.is(m.lost, 0, 'every value of a sequence existed when its pointer was written')
    for (const key of await live(store)) t.true(await k.exists(store, key))
    t.log(`${sweeps} sweeps, ${collected} values collected`)
    t.true(sweeps > 3 && collected > 0)
    await k.close(store)
  })
}

for (const mode of ['sync', 'async'] as const) {
  test(`in one process (${mode}): withUnreferencedWrites holds the safe point on every connection to the store; memory stores too`, async (t) => {
    const dir = join(tempDir(), 'store')
    const file = k.connectFsStore(dir, { sync: true, syncBlob: false })
    const other = k.connectFsStore(dir, { sync: true, syncBlob: false })
    const mem = k.newMemStore({ sync: true })
    for (const [store, sweeper] of [[file, other], [mem, mem]] as const) {
      k.assoc(store, 'old', 1, { sync: true })
      let seen: Date | undefined
      const body = () => {
        k.assoc(store, 'fresh', 1, { sync: true })
        const stamp = (k.getMeta(store, 'fresh', { sync: true }) as k.Metadata).lastWrite.getTime()
        t.true(k.unreferencedWritesInFlight(sweeper, { sync: true }))
        seen = k.gcCutoff(sweeper, new Date(stamp + 1), { sync: true })
        t.true(seen.getTime() <= stamp)
        const deleted = k.sweep(sweeper, [], new Date(stamp + 1), { sync: true })
        t.false(deleted.map(id).includes(id('fresh')), 'the value written in the sequence is spared')
        return 'result'
      }
      if (mode === 'sync') t.is(k.withUnreferencedWrites(store, body, { sync: true }), 'result')
      else t.is(await k.withUnreferencedWrites(store, async () => body()), 'result')
      t.false(k.unreferencedWritesInFlight(sweeper, { sync: true }))
      // Once the sequence is over, nothing spares them.
      const later = Date.now() + 10_000
      t.true(k.sweep(sweeper, [], new Date(later), { sync: true }).map(id).includes(id('fresh')))
      t.false(k.exists(store, 'old', { sync: true }))
    }
    // A failing body releases the guard.
    await t.throwsAsync(k.withUnreferencedWrites(file, async () => {
      throw new Error('boom')
    }), { message: 'boom' })
    t.false(k.unreferencedWritesInFlight(file, { sync: true }))
    const g = k.beginUnreferencedWrites(file, { sync: true })
    g.done()
    g.done()
    t.false(k.unreferencedWritesInFlight(file, { sync: true }))
    t.throws(() => k.withUnreferencedWrites(file, async () => 1, { sync: true }), { code: 'ERR_INVALID_ARGUMENT' } as any)
    t.false(k.unreferencedWritesInFlight(file, { sync: true }))
  })
}
