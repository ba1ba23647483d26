/**
 * XXH3's long-input accumulation loop (XXH3_hashLong's accumulate and
 * scramble, the scalar form of the xxHash reference) and the 17..240-byte
 * paths of XXH3-64 and XXH3-128 as a small WebAssembly module, assembled here
 * from its instructions: WebAssembly has 64-bit integers, so the loop that
 * costs the pure engine most (the checksum of every 1 MiB blob chunk, of
 * every large value) runs at several GB/s instead of the ~250 MB/s that
 * 32-bit halves allow in JavaScript, and the three checksums of a small key
 * file (header, metadata, value) and the file name of a key of 17 bytes or
 * more take about 0.1 µs each instead of up to 1.5 µs.
 *
 * Only an accelerator: where WebAssembly is missing or refused (a content
 * security policy without 'wasm-unsafe-eval', a platform without it),
 * `wasmAccumulator()` is null and ./xxhash.ts runs its JavaScript loop, which
 * gives the same accumulators (__test__/xxh3-wasm.spec.ts checks the two
 * against each other and against the reference library). No `node:` imports:
 * shared with the browser store. The module is under 4 KiB, so even a browser's
 * main thread may compile it synchronously.
 *
 * Memory layout (one page-aligned memory of WINDOW + 256 bytes, never grown):
 *   0..64      the 8 accumulators (u64 little-endian: lane i is u32 words 2i, 2i + 1);
 *              mid128 leaves its result in the first two
 *   64..256    the default secret (kSecret)
 *   256..      input bytes, copied in by the caller
 */

/** Where the accumulators, the secret and the input lie in the module's memory. */
const ACC = 0
const SECRET_AT = 64
export const INPUT_AT = 256
/** How many input bytes one copy into the module's memory takes: 1024 blocks of 1 KiB. */
export const WINDOW = 1 << 20
const PAGES = Math.ceil((INPUT_AT + WINDOW + 1024 + 64) / 65536)

const STRIPE_LEN = 64
const BLOCK_LEN = 1024
const STRIPES_PER_BLOCK = 16
/** The secret offset of the last stripe: SECRET_LEN - STRIPE_LEN - XXH_SECRET_LASTACC_START. */
const LAST_STRIPE_SECRET = 192 - 64 - 7
/** The scramble's secret offset: SECRET_LEN - STRIPE_LEN. */
const SCRAMBLE_SECRET = 192 - 64
const PRIME32_1 = 0x9e3779b1

// ---- the instructions used (WebAssembly core spec §5.4) ------------------------------

const I32 = 0x7f
const I64 = 0x7e
const op = {
  block: 0x02,
  loop: 0x03,
  if: 0x04,
  else: 0x05,
  end: 0x0b,
  br: 0x0c,
  brIf: 0x0d,
  return: 0x0f,
  call: 0x10,
  get: 0x20,
  set: 0x21,
  tee: 0x22,
  i64Load: 0x29,
  i64Store: 0x37,
  i32Const: 0x41,
  i64Const: 0x42,
  i32Eqz: 0x45,
  i32LtU: 0x49,
  i32LeU: 0x4d,
  i32GeU: 0x4f,
  i32Add: 0x6a,
  i32Sub: 0x6b,
  i32Shl: 0x74,
  i32ShrU: 0x76,
  i64Add: 0x7c,
  i64Sub: 0x7d,
  i64Mul: 0x7e,
  i64And: 0x83,
  i64Or: 0x84,
  i64Xor: 0x85,
  i64Shl: 0x86,
  i64ShrU: 0x88,
  i64ExtendI32U: 0xad,
} as const
const EMPTY_BLOCK = 0x40

/** Unsigned LEB128. */
function uleb(n: number): number[] {
  const out: number[] = []
  do {
    let b = n & 0x7f
    n = Math.floor(n / 128)
    if (n > 0) b |= 0x80
    out.push(b)
  } while (n > 0)
  return out
}

