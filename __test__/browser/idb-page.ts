/**
 * The page side of __test__/idb.spec.ts: runs in Chromium (bundled by
 * ./harness.ts), drives the IndexedDB backing through its Backing interface
 * and reports to ava as JSON (bytes as hex). Each function is one step a
 * test asks for; the assertions are on the ava side.
 */
import type { Backing } from '../../ts/backing/seam.js'
import { pattern, patternByte, seededCrypto } from './shared.js'
import { fileName, xxh3_64 } from '../../ts/codec/xxhash.js'
import { FILES, SEGMENTS, STORE } from '../../ts/backends/idb/db.js'
import { type IdbBacking, type IdbOptions, openIdbBacking } from '../../ts/backends/idb/index.js'

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('')
const unhex = (s: string) => new Uint8Array((s.match(/../g) ?? []).map((h) => parseInt(h, 16)))
const utf8 = (s: string) => new TextEncoder().encode(s)

const stores = new Map<number, IdbBacking>()
let nextHandle = 1
const store = (h: number) => {
  const b = stores.get(h)
  if (!b) throw new Error(`no store ${h}`)
  return b
}

/** Transactions opened since the page loaded: mode, the durability asked for, the one the transaction has. */
const transactions: Array<{ mode: string; asked?: string; has?: string }> = []
const origTransaction = IDBDatabase.prototype.transaction
IDBDatabase.prototype.transaction = function (this: IDBDatabase, names: string | string[], mode?: IDBTransactionMode, options?: IDBTransactionOptions) {
  const tx = origTransaction.call(this, names, mode, options)
  transactions.push({ mode: mode ?? 'readonly', asked: options?.durability, has: (tx as { durability?: string }).durability })
  return tx
} as typeof IDBDatabase.prototype.transaction

/** Set by failNthPut: IDBObjectStore.put throws on that call (counted from the call to failNthPut). */
let failPutAt = -1
const origPut = IDBObjectStore.prototype.put
IDBObjectStore.prototype.put = function (this: IDBObjectStore, value: unknown, key?: IDBValidKey) {
  if (failPutAt >= 0 && failPutAt-- === 0) throw new DOMException('injected failure', 'DataError')
  return origPut.call(this, value, key)
}

interface Opts extends Omit<IdbOptions, 'crypto'> {
  seed?: number
}

async function errorOf(p: Promise<unknown>): Promise<{ code?: string; message: string } | undefined> {
  try {
    await p
    return undefined
  } catch (err) {
    return { code: (err as { code?: string }).code, message: String((err as Error).message) }
  }
}

