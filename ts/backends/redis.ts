/**
 * The Redis backing (docs/BACKENDS.md), in the new shape (../backing/seam.ts):
 * every operation is an `asyncOp('redis', …)`, there is no blocking form.
 *
 * Keys, for prefix P and h = the 32 hex digits of xxh3_128(CKE) (the file
 * name of FORMAT.md §2 without `.ksv`); `{h}` is a Cluster hash tag, so every
 * part of one konserve key lives in one slot:
 * - `P:k:{h}` a hash: `h` the file's head (48-byte header + meta segment),
 *   and by kind: a value's `v` (its stored value segment: `h || v` is the key
 *   file, byte for byte); a chunked blob's `t` (chunk table + trailer), `g`
 *   (its generation) and `n` (chunk count); a log's `f`, `x`, `s` (first
 *   index, next index, last stamp).
 * - `P:c:{h}:<g>` a blob generation's chunks, a hash from chunk index to the
 *   stored chunk (FORMAT.md §4.5). Staged with an expiry, made persistent by
 *   the commit that swaps it in; a replaced generation expires after a grace
 *   period, so blobs opened before the swap read on meanwhile.
 * - `P:l:{h}` a log's records, a list of records as FORMAT.md §4.6 stores them.
 * - `P:x:{h}` the key's lock: a token, SET NX PX, renewed while held,
 *   released by compare-and-delete. Every write checks, in the same script
 *   that writes, that the caller's lock is still held (a fenced write).
 */
import { hostname } from 'node:os'
import { randomBytes } from 'node:crypto'
import { type LogInfo, type LogRecord, type NewRecord, type RawEntry, type RawListing, type RawMeta, type RawWrite, keyId } from '../backing/index.js'
import type { Backing, BlobSink, BlobSource, ListCursor, LogCursor } from '../backing/seam.js'
import { createPureCodec, type PureCodec } from './pure/codec.js'
import { closableCursor, corrupt, declaredLength, logInfo, notALog, notBinary, readStoredRecord, stagedBlobWriter, typedOps, u8 } from './remote.js'
import { KonserveError } from '../errors.js'
import { HEADER_LEN, decodeHeader, encodeMetaSegment } from '../format/file.js'
import { CHUNK_SIZE, decodeBlobTable, decodeChunk } from '../format/blob.js'
import { encodeRecord, logHeader } from '../format/log.js'
import { LOG_COMMIT_AREA } from '../format/file.js'
import { fileName } from '../codec/xxhash.js'
import { concat } from '../codec/aes.js'
import { type RedisConn, script } from './redis-client.js'
/** The raw-bytes serializer's id (ts/serializers.ts RAW_BYTES_ID), not imported: this module is bundled without the serializer registry. */
const RAW_BYTES_ID = 0

/** An ioredis client (a Redis or a Cluster) or a node-redis v5 client. */
// biome-ignore lint/suspicious/noExplicitAny: ioredis and node-redis are optional peers; their types are not required to build
export type RedisClient = any

export interface RedisBackingOptions {
  /** The client, through the adapter of ./redis-client.ts. */
  conn: RedisConn
  /** Close the client with the store (it was made by connectRedisStore). */
  ownsClient: boolean
  /** The first part of every Redis key (no braces). */
  prefix: string
  compressor: number
  encryptionKey?: Uint8Array
  acceptPlaintext?: boolean
  /** How long a lock wait lasts before ERR_LOCK_TIMEOUT. */
  lockTimeoutMs: number
  /** How long a lock lives unless renewed (renewed every third of it while held). */
  lockLeaseMs: number
  /** How long a replaced blob generation stays readable. */
  blobGraceMs: number
}

// ---- scripts (atomic on the server; all keys of one call share a slot in a Cluster) ----

