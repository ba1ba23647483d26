/**
 * The key file layout of docs/FORMAT.md §4 and the segment codec of §4.4, as
 * crates/core/src/format.rs and codec/mod.rs: a 48-byte header, the meta segment
 * (the key's CKE and the metadata), the value segment, each segment stored as
 * `encrypt(compress(plain))`. Same checks, same order, same error codes.
 *
 * Every decoder is total: any input gives a result or a `KonserveError`.
 * Decoded bytes may be views of the input. Each operation has a blocking and
 * an async form; encryption in the blocking form needs a provider with `sync`
 * primitives (../crypto-node.ts), the async form defaults to WebCrypto.
 * No `node:` imports: shared with the browser store.
 *
 * The lowest module of the format layer: chunked blob values (§4.5, blob.ts)
 * and append logs (§4.6, log.ts) build on it, and keyfile.ts decodes a whole
 * file of every kind over all three; nothing here imports them.
 */
import gensync, { type Handler } from 'gensync'
import type { LogInfo } from '../backing/index.js'
import { KonserveError } from '../errors.js'
import { type CryptoProvider, SALT_LEN, IV_LEN, randomBytes, webCryptoProvider } from '../codec/aes.js'
import { type Segments, loadSegments, segmentsNow } from '../lazy/codecs.js'
import { xxh3_128, xxh3_64 } from '../codec/xxhash.js'

/** The magic number at the start of every key file: "KNSV". */
const MAGIC = [0x4b, 0x4e, 0x53, 0x56]
/** The format version this module writes and reads. */
export const FORMAT_VERSION = 1
/** The length of the header. */
export const HEADER_LEN = 48

export const COMPRESSOR_NONE = 0
export const COMPRESSOR_LZ4 = 1
export const ENCRYPTOR_NONE = 0
export const ENCRYPTOR_AES = 1

/** Header flags (§4): a plain value, a chunked blob (§4.5), an append log (§4.6). */
export const FLAG_NONE = 0
export const FLAG_CHUNKED = 1
export const FLAG_LOG = 2
/** With FLAG_LOG only: the log's value segment is its commit area (§4.6); without it, a log of the earlier layout. */
export const FLAG_LOG_COMMIT = 4
/** The flags of a log with a commit area. */
export const FLAGS_COMMITTED_LOG = FLAG_LOG | FLAG_LOG_COMMIT
/** The length of a log's commit area (two 64-byte slots): its `v`. */
export const LOG_COMMIT_AREA = 128

/** Whether a header is an append log's, of either layout (§4.6). */
export const isLogHeader = (header: { flags?: number }): boolean => ((header.flags ?? 0) & FLAG_LOG) !== 0

/** Which segment: part of what the MAC authenticates (§4.3). */
export const KIND_META = 0
export const KIND_VALUE = 1
export const KIND_CHUNK = 2
export const KIND_LAST_CHUNK = 3
export const KIND_RECORD = 4
const META = KIND_META
const VALUE = KIND_VALUE

/** The decoded header of a key file. */
export interface Header {
  /** FLAG_NONE (the default when encoding), FLAG_CHUNKED, FLAG_LOG or FLAGS_COMMITTED_LOG. */
  flags?: number
  /** Serializer id of the value segment (§4.1). */
  serializer: number
  compressor: number
  encryptor: number
  /** Length of the meta segment as stored. */
  metaLen: number
  /** Length of the value segment as stored (inexact above 2^53, which no real file reaches). */
  valueLen: number
  /** XXH3-64 of the meta segment as stored. */
  metaChecksum: bigint
  /** XXH3-64 of the value segment as stored. */
  valueChecksum: bigint
}

/** What encoding a key file takes. */
export interface EncodeInput {
  compressor: number
  encryptor: number
  /** The encryption key (a string is its UTF-8 bytes); needed when `encryptor` is 1. */
  secret?: Uint8Array | string | null
  /** The key's canonical encoding (format/key.ts). */
  keyCke: Uint8Array
  serializer: number
  /** The metadata bytes (format/meta.ts). */
  meta: Uint8Array
  /** The value's plain bytes. */
  value: Uint8Array
  /** Fixed bytes for the salts and IVs, consumed in order (golden tests only: they must never repeat). */
  random?: Uint8Array
  /** Crypto primitives; the async form defaults to WebCrypto. */
  crypto?: CryptoProvider
}

