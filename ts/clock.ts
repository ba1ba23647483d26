/**
 * The last-write clock: wall time, but never behind a stamp it already gave
 * out, so a wall-clock step back cannot make a new write look old (konserve
 * issue #156, DESIGN.md §4 lesson 10: GC swept live data after such a step).
 *
 * Two floors:
 * - per process (`now`): never behind a stamp this process gave out;
 * - per file store (`FileClock`): never behind a stamp any earlier process
 *   gave out in this store, through the watermark file `.konserve.clock`
 *   (docs/FORMAT.md §7). The file holds a time H that no stamp ever issued in
 *   the store reached. On open H becomes the store's floor; before a stamp at
 *   or beyond the current mark is issued, the mark is durably raised to
 *   stamp + 60 s. So a write costs one small durable write at most once a
 *   minute, and after a restart (even with the wall clock stepped back) the
 *   first stamps are at least H: never below any earlier one.
 */
import * as fs from 'node:fs'
import { join } from 'node:path'
import type { StoreClock } from './backing.js'
import { fsyncDirSync } from './fsync.js'

let last = 0

/** The per-process clock, in ms since the epoch. */
export function nowMs(): number {
  const t = Date.now()
  last = t > last ? t : last
  return last
}

/** The per-process clock. */
export function now(): Date {
  return new Date(nowMs())
}

/** The watermark file's name in a store directory. */
export const CLOCK_FILE = '.konserve.clock'
/** How far ahead of a stamp the watermark is raised. */
export const CLOCK_AHEAD_MS = 60_000
/**
 * Staging files of the watermark use the staging-file pattern of FORMAT.md §5
 * (with this fixed hex), so the open sweep and `deleteStore` treat them as
 * every other staging file.
 */
const CLOCK_STAGE_HEX = 'c10cc10cc10cc10cc10cc10cc10cc10c'
const CONTENT = /^konserve-clock 1 ([0-9]{1,16})\n?$/

let stageSeq = 0

function warn(message: string, file: string): void {
  if (typeof process !== 'undefined' && typeof process.emitWarning === 'function') {
    process.emitWarning(message, { code: 'KONSERVE_CLOCK', detail: file })
  }
}

/** The watermark stored in `dir` (0 when there is none; a damaged file warns and counts as 0). */
export function readClockSync(dir: string): number {
  const file = join(dir, CLOCK_FILE)
  let text: string
  try {
    text = fs.readFileSync(file, 'latin1')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0
    throw err
  }
  const m = CONTENT.exec(text)
  if (!m) {
    warn(`konserve: the clock file cannot be read; it will be rewritten (${JSON.stringify(text.slice(0, 40))})`, file)
    return 0
  }
  return Number(m[1])
}


/** Writes the watermark as a key file is written: staging file, fsync, rename, directory fsync. */
export function writeClockSync(dir: string, mark: number, durable: boolean): void {
  const target = join(dir, CLOCK_FILE)
  for (let attempt = 0; ; attempt++) {
    const stage = join(dir, `.${CLOCK_STAGE_HEX}.${process.pid}.${stageSeq++}.stage`)
    try {
      const fd = fs.openSync(stage, 'wx', 0o644)
      try {
        fs.writeSync(fd, `konserve-clock 1 ${mark}\n`)
        if (durable) fs.fsyncSync(fd)
      } finally {
        fs.closeSync(fd)
      }
      fs.renameSync(stage, target)
      if (durable) fsyncDirSync(dir)
      return
    } catch (err) {
      try {
        fs.unlinkSync(stage)
      } catch {
        // never created, or already renamed
      }
      // A concurrent open's staging sweep (native core, same process) may take the file: try again.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || attempt >= 2) throw err
    }
  }
}

/**
 * A file store's clock. Raising the watermark is a blocking write of one
 * small file (in both forms: at most once a minute per store), so a raise is
 * never interleaved with another raise of this process.
 */
export class FileClock implements StoreClock {
  /** Stamps never go below the watermark found on open. */
  private readonly floor: number
  /** What the file says: no stamp at or beyond it is given out. */
  private mark: number

  constructor(
    readonly dir: string,
    found: number,
    private readonly durable: boolean,
  ) {
    this.floor = found
    this.mark = found
  }

  static openSync(dir: string, durable: boolean): FileClock {
    return new FileClock(dir, readClockSync(dir), durable)
  }

  /** The watermark as this store knows it (for tests and diagnostics). */
  get watermark(): number {
    return this.mark
  }

  nowSync(): number {
    const t = Math.max(nowMs(), this.floor)
    if (t >= this.mark) this.raise(t + CLOCK_AHEAD_MS)
    return t
  }

  async now(): Promise<number> {
    return this.nowSync()
  }

  private raise(target: number): void {
    // Another process may have raised it further: never lower it.
    const onDisk = readClockSync(this.dir)
    const mark = Math.max(target, onDisk)
    writeClockSync(this.dir, mark, this.durable)
    this.mark = mark
  }
}
