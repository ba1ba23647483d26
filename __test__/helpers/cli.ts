/** Runs the built `konserve` command (dist/cli.js) as a user does: a real process. */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

export const cli = fileURLToPath(new URL('../../dist/cli.js', import.meta.url))
/** A preload that prints the process's peak RSS (kB) on stderr at exit: `konserve-test-maxrss=N`. */
export const rssPreload = fileURLToPath(new URL('./report-rss.cjs', import.meta.url))

export interface Ran {
  code: number | null
  stdout: Buffer
  stderr: string
  /** Peak RSS in kB, with `rss: true`. */
  maxRss?: number
}

export interface RunOptions {
  cwd: string
  input?: string | Buffer
  env?: Record<string, string | undefined>
  /** Measure peak RSS (through a preload). */
  rss?: boolean
  /** Consume stdout piece by piece instead of collecting it. */
  onStdout?: (piece: Buffer) => void
}

export function konserve(args: string[], o: RunOptions): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...(o.rss ? ['--require', rssPreload] : []), cli, ...args], {
      cwd: o.cwd,
      env: { ...process.env, ...o.env },
      stdio: ['pipe', 'pipe', 'pipe'],
      // A new session: no controlling terminal, as in CI (a prompt fails instead of waiting).
      detached: true,
    })
    const out: Buffer[] = []
    let err = ''
    child.stdout.on('data', (b: Buffer) => (o.onStdout ? o.onStdout(b) : out.push(b)))
    child.stderr.on('data', (b: Buffer) => (err += b.toString()))
    child.on('error', reject)
    child.stdin.on('error', () => {})
    if (o.input !== undefined) child.stdin.end(o.input)
    else child.stdin.end()
    child.on('close', (code) => {
      const m = /konserve-test-maxrss=(\d+)\n?/.exec(err)
      resolve({ code, stdout: Buffer.concat(out), stderr: err.replace(/konserve-test-maxrss=\d+\n?/, ''), ...(m ? { maxRss: Number(m[1]) } : {}) })
    })
  })
}

/** The command run in a pseudo-terminal (util-linux `script`): stdout and stderr are a TTY. Returns what the terminal showed. */
export function konserveTty(args: string[], o: RunOptions): Promise<Ran> {
  const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`
  const command = [process.execPath, cli, ...args].map(quote).join(' ')
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-qfec', command, '/dev/null'], { cwd: o.cwd, env: { ...process.env, ...o.env }, stdio: ['pipe', 'pipe', 'pipe'] })
    const out: Buffer[] = []
    let err = ''
    child.stdout.on('data', (b: Buffer) => out.push(b))
    child.stderr.on('data', (b: Buffer) => (err += b.toString()))
    child.on('error', reject)
    child.stdin.on('error', () => {})
    if (o.input !== undefined) child.stdin.write(o.input)
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr: err }))
    // script ends once the command does; its stdin stays open so that it does not hang up the terminal early.
    child.on('exit', () => child.stdin.destroy())
  })
}
