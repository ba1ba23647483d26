/**
 * The store registry (konserve.store): createStore / connectStore /
 * storeExists / deleteStore / releaseStore by config, for the 'file' backend
 * (native and pure) and the 'memory' backend, sync and async, with konserve's
 * edge cases (create on an existing store, connect on a missing one, delete
 * of an open store, release), and a third-party backend through registerBackend.
 */
import test from 'ava'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import * as k from 'konserve'
import { tempDir } from './helpers/api.js'

type Mode = 'sync' | 'async'
const modes: Mode[] = ['sync', 'async']

/** Calls `f(..., opts)` in the given form; asserts the form of the result. */
async function call<T>(t: any, mode: Mode, f: (opts: { sync?: true }) => T | Promise<T>): Promise<T> {
  if (mode === 'sync') {
    const r = f({ sync: true })
    t.false(r instanceof Promise, 'sync form returns a value')
    return r as T
  }
  const r = f({})
  t.true(r instanceof Promise, 'async form returns a Promise')
  return r
}

/** The error `f` throws (sync) or rejects with (async). */
async function failure(t: any, mode: Mode, f: (opts: { sync?: true }) => unknown): Promise<k.KonserveError> {
  try {
    await call(t, mode, f)
  } catch (err) {
    t.true(err instanceof k.KonserveError, String(err))
    return err as k.KonserveError
  }
  t.fail('did not fail')
  throw new Error('unreachable')
}

for (const impl of ['native', 'pure'] as const) {
  for (const mode of modes) {
    test(`file (${impl}, ${mode}): create, exists, connect, edge cases, delete, release`, async (t) => {
      const path = join(tempDir(), 'a', 'store') // the parent is missing too
      const config = { backend: 'file', path, native: impl === 'native', serializer: 'cbor' as const }
      t.false(await call(t, mode, (o) => k.storeExists(config, o)))
      // connect on a missing store: typed error, nothing created
      const missing = await failure(t, mode, (o) => k.connectStore(config, o))
      t.is(missing.code, 'ERR_STORE_NOT_FOUND')
      t.is(missing.file, path)
      t.false(existsSync(path))
      const s = await call(t, mode, (o) => k.createStore(config, o))
      t.is(k.implementation(s), impl)
      t.true(await call(t, mode, (o) => k.storeExists(config, o)))
      await k.assoc(s, 'x', new Set([1]))
      // create on an existing store: typed error, the store untouched
      const exists = await failure(t, mode, (o) => k.createStore(config, o))
      t.is(exists.code, 'ERR_STORE_EXISTS')
      t.regex(exists.message, /already exists/)
      // connect: a second connection to the same directory; options pass through (cbor)
      const s2 = await call(t, mode, (o) => k.connectStore(config, o))
      t.deepEqual(await k.get(s2, 'x'), new Set([1]))
      await k.assoc(s2, 'y', { z: -0 })
      t.true(Object.is(((await k.get(s, 'y')) as { z: number }).z, -0))
      // release closes this connection only
      await call(t, mode, (o) => k.releaseStore(s2, o))
      t.is((await failure(t, 'async', () => k.get(s2, 'x'))).code, 'ERR_CLOSED')
      t.deepEqual(await k.get(s, 'x'), new Set([1]))
      // delete of an open store: it is ended, its files gone
      await call(t, mode, (o) => k.deleteStore(config, o))
      t.false(await call(t, mode, (o) => k.storeExists(config, o)))
      t.is((await failure(t, 'async', () => k.get(s, 'x'))).code, 'ERR_STORE_DELETED')
      // delete of a missing store does nothing; create works again
      await call(t, mode, (o) => k.deleteStore(config, o))
      const s3 = await call(t, mode, (o) => k.createStore(config, o))
      t.is(await k.get(s3, 'x'), undefined)
      await k.close(s3)
    })
  }
}

