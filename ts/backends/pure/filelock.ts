/**
 * The cross-process key lock of docs/FORMAT.md §6, in TypeScript: the same
 * files and the same steps as the Rust core (crates/core/src/filelock.rs), so
 * pure and native processes exclude each other on one directory.
 *
 * - Acquire: create `.<hex>.lock` exclusively (`O_CREAT | O_EXCL`; EEXIST:
 *   held) and write the record (a read-back only if that took 1 s or more).
 *   An empty or partial lock file counts as held until it is PARTIAL_STALE_MS
 *   old: a process killed between the create and the write blocks the key
 *   that long. Older builds created the file whole by `link` of a `.lkt` temp
 *   file; both ways create the same name exclusively, so they exclude each
 *   other, and the sweep still removes leftover `.lkt` files.
 * - A holder is dead when its process is gone (same boot id and pid
 *   namespace: `/proc/<pid>/stat` with the recorded start time), else when its
 *   lock file is older than the lease.
 * - Takeover: the marker `.<hex>.<dead>.<n>.brk` (created and judged like a
 *   lock, so an empty marker is its taker's until PARTIAL_STALE_MS old) admits
 *   one taker, which renames a fresh record (written to a `.lkt` temp file)
 *   over the lock only if it still holds the dead token.
 * - Release: unlink only a lock that still holds our token.
 */
import { randomFillSync } from 'node:crypto'
import * as fs from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'
import type { ErrorCode } from '../../errors.js'
import { KonserveError } from '../../errors.js'
import { openSyncQuiet } from './vfs.js'

/** How old the lock file of a holder whose life cannot be checked must be to count as dead. */
export const DEFAULT_LEASE_MS = 30_000
/** How old an empty or partial lock file (being written, or left by a process killed between its create and its write) or a leftover temp file must be to count as abandoned. */
export const PARTIAL_STALE_MS = 5_000
/** A create and write of a lock file faster than this (a fifth of PARTIAL_STALE_MS) cannot have been taken over: no read-back. */
const SKIP_READ_BACK_MS = 1_000
const MAX_MARKERS = 64
const MAX_RECORD = 1024

export interface Identity {
  bootId?: string
  /** Decimal strings, as in the record. */
  pidNs?: string
  pid: number
  startTicks?: string
  host?: string
}

export interface LockRecord {
  token: string
  who: Identity
}

const HEX32 = /^[0-9a-f]{32}$/
const DECIMAL = /^[0-9]+$/

function cleanHost(raw: Uint8Array): string | undefined {
  if (raw.length === 0) return undefined
  let s = ''
  for (const b of raw) s += b >= 0x21 && b <= 0x7e ? String.fromCharCode(b) : '_'
  return s
}

/** The state letter and start ticks (field 22) of a `/proc/<pid>/stat` line. */
export function parseProcStat(s: string): [string, string] | undefined {
  const close = s.lastIndexOf(')')
  if (close < 0) return undefined
  const f = s.slice(close + 1).trim().split(/\s+/)
  const state = f[0]
  const ticks = f[19]
  if (!state || ticks === undefined || !DECIMAL.test(ticks)) return undefined
  return [state[0]!, ticks.replace(/^0+(?=\d)/, '')]
}

let me: Identity | undefined
export function identity(): Identity {
  if (me) return me
  const who: Identity = { pid: process.pid, host: cleanHost(Buffer.from(hostname(), 'utf8')) }
  if (process.platform === 'linux') {
    try {
      const boot = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').trim()
      const ns = fs.statSync('/proc/self/ns/pid', { bigint: true }).ino.toString()
      const ticks = parseProcStat(fs.readFileSync('/proc/self/stat', 'latin1'))?.[1]
      if (ticks !== undefined) Object.assign(who, { bootId: cleanHost(Buffer.from(boot, 'latin1')), pidNs: ns, startTicks: ticks })
    } catch {
      // Unknown: holders are then judged by the lease.
    }
  }
  return (me = who)
}

export function recordLine(r: LockRecord): string {
  const w = r.who
  return `konserve-lock 1 ${r.token} ${w.bootId ?? '-'} ${w.pidNs ?? '-'} ${w.pid} ${w.startTicks ?? '-'} ${w.host ?? '-'}\n`
}

