/**
 * The memory backing: a Map of encoded records, private to one JavaScript
 * thread. Values are stored serialized, so a value read back is a copy and
 * the store behaves exactly like a file store (same errors, same metadata).
 * Multi-key writes are atomic.
 */
import {
  type Backing,
  type BlobSink,
  type BlobSource,
  type ListCursor,
  type LogCursor,
  type LogInfo,
  type LogRecord,
  type NewRecord,
  type RawEntry,
  type RawListing,
  type RawMeta,
  type RawValue,
  type RawWrite,
  copyBytes,
  keyId,
} from '../backing/index.js'
import { concat } from '../codec/aes.js'
import { KonserveError } from '../errors.js'
import { RAW_BYTES_ID } from '../serializers.js'

interface Slot extends RawEntry {
  key: Uint8Array
  /** Set for an append log: its records, oldest first. */
  records?: LogRecord[]
  /** The index the next record gets (logs only). */
  nextIndex?: number
}

function logInfo(s: Slot): LogInfo {
  const r = s.records!
  const last = r[r.length - 1]
  return last
    ? { firstIndex: r[0]!.index, lastIndex: last.index, lastStamp: last.stamp }
    : { firstIndex: s.nextIndex ?? 0, lastIndex: (s.nextIndex ?? 0) - 1, lastStamp: 0 }
}

const notALog = () => new KonserveError('ERR_NOT_A_LOG', 'the key holds something other than an append log')
const notBinary = () => new KonserveError('ERR_NOT_BINARY', 'the key holds a value, not binary data written by bassoc')

let counter = 0

const id = keyId

export class MemoryBacking implements Backing {
  readonly implementation = 'memory' as const
  readonly lockScope = `memory:${++counter}`
  readonly atomicMultiKey = true
  private readonly slots = new Map<string, Slot>()

  getSync(key: Uint8Array): RawEntry | undefined {
    const s = this.slots.get(id(key))
    if (s?.records) return { serializer: s.serializer, meta: s.meta, value: new Uint8Array(0), log: logInfo(s) }
    // Copied out as well as in: a reader that changes a blob must not change the store.
    return s && { serializer: s.serializer, meta: s.meta, value: copyBytes(s.value) }
  }
  /** `get`'s hot path: the stored bytes themselves, marked shared (the facade copies them where they could escape). */
  getValueSync(key: Uint8Array): RawValue | undefined {
    const s = this.slots.get(id(key))
    if (!s) return undefined
    if (s.records) return { serializer: s.serializer, value: new Uint8Array(0), log: true }
    return { serializer: s.serializer, value: s.value, log: false, shared: true }
  }
  getMetaSync(key: Uint8Array): RawMeta | undefined {
    const s = this.slots.get(id(key))
    return s && this.metaOf(s)
  }
  private metaOf(s: Slot): RawMeta {
    return s.records ? { key: s.key, serializer: s.serializer, meta: s.meta, log: logInfo(s) } : { key: s.key, serializer: s.serializer, meta: s.meta }
  }
  existsSync(key: Uint8Array): boolean {
    return this.slots.has(id(key))
  }
  putSync(writes: RawWrite[]): void {
    // Copy in: callers may reuse their buffers.
    for (const w of writes) {
      this.slots.set(id(w.key), {
        key: copyBytes(w.key),
        serializer: w.serializer,
        meta: copyBytes(w.meta),
        value: copyBytes(w.value),
      })
    }
  }
  deleteSync(keys: Uint8Array[]): boolean[] {
    return keys.map((k) => this.slots.delete(id(k)))
  }
  listSync(): RawListing {
    return {
      entries: [...this.slots.values()].map((s) => this.metaOf(s)),
      corrupt: [],
    }
  }

  /** A snapshot of the key ids; each batch reads the keys still there. */
  openList(): ListCursor {
    let ids: string[] | undefined = [...this.slots.keys()]
    let at = 0
    const nextSync = (max: number): RawListing | undefined => {
      if (!ids) return undefined
      const out: RawListing = { entries: [], corrupt: [] }
      const n = Math.max(1, max)
      while (at < ids.length && out.entries.length < n) {
        const s = this.slots.get(ids[at++]!)
        if (s) out.entries.push(this.metaOf(s))
      }
      if (at >= ids.length) ids = undefined
      return out.entries.length > 0 ? out : undefined
    }
    return {
      nextSync,
      next: async (max) => nextSync(max),
      close: () => {
        ids = undefined
      },
    }
  }

  async getAsync(key: Uint8Array) {
    return this.getSync(key)
  }
  async getMetaAsync(key: Uint8Array) {
    return this.getMetaSync(key)
  }
  async existsAsync(key: Uint8Array) {
    return this.existsSync(key)
  }
  async putAsync(writes: RawWrite[]) {
    this.putSync(writes)
  }
  async deleteAsync(keys: Uint8Array[]) {
    return this.deleteSync(keys)
  }
  async listAsync() {
    return this.listSync()
  }

