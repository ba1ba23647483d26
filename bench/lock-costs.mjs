// What the per-key lock costs a non-durable put: the floor of a file-per-key
// write that takes docs/FORMAT.md §6's cross-process lock, against one that
// takes none, with konserve's own put beside them, in the same rounds.
//
//   node bench/lock-costs.mjs [--puts N] [--rounds R]
//
// Each put writes a new ~200-byte key file the raw way (open O_CREAT|O_EXCL a
// staging file, write, close, rename; no fsync: the non-durable case, where
// these directory operations are the whole cost). The variants:
//   no lock   - just that (the raw loop of bench/peers.mjs's non-durable table);
//   §6 lock   - around it, the lock as FORMAT.md §6 takes it: the record
//               written to a temp file, link(2) to the lock name, unlink the
//               temp; released by reading the lock file back and unlinking it;
//   O_EXCL lock - the lock file created O_EXCL and written in place (§6's
//               fallback where link(2) is missing), released by an unlink:
//               fewer directory operations, but a process killed between the
//               create and the write leaves an empty lock file that blocks the
//               key for 5 s, which §6's link avoids;
//   konserve  - connectFsStore(dir, { native: true, syncBlob: false }) assoc,
//               sync form (revision read, lock, header, the same writes).
// Figures are medians of interleaved rounds (order reversed every other
// round): read the ratios to "no lock".
import fs from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import * as k from '../dist/index.mjs'
import { median } from './lib/harness.mjs'

const arg = (name, dflt) => {
  const a = process.argv.find((x) => x.startsWith(`--${name}=`))
  return a ? Number(a.slice(name.length + 3)) : dflt
}
const N = arg('puts', 3000)
const ROUNDS = arg('rounds', 7)

const record = Buffer.from(`konserve-lock 1 ${'ab'.repeat(16)} - - ${process.pid} - ${os.hostname()}\n`)
const value = Buffer.alloc(209, 7)

function rawPut(dir, i) {
  const stage = join(dir, `.k${i}.stage`)
  const fd = fs.openSync(stage, 'wx')
  fs.writeSync(fd, value)
  fs.closeSync(fd)
  fs.renameSync(stage, join(dir, `k${i}.ksv`))
}

const variants = {
  'no lock': () => (dir, i) => rawPut(dir, i),
  '§6 lock': () => (dir, i) => {
    const lock = join(dir, `.k${i}.lock`)
    const temp = join(dir, `.k${i}.${process.pid}.${i}.lkt`)
    const fd = fs.openSync(temp, 'wx')
    fs.writeSync(fd, record)
    fs.closeSync(fd)
    fs.linkSync(temp, lock)
    fs.unlinkSync(temp)
    rawPut(dir, i)
    if (!fs.readFileSync(lock).equals(record)) throw new Error('lock taken over')
    fs.unlinkSync(lock)
  },
  'O_EXCL lock': () => (dir, i) => {
    const lock = join(dir, `.k${i}.lock`)
    const fd = fs.openSync(lock, 'wx')
    fs.writeSync(fd, record)
    fs.closeSync(fd)
    rawPut(dir, i)
    fs.unlinkSync(lock)
  },
  konserve: (dir) => {
    const store = k.connectFsStore(dir, { native: true, syncBlob: false, sync: true })
    const obj = { id: 0, name: 'x'.repeat(150), tags: ['a', 'b'] }
    return (_dir, i) => k.assoc(store, `k${i}`, obj, { sync: true })
  },
}

const names = Object.keys(variants)
const results = Object.fromEntries(names.map((n) => [n, []]))
const root = fs.mkdtempSync(join(os.tmpdir(), 'ks-lock-costs-'))
const load = () => os.loadavg().map((x) => x.toFixed(1)).join(' ')
console.log(`${N} new keys per round, ${ROUNDS} rounds, in ${root}; load average at start ${load()}`)
try {
  for (let r = 0; r < ROUNDS; r++) {
    for (const name of r % 2 ? [...names].reverse() : names) {
      const dir = join(root, `${r}-${names.indexOf(name)}`)
      fs.mkdirSync(dir)
      const put = variants[name](dir)
      const t0 = performance.now()
      for (let i = 0; i < N; i++) put(dir, i)
      results[name].push(N / ((performance.now() - t0) / 1000))
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }
} finally {
  fs.rmSync(root, { recursive: true, force: true })
}
const base = median(results['no lock'])
console.log('\n| variant | puts/s (median) | × no lock |\n|---|--:|--:|')
for (const n of names) console.log(`| ${n} | ${Math.round(median(results[n])).toLocaleString('en-US')} | ${(median(results[n]) / base).toFixed(2)} |`)
console.log(`\nload average at end ${load()}`)
