/**
 * Append logs (docs/FORMAT.md §4.6), as crates/core/src/log.rs: a header with
 * flags 6 (FLAG_LOG | FLAG_LOG_COMMIT) and `v = 128`, the meta segment, the
 * commit area (two 64-byte commit slots, A and B), then records to the end
 * of the file:
 *
 *   u32 LE s | u64 LE index | u64 LE stamp | u8 serializer | payload (s bytes,
 *   kind 4, this index) | u64 LE xxh3_64 of the 21 + s bytes before | u32 LE s
 *
 * The commit (slot B if valid, else slot A) says how many records were
 * acknowledged and where they end: every one of them must verify (anything
 * short of them is ERR_CORRUPT); only the bytes past them, the torn tail of an
 * append that never returned, are ignored.
 *
 * A log of the earlier layout (flags 2, `v = 0`, no commit area) is read by
 * the old rule: the first record that runs past the end, fails its checksum,
 * has two different lengths or is not the next index ends the log; the bytes
 * from there on are a torn tail unless a valid record ends the file (then
 * ERR_CORRUPT). Its first append rewrites it in the current layout.
 *
 * Everything reads through a `ReadAt`, so the same code serves bytes in memory
 * and open files, one record (or a 64 KiB window) at a time. No `node:` imports.
 */
import gensync, { type Handler } from 'gensync'
import type { LogInfo, LogRecord, NewRecord } from '../backing/index.js'
import { KonserveError } from '../errors.js'
import { type CryptoProvider, SALT_LEN, commitTag, concat } from '../codec/aes.js'
import {
  ENCRYPTOR_AES,
  FLAGS_COMMITTED_LOG,
  FLAG_LOG,
  HEADER_LEN,
  LOG_COMMIT_AREA,
  KIND_RECORD,
  type DecodeContext,
  type DecodedHead,
  type Header,
  type RandomSource,
  type ReadAt,
  type SegmentCodec,
  bytesReader,
  decodeKeyFileHead,
  checkEncrypted,
  decodeSegmentAt,
  encodeHeader,
  encodeMetaSegment,
  encodeSegmentAt,
  keyHash,
  segmentCodec,
} from './file.js'
import { xxh3_64 } from '../codec/xxhash.js'

/** Bytes of a record before its payload: length, index, stamp, serializer. */
export const RECORD_HEAD_LEN = 21
/** Bytes of a record besides its payload. */
export const RECORD_OVERHEAD = 33
/** How much a buffered reader reads at once. */
const WINDOW = 64 * 1024
/** A batch of records also ends once it holds this many bytes. */
const BATCH_BYTES = 16 << 20

const viewOf = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength)
const corrupt = (message: string) => new KonserveError('ERR_CORRUPT', message)

let emptyChecksum: bigint | undefined
/** xxh3_64 of no bytes: a log's value checksum. */
function emptyValueChecksum(): bigint {
  emptyChecksum ??= xxh3_64(new Uint8Array(0))
  return emptyChecksum
}

/** A u64 LE that fits a safe integer, or undefined. */
function u64(v: DataView, at: number): number | undefined {
  const high = v.getUint32(at + 4, true)
  return high >= 0x200000 ? undefined : v.getUint32(at, true) + high * 0x100000000
}

function setU64(v: DataView, at: number, n: number): void {
  v.setUint32(at, n % 0x100000000, true)
  v.setUint32(at + 4, Math.floor(n / 0x100000000), true)
}

/** A record's fields, where it lies: `pos .. end` of the file. */
export interface RecordInfo {
  pos: number
  end: number
  /** The stored payload length `s`. */
  payloadLength: number
  index: number
  stamp: number
  serializer: number
  /** The record's stored xxh3_64. */
  checksum: bigint
}

/** A valid record and its whole bytes (`33 + s`; a view, valid until the next read). */
export interface FoundRecord {
  info: RecordInfo
  bytes: Uint8Array
}

// ---- one record -------------------------------------------------------------------

/** The bytes of one record whose payload is already encoded. */
export function composeRecord(index: number, stamp: number, serializer: number, payload: Uint8Array): Uint8Array {
  if (payload.length > 0xffffffff) throw new KonserveError('ERR_INVALID_ARGUMENT', 'a log record longer than 4 GiB')
  if (!Number.isSafeInteger(index) || index < 0) throw new KonserveError('ERR_INVALID_ARGUMENT', `bad record index ${index}`)
  if (!Number.isSafeInteger(stamp) || stamp < 0) throw new KonserveError('ERR_INVALID_ARGUMENT', `bad record stamp ${stamp}`)
  if (!Number.isInteger(serializer) || serializer < 0 || serializer > 255) {
    throw new KonserveError('ERR_INVALID_ARGUMENT', `bad serializer id ${serializer}`)
  }
  const s = payload.length
  const out = new Uint8Array(RECORD_OVERHEAD + s)
  const v = viewOf(out)
  v.setUint32(0, s, true)
  setU64(v, 4, index)
  setU64(v, 12, stamp)
  out[20] = serializer
  out.set(payload, RECORD_HEAD_LEN)
  v.setBigUint64(RECORD_HEAD_LEN + s, xxh3_64(out.subarray(0, RECORD_HEAD_LEN + s)), true)
  v.setUint32(RECORD_HEAD_LEN + s + 8, s, true)
  return out
}

