/**
 * `konserve/s3`: a konserve store on S3 (or an S3-compatible server:
 * SeaweedFS, MinIO, …) through `@aws-sdk/client-s3`, async only. See
 * docs/BACKENDS.md for the layout and the contract.
 *
 *     import { connectS3Store } from 'konserve/s3'
 *     const db = await connectS3Store({ bucket: 'data', prefix: 'app', client: new S3Client({ … }) })
 *     await updateIn(db, ['counter'], (n = 0) => n + 1)
 *
 * Importing it also registers the backend `'s3'` with the store registry:
 * `createStore({ backend: 's3', bucket, prefix, endpoint, … })`.
 */
// The option types from the entry, not ./store.js: its declarations then stay in the entry's (no shared chunk).
import { type Store as StoreT, type StoreOptions, type CompressorOption, type EncryptorOption, KonserveError, Store, close, registerBackend, storeExistsError, storeNotFoundError } from './index.js'
import { MIN_PART, type S3Client, type S3Sdk, S3Backing, s3Place, typedS3 } from './backends/s3.js'
import { connectChecks, openStoreTracker } from './backends/remote.js'

export interface S3StoreOptions extends StoreOptions {
  /** The bucket (it must exist). */
  bucket: string
  /** The first part of every object name the store writes (default 'konserve'); no leading or trailing slash. */
  prefix?: string
  /** An `S3Client` of `@aws-sdk/client-s3`, yours to destroy. Or give `endpoint`/`region`/`credentials` and the store makes one. */
  client?: S3Client
  /** The server's URL (`http://127.0.0.1:8333`); without it, AWS for `region`. */
  endpoint?: string
  /** Default 'us-east-1'. */
  region?: string
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string }
  /** Path-style URLs (`endpoint/bucket/key`), as most S3-compatible servers want. Default true with an `endpoint`. */
  forcePathStyle?: boolean
  /** How many times the client tries a request (default 3): with the store's own client only. */
  maxAttempts?: number
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
  /** The part size of a blob's multipart upload, at least 5 MiB (default 8 MiB); two parts are in memory while a blob streams in. */
  partSize?: number
  /** Must not be true: an S3 store has no blocking form. */
  sync?: boolean
}

const { bad, ms, codecOptions } = connectChecks('connectS3Store')

async function loadSdk(): Promise<S3Sdk> {
  try {
    return (await import('@aws-sdk/client-s3')) as S3Sdk
  } catch (err) {
    throw new KonserveError('ERR_NOT_SUPPORTED', 'konserve/s3 needs the @aws-sdk/client-s3 package: npm install @aws-sdk/client-s3', { cause: err })
  }
}

