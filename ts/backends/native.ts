/**
 * The file backing on the Rust core: durable writes, cross-process locks,
 * blocking calls on the main thread and async calls on the libuv threadpool.
 * Each operation is a `twinOp` over the binding's two entry points (the one
 * real twin in the code base); errors are typed where the binding is called.
 */
import { type LogInfo, type NewRecord, type RawBlobReplace, type RawEntry, type RawListing, type RawMeta, type RawReplace, type RawValue, type RawWrite, REPLACE_UNSURE, type StoreClock, pollingLock, twinOp } from '../backing/index.js'
import { type Backing, type BlobSink, type BlobSource, type ListCursor, type LogCursor, type LogWriter, MISS, type Op } from '../backing/seam.js'
import gensync, { type Handler } from 'gensync'
import { fromNative } from '../errors.js'
import { RAW_BYTES_ID } from '../serializers.js'
import { GroupCommit } from '../backing/group-commit.js'
import { type NativeBlobReader, type NativeBlobWriter, type NativeFileStore, type NativeLogCursor, type NativeMetaEntryLike, loadNative } from '../native.js'
import { releaseError } from './pure/filelock.js'
import { SweepAgain } from './pure/staging.js'

function call<T>(f: () => T): T {
  try {
    return f()
  } catch (err) {
    throw fromNative(err)
  }
}

async function callAsync<T>(p: () => Promise<T>): Promise<T> {
  try {
    return await p()
  } catch (err) {
    throw fromNative(err)
  }
}

const orUndefined = <T>(v: T | null): T | undefined => (v === null ? undefined : v)

/** A queued write's Promise, settled by its store's settler (see QueuedWrites). */
type Waiter = { resolve: (n: number) => void; reject: (err: unknown) => void }

/**
 * The Promises of a binding store's queued writes (`replaceQueued`,
 * docs/WAL.md §4.1.1), by id: one per binding object, shared by every
 * backing over it. The settler closes over this alone (never the binding
 * object, which the binding's threadsafe function would then keep alive):
 * the committer's outcomes arrive in batches, `[id, answer, ...]` and
 * `[id, code, message, file, ...]`, and each settles its Promise here, on
 * this thread, failures as KonserveErrors made as every binding error is.
 *
 * They settle in the check phase (setImmediate), never in the threadsafe
 * function's call: code they resume may queue the next writes at once
 * (an updateIn's read, function and write run on this thread), and Node
 * runs a threadsafe function's calls back to back while more arrive, so
 * settling there let a fast committer keep the event loop from its timers
 * for many frames in a row.
 */
class QueuedWrites {
  readonly waiting = new Map<number, Waiter>()
  private idle: (() => void)[] = []
  /** Outcomes received and not settled yet (see the class comment). */
  private received: [Float64Array, string[]][] = []

  static of(store: NativeFileStore): QueuedWrites {
    let q = queuedWrites.get(store)
    if (q === undefined) {
      const made = new QueuedWrites()
      store.settleWith((answers, failures) => made.receive(answers, failures))
      queuedWrites.set(store, made)
      q = made
    }
    return q
  }

  private receive(answers: Float64Array, failures: string[]): void {
    if (this.received.push([answers, failures]) > 1) return
    setImmediate(() => {
      const received = this.received
      this.received = []
      for (const [a, f] of received) this.settle(a, f)
    })
  }

  private settle(answers: Float64Array, failures: string[]): void {
    const w = this.waiting
    for (let i = 0; i < answers.length; i += 2) {
      const waiter = w.get(answers[i]!)
      if (waiter === undefined) continue
      w.delete(answers[i]!)
      waiter.resolve(answers[i + 1]!)
    }
    for (let i = 0; i < failures.length; i += 4) {
      const id = Number(failures[i])
      const waiter = w.get(id)
      if (waiter === undefined) continue
      w.delete(id)
      const err = Object.assign(new Error(failures[i + 2]), failures[i + 3] ? { code: failures[i + 1], file: failures[i + 3] } : { code: failures[i + 1] })
      waiter.reject(fromNative(err))
    }
    if (w.size === 0 && this.idle.length > 0) {
      const idle = this.idle
      this.idle = []
      for (const f of idle) f()
    }
  }

  /** The answer of queued write `id` (see settle). */
  answer(id: number): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject })
    })
  }

  /** Resolves once no queued write is pending (each settled, durable or failed). */
  whenIdle(): Promise<void> {
    return this.waiting.size === 0 ? Promise.resolve() : new Promise((resolve) => this.idle.push(resolve))
  }
}
const queuedWrites = new WeakMap<NativeFileStore, QueuedWrites>()

