/**
 * The CBOR serializer's cbor-x side (its options and extensions), apart from
 * ./serializers.ts so that the browser build can load cbor-x only when a
 * store uses CBOR (./lazy/codecs.ts). The checks before encoding (what CBOR
 * refuses, -0 and far dates marked) stay in ./serializers.ts.
 */
import { Encoder as CborEncoder, addExtension as addCborExtension } from 'cbor-x'
import { FarDate, NegativeZero } from './serializers.js'

/** Encodes and decodes with one cbor-x encoder (the value already checked and marked). */
export interface CborCodec {
  encode(value: unknown): Uint8Array
  decode(bytes: Uint8Array): unknown
}

// CBOR, as RFC 8949 and the IANA tag registry define it, so any CBOR reader can
// read it: plain objects as maps, Map as tag 259 (explicit map), Set as tag
// 258, Date as tag 1, BigInt as a 64-bit integer or a bignum (tags 2/3),
// undefined as simple value 23, typed arrays as tags 64..87, a Buffer as a
// byte string, RegExp as tag 27, cycles and shared references as tags 28/29.
// No records, no packed strings: each value is self-contained.
const cborOptions = {
  useRecords: false,
  mapsAsObjects: true,
  useTag259ForMaps: true,
  structuredClone: true,
  tagUint8Array: true,
  pack: false,
  // As for msgpack: binary fields never view the bytes read.
  copyBuffers: true,
} as const


let registered = false

/**
 * The extensions (the -0 marker, far Dates as tag 0), registered on first use
 * rather than at load: ./serializers.ts, which defines their classes, imports
 * this module in the eager build, so its classes may not exist yet when this
 * module is evaluated.
 */
function register(): void {
  if (registered) return
  registered = true
  // -0 for cbor-x, which writes every -0 as the integer 0: the marker is written
  // (no tag) as a float 64 -0 (`fb 80 00 00 00 00 00 00 00`), which every CBOR
  // reader reads as -0. cbor-x reads `alwaysUseFloat` on each number it writes.
  addCborExtension({
    Class: NegativeZero,
    tag: undefined,
    encode(this: { alwaysUseFloat?: boolean }, _v: unknown, encode: (v: unknown) => void) {
      const before = this.alwaysUseFloat
      this.alwaysUseFloat = true
      try {
        encode(-0)
      } finally {
        this.alwaysUseFloat = before
      }
    },
  } as unknown as Parameters<typeof addCborExtension>[0])

  addCborExtension({
    Class: FarDate,
    tag: 0,
    encode(v: FarDate, encode: (v: unknown) => void) {
      encode(v.iso)
    },
    // cbor-x's own reading of tag 0 (registering the class replaces it).
    decode: (iso: string) => new Date(iso),
  } as unknown as Parameters<typeof addCborExtension>[0])
}

/** A new codec (one cbor-x encoder). */
export function cborCodec(): CborCodec {
  register()
  const encoder = new CborEncoder(cborOptions)
  return { encode: (value) => encoder.encode(value), decode: (bytes) => encoder.decode(bytes) }
}
