/**
 * The IndexedDB backing (issue 14): konserve's key files (docs/FORMAT.md §4),
 * byte for byte, in an IndexedDB database, so that a store moves between the
 * browser and Node unchanged. Every operation is async only (`asyncOp`).
 *
 * A key file is a `files` record (its head: header and meta segment, or the
 * whole file when small) and, for the rest of its bytes, `segments` records
 * keyed by [name, generation, offset] (./db.ts): a value segment, a blob's
 * chunks and table, a log's runs of records. The file's bytes are the head
 * then the segments in order; `readFileBytes` gives them whole.
 *
 * - Writes commit with `durability: 'strict'` (the option `durability:
 *   'relaxed'` trades that for speed); a multi-key put or delete is one
 *   transaction, all or nothing.
 * - A blob streams in: each sealed chunk (1 MiB) goes to a segment of a new
 *   generation as it comes; the commit writes the head and the table and
 *   drops the old generation in one transaction. Reads go chunk by chunk.
 * - An append writes its records as one segment and the new commit area in
 *   the head, in one transaction; a trim writes a new generation.
 * - Locks are Web Locks, across tabs and workers (./locks.ts).
 * - Everything is computed (encoding, WebCrypto) outside transactions, which
 *   then only compare and write: a write whose file changed meanwhile (by a
 *   writer not holding the key's lock) is retried from the start.
 */
import gensync, { type Handler } from 'gensync'
import type { LogInfo, NewRecord, RawCorrupt, RawEntry, RawListing, RawMeta, RawWrite } from '../../backing/index.js'
import { type Backing, type BlobSink, type BlobSource, type ListCursor, type LogCursor, asyncOp } from '../../backing/seam.js'
import { type CryptoProvider, webCryptoProvider } from '../../codec/aes.js'
import { loadCbor } from '../../lazy/codecs.js'
import { fileName } from '../../codec/xxhash.js'
import { KonserveError } from '../../errors.js'
import { CHUNK_SIZE, ChunkedEncoder, blobHeader, readBlobLayout, readChunk, type BlobLayout, type ChunkSink } from '../../format/blob.js'
import {
  FLAG_CHUNKED,
  HEADER_LEN,
  type DecodeContext,
  type DecodedHead,
  type Header,
  type ReadAt,
  type SegmentCodec,
  decodeHeader,
  decodeKeyFileHead,
  decodeValueSegment,
  encodeKeyFilePartsAsync,
  encodeMetaSegment,
  isLogHeader,
  keyHash,
  keyHashOfFileName,
  segmentCodec,
} from '../../format/file.js'
import { CHECK_INFO, CHECK_LEN, CHECK_SALT_LEN, KEY_CHECK_FILE, REKEY_FILE, decodeKeyCheck, encodeKeyCheck } from '../../format/keycheck.js'
import {
  COMMIT_SLOT,
  type Commit,
  type LogSink,
  LogReader,
  encodeCommitSlot,
  encodeRecords,
  logInfoOf,
  openLogLayout,
  readLogInfo,
  scanLog,
  writeLogWhole,
} from '../../format/log.js'
import { Connection, type Durability, FILES, type FileRecord, SEGMENTS, STORE, genRange, idbError, req } from './db.js'
import { WebLocks } from './locks.js'

/** The serializer id of raw bytes (a blob), as ../../serializers.ts (not imported: it brings msgpackr). */
const RAW_BYTES_ID = 0
/** The CBOR serializer's id: reading a value of it loads cbor-x first (../../lazy/codecs.ts). */
const CBOR_ID = 3
/** A plain file up to this length is one record (its head); a longer one keeps its value segment apart. */
const INLINE_MAX = 16 << 10
/** A rewritten log goes to segments of about this length. */
const SEGMENT_TARGET = 1 << 20
/** How often a read that met a replaced file starts again. */
const ATTEMPTS = 4
/** How often an append or trim whose log another writer (not holding the key's lock) changed meanwhile starts again. */
const WRITE_ATTEMPTS = 16
const KEY_FILE = /^[0-9a-f]{32}\.ksv$/
/** The staging records in `store`: `stage:<gen>` -> { name }. */
const STAGE_PREFIX = 'stage:'

export interface IdbOptions {
  /** 0 (none, the default) or 1 (LZ4), FORMAT.md §4.2. */
  compressor?: number
  /** The encryption key (a string is its UTF-8 bytes): every file is encrypted (FORMAT.md §4.3). */
  encryptionKey?: Uint8Array | string
  /** With a key: a store with plaintext files opens (a migration). */
  acceptPlaintext?: boolean
  /** 'strict' (the default: a write is on disk when it resolves) or 'relaxed' (Chrome's default: faster, may be lost on a power cut). */
  durability?: 'strict' | 'relaxed'
  /** How long a lock waits for another tab or worker (default 60000). */
  lockTimeoutMs?: number
  /** How long opening the database may stay blocked (default 10000). */
  openTimeoutMs?: number
  /** The crypto primitives (default WebCrypto). */
  crypto?: CryptoProvider
}

/** A read met a segment that is gone: the file was replaced meanwhile (the read starts again). */
class Vanished extends Error {}
/** A write found the file changed since it was read (the write starts again). */
class Changed extends Error {}