/** Checks each caller's lock, then replaces (or deletes) each key: KEYS (main, list, lock) per key. */
const SWAP = script(`
local grace = ARGV[1]
local n = #KEYS / 3
local a = 2
local w = {}
for i = 1, n do
  local tok = ARGV[a]
  if tok ~= '' and redis.call('GET', KEYS[3 * i]) ~= tok then return redis.error_reply('KONSERVE_LOCK_LOST ' .. KEYS[3 * i]) end
  w[i] = { ARGV[a + 1], ARGV[a + 2], a + 4, tonumber(ARGV[a + 3]) }
  a = a + 4 + w[i][4]
end
local out = {}
for i = 1, n do
  local main = KEYS[3 * i - 2]
  local old = redis.call('HGET', main, 'g')
  out[i] = redis.call('EXISTS', main)
  if old and old ~= w[i][2] then redis.call('PEXPIRE', w[i][1] .. old, grace) end
  redis.call('DEL', main, KEYS[3 * i - 1])
  if w[i][4] > 0 then
    redis.call('HSET', main, unpack(ARGV, w[i][3], w[i][3] + w[i][4] - 1))
    if w[i][2] ~= '' then redis.call('PERSIST', w[i][1] .. w[i][2]) end
  end
end
return out`)

/** Appends records to a log (creating it): KEYS main, list, lock; ARGV token, create, head, first, next, stamp, records… */
const APPEND = script(`
if ARGV[1] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[1] then return redis.error_reply('KONSERVE_LOCK_LOST ' .. KEYS[3]) end
if ARGV[2] == '1' then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[1], 'h', ARGV[3], 'f', ARGV[4])
end
redis.call('RPUSH', KEYS[2], unpack(ARGV, 7))
redis.call('HSET', KEYS[1], 'x', ARGV[5], 's', ARGV[6])
return 1`)

/** Drops a log's first records and sets its head: KEYS main, list, lock; ARGV token, drop, head, first, next, stamp. */
const TRIM = script(`
if ARGV[1] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[1] then return redis.error_reply('KONSERVE_LOCK_LOST ' .. KEYS[3]) end
redis.call('LTRIM', KEYS[2], ARGV[2], -1)
redis.call('HSET', KEYS[1], 'h', ARGV[3], 'f', ARGV[4], 'x', ARGV[5], 's', ARGV[6])
return 1`)

/** Up to ARGV[2] records of a log from index ARGV[1]: KEYS main, list. Returns { first, records }. */
const LOGREAD = script(`
local f = redis.call('HGET', KEYS[1], 'f')
if not f then return { -1, {} } end
local pos = tonumber(ARGV[1]) - tonumber(f)
if pos < 0 then pos = 0 end
return { tonumber(f), redis.call('LRANGE', KEYS[2], pos, pos + tonumber(ARGV[2]) - 1) }`)

/** The head fields of a key: KEYS main. Returns { h, t, x, f, s, length of v, whether it exists }. */
const HEAD = script(`
local r = redis.call('HMGET', KEYS[1], 'h', 't', 'x', 'f', 's')
r[6] = redis.call('HSTRLEN', KEYS[1], 'v')
r[7] = redis.call('EXISTS', KEYS[1])
return r`)

/**
 * Takes a key's lock and, if it got it, reads the key's hash in the same step:
 * KEYS lock, main; ARGV token, lease. Returns false (busy) or the hash's
 * fields, flat. The read is what the holder's next get/getMeta of the key
 * would see (nobody else writes the key while the lock is held): one round
 * trip instead of two for every locked read-modify-write.
 */
const LOCK = script(`
if not redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then return false end
return redis.call('HGETALL', KEYS[2])`)

const RENEW = script(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end`)
const UNLOCK = script(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end`)

// ---- errors ----

/** A server or connection failure as a KonserveError: lost locks are ERR_LOCK, the rest ERR_BACKEND_UNAVAILABLE. */
function typed(err: unknown, what: string): KonserveError {
  if (err instanceof KonserveError) return err
  const message = (err as Error)?.message ?? String(err)
  if (message.includes('KONSERVE_LOCK_LOST')) {
    return new KonserveError('ERR_LOCK', `${what}: the key's lock expired before the write (another writer may have taken it): ${message}`, { cause: err })
  }
  return new KonserveError('ERR_BACKEND_UNAVAILABLE', `${what}: Redis: ${message}`, { cause: err })
}

/** An async op whose foreign errors are typed. */
const redisOp = typedOps('redis', typed)


const num = (b: Buffer | string | null | undefined): number | undefined => (b == null ? undefined : Number(b.toString()))

