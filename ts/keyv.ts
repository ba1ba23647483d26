/**
 * `konserve/keyv`: a Keyv storage adapter over any konserve store.
 *
 *     import Keyv from 'keyv'
 *     import { konserveKeyv } from 'konserve/keyv'
 *     const keyv = new Keyv({ store: konserveKeyv(db) })
 *
 * Each Keyv key (as Keyv hands it over, `namespace:key`) is stored under the
 * konserve key `[prefix, key]` (prefix 'keyv' unless given), its value as
 * `{ v, e }`: what Keyv serialized, and the expiry in ms since the epoch
 * (absent without a TTL). An expired entry reads as missing and is deleted
 * when read. Uses only the public API, so it works over every store (file,
 * memory, cached, tiered, Redis); the store stays the caller's to close.
 */
import { EventEmitter } from 'node:events'
import { type Key, type Store, dissoc, get, keys, multiAssoc, multiDissoc, multiGet } from './index.js'

export interface KonserveKeyvOptions {
  /** The first element of every konserve key this adapter writes (default 'keyv'). */
  prefix?: string
}

interface Entry {
  /** The value as Keyv handed it over (usually its serialized string). */
  v: unknown
  /** Expiry, ms since the epoch; absent: never. */
  e?: number
}

const live = (x: unknown): x is Entry => x !== null && typeof x === 'object' && 'v' in x && (typeof (x as Entry).e !== 'number' || Date.now() <= (x as Entry).e!)

/** The Keyv storage adapter (Keyv's `KeyvStoreAdapter` shape). */
export class KonserveKeyv extends EventEmitter {
  /** Keyv reads and sets options here (`opts.deserialize`, ...). */
  opts: Record<string, unknown> = { dialect: 'konserve', url: '' }
  /** Set by Keyv: the namespace `clear` and `iterator` keep to. */
  namespace?: string
  readonly prefix: string

  constructor(
    readonly store: Store,
    options: KonserveKeyvOptions = {},
  ) {
    super()
    this.prefix = options.prefix ?? 'keyv'
  }

  private key(k: string): Key {
    return [this.prefix, k]
  }

  /** The Keyv key of a konserve key this adapter wrote, or undefined. */
  private own(k: Key): string | undefined {
    if (!Array.isArray(k) || k.length !== 2 || k[0] !== this.prefix || typeof k[1] !== 'string') return undefined
    return k[1]
  }

  private inNamespace(k: string, namespace = this.namespace): boolean {
    return !namespace || k.startsWith(`${namespace}:`)
  }

  async get<Value>(key: string): Promise<Value | undefined> {
    const k = this.key(key)
    const x = await get(this.store, k)
    if (x === undefined) return undefined
    if (!live(x)) {
      await dissoc(this.store, k)
      return undefined
    }
    return x.v as Value
  }

  async getMany<Value>(ks: string[]): Promise<Array<Value | undefined>> {
    const wanted = ks.map((k) => this.key(k))
    const found = await multiGet(this.store, wanted)
    const expired = wanted.filter((k) => found.has(k) && !live(found.get(k)))
    if (expired.length > 0) await multiDissoc(this.store, expired)
    return wanted.map((k) => {
      const x = found.get(k)
      return live(x) ? (x.v as Value) : undefined
    })
  }

  /** `ttl` in ms, as Keyv gives it; none or 0: no expiry. */
  async set(key: string, value: unknown, ttl?: number): Promise<boolean> {
    await multiAssoc(this.store, [[this.key(key), entry(value, ttl)]])
    return true
  }

  async setMany(values: Array<{ key: string; value: unknown; ttl?: number }>): Promise<void> {
    await multiAssoc(
      this.store,
      values.map(({ key, value, ttl }) => [this.key(key), entry(value, ttl)] as const),
    )
  }

  async delete(key: string): Promise<boolean> {
    const k = this.key(key)
    const x = await get(this.store, k)
    const existed = await dissoc(this.store, k)
    return existed && live(x)
  }

  async deleteMany(ks: string[]): Promise<boolean> {
    const existed = await multiDissoc(this.store, ks.map((k) => this.key(k)))
    return [...existed.values()].some(Boolean)
  }

  async has(key: string): Promise<boolean> {
    return (await this.get(key)) !== undefined
  }

  async hasMany(ks: string[]): Promise<boolean[]> {
    return (await this.getMany(ks)).map((v) => v !== undefined)
  }

  /** Deletes this adapter's keys in the current namespace (all of them without one). */
  async clear(): Promise<void> {
    const mine: Key[] = []
    for (const m of await keys(this.store)) {
      const k = this.own(m.key)
      if (k !== undefined && this.inNamespace(k)) mine.push(m.key)
    }
    if (mine.length > 0) await multiDissoc(this.store, mine)
  }

  /** `[key, value]` of every live entry in `namespace` (Keyv deserializes the values). */
  async *iterator<Value>(namespace?: string): AsyncGenerator<[string, Value], void> {
    for (const m of await keys(this.store)) {
      const k = this.own(m.key)
      if (k === undefined || !this.inNamespace(k, namespace)) continue
      const x = await get(this.store, m.key)
      if (live(x)) yield [k, x.v as Value]
    }
  }

  /** Nothing to release: the store is the caller's. */
  async disconnect(): Promise<void> {}
}

function entry(value: unknown, ttl?: number): Entry {
  return typeof ttl === 'number' && ttl > 0 ? { v: value, e: Date.now() + ttl } : { v: value }
}

/** A Keyv storage adapter over `store`: `new Keyv({ store: konserveKeyv(db) })`. */
export function konserveKeyv(store: Store, options?: KonserveKeyvOptions): KonserveKeyv {
  return new KonserveKeyv(store, options)
}

export default konserveKeyv
