/**
 * The key check of a store directory on disk (docs/FORMAT.md §4.7), as the
 * pure store's open and `rekey` use it; the core's open does the same
 * (crates/core/src/codec/keycheck.rs `check_on_open`).
 */
import gensync, { type Handler } from 'gensync'
import { join } from 'node:path'
import { ENCRYPTOR_NONE, HEADER_LEN, decodeHeader, decodeKeyFileHead, headLength, keyHashOfFileName } from '../../format/file.js'
import {
  KEY_CHECK_FILE,
  KEY_CHECK_FILE_LEN,
  KEY_CHECK_STAGE_HEX,
  type KeyCheck,
  type PendingRekey,
  REKEY_FILE,
  REKEY_FILE_LEN,
  KEY_CHECK_NONE,
  WAL_LOCKFREE_VERSION,
  decodeKeyCheck,
  decodeKeyCheckVersioned,
  isNoKeyCheck,
  decodePendingRekey,
  encodeKeyCheck,
  isWalMarkerVersion,
  keyCheckMatches,
  newKeyCheck,
} from '../../format/keycheck.js'
import { nodeCryptoProvider } from '../../crypto-node.js'
import { KonserveError } from '../../errors.js'
import { StagingDir, stagingName } from './staging.js'
import { KEY_FILE } from './keyfile.js'
import * as vfs from './vfs.js'

const crypto = nodeCryptoProvider.sync!

const decrypt = (message: string, file: string) => new KonserveError('ERR_DECRYPT', message, { file })

/** The bytes of `dir/name` (up to `max` + 1), or undefined when it does not exist. Never follows a link. */
function* readSmall(dir: string, name: string, max: number): Handler<Uint8Array | undefined> {
  const file = join(dir, name)
  let fd: number
  try {
    fd = yield* vfs.open(file, vfs.STORE_OPEN.r)
  } catch (err) {
    if (vfs.isMissing(err)) return undefined
    throw vfs.ioError(err, 'cannot open the file', file)
  }
  try {
    return yield* vfs.pread(fd, 0, max + 1)
  } catch (err) {
    throw vfs.ioError(err, 'cannot read the file', file)
  } finally {
    vfs.closeQuietly(fd)
  }
}

/** The store's key check, or undefined when it has none (ERR_CORRUPT when damaged). */
export const readKeyCheck = gensync(function* (dir: string): Handler<KeyCheck | undefined> {
  const bytes = yield* readSmall(dir, KEY_CHECK_FILE, KEY_CHECK_FILE_LEN)
  if (!bytes) return undefined
  try {
    return decodeKeyCheck(bytes)
  } catch (err) {
    throw vfs.ioError(err, 'cannot read the key check', join(dir, KEY_CHECK_FILE))
  }
})
export const readKeyCheckSync = readKeyCheck.sync

/** The key check as it is on disk, and its version (1, or 2 or 3: the write-ahead log's marker); undefined when there is none. */
export const readMarker = gensync(function* (dir: string): Handler<{ check: KeyCheck; version: number } | undefined> {
  const bytes = yield* readSmall(dir, KEY_CHECK_FILE, KEY_CHECK_FILE_LEN)
  if (!bytes) return undefined
  try {
    return decodeKeyCheckVersioned(bytes)
  } catch (err) {
    throw vfs.ioError(err, 'cannot read the key check', join(dir, KEY_CHECK_FILE))
  }
})

/**
 * Writes the write-ahead log marker (docs/WAL.md §8), as the core's
 * `write_wal_marker`: the store's key check as version 3 (docs/WAL.md
 * §4.1: lock-free replaces; all zero without a key), durably (staging,
 * rename, directory fsync).
 */
export const writeWalMarker = gensync(function* (staging: StagingDir): Handler<void> {
  const check = (yield* readMarker(staging.dir))?.check ?? KEY_CHECK_NONE
  yield* writeStoreFile(staging, KEY_CHECK_FILE, encodeKeyCheck(check, WAL_LOCKFREE_VERSION))
})

