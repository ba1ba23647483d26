/** Node child processes on the built package, for the cross-process tests of the network backends. */
import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { tempDir } from './api.js'

/**
 * Runs `script` (an ES module) in a Node child process with `args`;
 * `saw(text)` resolves once its stdout has shown `text`, `exit` with its exit code.
 */
export function child(script: string, args: string[], opts: { nodeOptions?: string } = {}) {
  const file = join(tempDir(), 'child.mjs')
  writeFileSync(file, script)
  const proc = spawn(process.execPath, [file, ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, NODE_OPTIONS: opts.nodeOptions ?? '' } })
  let out = ''
  const waiters: Array<[string, () => void]> = []
  proc.stdout.on('data', (d: Buffer) => {
    out += d.toString()
    for (const w of [...waiters]) {
      if (!out.includes(w[0])) continue
      waiters.splice(waiters.indexOf(w), 1)
      w[1]()
    }
  })
  const exit = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)))
  return { proc, exit, saw: (s: string) => new Promise<void>((r) => (out.includes(s) ? r() : waiters.push([s, r]))) }
}

/** A file of the built package (dist/), as a JSON string literal for a child's script. */
export const dist = (f: string) => JSON.stringify(resolve('dist', f))
