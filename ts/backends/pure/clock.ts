/**
 * A file store's last-write clock, the record in `.konserve.clock`
 * (docs/FORMAT.md §7), used by the pure and the native file store alike: wall
 * time, never behind a stamp any earlier process gave out in this store, and
 * never ahead of the wall clock by more than a millisecond while the wall
 * clock is honest (a watermark adopted as the next process's floor once
 * drifted lastWrite a minute per process; docs/RELIABILITY.md promise 13,
 * __test__/clock.spec.ts).
 *
 * The record holds a cap H (no stamp ever issued in the store reached it), a
 * fixed floor F (no earlier boot's stamp is above it), and a projection: the
 * wall time W and the monotonic time M (which every process of one boot
 * shares) of its last write, with the boot's id. A process of the same boot
 * takes as its floor `max(F, min(H, W + (monoNow - M)))`: the wall time the
 * clock would show now had it not been set since, so an honest clock is never
 * behind it (no drift, whatever the number of processes), and after a step
 * back stamps go on from where they were. Another boot (or an older record)
 * has no usable monotonic time: the floor is then H, at most 60 s ahead of
 * the last stamp. The record is rewritten by the durable write of
 * ./staging.ts before a stamp it does not cover is issued: once a minute of
 * stamps (H), and when the wall clock jumped ahead of the projection.
 */
import gensync from 'gensync'
import * as fs from 'node:fs'
import { join } from 'node:path'
import { nowMs } from '../../clock.js'
import { StagingDir, type WriteSteps, stagingName } from './staging.js'
import * as vfs from './vfs.js'

/** The watermark file's name in a store directory. */
export const CLOCK_FILE = '.konserve.clock'
/** How far ahead of a stamp the cap H is raised. */
export const CLOCK_AHEAD_MS = 60_000
/**
 * Staging files of the watermark use the staging-file pattern of FORMAT.md §5
 * (with this fixed hex, and a sequence of their own counted from 0), so the
 * open sweep and `deleteStore` treat them as every other staging file.
 */
const CLOCK_STAGE_HEX = 'c10cc10cc10cc10cc10cc10cc10cc10c'
const CONTENT_V1 = /^konserve-clock 1 ([0-9]{1,16})\n?$/
const CONTENT_V2 = /^konserve-clock 2 ([0-9]{1,16}) ([0-9]{1,16}) ([0-9a-f-]{1,64}) ([0-9]{1,16}) ([0-9]{1,20})\n?$/

/** The record of `.konserve.clock` (FORMAT.md §7). */
export interface ClockRecord {
  /** No stamp ever issued in the store reached this (ms). */
  h: number
  /** No stamp of an earlier boot is above this (ms). */
  f: number
  /** The boot the projection belongs to; undefined: none (no file, or a version 1 file). */
  boot?: string
  /** Wall time (ms) at the last write, plus 1 (Date.now truncates). */
  w: number
  /** CLOCK_MONOTONIC (ns) at the last write. */
  m: bigint
}

const EMPTY: ClockRecord = { h: 0, f: 0, w: 0, m: 0n }

let bootIdCache: string | null | undefined
/** This boot's id (Linux: /proc/sys/kernel/random/boot_id); undefined where there is none. */
export function bootId(): string | undefined {
  if (bootIdCache === undefined) {
    try {
      const id = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').trim()
      bootIdCache = /^[0-9a-f-]{1,64}$/.test(id) ? id : null
    } catch {
      bootIdCache = null
    }
  }
  return bootIdCache ?? undefined
}

/** CLOCK_MONOTONIC in ns (libuv's hrtime): shared by every process of one boot. */
const mono = (): bigint => process.hrtime.bigint()

/** The projection of `r` at monotonic time `m`, if it is usable in this boot. */
function projection(r: ClockRecord, m: bigint): number | undefined {
  const boot = bootId()
  if (boot === undefined || r.boot !== boot || m < r.m) return undefined
  return r.w + Number((m - r.m) / 1_000_000n)
}

/** The floor a record sets at monotonic time `m`: no stamp it covers is above it. */
export function floorOf(r: ClockRecord, m: bigint = mono()): number {
  const p = projection(r, m)
  return p === undefined ? r.h : Math.max(r.f, Math.min(r.h, p))
}

/** Whether stamp `t` issued at `m` is covered by `r`: every later floor of `r` is at least `t`. */
function covers(r: ClockRecord, t: number, m: bigint): boolean {
  if (t >= r.h) return false
  if (t <= r.f) return true
  const p = projection(r, m)
  return p !== undefined && t <= p
}

function warn(message: string, file: string): void {
  if (typeof process !== 'undefined' && typeof process.emitWarning === 'function') {
    process.emitWarning(message, { code: 'KONSERVE_CLOCK', detail: file })
  }
}

/** Parses the clock file's text (undefined: not a clock record). */
export function parseClock(text: string): ClockRecord | undefined {
  const v2 = CONTENT_V2.exec(text)
  if (v2) {
    const h = Number(v2[1])
    const f = Math.min(Number(v2[2]), h)
    return { h, f, boot: v2[3] === '-' ? undefined : v2[3], w: Number(v2[4]), m: BigInt(v2[5]!) }
  }
  const v1 = CONTENT_V1.exec(text)
  // Version 1 holds H only: every stamp it covers is below H.
  if (v1) return { h: Number(v1[1]), f: Number(v1[1]), w: 0, m: 0n }
  return undefined
}