/** A record of the element's serialized bytes: payload `encrypt(compress(plain))`, kind 4, this index. */
export const encodeRecord = gensync(function* (
  codec: SegmentCodec,
  index: number,
  stamp: number,
  serializer: number,
  plain: Uint8Array,
  random?: RandomSource,
): Handler<Uint8Array> {
  const payload = yield* encodeSegmentAt(codec, KIND_RECORD, index, plain, random)
  return composeRecord(index, stamp, serializer, payload)
})

/**
 * The records of one append (a group commit), stored one after the other as
 * one run of bytes, what an append writes at once: indexes `firstIndex`,
 * `firstIndex + 1`, ...; salts and IVs drawn record by record, in order (as
 * the core's `encode_records`). Every record is encoded before anything is
 * written: no records, or one that cannot be stored, is ERR_INVALID_ARGUMENT.
 */
export const encodeRecords = gensync(function* (
  codec: SegmentCodec,
  firstIndex: number,
  records: ReadonlyArray<NewRecord>,
  random?: RandomSource,
): Handler<Uint8Array> {
  if (records.length === 0) throw new KonserveError('ERR_INVALID_ARGUMENT', 'an append takes at least one record')
  const parts: Uint8Array[] = []
  for (const [i, r] of records.entries()) parts.push(yield* encodeRecord(codec, firstIndex + i, r.stamp, r.serializer, r.bytes, random))
  if (parts.length === 1) return parts[0]!
  return concat(parts)
})

/** The fields of a whole record's bytes found at `pos`, or undefined if they are not a valid record. */
export function checkRecord(bytes: Uint8Array, pos: number): RecordInfo | undefined {
  if (bytes.length < RECORD_OVERHEAD) return undefined
  const v = viewOf(bytes)
  const s = v.getUint32(0, true)
  if (bytes.length !== RECORD_OVERHEAD + s) return undefined
  const checksum = v.getBigUint64(RECORD_HEAD_LEN + s, true)
  if (xxh3_64(bytes.subarray(0, RECORD_HEAD_LEN + s)) !== checksum) return undefined
  if (v.getUint32(RECORD_HEAD_LEN + s + 8, true) !== s) return undefined
  const index = u64(v, 4)
  const stamp = u64(v, 12)
  // No writer makes an index or a stamp past 2^53: such a record is not one of ours.
  if (index === undefined || stamp === undefined) return undefined
  return { pos, end: pos + bytes.length, payloadLength: s, index, stamp, serializer: bytes[20]!, checksum }
}

/**
 * The record at `pos` if it is valid, lies within `end` and (when given) has
 * index `expectIndex`; undefined where the readable log ends.
 */
export const readRecordAt = gensync(function* (
  read: ReadAt,
  pos: number,
  end: number,
  expectIndex?: number,
): Handler<FoundRecord | undefined> {
  if (end - pos < RECORD_OVERHEAD) return undefined
  const len = yield* read(pos, 4)
  if (len.length < 4) return undefined
  const s = viewOf(len).getUint32(0, true)
  if (end - pos < RECORD_OVERHEAD + s) return undefined
  const bytes = yield* read(pos, RECORD_OVERHEAD + s)
  const info = checkRecord(bytes, pos)
  if (!info || (expectIndex !== undefined && info.index !== expectIndex)) return undefined
  return { info, bytes }
})

/** The record that ends exactly at `end` (found from its last 12 bytes) and starts at or after `start`, if it verifies. */
export const tailRecord = gensync(function* (read: ReadAt, start: number, end: number): Handler<FoundRecord | undefined> {
  if (end - start < RECORD_OVERHEAD) return undefined
  const last = yield* read(end - 12, 12)
  if (last.length < 12) return undefined
  const s = viewOf(last).getUint32(8, true)
  const pos = end - RECORD_OVERHEAD - s
  if (pos < start) return undefined
  const bytes = yield* read(pos, RECORD_OVERHEAD + s)
  const info = checkRecord(bytes, pos)
  return info && { info, bytes }
})

/** A record's element bytes (serialized), from its whole bytes: authenticated with its index, decompressed. */
export const decodeRecordPayload = gensync(function* (codec: SegmentCodec, info: RecordInfo, bytes: Uint8Array): Handler<Uint8Array> {
  return yield* decodeSegmentAt(codec, KIND_RECORD, info.index, bytes.subarray(RECORD_HEAD_LEN, RECORD_HEAD_LEN + info.payloadLength))
})

// ---- the commit -------------------------------------------------------------------

/** The length of one commit slot; the commit area is two, A then B. */
export const COMMIT_SLOT = 64
/** The bytes of a slot its tag covers: seq, count, end, last. */
const SLOT_FIELDS = 32
/** The bytes of a slot's tag (the first 24 of the HMAC-SHA256). */
const SLOT_TAG = 24
/** The offset of a slot's checksum (xxh3_64 of bytes 0..56). */
const SLOT_CHECK = SLOT_FIELDS + SLOT_TAG

