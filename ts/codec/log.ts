/**
 * Append logs (docs/FORMAT.md §4.6), as crates/core/src/log.rs: a header with
 * FLAG_LOG and `v = 0`, the meta segment, then records to the end of the file:
 *
 *   u32 LE s | u64 LE index | u64 LE stamp | u8 serializer | payload (s bytes,
 *   kind 4, this index) | u64 LE xxh3_64 of the 21 + s bytes before | u32 LE s
 *
 * Reading goes forward from `48 + m`; the first record that runs past the end,
 * fails its checksum, has two different lengths or is not the next index ends
 * the log. The bytes from there on are a torn tail (ignored) unless a valid
 * record ends exactly at the end of the file: then the log is damaged in the
 * middle (ERR_CORRUPT). The last record is found from the end first (its last
 * 12 bytes are its checksum and length), with the forward scan as the fallback.
 *
 * Everything reads through a `ReadAt`, so the same code serves bytes in memory
 * and open files, one record (or a 64 KiB window) at a time. No `node:` imports.
 */
import gensync, { type Handler } from 'gensync'
import type { LogInfo, LogRecord, NewRecord } from '../backing.js'
import { KonserveError } from '../errors.js'
import { type CryptoProvider, concat } from './aes.js'
import {
  FLAG_LOG,
  HEADER_LEN,
  KIND_RECORD,
  type DecodeContext,
  type DecodedHead,
  type Header,
  type RandomSource,
  type ReadAt,
  type SegmentCodec,
  bytesReader,
  decodeKeyFileHead,
  decodeSegmentAt,
  encodeHeader,
  encodeMetaSegment,
  encodeSegmentAt,
  keyHash,
  segmentCodec,
} from './file.js'
import { xxh3_64 } from './xxhash.js'

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
  return (emptyChecksum ??= xxh3_64(new Uint8Array(0)))
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

// ---- the whole log ------------------------------------------------------------------

/** Where a log's valid records are. */
export interface LogScan {
  /** Offset of the first record (`48 + m`). */
  start: number
  /** End of the last valid record: where the next one goes. */
  end: number
  first?: RecordInfo
  last?: RecordInfo
  /** Whether bytes past `end` are a torn tail to cut before appending. */
  torn: boolean
}

/** The log's state from a scan: indexes and the last stamp (no records: 0, -1, 0). */
export function logInfoOf(scan: Pick<LogScan, 'first' | 'last'>): LogInfo {
  return scan.first && scan.last
    ? { firstIndex: scan.first.index, lastIndex: scan.last.index, lastStamp: scan.last.stamp }
    : { firstIndex: 0, lastIndex: -1, lastStamp: 0 }
}

/** Fails unless a log's header is well formed (FLAG_LOG, `v = 0`, the checksum of no bytes). */
export function checkLogHeader(header: Header): void {
  if (header.flags !== FLAG_LOG) throw new KonserveError('ERR_NOT_A_LOG', 'the key holds something other than an append log')
  if (header.valueLen !== 0 || header.valueChecksum !== emptyValueChecksum()) {
    throw corrupt("a log's value segment is not empty")
  }
}

/**
 * Reads the records forward from `start` to `fileEnd`, calling `visit` for
 * each valid one in order (its bytes are a view, valid during the call).
 * Damage in the middle is ERR_CORRUPT; a torn tail is reported in the result.
 */
export const scanLog = gensync(function* (
  read: ReadAt,
  start: number,
  fileEnd: number,
  visit?: (record: FoundRecord) => Handler<void>,
): Handler<LogScan> {
  let pos = start
  let first: RecordInfo | undefined
  let last: RecordInfo | undefined
  while (pos < fileEnd) {
    const rec = yield* readRecordAt(read, pos, fileEnd, last ? last.index + 1 : undefined)
    if (!rec) break
    if (visit) yield* visit(rec)
    first ??= rec.info
    last = rec.info
    pos = rec.info.end
  }
  if (pos < fileEnd && (yield* tailRecord(read, start, fileEnd))) {
    throw corrupt(`the log is damaged in the middle: the record at offset ${pos} does not verify, yet the file ends with a valid record`)
  }
  return { start, end: pos, first, last, torn: pos < fileEnd }
})

/**
 * Where the log ends and its first and last records: from the end when the
 * file ends with a valid record (and the first record verifies), else by the
 * forward scan.
 */
export const locateLogEnd = gensync(function* (read: ReadAt, start: number, fileEnd: number): Handler<LogScan> {
  const tail = yield* tailRecord(read, start, fileEnd)
  if (tail) {
    const last = tail.info
    const first = last.pos === start ? last : (yield* readRecordAt(read, start, fileEnd))?.info
    if (first && first.index <= last.index) return { start, end: fileEnd, first, last, torn: false }
  }
  return yield* scanLog(read, start, fileEnd)
})