export function parseRecord(bytes: Uint8Array): LockRecord | undefined {
  const text = Buffer.from(bytes).toString('latin1')
  if (!text.endsWith('\n')) return undefined
  const f = text.slice(0, -1).split(' ')
  if (f.length !== 8 || f[0] !== 'konserve-lock' || f[1] !== '1' || !HEX32.test(f[2]!)) return undefined
  const opt = (s: string) => (s === '-' ? undefined : s)
  const num = (s: string) => s === '-' || DECIMAL.test(s)
  if (!num(f[4]!) || !DECIMAL.test(f[5]!) || !num(f[6]!)) return undefined
  return {
    token: f[2]!,
    who: { bootId: opt(f[3]!), pidNs: opt(f[4]!), pid: Number(f[5]), startTicks: opt(f[6]!), host: opt(f[7]!) },
  }
}

/**
 * Random bytes for lock tokens, drawn from the system's generator 4 KiB at a
 * time: one call per 256 locks instead of one per lock (2-3 µs each). Every
 * token still gets 128 bits no other token shares.
 */
const tokenPool = Buffer.allocUnsafeSlow(4096)
let tokenAt = tokenPool.length

function freshRecord(): LockRecord {
  if (tokenAt === tokenPool.length) {
    randomFillSync(tokenPool)
    tokenAt = 0
  }
  const token = tokenPool.toString('hex', tokenAt, tokenAt + 16)
  tokenAt += 16
  return { token, who: identity() }
}

/** Whether process `pid` may be alive: only a definite "no such process" says no. */
/**
 * The error of a lock release that failed because the store directory itself
 * is gone (deleteStore, or the directory removed by hand, while the key was
 * locked): ERR_STORE_DELETED says that, where ERR_LOCK's "gone or no longer
 * ours" would send a reader looking for a takeover. Any other error as is.
 */
export function releaseError(err: unknown, dir: string): unknown {
  if ((err as KonserveError).code !== 'ERR_LOCK') return err
  try {
    fs.statSync(dir)
    return err
  } catch (e) {
    // Only a directory that is not there: one this process may no longer look into says nothing.
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') return err
  }
  return new KonserveError('ERR_STORE_DELETED', `the store directory was deleted while a key was locked: ${dir}`, { file: dir, cause: err })
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH'
  }
}

/** Start ticks of `pid`: null if gone (or a zombie), undefined if that cannot be told. */
function processStart(pid: number): string | null | undefined {
  try {
    const st = parseProcStat(fs.readFileSync(`/proc/${pid}/stat`, 'latin1'))
    if (!st) return undefined
    return 'ZXx'.includes(st[0]) ? null : st[1]
  } catch (err) {
    // Gone, or hidden from us (hidepid): only kill(2) can tell.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return processAlive(pid) ? undefined : null
    return undefined
  }
}

type Liveness = 'alive' | 'dead' | 'unknown'

export function liveness(self: Identity, rec: Identity): Liveness {
  if (rec.bootId !== undefined && rec.bootId === self.bootId && rec.pidNs !== undefined && rec.pidNs === self.pidNs) {
    const start = processStart(rec.pid)
    if (start === null) return 'dead'
    if (start === undefined || rec.startTicks === undefined) return 'unknown'
    return start === rec.startTicks ? 'alive' : 'dead' // else the pid was reused
  }
  if (rec.bootId === undefined && self.bootId === undefined && rec.host !== undefined && rec.host === self.host && !processAlive(rec.pid)) {
    return 'dead'
  }
  return 'unknown'
}

/** Tokens of locks this process failed to release: nobody holds them, they may be taken over. */
const orphans = new Set<string>()
let tempSeq = 0

type Holder = { kind: 'gone' } | { kind: 'alive'; rec?: LockRecord } | { kind: 'dead'; dead: string; rec?: LockRecord }
export type Attempt = { taken: LockRecord } | { busy: LockRecord | undefined }

const code = (err: unknown) => (err as NodeJS.ErrnoException).code
const isMissing = (err: unknown) => code(err) === 'ENOENT'

function unlinkQuietly(path: string): void {
  try {
    fs.unlinkSync(path)
  } catch {
    // Garbage at worst: the open sweep removes it.
  }
}

function writeAllSync(fd: number, data: Buffer): void {
  for (let off = 0; off < data.length; ) off += fs.writeSync(fd, data, off, data.length - off)
}

export function describeHolder(rec: LockRecord | undefined): string {
  return rec ? `process ${rec.who.pid} on host ${rec.who.host ?? '-'}` : 'a holder whose lock file is being written'
}

/** The cross-process locks of one store directory. */
export class FileLocker {
  constructor(
    readonly dir: string,
    readonly leaseMs = DEFAULT_LEASE_MS,
  ) {}

  lockPath(hex: string): string {
    return join(this.dir, `.${hex}.lock`)
  }