/** An i64.const of the unsigned 64-bit `v` (its two's complement, signed LEB128). */
function i64Const(v: bigint): number[] {
  let n = BigInt.asIntN(64, v)
  const out: number[] = [op.i64Const]
  for (;;) {
    const b = Number(n & 0x7fn)
    n >>= 7n
    if ((n === 0n && (b & 0x40) === 0) || (n === -1n && (b & 0x40) !== 0)) {
      out.push(b)
      return out
    }
    out.push(b | 0x80)
  }
}

/** Signed LEB128 of a non-negative integer below 2^53. */
function sleb(n: number): number[] {
  const out: number[] = []
  for (;;) {
    const b = n % 128
    n = Math.floor(n / 128)
    if (n === 0 && (b & 0x40) === 0) {
      out.push(b)
      return out
    }
    out.push(b | 0x80)
  }
}

const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()]
const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body]
const str = (s: string): number[] => [...uleb(s.length), ...[...s].map((c) => c.charCodeAt(0))]
/** A load or store's memarg: alignment hint 0 (any address), constant offset. */
const memarg = (offset: number): number[] => [0, ...uleb(offset)]

/** The locals of both functions: after the parameters, a0..a7 (i64) then s, q, ks (i32), d, kk (i64). */
interface Locals {
  a: number[]
  s: number
  q: number
  ks: number
  d: number
  kk: number
}

function localsAfter(params: number): { decl: number[]; l: Locals } {
  const a = Array.from({ length: 8 }, (_, i) => params + i)
  const l = { a, s: params + 8, q: params + 9, ks: params + 10, d: params + 11, kk: params + 12 }
  // 8 i64, 3 i32, 2 i64
  return { decl: vec([[8, I64], [3, I32], [2, I64]]), l }
}

const loadAccs = (l: Locals): number[] => l.a.flatMap((a, i) => [op.i32Const, 0, op.i64Load, ...memarg(ACC + 8 * i), op.set, a])
const storeAccs = (l: Locals): number[] => l.a.flatMap((a, i) => [op.i32Const, 0, op.get, a, op.i64Store, ...memarg(ACC + 8 * i)])

/**
 * XXH3_accumulate_512 of the stripe at `q` with the secret at `ks + secretAt`:
 * for each lane i, data = in[i], key = data ^ secret[i];
 * acc[i ^ 1] += data; acc[i] += lo32(key) * hi32(key).
 */
function stripe(l: Locals, secretAt: number): number[] {
  const out: number[] = []
  for (let i = 0; i < 8; i++) {
    out.push(op.get, l.q, op.i64Load, ...memarg(8 * i), op.set, l.d)
    out.push(op.get, l.d, op.get, l.ks, op.i64Load, ...memarg(secretAt + 8 * i), op.i64Xor, op.set, l.kk)
    out.push(op.get, l.a[i ^ 1]!, op.get, l.d, op.i64Add, op.set, l.a[i ^ 1]!)
    out.push(op.get, l.a[i]!, op.get, l.kk, op.i64Const, ...sleb(0xffffffff), op.i64And, op.get, l.kk, op.i64Const, 32, op.i64ShrU, op.i64Mul, op.i64Add, op.set, l.a[i]!)
  }
  return out
}

/** XXH3_scrambleAcc: acc[i] = (acc[i] ^ (acc[i] >> 47) ^ secret[128 + 8i]) * PRIME32_1. */
function scramble(l: Locals): number[] {
  return l.a.flatMap((a, i) => [
    op.get, a, op.get, a, op.i64Const, 47, op.i64ShrU, op.i64Xor,
    op.i32Const, 0, op.i64Load, ...memarg(SECRET_AT + SCRAMBLE_SECRET + 8 * i), op.i64Xor,
    op.i64Const, ...sleb(PRIME32_1), op.i64Mul, op.set, a,
  ])
}

