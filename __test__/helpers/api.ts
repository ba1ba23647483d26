/**
 * Runs each check of the compliance suite through one calling form. `api('sync')`
 * calls with `{ sync: true }` and asserts the result is a plain value (no
 * Promise); `api('async')` asserts a Promise. Either way the test awaits it.
 */
import { mkdtempSync, readdirSync, readlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as k from 'konserve'

export type Mode = 'sync' | 'async'

function wrap<F extends (...args: any[]) => any>(mode: Mode, f: F, optsIndex: number) {
  return (...args: any[]): Promise<any> => {
    const a = args.slice()
    const given = a[optsIndex] ?? {}
    while (a.length < optsIndex) a.push(undefined)
    a[optsIndex] = mode === 'sync' ? { ...given, sync: true } : given
    let r: unknown
    try {
      r = f(...a)
    } catch (err) {
      if (mode === 'async') return Promise.reject(new Error(`async form threw synchronously: ${(err as Error).message}`))
      return Promise.reject(err)
    }
    const isPromise = r instanceof Promise
    if (mode === 'sync' && isPromise) return Promise.reject(new Error(`${f.name} returned a Promise with { sync: true }`))
    if (mode === 'async' && !isPromise) return Promise.reject(new Error(`${f.name} did not return a Promise`))
    return Promise.resolve(r)
  }
}

export function api(mode: Mode) {
  return {
    mode,
    get: wrap(mode, k.get, 2),
    getIn: wrap(mode, k.getIn, 3),
    getMeta: wrap(mode, k.getMeta, 2),
    exists: wrap(mode, k.exists, 2),
    assoc: wrap(mode, k.assoc, 3),
    assocIn: wrap(mode, k.assocIn, 3),
    update: wrap(mode, k.update, 3),
    updateIn: wrap(mode, k.updateIn, 3),
    dissoc: wrap(mode, k.dissoc, 2),
    keys: wrap(mode, k.keys, 1),
    bassoc: wrap(mode, k.bassoc, 3),
    bget: wrap(mode, k.bget, 3),
    readBlob: wrap(mode, k.readBlob, 2),
    blobFile: wrap(mode, k.blobFile, 2),
    trimLog: wrap(mode, k.trimLog, 2),
    append: wrap(mode, k.append, 3),
    log: wrap(mode, k.log, 2),
    reduceLog: wrap(mode, k.reduceLog, 4),
    multiGet: wrap(mode, k.multiGet, 2),
    multiAssoc: wrap(mode, k.multiAssoc, 2),
    multiDissoc: wrap(mode, k.multiDissoc, 2),
  }
}

export type Api = ReturnType<typeof api>

export function tempDir(prefix = 'konserve-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix))
}

/**
 * This process's descriptors open on files in `dir`, with the path each
 * names. Not all of them: tests of one file run concurrently, and the
 * runner's own (its loader's cache files) come and go.
 */
export function descriptorsIn(dir: string): Array<{ fd: string; path: string }> {
  const out: Array<{ fd: string; path: string }> = []
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const path = readlinkSync(`/proc/self/fd/${fd}`)
      if (path.startsWith(`${dir}/`)) out.push({ fd, path })
    } catch {
      // closed since the listing
    }
  }
  return out
}

/** How many descriptors of this process are open on files in `dir` (see descriptorsIn). */
export const fdsIn = (dir: string): number => descriptorsIn(dir).length

export interface StoreKind {
  name: string
  /** The calling forms it has (default both; network stores are async only). */
  modes?: Mode[]
  /**
   * How many updateIn calls each of the contention test's 8 loops makes
   * (default 1000). An object store pays several HTTP requests per locked
   * update, so it runs fewer; the cross-process tests of its own spec say more.
   */
  contendedUpdates?: number
  open(mode: Mode, options?: k.FsStoreOptions): Promise<k.Store>
}

const lz4Aes = { compressor: { type: 'lz4' as const }, encryptor: { type: 'aes' as const, key: 'compliance' } }

/** A file store in a new directory, opened with `base` options under the test's own. */
function fileKind(name: string, base: k.FsStoreOptions): StoreKind {
  return {
    name,
    async open(mode, options = {}) {
      const dir = join(tempDir(), 'store')
      const all = { ...base, ...options }
      return mode === 'sync' ? k.connectFsStore(dir, { ...all, sync: true }) : k.connectFsStore(dir, all)
    },
  }
}

export const storeKinds: StoreKind[] = [
  {
    name: 'memory',
    async open(mode, options = {}) {
      return mode === 'sync' ? k.newMemStore({ ...options, sync: true }) : k.newMemStore(options)
    },
  },
  fileKind('file', { native: true }),
  // The heaviest codec: every check also runs through LZ4 and authenticated AES.
  fileKind('file lz4+aes', { native: true, ...lz4Aes }),
  // The pure-TypeScript implementation, which writes the same files.
  fileKind('pure file', { native: false }),
  fileKind('pure file lz4+aes', { native: false, ...lz4Aes }),
]

// The read cache and the tiered store (hooks-cache-tiers): the whole suite over them.
const nativeFile = async (mode: Mode, options: k.FsStoreOptions): Promise<k.Store> => {
  const dir = join(tempDir(), 'store')
  const all = { ...options, native: true }
  return mode === 'sync' ? k.connectFsStore(dir, { ...all, sync: true }) : k.connectFsStore(dir, all)
}
storeKinds.push(
  {
    // A small cache, so the suite also runs with evictions.
    name: 'cached file',
    async open(mode, options = {}) {
      return k.withCache(await nativeFile(mode, options), { maxEntries: 8, maxBytes: 64 * 1024 })
    },
  },
  ...(['write-through', 'write-behind'] as const).map(
    (writePolicy): StoreKind => ({
      name: `tiered memory/file ${writePolicy}`,
      async open(mode, options = {}) {
        const mem = options as k.StoreOptions
        const front = mode === 'sync' ? k.newMemStore({ ...mem, sync: true }) : await k.newMemStore(mem)
        return k.tieredStore(front, await nativeFile(mode, options), { writePolicy })
      },
    }),
  ),
)
