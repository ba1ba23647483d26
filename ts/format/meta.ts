/**
 * The metadata map of docs/FORMAT.md §4.4: always plain MessagePack, whatever the
 * value serializer, so that any implementation can list and sweep a store.
 * No `node:` imports: shared with the browser store.
 */
import { Packr } from 'msgpackr'
import { KonserveError } from '../errors.js'
import type { Key } from './key.js'

export type KeyType = 'value' | 'binary' | 'append-log'

/** What `keys` and `getMeta` return for a key. */
export interface Metadata {
  key: Key
  type: KeyType
  /** When the key was last written; never earlier than a previous write in this process. */
  lastWrite: Date
  /** Counts the key's writes: 1 after the first; a new revision on every write (see `expectedRevision`). */
  revision?: number
  /** Any user metadata given on write. */
  [field: string]: unknown
}

// Plain maps (no records, no extensions but the standard timestamp) for portability.
const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false })

/** Encodes everything but `key`, which lives in the file as its CKE. */
export function encodeMeta(meta: Metadata): Uint8Array {
  const { key: _key, ...rest } = meta
  try {
    return packr.pack(rest)
  } catch (err) {
    throw new KonserveError('ERR_SERIALIZE', `metadata cannot be encoded: ${(err as Error).message}`, { cause: err })
  }
}

export function decodeMeta(key: Key, bytes: Uint8Array): Metadata {
  const rest = packr.unpack(bytes) as Record<string, unknown>
  if (rest === null || typeof rest !== 'object' || !(rest.lastWrite instanceof Date) || typeof rest.type !== 'string') {
    throw new KonserveError('ERR_CORRUPT', 'metadata is not a konserve metadata map')
  }
  return { ...rest, key } as Metadata
}
