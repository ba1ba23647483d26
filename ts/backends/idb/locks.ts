/**
 * Key locks across tabs and workers of one origin: the Web Locks API
 * (`navigator.locks`). One lock per key file name, taken in sorted order
 * (two callers wanting overlapping sets never deadlock), all or none, within
 * a timeout (ERR_LOCK_TIMEOUT). A lock is held until `unlock`, or until the
 * tab or worker holding it goes away (the browser releases it then).
 */
import { KonserveError } from '../../errors.js'

interface LockManagerLike {
  request(name: string, options: { signal?: AbortSignal; ifAvailable?: boolean }, cb: (lock: unknown) => Promise<void>): Promise<void>
  query?(): Promise<{ held?: Array<{ name?: string; clientId?: string }> }>
}

function lockManager(): LockManagerLike {
  const locks = (globalThis as { navigator?: { locks?: LockManagerLike } }).navigator?.locks
  if (!locks) {
    throw new KonserveError(
      'ERR_NOT_SUPPORTED',
      'the IndexedDB store locks keys with the Web Locks API (navigator.locks), which this context lacks (it needs a secure context: https or localhost)',
    )
  }
  return locks
}

export class WebLocks {
  /** The locks this thread holds: lock name -> release. */
  private readonly held = new Map<string, () => void>()

  constructor(
    /** Prefix of every lock name: one store, one namespace. */
    private readonly prefix: string,
    private readonly timeoutMs: number,
  ) {}

  /** Takes the locks of these key file names, all or none. */
  async lock(names: string[]): Promise<void> {
    const locks = lockManager()
    const wanted = [...new Set(names.map((n) => this.prefix + n))].sort()
    for (const w of wanted) {
      if (this.held.has(w)) throw new KonserveError('ERR_LOCK_REENTRY', `this thread already holds the lock ${w}`)
    }
    const abort = new AbortController()
    const timer = setTimeout(() => abort.abort(), this.timeoutMs)
    const taken: string[] = []
    try {
      for (const name of wanted) {
        const release = await new Promise<() => void>((resolve, reject) => {
          locks
            .request(name, { signal: abort.signal }, () => new Promise<void>((done) => resolve(done)))
            .catch((err: unknown) => reject(err))
        })
        this.held.set(name, release)
        taken.push(name)
      }
    } catch (err) {
      for (const name of taken) this.release(name)
      if ((err as { name?: string }).name !== 'AbortError') throw err
      const waitingFor = wanted[taken.length]!
      throw new KonserveError('ERR_LOCK_TIMEOUT', `the key's lock was not free within ${this.timeoutMs} ms (held by ${await this.holder(waitingFor)})`, {
        file: waitingFor,
      })
    } finally {
      clearTimeout(timer)
    }
  }

  private async holder(name: string): Promise<string> {
    try {
      const q = await lockManager().query?.()
      const h = q?.held?.find((l) => l.name === name)
      return h?.clientId ? `the tab or worker with client id ${h.clientId}` : 'another tab or worker'
    } catch {
      return 'another tab or worker'
    }
  }

  private release(name: string): void {
    const r = this.held.get(name)
    this.held.delete(name)
    r?.()
  }

  unlock(names: string[]): void {
    for (const n of new Set(names)) this.release(this.prefix + n)
  }

  /** Releases every lock this thread holds (close). */
  releaseAll(): void {
    for (const n of [...this.held.keys()]) this.release(n)
  }

  /** Whether nobody holds the lock of this name now (taking and dropping it at once if free). */
  async isFree(name: string): Promise<boolean> {
    let free = false
    await lockManager().request(this.prefix + name, { ifAvailable: true }, async (lock: unknown) => {
      free = lock !== null
    })
    return free
  }
}
