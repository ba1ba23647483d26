/**
 * The file backing in pure TypeScript: the same files as the Rust core
 * (docs/FORMAT.md), for platforms with no prebuilt binary, or when asked for
 * with `{ native: false }` / `KONSERVE_NATIVE=0`.
 *
 * The write path is the core's: a unique staging file (O_EXCL), written whole,
 * fsynced, renamed over the key file, then one fsync of the directory; a failed
 * fsync poisons the store until it is reopened. Async calls use `fs/promises`,
 * which runs on the libuv threadpool.
 *
 * Locks: Node has no fcntl, so a key's cross-process lock is a lock file
 * `.<hash>.<lock>` created with O_EXCL and holding the owner's pid; a lock
 * whose owner is dead is taken over. These locks exclude other pure-TS
 * processes, not native ones: do not write one directory from both at once.
 */
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import { dirname, join, relative, sep } from 'node:path'
import type { Backing, ListCursor, RawCorrupt, RawEntry, RawListing, RawMeta, RawWrite } from '../backing.js'
import { CLOCK_FILE, FileClock } from '../clock.js'
import type { ErrorCode } from '../errors.js'
import { KonserveError } from '../errors.js'
import { fsyncDirSync } from '../fsync.js'
import type { EncodedParts } from '../codec/file.js'
import type { PureCodec } from './pure-codec.js'

const HEADER_LEN = 48
/** How much of a key file a metadata read takes first (as the core does). */
const HEAD_READ = 4096
const LOCK_FILE = '.konserve.lock'
const KEY_FILE = /^[0-9a-f]{32}\.ksv$/
const STAGING = /^\.([0-9a-f]{32})\.([1-9][0-9]*)\.(0|[1-9][0-9]*)\.stage$/

let stagingSeq = 0

/** The core's error code for an OS error (see crates/core/src/error.rs). */
function codeOf(err: NodeJS.ErrnoException): ErrorCode {
  switch (err.code) {
    case 'ENOSPC':
    case 'EDQUOT':
      return 'ERR_NO_SPACE'
    case 'EROFS':
      return 'ERR_READ_ONLY'
    default:
      return 'ERR_IO'
  }
}

function ioError(err: unknown, what: string, file: string, code?: ErrorCode): KonserveError {
  if (err instanceof KonserveError) {
    if (!err.file) err.file = file
    return err
  }
  const e = err as NodeJS.ErrnoException
  return new KonserveError(code ?? codeOf(e), `${what}: ${e.message}`, { file, cause: err })
}

const isMissing = (err: unknown) => (err as NodeJS.ErrnoException).code === 'ENOENT'

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/** Whether process `pid` may be alive: only a definite "no such process" says no. */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH'
  }
}