test('file: a bad option leaves no directory behind; config fields that are not options are refused', async (t) => {
  const path = join(tempDir(), 'store')
  await t.throwsAsync(k.createStore({ backend: 'file', path, encryptor: { type: 'rot13' } }), { code: 'ERR_INVALID_ARGUMENT' } as any)
  t.false(existsSync(path))
  t.throws(() => k.createStore({ backend: 'file', path, synkBlob: false }, { sync: true }), { code: 'ERR_INVALID_ARGUMENT', message: /synkBlob.*did you mean "syncBlob"/ } as any)
  t.false(existsSync(path))
  t.throws(() => k.connectStore({ backend: 'file', path, create: true }, { sync: true }), { code: 'ERR_INVALID_ARGUMENT', message: /config\.create/ } as any)
  await t.throwsAsync(k.createStore({ backend: 'file', path, sync: true } as any), { code: 'ERR_INVALID_ARGUMENT', message: /config\.sync/ } as any)
  await t.throwsAsync(k.createStore({ backend: 'file' } as any), { code: 'ERR_INVALID_ARGUMENT', message: /config\.path/ } as any)
  // A path that is a file is not a store.
  const file = join(tempDir(), 'f')
  writeFileSync(file, 'x')
  t.false(k.storeExists({ backend: 'file', path: file }, { sync: true }))
})

test('file: of two concurrent creates of one store, exactly one succeeds', async (t) => {
  for (let round = 0; round < 10; round++) {
    const path = join(tempDir(), 'store')
    const results = await Promise.allSettled([1, 2, 3].map(() => k.createStore({ backend: 'file', path, syncBlob: false })))
    const ok = results.filter((r) => r.status === 'fulfilled')
    t.is(ok.length, 1, `round ${round}`)
    for (const r of results) if (r.status === 'rejected') t.is((r.reason as k.KonserveError).code, 'ERR_STORE_EXISTS')
    await k.close((ok[0] as PromiseFulfilledResult<k.Store>).value)
  }
})

test('file: an existing directory made without the registry (connectFsStore) connects; the path form of deleteStore still works', async (t) => {
  const path = join(tempDir(), 'store')
  const old = await k.connectFsStore(path)
  await k.assoc(old, 'a', 1)
  const s = await k.connectStore({ backend: 'file', path })
  t.is(await k.get(s, 'a'), 1)
  k.deleteStore(path, { sync: true })
  t.is((await failure(t, 'async', () => k.get(s, 'a'))).code, 'ERR_STORE_DELETED')
  t.is((await failure(t, 'async', () => k.get(old, 'a'))).code, 'ERR_STORE_DELETED')
  mkdirSync(path, { recursive: true })
  await k.deleteStore(path)
  t.false(existsSync(path))
})

for (const mode of modes) {
  test(`memory (${mode}): an id shares one store; create on existing, connect on missing, delete ends it, release keeps it`, async (t) => {
    const id = `mem-${mode}-${Math.random()}`
    const config = { backend: 'memory', id, serializer: 'json' as const }
    t.false(await call(t, mode, (o) => k.storeExists(config, o)))
    t.is((await failure(t, mode, (o) => k.connectStore(config, o))).code, 'ERR_STORE_NOT_FOUND')
    const a = await call(t, mode, (o) => k.createStore(config, o))
    t.is(k.implementation(a), 'memory')
    t.true(await call(t, mode, (o) => k.storeExists(config, o)))
    t.is((await failure(t, mode, (o) => k.createStore(config, o))).code, 'ERR_STORE_EXISTS')
    const b = await call(t, mode, (o) => k.connectStore(config, o))
    await k.assoc(a, 'x', 1)
    t.is(await k.get(b, 'x'), 1, 'two connects to one id see the same data')
    // release: konserve keeps the store (and its data) in the registry
    await call(t, mode, (o) => k.releaseStore(b, o))
    const c = await call(t, mode, (o) => k.connectStore(config, o))
    t.is(await k.get(c, 'x'), 1)
    t.is(await k.get(b, 'x'), 1)
    // delete: gone from the registry, every connection ended
    await call(t, mode, (o) => k.deleteStore(config, o))
    t.false(await call(t, mode, (o) => k.storeExists(config, o)))
    t.is((await failure(t, 'async', () => k.get(a, 'x'))).code, 'ERR_STORE_DELETED')
    t.is((await failure(t, 'sync', (o) => k.get(c, 'x', o))).code, 'ERR_STORE_DELETED')
    t.is((await failure(t, mode, (o) => k.connectStore(config, o))).code, 'ERR_STORE_NOT_FOUND')
    const fresh = await call(t, mode, (o) => k.createStore(config, o))
    t.is(await k.get(fresh, 'x'), undefined)
    // without an id: a new unregistered store each time, which never "exists"
    const e1 = await call(t, mode, (o) => k.connectStore({ backend: 'memory' }, o))
    const e2 = await call(t, mode, (o) => k.createStore({ backend: 'memory' }, o))
    await k.assoc(e1, 'x', 1)
    t.is(await k.get(e2, 'x'), undefined)
    t.false(await call(t, mode, (o) => k.storeExists({ backend: 'memory' }, o)))
    await call(t, mode, (o) => k.deleteStore({ backend: 'memory' }, o))
  })
}

