/**
 * The file store in pure TypeScript (crates/core/src/store.rs): the same files
 * as the Rust core (docs/FORMAT.md), for platforms with no prebuilt binary,
 * or when asked for with `{ native: false }` / `KONSERVE_NATIVE=0`.
 *
 * Each operation of the Backing (../../backing/seam.ts) is written once, as a
 * generator over the file-system operations of ./vfs.ts: run blocking
 * (`op.sync`) it makes `fs.*Sync` calls, run as a Promise (`op.async`) the
 * same calls on the libuv threadpool. Two hot reads also have plain code for
 * their common case (getValue, a listing's plainListed: a plain file read
 * whole in one read, no generators) and leave everything else to the general
 * generators (__test__/pure-get-fast.spec.ts). The modules below it mirror the core's:
 *
 *   store.ts     open, get, getMeta, exists, put, delete, list, locks
 *   blob.ts      streamed blobs          log.ts       append logs
 *   keyfile.ts   a key file's head       keycheck.ts  the key check on open
 *   staging.ts   the one durable write   clock.ts     the lastWrite record
 *   filelock.ts  cross-process locks     vfs.ts       system calls, errno → code
 *
 * Writes: a unique staging file, written whole, fsynced, renamed over the key
 * file, then one fsync of the directory (./staging.ts); a failed fsync
 * poisons the store until it is reopened. Concurrent async puts are group
 * commits (one directory fsync per batch). Locks: the lock files of
 * docs/FORMAT.md §6 (./filelock.ts), the core's protocol, so pure and native
 * processes exclude each other on one directory.
 *
 * The write-ahead log (docs/WAL.md, ./wal.ts), when the store has its marker
 * (a version-2 key check): every read consults the log first; puts whose key
 * file is at most 16 KiB and deletes are records of one frame; large values,
 * blobs, append logs and trims go to key files after the key's logged value
 * is moved into its file (Wal.flushKey); listings merge the log. The same
 * steps as the core's store.rs, so native and pure processes share the log.
 * Blocking and async calls mix freely on one store instance: the log's
 * work under its lock runs synchronously in both forms (./wal.ts underLog),
 * so a blocking call never finds it held by an async one.
 */
import gensync, { type Handler } from 'gensync'
import * as fs from 'node:fs'
import { dirname, join, relative, sep } from 'node:path'
import { type LogInfo, type NewRecord, type RawCorrupt, type RawEntry, type RawListing, type RawMeta, type RawReplace, type RawValue, type RawWrite, REPLACE_BUSY, REPLACE_MISMATCH, REPLACE_UNSURE } from '../../backing/index.js'
import { type Backing, type BlobSink, type BlobSource, type ListCursor, type LogCursor, type LogWriter, MISS, type Op, blockingOp, pollingLock, twinOp } from '../../backing/seam.js'
import { GroupCommit } from '../../backing/group-commit.js'
import { KonserveError } from '../../errors.js'
import { FLAG_CHUNKED, decodePlainHead, decodePlainValue, decodeValueSegment, isLogHeader } from '../../format/file.js'
import { decodeChunkedValue } from '../../format/blob.js'
import type { LogSink } from '../../format/log.js'
import { KEY_CHECK_FILE, REKEY_FILE, WAL_LOCKFREE_VERSION } from '../../format/keycheck.js'
import { decodeMeta } from '../../format/meta.js'
import { MAX_FRAME, RECORD_HEAD, WAL_DELETE, WAL_FILE as WAL_FILE_OP, WAL_FILE_NAME, WAL_PUT, frameLen, type NewWalRecord } from '../../format/wal.js'
import * as blob from './blob.js'
import { CLOCK_FILE, FileClock } from './clock.js'
import type { PureCodec } from './codec.js'
import { FileLocker, LOCK_NAME, lockErrorCode, lockTimeoutError, type LockRecord, releaseError } from './filelock.js'
import { checkStoreKey, removeWalMarker, writeWalMarker } from './keycheck.js'
import { DIRECT_VOLUME, DirectBlobs } from './direct.js'
import { GET_READ, HEAD_READ, KEY_FILE, type KeyFiles, type OpenKeyFile, fileReader, isWhole, openKeyFile, storedValue } from './keyfile.js'
import * as log from './log.js'
import { STAGING, type Staged, StagingDir, SweepAgain, readOnlyError, stagingName } from './staging.js'
import * as vfs from './vfs.js'
import * as warm from './warm.js'
import { DEFAULT_VALUE_CACHE_BYTES, HeldValues, readStart } from './held.js'
import { IDLE_CHECKPOINT_MS, Wal, recordHash } from './wal.js'
import { toHex } from '../../codec/xxhash.js'

export { forgetVerifiedLogs } from './log.js'

const LOCK_FILE = '.konserve.lock'
/** How many staging files of one batch of puts are written and fsynced at once (async form). */
const STAGING_CONCURRENCY = 16

/** A put whose key file is at most this long is a record of the write-ahead log (the core's WAL_MAX_RECORD). */
export const WAL_MAX_RECORD = 16 * 1024
/** A write that leaves more than this many bytes of frames in the log runs a checkpoint before it returns (the core's WAL_CHECKPOINT_BYTES). */
export const WAL_CHECKPOINT_BYTES = 16 * 1024 * 1024

export interface PureFileOptions {
  syncBlob: boolean
  /** How long a lock waits for another holder (default 60000). */
  lockTimeoutMs?: number
  /** The store's encryption key: checked against the store's key check on open (FORMAT.md §4.7). */
  encryptionKey?: Uint8Array
  /** With the log: its idle checkpoint's delay in ms (default IDLE_CHECKPOINT_MS, 100; 0: none). */
  walIdleCheckpointMs?: number
  /** With a key: a store with plaintext files opens (a migration to encryption). */
  acceptPlaintext?: boolean
  /**
   * Open read-only: no directory created, no staging sweep, no key check or
   * clock written, no lock taken; every write and lock fails with ERR_READ_ONLY.
   */
  readOnly?: boolean
  /** Skip the key check on open: for `rekey` only, which does its own. */
  skipKeyCheck?: boolean
  /** Large durable blobs written direct (./direct.ts), as the core's `direct_blobs`: false never; default on. */
  directBlobs?: boolean
  /** The value cache's budget (./held.ts), as the core's `value_cache_bytes`: default 4 MiB, 0 turns it off. */
  valueCacheBytes?: number
  /** Direct only past this many bytes of durable blobs in the last 10-20 s (default DIRECT_VOLUME; 0 with `directBlobs: true`). */
  directBlobsVolume?: number
  /**
   * The write-ahead log (docs/WAL.md, experimental), as the core's
   * `Options::wal`: true upgrades a store without the marker on a writable
   * open (a stale `.konserve.wal` removed, a new log created, then the
   * version-3 key check written, docs/WAL.md §4.1); false downgrades a store with it (a full
   * checkpoint, the marker removed, then the log removed); absent changes
   * nothing. A store with the marker uses the log whatever this says.
   */
  wal?: boolean
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
  return vfs.ioError(err, 'cannot open the store directory', dir)
}