/**
 * `get` reads small files straight into a slab that this module owns (see
 * getValueInto in src/lib.rs): each read takes the next region, a region is
 * never written again, and a full slab is replaced, not reused. So a value is
 * a view that stays valid, and a read allocates nothing.
 */
const SLAB_SIZE = 64 * 1024
// A region must hold the 2-byte prefix and the largest file read this way.
const SLAB_MIN_ROOM = 2 + 16 * 1024
let slab = Buffer.allocUnsafeSlow(SLAB_SIZE)
let slabAt = 0
const WOULD_BLOCK = Symbol('would block')
const TOO_LARGE = Symbol('too large for the slab')

/** A value laid out `[flags, serializer, ...value]` (getValueSync, getValueAsync). */
function fromPrefixed(b: Buffer | null): RawValue | undefined {
  return b === null ? undefined : { serializer: b[1]!, value: b.subarray(2), log: b[0] === 1 }
}

// napi-rs takes Buffers; a Buffer view over the same memory costs no copy.
function buf(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength)
}
const bufs = (keys: Uint8Array[]) => keys.map(buf)
const records = (rs: NewRecord[]) => rs.map((r) => ({ serializer: r.serializer, stamp: r.stamp, bytes: buf(r.bytes) }))
const writes = (ws: RawWrite[]) =>
  ws.map((w) => ({ key: buf(w.key), serializer: w.serializer, meta: buf(w.meta), value: buf(w.value) }))

const replacing = (w: RawReplace) => ({
  key: buf(w.key),
  serializer: w.serializer,
  meta: buf(w.meta),
  revisionAt: w.revisionAt,
  value: buf(w.value),
  expectedRevision: w.expectedRevision,
  lock: w.lock,
})

/** napi-rs gives `null` for an absent optional field here; the Backing interface wants it absent. */
function meta(m: NativeMetaEntryLike): RawMeta {
  return m.log ? { key: m.key, serializer: m.serializer, meta: m.meta, file: m.file, log: m.log } : { key: m.key, serializer: m.serializer, meta: m.meta, file: m.file }
}

/** A binding call and its threadpool twin as one Op, with the binding's errors typed. */
function native<A extends unknown[], R>(blocking: (...args: A) => R, threadpool: (...args: A) => Promise<R>) {
  return twinOp<A, R>(
    (...args) => call(() => blocking(...args)),
    (...args) => callAsync(() => threadpool(...args)),
  )
}

function sink(w: NativeBlobWriter): BlobSink {
  return {
    write: native(
      (bytes: Uint8Array) => w.writeSync(buf(bytes)),
      (bytes: Uint8Array) => w.writeAsync(buf(bytes)),
    ),
    commit: native(
      () => w.commitSync(),
      () => w.commitAsync(),
    ),
    abort: () => call(() => w.abort()),
  }
}

const blobReplacing = (w: RawBlobReplace) => ({
  key: buf(w.key),
  meta: buf(w.meta),
  revisionAt: w.revisionAt,
  expectedRevision: w.expectedRevision,
  lock: w.lock,
})

/** blobReplace's answer: the writer (holding the key's lock when it took it) and its revision, or a REPLACE_* number. */
function opened(r: NativeBlobWriter | number): { sink: BlobSink; revision: number } | number {
  return typeof r === 'number' ? r : { sink: sink(r), revision: r.revision }
}

/**
 * A blocking range read into a Buffer Node allocates: memory the allocator
 * hands back again, its pages already mapped. A buffer the core allocates
 * is new memory each time (freed only when collected): a 10 MB bget spent
 * more time in page faults than in reading (3.5 ms vs readFileSync's 1.4 ms).
 */
function readWhole(r: NativeBlobReader, offset: number, length: number): Buffer {
  // A range the core refuses: its typed error (ERR_INVALID_ARGUMENT), as before.
  if (!Number.isSafeInteger(offset) || offset < 0 || offset > r.size || !Number.isSafeInteger(length) || length < 0) return r.readSync(offset, length)
  const n = Math.min(length, r.size - offset)
  const target = Buffer.allocUnsafeSlow(n)
  const got = r.readIntoSync(offset, target)
  return got === n ? target : target.subarray(0, got)
}

function source(r: NativeBlobReader | null): BlobSource | undefined {
  if (r === null) return undefined
  const plainOffset = r.plainOffset
  const file = r.file
  return {
    size: r.size,
    meta: meta(r.meta),
    read: native(
      (offset: number, length: number) => readWhole(r, offset, length),
      (offset: number, length: number) => r.readAsync(offset, length),
    ),
    readInto: r.readIntoAsync ? (offset, target) => callAsync(() => r.readIntoAsync!(offset, buf(target))) : undefined,
    close: () => r.close(),
    plain: plainOffset === null || plainOffset === undefined ? undefined : { file, offset: plainOffset },
  }
}

