/**
 * TEMPORARY (issue 20, while the code moves onto ./seam.ts): adapters between
 * the old `Backing` (…Sync/…Async pairs, ./index.ts) and the new one (one Op
 * per operation, ./seam.ts), so a backend written in the new shape runs under
 * the old facade and the other way round. Deleted when every backend and the
 * facade use the new shape.
 */
import gensync from 'gensync'
import * as Old from './index.js'
const { keyId } = Old
import * as New from './seam.js'

/** A new-shape backing seen through the old interface (for the old facade). */
export function toLegacy(b: New.Backing): Old.Backing {
  // Async-only backings: a lock attempt starts the lock op and reports when it is done.
  const pending = new Map<string, { done: boolean; err?: unknown }>()
  const listCursor = (c: New.ListCursor): Old.ListCursor => ({ nextSync: (m) => c.next.sync(m), next: (m) => c.next.async(m), close: () => c.close() })
  const logCursor = (c: New.LogCursor): Old.LogCursor => ({ nextSync: (m) => c.next.sync(m), next: (m) => c.next.async(m), close: () => c.close() })
  const sink = (s: New.BlobSink): Old.BlobSink => ({
    writeSync: (x) => s.write.sync(x),
    write: (x) => s.write.async(x),
    commitSync: () => s.commit.sync(),
    commit: () => s.commit.async(),
    abort: () => s.abort(),
  })
  const source = (s: New.BlobSource): Old.BlobSource => ({
    get size() {
      return s.size
    },
    get meta() {
      return s.meta
    },
    get plain() {
      return s.plain
    },
    readSync: (o, l) => s.read.sync(o, l),
    read: (o, l) => s.read.async(o, l),
    readInto: s.readInto ? (o, t) => s.readInto!(o, t) : undefined,
    close: () => s.close(),
  })
  const old: Old.Backing = {
    implementation: b.implementation as Old.Backing['implementation'],
    lockScope: b.lockScope,
    atomicMultiKey: b.atomicMultiKey,
    getSync: (k) => b.get.sync(k),
    getAsync: (k) => b.get.async(k),
    getValueSync: b.getValue ? (k) => b.getValue!.sync(k) : undefined,
    getValueAsync: b.getValue ? (k) => b.getValue!.async(k) : undefined,
    getMetaSync: (k) => b.getMeta.sync(k),
    getMetaAsync: (k) => b.getMeta.async(k),
    existsSync: (k) => b.exists.sync(k),
    existsAsync: (k) => b.exists.async(k),
    putSync: (w) => b.put.sync(w),
    putAsync: (w) => b.put.async(w),
    deleteSync: (k) => b.delete.sync(k),
    deleteAsync: (k) => b.delete.async(k),
    listSync: () => drain(b.openList(), true) as Old.RawListing,
    listAsync: () => drain(b.openList(), false) as Promise<Old.RawListing>,
    openList: () => listCursor(b.openList()),
    clock: b.clock ? { nowSync: () => b.clock!.sync(), now: () => b.clock!.async() } : undefined,
    lockSync: (k) => b.lock.sync(k),
    // The old facade polls tryLock; the new lock op waits by itself: a blocking
    // backing waits here (fine for tests of a backend), an async-only one
    // starts the op on the first attempt and reports true once it is done.
    tryLock: (k, waited) => {
      // A backing with a non-blocking attempt of its own (the pure file store) is polled as before.
      const attempt = (b as { tryLock?: (keys: Uint8Array[], waitedMs?: number) => boolean }).tryLock
      if (attempt) return attempt.call(b, k, waited)
      if (b.blocking) {
        b.lock.sync(k)
        return true
      }
      const id = k.map(keyId).join('\u0000')
      let p = pending.get(id)
      if (!p) {
        const q: { done: boolean; err?: unknown } = { done: false }
        pending.set(id, (p = q))
        b.lock.async(k).then(
          () => (q.done = true),
          (err: unknown) => Object.assign(q, { done: true, err }),
        )
      }
      if (!p.done) return false
      pending.delete(id)
      if (p.err) throw p.err
      return true
    },
    unlock: (k) => b.unlock(k),
    filePath: b.filePath?.bind(b),
    blobWriterSync: (k, m) => sink(b.blobWriter.sync(k, m)),
    blobWriterAsync: async (k, m) => sink(await b.blobWriter.async(k, m)),
    openBlobSync: (k) => {
      const s = b.openBlob.sync(k)
      return s && source(s)
    },
    openBlobAsync: async (k) => {
      const s = await b.openBlob.async(k)
      return s && source(s)
    },
    appendSync: (k, r, m) => b.append.sync(k, r, m),
    appendAsync: (k, r, m) => b.append.async(k, r, m),
    openLogSync: (k) => {
      const c = b.openLog.sync(k)
      return c && logCursor(c)
    },
    openLogAsync: async (k) => {
      const c = await b.openLog.async(k)
      return c && logCursor(c)
    },
    trimLogSync: (k, f, m) => b.trimLog.sync(k, f, m),
    trimLogAsync: (k, f, m) => b.trimLog.async(k, f, m),
    close: b.close ? () => b.close!.async() : undefined,
    closeSync: b.close ? () => b.close!.sync() : undefined,
  }
  return old
}