/**
 * Opens the store in `dir` (created if needed, canonical path): sweeps dead
 * writers' staging files and lock leftovers, checks the store's key.
 */
export const openPureStore = gensync(function* (dir: string, codec: PureCodec, options: PureFileOptions): Handler<PureFileBacking> {
  try {
    if (!options.readOnly) {
      const first = yield* vfs.mkdirAll(dir)
      if (options.syncBlob) for (const parent of parentsOfNewDirs(first, dir)) yield* vfs.syncDir(parent)
    }
    const real = yield* vfs.realpath(dir)
    const store = new PureFileBacking(real, codec, options)
    let sweepDue: number | undefined
    if (!options.readOnly) {
      const names = yield* vfs.readdir(real)
      // Lock temp files and takeover markers nobody can use any more, too.
      const swept = store.staging.sweep(names)
      if (store.locker.sweep(names) || swept.removed) yield* store.staging.syncDir()
      sweepDue = swept.dueMs
    }
    if (!options.skipKeyCheck) {
      const marker = yield* checkStoreKey(store.staging, { secret: options.encryptionKey, acceptPlaintext: options.acceptPlaintext })
      store.wal = yield* openWal(store, marker, options)
      // A version-3 store (docs/WAL.md §4.1): replaces without key lock files, locked writers pass through the log lock.
      if (store.wal && (marker === 0 || marker >= WAL_LOCKFREE_VERSION)) store.enableLockFree()
    }
    // Armed only for a store that opened: a failed open leaves no timer behind.
    store.sweepAgain.arm(sweepDue)
    return store
  } catch (err) {
    throw openError(err, dir)
  }
})

/**
 * The staging sweep of a store after its open (SweepAgain), of the files from
 * elsewhere alone: when the next one is due, if one is. No directory fsync:
 * the removal of leftovers need not be durable, and a failed fsync here must
 * not poison the store behind its user's back.
 */
const resweep = async (staging: StagingDir): Promise<number | undefined> => staging.sweep(await vfs.readdir.async(staging.dir), true).dueMs

/** The options of the store's log. */
const walOptions = (store: PureFileBacking, options: PureFileOptions) => ({
  // The idle checkpoint's delay (docs/WAL.md §5); 0 turns it off.
  idleCheckpointMs: options.walIdleCheckpointMs ?? IDLE_CHECKPOINT_MS,
  syncBlob: options.syncBlob,
  lockTimeoutMs: options.lockTimeoutMs,
  codec: store.codec,
  staging: store.staging,
  readOnly: options.readOnly === true,
})

/**
 * Appends `records` in as few frames as hold them, one after the other (the
 * core's `append_in_frames`): a batch larger than one frame (MAX_FRAME) is
 * durable frame by frame, as a batch of key files is durable file by file
 * (each key atomic, the batch not); a batch that fits is one frame.
 */
function* appendInFrames(wal: Wal, records: NewWalRecord[]): Handler<void> {
  // A frame's length depends only on the sum of its records' heads and payloads.
  const lenOf = (body: number) => frameLen([body - RECORD_HEAD])
  let start = 0
  while (start < records.length) {
    let body = RECORD_HEAD + records[start]!.payload.length
    let end = start + 1
    while (end < records.length && lenOf(body + RECORD_HEAD + records[end]!.payload.length) <= MAX_FRAME) {
      body += RECORD_HEAD + records[end]!.payload.length
      end++
    }
    yield* wal.append(records.slice(start, end))
    start = end
  }
}

/** Removes `.konserve.wal` if there is one, durably. */
function* removeWalFile(store: PureFileBacking): Handler<void> {
  if (!(yield* store.staging.remove(join(store.dir, WAL_FILE_NAME), 'cannot remove the write-ahead log'))) yield* store.staging.syncDir()
}

/**
 * The write-ahead log on open (the core's `FileStore::open_wal`): opened when
 * the store has the marker; created, then the marker written, on a writable
 * open with `wal: true` (the upgrade); checkpointed whole, the marker
 * removed, then the log removed, with `wal: false` (the downgrade).
 */
function* openWal(store: PureFileBacking, marker: number, options: PureFileOptions): Handler<Wal | undefined> {
  const writable = options.readOnly !== true
  if (!marker) {
    if (!(options.wal === true && writable)) return undefined
    // A log without the marker is not this store's (a crash during an
    // upgrade or a downgrade, an old build's deleteStore): a new one replaces it.
    yield* removeWalFile(store)
    const wal = yield* Wal.open(store.dir, walOptions(store, options))
    try {
      yield* writeWalMarker(store.staging)
    } catch (err) {
      wal.close.sync()
      throw err
    }
    return wal
  }
  const wal = yield* Wal.open(store.dir, walOptions(store, options))
  if (!(options.wal === false && writable)) return wal
  try {
    yield* checkpointAll(wal, options.lockTimeoutMs ?? 60_000)
    yield* removeWalMarker(store.staging)
  } finally {
    wal.close.sync()
  }
  yield* removeWalFile(store)
  return undefined
}

/** A pause between checkpoint attempts: blocking, or a timer. */
const pauseMs = gensync({
  sync: (ms: number): void => {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
  },
  async: (ms: number) => new Promise<void>((r) => setTimeout(r, ms)),
})