function logCursor(c: NativeLogCursor | null): LogCursor | undefined {
  if (c === null) return undefined
  return {
    next: native(
      (max: number) => orUndefined(c.nextBatchSync(max)),
      async (max: number) => orUndefined(await c.nextBatchAsync(max)),
    ),
    close: () => c.close(),
  }
}

export class NativeFileBacking implements Backing {
  readonly implementation = 'native' as const
  readonly atomicMultiKey = false
  readonly blocking = true
  /** The store's lastWrite clock (the `.konserve.clock` watermark), if it has one. */
  readonly clock?: Backing['clock']

  /**
   * A whole log written through a staging file (an import; Backing.logWriter).
   * The core has no streaming log writer of its own: the pure engine's
   * writes it, on the same files and in the same format, through `twin`, a
   * pure backing on this directory with this store's codec (opened at the
   * first use, as rekey opens one). Not on a store with a write-ahead log,
   * where a key file written outside the core would bypass the key's logged
   * value.
   */
  readonly logWriter?: Op<[key: Uint8Array, meta: Uint8Array, firstIndex: number], LogWriter>
  private twinOpened: Backing | undefined

  /** The staging sweep again, when the one on open kept files from another namespace (see SweepAgain). */
  private readonly sweepAgain: SweepAgain

  constructor(
    private readonly native: NativeFileStore,
    readonly lockScope: string,
    clock?: StoreClock,
    private readonly durable = true,
    twin?: () => Handler<Backing>,
  ) {
    if (clock) this.clock = twinOp(() => clock.nowSync(), () => clock.now())
    // The timer holds the store weakly: one dropped without close can still be collected (and end its log's thread).
    const weak = new WeakRef(native)
    this.sweepAgain = new SweepAgain(async () => {
      const due = await weak.deref()?.sweepStagingAgainAsync()
      return due === undefined || due < 0 ? undefined : due
    })
    this.sweepAgain.arm(native.stagingSweepDueMs ?? undefined)
    this.lockFree = native.lockFree === true
    if (this.lockFree) this.queued = QueuedWrites.of(native)
    if (twin && !native.onWal) {
      const self = this
      this.logWriter = gensync(function* (key: Uint8Array, meta: Uint8Array, firstIndex: number): Handler<LogWriter> {
        if (!self.twinOpened) {
          const opened = yield* twin()
          // Two first uses at once: the one that lost closes its own.
          if (!self.twinOpened) self.twinOpened = opened
          else if (opened.close) yield* opened.close()
        }
        return yield* self.twinOpened.logWriter!(key, meta, firstIndex)
      })
    }
  }

  /** The async form answers at once when the key is logged or its file cached (getNow: no thread hop, never a wait for the disk). */
  readonly get = twinOp(
    (key: Uint8Array): RawEntry | undefined => call(() => orUndefined(this.native.getSync(buf(key)))),
    (key: Uint8Array): Promise<RawEntry | undefined> => {
      try {
        const now = this.native.getNow(buf(key))
        if (now !== false) return Promise.resolve(orUndefined(now))
      } catch (err) {
        return Promise.reject(fromNative(err))
      }
      return callAsync(async () => orUndefined(await this.native.getAsync(buf(key))))
    },
  )

  /** `get`'s hot path: small files are read into the slab (see SLAB_SIZE), answered at once when cached. */
  readonly getValue = twinOp(
    (key: Uint8Array): RawValue | undefined => call(() => this.readSlab(key, false) as RawValue | undefined),
    (key: Uint8Array): Promise<RawValue | undefined> => {
      try {
        // Answered at once when the file is cached (no thread hop, no disk wait).
        const now = this.readSlab(key, true)
        // Known to be large: the general read on the threadpool, which opens it once.
        if (now === TOO_LARGE) return this.get.async(key).then((e) => e && { serializer: e.serializer, value: e.value, log: e.log !== undefined })
        if (now !== WOULD_BLOCK) return Promise.resolve(now)
      } catch (err) {
        return Promise.reject(fromNative(err))
      }
      return callAsync(async () => fromPrefixed(await this.native.getValueAsync(buf(key))))
    },
  )

  readonly getValueNow = (key: Uint8Array): RawValue | undefined | typeof MISS => {
    let now: ReturnType<NativeFileBacking['readSlab']>
    try {
      now = this.readSlab(key, true)
    } catch (err) {
      throw fromNative(err)
    }
    return now === WOULD_BLOCK || now === TOO_LARGE ? MISS : now
  }