/** q = p + s * 64; ks = s * 8. */
const placeStripe = (l: Locals, p: number): number[] => [
  op.get, p, op.get, l.s, op.i32Const, 6, op.i32Shl, op.i32Add, op.set, l.q,
  op.get, l.s, op.i32Const, 3, op.i32Shl, op.set, l.ks,
]

/** `blocks(p, count)`: `count` (>= 0) whole blocks from `p`, each 16 stripes then a scramble. */
function blocksBody(): number[] {
  const P = 0, COUNT = 1
  const { decl, l } = localsAfter(2)
  const code = [
    ...loadAccs(l),
    op.block, EMPTY_BLOCK,
    op.get, COUNT, op.i32Eqz, op.brIf, 0,
    op.loop, EMPTY_BLOCK,
    op.i32Const, 0, op.set, l.s,
    op.loop, EMPTY_BLOCK,
    ...placeStripe(l, P),
    ...stripe(l, SECRET_AT),
    op.get, l.s, op.i32Const, 1, op.i32Add, op.tee, l.s, op.i32Const, STRIPES_PER_BLOCK, op.i32LtU, op.brIf, 0,
    op.end,
    ...scramble(l),
    op.get, P, op.i32Const, ...sleb(BLOCK_LEN), op.i32Add, op.set, P,
    op.get, COUNT, op.i32Const, 1, op.i32Sub, op.tee, COUNT, op.brIf, 0,
    op.end,
    op.end,
    ...storeAccs(l),
    op.end,
  ]
  return [...decl, ...code]
}

/** `tail(p, stripes, last)`: `stripes` stripes from `p` (secret offsets 8s), then the last stripe at `last` (secret offset 121). */
function tailBody(): number[] {
  const P = 0, STRIPES = 1, LAST = 2
  const { decl, l } = localsAfter(3)
  const code = [
    ...loadAccs(l),
    op.i32Const, 0, op.set, l.s,
    op.block, EMPTY_BLOCK,
    op.loop, EMPTY_BLOCK,
    op.get, l.s, op.get, STRIPES, op.i32GeU, op.brIf, 1,
    ...placeStripe(l, P),
    ...stripe(l, SECRET_AT),
    op.get, l.s, op.i32Const, 1, op.i32Add, op.set, l.s,
    op.br, 0,
    op.end,
    op.end,
    op.get, LAST, op.set, l.q, op.i32Const, 0, op.set, l.ks,
    ...stripe(l, SECRET_AT + LAST_STRIPE_SECRET),
    ...storeAccs(l),
    op.end,
  ]
  return [...decl, ...code]
}

// ---- the 17..240-byte paths of XXH3-64 and XXH3-128 ---------------------------------

const LOW32 = i64Const(0xffffffffn)
const PRIME64_1 = i64Const(0x9e3779b185ebca87n)
const PRIME64_2 = i64Const(0xc2b2ae3d27d4eb4fn)
const PRIME64_4 = i64Const(0x85ebca77c2b2ae63n)
const AVALANCHE = i64Const(0x165667919e3779f9n)
/** The secret offset of the 129..240-byte paths' later rounds, and of their last mix (XXH3_MIDSIZE_STARTOFFSET, SECRET_SIZE_MIN - MIDSIZE_LASTOFFSET). */
const MIDSIZE_START = 3
const MIDSIZE_LAST = 136 - 17
/** The index of `fold`, the module's fifth function. */
const FOLD = 4

/**
 * `fold(x, y)`: the 128-bit product x * y with its two halves xored (XXH3's
 * mul128_fold64), from four 32 x 32 -> 64-bit products.
 */