/** What decoding a key file takes. */
export interface DecodeContext {
  /** The encryption key, if the store has one. */
  secret?: Uint8Array | string | null
  /**
   * XXH3-128 of the key's CKE, 16 bytes big-endian (`keyHash(cke)`, or
   * `keyHashOfFileName(name)` when listing); needed for encrypted files.
   */
  keyHash?: Uint8Array
  /** Crypto primitives; the async form defaults to WebCrypto. */
  crypto?: CryptoProvider
  /**
   * With a `secret`: also read files that are not encrypted (encryptor id 0),
   * for the explicit migration of a plaintext store. Without it an encrypted
   * store refuses them with ERR_DECRYPT (FORMAT.md §4.3).
   */
  acceptPlaintext?: boolean
}

/** A key file as its two writes: header + meta segment, then the value segment. */
export interface EncodedParts {
  head: Uint8Array
  /** The stored value segment: the plain value itself when neither compressed nor encrypted. */
  value: Uint8Array
}

/** The header and meta segment of a file: what `keys` and `getMeta` need. */
export interface DecodedHead {
  header: Header
  /** The stored key's CKE (not validated). */
  key: Uint8Array
  /** The metadata bytes (a MessagePack map, not decoded here). */
  meta: Uint8Array
}

/** A whole decoded key file. */
export interface DecodedFile extends DecodedHead {
  serializer: number
  /** The value's plain bytes (a chunked blob's whole blob; empty for a log). */
  value: Uint8Array
  /** Where the log stands, for a log file (FORMAT.md §4.6). */
  log?: LogInfo
}

/**
 * Reads up to `length` bytes of a file from `pos` (fewer only at its end): how
 * blob.ts and log.ts read, from memory (`bytesReader`) or from a file.
 */
export type ReadAt = (pos: number, length: number) => Handler<Uint8Array>

/** A `ReadAt` over bytes in memory (views, not copies). */
export function bytesReader(bytes: Uint8Array): ReadAt {
  // eslint-disable-next-line require-yield
  return function* (pos, length) {
    return bytes.subarray(Math.min(pos, bytes.length), Math.min(bytes.length, pos + length))
  }
}

const corrupt = (message: string) => new KonserveError('ERR_CORRUPT', message)

const viewOf = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength)

/** XXH3-128 of a key's CKE: the MAC's key hash and the file name's digits. */
export const keyHash = (cke: Uint8Array): Uint8Array => xxh3_128(cke)

/** The key hash a key file name stands for, or `undefined` if `name` is not one (`<32 lowercase hex>.ksv`). */
export function keyHashOfFileName(name: string): Uint8Array | undefined {
  if (!/^[0-9a-f]{32}\.ksv$/.test(name)) return undefined
  const out = new Uint8Array(16)
  for (let i = 0; i < 16; i++) out[i] = parseInt(name.slice(2 * i, 2 * i + 2), 16)
  return out
}

// ---- header -----------------------------------------------------------------

/** Fails with `ERR_UNSUPPORTED_CODEC` unless both ids are known. */
function checkCodec(compressor: number, encryptor: number): void {
  if (compressor > COMPRESSOR_LZ4) {
    throw new KonserveError('ERR_UNSUPPORTED_CODEC', `compressor id ${compressor} is not supported by this build`)
  }
  if (encryptor > ENCRYPTOR_AES) {
    throw new KonserveError('ERR_UNSUPPORTED_CODEC', `encryptor id ${encryptor} is not supported by this build`)
  }
}

/** The 48 header bytes (version 1, header checksum filled in). */
export function encodeHeader(h: Header): Uint8Array {
  const out = new Uint8Array(HEADER_LEN)
  const v = viewOf(out)
  out.set(MAGIC)
  out[4] = FORMAT_VERSION
  out[5] = h.serializer
  out[6] = h.compressor
  out[7] = h.encryptor
  v.setUint32(8, h.flags ?? FLAG_NONE, true)
  v.setUint32(12, h.metaLen, true)
  v.setBigUint64(16, BigInt(h.valueLen), true)
  v.setBigUint64(24, h.metaChecksum, true)
  v.setBigUint64(32, h.valueChecksum, true)
  v.setBigUint64(40, xxh3_64(out.subarray(0, 40)), true)
  return out
}

/**
 * Decodes the header from the first bytes of a file of `fileLength` bytes,
 * checking in the order of §4: the length is at least 48, the magic, the header
 * checksum, the version, the flags, the codec ids, the total length (a log is
 * at least `48 + m + v` bytes, `v` = 128 with flags 6 and 0 with flags 2: its
 * records follow).
 */
