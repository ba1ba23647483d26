// One driver per store and mode: the same small interface over konserve and
// each peer, so that bench/peers.mjs can run every case on every store alike.
//
// A driver: { id, name, kind: 'ours'|'peer'|'raw', mode, api, notes,
//   open(dir, { binary }) -> instance (or Promise), close(inst),
//   put(inst, key, value), get(inst, key), update(inst, key) (counter +1),
//   bput(inst, key, bytes), bget(inst, key) -> byte count, keys(inst) -> count,
//   populate(inst, keys, value) (bulk, untimed) }
// `api` says, per operation, whether the call returns a value ('sync') or a
// Promise ('async'); a missing operation means the store cannot do it.
//
// Values: konserve, lmdb, node-persist and keyv get the JS object and encode it
// themselves (msgpack for konserve and lmdb, JSON for node-persist and keyv);
// the byte stores (classic-level, cacache, unstorage, write-file-atomic, raw)
// get msgpackr.pack(value) inside the timed operation, and a get unpacks.
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import { join } from 'node:path'
import * as ours from '../../dist/index.mjs'
import { pack, unpack } from 'msgpackr'

const SYNC = { sync: true }
const inc = (x) => (x ?? 0) + 1
const chunks = (xs, n) => Array.from({ length: Math.ceil(xs.length / n) }, (_, i) => xs.slice(i * n, i * n + n))

/** Runs `fn` over `items` with at most `conc` in flight. */
export async function pool(items, conc, fn) {
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const i = next++
      await fn(items[i], i)
    }
  }
  await Promise.all(Array.from({ length: Math.min(conc, items.length) }, worker))
}

// ---------------------------------------------------------------- konserve

// The read cache in front of the file store: sized to hold every key of the get cases.
const CACHE = { maxEntries: 100_000, maxBytes: 256 << 20 }

/** The file store under each read cache the driver opened (closed with it). */
const under = new WeakMap()

/** `lib`: another build of konserve (bench/peers.mjs --before), named `label` in the tables. */
/** `wal`: the store on its write-ahead log (docs/WAL.md, the `wal: true` option). */
export function konserve({ impl = 'native', api = 'sync', durable = true, cached = false, wal = false, lib, label }) {
  const k = lib ?? ours
  const sync = api === 'sync'
  const o = sync ? SYNC : undefined
  const native = impl === 'native'
  const walOpt = wal ? { wal: true } : {}
  const base = `connectFsStore(dir, { native: ${native}, syncBlob: ${durable}${wal ? ', wal: true' : ''} })`
  const w = wal ? ' + WAL' : ''
  return {
    id: `ks-${impl}-${api}${durable ? '' : '-nd'}${cached ? '-cached' : ''}${wal ? '-wal' : ''}${label ? `-${label}` : ''}`,
    name: `konserve ${native ? 'native' : 'pure-TS'}${cached ? ' + read cache' : ''}${w} (${api})${label ? ` ${label}` : ''}`,
    family: `konserve ${native ? 'native' : 'pure-TS'}${cached ? ' + read cache' : ''}${w} (${api})`,
    kind: 'ours',
    mode: durable ? 'durable' : 'non-durable',
    api: {},
    defaultApi: api,
    config: `${cached ? `withCache(${base}, { maxEntries: 100000, maxBytes: 256 MiB })` : base}${sync ? ', { sync: true } calls' : ', Promise calls'}`,
    open: cached
      ? async (dir) => {
          const files = await k.connectFsStore(dir, { sync, native, syncBlob: durable, ...walOpt })
          const s = k.withCache(files, CACHE)
          under.set(s, files)
          return s
        }
      : (dir) => k.connectFsStore(dir, { sync, native, syncBlob: durable, ...walOpt }),
    // Closed after each run: an open store's background work (the log's idle
    // checkpoint, its kept lock files) would otherwise run into the next
    // store's run and tax it.
    close: async (s) => {
      await k.close(s)
      if (under.has(s)) await k.close(under.get(s))
    },
    put: (s, key, v) => k.assoc(s, key, v, o),
    get: (s, key) => k.get(s, key, o),
    update: (s, key) => k.updateIn(s, [key], inc, o),
    bput: (s, key, buf) => k.bassoc(s, key, buf, o),
    bget: sync
      ? (s, key) => k.bget(s, key, ({ blob }) => blob.length, SYNC)
      : (s, key) => k.bget(s, key, async ({ stream }) => {
          let n = 0
          for await (const c of stream) n += c.length
          return n
        }),
    keys: sync ? (s) => k.keys(s, SYNC).length : async (s) => (await k.keys(s)).length,
    // Four batches in flight on the async API (the threadpool's four threads).
    populate: async (s, keys, value) => {
      await pool(chunks(keys, 1000), sync ? 1 : 4, (c) => k.multiAssoc(s, new Map(c.map((key) => [key, value])), o))
    },
  }
}

