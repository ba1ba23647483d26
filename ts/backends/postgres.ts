/**
 * The PostgreSQL backing (docs/BACKENDS.md), in the new shape (../backing/seam.ts):
 * every operation is an `asyncOp('postgres', …)`, there is no blocking form.
 *
 * Three tables, for a table name T (default `konserve`, optionally
 * schema-qualified; quoted as given):
 * - `T` one row per key: `name` (the 32 hex digits of xxh3_128(CKE), the key
 *   file's name without `.ksv`), `kind` (0 value, 1 chunked blob, 2 log),
 *   `head_len` (header + meta segment), `file` bytea: a value's whole key
 *   file, byte for byte; a blob's head followed by its chunk table and
 *   trailer; a log's head. A blob's `gen`/`chunks`, a log's
 *   `first`/`next`/`stamp` (first index, next index, last stamp).
 * - `T_chunks` (name, gen, idx, data, until): a blob generation's stored
 *   chunks (FORMAT.md §4.5). Written inside the blob writer's transaction,
 *   so a writer that dies or aborts leaves nothing; a replaced generation
 *   gets `until` = now + grace, and is deleted by a later write after that.
 * - `T_records` (name, idx, data): a log's records as FORMAT.md §4.6 stores them.
 *
 * Every write is one statement (data-modifying CTEs), so it is atomic on the
 * server and one round trip; a multi-key put is one statement too.
 *
 * Locks are session-level advisory locks taken on a connection checked out
 * of the pool for as long as the lock is held; every operation on a locked
 * key runs on that connection (so a write is fenced: it cannot land once the
 * connection, and with it the lock, is gone). A client that dies closes its
 * connections, and the server drops their locks at once: no lease.
 */
import { randomBytes } from 'node:crypto'
import { type LogInfo, type LogRecord, type NewRecord, type RawEntry, type RawListing, type RawMeta, type RawWrite, keyId } from '../backing/index.js'
import type { Backing, BlobSink, BlobSource, ListCursor, LogCursor } from '../backing/seam.js'
import { createPureCodec, type PureCodec } from './pure/codec.js'
import { closableCursor, corrupt, declaredLength, logInfo, notALog, notBinary, readStoredRecord, stagedBlobWriter, typedOps, u8 } from './remote.js'
import { KonserveError } from '../errors.js'
import { HEADER_LEN, LOG_COMMIT_AREA, decodeHeader, encodeMetaSegment } from '../format/file.js'
import { CHUNK_SIZE, decodeBlobTable, decodeChunk } from '../format/blob.js'
import { encodeRecord, logHeader } from '../format/log.js'
import { fileName } from '../codec/xxhash.js'
import { concat } from '../codec/aes.js'
/** The raw-bytes serializer's id (ts/serializers.ts RAW_BYTES_ID), not imported: this module is bundled without the serializer registry. */
const RAW_BYTES_ID = 0

/** A query's result, as node-postgres gives it. */
export interface PgResult {
  rows: Array<Record<string, unknown>>
  rowCount: number | null
}
type QueryConfig = { name?: string; text: string; values?: unknown[]; binary?: boolean }
/** What this backing needs of a node-postgres client (a pooled connection). */
export interface PgClient {
  query(q: QueryConfig | string, values?: unknown[]): Promise<PgResult>
  release(err?: Error | boolean): void
  on(event: 'error', f: (err: Error) => void): unknown
  removeListener(event: 'error', f: (err: Error) => void): unknown
}
/** What this backing needs of a node-postgres `Pool`. */
export interface PgPool {
  query(q: QueryConfig | string, values?: unknown[]): Promise<PgResult>
  connect(): Promise<PgClient>
  end(): Promise<void>
}

/** The three tables of a store, quoted. */
export interface PgTables {
  /** As given (for messages and the lock scope). */
  name: string
  main: string
  chunks: string
  records: string
  /** The quoted main table for to_regclass. */
  regclass: string
}

/** Quoted table names for `table` (`name` or `schema.name`); ERR_INVALID_ARGUMENT for anything else. */
export function tablesOf(table: unknown, fn: string): PgTables {
  const ok = /^(?:([A-Za-z_][A-Za-z0-9_]{0,62})\.)?([A-Za-z_][A-Za-z0-9_]{0,49})$/
  const m = typeof table === 'string' ? ok.exec(table) : null
  if (!m) {
    throw new KonserveError(
      'ERR_INVALID_ARGUMENT',
      `${fn}: table must be a name or schema.name of letters, digits and _ (not starting with a digit; at most 50 characters for the name), not ${JSON.stringify(table)}`,
    )
  }
  const q = (suffix: string) => `${m[1] ? `"${m[1]}".` : ''}"${m[2]}${suffix}"`
  return { name: table as string, main: q(''), chunks: q('_chunks'), records: q('_records'), regclass: q('') }
}