/** Removes the write-ahead log marker (the core's `remove_wal_marker`): the key check back to version 1, or no file when the store has no key; durably. */
export const removeWalMarker = gensync(function* (staging: StagingDir): Handler<void> {
  const found = yield* readMarker(staging.dir)
  if (!found) return
  if (!isNoKeyCheck(found.check)) yield* writeStoreFile(staging, KEY_CHECK_FILE, encodeKeyCheck(found.check))
  else yield* removeStoreFile(staging, KEY_CHECK_FILE)
})

/** The store's unfinished rekey, or undefined (ERR_CORRUPT when damaged). */
export const readPendingRekey = gensync(function* (dir: string): Handler<PendingRekey | undefined> {
  const bytes = yield* readSmall(dir, REKEY_FILE, REKEY_FILE_LEN)
  if (!bytes) return undefined
  try {
    return decodePendingRekey(bytes)
  } catch (err) {
    throw vfs.ioError(err, 'cannot read the rekey file', join(dir, REKEY_FILE))
  }
})
export const readPendingRekeySync = readPendingRekey.sync

/**
 * Staging files of the key check and the rekey file count from 10^9: the
 * native core, in the same process, writes the same names counting from 0.
 */

/** Writes `staging.dir/name` by the durable write of ./staging.ts, as a key file is written. */
export const writeStoreFile = gensync(function* (staging: StagingDir, name: string, bytes: Uint8Array): Handler<void> {
  yield* staging.writeFile(stagingName(KEY_CHECK_STAGE_HEX), join(staging.dir, name), [bytes])
})
export const writeStoreFileSync = (dir: string, name: string, bytes: Uint8Array, durable: boolean): void =>
  writeStoreFile.sync(new StagingDir(dir, durable), name, bytes)

/** Removes `staging.dir/name` durably (unlink, directory fsync); a missing file is fine. */
export const removeStoreFile = gensync(function* (staging: StagingDir, name: string): Handler<void> {
  if (!(yield* staging.remove(join(staging.dir, name), 'cannot remove the file'))) yield* staging.syncDir()
})
export const removeStoreFileSync = (dir: string, name: string, durable: boolean): void => removeStoreFile.sync(new StagingDir(dir, durable), name)

/** Whether `key` is the key of `check`. */
export const matchesKey = (check: KeyCheck, key: Uint8Array): boolean => keyCheckMatches(crypto, check, key)
/** A new check of `key` (fresh salt). */
export const checkOfKey = (key: Uint8Array): KeyCheck => newKeyCheck(crypto, key)

export interface StoreKeyOptions {
  /** The store's encryption key, if it has one. */
  secret?: Uint8Array
  /** Read plaintext files too (a migration to encryption). */
  acceptPlaintext?: boolean
}

/**
 * What opening a store checks about its key (FORMAT.md §4.7), as the core's
 * open does: an unfinished rekey refuses the open; a key check must match the
 * store's key, and an open without a key is refused when there is one; a
 * keyed open of a store without a key check adopts the key (writes the check)
 * once every key file is encrypted and one authenticates with it, and refuses
 * a store that holds plaintext files unless `acceptPlaintext`.
 *
 * Returns the version of the store's write-ahead log marker (2 or 3, a key
 * check of that version, docs/WAL.md §8 and §4.1; salt and check all zero
 * when it has no key), or 0 when it has none.
 */