  // ---- blobs: held whole (a memory store holds every value anyway) ----

  blobWriterSync(key: Uint8Array, meta: Uint8Array): BlobSink {
    let parts: Uint8Array[] | undefined = []
    const k = copyBytes(key)
    const m = copyBytes(meta)
    const sink: BlobSink = {
      writeSync: (bytes) => {
        if (!parts) throw new KonserveError('ERR_INVALID_ARGUMENT', 'the blob writer is closed')
        parts.push(copyBytes(bytes))
      },
      write: async (bytes) => sink.writeSync(bytes),
      commitSync: () => {
        if (!parts) throw new KonserveError('ERR_INVALID_ARGUMENT', 'the blob writer is closed')
        const value = concat(parts)
        parts = undefined
        this.slots.set(id(k), { key: k, serializer: RAW_BYTES_ID, meta: m, value })
      },
      commit: async () => sink.commitSync(),
      abort: () => {
        parts = undefined
      },
    }
    return sink
  }
  async blobWriterAsync(key: Uint8Array, meta: Uint8Array) {
    return this.blobWriterSync(key, meta)
  }
  openBlobSync(key: Uint8Array): BlobSource | undefined {
    const s = this.slots.get(id(key))
    if (!s) return undefined
    if (s.records || s.serializer !== RAW_BYTES_ID) throw notBinary()
    const value = s.value // replaced, never changed in place: a snapshot
    const readSync = (offset: number, length: number) => copyBytes(value.subarray(offset, Math.min(value.length, offset + length)))
    return { size: value.length, meta: this.metaOf(s), readSync, read: async (o, l) => readSync(o, l), close: () => {} }
  }
  async openBlobAsync(key: Uint8Array) {
    return this.openBlobSync(key)
  }

  // ---- append logs ----

  appendSync(key: Uint8Array, records: NewRecord[], createMeta: Uint8Array): LogInfo {
    if (records.length === 0) throw new KonserveError('ERR_INVALID_ARGUMENT', 'an append needs at least one record')
    const sid = id(key)
    let s = this.slots.get(sid)
    if (s && !s.records) throw notALog()
    if (!s) {
      s = { key: copyBytes(key), serializer: 0, meta: copyBytes(createMeta), value: new Uint8Array(0), records: [], nextIndex: 0 }
      this.slots.set(sid, s)
    }
    for (const record of records) {
      const index = s.nextIndex ?? 0
      s.records!.push({ index, stamp: record.stamp, serializer: record.serializer, bytes: copyBytes(record.bytes) })
      s.nextIndex = index + 1
    }
    return logInfo(s)
  }
  async appendAsync(key: Uint8Array, records: NewRecord[], createMeta: Uint8Array) {
    return this.appendSync(key, records, createMeta)
  }
  openLogSync(key: Uint8Array): LogCursor | undefined {
    const s = this.slots.get(id(key))
    if (!s) return undefined
    if (!s.records) throw notALog()
    let records: LogRecord[] | undefined = s.records.slice()
    let at = 0
    const nextSync = (max: number): LogRecord[] | undefined => {
      if (!records || at >= records.length) return undefined
      const batch = records.slice(at, at + Math.max(1, max)).map((r) => ({ ...r, bytes: copyBytes(r.bytes) }))
      at += batch.length
      return batch
    }
    return {
      nextSync,
      next: async (max) => nextSync(max),
      close: () => {
        records = undefined
      },
    }
  }
  async openLogAsync(key: Uint8Array) {
    return this.openLogSync(key)
  }
  trimLogSync(key: Uint8Array, keepFrom: number, meta: Uint8Array): LogInfo {
    const s = this.slots.get(id(key))
    if (!s) return { firstIndex: 0, lastIndex: -1, lastStamp: 0 }
    if (!s.records) throw notALog()
    const records = s.records.filter((r) => r.index >= keepFrom)
    const next: Slot = { ...s, meta: copyBytes(meta), records, nextIndex: records.length > 0 ? s.nextIndex : 0 }
    this.slots.set(id(key), next)
    return logInfo(next)
  }
  async trimLogAsync(key: Uint8Array, keepFrom: number, meta: Uint8Array) {
    return this.trimLogSync(key, keepFrom, meta)
  }

  /** close: the contents go. */
  closeSync(): void {
    this.slots.clear()
  }
  async close(): Promise<void> {
    this.slots.clear()
  }

  // One thread owns this store: the facade's in-thread locks are all it needs.
  lockSync(): void {}
  tryLock(): boolean {
    return true
  }
  unlock(): void {}
}
