/**
 * The write-ahead log protocol (docs/WAL.md §4–§6) in the pure engine, over
 * ./vfs.ts: the same files, bytes, locks and steps as the core's
 * crates/core/src/wal.rs, so pure and native processes can share one log.
 *
 * - The log file `.konserve.wal` is created whole under a staging name
 *   (FORMAT.md §5, with the log lock's digits), zero-filled to the growth
 *   step, fsynced, renamed into place, the directory fsynced.
 * - Appends: concurrent async appends are one group commit (one frame, one
 *   `pwrite`, the end hint, one `fdatasync`) under the log lock: an
 *   in-process mutex, then the lock file `.57414c…57.lock` (FORMAT.md §6,
 *   ./filelock.ts), kept across frames while appends are queued, for at most
 *   20 ms (a quarter of the lease at most), and released when the queue is
 *   empty, after a failure, and on close. A blocking append commits its own
 *   frame.
 * - The index (key hash → newest record) of the current generation, caught
 *   up by the end hint before every read and append; a get re-validates a
 *   put's payload (a reset may have reused its offset).
 * - The checkpoint (under `.434b5054…54.lock`): staging files of the newest
 *   puts, renamed (deletes unlinked) in slices of at most 256 keys under the
 *   log lock, a directory fsync per slice, then the reset (slot A,
 *   `fdatasync`, slot B, `fdatasync`, the hint of the empty log) if nothing
 *   was appended meanwhile. Back-pressure: a committer that finds more than
 *   the cap of frames not checkpointed checkpoints first.
 * - A failed `fdatasync` poisons the log's StagingDir (ERR_FSYNC, then
 *   ERR_STORE_POISONED).
 *
 * ./store.ts uses it when the store has the log's marker (docs/WAL.md §8,
 * §9 items 3 and 4), as the core's store does.
 *
 * Each operation is a gensync operation (`.sync`, `.async`, or `yield*`).
 * Within one process a blocking call cannot wait for an async one that holds
 * the log's in-process lock (the event loop cannot run while it waits), so
 * no async operation holds it across an await: the work under the log lock
 * (a frame, flushKey, a checkpoint slice's renames, the reset) runs
 * synchronously in both forms, the async form having waited for the lock
 * file with nothing held (underLog). Only a blocking call made from inside
 * that work (a test's fault hook) finds the lock held: ERR_LOCK_TIMEOUT at
 * once instead of waiting forever. The price: an async frame's pwrites and
 * fdatasync (one per group commit) block the event loop while they run.
 */
import gensync, { type Handler } from 'gensync'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { KonserveError } from '../../errors.js'
import { toHex, xxh3_128 } from '../../codec/xxhash.js'
import {
  FRAME_HEAD,
  FRAMES_AT,
  HINT_AT,
  HINT_LEN,
  MAX_FRAME,
  MIN_FRAME,
  type NewWalRecord,
  SLOT_A,
  SLOT_B,
  SLOT_LEN,
  WAL_DELETE,
  WAL_FILE,
  WAL_FILE_NAME,
  WAL_PUT,
  type WalFrame,
  type WalHeader,
  type WalHint,
  type WalOp,
  checkTail,
  decodeFrameAt,
  decodeHeader,
  decodeHint,
  encodeFrame,
  encodeHeaderSlot,
  encodeHint,
  frameLen,
} from '../../format/wal.js'
import { type PureCodec, createPureCodec } from './codec.js'
import { DEFAULT_LEASE_MS, FileLocker, lockErrorCode } from './filelock.js'
import { type Staged, StagingDir, stagingName } from './staging.js'
import * as vfs from './vfs.js'

/** The log lock's name part (FORMAT.md §6 protocol): `.57414c…57.lock`. */
export const WAL_LOCK_HEX = '57414c57414c57414c57414c57414c57'
/** The checkpoint lock's name part: `.434b5054…54.lock`. */
export const CHECKPOINT_LOCK_HEX = '434b5054434b5054434b5054434b5054'
/** The log grows by this much (zero-filled, fsynced) at a time. */
export const GROW_STEP = 64 * 1024 * 1024
/** The log may hold this many bytes of frames not checkpointed before a committer checkpoints first. */
export const CHECKPOINT_CAP = 256 * 1024 * 1024
/** The longest a committer keeps the log's lock file across frames. */
export const LOCK_HOLD_MS = 20
/** A log idle this long after an append is checkpointed (docs/WAL.md §5). */
export const IDLE_CHECKPOINT_MS = 100
/** A checkpoint renames at most this many keys per hold of the log lock. */
const SLICE = 256
/** Zero-fill writes of at most this many bytes. */
const FILL_CHUNK = 1 << 20
/** Staging files of a checkpoint slice written at once (async form). */
const STAGE_CONCURRENCY = 16

/** A step of the log's I/O, as the test hook `fault` sees it. */
export type WalStep = 'create' | 'grow' | 'frame' | 'hint' | 'fdatasync' | 'slot' | 'stage' | 'rename' | 'unlink' | 'payload'

export interface WalOptions {
  /** fdatasync the log (and fsync the checkpoint's files). Default true. */
  syncBlob?: boolean
  /** How long the log lock is waited for (default 60000). */
  lockTimeoutMs?: number
  /** The lock lease (default DEFAULT_LEASE_MS). */
  leaseMs?: number
  /** The log grows by this many bytes at a time (GROW_STEP; tests use less): a multiple of 4096 above 12352. */
  growStep?: number
  /** The log grows when fewer than this many bytes are left past its end (MAX_FRAME; tests use less). */
  growMargin?: number
  /** Back-pressure cap (CHECKPOINT_CAP). */
  checkpointCap?: number
  /** How long the log's lock file may stay taken across frames while appends are queued (LOCK_HOLD_MS; 0: released after every frame). */
  lockHoldMs?: number
  /** The codec a put's payload is checked with on a get (the store's key); default: no key. */
  codec?: PureCodec
  /** The durable writes and the poison this log shares (the store's); default: its own. */
  staging?: StagingDir
  /** Open read-only: no log created, every write fails with ERR_READ_ONLY. */
  readOnly?: boolean
  /** For tests: the generation of a new log or of a reset (default: random, nonzero, another than `not`). */
  generation?: (not: bigint) => bigint
  /** For tests: called before each I/O step of the log; what it throws is that step's error (an errno error). */
  fault?: (step: WalStep, file: string) => void
  /**
   * The idle checkpoint (docs/WAL.md §5): after an append, a log idle for
   * this many milliseconds, and not empty, is checkpointed from a timer that
   * never keeps the process alive (the store passes IDLE_CHECKPOINT_MS;
   * default 0: never, so a log opened on its own checkpoints when asked).
   */
  idleCheckpointMs?: number
}

