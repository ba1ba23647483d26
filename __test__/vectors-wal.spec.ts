/**
 * The write-ahead log's bytes (docs/FORMAT.md §10) against the golden vectors the
 * Rust core generated (test-vectors/wal.json, crates/core/tests/wal_vectors.rs):
 * the pure-TypeScript codec (ts/format/wal.ts) must produce exactly those bytes
 * from the same input and read them back the same way, torn tails and damage
 * included. The log is not used by the store yet: this is the codec alone.
 */
import test from 'ava'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import {
  FRAMES_AT,
  HINT_AT,
  HINT_LEN,
  MAX_FRAME,
  SLOT_A,
  SLOT_B,
  SLOT_LEN,
  type NewWalRecord,
  type WalOp,
  WAL_DELETE,
  WAL_PUT,
  decodeHeader,
  decodeHeaderSlot,
  decodeHint,
  encodeFrame,
  encodeHeaderSlot,
  encodeHint,
  frameLen,
  parseWal,
} from '../ts/format/wal.js'
import { xxh3_64 } from '../ts/codec/xxhash.js'
import { KonserveError } from '../ts/errors.js'

interface WalVector {
  name: string
  generation: string
  first: string
  slot: string
  frames: { records: { op: number; keyHash: string; payload: string }[]; frame: string }[]
  tail: string
  file: string
  read: { frames: number; end: number; nextSeq: string } | { error: string }
}

const vectors = JSON.parse(readFileSync(join(import.meta.dirname, '..', 'test-vectors', 'wal.json'), 'utf8')) as WalVector[]
const hex = (s: string) => new Uint8Array(Buffer.from(s, 'hex'))
const toHex = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex')
/** The result of a call, or the code of the KonserveError it throws (anything else fails the test). */
function outcome<T>(f: () => T): T | string {
  try {
    return f()
  } catch (err) {
    if (err instanceof KonserveError) return err.code
    throw err
  }
}
const recordsOf = (f: WalVector['frames'][number]): NewWalRecord[] =>
  f.records.map((r) => ({ op: r.op as WalOp, keyHash: hex(r.keyHash), payload: hex(r.payload) }))

test('wal vectors: every op, a later generation, a torn tail, an empty log and damage are covered', (t) => {
  const ops = new Set(vectors.flatMap((v) => v.frames.flatMap((f) => f.records.map((r) => r.op))))
  t.deepEqual([...ops].sort(), [1, 2, 3])
  t.true(vectors.some((v) => BigInt(v.first) > 1n))
  t.true(vectors.some((v) => 'error' in v.read && v.read.error === 'ERR_CORRUPT'))
  t.true(vectors.some((v) => v.tail.length > 0 && 'frames' in v.read && v.read.frames === v.frames.length))
  t.true(vectors.some((v) => v.frames.length === 0))
})

for (const v of vectors) {
  test(`wal vector "${v.name}": the same bytes, read back the same way`, (t) => {
    const header = { generation: BigInt(v.generation), first: BigInt(v.first) }
    t.is(toHex(encodeHeaderSlot(header)), v.slot)
    v.frames.forEach((f, i) => {
      t.is(toHex(encodeFrame(header.generation, header.first + BigInt(i), recordsOf(f))), f.frame, `frame ${i}`)
    })
    const file = hex(v.file)
    t.deepEqual(decodeHeader(file), header)
    const hint = decodeHint(file.subarray(HINT_AT, HINT_AT + HINT_LEN))
    t.truthy(hint)
    t.is(toHex(encodeHint(hint!)), toHex(file.subarray(HINT_AT, HINT_AT + HINT_LEN)))
    if ('error' in v.read) {
      t.is(outcome(() => parseWal(file)), v.read.error)
      return
    }
    const { scan } = parseWal(file)
    t.deepEqual({ frames: scan.frames.length, end: scan.end, nextSeq: String(scan.nextSeq) }, v.read)
    scan.frames.forEach((f, i) => {
      const want = v.frames[i]!.records
      t.deepEqual(
        f.records.map((r) => ({ op: r.op, keyHash: toHex(r.keyHash), payload: toHex(file.subarray(...r.payload)) })),
        want,
      )
    })
  })
}

/** A log of these frames (each a list of put payload lengths), header generation 5, first seq 1. */
function logOf(frames: number[][]): Uint8Array {
  const header = { generation: 5n, first: 1n }
  const head = new Uint8Array(FRAMES_AT)
  head.set(encodeHeaderSlot(header), SLOT_A)
  head.set(encodeHeaderSlot(header), SLOT_B)
  const parts: Uint8Array[] = [head]
  frames.forEach((lens, i) => {
    parts.push(encodeFrame(5n, BigInt(i + 1), lens.map((n, j) => ({ op: WAL_PUT, keyHash: new Uint8Array(16).fill(j), payload: new Uint8Array(n).fill(i) }))))
  })
  return new Uint8Array(Buffer.concat(parts))
}

test('wal: a torn last frame ends the log at every cut, and damage to any earlier frame is ERR_CORRUPT', (t) => {
  const b = logOf([[60], [60], [200]])
  const second = FRAMES_AT + 2 * frameLen([60])
  const wrong: string[] = []
  for (let cut = second; cut < b.length; cut++) {
    const torn = new Uint8Array(b.length + 64)
    torn.set(b.subarray(0, cut))
    const { scan } = parseWal(torn)
    if (scan.frames.length !== 2 || scan.end !== second) wrong.push(`cut at ${cut}: ${scan.frames.length} frames, end ${scan.end}`)
  }
  for (let i = FRAMES_AT; i < b.length; i++) {
    const d = Uint8Array.from(b)
    d[i]! ^= 0x40
    const got = outcome(() => parseWal(d).scan.frames.length)
    if (got !== (i < second ? 'ERR_CORRUPT' : 2)) wrong.push(`byte ${i} flipped: ${got}`)
  }
  t.deepEqual(wrong, [])
})

test('wal: header slots (B before A, neither is ERR_CORRUPT, another version is ERR_UNSUPPORTED_VERSION) and encode limits', (t) => {
  const b = logOf([])
  b[SLOT_B + 3]! ^= 1
  t.deepEqual(decodeHeader(b), { generation: 5n, first: 1n })
  b[SLOT_A + 3]! ^= 1
  t.is(outcome(() => decodeHeader(b)), 'ERR_CORRUPT')
  const s = encodeHeaderSlot({ generation: 5n, first: 1n })
  s[8] = 2
  new DataView(s.buffer).setBigUint64(56, xxh3_64(s.subarray(0, 56)), true)
  t.is(outcome(() => decodeHeaderSlot(s.subarray(0, SLOT_LEN))), 'ERR_UNSUPPORTED_VERSION')
  const key = new Uint8Array(16)
  t.is(outcome(() => encodeFrame(1n, 1n, [])), 'ERR_INVALID_ARGUMENT')
  t.is(outcome(() => encodeFrame(1n, 1n, [{ op: WAL_PUT, keyHash: key, payload: new Uint8Array(47) }])), 'ERR_INVALID_ARGUMENT')
  t.is(outcome(() => encodeFrame(1n, 1n, [{ op: WAL_DELETE, keyHash: key, payload: new Uint8Array(1) }])), 'ERR_INVALID_ARGUMENT')
  t.is(outcome(() => encodeFrame(1n, 1n, [{ op: WAL_PUT, keyHash: key, payload: new Uint8Array(MAX_FRAME) }])), 'ERR_INVALID_ARGUMENT')
})