  private read(path: string): Buffer | undefined {
    let fd: number
    try {
      fd = openSyncQuiet(path, 'r')
    } catch (err) {
      if (isMissing(err)) return undefined
      throw err
    }
    try {
      const buf = Buffer.alloc(MAX_RECORD)
      const n = fs.readSync(fd, buf, 0, MAX_RECORD, 0)
      return buf.subarray(0, n)
    } finally {
      fs.closeSync(fd)
    }
  }

  private stat(path: string): fs.BigIntStats | undefined {
    try {
      return fs.lstatSync(path, { bigint: true })
    } catch (err) {
      if (isMissing(err)) return undefined
      throw err
    }
  }

  private static age(st: fs.BigIntStats): number {
    return Math.max(0, Date.now() - Number(st.mtimeMs))
  }

  /** Writes `content` to a new temp file; removes it on error. */
  private writeTemp(hex: string, content: Buffer): string {
    for (let i = 0; i < 1000; i++) {
      const temp = join(this.dir, `.${hex}.${process.pid}.${tempSeq++}.lkt`)
      let fd: number
      try {
        fd = openSyncQuiet(temp, 'wx', 0o644)
      } catch (err) {
        if (code(err) === 'EEXIST') continue // another process with our pid (another pid namespace)
        throw err
      }
      try {
        writeAllSync(fd, content)
      } catch (err) {
        fs.closeSync(fd)
        unlinkQuietly(temp)
        throw err
      }
      fs.closeSync(fd)
      return temp
    }
    throw Object.assign(new Error('no free lock temp file name'), { code: 'EEXIST' })
  }

  /**
   * Creates `target` holding `content`: false if it exists. Leaves nothing
   * behind on an error. The exclusive create of the name itself, then the
   * write: until the write lands the file is empty, and every reader (this
   * build and older ones) judges an empty or partial file by its age (alive
   * until PARTIAL_STALE_MS old).
   */
  createWhole(_hex: string, target: string, content: Buffer): boolean {
    const started = performance.now()
    let fd: number
    try {
      fd = openSyncQuiet(target, 'wx', 0o644)
    } catch (err) {
      if (code(err) === 'EEXIST') return false
      throw err
    }
    try {
      writeAllSync(fd, content)
    } catch (err) {
      fs.closeSync(fd)
      // Undo: the target is ours, nobody else removes it.
      unlinkQuietly(target)
      throw err
    }
    fs.closeSync(fd)
    // Nobody can have taken the file over while it was empty if the create
    // and write took less than a safe fraction of PARTIAL_STALE_MS (by a
    // monotonic clock, immune to wall-clock steps): a taker judges an empty
    // file by its modification time, which is at least as late as our create,
    // and takes it only once that is PARTIAL_STALE_MS old. Only a slower write
    // needs the read-back.
    if (performance.now() - started < SKIP_READ_BACK_MS) return true
    // If a slow write let someone take the file over, it is not ours.
    const back = this.read(target)
    return back?.equals(content) === true
  }

  /** What a lock file or marker says about its holder. */
  inspect(path: string): Holder {
    const bytes = this.read(path)
    if (bytes === undefined) return { kind: 'gone' }
    const rec = parseRecord(bytes)
    if (rec) {
      if (orphans.has(rec.token)) return { kind: 'dead', dead: rec.token, rec }
      const l = liveness(identity(), rec.who)
      if (l === 'alive') return { kind: 'alive', rec }
      if (l === 'dead') return { kind: 'dead', dead: rec.token, rec }
      const st = this.stat(path)
      if (!st) return { kind: 'gone' }
      return FileLocker.age(st) >= this.leaseMs ? { kind: 'dead', dead: rec.token, rec } : { kind: 'alive', rec }
    }
    // Empty or partial: being written now, or abandoned.
    const st = this.stat(path)
    if (!st) return { kind: 'gone' }
    return FileLocker.age(st) >= PARTIAL_STALE_MS ? { kind: 'dead', dead: `i${st.ino.toString(16)}` } : { kind: 'alive' }
  }

  private stillHolds(lock: string, dead: string): boolean {
    const bytes = this.read(lock)
    if (bytes === undefined) return false
    const rec = parseRecord(bytes)
    if (rec) return rec.token === dead
    const st = this.stat(lock)
    return st !== undefined && `i${st.ino.toString(16)}` === dead
  }

