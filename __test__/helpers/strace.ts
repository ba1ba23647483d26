/**
 * Fault injection into a running child process with strace: the first call
 * of `syscalls` on one of `paths` fails (or kills the process) as `inject`
 * says, and nothing else is touched. Used by the fault specs (faults,
 * locks-mixed), which need a real kernel error at one chosen step.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { readFileSync, readdirSync } from 'node:fs'

/** Whether every thread of `pid` is traced by `tracer` (strace -f follows the new ones). */
export function allTracedBy(pid: number, tracer: number): boolean {
  try {
    const tasks = readdirSync(`/proc/${pid}/task`)
    return (
      tasks.length > 0 &&
      tasks.every((tid) => /^TracerPid:\s*(\d+)$/m.exec(readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'))?.[1] === String(tracer))
    )
  } catch {
    return false
  }
}

export interface Injection {
  /** The strace process: kill it when done (it ends with the traced process). */
  strace: ChildProcess
  /** What strace wrote to its standard error so far. */
  stderr(): string
}

/**
 * Attaches strace to `pid` (every thread, `-f -y`), logging to `log`, with
 * `-e trace=<syscalls> -e inject=<syscalls>:<inject>` limited to `paths`
 * (`-P`), and resolves once every thread is traced (ERR after 10 s or if
 * strace exits). `inject` is strace's action, e.g. `error=EIO:when=1` or
 * `signal=KILL:when=1`.
 */
export async function injectFault(o: { pid: number; syscalls: string[]; inject: string; paths: string[]; log: string }): Promise<Injection> {
  const set = o.syscalls.join(',')
  const args = ['-f', '-y', '-o', o.log, '-e', `trace=${set}`, '-e', `inject=${set}:${o.inject}`, ...o.paths.flatMap((p) => ['-P', p]), '-p', String(o.pid)]
  const strace = spawn('strace', args, { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  strace.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  try {
    for (let waited = 0; !allTracedBy(o.pid, strace.pid!); waited += 10) {
      if (strace.exitCode !== null || waited > 10_000) throw new Error(`strace did not attach: ${stderr}`)
      await new Promise((r) => setTimeout(r, 10))
    }
  } catch (err) {
    strace.kill('SIGKILL')
    throw err
  }
  return { strace, stderr: () => stderr }
}

/** The lines of an strace log that report an injected call. */
export const injectedLines = (log: string): string[] =>
  readFileSync(log, 'utf8')
    .split('\n')
    .filter((l) => l.includes('(INJECTED)'))
