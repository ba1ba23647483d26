/**
 * Append logs on disk (docs/FORMAT.md §4.6, crates/core/src/log.rs): an
 * append writes its records after the acknowledged ones with one write and
 * one fsync, then the commit slots; a new log, a trim or the migration of a
 * log of the earlier layout is written whole by the durable write of
 * ./staging.ts; a cursor reads the records in batches, each checked. The
 * record and commit layout is ts/format/log.ts.
 */
import gensync, { type Handler } from 'gensync'
import type { LogInfo, LogRecord, NewRecord } from '../../backing/index.js'
import type { LogCursor, LogWriter } from '../../backing/seam.js'
import { KonserveError } from '../../errors.js'
import { type SegmentCodec, HEADER_LEN, encodeMetaSegment, isLogHeader } from '../../format/file.js'
import {
  type Commit,
  type LogLayout,
  type LogSink,
  COMMIT_SLOT,
  LogReader,
  WholeLogWriter,
  bufferedReader,
  checkLogHeader,
  encodeCommitSlot,
  encodeRecords,
  logInfoOf,
  openLogLayout,
  readLogInfo,
  scanLog,
  writeLogWhole,
} from '../../format/log.js'
import { xxh3_64 } from '../../codec/xxhash.js'
import { HEAD_READ, type KeyFiles, type OpenKeyFile, fileReader, openKeyFile } from './keyfile.js'
import type { StagingDir, Staged } from './staging.js'
import * as vfs from './vfs.js'

/**
 * Logs this process has verified whole, by store directory and key file name:
 * the meta segment's checksum and the commit the file had then (FORMAT.md
 * §4.6). While a log's file still has that commit, an append need not scan it
 * again: it checks its first and last records only (as the core does: the
 * first append to a log in a process scans it, so damage to its acknowledged
 * records is found before anything is written).
 */
interface Verified {
  metaChecksum: bigint
  commit: Commit
}
const verifiedLogs = new Map<string, Verified>()
/** At most this many logs are remembered; then the memory starts over. */
const VERIFIED_MAX = 4096

/** Forgets every verified log, so that the next append to each scans it (tests that damage files use this). */
export function forgetVerifiedLogs(): void {
  verifiedLogs.clear()
}

function remember(id: string, v: Verified | undefined): void {
  if (!v) {
    verifiedLogs.delete(id)
    return
  }
  if (verifiedLogs.size >= VERIFIED_MAX) verifiedLogs.clear()
  verifiedLogs.set(id, v)
}

const sameCommit = (a: Commit, b: Commit) => a.seq === b.seq && a.count === b.count && a.end === b.end && a.lastChecksum === b.lastChecksum

/** The key's entry in the verified-logs memory. */
const logId = (store: KeyFiles, key: Uint8Array) => `${store.dir}\0${store.codec.fileName(key)}`

type OpenLog = OpenKeyFile & { layout: LogLayout }

/** A log's state, for a log file; undefined for other files. */
export function* logInfo(store: KeyFiles, f: OpenKeyFile): Handler<LogInfo | undefined> {
  if (!isLogHeader(f.head.header)) return undefined
  try {
    const codec = store.codec.readCodec(f.head.header, f.head.key)
    return yield* readLogInfo(bufferedReader(fileReader(f)), f.head.header, f.prefix, codec, f.size, lengthNow(f))
  } catch (err) {
    throw vfs.ioError(err, 'cannot read the log', f.file)
  }
}

/** The open log file's length now (an append may have grown it since it was opened: readers take no lock). */
const lengthNow = (f: { fd: number; file: string }) => () => vfs.regularFileSize(f.fd, f.file, 'the log file')

/** The head of the log file at `key` opened with `flags`, checked to be a log, and its layout; undefined when missing. */
function* openLogFile(store: KeyFiles, key: Uint8Array, flags: 'r' | 'r+'): Handler<OpenLog | undefined> {
  const f = yield* openKeyFile(store.codec, store.filePath(key), HEAD_READ, key, undefined, flags)
  if (!f) return undefined
  try {
    if (!isLogHeader(f.head.header)) {
      throw new KonserveError('ERR_NOT_A_LOG', 'the key holds something other than an append log', { file: f.file })
    }
    checkLogHeader(f.head.header)
    const codec = store.codec.readCodec(f.head.header, key)
    const layout = yield* openLogLayout(bufferedReader(fileReader(f)), f.head.header, f.prefix, codec, f.size, lengthNow(f))
    return { ...f, layout }
  } catch (err) {
    vfs.closeQuietly(f.fd)
    throw vfs.ioError(err, 'cannot read the log', f.file)
  }
}

