/**
 * The page side of __test__/browser-api.spec.ts: the browser entry's public
 * API (ts/browser.ts) on connectIdbStore stores, in Chromium. Moving a store
 * (exportStore/importStore, archives as hex to and from Node), sweep, write
 * hooks, withCache and tieredStore. Each function is one step; the
 * assertions are on the ava side, from what it returns as JSON.
 */
import * as k from '../../ts/browser.js'
import { type DumpApi, dumpStore, fillStore } from './shared.js'

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('')
const unhex = (s: string) => new Uint8Array((s.match(/../g) ?? []).map((h) => parseInt(h, 16)))
const api = k as unknown as DumpApi

async function drain(rs: ReadableStream<Uint8Array>): Promise<{ bytes: Uint8Array; pieces: number }> {
  const parts: Uint8Array[] = []
  const r = rs.getReader()
  for (;;) {
    const { done, value } = await r.read()
    if (done) break
    parts.push(value)
  }
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) {
    bytes.set(p, at)
    at += p.length
  }
  return { bytes, pieces: parts.length }
}

/** Waits until the clock has passed `t` (ms), so a later write's lastWrite is after it. */
async function clockPast(t: number): Promise<void> {
  while (Date.now() <= t) await new Promise((r) => setTimeout(r, 1))
}