/** What a log's commit says: the records acknowledged (§4.6). */
export interface Commit {
  /** Commits since the file was written whole, from 1. */
  seq: number
  /** How many records were acknowledged. */
  count: number
  /** The file offset where they end. */
  end: number
  /** The stored checksum of the last of them; 0 when there is none. */
  lastChecksum: bigint
}

const noKey = () => new KonserveError('ERR_DECRYPT', 'the log is encrypted and the store was opened without an encryption key')

function metaSalt(metaStored: Uint8Array): Uint8Array {
  if (metaStored.length < SALT_LEN) throw corrupt('an encrypted meta segment is shorter than its salt')
  return metaStored.subarray(0, SALT_LEN)
}

function* slotTag(codec: SegmentCodec, metaStored: Uint8Array, fields: Uint8Array): Handler<Uint8Array> {
  if (!codec.secret) throw noKey()
  if (!codec.keyHash) throw new KonserveError('ERR_INVALID_ARGUMENT', 'a commit of an encrypted log needs the key hash')
  return (yield* commitTag(codec.crypto, codec.secret, codec.keyHash, metaSalt(metaStored), fields)).subarray(0, SLOT_TAG)
}

/**
 * One commit slot of a log whose stored meta segment is `metaStored`:
 * `seq | count | end | last` (u64 LE each), the tag (encryptor 1: the first
 * 24 bytes of HMAC-SHA256 over `5 || keyHash || bytes 0..32` with the meta
 * segment's MAC key; else zeros), the xxh3_64 of bytes 0..56.
 */
export const encodeCommitSlot = gensync(function* (commit: Commit, codec: SegmentCodec, metaStored: Uint8Array): Handler<Uint8Array> {
  const slot = new Uint8Array(COMMIT_SLOT)
  const v = viewOf(slot)
  setU64(v, 0, commit.seq)
  setU64(v, 8, commit.count)
  setU64(v, 16, commit.end)
  v.setBigUint64(24, commit.lastChecksum, true)
  if (codec.encryptor === ENCRYPTOR_AES) slot.set(yield* slotTag(codec, metaStored, slot.subarray(0, SLOT_FIELDS)), SLOT_FIELDS)
  v.setBigUint64(SLOT_CHECK, xxh3_64(slot.subarray(0, SLOT_CHECK)), true)
  return slot
})

/** The commit area of a log: `commit` in both slots. */
export const encodeCommitArea = gensync(function* (commit: Commit, codec: SegmentCodec, metaStored: Uint8Array): Handler<Uint8Array> {
  const slot = yield* encodeCommitSlot(commit, codec, metaStored)
  return concat([slot, slot])
})

/**
 * One slot decoded: undefined if its checksum fails (torn by a crash, or
 * damaged). With encryption, a slot whose checksum holds but whose tag does
 * not verify was edited on purpose: ERR_DECRYPT.
 */
function* decodeCommitSlot(slot: Uint8Array, codec: SegmentCodec, metaStored: Uint8Array): Handler<Commit | undefined> {
  const v = viewOf(slot)
  if (xxh3_64(slot.subarray(0, SLOT_CHECK)) !== v.getBigUint64(SLOT_CHECK, true)) return undefined
  if (codec.encryptor === ENCRYPTOR_AES) {
    const tag = yield* slotTag(codec, metaStored, slot.subarray(0, SLOT_FIELDS))
    let diff = 0 // compared in constant time
    for (let i = 0; i < SLOT_TAG; i++) diff |= tag[i]! ^ slot[SLOT_FIELDS + i]!
    if (diff !== 0) throw new KonserveError('ERR_DECRYPT', "the log's commit does not authenticate: wrong encryption key, or the file was altered")
  }
  const seq = u64(v, 0)
  const count = u64(v, 8)
  const end = u64(v, 16)
  if (seq === undefined || count === undefined || end === undefined) throw corrupt("the log's commit is impossible: a field past 2^53")
  return { seq, count, end, lastChecksum: v.getBigUint64(24, true) }
}

/** How an open log file reads: where its parts are and how far its records count. */
export interface LogLayout {
  /** The offset of the first record. */
  dataStart: number
  /** The offset of the commit area (= dataStart in the earlier layout). */
  areaAt: number
  /** The commit (the current layout); undefined for the earlier layout. */
  commit?: Commit
  /** Whether slot B held the commit (else A did). */
  bValid: boolean
  /** The earlier layout: whether a valid record ends the file (then a record that does not verify is damage). */
  validAtEnd: boolean
}

/** Nothing at or past this offset is read as a record. */
export const layoutLimit = (layout: LogLayout, fileLength: number): number => layout.commit?.end ?? fileLength

/** Fails unless a log's header is well formed: flags 2 with `v = 0` or 6 with `v = 128`, the value checksum of no bytes. */
export function checkLogHeader(header: Header): void {
  if (header.flags !== FLAG_LOG && header.flags !== FLAGS_COMMITTED_LOG) {
    throw new KonserveError('ERR_NOT_A_LOG', 'the key holds something other than an append log')
  }
  const area = header.flags === FLAG_LOG ? 0 : LOG_COMMIT_AREA
  if (header.valueLen !== area || header.valueChecksum !== emptyValueChecksum()) {
    throw corrupt(`a log's value segment is not the ${area} bytes of its layout`)
  }
}

