#!/usr/bin/env node
// Regenerates the golden vectors in test-vectors/ (`npm run vectors:regen`).
// The tests never do: `cargo test` and `npx ava` only compare against the
// committed files. Run this only for a deliberate format change, then review
// the diff of test-vectors/ by hand against docs/FORMAT.md.
//
// - blobs.json, files.json, lz4.json, logs.json, keycheck.json, wal.json: computed by the Rust core's
//   vector tests (crates/core/tests/*_vectors.rs). Each test leaves what it
//   computed in <cargo target dir>/tmp/konserve-vectors/ before it compares,
//   so this runs them (they fail where the committed files differ, which is
//   expected here) and copies what they computed over the committed files.
// - keys.json: scripts/gen-key-vectors.mjs (needs the native binding and
//   dist/, so `npm run build` first).
//
//   node scripts/regen-vectors.mjs [--rust-only | --keys-only]
import { execFileSync, spawnSync } from 'node:child_process'
import { copyFileSync, readFileSync, statSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const args = process.argv.slice(2)
const rust = !args.includes('--keys-only')
const keys = !args.includes('--rust-only')

// Which vector files each Rust test computes.
const RUST = {
  blob_vectors: ['blobs.json'],
  file_vectors: ['files.json', 'lz4.json'],
  keycheck_vectors: ['keycheck.json'],
  log_vectors: ['logs.json'],
  wal_vectors: ['wal.json'],
  wal_log_vectors: ['wal-log.json'],
}

if (rust) {
  const meta = JSON.parse(execFileSync('cargo', ['metadata', '--format-version', '1', '--no-deps'], { cwd: root, encoding: 'utf8' }))
  const computedDir = join(meta.target_directory, 'tmp', 'konserve-vectors')
  const started = Date.now()
  const testArgs = ['test', '--no-fail-fast', '-p', 'konserve-core', ...Object.keys(RUST).flatMap((t) => ['--test', t])]
  console.log(`cargo ${testArgs.join(' ')}`)
  const run = spawnSync('cargo', testArgs, { cwd: root, stdio: 'inherit' })
  if (run.error) throw run.error
  let changed = 0
  for (const [t, names] of Object.entries(RUST)) {
    for (const name of names) {
      const from = join(computedDir, name)
      let fresh = false
      try {
        fresh = statSync(from).mtimeMs >= started - 1000
      } catch {
        // not written
      }
      if (!fresh) {
        console.error(`${name} was not computed by this run (did ${t} compile and reach its check?); nothing copied`)
        process.exit(1)
      }
      const to = join(root, 'test-vectors', name)
      let same = false
      try {
        same = readFileSync(from, 'utf8') === readFileSync(to, 'utf8')
      } catch {
        // no committed file yet
      }
      if (!same) {
        copyFileSync(from, to)
        changed++
      }
      console.log(`${same ? 'unchanged' : 'rewrote  '} test-vectors/${name}`)
    }
  }
  if (run.status !== 0 && changed === 0) {
    console.error('cargo test failed, and no vector changed: the failure is not a vector difference')
    process.exit(1)
  }
}

if (keys) {
  const r = spawnSync(process.execPath, [join(root, 'scripts', 'gen-key-vectors.mjs')], { cwd: root, stdio: 'inherit' })
  if (r.status !== 0) process.exit(r.status ?? 1)
}
console.log('done: review `git diff test-vectors/`, then run cargo test -p konserve-core and npx ava to confirm')
