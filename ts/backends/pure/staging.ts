/**
 * Staging files and the durable write (docs/FORMAT.md §5, crates/core/src/
 * staging.rs): the ONE path by which the pure engine replaces a file, whether
 * a key file, a blob, a log rewrite, the key check or the clock record.
 *
 * A write creates a uniquely named staging file `.<32 hex>.<pid>.<seq>.stage`
 * (O_EXCL), writes it whole, fsyncs it, closes it, renames it over the
 * target, then fsyncs the directory, and only then returns. A failed fsync
 * poisons the writer (ERR_FSYNC, then ERR_STORE_POISONED for every write until
 * the store is reopened): the kernel may have dropped the dirty pages, and a
 * retry would wrongly succeed. Staging files of this process are registered
 * while in flight, so the sweep on open never takes a live one.
 */
import type { Handler } from 'gensync'
import * as fs from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { KonserveError } from '../../errors.js'
import { isFsyncFailure } from '../../fsync.js'
import { loadedNative, whenNativeLoads } from '../../native.js'
import { xxh3_64 } from '../../codec/xxhash.js'
import { DEFAULT_LEASE_MS, identity, processAlive, type Identity } from './filelock.js'
import * as vfs from './vfs.js'

/** A staging file's name: `.<hex32>.<pid>.<seq>.stage` (pid and seq canonical decimals). */
export const STAGING = /^\.([0-9a-f]{32})\.([1-9][0-9]*)\.(0|[1-9][0-9]*)\.stage$/

/**
 * A staging sequence number is `tag · 2^32 + engine · 2^31 + count`
 * (docs/FORMAT.md §5, crates/core/src/staging.rs). `tag` names the boot, pid
 * namespace and host of the writer, so that a sweep can tell a writer whose
 * pid it can check from one whose pid means nothing here (another container
 * on a shared volume, another host on a network file system). `engine` is 1
 * here and 0 in the Rust core: the two count apart in one process and never
 * make the same name.
 */
const TAG_UNIT = 2 ** 32
const TAG_MAX = 2n ** 20n - 1n
const ENGINE = 2 ** 31

/** The tag of a process: a hash of its boot id, pid namespace and host name as its lock records write them, in 1..2^20−1. */
export function namespaceTagOf(who: Identity): number {
  const line = `konserve-stage ${who.bootId ?? '-'} ${who.pidNs ?? '-'} ${who.host ?? '-'}`
  return Number(xxh3_64(new TextEncoder().encode(line)) % TAG_MAX) + 1
}

let tag: number | undefined
/** This process's tag. */
export const namespaceTag = (): number => (tag ??= namespaceTagOf(identity()))

let count = 0
/** The staging name of a write to a file whose name starts with (or whose fixed name is) `hex32`. */
export function stagingName(hex32: string): string {
  const seq = namespaceTag() * TAG_UNIT + ENGINE + count
  count = (count + 1) % ENGINE
  return `.${hex32}.${process.pid}.${seq}.stage`
}

/** What the sweep on open does with a staging file that no write of this process has in flight (see crates/core/src/staging.rs). */
export type Fate =
  /** Its writer is gone. */
  | 'remove'
  /** This process's pid in this namespace: removed unless a write of this process has it in flight. */
  | 'remove-unless-in-flight'
  /** A live process of this namespace (or one that cannot be told) writes it. */
  | 'keep'
  /** Written elsewhere (its tag is not ours), where its pid cannot be checked: kept until it is a lease old unchanged, this many ms from now. */
  | { keepForMs: number }

/** Whether a staging file of `seq` was written in another boot, pid namespace or host than this process (a tag neither ours nor 0). */
export function writtenElsewhere(seq: number): boolean {
  const fileTag = Math.floor(seq / TAG_UNIT)
  return fileTag !== 0 && fileTag !== namespaceTag()
}

/** The fate of the staging file of `pid` and `seq`; `ageMs` (now minus its mtime) is asked only for a file written elsewhere. */
export function fate(pid: number, seq: number, alive: (pid: number) => boolean, ageMs: () => number | undefined, leaseMs: number): Fate {
  if (!writtenElsewhere(seq)) {
    if (pid === process.pid) return 'remove-unless-in-flight'
    return alive(pid) ? 'keep' : 'remove'
  }
  const age = ageMs()
  // Gone already, or unreadable: nothing to decide now.
  if (age === undefined) return 'keep'
  return age >= leaseMs ? 'remove' : { keepForMs: leaseMs - age }
}

/**
 * This process's staging files that exist or are about to, by path: the sweep
 * on open leaves them. Mirrored into the native core's registry once the
 * binding is loaded, and a sweep asks that registry too: a native store and
 * a pure one on the same directory in one process (a pure backing the native
 * one opened for an import, or the user's own) must not take each other's
 * live staging files for a dead process's, which have the same pid.
 */
const inFlight = new Set<string>()