/** Bytes that own their whole buffer: IndexedDB stores a view's entire buffer, which may hold other (plain) bytes. */
function own(b: Uint8Array): Uint8Array {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer ? b : b.slice()
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

function newGen(): string {
  const r = new Uint8Array(8)
  globalThis.crypto.getRandomValues(r)
  return `${Date.now().toString(36)}.${Array.from(r, (b) => b.toString(16).padStart(2, '0')).join('')}`
}

function isRecord(r: unknown): r is FileRecord {
  const o = r as FileRecord | undefined
  return !!o && typeof o.gen === 'string' && typeof o.size === 'number' && o.head instanceof Uint8Array && o.head.length <= o.size
}

const sameBytes = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((x, i) => x === b[i])

const runG = gensync(function* (g: Handler<unknown>): Handler<unknown> {
  return yield* g
})
const run = <T>(g: Handler<T>): Promise<T> => runG.async(g) as Promise<T>

/** Opens (creating if needed) the IndexedDB store `name` and checks its key (FORMAT.md §4.7). */
export async function openIdbBacking(name: string, options: IdbOptions = {}): Promise<IdbBacking> {
  if (typeof indexedDB === 'undefined') throw new KonserveError('ERR_NOT_SUPPORTED', 'this platform has no IndexedDB')
  const b = new IdbBacking(name, options)
  try {
    await b.conn.open()
    await b.checkStoreKey()
    await b.sweepStaging()
  } catch (err) {
    b.conn.close()
    throw err
  }
  return b
}

export class IdbBacking implements Backing {
  readonly implementation = 'idb'
  readonly lockScope: string
  readonly atomicMultiKey = true
  readonly blocking = false
  /** The connection (tests close it behind the store's back). */
  readonly conn: Connection
  private readonly locks: WebLocks
  private readonly secret: Uint8Array | undefined
  private readonly compressor: number
  private readonly encryptor: number
  private readonly crypto: CryptoProvider
  readonly durability: Durability
  /** Logs whose records were all checked, by name: `gen:seq` of the commit checked. */
  private readonly verified = new Map<string, string>()

  constructor(
    readonly dbName: string,
    private readonly options: IdbOptions,
  ) {
    this.conn = new Connection(dbName, { openTimeoutMs: options.openTimeoutMs })
    const origin = (globalThis as { location?: { origin?: string } }).location?.origin ?? ''
    this.lockScope = `idb:${origin}:${dbName}`
    this.locks = new WebLocks(`konserve:${dbName}:`, options.lockTimeoutMs ?? 60_000)
    const k = options.encryptionKey
    this.secret = typeof k === 'string' ? new TextEncoder().encode(k) : k && k.length > 0 ? Uint8Array.from(k) : undefined
    if (typeof k === 'string' && k.length === 0) this.secret = undefined
    this.compressor = options.compressor ?? 0
    this.encryptor = this.secret ? 1 : 0
    this.crypto = options.crypto ?? webCryptoProvider
    this.durability = options.durability ?? 'strict'
    if (this.durability !== 'strict' && this.durability !== 'relaxed') {
      throw new KonserveError('ERR_INVALID_ARGUMENT', `durability is 'strict' or 'relaxed', not ${String(options.durability)}`)
    }
  }

  // ---- helpers ---------------------------------------------------------------------

  private where(name: string): string {
    return `${this.dbName}/${name}`
  }

  /** An error of `what` on file `name`: a KonserveError keeps its code and gains the file. */
  private fail(err: unknown, what: string, name: string): unknown {
    if (err instanceof Vanished || err instanceof Changed) return err
    if (err instanceof KonserveError) {
      if (!err.file) err.file = this.where(name)
      return err
    }
    return idbError(err, what, this.where(name))
  }

  private ctx(key?: Uint8Array, name?: string): DecodeContext {
    return {
      secret: this.secret,
      crypto: this.crypto,
      acceptPlaintext: this.options.acceptPlaintext === true,
      keyHash: key ? keyHash(key) : name ? keyHashOfFileName(name) : undefined,
    }
  }
  private writeCodec(key: Uint8Array): SegmentCodec {
    return segmentCodec(this.compressor, this.encryptor, this.ctx(key))
  }
  private readCodec(header: { compressor: number; encryptor: number }, key: Uint8Array): SegmentCodec {
    return segmentCodec(header.compressor, header.encryptor, this.ctx(key))
  }

  private tx<T>(stores: string[], mode: IDBTransactionMode, body: (tx: IDBTransaction) => Promise<T>, what: string, name: string, durability?: Durability): Promise<T> {
    return this.conn.run(stores, mode, durability ?? this.durability, body, what, this.where(name))
  }

  private async load(name: string): Promise<FileRecord | undefined> {
    const r = await this.tx([FILES], 'readonly', (t) => req(t.objectStore(FILES).get(name)), 'cannot read the key', name)
    if (r === undefined) return undefined
    if (!isRecord(r)) throw new KonserveError('ERR_CORRUPT', 'the key record is not a konserve file record', { file: this.where(name) })
    return r
  }

  /**
   * Runs `fn` on the file record of `name` (undefined when missing); when a
   * segment it reads is gone because the file was replaced meanwhile, starts
   * again on the new record. A segment missing from an unchanged file is ERR_CORRUPT.
   */
  private async withFile<T>(name: string, fn: (rec: FileRecord | undefined) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const rec = await this.load(name)
      try {
        return await fn(rec)
      } catch (err) {
        if (!(err instanceof Vanished)) throw this.fail(err, 'cannot read the key', name)
        const now = await this.load(name)
        if (now && rec && now.gen === rec.gen) {
          throw new KonserveError('ERR_CORRUPT', 'a segment of the key file is missing', { file: this.where(name) })
        }
        if (attempt >= ATTEMPTS) throw new KonserveError('ERR_IO', 'the key was replaced again and again while it was read', { file: this.where(name) })
      }
    }
  }

  /** Bytes `pos .. pos + length` of the file (fewer only at its end); Vanished if a segment is gone. */
  private async readBytes(name: string, rec: FileRecord, pos: number, length: number): Promise<Uint8Array> {
    const end = Math.min(rec.size, pos + length)
    if (pos >= end) return new Uint8Array(0)
    if (end <= rec.head.length) return rec.head.subarray(pos, end)
    const parts: Uint8Array[] = []
    let at = pos
    if (pos < rec.head.length) {
      parts.push(rec.head.subarray(pos))
      at = rec.head.length
    }
    const found = await this.tx(
      [SEGMENTS],
      'readonly',
      async (t) => {
        const s = t.objectStore(SEGMENTS)
        const exact = (await req(s.get([name, rec.gen, at]))) as Uint8Array | undefined
        if (exact instanceof Uint8Array && exact.length >= end - at) return [{ off: at, bytes: exact }]
        // The segment that holds `at` starts at or before it.
        const c = await req(s.openCursor(IDBKeyRange.bound([name, rec.gen], [name, rec.gen, at]), 'prev'))
        if (!c) return []
        const first = (c.primaryKey as [string, string, number])[2]
        const range = IDBKeyRange.bound([name, rec.gen, first], [name, rec.gen, end], false, true)
        const [keys, values] = await Promise.all([req(s.getAllKeys(range)), req(s.getAll(range))])
        return keys.map((k, i) => ({ off: (k as [string, string, number])[2], bytes: values[i] as Uint8Array }))
      },
      'cannot read the key',
      name,
    )
    let next = found[0]?.off ?? -1
    if (next > at || next < 0) throw new Vanished()
    for (const { off, bytes } of found) {
      if (off !== next || !(bytes instanceof Uint8Array)) throw new Vanished()
      next = off + bytes.length
      const from = Math.max(at, off) - off
      const to = Math.min(end, next) - off
      if (to > from) parts.push(bytes.subarray(from, to))
    }
    if (next < end) throw new Vanished()
    return parts.length === 1 ? parts[0]! : concat(parts)
  }

  private readonly readOp = asyncOp('idb', (name: string, rec: FileRecord, pos: number, length: number) => this.readBytes(name, rec, pos, length))

  /** The file as a format/ `ReadAt`. */
  private reader(name: string, rec: FileRecord): ReadAt {
    return (pos, length) => this.readOp(name, rec, pos, length)
  }

  /** The decoded head of `rec`; with `key`, checks it holds that key. */
  private async head(name: string, rec: FileRecord, key?: Uint8Array): Promise<DecodedHead> {
    const head = await run(decodeKeyFileHead(rec.head, rec.size, this.ctx(key, name)))
    if (key ? !sameBytes(head.key, key) : fileName(head.key) !== name) {
      throw new KonserveError('ERR_KEY_MISMATCH', key ? 'the key file holds another key than the one asked for' : "the key file holds a key whose name is another file's", {
        file: this.where(name),
      })
    }
    return head
  }

  private async metaOf(name: string, rec: FileRecord, key?: Uint8Array): Promise<RawMeta> {
    const head = await this.head(name, rec, key)
    const m: RawMeta = { key: head.key, serializer: head.header.serializer, meta: head.meta }
    if (isLogHeader(head.header)) {
      const codec = this.readCodec(head.header, head.key)
      m.log = await run(readLogInfo(this.reader(name, rec), head.header, rec.head, codec, rec.size))
    }
    return m
  }

  // ---- reads -----------------------------------------------------------------------

  readonly get = asyncOp('idb', async (key: Uint8Array): Promise<RawEntry | undefined> => {
    const e = await this.getEntry(key)
    if (e?.serializer === CBOR_ID) await loadCbor()
    return e
  })

  private async getEntry(key: Uint8Array): Promise<RawEntry | undefined> {
    const name = fileName(key)
    return this.withFile(name, async (rec) => {
      if (!rec) return undefined
      const { header, meta } = await this.head(name, rec, key)
      const codec = this.readCodec(header, key)
      const read = this.reader(name, rec)
      const valueStart = HEADER_LEN + header.metaLen
      if (isLogHeader(header)) {
        const log = await run(readLogInfo(read, header, rec.head, codec, rec.size))
        return { serializer: header.serializer, meta, value: new Uint8Array(0), log }
      }
      if (header.flags === FLAG_CHUNKED) {
        const layout = await run(readBlobLayout(read, header, valueStart))
        const value = new Uint8Array(layout.size)
        for (let i = 0; i < layout.chunks.length; i++) value.set(await run(readChunk(read, codec, layout, i)), i * CHUNK_SIZE)
        return { serializer: header.serializer, meta, value }
      }
      const stored = await this.readBytes(name, rec, valueStart, rec.size - valueStart)
      return { serializer: header.serializer, meta, value: await run(decodeValueSegment(codec, header, stored)) }
    })
  }

  readonly getMeta = asyncOp('idb', async (key: Uint8Array): Promise<RawMeta | undefined> => {
    const name = fileName(key)
    return this.withFile(name, async (rec) => rec && this.metaOf(name, rec, key))
  })

  readonly exists = asyncOp('idb', async (key: Uint8Array): Promise<boolean> => {
    const name = fileName(key)
    const n = await this.tx([FILES], 'readonly', (t) => req(t.objectStore(FILES).count(name)), 'cannot look up the key', name)
    return n > 0
  })

  openList(): ListCursor {
    let after: string | undefined
    let done = false
    const next = asyncOp('idb', async (max: number): Promise<RawListing | undefined> => {
      const n = Math.max(1, Math.floor(max) || 1)
      const out: RawListing = { entries: [], corrupt: [] }
      while (!done && out.entries.length + out.corrupt.length === 0) {
        const range = after === undefined ? undefined : IDBKeyRange.lowerBound(after, true)
        const [names, recs] = await this.tx(
          [FILES],
          'readonly',
          (t) => {
            const f = t.objectStore(FILES)
            return Promise.all([req(f.getAllKeys(range, n)), req(f.getAll(range, n))])
          },
          'cannot list the store',
          '',
        )
        if (names.length < n) done = true
        if (names.length === 0) break
        after = names[names.length - 1] as string
        for (const [i, k] of names.entries()) {
          const name = String(k)
          if (!KEY_FILE.test(name)) continue
          try {
            const first = recs[i]
            if (!isRecord(first)) throw new KonserveError('ERR_CORRUPT', 'the key record is not a konserve file record')
            let m: RawMeta | undefined
            try {
              m = await this.metaOf(name, first)
            } catch (err) {
              if (!(err instanceof Vanished)) throw err
              // Replaced or deleted since the batch was read: looked up again; gone, not listed.
              m = await this.withFile(name, async (rec) => rec && this.metaOf(name, rec))
            }
            if (m) out.entries.push(m)
          } catch (err) {
            const e = this.fail(err, 'cannot read the key', name) as KonserveError
            out.corrupt.push({ code: e.code, file: this.where(name), message: e.message } satisfies RawCorrupt)
          }
        }
      }
      return out.entries.length + out.corrupt.length > 0 ? out : undefined
    })
    return {
      next,
      close: () => {
        done = true
      },
    }
  }

  // ---- writes ----------------------------------------------------------------------

  readonly put = asyncOp('idb', async (writes: RawWrite[]): Promise<void> => {
    if (writes.length === 0) return
    const files = await Promise.all(
      writes.map((w) =>
        encodeKeyFilePartsAsync({
          compressor: this.compressor,
          encryptor: this.encryptor,
          secret: this.secret,
          crypto: this.crypto,
          keyCke: w.key,
          serializer: w.serializer,
          meta: w.meta,
          value: w.value,
        }),
      ),
    )
    const names = writes.map((w) => fileName(w.key))
    await this.tx(
      [FILES, SEGMENTS],
      'readwrite',
      async (t) => {
        const f = t.objectStore(FILES)
        const s = t.objectStore(SEGMENTS)
        for (const [i, name] of names.entries()) {
          const old = await req(f.get(name))
          if (isRecord(old)) s.delete(genRange(name, old.gen))
          const { head, value } = files[i]!
          const gen = newGen()
          const size = head.length + value.length
          if (value.length <= INLINE_MAX) {
            f.put({ gen, size, head: concat([head, value]) } satisfies FileRecord, name)
          } else {
            f.put({ gen, size, head: own(head) } satisfies FileRecord, name)
            s.put(own(value), [name, gen, head.length])
          }
        }
      },
      'cannot write the key',
      names[0]!,
    )
  })

  readonly delete = asyncOp('idb', async (keys: Uint8Array[]): Promise<boolean[]> => {
    if (keys.length === 0) return []
    const names = keys.map(fileName)
    return this.tx(
      [FILES, SEGMENTS],
      'readwrite',
      async (t) => {
        const f = t.objectStore(FILES)
        const s = t.objectStore(SEGMENTS)
        const existed: boolean[] = []
        for (const name of names) {
          const old = await req(f.get(name))
          existed.push(old !== undefined)
          if (old === undefined) continue
          f.delete(name)
          if (isRecord(old)) s.delete(genRange(name, old.gen))
        }
        return existed
      },
      'cannot delete the key',
      names[0]!,
    )
  })

  // ---- locks -----------------------------------------------------------------------

  readonly lock = asyncOp('idb', async (keys: Uint8Array[]): Promise<void> => {
    await this.locks.lock(keys.map(fileName))
  })

  unlock(keys: Uint8Array[]): void {
    this.locks.unlock(keys.map(fileName))
  }

  // ---- staged generations (blobs, log rewrites) --------------------------------------

  /**
   * A new generation of `name`'s file, written segment by segment, then
   * swapped in by `commit` in one transaction. While it is written, a
   * `stage:<gen>` record names it and a Web Lock of the same name is held: a
   * stage whose lock is free belongs to a tab that died, and the next open
   * removes it.
   */
  private async stage(name: string): Promise<Stage> {
    const gen = newGen()
    const lockName = STAGE_PREFIX + gen
    let release: (() => void) | undefined
    const locks = (globalThis as { navigator?: { locks?: LockManager } }).navigator?.locks
    if (locks) {
      release = await new Promise<() => void>((resolve, reject) => {
        locks.request(`konserve:${this.dbName}:${lockName}`, () => new Promise<void>((done) => resolve(done))).catch(reject)
      })
    }
    try {
      await this.tx([STORE], 'readwrite', async (t) => void t.objectStore(STORE).put({ name }, lockName), 'cannot start writing the key', name, 'relaxed')
    } catch (err) {
      release?.()
      throw err
    }
    return new Stage(this, name, gen, () => release?.())
  }

  /** Writes a segment of a staged generation (relaxed: the commit's strict transaction makes it durable). */
  putSegment(name: string, gen: string, offset: number, bytes: Uint8Array): Promise<void> {
    return this.tx([SEGMENTS], 'readwrite', async (t) => void t.objectStore(SEGMENTS).put(own(bytes), [name, gen, offset]), 'cannot write the key', name, 'relaxed')
  }

  /**
   * Swaps the staged generation in: head, last segments, the record; the old
   * generation goes. `expectGen`: the generation the file must still have
   * (null: the key must still be missing), else Changed.
   */
  commitStage(name: string, gen: string, record: FileRecord, last: Array<[number, Uint8Array]>, expectGen?: string | null): Promise<void> {
    return this.tx(
      [FILES, SEGMENTS, STORE],
      'readwrite',
      async (t) => {
        const f = t.objectStore(FILES)
        const s = t.objectStore(SEGMENTS)
        const old = await req(f.get(name))
        const oldGen = isRecord(old) ? old.gen : old === undefined ? null : ''
        if (expectGen !== undefined && oldGen !== expectGen) throw new Changed()
        if (isRecord(old)) s.delete(genRange(name, old.gen))
        for (const [off, bytes] of last) s.put(own(bytes), [name, gen, off])
        f.put({ gen, size: record.size, head: own(record.head) } satisfies FileRecord, name)
        t.objectStore(STORE).delete(STAGE_PREFIX + gen)
      },
      'cannot write the key',
      name,
    )
  }

  /** Drops a staged generation (best effort: the sweep on open takes what is left). */
  async dropStage(name: string, gen: string): Promise<void> {
    await this.tx(
      [SEGMENTS, STORE],
      'readwrite',
      async (t) => {
        t.objectStore(SEGMENTS).delete(genRange(name, gen))
        t.objectStore(STORE).delete(STAGE_PREFIX + gen)
      },
      'cannot drop a staged write',
      name,
      'relaxed',
    )
  }

  /** Removes the stages of writers that died (their lock is free). */
  async sweepStaging(): Promise<void> {
    const locks = (globalThis as { navigator?: { locks?: LockManager } }).navigator?.locks
    if (!locks) return
    const range = IDBKeyRange.bound(STAGE_PREFIX, `${STAGE_PREFIX}\uffff`)
    const [keys, values] = await this.tx(
      [STORE],
      'readonly',
      (t) => Promise.all([req(t.objectStore(STORE).getAllKeys(range)), req(t.objectStore(STORE).getAll(range))]),
      'cannot list staged writes',
      '',
    )
    for (const [i, k] of keys.entries()) {
      const lockName = String(k)
      const name = (values[i] as { name?: string } | undefined)?.name
      if (typeof name !== 'string') continue
      let free = false
      await locks.request(`konserve:${this.dbName}:${lockName}`, { ifAvailable: true }, async (l) => {
        free = l !== null
      })
      if (free) await this.dropStage(name, lockName.slice(STAGE_PREFIX.length))
    }
  }

  // ---- blobs -----------------------------------------------------------------------

  readonly blobWriter = asyncOp('idb', async (key: Uint8Array, meta: Uint8Array): Promise<BlobSink> => {
    const name = fileName(key)
    const codec = this.writeCodec(key)
    const metaStored = await run(encodeMetaSegment(codec, key, meta))
    const stage = await this.stage(name)
    const enc = new ChunkedEncoder(codec)
    const sink: ChunkSink = (stored) => stage.writeOp(stored)
    stage.at = HEADER_LEN + metaStored.length
    let state: 'open' | 'done' = 'open'
    const guard = async (f: () => Promise<void>) => {
      if (state !== 'open') throw new KonserveError('ERR_INVALID_ARGUMENT', 'the blob writer is closed')
      try {
        await f()
      } catch (err) {
        state = 'done'
        stage.abort()
        throw this.fail(err, 'cannot write the blob', name)
      }
    }
    return {
      write: asyncOp('idb', (bytes: Uint8Array) => guard(() => run(enc.write(bytes, sink)))),
      commit: asyncOp('idb', () =>
        guard(async () => {
          const tail = await run(enc.finish(sink))
          const header = blobHeader(codec, metaStored, enc.valueLength, tail)
          const head = concat([header, metaStored])
          await stage.commit({ gen: stage.gen, size: stage.at + tail.length, head }, [[stage.at, tail]])
          state = 'done'
        }),
      ),
      abort: () => {
        if (state !== 'open') return
        state = 'done'
        stage.abort()
      },
    }
  })

  readonly openBlob = asyncOp('idb', async (key: Uint8Array): Promise<BlobSource | undefined> => {
    const name = fileName(key)
    return this.withFile(name, async (rec) => {
      if (!rec) return undefined
      const head = await this.head(name, rec, key)
      const { header } = head
      if (header.serializer !== RAW_BYTES_ID || isLogHeader(header)) {
        const what = isLogHeader(header) ? 'an append log' : `a value of serializer ${header.serializer}`
        throw new KonserveError('ERR_NOT_BINARY', `the key holds ${what}, not a blob`, { file: this.where(name) })
      }
      const meta: RawMeta = { key: head.key, serializer: header.serializer, meta: head.meta }
      const codec = this.readCodec(header, key)
      const valueStart = HEADER_LEN + header.metaLen
      const read = this.reader(name, rec)
      if (header.flags !== FLAG_CHUNKED) {
        // A blob written whole (flags 0): served from its decoded value.
        const stored = await this.readBytes(name, rec, valueStart, rec.size - valueStart)
        const value = await run(decodeValueSegment(codec, header, stored))
        return blobSource(meta, { size: value.length, chunks: [] }, async () => value)
      }
      const layout = await run(readBlobLayout(read, header, valueStart))
      return blobSource(meta, layout, async (i) => {
        try {
          return await run(readChunk(read, codec, layout, i))
        } catch (err) {
          if (err instanceof Vanished) throw new KonserveError('ERR_IO', 'the blob was replaced or deleted while it was read', { file: this.where(name) })
          throw this.fail(err, 'cannot read the blob', name)
        }
      })
    })
  })

  // ---- append logs -------------------------------------------------------------------

  private async openLogFile(name: string, rec: FileRecord, key: Uint8Array) {
    const head = await this.head(name, rec, key)
    if (!isLogHeader(head.header)) throw new KonserveError('ERR_NOT_A_LOG', 'the key holds something other than an append log', { file: this.where(name) })
    const codec = this.readCodec(head.header, key)
    const read = this.reader(name, rec)
    const layout = await run(openLogLayout(read, head.header, rec.head, codec, rec.size))
    return { head, codec, read, layout }
  }

  /** Writes a whole log (new, trimmed, or migrated from the earlier layout) as a new generation. */
  private async writeWholeLog(
    name: string,
    codec: SegmentCodec,
    metaStored: Uint8Array,
    src: { read: ReadAt; layout: Awaited<ReturnType<IdbBacking['openLogFile']>>['layout']; fileLength: number } | undefined,
    keepFrom: number,
    extra: NewRecord[],
    expectGen: string | null,
  ): Promise<{ info: LogInfo; commit: Commit }> {
    const stage = await this.stage(name)
    try {
      const sink = stage.logSink()
      const written = await run(writeLogWhole(sink, codec, metaStored, src, keepFrom, extra))
      await run(sink.flush())
      await stage.commit({ gen: stage.gen, size: stage.at, head: sink.head() }, [], expectGen)
      return written
    } catch (err) {
      stage.abort()
      throw err
    }
  }

  readonly append = asyncOp('idb', async (key: Uint8Array, records: NewRecord[], createMeta: Uint8Array): Promise<LogInfo> => {
    if (!Array.isArray(records) || records.length === 0) throw new KonserveError('ERR_INVALID_ARGUMENT', 'an append takes at least one record')
    const name = fileName(key)
    const last = records[records.length - 1]!
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.withFile(name, async (rec) => {
          if (!rec) {
            const codec = this.writeCodec(key)
            const metaStored = await run(encodeMetaSegment(codec, key, createMeta))
            const w = await this.writeWholeLog(name, codec, metaStored, undefined, 0, records, null)
            this.verified.set(name, `${w.commit.seq}`)
            return w.info
          }
          const { head, codec, read, layout } = await this.openLogFile(name, rec, key)
          const metaStored = rec.head.subarray(HEADER_LEN, HEADER_LEN + head.header.metaLen)
          const commit = layout.commit
          if (!commit) {
            // The earlier layout: rewritten in the current one, the new records after the old.
            return (await this.writeWholeLog(name, codec, metaStored, { read, layout, fileLength: rec.size }, 0, records, rec.gen)).info
          }
          // Every record is checked the first time this store appends to the log; then the first and the last.
          const at =
            this.verified.get(name) === `${rec.gen}:${commit.seq}`
              ? await run(readLogInfo(read, head.header, rec.head, codec, rec.size))
              : logInfoOf(await run(scanLog(read, layout, rec.size)))
          const index = at.lastIndex + 1
          const batch = await run(encodeRecords(codec, index, records))
          const next: Commit = {
            seq: commit.seq + 1,
            count: commit.count + records.length,
            end: commit.end + batch.length,
            lastChecksum: new DataView(batch.buffer, batch.byteOffset, batch.byteLength).getBigUint64(batch.length - 12, true),
          }
          const slot = await run(encodeCommitSlot(next, codec, metaStored))
          const newHead = rec.head.slice()
          newHead.set(slot, layout.areaAt)
          newHead.set(slot, layout.areaAt + COMMIT_SLOT)
          this.verified.delete(name)
          await this.tx(
            [FILES, SEGMENTS],
            'readwrite',
            async (t) => {
              const f = t.objectStore(FILES)
              const s = t.objectStore(SEGMENTS)
              const now = await req(f.get(name))
              if (!isRecord(now) || now.gen !== rec.gen || now.size !== rec.size) throw new Changed()
              // Bytes past the acknowledged records (none unless imported so): cut, as a file store does.
              if (rec.size > commit.end) s.delete(IDBKeyRange.bound([name, rec.gen, commit.end], [name, rec.gen, []]))
              s.put(own(batch), [name, rec.gen, commit.end])
              f.put({ gen: rec.gen, size: next.end, head: newHead } satisfies FileRecord, name)
            },
            'cannot append to the log',
            name,
          )
          this.verified.set(name, `${rec.gen}:${next.seq}`)
          const firstIndex = at.lastIndex >= 0 ? at.firstIndex : index
          return { firstIndex, lastIndex: index + records.length - 1, lastStamp: last.stamp }
        })
      } catch (err) {
        if (!(err instanceof Changed)) throw this.fail(err, 'cannot append to the log', name)
        if (attempt >= WRITE_ATTEMPTS) throw new KonserveError('ERR_IO', 'the log was changed again and again by other writers during the append', { file: this.where(name) })
      }
    }
  })

  readonly openLog = asyncOp('idb', async (key: Uint8Array): Promise<LogCursor | undefined> => {
    const name = fileName(key)
    return this.withFile(name, async (rec) => {
      if (!rec) return undefined
      const { codec, read, layout } = await this.openLogFile(name, rec, key)
      const reader = new LogReader(read, codec, layout, rec.size)
      return {
        next: asyncOp('idb', async (max: number) => {
          try {
            const records = await run(reader.next(max))
            // cbor-x loads (in the browser build) before a CBOR record reaches its decoder.
            if (records?.some((r) => r.serializer === CBOR_ID)) await loadCbor()
            return records
          } catch (err) {
            if (err instanceof Vanished) throw new KonserveError('ERR_IO', 'the log was rewritten or deleted while it was read', { file: this.where(name) })
            throw this.fail(err, 'cannot read the log', name)
          }
        }),
        close: () => reader.close(),
      }
    })
  })

  readonly trimLog = asyncOp('idb', async (key: Uint8Array, keepFrom: number, meta: Uint8Array): Promise<LogInfo> => {
    const name = fileName(key)
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.withFile(name, async (rec) => {
          if (!rec) return { firstIndex: 0, lastIndex: -1, lastStamp: 0 }
          const { codec, read, layout } = await this.openLogFile(name, rec, key)
          // The records are copied as they are, so the new file keeps the old one's codec.
          const metaStored = await run(encodeMetaSegment(codec, key, meta))
          const w = await this.writeWholeLog(name, codec, metaStored, { read, layout, fileLength: rec.size }, keepFrom, [], rec.gen)
          return w.info
        })
      } catch (err) {
        if (!(err instanceof Changed)) throw this.fail(err, 'cannot trim the log', name)
        if (attempt >= WRITE_ATTEMPTS) throw new KonserveError('ERR_IO', 'the log was changed again and again by other writers during the trim', { file: this.where(name) })
      }
    }
  })

  // ---- the store -----------------------------------------------------------------------

  readonly close = asyncOp('idb', async (): Promise<void> => {
    this.locks.releaseAll()
    this.conn.close()
  })

  /** The key check (FORMAT.md §4.7), as a file store's open does it; its file is the `store` record `.konserve.keycheck`. */
  async checkStoreKey(): Promise<void> {
    const [check, rekey] = await this.tx(
      [STORE],
      'readonly',
      (t) => Promise.all([req(t.objectStore(STORE).get(KEY_CHECK_FILE)), req(t.objectStore(STORE).get(REKEY_FILE))]),
      'cannot read the key check',
      KEY_CHECK_FILE,
    )
    const file = this.where(KEY_CHECK_FILE)
    if (rekey !== undefined) throw new KonserveError('ERR_DECRYPT', 'the store has an unfinished rekey', { file: this.where(REKEY_FILE) })
    if (check !== undefined) {
      if (!(check instanceof Uint8Array)) throw new KonserveError('ERR_CORRUPT', 'the key check record is not bytes', { file })
      const c = decodeKeyCheck(check)
      if (!this.secret) throw new KonserveError('ERR_DECRYPT', 'the store is encrypted: open it with its encryption key', { file })
      const other = await this.crypto.async.hkdfSha256(this.secret, c.salt, CHECK_INFO, CHECK_LEN)
      let diff = 0
      for (let i = 0; i < CHECK_LEN; i++) diff |= other[i]! ^ c.check[i]!
      if (diff !== 0) throw new KonserveError('ERR_DECRYPT', 'wrong encryption key', { file })
      return
    }
    if (!this.secret) return
    // No key check, a key: the first encrypted file must decrypt; a plaintext one refuses (unless migrating).
    const names = await this.tx([FILES], 'readonly', (t) => req(t.objectStore(FILES).getAllKeys()), 'cannot list the store', '')
    const decided = names.map(String).filter((n) => KEY_FILE.test(n))
    for (const name of decided) {
      const rec = await this.load(name).catch(() => undefined)
      if (!rec) continue
      let header: Header
      try {
        header = decodeHeader(rec.head, rec.size)
      } catch {
        continue // damaged: left for the reads that meet it
      }
      if (header.encryptor === 0) {
        if (this.options.acceptPlaintext) continue
        throw new KonserveError('ERR_DECRYPT', 'the store holds plaintext files and was opened with an encryption key (open with acceptPlaintext to migrate)', {
          file: this.where(name),
        })
      }
      try {
        await run(decodeKeyFileHead(rec.head, rec.size, this.ctx(undefined, name)))
        break
      } catch (err) {
        if ((err as KonserveError).code === 'ERR_DECRYPT') throw new KonserveError('ERR_DECRYPT', 'wrong encryption key', { file: this.where(name) })
      }
    }
    const salt = await this.crypto.async.randomBytes(CHECK_SALT_LEN)
    const bytes = encodeKeyCheck({ salt, check: await this.crypto.async.hkdfSha256(this.secret, salt, CHECK_INFO, CHECK_LEN) })
    await this.tx([STORE], 'readwrite', async (t) => void t.objectStore(STORE).put(bytes, KEY_CHECK_FILE), 'cannot write the key check', KEY_CHECK_FILE)
  }

  /** The whole bytes of the key file `name` (`<32 hex>.ksv`): what a file store holds in that file. */
  async readFileBytes(name: string): Promise<Uint8Array | undefined> {
    return this.withFile(name, async (rec) => rec && this.readBytes(name, rec, 0, rec.size))
  }
}

