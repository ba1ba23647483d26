/**
 * The pure engine's value cache: small plain values kept in memory, each
 * with its key file held open, answered while one `stat` of the key file's
 * path finds the very inode that was read. A repeated `get` of an unchanged
 * key then costs one stat (about 2 µs) instead of open, read and close of
 * the file and the checks of its checksums. The native core does the same
 * with inotify (crates/core/src/valuecache.rs); Node has no synchronous
 * change notification, so this asks the file system on every hit instead.
 *
 * Why a write is never missed (docs/RELIABILITY.md, "The value cache"):
 * - Every writer, native or pure, in any process, changes a key only by
 *   renaming a new file over it or unlinking it; neither engine writes a key
 *   file in place. Either way the path stops naming the inode we read: a
 *   stat after the change was acknowledged finds another inode, or none.
 * - An inode number names one live inode of a file system. Ours is live
 *   while we hold its descriptor, so no new file can have its number: equal
 *   device and inode numbers mean the same file, not a reused number. The
 *   size, ctime and mtime are compared too (a change in place, a chmod).
 * - A stat walks the whole path, so a store directory moved away or deleted
 *   and recreated is seen like any replaced file.
 * - Only file systems with stable, unique inode numbers whose every change
 *   passes through this kernel are used (the native cache's list); NFS,
 *   FUSE and the rest read the file every time. Linux only.
 *
 * Bounds: a store charges each entry its file size, path and ENTRY_OVERHEAD
 * against `valueCacheBytes` (default 4 MiB, 0 turns it off), so a replaced
 * file it still holds keeps at most that much disk space from being freed
 * until its entry goes. Descriptors are one process-wide budget, an eighth
 * of the process's open-file limit and at most 4,096. Entries are evicted by
 * CLOCK; `close` releases a store's, and so does the garbage collector for a
 * store dropped without `close`.
 */
import * as fs from 'node:fs'
import type { RawValue } from '../../backing/index.js'
import * as vfs from './vfs.js'

/** The default budget of a store, as the native core's DEFAULT_VALUE_CACHE_BYTES. */
export const DEFAULT_VALUE_CACHE_BYTES = 4 << 20
/** The largest key file cached (as the native cache: one small read). */
export const MAX_HELD_FILE = 16 * 1024
/** What an entry costs besides its file and path. */
const ENTRY_OVERHEAD = 96

/** `statfs` types whose inode numbers are stable and unique among live files, and whose changes all pass through this kernel. */
const LOCAL_FS = new Set([
  0xef53, // ext2, ext3, ext4
  0x58465342, // XFS
  0x9123683e, // btrfs
  0x01021994, // tmpfs
  0xf2f52010, // F2FS
  0x2fc12fc1, // ZFS
  0x794c7630, // overlayfs
])

/** Descriptors every store's cache may hold at once in this process. */
let fdBudget: number | undefined
let fdsHeld = 0

function descriptorBudget(): number {
  if (fdBudget === undefined) {
    let soft = 1024
    try {
      const line = fs
        .readFileSync('/proc/self/limits', 'latin1')
        .split('\n')
        .find((l) => l.startsWith('Max open files'))
      const n = Number(line?.split(/\s+/)[3])
      if (Number.isFinite(n) && n > 0) soft = n
    } catch {
      // not Linux's procfs: the conservative default
    }
    fdBudget = Math.min(4096, Math.floor(soft / 8))
  }
  return fdBudget
}

/** @internal For tests: the process-wide descriptor budget (undefined: from the open-file limit again) and how many are held. */
export const testing = {
  setDescriptorBudget(n: number | undefined): void {
    fdBudget = n
  },
  descriptorsHeld: (): number => fdsHeld,
}

interface Entry {
  owner: HeldValues
  file: string
  fd: number
  dev: number
  ino: number
  size: number
  ctimeMs: number
  mtimeMs: number
  serializer: number
  value: Uint8Array
  charge: number
  /** Read since the CLOCK hand last passed. */
  used: boolean
}

/**
 * Every store's entries, in the order the CLOCK hand visits them: one
 * order for the process, so a store that needs a descriptor can take one
 * from a store nobody reads any more (dropped without `close`, not yet
 * collected).
 */
const clock = new Set<Entry>()

/**
 * CLOCK over every store's entries: the first not read since the hand last
 * passed goes; read ones get a second chance at the back. False when there
 * is nothing to evict.
 */
