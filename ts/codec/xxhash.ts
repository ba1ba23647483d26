/**
 * xxHash as docs/FORMAT.md uses it: XXH32 (LZ4 frame checksums), XXH3-64 (the
 * key file checksums, §4) and XXH3-128 (file names, §3), seed 0 and the default
 * secret for XXH3. Written from the xxHash specification; checked against the
 * reference library in __test__/pure-codec.spec.ts.
 *
 * No BigInt in the arithmetic: a 64-bit value is a pair of u32 (hi, lo), so
 * hashing a large segment costs milliseconds in every engine. No `node:`
 * imports: shared with the browser store.
 */
import { INPUT_AT, accumulateLongWasm, wasmAccumulator } from './xxh3-wasm.js'

const P32_1 = 0x9e3779b1
const P32_2 = 0x85ebca77
const P32_3 = 0xc2b2ae3d
const P32_4 = 0x27d4eb2f
const P32_5 = 0x165667b1
// 64-bit primes as (hi, lo).
const P64_1H = 0x9e3779b1, P64_1L = 0x85ebca87
const P64_2H = 0xc2b2ae3d, P64_2L = 0x27d4eb4f
const P64_3H = 0x165667b1, P64_3L = 0x9e3779f9
const P64_4H = 0x85ebca77, P64_4L = 0xc2b2ae63
const P64_5H = 0x27d4eb2f, P64_5L = 0x165667c5
const MX1H = 0x16566791, MX1L = 0x9e3779f9
const MX2H = 0x9fb21c65, MX2L = 0x1e98df25

/** XXH3's default 192-byte secret (kSecret). */
const SECRET = new Uint8Array([
  0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
  0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
  0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
  0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
  0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
  0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
  0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
  0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
  0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
  0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
  0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
  0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
])
const SECRET_LEN = 192
const STRIPE_LEN = 64
const STRIPES_PER_BLOCK = (SECRET_LEN - STRIPE_LEN) / 8
const BLOCK_LEN = STRIPE_LEN * STRIPES_PER_BLOCK
// Secret offsets of the 129..240-byte paths (XXH3_MIDSIZE_STARTOFFSET, SECRET_SIZE_MIN - MIDSIZE_LASTOFFSET).
const MIDSIZE_START = 3
const MIDSIZE_LAST = 136 - 17

/** u32 little-endian at `i`. */
function rd32(b: Uint8Array, i: number): number {
  return (b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16) | (b[i + 3]! << 24)) >>> 0
}

/** The secret as little-endian u32 words at every byte offset (the long loop reads it at many offsets). */
const SW = new Uint32Array(SECRET_LEN - 3)
for (let i = 0; i < SW.length; i++) SW[i] = rd32(SECRET, i)
const sec32 = (i: number) => SW[i]!

// ---- 64-bit arithmetic on (hi, lo) pairs of u32 -----------------------------
// Helpers return through these module variables to avoid allocating.
let H = 0
let L = 0

/**
 * (H, L) = a * b for u32 a, b. The low word is exact (Math.imul); the double
 * product is within 2^11 of the exact one, so with the exact low word it
 * rounds to the exact high word (as in accumulate512).
 */
function mul32(a: number, b: number): void {
  L = Math.imul(a, b) >>> 0
  H = Math.round((a * b - L) / 0x100000000) >>> 0
}

/** (H, L) = low 64 bits of a * b. */
function mul64(ah: number, al: number, bh: number, bl: number): void {
  mul32(al, bl)
  H = (H + Math.imul(ah, bl) + Math.imul(al, bh)) >>> 0
}

// The 128-bit product of mul128: high 64 bits (H, L), low 64 bits (LH, LL).
let LH = 0
let LL = 0