export function konserveMem() {
  const k = ours
  return {
    id: 'ks-mem',
    name: 'konserve memory (sync)',
    family: 'konserve memory (sync)',
    kind: 'ours',
    mode: 'memory',
    api: {},
    defaultApi: 'sync',
    inMemory: true,
    config: 'newMemStore(), { sync: true } calls',
    open: () => k.newMemStore(SYNC),
    close: () => {},
    put: (s, key, v) => k.assoc(s, key, v, SYNC),
    get: (s, key) => k.get(s, key, SYNC),
    update: (s, key) => k.updateIn(s, [key], inc, SYNC),
    bput: (s, key, buf) => k.bassoc(s, key, buf, SYNC),
    bget: (s, key) => k.bget(s, key, ({ blob }) => blob.length, SYNC),
    keys: (s) => k.keys(s, SYNC).length,
    // Yields between batches, so that stores written at the same time move too.
    populate: async (s, keys, value) => {
      for (const c of chunks(keys, 1000)) {
        k.multiAssoc(s, new Map(c.map((key) => [key, value])), SYNC)
        await new Promise((r) => setImmediate(r))
      }
    },
  }
}

// ---------------------------------------------------------------- lmdb

export async function lmdb({ durable = true }) {
  const { open } = await import('lmdb')
  return {
    id: durable ? 'lmdb' : 'lmdb-nd',
    name: 'lmdb',
    family: 'lmdb',
    kind: 'peer',
    mode: durable ? 'durable' : 'non-durable',
    api: { get: 'sync', bget: 'sync', keys: 'sync' },
    defaultApi: 'async',
    config: durable
      ? 'open({ overlappingSync: false }): a put resolves after its transaction is committed and synced'
      : 'open({ noSync: true }): commits without fsync',
    open: (dir, { binary } = {}) =>
      open({ path: dir, overlappingSync: false, noSync: !durable, encoding: binary ? 'binary' : 'msgpack' }),
    close: (db) => db.close(),
    put: (db, key, v) => db.put(key, v),
    get: (db, key) => db.get(key),
    update: (db, key) => db.transaction(() => db.put(key, inc(db.get(key)))),
    bput: (db, key, buf) => db.put(key, buf),
    bget: (db, key) => db.get(key).length,
    keys: (db) => {
      let n = 0
      for (const _ of db.getKeys()) n++
      return n
    },
    populate: async (db, keys, value) => {
      for (const c of chunks(keys, 10000)) {
        await db.batch(() => {
          for (const key of c) db.put(key, value)
        })
      }
    },
  }
}

// ---------------------------------------------------------------- classic-level