/** A staged generation of one file (see IdbBacking.stage). */
class Stage {
  /** The offset of the next segment. */
  at = 0
  private done = false

  constructor(
    private readonly b: IdbBacking,
    readonly name: string,
    readonly gen: string,
    private readonly release: () => void,
  ) {}

  /** Writes the next segment (a gensync op, to serve as a format/ sink). */
  readonly writeOp = asyncOp('idb', async (bytes: Uint8Array) => {
    const at = this.at
    this.at += bytes.length
    await this.b.putSegment(this.name, this.gen, at, bytes)
  })

  async commit(record: FileRecord, last: Array<[number, Uint8Array]>, expectGen?: string | null): Promise<void> {
    await this.b.commitStage(this.name, this.gen, record, last, expectGen)
    this.done = true
    this.release()
  }

  abort(): void {
    if (this.done) return
    this.done = true
    this.b.dropStage(this.name, this.gen).then(this.release, this.release)
  }

  /**
   * A format/ LogSink into this stage: the first write is the head (header,
   * meta segment, commit area; `writeAt` patches it), the rest is gathered
   * into segments of about 1 MiB.
   */
  logSink(): LogSink & { flush(): Handler<void>; head(): Uint8Array } {
    let head: Uint8Array | undefined
    let parts: Uint8Array[] = []
    let gathered = 0
    const self = this
    function* flush(): Handler<void> {
      if (gathered === 0) return
      const bytes = concat(parts)
      parts = []
      gathered = 0
      yield* self.writeOp(bytes)
    }
    return {
      *write(bytes) {
        if (!head) {
          head = bytes.slice()
          self.at = head.length
          return
        }
        parts.push(bytes.slice())
        gathered += bytes.length
        if (gathered >= SEGMENT_TARGET) yield* flush()
      },
      // eslint-disable-next-line require-yield
      *writeAt(bytes, pos) {
        if (!head || pos + bytes.length > head.length) throw new KonserveError('ERR_INVALID_ARGUMENT', 'a log rewrite patches only its head')
        head.set(bytes, pos)
      },
      flush,
      head: () => {
        if (!head) throw new KonserveError('ERR_INVALID_ARGUMENT', 'the log rewrite wrote nothing')
        return head
      },
    }
  }
}

