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
/** For `lastRequest`: requests so far, and the last one's number for each lock requested and not yet free. */
let requests = 0
const asked = new Map<string, number>()

/**
 * Which locks the running operation holds, carried along its async context
 * (Node: an AsyncLocalStorage, handed in by ts/node/wire.ts; elsewhere a
 * plain stack, which follows blocking calls and the synchronous start of
 * async ones).
 * Waiting for one of them is a deadlock only while the holder waits for the
 * user's code (an update function) that asks: so a frame counts while the
 * holder is inside a user call (`runUser`) and the lock is held. A callback
 * the function started but did not await just waits its turn.
 */
interface Frame {
  readonly ids: readonly string[]
  active: boolean
  /** User calls of the holder that have not returned (or settled) yet. */
  users: number
}

/** What carries the frames along calls: AsyncLocalStorage's `getStore`/`run`. */
export interface AsyncContext<T> {
  getStore(): T | undefined
  run<R>(store: T, fn: () => R): R
}

/** A context that follows synchronous calls only (where no AsyncLocalStorage is). */
function stackContext<T>(): AsyncContext<T> {
  let current: T | undefined
  return {
    getStore: () => current,
    run<R>(store: T, fn: () => R): R {
      const outer = current
      current = store
      try {
        return fn()
      } finally {
        current = outer
      }
    },
  }
}

let context: AsyncContext<readonly Frame[]> = stackContext()

/** @internal Hands in the async context (Node: `new AsyncLocalStorage()`); before any lock is taken. */
export function useAsyncContext(c: AsyncContext<readonly Frame[]>): void {
  context = c
}

/** Runs `fn` (and everything it starts) as a holder of `ids`, within the running operation (or the one whose frames are `within`). */
export function runHolding<T>(ids: readonly string[], fn: () => T, within: readonly Frame[] | undefined = context.getStore()): T {
  const frame: Frame = { ids, active: true, users: 0 }
  const frames = [...(within ?? []).filter((f) => f.active), frame]
  let result: T
  try {
    result = context.run(frames, fn)
  } catch (err) {
    frame.active = false
    throw err
  }
  if (result instanceof Promise) {
    return result.finally(() => {
      frame.active = false
    }) as T
  }
  frame.active = false
  return result
}

/** @internal The running operation's frames, to run code for it later as it (`runAs`, `runHolding`; ts/combine.ts). */
export type Frames = readonly Frame[]

/** @internal The running operation's frames. */
export function currentFrames(): Frames {
  return context.getStore() ?? []
}

/** @internal Runs `fn` (and everything it starts) as no operation: with no frames. */
export function runDetached<T>(fn: () => T): T {
  return context.getStore()?.length ? context.run([], fn) : fn()
}

/**
 * @internal Whether the running operation holds `id` (inside its user code or
 * not): ts/combine.ts leaves such a call to the lock, which fails it with
 * ERR_LOCK_REENTRY or makes it wait its turn, as ever.
 */
export function holdsHere(id: string): boolean {
  const frames = context.getStore()
  return frames?.some((f) => f.active && f.ids.includes(id)) === true
}

/**
 * @internal The number of the last request for `id` while it is held or
 * waited for (requests are numbered in this thread), else undefined: a
 * combined batch (ts/combine.ts) takes more calls only while no other
 * request came after its own, so that writes keep their call order.
 */
export function lastRequest(id: string): number | undefined {
  return asked.get(id)
}

/** Runs user code (an update function) of the innermost holder; see `Frame`. */
export function runUser<T>(fn: () => T): T {
  const frames = context.getStore()
  const top = frames?.[frames.length - 1]
  if (!top) return fn()
  top.users++
  let result: T
  try {
    result = fn()
  } catch (err) {
    top.users--
    throw err
  }
  if (result && typeof (result as { then?: unknown }).then === 'function') {
    const settled = Promise.resolve(result).finally(() => {
      top.users--
    })
    // Whoever awaits it sees a rejection; a sync call that refuses a Promise does not await it.
    settled.catch(() => {})
    return settled as T
  }
  top.users--
  return result
}