export async function classicLevel({ durable = true }) {
  const { ClassicLevel } = await import('classic-level')
  const wo = { sync: durable }
  return {
    id: durable ? 'classic-level' : 'classic-level-nd',
    name: 'classic-level',
    family: 'classic-level',
    kind: 'peer',
    mode: durable ? 'durable' : 'non-durable',
    api: {},
    defaultApi: 'async',
    config: `put(key, bytes, { sync: ${durable} })${durable ? ': LevelDB fsyncs its log before the put resolves' : ''}; updateIn = get + put (not atomic)`,
    open: async (dir) => {
      const db = new ClassicLevel(dir, { valueEncoding: 'buffer' })
      await db.open()
      return db
    },
    close: (db) => db.close(),
    put: (db, key, v) => db.put(key, pack(v), wo),
    get: async (db, key) => unpack(await db.get(key)),
    update: async (db, key) => {
      const b = await db.get(key)
      await db.put(key, pack(inc(b ? unpack(b) : undefined)), wo)
    },
    bput: (db, key, buf) => db.put(key, buf, wo),
    bget: async (db, key) => (await db.get(key)).length,
    keys: async (db) => (await db.keys().all()).length,
    populate: async (db, keys, value) => {
      const v = pack(value)
      for (const c of chunks(keys, 1000)) await db.batch(c.map((key) => ({ type: 'put', key, value: v })))
    },
  }
}

// ---------------------------------------------------------------- node-persist

export async function nodePersist() {
  const { default: storage } = await import('node-persist')
  return {
    id: 'node-persist',
    name: 'node-persist',
    family: 'node-persist',
    kind: 'peer',
    mode: 'non-durable',
    api: {},
    defaultApi: 'async',
    config: 'create({ writeQueue: false, expiredInterval: 0 }): fs.writeFile of JSON per key, no fsync (its default write queue would resolve a setItem only on a 1 s timer); updateIn = getItem + setItem',
    open: async (dir) => {
      const s = storage.create({ dir, writeQueue: false, expiredInterval: 0 })
      await s.init()
      return s
    },
    close: () => {},
    put: (s, key, v) => s.setItem(key, v),
    get: (s, key) => s.getItem(key),
    update: async (s, key) => s.setItem(key, inc(await s.getItem(key))),
    keys: async (s) => (await s.keys()).length,
    populate: (s, keys, value) => pool(keys, 32, (key) => s.setItem(key, value)),
  }
}

// ---------------------------------------------------------------- cacache

export async function cacacheDriver() {
  const { default: cacache } = await import('cacache')
  const read = async (dir, key) => {
    try {
      return (await cacache.get(dir, key)).data
    } catch (e) {
      if (e.code === 'ENOENT') return undefined
      throw e
    }
  }
  return {
    id: 'cacache',
    name: 'cacache',
    family: 'cacache',
    kind: 'peer',
    mode: 'non-durable',
    api: {},
    defaultApi: 'async',
    config: 'put/get on a cache directory: content file (sha512) + append-only index, no fsync; updateIn = get + put',
    open: (dir) => dir,
    close: () => {},
    put: (dir, key, v) => cacache.put(dir, key, pack(v)),
    get: async (dir, key) => unpack(await read(dir, key)),
    update: async (dir, key) => {
      const b = await read(dir, key)
      await cacache.put(dir, key, pack(inc(b ? unpack(b) : undefined)))
    },
    bput: (dir, key, buf) => cacache.put(dir, key, buf),
    bget: async (dir, key) => (await cacache.get(dir, key)).data.length,
    keys: async (dir) => Object.keys(await cacache.ls(dir)).length,
    populate: (dir, keys, value) => {
      const v = pack(value)
      return pool(keys, 16, (key) => cacache.put(dir, key, v))
    },
  }
}

// ---------------------------------------------------------------- unstorage

export async function unstorageFs() {
  const { createStorage } = await import('unstorage')
  const { default: fsDriver } = await import('unstorage/drivers/fs')
  return {
    id: 'unstorage',
    name: 'unstorage (fs driver)',
    family: 'unstorage (fs driver)',
    kind: 'peer',
    mode: 'non-durable',
    api: {},
    defaultApi: 'async',
    config: 'createStorage({ driver: fs({ base: dir }) }), setItemRaw/getItemRaw of bytes: fs.writeFile per key, no fsync; updateIn = get + set',
    open: (dir) => createStorage({ driver: fsDriver({ base: dir }) }),
    close: (s) => s.dispose(),
    put: (s, key, v) => s.setItemRaw(key, pack(v)),
    get: async (s, key) => unpack(await s.getItemRaw(key)),
    update: async (s, key) => {
      const b = await s.getItemRaw(key)
      await s.setItemRaw(key, pack(inc(b ? unpack(b) : undefined)))
    },
    bput: (s, key, buf) => s.setItemRaw(key, buf),
    bget: async (s, key) => (await s.getItemRaw(key)).length,
    keys: async (s) => (await s.getKeys()).length,
    populate: (s, keys, value) => {
      const v = pack(value)
      return pool(keys, 32, (key) => s.setItemRaw(key, v))
    },
  }
}

