/**
 * One list of error codes (issue 20): `ERROR_CODES` in ts/errors.ts; the
 * core's codes, the README's "Errors" table and every `ERR_*` name in the docs
 * and sources are checked against it by scripts/error-codes.mjs.
 */
import { cpSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import test from 'ava'
import { coreCodes, listedCodes, problems, readmeCodes } from '../scripts/error-codes.mjs'
import { ERROR_CODES } from '../ts/errors.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')

test('the lists agree: the core, the README table and every ERR_ name in docs and sources use the codes of ts/errors.ts', (t) => {
  t.deepEqual(problems(root), [])
  // The script reads the list the module exports, not something else.
  t.deepEqual(listedCodes(root), [...ERROR_CODES])
  t.true(coreCodes(root).length >= 20)
  t.deepEqual([...readmeCodes(root)].sort(), [...ERROR_CODES].sort())
})

/** A copy of the files the check reads, with `edit` applied to some of them. */
function copy(edit: Record<string, (text: string) => string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'konserve-codes-'))
  for (const sub of ['docs', 'src', 'ts', 'crates/core/src']) mkdirSync(join(dir, sub), { recursive: true })
  for (const file of ['README.md', 'ts/errors.ts', 'ts/cli/io.ts', 'crates/core/src/error.rs']) cpSync(join(root, file), join(dir, file))
  for (const [file, f] of Object.entries(edit)) {
    mkdirSync(dirname(join(dir, file)), { recursive: true })
    let text = ''
    try {
      text = readFileSync(join(dir, file), 'utf8')
    } catch {}
    writeFileSync(join(dir, file), f(text))
  }
  return dir
}

test('the check finds each kind of drift', (t) => {
  t.deepEqual(problems(copy({})), [])
  const coreOnly = copy({
    'crates/core/src/error.rs': (s) => s.replace('ErrorCode::NotBinary => "ERR_NOT_BINARY",', 'ErrorCode::NotBinary => "ERR_NOT_BINARY",\n            ErrorCode::Busy => "ERR_BUSY",'),
  })
  t.true(problems(coreOnly).some((p) => p.includes('crates/core/src/error.rs has ERR_BUSY')), problems(coreOnly).join('\n'))
  const undocumented = copy({ 'README.md': (s) => s.replace(/^\| `ERR_SOURCE` \|.*\n/m, '') })
  t.deepEqual(problems(undocumented), [`README.md's "Errors" table does not describe ERR_SOURCE`])
  const stale = copy({ 'docs/NOTES.md': () => 'a lock that is held fails with ERR_LOCKED\n' })
  t.deepEqual(problems(stale), ['docs/NOTES.md names ERR_LOCKED, which ERROR_CODES does not list'])
  const twice = copy({ 'ts/errors.ts': (s) => s.replace("  'ERR_SOURCE',\n", "  'ERR_SOURCE',\n  'ERR_SOURCE',\n") })
  t.true(problems(twice).includes('ts/errors.ts lists ERR_SOURCE more than once'))
  const unlisted = copy({ 'ts/errors.ts': (s) => s.replace("  'ERR_SOURCE',\n", '') })
  t.true(problems(unlisted).includes(`README.md's "Errors" table describes ERR_SOURCE, which ERROR_CODES does not list`))
})
