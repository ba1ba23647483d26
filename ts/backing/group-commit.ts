/**
 * Group commit of async puts: while one batch is being written, the puts that
 * arrive wait, and go together as the next batch. A file backing writes a
 * batch as one durable unit (all staging files written and synced, then the
 * renames, then ONE directory sync), so 64 writers in flight cost a few
 * directory syncs instead of 64. Each caller resolves only when the batch
 * holding its writes is durable. A lone writer waits for nothing: its batch
 * starts at once.
 */
import type { RawWrite } from './index.js'

interface Waiter {
  writes: RawWrite[]
  bytes: number
  resolve: () => void
  reject: (err: unknown) => void
}

/** Bounds of one batch: what one write holds in memory and in open files. */
const MAX_WRITES = 256
const MAX_BYTES = 64 * 1024 * 1024

export class GroupCommit {
  private readonly queue: Waiter[] = []
  private running = false

  constructor(private readonly writeBatch: (writes: RawWrite[]) => Promise<void>) {}

  put(writes: RawWrite[]): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const bytes = writes.reduce((n, w) => n + w.value.byteLength + w.meta.byteLength, 0)
      this.queue.push({ writes, bytes, resolve, reject })
      if (!this.running) this.runner = this.run()
    })
  }

  private take(): Waiter[] {
    const batch: Waiter[] = []
    let writes = 0
    let bytes = 0
    while (this.queue.length > 0) {
      const next = this.queue[0]!
      if (batch.length > 0 && (writes + next.writes.length > MAX_WRITES || bytes + next.bytes > MAX_BYTES)) break
      batch.push(this.queue.shift()!)
      writes += next.writes.length
      bytes += next.bytes
    }
    return batch
  }

  /** Resolves once every put handed to it so far has been written (or has failed). */
  async idle(): Promise<void> {
    while (this.running || this.queue.length > 0) await this.runner
  }
  private runner: Promise<void> = Promise.resolve()

  private async run(): Promise<void> {
    this.running = true
    try {
      while (this.queue.length > 0) {
        const batch = this.take()
        try {
          await this.writeBatch(batch.length === 1 ? batch[0]!.writes : batch.flatMap((w) => w.writes))
          for (const w of batch) w.resolve()
        } catch (err) {
          // A failed fsync poisons the store: every caller gets that error.
          const code = (err as { code?: unknown }).code
          if (batch.length === 1 || code === 'ERR_FSYNC' || code === 'ERR_STORE_POISONED') {
            for (const w of batch) w.reject(err)
            continue
          }
          // One caller's bad write must not fail the others: each on its own.
          for (const w of batch) {
            try {
              await this.writeBatch(w.writes)
              w.resolve()
            } catch (e) {
              w.reject(e)
            }
          }
        }
      }
    } finally {
      this.running = false
    }
  }
}
