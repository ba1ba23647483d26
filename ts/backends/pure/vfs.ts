/**
 * The file-system seam of the pure engine (crates/core/src/vfs.rs): every
 * system call the engine makes, each one gensync operation whose blocking
 * form is the `fs.*Sync` call and whose async form runs on the libuv
 * threadpool, and the ONE mapping of an errno to a typed error (`ioError`).
 * The modules above (staging, blob, log, keycheck, clock, store) are written
 * once as generators over these operations; `.sync(...)` or `.async(...)` on
 * the outermost one decides how they all run.
 *
 * Lock files (./filelock.ts) stay blocking: each step is one small write.
 */
import gensync, { type Handler } from 'gensync'
import * as fs from 'node:fs'
import type { ErrorCode } from '../../errors.js'
import { KonserveError, codeOfOsError } from '../../errors.js'
import { fsyncDirSync } from '../../fsync.js'

// ---- errors -----------------------------------------------------------------------

/**
 * The typed error of a failed step on `file`: one errno, one code (errors.ts
 * codeOfOsError, the core's ErrorCode::of_io), unless `code` says otherwise.
 * A KonserveError passes through, given the file if it names none.
 */
export function ioError(err: unknown, what: string, file: string, code?: ErrorCode): KonserveError {
  if (err instanceof KonserveError) {
    if (!err.file) err.file = file
    return err
  }
  const e = err as NodeJS.ErrnoException
  return new KonserveError(codeOfOsError(e, code), `${what}: ${e.message}`, { file, cause: err })
}

/** The errno of an error (of its cause, for a KonserveError made by ioError). */
export const errnoOf = (err: unknown): string | undefined =>
  (err as NodeJS.ErrnoException | undefined)?.code?.startsWith('E')
    ? (err as NodeJS.ErrnoException).code
    : ((err as { cause?: NodeJS.ErrnoException } | undefined)?.cause?.code ?? undefined)

export const isMissing = (err: unknown): boolean => (err as NodeJS.ErrnoException | undefined)?.code === 'ENOENT'

// ---- file types ---------------------------------------------------------------------

/**
 * Flags of every open of an existing store file: a symbolic link is never
 * followed (ELOOP: ERR_NOT_A_FILE, so no store file leads outside the store),
 * and a FIFO never makes the open wait for a writer (O_NONBLOCK, without
 * effect on regular files). The core opens with the same flags (vfs.rs).
 */
export const STORE_OPEN = {
  r: fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK,
  'r+': fs.constants.O_RDWR | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK,
} as const

/** Flags of a new staging file: created here and now, never through a link. */
export const CREATE_NEW = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW

function fileType(st: fs.Stats): string {
  if (st.isDirectory()) return 'a directory'
  if (st.isFIFO()) return 'a FIFO'
  if (st.isSocket()) return 'a socket'
  if (st.isCharacterDevice()) return 'a character device'
  if (st.isBlockDevice()) return 'a block device'
  if (st.isSymbolicLink()) return 'a symbolic link'
  return 'of an unknown type'
}

/** The size of a regular file; ERR_NOT_A_FILE for anything else. */
function regularSize(st: fs.Stats, file: string, what: string): number {
  if (!st.isFile()) throw new KonserveError('ERR_NOT_A_FILE', `${what}: not a regular file but ${fileType(st)}`, { file })
  return st.size
}

// ---- the operations ----------------------------------------------------------------------

type Done<T> = (err: NodeJS.ErrnoException | null, value: T) => void
function cb<T>(f: (done: Done<T>) => void): Promise<T> {
  return new Promise((resolve, reject) => f((err, value) => (err ? reject(err) : resolve(value))))
}
const done0 = (d: Done<void>) => (err: NodeJS.ErrnoException | null) => d(err, undefined)

/** Whether the stack trace limit can be set (not where intrinsics are frozen: `node --frozen-intrinsics`, SES). */
const traceLimitWritable = Object.getOwnPropertyDescriptor(Error, 'stackTraceLimit')?.writable === true

/**
 * fs.openSync whose error carries no stack trace. An open that fails is
 * often an answer, not a fault: the key file of a new or missing key
 * (ENOENT), a lock file someone holds (EEXIST). Node captures a stack for
 * each such error, which cost more than the system call itself (about
 * 9 µs of 15 under a store call's frames); a failure that reaches the user
 * is wrapped in a KonserveError, which has its own.
 */