export function decodeHeader(bytes: Uint8Array, fileLength: number): Header {
  if (fileLength < HEADER_LEN || bytes.length < HEADER_LEN) {
    throw corrupt(`file is ${fileLength} bytes, shorter than a header`)
  }
  const v = viewOf(bytes)
  if (MAGIC.some((m, i) => bytes[i] !== m)) throw corrupt('not a konserve key file (bad magic)')
  if (xxh3_64(bytes.subarray(0, 40)) !== v.getBigUint64(40, true)) throw corrupt('header checksum mismatch')
  const version = bytes[4]!
  if (version !== FORMAT_VERSION) {
    throw new KonserveError(
      'ERR_UNSUPPORTED_VERSION',
      `file format version ${version} is not supported (this build reads ${FORMAT_VERSION})`,
    )
  }
  const flags = v.getUint32(8, true)
  if (flags !== FLAG_NONE && flags !== FLAG_CHUNKED && flags !== FLAG_LOG && flags !== FLAGS_COMMITTED_LOG) {
    throw new KonserveError('ERR_UNSUPPORTED_CODEC', `unknown header flags 0x${flags.toString(16).padStart(8, '0')}`)
  }
  const compressor = bytes[6]!
  const encryptor = bytes[7]!
  checkCodec(compressor, encryptor)
  const header: Header = {
    flags,
    serializer: bytes[5]!,
    compressor,
    encryptor,
    metaLen: v.getUint32(12, true),
    valueLen: v.getUint32(16, true) + v.getUint32(20, true) * 0x100000000,
    metaChecksum: v.getBigUint64(24, true),
    valueChecksum: v.getBigUint64(32, true),
  }
  // Above 2^53 the sum is inexact, but then it cannot equal a real file's length.
  const declared = HEADER_LEN + header.metaLen + header.valueLen
  const logArea = flags === FLAG_LOG ? 0 : flags === FLAGS_COMMITTED_LOG ? LOG_COMMIT_AREA : undefined
  if (logArea !== undefined && (header.valueLen !== logArea || declared > fileLength)) {
    throw corrupt(`a log file of ${fileLength} bytes whose header says 48 + ${header.metaLen} + ${header.valueLen} (a log's value segment is ${logArea} bytes)`)
  }
  if (declared !== fileLength && logArea === undefined) {
    throw corrupt(`file is ${fileLength} bytes, its header says 48 + ${header.metaLen} + ${header.valueLen}`)
  }
  return header
}

// ---- meta segment -------------------------------------------------------------

/** The plain bytes of a meta segment: u32 LE key length, the key's CKE, the metadata. */
export function composeMeta(keyCke: Uint8Array, meta: Uint8Array): Uint8Array {
  if (keyCke.length > 0xffffffff) throw new KonserveError('ERR_INVALID_KEY', 'a key encoding is longer than 2^32 - 1 bytes')
  const plain = new Uint8Array(4 + keyCke.length + meta.length)
  viewOf(plain).setUint32(0, keyCke.length, true)
  plain.set(keyCke, 4)
  plain.set(meta, 4 + keyCke.length)
  return plain
}

/** Splits a meta segment's plain bytes into the key's CKE (not validated) and the metadata. */
export function splitMeta(plain: Uint8Array): { key: Uint8Array; meta: Uint8Array } {
  if (plain.length < 4) throw corrupt('meta segment is shorter than its key length field')
  const k = viewOf(plain).getUint32(0, true)
  if (k > plain.length - 4) throw corrupt('meta segment is shorter than the key it announces')
  return { key: plain.subarray(4, 4 + k), meta: plain.subarray(4 + k) }
}

// ---- segment codec (§4.4) ---------------------------------------------------------

interface SegmentContext {
  crypto: CryptoProvider
  secret: Uint8Array | undefined
  keyHash: Uint8Array | undefined
  acceptPlaintext?: boolean
}

/** How one file's segments are encoded: its codec ids and what encryption needs. */
export interface SegmentCodec extends SegmentContext {
  compressor: number
  encryptor: number
}

/** Where salts and IVs come from: `bytes` (fixed, golden tests only) from `pos` on, or the crypto provider. */
export interface RandomSource {
  bytes?: Uint8Array
  pos: number
}

function contextOf(ctx: DecodeContext): SegmentContext {
  const secret = typeof ctx.secret === 'string' ? new TextEncoder().encode(ctx.secret) : (ctx.secret ?? undefined)
  return { crypto: ctx.crypto ?? webCryptoProvider, secret, keyHash: ctx.keyHash, acceptPlaintext: ctx.acceptPlaintext === true }
}

