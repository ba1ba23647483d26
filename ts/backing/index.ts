/**
 * The backing layer: what a backend implements (`Backing`, ./seam.ts: each
 * operation one Op, run blocking or as a Promise by the facade) and the raw
 * records it stores and returns. A backend stores, per key, three things: the
 * serializer id, the metadata bytes and the value bytes. Keys arrive as their
 * canonical encoding (CKE, FORMAT.md §2).
 */
import { NodeBuffer } from '../node-buffer.js'

export interface RawEntry {
  serializer: number
  meta: Uint8Array
  /** The value's bytes; empty for a log (read its records with `openLog`). */
  value: Uint8Array
  /** Set when the key holds an append log (FORMAT.md §4.6). */
  log?: LogInfo
}

/** A key's value as `get` needs it, without its metadata (see Backing.getValue). */
export interface RawValue {
  serializer: number
  value: Uint8Array
  /** The key holds an append log: `value` is empty; read its records with `openLog`. */
  log: boolean
  /**
   * `value` is memory the backing keeps or shares with other values: it must
   * not escape. The facade copies it before handing it out, or to a decoder
   * that may keep it (see Serializer.copiesInput); decoders never write to it.
   */
  shared?: boolean
  /**
   * Set by a backing that keeps `value`'s bytes unchanged for as long as it
   * hands out this memo (a read cache's entry): the facade may keep the
   * decoded value in it, as plain data, and answer later reads with a copy.
   */
  memo?: DecodedMemo
}

/** See RawValue.memo. */
export interface DecodedMemo {
  /** Whether the value was decoded once (then `tree` is its copy, or NOT_PLAIN). */
  done?: boolean
  tree?: unknown
}

export interface RawMeta {
  /** The key's CKE. */
  key: Uint8Array
  serializer: number
  meta: Uint8Array
  /** Where the key lives, for backends that have files. */
  file?: string
  /** Set when the key holds an append log. */
  log?: LogInfo
}

/** Where an append log stands (FORMAT.md §4.6). */
export interface LogInfo {
  /** Index of the first record; `lastIndex + 1` when there are none. */
  firstIndex: number
  /** Index of the last record; -1 when there are none. */
  lastIndex: number
  /** lastWrite (ms) of the last record; 0 when there are none. */
  lastStamp: number
}

/** One record of an append log: the element as its serializer wrote it. */
export interface LogRecord {
  index: number
  /** lastWrite (ms) of the append that wrote it. */
  stamp: number
  serializer: number
  bytes: Uint8Array
}

/** A new record to append (its index is the next one, chosen by the backing). */
export interface NewRecord {
  serializer: number
  stamp: number
  bytes: Uint8Array
}

export interface RawWrite {
  key: Uint8Array
  serializer: number
  meta: Uint8Array
  value: Uint8Array
}

/**
 * A replacing write whose revision the backing reads itself (Backing.replace):
 * `meta` holds REVISION_SLOT at `revisionAt`, where the backing writes the
 * key's next revision (its shortest MessagePack form).
 */
export interface RawReplace extends RawWrite {
  revisionAt: number
  /** Write only if the key is at this revision (0: missing). */
  expectedRevision?: number
  /** Take (one attempt) and release the key's cross-process lock inside the write; else the caller holds it. */
  lock: boolean
}

/** A blob write with the revision read fused in (Backing.blobReplace): RawReplace without the value. */
export type RawBlobReplace = Omit<RawReplace, 'serializer' | 'value'>

/** The MessagePack bytes (uint 32, 0xffffffff) a RawReplace's meta holds where the new revision goes. */
export const REVISION_SLOT = Uint8Array.of(0xce, 0xff, 0xff, 0xff, 0xff)
/** Backing.replace's answers other than a revision (>= 1): the lock is held elsewhere; left to the general path; mismatch is `REPLACE_MISMATCH - actual`. */
export const REPLACE_BUSY = 0
export const REPLACE_UNSURE = -1
export const REPLACE_MISMATCH = -2

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
 * A per-store last-write clock object (file stores: the `.konserve.clock`
 * watermark, ts/clock.ts); a backing offers it as its `clock` Op.
 */
export interface StoreClock {
  /** A lastWrite stamp (ms since epoch) for a write about to happen. */
  nowSync(): number
  now(): Promise<number>
}


/**
 * A copy of bytes that shares no bytes with them, for backings that keep or
 * hand out bytes. (Not `.slice()`: on a Node Buffer that is a view of the same
 * memory, so a caller changing its buffer would change the store.) In Node a
 * Buffer: small ones come from Node's pool, several times cheaper than a new
 * ArrayBuffer each.
 */
const B = NodeBuffer
export const copyBytes: (b: Uint8Array) => Uint8Array = B ? (b) => B.from(b) : (b) => new Uint8Array(b)

/** A string that identifies a key by its CKE, for maps: one char per byte. */
export function keyId(key: Uint8Array): string {
  // One byte per char; apply() over the array, in pieces that fit on the stack.
  if (key.length <= 4096) return String.fromCharCode.apply(null, key as unknown as number[])
  let s = ''
  for (let i = 0; i < key.length; i += 4096) s += String.fromCharCode.apply(null, key.subarray(i, i + 4096) as unknown as number[])
  return s
}

export { type Op, MISS, asyncOp, blockingOp, notBlocking, pollingLock, twinOp, withFastPath } from './seam.js'
export type { Backing, BlobSink, BlobSource, ListCursor, LogCursor, LogWriter } from './seam.js'
