/**
 * The IndexedDB connection of one store: a few promise wrappers over
 * IDBRequest / IDBTransaction (no `idb` package: this is all it would give
 * us), and a connection that survives the browser closing it or another tab
 * asking for a new version: such a transaction is retried once on a fresh
 * connection, else it fails with a typed error. Nothing here can hang: every
 * wait ends on an IndexedDB event or a timeout.
 *
 * The database holds three object stores:
 * - `files`: key = the key file's name (`<32 hex>.ksv`, FORMAT.md §3), value
 *   a FileRecord: the file's first bytes (its header and meta segment, and
 *   for a small value the whole file), its length and its generation;
 * - `segments`: key = [name, generation, offset], value = the file's bytes
 *   at that offset (a value segment, a blob chunk, the blob table, a run of
 *   log records). A file's bytes are its head then its segments in order;
 * - `store`: the store's own files (`.konserve.keycheck`), by name.
 */
import { KonserveError } from '../../errors.js'

export const FILES = 'files'
export const SEGMENTS = 'segments'
export const STORE = 'store'
const ALL_STORES = [FILES, SEGMENTS, STORE]

/** A key file in IndexedDB: `head`, then the segments `[name, gen, offset]` of its generation, is the file. */
export interface FileRecord {
  /** Changes whenever the file is replaced (a put, a blob commit, a log rewrite); appends keep it. */
  gen: string
  /** The file's length in bytes. */
  size: number
  /** The file's first bytes: at least the header and the meta segment (a log's: and its commit area). */
  head: Uint8Array
}

/** A request's result. */
export function req<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    r.onsuccess = () => resolve(r.result)
    r.onerror = () => reject(r.error)
  })
}

/** Every segment key of one generation of a file. */
export const genRange = (name: string, gen: string): IDBKeyRange => IDBKeyRange.bound([name, gen], [name, gen, []])

export type Durability = 'strict' | 'relaxed' | 'default'

export interface ConnectionOptions {
  /** How long opening the database may wait (another connection blocking it): default 10 s. */
  openTimeoutMs?: number
}

/** Marks an error of a connection that went away under a transaction: worth one retry on a new one. */
class Lost extends Error {}

/** Whether an IndexedDB error means the connection is gone (closed by us, the browser, or a versionchange). */
function isLost(err: unknown): boolean {
  if (err instanceof Lost) return true
  const name = (err as { name?: string } | null)?.name
  // transaction() on a closing connection throws InvalidStateError; a
  // transaction cut short by the connection closing aborts with AbortError
  // (or UnknownError when the backing store failed).
  return name === 'InvalidStateError' || name === 'AbortError' || name === 'UnknownError'
}

/** The KonserveError for a DOMException that IndexedDB raised. */
export function idbError(err: unknown, what: string, file: string): KonserveError {
  if (err instanceof KonserveError) return err
  const name = (err as { name?: string } | null)?.name ?? 'Error'
  const message = (err as { message?: string } | null)?.message ?? String(err)
  const code = name === 'QuotaExceededError' ? 'ERR_NO_SPACE' : 'ERR_IO'
  return new KonserveError(code, `${what}: ${name}: ${message}`, { file, cause: err })
}

export class Connection {
  private db: IDBDatabase | undefined
  private opening: Promise<IDBDatabase> | undefined
  private closed = false
  /** Set when another connection deleted the database: no silent re-creation. */
  private deleted = false
  /** How many times this connection was (re)opened. */
  opens = 0

  constructor(
    readonly name: string,
    private readonly options: ConnectionOptions = {},
  ) {}

  /** The open database, opening (or reopening) it when needed. */
  open(): Promise<IDBDatabase> {
    if (this.closed) return Promise.reject(new KonserveError('ERR_CLOSED', 'the store is closed', { file: this.name }))
    if (this.deleted) {
      return Promise.reject(
        new KonserveError('ERR_STORE_DELETED', 'the IndexedDB database was deleted (by another tab or worker) while the store was open', { file: this.name }),
      )
    }
    if (this.db) return Promise.resolve(this.db)
    this.opening ??= this.doOpen().finally(() => (this.opening = undefined))
    return this.opening
  }