/** Checkpoints `wal` until it is empty (another process's checkpoint, or appends meanwhile, mean another turn), up to `timeoutMs` (the core's `checkpoint_all`). */
function* checkpointAll(wal: Wal, timeoutMs: number): Handler<void> {
  const start = performance.now()
  for (let ms = 0.2; ; ms = Math.min(ms * 2, 8)) {
    if ((yield* wal.checkpoint()) && wal.logBytes() === 0) return
    if (performance.now() - start >= timeoutMs) {
      throw new KonserveError('ERR_LOCK_TIMEOUT', 'the write-ahead log could not be checkpointed whole within the lock timeout', { file: wal.path })
    }
    yield* pauseMs(ms)
  }
}

/** Past this many times WAL_CHECKPOINT_BYTES an async write runs the checkpoint itself (the core's HARD_FACTOR). */
export const WAL_HARD_FACTOR = 4

/** Whether the operation runs in its async form. */
const inAsync = gensync({ sync: () => false, async: () => Promise.resolve(true) })
/** Waits for the log's background checkpoint (async form; the blocking form cannot wait for one). */
const backgroundDone = gensync({ sync: (_wal: Wal): void => {}, async: (wal: Wal) => wal.idle() })

/**
 * After an append: a checkpoint when the log holds more than
 * WAL_CHECKPOINT_BYTES (docs/WAL.md §5). An async write starts it in the
 * background and returns (its Promise does not wait for thousands of key
 * files); past WAL_HARD_FACTOR times that (the background one has fallen
 * behind) it waits for the one running and runs the rest itself
 * (back-pressure). A blocking write runs it (its caller waits anyway, and a
 * background one cannot run while a loop of blocking calls holds the
 * thread). The write is durable already; a failed checkpoint is left for the
 * next one to redo, except a failed fsync, which poisons and is reported to
 * the writer that ran it (the core's `checkpoint_if_full`).
 */
function* checkpointIfFull(wal: Wal): Handler<void> {
  const bytes = wal.logBytes()
  if (bytes <= WAL_CHECKPOINT_BYTES) return
  const async = yield* inAsync()
  if (async && bytes <= WAL_CHECKPOINT_BYTES * WAL_HARD_FACTOR) {
    wal.startCheckpoint()
    return
  }
  if (async) yield* backgroundDone(wal)
  try {
    yield* wal.checkpoint()
  } catch (err) {
    if ((err as KonserveError).code === 'ERR_FSYNC') throw err
  }
}

/**
 * The revision a key with this metadata map is at (not an append log's): its
 * `revision`, 1 when it has none (a file from before revisions); undefined
 * when the map is not one to be sure of (the core's `format::meta::revision`;
 * the caller then leaves the write to the facade's general path).
 */
function revisionOfMeta(meta: Uint8Array): number | undefined {
  let m: Record<string, unknown>
  try {
    m = decodeMeta('', meta) as Record<string, unknown>
  } catch {
    return undefined
  }
  const r = m.revision
  if (r === undefined) return 1
  return typeof r === 'number' && Number.isInteger(r) && r >= 0 && r <= 0xffffffff ? r : undefined
}

/**
 * `meta` with the revision slot (REVISION_SLOT, 5 bytes) at `at` replaced by
 * `revision` in its shortest MessagePack form, as the facade's encoder writes
 * it (the core's `format::meta::splice_revision`); undefined when the slot is
 * not there or the revision needs more than 32 bits.
 */
function spliceRevision(meta: Uint8Array, at: number, revision: number): Uint8Array | undefined {
  const slot = [0xce, 0xff, 0xff, 0xff, 0xff]
  if (at < 0 || at + 5 > meta.length || slot.some((b, i) => meta[at + i] !== b)) return undefined
  if (!Number.isInteger(revision) || revision < 0 || revision > 0xffffffff) return undefined
  let enc: number[]
  if (revision <= 0x7f) enc = [revision]
  else if (revision <= 0xff) enc = [0xcc, revision]
  else if (revision <= 0xffff) enc = [0xcd, revision >>> 8, revision & 0xff]
  else enc = [0xce, revision >>> 24, (revision >>> 16) & 0xff, (revision >>> 8) & 0xff, revision & 0xff]
  const out = new Uint8Array(meta.length - 5 + enc.length)
  out.set(meta.subarray(0, at))
  out.set(enc, at)
  out.set(meta.subarray(at + 5), at + enc.length)
  return out
}

/** What decodePlainValue found in a file read whole, its value copied out of the read buffer (it is reused). */
function plainValue(b: Uint8Array, key: Uint8Array): RawValue | undefined {
  const d = decodePlainValue(b, key)
  return d && { serializer: d.serializer, value: new Uint8Array(d.value), log: false }
}

/** A RawEntry as getValue answers it. */
const rawValue = (e: RawEntry | undefined): RawValue | undefined => e && { serializer: e.serializer, value: e.value, log: e.log !== undefined }

export class PureFileBacking implements Backing, KeyFiles {
  readonly implementation = 'pure'
  readonly atomicMultiKey = false
  readonly blocking = true
  readonly lockScope: string
  /** The durable writes of this store, and its poison. */
  readonly staging: StagingDir
  readonly directBlobs: DirectBlobs
  /** The store's lastWrite clock (the `.konserve.clock` record), written through `staging`. */
  readonly fileClock: FileClock
  readonly locker: FileLocker
  /** The write-ahead log, when the store has its marker (docs/WAL.md §8). */
  wal: Wal | undefined
  /** A version-3 store on its log (docs/WAL.md §4.1): replaces without key lock files; locked writers pass through the log lock. */
  lockFree = false
  /**
   * The fused replacing write (Backing.replace), on a version-3 store only
   * (docs/WAL.md §4.1): see replaceG. Without it the facade's general path
   * takes the key's lock file for every write.
   */
  replace?: Op<[w: RawReplace], number>

  constructor(
    readonly dir: string,
    readonly codec: PureCodec,
    private readonly options: PureFileOptions,
  ) {
    this.lockScope = `file:${dir}`
    this.dirPrefix = dir.endsWith(sep) ? dir : dir + sep
    const staging = (this.staging = new StagingDir(dir, options.syncBlob, options.readOnly === true))
    // The timer holds the staging directory alone: a store dropped without close can still be collected.
    this.sweepAgain = new SweepAgain(() => resweep(staging))
    this.directBlobs = new DirectBlobs(options.directBlobs !== false, options.directBlobsVolume ?? DIRECT_VOLUME)
    this.locker = new FileLocker(dir)
    this.fileClock = FileClock.openSync(dir, options.syncBlob, this.staging)
    this.held = HeldValues.open(dir, options.valueCacheBytes ?? DEFAULT_VALUE_CACHE_BYTES, this)
  }