const testApi = {
  /** Fills a new store, exports it: the archive (hex), how many pieces the stream gave, and the store's dump. */
  async exportFilled(db: string, opts: k.IdbStoreOptions, seed: number) {
    const s = await k.connectIdbStore(db, opts)
    await fillStore(api, s, seed)
    const { bytes, pieces } = await drain(k.exportStore(s))
    const dump = await dumpStore(api, s)
    await k.close(s)
    return { archive: hex(bytes), pieces, dump }
  },
  /** Imports an archive (hex) into a new store, given as a Blob, a ReadableStream or bytes: the counts and the store's dump. */
  async importArchive(db: string, opts: k.IdbStoreOptions, archive: string, as: 'blob' | 'stream' | 'bytes') {
    const s = await k.connectIdbStore(db, opts)
    const bytes = unhex(archive)
    const source =
      as === 'blob'
        ? new Blob([bytes])
        : as === 'stream'
          ? new ReadableStream<Uint8Array>({
              start(c) {
                for (let i = 0; i < bytes.length; i += 65521) c.enqueue(bytes.slice(i, i + 65521))
                c.close()
              },
            })
          : bytes
    const counts = await k.importStore(s, source)
    const dump = await dumpStore(api, s)
    await k.close(s)
    return { counts, dump }
  },
  /** A damaged archive fails typed. */
  async importDamaged(db: string, archive: string) {
    const s = await k.connectIdbStore(db)
    const bytes = unhex(archive)
    const mid = bytes.length >> 1
    bytes[mid] = bytes[mid]! ^ 0xff
    try {
      await k.importStore(s, new Blob([bytes]))
      return undefined
    } catch (err) {
      return (err as { code?: string }).code ?? String(err)
    } finally {
      await k.close(s)
    }
  },

  /** sweep: old keys of every kind deleted, the whitelist and keys written after the cutoff kept; a dry run deletes nothing. */
  async sweep(db: string) {
    const s = await k.connectIdbStore(db)
    await k.assoc(s, 'old', 1)
    await k.assoc(s, ['old', 'kept'], 2)
    await k.bassoc(s, 'old blob', new Uint8Array(300_000).fill(7))
    await k.append(s, 'old log', 'x')
    const cutoffMs = (await k.getMeta(s, 'old log'))!.lastWrite.getTime() + 1
    await clockPast(cutoffMs)
    await k.assoc(s, 'new', 3)
    await k.bassoc(s, 'new blob', new Uint8Array([1, 2, 3]))
    const cutoff = new Date(cutoffMs)
    const dry = await k.sweep(s, [['old', 'kept']], cutoff, { dryRun: true })
    const afterDry = (await k.keys(s)).map((m) => JSON.stringify(m.key)).sort()
    const progress: number[] = []
    const deleted = await k.sweep(s, [['old', 'kept']], cutoff, { batchSize: 2, onProgress: (p) => progress.push(p.deleted) })
    const left = (await k.keys(s)).map((m) => JSON.stringify(m.key)).sort()
    const reads = [await k.get(s, 'old'), await k.get(s, ['old', 'kept']), await k.get(s, 'new'), await k.readBlob(s, 'old blob'), Array.from((await k.readBlob(s, 'new blob'))!)]
    await k.close(s)
    return { dry: dry.map((x) => JSON.stringify(x)).sort(), afterDry, deleted: deleted.map((x) => JSON.stringify(x)).sort(), left, reads, progress }
  },

  /** Write hooks on an idb store: one event per write (put, delete, append, blob, batch), none for a failed write. */
  async hooks(db: string) {
    const s = await k.connectIdbStore(db)
    const events: Array<Record<string, unknown>> = []
    k.addWriteHook(s, 'h', (e) => {
      events.push(e.op === 'multiAssoc' ? { op: e.op, kvs: e.kvs, revisions: [...e.meta.values()].map((m) => m.revision) } : { op: e.op, key: e.key, oldValue: e.oldValue, newValue: e.newValue, revision: e.meta?.revision })
    })
    await k.assoc(s, 'a', 1)
    await k.updateIn(s, ['a'], (x: number) => x + 1)
    await k.assocIn(s, ['b', 'c'], 'deep')
    await k.append(s, 'log', 'e1')
    await k.append(s, 'log', 'e2')
    await k.bassoc(s, 'blob', new Uint8Array([9]))
    await k.multiAssoc(s, new Map<k.Key, unknown>([['m1', 1], ['m2', 2]]))
    await k.dissoc(s, 'a')
    await k.multiDissoc(s, ['m1'])
    await k.trimLog(s, 'log', { keepLast: 1 })
    let failed: string | undefined
    try {
      await k.append(s, 'b', 'not a log')
    } catch (err) {
      failed = (err as { code?: string }).code
    }
    k.removeWriteHook(s, 'h')
    await k.assoc(s, 'after removal', 1)
    await k.close(s)
    return { events, failed }
  },

  /**
   * withCache over idb: a seeded random sequence of writes and reads through
   * the cache, each read checked against a model and against the idb store
   * read without the cache (in a second connection), and the cache's hits.
   */
  async cache(db: string, seed: number, steps: number) {
    const plain = await k.connectIdbStore(db)
    const c = k.withCache(plain, { maxEntries: 4 })
    const other = await k.connectIdbStore(db)
    let x = seed
    const rnd = (n: number) => {
      x = (x * 1103515245 + 12345) & 0x7fffffff
      return x % n
    }
    const model = new Map<string, unknown>()
    const mismatches: string[] = []
    for (let i = 0; i < steps; i++) {
      const key = `k${rnd(6)}`
      const op = rnd(6)
      if (op === 0) {
        await k.assoc(c, key, { i })
        model.set(key, { i })
      } else if (op === 1) {
        const [, v] = (await k.updateIn(c, [key, 'n'], (n: number | undefined) => (n ?? 0) + 1)) as [unknown, unknown]
        model.set(key, v)
      } else if (op === 2) {
        await k.dissoc(c, key)
        model.delete(key)
      } else if (op === 3) {
        await k.multiAssoc(c, new Map([[key, i], ['k0', -i]]))
        model.set(key, i)
        model.set('k0', -i)
      } else {
        const got = await k.get(c, key)
        const want = model.get(key)
        const direct = await k.get(other, key)
        if (JSON.stringify(got) !== JSON.stringify(want) || JSON.stringify(direct) !== JSON.stringify(want)) {
          mismatches.push(`step ${i}: ${key} cached ${JSON.stringify(got)} direct ${JSON.stringify(direct)} model ${JSON.stringify(want)}`)
        }
      }
    }
    const stats = k.cacheStats(c)
    await k.close(c)
    await k.close(other)
    return { mismatches, hits: stats?.hits ?? 0, entries: stats?.entries ?? -1 }
  },

  /** tieredStore: a memory store in front of idb, write-through; a fresh front reads through to idb and fills itself. */
  async tiered(db: string) {
    const back = await k.connectIdbStore(db)
    const front = await k.newMemStore()
    const t = k.tieredStore(front, back)
    await k.assoc(t, 'a', { v: 1 })
    await k.updateIn(t, ['a', 'v'], (v: number) => v + 1)
    await k.bassoc(t, 'blob', new Uint8Array([4, 5, 6]))
    await k.append(t, 'log', 'r1')
    await k.dissoc(t, 'gone')
    const inBack = { a: await k.get(back, 'a'), blob: Array.from((await k.readBlob(back, 'blob')) ?? []), log: await k.log(back, 'log') }
    await k.close(t)
    // A new, empty front: reads come from the idb back and fill the front.
    const back2 = await k.connectIdbStore(db)
    const front2 = await k.newMemStore()
    const t2 = k.tieredStore(front2, back2)
    const frontBefore = await k.get(front2, 'a')
    const read = await k.get(t2, 'a')
    const frontAfter = await k.get(front2, 'a')
    // A write through the tiers reaches both.
    await k.assoc(t2, 'b', 'both')
    const both = [await k.get(front2, 'b'), await k.get(back2, 'b')]
    await k.close(t2)
    return { inBack, frontBefore, read, frontAfter, both }
  },
}

;(globalThis as { konserveTest?: unknown }).konserveTest = testApi