/**
 * Reads a log's layout: for the current layout its commit (from `prefix`,
 * the bytes read from the start of the file, or one read of the commit
 * area), checked against the file's length; for the earlier layout whether a
 * valid record ends the file. `prefix` holds at least the header and meta segment.
 * `lengthNow` reads the file's length again (a file store, whose readers take
 * no lock: an append may land after `fileLength` was read).
 */
export const openLogLayout = gensync(function* (
  read: ReadAt,
  header: Header,
  prefix: Uint8Array,
  codec: SegmentCodec,
  fileLength: number,
  lengthNow?: () => Handler<number>,
): Handler<LogLayout> {
  checkLogHeader(header)
  // Every read of a log decides its layout here: an encrypted store refuses a
  // plaintext log before trusting its (unauthenticated) commit area.
  checkEncrypted(codec, header.encryptor)
  const metaEnd = HEADER_LEN + header.metaLen
  if (header.flags === FLAG_LOG) {
    const validAtEnd = !!(yield* tailRecord(read, metaEnd, fileLength))
    return { dataStart: metaEnd, areaAt: metaEnd, bValid: false, validAtEnd }
  }
  const dataStart = metaEnd + LOG_COMMIT_AREA
  const area = prefix.length >= dataStart ? prefix.subarray(metaEnd, dataStart) : yield* read(metaEnd, LOG_COMMIT_AREA)
  if (area.length < LOG_COMMIT_AREA) throw corrupt('the log file ends inside its commit area')
  const metaStored = prefix.subarray(HEADER_LEN, metaEnd)
  let commit = yield* decodeCommitSlot(area.subarray(COMMIT_SLOT), codec, metaStored)
  const bValid = commit !== undefined
  commit ??= yield* decodeCommitSlot(area.subarray(0, COMMIT_SLOT), codec, metaStored)
  if (!commit) throw corrupt('both commit slots of the log are damaged')
  const room = commit.end - dataStart
  const possible =
    commit.seq >= 1 && room >= 0 && (commit.count === 0) === (room === 0) && commit.count * RECORD_OVERHEAD <= room && (commit.count > 0 || commit.lastChecksum === 0n)
  if (!possible) throw corrupt(`the log's commit is impossible: ${commit.count} records ending at offset ${commit.end}, from offset ${dataStart}`)
  if (fileLength < commit.end) {
    // Readers take no lock: an append may have landed since the length was
    // read. It writes its records before its commit, so a file shorter than
    // the commit it read now is damaged; one that has grown is not.
    const now = lengthNow ? yield* lengthNow() : fileLength
    if (now < commit.end) throw corrupt(`the log file is ${now} bytes, shorter than its acknowledged records, which end at offset ${commit.end}`)
  }
  return { dataStart, areaAt: metaEnd, commit, bValid, validAtEnd: false }
})

const damagedLegacy = (pos: number) =>
  corrupt(`the log is damaged in the middle: the record at offset ${pos} does not verify, yet the file ends with a valid record`)
const damagedCommitted = (pos: number, commit: Commit) =>
  corrupt(`the log is damaged: its acknowledged record at offset ${pos} does not verify (its commit says ${commit.count} records end at offset ${commit.end})`)

/** Fails unless the records found (their count, the last one's checksum) are exactly those `commit` acknowledged. */
function checkCommitEnd(commit: Commit, count: number, lastChecksum: bigint | undefined): void {
  if (count !== commit.count || (lastChecksum ?? 0n) !== commit.lastChecksum) {
    throw corrupt(`the log's records do not match its commit: ${count} records end at offset ${commit.end}, the commit says ${commit.count} with another last record`)
  }
}

// ---- the whole log ------------------------------------------------------------------

/** Where a log's valid records are. */
export interface LogScan {
  /** Offset of the first record. */
  start: number
  /** End of the last valid record: where the next one goes. */
  end: number
  first?: RecordInfo
  last?: RecordInfo
  /** How many records were found. */
  count: number
}

/** The log's state from a scan: indexes and the last stamp (no records: 0, -1, 0). */
export function logInfoOf(scan: Pick<LogScan, 'first' | 'last'>): LogInfo {
  return scan.first && scan.last
    ? { firstIndex: scan.first.index, lastIndex: scan.last.index, lastStamp: scan.last.stamp }
    : { firstIndex: 0, lastIndex: -1, lastStamp: 0 }
}

/**
 * Reads the records forward, calling `visit` for each valid one in order (its
 * bytes are a view, valid during the call). Damage (an acknowledged record
 * that does not verify; in the earlier layout, a record that does not verify
 * when a valid record ends the file) is ERR_CORRUPT; a torn tail ends the scan.
 */
export const scanLog = gensync(function* (
  read: ReadAt,
  layout: LogLayout,
  fileLength: number,
  visit?: (record: FoundRecord) => Handler<void>,
): Handler<LogScan> {
  const limit = layoutLimit(layout, fileLength)
  let pos = layout.dataStart
  let first: RecordInfo | undefined
  let last: RecordInfo | undefined
  let count = 0
  while (pos < limit) {
    const rec = yield* readRecordAt(read, pos, limit, last ? last.index + 1 : undefined)
    if (!rec) break
    if (visit) yield* visit(rec)
    first ??= rec.info
    last = rec.info
    count++
    pos = rec.info.end
  }
  if (layout.commit) {
    if (pos < limit) throw damagedCommitted(pos, layout.commit)
    checkCommitEnd(layout.commit, count, last?.checksum)
  } else if (pos < limit && layout.validAtEnd) {
    throw damagedLegacy(pos)
  }
  return { start: layout.dataStart, end: pos, first, last, count }
})

