// What one durable file-per-key write costs on this machine's file system,
// step by step: the floor under every file store (ours, write-file-atomic,
// node-persist, unstorage, the raw loop in peers.mjs), whatever its code.
//
//   node bench/fs-costs.mjs [--files N] [--rounds R] [--dir D]
//
// Each round writes N new ~200-byte files in a fresh directory the way a
// durable write does, timing each step on its own: create (open O_CREAT|O_EXCL),
// write, fsync, close, rename over the final name, and one directory fsync per
// file. It prints the median per-file cost of each step over the rounds, and
// the file system's type and options (from /proc/mounts), since the answer
// depends on them: e.g. an ext4 without a journal scans its recently deleted
// inodes on every create, which makes creating a file cost more than syncing it.
import fs from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import { median } from './lib/harness.mjs'

const arg = (name, dflt) => {
  const a = process.argv.find((x) => x.startsWith(`--${name}=`))
  return a ? a.slice(name.length + 3) : dflt
}
const N = Number(arg('files', 200))
const ROUNDS = Number(arg('rounds', 5))
const base = arg('dir', os.tmpdir())

const now = () => performance.now()

function mountOf(path) {
  const real = fs.realpathSync(path)
  let best = { dir: '', type: '?', opts: '?' }
  for (const line of fs.readFileSync('/proc/mounts', 'utf8').split('\n')) {
    const [, dir, type, opts] = line.split(' ')
    if (dir && (real === dir || real.startsWith(dir.endsWith('/') ? dir : `${dir}/`)) && dir.length >= best.dir.length) best = { dir, type, opts }
  }
  return best
}

const value = Buffer.alloc(209, 7)
const steps = ['create', 'write', 'fsync', 'close', 'rename', 'dir fsync']
const perRound = Object.fromEntries(steps.map((s) => [s, []]))
// Deleted only at the end: deletions slow the creates that follow on some file systems.
const dirs = []
for (let r = 0; r < ROUNDS; r++) {
  const dir = fs.mkdtempSync(join(base, 'ks-fscost-'))
  const t = Object.fromEntries(steps.map((s) => [s, 0]))
  for (let i = 0; i < N; i++) {
    const stage = join(dir, `.f${i}.stage`)
    let a = now()
    const fd = fs.openSync(stage, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o644)
    let b = now()
    t.create += b - a
    fs.writeSync(fd, value)
    a = now()
    t.write += a - b
    fs.fsyncSync(fd)
    b = now()
    t.fsync += b - a
    fs.closeSync(fd)
    a = now()
    t.close += a - b
    fs.renameSync(stage, join(dir, `f${i}.ksv`))
    b = now()
    t.rename += b - a
    const dfd = fs.openSync(dir, 'r')
    fs.fsyncSync(dfd)
    fs.closeSync(dfd)
    t['dir fsync'] += now() - b
  }
  for (const s of steps) perRound[s].push((t[s] / N) * 1000)
  dirs.push(dir)
}
for (const d of dirs) fs.rmSync(d, { recursive: true, force: true })

const m = mountOf(base)
const total = steps.reduce((sum, s) => sum + median(perRound[s]), 0)
console.log(`# One durable write, step by step (${N} new files a round, ${ROUNDS} rounds, medians)\n`)
console.log(`directory ${base}: ${m.type} on ${m.dir} (${m.opts}); ${os.cpus().length} CPUs; node ${process.version}\n`)
console.log('| step | µs per file | share |')
console.log('|---|--:|--:|')
for (const s of steps) {
  const v = median(perRound[s])
  console.log(`| ${s} | ${v.toFixed(1)} | ${((100 * v) / total).toFixed(0)}% |`)
}
console.log(`| **total** | **${total.toFixed(1)}** | 100% |`)
console.log(`\nA file-per-key store can batch the fsyncs (group commit) but not the creates: every new value is a new file.`)
