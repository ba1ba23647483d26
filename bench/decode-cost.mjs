// What decoding one ~200-byte document costs in konserve's value format
// against the msgpackr settings lmdb uses (shared record structures): the part
// of a cached get that the format, not the code, decides.
//
//   node bench/decode-cost.mjs
//
// konserve's values are self-contained (each carries its own record
// definitions, so any value decodes alone, in any process, from the file
// alone); lmdb keeps the record structures once per database and decodes
// against them.
import { Packr, pack, unpack } from 'msgpackr'
import { median } from './lib/harness.mjs'

const VALUE = {
  id: 12345,
  name: 'a document of about two hundred bytes',
  tags: ['x', 'y', 'z'],
  nested: { a: 1, b: [1, 2, 3], c: 'hello world hello world' },
  when: 1700000000000,
  ok: true,
  note: 'padding padding padding padding padding padding padding',
}
// The options of ts/serializers.ts.
const ours = new Packr({ useRecords: true, mapsAsObjects: false, moreTypes: true, useBigIntExtension: true, structuredClone: true, copyBuffers: true })
const shared = new Packr({ structures: [] })
const cases = [
  ['konserve (self-contained records)', ours.pack(VALUE), (b) => ours.unpack(b)],
  ['msgpackr defaults', pack(VALUE), (b) => unpack(b)],
  ['shared structures (as lmdb)', shared.pack(VALUE), (b) => shared.unpack(b)],
]
const N = 1_000_000
console.log('| format | bytes | ns per decode (median of 5) |\n|---|--:|--:|')
for (const [name, bytes, decode] of cases) {
  const runs = []
  for (let r = 0; r < 6; r++) {
    const t0 = performance.now()
    for (let i = 0; i < N; i++) decode(bytes)
    if (r > 0) runs.push(((performance.now() - t0) * 1e6) / N) // the first run warms up
  }
  console.log(`| ${name} | ${bytes.length} | ${median(runs).toFixed(0)} |`)
}
