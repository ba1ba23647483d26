/**
 * The codec as the pure file backing uses it: ts/codec/ (the same bytes as the
 * Rust core) bound to one store's compressor and key, with node:crypto doing
 * the cryptography in both the sync and the async form.
 */
import gensync from 'gensync'
import type { RawWrite } from '../../backing/index.js'
import type { Op } from '../../backing/seam.js'
import {
  type EncodedParts,
  type Header,
  type SegmentCodec,
  decodeKeyFileHead,
  encodeKeyFilePartsAsync,
  encodeKeyFilePartsSync,
  keyHash,
  keyHashOfFileName,
  segmentCodec,
} from '../../format/file.js'
import { toHex } from '../../codec/xxhash.js'
import { decodeKeyFile } from '../../format/keyfile.js'
import { nodeCryptoProvider } from '../../crypto-node.js'

export interface DecodedHead {
  serializer: number
  key: Uint8Array
  meta: Uint8Array
  /** The file's header (flags, codec ids, segment lengths). */
  header: Header
}

/** A whole key file decoded: its head and the value's bytes. */
export interface DecodedEntry extends DecodedHead {
  value: Uint8Array
}

export interface PureCodec {
  /** Whether the store has an encryption key (its reads then check every file is encrypted). */
  readonly encrypted: boolean
  /** Whether new files are written compressed (the store's compressor is not 0). */
  readonly compressed: boolean
  /** `<32 hex>.ksv` of a key's CKE. */
  fileName(cke: Uint8Array): string
  /** A key file's bytes: header + meta segment, and the value segment. */
  encode: Op<[w: RawWrite], EncodedParts>
  /**
   * Decodes a file's header and meta segment; the key hash comes from `key`
   * (a lookup) or from the file's `name` (a listing).
   */
  decodeHead: Op<[head: Uint8Array, fileLength: number, key?: Uint8Array, name?: string], DecodedHead>
  /** Decodes a whole file that should hold `key` (backends that keep files whole: Redis). */
  decode: Op<[bytes: Uint8Array, key: Uint8Array], DecodedEntry>
  /** The codec new files of `key` are written with: the store's compressor and key. */
  writeCodec(key: Uint8Array): SegmentCodec
  /** The codec a file is read (and a log appended to) with: the ids its header names, the store's key. */
  readCodec(header: { compressor: number; encryptor: number }, key: Uint8Array): SegmentCodec
}

export function createPureCodec(compressor: number, secret?: Uint8Array, acceptPlaintext = false): PureCodec {
  const crypto = nodeCryptoProvider
  const encryptor = secret ? 1 : 0
  const input = (w: RawWrite) => ({ compressor, encryptor, secret, crypto, keyCke: w.key, serializer: w.serializer, meta: w.meta, value: w.value })
  // A read hashes its key twice (the file's name, then the key hash the
  // segments are checked with): the last key's hash is kept for the second.
  // Keys are the engine's own CKE arrays, never changed once made.
  let lastKey: Uint8Array | undefined
  let lastHash: Uint8Array | undefined
  const hashOf = (key: Uint8Array): Uint8Array => {
    if (key !== lastKey) {
      lastHash = keyHash(key)
      lastKey = key
    }
    return lastHash!
  }
  const ctx = (key?: Uint8Array, name?: string) => ({
    secret,
    crypto,
    acceptPlaintext,
    keyHash: key ? hashOf(key) : name ? keyHashOfFileName(name) : undefined,
  })
  return {
    encrypted: secret != null,
    compressed: compressor !== 0,
    fileName: (cke) => `${toHex(hashOf(cke))}.ksv`,
    // The blocking encoder runs node:crypto's blocking primitives; the async one its Promise forms.
    encode: gensync({ sync: (w: RawWrite) => encodeKeyFilePartsSync(input(w)), async: (w: RawWrite) => encodeKeyFilePartsAsync(input(w)) }),
    decodeHead: gensync(function* (h: Uint8Array, n: number, key?: Uint8Array, name?: string) {
      const d = yield* decodeKeyFileHead(h, n, ctx(key, name))
      return { serializer: d.header.serializer, key: d.key, meta: d.meta, header: d.header }
    }),
    decode: gensync(function* (bytes: Uint8Array, key: Uint8Array) {
      const d = yield* decodeKeyFile(bytes, ctx(key))
      return { ...d, serializer: d.header.serializer }
    }),
    writeCodec: (key) => segmentCodec(compressor, encryptor, ctx(key)),
    readCodec: (header, key) => segmentCodec(header.compressor, header.encryptor, ctx(key)),
  }
}
