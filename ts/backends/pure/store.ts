/**
 * The file backing in pure TypeScript: the same files as the Rust core
 * (docs/FORMAT.md), for platforms with no prebuilt binary, or when asked for
 * with `{ native: false }` / `KONSERVE_NATIVE=0`.
 *
 * The write path is the core's: a unique staging file (O_EXCL), written whole,
 * fsynced, renamed over the key file, then one fsync of the directory; a failed
 * fsync poisons the store until it is reopened. Async calls use `fs/promises`,
 * which runs on the libuv threadpool. Concurrent async puts are group commits
 * (one directory fsync per batch), and an append writes all its records with
 * one write and one fsync.
 *
 * Locks: a key's cross-process lock is the lock file `.<hash>.lock` of
 * docs/FORMAT.md §6 (./file-lock.ts), the same protocol as the Rust core's, so
 * pure and native processes exclude each other on one directory.
 */
import gensync, { type Handler } from 'gensync'
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import { dirname, join, relative, sep } from 'node:path'
import type {
  Backing,
  BlobSink,
  BlobSource,
  ListCursor,
  LogCursor,
  LogInfo,
  LogRecord,
  NewRecord,
  RawCorrupt,
  RawEntry,
  RawListing,
  RawMeta,
  RawWrite,
} from '../../backing/index.js'
import { CLOCK_FILE, FileClock } from '../../clock.js'
import type { ErrorCode } from '../../errors.js'
import { KonserveError, codeOfOsError } from '../../errors.js'
import { fsyncDirSync, isFsyncFailure } from '../../fsync.js'
import { RAW_BYTES_ID } from '../../serializers.js'
import {
  type BlobLayout,
  type ChunkSink,
  CHUNK_SIZE,
  ChunkedEncoder,
  blobHeader,
  checkStoredChunk,
  chunkPlainLength,
  decodeChunkedValue,
  readBlobLayout,
  readChunk,
} from '../../format/blob.js'
import {
  type EncodedParts,
  type ReadAt,
  type SegmentCodec,
  FLAG_CHUNKED,
  decodeValueSegment,
  encodeMetaSegment,
  isLogHeader,
} from '../../format/file.js'
import {
  type Commit,
  type LogLayout,
  type LogSink,
  COMMIT_SLOT,
  LogReader,
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
import { FileLocker, LOCK_NAME, lockErrorCode, lockTimeoutError, processAlive, type LockRecord } from './filelock.js'
import { GroupCommit } from '../../backing/group-commit.js'
import { checkStoreKeySync } from './keycheck.js'
import { KEY_CHECK_FILE, REKEY_FILE } from '../../format/keycheck.js'
import type { DecodedHead, PureCodec } from './codec.js'

const HEADER_LEN = 48
/** How much of a key file a metadata read takes first (as the core does). */
const HEAD_READ = 4096
/** How much of a key file a get reads first: a small file is read at once. */
const GET_READ = 64 * 1024
const LOCK_FILE = '.konserve.lock'
const KEY_FILE = /^[0-9a-f]{32}\.ksv$/
const STAGING = /^\.([0-9a-f]{32})\.([1-9][0-9]*)\.(0|[1-9][0-9]*)\.stage$/

let stagingSeq = 0
/** How many staging files of one batch of puts are written and fsynced at once. */
const STAGING_CONCURRENCY = 16

/**
 * Runs `task(0 .. n - 1)`, at most `limit` at a time, and waits for every one
 * that started. Fails after that with an ERR_FSYNC among the failures if there
 * is one (it poisoned the store), else the first failure; once one failed, no
 * more start.
 */
async function eachLimited(n: number, limit: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0
  const errors: unknown[] = []
  const worker = async () => {
    while (next < n && errors.length === 0) {
      const i = next++
      try {
        await task(i)
      } catch (err) {
        errors.push(err)
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(n, limit) }, worker))
  if (errors.length > 0) throw errors.find((e) => (e as { code?: unknown }).code === 'ERR_FSYNC') ?? errors[0]
}

function ioError(err: unknown, what: string, file: string, code?: ErrorCode): KonserveError {
  if (err instanceof KonserveError) {
    if (!err.file) err.file = file
    return err
  }
  const e = err as NodeJS.ErrnoException
  // One errno, one code (errors.ts codeOfErrno, the core's ErrorCode::of_io).
  return new KonserveError(codeOfOsError(e, code), `${what}: ${e.message}`, { file, cause: err })
}

const isMissing = (err: unknown) => (err as NodeJS.ErrnoException).code === 'ENOENT'

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

// ---- file I/O, blocking or on the threadpool (gensync operations) ------------------------

function cb<T>(f: (done: (err: NodeJS.ErrnoException | null, value: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => f((err, value) => (err ? reject(err) : resolve(value))))
}
const done0 = (d: (err: NodeJS.ErrnoException | null, value: void) => void) => (err: NodeJS.ErrnoException | null) => d(err, undefined)

/**
 * Flags of every open of an existing store file: a symbolic link is never
 * followed (ELOOP: ERR_NOT_A_FILE, so no store file leads outside the store),
 * and a FIFO never makes the open wait for a writer (O_NONBLOCK, without
 * effect on regular files). The core opens with the same flags (vfs.rs).
 */
const STORE_OPEN = {
  r: fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK,
  'r+': fs.constants.O_RDWR | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK,
} as const

function fileType(st: fs.Stats): string {
  if (st.isDirectory()) return 'a directory'
  if (st.isFIFO()) return 'a FIFO'
  if (st.isSocket()) return 'a socket'
  if (st.isCharacterDevice()) return 'a character device'
  if (st.isBlockDevice()) return 'a block device'
  if (st.isSymbolicLink()) return 'a symbolic link'
  return 'of an unknown type'
}

function regularSize(st: fs.Stats, file: string): number {
  if (!st.isFile()) throw new KonserveError('ERR_NOT_A_FILE', `cannot read the key file: not a regular file but ${fileType(st)}`, { file })
  return st.size
}

const io = {
  open: gensync({
    sync: (path: string, flags: string | number, mode?: number): number => fs.openSync(path, flags, mode),
    async: (path: string, flags: string | number, mode?: number) => cb<number>((d) => fs.open(path, flags, mode ?? 0o666, d)),
  }),
  close: gensync({
    sync: (fd: number): void => fs.closeSync(fd),
    async: (fd: number) => cb<void>((d) => fs.close(fd, done0(d))),
  }),
  size: gensync({
    sync: (fd: number): number => fs.fstatSync(fd).size,
    async: async (fd: number) => (await cb<fs.Stats>((d) => fs.fstat(fd, d))).size,
  }),
  /** fstat of an open store file: its size, or ERR_NOT_A_FILE when it is not a regular file. */
  regularSize: gensync({
    sync: (fd: number, file: string): number => regularSize(fs.fstatSync(fd), file),
    async: async (fd: number, file: string) => regularSize(await cb<fs.Stats>((d) => fs.fstat(fd, d)), file),
  }),
  read: gensync({
    sync: (fd: number, buf: Uint8Array, off: number, len: number, pos: number): number => fs.readSync(fd, buf, off, len, pos),
    async: (fd: number, buf: Uint8Array, off: number, len: number, pos: number) =>
      cb<number>((d) => fs.read(fd, buf, off, len, pos, (err, n) => d(err, n))),
  }),
  write: gensync({
    sync: (fd: number, buf: Uint8Array, off: number, len: number, pos: number): number => fs.writeSync(fd, buf, off, len, pos),
    async: (fd: number, buf: Uint8Array, off: number, len: number, pos: number) =>
      cb<number>((d) => fs.write(fd, buf, off, len, pos, (err, n) => d(err, n))),
  }),
  fsync: gensync({
    sync: (fd: number): void => fs.fsyncSync(fd),
    async: (fd: number) => cb<void>((d) => fs.fsync(fd, done0(d))),
  }),
  truncate: gensync({
    sync: (fd: number, len: number): void => fs.ftruncateSync(fd, len),
    async: (fd: number, len: number) => cb<void>((d) => fs.ftruncate(fd, len, done0(d))),
  }),
  rename: gensync({
    sync: (from: string, to: string): void => fs.renameSync(from, to),
    async: (from: string, to: string) => cb<void>((d) => fs.rename(from, to, done0(d))),
  }),
  syncDir: gensync({
    sync: (dir: string): void => fsyncDirSync(dir),
    async: async (dir: string): Promise<void> => {
      const handle = await fsp.open(dir, 'r')
      try {
        await handle.sync()
      } finally {
        await handle.close()
      }
    },
  }),
  readDir: gensync({
    sync: (dir: fs.Dir): fs.Dirent | null => dir.readSync(),
    async: (dir: fs.Dir) => dir.read(),
  }),
}

const runner = gensync(function* (g: Handler<unknown>): Handler<unknown> {
  return yield* g
})
/** Runs a generator of gensync operations blocking. */
const runSync = <T>(g: Handler<T>): T => runner.sync(g) as T
/** Runs a generator of gensync operations with the async forms. */
const runAsync = <T>(g: Handler<T>): Promise<T> => runner.async(g) as Promise<T>

/** Up to `length` bytes at `pos` (fewer only at the end of the file). */
function* preadG(fd: number, pos: number, length: number): Handler<Uint8Array> {
  const buf = new Uint8Array(length)
  let n = 0
  while (n < length) {
    const got = yield* io.read(fd, buf, n, length - n, pos + n)
    if (got === 0) break
    n += got
  }
  return n < length ? buf.subarray(0, n) : buf
}

/** Reads into all of `buf` from `pos` (fewer only at the end of the file); returns how many bytes were read. */
function* preadIntoG(fd: number, buf: Uint8Array, pos: number): Handler<number> {
  let n = 0
  while (n < buf.length) {
    const got = yield* io.read(fd, buf, n, buf.length - n, pos + n)
    if (got === 0) break
    n += got
  }
  return n
}

/** Writes all of `bytes` at `pos` (write may write less than asked, as write(2) may). */
function* writeAllG(fd: number, bytes: Uint8Array, pos: number): Handler<void> {
  let off = 0
  while (off < bytes.length) off += yield* io.write(fd, bytes, off, bytes.length - off, pos + off)
}

/** A `ReadAt` (format/file.ts) over an open file: each read a new buffer. */
const fdReader = (fd: number): ReadAt => (pos, length) => preadG(fd, pos, length)

/** A `ReadAt` over an open key file that serves what its prefix (already read) holds without reading again. */
const fileReader = (f: { fd: number; prefix: Uint8Array }): ReadAt =>
  function* (pos, length) {
    if (pos + length <= f.prefix.length) return f.prefix.subarray(pos, pos + length)
    return yield* preadG(f.fd, pos, length)
  }

function closeQuietly(fd: number | undefined): void {
  if (fd === undefined) return
  try {
    fs.closeSync(fd)
  } catch {
    // Nothing to release.
  }
}

/** An open key file with its decoded head. */
interface OpenKeyFile {
  fd: number
  file: string
  size: number
  /** The bytes read from the start of the file: at least the head. */
  prefix: Uint8Array
  head: DecodedHead
  /** Where the value segment (a log's records) starts: `48 + m`. */
  valueStart: number
}

/** A staging file being written. */
interface Staging {
  stage: string
  fd: number
  /** Whether `fd` is still open. */
  open: boolean
}

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

export interface PureFileOptions {
  syncBlob: boolean
  /** How long a lock waits for another holder (default 60000). */
  lockTimeoutMs?: number
  /** The store's encryption key: checked against the store's key check on open (FORMAT.md §4.7). */
  encryptionKey?: Uint8Array
  /** With a key: a store with plaintext files opens (a migration to encryption). */
  acceptPlaintext?: boolean
  /** Skip the key check on open: for `rekey` only, which does its own. */
  skipKeyCheck?: boolean
}

/**
 * The parents whose entries must be fsynced after `mkdir -p dir` created
 * `first` and everything below it (as the core does: a crash must not take a
 * new store directory away).
 */
function parentsOfNewDirs(first: string | undefined, dir: string): string[] {
  if (first === undefined) return []
  const below = relative(first, dir).split(sep).filter(Boolean)
  const created = [first]
  for (const part of below) created.push(join(created[created.length - 1]!, part))
  return created.map((d) => dirname(d))
}


/** An error of opening a store: mkdir's EEXIST says the path is something other than a directory. */
function openError(err: unknown, dir: string): KonserveError {
  if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
    return new KonserveError('ERR_NOT_A_DIRECTORY', 'cannot open the store directory: the path exists and is not a directory', { file: dir, cause: err })
  }
  return ioError(err, 'cannot open the store directory', dir)
}

export class PureFileBacking implements Backing {
  readonly implementation = 'pure' as const
  readonly atomicMultiKey = false
  readonly lockScope: string
  private poisoned = false
  /** The store's lastWrite clock (the `.konserve.clock` watermark). */
  readonly clock: FileClock
  /** Staging files this store is writing now: the sweep on open must not take them. */
  private static readonly inFlight = new Set<string>()

  private constructor(
    readonly dir: string,
    private readonly codec: PureCodec,
    private readonly options: PureFileOptions,
  ) {
    this.lockScope = `file:${dir}`
    this.locker = new FileLocker(dir)
    this.clock = FileClock.openSync(dir, options.syncBlob)
  }

  /** Opens the store in `dir` (created if needed, canonical path), sweeping dead writers' staging files. */
  static openSync(dir: string, codec: PureCodec, options: PureFileOptions): PureFileBacking {
    try {
      const first = fs.mkdirSync(dir, { recursive: true })
      if (options.syncBlob) for (const parent of parentsOfNewDirs(first, dir)) fsyncDirSync(parent)
      const real = fs.realpathSync(dir)
      const store = new PureFileBacking(real, codec, options)
      store.sweepStaging(fs.readdirSync(real))
      store.checkStoreKey()
      return store
    } catch (err) {
      throw openError(err, dir)
    }
  }

  static async open(dir: string, codec: PureCodec, options: PureFileOptions): Promise<PureFileBacking> {
    try {
      const first = await fsp.mkdir(dir, { recursive: true })
      if (options.syncBlob) for (const parent of parentsOfNewDirs(first, dir)) fsyncDirSync(parent)
      const real = await fsp.realpath(dir)
      const store = new PureFileBacking(real, codec, options)
      store.sweepStaging(await fsp.readdir(real))
      store.checkStoreKey()
      return store
    } catch (err) {
      throw openError(err, dir)
    }
  }

  /** The key check of the store (FORMAT.md §4.7), as the core's open does it. */
  private checkStoreKey(): void {
    if (this.options.skipKeyCheck) return
    const o = this.options
    checkStoreKeySync(this.dir, { secret: o.encryptionKey, acceptPlaintext: o.acceptPlaintext, durable: o.syncBlob })
  }

  /** Removes staging files of dead processes, and our own that no write has in flight. */
  private sweepStaging(names: string[]): void {
    let removed = false
    for (const name of names) {
      const m = STAGING.exec(name)
      if (!m) continue
      const pid = Number(m[2])
      const path = join(this.dir, name)
      const ours = pid === process.pid
      if ((ours && !PureFileBacking.inFlight.has(path)) || (!ours && !processAlive(pid))) {
        try {
          fs.unlinkSync(path)
          removed = true
        } catch {
          // Only garbage is left behind; no data is at stake.
        }
      }
    }
    // Lock temp files and takeover markers nobody can use any more.
    if (this.locker.sweep(names)) removed = true
    if (removed && this.options.syncBlob) this.syncDirSync()
  }

  filePath(key: Uint8Array): string {
    return join(this.dir, this.codec.fileName(key))
  }

  private checkWritable(): void {
    if (this.poisoned) {
      throw new KonserveError(
        'ERR_STORE_POISONED',
        'an earlier fsync failed, so durability cannot be promised; reopen the store to write again',
        { file: this.dir },
      )
    }
  }

  private fsyncFailed(err: unknown, what: string, file: string): KonserveError {
    // Out of descriptors while opening the directory to fsync it is not a failed fsync.
    if (!isFsyncFailure(err)) return ioError(err, what, file)
    this.poisoned = true
    return ioError(err, what, file, 'ERR_FSYNC')
  }

  private syncDirSync(): void {
    try {
      fsyncDirSync(this.dir)
    } catch (err) {
      throw this.fsyncFailed(err, 'cannot fsync the store directory', this.dir)
    }
  }

  private async syncDir(): Promise<void> {
    let handle: fsp.FileHandle | undefined
    try {
      handle = await fsp.open(this.dir, 'r')
      await handle.sync()
    } catch (err) {
      throw this.fsyncFailed(err, 'cannot fsync the store directory', this.dir)
    } finally {
      await handle?.close()
    }
  }

  // ---- reads ------------------------------------------------------------------

  private checkKey(stored: Uint8Array, key: Uint8Array, file: string): void {
    if (!bytesEqual(stored, key)) {
      throw new KonserveError('ERR_KEY_MISMATCH', 'the key file holds another key than the one asked for', { file })
    }
  }

  /**
   * Opens a key file and decodes its header and meta segment (reading
   * `firstRead` bytes first, then the rest of the head if it is longer);
   * undefined when the file does not exist. The caller closes `fd`.
   */
  private *openHeadG(file: string, firstRead: number, key?: Uint8Array, name?: string, flags: keyof typeof STORE_OPEN = 'r'): Handler<OpenKeyFile | undefined> {
    let fd: number
    try {
      fd = yield* io.open(file, STORE_OPEN[flags])
    } catch (err) {
      if (isMissing(err)) return undefined
      throw ioError(err, 'cannot open the key file', file)
    }
    try {
      return yield* this.readHeadG(fd, file, firstRead, key, name)
    } catch (err) {
      closeQuietly(fd)
      throw err
    }
  }

  /** Reads and decodes the head of the open file `fd` (see openHeadG); checks the key when it is given. */
  private *readHeadG(fd: number, file: string, firstRead: number, key?: Uint8Array, name?: string): Handler<OpenKeyFile> {
    let size: number
    let prefix: Uint8Array
    try {
      size = yield* io.regularSize(fd, file)
      prefix = yield* preadG(fd, 0, Math.min(size, firstRead))
      const need = this.headLength(prefix, size)
      if (need > prefix.length) {
        const more = new Uint8Array(need)
        more.set(prefix)
        more.set(yield* preadG(fd, prefix.length, need - prefix.length), prefix.length)
        prefix = more
      }
    } catch (err) {
      throw ioError(err, 'cannot read the key file', file)
    }
    let head: DecodedHead
    try {
      head = yield* this.codec.decodeHeadGen(prefix, size, key, name)
      if (key) this.checkKey(head.key, key, file)
    } catch (err) {
      throw ioError(err, 'cannot decode the key file', file)
    }
    return { fd, file, size, prefix, head, valueStart: HEADER_LEN + head.header.metaLen }
  }

  /** How many bytes the header and meta segment take (a short or damaged header: what we have). */
  private headLength(prefix: Uint8Array, size: number): number {
    if (prefix.length < HEADER_LEN) return prefix.length
    const metaLen = new DataView(prefix.buffer, prefix.byteOffset, prefix.byteLength).getUint32(12, true)
    return Math.min(size, HEADER_LEN + metaLen)
  }

  /** A log's state, for a log file; undefined for other files. */
  private *logInfoG(f: OpenKeyFile): Handler<LogInfo | undefined> {
    if (!isLogHeader(f.head.header)) return undefined
    try {
      const codec = this.codec.readCodec(f.head.header, f.head.key)
      return yield* readLogInfo(bufferedReader(fileReader(f)), f.head.header, f.prefix, codec, f.size)
    } catch (err) {
      throw ioError(err, 'cannot read the log', f.file)
    }
  }

  private *getG(key: Uint8Array): Handler<RawEntry | undefined> {
    const f = yield* this.openHeadG(this.filePath(key), GET_READ, key)
    if (!f) return undefined
    try {
      const { header, meta } = f.head
      const codec = this.codec.readCodec(header, key)
      if (isLogHeader(header)) {
        return { serializer: header.serializer, meta, value: new Uint8Array(0), log: yield* this.logInfoG(f) }
      }
      let value: Uint8Array
      try {
        if (header.flags === FLAG_CHUNKED) {
          value = yield* decodeChunkedValue(fileReader(f), codec, header, f.valueStart)
        } else {
          const stored = f.prefix.length >= f.size ? f.prefix.subarray(f.valueStart) : yield* preadG(f.fd, f.valueStart, f.size - f.valueStart)
          value = yield* decodeValueSegment(codec, header, stored)
        }
      } catch (err) {
        throw ioError(err, 'cannot decode the key file', f.file)
      }
      return { serializer: header.serializer, meta, value }
    } finally {
      closeQuietly(f.fd)
    }
  }

  getSync(key: Uint8Array): RawEntry | undefined {
    return runSync(this.getG(key))
  }

  getAsync(key: Uint8Array): Promise<RawEntry | undefined> {
    return runAsync(this.getG(key))
  }

  private *getMetaG(key: Uint8Array): Handler<RawMeta | undefined> {
    const f = yield* this.openHeadG(this.filePath(key), HEAD_READ, key)
    if (!f) return undefined
    try {
      return yield* this.rawMetaG(f)
    } finally {
      closeQuietly(f.fd)
    }
  }

  private *rawMetaG(f: OpenKeyFile): Handler<RawMeta> {
    const m: RawMeta = { key: f.head.key, serializer: f.head.serializer, meta: f.head.meta, file: f.file }
    const log = yield* this.logInfoG(f)
    if (log) m.log = log
    return m
  }

  getMetaSync(key: Uint8Array): RawMeta | undefined {
    return runSync(this.getMetaG(key))
  }

  getMetaAsync(key: Uint8Array): Promise<RawMeta | undefined> {
    return runAsync(this.getMetaG(key))
  }

  existsSync(key: Uint8Array): boolean {
    const file = this.filePath(key)
    try {
      return fs.lstatSync(file, { throwIfNoEntry: false }) !== undefined
    } catch (err) {
      throw ioError(err, 'cannot look up the key file', file)
    }
  }

  async existsAsync(key: Uint8Array): Promise<boolean> {
    const file = this.filePath(key)
    try {
      await fsp.lstat(file)
      return true
    } catch (err) {
      if (isMissing(err)) return false
      throw ioError(err, 'cannot look up the key file', file)
    }
  }

  // ---- writes -----------------------------------------------------------------

  private stagingPath(key: Uint8Array): string {
    const name = this.codec.fileName(key)
    return join(this.dir, `.${name.slice(0, 32)}.${process.pid}.${stagingSeq++}.stage`)
  }

  putSync(writes: RawWrite[]): void {
    this.checkWritable()
    const files = writes.map((w) => this.codec.encodeSync(w))
    const staged: Array<[string, string]> = []
    try {
      for (const [i, w] of writes.entries()) {
        const stage = this.stagingPath(w.key)
        PureFileBacking.inFlight.add(stage)
        staged.push([stage, this.filePath(w.key)])
        this.writeStagingSync(stage, files[i]!)
      }
      while (staged.length > 0) {
        const [stage, target] = staged[0]!
        try {
          fs.renameSync(stage, target)
        } catch (err) {
          throw ioError(err, 'cannot rename a staging file over the key file', target)
        }
        PureFileBacking.inFlight.delete(stage)
        staged.shift()
      }
      if (this.options.syncBlob) this.syncDirSync()
    } finally {
      for (const [stage] of staged) {
        try {
          fs.unlinkSync(stage)
        } catch {
          // It may never have been created.
        }
        PureFileBacking.inFlight.delete(stage)
      }
    }
  }

  private writeStagingSync(stage: string, file: EncodedParts): void {
    let fd: number
    try {
      fd = fs.openSync(stage, 'wx', 0o644)
    } catch (err) {
      throw ioError(err, 'cannot create a staging file', stage)
    }
    try {
      for (const bytes of [file.head, file.value]) {
        let off = 0
        while (off < bytes.length) off += fs.writeSync(fd, bytes, off, bytes.length - off)
      }
    } catch (err) {
      fs.closeSync(fd)
      throw ioError(err, 'cannot write a staging file', stage)
    }
    try {
      if (this.options.syncBlob) fs.fsyncSync(fd)
    } catch (err) {
      throw this.fsyncFailed(err, 'cannot fsync a staging file', stage)
    } finally {
      fs.closeSync(fd)
    }
  }

  /**
   * Concurrent async puts are group commits (group-commit.ts): the puts that
   * arrive while a batch is being written go together as the next batch, one
   * directory fsync for all of them; each caller resolves once its batch is
   * durable, and a failed batch of several callers is retried caller by
   * caller, so each gets its own result.
   */
  putAsync(writes: RawWrite[]): Promise<void> {
    try {
      this.checkWritable()
    } catch (err) {
      return Promise.reject(err)
    }
    return this.group.put(writes)
  }

  private readonly group = new GroupCommit((writes) => this.writeBatch(writes))
  /** close: the queued group commits are written first; the store holds no descriptor between calls. */
  close(): Promise<void> {
    return this.group.idle()
  }

  /**
   * One batch of puts: every staging file written and fsynced (several at
   * once, on the threadpool), then the renames in order (a later write to
   * the same key wins), then ONE directory fsync. Whatever was not renamed
   * is removed. When writes fail, an ERR_FSYNC among them is the error
   * reported (the store is poisoned), else the first.
   */
  private async writeBatch(writes: RawWrite[]): Promise<void> {
    this.checkWritable()
    if (writes.length === 0) return
    const files = await Promise.all(writes.map((w) => this.codec.encode(w)))
    const staged = writes.map((w) => ({ stage: this.stagingPath(w.key), target: this.filePath(w.key) }))
    for (const { stage } of staged) PureFileBacking.inFlight.add(stage)
    let renamed = 0
    try {
      await eachLimited(staged.length, STAGING_CONCURRENCY, (i) => this.writeStaging(staged[i]!.stage, files[i]!))
      this.checkWritable()
      for (; renamed < staged.length; renamed++) {
        const { stage, target } = staged[renamed]!
        try {
          await fsp.rename(stage, target)
        } catch (err) {
          throw ioError(err, 'cannot rename a staging file over the key file', target)
        }
        PureFileBacking.inFlight.delete(stage)
      }
      if (this.options.syncBlob) await this.syncDir()
    } finally {
      for (const { stage } of staged.slice(renamed)) {
        await fsp.unlink(stage).catch(() => {})
        PureFileBacking.inFlight.delete(stage)
      }
    }
  }

  private async writeStaging(stage: string, file: EncodedParts): Promise<void> {
    let handle: fsp.FileHandle
    try {
      handle = await fsp.open(stage, 'wx', 0o644)
    } catch (err) {
      throw ioError(err, 'cannot create a staging file', stage)
    }
    try {
      try {
        // write() may write less than asked (as write(2) may): loop until all is written.
        for (const bytes of [file.head, file.value]) {
          let off = 0
          while (off < bytes.length) off += (await handle.write(bytes, off, bytes.length - off)).bytesWritten
        }
      } catch (err) {
        throw ioError(err, 'cannot write a staging file', stage)
      }
      if (this.options.syncBlob) {
        try {
          await handle.sync()
        } catch (err) {
          throw this.fsyncFailed(err, 'cannot fsync a staging file', stage)
        }
      }
    } finally {
      await handle.close()
    }
  }

  deleteSync(keys: Uint8Array[]): boolean[] {
    this.checkWritable()
    const existed = keys.map((key) => {
      const file = this.filePath(key)
      try {
        fs.unlinkSync(file)
        return true
      } catch (err) {
        if (isMissing(err)) return false
        throw ioError(err, 'cannot delete the key file', file)
      }
    })
    if (this.options.syncBlob && existed.some(Boolean)) this.syncDirSync()
    return existed
  }

  async deleteAsync(keys: Uint8Array[]): Promise<boolean[]> {
    this.checkWritable()
    const existed: boolean[] = []
    for (const key of keys) {
      const file = this.filePath(key)
      try {
        await fsp.unlink(file)
        existed.push(true)
      } catch (err) {
        if (!isMissing(err)) throw ioError(err, 'cannot delete the key file', file)
        existed.push(false)
      }
    }
    if (this.options.syncBlob && existed.some(Boolean)) await this.syncDir()
    return existed
  }

  // ---- listing ------------------------------------------------------------------

  /** One key file of a listing: its entry, nothing if it vanished, or a corrupt entry. */
  private *listOneG(name: string, out: RawListing): Handler<boolean> {
    const file = join(this.dir, name)
    try {
      const f = yield* this.openHeadG(file, HEAD_READ, undefined, name)
      if (!f) return false
      try {
        if (this.codec.fileName(f.head.key) !== name) {
          throw new KonserveError('ERR_KEY_MISMATCH', "the key file holds a key whose name is another file's", { file })
        }
        out.entries.push(yield* this.rawMetaG(f))
      } finally {
        closeQuietly(f.fd)
      }
    } catch (err) {
      const e = ioError(err, 'cannot read the key file', file)
      out.corrupt.push({ code: e.code, file, message: e.message } satisfies RawCorrupt)
    }
    return true
  }

  // The whole listing is the cursor drained: one set of listing rules.
  listSync(): RawListing {
    const cursor = this.openList()
    const out: RawListing = { entries: [], corrupt: [] }
    for (let batch = cursor.nextSync(1000); batch; batch = cursor.nextSync(1000)) {
      out.entries.push(...batch.entries)
      out.corrupt.push(...batch.corrupt)
    }
    return out
  }

  async listAsync(): Promise<RawListing> {
    const cursor = this.openList()
    const out: RawListing = { entries: [], corrupt: [] }
    for (let batch = await cursor.next(1000); batch; batch = await cursor.next(1000)) {
      out.entries.push(...batch.entries)
      out.corrupt.push(...batch.corrupt)
    }
    return out
  }

  /** A streaming listing over `opendir`: one key file open at a time. */
  openList(): ListCursor {
    let dir: fs.Dir | undefined
    try {
      dir = fs.opendirSync(this.dir)
    } catch (err) {
      throw ioError(err, 'cannot list the store directory', this.dir)
    }
    const close = () => {
      const d = dir
      dir = undefined
      try {
        d?.closeSync()
      } catch {
        // already closed
      }
    }
    const self = this
    function* nextG(max: number): Handler<RawListing | undefined> {
      const out: RawListing = { entries: [], corrupt: [] }
      let n = 0
      while (dir && n < Math.max(1, max)) {
        let ent: fs.Dirent | null
        try {
          ent = yield* io.readDir(dir)
        } catch (err) {
          close()
          throw ioError(err, 'cannot list the store directory', self.dir)
        }
        if (!ent) {
          close()
          break
        }
        if (!KEY_FILE.test(ent.name)) continue
        if (yield* self.listOneG(ent.name, out)) n++
      }
      return n > 0 ? out : undefined
    }
    return { nextSync: (max) => runSync(nextG(max)), next: (max) => runAsync(nextG(max)), close }
  }

  // ---- streamed blobs (FORMAT.md §4.5) ------------------------------------------------

  private *blobWriterG(key: Uint8Array, meta: Uint8Array): Handler<BlobSink> {
    this.checkWritable()
    const codec = this.codec.writeCodec(key)
    const metaStored = yield* encodeMetaSegment(codec, key, meta)
    const staging = yield* this.createStagingG(key)
    try {
      // 48 placeholder bytes, then the meta segment; the header comes last.
      yield* writeAllG(staging.fd, new Uint8Array(HEADER_LEN), 0)
      yield* writeAllG(staging.fd, metaStored, HEADER_LEN)
    } catch (err) {
      this.dropStaging(staging)
      throw ioError(err, 'cannot write a staging file', staging.stage)
    }
    return new PureBlobSink(this, staging, this.filePath(key), codec, metaStored)
  }

  blobWriterSync(key: Uint8Array, meta: Uint8Array): BlobSink {
    return runSync(this.blobWriterG(key, meta))
  }

  blobWriterAsync(key: Uint8Array, meta: Uint8Array): Promise<BlobSink> {
    return runAsync(this.blobWriterG(key, meta))
  }

  private *openBlobG(key: Uint8Array): Handler<BlobSource | undefined> {
    const f = yield* this.openHeadG(this.filePath(key), HEAD_READ, key)
    if (!f) return undefined
    try {
      const { header } = f.head
      const codec = this.codec.readCodec(header, key)
      const meta: RawMeta = { key: f.head.key, serializer: header.serializer, meta: f.head.meta, file: f.file }
      const plain = header.compressor === 0 && header.encryptor === 0 ? { file: f.file, offset: f.valueStart } : undefined
      if (header.serializer !== RAW_BYTES_ID || isLogHeader(header)) {
        const what = isLogHeader(header) ? 'an append log' : `a value of serializer ${header.serializer}`
        throw new KonserveError('ERR_NOT_BINARY', `the key holds ${what}, not a blob`, { file: f.file })
      }
      if (header.flags === FLAG_CHUNKED) {
        let layout: BlobLayout
        try {
          layout = yield* readBlobLayout(fileReader(f), header, f.valueStart)
        } catch (err) {
          throw ioError(err, 'cannot read the blob', f.file)
        }
        return new PureBlobSource(f.fd, f.file, codec, layout, meta, plain)
      }
      // A blob written whole (flags 0), as before chunking: served from its value, read here.
      let value: Uint8Array
      try {
        const stored = f.prefix.length >= f.size ? f.prefix.subarray(f.valueStart) : yield* preadG(f.fd, f.valueStart, f.size - f.valueStart)
        value = yield* decodeValueSegment(codec, header, stored)
      } catch (err) {
        throw ioError(err, 'cannot decode the key file', f.file)
      }
      closeQuietly(f.fd)
      return new PureBlobSource(undefined, f.file, codec, { size: value.length, chunks: [] }, meta, plain, value)
    } catch (err) {
      closeQuietly(f.fd)
      throw err
    }
  }

  openBlobSync(key: Uint8Array): BlobSource | undefined {
    return runSync(this.openBlobG(key))
  }

  openBlobAsync(key: Uint8Array): Promise<BlobSource | undefined> {
    return runAsync(this.openBlobG(key))
  }

  // ---- staging files for blobs and logs ----------------------------------------------------

  /** Creates a new staging file for `key` (O_EXCL), registered as in flight. */
  private *createStagingG(key: Uint8Array): Handler<Staging> {
    const stage = this.stagingPath(key)
    PureFileBacking.inFlight.add(stage)
    try {
      return { stage, fd: yield* io.open(stage, 'wx', 0o644), open: true }
    } catch (err) {
      PureFileBacking.inFlight.delete(stage)
      throw ioError(err, 'cannot create a staging file', stage)
    }
  }

  /** fsync (when durable), close, rename over `target`, fsync the directory (when durable). */
  *commitStagingG(staging: Staging, target: string): Handler<void> {
    this.checkWritable()
    if (this.options.syncBlob) {
      try {
        yield* io.fsync(staging.fd)
      } catch (err) {
        throw this.fsyncFailed(err, 'cannot fsync a staging file', staging.stage)
      }
    }
    staging.open = false
    try {
      yield* io.close(staging.fd)
    } catch (err) {
      throw ioError(err, 'cannot close a staging file', staging.stage)
    }
    try {
      yield* io.rename(staging.stage, target)
    } catch (err) {
      throw ioError(err, 'cannot rename a staging file over the key file', target)
    }
    PureFileBacking.inFlight.delete(staging.stage)
    if (this.options.syncBlob) {
      try {
        yield* io.syncDir(this.dir)
      } catch (err) {
        throw this.fsyncFailed(err, 'cannot fsync the store directory', this.dir)
      }
    }
  }

  /** Closes and removes a staging file that will not be committed (idempotent). */
  dropStaging(staging: Staging): void {
    if (staging.open) {
      staging.open = false
      closeQuietly(staging.fd)
    }
    if (PureFileBacking.inFlight.has(staging.stage)) {
      try {
        fs.unlinkSync(staging.stage)
      } catch {
        // It may be gone already.
      }
      PureFileBacking.inFlight.delete(staging.stage)
    }
  }

  /** Writes a whole new file for `key` from `parts` through a staging file (FORMAT.md §5). */
  private *writeNewFileG(key: Uint8Array, parts: Uint8Array[]): Handler<void> {
    const staging = yield* this.createStagingG(key)
    try {
      let pos = 0
      for (const p of parts) {
        try {
          yield* writeAllG(staging.fd, p, pos)
        } catch (err) {
          throw ioError(err, 'cannot write a staging file', staging.stage)
        }
        pos += p.length
      }
      yield* this.commitStagingG(staging, this.filePath(key))
    } finally {
      this.dropStaging(staging)
    }
  }

  // ---- append logs (FORMAT.md §4.6) -------------------------------------------------------

  /** The head of the log file at `key` opened with `flags`, checked to be a log, and its layout; undefined when missing. */
  private *openLogFileG(key: Uint8Array, flags: 'r' | 'r+'): Handler<(OpenKeyFile & { layout: LogLayout }) | undefined> {
    const f = yield* this.openHeadG(this.filePath(key), HEAD_READ, key, undefined, flags)
    if (!f) return undefined
    try {
      if (!isLogHeader(f.head.header)) {
        throw new KonserveError('ERR_NOT_A_LOG', 'the key holds something other than an append log', { file: f.file })
      }
      checkLogHeader(f.head.header)
      const codec = this.codec.readCodec(f.head.header, key)
      const layout = yield* openLogLayout(bufferedReader(fileReader(f)), f.head.header, f.prefix, codec, f.size)
      return { ...f, layout }
    } catch (err) {
      closeQuietly(f.fd)
      throw ioError(err, 'cannot read the log', f.file)
    }
  }

  /**
   * Writes `key`'s file whole through a staging file (FORMAT.md §5): what
   * `produce` writes to the sink, then fsync, rename, directory fsync.
   * `rekey` re-encodes logs this way.
   */
  *replaceFileG(key: Uint8Array, produce: (sink: LogSink) => Handler<void>): Handler<void> {
    const staging = yield* this.createStagingG(key)
    try {
      const sink = this.logSink(staging)
      yield* produce(sink)
      yield* sink.flush()
      remember(this.logId(key), undefined)
      yield* this.commitStagingG(staging, this.filePath(key))
    } finally {
      this.dropStaging(staging)
    }
  }

  /** A sink that writes a whole log into a staging file (the commit area last, at its place). */
  private logSink(staging: Staging): LogSink & { flush(): Handler<void> } {
    const out = new StagingWriter(staging)
    return {
      write: (bytes) => out.write(bytes),
      *writeAt(bytes, pos) {
        yield* out.flush()
        try {
          yield* writeAllG(staging.fd, bytes, pos)
        } catch (err) {
          throw ioError(err, 'cannot write a staging file', staging.stage)
        }
      },
      flush: () => out.flush(),
    }
  }

  /**
   * Writes a whole log for `key` through a staging file (FORMAT.md §5): a
   * new log, a trim, or the migration of a log of the earlier layout
   * (format/log.ts writeLogWhole). Remembers the new file as verified.
   */
  private *writeLogG(
    key: Uint8Array,
    codec: SegmentCodec,
    metaStored: Uint8Array,
    src: (OpenKeyFile & { layout: LogLayout }) | undefined,
    keepFrom: number,
    extra: NewRecord[],
  ): Handler<LogInfo> {
    const id = this.logId(key)
    const staging = yield* this.createStagingG(key)
    try {
      const sink = this.logSink(staging)
      let written: { info: LogInfo; commit: Commit }
      try {
        const source = src && { read: bufferedReader(fileReader(src)), layout: src.layout, fileLength: src.size }
        written = yield* writeLogWhole(sink, codec, metaStored, source, keepFrom, extra)
      } catch (err) {
        throw ioError(err, 'cannot read the log', src?.file ?? this.filePath(key))
      }
      yield* sink.flush()
      remember(id, undefined)
      yield* this.commitStagingG(staging, this.filePath(key))
      remember(id, { metaChecksum: xxh3_64(metaStored), commit: written.commit })
      return written.info
    } finally {
      this.dropStaging(staging)
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
  private *appendG(key: Uint8Array, records: NewRecord[], createMeta: Uint8Array): Handler<LogInfo> {
    this.checkWritable()
    if (!Array.isArray(records) || records.length === 0) {
      throw new KonserveError('ERR_INVALID_ARGUMENT', 'an append takes at least one record')
    }
    const id = this.logId(key)
    const last = records[records.length - 1]!
    const f = yield* this.openLogFileG(key, 'r+')
    if (!f) {
      // A new log: its meta segment and records 0, 1, ..., as a whole new file.
      const codec = this.codec.writeCodec(key)
      const metaStored = yield* encodeMetaSegment(codec, key, createMeta)
      yield* encodeRecords(codec, 0, records) // a record that cannot be stored fails before the staging file
      return yield* this.writeLogG(key, codec, metaStored, undefined, 0, records)
    }
    try {
      const codec = this.codec.readCodec(f.head.header, key)
      const metaStored = f.prefix.subarray(HEADER_LEN, f.valueStart)
      const commit = f.layout.commit
      // The earlier layout: rewritten in the current one, the new records after the old.
      if (!commit) return yield* this.writeLogG(key, codec, metaStored, f, 0, records)
      let at: LogInfo
      try {
        const read = bufferedReader(fileReader(f))
        const known = verifiedLogs.get(id)
        if (known && known.metaChecksum === f.head.header.metaChecksum && sameCommit(known.commit, commit)) {
          at = yield* readLogInfo(read, f.head.header, f.prefix, codec, f.size)
        } else {
          const scan = yield* scanLog(read, f.layout, f.size)
          at = logInfoOf(scan)
        }
      } catch (err) {
        throw ioError(err, 'cannot read the log', f.file)
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
      const fsync = function* (this: PureFileBacking): Handler<void> {
        if (!this.options.syncBlob) return
        try {
          yield* io.fsync(f.fd)
        } catch (err) {
          throw this.fsyncFailed(err, 'cannot fsync the log', f.file)
        }
      }.bind(this)
      // Forgotten first: if a write fails halfway, the next append looks at the file again.
      remember(id, undefined)
      const write = function* (bytes: Uint8Array, pos: number): Handler<void> {
        try {
          yield* writeAllG(f.fd, bytes, pos)
        } catch (err) {
          throw ioError(err, 'cannot append to the log', f.file)
        }
      }
      if (!f.layout.bValid) {
        // A crash while slot B was written: B gets A's commit, durably, before A is written again.
        yield* write(yield* encodeCommitSlot(commit, codec, metaStored), slotB)
        yield* fsync()
      }
      if (commit.end < f.size) {
        // The torn tail of an append that never returned.
        try {
          yield* io.truncate(f.fd, commit.end)
        } catch (err) {
          throw ioError(err, 'cannot cut the torn tail of the log', f.file)
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
      closeQuietly(f.fd)
    }
  }

  /** The key's entry in the verified-logs memory. */
  private logId(key: Uint8Array): string {
    return `${this.dir}\0${this.codec.fileName(key)}`
  }

  appendSync(key: Uint8Array, records: NewRecord[], createMeta: Uint8Array): LogInfo {
    return runSync(this.appendG(key, records, createMeta))
  }

  appendAsync(key: Uint8Array, records: NewRecord[], createMeta: Uint8Array): Promise<LogInfo> {
    return runAsync(this.appendG(key, records, createMeta))
  }

  private *openLogG(key: Uint8Array): Handler<LogCursor | undefined> {
    const f = yield* this.openLogFileG(key, 'r')
    if (!f) return undefined
    const reader = new LogReader(fileReader(f), this.codec.readCodec(f.head.header, key), f.layout, f.size)
    return new PureLogCursor(f.fd, f.file, reader)
  }

  openLogSync(key: Uint8Array): LogCursor | undefined {
    return runSync(this.openLogG(key))
  }

  openLogAsync(key: Uint8Array): Promise<LogCursor | undefined> {
    return runAsync(this.openLogG(key))
  }

  private *trimLogG(key: Uint8Array, keepFrom: number, meta: Uint8Array): Handler<LogInfo> {
    this.checkWritable()
    const f = yield* this.openLogFileG(key, 'r')
    if (!f) return { firstIndex: 0, lastIndex: -1, lastStamp: 0 }
    try {
      // The records are copied as they are (their MAC binds the key and their
      // index, not the file), so the new file keeps the old file's codec.
      const codec = this.codec.readCodec(f.head.header, key)
      const metaStored = yield* encodeMetaSegment(codec, key, meta)
      return yield* this.writeLogG(key, codec, metaStored, f, keepFrom, [])
    } finally {
      closeQuietly(f.fd)
    }
  }

  trimLogSync(key: Uint8Array, keepFrom: number, meta: Uint8Array): LogInfo {
    return runSync(this.trimLogG(key, keepFrom, meta))
  }

  trimLogAsync(key: Uint8Array, keepFrom: number, meta: Uint8Array): Promise<LogInfo> {
    return runAsync(this.trimLogG(key, keepFrom, meta))
  }

  // ---- cross-process locks (docs/FORMAT.md §6, ./file-lock.ts) -------------------

  private readonly locker: FileLocker
  /** The records of the locks this store holds, by lock file hex. */
  private readonly heldLocks = new Map<string, LockRecord>()

  private get lockTimeoutMs(): number {
    return this.options.lockTimeoutMs ?? 60_000
  }

  /** The lock file hexes of `keys`, sorted (the order every holder takes them in) and unique. */
  private lockHexes(keys: Uint8Array[]): string[] {
    return [...new Set(keys.map((k) => this.codec.fileName(k).slice(0, 32)))].sort()
  }

  /** Takes every key's lock or none: the holder of the first busy one, or undefined when all are taken. */
  private tryLockHexes(hexes: string[]): { busy: string; holder: LockRecord | undefined } | undefined {
    const taken: string[] = []
    for (const hex of hexes) {
      let attempt
      try {
        attempt = this.locker.tryAcquire(hex)
      } catch (err) {
        this.releaseHexes(taken, false)
        throw ioError(err, "cannot take a key's lock", this.locker.lockPath(hex), lockErrorCode(err))
      }
      if ('busy' in attempt) {
        this.releaseHexes(taken, false)
        return { busy: hex, holder: attempt.busy }
      }
      this.heldLocks.set(hex, attempt.taken)
      taken.push(hex)
    }
    return undefined
  }

  tryLock(keys: Uint8Array[], waitedMs?: number): boolean {
    const busy = this.tryLockHexes(this.lockHexes(keys))
    if (!busy) return true
    if (waitedMs !== undefined && waitedMs >= this.lockTimeoutMs) {
      throw lockTimeoutError(this.locker.lockPath(busy.busy), busy.holder, this.lockTimeoutMs)
    }
    return false
  }

  lockSync(keys: Uint8Array[]): void {
    // Blocks the thread, as a sync call must; waits grow from 0.2 ms to 8 ms between polls.
    const hexes = this.lockHexes(keys)
    const wait = new Int32Array(new SharedArrayBuffer(4))
    const start = performance.now()
    for (let pause = 0.2; ; pause = Math.min(pause * 2, 8)) {
      const busy = this.tryLockHexes(hexes)
      if (!busy) return
      if (performance.now() - start >= this.lockTimeoutMs) {
        throw lockTimeoutError(this.locker.lockPath(busy.busy), busy.holder, this.lockTimeoutMs)
      }
      Atomics.wait(wait, 0, 0, pause)
    }
  }

  unlock(keys: Uint8Array[]): void {
    this.releaseHexes(this.lockHexes(keys), true)
  }

  /** Releases every lock of `hexes`; with `report`, throws the first failure (after releasing the rest). */
  private releaseHexes(hexes: string[], report: boolean): void {
    let first: KonserveError | undefined
    for (const hex of hexes) {
      const rec = this.heldLocks.get(hex)
      if (!rec) continue
      this.heldLocks.delete(hex)
      try {
        this.locker.release(hex, rec.token)
      } catch (err) {
        first ??= ioError(err, "cannot release a key's lock", this.locker.lockPath(hex), lockErrorCode(err))
      }
    }
    if (first && report) throw first
  }
}

/** Writes a staging file in order, through a 1 MiB buffer. */
class StagingWriter {
  private readonly buf = new Uint8Array(1 << 20)
  private fill = 0
  private pos = 0

  constructor(private readonly staging: Staging) {}

  *write(bytes: Uint8Array): Handler<void> {
    if (this.fill + bytes.length > this.buf.length) yield* this.flush()
    if (bytes.length >= this.buf.length) {
      yield* this.writeAt(bytes)
      return
    }
    this.buf.set(bytes, this.fill)
    this.fill += bytes.length
  }

  /** How many bytes were written, buffered ones included. */
  get length(): number {
    return this.pos + this.fill
  }

  *flush(): Handler<void> {
    if (this.fill === 0) return
    const fill = this.fill
    this.fill = 0
    yield* this.writeAt(this.buf.subarray(0, fill))
  }

  private *writeAt(bytes: Uint8Array): Handler<void> {
    try {
      yield* writeAllG(this.staging.fd, bytes, this.pos)
    } catch (err) {
      throw ioError(err, 'cannot write a staging file', this.staging.stage)
    }
    this.pos += bytes.length
  }
}

const closedError = (what: string) => new KonserveError('ERR_INVALID_ARGUMENT', what)

/**
 * A blob being streamed to a staging file: 48 placeholder bytes and the meta
 * segment (written on creation), each chunk as it fills, the table and the
 * trailer, then the real header at offset 0, fsync, rename, directory fsync.
 * Holds one chunk in memory. Any failure, or abort, removes the staging file.
 */
class PureBlobSink implements BlobSink {
  private state: 'open' | 'committed' | 'dropped' = 'open'
  private busy = false
  private readonly encoder: ChunkedEncoder
  private pos: number
  private readonly sink: ChunkSink

  constructor(
    private readonly store: PureFileBacking,
    private readonly staging: Staging,
    private readonly target: string,
    private readonly codec: SegmentCodec,
    private readonly metaStored: Uint8Array,
  ) {
    this.encoder = new ChunkedEncoder(codec)
    this.pos = HEADER_LEN + metaStored.length
    const self = this
    this.sink = function* (stored) {
      if (self.state !== 'open') throw closedError('the blob writer was aborted')
      try {
        yield* writeAllG(staging.fd, stored, self.pos)
      } catch (err) {
        throw ioError(err, 'cannot write a staging file', staging.stage)
      }
      self.pos += stored.length
    }
  }

  private *guard(op: () => Handler<void>): Handler<void> {
    if (this.state !== 'open') {
      throw closedError(this.state === 'committed' ? 'the blob is already committed' : 'the blob writer was aborted or has failed')
    }
    if (this.busy) throw closedError('another call on this blob writer is in progress')
    this.busy = true
    try {
      yield* op()
    } catch (err) {
      this.state = 'dropped'
      throw err
    } finally {
      this.busy = false
      // Also after an abort that came while this call ran: its file descriptor was in use.
      if (this.state === 'dropped') this.store.dropStaging(this.staging)
    }
  }

  private *writeG(bytes: Uint8Array): Handler<void> {
    yield* this.guard(() => this.encoder.write(bytes, this.sink))
  }

  private *commitG(): Handler<void> {
    const self = this
    yield* this.guard(function* () {
      const tail = yield* self.encoder.finish(self.sink)
      yield* self.sink(tail)
      const header = blobHeader(self.codec, self.metaStored, self.encoder.valueLength, tail)
      try {
        yield* writeAllG(self.staging.fd, header, 0)
      } catch (err) {
        throw ioError(err, 'cannot write a staging file', self.staging.stage)
      }
      yield* self.store.commitStagingG(self.staging, self.target)
      self.state = 'committed'
    })
  }

  writeSync(bytes: Uint8Array): void {
    runSync(this.writeG(bytes))
  }

  write(bytes: Uint8Array): Promise<void> {
    return runAsync(this.writeG(bytes))
  }

  commitSync(): void {
    runSync(this.commitG())
  }

  commit(): Promise<void> {
    return runAsync(this.commitG())
  }

  abort(): void {
    if (this.state !== 'open') return
    this.state = 'dropped'
    if (!this.busy) this.store.dropStaging(this.staging)
  }
}

/**
 * An open blob: the file descriptor keeps the file as it was opened. Reads
 * take only the chunks they overlap, each checked before any byte is
 * returned; the last chunk read is kept for the next read.
 */
class PureBlobSource implements BlobSource {
  readonly size: number
  private cached: { index: number; plain: Uint8Array } | undefined
  private closed = false
  private reading = 0

  constructor(
    private fd: number | undefined,
    private readonly file: string,
    private readonly codec: SegmentCodec,
    private readonly layout: BlobLayout,
    readonly meta: RawMeta,
    readonly plain: { file: string; offset: number } | undefined,
    /** The whole blob, for a blob stored as one value. */
    private readonly whole?: Uint8Array,
  ) {
    this.size = whole ? whole.length : layout.size
  }

  private *chunkG(i: number): Handler<Uint8Array> {
    if (this.cached?.index === i) return this.cached.plain
    let plain: Uint8Array
    try {
      plain = yield* readChunk(fdReader(this.fd!), this.codec, this.layout, i)
    } catch (err) {
      throw ioError(err, 'cannot read the blob', this.file)
    }
    this.cached = { index: i, plain }
    return plain
  }

  private *readG(offset: number, length: number): Handler<Uint8Array> {
    if (this.closed) throw closedError('the blob is closed')
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw new KonserveError('ERR_INVALID_ARGUMENT', `a blob read takes a non-negative integer offset and length, not ${offset}, ${length}`)
    }
    if (offset > this.size) {
      throw new KonserveError('ERR_INVALID_ARGUMENT', `offset ${offset} is past the end of the blob (${this.size} bytes)`, { file: this.file })
    }
    const end = Math.min(this.size, offset + length)
    if (offset >= end) return new Uint8Array(0)
    if (this.whole) return this.whole.slice(offset, end)
    this.reading++
    try {
      const out = new Uint8Array(end - offset)
      for (let i = Math.floor(offset / CHUNK_SIZE); i * CHUNK_SIZE < end; i++) {
        const plain = yield* this.chunkG(i)
        const from = Math.max(offset, i * CHUNK_SIZE)
        const to = Math.min(end, (i + 1) * CHUNK_SIZE)
        out.set(plain.subarray(from - i * CHUNK_SIZE, to - i * CHUNK_SIZE), from - offset)
      }
      return out
    } finally {
      // A close that came during this read closes the file now.
      if (--this.reading === 0 && this.closed) this.release()
    }
  }

  readSync(offset: number, length: number): Uint8Array {
    return runSync(this.readG(offset, length))
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    return runAsync(this.readG(offset, length))
  }

  /**
   * Fills `target` from `offset` (up to its length; fewer only at the end of
   * the blob) with the checks of `read`. A whole chunk of a blob stored as
   * is goes straight from the file into `target` and is checked there; other
   * chunks are decoded (or taken from the chunk kept from the last read) and
   * copied. On error `target` may hold bytes that were not checked.
   */
  private *readIntoG(offset: number, target: Uint8Array): Handler<number> {
    if (this.closed) throw closedError('the blob is closed')
    if (!Number.isSafeInteger(offset) || offset < 0 || !(target instanceof Uint8Array)) {
      throw new KonserveError('ERR_INVALID_ARGUMENT', `a blob read takes a non-negative integer offset and a Uint8Array, not ${offset}, ${String(target)}`)
    }
    if (offset > this.size) {
      throw new KonserveError('ERR_INVALID_ARGUMENT', `offset ${offset} is past the end of the blob (${this.size} bytes)`, { file: this.file })
    }
    const n = Math.min(target.length, this.size - offset)
    if (n === 0) return 0
    if (this.whole) {
      target.set(this.whole.subarray(offset, offset + n))
      return n
    }
    const end = offset + n
    const direct = this.codec.compressor === 0 && this.codec.encryptor === 0
    const count = this.layout.chunks.length
    this.reading++
    try {
      for (let i = Math.floor(offset / CHUNK_SIZE); i * CHUNK_SIZE < end; i++) {
        const base = i * CHUNK_SIZE
        const from = Math.max(offset, base)
        const to = Math.min(end, base + CHUNK_SIZE)
        const dst = target.subarray(from - offset, to - offset)
        const entry = this.layout.chunks[i]!
        const whole = from === base && to - base === chunkPlainLength(this.size, count, i)
        if (direct && whole && entry.length === dst.length && this.cached?.index !== i) {
          try {
            const got = yield* preadIntoG(this.fd!, dst, entry.offset)
            if (got !== dst.length) throw new KonserveError('ERR_CORRUPT', `the file ends inside chunk ${i}`)
            checkStoredChunk(this.layout, i, dst)
          } catch (err) {
            throw ioError(err, 'cannot read the blob', this.file)
          }
          continue
        }
        const plain = yield* this.chunkG(i)
        dst.set(plain.subarray(from - base, to - base))
      }
      return n
    } finally {
      if (--this.reading === 0 && this.closed) this.release()
    }
  }

  readInto(offset: number, target: Uint8Array): Promise<number> {
    return runAsync(this.readIntoG(offset, target))
  }

  private release(): void {
    const fd = this.fd
    this.fd = undefined
    this.cached = undefined
    closeQuietly(fd)
  }

  close(): void {
    this.closed = true
    if (this.reading === 0) this.release()
  }
}

/** A log's records in batches (format/log.ts LogReader over the open file); closes the file at the end. */
class PureLogCursor implements LogCursor {
  private closed = false
  private busy = false

  constructor(
    private fd: number | undefined,
    private readonly file: string,
    private readonly reader: LogReader,
  ) {}

  private *nextG(max: number): Handler<LogRecord[] | undefined> {
    if (this.closed) return undefined
    if (this.busy) throw closedError('another read of this log cursor is in progress')
    this.busy = true
    let batch: LogRecord[] | undefined
    try {
      batch = yield* this.reader.next(max)
    } catch (err) {
      this.closed = true
      throw ioError(err, 'cannot read the log', this.file)
    } finally {
      this.busy = false
      if (this.closed) this.release()
    }
    // Done: the file is not needed any more, even if the caller never asks again.
    if (!batch || this.reader.finished) this.close()
    return batch
  }

  nextSync(max: number): LogRecord[] | undefined {
    return runSync(this.nextG(max))
  }

  next(max: number): Promise<LogRecord[] | undefined> {
    return runAsync(this.nextG(max))
  }

  private release(): void {
    const fd = this.fd
    this.fd = undefined
    closeQuietly(fd)
  }

  close(): void {
    this.closed = true
    this.reader.close()
    if (!this.busy) this.release()
  }
}

/** Deletes a store's konserve files, then the directory if nothing else is in it. */
export function deleteStorePure(path: string): void {
  // A store path that is a symbolic link names the directory it points to
  // (resolved once, as open does): that directory's store files are deleted,
  // and the link and the directory stay (as the core's delete_store does).
  let dir = path
  let link = false
  try {
    link = fs.lstatSync(path, { throwIfNoEntry: false })?.isSymbolicLink() ?? false
    if (link) dir = fs.realpathSync(path)
  } catch (err) {
    if (isMissing(err)) return
    throw ioError(err, 'cannot resolve the store directory', path)
  }
  let names: string[]
  try {
    names = fs.readdirSync(dir)
  } catch (err) {
    if (isMissing(err)) return
    throw ioError(err, 'cannot list the store directory', dir)
  }
  let foreign = false
  for (const name of names) {
    if (KEY_FILE.test(name) || STAGING.test(name) || name === LOCK_FILE || name === CLOCK_FILE || name === KEY_CHECK_FILE || name === REKEY_FILE || LOCK_NAME.test(name)) {
      try {
        fs.unlinkSync(join(dir, name))
      } catch (err) {
        if (!isMissing(err)) throw ioError(err, 'cannot delete a store file', join(dir, name))
      }
    } else {
      foreign = true
    }
  }
  if (!foreign && !link) {
    try {
      fs.rmdirSync(dir)
    } catch (err) {
      if (!isMissing(err)) throw ioError(err, 'cannot remove the store directory', dir)
    }
  }
}