function foldBody(): number[] {
  const X = 0, Y = 1, LL = 2, HL = 3, LH = 4, HH = 5, CR = 6
  const code = [
    op.get, X, ...LOW32, op.i64And, op.get, Y, ...LOW32, op.i64And, op.i64Mul, op.set, LL,
    op.get, X, op.i64Const, 32, op.i64ShrU, op.get, Y, ...LOW32, op.i64And, op.i64Mul, op.set, HL,
    op.get, X, ...LOW32, op.i64And, op.get, Y, op.i64Const, 32, op.i64ShrU, op.i64Mul, op.set, LH,
    op.get, X, op.i64Const, 32, op.i64ShrU, op.get, Y, op.i64Const, 32, op.i64ShrU, op.i64Mul, op.set, HH,
    // cr = (ll >> 32) + lo32(hl) + lh: below 2^64
    op.get, LL, op.i64Const, 32, op.i64ShrU, op.get, HL, ...LOW32, op.i64And, op.i64Add, op.get, LH, op.i64Add, op.set, CR,
    // (cr << 32 | lo32(ll)) ^ ((hl >> 32) + (cr >> 32) + hh)
    op.get, CR, op.i64Const, 32, op.i64Shl, op.get, LL, ...LOW32, op.i64And, op.i64Or,
    op.get, HL, op.i64Const, 32, op.i64ShrU, op.get, CR, op.i64Const, 32, op.i64ShrU, op.i64Add, op.get, HH, op.i64Add,
    op.i64Xor,
    op.end,
  ]
  return [...vec([[5, I64]]), ...code]
}

/** The locals of `mid` and `mid128`: after p, n: lo, hi (the accumulators) and x as i64, then i, ip, ip2, sp, count as i32. */
const M = { p: 0, n: 1, lo: 2, hi: 3, x: 4, i: 5, ip: 6, ip2: 7, sp: 8, count: 9 }
const midLocals = vec([[3, I64], [5, I32]])

/** The u64 at local `addr` + `at` in memory, on the stack. */
const load = (addr: number, at: number): number[] => [op.get, addr, op.i64Load, ...memarg(at)]

/** acc += XXH3_mix16B(input at ip, secret at sp + sec) = fold(in[0..8] ^ key[0..8], in[8..16] ^ key[8..16]). */
const mix16 = (acc: number, ip: number, sec: number): number[] => [
  op.get, acc,
  ...load(ip, 0), ...load(M.sp, sec), op.i64Xor,
  ...load(ip, 8), ...load(M.sp, sec + 8), op.i64Xor,
  op.call, FOLD, op.i64Add, op.set, acc,
]

/** acc = XXH3_avalanche(acc): acc ^= acc >> 37; acc *= 0x165667919E3779F9; acc ^= acc >> 32. */
const avalanche = (acc: number): number[] => [
  op.get, acc, op.get, acc, op.i64Const, 37, op.i64ShrU, op.i64Xor, ...AVALANCHE, op.i64Mul, op.set, acc,
  op.get, acc, op.get, acc, op.i64Const, 32, op.i64ShrU, op.i64Xor, op.set, acc,
]

/** local = base + (i << shift) + add (`add` may be negative). */
const offsetBy = (local: number, base: number[], shift: number, add = 0): number[] => [
  ...base, op.get, M.i, op.i32Const, shift, op.i32Shl, op.i32Add,
  ...(add > 0 ? [op.i32Const, ...sleb(add), op.i32Add] : add < 0 ? [op.i32Const, ...sleb(-add), op.i32Sub] : []),
  op.set, local,
]
const P = [op.get, M.p]
const SECRET = [op.i32Const, ...sleb(SECRET_AT)]
/** p + n - back */
const fromEnd = (back: number): number[] => [op.get, M.p, op.get, M.n, op.i32Add, op.i32Const, back, op.i32Sub]
/** local = p + n - 16 - 16i */
const mirrored = (local: number): number[] => [...fromEnd(16), op.get, M.i, op.i32Const, 4, op.i32Shl, op.i32Sub, op.set, local]
/** lo = n * PRIME64_1 */
const seedLow = [op.get, M.n, op.i64ExtendI32U, ...PRIME64_1, op.i64Mul, op.set, M.lo]
/** if n <= 128 */
const ifUpTo128 = [op.get, M.n, op.i32Const, ...sleb(128), op.i32LeU, op.if, EMPTY_BLOCK]
/** i++, and again while i < `limit` (an i32 expression) */
const nextWhileBelow = (limit: number[]): number[] => [op.get, M.i, op.i32Const, 1, op.i32Add, op.tee, M.i, ...limit, op.i32LtU, op.brIf, 0]
/** A loop over i from its value while i < `limit` (a local): block, loop, the exit test, `body`, i++. */
const whileBelow = (limit: number, body: number[]): number[] => [
  op.block, EMPTY_BLOCK, op.loop, EMPTY_BLOCK,
  op.get, M.i, op.get, limit, op.i32GeU, op.brIf, 1,
  ...body,
  op.get, M.i, op.i32Const, 1, op.i32Add, op.set, M.i, op.br, 0,
  op.end, op.end,
]

