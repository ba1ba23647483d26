/**
 * Group commits: of async puts (GroupCommit, used by the file backends) and
 * of async appends (AppendGroups, used by the facade for every backend).
 *
 * Group commit of async puts: while one batch is being written, the puts that
 * arrive wait, and go together as the next batch. A file backing writes a
 * batch as one durable unit (all staging files written and synced, then the
 * renames, then ONE directory sync), so 64 writers in flight cost a few
 * directory syncs instead of 64. Each caller resolves only when the batch
 * holding its writes is durable. A lone writer waits for nothing: its batch
 * starts at once.
 */
import { lastRequest } from '../locks.js'
import type { LogInfo, RawWrite } from './index.js'

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

  /** Whether a batch is being written or waiting. */
  get busy(): boolean {
    return this.running || this.queue.length > 0
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

/** Records per group commit of appends: bounds what one write holds. */
const APPEND_BATCH = 1024

interface Appending<T> {
  item: T
  resolve: (count: number) => void
  reject: (err: unknown) => void
}

/** The appends of one log waiting for its next write, and the number of the lock request their leader made. */
interface AppendGroup<T> {
  queue: Appending<T>[]
  request: number | undefined
}

/**
 * Group commit of async appends, per log: the first append of a log takes its
 * lock and writes; appends of the same log that come meanwhile wait in a
 * queue, and the next write takes them all (up to APPEND_BATCH), as one write
 * and one fsync. Each call resolves, with the log's element count after its
 * own record, once that record is durable. A batch that fails fails the
 * appends in it; a lock that cannot be taken fails every append waiting.
 * An append joins a waiting group only while no other write of the key was
 * called after the group's leader (call order).
 */
export class AppendGroups<T> {
  private readonly groups = new Map<string, AppendGroup<T>>()

  /**
   * Appends `item` to the log `id` (a lock id: one per store and key). The
   * leader calls `lock` (resolving to the lock's release), then `write` for
   * each batch (resolving to the log after it); `leading` gets the leader's
   * whole run (close waits for it).
   */
  append(
    id: string,
    item: T,
    lock: () => Promise<() => void>,
    write: (batch: T[]) => Promise<LogInfo>,
    leading: (run: Promise<void>) => void,
  ): Promise<number> {
    // Joins the log's group only while its leader's lock request is the key's last (lastRequest, a
    // lock id's request number): a write of the key called after it (a dissoc) must not be
    // overtaken, so an append called after that write starts a group of its own, queued behind it.
    const waiting = this.groups.get(id)
    if (waiting && waiting.request !== undefined && lastRequest(id) === waiting.request) {
      return new Promise<number>((resolve, reject) => waiting.queue.push({ item, resolve, reject }))
    }
    const group: AppendGroup<T> = { queue: [], request: undefined }
    const done = new Promise<number>((resolve, reject) => group.queue.push({ item, resolve, reject }))
    this.groups.set(id, group)
    const queue = group.queue
    const forget = () => {
      if (this.groups.get(id) === group) this.groups.delete(id)
    }
    const locking = lock()
    group.request = lastRequest(id)
    const run = locking.then(
      async (unlock) => {
        try {
          while (queue.length > 0) {
            const batch = queue.splice(0, APPEND_BATCH)
            try {
              const info = await write(batch.map((x) => x.item))
              batch.forEach((x, i) => {
                x.resolve(info.lastIndex - (batch.length - 1 - i) - info.firstIndex + 1)
              })
            } catch (err) {
              for (const x of batch) x.reject(err)
            }
          }
        } finally {
          forget()
          unlock()
        }
      },
      (err: unknown) => {
        // The lock could not be taken: everyone waiting fails with that.
        forget()
        for (const x of queue.splice(0)) x.reject(err)
      },
    )
    leading(run)
    return done
  }
}