/** The full 128-bit product a * b. */
function mul128(ah: number, al: number, bh: number, bl: number): void {
  mul32(al, bl)
  const w0 = L, c0 = H
  mul32(al, bh)
  const x1 = L, x2 = H
  mul32(ah, bl)
  const y1 = L, y2 = H
  mul32(ah, bh)
  const w1 = c0 + x1 + y1 // < 3 * 2^32: exact
  const w1c = Math.floor(w1 / 0x100000000)
  const w2 = x2 + y2 + L + w1c
  const w2c = Math.floor(w2 / 0x100000000)
  LL = w0
  LH = w1 >>> 0
  L = w2 >>> 0
  H = (H + w2c) >>> 0
}

/** (H, L) = low64 ^ high64 of a * b (XXH3's mul128_fold64). */
function fold64(ah: number, al: number, bh: number, bl: number): void {
  mul128(ah, al, bh, bl)
  H = (H ^ LH) >>> 0
  L = (L ^ LL) >>> 0
}

/** (H, L) = a + b. */
function add64(ah: number, al: number, bh: number, bl: number): void {
  const l = al + bl
  L = l >>> 0
  H = (ah + bh + (l > 0xffffffff ? 1 : 0)) >>> 0
}

/** (H, L) = XXH3_avalanche(h, l). */
function avalanche3(h: number, l: number): void {
  l = (l ^ (h >>> 5)) >>> 0 // x ^= x >> 37
  mul64(h, l, MX1H, MX1L)
  L = (L ^ H) >>> 0 // x ^= x >> 32
}

/** (H, L) = XXH64_avalanche(h, l). */
function avalanche64(h: number, l: number): void {
  l = (l ^ (h >>> 1)) >>> 0 // x ^= x >> 33
  mul64(h, l, P64_2H, P64_2L)
  l = (L ^ ((L >>> 29) | (H << 3))) >>> 0 // x ^= x >> 29
  h = (H ^ (H >>> 29)) >>> 0
  mul64(h, l, P64_3H, P64_3L)
  L = (L ^ H) >>> 0 // x ^= x >> 32
}

const bswap32 = (x: number) => ((x >>> 24) | ((x >>> 8) & 0xff00) | ((x << 8) & 0xff0000) | (x << 24)) >>> 0
const rotl32 = (x: number, r: number) => ((x << r) | (x >>> (32 - r))) >>> 0

/** The high word of a length taken as a u64 (lengths may exceed 2^32). */
const hiOf = (n: number) => Math.floor(n / 0x100000000) >>> 0

// ---- XXH32 -------------------------------------------------------------------

const round32 = (acc: number, lane: number) => Math.imul(rotl32((acc + Math.imul(lane, P32_2)) >>> 0, 13), P32_1) >>> 0

/** XXH32 of `input`. */
export function xxh32(input: Uint8Array, seed = 0): number {
  const n = input.length
  let p = 0
  let h: number
  if (n >= 16) {
    let v1 = (seed + P32_1 + P32_2) >>> 0
    let v2 = (seed + P32_2) >>> 0
    let v3 = seed >>> 0
    let v4 = (seed - P32_1) >>> 0
    for (const limit = n - 16; p <= limit; p += 16) {
      v1 = round32(v1, rd32(input, p))
      v2 = round32(v2, rd32(input, p + 4))
      v3 = round32(v3, rd32(input, p + 8))
      v4 = round32(v4, rd32(input, p + 12))
    }
    h = (rotl32(v1, 1) + rotl32(v2, 7) + rotl32(v3, 12) + rotl32(v4, 18)) >>> 0
  } else {
    h = (seed + P32_5) >>> 0
  }
  h = (h + n) >>> 0
  for (; p + 4 <= n; p += 4) h = Math.imul(rotl32((h + Math.imul(rd32(input, p), P32_3)) >>> 0, 17), P32_4)
  for (; p < n; p++) h = Math.imul(rotl32((h + Math.imul(input[p]!, P32_5)) >>> 0, 11), P32_1)
  h ^= h >>> 15
  h = Math.imul(h, P32_2)
  h ^= h >>> 13
  h = Math.imul(h, P32_3)
  h ^= h >>> 16
  return h >>> 0
}

