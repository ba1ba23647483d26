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
 * - Which inode we hold is asked (`fstat`) at the first repeat, not at the
 *   read: a key read once pays nothing but the kept descriptor. Then the
 *   file's ctime must be older than the read by SETTLED_MS, more than the
 *   kernel's timestamp granularity (one clock tick; a second where the file
 *   system keeps whole seconds, COARSE_SETTLED_MS): a change in place after
 *   the read would have stamped a later ctime, so it is read again instead.
 * - A stat walks the whole path, so a store directory moved away or deleted
 *   and recreated is seen like any replaced file.
 * - Only file systems with stable, unique inode numbers whose every change
 *   passes through this kernel are used (the native cache's list); NFS,
 *   FUSE and the rest read the file every time. Linux only.
 *
 * Bounds: a store charges each entry its file size, path and ENTRY_OVERHEAD
 * against `valueCacheBytes` (default 4 MiB, 0 turns it off), so a replaced
 * file it still holds keeps at most that much disk space from being freed
 * until its entry goes. Descriptors are one budget for the thread, an eighth
 * of the process's open-file limit and at most 4,096 (a worker thread's is
 * that divided by the number of CPUs). Entries are evicted by
 * CLOCK; `close` releases a store's, and so does the garbage collector for a
 * store dropped without `close`.
 */
import * as fs from 'node:fs'
import * as os from 'node:os'
import { isMainThread } from 'node:worker_threads'
import type { RawValue } from '../../backing/index.js'
import * as vfs from './vfs.js'

/** The default budget of a store, as the native core's DEFAULT_VALUE_CACHE_BYTES. */
export const DEFAULT_VALUE_CACHE_BYTES = 4 << 20
/** The largest key file cached (as the native cache: one small read). */
export const MAX_HELD_FILE = 16 * 1024
/** What an entry costs besides its file and path. */
const ENTRY_OVERHEAD = 96
/** How much older than the read a file's ctime must be at its first repeat (file timestamps lag by up to a clock tick: 1-10 ms). */
export const SETTLED_MS = 20
/**
 * The same for a ctime on a whole second: it may come from a file system
 * that keeps whole seconds (ext4 with 128-byte inodes, as mke2fs makes for
 * file systems under 512 MiB, and ext3), where a change in place later in
 * that second keeps the same ctime. Such a file must be a second older.
 * (A finer file system's ctime falls on a whole second about once in
 * millions: that file is only held a second later.)
 */
export const COARSE_SETTLED_MS = 1000 + SETTLED_MS

/**
 * The wall clock as this module found it. Test suites' fake timers (jest,
 * vitest, sinon) replace `Date` later: a fake clock ahead of the kernel's
 * would make a fresh change look settled. One that was already fake when
 * this module loaded (not the engine's own function) turns the cache off.
 */
const wallNow: () => number = Date.now
const wallClockTrusted = /\{\s*\[native code\]\s*\}\s*$/.test(Function.prototype.toString.call(wallNow))

/** Now by the wall clock this module trusts (for `hold`'s `readAt`). */
export function readStart(): number {
  return wallNow()
}

/** Whether a file whose ctime was `ctimeMs` when read at `readAt` is old enough that any later change in place stamps another ctime. */
export function settledBy(ctimeMs: number, readAt: number): boolean {
  return ctimeMs <= readAt - (ctimeMs % 1000 === 0 ? COARSE_SETTLED_MS : SETTLED_MS)
}

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

/** Descriptors every store's cache may hold at once in this thread. */
let fdBudget: number | undefined
let fdsHeld = 0

/**
 * An eighth of the open-file limit, at most 4,096, on the main thread. Each
 * worker thread has a budget of its own (module state is per thread) that
 * cannot see the others': it gets that divided by the number of CPUs, so a
 * pool of one worker per CPU holds at most as many as the main thread.
 */
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
    if (!isMainThread) fdBudget = Math.floor(fdBudget / Math.max(1, os.availableParallelism?.() ?? os.cpus().length))
  }
  return fdBudget
}

/** @internal For tests: this thread's descriptor budget (undefined: from the open-file limit again) and how many are held. */
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
  /** When its read began (readStart() before the open): a change in place after the read stamps a later ctime. */
  readAt: number
  /** Whether dev, ino, ctimeMs and mtimeMs are known (the first repeat learns them). */
  known: boolean
  dev: number
  ino: number
  size: number
  ctimeMs: number
  mtimeMs: number
  serializer: number
  value: Uint8Array
  charge: number
  /** Read since a CLOCK hand last passed. */
  used: boolean
  /** Its slots in the process's ring and in its store's. */
  slot: number
  ownSlot: number
}

/**
 * Entries in slots that a CLOCK hand sweeps: the next victim is the first
 * entry the hand finds not read since it last passed (it clears the bits of
 * the read ones on its way). An array, not a Set used as a queue: V8 leaves
 * a deleted Set entry as a hole until the table is rebuilt, and a queue
 * that deletes at its front and iterates from it steps over every hole.
 */
class Ring {
  private readonly slots: Array<Entry | undefined> = []
  private readonly free: number[] = []
  private hand = 0

  add(e: Entry): number {
    const i = this.free.pop() ?? this.slots.length
    this.slots[i] = e
    return i
  }

  remove(i: number): void {
    this.slots[i] = undefined
    this.free.push(i)
  }

  victim(): Entry | undefined {
    const n = this.slots.length
    for (let steps = 0; steps < 2 * n; steps++) {
      if (this.hand >= n) this.hand = 0
      const e = this.slots[this.hand++]
      if (e === undefined) continue
      if (!e.used) return e
      e.used = false
    }
    return undefined
  }
}