export function openSyncQuiet(path: string, flags: string | number, mode?: number): number {
  if (!traceLimitWritable) return fs.openSync(path, flags, mode)
  const limit = Error.stackTraceLimit
  Error.stackTraceLimit = 0
  try {
    return fs.openSync(path, flags, mode)
  } finally {
    Error.stackTraceLimit = limit
  }
}

export const open = gensync({
  sync: (path: string, flags: string | number, mode?: number): number => openSyncQuiet(path, flags, mode),
  async: (path: string, flags: string | number, mode?: number) => cb<number>((d) => fs.open(path, flags, mode ?? 0o666, d)),
})

export const close = gensync({
  sync: (fd: number): void => fs.closeSync(fd),
  async: (fd: number) => cb<void>((d) => fs.close(fd, done0(d))),
})

/** fstat of an open store file: its size, or ERR_NOT_A_FILE (`what` says of which file) when it is not a regular file. */
export const regularFileSize = gensync({
  sync: (fd: number, file: string, what: string): number => regularSize(fs.fstatSync(fd), file, what),
  async: async (fd: number, file: string, what: string) => regularSize(await cb<fs.Stats>((d) => fs.fstat(fd, d)), file, what),
})

export const read = gensync({
  sync: (fd: number, buf: Uint8Array, off: number, len: number, pos: number): number => fs.readSync(fd, buf, off, len, pos),
  async: (fd: number, buf: Uint8Array, off: number, len: number, pos: number) => cb<number>((d) => fs.read(fd, buf, off, len, pos, d)),
})

export const write = gensync({
  sync: (fd: number, buf: Uint8Array, off: number, len: number, pos: number): number => fs.writeSync(fd, buf, off, len, pos),
  async: (fd: number, buf: Uint8Array, off: number, len: number, pos: number) => cb<number>((d) => fs.write(fd, buf, off, len, pos, d)),
})

export const writev = gensync({
  sync: (fd: number, parts: Uint8Array[], pos: number): number => fs.writevSync(fd, parts, pos),
  async: (fd: number, parts: Uint8Array[], pos: number) => cb<number>((d) => fs.writev(fd, parts, pos, d)),
})

export const fsync = gensync({
  sync: (fd: number): void => fs.fsyncSync(fd),
  async: (fd: number) => cb<void>((d) => fs.fsync(fd, done0(d))),
})

/** fdatasync(2): the file's data and what is needed to read it back (its size), not its other metadata. */
export const fdatasync = gensync({
  sync: (fd: number): void => fs.fdatasyncSync(fd),
  async: (fd: number) => cb<void>((d) => fs.fdatasync(fd, done0(d))),
})

export const truncate = gensync({
  sync: (fd: number, len: number): void => fs.ftruncateSync(fd, len),
  async: (fd: number, len: number) => cb<void>((d) => fs.ftruncate(fd, len, done0(d))),
})

export const rename = gensync({
  sync: (from: string, to: string): void => fs.renameSync(from, to),
  async: (from: string, to: string) => cb<void>((d) => fs.rename(from, to, done0(d))),
})

export const unlink = gensync({
  sync: (path: string): void => fs.unlinkSync(path),
  async: (path: string) => cb<void>((d) => fs.unlink(path, done0(d))),
})

/** Whether anything is at `path` (lstat: a link is not followed). */
export const exists = gensync({
  sync: (path: string): boolean => fs.lstatSync(path, { throwIfNoEntry: false }) !== undefined,
  async: (path: string) =>
    new Promise<boolean>((resolve, reject) => fs.lstat(path, (err) => (!err ? resolve(true) : isMissing(err) ? resolve(false) : reject(err)))),
})

/**
 * Makes a directory's entries (creations, renames, removals) durable. The
 * async form opens and closes the directory on the calling thread (the path
 * of a directory a write just renamed or removed a file in is in the kernel's
 * cache: no disk wait) and only the fsync, which waits for the disk, on the
 * threadpool: one task, not three.
 */
export const syncDir = gensync({
  sync: (dir: string): void => fsyncDirSync(dir),
  async: async (dir: string): Promise<void> => {
    const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY)
    try {
      await cb<void>((d) => fs.fsync(fd, done0(d)))
    } finally {
      fs.closeSync(fd)
    }
  },
})

/** `mkdir -p`: the first directory it created, or undefined when all existed. */
export const mkdirAll = gensync({
  sync: (dir: string): string | undefined => fs.mkdirSync(dir, { recursive: true }),
  async: (dir: string) => cb<string | undefined>((d) => fs.mkdir(dir, { recursive: true }, d)),
})