/** What the log says of a key. */
export type WalLookup =
  | { kind: 'put' /** The whole key file (checked: header, meta segment, key). */; payload: Uint8Array }
  | { kind: 'deleted' }
  | { kind: 'file' }
  | { kind: 'absent' }

/** Counters, for tests and benchmarks (the core's WalStats). */
export interface WalStats {
  frames: number
  records: number
  /** fdatasyncs (and the growth's fsyncs) of the log by this instance. */
  dataSyncs: number
  checkpoints: number
  resets: number
  checkpointedKeys: number
  /** Times this instance took the log's lock file (a hold kept across frames counts once). */
  logLocks: number
}

interface Entry {
  op: WalOp
  /** The file offset of the record's payload. */
  at: number
  len: number
  seq: bigint
}

/** The index of the current generation (docs/WAL.md §6). */
class Index {
  /** The seq of the last frame read (`first - 1` when none). */
  lastSeq: bigint
  /** The offset past the last frame read. */
  end = FRAMES_AT
  /** Key hash (hex) → its newest record. */
  readonly map = new Map<string, Entry>()

  constructor(readonly header: WalHeader) {
    this.lastSeq = header.first - 1n
  }

  /** Adds a frame read from bytes that start at file offset `base`. */
  add(frame: WalFrame, base: number): void {
    for (const r of frame.records) {
      this.map.set(toHex(r.keyHash), { op: r.op, at: base + r.payload[0], len: r.payload[1] - r.payload[0], seq: frame.seq })
    }
    this.lastSeq = frame.seq
    this.end = base + frame.at + frame.len
  }
}

/**
 * Records decided under the log lock (docs/WAL.md §4.1, the lock-free
 * replace): called after the committer's catch-up, before the frame is
 * encoded, synchronously, with the hex hashes of the keys the frame already
 * holds; returns the records to append (none: this write is not in the
 * frame), each payload at most the `maxPayload` it was queued with. It may
 * read the log (Wal.lookupLocked) and key files; what it throws fails the frame.
 */
export type Decide = (inFrame: ReadonlySet<string>) => Handler<readonly NewWalRecord[]>

/** What one writer hands to a frame: fixed records, or a decision made under the log lock. */
interface Item {
  records: readonly NewWalRecord[]
  decide?: Decide
  /** For a decision: the most payload bytes it may return (one record). */
  maxPayload?: number
}

interface Pending extends Item {
  resolve: () => void
  reject: (err: unknown) => void
}

const sameEntry = (a: Entry | undefined, b: Entry) => a !== undefined && a.op === b.op && a.at === b.at && a.len === b.len && a.seq === b.seq

/** A pause between polls of a busy lock: blocking, or a timer. */
const pause = gensync({
  sync: (ms: number): void => {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
  },
  async: (ms: number) => new Promise<void>((r) => setTimeout(r, ms)),
})

function randomGeneration(not: bigint): bigint {
  for (;;) {
    const g = randomBytes(8).readBigUInt64LE(0)
    if (g !== 0n && g !== not) return g
  }
}

/** A copy of an error for each writer of a rejected frame but the first. */
function copyError(err: unknown): unknown {
  if (!(err instanceof KonserveError)) return err
  return new KonserveError(err.code, err.message, { file: err.file, cause: err.cause })
}

/** The in-process half of the log lock: an async waits its turn, a blocking call cannot. */
const takeMutex = gensync({
  sync: (w: Wal): void => {
    if (w.mutexHeld) {
      throw new KonserveError(
        'ERR_LOCK_TIMEOUT',
        'the write-ahead log is locked by an async operation of this process, which a blocking call cannot wait for',
        { file: w.path },
      )
    }
    w.mutexHeld = true
  },
  async: async (w: Wal): Promise<void> => {
    while (w.mutexHeld) await new Promise<void>((r) => w.mutexWaiters.push(r))
    w.mutexHeld = true
  },
})

/** An open write-ahead log of one store directory. */
export class Wal {
  readonly path: string
  readonly staging: StagingDir
  readonly locker: FileLocker
  private readonly codec: PureCodec
  private fd = -1
  private closed = false
  private index: Index
  /** Bumped whenever `index` changes: a catch-up that read while another changed it starts again. */
  private version = 0
  /** Numbers the catch-ups' reads in the order they begin. */
  private readTickets = 0
  /** The ticket of the newest read a catch-up applied: the index holds everything acknowledged before that read began. */
  private freshAs = 0
  /** The file's length as last seen (under the log lock). */
  private fileLen = 0
  /** The log's lock file while this instance holds it, possibly across frames. */
  private hold: { token: string; since: number } | undefined
  /** @internal The in-process half of the log lock. */
  mutexHeld = false
  /** @internal */
  readonly mutexWaiters: Array<() => void> = []
  private checkpointing = false
  /** The generation and seq up to which every record is durable in its key file. */
  private done: { generation: bigint; seq: bigint } | undefined
  private readonly queue: Pending[] = []
  private running = false
  private runner: Promise<void> = Promise.resolve()
  private readonly counters: WalStats = { frames: 0, records: 0, dataSyncs: 0, checkpoints: 0, resets: 0, checkpointedKeys: 0, logLocks: 0 }
  private readonly opts: Required<
    Pick<WalOptions, 'syncBlob' | 'lockTimeoutMs' | 'leaseMs' | 'growStep' | 'growMargin' | 'checkpointCap' | 'lockHoldMs'>
  >
  private readonly fault: WalOptions['fault']
  private readonly newGeneration: (not: bigint) => bigint
  private readonly idleMs: number
  /** When this instance last appended a frame (performance.now()). */
  private lastAppend = 0
  /** The idle checkpoint's timer, while one is armed. */
  private idleTimer: ReturnType<typeof setTimeout> | undefined
  /** The idle checkpoint running now. */
  private idleRun: Promise<void> | undefined
  /** What the last idle checkpoint failed with (kept for tests and diagnostics; a failed fsync also poisons the store). */
  idleError: unknown

  private constructor(
    readonly dir: string,
    options: WalOptions,
  ) {
    this.opts = {
      syncBlob: options.syncBlob ?? true,
      lockTimeoutMs: options.lockTimeoutMs ?? 60_000,
      leaseMs: options.leaseMs ?? DEFAULT_LEASE_MS,
      growStep: options.growStep ?? GROW_STEP,
      growMargin: options.growMargin ?? MAX_FRAME,
      checkpointCap: options.checkpointCap ?? CHECKPOINT_CAP,
      lockHoldMs: options.lockHoldMs ?? LOCK_HOLD_MS,
    }
    this.path = join(dir, WAL_FILE_NAME)
    this.staging = options.staging ?? new StagingDir(dir, this.opts.syncBlob, options.readOnly ?? false)
    this.locker = new FileLocker(dir, this.opts.leaseMs)
    this.codec = options.codec ?? createPureCodec(0)
    this.fault = options.fault
    this.newGeneration = options.generation ?? randomGeneration
    this.idleMs = options.readOnly ? 0 : (options.idleCheckpointMs ?? 0)
    this.index = new Index({ generation: 1n, first: 1n })
  }