/** The DDL of a store's tables (idempotent). */
export function createTablesSql(t: PgTables): string {
  return `
CREATE TABLE IF NOT EXISTS ${t.main} (
  name text COLLATE "C" PRIMARY KEY,
  kind smallint NOT NULL,
  head_len integer NOT NULL,
  file bytea NOT NULL,
  gen bigint, chunks integer,
  first bigint, next bigint, stamp bigint);
ALTER TABLE ${t.main} ALTER COLUMN file SET STORAGE EXTERNAL;
CREATE TABLE IF NOT EXISTS ${t.chunks} (
  name text COLLATE "C" NOT NULL, gen bigint NOT NULL, idx integer NOT NULL,
  data bytea NOT NULL, until timestamptz,
  PRIMARY KEY (name, gen, idx));
ALTER TABLE ${t.chunks} ALTER COLUMN data SET STORAGE EXTERNAL;
CREATE INDEX IF NOT EXISTS "${t.name.split('.').pop()}_chunks_until" ON ${t.chunks} (until) WHERE until IS NOT NULL;
CREATE TABLE IF NOT EXISTS ${t.records} (
  name text COLLATE "C" NOT NULL, idx bigint NOT NULL, data bytea NOT NULL,
  PRIMARY KEY (name, idx));`
}

export interface PostgresBackingOptions {
  pool: PgPool
  /** End the pool with the store (it was made by connectPostgresStore). */
  ownsPool: boolean
  tables: PgTables
  compressor: number
  encryptionKey?: Uint8Array
  acceptPlaintext?: boolean
  /** How long a lock wait lasts before ERR_LOCK_TIMEOUT. */
  lockTimeoutMs: number
  /** How long a replaced blob generation stays readable. */
  blobGraceMs: number
  /** Identifies the server and database for the lock scope. */
  scope: string
}

// ---- errors ----

/** SQLSTATEs of a lock wait that gave up. */
const LOCK_STATES = new Set(['55P03', '40P01'])

/** A server or connection failure as a KonserveError: ERR_BACKEND_UNAVAILABLE (lock timeouts ERR_LOCK_TIMEOUT). */
export function typed(err: unknown, what: string): KonserveError {
  if (err instanceof KonserveError) return err
  const message = (err as Error)?.message ?? String(err)
  const state = (err as { code?: unknown })?.code
  const sql = typeof state === 'string' && /^[0-9A-Z]{5}$/.test(state) ? ` (SQLSTATE ${state})` : ''
  if (typeof state === 'string' && LOCK_STATES.has(state)) {
    return new KonserveError('ERR_LOCK_TIMEOUT', `${what}: PostgreSQL: ${message}${sql}`, { cause: err })
  }
  return new KonserveError('ERR_BACKEND_UNAVAILABLE', `${what}: PostgreSQL: ${message}${sql}`, { cause: err })
}

/** An async op whose foreign errors are typed. */
const pgOp = typedOps('postgres', typed)



/** One row of the main table as it came, checked field by field. */
interface Row {
  kind: number
  headLen: number
  /** `file`, or (heads only) its first head_len bytes. */
  bytes: Buffer
  /** length(file). */
  length: number
  gen?: string
  chunks?: number
  first?: number
  next?: number
  stamp?: number
}

const int = (v: unknown): number | undefined => (v === null || v === undefined ? undefined : Number(v))

/** A main-table row as the backing needs it; ERR_CORRUPT (naming the row) for one it did not write. */
function rowOf(r: Record<string, unknown>, file: string): Row {
  const kind = int(r.kind)
  const headLen = int(r.head_len)
  const bytes = r.file ?? r.head
  const length = int(r.len) ?? (Buffer.isBuffer(bytes) ? bytes.length : undefined)
  if (!Buffer.isBuffer(bytes) || length === undefined || headLen === undefined || !(headLen >= HEADER_LEN && headLen <= length)) {
    throw corrupt(`a row without a konserve head (head_len ${headLen}, ${length} bytes): not written by konserve, or truncated`, file)
  }
  const row: Row = { kind: kind!, headLen, bytes, length }
  if (kind === 1) {
    const chunks = int(r.chunks)
    if (r.gen == null || chunks === undefined || !(chunks >= 0)) throw corrupt('a blob row without its generation', file)
    row.gen = String(r.gen)
    row.chunks = chunks
  } else if (kind === 2) {
    const [first, next, stamp] = [int(r.first), int(r.next), int(r.stamp)]
    if (first === undefined || next === undefined || !(next >= first) || headLen !== length) throw corrupt('a log row without its indexes', file)
    Object.assign(row, { first, next, stamp: stamp ?? 0 })
  } else if (kind !== 0) {
    throw corrupt(`a row of unknown kind ${kind}`, file)
  }
  return row
}

