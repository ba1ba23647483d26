/**
 * The forwarding layer: a backing over another backing that passes every
 * member through, except the ones a layer changes. The read cache
 * (./cached.ts) and the tiers (./tiered.ts) are built with it: each writes
 * only the operations it changes, each once, as Ops over the backing under
 * it (`yield* inner.get(key)`), and forwards the rest.
 *
 * Forwarded members are read from the inner backing when they are used (a
 * getter each), so the layer sees the inner backing as it is then (sealed by
 * close, say). Also here: the bookkeeping both layers share.
 */
import gensync, { type Handler } from 'gensync'
import { type RawEntry, copyBytes, keyId } from '../backing/index.js'
import type { Backing, BlobSink } from '../backing/seam.js'

/** Every member of a Backing: what a layer forwards unless it has its own. */
const MEMBERS = [
  'implementation', 'lockScope', 'atomicMultiKey', 'blocking', 'get', 'getValue', 'getMeta', 'exists', 'put', 'delete',
  'openList', 'clock', 'lock', 'unlock', 'filePath', 'blobWriter', 'openBlob', 'append', 'openLog', 'trimLog', 'close', 'flush',
] as const satisfies readonly (keyof Backing)[]

/** The members that are plain methods: forwarded bound to the inner backing. */
const METHODS: ReadonlySet<string> = new Set(['openList', 'unlock', 'filePath', 'flush'])

/**
 * A backing with `own`'s members (getters kept as getters; a member set to
 * undefined is not forwarded: the layer has none) and every other member
 * of `inner`.
 */
export function forward<O extends Partial<Backing>>(inner: Backing, own: O): Backing & O {
  const b = {} as Backing & O
  for (const m of MEMBERS) {
    if (Object.hasOwn(own, m)) continue
    const get = METHODS.has(m)
      ? () => {
          const f = inner[m] as ((...a: unknown[]) => unknown) | undefined
          return f?.bind(inner)
        }
      : () => inner[m]
    Object.defineProperty(b, m, { get, enumerable: true, configurable: true })
  }
  Object.defineProperties(b, Object.getOwnPropertyDescriptors(own))
  return b
}

/** A copy that shares no memory with `e` (decoders may return views into their input). */
export function copyEntry(e: RawEntry): RawEntry {
  const c: RawEntry = { serializer: e.serializer, meta: copyBytes(e.meta), value: copyBytes(e.value) }
  if (e.log) c.log = { ...e.log }
  return c
}

/** `sink`, calling `done` once it is committed or aborted (whether that worked or not), and after a commit `afterCommit` (with whether it worked). */
export function watchSink(sink: BlobSink, done: () => void, afterCommit?: (ok: boolean) => Handler<void>): BlobSink {
  const { commitWith } = sink
  return {
    write: sink.write,
    commit: gensync(function* () {
      let ok = false
      try {
        yield* sink.commit()
        ok = true
      } finally {
        done()
        if (afterCommit) yield* afterCommit(ok)
      }
    }),
    ...(commitWith && {
      commitWith: gensync(function* (bytes: Uint8Array) {
        let ok = false
        try {
          yield* commitWith(bytes)
          ok = true
        } finally {
          done()
          if (afterCommit) yield* afterCommit(ok)
        }
      }),
    }),
    abort: () => {
      try {
        sink.abort()
      } finally {
        done()
      }
    },
  }
}

/**
 * Says whether what a read got may be put into a cache. A read that began
 * before a write of the same key ended may have read the old value; putting it
 * into the cache after the write updated the cache would make the cache stale.
 * Writes call `wrote` when they start and when they end; a read calls `begin`,
 * asks `clean` before (and after) filling, and calls `end`. Only writes made
 * while some read is in flight are remembered, so the table stays small.
 */
export class FillGuard {
  private gen = 0
  private floor = 0
  private readers = 0
  private readonly lastWrite = new Map<string, number>()

  wrote(ids: readonly string[]): void {
    const g = ++this.gen
    if (this.readers === 0) return // a read that begins later sees this write
    for (const id of ids) this.lastWrite.set(id, g)
    if (this.lastWrite.size > 4096) {
      // Bounded: forget the table, and let no read that began before now fill.
      this.lastWrite.clear()
      this.floor = g
    }
  }

  begin(): number {
    this.readers++
    return this.gen
  }

  /** No write of `id` started or ended since the read that began at `g0`. */
  clean(id: string, g0: number): boolean {
    return g0 >= this.floor && !((this.lastWrite.get(id) ?? -1) > g0)
  }

  end(): void {
    if (--this.readers === 0) this.lastWrite.clear()
  }
}

/**
 * The keys this backing's facade holds locked (a facade locks a key before a
 * read-modify-write). Reads of those keys skip the cache tier.
 */
export class HeldKeys {
  private readonly counts = new Map<string, number>()
  add(keys: Uint8Array[]): void {
    for (const k of keys) {
      const id = keyId(k)
      this.counts.set(id, (this.counts.get(id) ?? 0) + 1)
    }
  }
  remove(keys: Uint8Array[]): void {
    for (const k of keys) {
      const id = keyId(k)
      const n = (this.counts.get(id) ?? 0) - 1
      if (n > 0) this.counts.set(id, n)
      else this.counts.delete(id)
    }
  }
  has(id: string): boolean {
    return this.counts.has(id)
  }
}