  /**
   * Opens the log of the store directory `dir` (which must exist), creating
   * it if there is none (whole, under a staging name, then renamed). An
   * existing log's header is read (ERR_CORRUPT when neither slot is valid,
   * ERR_UNSUPPORTED_VERSION for another version) and its frames scanned
   * (damage is ERR_CORRUPT naming the log and the offset; a torn tail is ignored).
   */
  static readonly open = gensync(function* (dir: string, options: WalOptions = {}): Handler<Wal> {
    const step = options.growStep ?? GROW_STEP
    if (step < FRAMES_AT + MIN_FRAME || step % 4096 !== 0) {
      throw new KonserveError('ERR_INVALID_ARGUMENT', "the log's growth step must be a multiple of 4096 above 12352 bytes")
    }
    let real: string
    try {
      real = yield* vfs.realpath(dir)
    } catch (err) {
      throw vfs.ioError(err, 'cannot resolve the store directory', dir)
    }
    const w = new Wal(real, options)
    const exists = function* (): Handler<boolean> {
      try {
        return yield* vfs.exists(w.path)
      } catch (err) {
        throw vfs.ioError(err, 'cannot look for the write-ahead log', w.path)
      }
    }
    if (!(yield* exists())) {
      // A read-only open creates nothing, not even the lock file.
      w.staging.checkWritable()
      yield* w.lockLog()
      try {
        if (!(yield* exists())) yield* w.create()
      } finally {
        w.unlockLog(false)
      }
    }
    try {
      w.fd = yield* vfs.open(w.path, vfs.STORE_OPEN[options.readOnly ? 'r' : 'r+'])
    } catch (err) {
      throw vfs.ioError(err, 'cannot open the write-ahead log', w.path)
    }
    try {
      yield* vfs.regularFileSize(w.fd, w.path, 'cannot open the write-ahead log')
      w.install(yield* w.scan())
    } catch (err) {
      vfs.closeQuietly(w.fd)
      throw err
    }
    return w
  })

  /** What this instance has done so far. */
  stats(): WalStats {
    return { ...this.counters }
  }

  /** How many async appends wait for the next frame (not counting those being committed). */
  queued(): number {
    return this.queue.length
  }

  /** Bytes of frames in the current generation (as of the last catch-up). */
  logBytes(): number {
    return this.index.end - FRAMES_AT
  }

  /** Whether this instance holds the log's lock file right now (between frames too). */
  holdsLogLock(): boolean {
    return this.hold !== undefined
  }

  // ---- the log lock ---------------------------------------------------------------------

  private maxHold(): number {
    return Math.min(this.opts.lockHoldMs, this.opts.leaseMs / 4)
  }

  /** The log lock: the in-process mutex, then the lock file (polled up to the lock timeout) unless still held from the previous frame. */
  private *lockLog(): Handler<void> {
    yield* takeMutex(this)
    try {
      if (this.hold && performance.now() - this.hold.since >= this.maxHold()) this.releaseHold()
      if (!this.hold) {
        const token = yield* this.takeFileLock(WAL_LOCK_HEX, true)
        this.hold = { token: token!, since: performance.now() }
        this.counters.logLocks++
      }
    } catch (err) {
      this.releaseMutex()
      throw err
    }
  }

  /**
   * Takes the log lock now if it is free (the in-process mutex must be
   * free): false when another process holds the lock file.
   */
  private tryLockLogNow(): boolean {
    takeMutex.sync(this)
    try {
      if (this.hold && performance.now() - this.hold.since >= this.maxHold()) this.releaseHold()
      if (this.hold) return true
      let attempt: ReturnType<FileLocker['tryAcquire']>
      try {
        attempt = this.locker.tryAcquire(WAL_LOCK_HEX)
      } catch (err) {
        throw vfs.ioError(err, "cannot take the write-ahead log's lock", this.locker.lockPath(WAL_LOCK_HEX), lockErrorCode(err))
      }
      if (!('taken' in attempt)) {
        this.releaseMutex()
        return false
      }
      this.hold = { token: attempt.taken.token, since: performance.now() }
      this.counters.logLocks++
      return true
    } catch (err) {
      this.releaseMutex()
      throw err
    }
  }

  /** Runs `work` (synchronously) with the log lock just taken, then releases it; the lock file kept as `unlockLog` says when `keepOnSuccess` and the work succeeded. */
  private runHoldingLog(work: () => Handler<unknown>, keepOnSuccess: boolean): unknown {
    let keep = false
    try {
      const r = gensync(work).sync()
      keep = keepOnSuccess
      return r
    } finally {
      this.unlockLog(keep)
    }
  }

  /**
   * Runs `work` under the log lock, then releases it (the lock file kept as
   * `unlockLog` says when `keepOnSuccess` and the work succeeded). The work
   * runs synchronously in both forms: the async form waits for the lock
   * file without holding anything, then takes the lock, does the work and
   * releases the lock in one synchronous run. So a blocking call of this
   * process never finds the log lock held by an async one (the event loop
   * cannot run while a blocking call waits: it could not wait for it), and
   * blocking and async calls mix freely on one instance. The price: the
   * async form's frame (its pwrites and its one fdatasync per group
   * commit), a flushKey's file and the checkpoint's renames and reset block
   * the event loop while they run.
   */
  private readonly underLogOp = gensync({
    sync: (work: () => Handler<unknown>, keepOnSuccess: boolean): unknown => {
      gensync(() => this.lockLog()).sync()
      return this.runHoldingLog(work, keepOnSuccess)
    },
    async: async (work: () => Handler<unknown>, keepOnSuccess: boolean): Promise<unknown> => {
      const start = performance.now()
      for (let ms = 0.05; ; ms = Math.min(ms * 2, 8)) {
        while (this.mutexHeld) await new Promise<void>((r) => this.mutexWaiters.push(r))
        if (this.tryLockLogNow()) return this.runHoldingLog(work, keepOnSuccess)
        if (performance.now() - start >= this.opts.lockTimeoutMs) {
          const file = this.locker.lockPath(WAL_LOCK_HEX)
          throw new KonserveError('ERR_LOCK_TIMEOUT', `the write-ahead log stayed locked for longer than the lock timeout; lock file ${file}`, {
            file,
          })
        }
        await pause.async(ms)
      }
    },
  })

