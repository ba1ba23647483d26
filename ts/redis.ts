/**
 * `konserve/redis`: a konserve store on Redis (or a Redis Cluster) through
 * ioredis or node-redis v5, async only. See docs/BACKENDS.md for the layout
 * and the contract.
 *
 *     import { connectRedisStore } from 'konserve/redis'
 *     const db = await connectRedisStore({ url: 'redis://127.0.0.1:6379' })
 *     await updateIn(db, ['counter'], (n = 0) => n + 1)
 *
 * Importing this module also registers the `'redis'` backend of the store
 * registry (`createStore({ backend: 'redis', url })`, …), which the Node
 * entry also loads by itself on first use of that name.
 */
import { type Backend, type StoreConfig, type Store as StoreT, KonserveError, Store, close, registerBackend, storeExistsError, storeNotFoundError } from './index.js'
import type { StoreOptions, CompressorOption, EncryptorOption } from './store.js'
import { type RedisClient, RedisBacking } from './backends/redis.js'
import { connectChecks, openStoreTracker } from './backends/remote.js'
import { type RedisConn, isIoredis, isNodeRedis, isNodeRedisCluster, redisConn } from './backends/redis-client.js'

export interface RedisStoreOptions extends StoreOptions {
  /**
   * A Redis URL (`redis://host:port/db`, `rediss://…`): the store makes its own
   * client (ioredis if it is installed, else node-redis) and closes it with the store.
   */
  url?: string
  /**
   * A client, yours to close: ioredis (`new Redis(…)` or `new Redis.Cluster(…)`)
   * or node-redis v5 (`createClient(…)`; connected here if it is not yet).
   */
  client?: RedisClient
  /** The first part of every Redis key the store writes (default 'konserve'); no braces. */
  prefix?: string
  /** Compress new writes (LZ4), as a file store does: the same bytes. */
  compressor?: CompressorOption | null
  /** Encrypt new writes (AES-256-CBC + HMAC), as a file store does. */
  encryptor?: EncryptorOption | null
  /** With an encryptor: also read values that are not encrypted (migration). */
  acceptPlaintext?: boolean
  /** How long a write waits for a key locked by another client before ERR_LOCK_TIMEOUT (default 60000). */
  lockTimeoutMs?: number
  /** A lock's lease: it lapses this long after its holder stopped renewing it (died, lost the network). Default 30000. */
  lockLeaseMs?: number
  /** How long a replaced blob stays readable by readers that opened it before (default 60000). */
  blobGraceMs?: number
  /** Must not be true: a Redis store has no blocking form. */
  sync?: boolean
}

const { bad, ms, codecOptions } = connectChecks('connectRedisStore')

/** Stores of this process, by lock scope (server, database, prefix): deleteStore ends them. */
const openStores = openStoreTracker<StoreT>((s) => close(s))
const track = (store: StoreT): StoreT => openStores.track(store.backing.lockScope, store)

const unavailable = (what: string, err: unknown) => new KonserveError('ERR_BACKEND_UNAVAILABLE', `${what}: ${(err as Error)?.message ?? String(err)}`, { cause: err })
const noClient = (err?: unknown) =>
  new KonserveError('ERR_NOT_SUPPORTED', 'konserve/redis needs a Redis client package: npm install ioredis (or npm install redis, for node-redis)', err ? { cause: err } : {})

/** A client for `url`: ioredis if it is installed, else node-redis; connected, or ERR_BACKEND_UNAVAILABLE. */
async function clientFor(url: string, fn: string): Promise<RedisConn> {
  const shown = url.replace(/\/\/[^@/]*@/, '//')
  // Node's code for a package that is not installed (written so it is not taken for one of konserve's).
  const missing = (err: unknown) => /^(ERR_)?MODULE_NOT_FOUND$/.test((err as { code?: string })?.code ?? '')
  let ioredis: (new (url: string, o: object) => RedisClient) | undefined
  try {
    ioredis = (await import('ioredis')).default as never
  } catch (err) {
    if (!missing(err)) throw noClient(err)
  }
  if (ioredis) {
    const client = new ioredis(url, { lazyConnect: true, maxRetriesPerRequest: 3 })
    // Failures reach the caller as the failing operation's ERR_BACKEND_UNAVAILABLE; the client reconnects by itself.
    client.on('error', () => {})
    try {
      await client.connect()
    } catch (err) {
      client.disconnect()
      throw unavailable(`${fn}: cannot reach ${shown}`, err)
    }
    return redisConn(client)
  }
  let createClient: (o: object) => RedisClient
  try {
    createClient = (await import('redis')).createClient as never
  } catch (err) {
    throw noClient(err)
  }
  // No offline queue: while the server is away a command fails (ERR_BACKEND_UNAVAILABLE) instead of waiting for it.
  const client = createClient({ url, disableOfflineQueue: true, socket: { reconnectStrategy: (n: number) => Math.min(50 * 2 ** n, 2000) } })
  client.on('error', () => {})
  try {
    await connectOnce(client)
  } catch (err) {
    client.destroy()
    throw unavailable(`${fn}: cannot reach ${shown}`, err)
  }
  return redisConn(client)
}