/** Every store's entries: one ring for the thread, so a store that needs a descriptor can take one from a store nobody reads any more (dropped without `close`, not yet collected). */
const everyStore = new Ring()

const finalizer = new FinalizationRegistry<HeldValues>((held) => held.clear())

/** The `statfs` type of the file system of `path`; undefined where it cannot be asked (not Linux, Node before 18.15 without statfsSync, an error). */
function fsTypeOf(path: string): number | undefined {
  if (process.platform !== 'linux') return undefined
  try {
    return fs.statfsSync(path).type
  } catch {
    return undefined
  }
}

/** Whether `path` (a store directory, a key file) is on a file system the cache can use (one listed above). */
function cacheableFs(path: string): boolean {
  const type = fsTypeOf(path)
  return type !== undefined && LOCAL_FS.has(type)
}

export class HeldValues {
  private readonly entries = new Map<string, Entry>()
  /** This store's entries, for its byte budget. */
  private readonly own = new Ring()
  private bytes = 0
  /** Lookups answered from memory. */
  hits = 0
  /** Lookups of a held entry whose file had changed, or was too fresh to hold (the file read again). */
  misses = 0
  /** Set by `close` (or a key file found on a file system the cache cannot use): nothing is held from then on; a read still in flight closes its descriptor. */
  private closed = false

  private constructor(private readonly budget: number) {}

  /**
   * A store's cache, or undefined where it cannot promise to see every
   * change (or `budget` is 0). `owner` is the store: its collection closes
   * what is held (the cache must not refer to it).
   */
  static open(dir: string, budget: number, owner: object): HeldValues | undefined {
    if (budget <= 0 || !wallClockTrusted || descriptorBudget() <= 0 || !cacheableFs(dir)) return undefined
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
      // lstat: a link at the key path is another inode (the read refuses links: O_NOFOLLOW).
      st = fs.lstatSync(file, { throwIfNoEntry: false })
    } catch {
      // EACCES, ENOTDIR, ...: the plain path reads and reports it
      this.drop(file)
      return undefined
    }
    if (st && !e.known && !this.learn(e)) st = undefined
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
   * must not close it), false when the caller closes it. `readAt` is when
   * the read began (readStart() before the open), not when it ended: an
   * async read's callback may run long after the read, and a change in
   * place between the two must not look older than the read.
   */
  hold(file: string, readAt: number, fd: number, size: number, serializer: number, value: Uint8Array): boolean {
    if (this.closed || size > MAX_HELD_FILE) return false
    const charge = size + file.length + ENTRY_OVERHEAD
    if (charge > this.budget) return false
    this.drop(file)
    while (this.bytes + charge > this.budget) if (!this.evict(this.own)) return false
    while (fdsHeld >= descriptorBudget()) if (!this.evict(everyStore)) return false
    const e: Entry = {
      owner: this,
      file,
      fd,
      readAt,
      known: false,
      dev: 0,
      ino: 0,
      size,
      ctimeMs: 0,
      mtimeMs: 0,
      serializer,
      value: value.slice(),
      charge,
      used: false,
      slot: -1,
      ownSlot: -1,
    }
    e.slot = everyStore.add(e)
    e.ownSlot = this.own.add(e)
    this.entries.set(file, e)
    this.bytes += charge
    fdsHeld++
    return true
  }

  /**
   * At an entry's first repeat: which inode it holds, if that file is
   * exactly what was read (its size) and was last changed well before the
   * read (settledBy), so no change in place can have come after it unseen.
   */
  private learn(e: Entry): boolean {
    let st: fs.Stats
    try {
      st = fs.fstatSync(e.fd)
    } catch {
      return false
    }
    if (st.size !== e.size || !settledBy(st.ctimeMs, e.readAt)) return false
    // The store was checked at open; its path may lead elsewhere since (a directory swapped for a
    // link to NFS): a file on a file system the cache cannot use turns this store's cache off. One
    // that cannot be asked (removed meanwhile) is only not held: a dissoc racing this must not
    // turn the cache off for good.
    const type = fsTypeOf(e.file)
    if (type === undefined) return false
    if (!LOCAL_FS.has(type)) {
      this.closed = true
      this.clear()
      return false
    }
    e.dev = st.dev
    e.ino = st.ino
    e.ctimeMs = st.ctimeMs
    e.mtimeMs = st.mtimeMs
    e.known = true
    return true
  }

  /** Forgets `file` (this process just replaced or removed it): its descriptor is closed now rather than at eviction. */
  drop(file: string): void {
    const e = this.entries.get(file)
    if (e) this.release(e)
  }

  /** Closes every descriptor held (the store was collected). */
  clear(): void {
    for (const e of [...this.entries.values()]) this.release(e)
  }

  /** The store is closing: closes every descriptor held, and holds none from now on. */
  close(): void {
    this.closed = true
    this.clear()
  }

  /** How many entries (descriptors) this store holds. */
  get size(): number {
    return this.entries.size
  }

  /** Evicts the victim of `ring` (this store's, or every store's): false when there is none. */
  private evict(ring: Ring): boolean {
    const e = ring.victim()
    if (!e) return false
    e.owner.release(e)
    return true
  }

  /** Closes `e`'s descriptor and forgets it. */
  private release(e: Entry): void {
    everyStore.remove(e.slot)
    this.own.remove(e.ownSlot)
    this.entries.delete(e.file)
    this.bytes -= e.charge
    fdsHeld--
    vfs.closeQuietly(e.fd)
  }
}