  private *underLog<T>(work: () => Handler<T>, keepOnSuccess: boolean): Handler<T> {
    return (yield* this.underLogOp(work, keepOnSuccess)) as T
  }

  /**
   * Releases the log lock: the lock file too, unless `keep` (the work under
   * it succeeded), appends are queued and the hold is younger than the
   * longest hold.
   */
  private unlockLog(keep: boolean): void {
    const young = this.hold !== undefined && performance.now() - this.hold.since < this.maxHold()
    if (!(keep && young && this.queue.length > 0 && !this.closed)) this.releaseHold()
    this.releaseMutex()
  }

  private releaseMutex(): void {
    this.mutexHeld = false
    this.mutexWaiters.shift()?.()
  }

  /** Releases the log's lock file if this instance holds it. */
  private releaseHold(): void {
    const h = this.hold
    this.hold = undefined
    if (!h) return
    try {
      this.locker.release(WAL_LOCK_HEX, h.token)
    } catch {
      // A lock file that could not be removed names this live process:
      // filelock keeps its token as an orphan our next acquire takes over.
    }
  }

  /** Takes a lock file: its token; polled with backoff up to the lock timeout when `wait`, else undefined when busy. */
  private *takeFileLock(hex: string, wait: boolean): Handler<string | undefined> {
    const start = performance.now()
    for (let ms = 0.05; ; ms = Math.min(ms * 2, 8)) {
      let attempt: ReturnType<FileLocker['tryAcquire']>
      try {
        attempt = this.locker.tryAcquire(hex)
      } catch (err) {
        throw vfs.ioError(err, "cannot take the write-ahead log's lock", this.locker.lockPath(hex), lockErrorCode(err))
      }
      if ('taken' in attempt) return attempt.taken.token
      if (!wait) return undefined
      if (performance.now() - start >= this.opts.lockTimeoutMs) {
        const file = this.locker.lockPath(hex)
        throw new KonserveError('ERR_LOCK_TIMEOUT', `the write-ahead log stayed locked for longer than the lock timeout; lock file ${file}`, { file })
      }
      yield* pause(ms)
    }
  }

  // ---- I/O ------------------------------------------------------------------------------

  private *writeAt(bytes: Uint8Array, at: number, what: string, step: WalStep): Handler<void> {
    try {
      this.fault?.(step, this.path)
      yield* vfs.writeAll(this.fd, bytes, at)
    } catch (err) {
      throw vfs.ioError(err, what, this.path)
    }
  }

  private *syncLog(what: string): Handler<void> {
    if (!this.opts.syncBlob) return
    this.counters.dataSyncs++
    try {
      this.fault?.('fdatasync', this.path)
      yield* vfs.fdatasync(this.fd)
    } catch (err) {
      throw this.staging.fsyncFailed(err, what, this.path)
    }
  }

  /** Exactly `len` bytes at `at`: a shorter file is ERR_CORRUPT. */
  private *readAt(len: number, at: number): Handler<Uint8Array> {
    const b = yield* this.readUpto(len, at)
    if (b.length < len) throw new KonserveError('ERR_CORRUPT', `the write-ahead log ends before offset ${at + len}`, { file: this.path })
    return b
  }

  private *readUpto(len: number, at: number): Handler<Uint8Array> {
    try {
      return yield* vfs.pread(this.fd, at, len)
    } catch (err) {
      throw vfs.ioError(err, 'cannot read the write-ahead log', this.path)
    }
  }

  private *size(): Handler<number> {
    try {
      return yield* vfs.regularFileSize(this.fd, this.path, 'cannot stat the write-ahead log')
    } catch (err) {
      throw vfs.ioError(err, 'cannot stat the write-ahead log', this.path)
    }
  }

  /** Writes a new log whole under a staging name and renames it into place (under the log lock). */
  private *create(): Handler<void> {
    this.staging.checkWritable()
    const header = { generation: this.newGeneration(0n), first: 1n }
    const head = new Uint8Array(FRAMES_AT)
    head.set(encodeHeaderSlot(header), SLOT_A)
    head.set(encodeHeaderSlot(header), SLOT_B)
    head.set(encodeHint({ generation: header.generation, seq: 0n, end: FRAMES_AT }), HINT_AT)
    const steps = {
      create: 'cannot create a new write-ahead log',
      write: 'cannot write a new write-ahead log',
      fsync: 'cannot fsync a new write-ahead log',
      rename: 'cannot rename the new write-ahead log into place',
    }
    const s = yield* this.staging.create(stagingName(WAL_LOCK_HEX), steps)
    try {
      this.fault?.('create', s.path)
      yield* this.staging.write(s, head, 0, steps)
      const zeros = new Uint8Array(FILL_CHUNK)
      for (let at = FRAMES_AT; at < this.opts.growStep; at += FILL_CHUNK) {
        yield* this.staging.write(s, zeros.subarray(0, Math.min(FILL_CHUNK, this.opts.growStep - at)), at, steps)
      }
      yield* this.staging.commit(s, this.path, steps)
    } catch (err) {
      throw vfs.ioError(err, steps.write, s.path)
    } finally {
      this.staging.drop(s)
    }
  }

  // ---- the index ------------------------------------------------------------------------

  /** A frame error of bytes read from offset `at`: its offsets are relative to `at`; this one names the file and the offset. */
  private atOffset(err: unknown, at: number): unknown {
    if (!(err instanceof KonserveError)) return err
    return new KonserveError(err.code, `${err.message} (the frame read from offset ${at})`, { file: this.path })
  }

  /** Reads the header and every frame of its generation from scratch (docs/FORMAT.md §10.3), then looks past the end for damage. */
  private *scan(): Handler<Index> {
    const head = yield* this.readUpto(SLOT_B + SLOT_LEN, 0)
    let header: WalHeader
    try {
      header = decodeHeader(head)
    } catch (err) {
      if (err instanceof KonserveError) err.file = this.path
      throw err
    }
    let fileLen = yield* this.size()
    const idx = new Index(header)
    for (let readOn = false; ; readOn = true) {
      for (;;) {
        const at = idx.end
        if (at + FRAME_HEAD > fileLen) break
        const h = yield* this.readAt(FRAME_HEAD, at)
        const len = new DataView(h.buffer, h.byteOffset, h.byteLength).getUint32(0, true)
        if (len < MIN_FRAME || len > MAX_FRAME || at + len > fileLen) break
        const buf = yield* this.readAt(len, at)
        let frame: WalFrame | undefined
        try {
          frame = decodeFrameAt(buf, 0, header.generation, idx.lastSeq + 1n)
        } catch (err) {
          throw this.atOffset(err, at)
        }
        if (!frame) break
        idx.add(frame, at)
      }
      const tail = yield* this.readUpto(Math.min(fileLen - idx.end, MAX_FRAME), idx.end)
      try {
        checkTail(tail, idx.end, header.generation, idx.lastSeq + 1n)
        break
      } catch (err) {
        // A later frame past the end: damage, or another process's frames
        // appended while this scan (which takes no lock) read the end. A frame
        // is written only once the one before it is whole, so reading on from
        // the end once more finds every frame whole that was only being
        // written (the core's rescan does the same); what still does not fit is damage.
        if (!readOn && err instanceof KonserveError && err.code === 'ERR_CORRUPT') {
          fileLen = yield* this.size()
          continue
        }
        if (err instanceof KonserveError) err.file = this.path
        throw err
      }
    }
    this.fileLen = Math.max(this.fileLen, fileLen)
    return idx
  }

