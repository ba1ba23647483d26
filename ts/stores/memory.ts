/**
 * The memory backing: a Map of encoded records, private to one JavaScript
 * thread. Values are stored serialized, so a value read back is a copy and
 * the store behaves exactly like a file store (same errors, same metadata).
 * Multi-key writes are atomic.
 */
import { type Backing, type ListCursor, type RawEntry, type RawListing, type RawMeta, type RawWrite, copyBytes } from '../backing.js'

interface Slot extends RawEntry {
  key: Uint8Array
}

let counter = 0

function id(key: Uint8Array): string {
  let s = ''
  for (let i = 0; i < key.length; i += 4096) s += String.fromCharCode(...key.subarray(i, i + 4096))
  return s
}

export class MemoryBacking implements Backing {
  readonly implementation = 'memory' as const
  readonly lockScope = `memory:${++counter}`
  readonly atomicMultiKey = true
  private readonly slots = new Map<string, Slot>()

  getSync(key: Uint8Array): RawEntry | undefined {
    const s = this.slots.get(id(key))
    // Copied out as well as in: a reader that changes a blob must not change the store.
    return s && { serializer: s.serializer, meta: s.meta, value: copyBytes(s.value) }
  }
  getMetaSync(key: Uint8Array): RawMeta | undefined {
    const s = this.slots.get(id(key))
    return s && { key: s.key, serializer: s.serializer, meta: s.meta }
  }
  existsSync(key: Uint8Array): boolean {
    return this.slots.has(id(key))
  }
  putSync(writes: RawWrite[]): void {
    // Copy in: callers may reuse their buffers.
    for (const w of writes) {
      this.slots.set(id(w.key), {
        key: copyBytes(w.key),
        serializer: w.serializer,
        meta: copyBytes(w.meta),
        value: copyBytes(w.value),
      })
    }
  }
  deleteSync(keys: Uint8Array[]): boolean[] {
    return keys.map((k) => this.slots.delete(id(k)))
  }
  listSync(): RawListing {
    return {
      entries: [...this.slots.values()].map((s) => ({ key: s.key, serializer: s.serializer, meta: s.meta })),
      corrupt: [],
    }
  }

  /** A snapshot of the key ids; each batch reads the keys still there. */
  openList(): ListCursor {
    let ids: string[] | undefined = [...this.slots.keys()]
    let at = 0
    const nextSync = (max: number): RawListing | undefined => {
      if (!ids) return undefined
      const out: RawListing = { entries: [], corrupt: [] }
      const n = Math.max(1, max)
      while (at < ids.length && out.entries.length < n) {
        const s = this.slots.get(ids[at++]!)
        if (s) out.entries.push({ key: s.key, serializer: s.serializer, meta: s.meta })
      }
      if (at >= ids.length) ids = undefined
      return out.entries.length > 0 ? out : undefined
    }
    return {
      nextSync,
      next: async (max) => nextSync(max),
      close: () => {
        ids = undefined
      },
    }
  }

  async getAsync(key: Uint8Array) {
    return this.getSync(key)
  }
  async getMetaAsync(key: Uint8Array) {
    return this.getMetaSync(key)
  }
  async existsAsync(key: Uint8Array) {
    return this.existsSync(key)
  }
  async putAsync(writes: RawWrite[]) {
    this.putSync(writes)
  }
  async deleteAsync(keys: Uint8Array[]) {
    return this.deleteSync(keys)
  }
  async listAsync() {
    return this.listSync()
  }

  // One thread owns this store: the facade's in-thread locks are all it needs.
  lockSync(): void {}
  tryLock(): boolean {
    return true
  }
  unlock(): void {}
}
