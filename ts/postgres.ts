/**
 * `konserve/postgres`: a konserve store on PostgreSQL through node-postgres
 * (`pg`), async only. See docs/BACKENDS.md for the layout and the contract.
 *
 *     import { connectPostgresStore } from 'konserve/postgres'
 *     const db = await connectPostgresStore({ connectionString: 'postgres://127.0.0.1/app' })
 *     await updateIn(db, ['counter'], (n = 0) => n + 1)
 *
 * Importing this module also registers the 'postgres' backend with the store
 * registry: `connectStore({ backend: 'postgres', connectionString })`.
 */
import { hostname } from 'node:os'
import { type Store as StoreT, KonserveError, Store, close, registerBackend, storeExistsError, storeNotFoundError } from './index.js'
// Types from the main entry too (not ./store.js): the subpaths' declarations then share no chunk of their own.
import type { StoreOptions, CompressorOption, EncryptorOption } from './index.js'
import { type PgClient, type PgPool, type PgTables, PostgresBacking, createTablesSql, tablesOf, typed } from './backends/postgres.js'
import { connectChecks, openStoreTracker } from './backends/remote.js'

export type { PgPool, PgClient } from './backends/postgres.js'

export interface PostgresStoreOptions extends StoreOptions {
  /** A PostgreSQL URL (`postgres://user:pass@host:port/db`): the store makes its own pool and ends it with the store. */
  connectionString?: string
  /** A node-postgres `Pool` (`new pg.Pool(…)`), yours to end. A lock holds one of its connections while held. */
  pool?: PgPool
  /** The store's table (default 'konserve'), `name` or `schema.name`; `<name>_chunks` and `<name>_records` go beside it. */
  table?: string
  /** With `connectionString`: the most connections the store's pool opens (default 10). */
  maxConnections?: number
  /** Compress new writes (LZ4), as a file store does: the same bytes. */
  compressor?: CompressorOption | null
  /** Encrypt new writes (AES-256-CBC + HMAC), as a file store does. */
  encryptor?: EncryptorOption | null
  /** With an encryptor: also read values that are not encrypted (migration). */
  acceptPlaintext?: boolean
  /** How long a write waits for a key locked by another client before ERR_LOCK_TIMEOUT (default 60000). */
  lockTimeoutMs?: number
  /** How long a replaced blob stays readable by readers that opened it before (default 60000). */
  blobGraceMs?: number
  /** Must not be true: a PostgreSQL store has no blocking form. */
  sync?: boolean
}

const bad = (fn: string, message: string) => connectChecks(fn).bad(message)
const ms = (fn: string, v: unknown, name: string, dflt: number) => connectChecks(fn).ms(v, name, dflt)

/** Where a pool points, for the lock scope and messages (no credentials). */
function scopeOf(options: PostgresStoreOptions): string {
  const cs = options.connectionString ?? (options.pool as { options?: { connectionString?: string } } | undefined)?.options?.connectionString
  if (cs) {
    try {
      const u = new URL(cs)
      return `${u.hostname || 'localhost'}:${u.port || 5432}${u.pathname || '/'}`
    } catch {
      return cs.replace(/\/\/[^@/]*@/, '//')
    }
  }
  const o = (options.pool as { options?: { host?: string; port?: number; database?: string } } | undefined)?.options ?? {}
  return `${o.host ?? process.env.PGHOST ?? 'localhost'}:${o.port ?? process.env.PGPORT ?? 5432}/${o.database ?? process.env.PGDATABASE ?? ''}`
}

type Mode = 'either' | 'create' | 'connect'

interface Checked {
  tables: PgTables
  compressor: number
  encryptionKey?: Uint8Array
}