function drain(c: New.ListCursor, sync: boolean): Old.RawListing | Promise<Old.RawListing> {
  const all = gensync(function* () {
    const out: Old.RawListing = { entries: [], corrupt: [] }
    try {
      for (let batch = yield* c.next(1024); batch; batch = yield* c.next(1024)) {
        out.entries.push(...batch.entries)
        out.corrupt.push(...batch.corrupt)
      }
    } finally {
      c.close()
    }
    return out
  })
  return sync ? all.sync() : all.async()
}

/** An old-shape backing seen through the new interface (for a facade already moved). */
export function fromLegacy(o: Old.Backing): New.Backing {
  const listCursor = (c: Old.ListCursor): New.ListCursor => ({ next: New.twinOp((m) => c.nextSync(m), (m) => c.next(m)), close: () => c.close() })
  const logCursor = (c: Old.LogCursor): New.LogCursor => ({ next: New.twinOp((m) => c.nextSync(m), (m) => c.next(m)), close: () => c.close() })
  const sink = (s: Old.BlobSink): New.BlobSink => ({
    write: New.twinOp((x) => s.writeSync(x), (x) => s.write(x)),
    commit: New.twinOp(() => s.commitSync(), () => s.commit()),
    abort: () => s.abort(),
  })
  const source = (s: Old.BlobSource): New.BlobSource => ({
    get size() {
      return s.size
    },
    get meta() {
      return s.meta
    },
    get plain() {
      return s.plain
    },
    read: New.twinOp((a, l) => s.readSync(a, l), (a, l) => s.read(a, l)),
    readInto: s.readInto ? (a, t) => s.readInto!(a, t) : undefined,
    close: () => s.close(),
  })
  const getValue = o.getValueSync && o.getValueAsync ? New.twinOp(o.getValueSync.bind(o), o.getValueAsync.bind(o)) : undefined
  return {
    implementation: o.implementation,
    lockScope: o.lockScope,
    atomicMultiKey: o.atomicMultiKey,
    blocking: true,
    get: New.twinOp((k) => o.getSync(k), (k) => o.getAsync(k)),
    getValue,
    getMeta: New.twinOp((k) => o.getMetaSync(k), (k) => o.getMetaAsync(k)),
    exists: New.twinOp((k) => o.existsSync(k), (k) => o.existsAsync(k)),
    put: New.twinOp((w) => o.putSync(w), (w) => o.putAsync(w)),
    delete: New.twinOp((k) => o.deleteSync(k), (k) => o.deleteAsync(k)),
    openList: () => listCursor(o.openList()),
    clock: o.clock ? New.twinOp(() => o.clock!.nowSync(), () => o.clock!.now()) : undefined,
    lock: New.pollingLock((k, w) => o.tryLock(k, w), (k) => o.lockSync(k)),
    unlock: (k) => o.unlock(k),
    filePath: o.filePath?.bind(o),
    blobWriter: New.twinOp(
      (k, m) => sink(o.blobWriterSync(k, m)),
      async (k, m) => sink(await o.blobWriterAsync(k, m)),
    ),
    openBlob: New.twinOp(
      (k) => {
        const s = o.openBlobSync(k)
        return s && source(s)
      },
      async (k) => {
        const s = await o.openBlobAsync(k)
        return s && source(s)
      },
    ),
    append: New.twinOp((k, r, m) => o.appendSync(k, r, m), (k, r, m) => o.appendAsync(k, r, m)),
    openLog: New.twinOp(
      (k) => {
        const c = o.openLogSync(k)
        return c && logCursor(c)
      },
      async (k) => {
        const c = await o.openLogAsync(k)
        return c && logCursor(c)
      },
    ),
    trimLog: New.twinOp((k, f, m) => o.trimLogSync(k, f, m), (k, f, m) => o.trimLogAsync(k, f, m)),
    close:
      o.close || o.closeSync
        ? New.twinOp(
            () => o.closeSync?.(),
            async () => {
              await o.close?.()
            },
          )
        : undefined,
  }
}
