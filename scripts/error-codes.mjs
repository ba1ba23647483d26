#!/usr/bin/env node
/**
 * Checks every list of error codes against the one list, `ERROR_CODES` in
 * ts/errors.ts (issue 20: contracts generated or checked, not copied):
 *
 * - the core's codes (the strings of `ErrorCode::as_str` in
 *   crates/core/src/error.rs) must all be in the list (else a core error
 *   would cross the binding as an unknown code and be typed ERR_IO);
 * - the README's "Errors" table must describe every code of the list, and
 *   no other;
 * - every `ERR_*` name in README.md, docs/*.md, ts/, src/ and crates/core/src
 *   must be in the list (a renamed or misspelt code is found).
 *
 * Run `node scripts/error-codes.mjs` (exit 1 and a list of problems if they
 * disagree); `__test__/error-codes.spec.ts` runs the same check in `npm test`.
 * How to add a code: see the comment above `ERROR_CODES` in ts/errors.ts.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const CODE = /\bERR_[A-Z0-9_]+\b/g

/** The codes of `ERROR_CODES` in ts/errors.ts, in order, read from its source text. */
export function listedCodes(root) {
  const text = readFileSync(join(root, 'ts/errors.ts'), 'utf8')
  const m = /export const ERROR_CODES = \[([\s\S]*?)\] as const/.exec(text)
  if (!m) throw new Error('ts/errors.ts: no `export const ERROR_CODES = [...] as const`')
  const body = m[1].replace(/\/\/.*$/gm, '')
  return [...body.matchAll(/'([^']*)'/g)].map((q) => q[1])
}

/** The `konserve` command's own codes: `CLI_CODES` in ts/cli/io.ts (README describes them in its CLI section). */
export function cliCodes(root) {
  const text = readFileSync(join(root, 'ts/cli/io.ts'), 'utf8')
  const m = /export const CLI_CODES = \[([\s\S]*?)\] as const/.exec(text)
  if (!m) throw new Error('ts/cli/io.ts: no `export const CLI_CODES = [...] as const`')
  return [...m[1].matchAll(/'([^']*)'/g)].map((q) => q[1])
}

/** The strings `ErrorCode::as_str` returns in crates/core/src/error.rs. */
export function coreCodes(root) {
  const text = readFileSync(join(root, 'crates/core/src/error.rs'), 'utf8')
  const m = /pub fn as_str\(&self\) -> &'static str \{\s*match self \{([\s\S]*?)\n\s*\}\n\s*\}/.exec(text)
  if (!m) throw new Error('crates/core/src/error.rs: no `ErrorCode::as_str` match')
  return [...m[1].matchAll(/ErrorCode::\w+ => "([^"]*)"/g)].map((q) => q[1])
}

/** The codes named in the first column of README.md's "Errors" table. */
export function readmeCodes(root) {
  const text = readFileSync(join(root, 'README.md'), 'utf8')
  const at = text.indexOf('\n### Errors\n')
  if (at < 0) throw new Error('README.md: no "### Errors" section')
  const section = text.slice(at + 1).split(/\n#{1,3} /)[0]
  const rows = section.split('\n').filter((l) => l.startsWith('|') && !/^\|\s*(code|-+)\s*\|/.test(l))
  if (rows.length === 0) throw new Error('README.md: the "Errors" section has no table')
  return rows.flatMap((row) => row.split('|')[1].match(CODE) ?? [])
}

function* files(dir, ext) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) yield* files(path, ext)
    else if (ext.some((e) => name.endsWith(e))) yield path
  }
}

/** Every `ERR_*` name in the docs and the sources, with the files it is in. */
export function mentionedCodes(root) {
  const paths = [
    join(root, 'README.md'),
    ...files(join(root, 'docs'), ['.md']),
    ...files(join(root, 'ts'), ['.ts']),
    ...files(join(root, 'src'), ['.rs']),
    ...files(join(root, 'crates/core/src'), ['.rs']),
  ]
  const found = new Map()
  for (const path of paths) {
    for (const [code] of readFileSync(path, 'utf8').matchAll(CODE)) {
      const where = found.get(code) ?? new Set()
      where.add(relative(root, path))
      found.set(code, where)
    }
  }
  return found
}

/** The disagreements between the lists, as sentences; empty when they agree. */
export function problems(root) {
  const out = []
  const listed = listedCodes(root)
  const known = new Set(listed)
  const twice = listed.filter((c, i) => listed.indexOf(c) !== i)
  if (twice.length) out.push(`ts/errors.ts lists ${twice.join(', ')} more than once`)
  for (const c of listed) if (!/^ERR_[A-Z0-9_]+$/.test(c)) out.push(`ts/errors.ts lists ${c}, which is not of the form ERR_NAME`)
  for (const c of coreCodes(root)) {
    if (!known.has(c)) out.push(`crates/core/src/error.rs has ${c}, which ERROR_CODES in ts/errors.ts does not list`)
  }
  const readme = readmeCodes(root)
  const inReadme = new Set(readme)
  for (const c of listed) if (!inReadme.has(c)) out.push(`README.md's "Errors" table does not describe ${c}`)
  for (const c of inReadme) if (!known.has(c)) out.push(`README.md's "Errors" table describes ${c}, which ERROR_CODES does not list`)
  const rowsTwice = readme.filter((c, i) => readme.indexOf(c) !== i)
  if (rowsTwice.length) out.push(`README.md's "Errors" table describes ${rowsTwice.join(', ')} more than once`)
  const cli = cliCodes(root)
  const readmeText = readFileSync(join(root, 'README.md'), 'utf8')
  for (const c of cli) {
    if (known.has(c)) out.push(`ts/cli/io.ts lists ${c} in CLI_CODES, which is a library code`)
    if (!readmeText.includes(`\`${c}\``)) out.push(`README.md does not describe the command's code ${c}`)
  }
  const allowed = new Set([...listed, ...cli])
  for (const [c, where] of mentionedCodes(root)) {
    if (!allowed.has(c)) out.push(`${[...where].join(', ')} name${where.size === 1 ? 's' : ''} ${c}, which ERROR_CODES does not list`)
  }
  return out
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const root = join(fileURLToPath(new URL('.', import.meta.url)), '..')
  const found = problems(root)
  for (const p of found) console.error(p)
  if (found.length) process.exit(1)
  console.log(`error codes agree: ${listedCodes(root).length} in ts/errors.ts (and ${cliCodes(root).length} of the command), ${coreCodes(root).length} of them raised by the core, each in README.md`)
}
