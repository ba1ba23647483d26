/**
 * The backing-store interface: what a backend implements to get the whole
 * konserve API (paths, serializers, metadata, locking, sync and async) for free.
 *
 * A backend stores, per key, three things: the serializer id, the metadata bytes
 * and the value bytes. Keys arrive as their canonical encoding (CKE, FORMAT.md §2).
 * Every operation exists in a blocking form (`*Sync`) and a Promise form; a
 * backend with no blocking I/O (IndexedDB) throws `ERR_NOT_SUPPORTED` from the
 * sync forms.
 */

export interface RawEntry {
  serializer: number
  meta: Uint8Array
  value: Uint8Array
}

export interface RawMeta {
  /** The key's CKE. */
  key: Uint8Array
  serializer: number
  meta: Uint8Array
  /** Where the key lives, for backends that have files. */
  file?: string
}

export interface RawWrite {
  key: Uint8Array
  serializer: number
  meta: Uint8Array
  value: Uint8Array
}

export interface RawCorrupt {
  code: string
  file: string
  message: string
}

export interface RawListing {
  entries: RawMeta[]
  /** Entries that could not be read; `keys` reports them, never deletes them. */
  corrupt: RawCorrupt[]
}

/**
 * A streaming listing: batches of at most `max` entries (entries and corrupt
 * files together), `undefined` once every entry was listed. Keys written or
 * deleted while a cursor runs may or may not be seen. A cursor is used in one
 * form (sync or async) at a time; `close` releases it early (idempotent).
 */
export interface ListCursor {
  nextSync(max: number): RawListing | undefined
  next(max: number): Promise<RawListing | undefined>
  close(): void
}

/** A per-store last-write clock (file stores: the `.konserve.clock` watermark). */
export interface StoreClock {
  /** A lastWrite stamp (ms since epoch) for a write about to happen. */
  nowSync(): number
  now(): Promise<number>
}

export interface Backing {
  /** 'native', 'pure' or 'memory': which implementation does the work. */
  readonly implementation: 'native' | 'pure' | 'memory'
  /** Keys with the same scope share locks (one directory = one scope). */
  readonly lockScope: string
  /** True when a multi-key write is all-or-nothing. */
  readonly atomicMultiKey: boolean

  getSync(key: Uint8Array): RawEntry | undefined
  getAsync(key: Uint8Array): Promise<RawEntry | undefined>
  getMetaSync(key: Uint8Array): RawMeta | undefined
  getMetaAsync(key: Uint8Array): Promise<RawMeta | undefined>
  existsSync(key: Uint8Array): boolean
  existsAsync(key: Uint8Array): Promise<boolean>
  /** Writes all entries; each key's write is atomic and, when durable, synced before returning. */
  putSync(writes: RawWrite[]): void
  putAsync(writes: RawWrite[]): Promise<void>
  /** Deletes the keys; returns whether each existed. */
  deleteSync(keys: Uint8Array[]): boolean[]
  deleteAsync(keys: Uint8Array[]): Promise<boolean[]>
  /** Every entry at once (memory proportional to the store). */
  listSync(): RawListing
  listAsync(): Promise<RawListing>
  /** Every entry, in batches (memory proportional to a batch). */
  openList(): ListCursor
  /** The store's own lastWrite clock; without one, the per-process clock is used. */
  readonly clock?: StoreClock

  /**
   * Locking beyond this JavaScript thread (other threads, other processes).
   * The facade already serializes callers within one thread; a backend that is
   * private to one thread (memory) implements these as no-ops.
   * `lockSync` blocks; `tryLock` takes every key or none and never blocks.
   */
  lockSync(keys: Uint8Array[]): void
  tryLock(keys: Uint8Array[]): boolean
  unlock(keys: Uint8Array[]): void

  /** The file holding a key, where there is one. */
  filePath?(key: Uint8Array): string
}

/**
 * A copy of bytes that shares no memory with them, for backings that keep or
 * hand out bytes. (Not `.slice()`: on a Node Buffer that is a view of the same
 * memory, so a caller changing its buffer would change the store.)
 */
export function copyBytes(b: Uint8Array): Uint8Array {
  return new Uint8Array(b)
}
