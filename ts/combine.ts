/**
 * Combining the concurrent async updates of one key (flat combining).
 *
 * Why: an update holds its key's lock (this thread's and the cross-process
 * one) from its read to its durable write, so the updates of one key take
 * turns, one durable write (an fsync, a log frame) each: 16 calls in flight on
 * 4 keys commit at most 4 records at a time. Here the calls that wait for one
 * key of one Store join a batch, which one hold of the lock runs: all of them,
 * in call order, each on the value the one before produced, then ONE write of
 * the last value; each call settles only after that write is durable (all of
 * them fail if it fails: none took effect). Each function still runs while
 * the key is locked, in this process and across processes, and no other
 * writer runs in between.
 *
 * A batch is one request for the lock, made when its first call comes; a
 * call joins it only while no other request for the lock (another write of
 * the key in this thread) came after it, so writes keep their call order.
 * Bounds: a batch takes at most MAX_BATCH calls, and takes no new ones
 * SLICE_MS after its hold began: a stream of calls cannot keep the lock (from
 * other processes too) or the first call's write waiting for ever; later
 * calls form the next batch, which requests the lock in turn.
 *
 * Not combined: a call made by code that holds the key (an update function
 * writing its own key): it goes to the lock alone, as ever, which fails it
 * with ERR_LOCK_REENTRY (or lets it wait its turn) instead of joining a batch
 * that waits for it. The blocking form never combines.
 *
 * What runs a batch (api.ts, updateBatch) takes its calls with `take()`,
 * records each call's outcome (`done`, `failed`), and may `settle()` the calls
 * it has written before it waits for a function's Promise; this module
 * forms, bounds and settles the batches.
 */
import { type Frames, currentFrames, holdsHere, lastRequest, runDetached } from './locks.js'

/** Most calls one batch takes. */
export const MAX_BATCH = 256
/** Milliseconds after its hold began that a batch stops taking new calls. */
export const SLICE_MS = 20

type Outcome<R> = { ok: true; value: R } | { ok: false; error: unknown }

/** One call: its argument, the frames of the code that made it (locks.ts), its outcome and its Promise's ends. */
export interface Entry<A, R> {
  readonly arg: A
  readonly frames: Frames
  outcome?: Outcome<R>
  resolve(value: R): void
  reject(err: unknown): void
}

/** The calls one hold of a key runs, in call order. */
export class Batch<A, R> {
  /** Calls joined, in order. */
  private readonly calls: Entry<A, R>[]
  /** How many of `calls` have been taken; how many settled. */
  private given = 0
  private settled = 0
  /** Whether the batch takes new calls (`join`). */
  private open: boolean
  /** The number of this batch's lock request (locks.ts `lastRequest`). */
  ticket: number | undefined
  /** When the first call was taken (the hold began). */
  private began = 0

  constructor(
    first: Entry<A, R>,
    private readonly id?: string,
    private readonly onClose?: () => void,
  ) {
    this.calls = [first]
    this.open = id !== undefined
  }

  /** Adds a call, if the batch still takes one (see the module's comment). */
  join(e: Entry<A, R>): boolean {
    if (
      this.open &&
      this.calls.length < MAX_BATCH &&
      this.ticket !== undefined &&
      lastRequest(this.id!) === this.ticket &&
      (this.given === 0 || Date.now() - this.began < SLICE_MS)
    ) {
      this.calls.push(e)
      return true
    }
    this.close()
    return false
  }

  private close(): void {
    if (!this.open) return
    this.open = false
    this.onClose?.()
  }

  /** The next call to run, in order (the first one first), or undefined: the batch is closed, and writes. */
  take(): Entry<A, R> | undefined {
    if (this.given === 0) this.began = Date.now()
    if (this.given < this.calls.length) return this.calls[this.given++]
    this.close()
    return undefined
  }

  done(e: Entry<A, R>, value: R): void {
    e.outcome = { ok: true, value }
  }

  failed(e: Entry<A, R>, error: unknown): void {
    e.outcome = { ok: false, error }
  }

  /**
   * Settles, in order, the calls taken before the one running (with `all`:
   * every call, the batch is over): each its own failure, else `failure`
   * (the batch failed: its write, or its lock or read before any call ran),
   * else its value (written).
   */
  settle(failure?: { error: unknown }, all = false): void {
    if (all) this.close()
    const end = all ? this.calls.length : this.given - 1
    for (; this.settled < end; this.settled++) {
      const e = this.calls[this.settled]!
      const o = e.outcome?.ok === false ? e.outcome : failure ? ({ ok: false, error: failure.error } as const) : e.outcome!
      e.outcome = o
      if (o.ok) e.resolve(o.value)
      else e.reject(o.error)
    }
  }

  /** The outcome of a batch of one call (`alone`), once run: its value, or it throws its error. */
  only(): R {
    const o = this.calls[0]!.outcome!
    if (!o.ok) throw o.error
    return o.value
  }
}

/** A batch of this one call (the blocking form, a nested call): it takes no other. */
export function alone<A, R>(arg: A): Batch<A, R> {
  return new Batch<A, R>({ arg, frames: currentFrames(), resolve() {}, reject() {} })
}

// Per owner (a Store object), per lock id: the batch that takes new calls, while it does.
const owners = new WeakMap<object, Map<string, Batch<never, never>>>()

/**
 * Runs `arg` in a batch of the calls for lock `id` of `owner`; its Promise
 * settles once its batch is written. `runBatch` runs one batch holding the
 * lock, requesting it at once (synchronously); it rejects when the batch
 * failed as a whole. Undefined when the running code holds `id` itself: the
 * caller runs the call `alone`.
 */
export function combine<A, R>(owner: object, id: string, arg: A, runBatch: (batch: Batch<A, R>) => Promise<void>): Promise<R> | undefined {
  if (holdsHere(id)) return undefined
  let open = owners.get(owner) as Map<string, Batch<A, R>> | undefined
  if (!open) owners.set(owner, (open = new Map()) as Map<string, Batch<never, never>>)
  let entry!: Entry<A, R>
  const p = new Promise<R>((resolve, reject) => {
    entry = { arg, frames: currentFrames(), resolve, reject }
  })
  if (open.get(id)?.join(entry)) return p
  const batches = open
  const batch: Batch<A, R> = new Batch(entry, id, () => {
    if (batches.get(id) === batch) batches.delete(id)
  })
  batches.set(id, batch)
  // The batch runs as no operation's code; each call's function runs as its caller's (Entry.frames).
  const ran = runDetached(() => runBatch(batch))
  batch.ticket = lastRequest(id)
  ran.then(
    () => batch.settle(undefined, true),
    (error: unknown) => batch.settle({ error }, true),
  )
  return p
}