interface Names {
  main: string
  list: string
  lock: string
  /** The prefix of the key's chunk hashes; a generation is appended. */
  chunks: string
  /** The hash tag's digits, for messages and the MAC's key hash. */
  hex: string
}

export class RedisBacking implements Backing {
  readonly implementation = 'redis'
  readonly lockScope: string
  readonly atomicMultiKey: boolean
  readonly blocking = false
  private readonly conn: RedisConn
  private readonly codec: PureCodec
  private readonly cluster: boolean
  /** Locks this backing holds: key id -> token. */
  private readonly held = new Map<string, { token: string; lock: string; fields?: Buffer[] }>()
  private renewer: ReturnType<typeof setInterval> | undefined
  /** Identifies this process in lock tokens (ERR_LOCK_TIMEOUT names the holder). */
  private readonly owner = `${hostname()}:${process.pid}`

  constructor(private readonly o: RedisBackingOptions) {
    this.conn = o.conn
    this.cluster = o.conn.cluster
    // One script call writes several keys only where they can share a server (not a Cluster).
    this.atomicMultiKey = !this.cluster
    this.lockScope = `redis:${o.conn.scope}#${o.prefix}`
    this.codec = createPureCodec(o.compressor, o.encryptionKey, o.acceptPlaintext)
  }

  /** The connection (the registry's backend uses it for its marker key). */
  get connection(): RedisConn {
    return this.conn
  }

  private names(key: Uint8Array): Names {
    const hex = fileName(key).slice(0, 32)
    const p = this.o.prefix
    return { hex, main: `${p}:k:{${hex}}`, list: `${p}:l:{${hex}}`, lock: `${p}:x:{${hex}}`, chunks: `${p}:c:{${hex}}:` }
  }

  private token(key: Uint8Array): string {
    return this.held.get(keyId(key))?.token ?? ''
  }

  // ---- reading ----

  /** Decodes a head (header + meta segment) for `key` (or, listing, for the name's hash). */
  private async head(h: Uint8Array, fileLength: number, key: Uint8Array | undefined, n: Names) {
    const d = await this.codec.decodeHead.async(h, fileLength, key, `${n.hex}.ksv`)
    if (key && Buffer.compare(u8(d.key), u8(key)) !== 0) {
      throw new KonserveError('ERR_KEY_MISMATCH', 'the Redis key holds another key than the one asked for', { file: n.main })
    }
    return d
  }

  /** The hash read with the key's lock (LOCK), once, if no write came in between. */
  private prefetched(key: Uint8Array | undefined): Buffer[] | undefined {
    const h = key && this.held.get(keyId(key))
    if (!h?.fields) return undefined
    const f = h.fields
    h.fields = undefined
    return f
  }

  /** Forgets the hashes read with locks: a write is coming (ours; nobody else's while we hold the locks). */
  private dropPrefetched(): void {
    for (const h of this.held.values()) h.fields = undefined
  }

  /** The fields of a key's hash, or undefined. */
  private async fields(n: Names, key?: Uint8Array): Promise<Record<string, Buffer> | undefined> {
    const flat = this.prefetched(key) ?? ((await this.conn.sendBuffers(['HGETALL', n.main])) as Buffer[])
    if (flat.length === 0) return undefined
    const all: Record<string, Buffer> = {}
    for (let i = 0; i + 1 < flat.length; i += 2) all[flat[i]!.toString()] = flat[i + 1]!
    return all.h ? all : badKey(n)
  }

  private async chunk(n: Names, gen: string, i: number): Promise<Buffer> {
    const c = (await this.conn.sendBuffers(['HGET', n.chunks + gen, String(i)])) as Buffer | null
    if (!c) throw new KonserveError('ERR_IO', `chunk ${i} of the blob is gone (it was replaced or deleted more than the grace period ago)`, { file: n.main })
    return c
  }

