/**
 * `rekey`: re-encrypts a whole store directory from one key to another (or
 * from plaintext, or to plaintext), crash-safe and resumable (docs/FORMAT.md
 * §4.7 "Rekey").
 *
 * Written once, over the pure store's codec and durable writes, for both
 * implementations: the native core and the pure store write the same bytes
 * (FORMAT.md, the golden vectors), so a directory rekeyed here is the same
 * directory either implementation would have written, and both read it
 * (__test__/rekey.spec.ts reopens it with each). The order of the steps is
 * what makes it crash-safe, not which implementation writes the files:
 *
 * 1. `.konserve.rekey` is written durably, naming both keys (their checks).
 *    From then on every open is refused until the rekey finishes, and a
 *    rerun of `rekey` with the same keys resumes.
 * 2. Each key file is rewritten under the new key by the durable replace
 *    (staging file, fsync, rename, directory fsync), under the key's lock.
 *    A file is in one key or the other, never torn; a resumed rekey reads
 *    each file with whichever of the two keys authenticates it and skips
 *    those already rewritten.
 * 3. The key check is switched to the new key (or removed, to plaintext),
 *    then `.konserve.rekey` is removed.
 *
 * A crash at any point leaves either the old store (before 1), a pending
 * rekey that a rerun finishes (1 to 3), or the new store.
 *
 * A store on its write-ahead log (docs/WAL.md) is first switched back to key
 * files (opened with `wal: false` and the `from` key: a full checkpoint), and
 * after step 3 put back on a new log under the `to` key; a crash in between
 * leaves it on key files.
 */
import gensync, { type Handler } from 'gensync'
import * as fs from 'node:fs'
import { join, resolve } from 'node:path'
import type { LogRecord, RawEntry } from './backing/index.js'
import { concat } from './codec/aes.js'
import { type Header, ENCRYPTOR_NONE, FLAG_CHUNKED, HEADER_LEN, LOG_COMMIT_AREA, decodeHeader, encodeMetaSegment, isLogHeader } from './format/file.js'
import { KEY_CHECK_FILE, REKEY_FILE, type KeyCheck, encodeKeyCheck, encodePendingRekey, isWalMarkerVersion } from './format/keycheck.js'
import { encodeCommitArea, encodeRecords, logHeader } from './format/log.js'
import { KonserveError } from './errors.js'
import type { EncryptorOption } from './store.js'
import { type PureFileBacking, openPureStore } from './backends/pure/store.js'
import { createPureCodec, type PureCodec } from './backends/pure/codec.js'
import {
  checkOfKey,
  checkStoreKeySync,
  matchesKey,
  readKeyCheckSync,
  readMarker,
  readPendingRekeySync,
  removeStoreFileSync,
  writeStoreFileSync,
} from './backends/pure/keycheck.js'

export interface RekeyOptions {
  /** The store's key now: an encryptor, or null for a plaintext store. */
  from: EncryptorOption | null
  /** The store's key after: an encryptor, or null to make the store plaintext. */
  to: EncryptorOption | null
  /** Blocking form (returns the result instead of a Promise). */
  sync?: boolean
  /** fsync each step (default true; false only for tests and scratch stores). */
  syncBlob?: boolean
  /**
   * Called after each durable step: the pending rekey is written, a key
   * file is rewritten, the key check is switched, the rekey is done.
   */
  onProgress?: (p: RekeyProgress) => void
}

export interface RekeyProgress {
  step: 'pending' | 'file' | 'keycheck' | 'done'
  /** The key file just rewritten (step 'file'). */
  file?: string
  /** Key files rewritten so far. */
  rewritten: number
}

export interface RekeyResult {
  /** Key files rewritten under the new key. */
  rewritten: number
  /** Key files that already were under the new key (a resumed rekey). */
  skipped: number
}

type Ret<O, T> = O extends { sync: true } ? T : Promise<T>