/** Writes a staging file in order, through a 1 MiB buffer. */
class StagingWriter {
  private readonly buf = new Uint8Array(1 << 20)
  private fill = 0
  private pos = 0

  constructor(
    private readonly staging: StagingDir,
    private readonly staged: Staged,
  ) {}

  *write(bytes: Uint8Array): Handler<void> {
    if (this.fill + bytes.length > this.buf.length) yield* this.flush()
    if (bytes.length >= this.buf.length) {
      yield* this.writeOut(bytes)
      return
    }
    this.buf.set(bytes, this.fill)
    this.fill += bytes.length
  }

  *flush(): Handler<void> {
    if (this.fill === 0) return
    const fill = this.fill
    this.fill = 0
    yield* this.writeOut(this.buf.subarray(0, fill))
  }

  private *writeOut(bytes: Uint8Array): Handler<void> {
    yield* this.staging.write(this.staged, bytes, this.pos)
    this.pos += bytes.length
  }
}

/** A sink that writes a whole log into a staging file (the commit area last, at its place). */
function logSink(staging: StagingDir, staged: Staged): LogSink & { flush(): Handler<void> } {
  const out = new StagingWriter(staging, staged)
  return {
    write: (bytes) => out.write(bytes),
    *writeAt(bytes, pos) {
      yield* out.flush()
      yield* staging.write(staged, bytes, pos)
    },
    flush: () => out.flush(),
  }
}

/**
 * Writes `key`'s file whole through a staging file (FORMAT.md §5): what
 * `produce` writes to the sink, then the durable commit. `rekey` re-encodes
 * logs this way.
 */
export function* replaceFile(store: KeyFiles, key: Uint8Array, produce: (sink: LogSink) => Handler<void>): Handler<void> {
  const { staging } = store
  staging.checkWritable()
  const staged = yield* staging.create(store.stagingName(key))
  try {
    const sink = logSink(staging, staged)
    yield* produce(sink)
    yield* sink.flush()
    remember(logId(store, key), undefined)
    yield* staging.commit(staged, store.filePath(key))
  } finally {
    staging.drop(staged)
  }
}

/**
 * Writes a whole log for `key` through a staging file (FORMAT.md §5): a new
 * log, a trim, or the migration of a log of the earlier layout (format/log.ts
 * writeLogWhole). Remembers the new file as verified.
 */
function* writeLog(
  store: KeyFiles,
  key: Uint8Array,
  codec: SegmentCodec,
  metaStored: Uint8Array,
  src: OpenLog | undefined,
  keepFrom: number,
  extra: NewRecord[],
): Handler<LogInfo> {
  const { staging } = store
  const id = logId(store, key)
  const staged = yield* staging.create(store.stagingName(key))
  try {
    const sink = logSink(staging, staged)
    let written: { info: LogInfo; commit: Commit }
    try {
      const source = src && { read: bufferedReader(fileReader(src)), layout: src.layout, fileLength: src.size }
      written = yield* writeLogWhole(sink, codec, metaStored, source, keepFrom, extra)
    } catch (err) {
      throw vfs.ioError(err, 'cannot read the log', src?.file ?? store.filePath(key))
    }
    yield* sink.flush()
    remember(id, undefined)
    yield* staging.commit(staged, store.filePath(key))
    remember(id, { metaChecksum: xxh3_64(metaStored), commit: written.commit })
    return written.info
  } finally {
    staging.drop(staged)
  }
}

/**
 * Appends `records` (one or more, in order) as one group commit, as the
 * core does (FORMAT.md §4.6): all encoded first (a bad one writes
 * nothing). A new log, or a log of the earlier layout, is written whole
 * through a staging file. Otherwise the acknowledged records are checked
 * (all of them the first time this process appends to the log, then the
 * first and the last; damage is ERR_CORRUPT and nothing is written), slot B
 * is repaired if a crash damaged it, the bytes past the acknowledged
 * records are cut, the records written after them with one write and slot
 * A set to the new commit, one fsync; then slot B, one fsync.
 */