function enter(path: string): void {
  inFlight.add(path)
  loadedNative()?.stagingRegister(dirname(path), basename(path))
}

function leave(path: string): void {
  if (!inFlight.delete(path)) return
  loadedNative()?.stagingRelease(dirname(path), basename(path))
}

whenNativeLoads((native) => {
  for (const path of inFlight) native.stagingRegister(dirname(path), basename(path))
})

/** Whether a staging file of this process is in flight, in this engine or in the native core. */
const liveHere = (path: string) => inFlight.has(path) || loadedNative()?.stagingInFlight(dirname(path), basename(path)) === true

/** A staging file being written. */
export interface Staged {
  readonly path: string
  fd: number
  /** Whether `fd` is still open. */
  open: boolean
}

/** What each step of a durable write reports when it fails (the target's kind). */
export interface WriteSteps {
  /** Names the staging file: 'cannot create a staging file'. */
  create: string
  write: string
  fsync: string
  /** Names the target. */
  rename: string
}

export const KEY_FILE_STEPS: WriteSteps = {
  create: 'cannot create a staging file',
  write: 'cannot write a staging file',
  fsync: 'cannot fsync a staging file',
  rename: 'cannot rename a staging file over the key file',
}

/**
 * The durable writes into one store directory, and its poison: the store's
 * (one per open store), or one of its own for a file written outside a store
 * (the key check on open, the clock record of a native store).
 */
export class StagingDir {
  private poisoned = false

  constructor(
    readonly dir: string,
    /** fsync what is written (the store's `syncBlob`). */
    readonly durable: boolean,
    /** The store was opened with `readOnly: true`: every write fails with ERR_READ_ONLY. */
    readonly readOnly = false,
  ) {}

  /** ERR_READ_ONLY in a read-only store; ERR_STORE_POISONED once an fsync failed. */
  checkWritable(): void {
    if (this.readOnly) throw readOnlyError(this.dir)
    if (this.poisoned) {
      throw new KonserveError(
        'ERR_STORE_POISONED',
        'an earlier fsync failed, so durability cannot be promised; reopen the store to write again',
        { file: this.dir },
      )
    }
  }

  /** The error of a failed fsync step, poisoning the writer unless the fsync itself never ran (out of descriptors). */
  fsyncFailed(err: unknown, what: string, file: string): KonserveError {
    if (!isFsyncFailure(err)) return vfs.ioError(err, what, file)
    this.poisoned = true
    return vfs.ioError(err, what, file, 'ERR_FSYNC')
  }

  /** fsync of an open file (when durable). */
  *fsync(fd: number, what: string, file: string): Handler<void> {
    if (!this.durable) return
    try {
      yield* vfs.fsync(fd)
    } catch (err) {
      throw this.fsyncFailed(err, what, file)
    }
  }

  /** fsync of the directory (when durable): makes renames and removals durable. */
  *syncDir(): Handler<void> {
    if (!this.durable) return
    try {
      yield* vfs.syncDir(this.dir)
    } catch (err) {
      throw this.fsyncFailed(err, 'cannot fsync the store directory', this.dir)
    }
  }

  /** Creates the staging file `name` (O_EXCL), registered as in flight. */
  *create(name: string, steps: WriteSteps = KEY_FILE_STEPS): Handler<Staged> {
    const path = join(this.dir, name)
    enter(path)
    try {
      return { path, fd: yield* vfs.open(path, vfs.CREATE_NEW, 0o644), open: true }
    } catch (err) {
      leave(path)
      throw vfs.ioError(err, steps.create, path)
    }
  }

  /** Writes `bytes` at `pos` of a staging file. */
  *write(s: Staged, bytes: Uint8Array, pos: number, steps: WriteSteps = KEY_FILE_STEPS): Handler<void> {
    try {
      yield* vfs.writeAll(s.fd, bytes, pos)
    } catch (err) {
      throw vfs.ioError(err, steps.write, s.path)
    }
  }

  /** Writes `parts` one after the other from `pos` of a staging file (one pwritev). */
  *writev(s: Staged, parts: Uint8Array[], pos: number, steps: WriteSteps = KEY_FILE_STEPS): Handler<void> {
    try {
      yield* vfs.writeAllv(s.fd, parts, pos)
    } catch (err) {
      throw vfs.ioError(err, steps.write, s.path)
    }
  }

  /**
   * fsync (when durable) and close of a staging file written whole: ready to
   * be renamed. The close is made on the calling thread in both forms (its
   * data is written, and fsynced when durable: close(2) does not wait for
   * the disk), which spares the async form a threadpool task.
   */
  *seal(s: Staged, steps: WriteSteps = KEY_FILE_STEPS): Handler<void> {
    this.checkWritable()
    yield* this.fsync(s.fd, steps.fsync, s.path)
    s.open = false
    try {
      vfs.close.sync(s.fd)
    } catch (err) {
      throw vfs.ioError(err, 'cannot close a staging file', s.path)
    }
  }

