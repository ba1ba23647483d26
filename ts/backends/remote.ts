/**
 * What the network backends (Redis, PostgreSQL, S3) share: their typed
 * errors, the staged blob writer, the tracking of open stores that deleteStore ends, and the op constructor that types a client's failure, so that a
 * dropped connection reaches the caller as ERR_BACKEND_UNAVAILABLE (or what
 * the backend's `typed` makes of it), never as the client's own error.
 */
import gensync from 'gensync'
import { type BlobSink, type Op, asyncOp } from '../backing/seam.js'
import { concat } from '../codec/aes.js'
import { KonserveError } from '../errors.js'
import { type ChunkSink, ChunkedEncoder, blobHeader } from '../format/blob.js'
import { HEADER_LEN, type SegmentCodec, encodeMetaSegment } from '../format/file.js'
import type { LogInfo, LogRecord } from '../backing/index.js'
import type { LogCursor } from '../backing/seam.js'
import { checkRecord, decodeRecordPayload } from '../format/log.js'

export const corrupt = (message: string, file: string) => new KonserveError('ERR_CORRUPT', message, { file })
export const notALog = () => new KonserveError('ERR_NOT_A_LOG', 'the key holds something other than an append log')
export const notBinary = () => new KonserveError('ERR_NOT_BINARY', 'the key holds a value, not binary data written by bassoc')

/** The length a key file with this head has (as decodeHeader wants), from the header's segment lengths. */
export function declaredLength(head: Uint8Array, file: string): number {
  if (head.length < HEADER_LEN) throw corrupt(`a head of ${head.length} bytes, shorter than a header`, file)
  const v = new DataView(head.buffer, head.byteOffset, head.byteLength)
  return HEADER_LEN + v.getUint32(12, true) + v.getUint32(16, true) + v.getUint32(20, true) * 0x100000000
}

/** A log's info from its first index `f`, next index `x` and last stamp `s` (an empty log: no stamp). */
export function logInfo(f: number, x: number, s: number): LogInfo {
  return x > f ? { firstIndex: f, lastIndex: x - 1, lastStamp: s } : { firstIndex: x, lastIndex: x - 1, lastStamp: 0 }
}

/**
 * Log record `index` as a backend stores it (one record per row, list item or
 * object: `bytes` must be that record whole), checked and decoded. Damage is
 * ERR_CORRUPT naming `file`; a decode error names `file` too.
 */
export async function readStoredRecord(codec: SegmentCodec, bytes: unknown, index: number, file: string): Promise<LogRecord> {
  const info = bytes instanceof Uint8Array ? checkRecord(bytes, 0) : undefined
  if (!info || info.index !== index) throw corrupt(`log record ${index} is damaged`, file)
  try {
    return { index, stamp: info.stamp, serializer: info.serializer, bytes: await decodeRecordPayload.async(codec, info, bytes as Uint8Array) }
  } catch (err) {
    if (err instanceof KonserveError && !err.file) err.file = file
    throw err
  }
}

/** A log cursor whose reads `make` builds; they see `closed()` turn true once the cursor is closed. */
export function closableCursor(make: (closed: () => boolean) => LogCursor['next']): LogCursor {
  let closed = false
  return {
    next: make(() => closed),
    close: () => {
      closed = true
    },
  }
}

/** The option checks of connect function `fn`: `bad(message)` is its ERR_INVALID_ARGUMENT, `ms(value, name, default)` a duration option. */
export function connectChecks(fn: string) {
  const bad = (message: string) => new KonserveError('ERR_INVALID_ARGUMENT', `${fn}: ${message}`)
  const ms = (v: unknown, name: string, dflt: number): number => {
    if (v === undefined) return dflt
    if (typeof v !== 'number' || !(v >= 0) || !Number.isFinite(v)) throw bad(`${name} must be a finite number >= 0, not ${String(v)}`)
    return v
  }
  /** The store's compressor id (0 none, 1 LZ4) and AES key, from its `compressor` and `encryptor` options. */
  const codecOptions = (o: { compressor?: { type?: unknown } | null; encryptor?: { type?: unknown; key?: unknown } | null }) => {
    let compressor = 0
    if (o.compressor != null) {
      if (o.compressor.type !== 'lz4') throw bad(`unknown compressor ${JSON.stringify(o.compressor)}; the one compressor is { type: 'lz4' }`)
      compressor = 1
    }
    let encryptionKey: Uint8Array | undefined
    if (o.encryptor != null) {
      const { type, key } = o.encryptor
      if (type !== 'aes') throw bad(`unknown encryptor type ${JSON.stringify(type)}; the one encryptor is { type: 'aes', key }`)
      encryptionKey = typeof key === 'string' ? Buffer.from(key, 'utf8') : key instanceof Uint8Array ? Buffer.from(key) : undefined
      if (!encryptionKey || encryptionKey.length === 0) throw bad('the aes encryptor needs a non-empty key (a string or a Uint8Array)')
    }
    return { compressor, encryptionKey }
  }
  return { bad, ms, codecOptions }
}

