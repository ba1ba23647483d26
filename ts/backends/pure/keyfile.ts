/**
 * A key file opened for reading (docs/FORMAT.md §4): its header and meta
 * segment read and decoded, the descriptor kept for what follows (a value, a
 * blob's chunks, a log's records). What the store, blob and log modules
 * share below them; the format itself is ts/format/.
 */
import type { Handler } from 'gensync'
import { KonserveError } from '../../errors.js'
import { type ReadAt, HEADER_LEN, headLength } from '../../format/file.js'
import type { DecodedHead, PureCodec } from './codec.js'
import type { DirectBlobs } from './direct.js'
import type { StagingDir } from './staging.js'
import * as vfs from './vfs.js'

/** A key file's name: `<32 hex>.ksv` (FORMAT.md §3). */
export const KEY_FILE = /^[0-9a-f]{32}\.ksv$/
/** How much of a key file a metadata read takes first (as the core does). */
export const HEAD_READ = 4096
/** How much of a key file a get reads first: a small file is read at once. */
export const GET_READ = 64 * 1024

/** An open key file with its decoded head. */
export interface OpenKeyFile {
  fd: number
  file: string
  size: number
  /** The bytes read from the start of the file: at least the head. */
  prefix: Uint8Array
  head: DecodedHead
  /** Where the value segment (a log's records) starts: `48 + m`. */
  valueStart: number
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/** The file length a key file's first bytes declare (48 + m + v), or undefined when they are too short to say (the core's Header::declared_len). */
function declaredLength(b: Uint8Array): number | undefined {
  if (b.length < 24) return undefined
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength)
  return HEADER_LEN + v.getUint32(12, true) + v.getUint32(16, true) + v.getUint32(20, true) * 0x1_0000_0000
}

/** Whether the first bytes of a key file are the whole file, as its header says. */
export const isWhole = (b: Uint8Array): boolean => declaredLength(b) === b.length

/**
 * Opens a key file and decodes its header and meta segment (reading
 * `firstRead` bytes first, then the rest of the head if it is longer);
 * undefined when the file does not exist. With `key`, the file must hold
 * that key (ERR_KEY_MISMATCH); `name` is the file's name in a listing. The
 * caller closes `fd`.
 */
export function* openKeyFile(
  codec: PureCodec,
  file: string,
  firstRead: number,
  key?: Uint8Array,
  name?: string,
  flags: keyof typeof vfs.STORE_OPEN = 'r',
): Handler<OpenKeyFile | undefined> {
  let fd: number
  try {
    fd = yield* vfs.open(file, vfs.STORE_OPEN[flags])
  } catch (err) {
    if (vfs.isMissing(err)) return undefined
    throw vfs.ioError(err, 'cannot open the key file', file)
  }
  try {
    let size: number
    let prefix: Uint8Array
    try {
      try {
        prefix = yield* vfs.readFirst(fd, firstRead, isWhole)
      } catch (err) {
        // Not a regular file (a directory: EISDIR) fails as ERR_NOT_A_FILE, as the fstat first did.
        yield* vfs.regularFileSize(fd, file, 'cannot read the key file')
        throw err
      }
      // A read shorter than asked is the whole file if the header says so
      // (as the core's open_head): no fstat then. Else the file system says
      // how long the file is (and that it is a regular file).
      if (prefix.length < firstRead && isWhole(prefix)) {
        size = prefix.length
      } else {
        size = yield* vfs.regularFileSize(fd, file, 'cannot read the key file')
        if (prefix.length > size) prefix = prefix.subarray(0, size)
      }
      const need = headLength(prefix, size)
      if (need > prefix.length) {
        const more = new Uint8Array(need)
        more.set(prefix)
        more.set(yield* vfs.pread(fd, prefix.length, need - prefix.length), prefix.length)
        prefix = more
      }
    } catch (err) {
      throw vfs.ioError(err, 'cannot read the key file', file)
    }
    let head: DecodedHead
    try {
      head = yield* codec.decodeHead(prefix, size, key, name)
      if (key && !bytesEqual(head.key, key)) {
        throw new KonserveError('ERR_KEY_MISMATCH', 'the key file holds another key than the one asked for', { file })
      }
    } catch (err) {
      throw vfs.ioError(err, 'cannot decode the key file', file)
    }
    return { fd, file, size, prefix, head, valueStart: HEADER_LEN + head.header.metaLen }
  } catch (err) {
    vfs.closeQuietly(fd)
    throw err
  }
}

/** A `ReadAt` (format/file.ts) over an open file: each read a new buffer. */
export const fdReader =
  (fd: number): ReadAt =>
  (pos, length) =>
    vfs.pread(fd, pos, length)

/** A `ReadAt` over an open key file that serves what its prefix (already read) holds without reading again. */
export const fileReader = (f: OpenKeyFile): ReadAt =>
  function* (pos, length) {
    if (pos + length <= f.prefix.length) return f.prefix.subarray(pos, pos + length)
    return yield* vfs.pread(f.fd, pos, length)
  }

/** The stored value segment of a file written whole (flags 0): from the prefix when it holds the whole file. */
export function* storedValue(f: OpenKeyFile): Handler<Uint8Array> {
  return f.prefix.length >= f.size ? f.prefix.subarray(f.valueStart) : yield* vfs.pread(f.fd, f.valueStart, f.size - f.valueStart)
}

/** What the blob and log modules need of the store: its directory, codec and durable writes. */
export interface KeyFiles {
  readonly dir: string
  readonly codec: PureCodec
  readonly staging: StagingDir
  /** When large durable blobs are written direct (./direct.ts). */
  readonly directBlobs: DirectBlobs
  /** The key file of `key`. */
  filePath(key: Uint8Array): string
  /** A new staging file name for a write to `key`'s file. */
  stagingName(key: Uint8Array): string
}