/** A holder of locks: the connection that took them (session advisory locks), until unlock. */
interface Holder {
  client: PgClient
  ids: string[]
  broken?: Error
  onError: (err: Error) => void
}

/** The columns of a main-table row as rowOf reads a head (not the whole file). */
const HEAD_COLUMNS = 'kind, head_len, substring(file from 1 for greatest(head_len, 0)) AS head, length(file) AS len, gen, chunks, first, next, stamp'

export class PostgresBacking implements Backing {
  readonly implementation = 'postgres'
  readonly lockScope: string
  readonly atomicMultiKey = true
  readonly blocking = false
  private readonly pool: PgPool
  private readonly codec: PureCodec
  private readonly t: PgTables
  /** Locks this backing holds: key id -> its holder. */
  private readonly held = new Map<string, Holder>()
  /** Mixed into every advisory lock id: stores on different tables do not share locks. */
  private readonly salt: bigint
  private closed = false
  private readonly sql: { put: string; put1: string; del: string; chunk: string; append: string; trim: string }

  constructor(private readonly o: PostgresBackingOptions) {
    this.pool = o.pool
    this.t = o.tables
    this.lockScope = `postgres:${o.scope}#${o.tables.name}`
    this.codec = createPureCodec(o.compressor, o.encryptionKey, o.acceptPlaintext)
    this.salt = BigInt(`0x${fileName(Buffer.from(`konserve:${o.tables.main}`, 'utf8')).slice(0, 16)}`)
    const { main, chunks, records } = this.t
    const grace = `now() + ${Math.round(o.blobGraceMs)} * interval '1 millisecond'`
    // A replaced or deleted blob's chunks get their end of grace; those past it go.
    // SKIP LOCKED: writers never wait for each other's sweeps (nor deadlock on them).
    const sweep = `sw AS (DELETE FROM ${chunks} WHERE ctid IN (SELECT ctid FROM ${chunks} WHERE until < now() FOR UPDATE SKIP LOCKED))`
    const upsert = (w: string) => `${w}        old AS (SELECT t.name, t.kind, t.gen FROM ${main} t JOIN w USING (name)),
        c AS (UPDATE ${chunks} c SET until = ${grace} FROM old WHERE old.kind = 1 AND c.name = old.name AND c.gen = old.gen AND c.until IS NULL),
        r AS (DELETE FROM ${records} r USING old WHERE old.kind = 2 AND r.name = old.name),
        ${sweep}
        INSERT INTO ${main} (name, kind, head_len, file, gen, chunks, first, next, stamp) SELECT * FROM w
        ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, head_len = EXCLUDED.head_len, file = EXCLUDED.file, gen = EXCLUDED.gen,
          chunks = EXCLUDED.chunks, first = EXCLUDED.first, next = EXCLUDED.next, stamp = EXCLUDED.stamp`
    this.sql = {
      // $1 names, $2 kinds, $3 head_lens, $4 files, $5 gens, $6 chunk counts, $7 firsts, $8 nexts, $9 stamps
      put: upsert(`WITH w AS (SELECT * FROM unnest($1::text[], $2::smallint[], $3::int[], $4::bytea[], $5::bigint[], $6::int[], $7::bigint[], $8::bigint[], $9::bigint[])
          AS w(name, kind, head_len, file, gen, chunks, first, next, stamp)),
`),
      // One key: plain parameters (a Buffer goes as binary, not as the hex text of an array literal).
      put1: upsert(`WITH w AS (SELECT $1::text AS name, $2::smallint AS kind, $3::int AS head_len, $4::bytea AS file, $5::bigint AS gen, $6::int AS chunks,
          $7::bigint AS first, $8::bigint AS next, $9::bigint AS stamp),
`),
      del: `WITH d AS (DELETE FROM ${main} WHERE name = ANY($1::text[]) RETURNING name, kind, gen),
        c AS (UPDATE ${chunks} c SET until = ${grace} FROM d WHERE d.kind = 1 AND c.name = d.name AND c.gen = d.gen AND c.until IS NULL),
        r AS (DELETE FROM ${records} r USING d WHERE d.kind = 2 AND r.name = d.name),
        ${sweep}
        SELECT name FROM d`,
      chunk: `INSERT INTO ${chunks} (name, gen, idx, data) VALUES ($1, $2, $3, $4)`,
      // $1 name, $2 indexes, $3 records, $4 head_len, $5 head, $6 first, $7 next, $8 stamp
      append: `WITH r AS (INSERT INTO ${records} (name, idx, data) SELECT $1, i, d FROM unnest($2::bigint[], $3::bytea[]) AS u(i, d)
          ON CONFLICT (name, idx) DO UPDATE SET data = EXCLUDED.data)
        INSERT INTO ${main} (name, kind, head_len, file, first, next, stamp) VALUES ($1, 2, $4, $5, $6, $7, $8)
        ON CONFLICT (name) DO UPDATE SET kind = 2, head_len = EXCLUDED.head_len, file = EXCLUDED.file, gen = NULL, chunks = NULL,
          first = EXCLUDED.first, next = EXCLUDED.next, stamp = EXCLUDED.stamp`,
      // $1 name, $2 keep from, $3 head_len, $4 head, $5 first, $6 next, $7 stamp
      trim: `WITH d AS (DELETE FROM ${records} WHERE name = $1 AND idx < $2)
        UPDATE ${main} SET head_len = $3, file = $4, first = $5, next = $6, stamp = $7 WHERE name = $1 AND kind = 2`,
    }
  }