// ---- XXH3: shared parts --------------------------------------------------------

/** (H, L) = XXH3_mix16B(input[ip..], secret[sp..]) with seed 0. */
function mix16(input: Uint8Array, ip: number, sp: number): void {
  fold64(
    (rd32(input, ip + 4) ^ sec32(sp + 4)) >>> 0,
    (rd32(input, ip) ^ sec32(sp)) >>> 0,
    (rd32(input, ip + 12) ^ sec32(sp + 12)) >>> 0,
    (rd32(input, ip + 8) ^ sec32(sp + 8)) >>> 0,
  )
}

/** XXH3_INIT_ACC, low word first. */
const INIT_ACC = new Uint32Array([
  P32_3, 0, P64_1L, P64_1H, P64_2L, P64_2H, P64_3L, P64_3H,
  P64_4L, P64_4H, P32_2, 0, P64_5L, P64_5H, P32_1, 0,
])

/**
 * Whether XXH3 may run in WebAssembly (./xxh3-wasm.ts) where there is one:
 * every input over 16 bytes does, copy and call included (17..240 bytes:
 * 0.1 µs against 0.4-1.5 µs in JavaScript; 241..1023: 0.7 against 1.0-1.6).
 */
let wasmAllowed = true

/** Whether XXH3 may run in WebAssembly (tests turn it off to check the JavaScript gives the same). */
export function useWasmXxh3(on: boolean): void {
  wasmAllowed = on
}

/** Whether inputs over 16 bytes are hashed in WebAssembly here. */
export const wasmXxh3 = (): boolean => wasmAllowed && wasmAccumulator(SECRET) !== null

/** The 8 accumulators of the long-input loop: lane i is (acc[2i + 1], acc[2i]). */
function accumulateLong(input: Uint8Array): Uint32Array {
  if (wasmAllowed) {
    const k = wasmAccumulator(SECRET)
    if (k) return accumulateLongWasm(k, input, INIT_ACC)
  }
  const acc = INIT_ACC.slice()
  const n = input.length
  const view = new DataView(input.buffer, input.byteOffset, n)
  const blocks = Math.floor((n - 1) / BLOCK_LEN)
  for (let b = 0; b < blocks; b++) {
    const start = b * BLOCK_LEN
    for (let s = 0; s < STRIPES_PER_BLOCK; s++) accumulate512(acc, view, start + s * STRIPE_LEN, s * 8)
    scramble(acc)
  }
  const start = blocks * BLOCK_LEN
  const stripes = Math.floor((n - 1 - start) / STRIPE_LEN)
  for (let s = 0; s < stripes; s++) accumulate512(acc, view, start + s * STRIPE_LEN, s * 8)
  accumulate512(acc, view, n - STRIPE_LEN, SECRET_LEN - STRIPE_LEN - 7)
  return acc
}

/** XXH3_accumulate_512: the hot loop, 32-bit halves only. */
function accumulate512(acc: Uint32Array, input: DataView, ip: number, sp: number): void {
  for (let i = 0; i < 8; i++) {
    const o = i * 8
    const dl = input.getUint32(ip + o, true)
    const dh = input.getUint32(ip + o + 4, true)
    const kl = (dl ^ sec32(sp + o)) >>> 0
    const kh = (dh ^ sec32(sp + o + 4)) >>> 0
    // acc[i ^ 1] += data (the Uint32Array stores keep the words mod 2^32)
    const j = (i ^ 1) << 1
    let s = acc[j]! + dl
    acc[j] = s
    acc[j + 1] = acc[j + 1]! + dh + (s > 0xffffffff ? 1 : 0)
    // acc[i] += lo32(key) * hi32(key). The double product is within 2^12 of the
    // exact one, so with the exact low word it gives the exact high word.
    const pl = Math.imul(kl, kh) >>> 0
    const ph = Math.round((kl * kh - pl) / 0x100000000)
    const k = i << 1
    s = acc[k]! + pl
    acc[k] = s
    acc[k + 1] = acc[k + 1]! + ph + (s > 0xffffffff ? 1 : 0)
  }
}