  private install(idx: Index): void {
    this.index = idx
    this.version++
  }

  /**
   * Catches the index up to the end hint (docs/WAL.md §6): current when the
   * hint names its generation, seq and end; the later frames of the same
   * generation read and added; else a scan from scratch. Reads happen with
   * nothing held: what was read is applied only if no other catch-up changed
   * the index meanwhile (else it starts again).
   */
  private *catchUp(): Handler<void> {
    // A catch-up whose read began after this call began, applied meanwhile,
    // is as good as this one's: it ends the retries (else blocking calls
    // that change the index between every await of an async catch-up would
    // make it retry for ever).
    const called = ++this.readTickets
    for (;;) {
      const v = this.version
      const idx = this.index
      const ticket = ++this.readTickets
      const h = decodeHint(yield* this.readAt(HINT_LEN, HINT_AT))
      if (this.version !== v) {
        if (this.freshAs > called) return
        continue
      }
      if (h && h.generation === idx.header.generation) {
        if (h.seq === idx.lastSeq && h.end === idx.end) {
          this.freshAs = Math.max(this.freshAs, ticket)
          return
        }
        if (h.seq > idx.lastSeq && h.end > idx.end && h.end - idx.end <= 1 << 30) {
          const frames = yield* this.readFrames(idx, h)
          if (this.version !== v) {
            if (this.freshAs > called) return
            continue
          }
          if (frames) {
            for (const f of frames) idx.add(f, f.base)
            this.version++
            this.freshAs = Math.max(this.freshAs, ticket)
            return
          }
        }
      }
      const fresh = yield* this.scan()
      if (this.version !== v) {
        if (this.freshAs > called) return
        continue
      }
      this.install(fresh)
      this.freshAs = Math.max(this.freshAs, ticket)
      return
    }
  }

  /** The frames from the index's end to the hint's, if they all fit. */
  private *readFrames(idx: Index, hint: WalHint): Handler<Array<WalFrame & { base: number }> | undefined> {
    const base = idx.end
    const buf = yield* this.readUpto(hint.end - base, base)
    if (buf.length < hint.end - base) return undefined
    const out: Array<WalFrame & { base: number }> = []
    let seq = idx.lastSeq + 1n
    for (let pos = 0; pos < buf.length; ) {
      let frame: WalFrame | undefined
      try {
        frame = decodeFrameAt(buf, pos, idx.header.generation, seq)
      } catch (err) {
        throw this.atOffset(err, base)
      }
      if (!frame) return undefined
      out.push({ ...frame, base })
      pos += frame.len
      seq++
    }
    return seq - 1n === hint.seq ? out : undefined
  }

  // ---- appends --------------------------------------------------------------------------

  /**
   * Appends `records` as one frame and returns once it is durable: one
   * `pwrite` of the frame, one of the end hint, one `fdatasync`. The async
   * form joins the group commit: the records of the async appends in flight
   * are one frame (up to MAX_FRAME; more wait for the next). A multi-record
   * call is durable all or nothing. Errors: ERR_INVALID_ARGUMENT (no
   * records, a malformed record, more than one frame holds), ERR_FSYNC (the
   * log's fdatasync failed: poisoned, every later write fails with
   * ERR_STORE_POISONED), a write's error (ERR_NO_SPACE, ERR_IO: nothing of
   * the frame is acknowledged, the next frame is written over it).
   */
  readonly append = gensync({
    sync: (records: readonly NewWalRecord[]): void => {
      encodeFrame(1n, 1n, records)
      this.checkOpen()
      this.commitAlone([{ records }])
    },
    async: (records: readonly NewWalRecord[]): Promise<void> => {
      try {
        // What no frame could hold is refused before it joins a batch.
        encodeFrame(1n, 1n, records)
        this.checkOpen()
      } catch (err) {
        return Promise.reject(err)
      }
      const own = records.map((r) => ({ op: r.op, keyHash: r.keyHash.slice(), payload: r.payload.slice() }))
      return new Promise<void>((resolve, reject) => {
        this.queue.push({ records: own, resolve, reject })
        if (!this.running) this.runner = this.run()
      })
    },
  })

  /**
   * Appends what `decide` returns, decided under the log lock after the
   * committer's catch-up (see Decide): the lock-free replace of docs/WAL.md
   * §4.1. Returns once the frame holding its records is durable (at once when
   * it returned none). The async form joins the group commit: the decisions
   * of the writes in flight are made in order within one hold of the log
   * lock and share one frame and one fdatasync with the other appends.
   */
  readonly appendDecided = gensync({
    sync: (decide: Decide, maxPayload: number): void => {
      this.checkOpen()
      this.commitAlone([{ records: [], decide, maxPayload }])
    },
    async: (decide: Decide, maxPayload: number): Promise<void> => {
      try {
        this.checkOpen()
        if (frameLen([maxPayload]) > MAX_FRAME) throw new KonserveError('ERR_INVALID_ARGUMENT', 'a decided record cannot be longer than a frame', { file: this.path })
      } catch (err) {
        return Promise.reject(err)
      }
      return new Promise<void>((resolve, reject) => {
        this.queue.push({ records: [], decide, maxPayload, resolve, reject })
        if (!this.running) this.runner = this.run()
      })
    },
  })

  /**
   * Passes through the log lock (docs/WAL.md §4.1: a locked writer on a
   * version-3 store, once it holds its key lock files): takes it and
   * releases it, writing nothing. When this instance keeps the lock file
   * across frames, the in-process mutex is enough.
   */
  readonly pass = gensync(() => this.underLog(function* () {}, true))

  // ---- the idle checkpoint (docs/WAL.md §5) ------------------------------------------------

  /** After a frame: (re)arms the idle checkpoint's timer. */
  private armIdle(): void {
    this.lastAppend = performance.now()
    if (this.idleMs <= 0 || this.closed || this.idleTimer !== undefined || this.idleRun !== undefined) return
    this.startIdleTimer(this.idleMs)
  }

  private startIdleTimer(ms: number): void {
    const t = setTimeout(() => this.idleTick(), ms)
    t.unref?.()
    this.idleTimer = t
  }

