/**
 * The S3 backing (docs/BACKENDS.md §S3), in the new shape (../backing/seam.ts):
 * every operation is an `asyncOp('s3', …)`, there is no blocking form.
 *
 * Objects, for prefix P and h = the 32 hex digits of xxh3_128(CKE) (the file
 * name of FORMAT.md §2 without `.ksv`):
 * - `P/k/h` the key: for a value or a blob, exactly the key file a file store
 *   writes (a blob's chunked file is written by a multipart upload, streamed);
 *   for a log, the file's head (header + meta segment), with where the log
 *   stands (first index, next index, last stamp) in the object's user
 *   metadata `x-amz-meta-konserve-log: first,next,stamp`.
 * - `P/l/h/<index, 16 digits>` one object per log record, as FORMAT.md §4.6
 *   stores it. Only the indexes the head names are read; a record written by
 *   an append that failed before its head was written is never seen, and is
 *   overwritten by the next append.
 * - `P/x/h` the key's lock: a lease (see `lock`).
 * - `P/konserve-store` the registry's marker (createStore / storeExists).
 *
 * Every write of `P/k/h` under the key's lock is conditional on the object
 * being as the lock holder last read it (`If-Match: <etag>`, or
 * `If-None-Match: *` when it read nothing): a holder whose lease lapsed and
 * whose key another writer changed meanwhile fails with ERR_LOCK and writes
 * nothing (fencing, as the Redis backing's scripts do).
 */
import { hostname } from 'node:os'
import { randomBytes } from 'node:crypto'
import gensync from 'gensync'
import { type LogInfo, type LogRecord, type NewRecord, type RawEntry, type RawListing, type RawMeta, type RawWrite, keyId } from '../backing/index.js'
import type { Backing, BlobSink, BlobSource, ListCursor, LogCursor } from '../backing/seam.js'
import { createPureCodec, type PureCodec } from './pure/codec.js'
import { closableCursor, corrupt, logInfo, notALog, notBinary, readStoredRecord, typedOps, u8 } from './remote.js'
import { KonserveError } from '../errors.js'
import { HEADER_LEN, LOG_COMMIT_AREA, decodeHeader, encodeMetaSegment } from '../format/file.js'
import { CHUNK_SIZE, ChunkedEncoder, blobHeader, decodeBlobTable, decodeChunk, TABLE_ENTRY_LEN, TRAILER_LEN, decodeBlobTrailer, type ChunkSink } from '../format/blob.js'
import { encodeRecord, logHeader } from '../format/log.js'
import { fileName } from '../codec/xxhash.js'
import { concat } from '../codec/aes.js'
/** The raw-bytes serializer's id (ts/serializers.ts RAW_BYTES_ID), not imported: this module is bundled without the serializer registry. */
const RAW_BYTES_ID = 0

/** What this backing needs of an `@aws-sdk/client-s3` client (`send`), and the command classes, loaded at connect. */
// biome-ignore lint/suspicious/noExplicitAny: @aws-sdk/client-s3 is an optional peer; its types are not required to build
export type S3Client = any
// biome-ignore lint/suspicious/noExplicitAny: the SDK's command classes, as loaded
export type S3Sdk = Record<string, any>

export interface S3BackingOptions {
  client: S3Client
  /** The SDK module (`await import('@aws-sdk/client-s3')`): its command classes. */
  sdk: S3Sdk
  /** Close (destroy) the client with the store. */
  ownsClient: boolean
  bucket: string
  /** The first part of every object name (no leading or trailing slash). */
  prefix: string
  compressor: number
  encryptionKey?: Uint8Array
  acceptPlaintext?: boolean
  lockTimeoutMs: number
  /** A lock lapses this long after its holder last renewed it (renewed every third of it). */
  lockLeaseMs: number
  /** The size of a blob upload's parts (at least 5 MiB, S3's minimum). */
  partSize: number
  /** Identifies the endpoint for the lock scope. */
  scope: string
}

export const MIN_PART = 5 * 1024 * 1024
/** How much of an object a metadata read fetches first (a head longer than this takes a second request). */
const PEEK = 64 * 1024
const LOG_FIELD = 'konserve-log'
/** How many record objects a log read fetches at once. */
const PARALLEL = 16
/**
 * An unlocked lock object is kept this long for this process's next lock of
 * the key (a hot key written in a loop: two requests per write instead of
 * four), but not past HOLD_MS since it was taken; then it is given up, and
 * this process waits YIELD_MS before it asks again, so that other processes
 * polling for it get their turn.
 */
const LINGER_MS = 5
const HOLD_MS = 250
const YIELD_MS = 60

// ---- errors ----

