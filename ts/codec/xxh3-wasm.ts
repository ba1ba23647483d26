/**
 * XXH3's long-input accumulation loop (XXH3_hashLong's accumulate and
 * scramble, the scalar form of the xxHash reference) and its 17..240-byte
 * XXH3-64 paths as a small WebAssembly module, assembled here from its
 * instructions: WebAssembly has 64-bit integers, so the loop that costs the
 * pure engine most (the checksum of every 1 MiB blob chunk, of every large
 * value) runs at several GB/s instead of the ~250 MB/s that 32-bit halves
 * allow in JavaScript, and the three checksums of a small key file (header,
 * metadata, value) take 0.1 µs each instead of up to 1.5 µs.
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
 *   0..64      the 8 accumulators (u64 little-endian: lane i is u32 words 2i, 2i + 1)
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
  end: 0x0b,
  br: 0x0c,
  brIf: 0x0d,
  return: 0x0f,
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

// ---- the 17..240-byte paths of XXH3-64 ------------------------------------------

const LOW32 = i64Const(0xffffffffn)
const PRIME64_1 = i64Const(0x9e3779b185ebca87n)
const AVALANCHE = i64Const(0x165667919e3779f9n)
/** The secret offset of the 129..240-byte path's rounds from the ninth on, and of its last mix (XXH3_MIDSIZE_STARTOFFSET, SECRET_SIZE_MIN - MIDSIZE_LASTOFFSET). */
const MIDSIZE_START = 3
const MIDSIZE_LAST = 136 - 17

/** The locals of `mid`: after p, n: acc, x, y, ll, hl, lh, hh, cr (i64), then i, ip, sp, count (i32). */
const M = { p: 0, n: 1, acc: 2, x: 3, y: 4, ll: 5, hl: 6, lh: 7, hh: 8, cr: 9, i: 10, ip: 11, sp: 12, count: 13 }

/**
 * acc += XXH3_mix16B(input at ip, secret at sp): the 128-bit product of
 * (in[0..8] ^ sec[0..8]) and (in[8..16] ^ sec[8..16]), its two halves xored
 * (mul128_fold64), from four 32 x 32 -> 64-bit products.
 */
const mix16 = (): number[] => [
  op.get, M.ip, op.i64Load, ...memarg(0), op.get, M.sp, op.i64Load, ...memarg(0), op.i64Xor, op.set, M.x,
  op.get, M.ip, op.i64Load, ...memarg(8), op.get, M.sp, op.i64Load, ...memarg(8), op.i64Xor, op.set, M.y,
  op.get, M.x, ...LOW32, op.i64And, op.get, M.y, ...LOW32, op.i64And, op.i64Mul, op.set, M.ll,
  op.get, M.x, op.i64Const, 32, op.i64ShrU, op.get, M.y, ...LOW32, op.i64And, op.i64Mul, op.set, M.hl,
  op.get, M.x, ...LOW32, op.i64And, op.get, M.y, op.i64Const, 32, op.i64ShrU, op.i64Mul, op.set, M.lh,
  op.get, M.x, op.i64Const, 32, op.i64ShrU, op.get, M.y, op.i64Const, 32, op.i64ShrU, op.i64Mul, op.set, M.hh,
  // cr = (ll >> 32) + lo32(hl) + lh: below 2^64
  op.get, M.ll, op.i64Const, 32, op.i64ShrU, op.get, M.hl, ...LOW32, op.i64And, op.i64Add, op.get, M.lh, op.i64Add, op.set, M.cr,
  // acc += (cr << 32 | lo32(ll)) ^ ((hl >> 32) + (cr >> 32) + hh)
  op.get, M.acc,
  op.get, M.cr, op.i64Const, 32, op.i64Shl, op.get, M.ll, ...LOW32, op.i64And, op.i64Or,
  op.get, M.hl, op.i64Const, 32, op.i64ShrU, op.get, M.cr, op.i64Const, 32, op.i64ShrU, op.i64Add, op.get, M.hh, op.i64Add,
  op.i64Xor, op.i64Add, op.set, M.acc,
]

/** acc = XXH3_avalanche(acc): acc ^= acc >> 37; acc *= 0x165667919E3779F9; acc ^= acc >> 32. */
const avalanche = (): number[] => [
  op.get, M.acc, op.get, M.acc, op.i64Const, 37, op.i64ShrU, op.i64Xor, ...AVALANCHE, op.i64Mul, op.set, M.acc,
  op.get, M.acc, op.get, M.acc, op.i64Const, 32, op.i64ShrU, op.i64Xor, op.set, M.acc,
]

/** ip = p + (16 * i) + extra (extra: an i32 expression's instructions, or none). */
const inputAt = (extra: number[] = []): number[] => [op.get, M.p, op.get, M.i, op.i32Const, 4, op.i32Shl, op.i32Add, ...extra, op.set, M.ip]