  /** One attempt to take `hex`'s lock, never waiting. */
  tryAcquire(hex: string): Attempt {
    const lock = this.lockPath(hex)
    const rec = freshRecord()
    const line = Buffer.from(recordLine(rec), 'latin1')
    for (let round = 0; round < 4; round++) {
      if (this.createWhole(hex, lock, line)) return { taken: rec }
      const h = this.inspect(lock)
      if (h.kind === 'gone') continue
      if (h.kind === 'alive') return { busy: h.rec }
      return this.takeOver(hex, lock, h.dead, rec, line) ? { taken: rec } : { busy: h.rec }
    }
    return { busy: undefined }
  }

  private takeOver(hex: string, lock: string, dead: string, rec: LockRecord, line: Buffer): boolean {
    let n = 0
    let marker: string | undefined
    for (let rounds = 0; marker === undefined; rounds++) {
      if (n >= MAX_MARKERS || rounds > 4 * MAX_MARKERS) {
        throw new Error(`too many abandoned takeover markers for ${lock}`)
      }
      const m = join(this.dir, `.${hex}.${dead}.${n}.brk`)
      if (this.createWhole(hex, m, line)) {
        marker = m
        break
      }
      const h = this.inspect(m)
      if (h.kind === 'alive') return false // a live taker is at work
      if (h.kind === 'dead') n++ // its taker died: the next marker
    }
    // We are the one taker of `dead` until we remove the marker.
    try {
      if (!this.stillHolds(lock, dead)) return false
      const temp = this.writeTemp(hex, line)
      try {
        fs.renameSync(temp, lock)
      } catch (err) {
        unlinkQuietly(temp)
        throw err
      }
      void rec
      return true
    } finally {
      // A marker left here is harmless: the lock no longer holds `dead`, the sweep removes it.
      unlinkQuietly(marker)
    }
  }

  /** Releases a lock taken with `token`: removes the file only if it still holds that token. */
  release(hex: string, token: string): void {
    const lock = this.lockPath(hex)
    const bytes = this.read(lock)
    const rec = bytes && parseRecord(bytes)
    if (!rec) throw new Error('the lock file is gone or no longer ours')
    if (rec.token !== token) {
      throw new Error(`the lock was taken over by ${describeHolder(rec)} (this holder was judged dead)`)
    }
    try {
      fs.unlinkSync(lock)
    } catch (err) {
      // The file names us, a live process: let our next acquire take it.
      orphans.add(token)
      throw err
    }
  }

  /**
   * The sweep on open: removes temp files older than PARTIAL_STALE_MS and
   * takeover markers whose lock no longer holds the dead token. Never a lock file.
   */
  sweep(names: string[]): boolean {
    let removed = false
    for (const name of names) {
      const path = join(this.dir, name)
      let remove = false
      try {
        const temp = /^\.([0-9a-f]{32})\.[0-9]+\.[0-9]+\.lkt$/.exec(name)
        const marker = /^\.([0-9a-f]{32})\.([0-9a-f]{32}|i[0-9a-f]+)\.[0-9]+\.brk$/.exec(name)
        if (temp) {
          const st = this.stat(path)
          remove = st !== undefined && FileLocker.age(st) >= PARTIAL_STALE_MS
        } else if (marker) {
          remove = !this.stillHolds(this.lockPath(marker[1]!), marker[2]!)
        }
      } catch {
        remove = false
      }
      if (remove) {
        try {
          fs.unlinkSync(path)
          removed = true
        } catch {
          // Only garbage is left behind.
        }
      }
    }
    return removed
  }
}

/** Whether a name belongs to the lock protocol (never a key; deleteStore removes it). */
export const LOCK_NAME = /^\.[0-9a-f]{32}\.(lock|[0-9]+\.[0-9]+\.lkt|([0-9a-f]{32}|i[0-9a-f]+)\.[0-9]+\.brk)$/

/** The error code of a failed lock step: ERR_NO_SPACE / ERR_READ_ONLY where the OS says so, else ERR_LOCK. */
export function lockErrorCode(err: unknown): ErrorCode {
  switch (code(err)) {
    case 'ENOSPC':
    case 'EDQUOT':
      return 'ERR_NO_SPACE'
    case 'EROFS':
      return 'ERR_READ_ONLY'
    default:
      return 'ERR_LOCK'
  }
}

export function lockTimeoutError(lockFile: string, holder: LockRecord | undefined | string, timeoutMs: number): KonserveError {
  const who = typeof holder === 'string' ? holder : describeHolder(holder)
  return new KonserveError(
    'ERR_LOCK_TIMEOUT',
    `a key stayed locked by ${who} for longer than the lock timeout (${timeoutMs} ms); lock file ${lockFile}`,
    { file: lockFile },
  )
}