/** XXH3_scrambleAcc with the last 64 bytes of the secret. */
function scramble(acc: Uint32Array): void {
  const sp = SECRET_LEN - STRIPE_LEN
  for (let i = 0; i < 8; i++) {
    const h = acc[2 * i + 1]!
    const l = (acc[2 * i]! ^ (h >>> 15) ^ sec32(sp + 8 * i)) >>> 0 // x ^= x >> 47; x ^= key
    const hk = (h ^ sec32(sp + 8 * i + 4)) >>> 0
    mul32(l, P32_1)
    acc[2 * i] = L
    acc[2 * i + 1] = H + Math.imul(hk, P32_1)
  }
}

/** (H, L) = XXH3_mergeAccs(acc, secret[sp..], start). */
function mergeAccs(acc: Uint32Array, sp: number, startH: number, startL: number): void {
  let rh = startH, rl = startL
  for (let i = 0; i < 4; i++) {
    const o = sp + 16 * i
    fold64(
      (acc[4 * i + 1]! ^ sec32(o + 4)) >>> 0,
      (acc[4 * i]! ^ sec32(o)) >>> 0,
      (acc[4 * i + 3]! ^ sec32(o + 12)) >>> 0,
      (acc[4 * i + 2]! ^ sec32(o + 8)) >>> 0,
    )
    add64(rh, rl, H, L)
    rh = H
    rl = L
  }
  avalanche3(rh, rl)
}

// ---- XXH3-64 ----------------------------------------------------------------

/** The accumulator of the 17..240-byte path (module variables, as H and L: no closure per hash). */
let AH = 0
let AL = 0

/** (AH, AL) += XXH3_mix16B(input[ip..], secret[sp..]). */
function mixAdd(input: Uint8Array, ip: number, sp: number): void {
  mix16(input, ip, sp)
  add64(AH, AL, H, L)
  AH = H
  AL = L
}