function check(fn: string, options: PostgresStoreOptions): Checked {
  if (options?.sync === true)
    throw new KonserveError('ERR_NOT_SUPPORTED', `${fn}: the postgres store has no blocking form: call it without { sync: true }`)
  if (!options || typeof options !== 'object' || (options.connectionString === undefined) === (options.pool === undefined)) {
    throw bad(fn, 'give exactly one of { connectionString } and { pool }')
  }
  if (options.connectionString !== undefined && typeof options.connectionString !== 'string') throw bad(fn, 'connectionString must be a string')
  if (options.pool !== undefined && (typeof options.pool !== 'object' || typeof options.pool?.connect !== 'function'))
    throw bad(fn, 'pool must be a pg Pool')
  const tables = tablesOf(options.table ?? 'konserve', fn)
  const { compressor, encryptionKey } = connectChecks(fn).codecOptions(options)
  return { tables, compressor, encryptionKey }
}

/** The pool of `options`: the caller's, or a new one on `connectionString` (owned). */
async function poolOf(fn: string, options: PostgresStoreOptions): Promise<{ pool: PgPool; owns: boolean }> {
  if (options.pool) return { pool: options.pool, owns: false }
  let Pool: new (o: object) => PgPool & { on(e: 'error', f: (err: Error) => void): unknown }
  try {
    const pg = (await import('pg')) as { default?: { Pool: typeof Pool }; Pool?: typeof Pool }
    Pool = (pg.default?.Pool ?? pg.Pool)!
  } catch (err) {
    throw new KonserveError('ERR_NOT_SUPPORTED', `${fn}: konserve/postgres needs the pg package: npm install pg`, { cause: err })
  }
  const max = options.maxConnections ?? 10
  if (!Number.isInteger(max) || max < 1) throw bad(fn, `maxConnections must be an integer >= 1, not ${String(max)}`)
  const pool = new Pool({
    connectionString: options.connectionString,
    max,
    // Named in pg_stat_activity: a lock timeout names the holder by host and pid.
    application_name: `konserve ${hostname()}:${process.pid}`,
    connectionTimeoutMillis: 10_000,
  })
  // An idle connection that breaks (the server restarted) is dropped by the pool; the next operation connects anew.
  pool.on('error', () => {})
  return { pool, owns: true }
}

/** Whether the store's main table exists. */
async function tableExists(pool: PgPool, tables: PgTables): Promise<boolean> {
  const r = await pool.query({ text: 'SELECT to_regclass($1) IS NOT NULL AS e', values: [tables.regclass] })
  return r.rows[0]?.e === true
}

/** Creates the tables (mode 'create': only if missing, else ERR_STORE_EXISTS; 'connect': ERR_STORE_NOT_FOUND if missing). */
async function prepare(pool: PgPool, tables: PgTables, mode: Mode): Promise<void> {
  const client: PgClient = await pool.connect()
  const onError = () => {}
  client.on('error', onError)
  let broken = false
  try {
    await client.query('BEGIN')
    // Two creators at once: one at a time (CREATE TABLE IF NOT EXISTS races on the catalog).
    await client.query({ text: "SELECT pg_advisory_xact_lock(hashtext('konserve:create:' || $1))", values: [tables.regclass] })
    const exists = (await client.query({ text: 'SELECT to_regclass($1) IS NOT NULL AS e', values: [tables.regclass] })).rows[0]?.e === true
    if (mode === 'create' && exists) throw storeExistsError(`the postgres store in table ${tables.name}`)
    if (mode === 'connect' && !exists) throw storeNotFoundError(`the postgres store in table ${tables.name}`)
    // Missing parts (a table of a store made by an older version, or dropped) are made too.
    await client.query(createTablesSql(tables))
    await client.query('COMMIT')
  } catch (err) {
    await client.query('ROLLBACK').catch(() => (broken = true))
    throw err
  } finally {
    client.removeListener('error', onError)
    client.release(broken)
  }
}

/** The stores of this process open on each server and table, so that deleteStore ends them (ERR_STORE_DELETED). */
const openStores = openStoreTracker<StoreT>((s) => close(s))
const tableScope = (options: PostgresStoreOptions, tables: PgTables) => `${scopeOf(options)}#${tables.main}`