export const realpath = gensync({
  sync: (path: string): string => fs.realpathSync(path),
  async: (path: string) => cb<string>((d) => fs.realpath(path, d)),
})

export const readdir = gensync({
  sync: (dir: string): string[] => fs.readdirSync(dir),
  async: (dir: string) => cb<string[]>((d) => fs.readdir(dir, d)),
})

/** The next entry of an open directory (`opendir`), or null at its end. */
export const readDirEntry = gensync({
  sync: (dir: fs.Dir): fs.Dirent | null => dir.readSync(),
  async: (dir: fs.Dir) => dir.read(),
})

export const opendir = (dir: string): fs.Dir => fs.opendirSync(dir)

// ---- compositions -------------------------------------------------------------------------

/** Up to `length` bytes at `pos` (fewer only at the end of the file). */
export function* pread(fd: number, pos: number, length: number): Handler<Uint8Array> {
  const buf = new Uint8Array(length)
  const n = yield* preadInto(fd, buf, pos)
  return n < length ? buf.subarray(0, n) : buf
}

/** The blocking form's read buffer, reused: `readFirst` copies out only the bytes read. */
let scratch = Buffer.allocUnsafeSlow(64 * 1024)

function readFirstSync(fd: number, length: number, whole: (b: Uint8Array) => boolean): Uint8Array {
  if (scratch.length < length) scratch = Buffer.allocUnsafeSlow(length)
  let n = 0
  while (n < length) {
    const got = fs.readSync(fd, scratch, n, length - n, n)
    n += got
    if (got === 0 || (n < length && whole(scratch.subarray(0, n)))) break
  }
  const out = new Uint8Array(n)
  out.set(scratch.subarray(0, n))
  return out
}

async function readFirstAsync(fd: number, length: number, whole: (b: Uint8Array) => boolean): Promise<Uint8Array> {
  // Not zero-filled (every byte handed out was read), and not kept: the bytes read are copied out.
  const buf = Buffer.allocUnsafe(length)
  let n = 0
  while (n < length) {
    const got = await cb<number>((d) => fs.read(fd, buf, n, length - n, n, d))
    n += got
    if (got === 0 || (n < length && whole(buf.subarray(0, n)))) break
  }
  const out = new Uint8Array(n)
  out.set(buf.subarray(0, n))
  return out
}

/**
 * The whole file at `path` when one read of `length` bytes from its start
 * holds it (`whole` says so: the read stopped short where the file says it
 * ends), handed to `use` as a view of a reused buffer that is valid only
 * until `use` returns: a hot read's one open, one read and one close, with
 * no copy and no allocation of its own; `keep`, given, may take the
 * descriptor instead of its being closed. `missing` when there is no such file;
 * `undefined` when anything else happened (another error, a file that one
 * read did not hold): the caller then reads by its general path, which says
 * what it is. Blocking form.
 */
export function withWholeSync<T>(
  path: string,
  length: number,
  whole: (b: Uint8Array) => boolean,
  use: (b: Uint8Array) => T,
  keep?: (fd: number, size: number, answer: T) => boolean,
): T | typeof missing | undefined {
  let fd: number
  try {
    fd = openSyncQuiet(path, STORE_OPEN.r)
  } catch (err) {
    return isMissing(err) ? missing : undefined
  }
  let kept = false
  try {
    if (scratch.length < length) scratch = Buffer.allocUnsafeSlow(length)
    const n = fs.readSync(fd, scratch, 0, length, 0)
    const b = scratch.subarray(0, n)
    if (!(n < length && whole(b))) return undefined
    const answer = use(b)
    // `keep` takes the descriptor (the pure value cache, ./held.ts) or leaves it to be closed.
    if (keep && answer !== undefined) kept = keep(fd, n, answer)
    return answer
  } catch {
    return undefined
  } finally {
    if (!kept) closeQuietly(fd)
  }
}

/** What withWhole answers for a file that does not exist. */
export const missing: unique symbol = Symbol('missing')

/** Read buffers of withWholeAsync not in use (a few: one per read in flight is allocated beyond them). */
const spare: Buffer[] = []

