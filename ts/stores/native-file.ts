/**
 * The file backing on the Rust core: durable writes, cross-process locks,
 * blocking calls on the main thread and async calls on the libuv threadpool.
 */
import type { Backing, ListCursor, RawEntry, RawListing, RawMeta, RawWrite, StoreClock } from '../backing.js'
import { toKonserveError } from '../errors.js'
import type { NativeFileStore } from '../native.js'

function call<T>(f: () => T): T {
  try {
    return f()
  } catch (err) {
    throw toKonserveError(err)
  }
}

async function callAsync<T>(p: () => Promise<T>): Promise<T> {
  try {
    return await p()
  } catch (err) {
    throw toKonserveError(err)
  }
}

const orUndefined = <T>(v: T | null): T | undefined => (v === null ? undefined : v)

// napi-rs takes Buffers; a Buffer view over the same memory costs no copy.
function buf(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength)
}
const bufs = (keys: Uint8Array[]) => keys.map(buf)
const writes = (ws: RawWrite[]) =>
  ws.map((w) => ({ key: buf(w.key), serializer: w.serializer, meta: buf(w.meta), value: buf(w.value) }))

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
  putAsync(ws: RawWrite[]): Promise<void> {
    return callAsync(() => this.native.putAsync(writes(ws)))
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
  tryLock(keys: Uint8Array[]): boolean {
    return call(() => this.native.tryLock(bufs(keys)))
  }
  unlock(keys: Uint8Array[]): void {
    call(() => this.native.unlock(bufs(keys)))
  }
  filePath(key: Uint8Array): string {
    return this.native.filePath(buf(key))
  }
}
