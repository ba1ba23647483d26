/**
 * `konserve/redis`: a konserve store on Redis (or a Redis Cluster) through
 * ioredis, async only. See docs/BACKENDS.md for the layout and the contract.
 *
 *     import { connectRedisStore } from 'konserve/redis'
 *     const db = await connectRedisStore({ url: 'redis://127.0.0.1:6379' })
 *     await updateIn(db, ['counter'], (n = 0) => n + 1)
 */
import { type Store as StoreT, KonserveError, Store } from './index.js'
import type { StoreOptions, CompressorOption, EncryptorOption } from './store.js'
import { type RedisClient, RedisBacking } from './backends/redis.js'

export interface RedisStoreOptions extends StoreOptions {
  /** A Redis URL (`redis://host:port/db`, `rediss://…`): the store makes its own client and closes it with the store. */
  url?: string
  /** An ioredis client (`new Redis(…)` or `new Redis.Cluster(…)`), yours to close. */
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

const bad = (message: string) => new KonserveError('ERR_INVALID_ARGUMENT', `connectRedisStore: ${message}`)

function ms(v: unknown, name: string, dflt: number): number {
  if (v === undefined) return dflt
  if (typeof v !== 'number' || !(v >= 0) || !Number.isFinite(v)) throw bad(`${name} must be a finite number >= 0, not ${String(v)}`)
  return v
}

/** Where a client points, for the lock scope (no credentials). */
function scopeOf(client: RedisClient): string {
  if (client.isCluster) {
    const nodes = (client.startupNodes ?? []) as Array<{ host?: string; port?: number } | string | number>
    return `cluster:${nodes.map((n) => (typeof n === 'object' ? `${n.host ?? '127.0.0.1'}:${n.port ?? 6379}` : String(n))).join(',')}`
  }
  const o = client.options ?? {}
  return o.path ? `unix:${o.path}/${o.db ?? 0}` : `${o.host ?? '127.0.0.1'}:${o.port ?? 6379}/${o.db ?? 0}`
}

/** Opens a konserve store on Redis: `{ url }` (the store owns the client) or `{ client }` (yours). */
export async function connectRedisStore(options: RedisStoreOptions): Promise<StoreT> {
  if (options?.sync === true) throw new KonserveError('ERR_NOT_SUPPORTED', 'the redis store has no blocking form: call connectRedisStore without { sync: true }')
  if (!options || typeof options !== 'object' || (options.url === undefined) === (options.client === undefined)) {
    throw bad('give exactly one of { url } and { client }')
  }
  const prefix = options.prefix ?? 'konserve'
  if (typeof prefix !== 'string' || prefix === '' || /[{}]/.test(prefix)) throw bad('prefix must be a non-empty string without braces')
  let compressor = 0
  if (options.compressor != null) {
    if (options.compressor.type !== 'lz4') throw bad(`unknown compressor ${JSON.stringify(options.compressor)}; the one compressor is { type: 'lz4' }`)
    compressor = 1
  }
  let encryptionKey: Uint8Array | undefined
  if (options.encryptor != null) {
    const { type, key } = options.encryptor
    if (type !== 'aes') throw bad(`unknown encryptor type ${JSON.stringify(type)}; the one encryptor is { type: 'aes', key }`)
    encryptionKey = typeof key === 'string' ? Buffer.from(key, 'utf8') : key instanceof Uint8Array ? Buffer.from(key) : undefined
    if (!encryptionKey || encryptionKey.length === 0) throw bad('the aes encryptor needs a non-empty key (a string or a Uint8Array)')
  }
  const lockTimeoutMs = ms(options.lockTimeoutMs, 'lockTimeoutMs', 60_000)
  const lockLeaseMs = ms(options.lockLeaseMs, 'lockLeaseMs', 30_000)
  const blobGraceMs = ms(options.blobGraceMs, 'blobGraceMs', 60_000)
  let client = options.client
  const ownsClient = client === undefined
  if (ownsClient) {
    if (typeof options.url !== 'string') throw bad('url must be a string')
    let Redis: new (url: string, o: object) => RedisClient
    try {
      Redis = (await import('ioredis')).default as never
    } catch (err) {
      throw new KonserveError('ERR_NOT_SUPPORTED', 'konserve/redis needs the ioredis package: npm install ioredis', { cause: err })
    }
    client = new Redis(options.url, { lazyConnect: true, maxRetriesPerRequest: 3 })
    // Failures reach the caller as the failing operation's ERR_BACKEND_UNAVAILABLE; the client reconnects by itself.
    client.on('error', () => {})
    try {
      await client.connect()
    } catch (err) {
      client.disconnect()
      throw new KonserveError('ERR_BACKEND_UNAVAILABLE', `connectRedisStore: cannot reach ${options.url.replace(/\/\/[^@/]*@/, '//')}: ${(err as Error).message}`, { cause: err })
    }
  }
  const backing = new RedisBacking({
    client,
    ownsClient,
    prefix,
    compressor,
    encryptionKey,
    acceptPlaintext: options.acceptPlaintext === true,
    lockTimeoutMs,
    lockLeaseMs,
    blobGraceMs,
    scope: scopeOf(client),
  })
  // TEMPORARY (issue 20): the facade still takes the old Backing shape.
  return new Store(backing, { serializer: options.serializer, serializers: options.serializers })
}

export default connectRedisStore
