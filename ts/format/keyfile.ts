/**
 * A whole key file of any kind (docs/FORMAT.md §4): a flat value, a chunked
 * blob (§4.5) or an append log (§4.6), decoded with every check. The top of
 * the format layer: it builds on file.ts (header, segments), blob.ts and
 * log.ts, and none of them imports it. No I/O, no `node:` imports.
 */
import gensync, { type Handler } from 'gensync'
import { decodeChunkedValue } from './blob.js'
import {
  type DecodeContext,
  type DecodedFile,
  FLAG_CHUNKED,
  HEADER_LEN,
  bytesReader,
  decodeKeyFileHead,
  decodeValueSegment,
  isLogHeader,
  segmentCodec,
} from './file.js'
import { readLogInfo } from './log.js'

function* decodeWhole(bytes: Uint8Array, context: DecodeContext): Handler<DecodedFile> {
  const head = yield* decodeKeyFileHead(bytes, bytes.length, context)
  const { header } = head
  const codec = segmentCodec(header.compressor, header.encryptor, context)
  const valueStart = HEADER_LEN + header.metaLen
  if (header.flags === FLAG_CHUNKED) {
    const value = yield* decodeChunkedValue(bytesReader(bytes), codec, header, valueStart)
    return { ...head, serializer: header.serializer, value }
  }
  if (isLogHeader(header)) {
    const log = yield* readLogInfo(bytesReader(bytes), header, bytes, codec, bytes.length)
    return { ...head, serializer: header.serializer, value: new Uint8Array(0), log }
  }
  // The total length was checked against the header, so this view is exact.
  const value = yield* decodeValueSegment(codec, header, bytes.subarray(valueStart))
  return { ...head, serializer: header.serializer, value }
}

/**
 * Decodes a whole key file, checking everything §4 lists: a chunked blob's
 * value is the whole blob; a log's value is empty and `log` says where it
 * stands. A gensync operation: `.sync`, `.async`, or `yield*`.
 */
export const decodeKeyFile = gensync(decodeWhole)
export const decodeKeyFileSync = (bytes: Uint8Array, ctx: DecodeContext): DecodedFile => decodeKeyFile.sync(bytes, ctx)
export const decodeKeyFileAsync = (bytes: Uint8Array, ctx: DecodeContext): Promise<DecodedFile> => decodeKeyFile.async(bytes, ctx)