  /**
   * The timer fired: a log appended to since then waits again; an idle one,
   * not empty, gets a checkpoint (async; skipped when another runs one, and
   * then tried again after the next idle period). A failure is kept in
   * `idleError` and the next append's idle period tries again; a failed
   * fsync has poisoned the store already (every later write fails with
   * ERR_STORE_POISONED), as it does for a checkpoint a write runs.
   */
  private idleTick(): void {
    this.idleTimer = undefined
    if (this.closed) return
    const idle = performance.now() - this.lastAppend
    if (idle < this.idleMs) {
      this.startIdleTimer(this.idleMs - idle)
      return
    }
    if (this.logBytes() === 0) return
    this.runBackground()
  }

  /**
   * Starts a checkpoint in the background, as the idle one runs (async;
   * `idle()` waits for it), unless one runs already in this process or the
   * store takes no writes; returns at once. The size-triggered checkpoint
   * of an async write (store.ts `checkpointIfFull`), off the write's path as
   * the core's background thread runs it (docs/WAL.md §5).
   */
  startCheckpoint(): void {
    if (this.closed || this.idleRun !== undefined || this.checkpointing) return
    this.runBackground()
  }

  /** Runs a checkpoint as `idleRun`: a failure is kept in `idleError` and the idle checkpoint armed again. */
  private runBackground(): void {
    try {
      this.staging.checkWritable()
    } catch {
      return
    }
    const run = (async () => {
      let again = false
      try {
        const ran = await this.checkpoint.async()
        again = !ran || this.logBytes() > 0
      } catch (err) {
        this.idleError = err
      } finally {
        this.idleRun = undefined
        if (this.closed) vfs.closeQuietly(this.fd)
        else if (again) this.armIdle()
      }
    })()
    this.idleRun = run
  }

  /** Resolves once no background checkpoint (idle, or started by startCheckpoint) runs (for close, back-pressure and tests). */
  async idle(): Promise<void> {
    while (this.idleRun) await this.idleRun
  }

  private checkOpen(): void {
    if (this.closed) throw new KonserveError('ERR_CLOSED', 'the write-ahead log is closed', { file: this.path })
  }
  /**
   * Under the log lock (from a Decide): what the log says of a key, from the
   * index as the committer's catch-up left it (no catch-up: nobody else can
   * append meanwhile). A put's payload is checked as this key's file.
   */
  *lookupLocked(keyHash: Uint8Array): Handler<WalLookup> {
    const hex = toHex(keyHash)
    const e = this.index.map.get(hex)
    if (!e) return { kind: 'absent' }
    if (e.op === WAL_DELETE) return { kind: 'deleted' }
    if (e.op === WAL_FILE) return { kind: 'file' }
    const payload = yield* this.readAt(e.len, e.at)
    yield* this.checkPayload(payload, keyHash, hex, e.at)
    return { kind: 'put', payload }
  }


  private commitAlone(items: readonly Item[]): void {
    try {
      gensync(() => this.commit(items)).sync()
    } catch (err) {
      this.releaseIdleHold()
      throw err
    }
  }

  /** After a failure: never keep a hold past it (unless another frame is being committed under the mutex now). */
  private releaseIdleHold(): void {
    if (!this.mutexHeld) this.releaseHold()
  }

  /** The group commit of async appends: one frame per round, while appends are queued. */
  private async run(): Promise<void> {
    this.running = true
    try {
      while (this.queue.length > 0) {
        const batch: Pending[] = []
        const lens: number[] = []
        while (this.queue.length > 0) {
          const next = this.queue[0]!
          const more = next.decide ? [next.maxPayload ?? 0] : next.records.map((r) => r.payload.length)
          if (batch.length > 0 && frameLen([...lens, ...more]) > MAX_FRAME) break
          lens.push(...more)
          batch.push(this.queue.shift()!)
        }
        try {
          await gensync(() => this.commit(batch)).async()
        } catch (err) {
          this.releaseIdleHold()
          batch.forEach((p, i) => {
            p.reject(i === 0 ? err : copyError(err))
          })
          continue
        }
        for (const p of batch) p.resolve()
      }
    } finally {
      this.running = false
    }
  }

  /** One group commit: back-pressure, the log lock, catch-up, the decisions, room, the frame, the hint, one fdatasync. */
  private *commit(items: readonly Item[]): Handler<void> {
    this.staging.checkWritable()
    yield* this.catchUp()
    if (this.index.end - FRAMES_AT > this.opts.checkpointCap) yield* this.checkpointRun()
    yield* this.underLog(() => this.writeItems(items), true)
  }

  /**
   * Under the log lock: catches up, makes the decisions of `items` (docs/WAL.md
   * §4.1) and writes their records as one frame, if there are any.
   */
  private *writeItems(items: readonly Item[]): Handler<void> {
    yield* this.catchUp()
    const records: NewWalRecord[] = []
    const inFrame = new Set<string>()
    for (const it of items) {
      const rs = it.decide ? yield* it.decide(inFrame) : it.records
      for (const r of rs) {
        if (it.decide && r.payload.length > (it.maxPayload ?? 0)) {
          throw new KonserveError('ERR_INVALID_ARGUMENT', 'a record decided under the log lock is longer than it was queued for', { file: this.path })
        }
        records.push(r)
        inFrame.add(toHex(r.keyHash))
      }
    }
    if (records.length > 0) yield* this.writeFrame(records, true)
  }

  /** Writes one frame of `records` at the end (catch-up, room, the frame, the hint, one fdatasync). The caller holds the log lock. */
  private *writeFrame(records: readonly NewWalRecord[], caughtUp = false): Handler<void> {
    if (!caughtUp) yield* this.catchUp()
    const idx = this.index
    const seq = idx.lastSeq + 1n
    const generation = idx.header.generation
    const frame = encodeFrame(generation, seq, records)
    const at = idx.end
    const end = at + frame.length
    yield* this.ensureRoom(end)
    yield* this.writeAt(frame, at, 'cannot write a frame to the write-ahead log', 'frame')
    try {
      yield* this.writeAt(encodeHint({ generation, seq, end }), HINT_AT, "cannot write the write-ahead log's end hint", 'hint')
    } catch (err) {
      // The frame is whole and fits: a reader that scans may have seen
      // it, so it stays (never acknowledged; the next frame follows it).
      this.takeInOwnFrame(frame, generation, seq, at)
      throw err
    }
    yield* this.syncLog('cannot fdatasync the write-ahead log')
    this.counters.frames++
    this.counters.records += records.length
    this.armIdle()
    // The frame is durable: acknowledged whatever happens now. The index
    // takes it in here from the bytes just written (no read back), unless a
    // reader's catch-up read it meanwhile; anything else, at the next one.
    if (this.takeInOwnFrame(frame, generation, seq, at)) {
      // Under the log lock nobody else appended: current for any catch-up called before now.
      this.freshAs = Math.max(this.freshAs, ++this.readTickets)
      return
    }
    try {
      yield* this.catchUp()
    } catch {
      // Acknowledged all the same.
    }
  }

