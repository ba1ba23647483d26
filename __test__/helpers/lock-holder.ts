/**
 * Another process holding a key's lock (fixtures/lock-holder.mjs), for the
 * tests of waiting on it: everything is awaited on its messages, never on time.
 */
import { fork } from 'node:child_process'
import { join } from 'node:path'

const fixtures = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', 'fixtures')

/**
 * Forks a process that takes the lock of key `held` in the store at `dir`
 * (`impl`: the native core or the pure engine) and keeps it until killed.
 * `locked` resolves once it holds the lock; `ping()` resolves after a round
 * trip to it (it still holds the lock then); `kill()` SIGKILLs it and resolves
 * once it has exited.
 */
export function holdLock(dir: string, impl: 'native' | 'pure') {
  const child = fork(join(fixtures, 'lock-holder.mjs'), [dir, impl], { stdio: 'ignore' })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const message = (want: string) =>
    new Promise<void>((resolve, reject) => {
      const onMessage = (m: unknown) => {
        if (m !== want) return
        child.off('message', onMessage)
        child.off('exit', onExit)
        resolve()
      }
      const onExit = (code: number | null) => reject(new Error(`lock holder exited early with ${code}`))
      child.on('message', onMessage)
      child.once('exit', onExit)
    })
  const locked = message('locked')
  return {
    child,
    locked,
    exited,
    ping() {
      const pong = message('pong')
      child.send('ping')
      return pong
    },
    kill() {
      child.kill('SIGKILL')
      return exited
    },
  }
}

/** Resolves once `calls[name]` (a binding call counter) reaches `n`, checking once per event-loop turn. */
export async function untilCalls(calls: Record<string, number | undefined>, name: string, n: number) {
  while ((calls[name] ?? 0) < n) await new Promise((r) => setImmediate(r))
}