const KEY_FILE = /^[0-9a-f]{32}\.ksv$/
const HEAD_READ = 4096
/** How many log records are re-encoded per batch, and how many blob bytes per piece. */
const LOG_BATCH = 1024
const BLOB_PIECE = 1 << 20

const invalid = (message: string) => new KonserveError('ERR_INVALID_ARGUMENT', message)

function keyBytes(e: EncryptorOption | null | undefined, which: string): Uint8Array | undefined {
  if (e === null) return undefined
  if (typeof e !== 'object' || e === undefined || e.type !== 'aes') {
    throw invalid(`rekey: \`${which}\` must be { type: 'aes', key } or null`)
  }
  const bytes = typeof e.key === 'string' ? new TextEncoder().encode(e.key) : e.key instanceof Uint8Array ? Uint8Array.from(e.key) : undefined
  if (!bytes || bytes.length === 0) throw invalid(`rekey: \`${which}\` needs a non-empty key (a string or a Uint8Array)`)
  return bytes
}

const sameBytes = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((x, i) => x === b[i])

const openBacking = (dir: string, codec: PureCodec, syncBlob: boolean) => openPureStore(dir, codec, { syncBlob, skipKeyCheck: true })
const putEntry = (b: PureFileBacking, key: Uint8Array, e: RawEntry) => b.put([{ key, serializer: e.serializer, meta: e.meta, value: e.value }])

/** The head of a key file: its header and the bytes read (at least header and meta segment). */
function readHead(file: string): { header: Header; prefix: Uint8Array; size: number } {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK)
  try {
    const size = fs.fstatSync(fd).size
    let prefix = new Uint8Array(Math.min(size, HEAD_READ))
    fs.readSync(fd, prefix, 0, prefix.length, 0)
    const header = decodeHeader(prefix, size)
    const headLen = HEADER_LEN + header.metaLen
    if (headLen > prefix.length) {
      prefix = new Uint8Array(headLen)
      fs.readSync(fd, prefix, 0, headLen, 0)
    }
    return { header, prefix, size }
  } finally {
    fs.closeSync(fd)
  }
}

interface Keys {
  from: Uint8Array | undefined
  to: Uint8Array | undefined
}

/**
 * Which key a file is under: 'to' (already rewritten, or plaintext when the
 * target is plaintext), 'from' (to rewrite). ERR_DECRYPT when neither key
 * reads it: a plaintext file planted in an encrypted store, or a file of
 * another key.
 */
function classify(name: string, file: string, keys: Keys, src: PureCodec, dst: PureCodec): { form: 'from' | 'to'; key?: Uint8Array; header: Header } {
  let head
  try {
    head = readHead(file)
  } catch (err) {
    throw err instanceof KonserveError ? Object.assign(err, { file }) : new KonserveError('ERR_IO', `rekey: cannot read the key file: ${(err as Error).message}`, { file, cause: err })
  }
  const { header, prefix, size } = head
  if (header.encryptor === ENCRYPTOR_NONE) {
    if (!keys.to) return { form: 'to', header }
    if (!keys.from) return { form: 'from', key: src.decodeHead.sync(prefix, size, undefined, name).key, header }
    throw new KonserveError('ERR_DECRYPT', 'rekey: the file is not encrypted, in an encrypted store (planted?): delete it or restore it, then run rekey again', { file })
  }
  const attempt = (codec: PureCodec) => {
    try {
      return codec.decodeHead.sync(prefix, size, undefined, name).key
    } catch (err) {
      if ((err as KonserveError).code === 'ERR_DECRYPT') return undefined
      throw Object.assign(err as KonserveError, { file })
    }
  }
  if (keys.to && attempt(dst)) return { form: 'to', header }
  const key = keys.from ? attempt(src) : undefined
  if (key) return { form: 'from', key, header }
  throw new KonserveError('ERR_DECRYPT', 'rekey: the file authenticates with neither key: delete it or restore it, then run rekey again', { file })
}