/**
 * A log's `LogInfo` as `get`, `getMeta` and `keys` report it: from its last
 * record found from the end of the acknowledged records (the earlier layout:
 * of the file) and its first record, with the forward scan as the fallback
 * for a log of the earlier layout that ends in a torn tail. In the current
 * layout the last record must be the one the commit names, and the first and
 * the last must span the commit's count: else ERR_CORRUPT.
 */
export const readLogInfo = gensync(function* (
  read: ReadAt,
  header: Header,
  prefix: Uint8Array,
  codec: SegmentCodec,
  fileLength: number,
  lengthNow?: () => Handler<number>,
): Handler<LogInfo> {
  checkLogHeader(header)
  const metaEnd = HEADER_LEN + header.metaLen
  if (header.flags === FLAG_LOG) {
    const tail = yield* tailRecord(read, metaEnd, fileLength)
    if (tail) {
      const last = tail.info
      const first = last.pos === metaEnd ? last : (yield* readRecordAt(read, metaEnd, fileLength))?.info
      if (first && first.index <= last.index) return logInfoOf({ first, last })
    }
    const layout: LogLayout = { dataStart: metaEnd, areaAt: metaEnd, bValid: false, validAtEnd: !!tail }
    return logInfoOf(yield* scanLog(read, layout, fileLength))
  }
  const layout = yield* openLogLayout(read, header, prefix, codec, fileLength, lengthNow)
  const commit = layout.commit!
  if (commit.count === 0) return logInfoOf({})
  const tail = yield* tailRecord(read, layout.dataStart, commit.end)
  if (!tail || tail.info.checksum !== commit.lastChecksum) {
    throw corrupt(`the log is damaged: its last acknowledged record, ending at offset ${commit.end}, does not verify`)
  }
  const last = tail.info
  let first = last
  if (commit.count > 1 || last.pos !== layout.dataStart) {
    const found = commit.count > 1 ? (yield* readRecordAt(read, layout.dataStart, commit.end))?.info : undefined
    if (!found || found.end > last.pos) throw damagedCommitted(layout.dataStart, commit)
    first = found
  }
  if (first.index + commit.count - 1 !== last.index) {
    throw corrupt(`the log's first and last acknowledged records (indexes ${first.index} and ${last.index}) do not span its ${commit.count} records`)
  }
  return logInfoOf({ first, last })
})

/** A `ReadAt` that reads ahead in windows of `window` bytes (larger reads go straight through). Views, not copies. */
export function bufferedReader(read: ReadAt, window = WINDOW): ReadAt {
  let buf: Uint8Array | undefined
  let at = 0
  return function* (pos, length) {
    if (buf && pos >= at && pos + length <= at + buf.length) return buf.subarray(pos - at, pos - at + length)
    if (length >= window) return yield* read(pos, length)
    buf = yield* read(pos, window)
    at = pos
    return buf.subarray(0, Math.min(length, buf.length))
  }
}

/**
 * Reads a log's records in batches, oldest first, as its layout says (a
 * snapshot: later appends are not seen). Damage is ERR_CORRUPT after the
 * records before it; a torn tail just ends the log.
 */
export class LogReader {
  private pos: number
  private readonly limit: number
  private lastIndex: number | undefined
  private lastChecksum: bigint | undefined
  private count = 0
  private done = false
  /** An error met while filling a batch: reported by the next call, after the records before it. */
  private pending: unknown
  private readonly read: ReadAt

  constructor(
    read: ReadAt,
    private readonly codec: SegmentCodec,
    private readonly layout: LogLayout,
    fileLength: number,
  ) {
    this.read = bufferedReader(read)
    this.pos = layout.dataStart
    this.limit = layoutLimit(layout, fileLength)
  }

  /**
   * Up to `max` records (at least 1; a batch also ends at 16 MiB of
   * records), or undefined after the last. An error (damage, a record that
   * does not decrypt) comes after the records before it.
   */
  *next(max: number): Handler<LogRecord[] | undefined> {
    if (this.pending !== undefined) {
      const err = this.pending
      this.pending = undefined
      this.done = true
      throw err
    }
    const out: LogRecord[] = []
    const n = Math.max(1, Math.floor(max) || 1)
    let bytes = 0
    try {
      while (!this.done && out.length < n && bytes < BATCH_BYTES) {
        if (this.pos >= this.limit) {
          if (this.layout.commit) checkCommitEnd(this.layout.commit, this.count, this.lastChecksum)
          this.done = true
          break
        }
        const rec = yield* readRecordAt(this.read, this.pos, this.limit, this.lastIndex === undefined ? undefined : this.lastIndex + 1)
        if (!rec) {
          if (this.layout.commit) throw damagedCommitted(this.pos, this.layout.commit)
          if (this.layout.validAtEnd) throw damagedLegacy(this.pos)
          this.done = true // a torn tail: ignored
          break
        }
        const plain = yield* decodeRecordPayload(this.codec, rec.info, rec.bytes)
        // A copy: the plain bytes may be a view of the read window.
        out.push({ index: rec.info.index, stamp: rec.info.stamp, serializer: rec.info.serializer, bytes: plain.slice() })
        bytes += plain.length
        this.lastIndex = rec.info.index
        this.lastChecksum = rec.info.checksum
        this.count++
        this.pos = rec.info.end
      }
    } catch (err) {
      if (out.length === 0) {
        this.done = true
        throw err
      }
      this.pending = err
    }
    return out.length > 0 ? out : undefined
  }

