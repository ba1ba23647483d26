/**
 * The file backing on the Rust core: durable writes, cross-process locks,
 * blocking calls on the main thread and async calls on the libuv threadpool.
 */
import type {
  Backing,
  BlobSink,
  BlobSource,
  ListCursor,
  LogCursor,
  LogInfo,
  NewRecord,
  RawEntry,
  RawListing,
  RawMeta,
  RawValue,
  RawWrite,
  StoreClock,
} from '../backing/index.js'
import { fromNative } from '../errors.js'
import { RAW_BYTES_ID } from '../serializers.js'
import { GroupCommit } from '../backing/group-commit.js'
import { type NativeBlobReader, type NativeBlobWriter, type NativeFileStore, type NativeLogCursor, type NativeMetaEntryLike, loadNative } from '../native.js'

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

/** napi-rs gives `null` for an absent optional field here; the Backing interface wants it absent. */
function meta(m: NativeMetaEntryLike): RawMeta {
  return m.log ? { key: m.key, serializer: m.serializer, meta: m.meta, file: m.file, log: m.log } : { key: m.key, serializer: m.serializer, meta: m.meta, file: m.file }
}

function sink(w: NativeBlobWriter): BlobSink {
  return {
    writeSync: (bytes) => call(() => w.writeSync(buf(bytes))),
    write: (bytes) => callAsync(() => w.writeAsync(buf(bytes))),
    commitSync: () => call(() => w.commitSync()),
    commit: () => callAsync(() => w.commitAsync()),
    abort: () => call(() => w.abort()),
  }
}

function source(r: NativeBlobReader | null): BlobSource | undefined {
  if (r === null) return undefined
  const plainOffset = r.plainOffset
  const file = r.file
  return {
    size: r.size,
    meta: meta(r.meta),
    readSync: (offset, length) => call(() => r.readSync(offset, length)),
    read: (offset, length) => callAsync(() => r.readAsync(offset, length)),
    readInto: r.readIntoAsync ? (offset, target) => callAsync(() => r.readIntoAsync!(offset, buf(target))) : undefined,
    close: () => r.close(),
    plain: plainOffset === null || plainOffset === undefined ? undefined : { file, offset: plainOffset },
  }
}

function logCursor(c: NativeLogCursor | null): LogCursor | undefined {
  if (c === null) return undefined
  return {
    nextSync: (max) => call(() => orUndefined(c.nextBatchSync(max))),
    next: (max) => callAsync(async () => orUndefined(await c.nextBatchAsync(max))),
    close: () => c.close(),
  }
}

export class NativeFileBacking implements Backing {
  readonly implementation = 'native' as const
  readonly atomicMultiKey = false

  constructor(
    private readonly native: NativeFileStore,
    readonly lockScope: string,
    readonly clock?: StoreClock,
  ) {}