const api = {
  async open(db: string, opts: Opts = {}) {
    const { seed, ...rest } = opts
    const b = await openIdbBacking(db, { ...rest, crypto: seed === undefined ? undefined : seededCrypto(seed) })
    const h = nextHandle++
    stores.set(h, b)
    return h
  },
  openError: (db: string, opts: Opts = {}) => errorOf(api.open(db, opts)),
  async close(h: number) {
    await store(h).close!.async()
    stores.delete(h)
  },
  async put(h: number, writes: Array<{ key: string; serializer: number; meta: string; value: string }>) {
    await store(h).put.async(writes.map((w) => ({ key: unhex(w.key), serializer: w.serializer, meta: unhex(w.meta), value: unhex(w.value) })))
  },
  putError: (h: number, writes: Array<{ key: string; serializer: number; meta: string; value: string }>) => errorOf(api.put(h, writes)),
  async get(h: number, key: string) {
    const e = await store(h).get.async(unhex(key))
    return e && { serializer: e.serializer, meta: hex(e.meta), value: hex(e.value), ...(e.log ? { log: e.log } : {}) }
  },
  getError: (h: number, key: string) => errorOf(api.get(h, key)),
  async getMeta(h: number, key: string) {
    const m = await store(h).getMeta.async(unhex(key))
    return m && { key: hex(m.key), serializer: m.serializer, meta: hex(m.meta), ...(m.log ? { log: m.log } : {}) }
  },
  exists: (h: number, key: string) => store(h).exists.async(unhex(key)),
  del: (h: number, keys: string[]) => store(h).delete.async(keys.map(unhex)),
  async list(h: number, batch: number) {
    const c = store(h).openList()
    const batches: number[] = []
    const entries: Array<{ key: string; meta: string; log?: unknown }> = []
    const corrupt: Array<{ code: string; file: string }> = []
    for (let b = await c.next.async(batch); b; b = await c.next.async(batch)) {
      batches.push(b.entries.length + b.corrupt.length)
      for (const e of b.entries) entries.push({ key: hex(e.key), meta: hex(e.meta), ...(e.log ? { log: e.log } : {}) })
      for (const x of b.corrupt) corrupt.push({ code: x.code, file: x.file })
    }
    c.close()
    return { batches, entries, corrupt }
  },
  /** Fails the n-th IDBObjectStore.put from now (0: the next one) by throwing. */
  failNthPut(n: number) {
    failPutAt = n
  },
  transactions: () => transactions.slice(),

  // ---- blobs ----
  /** Streams a blob of `size` pattern bytes in pieces of `piece`; with `measure`, the JS heap growth at its peak. */
  async writeBlob(h: number, key: string, meta: string, size: number, piece: number, seed: number, measure = false, retain = false) {
    const gc = (globalThis as { gc?: () => void }).gc
    const heap = () => (performance as unknown as { memory: { usedJSHeapSize: number } }).memory.usedJSHeapSize
    if (measure) gc?.()
    const base = measure ? heap() : 0
    let peak = 0
    // The control of the memory test: a writer that keeps every piece (as one that buffers the blob would).
    const kept: Uint8Array[] = []
    const sink = await store(h).blobWriter.async(unhex(key), unhex(meta))
    for (let at = 0; at < size; at += piece) {
      const bytes = pattern(seed, at, Math.min(piece, size - at))
      if (retain) kept.push(bytes)
      await sink.write.async(bytes)
      if (measure && (at / piece) % 4 === 0) {
        gc?.()
        peak = Math.max(peak, heap() - base)
      }
    }
    await sink.commit.async()
    return { peak, kept: kept.length }
  },
  /** Starts a blob and writes `size` bytes without committing (a writer that dies). */
  async startBlob(h: number, key: string, size: number) {
    const sink = await store(h).blobWriter.async(unhex(key), new Uint8Array([0x80]))
    await sink.write.async(pattern(1, 0, size))
    return 'started'
  },
  async abortBlob(h: number, key: string, size: number) {
    const sink = await store(h).blobWriter.async(unhex(key), new Uint8Array([0x80]))
    await sink.write.async(pattern(1, 0, size))
    sink.abort()
  },
  /** Reads the blob in pieces of `piece` and checks it against the pattern; returns its size and how many reads. */
  async readBlob(h: number, key: string, piece: number, seed: number) {
    const src = await store(h).openBlob.async(unhex(key))
    if (!src) return undefined
    let reads = 0
    let bad = -1
    for (let at = 0; at < src.size; at += piece) {
      const got = await src.read.async(at, piece)
      reads++
      const want = Math.min(piece, src.size - at)
      if (got.length !== want && bad < 0) bad = at
      for (let i = 0; i < got.length && bad < 0; i++) if (got[i] !== patternByte(seed, at + i)) bad = at + i
    }
    src.close()
    return { size: src.size, reads, bad, meta: hex(src.meta.meta) }
  },
  openBlobError: (h: number, key: string) => errorOf(store(h).openBlob.async(unhex(key))),

  /** Waits until no tab or worker holds a stage lock of `db` (a closed tab's locks are released a moment after it goes). */
  async awaitStageLocks(db: string) {
    const prefix = `konserve:${db}:stage:`
    const held = ((await navigator.locks.query()).held ?? []).map((l) => l.name ?? '').filter((n) => n.startsWith(prefix))
    for (const name of held) await navigator.locks.request(name, async () => {})
    return held.length
  },

  // ---- logs ----
  append: (h: number, key: string, records: Array<{ serializer: number; stamp: number; bytes: string }>, createMeta: string) =>
    store(h).append.async(
      unhex(key),
      records.map((r) => ({ serializer: r.serializer, stamp: r.stamp, bytes: unhex(r.bytes) })),
      unhex(createMeta),
    ),
  /** `n` appends of one record each, one after the other, without taking the key's lock. */
  async appendMany(h: number, key: string, n: number, tag: string) {
    for (let i = 0; i < n; i++) await store(h).append.async(unhex(key), [{ serializer: 1, stamp: i, bytes: utf8(`${tag}${i}`) }], new Uint8Array([0x80]))
    return n
  },
  appendError: (h: number, key: string) => errorOf(store(h).append.async(unhex(key), [{ serializer: 1, stamp: 1, bytes: new Uint8Array([1]) }], new Uint8Array([0x80]))),
  async readLog(h: number, key: string, batch: number) {
    const c = await store(h).openLog.async(unhex(key))
    if (!c) return undefined
    const batches: number[] = []
    const records: Array<{ index: number; stamp: number; serializer: number; bytes: string }> = []
    for (let b = await c.next.async(batch); b; b = await c.next.async(batch)) {
      batches.push(b.length)
      for (const r of b) records.push({ index: r.index, stamp: r.stamp, serializer: r.serializer, bytes: hex(r.bytes) })
    }
    c.close()
    return { batches, records }
  },
  trimLog: (h: number, key: string, keepFrom: number, meta: string) => store(h).trimLog.async(unhex(key), keepFrom, unhex(meta)),

  // ---- locks ----
  /** Read-modify-write increments of a counter under the key's lock; the value is a u32 LE. */
  async increments(h: number, key: string, n: number) {
    const b = store(h)
    const k = unhex(key)
    for (let i = 0; i < n; i++) {
      await b.lock.async([k])
      try {
        const e = await b.get.async(k)
        const v = e ? new DataView(e.value.buffer, e.value.byteOffset).getUint32(0, true) : 0
        // A pause inside the critical section, so that an unlocked writer would interleave.
        await new Promise((r) => setTimeout(r, 0))
        const out = new Uint8Array(4)
        new DataView(out.buffer).setUint32(0, v + 1, true)
        await b.put.async([{ key: k, serializer: 1, meta: new Uint8Array([0x80]), value: out }])
      } finally {
        b.unlock([k])
      }
    }
    return n
  },
  async hold(h: number, keys: string[]) {
    await store(h).lock.async(keys.map(unhex))
    return 'held'
  },
  release(h: number, keys: string[]) {
    store(h).unlock(keys.map(unhex))
  },
  lockError: (h: number, keys: string[]) => errorOf(store(h).lock.async(keys.map(unhex))),
  /** Through the seam as the facade runs it: a blocking call fails ERR_NOT_SUPPORTED; lock, write, read in async form. */
  async seamRoundTrip(h: number, key: string) {
    const b = store(h) as Backing
    const k = unhex(key)
    const syncError = (() => {
      try {
        b.get.sync(k)
        return undefined
      } catch (err) {
        return (err as { code?: string }).code
      }
    })()
    await b.lock.async([k])
    try {
      await b.put.async([{ key: k, serializer: 1, meta: new Uint8Array([0x80]), value: utf8('seam') }])
    } finally {
      b.unlock([k])
    }
    const e = await b.get.async(k)
    return { syncError, value: e && new TextDecoder().decode(e.value), implementation: b.implementation, blocking: b.blocking }
  },

  // ---- what is in IndexedDB ----
  /** The whole key file `name` as a file store would hold it. */
  async fileBytes(h: number, key: string) {
    const b = await store(h).readFileBytes(fileName(unhex(key)))
    return b && hex(b)
  },
  /** Every key and value of the three object stores, bytes and strings, flattened (to search for plaintext). */
  async dump(db: string) {
    const conn = await new Promise<IDBDatabase>((resolve, reject) => {
      const r = indexedDB.open(db)
      r.onsuccess = () => resolve(r.result)
      r.onerror = () => reject(r.error)
    })
    const parts: Uint8Array[] = []
    const counts: Record<string, number> = {}
    const flatten = (v: unknown): void => {
      if (v instanceof Uint8Array) parts.push(v.slice())
      else if (v instanceof ArrayBuffer) parts.push(new Uint8Array(v.slice(0)))
      else if (typeof v === 'string') parts.push(utf8(v))
      else if (typeof v === 'number') parts.push(utf8(String(v)))
      else if (Array.isArray(v)) v.forEach(flatten)
      else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) {
        flatten(k)
        flatten(x)
      }
    }
    try {
      for (const s of [FILES, SEGMENTS, STORE]) {
        const tx = conn.transaction(s, 'readonly')
        const [keys, values] = await Promise.all(
          [tx.objectStore(s).getAllKeys(), tx.objectStore(s).getAll()].map(
            (r) => new Promise<unknown[]>((resolve, reject) => ((r.onsuccess = () => resolve(r.result)), (r.onerror = () => reject(r.error)))),
          ),
        )
        counts[s] = keys!.length
        keys!.forEach(flatten)
        values!.forEach(flatten)
      }
    } finally {
      conn.close()
    }
    return { counts, parts }
  },
  /** Which of `needles` occur anywhere in the database (keys, values, records); and how many bytes were searched. */
  async searchDb(db: string, needles: string[]) {
    const { counts, parts } = await api.dump(db)
    const all = new Uint8Array(parts.reduce((n, p) => n + p.length + 1, 0))
    let at = 0
    for (const p of parts) {
      all.set(p, at)
      at += p.length + 1
    }
    const text = Array.from(all, (b) => String.fromCharCode(b)).join('')
    return { counts, bytes: all.length, found: needles.filter((n) => text.includes(Array.from(utf8(n), (b) => String.fromCharCode(b)).join(''))) }
  },
  async counts(db: string) {
    return (await api.dump(db)).counts
  },
  /** Writes a record that is not a konserve file under a key file name (damage). */
  async plantGarbage(db: string, name: string) {
    const conn = await new Promise<IDBDatabase>((resolve, reject) => {
      const r = indexedDB.open(db)
      r.onsuccess = () => resolve(r.result)
      r.onerror = () => reject(r.error)
    })
    await new Promise<void>((resolve, reject) => {
      const tx = conn.transaction(FILES, 'readwrite')
      tx.objectStore(FILES).put({ gen: 'x', size: 5, head: new Uint8Array([1, 2, 3, 4, 5]) }, name)
      tx.oncomplete = () => resolve()
      tx.onerror = () => reject(tx.error)
    })
    conn.close()
  },

  // ---- lost connections ----
  /** Closes the store's connection behind its back (as the browser may), then reads and writes. */
  async closeBehind(h: number, key: string) {
    const b = store(h)
    const before = b.conn.opens
    b.conn.current?.close()
    await b.put.async([{ key: unhex(key), serializer: 1, meta: new Uint8Array([0x80]), value: utf8('after close') }])
    const e = await b.get.async(unhex(key))
    return { reopened: b.conn.opens - before, value: e && new TextDecoder().decode(e.value) }
  },
  /** Another connection upgrades the database (another tab's newer version): ours must let it, then reopen. */
  async upgradeFromElsewhere(h: number, db: string, key: string) {
    const b = store(h)
    const before = b.conn.opens
    const version = await new Promise<number>((resolve, reject) => {
      const r = indexedDB.open(db)
      r.onsuccess = () => (resolve(r.result.version), r.result.close())
      r.onerror = () => reject(r.error)
    })
    const upgraded = await new Promise<string>((resolve) => {
      const r = indexedDB.open(db, version + 1)
      r.onblocked = () => resolve('blocked')
      r.onsuccess = () => (r.result.close(), resolve('upgraded'))
      r.onerror = () => resolve(`error ${r.error?.name}`)
    })
    const e = await b.get.async(unhex(key))
    return { upgraded, reopened: b.conn.opens - before, value: e && hex(e.value) }
  },
  /** Another tab deletes the database: the store fails with a typed error, and does not re-create it. */
  async deleteFromElsewhere(h: number, db: string, key: string) {
    const deleted = await new Promise<string>((resolve) => {
      const r = indexedDB.deleteDatabase(db)
      r.onblocked = () => resolve('blocked')
      r.onsuccess = () => resolve('deleted')
      r.onerror = () => resolve(`error ${r.error?.name}`)
    })
    const err = await errorOf(store(h).get.async(unhex(key)))
    const dbs = (await indexedDB.databases()).map((d) => d.name)
    return { deleted, err, recreated: dbs.includes(db) }
  },
  /** xxh3_64 of bytes, to compare with Node's. */
  xxh: (s: string) => xxh3_64(unhex(s)).toString(16),
}

;(globalThis as unknown as { konserveTest: typeof api }).konserveTest = api