  /** Whether no more records will come (`next` may still have an error to report). */
  get finished(): boolean {
    return this.done && this.pending === undefined
  }

  /** Stops reading: later calls return undefined. */
  close(): void {
    this.done = true
    this.pending = undefined
  }
}

// ---- writing whole logs ----------------------------------------------------------------

/** The header of a log of the current layout whose stored meta segment is `metaStored`. */
export function logHeader(codec: { compressor: number; encryptor: number }, metaStored: Uint8Array): Uint8Array {
  return encodeHeader({
    flags: FLAGS_COMMITTED_LOG,
    serializer: 0,
    compressor: codec.compressor,
    encryptor: codec.encryptor,
    metaLen: metaStored.length,
    valueLen: LOG_COMMIT_AREA,
    metaChecksum: xxh3_64(metaStored),
    valueChecksum: emptyValueChecksum(),
  })
}

/** The header of a log of the EARLIER layout (flags 2, `v = 0`): no store writes it any more; for tests and tools. */
export function legacyLogHeader(codec: { compressor: number; encryptor: number }, metaStored: Uint8Array): Uint8Array {
  return encodeHeader({
    flags: FLAG_LOG,
    serializer: 0,
    compressor: codec.compressor,
    encryptor: codec.encryptor,
    metaLen: metaStored.length,
    valueLen: 0,
    metaChecksum: xxh3_64(metaStored),
    valueChecksum: emptyValueChecksum(),
  })
}

/** Where a whole log is written: in order, then the commit area at its place. */
export interface LogSink {
  write(bytes: Uint8Array): Handler<void>
  /** Writes `bytes` at `pos` (before the end: the commit area). */
  writeAt(bytes: Uint8Array, pos: number): Handler<void>
}

/** The source of a rewrite: an open log and its layout. */
export interface LogSource {
  read: ReadAt
  layout: LogLayout
  fileLength: number
}

/**
 * A whole log written to `sink` piece by piece: the header and `metaStored`
 * with a placeholder for the commit area at `start`, then records as they
 * come (stored ones copied as they are, new ones encoded with the next
 * indexes, from `firstIndex`), then the commit area (both slots: seq 1) at
 * its place by `finish`. writeLogWhole writes with it, and so does an
 * import, whose records arrive in batches.
 */
export class WholeLogWriter {
  private first: { index: number } | undefined
  private last: { index: number; stamp: number } | undefined
  private count = 0
  private end: number
  private lastChecksum = 0n

  constructor(
    private readonly sink: LogSink,
    private readonly codec: SegmentCodec,
    private readonly metaStored: Uint8Array,
    private nextIndex = 0,
    private readonly random?: RandomSource,
  ) {
    this.end = HEADER_LEN + metaStored.length + LOG_COMMIT_AREA
  }

  *start(): Handler<void> {
    yield* this.sink.write(concat([logHeader(this.codec, this.metaStored), this.metaStored, new Uint8Array(LOG_COMMIT_AREA)]))
  }

  /** A stored record, copied as it is (its MAC binds the key and its index, not the file). */
  *copy(bytes: Uint8Array, rec: RecordInfo): Handler<void> {
    yield* this.sink.write(bytes)
    this.counted(rec, 1, bytes.length, rec.checksum)
  }

  /** New records, encoded with the next indexes. */
  *add(records: ReadonlyArray<NewRecord>): Handler<void> {
    const index = this.nextIndex
    const batch = yield* encodeRecords(this.codec, index, records, this.random)
    yield* this.sink.write(batch)
    this.first ??= { index }
    const last = { index: index + records.length - 1, stamp: records[records.length - 1]!.stamp }
    this.counted(last, records.length, batch.length, viewOf(batch).getBigUint64(batch.length - 12, true))
  }

  /** `n` records written, `bytes` long, ending with `last` (its checksum field `checksum`). */
  private counted(last: { index: number; stamp: number }, n: number, bytes: number, checksum: bigint): void {
    this.first ??= last
    this.last = last
    this.count += n
    this.end += bytes
    this.lastChecksum = checksum
    this.nextIndex = last.index + 1
  }

  /** Writes the commit area; returns where the log stands and its commit. */
  *finish(): Handler<{ info: LogInfo; commit: Commit }> {
    const commit: Commit = { seq: 1, count: this.count, end: this.end, lastChecksum: this.lastChecksum }
    yield* this.sink.writeAt(yield* encodeCommitArea(commit, this.codec, this.metaStored), HEADER_LEN + this.metaStored.length)
    const info =
      this.first && this.last
        ? { firstIndex: this.first.index, lastIndex: this.last.index, lastStamp: this.last.stamp }
        : { firstIndex: 0, lastIndex: -1, lastStamp: 0 }
    return { info, commit }
  }
}