  /** Prepared statement names by text: a statement is parsed and planned once per connection, not per call. */
  private readonly stmts = new Map<string, string>()

  /** A query as a named (prepared) statement. */
  private st(text: string, values: unknown[]): QueryConfig {
    let name = this.stmts.get(text)
    if (!name) this.stmts.set(text, (name = `konserve_${fileName(Buffer.from(text, 'utf8')).slice(0, 24)}`))
    return { name, text, values }
  }

  private hex(key: Uint8Array): string {
    return fileName(key).slice(0, 32)
  }

  /** Where a row is, for messages: `table/name`. */
  private where(hex: string): string {
    return `${this.t.name}/${hex}`
  }

  /** The connection that holds the lock of one of `keys`, else the pool. */
  private via(keys: Uint8Array[]): PgPool | PgClient {
    if (this.closed) throw new KonserveError('ERR_CLOSED', 'the store is closed')
    for (const k of keys) {
      const h = this.held.get(keyId(k))
      if (h) {
        if (h.broken) throw typed(h.broken, 'the connection holding the lock')
        return h.client
      }
    }
    return this.pool
  }

  // ---- reading ----

  /** Decodes a head (header + meta segment) for `key` (or, listing, for the row's name). */
  private async head(h: Uint8Array, fileLength: number, key: Uint8Array | undefined, hex: string) {
    const d = await this.codec.decodeHead.async(h, fileLength, key, `${hex}.ksv`)
    if (key && Buffer.compare(u8(d.key), u8(key)) !== 0) {
      throw new KonserveError('ERR_KEY_MISMATCH', 'the row holds another key than the one asked for', { file: this.where(hex) })
    }
    return d
  }

  private async row(key: Uint8Array, hex: string, columns: string): Promise<Row | undefined> {
    const r = await this.via([key]).query(this.st(`SELECT ${columns} FROM ${this.t.main} WHERE name = $1`, [hex]))
    return r.rows[0] ? rowOf(r.rows[0], this.where(hex)) : undefined
  }

  /** A blob's stored chunks in order, checked for count. */
  private async allChunks(c: PgPool | PgClient, hex: string, row: Row): Promise<Buffer[]> {
    const r = await c.query(this.st(`SELECT idx, data FROM ${this.t.chunks} WHERE name = $1 AND gen = $2 ORDER BY idx`, [hex, row.gen]))
    const out: Buffer[] = []
    for (const [i, x] of r.rows.entries()) {
      if (int(x.idx) !== i || !Buffer.isBuffer(x.data)) break
      out.push(x.data)
    }
    if (out.length !== row.chunks) throw corrupt(`a blob of ${row.chunks} chunks with ${out.length} in ${this.t.name}_chunks`, this.where(hex))
    return out
  }