export const checkStoreKey = gensync(function* (staging: StagingDir, o: StoreKeyOptions): Handler<number> {
  const dir = staging.dir
  if (yield* readPendingRekey(dir)) {
    throw decrypt(
      'the store has an unfinished rekey: run rekey(dir, { from, to }) again with the same keys to finish it before opening the store',
      join(dir, REKEY_FILE),
    )
  }
  const found = yield* readMarker(dir)
  const marker = found !== undefined && isWalMarkerVersion(found.version) ? found.version : 0
  // The marker of a store without a key says nothing of keys.
  const check = found && (!marker || !isNoKeyCheck(found.check)) ? found.check : undefined
  const file = join(dir, KEY_CHECK_FILE)
  if (!o.secret) {
    if (check) throw decrypt('the store is encrypted (it has a key check): open it with its encryptor, or make it plaintext with rekey(dir, { from, to: null })', file)
    return marker
  }
  if (check) {
    if (!matchesKey(check, o.secret)) throw decrypt("wrong encryption key: the key does not match the store's key check", file)
    return marker
  }
  yield* adopt(staging, o.secret, o, marker)
  return marker
})
export const checkStoreKeySync = (dir: string, o: StoreKeyOptions & { durable: boolean }): number => checkStoreKey.sync(new StagingDir(dir, o.durable), o)

/** A keyed open of a store without a key check: see checkStoreKey. */
function* adopt(staging: StagingDir, secret: Uint8Array, o: StoreKeyOptions, marker: number): Handler<void> {
  const dir = staging.dir
  if (marker && !o.acceptPlaintext) {
    // A store on its log with no key: its records are plaintext key files that this walk of the key files does not see.
    throw decrypt(
      'the store is on its write-ahead log and has no key (a plaintext store): open it with acceptPlaintext to migrate it key by key, or encrypt it whole with rekey(dir, { from: null, to })',
      join(dir, KEY_CHECK_FILE),
    )
  }
  let verified = false
  let names: string[]
  try {
    names = yield* vfs.readdir(dir)
  } catch (err) {
    throw vfs.ioError(err, 'cannot list the store directory', dir)
  }
  for (const name of names) {
    if (!KEY_FILE.test(name)) continue
    const file = join(dir, name)
    let fd: number
    try {
      fd = yield* vfs.open(file, vfs.STORE_OPEN.r)
    } catch (err) {
      if (vfs.isMissing(err)) continue
      throw vfs.ioError(err, 'cannot open the key file', file)
    }
    try {
      let size: number
      let head: Uint8Array
      try {
        size = yield* vfs.regularFileSize(fd, file, 'cannot read the key file')
      } catch (err) {
        if ((err as KonserveError).code === 'ERR_NOT_A_FILE') continue
        throw vfs.ioError(err, 'cannot stat the key file', file)
      }
      // A damaged file is left for the reads that meet it to report.
      try {
        head = yield* vfs.pread(fd, 0, HEADER_LEN)
      } catch {
        continue
      }
      if (head.length < HEADER_LEN) continue
      let header
      try {
        header = decodeHeader(head, size)
      } catch {
        continue
      }
      if (header.encryptor === ENCRYPTOR_NONE) {
        if (o.acceptPlaintext) continue
        throw decrypt(
          'the store holds files that are not encrypted and has no key check (a plaintext store): open it with acceptPlaintext to migrate it key by key, or encrypt it whole with rekey(dir, { from: null, to })',
          file,
        )
      }
      if (verified) continue
      const need = headLength(head, size)
      let prefix: Uint8Array
      try {
        prefix = yield* vfs.pread(fd, 0, need)
      } catch {
        continue
      }
      if (prefix.length < need) continue
      try {
        yield* decodeKeyFileHead(prefix, size, { secret, keyHash: keyHashOfFileName(name), crypto: nodeCryptoProvider })
        verified = true
      } catch (err) {
        if ((err as KonserveError).code === 'ERR_DECRYPT') throw decrypt("wrong encryption key: the store's files do not authenticate with it", file)
      }
    } finally {
      vfs.closeQuietly(fd)
    }
  }
  // Checked as above, but a read-only open writes no key check.
  if (staging.readOnly) return
  yield* writeStoreFile(staging, KEY_CHECK_FILE, encodeKeyCheck(checkOfKey(secret), marker || 1))
}