/** A BlobSource over a blob's chunks (`chunk(i)` gives chunk i's plain bytes; the last one read is kept). */
function blobSource(meta: RawMeta, layout: BlobLayout, chunk: (i: number) => Promise<Uint8Array>): BlobSource {
  let cached: { i: number; bytes: Uint8Array } | undefined
  let closed = false
  // No chunks: a blob written whole, its value is "chunk" 0.
  const whole = layout.chunks.length === 0
  const get = async (i: number) => {
    if (cached?.i !== i) cached = { i, bytes: await chunk(i) }
    return cached.bytes
  }
  return {
    size: layout.size,
    meta,
    read: asyncOp('idb', async (offset: number, length: number): Promise<Uint8Array> => {
      if (closed) throw new KonserveError('ERR_INVALID_ARGUMENT', 'the blob is closed')
      if (whole) {
        const v = await get(0)
        return v.slice(Math.min(offset, v.length), Math.min(v.length, offset + length))
      }
      const end = Math.min(layout.size, offset + length)
      if (offset >= end) return new Uint8Array(0)
      const out = new Uint8Array(end - offset)
      for (let pos = offset; pos < end; ) {
        const i = Math.floor(pos / CHUNK_SIZE)
        const bytes = await get(i)
        const from = pos - i * CHUNK_SIZE
        const n = Math.min(bytes.length - from, end - pos)
        out.set(bytes.subarray(from, from + n), pos - offset)
        pos += n
      }
      return out
    }),
    close: () => {
      closed = true
      cached = undefined
    },
  }
}