/** The text of a record (version 2). */
export function formatClock(r: ClockRecord): string {
  return `konserve-clock 2 ${r.h} ${r.f} ${r.boot ?? '-'} ${r.w} ${r.m}\n`
}

/** The record stored in `dir` (none: all zero; a damaged file warns and counts as none). */
export function readClockRecordSync(dir: string): ClockRecord {
  const file = join(dir, CLOCK_FILE)
  let text: string
  // O_NOFOLLOW: a planted link is never followed out of the store (ERR_NOT_A_FILE).
  let fd: number
  try {
    fd = vfs.open.sync(file, vfs.STORE_OPEN.r)
  } catch (err) {
    if (vfs.isMissing(err)) return EMPTY
    throw vfs.ioError(err, 'cannot read the clock file', file)
  }
  try {
    vfs.regularFileSize.sync(fd, file, 'cannot read the clock file')
    text = fs.readFileSync(fd, 'latin1')
  } catch (err) {
    throw vfs.ioError(err, 'cannot read the clock file', file)
  } finally {
    vfs.closeQuietly(fd)
  }
  const r = parseClock(text)
  if (!r) {
    warn(`konserve: the clock file cannot be read; it will be rewritten (${JSON.stringify(text.slice(0, 40))})`, file)
    return EMPTY
  }
  return r
}

/** The watermark H stored in `dir` (0 when there is none). */
export function readClockSync(dir: string): number {
  return readClockRecordSync(dir).h
}


const CLOCK_STEPS: WriteSteps = {
  create: 'cannot create a staging file of the clock',
  write: 'cannot write the clock file',
  fsync: 'cannot fsync the clock file',
  rename: 'cannot rename the clock file',
}

const writeRecord = gensync((staging: StagingDir, name: string, target: string, bytes: Uint8Array) => staging.writeFile(name, target, [bytes], CLOCK_STEPS))

/** Writes the record by the durable write of ./staging.ts (as a key file is written). */
export function writeClockRecordSync(staging: StagingDir, record: ClockRecord): void {
  const target = join(staging.dir, CLOCK_FILE)
  const bytes = Buffer.from(formatClock(record), 'latin1')
  for (let attempt = 0; ; attempt++) {
    try {
      writeRecord.sync(staging, stagingName(CLOCK_STAGE_HEX), target, bytes)
      return
    } catch (err) {
      // A concurrent open's staging sweep (native core, same process) may take the file: try again.
      if (vfs.errnoOf(err) !== 'ENOENT' || attempt >= 2) throw err
    }
  }
}

/**
 * A file store's clock. Rewriting the record is a blocking write of one
 * small file (in both forms: about once a minute per store), so a rewrite is
 * never interleaved with another one of this process.
 */
export class FileClock {
  /** The record as this store knows it: the one it read on open or last wrote. */
  private record: ClockRecord
  /** The last stamp this store gave out. */
  private lastStamp = 0

  constructor(
    /** The durable writes of the store directory (the store's own, so a failed fsync poisons the store). */
    private readonly staging: StagingDir,
    found: ClockRecord | number,
  ) {
    this.record = typeof found === 'number' ? { h: found, f: found, w: 0, m: 0n } : found
  }

  get dir(): string {
    return this.staging.dir
  }

  /** The clock of the store in `dir`, writing through `staging` (default: a writer of its own). */
  static openSync(dir: string, durable: boolean, staging: StagingDir = new StagingDir(dir, durable)): FileClock {
    return new FileClock(staging, readClockRecordSync(dir))
  }

  /** The cap H as this store knows it (for tests and diagnostics). */
  get watermark(): number {
    return this.record.h
  }

  /** The floor the store's record sets now. */
  get floor(): number {
    return floorOf(this.record)
  }

  nowSync(): number {
    const m = mono()
    const t = Math.max(nowMs(), floorOf(this.record, m), this.lastStamp)
    if (!covers(this.record, t, m)) this.raise(t, m)
    this.lastStamp = t
    return t
  }

  async now(): Promise<number> {
    return this.nowSync()
  }

  /** Rewrites the record so that it covers `t` issued at `m`, merged with what the file holds now. */
  private raise(t: number, m: bigint): void {
    const disk = readClockRecordSync(this.dir)
    const boot = bootId()
    // What earlier boots (or records without a projection) issued is below their H.
    const fixed = (r: ClockRecord) => (projection(r, m) === undefined ? r.h : r.f)
    const f = Math.max(fixed(disk), fixed(this.record))
    const h = Math.max(disk.h, this.record.h, t + CLOCK_AHEAD_MS)
    // Date.now truncates: +1 keeps an honest wall clock at or below the projection.
    let w = Math.max(nowMs() + 1, projection(disk, m) ?? 0, projection(this.record, m) ?? 0)
    if (t > Math.max(f, w)) w = t
    const next: ClockRecord = boot === undefined ? { h, f: Math.max(f, t), w: 0, m: 0n } : { h, f, boot, w, m }
    writeClockRecordSync(this.staging, next)
    this.record = next
  }
}