/**
 * `mid(p, n)`: XXH3-64 (seed 0) of the n bytes at p, 17 <= n <= 240. Up to
 * 128 bytes: pairs of mixes from both ends (the reference's nested ifs, as a
 * loop: additions mod 2^64 commute); 129..240: eight mixes, an avalanche, the
 * rest of the 16-byte rounds and the last 16 bytes.
 */
function midBody(): number[] {
  const code = [
    ...seedLow,
    ...ifUpTo128,
    // count = (n - 1) / 32 + 1 pairs: in[16i] with sec[32i], in[n - 16 - 16i] with sec[32i + 16]
    op.get, M.n, op.i32Const, 1, op.i32Sub, op.i32Const, 5, op.i32ShrU, op.i32Const, 1, op.i32Add, op.set, M.count,
    op.loop, EMPTY_BLOCK,
    ...offsetBy(M.ip, P, 4), ...offsetBy(M.sp, SECRET, 5),
    ...mix16(M.lo, M.ip, 0),
    ...mirrored(M.ip),
    ...mix16(M.lo, M.ip, 16),
    ...nextWhileBelow([op.get, M.count]),
    op.end,
    ...avalanche(M.lo),
    op.get, M.lo, op.return,
    op.end,
    // 129..240: in[16i] with sec[16i] for i < 8
    op.loop, EMPTY_BLOCK,
    ...offsetBy(M.ip, P, 4), ...offsetBy(M.sp, SECRET, 4),
    ...mix16(M.lo, M.ip, 0),
    ...nextWhileBelow([op.i32Const, 8]),
    op.end,
    ...avalanche(M.lo),
    // then in[16i] with sec[16(i - 8) + 3] for 8 <= i < n / 16
    op.get, M.n, op.i32Const, 4, op.i32ShrU, op.set, M.count,
    ...whileBelow(M.count, [...offsetBy(M.ip, P, 4), ...offsetBy(M.sp, SECRET, 4, MIDSIZE_START - 128), ...mix16(M.lo, M.ip, 0)]),
    // and the last 16 bytes with sec[119]
    ...fromEnd(16), op.set, M.ip,
    op.i32Const, ...sleb(SECRET_AT + MIDSIZE_LAST), op.set, M.sp,
    ...mix16(M.lo, M.ip, 0),
    ...avalanche(M.lo),
    op.get, M.lo,
    op.end,
  ]
  return [...midLocals, ...code]
}

/**
 * XXH128_mix32B with the input pair at ip, ip2 and the secret at sp:
 * lo = (lo + mix16B(in1, sec)) ^ (in2[0..8] + in2[8..16]);
 * hi = (hi + mix16B(in2, sec + 16)) ^ (in1[0..8] + in1[8..16]).
 */
const mix32 = (): number[] => [
  ...mix16(M.lo, M.ip, 0),
  op.get, M.lo, ...load(M.ip2, 0), ...load(M.ip2, 8), op.i64Add, op.i64Xor, op.set, M.lo,
  ...mix16(M.hi, M.ip2, 16),
  op.get, M.hi, ...load(M.ip, 0), ...load(M.ip, 8), op.i64Add, op.i64Xor, op.set, M.hi,
]

