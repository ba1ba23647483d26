/**
 * `konserve/unstorage`: an unstorage driver over any konserve store.
 *
 *     import { createStorage } from 'unstorage'
 *     import konserveDriver from 'konserve/unstorage'
 *     const storage = createStorage({ driver: konserveDriver({ store: db }) })
 *
 * Each unstorage key (normalized, `a:b:c`) is stored under the konserve key
 * `[prefix, key]` (prefix 'unstorage' unless given): `setItem`'s string as a
 * value, `setItemRaw`'s bytes as a blob (bassoc), read back by `getItemRaw`.
 * `getMeta` gives the key's lastWrite as `mtime`. Uses only the public API,
 * so it works over every store; the store stays the caller's to close. No
 * TTL (konserve keys do not expire).
 */
import { defineDriver } from 'unstorage'
import { type Key, KonserveError, type Store, bassoc, exists, get, getMeta, keys, multiAssoc, multiDissoc, multiGet, readBlob } from './index.js'

export interface KonserveDriverOptions {
  /** The store the driver reads and writes. */
  store: Store
  /** The first element of every konserve key this driver writes (default 'unstorage'). */
  prefix?: string
}

/** The unstorage driver: `createStorage({ driver: konserveDriver({ store }) })`. */
const konserveDriver = defineDriver((opts: KonserveDriverOptions) => {
  if (!opts || typeof opts !== 'object' || !opts.store) {
    throw new KonserveError('ERR_INVALID_ARGUMENT', 'konserveDriver needs { store }: a konserve Store')
  }
  const { store } = opts
  const prefix = opts.prefix ?? 'unstorage'
  const key = (k: string): Key => [prefix, k]
  const own = (k: Key): string | undefined => (Array.isArray(k) && k.length === 2 && k[0] === prefix && typeof k[1] === 'string' ? k[1] : undefined)
  const under = (k: string, base: string) => !base || k === base || k.startsWith(base.endsWith(':') ? base : `${base}:`)
  /** This driver's keys under `base`, as konserve keys. */
  const listed = async (base: string): Promise<Key[]> => {
    const out: Key[] = []
    for (const m of await keys(store)) {
      const k = own(m.key)
      if (k !== undefined && under(k, base)) out.push(m.key)
    }
    return out
  }
  const value = (v: unknown) => (v === undefined ? null : (v as string))

  return {
    name: 'konserve',
    options: opts,
    getInstance: () => store,
    hasItem: (k) => exists(store, key(k)),
    getItem: async (k) => value(await get(store, key(k))),
    async getItems(items) {
      const ks = items.map((i) => key(i.key))
      const found = await multiGet(store, ks)
      return items.map((i, n) => ({ key: i.key, value: value(found.get(ks[n]!)) }))
    },
    async getItemRaw(k) {
      try {
        return (await readBlob(store, key(k))) ?? null
      } catch (err) {
        // Written by setItem: the value itself.
        if ((err as KonserveError).code === 'ERR_NOT_BINARY') return value(await get(store, key(k)))
        throw err
      }
    },
    async setItem(k, v) {
      await multiAssoc(store, [[key(k), v]])
    },
    async setItems(items) {
      await multiAssoc(
        store,
        items.map((i) => [key(i.key), i.value] as const),
      )
    },
    async setItemRaw(k, v) {
      await bassoc(store, key(k), v as Uint8Array)
    },
    async removeItem(k) {
      await multiDissoc(store, [key(k)])
    },
    async getMeta(k) {
      const m = await getMeta(store, key(k))
      return m ? { mtime: m.lastWrite, type: m.type, ...(m.revision !== undefined ? { revision: m.revision } : {}) } : null
    },
    getKeys: async (base) => (await listed(base)).map((k) => own(k)!),
    async clear(base) {
      const ks = await listed(base)
      if (ks.length > 0) await multiDissoc(store, ks)
    },
    /** Nothing to release: the store is the caller's. */
    dispose() {},
  }
})

export { konserveDriver }
export default konserveDriver
