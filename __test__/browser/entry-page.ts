/**
 * The page side of __test__/browser-entry.spec.ts: imports konserve by its
 * package name, so esbuild resolves it through the `browser` export condition
 * to dist/browser.mjs (the built browser entry), and drives a connectIdbStore
 * store through the public API, async. Results go back to ava as JSON.
 */
import * as konserve from 'konserve'
import type * as Browser from '../../ts/browser.js'

// At run time `konserve` is dist/browser.mjs (the browser condition); the typecheck's `konserve` is the Node entry.
const k = konserve as unknown as typeof Browser

const stores = new Map<string, Browser.Store>()
async function open(db: string, opts?: Record<string, unknown>): Promise<Browser.Store> {
  const s = stores.get(db) ?? (await k.connectIdbStore(db, opts))
  stores.set(db, s)
  return s
}

async function errorOf(f: () => unknown): Promise<string | undefined> {
  try {
    await f()
    return undefined
  } catch (err) {
    return (err as { code?: string }).code ?? String(err)
  }
}

async function readAll(rs: ReadableStream<Uint8Array>): Promise<number[]> {
  const out: number[] = []
  const r = rs.getReader()
  for (;;) {
    const { done, value } = await r.read()
    if (done) return out
    for (const b of value) out.push(b)
  }
}

const bytesStream = (parts: number[][]) =>
  new ReadableStream<Uint8Array>({
    start(c) {
      for (const p of parts) c.enqueue(new Uint8Array(p))
      c.close()
    },
  })