  private doOpen(version?: number): Promise<IDBDatabase> {
    const timeoutMs = this.options.openTimeoutMs ?? 10_000
    return new Promise<IDBDatabase>((resolve, reject) => {
      let done = false
      const r = version === undefined ? indexedDB.open(this.name) : indexedDB.open(this.name, version)
      const timer = setTimeout(() => {
        done = true
        reject(new KonserveError('ERR_IO', `cannot open the IndexedDB database: still blocked after ${timeoutMs} ms (another connection does not close)`, { file: this.name }))
      }, timeoutMs)
      r.onupgradeneeded = () => {
        const db = r.result
        for (const s of ALL_STORES) if (!db.objectStoreNames.contains(s)) db.createObjectStore(s)
      }
      r.onerror = () => {
        clearTimeout(timer)
        if (!done) reject(idbError(r.error, 'cannot open the IndexedDB database', this.name))
        done = true
      }
      r.onsuccess = () => {
        clearTimeout(timer)
        const db = r.result
        if (done) {
          db.close() // timed out meanwhile: nobody uses it
          return
        }
        done = true
        if (ALL_STORES.some((s) => !db.objectStoreNames.contains(s))) {
          // An empty database of that name (someone else made it): add our stores.
          const v = db.version + 1
          db.close()
          this.doOpen(v).then(resolve, reject)
          return
        }
        db.onversionchange = (e) => {
          // Let the other connection upgrade or delete: close, reopen on the next call.
          db.close()
          if (this.db === db) this.db = undefined
          if (e.newVersion === null) this.deleted = true
        }
        db.onclose = () => {
          if (this.db === db) this.db = undefined
        }
        this.db = db
        this.opens++
        resolve(db)
      }
    })
  }

  /**
   * Runs `body` in one transaction over `stores` and resolves with its
   * result once the transaction committed (readwrite: with `durability`).
   * `body` may only await requests of this transaction. A transaction that
   * failed because the connection went away is retried once on a new one.
   */
  async run<T>(stores: string[], mode: IDBTransactionMode, durability: Durability, body: (tx: IDBTransaction) => Promise<T>, what: string, file: string): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const db = await this.open()
      try {
        return await this.once(db, stores, mode, durability, body)
      } catch (err) {
        // Our own errors (a KonserveError, the backing's signals) pass as they are.
        if (!(err instanceof Lost) && !(typeof DOMException !== 'undefined' && err instanceof DOMException)) throw err
        if (!isLost(err) || attempt > 0 || this.closed) throw idbError(err, what, file)
        // The connection went away: forget it, and try once on a new one.
        if (this.db === db) this.db = undefined
        try {
          db.close()
        } catch {
          // already closed
        }
        if (this.deleted) throw await this.open().catch((e: unknown) => e)
      }
    }
  }

  private once<T>(db: IDBDatabase, stores: string[], mode: IDBTransactionMode, durability: Durability, body: (tx: IDBTransaction) => Promise<T>): Promise<T> {
    const tx = db.transaction(stores, mode, mode === 'readwrite' ? { durability } : undefined)
    return new Promise<T>((resolve, reject) => {
      let result: { v: T } | undefined
      let failure: { e: unknown } | undefined
      tx.oncomplete = () => (failure ? reject(failure.e) : result ? resolve(result.v) : reject(new Lost('transaction ended without a result')))
      tx.onabort = () => reject(failure?.e ?? tx.error ?? new Lost('transaction aborted'))
      body(tx).then(
        (v) => (result = { v }),
        (e: unknown) => {
          failure = { e }
          try {
            tx.abort()
          } catch {
            // finished already
          }
        },
      )
    })
  }

  /** Closes the connection for good: later calls fail with ERR_CLOSED. */
  close(): void {
    this.closed = true
    this.db?.close()
    this.db = undefined
  }

  /** Tests: the open IDBDatabase, to close it behind the store's back as the browser may. */
  get current(): IDBDatabase | undefined {
    return this.db
  }
}