export function* append(store: KeyFiles, key: Uint8Array, records: NewRecord[], createMeta: Uint8Array): Handler<LogInfo> {
  const { staging } = store
  staging.checkWritable()
  if (!Array.isArray(records) || records.length === 0) {
    throw new KonserveError('ERR_INVALID_ARGUMENT', 'an append takes at least one record')
  }
  const id = logId(store, key)
  const last = records[records.length - 1]!
  const f = yield* openLogFile(store, key, 'r+')
  if (!f) {
    // A new log: its meta segment and records 0, 1, ..., as a whole new file.
    const codec = store.codec.writeCodec(key)
    const metaStored = yield* encodeMetaSegment(codec, key, createMeta)
    yield* encodeRecords(codec, 0, records) // a record that cannot be stored fails before the staging file
    return yield* writeLog(store, key, codec, metaStored, undefined, 0, records)
  }
  try {
    const codec = store.codec.readCodec(f.head.header, key)
    const metaStored = f.prefix.subarray(HEADER_LEN, f.valueStart)
    const commit = f.layout.commit
    // The earlier layout: rewritten in the current one, the new records after the old.
    if (!commit) return yield* writeLog(store, key, codec, metaStored, f, 0, records)
    let at: LogInfo
    try {
      const read = bufferedReader(fileReader(f))
      const known = verifiedLogs.get(id)
      if (known && known.metaChecksum === f.head.header.metaChecksum && sameCommit(known.commit, commit)) {
        at = yield* readLogInfo(read, f.head.header, f.prefix, codec, f.size)
      } else {
        at = logInfoOf(yield* scanLog(read, f.layout, f.size))
      }
    } catch (err) {
      throw vfs.ioError(err, 'cannot read the log', f.file)
    }
    const index = at.lastIndex + 1
    const batch = yield* encodeRecords(codec, index, records)
    const next: Commit = {
      seq: commit.seq + 1,
      count: commit.count + records.length,
      end: commit.end + batch.length,
      lastChecksum: new DataView(batch.buffer, batch.byteOffset, batch.byteLength).getBigUint64(batch.length - 12, true),
    }
    const slot = yield* encodeCommitSlot(next, codec, metaStored)
    const slotB = f.layout.areaAt + COMMIT_SLOT
    const fsync = () => staging.fsync(f.fd, 'cannot fsync the log', f.file)
    const write = function* (bytes: Uint8Array, pos: number): Handler<void> {
      try {
        yield* vfs.writeAll(f.fd, bytes, pos)
      } catch (err) {
        throw vfs.ioError(err, 'cannot append to the log', f.file)
      }
    }
    // Forgotten first: if a write fails halfway, the next append looks at the file again.
    remember(id, undefined)
    if (!f.layout.bValid) {
      // A crash while slot B was written: B gets A's commit, durably, before A is written again.
      yield* write(yield* encodeCommitSlot(commit, codec, metaStored), slotB)
      yield* fsync()
    }
    if (commit.end < f.size) {
      // The torn tail of an append that never returned.
      try {
        yield* vfs.truncate(f.fd, commit.end)
      } catch (err) {
        throw vfs.ioError(err, 'cannot cut the torn tail of the log', f.file)
      }
    }
    yield* write(batch, commit.end)
    yield* write(slot, f.layout.areaAt)
    yield* fsync()
    yield* write(slot, slotB)
    yield* fsync()
    remember(id, { metaChecksum: f.head.header.metaChecksum, commit: next })
    const firstIndex = at.lastIndex >= 0 ? at.firstIndex : index
    return { firstIndex, lastIndex: index + records.length - 1, lastStamp: last.stamp }
  } finally {
    vfs.closeQuietly(f.fd)
  }
}

/** The records of the log at `key`; undefined when missing; ERR_NOT_A_LOG for another kind of key. */
export function* openLog(store: KeyFiles, key: Uint8Array): Handler<LogCursor | undefined> {
  const f = yield* openLogFile(store, key, 'r')
  if (!f) return undefined
  const reader = new LogReader(fileReader(f), store.codec.readCodec(f.head.header, key), f.layout, f.size)
  return new FileLogCursor(f.fd, f.file, reader)
}

/** Replaces the log at `key` by one with metadata `meta` and the records from `keepFrom` on. */
export function* trimLog(store: KeyFiles, key: Uint8Array, keepFrom: number, meta: Uint8Array): Handler<LogInfo> {
  store.staging.checkWritable()
  const f = yield* openLogFile(store, key, 'r')
  if (!f) return { firstIndex: 0, lastIndex: -1, lastStamp: 0 }
  try {
    // The records are copied as they are (their MAC binds the key and their
    // index, not the file), so the new file keeps the old file's codec.
    const codec = store.codec.readCodec(f.head.header, key)
    const metaStored = yield* encodeMetaSegment(codec, key, meta)
    return yield* writeLog(store, key, codec, metaStored, f, keepFrom, [])
  } finally {
    vfs.closeQuietly(f.fd)
  }
}