/**
 * `mid128(p, n)`: XXH3-128 (seed 0) of the n bytes at p, 17 <= n <= 240,
 * left in memory at ACC as two little-endian u64, the low half first. Up to
 * 128 bytes: mix32B of pairs from both ends, the innermost pair first (the
 * order matters: each step xors after it adds); 129..240: four 32-byte
 * rounds, both halves avalanched, the rest and the last 32 bytes.
 */
function mid128Body(): number[] {
  const code = [
    ...seedLow,
    ...ifUpTo128,
    // i = (n - 1) / 32 down to 0: in[16i] and in[n - 16 - 16i] with sec[32i]
    op.get, M.n, op.i32Const, 1, op.i32Sub, op.i32Const, 5, op.i32ShrU, op.set, M.i,
    op.block, EMPTY_BLOCK, op.loop, EMPTY_BLOCK,
    ...offsetBy(M.ip, P, 4), ...mirrored(M.ip2), ...offsetBy(M.sp, SECRET, 5),
    ...mix32(),
    op.get, M.i, op.i32Eqz, op.brIf, 1,
    op.get, M.i, op.i32Const, 1, op.i32Sub, op.set, M.i, op.br, 0,
    op.end, op.end,
    op.else,
    // 129..240: in[32i], in[32i + 16] with sec[32i] for i < 4
    op.loop, EMPTY_BLOCK,
    ...offsetBy(M.ip, P, 5), ...offsetBy(M.ip2, P, 5, 16), ...offsetBy(M.sp, SECRET, 5),
    ...mix32(),
    ...nextWhileBelow([op.i32Const, 4]),
    op.end,
    ...avalanche(M.lo),
    ...avalanche(M.hi),
    // then with sec[32(i - 4) + 3] for 4 <= i < n / 32
    op.get, M.n, op.i32Const, 5, op.i32ShrU, op.set, M.count,
    ...whileBelow(M.count, [...offsetBy(M.ip, P, 5), ...offsetBy(M.ip2, P, 5, 16), ...offsetBy(M.sp, SECRET, 5, MIDSIZE_START - 128), ...mix32()]),
    // and the last 32 bytes, the later half first, with sec[103]
    ...fromEnd(16), op.set, M.ip,
    ...fromEnd(32), op.set, M.ip2,
    op.i32Const, ...sleb(SECRET_AT + MIDSIZE_LAST - 16), op.set, M.sp,
    ...mix32(),
    op.end,
    // low = avalanche(lo + hi); high = 0 - avalanche(lo * P1 + hi * P4 + n * P2)
    op.get, M.lo, ...PRIME64_1, op.i64Mul, op.get, M.hi, ...PRIME64_4, op.i64Mul, op.i64Add,
    op.get, M.n, op.i64ExtendI32U, ...PRIME64_2, op.i64Mul, op.i64Add, op.set, M.x,
    op.get, M.lo, op.get, M.hi, op.i64Add, op.set, M.lo,
    ...avalanche(M.lo),
    ...avalanche(M.x),
    op.i32Const, 0, op.get, M.lo, op.i64Store, ...memarg(ACC),
    op.i32Const, 0, op.i64Const, 0, op.get, M.x, op.i64Sub, op.i64Store, ...memarg(ACC + 8),
    op.end,
  ]
  return [...midLocals, ...code]
}