/** The client, whether the store owns it, and where it points (for the lock scope). */
async function clientOf(options: S3StoreOptions, sdk: S3Sdk): Promise<{ client: S3Client; owns: boolean; scope: string }> {
  if (options.client !== undefined) {
    const c = options.client
    if (!c || typeof c.send !== 'function') throw bad('client must be an S3Client of @aws-sdk/client-s3')
    let scope = 'aws'
    try {
      const ep = await c.config?.endpoint?.()
      if (ep) scope = `${ep.protocol}//${ep.hostname}:${ep.port ?? ''}${ep.path ?? ''}`
      else scope = `aws:${await c.config?.region?.()}`
    } catch {
      // A scope of 'aws': stores in one process on one bucket and prefix share locks anyway.
    }
    return { client: c, owns: false, scope }
  }
  if (options.endpoint !== undefined && typeof options.endpoint !== 'string') throw bad('endpoint must be a URL string')
  const region = options.region ?? 'us-east-1'
  if (typeof region !== 'string') throw bad('region must be a string')
  const client = new sdk.S3Client({
    region,
    ...(options.endpoint ? { endpoint: options.endpoint } : {}),
    ...(options.credentials ? { credentials: options.credentials } : {}),
    forcePathStyle: options.forcePathStyle ?? options.endpoint !== undefined,
    maxAttempts: options.maxAttempts ?? 3,
    // Checksums only where S3 requires them: S3-compatible servers differ in the newer ones.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  })
  return { client, owns: true, scope: options.endpoint ?? `aws:${region}` }
}

/** The options, checked, as the backing takes them (without the client). */
function settings(options: S3StoreOptions) {
  if (options?.sync === true) throw new KonserveError('ERR_NOT_SUPPORTED', 'the s3 store has no blocking form: call connectS3Store without { sync: true }')
  if (!options || typeof options !== 'object') throw bad('give { bucket, prefix?, client } or { bucket, prefix?, endpoint, region, credentials }')
  if (typeof options.bucket !== 'string' || options.bucket === '') throw bad('bucket must be a non-empty string')
  if (options.client !== undefined && (options.endpoint !== undefined || options.credentials !== undefined)) throw bad('give either { client } or { endpoint, credentials }, not both')
  const prefix = options.prefix ?? 'konserve'
  if (typeof prefix !== 'string' || prefix === '' || prefix.startsWith('/') || prefix.endsWith('/')) throw bad('prefix must be a non-empty string without a leading or trailing slash')
  const { compressor, encryptionKey } = codecOptions(options)
  const partSize = ms(options.partSize, 'partSize', 8 * 1024 * 1024)
  if (partSize < MIN_PART) throw bad(`partSize must be at least 5 MiB (S3's minimum part), not ${partSize}`)
  return {
    bucket: options.bucket,
    prefix,
    compressor,
    encryptionKey,
    acceptPlaintext: options.acceptPlaintext === true,
    lockTimeoutMs: ms(options.lockTimeoutMs, 'lockTimeoutMs', 60_000),
    lockLeaseMs: ms(options.lockLeaseMs, 'lockLeaseMs', 30_000),
    partSize,
  }
}

/** Opens a konserve store on S3: `{ bucket, prefix, client }` (your client) or `{ bucket, prefix, endpoint, region, credentials }` (the store's). */
export async function connectS3Store(options: S3StoreOptions): Promise<StoreT> {
  const s = settings(options)
  const sdk = await loadSdk()
  const { client, owns, scope } = await clientOf(options, sdk)
  // The bucket must be reachable: a store that cannot reach it fails here, not at its first write.
  try {
    await client.send(new sdk.HeadBucketCommand({ Bucket: s.bucket }))
  } catch (err) {
    if (owns) client.destroy?.()
    const e = typedS3(err, `connectS3Store: bucket ${s.bucket}`)
    if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) {
      throw new KonserveError('ERR_BACKEND_UNAVAILABLE', `connectS3Store: the bucket ${s.bucket} does not exist (create it first)`, { cause: err })
    }
    throw e
  }
  const backing = new S3Backing({ ...s, client, sdk, ownsClient: owns, scope })
  return openStores.track(backing.lockScope, new Store(backing, { serializer: options.serializer, serializers: options.serializers }))
}

/** The stores of this process open on each endpoint, bucket and prefix: deleteStore ends them (ERR_STORE_DELETED). */
const openStores = openStoreTracker<StoreT>((s) => close(s))

// ---- the registry backend: { backend: 's3', bucket, prefix, ...connectS3Store's options } ----

export interface S3StoreConfig extends S3StoreOptions {
  backend: 's3'
  [field: string]: unknown
}

/** The registry's marker of a store: `P/konserve-store`, written by createStore with If-None-Match. */
const MARKER = 'konserve-store'

/** Runs `f` with a client for the config (the config's own, or one made and destroyed here). */
async function withClient<T>(config: S3StoreConfig, f: (client: S3Client, sdk: S3Sdk, s: ReturnType<typeof settings>, scope: string) => Promise<T>): Promise<T> {
  const s = settings(config)
  const sdk = await loadSdk()
  const { client, owns, scope } = await clientOf(config, sdk)
  try {
    return await f(client, sdk, s, scope)
  } catch (err) {
    throw typedS3(err, `the s3 store s3://${s.bucket}/${s.prefix}`)
  } finally {
    if (owns) client.destroy?.()
  }
}

async function markerExists(client: S3Client, sdk: S3Sdk, s: { bucket: string; prefix: string }): Promise<boolean> {
  try {
    await client.send(new sdk.HeadObjectCommand({ Bucket: s.bucket, Key: `${s.prefix}/${MARKER}` }))
    return true
  } catch (err) {
    if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return false
    throw err
  }
}

function storeConfig(config: S3StoreConfig): S3StoreOptions {
  const { backend: _b, ...rest } = config
  return rest
}

/** `connectStore({ backend: 's3', bucket, prefix, … })` and the rest of the registry, on S3. */
export const s3Backend = {
  async create(config: S3StoreConfig): Promise<StoreT> {
    await withClient(config, async (client, sdk, s) => {
      try {
        await client.send(new sdk.PutObjectCommand({ Bucket: s.bucket, Key: `${s.prefix}/${MARKER}`, Body: 'konserve store\n', IfNoneMatch: '*' }))
      } catch (err) {
        if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 412) throw storeExistsError(`the s3 store s3://${s.bucket}/${s.prefix}`)
        throw err
      }
    })
    return connectS3Store(storeConfig(config))
  },
  async connect(config: S3StoreConfig): Promise<StoreT> {
    const there = await withClient(config, (client, sdk, s) => markerExists(client, sdk, s))
    if (!there) throw storeNotFoundError(`the s3 store s3://${config.bucket}/${config.prefix ?? 'konserve'}`)
    return connectS3Store(storeConfig(config))
  },
  exists(config: S3StoreConfig): Promise<boolean> {
    return withClient(config, (client, sdk, s) => markerExists(client, sdk, s))
  },
  /** Ends this process's stores open on it, then deletes every object under the prefix (the marker last). */
  delete(config: S3StoreConfig): Promise<void> {
    return withClient(config, async (client, sdk, s, scope) => {
      await openStores.endAll(s3Place(scope, s.bucket, s.prefix), `the s3 store s3://${s.bucket}/${s.prefix} was deleted (deleteStore)`)
      // From the start each time: deleting while paging could skip objects.
      for (;;) {
        const r = await client.send(new sdk.ListObjectsV2Command({ Bucket: s.bucket, Prefix: `${s.prefix}/` }))
        const objects = ((r.Contents as Array<{ Key: string }> | undefined) ?? []).filter((c) => c.Key !== `${s.prefix}/${MARKER}`).map((c) => ({ Key: c.Key }))
        if (objects.length === 0) break
        await client.send(new sdk.DeleteObjectsCommand({ Bucket: s.bucket, Delete: { Objects: objects, Quiet: true } }))
      }
      await client.send(new sdk.DeleteObjectCommand({ Bucket: s.bucket, Key: `${s.prefix}/${MARKER}` }))
    })
  },
}

registerBackend('s3', s3Backend)

export default connectS3Store