  /**
   * Takes the frame this process just wrote at `at` into the index from its
   * bytes (no read back). Whether it did: not when a reader's catch-up took
   * it in meanwhile, or the index is elsewhere.
   */
  private takeInOwnFrame(frame: Uint8Array, generation: bigint, seq: bigint, at: number): boolean {
    const f = decodeFrameAt(frame, 0, generation, seq)
    const now = this.index
    if (!f || now.header.generation !== generation || now.lastSeq + 1n !== seq || now.end !== at) return false
    now.add(f, at)
    this.version++
    return true
  }

  /**
   * Every key the log has a record of, with the op of its newest record
   * (after catching up), by the hex of its hash: what a listing takes over
   * the key files (docs/WAL.md §6; the core's `Wal::records`).
   */
  readonly records = gensync(() => this.recordsG())

  private *recordsG(): Handler<Map<string, WalOp>> {
    yield* this.catchUp()
    return new Map([...this.index.map].map(([hex, e]) => [hex, e.op]))
  }

  /**
   * Before a write that goes to a key file (a large value, a blob, an append
   * log, a trim: docs/WAL.md §4 step 5) of a key whose newest record is a
   * put or a delete, which would shadow that file (the core's
   * `Wal::flush_key`): under the log lock, the record's value is written
   * into the key file (a put: staging file, fsync, rename; a delete:
   * unlink), the directory fsynced, and only then a file record appended,
   * `fdatasync`. From then on the key file holds the key's newest value and
   * no checkpoint touches it, so the caller, holding the key's lock, may
   * replace the file as without a log. Returns whether it wrote anything.
   */
  readonly flushKey = gensync((keyHash: Uint8Array) => this.flushKeyG(keyHash))

  private *flushKeyG(keyHash: Uint8Array): Handler<boolean> {
    this.staging.checkWritable()
    const hex = toHex(keyHash)
    yield* this.catchUp()
    const first = this.index.map.get(hex)
    if (!first || first.op === WAL_FILE) return false
    return yield* this.underLog(() => this.flushLocked(keyHash, hex), true)
  }

  private *flushLocked(keyHash: Uint8Array, hex: string): Handler<boolean> {
    yield* this.catchUp()
    const e = this.index.map.get(hex)
    if (!e || e.op === WAL_FILE) return false
    const target = join(this.dir, `${hex}.ksv`)
    if (e.op === WAL_PUT) {
      const payload = yield* this.readAt(e.len, e.at)
      yield* this.checkPayload(payload, keyHash, hex, e.at)
      const steps = {
        create: 'cannot create a staging file',
        write: 'cannot write a staging file',
        fsync: 'cannot fsync a staging file',
        rename: 'cannot rename a staging file over the key file',
      }
      const st = yield* this.staging.create(stagingName(hex), steps)
      try {
        this.fault?.('stage', st.path)
        yield* this.staging.write(st, payload, 0, steps)
        yield* this.staging.seal(st, steps)
        this.fault?.('rename', target)
        yield* this.staging.rename(st, target, steps)
      } finally {
        this.staging.drop(st)
      }
    } else {
      try {
        this.fault?.('unlink', target)
        yield* vfs.unlink(target)
      } catch (err) {
        if (!vfs.isMissing(err)) throw vfs.ioError(err, "cannot remove a deleted key's file", target)
      }
    }
    yield* this.staging.syncDir()
    yield* this.writeFrame([{ op: WAL_FILE, keyHash, payload: new Uint8Array(0) }])
    return true
  }

  /** Grows the file (zero-filled, fsynced, in steps) until `end` plus the margin fits. Under the log lock. */
  private *ensureRoom(end: number): Handler<void> {
    const want = end + Math.max(1, this.opts.growMargin)
    if (want <= this.fileLen) return
    this.fileLen = yield* this.size()
    if (want <= this.fileLen) return
    this.staging.checkWritable()
    const step = this.opts.growStep
    const target = Math.ceil(want / step) * step
    const zeros = new Uint8Array(FILL_CHUNK)
    for (let at = this.fileLen; at < target; at += FILL_CHUNK) {
      yield* this.writeAt(zeros.subarray(0, Math.min(FILL_CHUNK, target - at)), at, 'cannot grow the write-ahead log', 'grow')
    }
    if (this.opts.syncBlob) {
      this.counters.dataSyncs++
      try {
        this.fault?.('fdatasync', this.path)
        yield* vfs.fsync(this.fd)
      } catch (err) {
        throw this.staging.fsyncFailed(err, 'cannot fsync the grown write-ahead log', this.path)
      }
    }
    this.fileLen = target
  }

  // ---- reads ----------------------------------------------------------------------------

  /**
   * What the log says of the key whose hash (XXH3-128 of its CKE,
   * big-endian) is `keyHash`, after catching up. A put's payload is checked
   * as this key's file (header, meta segment, key); one that is not (a reset
   * reused its offset since the index was read) sends the reader back to the
   * hint: a new generation means catch up and look again, the same one means
   * the error stands (ERR_CORRUPT or ERR_KEY_MISMATCH, naming the log and the offset).
   */
  readonly get = gensync((keyHash: Uint8Array) => this.lookup(keyHash))

  private *lookup(keyHash: Uint8Array): Handler<WalLookup> {
    const hex = toHex(keyHash)
    for (let round = 0; round < 16; round++) {
      yield* this.catchUp()
      const generation = this.index.header.generation
      const e = this.index.map.get(hex)
      if (!e) return { kind: 'absent' }
      if (e.op === WAL_DELETE) return { kind: 'deleted' }
      if (e.op === WAL_FILE) return { kind: 'file' }
      try {
        this.fault?.('payload', this.path)
        const payload = yield* this.readAt(e.len, e.at)
        yield* this.checkPayload(payload, keyHash, hex, e.at)
        return { kind: 'put', payload }
      } catch (err) {
        const h = decodeHint(yield* this.readAt(HINT_LEN, HINT_AT))
        if (h?.generation === generation) throw err
      }
    }
    throw new KonserveError('ERR_IO', 'the write-ahead log was reset too often during one read', { file: this.path })
  }