/**
 * `mid(p, n)`: XXH3-64 (seed 0) of the n bytes at p, 17 <= n <= 240. Up to
 * 128 bytes: pairs of mixes from both ends (the reference's nested ifs, as a
 * loop: additions mod 2^64 commute); 129..240: eight mixes, an avalanche, the
 * rest of the 16-byte rounds and the last 16 bytes.
 */
function midBody(): number[] {
  const decl = vec([[8, I64], [4, I32]])
  const code = [
    op.get, M.n, op.i64ExtendI32U, ...PRIME64_1, op.i64Mul, op.set, M.acc,
    op.get, M.n, op.i32Const, ...sleb(128), op.i32LeU,
    op.if, EMPTY_BLOCK,
    // count = (n - 1) / 32 + 1 pairs: in[16i] with sec[32i], in[n - 16 - 16i] with sec[32i + 16]
    op.get, M.n, op.i32Const, 1, op.i32Sub, op.i32Const, 5, op.i32ShrU, op.i32Const, 1, op.i32Add, op.set, M.count,
    op.loop, EMPTY_BLOCK,
    ...inputAt(), op.get, M.i, op.i32Const, 5, op.i32Shl, op.i32Const, ...sleb(SECRET_AT), op.i32Add, op.set, M.sp,
    ...mix16(),
    op.get, M.p, op.get, M.n, op.i32Add, op.i32Const, 16, op.i32Sub, op.get, M.i, op.i32Const, 4, op.i32Shl, op.i32Sub, op.set, M.ip,
    op.get, M.sp, op.i32Const, 16, op.i32Add, op.set, M.sp,
    ...mix16(),
    op.get, M.i, op.i32Const, 1, op.i32Add, op.tee, M.i, op.get, M.count, op.i32LtU, op.brIf, 0,
    op.end,
    ...avalanche(),
    op.get, M.acc, op.return,
    op.end,
    // 129..240: in[16i] with sec[16i] for i < 8
    op.loop, EMPTY_BLOCK,
    ...inputAt(), op.get, M.i, op.i32Const, 4, op.i32Shl, op.i32Const, ...sleb(SECRET_AT), op.i32Add, op.set, M.sp,
    ...mix16(),
    op.get, M.i, op.i32Const, 1, op.i32Add, op.tee, M.i, op.i32Const, 8, op.i32LtU, op.brIf, 0,
    op.end,
    ...avalanche(),
    // then in[16i] with sec[16(i - 8) + 3] for 8 <= i < n / 16
    op.get, M.n, op.i32Const, 4, op.i32ShrU, op.set, M.count,
    op.block, EMPTY_BLOCK,
    op.loop, EMPTY_BLOCK,
    op.get, M.i, op.get, M.count, op.i32GeU, op.brIf, 1,
    ...inputAt(), op.get, M.i, op.i32Const, 4, op.i32Shl, op.i32Const, ...sleb(128 - MIDSIZE_START - SECRET_AT), op.i32Sub, op.set, M.sp,
    ...mix16(),
    op.get, M.i, op.i32Const, 1, op.i32Add, op.set, M.i,
    op.br, 0,
    op.end,
    op.end,
    // and the last 16 bytes with sec[119]
    op.get, M.p, op.get, M.n, op.i32Add, op.i32Const, 16, op.i32Sub, op.set, M.ip,
    op.i32Const, ...sleb(SECRET_AT + MIDSIZE_LAST), op.set, M.sp,
    ...mix16(),
    ...avalanche(),
    op.get, M.acc,
    op.end,
  ]
  return [...decl, ...code]
}

/** The module's bytes. */
export function xxh3Module(): Uint8Array<ArrayBuffer> {
  const body = (b: number[]) => [...uleb(b.length), ...b]
  const bytes = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    // types: 0 = (i32, i32) -> (), 1 = (i32, i32, i32) -> (), 2 = (i32, i32) -> i64
    ...section(1, vec([[0x60, ...vec([[I32], [I32]]), 0], [0x60, ...vec([[I32], [I32], [I32]]), 0], [0x60, ...vec([[I32], [I32]]), ...vec([[I64]])]])),
    // functions: blocks, tail, mid
    ...section(3, vec([[0], [1], [2]])),
    // one memory, PAGES pages, no maximum
    ...section(5, vec([[0x00, ...uleb(PAGES)]])),
    ...section(7, vec([[...str('memory'), 0x02, 0], [...str('blocks'), 0x00, 0], [...str('tail'), 0x00, 1], [...str('mid'), 0x00, 2]])),
    ...section(10, vec([body(blocksBody()), body(tailBody()), body(midBody())])),
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
    }
    const memory = new Uint8Array(exports.memory.buffer)
    memory.set(secret, SECRET_AT)
    instance = { memory, acc: new Uint32Array(exports.memory.buffer, ACC, 16), blocks: exports.blocks, tail: exports.tail, mid: exports.mid }
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