  getSync(key: Uint8Array): RawEntry | undefined {
    return call(() => orUndefined(this.native.getSync(buf(key))))
  }
  getValueSync(key: Uint8Array): RawValue | undefined {
    return call(() => this.readSlab(key, false) as RawValue | undefined)
  }
  getValueAsync(key: Uint8Array): Promise<RawValue | undefined> {
    try {
      // Answered at once when the file is cached (no thread hop, no disk wait).
      const now = this.readSlab(key, true)
      // Known to be large: the general read on the threadpool, which opens it once.
      if (now === TOO_LARGE) return this.getAsync(key).then((e) => e && { serializer: e.serializer, value: e.value, log: e.log !== undefined })
      if (now !== WOULD_BLOCK) return Promise.resolve(now)
    } catch (err) {
      return Promise.reject(fromNative(err))
    }
    return callAsync(async () => fromPrefixed(await this.native.getValueAsync(buf(key))))
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
    // Raw bytes go to the caller as they are: a Buffer of their own (small ones from Node's pool).
    if (serializer === RAW_BYTES_ID) return { serializer, value: Buffer.from(value), log: false }
    return { serializer, value, log: slab[at] === 1, shared: true }
  }
  getAsync(key: Uint8Array): Promise<RawEntry | undefined> {
    return callAsync(async () => orUndefined(await this.native.getAsync(buf(key))))
  }
  getMetaSync(key: Uint8Array): RawMeta | undefined {
    return call(() => orUndefined(this.native.getMetaSync(buf(key))))
  }
  getMetaAsync(key: Uint8Array): Promise<RawMeta | undefined> {
    return callAsync(async () => orUndefined(await this.native.getMetaAsync(buf(key))))
  }
  existsSync(key: Uint8Array): boolean {
    return call(() => this.native.existsSync(buf(key)))
  }
  existsAsync(key: Uint8Array): Promise<boolean> {
    return callAsync(() => this.native.existsAsync(buf(key)))
  }
  putSync(ws: RawWrite[]): void {
    call(() => this.native.putSync(writes(ws)))
  }
  /** Concurrent async puts are written as group commits (see group-commit.ts). */
  private readonly group = new GroupCommit((ws) => callAsync(() => this.native.putAsync(writes(ws))))
  putAsync(ws: RawWrite[]): Promise<void> {
    return this.group.put(ws)
  }
  /** close: the queued group commits are written first. (The core's lock file closes when the binding's object is collected.) */
  close(): Promise<void> {
    return this.group.idle()
  }
  deleteSync(keys: Uint8Array[]): boolean[] {
    return call(() => this.native.deleteSync(bufs(keys)))
  }
  deleteAsync(keys: Uint8Array[]): Promise<boolean[]> {
    return callAsync(() => this.native.deleteAsync(bufs(keys)))
  }
  listSync(): RawListing {
    return call(() => this.native.listSync())
  }
  listAsync(): Promise<RawListing> {
    return callAsync(() => this.native.listAsync())
  }
  openList(): ListCursor {
    const cursor = call(() => this.native.openList())
    return {
      nextSync: (max) => call(() => orUndefined(cursor.nextBatchSync(max))),
      next: (max) => callAsync(async () => orUndefined(await cursor.nextBatchAsync(max))),
      close: () => cursor.close(),
    }
  }
  lockSync(keys: Uint8Array[]): void {
    call(() => this.native.lockSync(bufs(keys)))
  }
  tryLock(keys: Uint8Array[], waitedMs?: number): boolean {
    return call(() => this.native.tryLock(bufs(keys), waitedMs))
  }
  unlock(keys: Uint8Array[]): void {
    call(() => this.native.unlock(bufs(keys)))
  }
  filePath(key: Uint8Array): string {
    return this.native.filePath(buf(key))
  }

  blobWriterSync(key: Uint8Array, m: Uint8Array): BlobSink {
    return sink(call(() => loadNative().blobWriterOpenSync(this.native, buf(key), buf(m))))
  }
  async blobWriterAsync(key: Uint8Array, m: Uint8Array): Promise<BlobSink> {
    return sink(await callAsync(() => loadNative().blobWriterOpenAsync(this.native, buf(key), buf(m))))
  }
  openBlobSync(key: Uint8Array): BlobSource | undefined {
    return source(call(() => loadNative().blobOpenSync(this.native, buf(key))))
  }
  async openBlobAsync(key: Uint8Array): Promise<BlobSource | undefined> {
    return source(await callAsync(() => loadNative().blobOpenAsync(this.native, buf(key))))
  }
  appendSync(key: Uint8Array, rs: NewRecord[], createMeta: Uint8Array): LogInfo {
    return call(() => loadNative().logAppendSync(this.native, buf(key), records(rs), buf(createMeta)))
  }
  appendAsync(key: Uint8Array, rs: NewRecord[], createMeta: Uint8Array): Promise<LogInfo> {
    return callAsync(() => loadNative().logAppendAsync(this.native, buf(key), records(rs), buf(createMeta)))
  }
  openLogSync(key: Uint8Array): LogCursor | undefined {
    return logCursor(call(() => loadNative().logOpenSync(this.native, buf(key))))
  }
  async openLogAsync(key: Uint8Array): Promise<LogCursor | undefined> {
    return logCursor(await callAsync(() => loadNative().logOpenAsync(this.native, buf(key))))
  }
  trimLogSync(key: Uint8Array, keepFrom: number, m: Uint8Array): LogInfo {
    return call(() => loadNative().logTrimSync(this.native, buf(key), keepFrom, buf(m)))
  }
  trimLogAsync(key: Uint8Array, keepFrom: number, m: Uint8Array): Promise<LogInfo> {
    return callAsync(() => loadNative().logTrimAsync(this.native, buf(key), keepFrom, buf(m)))
  }
}