  private *checkPayload(payload: Uint8Array, keyHash: Uint8Array, hex: string, at: number): Handler<void> {
    const bad = (code: KonserveError['code'], m: string) => new KonserveError(code, `the put record at offset ${at}: ${m}`, { file: this.path })
    let key: Uint8Array
    try {
      key = (yield* this.codec.decodeHead(payload, payload.length, undefined, `${hex}.ksv`)).key
    } catch (err) {
      if (err instanceof KonserveError) throw bad(err.code, err.message)
      throw err
    }
    const h = xxh3_128(key)
    if (h.length !== keyHash.length || h.some((b, i) => b !== keyHash[i])) throw bad('ERR_KEY_MISMATCH', 'the payload holds another key')
  }

  // ---- the checkpoint -------------------------------------------------------------------

  /**
   * Runs a checkpoint (docs/WAL.md §5) unless one runs already (in this
   * process or another: then false): the newest record of each key written
   * into its key file (a put: staging file, fsync, rename; a delete: unlink),
   * per slice of at most 256 keys under the log lock, a directory fsync per
   * slice; then, if no frame was appended meanwhile, the reset: a new
   * generation in slot A, fdatasync, slot B, fdatasync, the end hint of the empty log.
   */
  readonly checkpoint = gensync(() => this.checkpointRun())

  private *checkpointRun(): Handler<boolean> {
    this.staging.checkWritable()
    if (this.checkpointing) return false
    this.checkpointing = true
    try {
      const token = yield* this.takeFileLock(CHECKPOINT_LOCK_HEX, false)
      if (token === undefined) return false
      try {
        return yield* this.checkpointLocked()
      } finally {
        try {
          this.locker.release(CHECKPOINT_LOCK_HEX, token)
        } catch {
          // An orphan our next acquire takes over.
        }
      }
    } finally {
      this.checkpointing = false
    }
  }

  private *checkpointLocked(): Handler<boolean> {
    yield* this.catchUp()
    const idx = this.index
    const generation = idx.header.generation
    const s = idx.lastSeq
    const from = this.done && this.done.generation === generation ? this.done.seq : 0n
    const todo = [...idx.map].filter(([, e]) => e.seq > from).sort((a, b) => a[1].at - b[1].at)
    for (let i = 0; i < todo.length; i += SLICE) yield* this.checkpointSlice(todo.slice(i, i + SLICE))
    this.done = { generation, seq: s }
    this.counters.checkpoints++
    // The reset, only if nothing was appended after S.
    return yield* this.underLog(() => this.resetLocked(generation, s), false)
  }

  private *resetLocked(generation: bigint, s: bigint): Handler<boolean> {
    yield* this.catchUp()
    const now = this.index
    if (now.header.generation !== generation || now.lastSeq !== s || now.end === FRAMES_AT) return true
    const header = { generation: this.newGeneration(generation), first: s + 1n }
    const slot = encodeHeaderSlot(header)
    yield* this.writeAt(slot, SLOT_A, "cannot write the write-ahead log's header slot A", 'slot')
    yield* this.syncLog("cannot fdatasync the write-ahead log's header slot A")
    yield* this.writeAt(slot, SLOT_B, "cannot write the write-ahead log's header slot B", 'slot')
    yield* this.syncLog("cannot fdatasync the write-ahead log's header slot B")
    this.install(new Index(header))
    yield* this.writeAt(
      encodeHint({ generation: header.generation, seq: s, end: FRAMES_AT }),
      HINT_AT,
      "cannot write the write-ahead log's end hint",
      'hint',
    )
    this.done = { generation: header.generation, seq: s }
    this.counters.resets++
    return true
  }

  /**
   * Stages the puts of one slice (fsynced), then under the log lock renames
   * those still newest over their key files (a delete: unlinks the key
   * file), drops the others, and fsyncs the directory once.
   */
  private *checkpointSlice(slice: Array<[string, Entry]>): Handler<void> {
    const staged: Array<Staged | undefined> = new Array(slice.length)
    try {
      const steps = {
        create: 'cannot create a staging file',
        write: 'cannot write a staging file',
        fsync: 'cannot fsync a staging file',
        rename: 'cannot rename a staging file over the key file',
      }
      const self = this
      yield* vfs.eachLimited(slice.length, STAGE_CONCURRENCY, function* (i: number): Handler<void> {
        const [hex, e] = slice[i]!
        if (e.op !== WAL_PUT) return
        const payload = yield* self.readAt(e.len, e.at)
        const s = yield* self.staging.create(stagingName(hex), steps)
        staged[i] = s
        self.fault?.('stage', s.path)
        yield* self.staging.write(s, payload, 0, steps)
        yield* self.staging.seal(s, steps)
      })
      const changed = yield* this.underLog(() => this.renameSlice(slice, staged, steps), true)
      // The directory fsync needs no log lock: the reset waits for it.
      if (changed > 0) yield* this.staging.syncDir()
      this.counters.checkpointedKeys += changed
    } finally {
      for (const s of staged) if (s) this.staging.drop(s)
    }
  }

  /** Under the log lock: renames the staged puts of a slice still newest over their key files, unlinks its deletes still newest. */
  private *renameSlice(
    slice: Array<[string, Entry]>,
    staged: Array<Staged | undefined>,
    steps: Parameters<StagingDir['rename']>[2],
  ): Handler<number> {
    let changed = 0
    yield* this.catchUp()
    for (let i = 0; i < slice.length; i++) {
      const [hex, e] = slice[i]!
      if (!sameEntry(this.index.map.get(hex), e) || e.op === WAL_FILE) continue
      const target = join(this.dir, `${hex}.ksv`)
      if (e.op === WAL_PUT) {
        this.fault?.('rename', target)
        yield* this.staging.rename(staged[i]!, target, steps)
      } else {
        try {
          this.fault?.('unlink', target)
          yield* vfs.unlink(target)
        } catch (err) {
          if (!vfs.isMissing(err)) throw vfs.ioError(err, "cannot remove a deleted key's file", target)
        }
      }
      changed++
    }
    return changed
  }

  // ---- close ----------------------------------------------------------------------------

  /** Closes the log: the async form waits for the appends in flight; the log's lock file is released. */
  readonly close = gensync({
    sync: (): void => this.shut(),
    async: async (): Promise<void> => {
      while (this.running) await this.runner
      if (this.idleTimer !== undefined) clearTimeout(this.idleTimer)
      this.idleTimer = undefined
      await this.idle()
      this.shut()
    },
  })

  private shut(): void {
    if (this.closed) return
    this.closed = true
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer)
    this.idleTimer = undefined
    if (!this.mutexHeld) this.releaseHold()
    // An idle checkpoint still running closes the file when it ends (its I/O must not meet a reused descriptor).
    if (!this.idleRun) vfs.closeQuietly(this.fd)
  }
}

/** The hash a record names for a key given as its CKE: XXH3-128, big-endian (its file name's digits). */
export const recordHash = (cke: Uint8Array): Uint8Array => xxh3_128(cke)