  /** The value cache (./held.ts): undefined where it cannot see every change, or turned off. */
  readonly held: HeldValues | undefined

  /**
   * Takes the descriptor of a plain key file getValue just read whole into
   * the value cache. Called before the read: the time it notes is when the
   * read began (HeldValues.hold).
   */
  private readonly holdRead = (file: string) => {
    const readAt = readStart()
    return (fd: number, size: number, v: RawValue | undefined) => v !== undefined && this.held!.hold(file, readAt, fd, size, v.serializer, v.value)
  }

  /** The one-read path on the calling thread (vfs.withWholeSync), the file then held by the value cache. */
  private readPlainSync(file: string, key: Uint8Array): RawValue | typeof vfs.missing | undefined {
    return vfs.withWholeSync(file, GET_READ, isWhole, (b) => plainValue(b, key), this.held && this.holdRead(file))
  }

  /** `dir` and a separator: a key file's path is this and its name (no join to normalize a canonical path on every read). */
  private readonly dirPrefix: string

  filePath(key: Uint8Array): string {
    return this.dirPrefix + this.codec.fileName(key)
  }

  stagingName(key: Uint8Array): string {
    return stagingName(this.codec.fileName(key).slice(0, 32))
  }

  readonly clock: Op<[], number> = blockingOp(() => this.fileClock.nowSync())

  /** @internal At open, on a version-3 store on its log (docs/WAL.md §4.1). */
  enableLockFree(): void {
    this.lockFree = true
    this.replace = gensync((w: RawReplace) => this.replaceG(w))
  }

  /**
   * The lock-free replace (docs/WAL.md §4.1): the facade holds this
   * process's lock of the key. Under the log lock, after the committer's
   * catch-up (Wal.appendDecided; the async form shares the group commit's
   * frame and fdatasync with the other writes in flight): with `w.lock`, a
   * key lock file that exists answers REPLACE_BUSY (nothing appended: the
   * caller takes the lock and calls again with `lock: false`); else the
   * key's current revision is read (the log's newest record, else its key
   * file; 0 missing), `w.expectedRevision` checked (REPLACE_MISMATCH -
   * actual), and the put record of `w` with the next revision in its
   * metadata's slot appended in that frame: the new revision once durable.
   * Whatever is not sure (an append log, metadata it cannot read, a failed
   * read, a key file over WAL_MAX_RECORD bytes) answers REPLACE_UNSURE,
   * nothing written: the facade's general path writes it.
   */
  private *replaceG(w: RawReplace): Handler<number> {
    const wal = this.wal
    this.staging.checkWritable()
    // A value this much larger than a record cannot compress into one.
    if (!wal || w.value.length + w.meta.length + w.key.length > 4 * WAL_MAX_RECORD) return REPLACE_UNSURE
    const keyHash = recordHash(w.key)
    const hex = toHex(keyHash)
    const lockFile = this.locker.lockPath(hex)
    const self = this
    let answer = REPLACE_UNSURE
    yield* wal.appendDecided(function* (inFrame: ReadonlySet<string>): Handler<NewWalRecord[]> {
      answer = REPLACE_UNSURE
      if (inFrame.has(hex)) return []
      try {
        if (w.lock && (yield* vfs.exists(lockFile))) {
          answer = REPLACE_BUSY
          return []
        }
        const current = yield* self.revisionLocked(wal, w.key, keyHash)
        if (current === undefined) return []
        if (w.expectedRevision !== undefined && w.expectedRevision !== current) {
          answer = REPLACE_MISMATCH - current
          return []
        }
        const meta = spliceRevision(w.meta, w.revisionAt, current + 1)
        if (!meta) return []
        const payload = yield* self.logPayload({ key: w.key, serializer: w.serializer, meta, value: w.value })
        if (!payload) return []
        answer = current + 1
        return [{ op: WAL_PUT, keyHash, payload }]
      } catch {
        answer = REPLACE_UNSURE
        return []
      }
    }, WAL_MAX_RECORD)
    if (answer > 0) yield* checkpointIfFull(wal)
    return answer
  }

  /** Under the log lock: the revision `key` is at (0: missing), or undefined when not sure (the core's `current_revision`). */
  private *revisionLocked(wal: Wal, key: Uint8Array, keyHash: Uint8Array): Handler<number | undefined> {
    const l = yield* wal.lookupLocked(keyHash)
    if (l.kind === 'deleted') return 0
    if (l.kind === 'put') return revisionOfMeta((yield* this.payloadHead(key, l.payload)).meta)
    const f = yield* openKeyFile(this.codec, this.filePath(key), HEAD_READ, key)
    if (!f) return 0
    try {
      if (isLogHeader(f.head.header)) return undefined
      return revisionOfMeta(f.head.meta)
    } finally {
      vfs.closeQuietly(f.fd)
    }
  }

  // ---- the write-ahead log ------------------------------------------------------

  /** The path errors about a logged value name. */
  private get walPath(): string {
    return join(this.dir, WAL_FILE_NAME)
  }

  /**
   * What the log says of `key` for a read: a payload (its newest value, a
   * whole key file), null (deleted), or undefined: read its key file (no
   * log, no record, or a file record).
   */
  private *logged(key: Uint8Array): Handler<Uint8Array | null | undefined> {
    if (!this.wal) return undefined
    const l = yield* this.wal.get(recordHash(key))
    if (l.kind === 'put') return l.payload
    if (l.kind === 'deleted') return null
    return undefined
  }

  /** Before a write that goes to `key`'s file (docs/WAL.md §4 step 5): the key's logged value moved into its file first. */
  private *flushLogged(key: Uint8Array): Handler<void> {
    if (this.wal) yield* this.wal.flushKey(recordHash(key))
  }