/** The module's bytes. */
export function xxh3Module(): Uint8Array<ArrayBuffer> {
  const body = (b: number[]) => [...uleb(b.length), ...b]
  const bytes = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    // types: 0 = (i32, i32) -> (), 1 = (i32, i32, i32) -> (), 2 = (i32, i32) -> i64, 3 = (i64, i64) -> i64
    ...section(1, vec([
      [0x60, ...vec([[I32], [I32]]), 0],
      [0x60, ...vec([[I32], [I32], [I32]]), 0],
      [0x60, ...vec([[I32], [I32]]), ...vec([[I64]])],
      [0x60, ...vec([[I64], [I64]]), ...vec([[I64]])],
    ])),
    // functions: blocks, tail, mid, mid128, fold (FOLD)
    ...section(3, vec([[0], [1], [2], [0], [3]])),
    // one memory, PAGES pages, no maximum
    ...section(5, vec([[0x00, ...uleb(PAGES)]])),
    ...section(7, vec([
      [...str('memory'), 0x02, 0], [...str('blocks'), 0x00, 0], [...str('tail'), 0x00, 1], [...str('mid'), 0x00, 2], [...str('mid128'), 0x00, 3],
    ])),
    ...section(10, vec([body(blocksBody()), body(tailBody()), body(midBody()), body(mid128Body()), body(foldBody())])),
  ]
  return new Uint8Array(bytes)
}

/** The module instantiated: its memory, the accumulators as u32 words, and the two loops. */
export interface Xxh3Accumulator {
  readonly memory: Uint8Array
  /** The 8 accumulators as 16 u32 words, low word first (./xxhash.ts's layout). */
  readonly acc: Uint32Array
  blocks(p: number, count: number): void
  tail(p: number, stripes: number, last: number): void
  /** XXH3-64 of the n bytes at p (17..240), as a signed 64-bit bigint (WebAssembly's i64). */
  mid(p: number, n: number): bigint
  /** XXH3-128 of the n bytes at p (17..240), left in `acc[0..4]`: the low 64 bits (low word first), then the high. */
  mid128(p: number, n: number): void
}

let instance: Xxh3Accumulator | null | undefined

/** The accumulator module with `secret` (the default secret, from ./xxhash.ts) in place, or null where WebAssembly is not available (made once: later calls get the first one). */
export function wasmAccumulator(secret: Uint8Array): Xxh3Accumulator | null {
  if (instance !== undefined) return instance
  instance = null
  try {
    const W = (globalThis as { WebAssembly?: typeof WebAssembly }).WebAssembly
    if (!W) return null
    const exports = new W.Instance(new W.Module(xxh3Module()), {}).exports as {
      memory: WebAssembly.Memory
      blocks: (p: number, count: number) => void
      tail: (p: number, stripes: number, last: number) => void
      mid: (p: number, n: number) => bigint
      mid128: (p: number, n: number) => void
    }
    const memory = new Uint8Array(exports.memory.buffer)
    memory.set(secret, SECRET_AT)
    instance = { memory, acc: new Uint32Array(exports.memory.buffer, ACC, 16), blocks: exports.blocks, tail: exports.tail, mid: exports.mid, mid128: exports.mid128 }
  } catch {
    // No WebAssembly here: the JavaScript loop.
  }
  return instance
}

/**
 * The 8 accumulators after XXH3's long loop over `input` (longer than 240
 * bytes), starting from `init`: the same words as the JavaScript loop. Copies
 * the input into the module's memory a window at a time.
 */
export function accumulateLongWasm(k: Xxh3Accumulator, input: Uint8Array, init: Uint32Array): Uint32Array {
  const n = input.length
  k.acc.set(init)
  const blocks = Math.floor((n - 1) / BLOCK_LEN)
  const perWindow = WINDOW / BLOCK_LEN
  for (let b = 0; b < blocks; ) {
    const m = Math.min(blocks - b, perWindow)
    k.memory.set(input.subarray(b * BLOCK_LEN, (b + m) * BLOCK_LEN), INPUT_AT)
    k.blocks(INPUT_AT, m)
    b += m
  }
  // The rest (1..1024 bytes) with the 64 bytes before it: the last stripe is input[n - 64 .. n].
  const start = blocks * BLOCK_LEN
  const from = Math.max(0, start - STRIPE_LEN)
  k.memory.set(input.subarray(from, n), INPUT_AT)
  k.tail(INPUT_AT + start - from, Math.floor((n - 1 - start) / STRIPE_LEN), INPUT_AT + n - STRIPE_LEN - from)
  return k.acc.slice()
}