/** Re-encodes the log at `key`: the records of `src`, indexes kept, under `dst`'s codec, through a staging file. */
function* rewriteLog(src: PureFileBacking, dst: PureFileBacking, dstCodec: PureCodec, key: Uint8Array, meta: Uint8Array): Handler<void> {
  const cursor = yield* src.openLog(key)
  if (!cursor) return
  try {
    const codec = dstCodec.writeCodec(key)
    const metaStored = yield* encodeMetaSegment(codec, key, meta)
    yield* dst.replaceFile(key, function* (sink) {
      yield* sink.write(concat([logHeader(codec, metaStored), metaStored, new Uint8Array(LOG_COMMIT_AREA)]))
      let count = 0
      let end = HEADER_LEN + metaStored.length + LOG_COMMIT_AREA
      let lastChecksum = 0n
      for (let batch: LogRecord[] | undefined; (batch = yield* cursor.next(LOG_BATCH)); ) {
        if (batch.length === 0) continue
        const bytes = yield* encodeRecords(codec, batch[0]!.index, batch)
        yield* sink.write(bytes)
        count += batch.length
        end += bytes.length
        lastChecksum = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(bytes.length - 12, true)
      }
      const area = yield* encodeCommitArea({ seq: 1, count, end, lastChecksum }, codec, metaStored)
      yield* sink.writeAt(area, HEADER_LEN + metaStored.length)
    })
  } finally {
    cursor.close()
  }
}

/** Copies the chunked blob at `key` from `src` to `dst` in pieces (the blob writer's durable replace). */
function* rewriteBlob(src: PureFileBacking, dst: PureFileBacking, key: Uint8Array): Handler<void> {
  const source = yield* src.openBlob(key)
  if (!source) return
  try {
    const sink = yield* dst.blobWriter(key, source.meta.meta)
    try {
      for (let at = 0; at < source.size; ) {
        const piece = yield* source.read(at, Math.min(BLOB_PIECE, source.size - at))
        if (piece.length === 0) throw new KonserveError('ERR_CORRUPT', 'rekey: the blob ended early', { file: source.meta.file })
        yield* sink.write(piece)
        at += piece.length
      }
      yield* sink.commit()
    } finally {
      sink.abort()
    }
  } finally {
    source.close()
  }
}

const sameCheck = (c: KeyCheck | null, key: Uint8Array | undefined) => (c === null ? key === undefined : key !== undefined && matchesKey(c, key))