const api = {
  /** Every kind of call once, async; what each returned. */
  async basics(db: string) {
    const s = await open(db)
    const out: Record<string, unknown> = {}
    out.implementation = k.implementation(s)
    out.missing = await k.get(s, 'nope')
    out.assoc = await k.assoc(s, 'a', { x: 1, tags: ['t'] })
    out.get = await k.get(s, 'a')
    out.assocIn = await k.assocIn(s, ['a', 'y', 'z'], 2)
    out.getIn = await k.getIn(s, ['a', 'y', 'z'])
    out.updateIn = await k.updateIn(s, ['a', 'x'], (x: number) => x + 10)
    out.update = await k.update(s, 'n', (x: number | undefined) => (x ?? 0) + 1)
    out.exists = [await k.exists(s, 'a'), await k.exists(s, 'nope')]
    await k.multiAssoc(s, new Map<Browser.Key, unknown>([['m1', 1], ['m2', 'two'], [['vec', 3], { v: 3 }]]))
    out.multiGet = [...(await k.multiGet(s, ['m1', 'm2', ['vec', 3], 'absent'])).entries()]
    out.multiDissoc = [...(await k.multiDissoc(s, ['m1', 'absent'])).entries()]
    out.dissoc = [await k.dissoc(s, 'n'), await k.get(s, 'n')]
    // Blobs: a Blob and a ReadableStream in, ReadableStream out.
    const big = new Uint8Array(3 << 20).map((_, i) => (i * 7) & 0xff)
    await k.bassoc(s, 'blob', new Blob([big, new Uint8Array([1, 2, 3])]))
    await k.bassoc(s, 'rs', bytesStream([[1, 2], [3], [4, 5, 6]]))
    const web = (await k.readBlob(s, 'blob', { as: 'web' })) as ReadableStream<Uint8Array>
    const got = await readAll(web)
    out.blobSize = got.length
    out.blobSame = got.length === big.length + 3 && big.every((b, i) => got[i] === b) && got.slice(-3).join() === '1,2,3'
    out.rs = await readAll((await k.readBlob(s, 'rs', { as: 'web' })) as ReadableStream<Uint8Array>)
    out.bget = await k.bget(s, 'rs', async (b) => [b.size, b.stream === undefined, await readAll(b.web!)])
    // Logs.
    for (const e of [1, 2, 3]) await k.append(s, 'log', { e })
    out.log = await k.log(s, 'log')
    out.reduceLog = await k.reduceLog(s, 'log', (acc: number, v: { e: number }) => acc + v.e, 0)
    out.meta = (await k.getMeta(s, 'a'))?.key
    out.keys = (await k.keys(s)).map((m) => JSON.stringify(m.key)).sort()
    // No blocking form: a sync call fails, through the seam.
    out.syncGet = await errorOf(() => k.get(s, 'a', { sync: true }))
    out.syncAssoc = await errorOf(() => k.assoc(s, 'a', 1, { sync: true }))
    out.syncConnect = await errorOf(() => k.connectIdbStore(`${db}-sync`, { sync: true } as never))
    out.badOption = await errorOf(() => k.connectIdbStore(`${db}-bad`, { durability: 'sometimes' } as never))
    return out
  },
  /** `n` increments of one counter (run in two pages at once). */
  async count(db: string, n: number) {
    const s = await open(db)
    for (let i = 0; i < n; i++) await k.updateIn(s, ['counter', 'n'], (x: number | undefined) => (x ?? 0) + 1)
    return k.get(s, 'counter')
  },
  async put(db: string, key: string, value: unknown, opts?: Record<string, unknown>) {
    await k.assoc(await open(db, opts), key, value)
  },
  async read(db: string, key: string, opts?: Record<string, unknown>) {
    return k.get(await open(db, opts), key)
  },
  /** Writes CBOR values and a CBOR log (cbor-x loaded by connectIdbStore's serializer option). */
  async cborWrite(db: string) {
    const s = await open(db, { serializer: 'cbor' })
    await k.assoc(s, 'v', { n: 12345678901234567890n, d: new Date(5), m: new Map([[1, 'one']]) })
    await k.append(s, 'log', { at: new Date(7) })
  },
  /** In a fresh page (cbor-x not loaded), a store opened with the default serializer reads them: the reads load cbor-x. */
  async cborRead(db: string) {
    const s = await open(db)
    const v = (await k.get(s, 'v')) as { n: bigint; d: Date; m: Map<number, string> }
    const log = (await k.log(s, 'log')) as Array<{ at: Date }>
    return [v.n.toString(), v.d.getTime(), [...v.m], log.map((e) => e.at.getTime())]
  },
  /** A memory store with the cbor serializer: refused before loadCodecs, works after. */
  async cborMemory() {
    const before = await errorOf(async () => k.assoc(await k.newMemStore({ serializer: 'cbor' }), 'a', 1))
    await k.loadCodecs()
    const s = await k.newMemStore({ serializer: 'cbor' })
    await k.assoc(s, 'a', new Set([1]))
    return { before, after: [...((await k.get(s, 'a')) as Set<number>)] }
  },
  /** A compressed and encrypted store: round trip, and what IndexedDB holds has no plaintext. */
  async codecs(db: string) {
    const s = await open(db, { compressor: { type: 'lz4' }, encryptor: { type: 'aes', key: 'secret' } })
    const value = { word: 'plaintext-marker-'.repeat(20) }
    await k.assoc(s, 'secret-key-marker', value)
    const back = await k.get(s, 'secret-key-marker')
    const raw = await new Promise<string>((resolve, reject) => {
      const r = indexedDB.open(db)
      r.onerror = () => reject(r.error)
      r.onsuccess = () => {
        const d = r.result
        const names = Array.from({ length: d.objectStoreNames.length }, (_, i) => d.objectStoreNames.item(i)!)
        const tx = d.transaction(names, 'readonly')
        const parts: string[] = []
        for (const n of names) {
          const g = tx.objectStore(n).getAll()
          g.onsuccess = () => parts.push(JSON.stringify(g.result, (_k, v) => (v instanceof Uint8Array ? new TextDecoder('latin1').decode(v) : v)))
        }
        tx.oncomplete = () => {
          d.close()
          resolve(parts.join(''))
        }
      }
    })
    return { same: JSON.stringify(back) === JSON.stringify(value), plainValue: raw.includes('plaintext-marker'), plainKey: raw.includes('secret-key-marker'), rawLength: raw.length }
  },
}

;(globalThis as { konserveTest?: unknown }).konserveTest = api