  get = pgOp('get', async (key: Uint8Array): Promise<RawEntry | undefined> => {
    const hex = this.hex(key)
    const c = this.via([key])
    const row = await this.row(key, hex, 'kind, head_len, file, gen, chunks, first, next, stamp')
    if (!row) return undefined
    if (row.kind === 2) {
      const d = await this.head(row.bytes, row.length + LOG_COMMIT_AREA, key, hex)
      return { serializer: d.serializer, meta: d.meta, value: new Uint8Array(0), log: logInfo(row.first!, row.next!, row.stamp!) }
    }
    const file =
      row.kind === 1
        ? concat([row.bytes.subarray(0, row.headLen), ...(await this.allChunks(c, hex, row)), row.bytes.subarray(row.headLen)])
        : row.bytes
    const d = await this.codec.decode.async(file, key)
    if (Buffer.compare(u8(d.key), u8(key)) !== 0) {
      throw new KonserveError('ERR_KEY_MISMATCH', 'the row holds another key than the one asked for', { file: this.where(hex) })
    }
    return { serializer: d.serializer, meta: d.meta, value: d.value }
  })

  /** A key's metadata from its head row. */
  private async metaOf(row: Row, key: Uint8Array | undefined, hex: string): Promise<RawMeta> {
    const head = row.bytes.subarray(0, row.headLen)
    const length = row.kind === 0 ? row.length : row.kind === 1 ? declaredLength(head, this.where(hex)) : row.headLen + LOG_COMMIT_AREA
    const d = await this.head(head, length, key, hex)
    const meta: RawMeta = { key: d.key, serializer: d.serializer, meta: d.meta, file: this.where(hex) }
    if (row.kind === 2) meta.log = logInfo(row.first!, row.next!, row.stamp!)
    return meta
  }

  getMeta = pgOp('getMeta', async (key: Uint8Array): Promise<RawMeta | undefined> => {
    const hex = this.hex(key)
    const row = await this.row(key, hex, HEAD_COLUMNS)
    return row ? this.metaOf(row, key, hex) : undefined
  })

  exists = pgOp('exists', async (key: Uint8Array): Promise<boolean> => {
    const r = await this.via([key]).query(this.st(`SELECT 1 FROM ${this.t.main} WHERE name = $1`, [this.hex(key)]))
    return r.rows.length > 0
  })

  // ---- writing: one statement each ----

  put = pgOp('put', async (writes: RawWrite[]): Promise<void> => {
    if (writes.length === 0) return
    // One row per key (the last write wins): ON CONFLICT cannot change a row twice in one statement.
    const last = new Map<string, RawWrite>()
    for (const w of writes) last.set(keyId(w.key), w)
    const names: string[] = []
    const lens: number[] = []
    const files: Buffer[] = []
    for (const w of last.values()) {
      const { head, value } = await this.codec.encode.async(w)
      names.push(this.hex(w.key))
      lens.push(head.length)
      files.push(u8(concat([head, value])))
    }
    const none = names.map(() => null)
    const values =
      names.length === 1
        ? [names[0], 0, lens[0], files[0], null, null, null, null, null]
        : [names, names.map(() => 0), lens, files, none, none, none, none, none]
    await this.via(writes.map((w) => w.key)).query(this.st(names.length === 1 ? this.sql.put1 : this.sql.put, values))
  })

  delete = pgOp('delete', async (keys: Uint8Array[]): Promise<boolean[]> => {
    if (keys.length === 0) return []
    const names = keys.map((k) => this.hex(k))
    const r = await this.via(keys).query(this.st(this.sql.del, [[...new Set(names)]]))
    const gone = new Set(r.rows.map((x) => x.name as string))
    // A key named twice existed once.
    const seen = new Set<string>()
    return names.map((n) => {
      const existed = gone.has(n) && !seen.has(n)
      seen.add(n)
      return existed
    })
  })

  // ---- listing: keyset pagination by name ----

