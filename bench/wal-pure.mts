// The pure engine's write-ahead log (ts/backends/pure/wal.ts, docs/WAL.md
// §9 item 3): the scan of a log at its back-pressure cap on open (§5), and
// durable appends (one put record each, 64 in flight and one at a time)
// next to the pure store's own puts of the same values, interleaved rounds
// (order reversed every other round), medians. Figures only; nothing is asserted.
//
//   node --import=tsx bench/wal-pure.mts [--scan-mib 256] [--rounds 5] [--ms 800]
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { createPureCodec } from '../ts/backends/pure/codec.js'
import { openPureStore } from '../ts/backends/pure/store.js'
import { Wal, recordHash } from '../ts/backends/pure/wal.js'
import { encodeKeyFileSync } from '../ts/format/file.js'
import { encodeKey } from '../ts/format/key.js'
import { WAL_PUT } from '../ts/format/wal.js'

const { values } = parseArgs({
  options: { 'scan-mib': { type: 'string', default: '256' }, rounds: { type: 'string', default: '5' }, ms: { type: 'string', default: '800' } },
})
const scanMiB = Number(values['scan-mib'])
const rounds = Number(values.rounds)
const ms = Number(values.ms)
const fresh = () => mkdtempSync(join(tmpdir(), 'konserve-wal-pure-bench-'))
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const value = (n: number) => new Uint8Array(n).map((_, i) => (i * 31) & 0xff)
const record = (k: string, v: Uint8Array) => {
  const cke = encodeKey(k)
  const payload = encodeKeyFileSync({ compressor: 0, encryptor: 0, keyCke: cke, serializer: 0, meta: new Uint8Array([0x80]), value: v })
  return { op: WAL_PUT, keyHash: recordHash(cke), payload } as const
}

// ---- the scan on open -------------------------------------------------------------------
{
  const dir = fresh()
  const w = Wal.open.sync(dir, { syncBlob: false, checkpointCap: Number.MAX_SAFE_INTEGER })
  const v = value(1024)
  let n = 0
  while (w.logBytes() < scanMiB * 1024 * 1024) {
    await Promise.all(Array.from({ length: 512 }, () => w.append.async([record(`k${n++}`, v)])))
  }
  w.close.sync()
  const times: number[] = []
  for (let i = 0; i < 3; i++) {
    const start = performance.now()
    const r = Wal.open.sync(dir, { syncBlob: false })
    times.push(performance.now() - start)
    r.close.sync()
  }
  console.log(`scan on open: ${n} records of 1 KiB values, ${(w.logBytes() / 1048576).toFixed(0)} MiB of frames: median ${median(times).toFixed(0)} ms (${times.map((t) => t.toFixed(0)).join(', ')}), pages cached`)
  rmSync(dir, { recursive: true, force: true })
}

// ---- durable appends against the pure store's puts --------------------------------------
type Case = { name: string; inFlight: number; run: (dir: string, inFlight: number, size: number) => Promise<number> }

async function timed(inFlight: number, one: (i: number) => Promise<void>): Promise<number> {
  let i = 0
  let done = 0
  const end = performance.now() + ms
  const start = performance.now()
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (performance.now() < end) {
        await one(i++)
        done++
      }
    }),
  )
  return done / ((performance.now() - start) / 1000)
}

const cases: Case[] = [
  {
    name: 'pure store put',
    inFlight: 0,
    run: async (dir, inFlight, size) => {
      const s = await openPureStore.async(dir, createPureCodec(0), { syncBlob: true })
      const v = value(size)
      const meta = new Uint8Array([0x80])
      return timed(inFlight, (i) => s.put.async([{ key: encodeKey(`k${i}`), serializer: 0, meta, value: v }]) as Promise<void>)
    },
  },
  {
    name: 'pure wal append',
    inFlight: 0,
    run: async (dir, inFlight, size) => {
      const w = await Wal.open.async(dir)
      const v = value(size)
      const r = await timed(inFlight, (i) => w.append.async([record(`k${i}`, v)]))
      await w.close.async()
      return r
    },
  },
]

for (const size of [100, 1024]) {
  for (const inFlight of [1, 64]) {
    const results = new Map<string, number[]>()
    for (let round = 0; round < rounds; round++) {
      const order = round % 2 === 0 ? cases : [...cases].reverse()
      for (const c of order) {
        const dir = fresh()
        try {
          const r = await c.run(dir, inFlight, size)
          results.set(c.name, [...(results.get(c.name) ?? []), r])
        } finally {
          rmSync(dir, { recursive: true, force: true })
        }
      }
    }
    const base = median(results.get('pure store put')!)
    for (const [name, rs] of results) {
      console.log(`${size} B, ${inFlight} in flight, ${name}: median ${median(rs).toFixed(0)} ops/s (${(median(rs) / base).toFixed(2)}x the pure store's puts)`)
    }
  }
}