  /** Reads `key` into the slab (see SLAB_SIZE); `now`: only if that cannot wait for the disk. */
  private readSlab(key: Uint8Array, now: boolean): RawValue | undefined | typeof WOULD_BLOCK | typeof TOO_LARGE {
    if (SLAB_SIZE - slabAt < SLAB_MIN_ROOM) {
      slab = Buffer.allocUnsafeSlow(SLAB_SIZE)
      slabAt = 0
    }
    const at = slabAt
    // napi-rs reads any Uint8Array as a Buffer: no view to make.
    const r = now ? this.native.getValueNow(key as Buffer, slab, at) : this.native.getValueInto(key as Buffer, slab, at)
    if (r === -1) return undefined
    if (r === -3) return WOULD_BLOCK
    // Too large for the slab: a Buffer of its own.
    if (r === -2) return now ? TOO_LARGE : fromPrefixed(this.native.getValueSync(key as Buffer))
    const len = r % 0x1_0000_0000
    const start = at + 2 + (r - len) / 0x1_0000_0000
    slabAt = (start + len + 7) & ~7
    const value = slab.subarray(start, start + len)
    const serializer = slab[at + 1]!
    const log = slab[at] === 1
    // Raw bytes go to the caller as they are: a Buffer of their own (small ones from Node's pool).
    // (A log has serializer 0 too: it is a log, not bytes, even when empty.)
    if (serializer === RAW_BYTES_ID && !log) return { serializer, value: Buffer.from(value), log: false }
    return { serializer, value, log, shared: true }
  }

  /**
   * The async form answers at once when the key's file is cached, or its
   * absence is (getMetaNow: no thread hop, never a wait for the disk), else on
   * the threadpool. Every replacing write reads this (for the revision), so an
   * async assoc of such a key costs one threadpool task (its put), not two.
   * (A brand-new key's first lookup is not cached: it still takes the hop.)
   */
  readonly getMeta = twinOp(
    (key: Uint8Array): RawMeta | undefined => call(() => orUndefined(this.native.getMetaSync(buf(key)))),
    (key: Uint8Array): Promise<RawMeta | undefined> => {
      try {
        const now = this.native.getMetaNow(buf(key))
        if (now !== false) return Promise.resolve(now === null ? undefined : meta(now))
      } catch (err) {
        return Promise.reject(fromNative(err))
      }
      return callAsync(async () => orUndefined(await this.native.getMetaAsync(buf(key))))
    },
  )
  readonly exists = native(
    (key: Uint8Array) => this.native.existsSync(buf(key)),
    (key: Uint8Array) => this.native.existsAsync(buf(key)),
  )

  /** Concurrent async puts are written as group commits (see group-commit.ts). */
  private readonly group = new GroupCommit((ws) => callAsync(() => this.native.putAsync(writes(ws))))
  readonly put = twinOp(
    (ws: RawWrite[]): void => call(() => this.native.putSync(writes(ws))),
    (ws: RawWrite[]): Promise<void> => {
      if (this.queued !== undefined) {
        // Straight to the log's committer from this thread, no threadpool task (the caller holds the keys' locks).
        let id: number
        try {
          id = this.native.putQueued(writes(ws))
        } catch (err) {
          return Promise.reject(fromNative(err))
        }
        if (id >= 0) return this.queued.answer(id).then(() => undefined)
      }
      return this.group.put(ws)
    },
  )
  /**
   * The fused replacing write (Backing.replace): one binding call, one
   * threadpool task in async form. A durable store's concurrent async writes
   * share directory fsyncs through the group commit instead: while a batch
   * or a fused write is in flight, the next is left to the general path.
   * On a lock-free store (docs/WAL.md §4.1) every fused write joins the
   * log's group commit with no key lock file: none is left to it.
   */
  private replacing = 0
  private readonly lockFree: boolean
  /** A lock-free store's queued writes (see QueuedWrites). */
  private readonly queued?: QueuedWrites
  readonly replace = twinOp(
    (w: RawReplace): number => call(() => this.native.replaceSync(replacing(w))),
    (w: RawReplace): Promise<number> => {
      if (this.queued !== undefined && w.lock) {
        // The fast path (docs/WAL.md §4.1.1): straight to the log's committer, no threadpool task.
        let id: number
        try {
          id = this.native.replaceQueued(buf(w.key), w.serializer, buf(w.meta), w.revisionAt, buf(w.value), w.expectedRevision)
        } catch (err) {
          return Promise.reject(fromNative(err))
        }
        if (id >= 0) return this.queued.answer(id)
      }
      if (this.durable && !this.lockFree && (this.replacing > 0 || this.group.busy)) return Promise.resolve(REPLACE_UNSURE)
      this.replacing++
      let task: Promise<number>
      try {
        task = this.native.replaceAsync(replacing(w))
      } catch (err) {
        this.replacing--
        return Promise.reject(fromNative(err))
      }
      // One `then`, no async wrapper: this is the async assoc's hot path (bench/async-floor.mjs).
      return task.then(
        (n) => {
          this.replacing--
          return n
        },
        (err) => {
          this.replacing--
          throw fromNative(err)
        },
      )
    },
  )
  readonly delete = native(
    (keys: Uint8Array[]) => this.native.deleteSync(bufs(keys)),
    (keys: Uint8Array[]) => this.native.deleteAsync(bufs(keys)),
  )
  openList(): ListCursor {
    const cursor = call(() => this.native.openList())
    return {
      next: native(
        (max: number): RawListing | undefined => orUndefined(cursor.nextBatchSync(max)),
        async (max: number) => orUndefined(await cursor.nextBatchAsync(max)),
      ),
      close: () => cursor.close(),
    }
  }

