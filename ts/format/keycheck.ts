/**
 * The key check of an encrypted store (docs/FORMAT.md §4.7): the bytes of
 * `.konserve.keycheck` (which key the store is encrypted with) and of
 * `.konserve.rekey` (a rekey in progress: the checks of both keys).
 * Byte-identical to crates/core/src/codec/keycheck.rs.
 *
 * The check value is HKDF-SHA256 of the user's key over a random salt: it
 * holds neither the key nor anything that tests a guess faster than an
 * encrypted segment already does (one HKDF per guess either way).
 */
import { KonserveError } from '../errors.js'
import type { SyncCrypto } from '../codec/aes.js'
import { xxh3_64 } from '../codec/xxhash.js'

export const KEY_CHECK_FILE = '.konserve.keycheck'
export const REKEY_FILE = '.konserve.rekey'
/** The fixed hex of both files' staging names (FORMAT.md §5's pattern). */
export const KEY_CHECK_STAGE_HEX = '4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b'
export const CHECK_SALT_LEN = 32
export const CHECK_LEN = 32
export const CHECK_INFO = new TextEncoder().encode('konserve/1 key check')
export const KEY_CHECK_FILE_LEN = 8 + 1 + CHECK_SALT_LEN + CHECK_LEN + 8
const ENTRY_LEN = 1 + CHECK_SALT_LEN + CHECK_LEN
export const REKEY_FILE_LEN = 8 + 1 + 2 * ENTRY_LEN + 8
const CHECK_MAGIC = new TextEncoder().encode('KSVKEYCK')
const REKEY_MAGIC = new TextEncoder().encode('KSVREKEY')
const VERSION = 1
/**
 * The version of `.konserve.keycheck` that marks a store with a write-ahead
 * log (docs/WAL.md §8): the same bytes as version 1; a store without a key
 * has salt and check all zero (the core's WAL_MARKER_VERSION).
 */
export const WAL_MARKER_VERSION = 2
/**
 * The version a store upgraded to its log gets now (docs/WAL.md §4.1): the
 * same bytes; the store's replacing writes may skip their key lock files
 * (the lock-free replace), and every locked writer passes through the log
 * lock. Versions 2 and 3 both mean "this store has a log".
 */
export const WAL_LOCKFREE_VERSION = 3

/** Whether a `.konserve.keycheck` of this version marks a store with a write-ahead log (2 or 3). */
export const isWalMarkerVersion = (version: number | undefined): boolean => version === WAL_MARKER_VERSION || version === WAL_LOCKFREE_VERSION

/** A salt and the check value of one key. */
export interface KeyCheck {
  salt: Uint8Array
  check: Uint8Array
}

type Hkdf = Pick<SyncCrypto, 'hkdfSha256'>

/** The check of `key` with this salt: HKDF-SHA256(IKM = key, salt, info = "konserve/1 key check", L = 32). */
export function keyCheckWithSalt(crypto: Hkdf, key: Uint8Array, salt: Uint8Array): KeyCheck {
  return { salt: Uint8Array.from(salt), check: crypto.hkdfSha256(key, salt, CHECK_INFO, CHECK_LEN) }
}

/** A new check of `key` with a fresh random salt. */
export function newKeyCheck(crypto: Pick<SyncCrypto, 'hkdfSha256' | 'randomBytes'>, key: Uint8Array): KeyCheck {
  return keyCheckWithSalt(crypto, key, crypto.randomBytes(CHECK_SALT_LEN))
}

/** Whether `key` is the key `c` was made of (compared in constant time). */
export function keyCheckMatches(crypto: Hkdf, c: KeyCheck, key: Uint8Array): boolean {
  const other = crypto.hkdfSha256(key, c.salt, CHECK_INFO, CHECK_LEN)
  let diff = 0
  for (let i = 0; i < CHECK_LEN; i++) diff |= other[i]! ^ c.check[i]!
  return diff === 0
}

function withChecksum(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(body.length + 8)
  out.set(body)
  new DataView(out.buffer).setBigUint64(body.length, xxh3_64(body), true)
  return out
}