/** A store as the tracker sees it: `ended` is what its later calls fail with. */
interface Endable {
  ended?: { code: 'ERR_CLOSED' | 'ERR_STORE_DELETED'; why: string }
}

/**
 * The stores of this process open on each place of a server (a table, a key
 * prefix, a bucket prefix), so that deleteStore ends them: their later calls
 * fail with ERR_STORE_DELETED, not with a missing table or an empty store
 * that quietly fills again. `close` comes from the caller so that a subpath
 * bundle closes with the Store class its users hold.
 */
export function openStoreTracker<S extends Endable>(close: (store: S) => Promise<void>) {
  const open = new Map<string, Set<WeakRef<S>>>()
  return {
    track(place: string, store: S): S {
      let set = open.get(place)
      if (!set) open.set(place, (set = new Set()))
      for (const ref of set) if (!ref.deref() || ref.deref()!.ended) set.delete(ref)
      set.add(new WeakRef(store))
      return store
    },
    /** Closes and ends every store of this process open on `place`; `why` says which store was deleted. */
    async endAll(place: string, why: string): Promise<void> {
      for (const ref of open.get(place) ?? []) {
        const s = ref.deref()
        if (!s || s.ended) continue
        await close(s).catch(() => {})
        s.ended = { code: 'ERR_STORE_DELETED', why }
      }
      open.delete(place)
    },
  }
}

/** The bytes as a Buffer over the same memory (what the clients take), without a copy. */
export const u8 = (b: Uint8Array): Buffer => (Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength))

/** The op constructor of backend `kind`: an async-only op whose foreign errors go through `typed(err, what)`. */
export function typedOps(kind: string, typed: (err: unknown, what: string) => unknown) {
  return <A extends unknown[], R>(what: string, fn: (...args: A) => Promise<R>): Op<A, R> =>
    asyncOp(kind, async (...args: A): Promise<R> => {
      try {
        return await fn(...args)
      } catch (err) {
        throw typed(err, what)
      }
    })
}

/** How a backend stages a blob's chunks and then publishes it (see stagedBlobWriter). */
export interface BlobStaging {
  /** Stores sealed chunks, in order, before write/commit returns. */
  stage(chunks: Uint8Array[]): Promise<void>
  /** Makes the blob visible: `head` (header and metadata segment) and `tail` (chunk table and trailer) of its key file. */
  publish(head: Uint8Array, tail: Uint8Array): Promise<void>
  /** Drops what was staged (no-op once published); must not throw. */
  discard(): void
}

/**
 * A blob writer for a backend that stores chunks apart from the key's head
 * (Redis, PostgreSQL): chunks are sealed as bytes arrive and staged before
 * each write returns (one chunk in memory at a time); commit seals the last
 * one, builds the key file's head and tail and publishes them. Any failure
 * discards what was staged, and a closed writer refuses further calls.
 */
export function stagedBlobWriter(op: ReturnType<typeof typedOps>, codec: SegmentCodec, key: Uint8Array, meta: Uint8Array, staging: BlobStaging): BlobSink {
  const enc = new ChunkedEncoder(codec)
  let open = true
  const encode = gensync(function* (step: (sink: ChunkSink) => gensync.Handler<unknown>, out: Uint8Array[]) {
    return yield* step(function* (stored) {
      out.push(Buffer.from(stored))
    })
  })
  const closed = () => new KonserveError('ERR_INVALID_ARGUMENT', 'the blob writer is closed')
  const abort = () => {
    if (!open) return
    open = false
    staging.discard()
  }
  const stage = async (out: Uint8Array[]) => {
    if (out.length > 0) await staging.stage(out)
  }
  return {
    write: op('blob write', async (bytes: Uint8Array) => {
      if (!open) throw closed()
      const out: Uint8Array[] = []
      try {
        await encode.async((sink) => enc.write(bytes, sink), out)
        await stage(out)
      } catch (err) {
        abort()
        throw err
      }
    }),
    commit: op('blob commit', async () => {
      if (!open) throw closed()
      try {
        const out: Uint8Array[] = []
        const tail = (await encode.async((sink) => enc.finish(sink), out)) as Uint8Array
        await stage(out)
        const metaStored = await encodeMetaSegment.async(codec, key, meta)
        const head = concat([blobHeader(codec, metaStored, enc.valueLength, tail), metaStored])
        await staging.publish(head, tail)
        open = false
      } catch (err) {
        abort()
        throw err
      }
    }),
    abort,
  }
}