/**
 * Writes a whole log to `sink` (as the core's `write_log_whole`): the header
 * and `metaStored`, a placeholder for the commit area, the records of `src`
 * (if any) of index `keepFrom` or more, copied as stored, then `extra`
 * encoded with the next indexes (salts and IVs from `random`, record by
 * record); then the commit area (both slots: seq 1) at its place. Returns
 * where the log stands and its commit.
 */
export const writeLogWhole = gensync(function* (
  sink: LogSink,
  codec: SegmentCodec,
  metaStored: Uint8Array,
  src: LogSource | undefined,
  keepFrom: number,
  extra: ReadonlyArray<NewRecord>,
  random?: RandomSource,
): Handler<{ info: LogInfo; commit: Commit }> {
  const w = new WholeLogWriter(sink, codec, metaStored, 0, random)
  yield* w.start()
  if (src) {
    yield* scanLog(src.read, src.layout, src.fileLength, function* (rec) {
      if (rec.info.index >= keepFrom) yield* w.copy(rec.bytes, rec.info)
    })
  }
  if (extra.length > 0) yield* w.add(extra)
  return yield* w.finish()
})

/** A sink that collects a whole log in memory. */
function memorySink(): LogSink & { bytes(): Uint8Array } {
  const parts: Uint8Array[] = []
  const patches: Array<[Uint8Array, number]> = []
  return {
    // eslint-disable-next-line require-yield
    *write(bytes) {
      parts.push(bytes.slice())
    },
    // eslint-disable-next-line require-yield
    *writeAt(bytes, pos) {
      patches.push([bytes.slice(), pos])
    },
    bytes() {
      const out = concat(parts)
      for (const [b, pos] of patches) out.set(b, pos)
      return out
    },
  }
}

// ---- whole files (golden tests and tools) ----------------------------------------------

/** What a whole log file takes. */
export interface LogFileInput {
  compressor: number
  encryptor: number
  secret?: Uint8Array | string | null
  keyCke: Uint8Array
  meta: Uint8Array
  /** The records in order, indexes 0, 1, ... */
  records: ReadonlyArray<LogRecord>
  /** Fixed bytes for the salts and IVs: the meta segment's salt and IV, then each record's. */
  random?: Uint8Array
  crypto?: CryptoProvider
}

const codecOf = (input: { compressor: number; encryptor: number; secret?: Uint8Array | string | null; crypto?: CryptoProvider; keyCke: Uint8Array }) =>
  segmentCodec(input.compressor, input.encryptor, { secret: input.secret, crypto: input.crypto, keyHash: keyHash(input.keyCke) })

const checkIndexes = (records: ReadonlyArray<LogRecord>) => {
  records.forEach((r, i) => {
    if (r.index !== i) throw new KonserveError('ERR_INVALID_ARGUMENT', `a new log's records are indexes 0, 1, ...: record ${i} has index ${r.index}`)
  })
}

const encodeLogFileG = gensync(function* (input: LogFileInput): Handler<Uint8Array> {
  checkIndexes(input.records)
  const codec = codecOf(input)
  const random: RandomSource = { bytes: input.random, pos: 0 }
  const metaStored = yield* encodeMetaSegment(codec, input.keyCke, input.meta, random)
  const sink = memorySink()
  yield* writeLogWhole(sink, codec, metaStored, undefined, 0, input.records, random)
  return sink.bytes()
})

/** A new log file as a store creates it with all `records` in one append: header, meta segment, commit area (seq 1), the records. */
export const encodeLogFileSync = (input: LogFileInput): Uint8Array => encodeLogFileG.sync(input)
export const encodeLogFileAsync = (input: LogFileInput): Promise<Uint8Array> => encodeLogFileG.async(input)

const encodeLegacyLogFileG = gensync(function* (input: LogFileInput): Handler<Uint8Array> {
  checkIndexes(input.records)
  const codec = codecOf(input)
  const random: RandomSource = { bytes: input.random, pos: 0 }
  const metaStored = yield* encodeMetaSegment(codec, input.keyCke, input.meta, random)
  const parts = [legacyLogHeader(codec, metaStored), metaStored]
  for (const r of input.records) parts.push(yield* encodeRecord(codec, r.index, r.stamp, r.serializer, r.bytes, random))
  return concat(parts)
})

/** A log file of the EARLIER layout (flags 2, no commit area), as builds before the commit wrote it: for tests and tools. */
export const encodeLegacyLogFileSync = (input: LogFileInput): Uint8Array => encodeLegacyLogFileG.sync(input)
export const encodeLegacyLogFileAsync = (input: LogFileInput): Promise<Uint8Array> => encodeLegacyLogFileG.async(input)

/** A decoded log file: its head, where it stands, its commit (undefined: the earlier layout) and every record. */
export interface DecodedLog extends DecodedHead {
  log: LogInfo
  commit?: Commit
  records: LogRecord[]
}