  /** The header and meta of a put record's payload, checked as `key`'s file. */
  private *payloadHead(key: Uint8Array, payload: Uint8Array) {
    let head
    try {
      head = yield* this.codec.decodeHead(payload, payload.length, key)
    } catch (err) {
      throw vfs.ioError(err, 'cannot decode a put record of the write-ahead log', this.walPath)
    }
    if (head.header.flags !== 0) throw new KonserveError('ERR_CORRUPT', 'a put record of the write-ahead log holds a blob or a log', { file: this.walPath })
    if (head.key.length !== key.length || head.key.some((b, i) => b !== key[i])) {
      throw new KonserveError('ERR_KEY_MISMATCH', 'a put record of the write-ahead log holds another key than the one asked for', { file: this.walPath })
    }
    return head
  }

  /** The key file of `w` as a put record's payload, or undefined when it is longer than WAL_MAX_RECORD (it goes to its key file). */
  private *logPayload(w: RawWrite): Handler<Uint8Array | undefined> {
    // A value this much larger than a record cannot compress into one: not encoded twice.
    if (w.value.length + w.meta.length + w.key.length > 4 * WAL_MAX_RECORD) return undefined
    const f = yield* this.codec.encode(w)
    if (f.head.length + f.value.length > WAL_MAX_RECORD) return undefined
    const whole = new Uint8Array(f.head.length + f.value.length)
    whole.set(f.head)
    whole.set(f.value, f.head.length)
    return whole
  }

  /**
   * The logged half of a put on a store with a log (the core's
   * `put_logged`): every write whose key file is at most WAL_MAX_RECORD
   * bytes is a put record, all of them in one frame (durable together; the
   * async form joins the log's group commit); the others are returned, each
   * key's logged value first moved into its file, to be written to their key files.
   */
  private *putLogged(wal: Wal, writes: RawWrite[]): Handler<RawWrite[]> {
    const records: NewWalRecord[] = []
    const large: RawWrite[] = []
    for (const w of writes) {
      const payload = yield* this.logPayload(w)
      if (payload) records.push({ op: WAL_PUT, keyHash: recordHash(w.key), payload })
      else large.push(w)
    }
    if (records.length > 0) {
      yield* appendInFrames(wal, records)
      yield* checkpointIfFull(wal)
    }
    for (const w of large) yield* wal.flushKey(recordHash(w.key))
    return large
  }


  // ---- reads ------------------------------------------------------------------

  readonly get: Op<[key: Uint8Array], RawEntry | undefined> = gensync((key: Uint8Array) => this.getG(key))

  private *getG(key: Uint8Array): Handler<RawEntry | undefined> {
    const logged = yield* this.logged(key)
    if (logged === null) return undefined
    if (logged) {
      yield* this.payloadHead(key, logged)
      try {
        const d = yield* this.codec.decode(logged, key)
        return { serializer: d.serializer, meta: d.meta, value: d.value }
      } catch (err) {
        throw vfs.ioError(err, 'cannot decode a put record of the write-ahead log', this.walPath)
      }
    }
    const f = yield* openKeyFile(this.codec, this.filePath(key), GET_READ, key)
    if (!f) return undefined
    try {
      const { header, meta } = f.head
      if (isLogHeader(header)) {
        return { serializer: header.serializer, meta, value: new Uint8Array(0), log: yield* log.logInfo(this, f) }
      }
      const codec = this.codec.readCodec(header, key)
      let value: Uint8Array
      try {
        value =
          header.flags === FLAG_CHUNKED
            ? yield* decodeChunkedValue(fileReader(f), codec, header, f.valueStart)
            : yield* decodeValueSegment(codec, header, yield* storedValue(f))
      } catch (err) {
        throw vfs.ioError(err, 'cannot decode the key file', f.file)
      }
      return { serializer: header.serializer, meta, value }
    } finally {
      vfs.closeQuietly(f.fd)
    }
  }

  /**
   * `get`'s hot path (Backing.getValue), without generators: the key file
   * opened, read whole in one read, closed, and decoded by decodePlainValue,
   * the common case of a plain value stored without compression or
   * encryption. Whatever that does not answer (a store with a log or a key,
   * a log, a blob, a codec, a larger file, any error or damage) is read again
   * by the general path (getG), which answers or fails as it always did.
   */
  readonly getValue: Op<[key: Uint8Array], RawValue | undefined> = twinOp(
    (key: Uint8Array) => {
      if (this.wal || this.codec.encrypted) return rawValue(this.get.sync(key))
      const file = this.filePath(key)
      const v = this.held?.lookup(file) ?? this.readPlainSync(file, key)
      if (v === vfs.missing) return undefined
      return v ?? rawValue(this.get.sync(key))
    },
    async (key: Uint8Array) => {
      if (this.wal || this.codec.encrypted) return rawValue(await this.get.async(key))
      const file = this.filePath(key)
      const v = await vfs.withWholeAsync(file, GET_READ, isWhole, (b) => plainValue(b, key), this.held && this.holdRead(file))
      if (v === vfs.missing) return undefined
      if (v === undefined) return rawValue(await this.get.async(key))
      // Only a file this path answers is noted warm: getValueNow would read any other twice.
      warm.touch(file)
      return v
    },
  )

  /**
   * An async get's answer on the calling thread, for a plain key file this
   * process wrote, or read by an async get, lately (./warm.ts: its pages are
   * in the page cache, and it is still read, so no write is missed); MISS
   * for anything else, which the async path then reads on the threadpool.
   */
  readonly getValueNow = (key: Uint8Array): RawValue | undefined | typeof MISS => {
    if (this.wal || this.codec.encrypted) return MISS
    const file = this.filePath(key)
    const hit = this.held?.lookup(file)
    if (hit !== undefined) return hit
    if (!warm.isWarm(file)) return MISS
    const v = warm.timed(() => this.readPlainSync(file, key))
    if (v === vfs.missing) return undefined
    if (v === undefined) return MISS
    warm.touch(file)
    return v
  }

  readonly getMeta: Op<[key: Uint8Array], RawMeta | undefined> = gensync((key: Uint8Array) => this.getMetaG(key))

  private *getMetaG(key: Uint8Array): Handler<RawMeta | undefined> {
    const logged = yield* this.logged(key)
    if (logged === null) return undefined
    if (logged) {
      const h = yield* this.payloadHead(key, logged)
      return { key: h.key, serializer: h.serializer, meta: h.meta, file: this.walPath }
    }
    const f = yield* openKeyFile(this.codec, this.filePath(key), HEAD_READ, key)
    if (!f) return undefined
    try {
      return yield* this.rawMeta(f)
    } finally {
      vfs.closeQuietly(f.fd)
    }
  }

