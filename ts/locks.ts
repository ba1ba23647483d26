/**
 * Per-key locks within one JavaScript thread.
 *
 * Async operations queue here, in a Promise chain, so they never park a libuv
 * threadpool thread waiting for a lock (the holder may need that thread to
 * finish: a deadlock). Entries are removed when released, so the table never
 * grows with the number of distinct keys.
 */
import { KonserveError } from './errors.js'

const held = new Map<string, Array<() => void>>()

function lockId(scope: string, key: Uint8Array): string {
  let s = scope + '\u0000'
  // Chunked to stay within the argument limit for very long keys.
  for (let i = 0; i < key.length; i += 4096) s += String.fromCharCode(...key.subarray(i, i + 4096))
  return s
}

/** Sorted, de-duplicated lock ids: one acquisition order everywhere prevents deadlock. */
export function lockIds(scope: string, keys: Uint8Array[]): string[] {
  return [...new Set(keys.map((k) => lockId(scope, k)))].sort()
}

function acquireOne(id: string): Promise<void> | undefined {
  const queue = held.get(id)
  if (!queue) {
    held.set(id, [])
    return undefined
  }
  return new Promise((resolve) => queue.push(resolve))
}

export async function acquire(ids: string[]): Promise<void> {
  for (const id of ids) await acquireOne(id)
}

/**
 * Takes the locks for a blocking call. If this thread already holds one (an
 * async operation is between its steps), waiting would deadlock the thread, so
 * this throws `ERR_LOCK_BUSY` instead.
 */
export function acquireSync(ids: string[]): void {
  if (ids.some((id) => held.has(id))) {
    throw new KonserveError(
      'ERR_LOCK_BUSY',
      'the key is locked by an unfinished async operation of this thread; a blocking call would deadlock. Await it first',
    )
  }
  for (const id of ids) held.set(id, [])
}

export function release(ids: string[]): void {
  for (const id of ids) {
    const queue = held.get(id)
    const next = queue?.shift()
    if (next) next() // hand the lock straight to the next waiter
    else held.delete(id)
  }
}

/** For tests: how many keys are locked right now in this thread. */
export function heldCount(): number {
  return held.size
}