/**
 * A whole new log for `key` (the caller holds its lock), written through a
 * staging file as it comes (an archive's import): the head at once, each
 * batch of records with the next indexes from `firstIndex`, then the commit
 * area and the durable commit (FORMAT.md §5), which replaces whatever the
 * key held. Until then the key is as it was; a failure or abort removes the
 * staging file.
 */
export function* logWriter(store: KeyFiles, key: Uint8Array, meta: Uint8Array, firstIndex: number): Handler<LogWriter> {
  store.staging.checkWritable()
  const codec = store.codec.writeCodec(key)
  const metaStored = yield* encodeMetaSegment(codec, key, meta)
  const staged = yield* store.staging.create(store.stagingName(key))
  const sink = logSink(store.staging, staged)
  const w = new WholeLogWriter(sink, codec, metaStored, firstIndex)
  try {
    yield* w.start()
  } catch (err) {
    store.staging.drop(staged)
    throw err
  }
  return new FileLogWriter(store, key, staged, sink, w, xxh3_64(metaStored))
}

/** See logWriter. */
class FileLogWriter implements LogWriter {
  private state: 'open' | 'committed' | 'dropped' = 'open'
  private busy = false
  readonly append = gensync((records: NewRecord[]) => this.guard(() => this.w.add(records)))
  readonly commit = gensync(() => this.guard(() => this.commitG()))

  constructor(
    private readonly store: KeyFiles,
    private readonly key: Uint8Array,
    private readonly staged: Staged,
    private readonly sink: ReturnType<typeof logSink>,
    private readonly w: WholeLogWriter,
    private readonly metaChecksum: bigint,
  ) {}

  private *commitG(): Handler<LogInfo> {
    const written = yield* this.w.finish()
    yield* this.sink.flush()
    const id = logId(this.store, this.key)
    remember(id, undefined)
    yield* this.store.staging.commit(this.staged, this.store.filePath(this.key))
    this.state = 'committed'
    this.store.staging.drop(this.staged) // its descriptor, if the commit left it open
    remember(id, { metaChecksum: this.metaChecksum, commit: written.commit })
    return written.info
  }

  private *guard<T>(op: () => Handler<T>): Handler<T> {
    if (this.state !== 'open') {
      throw new KonserveError('ERR_INVALID_ARGUMENT', this.state === 'committed' ? 'the log is already committed' : 'the log writer was aborted or has failed')
    }
    if (this.busy) throw new KonserveError('ERR_INVALID_ARGUMENT', 'another call on this log writer is in progress')
    this.busy = true
    try {
      return yield* op()
    } catch (err) {
      if (this.state === 'open') this.state = 'dropped'
      throw err
    } finally {
      this.busy = false
      if (this.state === 'dropped') this.store.staging.drop(this.staged)
    }
  }

  abort(): void {
    if (this.state !== 'open') return
    this.state = 'dropped'
    // A call under way drops the file when it ends (its descriptor is in use).
    if (!this.busy) this.store.staging.drop(this.staged)
  }
}

/** A log's records in batches (format/log.ts LogReader over the open file); closes the file at the end. */
class FileLogCursor implements LogCursor {
  private closed = false
  private busy = false
  readonly next = gensync((max: number) => this.nextG(max))

  constructor(
    private fd: number | undefined,
    private readonly file: string,
    private readonly reader: LogReader,
  ) {}

  private *nextG(max: number): Handler<LogRecord[] | undefined> {
    if (this.closed) return undefined
    if (this.busy) throw new KonserveError('ERR_INVALID_ARGUMENT', 'another read of this log cursor is in progress')
    this.busy = true
    let batch: LogRecord[] | undefined
    try {
      batch = yield* this.reader.next(max)
    } catch (err) {
      this.closed = true
      throw vfs.ioError(err, 'cannot read the log', this.file)
    } finally {
      this.busy = false
      if (this.closed) this.release()
    }
    // Done: the file is not needed any more, even if the caller never asks again.
    if (!batch || this.reader.finished) this.close()
    return batch
  }

  private release(): void {
    const fd = this.fd
    this.fd = undefined
    vfs.closeQuietly(fd)
  }

  close(): void {
    this.closed = true
    this.reader.close()
    if (!this.busy) this.release()
  }
}