  private *rawMeta(f: OpenKeyFile): Handler<RawMeta> {
    const m: RawMeta = { key: f.head.key, serializer: f.head.serializer, meta: f.head.meta, file: f.file }
    const info = yield* log.logInfo(this, f)
    if (info) m.log = info
    return m
  }

  readonly exists: Op<[key: Uint8Array], boolean> = gensync((key: Uint8Array) => this.existsG(key))

  private *existsG(key: Uint8Array): Handler<boolean> {
    const logged = yield* this.logged(key)
    if (logged !== undefined) return logged !== null
    const file = this.filePath(key)
    try {
      return yield* vfs.exists(file)
    } catch (err) {
      throw vfs.ioError(err, 'cannot look up the key file', file)
    }
  }

  // ---- writes -----------------------------------------------------------------

  /**
   * One batch of puts: every staging file written and fsynced (several at
   * once in the async form), then the renames in order (a later write to the
   * same key wins), then ONE directory fsync. Whatever was not renamed is
   * removed. When writes fail, an ERR_FSYNC among them is the error reported
   * (the store is poisoned), else the first.
   */
  private readonly writeBatch = gensync((writes: RawWrite[]) => this.writeBatchG(writes))

  private *writeBatchG(writes: RawWrite[]): Handler<void> {
    const { staging } = this
    staging.checkWritable()
    if (writes.length === 0) return
    const files = yield* gensync.all(writes.map((w) => this.codec.encode(w)))
    const staged: Array<Staged | undefined> = []
    let renamed = 0
    try {
      yield* vfs.eachLimited(writes.length, STAGING_CONCURRENCY, function* (this: PureFileBacking, i: number): Handler<void> {
        const s = (staged[i] = yield* staging.create(this.stagingName(writes[i]!.key)))
        yield* staging.writev(s, [files[i]!.head, files[i]!.value], 0)
        yield* staging.seal(s)
      }.bind(this))
      staging.checkWritable()
      // Files getValueNow can answer (no log, plain, and read whole by its one read) are noted warm; it would read any other twice.
      const warmable = !this.wal && !this.codec.encrypted && !this.codec.compressed
      for (; renamed < writes.length; renamed++) {
        const file = this.filePath(writes[renamed]!.key)
        yield* staging.rename(staged[renamed]!, file)
        this.held?.drop(file)
        const { head, value } = files[renamed]!
        if (warmable && head.length + value.length < GET_READ) warm.touch(file)
      }
      yield* staging.syncDir()
    } finally {
      for (const s of staged.slice(renamed)) if (s) staging.drop(s)
    }
  }

  /**
   * Writes all entries. The blocking form writes them as one batch; the async
   * form is a group commit (../../backing/group-commit.ts): the puts that
   * arrive while a batch is being written go together as the next batch, one
   * directory fsync for all of them; each caller resolves once its batch is
   * durable, and a failed batch of several callers is retried caller by
   * caller, so each gets its own result.
   */
  readonly put: Op<[writes: RawWrite[]], void> = gensync({
    sync: (writes: RawWrite[]) => {
      const wal = this.wal
      if (!wal) return this.writeBatch.sync(writes)
      this.staging.checkWritable()
      const large = this.putLoggedOp.sync(wal, writes)
      if (large.length > 0) this.writeBatch.sync(large)
    },
    async: (writes: RawWrite[]) => {
      try {
        this.staging.checkWritable()
      } catch (err) {
        return Promise.reject(err)
      }
      const wal = this.wal
      if (!wal) return this.group.put(writes)
      return this.putLoggedOp.async(wal, writes).then((large) => (large.length > 0 ? this.group.put(large) : undefined))
    },
  })

  private readonly putLoggedOp = gensync((wal: Wal, writes: RawWrite[]) => this.putLogged(wal, writes))

  private readonly group = new GroupCommit((writes) => this.writeBatch.async(writes))

  readonly delete: Op<[keys: Uint8Array[]], boolean[]> = gensync((keys: Uint8Array[]) => this.deleteG(keys))

  private *deleteG(keys: Uint8Array[]): Handler<boolean[]> {
    this.staging.checkWritable()
    const wal = this.wal
    if (wal) {
      // Delete records for the keys that exist, in one frame (docs/WAL.md §4).
      const existed: boolean[] = []
      for (const key of keys) existed.push(yield* this.existsG(key))
      const records: NewWalRecord[] = keys
        .filter((_, i) => existed[i])
        .map((key) => ({ op: WAL_DELETE, keyHash: recordHash(key), payload: new Uint8Array(0) }))
      if (records.length > 0) {
        yield* appendInFrames(wal, records)
        yield* checkpointIfFull(wal)
      }
      return existed
    }
    const existed: boolean[] = []
    for (const key of keys) {
      const file = this.filePath(key)
      try {
        this.held?.drop(file)
        yield* vfs.unlink(file)
        existed.push(true)
      } catch (err) {
        if (!vfs.isMissing(err)) throw vfs.ioError(err, 'cannot delete the key file', file)
        existed.push(false)
      }
    }
    if (existed.some(Boolean)) yield* this.staging.syncDir()
    return existed
  }

  /** The staging sweep again, when the one on open kept files from another namespace (see SweepAgain). */
  readonly sweepAgain: SweepAgain

  /** Async form: the queued group commits are written first. Between calls the store holds no descriptor but its value cache's, which this closes. */
  readonly close: Op<[], void> = gensync({
    sync: () => {
      this.sweepAgain.stop()
      this.held?.close()
      this.wal?.close.sync()
    },
    async: async () => {
      this.sweepAgain.stop()
      await this.group.idle()
      this.held?.close()
      await this.wal?.close.async()
    },
  })

  // ---- listing ------------------------------------------------------------------