  openList(): ListCursor {
    let after = ''
    let done = false
    const next = pgOp('list', async (max: number): Promise<RawListing | undefined> => {
      if (done) return undefined
      if (this.closed) throw new KonserveError('ERR_CLOSED', 'the store is closed')
      const want = Math.max(1, Math.min(max, 10_000))
      const r = await this.pool.query(
        this.st(`SELECT name, ${HEAD_COLUMNS} FROM ${this.t.main} WHERE name > $1 ORDER BY name LIMIT $2`, [after, want]),
      )
      if (r.rows.length < want) done = true
      if (r.rows.length === 0) return undefined
      after = r.rows[r.rows.length - 1]!.name as string
      const out: RawListing = { entries: [], corrupt: [] }
      for (const x of r.rows) {
        const hex = x.name as string
        try {
          if (!/^[0-9a-f]{32}$/.test(hex)) throw corrupt('a row whose name is not a key hash: not written by konserve', this.where(hex))
          out.entries.push(await this.metaOf(rowOf(x, this.where(hex)), undefined, hex))
        } catch (err) {
          const e = typed(err, 'list')
          out.corrupt.push({ code: e.code, file: e.file ?? this.where(hex), message: e.message })
        }
      }
      return out
    })
    return {
      next,
      close: () => {
        done = true
      },
    }
  }

  // ---- locks: session advisory locks on a connection held until unlock ----

  /** The advisory lock id of a key: 64 bits of its hash, salted with the table. */
  private lockId(key: Uint8Array): bigint {
    return BigInt.asIntN(64, BigInt(`0x${this.hex(key).slice(0, 16)}`) ^ this.salt)
  }