function evictAny(): boolean {
  for (const e of clock) {
    clock.delete(e)
    if (!e.used) {
      e.owner.release(e)
      return true
    }
    e.used = false
    clock.add(e)
  }
  return false
}

const finalizer = new FinalizationRegistry<HeldValues>((held) => held.clear())

/** Whether a store in `dir` can use the cache (Linux, a local file system listed above). */
function cacheableDir(dir: string): boolean {
  if (process.platform !== 'linux') return false
  try {
    return LOCAL_FS.has(fs.statfsSync(dir).type)
  } catch {
    return false
  }
}

export class HeldValues {
  private readonly entries = new Map<string, Entry>()
  private bytes = 0
  hits = 0
  misses = 0

  private constructor(private readonly budget: number) {}

  /**
   * A store's cache, or undefined where it cannot promise to see every
   * change (or `budget` is 0). `owner` is the store: its collection closes
   * what is held (the cache must not refer to it).
   */
  static open(dir: string, budget: number, owner: object): HeldValues | undefined {
    if (budget <= 0 || descriptorBudget() <= 0 || !cacheableDir(dir)) return undefined
    const held = new HeldValues(budget)
    finalizer.register(owner, held)
    return held
  }

  /**
   * The value of `file` if its path still names the inode read; undefined
   * when nothing is held for it, or it changed or is gone (its entry is
   * dropped: read the file, which answers or reports exactly as without the
   * cache).
   */
  lookup(file: string): RawValue | undefined {
    const e = this.entries.get(file)
    if (!e) return undefined
    let st: fs.Stats | undefined
    try {
      st = fs.statSync(file, { throwIfNoEntry: false })
    } catch {
      // EACCES, ENOTDIR, ...: the plain path reads and reports it
      this.drop(file)
      return undefined
    }
    if (!st || st.ino !== e.ino || st.dev !== e.dev || st.size !== e.size || st.ctimeMs !== e.ctimeMs || st.mtimeMs !== e.mtimeMs) {
      this.drop(file)
      this.misses++
      return undefined
    }
    e.used = true
    this.hits++
    // A copy: a decoded value may be a view of these bytes (msgpackr's binaries).
    return { serializer: e.serializer, value: e.value.slice(), log: false }
  }

  /**
   * Keeps `fd` (open on `file`, whose whole `size` bytes held `value`) with
   * the value, if the budgets allow: true when it is now held (the caller
   * must not close it), false when the caller closes it.
   */
  hold(file: string, fd: number, size: number, serializer: number, value: Uint8Array): boolean {
    if (size > MAX_HELD_FILE) return false
    const charge = size + file.length + ENTRY_OVERHEAD
    if (charge > this.budget) return false
    let st: fs.Stats
    try {
      st = fs.fstatSync(fd)
    } catch {
      return false
    }
    if (st.size !== size) return false
    this.drop(file)
    while (this.bytes + charge > this.budget) if (!this.evictOwn()) return false
    while (fdsHeld >= descriptorBudget()) if (!evictAny()) return false
    const e: Entry = {
      owner: this,
      file,
      fd,
      dev: st.dev,
      ino: st.ino,
      size,
      ctimeMs: st.ctimeMs,
      mtimeMs: st.mtimeMs,
      serializer,
      value: value.slice(),
      charge,
      used: false,
    }
    this.entries.set(file, e)
    clock.add(e)
    this.bytes += charge
    fdsHeld++
    return true
  }

  /** Forgets `file` (this process just replaced or removed it): its descriptor is closed now rather than at eviction. */
  drop(file: string): void {
    const e = this.entries.get(file)
    if (!e) return
    clock.delete(e)
    this.release(e)
  }

  /** Closes every descriptor held (the store is closing, or was collected). */
  clear(): void {
    for (const e of [...this.entries.values()]) {
      clock.delete(e)
      this.release(e)
    }
  }

  /** How many entries (descriptors) this store holds. */
  get size(): number {
    return this.entries.size
  }

  /** CLOCK over this store's own entries, for its byte budget (as evictAny). */
  private evictOwn(): boolean {
    for (const [file, e] of this.entries) {
      if (!e.used) {
        clock.delete(e)
        this.release(e)
        return true
      }
      e.used = false
      this.entries.delete(file)
      this.entries.set(file, e)
    }
    return false
  }

  /** @internal Closes `e`'s descriptor and forgets it (the caller took it out of the clock). */
  release(e: Entry): void {
    this.entries.delete(e.file)
    this.bytes -= e.charge
    fdsHeld--
    vfs.closeQuietly(e.fd)
  }
}