  get = redisOp('get', async (key: Uint8Array): Promise<RawEntry | undefined> => {
    const n = this.names(key)
    const f = await this.fields(n, key)
    if (!f) return undefined
    if (f.x) {
      const d = await this.head(f.h!, f.h!.length + LOG_COMMIT_AREA, key, n)
      return { serializer: d.serializer, meta: d.meta, value: new Uint8Array(0), log: logInfo(num(f.f)!, num(f.x)!, num(f.s) ?? 0) }
    }
    let file: Uint8Array
    if (f.t) {
      const count = num(f.n) ?? 0
      const parts: Uint8Array[] = [f.h!]
      for (let i = 0; i < count; i++) parts.push(await this.chunk(n, f.g!.toString(), i))
      parts.push(f.t)
      file = concat(parts)
    } else {
      file = concat([f.h!, f.v ?? new Uint8Array(0)])
    }
    const d = await this.codec.decode.async(file, key)
    if (Buffer.compare(u8(d.key), u8(key)) !== 0) {
      throw new KonserveError('ERR_KEY_MISMATCH', 'the Redis key holds another key than the one asked for', { file: n.main })
    }
    return { serializer: d.serializer, meta: d.meta, value: d.value }
  })

  /** A key's metadata from its head fields (one round trip). */
  private async metaOf(n: Names, key: Uint8Array | undefined, r: Array<Buffer | number | null>): Promise<RawMeta | undefined> {
    const [h, t, x, f, s, vlen, exists] = r as [Buffer | null, Buffer | null, Buffer | null, Buffer | null, Buffer | null, number, number]
    if (!h) return exists ? badKey(n) : undefined
    const length = x || t ? declaredLength(h, n.main) : h.length + Number(vlen)
    if (x && length !== h.length + LOG_COMMIT_AREA) throw corrupt('a log head whose header does not say a log', n.main)
    const d = await this.head(h, length, key, n)
    const meta: RawMeta = { key: d.key, serializer: d.serializer, meta: d.meta, file: n.main }
    if (x) meta.log = logInfo(num(f)!, num(x)!, num(s) ?? 0)
    return meta
  }

  getMeta = redisOp('getMeta', async (key: Uint8Array): Promise<RawMeta | undefined> => {
    const n = this.names(key)
    const flat = this.prefetched(key)
    if (!flat) return this.metaOf(n, key, await this.headFields(n.main))
    // HEAD's reply, from the prefetched hash.
    const f = new Map<string, Buffer>()
    for (let i = 0; i + 1 < flat.length; i += 2) f.set(flat[i]!.toString(), flat[i + 1]!)
    const pick = (name: string) => f.get(name) ?? null
    return this.metaOf(n, key, [pick('h'), pick('t'), pick('x'), pick('f'), pick('s'), f.get('v')?.length ?? 0, flat.length > 0 ? 1 : 0])
  })

  /** HEAD's reply for a key's hash: { h, t, x, f, s, length of v, whether it exists }. */
  private headFields(main: string): Promise<Array<Buffer | number | null>> {
    return this.conn.script(HEAD, [main], [], true) as Promise<Array<Buffer | number | null>>
  }

  exists = redisOp('exists', async (key: Uint8Array): Promise<boolean> => Number(await this.conn.send(['EXISTS', this.names(key).main])) === 1)

  // ---- writing ----

  /** Runs SWAP for these keys: one call on one server, one per key on a Cluster (slots differ). */
  private async swap(items: Array<{ n: Names; token: string; gen: string; fields: Array<string | Buffer> }>): Promise<number[]> {
    this.dropPrefetched()
    const call = (group: typeof items) => {
      const keys = group.flatMap((w) => [w.n.main, w.n.list, w.n.lock])
      const args = group.flatMap((w) => [w.token, w.n.chunks, w.gen, String(w.fields.length), ...w.fields])
      return this.conn.script(SWAP, keys, [String(this.o.blobGraceMs), ...args]) as Promise<number[]>
    }
    if (!this.cluster) return call(items)
    return (await Promise.all(items.map((w) => call([w])))).flat()
  }

  put = redisOp('put', async (writes: RawWrite[]): Promise<void> => {
    if (writes.length === 0) return
    const items = await Promise.all(
      writes.map(async (w) => {
        const { head, value } = await this.codec.encode.async(w)
        return { n: this.names(w.key), token: this.token(w.key), gen: '', fields: ['h', u8(head), 'v', u8(value)] }
      }),
    )
    await this.swap(items)
  })