  /** Renames a sealed staging file over `target` (no directory fsync: see `commit`). */
  *rename(s: Staged, target: string, steps: WriteSteps = KEY_FILE_STEPS): Handler<void> {
    try {
      yield* vfs.rename(s.path, target)
    } catch (err) {
      throw vfs.ioError(err, steps.rename, target)
    }
    leave(s.path)
  }

  /** The end of one durable write: seal, rename over `target`, directory fsync. */
  *commit(s: Staged, target: string, steps: WriteSteps = KEY_FILE_STEPS): Handler<void> {
    yield* this.seal(s, steps)
    yield* this.rename(s, target, steps)
    yield* this.syncDir()
  }

  /** Closes and removes a staging file that will not be committed (idempotent; a no-op after its rename). */
  drop(s: Staged): void {
    if (s.open) {
      s.open = false
      vfs.closeQuietly(s.fd)
    }
    if (inFlight.has(s.path)) {
      vfs.unlinkQuietly(s.path)
      leave(s.path)
    }
  }

  /**
   * The durable write of a whole file: `parts` one after the other into the
   * staging file `name`, then `commit` over `target`. Nothing is left behind
   * on failure.
   */
  *writeFile(name: string, target: string, parts: Uint8Array[], steps: WriteSteps = KEY_FILE_STEPS): Handler<void> {
    this.checkWritable()
    const s = yield* this.create(name, steps)
    try {
      yield* this.writev(s, parts, 0, steps)
      yield* this.commit(s, target, steps)
    } finally {
      this.drop(s)
    }
  }

  /** A durable removal: unlink (a missing file is fine), directory fsync. Returns whether it existed. */
  *remove(file: string, what: string): Handler<boolean> {
    this.checkWritable()
    try {
      yield* vfs.unlink(file)
    } catch (err) {
      if (vfs.isMissing(err)) return false
      throw vfs.ioError(err, what, file)
    }
    yield* this.syncDir()
    return true
  }

  /**
   * The sweep on open: removes the staging files of dead processes of this
   * namespace, this process's that no write has in flight, and those written
   * in another namespace or on another host once they are a lease old
   * unchanged (docs/FORMAT.md §5). Returns whether it removed any, and in
   * how many ms the youngest kept one of those is a lease old (the time for
   * another sweep, which, `again`, looks at those alone), if it kept any.
   */
  sweep(names: string[], again = false): { removed: boolean; dueMs?: number } {
    let removed = false
    let dueMs: number | undefined
    for (const name of names) {
      const m = STAGING.exec(name)
      if (!m) continue
      const pid = Number(m[2])
      const seq = Number(m[3])
      if (again && !writtenElsewhere(seq)) continue
      const path = join(this.dir, name)
      // Our pid, whatever the tag says: never a file a write of ours has in flight.
      if (pid === process.pid && liveHere(path)) continue
      const ageMs = () => {
        try {
          return Math.max(0, Date.now() - fs.lstatSync(path).mtimeMs)
        } catch {
          return undefined
        }
      }
      const f = fate(pid, seq, processAlive, ageMs, DEFAULT_LEASE_MS)
      if (typeof f === 'object') dueMs = Math.min(dueMs ?? Infinity, f.keepForMs)
      else if (f !== 'keep') {
        try {
          vfs.unlink.sync(path)
          removed = true
        } catch {
          // Only garbage is left behind; no data is at stake.
        }
      }
    }
    return { removed, dueMs }
  }
}

/**
 * The sweep again, for the staging files from elsewhere that the one on open
 * kept because they were younger than the lease: run when the youngest is
 * past it, and again while a sweep keeps some. A timer that does not keep
 * the process alive; `stop` at the store's close.
 */
export class SweepAgain {
  private timer: ReturnType<typeof setTimeout> | undefined
  private stopped = false

  /** `sweep` resolves to when the next one is due (ms), if one is. */
  constructor(private readonly sweep: () => Promise<number | undefined>) {}

  arm(dueMs: number | undefined): void {
    if (dueMs === undefined || this.stopped) return
    // A little past the lease, so that the file is past it by any reading of the clock.
    this.timer = setTimeout(() => {
      this.timer = undefined
      // A failed sweep only leaves garbage behind.
      this.sweep().then((next) => this.arm(next), () => {})
    }, dueMs + 50)
    this.timer.unref?.()
  }

  stop(): void {
    this.stopped = true
    if (this.timer !== undefined) clearTimeout(this.timer)
  }
}

/** The error of a write (or a lock) in a store opened with `readOnly: true`, naming its directory. */
export function readOnlyError(dir: string): KonserveError {
  return new KonserveError('ERR_READ_ONLY', `the store is open read-only (readOnly: true): writes and locks are refused: ${dir}`, { file: dir })
}
