/**
 * The lastWrite clock across processes (ts/backends/pure/clock.ts, FORMAT.md §7, issue #12
 * item 1): a stamp is never ahead of the writing process's wall clock (beyond
 * a millisecond or so), does not drift with the number of processes, and never
 * goes backwards across processes on one store, also when a process's wall
 * clock is set back. Before the fix each new process adopted a watermark 60 s
 * ahead as its floor: five `konserve put` in a row stamped 0..4 minutes ahead.
 */
import test from 'ava'
import { execFile } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import * as k from 'konserve'
import { tempDir } from './helpers/api.js'

const run = promisify(execFile)
const here = import.meta.dirname ?? new URL('.', import.meta.url).pathname
const WRITER = join(here, 'fixtures', 'clock-writer.mjs')
const HOUR = 3_600_000

interface Wrote {
  before: number
  after: number
  lastWrite: number
}

async function write(dir: string, impl: string, key: string, offsetMs = 0): Promise<Wrote> {
  const { stdout } = await run(process.execPath, [WRITER, dir, impl, key, String(offsetMs)])
  return JSON.parse(stdout) as Wrote
}

const clockText = (dir: string) => readFileSync(join(dir, '.konserve.clock'), 'latin1')

test('200 processes in a row, native and pure mixed: every lastWrite within 1 s of its write, none going back', async (t) => {
  t.timeout(300_000)
  const dir = join(tempDir(), 'store')
  const n = Number(process.env.KONSERVE_CLOCK_PROCESSES ?? 200)
  let prev = 0
  let worstAhead = -Infinity
  let rewrites = 0
  let lastText = ''
  for (let i = 0; i < n; i++) {
    const w = await write(dir, i % 2 === 0 ? 'native' : 'pure', `k${i}`)
    worstAhead = Math.max(worstAhead, w.lastWrite - w.after)
    t.true(w.lastWrite <= w.after + 1000, `process ${i}: lastWrite ${w.lastWrite} is ${w.lastWrite - w.after} ms after its write ended`)
    t.true(w.lastWrite >= w.before - 1000, `process ${i}: lastWrite ${w.lastWrite} is ${w.before - w.lastWrite} ms before its write began`)
    t.true(w.lastWrite >= prev, `process ${i}: lastWrite ${w.lastWrite} is behind the previous one ${prev}`)
    prev = w.lastWrite
    const text = clockText(dir)
    if (text !== lastText) rewrites++
    lastText = text
  }
  t.log(`${n} processes: the latest stamp was ${worstAhead} ms past the end of its write at worst; the clock file was rewritten ${rewrites} times`)
  t.regex(lastText, /^konserve-clock 2 \d+ \d+ \S+ \d+ \d+\n$/)
  // The file is rewritten about once a minute of stamps, not once per process.
  t.true(rewrites <= 2 + n / 50, `${rewrites} rewrites of the clock file for ${n} processes`)
  // Every stamp read back in this process agrees with what the children saw.
  const store = await k.connectFsStore(dir)
  t.is((await k.keys(store)).length, n)
})

for (const impl of ['native', 'pure'] as const) {
  test(`${impl}: a process whose wall clock is an hour behind still stamps at or after every earlier stamp, and the next honest one is on time`, async (t) => {
    const dir = join(tempDir(), 'store')
    const a = await write(dir, impl, 'a')
    const b = await write(dir, impl, 'b', -HOUR)
    t.true(b.lastWrite >= a.lastWrite, `b ${b.lastWrite} < a ${a.lastWrite}`)
    // Not pushed ahead either: the monotonic clock says how much time really passed.
    t.true(b.lastWrite <= b.after + 1000, `b is ${b.lastWrite - b.after} ms ahead`)
    const c = await write(dir, impl, 'c', -2 * HOUR)
    t.true(c.lastWrite >= b.lastWrite)
    const d = await write(dir, impl, 'd')
    t.true(d.lastWrite >= c.lastWrite)
    t.true(d.lastWrite <= d.after + 1000 && d.lastWrite >= d.before - 1000, `d is ${d.lastWrite - d.after} ms off`)
    // The store as a whole: a sweep with a cutoff of a's stamp keeps b, c, d.
    const store = await k.connectFsStore(dir, { native: impl === 'native' })
    t.deepEqual(await k.sweep(store, [], new Date(a.lastWrite)), [])
  })

  test(`${impl}: a record of another boot (or a version 1 file) is a floor at its cap H, and stays one`, async (t) => {
    for (const form of ['v2-other-boot', 'v1'] as const) {
      const dir = join(tempDir(), 'store')
      await write(dir, impl, 'first')
      const h = Date.now() + 5_000
      const text = form === 'v1' ? `konserve-clock 1 ${h}\n` : `konserve-clock 2 ${h} ${h - 60_000} 00000000-0000-0000-0000-000000000000 ${h - 60_000} 5\n`
      writeFileSync(join(dir, '.konserve.clock'), text)
      // Its monotonic time means nothing in this boot: every earlier stamp is below H, so stamps start there.
      const a = await write(dir, impl, 'a', -HOUR)
      t.true(a.lastWrite >= h, `${form}: ${a.lastWrite} < H ${h}`)
      // A process of this boot after it keeps that floor (F), even an hour behind.
      const b = await write(dir, impl, 'b', -HOUR)
      t.true(b.lastWrite >= a.lastWrite, `${form}: ${b.lastWrite} < ${a.lastWrite}`)
      t.true(b.lastWrite <= h + 60_000, `${form}: bounded by H + 60 s`)
    }
  })
}

test('the clock file is never followed through a symbolic link', async (t) => {
  const dir = join(tempDir(), 'store')
  await write(dir, 'pure', 'a')
  const { symlinkSync, unlinkSync, existsSync } = await import('node:fs')
  unlinkSync(join(dir, '.konserve.clock'))
  const outside = join(dir, '..', 'outside-clock')
  writeFileSync(outside, `konserve-clock 1 ${Date.now() + 10 * HOUR}\n`)
  symlinkSync(outside, join(dir, '.konserve.clock'))
  for (const native of [true, false]) {
    const err = await t.throwsAsync(k.connectFsStore(dir, { native }))
    t.is((err as k.KonserveError).code, 'ERR_NOT_A_FILE', `native: ${native}`)
    t.true(existsSync(outside))
  }
})
