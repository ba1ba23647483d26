#!/usr/bin/env node
// The published package.json names a konserve-<platform> package for every
// target in napi.targets as an optional dependency, at the package's version.
// The committed package.json cannot: until those packages are on npm, `npm ci`
// refuses a lockfile that lacks them. So `prepack` adds them (`add`) and
// `postpack` takes them out again (`restore`), except under `npm publish`,
// which re-reads package.json after packing and must send the registry the
// same dependencies as the tarball holds (the release job is thrown away after).
//
//   node scripts/pack-manifest.mjs add|restore
import { readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const file = join(root, 'package.json')

/** `konserve-<platform>` for each napi target, e.g. x86_64-unknown-linux-gnu -> konserve-linux-x64-gnu. */
export async function platformPackages(pkg) {
  const { parseTriple } = await import('@napi-rs/cli')
  return pkg.napi.targets.map((triple) => `${pkg.name}-${parseTriple(triple).platformArchABI}`)
}

/** The manifest with the optional dependencies, placed after `dependencies`. */
export async function withOptionalDependencies(pkg) {
  const optional = Object.fromEntries((await platformPackages(pkg)).map((name) => [name, pkg.version]))
  const out = {}
  for (const [k, v] of Object.entries(pkg)) {
    if (k === 'optionalDependencies') continue
    out[k] = v
    if (k === 'dependencies') out.optionalDependencies = optional
  }
  if (!out.optionalDependencies) out.optionalDependencies = optional
  return out
}

/** The manifest as committed: no optional dependencies. */
export function withoutOptionalDependencies(pkg) {
  const { optionalDependencies: _, ...rest } = pkg
  return rest
}

const write = (pkg) => writeFileSync(file, `${JSON.stringify(pkg, null, 2)}\n`)

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const pkg = JSON.parse(readFileSync(file, 'utf8'))
  const action = process.argv[2]
  if (action === 'add') write(await withOptionalDependencies(pkg))
  else if (action === 'restore') {
    if (process.env.npm_command === 'publish') console.log('pack-manifest: publishing, so package.json keeps its optionalDependencies')
    else write(withoutOptionalDependencies(pkg))
  } else {
    console.error('usage: node scripts/pack-manifest.mjs add|restore')
    process.exit(2)
  }
}