test('memory: a registered store closed with close() is forgotten (its contents went with it)', async (t) => {
  const config = { backend: 'memory', id: `closed-${Math.random()}` }
  const s = k.createStore(config, { sync: true })
  k.close(s, { sync: true })
  t.false(k.storeExists(config, { sync: true }))
  t.is((t.throws(() => k.connectStore(config, { sync: true })) as k.KonserveError).code as string, 'ERR_STORE_NOT_FOUND')
  t.truthy(k.createStore(config, { sync: true }))
})

test('an unknown backend names the registered ones; bad arguments are ERR_INVALID_ARGUMENT', async (t) => {
  const err = (await t.throwsAsync(k.connectStore({ backend: 'indexeddb' }))) as k.KonserveError
  t.is(err.code, 'ERR_INVALID_ARGUMENT')
  t.regex(err.message, /unknown backend "indexeddb"; the registered backends are "file", "memory"/)
  t.throws(() => k.storeExists({ backend: 'nope' }, { sync: true }), { message: /"file", "memory"/ })
  t.throws(() => k.createStore(null as any, { sync: true }), { code: 'ERR_INVALID_ARGUMENT', message: /config must be a plain object/ } as any)
  await t.throwsAsync(k.createStore({ backend: 'memory' }, { snyc: true } as any) as Promise<k.Store>, { code: 'ERR_INVALID_ARGUMENT', message: /did you mean "sync"/ } as any)
  await t.throwsAsync(k.releaseStore({} as any), { code: 'ERR_INVALID_ARGUMENT' } as any)
  t.throws(() => k.registerBackend('x', { create() {} } as any), { code: 'ERR_INVALID_ARGUMENT', message: /backend\.connect/ } as any)
})

test('registerBackend: a third-party backend plugs in (async-only, with its own release)', async (t) => {
  // A toy backend: named stores kept in a Map, each a memory store; async only.
  const stores = new Map<string, k.Store>()
  const released: string[] = []
  const backend: k.Backend<{ backend: 'toy'; name: string }> = {
    async create(c) {
      if (stores.has(c.name)) throw k.storeExistsError(`the toy store ${c.name}`)
      const s = await k.newMemStore()
      stores.set(c.name, s)
      return s
    },
    async connect(c) {
      const s = stores.get(c.name)
      if (!s) throw k.storeNotFoundError(`the toy store ${c.name}`)
      return s
    },
    async exists(c) {
      return stores.has(c.name)
    },
    async delete(c) {
      const s = stores.get(c.name)
      stores.delete(c.name)
      if (s) await k.close(s)
    },
    async release(_s, c) {
      released.push(c.name)
    },
  }
  k.registerBackend('toy', backend)
  t.true(k.registeredBackends().includes('toy'))
  const config = { backend: 'toy', name: 'one' }
  t.false(await k.storeExists(config))
  t.is(((await t.throwsAsync(k.connectStore(config))) as k.KonserveError).code, 'ERR_STORE_NOT_FOUND')
  const s = await k.createStore(config)
  t.is(((await t.throwsAsync(k.createStore(config))) as k.KonserveError).code, 'ERR_STORE_EXISTS')
  await k.assoc(s, 'a', 1)
  t.is(await k.get(await k.connectStore(config), 'a'), 1)
  await k.releaseStore(s)
  t.deepEqual(released, ['one'])
  // No blocking form: a sync call says so, and its rejected Promise is not left unhandled.
  t.is((t.throws(() => k.connectStore({ backend: 'toy', name: 'nope' }, { sync: true })) as k.KonserveError).code as string, 'ERR_NOT_SUPPORTED')
  await k.deleteStore(config)
  t.false(await k.storeExists(config))
  // The error for an unknown backend now names it too.
  t.regex(((await t.throwsAsync(k.connectStore({ backend: 'x' }))) as Error).message, /"toy"/)
})