/** Connects a node-redis client, failing on the first refused attempt (its reconnects are for later). */
function connectOnce(client: RedisClient): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (err: unknown) => {
      client.off('error', onError)
      reject(err)
    }
    client.on('error', onError)
    client.connect().then(
      () => {
        client.off('error', onError)
        resolve()
      },
      onError,
    )
  })
}

/** The connection for `{ url }` or `{ client }`, and whether the store owns it. */
async function connFor(options: { url?: unknown; client?: unknown }, fn: string): Promise<{ conn: RedisConn; owns: boolean }> {
  if ((options.url === undefined) === (options.client === undefined)) throw bad('give exactly one of { url } and { client }')
  if (options.client !== undefined) {
    const client = options.client as RedisClient
    if (isNodeRedisCluster(client)) throw bad('a node-redis cluster (createCluster) is not supported; use an ioredis Redis.Cluster')
    if (isIoredis(client)) return { conn: redisConn(client), owns: false }
    if (isNodeRedis(client)) {
      if (!client.isOpen) {
        try {
          await client.connect()
        } catch (err) {
          throw unavailable(`${fn}: cannot connect the node-redis client`, err)
        }
      }
      return { conn: redisConn(client), owns: false }
    }
    throw bad('client must be an ioredis client (new Redis(…), new Redis.Cluster(…)) or a node-redis v5 client (createClient(…))')
  }
  if (typeof options.url !== 'string') throw bad('url must be a string')
  return { conn: await clientFor(options.url, fn), owns: true }
}

/** Opens a konserve store on Redis: `{ url }` (the store owns the client) or `{ client }` (yours: ioredis or node-redis). */
export async function connectRedisStore(options: RedisStoreOptions): Promise<StoreT> {
  if (options?.sync === true) throw new KonserveError('ERR_NOT_SUPPORTED', 'the redis store has no blocking form: call connectRedisStore without { sync: true }')
  if (!options || typeof options !== 'object') throw bad('give exactly one of { url } and { client }')
  const prefix = prefixOf(options.prefix)
  const { compressor, encryptionKey } = codecOptions(options)
  const lockTimeoutMs = ms(options.lockTimeoutMs, 'lockTimeoutMs', 60_000)
  const lockLeaseMs = ms(options.lockLeaseMs, 'lockLeaseMs', 30_000)
  const blobGraceMs = ms(options.blobGraceMs, 'blobGraceMs', 60_000)
  const { conn, owns } = await connFor(options, 'connectRedisStore')
  const backing = new RedisBacking({
    conn,
    ownsClient: owns,
    prefix,
    compressor,
    encryptionKey,
    acceptPlaintext: options.acceptPlaintext === true,
    lockTimeoutMs,
    lockLeaseMs,
    blobGraceMs,
  })
  return track(new Store(backing, { serializer: options.serializer, serializers: options.serializers }))
}

function prefixOf(prefix: unknown): string {
  const p = prefix ?? 'konserve'
  if (typeof p !== 'string' || p === '' || /[{}]/.test(p)) throw bad('prefix must be a non-empty string without braces')
  return p
}

// ---- the registry's 'redis' backend -----------------------------------------------

/** `{ backend: 'redis', url | client, prefix?, ...connectRedisStore's options }`. */
export interface RedisStoreConfig extends Omit<RedisStoreOptions, 'sync'> {
  backend: 'redis'
}

/** The marker key createStore writes: `P:store`. */
const markerOf = (prefix: string) => `${prefix}:store`
/** What deleteStore deletes under P: the marker and the layout's keys (not other keys that merely start with P:). */
const ownKey = /^(?:store|[klx]:\{[0-9a-f]{32}\}|c:\{[0-9a-f]{32}\}:[0-9a-f]+)$/
const glob = (s: string) => s.replace(/[*?[\]\\]/g, '\\$&')

