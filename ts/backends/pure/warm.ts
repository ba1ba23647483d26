/**
 * Key files this process wrote, or read by an async get, in the last few
 * seconds, of the kind the store's one-read path answers (plain, under
 * 64 KiB; the store notes only those): their pages are almost surely in the kernel's page cache, so an
 * async get of one reads it on the calling thread (one open, one read, one
 * close: about 10 µs) instead of taking two threadpool tasks (about 100 µs
 * on a 2-core machine). A blocking get does not note its file: only async
 * gets gain, and the blocking path stays as lean as it was.
 * The value cache (./held.ts) answers a file it holds after one stat; this
 * covers the read that fills it, and stores where it is off: the file is
 * still read, so a write by another process is never missed.
 *
 * The guess can be wrong (memory pressure evicted the file): then that read
 * blocks the loop for as long as the disk takes. Reads on the calling thread
 * slower than SLOW_MS count as strikes, each fast one takes 1/16 of a strike
 * away, and STRIKES of them turn the guess off for OFF_MS. A lone slow read
 * (the thread was preempted on a loaded machine) does not.
 */

/** How long after its last read or write a file counts as warm. */
const WARM_MS = 10_000
/** How many files are remembered (oldest forgotten first): a bound on memory, about 2 MB. */
const MAX_FILES = 16_384
/** A read on the calling thread this slow went to the disk. */
const SLOW_MS = 2
/** How many slow reads, net of fast ones, turn the guess off. */
const STRIKES = 4
/** How long the guess stays off then. */
const OFF_MS = 30_000

/** Path → when it was last read or written (performance.now()), in the order first remembered. */
const lastUsed = new Map<string, number>()
let offUntil = 0
let strikes = 0

/**
 * Notes that `path` was just read or written. One Map write: a file already
 * known keeps its place in the order, so the one forgotten at the bound is
 * the first remembered, not always the least recently used (it is then read
 * through the threadpool once, and remembered again).
 */
export function touch(path: string): void {
  lastUsed.set(path, performance.now())
  if (lastUsed.size > MAX_FILES) lastUsed.delete(lastUsed.keys().next().value!)
}

/** Whether `path` was read or written within WARM_MS (and the guess is on). */
export function isWarm(path: string): boolean {
  const at = lastUsed.get(path)
  if (at === undefined) return false
  const now = performance.now()
  return now - at < WARM_MS && now >= offUntil
}

/**
 * Runs `read` (a blocking read of a warm file) and times it: slow ones mean
 * the page cache no longer holds what was read lately, so no file counts as
 * warm for a while.
 */
export function timed<T>(read: () => T): T {
  const start = performance.now()
  try {
    return read()
  } finally {
    const end = performance.now()
    if (end - start <= SLOW_MS) strikes = Math.max(0, strikes - 1 / 16)
    else if (++strikes >= STRIKES) {
      lastUsed.clear()
      offUntil = end + OFF_MS
      strikes = 0
    }
  }
}

/** @internal For tests: forgets every file and turns the guess back on. */
export function resetWarm(): void {
  lastUsed.clear()
  offUntil = 0
  strikes = 0
}