  /** The core's lock: blocking in sync form; the async form polls its all-or-none attempt. */
  readonly lock = pollingLock(
    (keys, waitedMs) => call(() => this.native.tryLock(bufs(keys), waitedMs)),
    (keys) => call(() => this.native.lockSync(bufs(keys))),
  )
  unlock(keys: Uint8Array[]): void {
    try {
      call(() => this.native.unlock(bufs(keys)))
    } catch (err) {
      throw releaseError(err, this.native.dir)
    }
  }
  filePath(key: Uint8Array): string {
    return this.native.filePath(buf(key))
  }

  readonly blobWriter = twinOp(
    (key: Uint8Array, m: Uint8Array): BlobSink => sink(call(() => loadNative().blobWriterOpenSync(this.native, buf(key), buf(m)))),
    async (key: Uint8Array, m: Uint8Array) => sink(await callAsync(() => loadNative().blobWriterOpenAsync(this.native, buf(key), buf(m)))),
  )
  /** The fused blob open (Backing.blobReplace): the lock, the revision read and the staging file in one call (one threadpool task). */
  readonly blobReplace = twinOp(
    (w: RawBlobReplace) => opened(call(() => loadNative().blobReplaceSync(this.native, blobReplacing(w)))),
    async (w: RawBlobReplace) => opened(await callAsync(() => loadNative().blobReplaceAsync(this.native, blobReplacing(w)))),
  )
  readonly openBlob = twinOp(
    (key: Uint8Array) => source(call(() => loadNative().blobOpenSync(this.native, buf(key)))),
    async (key: Uint8Array) => source(await callAsync(() => loadNative().blobOpenAsync(this.native, buf(key)))),
  )
  readonly append = native(
    (key: Uint8Array, rs: NewRecord[], createMeta: Uint8Array): LogInfo => loadNative().logAppendSync(this.native, buf(key), records(rs), buf(createMeta)),
    (key: Uint8Array, rs: NewRecord[], createMeta: Uint8Array) => loadNative().logAppendAsync(this.native, buf(key), records(rs), buf(createMeta)),
  )
  readonly openLog = twinOp(
    (key: Uint8Array) => logCursor(call(() => loadNative().logOpenSync(this.native, buf(key)))),
    async (key: Uint8Array) => logCursor(await callAsync(() => loadNative().logOpenAsync(this.native, buf(key)))),
  )
  readonly trimLog = native(
    (key: Uint8Array, keepFrom: number, m: Uint8Array): LogInfo => loadNative().logTrimSync(this.native, buf(key), keepFrom, buf(m)),
    (key: Uint8Array, keepFrom: number, m: Uint8Array) => loadNative().logTrimAsync(this.native, buf(key), keepFrom, buf(m)),
  )

  /**
   * close: the queued group commits and queued writes are settled first; then the write-ahead
   * log's background thread ends and its lock file, if kept idle, is released
   * (the core's store lock closes when the binding's object is collected).
   */
  readonly close = twinOp(
    () => {
      this.sweepAgain.stop()
      this.native.stopBackground()
      this.twinOpened?.close?.sync()
    },
    async () => {
      this.sweepAgain.stop()
      await this.group.idle()
      // Every queued write settles (durable, or failed): the committer answers each.
      await this.queued?.whenIdle()
      this.native.stopBackground()
      await this.twinOpened?.close?.async()
    },
  )
}