export interface PureFileOptions {
  syncBlob: boolean
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
    this.clock = FileClock.openSync(dir, options.syncBlob)
  }

  /** Opens the store in `dir` (created if needed, canonical path), sweeping dead writers' staging files. */
  static openSync(dir: string, codec: PureCodec, options: PureFileOptions): PureFileBacking {
    try {
      const first = fs.mkdirSync(dir, { recursive: true })
      if (options.syncBlob) for (const parent of parentsOfNewDirs(first, dir)) fsyncDirSync(parent)
      const real = fs.realpathSync(dir)
      fs.closeSync(fs.openSync(join(real, LOCK_FILE), 'a', 0o644))
      const store = new PureFileBacking(real, codec, options)
      store.sweepStaging(fs.readdirSync(real))
      return store
    } catch (err) {
      throw ioError(err, 'cannot open the store directory', dir)
    }
  }

  static async open(dir: string, codec: PureCodec, options: PureFileOptions): Promise<PureFileBacking> {
    try {
      const first = await fsp.mkdir(dir, { recursive: true })
      if (options.syncBlob) for (const parent of parentsOfNewDirs(first, dir)) fsyncDirSync(parent)
      const real = await fsp.realpath(dir)
      await (await fsp.open(join(real, LOCK_FILE), 'a', 0o644)).close()
      const store = new PureFileBacking(real, codec, options)
      store.sweepStaging(await fsp.readdir(real))
      return store
    } catch (err) {
      throw ioError(err, 'cannot open the store directory', dir)
    }
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

  getSync(key: Uint8Array): RawEntry | undefined {
    const file = this.filePath(key)
    let bytes: Uint8Array
    try {
      bytes = fs.readFileSync(file)
    } catch (err) {
      if (isMissing(err)) return undefined
      throw ioError(err, 'cannot read the key file', file)
    }
    try {
      const d = this.codec.decodeSync(bytes, key)
      this.checkKey(d.key, key, file)
      return { serializer: d.serializer, meta: d.meta, value: d.value }
    } catch (err) {
      throw ioError(err, 'cannot decode the key file', file)
    }
  }

  async getAsync(key: Uint8Array): Promise<RawEntry | undefined> {
    const file = this.filePath(key)
    let bytes: Uint8Array
    try {
      bytes = await fsp.readFile(file)
    } catch (err) {
      if (isMissing(err)) return undefined
      throw ioError(err, 'cannot read the key file', file)
    }
    try {
      const d = await this.codec.decode(bytes, key)
      this.checkKey(d.key, key, file)
      return { serializer: d.serializer, meta: d.meta, value: d.value }
    } catch (err) {
      throw ioError(err, 'cannot decode the key file', file)
    }
  }

  /** Reads the header and the meta segment of a file: what keys and getMeta need. */
  private readHeadSync(file: string): Uint8Array | undefined {
    let fd: number
    try {
      fd = fs.openSync(file, 'r')
    } catch (err) {
      if (isMissing(err)) return undefined
      throw ioError(err, 'cannot open the key file', file)
    }
    try {
      const size = fs.fstatSync(fd).size
      let buf = new Uint8Array(Math.min(size, HEAD_READ))
      fs.readSync(fd, buf, 0, buf.length, 0)
      const need = this.headLength(buf, size)
      if (need > buf.length) {
        const more = new Uint8Array(need)
        more.set(buf)
        fs.readSync(fd, more, buf.length, need - buf.length, buf.length)
        buf = more
      }
      return this.withSize(buf, size)
    } catch (err) {
      throw ioError(err, 'cannot read the key file', file)
    } finally {
      fs.closeSync(fd)
    }
  }

  private async readHead(file: string): Promise<Uint8Array | undefined> {
    let handle: fsp.FileHandle
    try {
      handle = await fsp.open(file, 'r')
    } catch (err) {
      if (isMissing(err)) return undefined
      throw ioError(err, 'cannot open the key file', file)
    }
    try {
      const size = (await handle.stat()).size
      let buf = new Uint8Array(Math.min(size, HEAD_READ))
      await handle.read(buf, 0, buf.length, 0)
      const need = this.headLength(buf, size)
      if (need > buf.length) {
        const more = new Uint8Array(need)
        more.set(buf)
        await handle.read(more, buf.length, need - buf.length, buf.length)
        buf = more
      }
      return this.withSize(buf, size)
    } catch (err) {
      throw ioError(err, 'cannot read the key file', file)
    } finally {
      await handle.close()
    }
  }

  /** How many bytes the header and meta segment take (a short or damaged header: what we have). */
  private headLength(prefix: Uint8Array, size: number): number {
    if (prefix.length < HEADER_LEN) return prefix.length
    const metaLen = new DataView(prefix.buffer, prefix.byteOffset, prefix.byteLength).getUint32(12, true)
    return Math.min(size, HEADER_LEN + metaLen)
  }

  // The file's total length travels with its head: the header's length check needs it.
  private readonly sizes = new WeakMap<Uint8Array, number>()
  private withSize(buf: Uint8Array, size: number): Uint8Array {
    this.sizes.set(buf, size)
    return buf
  }

  private checkedMeta(key: Uint8Array, file: string, d: { serializer: number; key: Uint8Array; meta: Uint8Array }): RawMeta {
    this.checkKey(d.key, key, file)
    return { key: d.key, serializer: d.serializer, meta: d.meta, file }
  }

  getMetaSync(key: Uint8Array): RawMeta | undefined {
    const file = this.filePath(key)
    const head = this.readHeadSync(file)
    if (!head) return undefined
    try {
      return this.checkedMeta(key, file, this.codec.decodeHeadSync(head, this.sizes.get(head)!, key))
    } catch (err) {
      throw ioError(err, 'cannot decode the key file', file)
    }
  }

  async getMetaAsync(key: Uint8Array): Promise<RawMeta | undefined> {
    const file = this.filePath(key)
    const head = await this.readHead(file)
    if (!head) return undefined
    try {
      return this.checkedMeta(key, file, await this.codec.decodeHead(head, this.sizes.get(head)!, key))
    } catch (err) {
      throw ioError(err, 'cannot decode the key file', file)
    }
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

  async putAsync(writes: RawWrite[]): Promise<void> {
    this.checkWritable()
    const files = await Promise.all(writes.map((w) => this.codec.encode(w)))
    const staged: Array<[string, string]> = []
    try {
      for (const [i, w] of writes.entries()) {
        const stage = this.stagingPath(w.key)
        PureFileBacking.inFlight.add(stage)
        staged.push([stage, this.filePath(w.key)])
        await this.writeStaging(stage, files[i]!)
      }
      while (staged.length > 0) {
        const [stage, target] = staged[0]!
        try {
          await fsp.rename(stage, target)
        } catch (err) {
          throw ioError(err, 'cannot rename a staging file over the key file', target)
        }
        PureFileBacking.inFlight.delete(stage)
        staged.shift()
      }
      if (this.options.syncBlob) await this.syncDir()
    } finally {
      for (const [stage] of staged) {
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

  private listed(name: string, decode: () => { serializer: number; key: Uint8Array; meta: Uint8Array }, out: RawListing): void {
    const file = join(this.dir, name)
    try {
      const d = decode()
      if (this.codec.fileName(d.key) !== name) {
        throw new KonserveError('ERR_KEY_MISMATCH', "the key file holds a key whose name is another file's", { file })
      }
      out.entries.push({ key: d.key, serializer: d.serializer, meta: d.meta, file })
    } catch (err) {
      const e = ioError(err, 'cannot read the key file', file)
      out.corrupt.push({ code: e.code, file, message: e.message } satisfies RawCorrupt)
    }
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
    const fail = (err: unknown) => {
      close()
      return ioError(err, 'cannot list the store directory', this.dir)
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
    const corrupt = (out: RawListing, name: string, err: unknown) => {
      const e = ioError(err, 'cannot read the key file', join(this.dir, name))
      out.corrupt.push({ code: e.code, file: e.file!, message: e.message })
    }
    const nextSync = (max: number): RawListing | undefined => {
      const out: RawListing = { entries: [], corrupt: [] }
      let n = 0
      while (dir && n < Math.max(1, max)) {
        let ent: fs.Dirent | null
        try {
          ent = dir.readSync()
        } catch (err) {
          throw fail(err)
        }
        if (!ent) {
          close()
          break
        }
        const name = ent.name
        if (!KEY_FILE.test(name)) continue
        let head: Uint8Array | undefined
        try {
          head = this.readHeadSync(join(this.dir, name))
        } catch (err) {
          corrupt(out, name, err)
          n++
          continue
        }
        if (!head) continue
        const h = head
        this.listed(name, () => this.codec.decodeHeadSync(h, this.sizes.get(h)!, undefined, name), out)
        n++
      }
      return n > 0 ? out : undefined
    }
    const next = async (max: number): Promise<RawListing | undefined> => {
      const out: RawListing = { entries: [], corrupt: [] }
      let n = 0
      while (dir && n < Math.max(1, max)) {
        let ent: fs.Dirent | null
        try {
          ent = await dir.read()
        } catch (err) {
          throw fail(err)
        }
        if (!ent) {
          close()
          break
        }
        const name = ent.name
        if (!KEY_FILE.test(name)) continue
        let head: Uint8Array | undefined
        try {
          head = await this.readHead(join(this.dir, name))
        } catch (err) {
          corrupt(out, name, err)
          n++
          continue
        }
        if (!head) continue
        let decoded: { serializer: number; key: Uint8Array; meta: Uint8Array }
        try {
          decoded = await this.codec.decodeHead(head, this.sizes.get(head)!, undefined, name)
        } catch (err) {
          this.listed(name, () => {
            throw err
          }, out)
          n++
          continue
        }
        this.listed(name, () => decoded, out)
        n++
      }
      return n > 0 ? out : undefined
    }
    return { nextSync, next, close }
  }

  // ---- cross-process locks ---------------------------------------------------------

  private lockPath(key: Uint8Array): string {
    return join(this.dir, `.${this.codec.fileName(key).slice(0, 32)}.lock`)
  }

  /** Takes one key's lock file if it is free or its owner is dead. */
  private tryLockOne(path: string): boolean {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = fs.openSync(path, 'wx', 0o644)
        try {
          fs.writeSync(fd, `${process.pid}\n`)
        } finally {
          fs.closeSync(fd)
        }
        return true
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw ioError(err, 'cannot lock a key', path, 'ERR_LOCK')
      }
      // Held. Take it over only if its owner is certainly dead.
      let owner: number
      try {
        owner = Number.parseInt(fs.readFileSync(path, 'utf8'), 10)
      } catch (err) {
        if (isMissing(err)) continue // released meanwhile: try again
        throw ioError(err, 'cannot read a lock file', path, 'ERR_LOCK')
      }
      // An empty file is a lock being created right now: busy.
      if (!Number.isInteger(owner) || owner <= 0 || processAlive(owner)) return false
      // Move the dead owner's file aside atomically, so two takers cannot both win.
      const tomb = `${path}.${process.pid}.dead`
      try {
        fs.renameSync(path, tomb)
        fs.unlinkSync(tomb)
      } catch (err) {
        if (!isMissing(err)) throw ioError(err, 'cannot clear a dead lock', path, 'ERR_LOCK')
      }
    }
    return false
  }

  private lockPaths(keys: Uint8Array[]): string[] {
    return [...new Set(keys.map((k) => this.lockPath(k)))].sort()
  }

  tryLock(keys: Uint8Array[]): boolean {
    const taken: string[] = []
    for (const path of this.lockPaths(keys)) {
      if (!this.tryLockOne(path)) {
        this.releasePaths(taken)
        return false
      }
      taken.push(path)
    }
    return true
  }

  lockSync(keys: Uint8Array[]): void {
    // Blocks the thread, as a sync call must; waits grow to 8 ms between polls.
    const wait = new Int32Array(new SharedArrayBuffer(4))
    for (let pause = 0; !this.tryLock(keys); pause = Math.min(pause * 2 || 0.25, 8)) {
      Atomics.wait(wait, 0, 0, pause)
    }
  }

  unlock(keys: Uint8Array[]): void {
    this.releasePaths(this.lockPaths(keys))
  }

  private releasePaths(paths: string[]): void {
    for (const path of paths) {
      try {
        fs.unlinkSync(path)
      } catch {
        // Already gone: nothing to release.
      }
    }
  }
}

/** Deletes a store's konserve files, then the directory if nothing else is in it. */
export function deleteStorePure(dir: string): void {
  let names: string[]
  try {
    names = fs.readdirSync(dir)
  } catch (err) {
    if (isMissing(err)) return
    throw ioError(err, 'cannot list the store directory', dir)
  }
  let foreign = false
  for (const name of names) {
    if (KEY_FILE.test(name) || STAGING.test(name) || name === LOCK_FILE || name === CLOCK_FILE || /^\.[0-9a-f]{32}\.lock$/.test(name)) {
      try {
        fs.unlinkSync(join(dir, name))
      } catch (err) {
        if (!isMissing(err)) throw ioError(err, 'cannot delete a store file', join(dir, name))
      }
    } else {
      foreign = true
    }
  }
  if (!foreign) {
    try {
      fs.rmdirSync(dir)
    } catch (err) {
      if (!isMissing(err)) throw ioError(err, 'cannot remove the store directory', dir)
    }
  }
}