  delete = redisOp('delete', async (keys: Uint8Array[]): Promise<boolean[]> => {
    if (keys.length === 0) return []
    const out = await this.swap(keys.map((k) => ({ n: this.names(k), token: this.token(k), gen: '', fields: [] })))
    return out.map((x) => x === 1)
  })

  // ---- listing: SCAN in batches (every master of a Cluster in turn) ----

  openList(): ListCursor {
    const nodes = this.conn.scanNodes()
    const match = `${this.o.prefix}:k:{*}`
    let node = 0
    let cursor = '0'
    let pending: string[] = []
    let done = false
    const seen = new Set<string>()
    const refill = async (want: number) => {
      while (!done && pending.length < want) {
        const [next, found] = (await nodes[node]!.send(['SCAN', cursor, 'MATCH', match, 'COUNT', String(Math.max(want, 100))])) as [string, string[]]
        cursor = next
        for (const name of found) {
          if (/^.*:k:\{[0-9a-f]{32}\}$/.test(name) && !seen.has(name)) {
            seen.add(name)
            pending.push(name)
          }
        }
        if (cursor === '0' && ++node >= nodes.length) done = true
      }
    }
    const next = redisOp('list', async (max: number): Promise<RawListing | undefined> => {
      const want = Math.max(1, max)
      await refill(want)
      const names = pending.splice(0, want)
      if (names.length === 0) return undefined
      const out: RawListing = { entries: [], corrupt: [] }
      const heads = await Promise.all(names.map((name) => this.headFields(name)))
      for (const [i, name] of names.entries()) {
        const hex = name.slice(name.lastIndexOf('{') + 1, -1)
        const n: Names = { hex, main: name, list: '', lock: '', chunks: '' }
        try {
          const m = await this.metaOf(n, undefined, heads[i]!)
          if (m) out.entries.push(m)
        } catch (err) {
          const e = typed(err, 'list')
          out.corrupt.push({ code: e.code, file: name, message: e.message })
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

  // ---- locks: SET NX PX with a token, renewed while held, compare-and-delete ----

  lock = redisOp('lock', async (keys: Uint8Array[]): Promise<void> => {
    // One order for every process: no two lockers wait on each other in a cycle.
    const wanted = [...new Map(keys.map((k) => [keyId(k), this.names(k)])).entries()].sort((a, b) => (a[1].lock < b[1].lock ? -1 : a[1].lock > b[1].lock ? 1 : 0))
    const start = performance.now()
    for (let pause = 0; ; pause = Math.min(pause * 2 || 1, 50)) {
      const taken: Array<[string, string]> = []
      let busy: string | undefined
      for (const [id, { lock, main }] of wanted) {
        const token = `${this.owner}:${randomBytes(8).toString('hex')}`
        const got = (await this.conn.script(LOCK, [lock, main], [token, String(this.o.lockLeaseMs)], true)) as Buffer[] | null
        if (got) {
          this.held.set(id, { token, lock, fields: got })
          taken.push([id, lock])
        } else {
          busy = lock
          break
        }
      }
      if (!busy) {
        this.startRenewing()
        return
      }
      for (const [id] of taken) this.release(id)
      const waited = performance.now() - start
      if (waited >= this.o.lockTimeoutMs) {
        const holder = ((await this.conn.send(['GET', busy])) as string | null)?.replace(/:[0-9a-f]{16}$/, '') ?? 'nobody (just released)'
        throw new KonserveError('ERR_LOCK_TIMEOUT', `waited ${Math.round(waited)} ms for the lock ${busy}, held by ${holder}`)
      }
      await new Promise((r) => setTimeout(r, pause + Math.random() * pause))
    }
  })

  private release(id: string): void {
    const h = this.held.get(id)
    if (!h) return
    this.held.delete(id)
    // Commands on one connection run in order: a later SET NX of ours comes after this.
    this.conn.script(UNLOCK, [h.lock], [h.token]).catch(() => {
      // The lease ends it anyway.
    })
    if (this.held.size === 0) this.stopRenewing()
  }

  unlock(keys: Uint8Array[]): void {
    for (const k of keys) this.release(keyId(k))
  }

  private startRenewing(): void {
    if (this.renewer) return
    this.renewer = setInterval(() => {
      for (const { lock, token } of this.held.values()) {
        this.conn.script(RENEW, [lock], [token, String(this.o.lockLeaseMs)]).catch(() => {
          // A write under a lost lock fails by itself (fenced).
        })
      }
    }, Math.max(10, Math.floor(this.o.lockLeaseMs / 3)))
    this.renewer.unref?.()
  }

  private stopRenewing(): void {
    if (this.renewer) clearInterval(this.renewer)
    this.renewer = undefined
  }

  // ---- blobs: chunks staged in a new generation's hash, swapped in by SWAP ----

  blobWriter = redisOp('blobWriter', async (key: Uint8Array, meta: Uint8Array): Promise<BlobSink> => {
    const n = this.names(key)
    const gen = randomBytes(8).toString('hex')
    const staged = n.chunks + gen
    let count = 0
    return stagedBlobWriter(redisOp, this.codec.writeCodec(key), key, meta, {
      stage: async (chunks) => {
        const args: Array<string | Buffer> = []
        for (const c of chunks) args.push(String(count++), u8(c))
        // Staged with an expiry: a writer that dies leaves nothing for long.
        await this.conn.multi([
          ['HSET', staged, ...args],
          ['PEXPIRE', staged, String(Math.max(this.o.lockLeaseMs, 60_000))],
        ])
      },
      publish: async (head, tail) => {
        await this.swap([{ n, token: this.token(key), gen, fields: ['h', u8(head), 't', u8(tail), 'g', gen, 'n', String(count)] }])
      },
      discard: () => {
        this.conn.send(['DEL', staged]).catch(() => {})
      },
    })
  })

  openBlob = redisOp('openBlob', async (key: Uint8Array): Promise<BlobSource | undefined> => {
    const n = this.names(key)
    const f = await this.fields(n)
    if (!f) return undefined
    if (f.x) throw notBinary()
    if (!f.t) {
      // A value written with the raw-bytes serializer reads as a one-piece blob.
      const e = await this.codec.decode.async(concat([f.h!, f.v ?? new Uint8Array(0)]), key)
      if (e.serializer !== RAW_BYTES_ID || e.header.flags !== 0) throw notBinary()
      const value = e.value
      const read = redisOp('blob read', async (o: number, l: number) => Buffer.from(value.subarray(o, Math.min(value.length, o + l))))
      return { size: value.length, meta: { key: e.key, serializer: e.serializer, meta: e.meta, file: n.main }, read, close() {} }
    }
    const length = declaredLength(f.h!, n.main)
    const d = await this.head(f.h!, length, key, n)
    const valueStart = d.header.metaLen + HEADER_LEN
    const layout = decodeBlobTable(f.t, d.header, valueStart)
    const codec = this.codec.readCodec(d.header, key)
    const gen = f.g!.toString()
    let closed = false
    const read = redisOp('blob read', async (offset: number, len: number): Promise<Uint8Array> => {
      if (closed) throw new KonserveError('ERR_INVALID_ARGUMENT', 'the blob is closed')
      const end = Math.min(layout.size, offset + len)
      const parts: Uint8Array[] = []
      for (let pos = offset; pos < end; ) {
        const i = Math.floor(pos / CHUNK_SIZE)
        const plain = await decodeChunk.async(codec, layout, i, await this.chunk(n, gen, i))
        const from = pos - i * CHUNK_SIZE
        const to = Math.min(plain.length, end - i * CHUNK_SIZE)
        parts.push(plain.subarray(from, to))
        pos += to - from
      }
      return Buffer.from(concat(parts))
    })
    return {
      size: layout.size,
      meta: { key: d.key, serializer: d.serializer, meta: d.meta, file: n.main },
      read,
      close: () => {
        closed = true
      },
    }
  })

  // ---- logs: records in a list, where the log stands in the key's hash ----

  append = redisOp('append', async (key: Uint8Array, records: NewRecord[], createMeta: Uint8Array): Promise<LogInfo> => {
    if (records.length === 0) throw new KonserveError('ERR_INVALID_ARGUMENT', 'an append needs at least one record')
    const n = this.names(key)
    const r = await this.headFields(n.main)
    let create = false
    let head: Uint8Array
    let first: number
    let next: number
    let codecHeader: { compressor: number; encryptor: number }
    if (!r[0]) {
      create = true
      const codec = this.codec.writeCodec(key)
      const metaStored = await encodeMetaSegment.async(codec, key, createMeta)
      head = concat([logHeader(codec, metaStored), metaStored])
      first = next = 0
      codecHeader = codec
    } else {
      if (!r[2]) throw notALog()
      head = r[0] as Buffer
      first = num(r[3] as Buffer)!
      next = num(r[2] as Buffer)!
      codecHeader = decodeHeader(head, head.length + LOG_COMMIT_AREA)
    }
    const codec = this.codec.readCodec(codecHeader, key)
    const encoded: Buffer[] = []
    for (const [i, rec] of records.entries()) encoded.push(u8(await encodeRecord.async(codec, next + i, rec.stamp, rec.serializer, rec.bytes)))
    const stamp = records[records.length - 1]!.stamp
    this.dropPrefetched()
    await this.conn.script(APPEND, [n.main, n.list, n.lock], [this.token(key), create ? '1' : '0', u8(head), String(first), String(next + records.length), String(stamp), ...encoded])
    return logInfo(first, next + records.length, stamp)
  })

  openLog = redisOp('openLog', async (key: Uint8Array): Promise<LogCursor | undefined> => {
    const n = this.names(key)
    const f = await this.fields(n)
    if (!f) return undefined
    if (!f.x) throw notALog()
    const d = await this.head(f.h!, f.h!.length + LOG_COMMIT_AREA, key, n)
    const codec = this.codec.readCodec(d.header, key)
    const end = num(f.x)!
    let at = num(f.f)!
    return closableCursor((closed) =>
      redisOp('log read', async (max: number): Promise<LogRecord[] | undefined> => {
        if (closed() || at >= end) return undefined
        const [first, raw] = (await this.conn.script(LOGREAD, [n.main, n.list], [String(at), String(Math.min(Math.max(1, max), end - at))], true)) as [number, Buffer[]]
        if (first < 0) return undefined
        if (first > at) at = first // trimmed meanwhile
        const out: LogRecord[] = []
        for (const bytes of raw) {
          out.push(await readStoredRecord(codec, bytes, at, n.list))
          at++
          if (at >= end) break
        }
        return out.length > 0 ? out : undefined
      }),
    )
  })

  trimLog = redisOp('trimLog', async (key: Uint8Array, keepFrom: number, meta: Uint8Array): Promise<LogInfo> => {
    const n = this.names(key)
    const r = await this.headFields(n.main)
    if (!r[0]) return { firstIndex: 0, lastIndex: -1, lastStamp: 0 }
    if (!r[2]) throw notALog()
    const header = decodeHeader(r[0] as Buffer, (r[0] as Buffer).length + LOG_COMMIT_AREA)
    const codec = this.codec.readCodec(header, key)
    const metaStored = await encodeMetaSegment.async(codec, key, meta)
    const head = concat([logHeader(codec, metaStored), metaStored])
    const first = num(r[3] as Buffer)!
    const next = num(r[2] as Buffer)!
    const stamp = num(r[4] as Buffer) ?? 0
    this.dropPrefetched()
    const drop = Math.min(Math.max(0, keepFrom - first), next - first)
    const kept = next - first - drop
    const [f, x, s] = kept > 0 ? [first + drop, next, stamp] : [0, 0, 0]
    await this.conn.script(TRIM, [n.main, n.list, n.lock], [this.token(key), String(drop), u8(head), String(f), String(x), String(s)])
    return logInfo(f, x, s)
  })

  close = redisOp('close', async (): Promise<void> => {
    for (const id of [...this.held.keys()]) this.release(id)
    this.stopRenewing()
    if (this.o.ownsClient) await this.conn.close()
  })
}

function badKey(n: Names): never {
  throw corrupt('a Redis hash under the konserve prefix without a head: not written by konserve', n.main)
}