/** The codec of a file with these ids (a header's, or a store's for new files). */
export function segmentCodec(compressor: number, encryptor: number, ctx: DecodeContext): SegmentCodec {
  // Written out (no spread): this is made for every read, and a spread copy costs microseconds.
  const c = contextOf(ctx)
  return { crypto: c.crypto, secret: c.secret, keyHash: c.keyHash, acceptPlaintext: c.acceptPlaintext, compressor, encryptor }
}

function secretOf(ctx: SegmentContext): Uint8Array {
  if (!ctx.secret) {
    throw new KonserveError('ERR_DECRYPT', 'the file is encrypted and the store was opened without an encryption key')
  }
  return ctx.secret
}

/**
 * ERR_DECRYPT when the store has a key and the file (by its header's
 * encryptor id) is not encrypted, unless plaintext is accepted for a
 * migration: anyone who can write the directory could have planted it.
 */
export function checkEncrypted(ctx: { secret?: Uint8Array | string | null; acceptPlaintext?: boolean }, encryptor: number): void {
  if (ctx.secret && encryptor !== ENCRYPTOR_AES && !ctx.acceptPlaintext) {
    throw new KonserveError(
      'ERR_DECRYPT',
      `the file is not encrypted (encryptor id ${encryptor}) and the store is: refused, since anyone who can write the directory could have planted it (open with acceptPlaintext to migrate a plaintext store)`,
    )
  }
}

function keyHashOf(ctx: SegmentContext): Uint8Array {
  if (!ctx.keyHash) throw new KonserveError('ERR_INVALID_ARGUMENT', 'decoding an encrypted file needs the key hash')
  return ctx.keyHash
}

/** Where salts and IVs come from: the fixed bytes when given, else the provider. */
function* draw(ctx: SegmentContext, random: RandomSource, n: number): Handler<Uint8Array> {
  if (!random.bytes) return yield* randomBytes(ctx.crypto, n)
  if (random.pos + n > random.bytes.length) throw new KonserveError('ERR_INVALID_ARGUMENT', 'fixed randomness used up')
  random.pos += n
  return random.bytes.subarray(random.pos - n, random.pos)
}

/**
 * The LZ4 and AES segment code (../lazy/codecs.ts): at hand in Node; in the
 * browser build loaded by the first async call that needs it (a blocking call
 * before that fails with ERR_NOT_SUPPORTED; the browser's stores are async).
 */
const segments = gensync({
  sync: (): Segments => {
    const s = segmentsNow()
    if (!s) throw new KonserveError('ERR_NOT_SUPPORTED', 'the LZ4 and AES code is loaded on demand in the browser: a blocking call cannot load it')
    return s
  },
  async: (): Promise<Segments> => loadSegments(),
})

function* encodeSegment(
  ctx: SegmentContext,
  compressor: number,
  encryptor: number,
  kind: number,
  plain: Uint8Array,
  random: RandomSource,
  index?: number,
): Handler<Uint8Array> {
  checkCodec(compressor, encryptor)
  if (compressor !== COMPRESSOR_LZ4 && encryptor !== ENCRYPTOR_AES) return plain
  const codecs = yield* segments()
  const compressed = compressor === COMPRESSOR_LZ4 ? codecs.lz4Compress(plain) : plain
  if (encryptor !== ENCRYPTOR_AES) return compressed
  const secret = secretOf(ctx)
  const salt = yield* draw(ctx, random, SALT_LEN)
  const iv = yield* draw(ctx, random, IV_LEN)
  return yield* codecs.sealSegment(ctx.crypto, secret, kind, keyHashOf(ctx), compressed, salt, iv, index)
}

/** A segment's plain bytes from its stored bytes (checksum already checked). */
function* decodeSegment(
  ctx: SegmentContext,
  header: { compressor: number; encryptor: number },
  kind: number,
  stored: Uint8Array,
  index?: number,
): Handler<Uint8Array> {
  checkCodec(header.compressor, header.encryptor)
  checkEncrypted(ctx, header.encryptor)
  if (header.compressor !== COMPRESSOR_LZ4 && header.encryptor !== ENCRYPTOR_AES) return stored
  const codecs = yield* segments()
  const decrypted =
    header.encryptor === ENCRYPTOR_AES ? yield* codecs.openSegment(ctx.crypto, secretOf(ctx), kind, keyHashOf(ctx), stored, index) : stored
  return header.compressor === COMPRESSOR_LZ4 ? codecs.lz4Decompress(decrypted) : decrypted
}

