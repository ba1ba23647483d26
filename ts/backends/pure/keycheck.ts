/**
 * The key check of a store directory on disk (docs/FORMAT.md §4.7), as the
 * pure store's open and `rekey` use it; the core's open does the same
 * (crates/core/src/codec/keycheck.rs `check_on_open`).
 */
import * as fs from 'node:fs'
import { join } from 'node:path'
import { decodeHeader, decodeKeyFileHeadSync, ENCRYPTOR_NONE, HEADER_LEN, keyHashOfFileName } from '../../format/file.js'
import {
  KEY_CHECK_FILE,
  KEY_CHECK_FILE_LEN,
  KEY_CHECK_STAGE_HEX,
  type KeyCheck,
  type PendingRekey,
  REKEY_FILE,
  REKEY_FILE_LEN,
  decodeKeyCheck,
  decodePendingRekey,
  encodeKeyCheck,
  keyCheckMatches,
  newKeyCheck,
} from '../../format/keycheck.js'
import { nodeCryptoProvider } from '../../crypto-node.js'
import { KonserveError, codeOfOsError } from '../../errors.js'
import { fsyncDirSync } from '../../fsync.js'

const KEY_FILE = /^[0-9a-f]{32}\.ksv$/
const crypto = nodeCryptoProvider.sync!

function ioError(err: unknown, what: string, file: string): KonserveError {
  if (err instanceof KonserveError) {
    if (!err.file) err.file = file
    return err
  }
  return new KonserveError(codeOfOsError(err), `${what}: ${(err as Error).message}`, { file, cause: err })
}

const decrypt = (message: string, file: string) => new KonserveError('ERR_DECRYPT', message, { file })

/** The bytes of `dir/name` (up to `max` + 1), or undefined when it does not exist. Never follows a link. */
function readSmall(dir: string, name: string, max: number): Uint8Array | undefined {
  const file = join(dir, name)
  let fd: number
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw ioError(err, 'cannot open the file', file)
  }
  try {
    const buf = new Uint8Array(max + 1)
    const n = fs.readSync(fd, buf, 0, buf.length, 0)
    return buf.subarray(0, n)
  } catch (err) {
    throw ioError(err, 'cannot read the file', file)
  } finally {
    fs.closeSync(fd)
  }
}

/** The store's key check, or undefined when it has none (ERR_CORRUPT when damaged). */
export function readKeyCheckSync(dir: string): KeyCheck | undefined {
  const bytes = readSmall(dir, KEY_CHECK_FILE, KEY_CHECK_FILE_LEN)
  if (!bytes) return undefined
  try {
    return decodeKeyCheck(bytes)
  } catch (err) {
    throw ioError(err, 'cannot read the key check', join(dir, KEY_CHECK_FILE))
  }
}

/** The store's unfinished rekey, or undefined (ERR_CORRUPT when damaged). */
export function readPendingRekeySync(dir: string): PendingRekey | undefined {
  const bytes = readSmall(dir, REKEY_FILE, REKEY_FILE_LEN)
  if (!bytes) return undefined
  try {
    return decodePendingRekey(bytes)
  } catch (err) {
    throw ioError(err, 'cannot read the rekey file', join(dir, REKEY_FILE))
  }
}

let stageSeq = 0

/** Writes `dir/name` as a key file is written (FORMAT.md §5): staging file written whole, fsync, rename, directory fsync. */
export function writeStoreFileSync(dir: string, name: string, bytes: Uint8Array, durable: boolean): void {
  const stage = join(dir, `.${KEY_CHECK_STAGE_HEX}.${process.pid}.${1_000_000_000 + stageSeq++}.stage`)
  const target = join(dir, name)
  let step = 'cannot create a staging file'
  try {
    const fd = fs.openSync(stage, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o644)
    try {
      step = 'cannot write a staging file'
      fs.writeSync(fd, bytes)
      step = 'cannot fsync a staging file'
      if (durable) fs.fsyncSync(fd)
    } finally {
      fs.closeSync(fd)
    }
    step = 'cannot rename a staging file'
    fs.renameSync(stage, target)
  } catch (err) {
    try {
      fs.unlinkSync(stage)
    } catch {
      // never created, or already renamed
    }
    throw new KonserveError(step.includes('fsync') ? 'ERR_FSYNC' : codeOfOsError(err), `${step}: ${(err as Error).message}`, { file: target, cause: err })
  }
  if (durable) syncDir(dir)
}