// ---------------------------------------------------------------- keyv + keyv-file

export async function keyvFile() {
  const { default: Keyv } = await import('keyv')
  const { KeyvFile } = await import('keyv-file')
  const make = (dir, writeDelay) => new Keyv({ store: new KeyvFile({ filename: join(dir, 'keyv.json'), writeDelay }) })
  return {
    id: 'keyv-file',
    name: 'keyv + keyv-file',
    family: 'keyv + keyv-file',
    kind: 'peer',
    mode: 'non-durable',
    api: {},
    defaultApi: 'async',
    config: 'KeyvFile({ writeDelay: 0 }): the whole store is one JSON file, rewritten (fs.writeFile, no fsync) after each set resolves; opening parses the whole file; updateIn = get + set',
    open: (dir) => make(dir, 0),
    close: (kv) => kv.disconnect(),
    put: (kv, key, v) => kv.set(key, v),
    get: (kv, key) => kv.get(key),
    update: async (kv, key) => kv.set(key, inc(await kv.get(key))),
    keys: async (kv) => {
      let n = 0
      for (const _ of await kv.store.keys()) n++
      return n
    },
    populate: async (kv, keys, value) => {
      let last
      for (const key of keys) last = kv.set(key, value)
      await last
      await kv.store.saveToDisk()
    },
  }
}

// ---------------------------------------------------------------- write-file-atomic

export async function writeFileAtomicDriver({ durable = true, api = 'sync' }) {
  const { default: wfa } = await import('write-file-atomic')
  const opts = { fsync: durable }
  const sync = api === 'sync'
  const write = sync ? (file, data) => wfa.sync(file, data, opts) : (file, data) => wfa(file, data, opts)
  return {
    id: `wfa-${api}${durable ? '' : '-nd'}`,
    name: `write-file-atomic (${api})`,
    family: `write-file-atomic (${api})`,
    kind: 'peer',
    mode: durable ? 'durable*' : 'non-durable',
    api: {},
    defaultApi: api,
    config: `one file per key, ${sync ? 'writeFileAtomic.sync' : 'writeFileAtomic'}(file, bytes, { fsync: ${durable} })${durable ? ': fsyncs the file before the rename but never the directory (*the rename itself is not durable)' : ''}; updateIn = readFileSync + write`,
    open: (dir) => dir,
    close: () => {},
    put: (dir, key, v) => write(join(dir, key), pack(v)),
    update: sync
      ? (dir, key) => {
          let n
          try { n = unpack(fs.readFileSync(join(dir, key))) } catch {}
          return write(join(dir, key), pack(inc(n)))
        }
      : async (dir, key) => {
          let n
          try { n = unpack(await fsp.readFile(join(dir, key))) } catch {}
          return write(join(dir, key), pack(inc(n)))
        },
    bput: (dir, key, buf) => write(join(dir, key), buf),
  }
}

// ---------------------------------------------------------------- the raw limit