const rekeyG = gensync(function* (path: string, options: RekeyOptions): Handler<RekeyResult> {
  if (typeof path !== 'string' || path === '') throw invalid('rekey: a store directory path (a non-empty string) is needed')
  if (!options || typeof options !== 'object' || !('from' in options) || !('to' in options)) {
    throw invalid('rekey: options { from, to } are needed (an encryptor or null each)')
  }
  const keys: Keys = { from: keyBytes(options.from, 'from'), to: keyBytes(options.to, 'to') }
  if (!keys.from && !keys.to) throw invalid('rekey: `from` and `to` are both null: nothing to do')
  if (keys.from && keys.to && sameBytes(keys.from, keys.to)) throw invalid('rekey: `from` and `to` are the same key')
  const durable = options.syncBlob ?? true
  const progress = options.onProgress ?? (() => {})
  let dir: string
  try {
    dir = fs.realpathSync(resolve(path))
  } catch (err) {
    throw new KonserveError('ERR_IO', `rekey: cannot open the store directory: ${(err as Error).message}`, { file: path, cause: err })
  }

  // 0. A store on its write-ahead log (docs/WAL.md §7): checkpointed whole and
  // switched back to key files (`wal: false`, which checks `from` as any open
  // does), rekeyed as any store, then put on a new log under the new key.
  const onLog = isWalMarkerVersion(readMarker.sync(dir)?.version)
  if (onLog) yield* (yield* openPureStore(dir, createPureCodec(0, keys.from), { syncBlob: durable, encryptionKey: keys.from, wal: false })).close()

  // 1. The pending rekey: resumed, or checked against the store and written.
  const pending = readPendingRekeySync(dir)
  if (pending) {
    if (!sameCheck(pending.from, keys.from) || !sameCheck(pending.to, keys.to)) {
      throw new KonserveError('ERR_DECRYPT', 'rekey: an unfinished rekey with other keys: run it again with the keys it was started with', {
        file: join(dir, REKEY_FILE),
      })
    }
  } else {
    if (keys.from) {
      // The store's key must be `from` (a store without a key check is checked as an open checks it).
      checkStoreKeySync(dir, { secret: keys.from, durable })
    } else if (readKeyCheckSync(dir)) {
      throw new KonserveError('ERR_DECRYPT', 'rekey: the store is encrypted (it has a key check): `from` must be its encryptor', {
        file: join(dir, KEY_CHECK_FILE),
      })
    }
    const entry = (k: Uint8Array | undefined) => (k ? checkOfKey(k) : null)
    writeStoreFileSync(dir, REKEY_FILE, encodePendingRekey({ from: entry(keys.from), to: entry(keys.to) }), durable)
    progress({ step: 'pending', rewritten: 0 })
  }

  // 2. Every key file under the new key.
  const srcCodec = createPureCodec(0, keys.from)
  const dstCodecs = [createPureCodec(0, keys.to), createPureCodec(1, keys.to)]
  const src = yield* openBacking(dir, srcCodec, durable)
  const dsts = [yield* openBacking(dir, dstCodecs[0]!, durable), yield* openBacking(dir, dstCodecs[1]!, durable)]
  let rewritten = 0
  let skipped = 0
  for (const name of fs.readdirSync(dir).sort()) {
    if (!KEY_FILE.test(name)) continue
    const file = join(dir, name)
    if (!fs.existsSync(file)) continue
    const found = classify(name, file, keys, srcCodec, dstCodecs[0]!)
    if (found.form === 'to') {
      skipped++
      continue
    }
    const key = found.key!
    const c = found.header.compressor === 1 ? 1 : 0
    const dst = dsts[c]!
    yield* dst.lock([key])
    try {
      if (isLogHeader(found.header)) {
        const meta = yield* src.getMeta(key)
        if (meta) yield* rewriteLog(src, dst, dstCodecs[c]!, key, meta.meta)
      } else if (found.header.flags === FLAG_CHUNKED) {
        yield* rewriteBlob(src, dst, key)
      } else {
        const entry = yield* src.get(key)
        if (entry) yield* putEntry(dst, key, entry)
      }
    } finally {
      dst.unlock([key])
    }
    rewritten++
    progress({ step: 'file', file, rewritten })
  }

  // 3. The key check switched, then the pending rekey removed.
  if (keys.to) writeStoreFileSync(dir, KEY_CHECK_FILE, encodeKeyCheck(checkOfKey(keys.to)), durable)
  else removeStoreFileSync(dir, KEY_CHECK_FILE, durable)
  progress({ step: 'keycheck', rewritten })
  removeStoreFileSync(dir, REKEY_FILE, durable)
  // 4. Back on a log, if it was (a crash before this leaves it on key files: open it once with wal: true).
  if (onLog) yield* (yield* openPureStore(dir, createPureCodec(0, keys.to), { syncBlob: durable, encryptionKey: keys.to, wal: true })).close()
  progress({ step: 'done', rewritten })
  return { rewritten, skipped }
})

/**
 * Re-encrypts every key file, blob and log of the store in `path` from the
 * key `from` to the key `to` (either may be null: plaintext), crash-safe: a
 * crash leaves a pending rekey that every open refuses (ERR_DECRYPT) and that
 * running `rekey` again with the same keys finishes. The store must not be
 * in use meanwhile (other processes' writes would use the old key).
 */
export function rekey<O extends RekeyOptions>(path: string, options: O): Ret<O, RekeyResult> {
  return (options?.sync ? rekeyG.sync(path, options) : rekeyG.async(path, options)) as Ret<O, RekeyResult>
}
