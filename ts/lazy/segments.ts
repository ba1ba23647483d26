/** What ./codecs.ts loads for the segment codecs (FORMAT.md §4.2-4.4): LZ4 and the AES segment seal/open. */
export { lz4Compress, lz4Decompress } from '../codec/lz4.js'
export { openSegment, sealSegment } from '../codec/aes.js'