/**
 * Fails with `ERR_LOCK_REENTRY` if the running operation already holds one of
 * `ids`: it would wait for itself forever (an update function that writes
 * its own key).
 */
function checkReentry(ids: readonly string[]): void {
  const frames = context.getStore()
  if (!frames) return
  for (const f of frames) {
    if (f.active && f.users > 0 && f.ids.some((id) => ids.includes(id))) {
      throw new KonserveError(
        'ERR_LOCK_REENTRY',
        'this operation already holds the key\'s lock (an update function writes a key its own operation is updating); it would wait for itself forever',
      )
    }
  }
}

function lockId(scope: string, key: Uint8Array): string {
  if (key.length <= 4096) return `${scope}\u0000${String.fromCharCode.apply(null, key as unknown as number[])}`
  let s = `${scope}\u0000`
  // Chunked to stay within the argument limit for very long keys.
  for (let i = 0; i < key.length; i += 4096) s += String.fromCharCode(...key.subarray(i, i + 4096))
  return s
}

/** Sorted, de-duplicated lock ids: one acquisition order everywhere prevents deadlock. */
export function lockIds(scope: string, keys: Uint8Array[]): string[] {
  if (keys.length === 1) return [lockId(scope, keys[0]!)] // the usual single key: no Set, no sort
  return [...new Set(keys.map((k) => lockId(scope, k)))].sort()
}

function acquireOne(id: string): Promise<void> | undefined {
  asked.set(id, ++requests)
  const queue = held.get(id)
  if (!queue) {
    held.set(id, [])
    return undefined
  }
  return new Promise((resolve) => queue.push(resolve))
}

/**
 * Takes the locks for an async call: it queues on every one of them at once,
 * within the call, and then waits. A call made after this one therefore
 * waits behind it on each key they share (writes keep their call order; a
 * first version awaited each lock before asking for the next, and a later
 * write of its second key went first). Each lock's queue is in call order,
 * so no two calls wait for each other.
 */
export async function acquire(ids: string[]): Promise<void> {
  checkReentry(ids)
  if (ids.length === 1) {
    await acquireOne(ids[0]!)
    return
  }
  const waits: Promise<void>[] = []
  for (const id of ids) {
    const wait = acquireOne(id)
    if (wait) waits.push(wait)
  }
  await Promise.all(waits)
}

/**
 * Takes the locks for a blocking call. If this thread already holds one (an
 * async operation is between its steps), waiting would deadlock the thread, so
 * this throws `ERR_LOCK_BUSY` instead.
 */
export function acquireSync(ids: string[]): void {
  checkReentry(ids)
  if (ids.some((id) => held.has(id))) {
    throw new KonserveError(
      'ERR_LOCK_BUSY',
      'the key is locked by an unfinished async operation of this thread; a blocking call would deadlock. Await it first',
    )
  }
  for (const id of ids) held.set(id, [])
}

/**
 * Takes the locks at once when nobody in this thread holds any of them
 * (true), else takes none (false: the caller waits for them with `acquire`,
 * in turn). ERR_LOCK_REENTRY as `acquire`. The async assoc's fast path
 * (api.ts, assocFused) takes its lock with this, without a Promise.
 */
export function tryAcquire(ids: string[]): boolean {
  checkReentry(ids)
  for (const id of ids) if (held.has(id)) return false
  for (const id of ids) held.set(id, [])
  return true
}

export function release(ids: string[]): void {
  for (const id of ids) {
    const queue = held.get(id)
    const next = queue?.shift()
    if (next) {
      next() // hand the lock straight to the next waiter
    } else {
      held.delete(id)
      asked.delete(id)
    }
  }
}

/** For tests: how many keys are locked right now in this thread. */
export function heldCount(): number {
  return held.size
}