/** withWholeSync's async form: the open and the read on the threadpool (one task each); `keep` or the close on the calling thread. */
export function withWholeAsync<T>(
  path: string,
  length: number,
  whole: (b: Uint8Array) => boolean,
  use: (b: Uint8Array) => T,
  keep?: (fd: number, size: number, answer: T) => boolean,
): Promise<T | typeof missing | undefined> {
  return new Promise((resolve) => {
    fs.open(path, STORE_OPEN.r, (err, fd) => {
      if (err) return resolve(isMissing(err) ? missing : undefined)
      let buf = spare.pop()
      if (!buf || buf.length < length) buf = Buffer.allocUnsafeSlow(length)
      const b0 = buf
      fs.read(fd, b0, 0, length, 0, (err, n) => {
        let kept = false
        try {
          const b = b0.subarray(0, n)
          const answer = !err && n < length && whole(b) ? use(b) : undefined
          if (keep && answer !== undefined) kept = keep(fd, n, answer)
          resolve(answer)
        } catch {
          resolve(undefined)
        } finally {
          if (!kept) closeQuietly(fd)
          if (spare.length < 8) spare.push(b0)
        }
      })
    })
  })
}

/**
 * Up to `length` bytes from the start of a file (fewer only at its end), in
 * an array of exactly the bytes read: no zero-filled buffer of `length`
 * bytes per read, and no large buffer kept alive by a small file's value.
 * A short read stops the reading when `whole` says the bytes are the whole
 * file (no second read to find the end: one threadpool task, not two).
 */
export const readFirst = gensync({ sync: readFirstSync, async: readFirstAsync })

/** Reads into all of `buf` from `pos` (fewer only at the end of the file); returns how many bytes were read. */
export function* preadInto(fd: number, buf: Uint8Array, pos: number): Handler<number> {
  let n = 0
  while (n < buf.length) {
    const got = yield* read(fd, buf, n, buf.length - n, pos + n)
    if (got === 0) break
    n += got
  }
  return n
}

/**
 * Writes all of `parts`, one after the other, from `pos`: one pwritev for
 * all of them (one threadpool task in the async form), then, if it wrote
 * less than asked (as pwritev(2) may), the rest part by part.
 */
export function* writeAllv(fd: number, parts: Uint8Array[], pos: number): Handler<void> {
  let n = yield* writev(fd, parts, pos)
  for (const p of parts) {
    if (n >= p.length) {
      n -= p.length
      pos += p.length
      continue
    }
    yield* writeAll(fd, p.subarray(n), pos + n)
    pos += p.length
    n = 0
  }
}

/** Writes all of `bytes` at `pos` (write may write less than asked, as write(2) may). */
export function* writeAll(fd: number, bytes: Uint8Array, pos: number): Handler<void> {
  let off = 0
  while (off < bytes.length) off += yield* write(fd, bytes, off, bytes.length - off, pos + off)
}

/** Closes a descriptor, ignoring errors (nothing to release then). */
export function closeQuietly(fd: number | undefined): void {
  if (fd === undefined) return
  try {
    fs.closeSync(fd)
  } catch {
    // Nothing to release.
  }
}

/** Removes a file, ignoring errors (garbage at worst: the open sweep removes it). */
export function unlinkQuietly(path: string): void {
  try {
    fs.unlinkSync(path)
  } catch {
    // It may never have been created, or be gone already.
  }
}

/**
 * Runs `task(0 .. n - 1)`: one after the other when blocking, at most `limit`
 * at a time on the threadpool. Waits for every task that started; fails
 * after that with an ERR_FSYNC among the failures if there is one (it
 * poisoned the store), else the first failure; once one failed, no more start.
 */
const eachLimitedOp = gensync({
  sync: (n: number, _limit: number, task: (i: number) => Handler<void>): void => {
    const run = gensync(task)
    for (let i = 0; i < n; i++) run.sync(i)
  },
  async: async (n: number, limit: number, task: (i: number) => Handler<void>): Promise<void> => {
    const run = gensync(task)
    let next = 0
    const errors: unknown[] = []
    const worker = async () => {
      while (next < n && errors.length === 0) {
        const i = next++
        try {
          await run.async(i)
        } catch (err) {
          errors.push(err)
        }
      }
    }
    await Promise.all(Array.from({ length: Math.min(n, limit) }, worker))
    if (errors.length > 0) throw errors.find((e) => (e as { code?: unknown }).code === 'ERR_FSYNC') ?? errors[0]
  },
})

export function* eachLimited(n: number, limit: number, task: (i: number) => Handler<void>): Handler<void> {
  // One task (a single put): run inline, in either form. Wrapping it as a
  // gensync operation on every call showed as about 6 µs a put in a CPU profile.
  if (n === 1) return yield* task(0)
  yield* eachLimitedOp(n, limit, task)
}