/**
 * `encrypt(compress(plain))` with the file's codec (§4.4); `index` is the
 * chunk or record index bound into the MAC (kinds 2, 3, 4). With neither
 * compression nor encryption the result is `plain` itself.
 */
export const encodeSegmentAt = gensync(function* (
  codec: SegmentCodec,
  kind: number,
  index: number | undefined,
  plain: Uint8Array,
  random?: RandomSource,
): Handler<Uint8Array> {
  return yield* encodeSegment(codec, codec.compressor, codec.encryptor, kind, plain, random ?? { pos: 0 }, index)
})

/** `decompress(decrypt(stored))` with the file's codec (the caller checked the checksum). */
export const decodeSegmentAt = gensync(function* (
  codec: SegmentCodec,
  kind: number,
  index: number | undefined,
  stored: Uint8Array,
): Handler<Uint8Array> {
  return yield* decodeSegment(codec, codec, kind, stored, index)
})

/** The stored meta segment of a new file: the key's CKE and the metadata, encoded (§4.4). */
export const encodeMetaSegment = gensync(function* (
  codec: SegmentCodec,
  keyCke: Uint8Array,
  meta: Uint8Array,
  random?: RandomSource,
): Handler<Uint8Array> {
  const stored = yield* encodeSegment(codec, codec.compressor, codec.encryptor, META, composeMeta(keyCke, meta), random ?? { pos: 0 })
  if (stored.length > 0xffffffff) {
    throw new KonserveError('ERR_INVALID_ARGUMENT', "a key and its metadata exceed the format's 4 GiB")
  }
  return stored
})

/** A plain (flags 0) file's value from its stored value segment: checksum, then decode. */
export const decodeValueSegment = gensync(function* (codec: SegmentCodec, header: Header, stored: Uint8Array): Handler<Uint8Array> {
  if (xxh3_64(stored) !== header.valueChecksum) throw corrupt('value segment checksum mismatch')
  return yield* decodeSegment(codec, header, VALUE, stored)
})

// ---- the common case, without generators ------------------------------------------

/**
 * The header, key and metadata of a whole key file `bytes` in the common case
 * only: a plain value (flags 0) stored without compression or encryption,
 * its header and meta checksum right (the checks of the general head decode,
 * decodeKeyFileHead; the value segment is not read). Undefined for anything
 * else, a log, a chunked blob, a codec or damage alike: the caller then
 * decodes by the general path, which says what it is. Views of `bytes`. What
 * hot reads run instead of the generators (no Promises either).
 */
export function decodePlainHead(bytes: Uint8Array): DecodedHead | undefined {
  let header: Header
  try {
    header = decodeHeader(bytes, bytes.length)
  } catch {
    return undefined
  }
  if (header.flags !== FLAG_NONE || header.compressor !== COMPRESSOR_NONE || header.encryptor !== ENCRYPTOR_NONE) return undefined
  // decodeHeader checked that 48 + m + v is the length of `bytes`.
  const valueAt = HEADER_LEN + header.metaLen
  if (xxh3_64(bytes.subarray(HEADER_LEN, valueAt)) !== header.metaChecksum) return undefined
  // The meta segment: u32 LE key length, the key's CKE, the metadata (splitMeta).
  if (header.metaLen < 4) return undefined
  const k = viewOf(bytes).getUint32(HEADER_LEN, true)
  if (k > header.metaLen - 4) return undefined
  return { header, key: bytes.subarray(HEADER_LEN + 4, HEADER_LEN + 4 + k), meta: bytes.subarray(HEADER_LEN + 4 + k, valueAt) }
}

/**
 * The serializer and stored value of a whole key file `bytes` that should
 * hold `key`, in decodePlainHead's common case, the key and the value
 * checksum checked too (all the general decode checks); undefined for
 * anything else. The value is a view of `bytes`. Where it answers, the
 * general decode returns the same serializer and bytes
 * (__test__/pure-get-fast.spec.ts).
 */
export function decodePlainValue(bytes: Uint8Array, key: Uint8Array): { serializer: number; value: Uint8Array } | undefined {
  const h = decodePlainHead(bytes)
  if (!h || h.key.length !== key.length) return undefined
  for (let i = 0; i < key.length; i++) if (h.key[i] !== key[i]) return undefined
  const value = bytes.subarray(HEADER_LEN + h.header.metaLen)
  if (xxh3_64(value) !== h.header.valueChecksum) return undefined
  return { serializer: h.header.serializer, value }
}

