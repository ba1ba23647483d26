/**
 * The browser build's form of ./codecs.ts (swapped in by tsup.config.ts,
 * `lazyCodecs`): LZ4 and the AES segment code (./segments.ts) and cbor-x
 * (../serializers-cbor.ts) load by dynamic `import()` the first time a
 * store compresses, encrypts, or writes or reads a CBOR value: a bundler
 * puts them in chunks of their own, fetched only then.
 */
import type { CborCodec } from '../serializers-cbor.js'
import type * as segments from './segments.js'

export type Segments = typeof segments
export type { CborCodec }

let segs: Segments | undefined
let cbor: (() => CborCodec) | undefined

export const segmentsNow = (): Segments | undefined => segs
export const loadSegments = async (): Promise<Segments> => {
  segs ??= await import('./segments.js')
  return segs
}
export const cborNow = (): (() => CborCodec) | undefined => cbor
export const loadCbor = async (): Promise<() => CborCodec> => {
  cbor ??= (await import('../serializers-cbor.js')).cborCodec
  return cbor
}
