/**
 * Write hooks: functions called after each successful write made through one
 * Store object (konserve's `add-write-hook!`).
 *
 * When a hook runs: after the write is durable (for a file store: synced; for
 * a write-behind tiered store: in the front) and after the key's lock is released, before the write's result is handed back
 * (so after `await assoc(...)` every hook has been called). One exception:
 * when concurrent async updates of one key are combined (ts/combine.ts) and a
 * later update function returns a Promise, the earlier calls' hooks run once
 * their write is durable, while the lock is still held for the later ones. Hooks run
 * synchronously, in the order they were added; a hook that returns a Promise is
 * not awaited. A hook that throws, or whose Promise rejects, never turns the
 * write into a failure: its error goes to the hook's `onHookError` or, by
 * default, to `process.emitWarning` (code `KONSERVE_HOOK_ERROR`). A write that
 * fails calls no hook.
 *
 * What each operation reports is the table in README.md ("Write hooks"),
 * checked by __test__/hook-events.spec.ts. `path` is always
 * `[key, ...inner path]`; `oldValue`/`newValue` are whole top-level values,
 * the very objects the operation returns (do not mutate them), and
 * `oldValue` is undefined where the operation does not read the old value.
 * In particular `append` reports the element appended as `newValue` and no
 * `oldValue`, not the log before and after: an append never reads the log,
 * and making it do so for hooks would cost the whole log on every append.
 */
import type { Key } from './format/key.js'
import type { Metadata } from './format/meta.js'
import { Store, checkStore } from './store.js'
import { badArgument, checkOptions, checks } from './args.js'

/** The write operations that call hooks. */
export type WriteOp = 'assoc' | 'assocIn' | 'update' | 'updateIn' | 'dissoc' | 'bassoc' | 'append' | 'trimLog' | 'multiAssoc' | 'multiDissoc'

/** What a hook gets for a write of one key (every op but `multiAssoc`). */
export interface KeyWriteEvent {
  op: Exclude<WriteOp, 'multiAssoc'>
  /** The top-level key. */
  key: Key
  /** `[key, ...inner path]`: the path the operation was given, or `[key]`. */
  path: unknown[]
  /** The whole top-level value before the write, where the operation read it (see the table above). */
  oldValue: unknown
  /** The whole top-level value after the write; undefined for deletes. */
  newValue: unknown
  /**
   * The metadata written, as `getMeta` returns it after the write: for
   * `assoc`, `assocIn`, `update`, `updateIn` and `bassoc`. Absent for deletes
   * and logs (`append`, `trimLog`), which write no metadata of their own.
   */
  meta?: Metadata
}

/**
 * What a hook gets for a `multiAssoc`: ONE event for the whole batch, as
 * konserve reports `{:api-op :multi-assoc :kvs kvs :meta meta}`.
 */
export interface BatchWriteEvent {
  op: 'multiAssoc'
  /** The batch's `[key, value]` pairs, in the order they were given (and written). */
  kvs: Array<[Key, unknown]>
  /** The metadata written for each key, as `getMeta` would return it. */
  meta: Map<Key, Metadata>
  key?: undefined
  path?: undefined
  oldValue?: undefined
  newValue?: undefined
}

export type WriteEvent = KeyWriteEvent | BatchWriteEvent

export type WriteHook = (event: WriteEvent) => unknown

export interface WriteHookOptions {
  /** Gets the hook's error (a throw or a rejected Promise). Default: `process.emitWarning`. */
  onHookError?: (err: unknown, event: WriteEvent) => void
}

/** A hook identifier: adding a hook under an id in use replaces that hook. */
export type HookId = string | number | symbol

interface Registered {
  fn: WriteHook
  onHookError?: (err: unknown, event: WriteEvent) => void
}

// Per Store object; a store that is dropped takes its hooks with it.
const registry = new WeakMap<Store, Map<HookId, Registered>>()

/** Calls `fn` after each successful write made through `store` (this Store object only). */
export function addWriteHook(store: Store, id: HookId, fn: WriteHook, opts: WriteHookOptions = {}): void {
  checkStore('addWriteHook', store)
  if (typeof fn !== 'function') throw badArgument('addWriteHook', 'fn', 'a function', fn)
  checkOptions('addWriteHook', opts, { onHookError: checks.function })
  let hooks = registry.get(store)
  if (!hooks) registry.set(store, (hooks = new Map()))
  hooks.set(id, { fn, onHookError: opts.onHookError })
}

/** Removes the hook added under `id`. Returns whether there was one. */
export function removeWriteHook(store: Store, id: HookId): boolean {
  // A closed store's hooks can still be removed.
  if (!(store instanceof Store)) throw badArgument('removeWriteHook', 'store', 'a Store', store)
  const hooks = registry.get(store)
  if (!hooks) return false
  const had = hooks.delete(id)
  if (hooks.size === 0) registry.delete(store)
  return had
}

function describe(id: HookId): string {
  return typeof id === 'symbol' ? id.toString() : JSON.stringify(id)
}

function report(id: HookId, hook: Registered, err: unknown, event: WriteEvent): void {
  try {
    if (hook.onHookError) {
      hook.onHookError(err, event)
      return
    }
  } catch (inner) {
    err = inner // an error handler that throws: report that instead
  }
  const message = `konserve write hook ${describe(id)} failed after a successful ${event.op}: ${
    err instanceof Error ? err.message : String(err)
  }`
  if (typeof process !== 'undefined' && typeof process.emitWarning === 'function') {
    process.emitWarning(message, { code: 'KONSERVE_HOOK_ERROR', detail: err instanceof Error ? err.stack : undefined })
  } else {
    console.warn(message, err)
  }
}

/** @internal Whether `store` has any write hook (so a caller can skip building events). */
export function hasWriteHooks(store: Store): boolean {
  return (registry.get(store)?.size ?? 0) > 0
}

/**
 * Called by every write operation once its write succeeded and (but for the
 * combined updates above) its lock is released. `events` is one event, or a function building them (so a batch
 * builds nothing when the store has no hooks). Never throws.
 */
export function afterWrite(store: Store, events: WriteEvent | (() => WriteEvent[])): void {
  const hooks = registry.get(store)
  if (!hooks || hooks.size === 0) return
  const list = typeof events === 'function' ? events() : [events]
  // A snapshot: a hook may add or remove hooks.
  const snapshot = [...hooks]
  for (const event of list) {
    for (const [id, hook] of snapshot) {
      try {
        const r = hook.fn(event)
        if (r !== null && typeof r === 'object' && typeof (r as PromiseLike<unknown>).then === 'function') {
          ;(r as PromiseLike<unknown>).then(undefined, (err: unknown) => report(id, hook, err, event))
        }
      } catch (err) {
        report(id, hook, err, event)
      }
    }
  }
}