const status = (err: unknown): number | undefined => (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode
const isMissing = (err: unknown) => status(err) === 404 || ['NoSuchKey', 'NotFound'].includes((err as Error)?.name)
/** A conditional request that did not hold (412), or lost to a concurrent one (409 ConditionalRequestConflict). */
const isConflict = (err: unknown) => status(err) === 412 || (status(err) === 409 && (err as Error).name !== 'BucketAlreadyExists')

/** An SDK or network failure as a KonserveError: a lost condition is ERR_LOCK, the rest ERR_BACKEND_UNAVAILABLE. */
export function typedS3(err: unknown, what: string, object?: string): KonserveError {
  if (err instanceof KonserveError) return err
  const e = err as Error & { code?: string }
  const s = status(err)
  const message = `${e?.name ?? 'Error'}${s ? ` (HTTP ${s})` : ''}: ${e?.message ?? String(err)}${e?.code ? ` [${e.code}]` : ''}`
  if (isConflict(err)) {
    return new KonserveError('ERR_LOCK', `${what}: the object changed since this lock holder read it (its lock lapsed and another writer wrote): ${message}`, {
      cause: err,
      ...(object ? { file: object } : {}),
    })
  }
  return new KonserveError('ERR_BACKEND_UNAVAILABLE', `${what}: S3: ${message}`, { cause: err, ...(object ? { file: object } : {}) })
}

/** An async op whose foreign errors are typed. */
const s3Op = typedOps('s3', typedS3)


/** A codec error about an object: names the object (as a file store's names the file). */
function about(err: unknown, object: string): unknown {
  if (err instanceof KonserveError && !err.file) err.file = object
  return err
}


/** `first,next,stamp` of a log head's user metadata, checked. */
function parseLogField(v: string, object: string): [number, number, number] {
  const m = /^(\d+),(\d+),(\d+)$/.exec(v)
  if (!m) throw corrupt(`a log head whose ${LOG_FIELD} metadata is ${JSON.stringify(v)}`, object)
  const [f, x, s] = [Number(m[1]), Number(m[2]), Number(m[3])]
  if (x < f) throw corrupt(`a log head whose next index ${x} is below its first ${f}`, object)
  return [f, x, s]
}

/** The header's meta length and value length (FORMAT.md §3), for the length of a head. */
function headParts(head: Uint8Array, object: string): { metaLen: number; valueLen: number } {
  if (head.length < HEADER_LEN) throw corrupt(`an object of ${head.length} bytes, shorter than a key file's header`, object)
  const v = new DataView(head.buffer, head.byteOffset, head.byteLength)
  return { metaLen: v.getUint32(12, true), valueLen: v.getUint32(16, true) + v.getUint32(20, true) * 0x100000000 }
}

interface Names {
  hex: string
  /** The key's object. */
  main: string
  /** The lock object. */
  lock: string
  /** The prefix of the log's record objects. */
  records: string
}

/** What a lock holder saw of its key's object: the write conditions. */
interface Seen {
  etag: string | undefined
  log: boolean
}

interface Held {
  object: string
  etag: string
  owner: string
  /** When this process took it (performance.now()). */
  since: number
  /** Set while unlocked but kept a moment for this process's next lock (see LINGER_MS). */
  idle?: ReturnType<typeof setTimeout>
  renewing?: Promise<unknown>
  lost?: boolean
}

/** A fetched object (or part of it). */
interface Fetched {
  bytes: Buffer
  etag: string
  /** The object's whole length. */
  size: number
  metadata: Record<string, string>
}

/** Names one store on one S3 endpoint: its lock scope, and where deleteStore looks for its open stores. */
export const s3Place = (scope: string, bucket: string, prefix: string) => `s3:${scope}/${bucket}/${prefix}`

export class S3Backing implements Backing {
  readonly implementation = 's3'
  readonly lockScope: string
  readonly atomicMultiKey = false
  readonly blocking = false
  private readonly client: S3Client
  private readonly sdk: S3Sdk
  private readonly codec: PureCodec
  private readonly held = new Map<string, Held>()
  private readonly seen = new Map<string, Seen>()
  private renewer: ReturnType<typeof setInterval> | undefined
  /** Multipart uploads whose abort failed (server away): retried by later writes and close. */
  private readonly orphans = new Map<string, string>()
  private readonly owner = `${hostname()}:${process.pid}`

  constructor(private readonly o: S3BackingOptions) {
    this.client = o.client
    this.sdk = o.sdk
    this.lockScope = s3Place(o.scope, o.bucket, o.prefix)
    this.codec = createPureCodec(o.compressor, o.encryptionKey, o.acceptPlaintext)
  }

  /** Where an object is, for messages. */
  where(object: string): string {
    return `s3://${this.o.bucket}/${object}`
  }

  private names(key: Uint8Array): Names {
    const hex = fileName(key).slice(0, 32)
    const p = this.o.prefix
    return { hex, main: `${p}/k/${hex}`, lock: `${p}/x/${hex}`, records: `${p}/l/${hex}/` }
  }

  private recordName(n: Names, index: number): string {
    return n.records + String(index).padStart(16, '0')
  }

  private async send(command: string, input: object): Promise<Record<string, unknown>> {
    const make = () => new this.sdk[command]({ Bucket: this.o.bucket, ...input })
    try {
      return await this.client.send(make())
    } catch (err) {
      // The local clock is off from the server's by more than S3 allows (a wall clock stepped): the
      // signing offset is set from the server's Date and the request tried once more, as the SDK does
      // for most requests but not all (it did not for conditional PUTs).
      const date = Date.parse((err as { $response?: { headers?: Record<string, string> } }).$response?.headers?.date ?? '')
      if ((err as Error).name !== 'RequestTimeTooSkewed' || !Number.isFinite(date) || !this.client.config) throw err
      this.client.config.systemClockOffset = date - Date.now()
      return this.client.send(make())
    }
  }

  // ---- objects ----

  /** An object (a range of it), or undefined when missing. */
  private async fetch(object: string, range?: [number, number], ifMatch?: string): Promise<Fetched | undefined> {
    let r: Record<string, unknown>
    try {
      r = await this.send('GetObjectCommand', { Key: object, ...(range ? { Range: `bytes=${range[0]}-${range[1] - 1}` } : {}), ...(ifMatch ? { IfMatch: ifMatch } : {}) })
    } catch (err) {
      if (isMissing(err)) return undefined
      if (status(err) === 416) return { bytes: Buffer.alloc(0), etag: '', size: 0, metadata: {} }
      if (ifMatch && status(err) === 412) throw new KonserveError('ERR_IO', 'the blob was replaced while it was being read', { file: this.where(object) })
      throw typedS3(err, 'read', this.where(object))
    }
    const bytes = Buffer.from(await (r.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray())
    const total = /\/(\d+)$/.exec(String(r.ContentRange ?? ''))
    return { bytes, etag: String(r.ETag ?? ''), size: total ? Number(total[1]) : bytes.length, metadata: (r.Metadata as Record<string, string>) ?? {} }
  }

  /** Writes an object, on a condition: `etag` (If-Match), null (If-None-Match: *), undefined (none). */
  private async store(object: string, body: Uint8Array, cond: string | null | undefined, metadata?: Record<string, string>): Promise<string> {
    const r = await this.send('PutObjectCommand', {
      Key: object,
      Body: u8(body),
      ContentLength: body.length,
      ...(metadata ? { Metadata: metadata } : {}),
      ...(cond === null ? { IfNoneMatch: '*' } : cond ? { IfMatch: cond } : {}),
    })
    return String(r.ETag ?? '')
  }

  /** Deletes an object if it is still the one with this etag (else ERR_LOCK: another writer changed it). */
  private async remove(object: string, etag: string): Promise<void> {
    try {
      await this.send('DeleteObjectCommand', { Key: object, IfMatch: etag })
    } catch (err) {
      if (!isMissing(err)) throw typedS3(err, 'delete', this.where(object))
    }
  }

  /** The condition a write of this key must meet: what its lock holder saw. */
  private condition(key: Uint8Array): string | null | undefined {
    const s = this.seen.get(keyId(key))
    return s === undefined ? undefined : (s.etag ?? null)
  }

  /** Remembers what a lock holder saw of its key (nothing for a key not held). */
  private saw(key: Uint8Array, etag: string | undefined, log: boolean): void {
    const id = keyId(key)
    if (this.held.has(id)) this.seen.set(id, { etag, log })
  }

  // ---- reading ----

  /** Decodes a head (header + meta segment) for `key` (or, listing, for the name's hash). */
  private async head(h: Uint8Array, fileLength: number, key: Uint8Array | undefined, n: Names) {
    let d: Awaited<ReturnType<PureCodec['decodeHead']['async']>>
    try {
      d = await this.codec.decodeHead.async(h, fileLength, key, `${n.hex}.ksv`)
    } catch (err) {
      throw about(err, this.where(n.main))
    }
    if (key && Buffer.compare(u8(d.key), u8(key)) !== 0) {
      throw new KonserveError('ERR_KEY_MISMATCH', 'the object holds another key than the one asked for', { file: this.where(n.main) })
    }
    return d
  }

  /** The key's head: decoded header and meta, the object's etag and size, and log info for a log. */
  private async readHead(n: Names, key: Uint8Array | undefined) {
    const f = await this.fetch(n.main, [0, PEEK])
    if (!f) return undefined
    const file = this.where(n.main)
    const logField = f.metadata[LOG_FIELD]
    let bytes = f.bytes
    const { metaLen } = headParts(bytes, file)
    const headLen = HEADER_LEN + metaLen
    if (logField !== undefined && headLen !== f.size) throw corrupt(`a log head of ${f.size} bytes whose header says ${headLen}`, file)
    if (headLen > f.size) throw corrupt(`an object of ${f.size} bytes, shorter than its head (${headLen} bytes)`, file)
    if (headLen > bytes.length) {
      const more = await this.fetch(n.main, [bytes.length, headLen], f.etag)
      bytes = Buffer.concat([bytes, more?.bytes ?? Buffer.alloc(0)])
    }
    const fileLength = logField !== undefined ? f.size + LOG_COMMIT_AREA : f.size
    const d = await this.head(bytes.subarray(0, headLen), fileLength, key, n)
    const log = logField !== undefined ? logInfo(...parseLogField(logField, file)) : undefined
    return { d, etag: f.etag, size: f.size, log, head: bytes.subarray(0, headLen), logField }
  }

  get = s3Op('get', async (key: Uint8Array): Promise<RawEntry | undefined> => {
    const n = this.names(key)
    const f = await this.fetch(n.main)
    if (!f) {
      this.saw(key, undefined, false)
      return undefined
    }
    const logField = f.metadata[LOG_FIELD]
    this.saw(key, f.etag, logField !== undefined)
    const file = this.where(n.main)
    if (logField !== undefined) {
      const d = await this.head(f.bytes, f.bytes.length + LOG_COMMIT_AREA, key, n)
      return { serializer: d.serializer, meta: d.meta, value: new Uint8Array(0), log: logInfo(...parseLogField(logField, file)) }
    }
    let d: Awaited<ReturnType<PureCodec['decode']['async']>>
    try {
      d = await this.codec.decode.async(f.bytes, key)
    } catch (err) {
      throw about(err, file)
    }
    if (Buffer.compare(u8(d.key), u8(key)) !== 0) throw new KonserveError('ERR_KEY_MISMATCH', 'the object holds another key than the one asked for', { file })
    return { serializer: d.serializer, meta: d.meta, value: d.value }
  })

  getMeta = s3Op('getMeta', async (key: Uint8Array): Promise<RawMeta | undefined> => {
    const n = this.names(key)
    const h = await this.readHead(n, key)
    this.saw(key, h?.etag, h?.log !== undefined)
    if (!h) return undefined
    const meta: RawMeta = { key: h.d.key, serializer: h.d.serializer, meta: h.d.meta, file: this.where(n.main) }
    if (h.log) meta.log = h.log
    return meta
  })

  exists = s3Op('exists', async (key: Uint8Array): Promise<boolean> => {
    const n = this.names(key)
    try {
      const r = await this.send('HeadObjectCommand', { Key: n.main })
      this.saw(key, String(r.ETag ?? ''), (r.Metadata as Record<string, string> | undefined)?.[LOG_FIELD] !== undefined)
      return true
    } catch (err) {
      if (isMissing(err)) return false
      throw err
    }
  })

  // ---- writing ----

  put = s3Op('put', async (writes: RawWrite[]): Promise<void> => {
    // One request per key, all at once: S3 has no multi-object transaction (atomicMultiKey is false).
    await Promise.all(
      writes.map(async (w) => {
        const n = this.names(w.key)
        const { head, value } = await this.codec.encode.async(w)
        const etag = await this.store(n.main, concat([head, value]), this.condition(w.key)).catch((err) => {
          throw typedS3(err, 'put', this.where(n.main))
        })
        await this.replaced(w.key, n, etag)
      }),
    )
  })

  /** After a write of the key's object: what the holder now knows; a replaced log's records go. */
  private async replaced(key: Uint8Array, n: Names, etag: string | undefined): Promise<void> {
    const id = keyId(key)
    const was = this.seen.get(id)
    if (this.held.has(id)) this.seen.set(id, { etag, log: false })
    if (was?.log) await this.dropRecords(n, 0, Number.MAX_SAFE_INTEGER).catch(() => {})
  }

  delete = s3Op('delete', async (keys: Uint8Array[]): Promise<boolean[]> => {
    return Promise.all(
      keys.map(async (key) => {
        const n = this.names(key)
        let r: Record<string, unknown>
        try {
          r = await this.send('HeadObjectCommand', { Key: n.main })
        } catch (err) {
          if (!isMissing(err)) throw err
          if (this.condition(key)) throw typedS3({ name: 'PreconditionFailed', $metadata: { httpStatusCode: 412 }, message: 'deleted meanwhile' }, 'delete', this.where(n.main))
          return false
        }
        const etag = String(r.ETag ?? '')
        const cond = this.condition(key)
        if (cond !== undefined && cond !== etag) throw typedS3({ name: 'PreconditionFailed', $metadata: { httpStatusCode: 412 }, message: 'changed meanwhile' }, 'delete', this.where(n.main))
        await this.remove(n.main, etag)
        const isLog = (r.Metadata as Record<string, string> | undefined)?.[LOG_FIELD] !== undefined
        if (this.held.has(keyId(key))) this.seen.set(keyId(key), { etag: undefined, log: false })
        if (isLog) await this.dropRecords(n, 0, Number.MAX_SAFE_INTEGER).catch(() => {})
        return true
      }),
    )
  })

  // ---- listing: ListObjectsV2 pages of P/k/, one ranged GET per key for its head ----

  openList(): ListCursor {
    let token: string | undefined
    let pending: string[] = []
    let done = false
    const refill = async (want: number) => {
      while (!done && pending.length < want) {
        const r = await this.send('ListObjectsV2Command', { Prefix: `${this.o.prefix}/k/`, MaxKeys: Math.min(1000, Math.max(want, 100)), ...(token ? { ContinuationToken: token } : {}) })
        for (const c of (r.Contents as Array<{ Key: string }> | undefined) ?? []) pending.push(c.Key)
        token = r.NextContinuationToken as string | undefined
        if (!r.IsTruncated || !token) done = true
      }
    }
    const next = s3Op('list', async (max: number): Promise<RawListing | undefined> => {
      const want = Math.max(1, max)
      await refill(want)
      const names = pending.splice(0, want)
      if (names.length === 0) return undefined
      const out: RawListing = { entries: [], corrupt: [] }
      const heads = await Promise.allSettled(
        names.map(async (object) => {
          const hex = object.slice(object.lastIndexOf('/') + 1)
          if (!/^[0-9a-f]{32}$/.test(hex)) throw corrupt('an object under the store prefix that konserve did not write', this.where(object))
          return this.readHead({ hex, main: object, lock: '', records: '' }, undefined)
        }),
      )
      for (const [i, r] of heads.entries()) {
        if (r.status === 'fulfilled') {
          if (r.value) out.entries.push({ key: r.value.d.key, serializer: r.value.d.serializer, meta: r.value.d.meta, file: this.where(names[i]!), ...(r.value.log ? { log: r.value.log } : {}) })
        } else {
          const e = typedS3(r.reason, 'list', this.where(names[i]!))
          if (e.code === 'ERR_BACKEND_UNAVAILABLE') throw e
          out.corrupt.push({ code: e.code, file: e.file ?? this.where(names[i]!), message: e.message })
        }
      }
      return out
    })
    return {
      next,
      close: () => {
        done = true
        pending = []
      },
    }
  }

  // ---- locks: a lease object, created with If-None-Match: *, renewed and taken over with If-Match ----

  /**
   * Takes each key's lock object in one global order, all or none. A lock
   * object whose etag a waiter has seen unchanged for its lease (the holder
   * stopped renewing: it died or lost the network) is taken over with
   * `If-Match` on that etag: no clock is compared across hosts, and of two
   * waiters only one takes it.
   */
  lock = s3Op('lock', async (keys: Uint8Array[]): Promise<void> => {
    const wanted = [...new Map(keys.map((k) => [keyId(k), this.names(k).lock])).entries()].sort((a, b) => (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    // Given up a moment ago after a long hold: others first.
    const yieldUntil = Math.max(0, ...wanted.map(([, object]) => this.yielded.get(object) ?? 0))
    if (yieldUntil > performance.now()) await new Promise((r) => setTimeout(r, yieldUntil - performance.now()))
    const start = performance.now()
    /** Lock object -> [etag, when this waiter first saw it]. */
    const watched = new Map<string, [string, number]>()
    for (let pause = 0; ; pause = Math.min(pause * 2 || 2, 50)) {
      const taken: string[] = []
      let busy: { object: string; holder: string } | undefined
      for (const [id, object] of wanted) {
        const mine = this.held.get(id)
        if (mine?.idle !== undefined && !mine.lost) {
          // Still ours, kept after the last unlock.
          clearTimeout(mine.idle)
          mine.idle = undefined
          taken.push(id)
          continue
        }
        const body = this.lockBody(0)
        try {
          const etag = await this.store(object, body, null)
          this.held.set(id, { object, etag, owner: this.owner, since: performance.now() })
          taken.push(id)
          continue
        } catch (err) {
          if (!isConflict(err)) {
            for (const t of taken) void this.release(t)
            throw typedS3(err, 'lock', this.where(object))
          }
        }
        // Held by someone: take it over if its etag has not changed for its lease.
        const cur = await this.fetch(object)
        if (!cur) {
          busy = { object, holder: 'nobody (just released)' }
          break
        }
        const info = parseLock(cur.bytes)
        const w = watched.get(object)
        const now = performance.now()
        if (!w || w[0] !== cur.etag) watched.set(object, [cur.etag, now])
        else if (now - w[1] >= info.lease) {
          try {
            const etag = await this.store(object, body, cur.etag)
            this.held.set(id, { object, etag, owner: this.owner, since: performance.now() })
            taken.push(id)
            continue
          } catch (err) {
            if (!isConflict(err)) {
              for (const t of taken) void this.release(t)
              throw typedS3(err, 'lock', this.where(object))
            }
          }
        }
        busy = { object, holder: info.owner }
        break
      }
      if (!busy) {
        this.startRenewing()
        return
      }
      for (const t of taken) void this.release(t)
      const waited = performance.now() - start
      if (waited >= this.o.lockTimeoutMs) {
        throw new KonserveError('ERR_LOCK_TIMEOUT', `waited ${Math.round(waited)} ms for the lock ${this.where(busy.object)}, held by ${busy.holder}`)
      }
      await new Promise((r) => setTimeout(r, pause + Math.random() * pause))
    }
  })

  private renewals = 0
  private lockBody(n: number): Buffer {
    return Buffer.from(JSON.stringify({ owner: this.owner, lease: this.o.lockLeaseMs, n, nonce: randomBytes(6).toString('hex') }))
  }

  /** Lock releases under way: close waits for them before it destroys the client. */
  private readonly releasing = new Set<Promise<unknown>>()

  private release(id: string): Promise<unknown> {
    const h = this.held.get(id)
    if (!h) return Promise.resolve()
    if (h.idle !== undefined) clearTimeout(h.idle)
    this.held.delete(id)
    this.seen.delete(id)
    if (this.held.size === 0) this.stopRenewing()
    const p = this.deleteLock(h).finally(() => this.releasing.delete(p))
    this.releasing.add(p)
    return p
  }

  private deleteLock(h: Held): Promise<unknown> {
    // After a renewal under way (it changes the etag), delete only our own lock object.
    return Promise.resolve(h.renewing)
      .then(() => (h.lost ? undefined : this.send('DeleteObjectCommand', { Key: h.object, IfMatch: h.etag })))
      .catch(() => {
        // The lease ends it anyway.
      })
  }

  unlock(keys: Uint8Array[]): void {
    const now = performance.now()
    for (const k of keys) {
      const id = keyId(k)
      const h = this.held.get(id)
      if (!h || h.idle !== undefined) continue
      if (!h.lost && now - h.since < HOLD_MS) {
        h.idle = setTimeout(() => void this.release(id), LINGER_MS)
        h.idle.unref?.()
        continue
      }
      if (now - h.since >= HOLD_MS) this.yielded.set(h.object, now + YIELD_MS)
      void this.release(id)
    }
    if (this.yielded.size > 1000) for (const [o, t] of this.yielded) if (t < now) this.yielded.delete(o)
  }

  /** Lock objects this process gave up after a long hold, and until when it lets others take them. */
  private readonly yielded = new Map<string, number>()

  private startRenewing(): void {
    if (this.renewer) return
    this.renewer = setInterval(() => {
      for (const h of this.held.values()) {
        if (h.renewing || h.lost) continue
        h.renewing = this.store(h.object, this.lockBody(++this.renewals), h.etag)
          .then((etag) => {
            h.etag = etag
          })
          .catch((err) => {
            // Taken over (the lease lapsed): writes are fenced by their own conditions.
            if (isConflict(err)) h.lost = true
          })
          .finally(() => {
            h.renewing = undefined
          })
      }
    }, Math.max(10, Math.floor(this.o.lockLeaseMs / 3)))
    this.renewer.unref?.()
  }

  private stopRenewing(): void {
    if (this.renewer) clearInterval(this.renewer)
    this.renewer = undefined
  }

  // ---- blobs: one chunked key file, written by a multipart upload ----

  /**
   * The chunked file is `head ‖ chunks ‖ table ‖ trailer`, and the head is
   * known only at the end (it holds the table's checksum). S3 takes a
   * multipart upload's parts in any order: the first `partSize` bytes of
   * chunks are held back, later ones go up as parts 2, 3, … as they fill, the
   * last part ends with the table and trailer, and part 1 (head + the held
   * bytes, at least S3's 5 MiB minimum) goes up at commit. At most two parts
   * are in memory. A blob shorter than one part is one PutObject.
   */
  blobWriter = s3Op('blobWriter', async (key: Uint8Array, meta: Uint8Array): Promise<BlobSink> => {
    this.retryOrphans()
    const n = this.names(key)
    const object = this.where(n.main)
    const codec = this.codec.writeCodec(key)
    const enc = new ChunkedEncoder(codec)
    const partSize = this.o.partSize
    const first: Buffer[] = []
    let firstLen = 0
    let cur: Buffer[] = []
    let curLen = 0
    let uploadId: string | undefined
    const parts: Array<{ ETag: string; PartNumber: number }> = []
    let open = true
    const encode = gensync(function* (step: (sink: ChunkSink) => gensync.Handler<unknown>, out: Buffer[]) {
      return yield* step(function* (stored) {
        out.push(Buffer.from(stored))
      })
    })
    const upload = async (body: Buffer, number: number) => {
      if (!uploadId) {
        const r = await this.send('CreateMultipartUploadCommand', { Key: n.main })
        uploadId = String(r.UploadId)
      }
      const r = await this.send('UploadPartCommand', { Key: n.main, UploadId: uploadId, PartNumber: number, Body: body, ContentLength: body.length })
      parts.push({ ETag: String(r.ETag), PartNumber: number })
    }
    /** Takes stored chunks: into the held first part until it is full, then into parts 2, 3, … */
    const take = async (out: Buffer[]) => {
      for (const c of out) {
        if (firstLen < partSize) {
          first.push(c)
          firstLen += c.length
          continue
        }
        cur.push(c)
        curLen += c.length
        if (curLen >= partSize) {
          const body = Buffer.concat(cur)
          cur = []
          curLen = 0
          await upload(body, parts.length + 2)
        }
      }
    }
    const closed = () => new KonserveError('ERR_INVALID_ARGUMENT', 'the blob writer is closed')
    const abort = () => {
      if (!open) return
      open = false
      first.length = 0
      cur = []
      if (uploadId) this.abortUpload(n.main, uploadId)
    }
    const failed = (err: unknown) => {
      abort()
      return typedS3(err, 'blob write', object)
    }
    return {
      write: s3Op('blob write', async (bytes: Uint8Array) => {
        if (!open) throw closed()
        try {
          const out: Buffer[] = []
          await encode.async((sink) => enc.write(bytes, sink), out)
          await take(out)
        } catch (err) {
          throw failed(err)
        }
      }),
      commit: s3Op('blob commit', async () => {
        if (!open) throw closed()
        try {
          const out: Buffer[] = []
          const tail = Buffer.from((await encode.async((sink) => enc.finish(sink), out)) as Uint8Array)
          await take(out)
          const metaStored = await encodeMetaSegment.async(codec, key, meta)
          const head = Buffer.from(concat([blobHeader(codec, metaStored, enc.valueLength, tail), metaStored]))
          const cond = this.condition(key)
          const when = cond === null ? { IfNoneMatch: '*' } : cond ? { IfMatch: cond } : {}
          let etag: string
          if (!uploadId && curLen === 0) {
            etag = await this.store(n.main, Buffer.concat([head, ...first, tail]), cond)
          } else {
            await upload(Buffer.concat([...cur, tail]), parts.length + 2)
            cur = []
            await upload(Buffer.concat([head, ...first]), 1)
            first.length = 0
            parts.sort((a, b) => a.PartNumber - b.PartNumber)
            const r = await this.send('CompleteMultipartUploadCommand', { Key: n.main, UploadId: uploadId, MultipartUpload: { Parts: parts }, ...when })
            etag = String(r.ETag ?? '')
          }
          open = false
          await this.replaced(key, n, etag)
        } catch (err) {
          throw failed(err)
        }
      }),
      abort,
    }
  })

  private abortUpload(object: string, uploadId: string): void {
    this.send('AbortMultipartUploadCommand', { Key: object, UploadId: uploadId })
      .then(() => this.orphans.delete(uploadId))
      .catch((err) => {
        // The server is away: an incomplete upload is never an object; aborted later (or by a lifecycle rule).
        if (!isMissing(err)) this.orphans.set(uploadId, object)
        else this.orphans.delete(uploadId)
      })
  }

  private retryOrphans(): void {
    for (const [id, object] of this.orphans) this.abortUpload(object, id)
  }

  /** Range reads of the key file, each on the condition that it is still the object opened. */
  openBlob = s3Op('openBlob', async (key: Uint8Array): Promise<BlobSource | undefined> => {
    const n = this.names(key)
    const file = this.where(n.main)
    const h = await this.readHead(n, key)
    if (!h) return undefined
    if (h.log) throw notBinary()
    const { d, etag, size } = h
    if (d.header.flags === 0) {
      // A value written with the raw-bytes serializer reads as a one-piece blob.
      if (d.serializer !== RAW_BYTES_ID) throw notBinary()
      const e = await this.get.async(key)
      if (!e || e.log || e.serializer !== RAW_BYTES_ID) throw notBinary()
      const value = e.value
      const read = s3Op('blob read', async (o: number, l: number) => Buffer.from(value.subarray(o, Math.min(value.length, o + l))))
      return { size: value.length, meta: { key: d.key, serializer: d.serializer, meta: d.meta, file }, read, close() {} }
    }
    const valueStart = HEADER_LEN + d.header.metaLen
    const end = valueStart + d.header.valueLen
    if (end !== size) throw corrupt(`an object of ${size} bytes whose header says ${end}`, file)
    const range = async (from: number, to: number) => {
      const f = await this.fetch(n.main, [from, to], etag)
      if (!f) throw new KonserveError('ERR_IO', 'the blob was deleted while it was being read', { file })
      if (f.bytes.length !== to - from) throw corrupt(`the object ends inside bytes ${from}-${to}`, file)
      return f.bytes
    }
    let layout: ReturnType<typeof decodeBlobTable>
    try {
      const trailer = await range(end - TRAILER_LEN, end)
      const { count } = decodeBlobTrailer(trailer, d.header.valueLen)
      const tail = await range(end - (TABLE_ENTRY_LEN * count + TRAILER_LEN), end)
      layout = decodeBlobTable(tail, d.header, valueStart)
    } catch (err) {
      throw about(err, file)
    }
    const codec = this.codec.readCodec(d.header, key)
    let closed = false
    const read = s3Op('blob read', async (offset: number, len: number): Promise<Uint8Array> => {
      if (closed) throw new KonserveError('ERR_INVALID_ARGUMENT', 'the blob is closed')
      const stop = Math.min(layout.size, offset + len)
      if (stop <= offset) return Buffer.alloc(0)
      const i0 = Math.floor(offset / CHUNK_SIZE)
      const i1 = Math.floor((stop - 1) / CHUNK_SIZE)
      // One ranged GET for the chunks the read touches.
      const from = layout.chunks[i0]!.offset
      const last = layout.chunks[i1]!
      const stored = await range(from, last.offset + last.length)
      const parts: Uint8Array[] = []
      for (let i = i0; i <= i1; i++) {
        const c = layout.chunks[i]!
        let plain: Uint8Array
        try {
          plain = await decodeChunk.async(codec, layout, i, stored.subarray(c.offset - from, c.offset - from + c.length))
        } catch (err) {
          throw about(err, file)
        }
        const a = i === i0 ? offset - i * CHUNK_SIZE : 0
        const b = i === i1 ? stop - i * CHUNK_SIZE : plain.length
        parts.push(plain.subarray(a, b))
      }
      return Buffer.from(concat(parts))
    })
    return {
      size: layout.size,
      meta: { key: d.key, serializer: d.serializer, meta: d.meta, file },
      read,
      close: () => {
        closed = true
      },
    }
  })

  // ---- logs: a head object (its user metadata says first, next, stamp) and one object per record ----

  append = s3Op('append', async (key: Uint8Array, records: NewRecord[], createMeta: Uint8Array): Promise<LogInfo> => {
    if (records.length === 0) throw new KonserveError('ERR_INVALID_ARGUMENT', 'an append needs at least one record')
    const n = this.names(key)
    const f = await this.fetch(n.main)
    const file = this.where(n.main)
    let head: Uint8Array
    let first: number
    let next: number
    let codecHeader: { compressor: number; encryptor: number }
    if (!f) {
      const codec = this.codec.writeCodec(key)
      const metaStored = await encodeMetaSegment.async(codec, key, createMeta)
      head = concat([logHeader(codec, metaStored), metaStored])
      first = next = 0
      codecHeader = codec
    } else {
      const field = f.metadata[LOG_FIELD]
      if (field === undefined) throw notALog()
      ;[first, next] = parseLogField(field, file)
      head = f.bytes
      try {
        codecHeader = decodeHeader(head, head.length + LOG_COMMIT_AREA)
      } catch (err) {
        throw about(err, file)
      }
    }
    const cond = this.condition(key)
    if (cond !== undefined && cond !== (f?.etag ?? null)) {
      throw typedS3({ name: 'PreconditionFailed', $metadata: { httpStatusCode: 412 }, message: 'changed meanwhile' }, 'append', file)
    }
    const codec = this.codec.readCodec(codecHeader, key)
    const encoded: Uint8Array[] = []
    for (const [i, rec] of records.entries()) encoded.push(await encodeRecord.async(codec, next + i, rec.stamp, rec.serializer, rec.bytes))
    // The records first, then the head that makes them part of the log (the commit).
    await Promise.all(encoded.map((bytes, i) => this.store(this.recordName(n, next + i), bytes, undefined)))
    const stamp = records[records.length - 1]!.stamp
    const x = next + records.length
    const etag = await this.store(n.main, head, f ? f.etag : null, { [LOG_FIELD]: `${first},${x},${stamp}` }).catch((err) => {
      throw typedS3(err, 'append', file)
    })
    if (this.held.has(keyId(key))) this.seen.set(keyId(key), { etag, log: true })
    return logInfo(first, x, stamp)
  })

  openLog = s3Op('openLog', async (key: Uint8Array): Promise<LogCursor | undefined> => {
    const n = this.names(key)
    const file = this.where(n.main)
    const f = await this.fetch(n.main)
    if (!f) return undefined
    const field = f.metadata[LOG_FIELD]
    if (field === undefined) throw notALog()
    const d = await this.head(f.bytes, f.bytes.length + LOG_COMMIT_AREA, key, n)
    const codec = this.codec.readCodec(d.header, key)
    let [at, end] = parseLogField(field, file)
    return closableCursor((closed) => {
      const next = s3Op('log read', async (max: number): Promise<LogRecord[] | undefined> => {
        if (closed() || at >= end) return undefined
        const want = Math.min(Math.max(1, max), end - at, PARALLEL)
        const got = await Promise.all(Array.from({ length: want }, (_, i) => this.fetch(this.recordName(n, at + i))))
        const out: LogRecord[] = []
        for (const [i, r] of got.entries()) {
          const index = at + i
          const name = this.where(this.recordName(n, index))
          if (!r) {
            // Trimmed meanwhile? Then go on from the log's new first record.
            const now = await this.fetch(n.main)
            const nowField = now?.metadata[LOG_FIELD]
            const nowFirst = nowField !== undefined ? parseLogField(nowField, file)[0] : end
            if (nowFirst > index) {
              at = Math.min(nowFirst, end)
              return out.length > 0 ? out : next.async(max)
            }
            throw corrupt(`log record ${index} is missing`, name)
          }
          out.push(await readStoredRecord(codec, r.bytes, index, name))
        }
        at += want
        return out
      })
      return next
    })
  })

  trimLog = s3Op('trimLog', async (key: Uint8Array, keepFrom: number, meta: Uint8Array): Promise<LogInfo> => {
    const n = this.names(key)
    const file = this.where(n.main)
    const f = await this.fetch(n.main)
    if (!f) return { firstIndex: 0, lastIndex: -1, lastStamp: 0 }
    const field = f.metadata[LOG_FIELD]
    if (field === undefined) throw notALog()
    const [first, next, stamp] = parseLogField(field, file)
    let header: ReturnType<typeof decodeHeader>
    try {
      header = decodeHeader(f.bytes, f.bytes.length + LOG_COMMIT_AREA)
    } catch (err) {
      throw about(err, file)
    }
    const codec = this.codec.readCodec(header, key)
    const metaStored = await encodeMetaSegment.async(codec, key, meta)
    const head = concat([logHeader(codec, metaStored), metaStored])
    const drop = Math.min(Math.max(0, keepFrom - first), next - first)
    const kept = next - first - drop
    const [nf, nx, ns] = kept > 0 ? [first + drop, next, stamp] : [0, 0, 0]
    const cond = this.condition(key)
    if (cond !== undefined && cond !== f.etag) throw typedS3({ name: 'PreconditionFailed', $metadata: { httpStatusCode: 412 }, message: 'changed meanwhile' }, 'trimLog', file)
    const etag = await this.store(n.main, head, f.etag, { [LOG_FIELD]: `${nf},${nx},${ns}` }).catch((err) => {
      throw typedS3(err, 'trimLog', file)
    })
    if (this.held.has(keyId(key))) this.seen.set(keyId(key), { etag, log: true })
    // The dropped records are garbage now (never read again): removed, best effort.
    await this.dropRecords(n, first, kept > 0 ? first + drop : next).catch(() => {})
    return logInfo(nf, nx, ns)
  })

  /** Deletes the record objects with indexes in [from, to) that exist (listed), 1000 per request. */
  private async dropRecords(n: Names, from: number, to: number): Promise<void> {
    let token: string | undefined
    for (;;) {
      const r = await this.send('ListObjectsV2Command', { Prefix: n.records, ...(token ? { ContinuationToken: token } : {}) })
      const objects = ((r.Contents as Array<{ Key: string }> | undefined) ?? [])
        .filter((c) => {
          const i = Number(c.Key.slice(n.records.length))
          return i >= from && i < to
        })
        .map((c) => ({ Key: c.Key }))
      if (objects.length > 0) await this.send('DeleteObjectsCommand', { Delete: { Objects: objects, Quiet: true } })
      token = r.NextContinuationToken as string | undefined
      if (!r.IsTruncated || !token) return
    }
  }

  close = s3Op('close', async (): Promise<void> => {
    for (const id of [...this.held.keys()]) void this.release(id)
    await Promise.all([...this.releasing])
    this.stopRenewing()
    this.retryOrphans()
    if (this.o.ownsClient) this.client.destroy?.()
  })
}

function parseLock(bytes: Buffer): { owner: string; lease: number } {
  try {
    const j = JSON.parse(bytes.toString()) as { owner?: unknown; lease?: unknown }
    return { owner: typeof j.owner === 'string' ? j.owner : 'an unknown holder', lease: typeof j.lease === 'number' ? j.lease : 30_000 }
  } catch {
    return { owner: 'an unknown holder (a lock object konserve did not write)', lease: 30_000 }
  }
}
