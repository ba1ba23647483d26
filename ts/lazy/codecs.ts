/**
 * The code of the value codecs (LZ4, the AES segment seal/open) and of the
 * CBOR serializer (cbor-x), as the rest of the library reaches it. This file
 * is the eager form: everything imported up front (Node, and any build that
 * does not swap it). The browser build (tsup.config.ts, `lazyCodecs`) swaps
 * it for ./codecs.browser.ts, which loads the same modules by dynamic
 * `import()` the first time a store uses them, so an app that never
 * compresses, encrypts or writes CBOR never downloads their code.
 */
import { type CborCodec, cborCodec } from '../serializers-cbor.js'
import * as segments from './segments.js'

export type Segments = typeof segments
export type { CborCodec }

/** The segment codecs if loaded (always, here). */
export const segmentsNow = (): Segments | undefined => segments
/** Loads the segment codecs. */
export const loadSegments = async (): Promise<Segments> => segments
/** A new CBOR codec if cbor-x is loaded (always, here). */
export const cborNow = (): (() => CborCodec) | undefined => cborCodec
/** Loads cbor-x. */
export const loadCbor = async (): Promise<() => CborCodec> => cborCodec