/** An in-memory log's head, codec and layout. */
function* openBytes(bytes: Uint8Array, ctx: DecodeContext) {
  const head = yield* decodeKeyFileHead(bytes, bytes.length, ctx)
  checkLogHeader(head.header)
  const read = bytesReader(bytes)
  const codec = segmentCodec(head.header.compressor, head.header.encryptor, ctx)
  const layout = yield* openLogLayout(read, head.header, bytes, codec, bytes.length)
  return { head, read, codec, layout }
}

const decodeLogFileG = gensync(function* (bytes: Uint8Array, ctx: DecodeContext): Handler<DecodedLog> {
  const { head, read, codec, layout } = yield* openBytes(bytes, ctx)
  const log = yield* readLogInfo(read, head.header, bytes, codec, bytes.length)
  const reader = new LogReader(read, codec, layout, bytes.length)
  const records: LogRecord[] = []
  for (let batch = yield* reader.next(1000); batch; batch = yield* reader.next(1000)) records.push(...batch)
  return { ...head, log, commit: layout.commit, records }
})

/** Decodes a whole log file and all its records (a torn tail is ignored; damage to acknowledged records is ERR_CORRUPT). */
export const decodeLogFileSync = (bytes: Uint8Array, ctx: DecodeContext): DecodedLog => decodeLogFileG.sync(bytes, ctx)
export const decodeLogFileAsync = (bytes: Uint8Array, ctx: DecodeContext): Promise<DecodedLog> => decodeLogFileG.async(bytes, ctx)

/** What appending to a log file in memory takes (golden tests and tools). */
export interface LogAppendInput {
  secret?: Uint8Array | string | null
  /** The key's CKE (its hash is needed to decrypt). */
  keyCke: Uint8Array
  records: ReadonlyArray<NewRecord>
  /** Fixed bytes for the records' salts and IVs. */
  random?: Uint8Array
  crypto?: CryptoProvider
}

const appendLogFileG = gensync(function* (bytes: Uint8Array, input: LogAppendInput): Handler<Uint8Array> {
  const ctx: DecodeContext = { secret: input.secret, crypto: input.crypto, keyHash: keyHash(input.keyCke) }
  const { head, read, codec, layout } = yield* openBytes(bytes, ctx)
  const random: RandomSource = { bytes: input.random, pos: 0 }
  const metaStored = bytes.subarray(HEADER_LEN, HEADER_LEN + head.header.metaLen)
  const commit = layout.commit
  if (!commit) {
    // The earlier layout: rewritten in the current one, as a store migrates it.
    const sink = memorySink()
    yield* writeLogWhole(sink, codec, metaStored, { read, layout, fileLength: bytes.length }, 0, input.records, random)
    return sink.bytes()
  }
  const scan = yield* scanLog(read, layout, bytes.length)
  const batch = yield* encodeRecords(codec, logInfoOf(scan).lastIndex + 1, input.records, random)
  const next: Commit = {
    seq: commit.seq + 1,
    count: commit.count + input.records.length,
    end: commit.end + batch.length,
    lastChecksum: viewOf(batch).getBigUint64(batch.length - 12, true),
  }
  const out = concat([bytes.subarray(0, commit.end), batch])
  out.set(yield* encodeCommitArea(next, codec, metaStored), layout.areaAt)
  return out
})

/** Appends records to a whole log file in memory exactly as a store appends them (a log of the earlier layout is rewritten in the current one first). */
export const appendLogFileSync = (bytes: Uint8Array, input: LogAppendInput): Uint8Array => appendLogFileG.sync(bytes, input)
export const appendLogFileAsync = (bytes: Uint8Array, input: LogAppendInput): Promise<Uint8Array> => appendLogFileG.async(bytes, input)

/** What trimming a log file in memory takes (golden tests and tools; stores trim in bounded memory). */
export interface LogTrimInput {
  secret?: Uint8Array | string | null
  /** The key's CKE (its hash is needed to decrypt the meta segment). */
  keyCke: Uint8Array
  /** Records with an index below this are dropped; the others keep their bytes and indexes. */
  keepFrom: number
  /** The new metadata. */
  meta: Uint8Array
  /** Fixed bytes for the new meta segment's salt and IV. */
  random?: Uint8Array
  crypto?: CryptoProvider
}

const trimLogFileG = gensync(function* (bytes: Uint8Array, input: LogTrimInput): Handler<Uint8Array> {
  const ctx: DecodeContext = { secret: input.secret, crypto: input.crypto, keyHash: keyHash(input.keyCke) }
  const { read, codec, layout } = yield* openBytes(bytes, ctx)
  // The records are kept as stored, so the file keeps its codec.
  const metaStored = yield* encodeMetaSegment(codec, input.keyCke, input.meta, { bytes: input.random, pos: 0 })
  const sink = memorySink()
  yield* writeLogWhole(sink, codec, metaStored, { read, layout, fileLength: bytes.length }, input.keepFrom, [])
  return sink.bytes()
})

/** A log file trimmed as a store trims it: new metadata, a new commit, the records from `keepFrom` on copied as they are. */
export const trimLogFileSync = (bytes: Uint8Array, input: LogTrimInput): Uint8Array => trimLogFileG.sync(bytes, input)
export const trimLogFileAsync = (bytes: Uint8Array, input: LogTrimInput): Promise<Uint8Array> => trimLogFileG.async(bytes, input)