  /** One key file of a listing: its entry, nothing if it vanished, or a corrupt entry. */
  private *listOne(name: string, out: RawListing): Handler<boolean> {
    // The canonical directory and a key file's name: no join to normalize (as filePath).
    const file = this.dirPrefix + name
    if (!this.codec.encrypted) {
      const m = yield* this.plainListed(file, name)
      if (m === vfs.missing) return false
      if (m) {
        out.entries.push(m)
        return true
      }
    }
    try {
      const f = yield* openKeyFile(this.codec, file, HEAD_READ, undefined, name)
      if (!f) return false
      try {
        if (this.codec.fileName(f.head.key) !== name) {
          throw new KonserveError('ERR_KEY_MISMATCH', "the key file holds a key whose name is another file's", { file })
        }
        out.entries.push(yield* this.rawMeta(f))
      } finally {
        vfs.closeQuietly(f.fd)
      }
    } catch (err) {
      const e = vfs.ioError(err, 'cannot read the key file', file)
      out.corrupt.push({ code: e.code, file, message: e.message } satisfies RawCorrupt)
    }
    return true
  }

  /**
   * listOne's hot path, without the generators of openKeyFile: the file read
   * whole in one read (HEAD_READ bytes, as the general path's first read) and
   * its head decoded by decodePlainHead; its key must be the one its name
   * says. Undefined for anything else (a larger file, a log, a blob, a
   * codec, damage, an error): listOne then reads it by the general path.
   */
  private readonly plainListed = twinOp(
    (file: string, name: string) => vfs.withWholeSync(file, HEAD_READ, isWhole, (b) => this.plainMeta(b, file, name)),
    (file: string, name: string) => vfs.withWholeAsync(file, HEAD_READ, isWhole, (b) => this.plainMeta(b, file, name)),
  )

  /** A listing's entry of the plain key file `b` named `name`, copied out of the read buffer (it is reused). */
  private plainMeta(b: Uint8Array, file: string, name: string): RawMeta | undefined {
    const h = decodePlainHead(b)
    if (!h || this.codec.fileName(h.key) !== name) return undefined
    return { key: new Uint8Array(h.key), serializer: h.header.serializer, meta: new Uint8Array(h.meta), file }
  }

  /** Lists the logged value of the key whose hash is `hex` (its key file, if the log moved on to a file record meanwhile). */
  private *listLogged(hex: string, out: RawListing): Handler<boolean> {
    const name = `${hex}.ksv`
    let found: RawMeta | undefined
    try {
      const l = yield* this.wal!.get(Uint8Array.from(Buffer.from(hex, 'hex')))
      if (l.kind === 'deleted') return false
      if (l.kind !== 'put') return yield* this.listOne(name, out)
      const h = yield* this.codec.decodeHead(l.payload, l.payload.length, undefined, name)
      found = { key: h.key, serializer: h.serializer, meta: h.meta, file: this.walPath }
    } catch (err) {
      const e = vfs.ioError(err, 'cannot read a put record of the write-ahead log', this.walPath)
      out.corrupt.push({ code: e.code, file: this.walPath, message: e.message } satisfies RawCorrupt)
      return true
    }
    out.entries.push(found)
    return true
  }