/** (H, L) = XXH3-64 of `input`. */
function hash64(input: Uint8Array): void {
  const n = input.length
  const nh = hiOf(n), nl = n >>> 0
  if (n === 0) {
    avalanche64((sec32(56 + 4) ^ sec32(64 + 4)) >>> 0, (sec32(56) ^ sec32(64)) >>> 0)
  } else if (n <= 3) {
    const combined = ((input[0]! << 16) | (input[n >> 1]! << 24) | input[n - 1]! | (n << 8)) >>> 0
    avalanche64(0, (combined ^ sec32(0) ^ sec32(4)) >>> 0)
  } else if (n <= 8) {
    // keyed = (input[0..4] << 32 | input[n-4..n]) ^ bitflip, then rrmxmx
    let h = (rd32(input, 0) ^ sec32(12) ^ sec32(20)) >>> 0
    let l = (rd32(input, n - 4) ^ sec32(8) ^ sec32(16)) >>> 0
    // x ^= rotl(x, 49) ^ rotl(x, 24)
    const r49h = ((l << 17) | (h >>> 15)) >>> 0, r49l = ((h << 17) | (l >>> 15)) >>> 0
    const r24h = ((h << 24) | (l >>> 8)) >>> 0, r24l = ((l << 24) | (h >>> 8)) >>> 0
    h = (h ^ r49h ^ r24h) >>> 0
    l = (l ^ r49l ^ r24l) >>> 0
    mul64(h, l, MX2H, MX2L)
    mul64(H, (L ^ ((H >>> 3) + n)) >>> 0, MX2H, MX2L) // x ^= (x >> 35) + len
    L = (L ^ ((L >>> 28) | (H << 4))) >>> 0 // x ^= x >> 28
    H = (H ^ (H >>> 28)) >>> 0
  } else if (n <= 16) {
    const loH = (rd32(input, 4) ^ sec32(28) ^ sec32(36)) >>> 0
    const loL = (rd32(input, 0) ^ sec32(24) ^ sec32(32)) >>> 0
    const hiH = (rd32(input, n - 4) ^ sec32(44) ^ sec32(52)) >>> 0
    const hiL = (rd32(input, n - 8) ^ sec32(40) ^ sec32(48)) >>> 0
    fold64(loH, loL, hiH, hiL)
    const fh = H, fl = L
    add64(bswap32(loL), bswap32(loH), hiH, hiL) // swap64(lo) + hi
    add64(H, L, fh, fl)
    add64(H, L, 0, n)
    avalanche3(H, L)
  } else if (n <= 240) {
    // 17..240 bytes: an accumulator seeded with n * P64_1, 16-byte mixes added in.
    mul64(nh, nl, P64_1H, P64_1L)
    AH = H
    AL = L
    if (n <= 128) {
      if (n > 32) {
        if (n > 64) {
          if (n > 96) {
            mixAdd(input, 48, 96)
            mixAdd(input, n - 64, 112)
          }
          mixAdd(input, 32, 64)
          mixAdd(input, n - 48, 80)
        }
        mixAdd(input, 16, 32)
        mixAdd(input, n - 32, 48)
      }
      mixAdd(input, 0, 0)
      mixAdd(input, n - 16, 16)
      avalanche3(AH, AL)
      return
    }
    for (let i = 0; i < 8; i++) mixAdd(input, 16 * i, 16 * i)
    avalanche3(AH, AL)
    AH = H
    AL = L
    const rounds = n >> 4
    for (let i = 8; i < rounds; i++) mixAdd(input, 16 * i, 16 * (i - 8) + MIDSIZE_START)
    mixAdd(input, n - 16, MIDSIZE_LAST)
    avalanche3(AH, AL)
  } else {
    const acc = accumulateLong(input)
    mul64(nh, nl, P64_1H, P64_1L)
    mergeAccs(acc, 11, H, L)
  }
}

/**
 * The WebAssembly module with `input` copied in, when its length takes the
 * module's 17..240-byte paths (their 64-bit products: several times the
 * JavaScript paths' speed, copy included); else null.
 */
function midModule(input: Uint8Array) {
  const n = input.length
  const k = n > 16 && n <= 240 && wasmAllowed ? wasmAccumulator(SECRET) : null
  k?.memory.set(input, INPUT_AT)
  return k
}

/** XXH3-64 (seed 0) of `input`, as an unsigned 64-bit bigint. */
export function xxh3_64(input: Uint8Array): bigint {
  const k = midModule(input)
  if (k) return BigInt.asUintN(64, k.mid(INPUT_AT, input.length))
  hash64(input)
  return (BigInt(H) << 32n) | BigInt(L)
}

// ---- XXH3-128 ---------------------------------------------------------------

/** The XXH3-128 result as four u32, most significant first. */
let RHH = 0, RHL = 0, RLH = 0, RLL = 0

function set128(hh: number, hl: number, lh: number, ll: number): void {
  RHH = hh
  RHL = hl
  RLH = lh
  RLL = ll
}

/** XXH128_mix32B on the accumulator pair (low, high) with seed 0 (its negation, used once, is 0 too). */
function mix32(acc: Uint32Array, input: Uint8Array, i1: number, i2: number, sp: number): void {
  // low += mix16B(in1, sec); low ^= in2[0..8] + in2[8..16]
  mix16(input, i1, sp)
  add64(acc[1]!, acc[0]!, H, L)
  let h = H, l = L
  add64(rd32(input, i2 + 4), rd32(input, i2), rd32(input, i2 + 12), rd32(input, i2 + 8))
  acc[0] = l ^ L
  acc[1] = h ^ H
  // high += mix16B(in2, sec + 16); high ^= in1[0..8] + in1[8..16]
  mix16(input, i2, sp + 16)
  add64(acc[3]!, acc[2]!, H, L)
  h = H
  l = L
  add64(rd32(input, i1 + 4), rd32(input, i1), rd32(input, i1 + 12), rd32(input, i1 + 8))
  acc[2] = l ^ L
  acc[3] = h ^ H
}