function configArgs(fn: string, config: StoreConfig): RedisStoreOptions & { prefix: string } {
  const { backend: _backend, ...options } = config
  if ('sync' in options) throw new KonserveError('ERR_INVALID_ARGUMENT', `${fn}: config.sync must be absent (pass { sync: true } as the last argument)`)
  return { ...(options as RedisStoreOptions), prefix: prefixOf(options.prefix) }
}

/** Runs `f` on a connection for the config (a new one for `url`, closed after). */
async function withConn<T>(fn: string, config: StoreConfig, f: (conn: RedisConn, prefix: string) => Promise<T>): Promise<T> {
  const o = configArgs(fn, config)
  const { conn, owns } = await connFor(o, fn)
  try {
    return await f(conn, o.prefix)
  } catch (err) {
    throw err instanceof KonserveError ? err : unavailable(`${fn}: Redis`, err)
  } finally {
    if (owns) await conn.close()
  }
}

/** Whether a store is at the prefix: its marker, or (a store made with connectRedisStore) any key's hash. */
async function storeAt(conn: RedisConn, prefix: string): Promise<boolean> {
  if (Number(await conn.send(['EXISTS', markerOf(prefix)])) === 1) return true
  const match = `${glob(prefix)}:k:{*}`
  for (const node of conn.scanNodes()) {
    let cursor = '0'
    do {
      const [next, found] = (await node.send(['SCAN', cursor, 'MATCH', match, 'COUNT', '1000'])) as [string, string[]]
      if (found.length > 0) return true
      cursor = next
    } while (cursor !== '0')
  }
  return false
}

const where = (o: RedisStoreOptions & { prefix: string }) => `the redis store with prefix ${JSON.stringify(o.prefix)}`

/**
 * The registry's `'redis'` backend. A store "exists" when its marker key
 * `P:store` exists (createStore writes it, SET NX: of two creators one wins)
 * or, for a store made by connectRedisStore without the registry, when any
 * key of its layout does. deleteStore ends this process's stores on it and
 * deletes the marker and every key of the layout under the prefix.
 */
export const redisBackend: Backend<StoreConfig> = {
  async exists(config) {
    return withConn('storeExists', config, storeAt)
  },
  async create(config) {
    const o = configArgs('createStore', config)
    const store = await connectRedisStore(o)
    const conn = (store.backing as RedisBacking).connection
    try {
      if (await storeAt(conn, o.prefix)) throw storeExistsError(where(o))
      if ((await conn.send(['SET', markerOf(o.prefix), 'konserve', 'NX'])) !== 'OK') throw storeExistsError(where(o))
    } catch (err) {
      await close(store).catch(() => {})
      throw err instanceof KonserveError ? err : unavailable('createStore: Redis', err)
    }
    return store
  },
  async connect(config) {
    const o = configArgs('connectStore', config)
    const store = await connectRedisStore(o)
    let found: boolean
    try {
      found = await storeAt((store.backing as RedisBacking).connection, o.prefix)
    } catch (err) {
      await close(store).catch(() => {})
      throw unavailable('connectStore: Redis', err)
    }
    if (!found) {
      await close(store)
      throw storeNotFoundError(where(o))
    }
    return store
  },
  async delete(config) {
    await withConn('deleteStore', config, async (conn, prefix) => {
      const scope = `redis:${conn.scope}#${prefix}`
      await openStores.endAll(scope, `the redis store with prefix ${JSON.stringify(prefix)} was deleted (deleteStore)`)
      const match = `${glob(prefix)}:*`
      for (const node of conn.scanNodes()) {
        let cursor = '0'
        do {
          const [next, found] = (await node.send(['SCAN', cursor, 'MATCH', match, 'COUNT', '1000'])) as [string, string[]]
          const mine = found.filter((k) => ownKey.test(k.slice(prefix.length + 1)))
          // One DEL per key on a Cluster (keys of different slots), one per batch otherwise.
          if (conn.cluster) await Promise.all(mine.map((k) => conn.send(['DEL', k])))
          else if (mine.length > 0) await conn.send(['DEL', ...mine])
          cursor = next
        } while (cursor !== '0')
      }
    })
  },
}

registerBackend('redis', redisBackend)

export default connectRedisStore
