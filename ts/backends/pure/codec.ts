/**
 * The codec as the pure file backing uses it: ts/codec/ (the same bytes as the
 * Rust core) bound to one store's compressor and key, with node:crypto doing
 * the cryptography in both the sync and the async form.
 */
import type { Handler } from 'gensync'
import type { RawWrite } from '../../backing/index.js'
import {
  type EncodedParts,
  type Header,
  type SegmentCodec,
  decodeKeyFileHead,
  segmentCodec,
  decodeKeyFileAsync,
  decodeKeyFileHeadAsync,
  decodeKeyFileHeadSync,
  decodeKeyFileSync,
  encodeKeyFilePartsAsync,
  encodeKeyFilePartsSync,
  keyHash,
  keyHashOfFileName,
} from '../../format/file.js'
import { fileName } from '../../codec/xxhash.js'
import { nodeCryptoProvider } from '../../crypto-node.js'

export interface DecodedHead {
  serializer: number
  key: Uint8Array
  meta: Uint8Array
  /** The file's header (flags, codec ids, segment lengths). */
  header: Header
}

export interface DecodedEntry extends DecodedHead {
  value: Uint8Array
}

export interface PureCodec {
  /** `<32 hex>.ksv` of a key's CKE. */
  fileName(cke: Uint8Array): string
  encodeSync(w: RawWrite): EncodedParts
  encode(w: RawWrite): Promise<EncodedParts>
  /** Decodes a whole file that should hold `key`. */
  decodeSync(bytes: Uint8Array, key: Uint8Array): DecodedEntry
  decode(bytes: Uint8Array, key: Uint8Array): Promise<DecodedEntry>
  /**
   * Decodes a file's header and meta segment; the key hash comes from `key`
   * (a lookup) or from the file's `name` (a listing).
   */
  decodeHeadSync(head: Uint8Array, fileLength: number, key?: Uint8Array, name?: string): DecodedHead
  decodeHead(head: Uint8Array, fileLength: number, key?: Uint8Array, name?: string): Promise<DecodedHead>
  /** `decodeHead*` as a gensync operation, to `yield*` in the backing's generators. */
  decodeHeadGen(head: Uint8Array, fileLength: number, key?: Uint8Array, name?: string): Handler<DecodedHead>
  /** The codec new files of `key` are written with: the store's compressor and key. */
  writeCodec(key: Uint8Array): SegmentCodec
  /** The codec a file is read (and a log appended to) with: the ids its header names, the store's key. */
  readCodec(header: { compressor: number; encryptor: number }, key: Uint8Array): SegmentCodec
}

export function createPureCodec(compressor: number, secret?: Uint8Array, acceptPlaintext = false): PureCodec {
  const crypto = nodeCryptoProvider
  const encryptor = secret ? 1 : 0
  const input = (w: RawWrite) => ({ compressor, encryptor, secret, crypto, keyCke: w.key, serializer: w.serializer, meta: w.meta, value: w.value })
  const ctx = (key?: Uint8Array, name?: string) => ({
    secret,
    crypto,
    acceptPlaintext,
    keyHash: key ? keyHash(key) : name ? keyHashOfFileName(name) : undefined,
  })
  const head = (d: { header: Header; key: Uint8Array; meta: Uint8Array }): DecodedHead => ({
    serializer: d.header.serializer,
    key: d.key,
    meta: d.meta,
    header: d.header,
  })
  return {
    fileName,
    encodeSync: (w) => encodeKeyFilePartsSync(input(w)),
    encode: (w) => encodeKeyFilePartsAsync(input(w)),
    decodeSync: (bytes, key) => decodeKeyFileSync(bytes, ctx(key)),
    decode: (bytes, key) => decodeKeyFileAsync(bytes, ctx(key)),
    decodeHeadSync: (h, n, key, name) => head(decodeKeyFileHeadSync(h, n, ctx(key, name))),
    decodeHead: async (h, n, key, name) => head(await decodeKeyFileHeadAsync(h, n, ctx(key, name))),
    *decodeHeadGen(h, n, key, name) {
      return head(yield* decodeKeyFileHead(h, n, ctx(key, name)))
    },
    writeCodec: (key) => segmentCodec(compressor, encryptor, ctx(key)),
    readCodec: (header, key) => segmentCodec(header.compressor, header.encryptor, ctx(key)),
  }
}