/** The shared ending of the 17..240-byte paths: low = low + high, high = ... */
function finish128Mid(acc: Uint32Array, nh: number, nl: number): void {
  const ll = acc[0]!, lh = acc[1]!, hl = acc[2]!, hh = acc[3]!
  add64(lh, ll, hh, hl)
  avalanche3(H, L)
  const outLH = H, outLL = L
  mul64(lh, ll, P64_1H, P64_1L)
  let sh = H, sl = L
  mul64(hh, hl, P64_4H, P64_4L)
  add64(sh, sl, H, L)
  sh = H
  sl = L
  mul64(nh, nl, P64_2H, P64_2L)
  add64(sh, sl, H, L)
  avalanche3(H, L)
  // high = 0 - avalanche(...)
  const negL = (0x100000000 - L) >>> 0
  const negH = (~H + (L === 0 ? 1 : 0)) >>> 0
  set128(negH, negL, outLH, outLL)
}

function hash128(input: Uint8Array): void {
  const n = input.length
  const nh = hiOf(n), nl = n >>> 0
  if (n === 0) {
    avalanche64((sec32(64 + 4) ^ sec32(72 + 4)) >>> 0, (sec32(64) ^ sec32(72)) >>> 0)
    const lh = H, ll = L
    avalanche64((sec32(80 + 4) ^ sec32(88 + 4)) >>> 0, (sec32(80) ^ sec32(88)) >>> 0)
    set128(H, L, lh, ll)
  } else if (n <= 3) {
    const cl = ((input[0]! << 16) | (input[n >> 1]! << 24) | input[n - 1]! | (n << 8)) >>> 0
    const ch = rotl32(bswap32(cl), 13)
    avalanche64(0, (cl ^ sec32(0) ^ sec32(4)) >>> 0)
    const lh = H, ll = L
    avalanche64(0, (ch ^ sec32(8) ^ sec32(12)) >>> 0)
    set128(H, L, lh, ll)
  } else if (n <= 8) {
    const kh = (rd32(input, n - 4) ^ sec32(20) ^ sec32(28)) >>> 0
    const kl = (rd32(input, 0) ^ sec32(16) ^ sec32(24)) >>> 0
    // m128 = keyed * (PRIME64_1 + (len << 2))
    add64(P64_1H, P64_1L, 0, n << 2)
    mul128(kh, kl, H, L)
    const lowH = LH, lowL = LL
    // high += low << 1
    add64(H, L, ((lowH << 1) | (lowL >>> 31)) >>> 0, (lowL << 1) >>> 0)
    const highH = H, highL = L
    // low ^= high >> 3; low = xorshift(low, 35); low *= MX2; low = xorshift(low, 28)
    let l = (lowL ^ ((highL >>> 3) | (highH << 29))) >>> 0
    const h = (lowH ^ (highH >>> 3)) >>> 0
    l = (l ^ (h >>> 3)) >>> 0
    mul64(h, l, MX2H, MX2L)
    const rl = (L ^ ((L >>> 28) | (H << 4))) >>> 0
    const rh = (H ^ (H >>> 28)) >>> 0
    avalanche3(highH, highL)
    set128(H, L, rh, rl)
  } else if (n <= 16) {
    const loH = rd32(input, 4), loL = rd32(input, 0)
    let hiH = rd32(input, n - 4), hiL = rd32(input, n - 8)
    // m128 = (lo ^ hi ^ bitflipl) * PRIME64_1
    mul128(
      (loH ^ hiH ^ sec32(36) ^ sec32(44)) >>> 0,
      (loL ^ hiL ^ sec32(32) ^ sec32(40)) >>> 0,
      P64_1H,
      P64_1L,
    )
    let mh = H, ml = L
    // low += (len - 1) << 54
    add64(LH, LL, ((n - 1) << 22) >>> 0, 0)
    let lh = H, ll = L
    hiH = (hiH ^ sec32(52) ^ sec32(60)) >>> 0
    hiL = (hiL ^ sec32(48) ^ sec32(56)) >>> 0
    // high += hi + lo32(hi) * (PRIME32_2 - 1)
    add64(mh, ml, hiH, hiL)
    mh = H
    ml = L
    mul32(hiL, P32_2 - 1)
    add64(mh, ml, H, L)
    mh = H
    ml = L
    // low ^= swap64(high)
    lh = (lh ^ bswap32(ml)) >>> 0
    ll = (ll ^ bswap32(mh)) >>> 0
    // h128 = low * PRIME64_2; h128.high += high * PRIME64_2
    mul128(lh, ll, P64_2H, P64_2L)
    const rh = H, rl = L, outLH = LH, outLL = LL
    mul64(mh, ml, P64_2H, P64_2L)
    add64(rh, rl, H, L)
    avalanche3(H, L)
    const highH = H, highL = L
    avalanche3(outLH, outLL)
    set128(highH, highL, H, L)
  } else if (n <= 240) {
    mul64(nh, nl, P64_1H, P64_1L)
    // acc: low (acc[1], acc[0]), high (acc[3], acc[2])
    const acc = new Uint32Array([L, H, 0, 0])
    if (n <= 128) {
      for (let i = (n - 1) >> 5; i >= 0; i--) mix32(acc, input, 16 * i, n - 16 * (i + 1), 32 * i)
    } else {
      for (let i = 0; i < 4; i++) mix32(acc, input, 32 * i, 32 * i + 16, 32 * i)
      avalanche3(acc[1]!, acc[0]!)
      acc[0] = L
      acc[1] = H
      avalanche3(acc[3]!, acc[2]!)
      acc[2] = L
      acc[3] = H
      const rounds = n >> 5
      for (let i = 4; i < rounds; i++) mix32(acc, input, 32 * i, 32 * i + 16, MIDSIZE_START + 32 * (i - 4))
      mix32(acc, input, n - 16, n - 32, MIDSIZE_LAST - 16)
    }
    finish128Mid(acc, nh, nl)
  } else {
    const acc = accumulateLong(input)
    mul64(nh, nl, P64_1H, P64_1L)
    mergeAccs(acc, 11, H, L)
    const lh = H, ll = L
    mul64(nh, nl, P64_2H, P64_2L)
    mergeAccs(acc, SECRET_LEN - STRIPE_LEN - 11, ~H >>> 0, ~L >>> 0)
    set128(H, L, lh, ll)
  }
}

function putBE32(out: Uint8Array, at: number, v: number): void {
  out[at] = v >>> 24
  out[at + 1] = v >>> 16
  out[at + 2] = v >>> 8
  out[at + 3] = v
}

/** XXH3-128 (seed 0) of `input` in canonical form: 16 bytes, big-endian, high 64 bits first. */
export function xxh3_128(input: Uint8Array): Uint8Array {
  const k = midModule(input)
  if (k) {
    k.mid128(INPUT_AT, input.length)
    set128(k.acc[3]!, k.acc[2]!, k.acc[1]!, k.acc[0]!)
  } else hash128(input)
  const out = new Uint8Array(16)
  putBE32(out, 0, RHH)
  putBE32(out, 4, RHL)
  putBE32(out, 8, RLH)
  putBE32(out, 12, RLL)
  return out
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'))

/** Lowercase hex of `bytes`. */
export function toHex(bytes: Uint8Array): string {
  let s = ''
  for (const b of bytes) s += HEX[b]
  return s
}

/** The file name of a key given as its CKE (FORMAT.md §3): 32 lowercase hex digits + `.ksv`. */
export function fileName(cke: Uint8Array): string {
  return `${toHex(xxh3_128(cke))}.ksv`
}