// ---- whole files --------------------------------------------------------------

function* encodeParts(input: EncodeInput): Handler<EncodedParts> {
  const c = contextOf(input)
  const ctx: SegmentContext = { crypto: c.crypto, secret: c.secret, keyHash: keyHash(input.keyCke), acceptPlaintext: c.acceptPlaintext }
  const random = { bytes: input.random, pos: 0 }
  const { compressor, encryptor } = input
  const metaStored = yield* encodeSegment(ctx, compressor, encryptor, META, composeMeta(input.keyCke, input.meta), random)
  const valueStored = yield* encodeSegment(ctx, compressor, encryptor, VALUE, input.value, random)
  if (metaStored.length > 0xffffffff) {
    throw new KonserveError('ERR_INVALID_ARGUMENT', "a key and its metadata exceed the format's 4 GiB")
  }
  const header = encodeHeader({
    serializer: input.serializer,
    compressor,
    encryptor,
    metaLen: metaStored.length,
    valueLen: valueStored.length,
    metaChecksum: xxh3_64(metaStored),
    valueChecksum: xxh3_64(valueStored),
  })
  const head = new Uint8Array(HEADER_LEN + metaStored.length)
  head.set(header)
  head.set(metaStored, HEADER_LEN)
  return { head, value: valueStored }
}

function* encodeWhole(input: EncodeInput): Handler<Uint8Array> {
  const { head, value } = yield* encodeParts(input)
  const file = new Uint8Array(head.length + value.length)
  file.set(head)
  file.set(value, head.length)
  return file
}

/**
 * How many bytes the header and meta segment of a file of `fileLength` bytes
 * take, from its first bytes `prefix` (a header's meta length, §4): what to
 * read before `decodeKeyFileHead`. A prefix shorter than a header gives its
 * own length (the decode then says what is wrong); never more than the file.
 */
export function headLength(prefix: Uint8Array, fileLength: number): number {
  if (prefix.length < HEADER_LEN) return prefix.length
  return Math.min(fileLength, HEADER_LEN + viewOf(prefix).getUint32(12, true))
}

function* decodeHead(prefix: Uint8Array, fileLength: number, ctx: SegmentContext): Handler<DecodedHead> {
  const header = decodeHeader(prefix, fileLength)
  const end = HEADER_LEN + header.metaLen
  if (prefix.length < end) throw corrupt('file ends inside the meta segment')
  const stored = prefix.subarray(HEADER_LEN, end)
  if (xxh3_64(stored) !== header.metaChecksum) throw corrupt('meta segment checksum mismatch')
  const plain = yield* decodeSegment(ctx, header, META, stored)
  const { key, meta } = splitMeta(plain)
  return { header, key, meta }
}

const encodePartsG = gensync(encodeParts)
const encodeWholeG = gensync(encodeWhole)
const decodeHeadG = gensync(function* (prefix: Uint8Array, fileLength: number, context: DecodeContext) {
  return yield* decodeHead(prefix, fileLength, contextOf(context))
})
/** `decodeKeyFileHead*` as a gensync operation (to `yield*` in other gensync generators). */
export const decodeKeyFileHead = decodeHeadG

/** Encodes a key file: header + meta segment, and the value segment, to write one after the other. */
export const encodeKeyFilePartsSync = (input: EncodeInput): EncodedParts => encodePartsG.sync(input)
export const encodeKeyFilePartsAsync = (input: EncodeInput): Promise<EncodedParts> => encodePartsG.async(input)

/** Encodes a whole key file as one buffer. */
export const encodeKeyFileSync = (input: EncodeInput): Uint8Array => encodeWholeG.sync(input)
export const encodeKeyFileAsync = (input: EncodeInput): Promise<Uint8Array> => encodeWholeG.async(input)

/**
 * Decodes the header and meta segment from the start of a file: `prefix` holds
 * at least its first `48 + metaLen` bytes (more is ignored; `decodeHeader` on the
 * first 48 says how many), `fileLength` is the file's total length.
 */
export const decodeKeyFileHeadSync = (prefix: Uint8Array, fileLength: number, ctx: DecodeContext): DecodedHead =>
  decodeHeadG.sync(prefix, fileLength, ctx)
export const decodeKeyFileHeadAsync = (prefix: Uint8Array, fileLength: number, ctx: DecodeContext): Promise<DecodedHead> =>
  decodeHeadG.async(prefix, fileLength, ctx)