let seq = 0
function writeAll(fd, buf) {
  for (let off = 0; off < buf.length; ) off += fs.writeSync(fd, buf, off, buf.length - off)
}
/** The system calls of a durable file-per-key write, nothing else. */
export function rawWriteSync(dir, name, buf, durable) {
  const stage = join(dir, `.${name}.${process.pid}.${++seq}.stage`)
  const fd = fs.openSync(stage, 'wx')
  writeAll(fd, buf)
  if (durable) fs.fsyncSync(fd)
  fs.closeSync(fd)
  fs.renameSync(stage, join(dir, name))
  if (durable) {
    const d = fs.openSync(dir, 'r')
    fs.fsyncSync(d)
    fs.closeSync(d)
  }
}
export async function rawWriteAsync(dir, name, buf, durable) {
  const stage = join(dir, `.${name}.${process.pid}.${++seq}.stage`)
  const fh = await fsp.open(stage, 'wx')
  try {
    for (let off = 0; off < buf.length; ) off += (await fh.write(buf, off, buf.length - off)).bytesWritten
    if (durable) await fh.sync()
  } finally {
    await fh.close()
  }
  await fsp.rename(stage, join(dir, name))
  if (durable) {
    const d = await fsp.open(dir, 'r')
    await d.sync()
    await d.close()
  }
}

export function raw({ durable = true, api = 'sync', decode = false }) {
  const sync = api === 'sync'
  const read = decode ? (dir, key) => unpack(fs.readFileSync(join(dir, key))) : (dir, key) => fs.readFileSync(join(dir, key))
  return {
    id: `raw-${api}${durable ? '' : '-nd'}${decode ? '-decode' : ''}`,
    name: decode ? `raw readFileSync + msgpack decode (${api})` : `raw syscalls (${api})`,
    family: decode ? `raw readFileSync + msgpack decode (${api})` : `raw syscalls (${api})`,
    kind: 'raw',
    mode: durable ? 'durable' : 'non-durable',
    api: {},
    defaultApi: api,
    config: durable
      ? `open(O_EXCL) staging file, write, fsync, close, rename, open+fsync+close the directory (${sync ? 'fs.*Sync' : 'fs.promises'}); msgpackr.pack of the value; reads: fs.readFileSync, no decode`
      : decode
        ? 'reads only: fs.readFileSync of the file, then msgpackr.unpack (what a get must at least do)'
        : `the same without the two fsyncs (${sync ? 'fs.*Sync' : 'fs.promises'})`,
    open: (dir) => dir,
    close: () => {},
    put: sync ? (dir, key, v) => rawWriteSync(dir, key, pack(v), durable) : (dir, key, v) => rawWriteAsync(dir, key, pack(v), durable),
    get: read,
    update: sync
      ? (dir, key) => {
          let n
          try { n = unpack(fs.readFileSync(join(dir, key))) } catch {}
          rawWriteSync(dir, key, pack(inc(n)), durable)
        }
      : async (dir, key) => {
          let n
          try { n = unpack(await fsp.readFile(join(dir, key))) } catch {}
          await rawWriteAsync(dir, key, pack(inc(n)), durable)
        },
    bput: sync ? (dir, key, buf) => rawWriteSync(dir, key, buf, durable) : (dir, key, buf) => rawWriteAsync(dir, key, buf, durable),
    bget: (dir, key) => fs.readFileSync(join(dir, key)).length,
    populate: (dir, keys, value) => {
      const v = pack(value)
      for (const key of keys) rawWriteSync(dir, key, v, false)
    },
  }
}

/** Listing a konserve store's directory with plain system calls. */
export function rawList({ readEach }) {
  return {
    id: readEach ? 'raw-list-read' : 'raw-list',
    name: readEach ? 'raw readdir + readFileSync each' : 'raw readdir only',
    family: readEach ? 'raw readdir + readFileSync each' : 'raw readdir only',
    kind: 'raw',
    mode: 'n/a',
    api: {},
    defaultApi: 'sync',
    config: readEach
      ? "fs.readdirSync of the konserve directory, then fs.readFileSync of every .ksv file (a hashed file-per-key store must open every file to learn its keys)"
      : 'fs.readdirSync of the konserve directory (names only: a lower bound no hashed store can reach)',
    open: (dir) => dir,
    close: () => {},
    keys: (dir) => {
      const names = fs.readdirSync(dir)
      let n = 0
      for (const name of names) {
        if (!name.endsWith('.ksv')) continue
        if (readEach) fs.readFileSync(join(dir, name))
        n++
      }
      return n
    },
  }
}

export function apiOf(d, op) {
  return d.api[op] ?? d.defaultApi
}