/** A log file's `LogInfo`, from its header, where its records start and its length. */
export const readLogInfo = gensync(function* (read: ReadAt, header: Header, start: number, fileLength: number): Handler<LogInfo> {
  checkLogHeader(header)
  return logInfoOf(yield* locateLogEnd(read, start, fileLength))
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
 * Reads a log's records in batches, oldest first, from a view of the file
 * `start .. fileEnd` (a snapshot: later appends are not seen). `tailValid`
 * says whether the file ends with a valid record (`tailRecord`): then a record
 * that does not verify before `fileEnd` is damage in the middle, ERR_CORRUPT.
 */
export class LogReader {
  private pos: number
  private lastIndex: number | undefined
  private done = false
  /** An error met while filling a batch: reported by the next call, after the records before it. */
  private pending: unknown
  private readonly read: ReadAt

  constructor(
    read: ReadAt,
    private readonly codec: SegmentCodec,
    start: number,
    private readonly fileEnd: number,
    private readonly tailValid: boolean,
  ) {
    this.read = bufferedReader(read)
    this.pos = start
  }

  /**
   * Up to `max` records (at least 1; a batch also ends at 16 MiB of
   * records), or undefined after the last. An error (damage in the middle, a
   * record that does not decrypt) comes after the records before it.
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
        if (this.pos >= this.fileEnd) {
          this.done = true
          break
        }
        const rec = yield* readRecordAt(this.read, this.pos, this.fileEnd, this.lastIndex === undefined ? undefined : this.lastIndex + 1)
        if (!rec) {
          if (this.tailValid) {
            throw corrupt(`the log is damaged in the middle: the record at offset ${this.pos} does not verify, yet the file ends with a valid record`)
          }
          this.done = true // a torn tail: ignored
          break
        }
        const plain = yield* decodeRecordPayload(this.codec, rec.info, rec.bytes)
        // A copy: the plain bytes may be a view of the read window.
        out.push({ index: rec.info.index, stamp: rec.info.stamp, serializer: rec.info.serializer, bytes: plain.slice() })
        bytes += plain.length
        this.lastIndex = rec.info.index
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

// ---- whole files (golden tests and tools) ----------------------------------------------

/** The header of a log file whose stored meta segment is `metaStored`. */
export function logHeader(codec: { compressor: number; encryptor: number }, metaStored: Uint8Array): Uint8Array {
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

/** What a whole log file takes. */
export interface LogFileInput {
  compressor: number
  encryptor: number
  secret?: Uint8Array | string | null
  keyCke: Uint8Array
  meta: Uint8Array
  /** The records in order, each with its index (consecutive). */
  records: ReadonlyArray<LogRecord>
  /** Fixed bytes for the salts and IVs: the meta segment's salt and IV, then each record's. */
  random?: Uint8Array
  crypto?: CryptoProvider
}

const encodeLogFileG = gensync(function* (input: LogFileInput): Handler<Uint8Array> {
  const codec = segmentCodec(input.compressor, input.encryptor, { secret: input.secret, crypto: input.crypto, keyHash: keyHash(input.keyCke) })
  const random: RandomSource = { bytes: input.random, pos: 0 }
  const metaStored = yield* encodeMetaSegment(codec, input.keyCke, input.meta, random)
  const parts = [logHeader(codec, metaStored), metaStored]
  for (const r of input.records) parts.push(yield* encodeRecord(codec, r.index, r.stamp, r.serializer, r.bytes, random))
  return concat(parts)
})

/** A whole log file: header, meta segment, the records (as creating it and appending the rest writes it). */
export const encodeLogFileSync = (input: LogFileInput): Uint8Array => encodeLogFileG.sync(input)
export const encodeLogFileAsync = (input: LogFileInput): Promise<Uint8Array> => encodeLogFileG.async(input)

/** A decoded log file: its head, where it stands and every record. */
export interface DecodedLog extends DecodedHead {
  log: LogInfo
  records: LogRecord[]
}

const decodeLogFileG = gensync(function* (bytes: Uint8Array, ctx: DecodeContext): Handler<DecodedLog> {
  const head = yield* decodeKeyFileHead(bytes, bytes.length, ctx)
  checkLogHeader(head.header)
  const read = bytesReader(bytes)
  const start = HEADER_LEN + head.header.metaLen
  const codec = segmentCodec(head.header.compressor, head.header.encryptor, ctx)
  const scan = yield* locateLogEnd(read, start, bytes.length)
  const reader = new LogReader(read, codec, start, bytes.length, !!(yield* tailRecord(read, start, bytes.length)))
  const records: LogRecord[] = []
  for (let batch = yield* reader.next(1000); batch; batch = yield* reader.next(1000)) records.push(...batch)
  return { ...head, log: logInfoOf(scan), records }
})

/** Decodes a whole log file and all its records (a torn tail is ignored; damage in the middle is ERR_CORRUPT). */
export const decodeLogFileSync = (bytes: Uint8Array, ctx: DecodeContext): DecodedLog => decodeLogFileG.sync(bytes, ctx)
export const decodeLogFileAsync = (bytes: Uint8Array, ctx: DecodeContext): Promise<DecodedLog> => decodeLogFileG.async(bytes, ctx)

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
  const head = yield* decodeKeyFileHead(bytes, bytes.length, ctx)
  checkLogHeader(head.header)
  // The records are kept as stored, so the file keeps its codec.
  const codec = segmentCodec(head.header.compressor, head.header.encryptor, ctx)
  const metaStored = yield* encodeMetaSegment(codec, input.keyCke, input.meta, { bytes: input.random, pos: 0 })
  const parts = [logHeader(codec, metaStored), metaStored]
  // eslint-disable-next-line require-yield
  yield* scanLog(bytesReader(bytes), HEADER_LEN + head.header.metaLen, bytes.length, function* (rec) {
    if (rec.info.index >= input.keepFrom) parts.push(rec.bytes.slice())
  })
  return concat(parts)
})

/** A log file trimmed as a store trims it: new metadata, the records from `keepFrom` on copied as they are. */
export const trimLogFileSync = (bytes: Uint8Array, input: LogTrimInput): Uint8Array => trimLogFileG.sync(bytes, input)
export const trimLogFileAsync = (bytes: Uint8Array, input: LogTrimInput): Promise<Uint8Array> => trimLogFileG.async(bytes, input)