/** Removes `dir/name` durably (unlink, directory fsync); a missing file is fine. */
export function removeStoreFileSync(dir: string, name: string, durable: boolean): void {
  try {
    fs.unlinkSync(join(dir, name))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError(err, 'cannot remove the file', join(dir, name))
  }
  if (durable) syncDir(dir)
}

function syncDir(dir: string): void {
  try {
    fsyncDirSync(dir)
  } catch (err) {
    throw new KonserveError('ERR_FSYNC', `cannot fsync the store directory: ${(err as Error).message}`, { file: dir, cause: err })
  }
}

/** Whether `key` is the key of `check`. */
export const matchesKey = (check: KeyCheck, key: Uint8Array): boolean => keyCheckMatches(crypto, check, key)
/** A new check of `key` (fresh salt). */
export const checkOfKey = (key: Uint8Array): KeyCheck => newKeyCheck(crypto, key)

export interface StoreKeyOptions {
  /** The store's encryption key, if it has one. */
  secret?: Uint8Array
  /** Read plaintext files too (a migration to encryption). */
  acceptPlaintext?: boolean
  /** fsync what is written. */
  durable: boolean
}

/**
 * What opening a store checks about its key (FORMAT.md §4.7), as the core's
 * open does: an unfinished rekey refuses the open; a key check must match the
 * store's key, and an open without a key is refused when there is one; a
 * keyed open of a store without a key check adopts the key (writes the check)
 * once every key file is encrypted and one authenticates with it, and refuses
 * a store that holds plaintext files unless `acceptPlaintext`.
 */
export function checkStoreKeySync(dir: string, o: StoreKeyOptions): void {
  if (readPendingRekeySync(dir)) {
    throw decrypt(
      'the store has an unfinished rekey: run rekey(dir, { from, to }) again with the same keys to finish it before opening the store',
      join(dir, REKEY_FILE),
    )
  }
  const check = readKeyCheckSync(dir)
  const file = join(dir, KEY_CHECK_FILE)
  if (!o.secret) {
    if (check) throw decrypt('the store is encrypted (it has a key check): open it with its encryptor, or make it plaintext with rekey(dir, { from, to: null })', file)
    return
  }
  if (check) {
    if (!matchesKey(check, o.secret)) throw decrypt("wrong encryption key: the key does not match the store's key check", file)
    return
  }
  adopt(dir, o.secret, o)
}

/** A keyed open of a store without a key check: see checkStoreKeySync. */
function adopt(dir: string, secret: Uint8Array, o: StoreKeyOptions): void {
  let verified = false
  for (const name of fs.readdirSync(dir)) {
    if (!KEY_FILE.test(name)) continue
    const file = join(dir, name)
    let fd: number
    try {
      fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue
      throw ioError(err, 'cannot open the key file', file)
    }
    try {
      const size = fs.fstatSync(fd).size
      const head = new Uint8Array(HEADER_LEN)
      // A damaged file is left for the reads that meet it to report.
      if (fs.readSync(fd, head, 0, HEADER_LEN, 0) < HEADER_LEN) continue
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
      const prefix = new Uint8Array(HEADER_LEN + header.metaLen)
      if (fs.readSync(fd, prefix, 0, prefix.length, 0) < prefix.length) continue
      try {
        decodeKeyFileHeadSync(prefix, size, { secret, keyHash: keyHashOfFileName(name), crypto: nodeCryptoProvider })
        verified = true
      } catch (err) {
        if ((err as KonserveError).code === 'ERR_DECRYPT') throw decrypt("wrong encryption key: the store's files do not authenticate with it", file)
      }
    } finally {
      fs.closeSync(fd)
    }
  }
  writeStoreFileSync(dir, KEY_CHECK_FILE, encodeKeyCheck(checkOfKey(secret)), o.durable)
}