  lock = pgOp('lock', async (keys: Uint8Array[]): Promise<void> => {
    if (keys.length === 0) return
    if (this.closed) throw new KonserveError('ERR_CLOSED', 'the store is closed')
    // One order for every process: no two lockers wait on each other in a cycle.
    const ids = [...new Set(keys.map((k) => this.lockId(k)))].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)).map(String)
    const client = await this.pool.connect()
    const holder: Holder = { client, ids, onError: (err) => (holder.broken = err) }
    client.on('error', holder.onError)
    const timeout = Math.min(2 ** 31 - 1, Math.max(1, Math.ceil(this.o.lockTimeoutMs)))
    try {
      // One round trip; SET LOCAL ends with the transaction, the session locks stay.
      await client.query(`BEGIN; SET LOCAL lock_timeout = ${timeout}; ${ids.map((id) => `SELECT pg_advisory_lock(${id});`).join(' ')} COMMIT`)
    } catch (err) {
      let why = typed(err, 'lock')
      try {
        await client.query('ROLLBACK; SELECT pg_advisory_unlock_all()')
        if (why.code === 'ERR_LOCK_TIMEOUT') why = await this.timeoutError(client, ids, why)
        this.releaseHolder(holder)
      } catch {
        this.releaseHolder(holder, true)
      }
      throw why
    }
    for (const k of keys) this.held.set(keyId(k), holder)
  })

  /** ERR_LOCK_TIMEOUT naming the holder: its application_name (host:pid for konserve's pools) and backend pid. */
  private async timeoutError(client: PgClient, ids: string[], cause: KonserveError): Promise<KonserveError> {
    const pairs = ids.map((id) => {
      const u = BigInt.asUintN(64, BigInt(id))
      return `${u >> 32n}:${u & 0xffffffffn}`
    })
    let holder = 'another session'
    try {
      const r = await client.query({
        text: `SELECT a.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND (l.classid::text || ':' || l.objid::text) = ANY($1::text[]) LIMIT 1`,
        values: [pairs],
      })
      const x = r.rows[0]
      if (x) holder = `${x.application_name || 'a client'} (backend pid ${x.pid})`
      else holder = 'nobody (just released)'
    } catch {}
    return new KonserveError('ERR_LOCK_TIMEOUT', `waited ${this.o.lockTimeoutMs} ms for the lock of ${this.t.name}, held by ${holder}`, { cause })
  }

  private releaseHolder(h: Holder, destroy = false): void {
    h.client.removeListener('error', h.onError)
    // A broken connection is destroyed, and with it whatever it still held.
    h.client.release(destroy || h.broken ? (h.broken ?? true) : undefined)
  }

  unlock(keys: Uint8Array[]): void {
    const holders = new Set<Holder>()
    for (const k of keys) {
      const h = this.held.get(keyId(k))
      if (h) holders.add(h)
    }
    for (const h of holders) {
      for (const [id, x] of [...this.held]) if (x === h) this.held.delete(id)
      if (h.broken) {
        this.releaseHolder(h, true)
        continue
      }
      h.client.query('SELECT pg_advisory_unlock_all()').then(
        () => this.releaseHolder(h),
        () => this.releaseHolder(h, true),
      )
    }
  }

  // ---- blobs: chunks inserted in the writer's transaction, swapped in by the put statement ----

  blobWriter = pgOp('blobWriter', async (key: Uint8Array, meta: Uint8Array): Promise<BlobSink> => {
    const hex = this.hex(key)
    const via = this.via([key])
    // The lock holder's connection; without a lock (the facade always takes one), a connection of its own.
    const own = via === this.pool ? await this.pool.connect() : undefined
    const client = (own ?? via) as PgClient
    const onError = () => {}
    own?.on('error', onError)
    const done = (err?: boolean) => {
      if (!own) return
      own.removeListener('error', onError)
      own.release(err)
    }
    try {
      await client.query('BEGIN')
    } catch (err) {
      done(true)
      throw err
    }
    const gen = BigInt.asIntN(64, randomBytes(8).readBigUInt64LE()).toString()
    let count = 0
    return stagedBlobWriter(pgOp, this.codec.writeCodec(key), key, meta, {
      // One statement per chunk: the chunk goes as a binary parameter.
      stage: async (chunks) => {
        for (const c of chunks) await client.query(this.st(this.sql.chunk, [hex, gen, count++, u8(c)]))
      },
      publish: async (head, tail) => {
        await client.query(this.st(this.sql.put1, [hex, 1, head.length, u8(concat([head, tail])), gen, count, null, null, null]))
        await client.query('COMMIT')
        done()
      },
      discard: () => {
        client.query('ROLLBACK').then(
          () => done(),
          () => done(true),
        )
      },
    })
  })

  openBlob = pgOp('openBlob', async (key: Uint8Array): Promise<BlobSource | undefined> => {
    const hex = this.hex(key)
    const row = await this.row(key, hex, 'kind, head_len, file, gen, chunks, first, next, stamp')
    if (!row) return undefined
    if (row.kind === 2) throw notBinary()
    if (row.kind === 0) {
      // A value written with the raw-bytes serializer reads as a one-piece blob.
      const e = await this.codec.decode.async(row.bytes, key)
      if (e.serializer !== RAW_BYTES_ID || e.header.flags !== 0) throw notBinary()
      const value = e.value
      const read = pgOp('blob read', async (o: number, l: number) => Buffer.from(value.subarray(o, Math.min(value.length, o + l))))
      return { size: value.length, meta: { key: e.key, serializer: e.serializer, meta: e.meta, file: this.where(hex) }, read, close() {} }
    }
    const head = row.bytes.subarray(0, row.headLen)
    const d = await this.head(head, declaredLength(head, this.where(hex)), key, hex)
    const valueStart = d.header.metaLen + HEADER_LEN
    const layout = decodeBlobTable(row.bytes.subarray(row.headLen), d.header, valueStart)
    const codec = this.codec.readCodec(d.header, key)
    let closed = false
    // The last chunk read, decoded: a stream reads a chunk in several pieces.
    let cached: { i: number; plain: Uint8Array } | undefined
    const chunk = async (i: number): Promise<Uint8Array> => {
      if (cached?.i === i) return cached.plain
      // On the lock holder's connection while the key is locked here: a holder never waits for a second connection.
      const r = await this.via([key]).query(this.st(`SELECT data FROM ${this.t.chunks} WHERE name = $1 AND gen = $2 AND idx = $3`, [hex, row.gen, i]))
      const stored = r.rows[0]?.data
      if (!Buffer.isBuffer(stored)) {
        throw new KonserveError('ERR_IO', `chunk ${i} of the blob is gone (it was replaced or deleted more than the grace period ago)`, {
          file: this.where(hex),
        })
      }
      cached = { i, plain: await decodeChunk.async(codec, layout, i, stored) }
      return cached.plain
    }
    const read = pgOp('blob read', async (offset: number, len: number): Promise<Uint8Array> => {
      if (closed) throw new KonserveError('ERR_INVALID_ARGUMENT', 'the blob is closed')
      const end = Math.min(layout.size, offset + len)
      const parts: Uint8Array[] = []
      for (let pos = offset; pos < end; ) {
        const i = Math.floor(pos / CHUNK_SIZE)
        const plain = await chunk(i)
        const from = pos - i * CHUNK_SIZE
        const to = Math.min(plain.length, end - i * CHUNK_SIZE)
        parts.push(plain.subarray(from, to))
        pos += to - from
      }
      return Buffer.from(concat(parts))
    })
    return {
      size: layout.size,
      meta: { key: d.key, serializer: d.serializer, meta: d.meta, file: this.where(hex) },
      read,
      close: () => {
        closed = true
        cached = undefined
      },
    }
  })

  // ---- logs: records as rows, where the log stands in the key's row ----

  append = pgOp('append', async (key: Uint8Array, records: NewRecord[], createMeta: Uint8Array): Promise<LogInfo> => {
    if (records.length === 0) throw new KonserveError('ERR_INVALID_ARGUMENT', 'an append needs at least one record')
    const hex = this.hex(key)
    const row = await this.row(key, hex, HEAD_COLUMNS)
    let head: Uint8Array
    let first: number
    let next: number
    let codecHeader: { compressor: number; encryptor: number }
    if (!row) {
      const codec = this.codec.writeCodec(key)
      const metaStored = await encodeMetaSegment.async(codec, key, createMeta)
      head = concat([logHeader(codec, metaStored), metaStored])
      first = next = 0
      codecHeader = codec
    } else {
      if (row.kind !== 2) throw notALog()
      head = row.bytes
      first = row.first!
      next = row.next!
      codecHeader = decodeHeader(head, head.length + LOG_COMMIT_AREA)
    }
    const codec = this.codec.readCodec(codecHeader, key)
    const encoded: Buffer[] = []
    for (const [i, rec] of records.entries()) encoded.push(u8(await encodeRecord.async(codec, next + i, rec.stamp, rec.serializer, rec.bytes)))
    const stamp = records[records.length - 1]!.stamp
    const idx = records.map((_, i) => next + i)
    await this.via([key]).query(this.st(this.sql.append, [hex, idx, encoded, head.length, u8(head), first, next + records.length, stamp]))
    return logInfo(first, next + records.length, stamp)
  })

  openLog = pgOp('openLog', async (key: Uint8Array): Promise<LogCursor | undefined> => {
    const hex = this.hex(key)
    const row = await this.row(key, hex, HEAD_COLUMNS)
    if (!row) return undefined
    if (row.kind !== 2) throw notALog()
    const d = await this.head(row.bytes, row.length + LOG_COMMIT_AREA, key, hex)
    const codec = this.codec.readCodec(d.header, key)
    const end = row.next!
    let at = row.first!
    return closableCursor((closed) =>
      pgOp('log read', async (max: number): Promise<LogRecord[] | undefined> => {
        if (closed() || at >= end) return undefined
        const r = await this.via([key]).query(
          this.st(`SELECT idx, data FROM ${this.t.records} WHERE name = $1 AND idx >= $2 AND idx < $3 ORDER BY idx LIMIT $4`, [
            hex,
            at,
            end,
            Math.min(Math.max(1, max), end - at),
          ]),
        )
        if (r.rows.length === 0) return undefined
        const firstIdx = int(r.rows[0]!.idx)!
        if (firstIdx > at) at = firstIdx // trimmed meanwhile
        const out: LogRecord[] = []
        for (const x of r.rows) {
          // A row filed under another index is damage too.
          out.push(await readStoredRecord(codec, int(x.idx) === at ? x.data : undefined, at, `${this.t.name}_records/${hex}`))
          at++
        }
        return out
      }),
    )
  })

  trimLog = pgOp('trimLog', async (key: Uint8Array, keepFrom: number, meta: Uint8Array): Promise<LogInfo> => {
    const hex = this.hex(key)
    const row = await this.row(key, hex, HEAD_COLUMNS)
    if (!row) return { firstIndex: 0, lastIndex: -1, lastStamp: 0 }
    if (row.kind !== 2) throw notALog()
    const header = decodeHeader(row.bytes, row.bytes.length + LOG_COMMIT_AREA)
    const codec = this.codec.readCodec(header, key)
    const metaStored = await encodeMetaSegment.async(codec, key, meta)
    const head = concat([logHeader(codec, metaStored), metaStored])
    const [first, next, stamp] = [row.first!, row.next!, row.stamp!]
    const drop = Math.min(Math.max(0, keepFrom - first), next - first)
    const kept = next - first - drop
    const [f, x, s] = kept > 0 ? [first + drop, next, stamp] : [0, 0, 0]
    await this.via([key]).query(this.st(this.sql.trim, [hex, first + drop, head.length, u8(head), f, x, s]))
    return logInfo(f, x, s)
  })

  close = pgOp('close', async (): Promise<void> => {
    if (this.closed) return
    // A connection that still holds locks is closed: its locks end with it.
    for (const h of new Set(this.held.values())) this.releaseHolder(h, true)
    this.held.clear()
    this.closed = true
    if (this.o.ownsPool) await this.pool.end()
  })
}