async function open(fn: string, options: PostgresStoreOptions, mode: Mode): Promise<StoreT> {
  const c = check(fn, options)
  const lockTimeoutMs = ms(fn, options.lockTimeoutMs, 'lockTimeoutMs', 60_000)
  const blobGraceMs = ms(fn, options.blobGraceMs, 'blobGraceMs', 60_000)
  const { pool, owns } = await poolOf(fn, options)
  try {
    await prepare(pool, c.tables, mode)
  } catch (err) {
    if (owns) await pool.end().catch(() => {})
    if (err instanceof KonserveError) throw err
    throw typed(err, `${fn}: cannot reach ${scopeOf(options)}`)
  }
  const backing = new PostgresBacking({
    pool,
    ownsPool: owns,
    tables: c.tables,
    compressor: c.compressor,
    encryptionKey: c.encryptionKey,
    acceptPlaintext: options.acceptPlaintext === true,
    lockTimeoutMs,
    blobGraceMs,
    scope: scopeOf(options),
  })
  return openStores.track(tableScope(options, c.tables), new Store(backing, { serializer: options.serializer, serializers: options.serializers }))
}

/** Opens a konserve store on PostgreSQL (creating its tables if missing): `{ connectionString }` (the store owns the pool) or `{ pool }` (yours). */
export async function connectPostgresStore(options: PostgresStoreOptions): Promise<StoreT> {
  return open('connectPostgresStore', options, 'either')
}

// ---- the registry backend ----

/** `{ backend: 'postgres', connectionString | pool, table?, ...connectPostgresStore's options }`. */
export interface PostgresStoreConfig extends PostgresStoreOptions {
  backend: 'postgres'
  [field: string]: unknown
}

function optionsOf(fn: string, config: PostgresStoreConfig, sync: boolean): PostgresStoreOptions {
  if (sync) throw new KonserveError('ERR_NOT_SUPPORTED', `${fn}: the "postgres" backend has no blocking form; call it without { sync: true }`)
  const { backend: _backend, ...options } = config
  if ('sync' in options) throw bad(fn, 'config.sync must be absent (pass { sync: true } as the last argument)')
  return options
}

/** Runs `f` on the config's pool (a temporary one for a connectionString). */
async function withPool<T>(fn: string, options: PostgresStoreOptions, f: (pool: PgPool, tables: PgTables) => Promise<T>): Promise<T> {
  const { tables } = check(fn, options)
  const { pool, owns } = await poolOf(fn, options)
  try {
    return await f(pool, tables)
  } catch (err) {
    throw typed(err, `${fn}: ${scopeOf(options)}`)
  } finally {
    if (owns) await pool.end().catch(() => {})
  }
}

/** The 'postgres' backend of the store registry (registered when this module loads). */
export const postgresBackend = {
  create: (config: PostgresStoreConfig, { sync }: { sync: boolean }) => open('createStore', optionsOf('createStore', config, sync), 'create'),
  connect: (config: PostgresStoreConfig, { sync }: { sync: boolean }) => open('connectStore', optionsOf('connectStore', config, sync), 'connect'),
  exists: (config: PostgresStoreConfig, { sync }: { sync: boolean }) =>
    withPool('storeExists', optionsOf('storeExists', config, sync), (pool, tables) => tableExists(pool, tables)),
  delete: (config: PostgresStoreConfig, { sync }: { sync: boolean }) =>
    withPool('deleteStore', optionsOf('deleteStore', config, sync), async (pool, t) => {
      await openStores.endAll(tableScope(config, t), `the postgres store in table ${JSON.stringify(t.name)} was deleted (deleteStore)`)
      await pool.query(`DROP TABLE IF EXISTS ${t.main}, ${t.chunks}, ${t.records}`)
    }),
}

registerBackend('postgres', postgresBackend)

export default connectPostgresStore