/** The bytes of `.konserve.keycheck`: magic, version, salt, check, xxh3_64 of those. */
export function encodeKeyCheck(c: KeyCheck, version: number = VERSION): Uint8Array {
  const body = new Uint8Array(KEY_CHECK_FILE_LEN - 8)
  body.set(CHECK_MAGIC)
  body[8] = version
  body.set(c.salt, 9)
  body.set(c.check, 9 + CHECK_SALT_LEN)
  return withChecksum(body)
}

function checked(bytes: Uint8Array, magic: Uint8Array, len: number, what: string, newest = VERSION): Uint8Array {
  if (bytes.length !== len || magic.some((b, i) => bytes[i] !== b)) {
    throw new KonserveError('ERR_CORRUPT', `the ${what} file is damaged (length ${bytes.length} or magic)`)
  }
  const sum = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(len - 8, true)
  if (xxh3_64(bytes.subarray(0, len - 8)) !== sum) throw new KonserveError('ERR_CORRUPT', `the ${what} file is damaged (checksum)`)
  if (bytes[8]! < VERSION || bytes[8]! > newest) {
    const reads = newest === VERSION ? `${VERSION}` : `${VERSION} to ${newest}`
    throw new KonserveError('ERR_UNSUPPORTED_VERSION', `${what} file version ${bytes[8]} is not supported (this build reads ${reads})`)
  }
  return bytes.subarray(0, len - 8)
}

const entryAt = (b: Uint8Array, at: number): KeyCheck => ({
  salt: b.slice(at, at + CHECK_SALT_LEN),
  check: b.slice(at + CHECK_SALT_LEN, at + CHECK_SALT_LEN + CHECK_LEN),
})

/** Decodes `.konserve.keycheck` (ERR_CORRUPT unless it is whole). */
export function decodeKeyCheck(bytes: Uint8Array): KeyCheck {
  return entryAt(checked(bytes, CHECK_MAGIC, KEY_CHECK_FILE_LEN, 'key check'), 9)
}

/** The check of a store without a key that has the write-ahead log marker: all zero. */
export const KEY_CHECK_NONE: KeyCheck = { salt: new Uint8Array(CHECK_SALT_LEN), check: new Uint8Array(CHECK_LEN) }

/** Whether `c` is KEY_CHECK_NONE (no key). */
export const isNoKeyCheck = (c: KeyCheck): boolean => c.salt.every((b) => b === 0) && c.check.every((b) => b === 0)

/** Decodes `.konserve.keycheck` of version 1, WAL_MARKER_VERSION or WAL_LOCKFREE_VERSION: the check and its version. */
export function decodeKeyCheckVersioned(bytes: Uint8Array): { check: KeyCheck; version: number } {
  const body = checked(bytes, CHECK_MAGIC, KEY_CHECK_FILE_LEN, 'key check', WAL_LOCKFREE_VERSION)
  return { check: entryAt(body, 9), version: body[8]! }
}

/** A rekey in progress: the checks of the key it rekeys from and to (null: no key, plaintext). */
export interface PendingRekey {
  from: KeyCheck | null
  to: KeyCheck | null
}

/** The bytes of `.konserve.rekey`: magic, version, then from and to (each: present 0/1, salt, check; zeros when absent), xxh3_64. */
export function encodePendingRekey(p: PendingRekey): Uint8Array {
  const body = new Uint8Array(REKEY_FILE_LEN - 8)
  body.set(REKEY_MAGIC)
  body[8] = VERSION
  ;[p.from, p.to].forEach((e, i) => {
    const at = 9 + i * ENTRY_LEN
    if (!e) return
    body[at] = 1
    body.set(e.salt, at + 1)
    body.set(e.check, at + 1 + CHECK_SALT_LEN)
  })
  return withChecksum(body)
}

/** Decodes `.konserve.rekey` (ERR_CORRUPT unless it is whole). */
export function decodePendingRekey(bytes: Uint8Array): PendingRekey {
  const body = checked(bytes, REKEY_MAGIC, REKEY_FILE_LEN, 'rekey')
  const one = (at: number): KeyCheck | null => {
    if (body[at] === 0) return null
    if (body[at] === 1) return entryAt(body, at + 1)
    throw new KonserveError('ERR_CORRUPT', `the rekey file is damaged (entry flag ${body[at]})`)
  }
  return { from: one(9), to: one(9 + ENTRY_LEN) }
}