  /** A streaming listing over `opendir`: one key file open at a time. */
  openList(): ListCursor {
    let dir: fs.Dir | undefined
    try {
      dir = vfs.opendir(this.dir)
    } catch (err) {
      throw vfs.ioError(err, 'cannot list the store directory', this.dir)
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
    // The keys the log has a put or a delete of (their files are shadowed),
    // read at the first batch; the logged puts are listed after the directory.
    let logged: Map<string, number> | undefined
    let puts: string[] | undefined
    const next = gensync(function* (max: number): Handler<RawListing | undefined> {
      const out: RawListing = { entries: [], corrupt: [] }
      let n = 0
      if (self.wal && !logged) {
        try {
          logged = new Map([...(yield* self.wal.records())].filter(([, op]) => op !== WAL_FILE_OP))
        } catch (err) {
          close()
          throw err
        }
        puts = [...logged].filter(([, op]) => op === WAL_PUT).map(([hex]) => hex).sort().reverse()
      }
      while (dir && n < Math.max(1, max)) {
        let ent: fs.Dirent | null
        try {
          ent = yield* vfs.readDirEntry(dir)
        } catch (err) {
          close()
          throw vfs.ioError(err, 'cannot list the store directory', self.dir)
        }
        if (!ent) {
          close()
          break
        }
        if (!KEY_FILE.test(ent.name)) continue
        if (logged?.has(ent.name.slice(0, 32))) continue
        if (yield* self.listOne(ent.name, out)) n++
      }
      while (!dir && puts && puts.length > 0 && n < Math.max(1, max)) {
        if (yield* self.listLogged(puts.pop()!, out)) n++
      }
      return n > 0 ? out : undefined
    })
    return { next, close }
  }

  // ---- streamed blobs and append logs (./blob.ts, ./log.ts) ---------------------------

  // With a log, a write to a key file first moves the key's logged value into it (flushLogged).
  readonly blobWriter: Op<[key: Uint8Array, meta: Uint8Array], BlobSink> = gensync(
    function* (this: PureFileBacking, key: Uint8Array, meta: Uint8Array): Handler<BlobSink> {
      yield* this.flushLogged(key)
      return yield* blob.blobWriter(this, key, meta)
    }.bind(this),
  )
  readonly openBlob: Op<[key: Uint8Array], BlobSource | undefined> = gensync((key: Uint8Array) => this.openBlobG(key))
  readonly append: Op<[key: Uint8Array, records: NewRecord[], createMeta: Uint8Array], LogInfo> = gensync(
    function* (this: PureFileBacking, key: Uint8Array, records: NewRecord[], createMeta: Uint8Array): Handler<LogInfo> {
      if (this.wal) {
        this.staging.checkWritable()
        yield* this.flushLogged(key)
      }
      return yield* log.append(this, key, records, createMeta)
    }.bind(this),
  )
  readonly openLog: Op<[key: Uint8Array], LogCursor | undefined> = gensync((key: Uint8Array) => this.openLogG(key))
  readonly trimLog: Op<[key: Uint8Array, keepFrom: number, meta: Uint8Array], LogInfo> = gensync(
    function* (this: PureFileBacking, key: Uint8Array, keepFrom: number, meta: Uint8Array): Handler<LogInfo> {
      if (this.wal) {
        this.staging.checkWritable()
        yield* this.flushLogged(key)
      }
      return yield* log.trimLog(this, key, keepFrom, meta)
    }.bind(this),
  )

  readonly logWriter: Op<[key: Uint8Array, meta: Uint8Array, firstIndex: number], LogWriter> = gensync(
    function* (this: PureFileBacking, key: Uint8Array, meta: Uint8Array, firstIndex: number): Handler<LogWriter> {
      yield* this.flushLogged(key)
      return yield* log.logWriter(this, key, meta, firstIndex)
    }.bind(this),
  )

  private *openBlobG(key: Uint8Array): Handler<BlobSource | undefined> {
    const logged = yield* this.logged(key)
    if (logged === null) return undefined
    if (logged) {
      const h = yield* this.payloadHead(key, logged)
      if (h.serializer !== 0) {
        throw new KonserveError('ERR_NOT_BINARY', `the key holds a value of serializer ${h.serializer}, not a blob`, { file: this.walPath })
      }
      if (this.options.readOnly) {
        throw new KonserveError(
          'ERR_READ_ONLY',
          "the key's bytes are in the write-ahead log, not yet in its file: a read-only store cannot open them as a blob",
          { file: this.walPath },
        )
      }
      // Raw bytes small enough to be logged: moved into the key file, then read as a blob.
      yield* this.flushLogged(key)
    }
    return yield* blob.openBlob(this, key)
  }

  private *openLogG(key: Uint8Array): Handler<LogCursor | undefined> {
    const logged = yield* this.logged(key)
    if (logged === null) return undefined
    if (logged) throw new KonserveError('ERR_NOT_A_LOG', 'the key holds a value, not an append log', { file: this.walPath })
    return yield* log.openLog(this, key)
  }

  /** Writes `key`'s file whole from what `produce` writes (log.ts replaceFile): how `rekey` re-encodes logs. */
  replaceFile(key: Uint8Array, produce: (sink: LogSink) => Handler<void>): Handler<void> {
    return log.replaceFile(this, key, produce)
  }

  // ---- cross-process locks (docs/FORMAT.md §6, ./filelock.ts) -------------------

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
        throw vfs.ioError(err, "cannot take a key's lock", this.locker.lockPath(hex), lockErrorCode(err))
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

  /**
   * One attempt at every key's lock, all or none, never waiting; once a
   * caller has been trying for `waitedMs` >= the lock timeout, ERR_LOCK_TIMEOUT
   * naming the holder instead of false.
   */
  tryLock(keys: Uint8Array[], waitedMs?: number): boolean {
    if (!this.tryLockFiles(keys, waitedMs)) return false
    if (!this.lockFree || !this.wal) return true
    // The pass through the log lock (see lock), blocking: another process holds it for a frame at most.
    try {
      this.wal.pass.sync()
    } catch (err) {
      this.releaseHexes(this.lockHexes(keys), false)
      throw err
    }
    return true
  }

  /** tryLock's key lock files alone. */
  private tryLockFiles(keys: Uint8Array[], waitedMs?: number): boolean {
    if (this.options.readOnly) throw readOnlyError(this.dir)
    const busy = this.tryLockHexes(this.lockHexes(keys))
    if (!busy) return true
    if (waitedMs !== undefined && waitedMs >= this.lockTimeoutMs) {
      throw lockTimeoutError(this.locker.lockPath(busy.busy), busy.holder, this.lockTimeoutMs)
    }
    return false
  }

  /** The key lock files alone. Blocking: waits grow from 0.2 ms to 8 ms between attempts. Async: polls `tryLockFiles` without blocking the loop. */
  private readonly lockFiles: Op<[keys: Uint8Array[]], void> = pollingLock(
    (keys, waitedMs) => this.tryLockFiles(keys, waitedMs),
    (keys) => {
      const wait = new Int32Array(new SharedArrayBuffer(4))
      const start = performance.now()
      for (let pause = 0.2; !this.tryLockFiles(keys, performance.now() - start); pause = Math.min(pause * 2, 8)) Atomics.wait(wait, 0, 0, pause)
    },
  )

  /**
   * Takes every key's lock file (as tryLock), then, on a version-3 store,
   * passes through the log lock (docs/WAL.md §4.1): every lock-free replace
   * of these keys that found no lock file is then durable in the log, and
   * every later one finds the lock file. The async form waits for the log
   * lock without blocking the loop; a failure releases the key locks.
   */
  readonly lock: Op<[keys: Uint8Array[]], void> = twinOp(
    (keys: Uint8Array[]) => {
      this.lockFiles.sync(keys)
      if (!this.lockFree || !this.wal) return
      try {
        this.wal.pass.sync()
      } catch (err) {
        this.releaseHexes(this.lockHexes(keys), false)
        throw err
      }
    },
    async (keys: Uint8Array[]) => {
      await this.lockFiles.async(keys)
      if (!this.lockFree || !this.wal) return
      try {
        await this.wal.pass.async()
      } catch (err) {
        this.releaseHexes(this.lockHexes(keys), false)
        throw err
      }
    },
  )

  unlock(keys: Uint8Array[]): void {
    try {
      this.releaseHexes(this.lockHexes(keys), true)
    } catch (err) {
      throw releaseError(err, this.dir)
    }
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
        first ??= vfs.ioError(err, "cannot release a key's lock", this.locker.lockPath(hex), lockErrorCode(err))
      }
    }
    if (first && report) throw first
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
    if (link) dir = vfs.realpath.sync(path)
  } catch (err) {
    if (vfs.isMissing(err)) return
    throw vfs.ioError(err, 'cannot resolve the store directory', path)
  }
  let names: string[]
  try {
    names = vfs.readdir.sync(dir)
  } catch (err) {
    if (vfs.isMissing(err)) return
    throw vfs.ioError(err, 'cannot list the store directory', dir)
  }
  let foreign = false
  for (const name of names) {
    if (KEY_FILE.test(name) || STAGING.test(name) || name === LOCK_FILE || name === CLOCK_FILE || name === KEY_CHECK_FILE || name === REKEY_FILE || name === WAL_FILE_NAME || LOCK_NAME.test(name)) {
      try {
        vfs.unlink.sync(join(dir, name))
      } catch (err) {
        if (!vfs.isMissing(err)) throw vfs.ioError(err, 'cannot delete a store file', join(dir, name))
      }
    } else {
      foreign = true
    }
  }
  if (!foreign && !link) {
    try {
      fs.rmdirSync(dir)
    } catch (err) {
      if (!vfs.isMissing(err)) throw vfs.ioError(err, 'cannot remove the store directory', dir)
    }
  }
}
