/**
 * The memory backing: a Map of encoded records, private to one JavaScript
 * thread. Values are stored serialized, so a value read back is a copy and
 * the store behaves exactly like a file store (same errors, same metadata).
 * Multi-key writes are atomic. Every operation is blocking code (`blockingOp`):
 * its async form is the same code, resolved.
 */
import { type LogInfo, type LogRecord, type NewRecord, type RawEntry, type RawListing, type RawMeta, type RawValue, type RawWrite, blockingOp, copyBytes, keyId } from '../backing/index.js'
import type { Backing, BlobSink, BlobSource, ListCursor, LogCursor } from '../backing/seam.js'
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

function metaOf(s: Slot): RawMeta {
  return s.records ? { key: s.key, serializer: s.serializer, meta: s.meta, log: logInfo(s) } : { key: s.key, serializer: s.serializer, meta: s.meta }
}

const notALog = () => new KonserveError('ERR_NOT_A_LOG', 'the key holds something other than an append log')
const notBinary = () => new KonserveError('ERR_NOT_BINARY', 'the key holds a value, not binary data written by bassoc')
const closedWriter = () => new KonserveError('ERR_INVALID_ARGUMENT', 'the blob writer is closed')

let counter = 0

const id = keyId

export class MemoryBacking implements Backing {
  readonly implementation = 'memory' as const
  readonly lockScope = `memory:${++counter}`
  readonly atomicMultiKey = true
  readonly blocking = true
  private readonly slots = new Map<string, Slot>()

  readonly get = blockingOp((key: Uint8Array): RawEntry | undefined => {
    const s = this.slots.get(id(key))
    if (s?.records) return { serializer: s.serializer, meta: s.meta, value: new Uint8Array(0), log: logInfo(s) }
    // Copied out as well as in: a reader that changes a blob must not change the store.
    return s && { serializer: s.serializer, meta: s.meta, value: copyBytes(s.value) }
  })

  /** `get`'s hot path: the stored bytes themselves, marked shared (the facade copies them where they could escape). */
  readonly getValue = blockingOp((key: Uint8Array): RawValue | undefined => {
    const s = this.slots.get(id(key))
    if (!s) return undefined
    if (s.records) return { serializer: s.serializer, value: new Uint8Array(0), log: true }
    return { serializer: s.serializer, value: s.value, log: false, shared: true }
  })

  readonly getMeta = blockingOp((key: Uint8Array): RawMeta | undefined => {
    const s = this.slots.get(id(key))
    return s && metaOf(s)
  })

  readonly exists = blockingOp((key: Uint8Array): boolean => this.slots.has(id(key)))

  readonly put = blockingOp((writes: RawWrite[]): void => {
    // Copy in: callers may reuse their buffers.
    for (const w of writes) {
      this.slots.set(id(w.key), { key: copyBytes(w.key), serializer: w.serializer, meta: copyBytes(w.meta), value: copyBytes(w.value) })
    }
  })

  readonly delete = blockingOp((keys: Uint8Array[]): boolean[] => keys.map((k) => this.slots.delete(id(k))))

  /** A snapshot of the key ids; each batch reads the keys still there. */
  openList(): ListCursor {
    let ids: string[] | undefined = [...this.slots.keys()]
    let at = 0
    return {
      next: blockingOp((max: number): RawListing | undefined => {
        if (!ids) return undefined
        const out: RawListing = { entries: [], corrupt: [] }
        const n = Math.max(1, max)
        while (at < ids.length && out.entries.length < n) {
          const s = this.slots.get(ids[at++]!)
          if (s) out.entries.push(metaOf(s))
        }
        if (at >= ids.length) ids = undefined
        return out.entries.length > 0 ? out : undefined
      }),
      close: () => {
        ids = undefined
      },
    }
  }

  // One thread owns this store: the facade's in-thread locks are all it needs.
  readonly lock = blockingOp((_keys: Uint8Array[]): void => {})
  unlock(): void {}

  // ---- blobs: held whole (a memory store holds every value anyway) ----

  readonly blobWriter = blockingOp((key: Uint8Array, meta: Uint8Array): BlobSink => {
    let parts: Uint8Array[] | undefined = []
    const k = copyBytes(key)
    const m = copyBytes(meta)
    return {
      write: blockingOp((bytes: Uint8Array) => {
        if (!parts) throw closedWriter()
        parts.push(copyBytes(bytes))
      }),
      commit: blockingOp(() => {
        if (!parts) throw closedWriter()
        const value = concat(parts)
        parts = undefined
        this.slots.set(id(k), { key: k, serializer: RAW_BYTES_ID, meta: m, value })
      }),
      abort: () => {
        parts = undefined
      },
    }
  })

  readonly openBlob = blockingOp((key: Uint8Array): BlobSource | undefined => {
    const s = this.slots.get(id(key))
    if (!s) return undefined
    if (s.records || s.serializer !== RAW_BYTES_ID) throw notBinary()
    const value = s.value // replaced, never changed in place: a snapshot
    const read = blockingOp((offset: number, length: number) => copyBytes(value.subarray(offset, Math.min(value.length, offset + length))))
    return { size: value.length, meta: metaOf(s), read, close: () => {} }
  })

  // ---- append logs ----

  readonly append = blockingOp((key: Uint8Array, records: NewRecord[], createMeta: Uint8Array): LogInfo => {
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
  })

  readonly openLog = blockingOp((key: Uint8Array): LogCursor | undefined => {
    const s = this.slots.get(id(key))
    if (!s) return undefined
    if (!s.records) throw notALog()
    let records: LogRecord[] | undefined = s.records.slice()
    let at = 0
    return {
      next: blockingOp((max: number): LogRecord[] | undefined => {
        if (!records || at >= records.length) return undefined
        const batch = records.slice(at, at + Math.max(1, max)).map((r) => ({ ...r, bytes: copyBytes(r.bytes) }))
        at += batch.length
        return batch
      }),
      close: () => {
        records = undefined
      },
    }
  })

  readonly trimLog = blockingOp((key: Uint8Array, keepFrom: number, meta: Uint8Array): LogInfo => {
    const s = this.slots.get(id(key))
    if (!s) return { firstIndex: 0, lastIndex: -1, lastStamp: 0 }
    if (!s.records) throw notALog()
    const records = s.records.filter((r) => r.index >= keepFrom)
    const next: Slot = { ...s, meta: copyBytes(meta), records, nextIndex: records.length > 0 ? s.nextIndex : 0 }
    this.slots.set(id(key), next)
    return logInfo(next)
  })

  /** close: the contents go. */
  readonly close = blockingOp((): void => {
    this.slots.clear()
  })
}
