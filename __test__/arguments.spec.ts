/**
 * Argument checks at the API boundary (issue #12.4): every exported operation
 * and the store openers refuse a non-store, a wrong kind of argument and an
 * option name they do not know with ERR_INVALID_ARGUMENT naming the function
 * and the parameter: thrown in sync form, a rejected Promise in async form,
 * and before anything is read or written. Also: the notFound conventions of
 * get and getIn (README "API"), and the update function's own errors.
 */
import { existsSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import * as k from 'konserve'
import { KonserveError, type Store } from 'konserve'

const notAStore = {} as unknown as Store

/**
 * One row per exported function: how to call it with `store` and options
 * `opts` (the options slot gets `{ ...opts }`), and which options it knows.
 */
interface Row {
  name: string
  call: (store: Store, opts: any) => unknown
  /** A function argument that must be a function: how to call with a non-function there. */
  badFn?: (store: Store, opts: any) => unknown
}

const rows: Row[] = [
  { name: 'get', call: (s, o) => k.get(s, 'a', o) },
  { name: 'getIn', call: (s, o) => k.getIn(s, ['a', 'b'], undefined, o) },
  { name: 'getMeta', call: (s, o) => k.getMeta(s, 'a', o) },
  { name: 'exists', call: (s, o) => k.exists(s, 'a', o) },
  { name: 'keys', call: (s, o) => k.keys(s, o) },
  { name: 'assoc', call: (s, o) => k.assoc(s, 'a', 1, o) },
  { name: 'assocIn', call: (s, o) => k.assocIn(s, ['a', 'b'], 1, o) },
  { name: 'update', call: (s, o) => k.update(s, 'a', () => 1, o), badFn: (s, o) => k.update(s, 'a', 5 as any, o) },
  { name: 'updateIn', call: (s, o) => k.updateIn(s, ['a', 'b'], () => 1, o), badFn: (s, o) => k.updateIn(s, ['c'], 5 as any, o) },
  { name: 'dissoc', call: (s, o) => k.dissoc(s, 'a', o) },
  { name: 'bassoc', call: (s, o) => k.bassoc(s, 'a', new Uint8Array([1]), o) },
  { name: 'bget', call: (s, o) => k.bget(s, 'a', () => 1, o), badFn: (s, o) => k.bget(s, 'a', 'cb' as any, o) },
  { name: 'readBlob', call: (s, o) => k.readBlob(s, 'a', o) },
  { name: 'blobFile', call: (s, o) => k.blobFile(s, 'a', o) },
  { name: 'append', call: (s, o) => k.append(s, 'a', 1, o) },
  { name: 'log', call: (s, o) => k.log(s, 'a', o) },
  { name: 'reduceLog', call: (s, o) => k.reduceLog(s, 'a', (x) => x, 0, o), badFn: (s, o) => k.reduceLog(s, 'a', null as any, 0, o) },
  { name: 'trimLog', call: (s, o) => k.trimLog(s, 'a', o !== null && typeof o === 'object' ? { keepLast: 1, ...o } : o) },
  { name: 'multiGet', call: (s, o) => k.multiGet(s, ['a'], o) },
  { name: 'multiAssoc', call: (s, o) => k.multiAssoc(s, { a: 1 }, o) },
  { name: 'multiDissoc', call: (s, o) => k.multiDissoc(s, ['a'], o) },
  { name: 'close', call: (s, o) => k.close(s, o) },
]

type Form = 'sync' | 'async'

/** Calls `f` in `form` and returns the error it failed with, checking it failed the form's way. */
async function failure(t: any, form: Form, f: () => unknown): Promise<KonserveError> {
  let r: unknown
  try {
    r = f()
  } catch (err) {
    t.is(form, 'sync', `the async form threw synchronously: ${(err as Error).message}`)
    return err as KonserveError
  }
  t.is(form, 'async', 'the sync form did not throw')
  t.true(r instanceof Promise, 'the async form returned no Promise')
  try {
    await r
  } catch (err) {
    return err as KonserveError
  }
  t.fail('the call succeeded')
  throw new Error('unreachable')
}

function isInvalidArgument(t: any, err: KonserveError, ...mentions: string[]) {
  t.true(err instanceof KonserveError, String(err))
  t.is(err.code, 'ERR_INVALID_ARGUMENT', err.message)
  for (const m of mentions) t.true(err.message.includes(m), `${JSON.stringify(err.message)} does not mention ${m}`)
}

const forms: Form[] = ['sync', 'async']
const optsOf = (form: Form, more: object = {}) => (form === 'sync' ? { ...more, sync: true } : { ...more })

for (const row of rows) {
  for (const form of forms) {
    test(`${row.name} (${form}): a first argument that is not a store`, async (t) => {
      for (const bad of [notAStore, undefined, null, 'db', 42]) {
        const err = await failure(t, form, () => row.call(bad as Store, optsOf(form)))
        isInvalidArgument(t, err, row.name, 'store')
      }
    })

    test(`${row.name} (${form}): an unknown option name, nothing written`, async (t) => {
      const db = k.newMemStore({ sync: true })
      const err = await failure(t, form, () => row.call(db, optsOf(form, { snyc: true, notAnOption: 1 })))
      isInvalidArgument(t, err, row.name, 'snyc')
      t.deepEqual(k.keys(db, { sync: true }), [])
    })

    test(`${row.name} (${form}): an option of the wrong kind`, async (t) => {
      const db = k.newMemStore({ sync: true })
      // `sync: 'yes'` is neither form: it counts as the async one.
      const err = await failure(t, 'async', () => row.call(db, { sync: 'yes' }))
      isInvalidArgument(t, err, row.name, 'opts.sync', 'a boolean')
      if (form === 'sync') {
        // A non-object options argument.
        const e2 = await failure(t, 'async', () => row.call(db, 7))
        isInvalidArgument(t, e2, row.name)
      }
      t.deepEqual(k.keys(db, { sync: true }), [])
    })

    if (row.badFn) {
      test(`${row.name} (${form}): a function argument that is not a function, nothing written`, async (t) => {
        const db = k.newMemStore({ sync: true })
        const err = await failure(t, form, () => row.badFn!(db, optsOf(form)))
        isInvalidArgument(t, err, row.name, 'a function')
        t.deepEqual(k.keys(db, { sync: true }), [])
      })
    }
  }
}

test('write options are checked by kind', async (t) => {
  const db = k.newMemStore({ sync: true })
  for (const [opts, mention] of [
    [{ meta: 'x' }, 'opts.meta'],
    [{ expectedRevision: -1 }, 'opts.expectedRevision'],
    [{ expectedRevision: 1.5 }, 'opts.expectedRevision'],
  ] as const) {
    isInvalidArgument(t, await failure(t, 'sync', () => k.assoc(db, 'a', 1, { ...opts, sync: true } as any)), 'assoc', mention)
    isInvalidArgument(t, await failure(t, 'async', () => k.assoc(db, 'a', 1, opts as any)), 'assoc', mention)
  }
  isInvalidArgument(t, await failure(t, 'async', () => k.keys(db, { onCorrupt: 1 } as any)), 'keys', 'opts.onCorrupt')
  isInvalidArgument(t, await failure(t, 'async', () => k.trimLog(db, 'a', undefined as any)), 'trimLog', 'opts')
  t.deepEqual(k.keys(db, { sync: true }), [])
})

test('a misspelt option is named with what it probably meant', async (t) => {
  const db = k.newMemStore({ sync: true })
  const err = await failure(t, 'async', () => k.get(db, 'a', { snyc: true } as any))
  isInvalidArgument(t, err, 'did you mean "sync"')
})

// ---- the other exported functions ----------------------------------------------------

test('withCache, tieredStore, addWriteHook, removeWriteHook, sweep, flush, cacheStats, implementation: bad store, unknown options', async (t) => {
  const db = k.newMemStore({ sync: true })
  const other = k.newMemStore({ sync: true })
  const sync: Array<[string, () => unknown, string[]]> = [
    ['withCache', () => k.withCache(notAStore), ['store']],
    ['withCache', () => k.withCache(db, { maxEntires: 3 } as any), ['maxEntires', 'did you mean "maxEntries"']],
    ['tieredStore', () => k.tieredStore(db, notAStore), ['back']],
    ['tieredStore', () => k.tieredStore(db, other, { writepolicy: 'write-behind' } as any), ['writepolicy']],
    ['addWriteHook', () => k.addWriteHook(notAStore, 'h', () => {}), ['store']],
    ['addWriteHook', () => k.addWriteHook(db, 'h', 5 as any), ['fn', 'a function']],
    ['addWriteHook', () => k.addWriteHook(db, 'h', () => {}, { onError: () => {} } as any), ['onError']],
    ['removeWriteHook', () => k.removeWriteHook(notAStore, 'h'), ['store']],
    ['cacheStats', () => k.cacheStats(notAStore), ['store']],
    ['implementation', () => k.implementation(notAStore), ['store']],
    ['sweep', () => k.sweep(notAStore, [], new Date(), { sync: true }), ['store']],
    ['sweep', () => k.sweep(db, 5 as any, new Date(), { sync: true }), ['whitelist']],
  ]
  for (const [name, f, mentions] of sync) isInvalidArgument(t, await failure(t, 'sync', f), name, ...mentions)
  isInvalidArgument(t, await failure(t, 'async', () => k.sweep(db, [], new Date(), { snyc: true } as any)), 'sweep', 'snyc')
  isInvalidArgument(t, await failure(t, 'async', () => k.sweep(notAStore, [], new Date())), 'sweep', 'store')
  isInvalidArgument(t, await failure(t, 'async', () => k.flush(notAStore)), 'flush', 'store')
  // A closed store's hooks can still be removed.
  k.addWriteHook(other, 'h', () => {})
  k.close(other, { sync: true })
  t.true(k.removeWriteHook(other, 'h'))
})

// ---- get and getIn: where notFound goes -------------------------------------------

test('get: a default for a missing key goes in { notFound }; any other third argument is refused', async (t) => {
  const db = k.newMemStore({ sync: true })
  t.is(k.get(db, 'missing', { notFound: 'd', sync: true }), 'd')
  t.is(await k.get(db, 'missing', { notFound: 'd' }), 'd')
  for (const bad of ['default', 0, null, ['x']]) {
    const err = await failure(t, 'async', () => k.get(db, 'missing', bad as any))
    isInvalidArgument(t, err, 'get', 'notFound')
  }
})

test('getIn: a lone third argument is the options when every key of it is an option name, else it is notFound', async (t) => {
  const db = k.newMemStore({ sync: true })
  k.assoc(db, 'a', { b: 1 }, { sync: true })
  // Options: sync form, a plain value.
  // @ts-expect-error getIn's signature does not type a third argument that is the options: it says Promise (ts/api.ts)
  t.is(k.getIn(db, ['a', 'b'], { sync: true }), 1)
  // @ts-expect-error the same
  t.is(k.getIn(db, ['a', 'x'], { sync: true, notFound: 'nf' }), 'nf')
  // notFound: any other value, an object with other keys, an empty object.
  t.deepEqual(await k.getIn(db, ['a', 'x'], { foo: 1 }), { foo: 1 })
  t.deepEqual(await k.getIn(db, ['a', 'x'], {}), {})
  t.is(await k.getIn(db, ['a', 'x'], 'nf'), 'nf')
  // With four arguments the third is always notFound.
  t.deepEqual(k.getIn(db, ['a', 'x'], { sync: true }, { sync: true }), { sync: true })
  // notFound given twice is refused.
  isInvalidArgument(t, await failure(t, 'sync', () => k.getIn(db, ['a', 'x'], 'one', { notFound: 'two', sync: true })), 'getIn', 'notFound')
})

// ---- the store openers --------------------------------------------------------------

const freshDir = () => join(mkdtempSync(join(tmpdir(), 'konserve-args-')), 'store')

for (const form of forms) {
  test(`connectFsStore (${form}): a misspelt option fails and creates nothing`, async (t) => {
    for (const [opts, mention] of [
      [{ encrypter: { type: 'aes', key: 'secret' } }, 'encrypter'],
      [{ compresor: { type: 'lz4' } }, 'compresor'],
      [{ syncblob: false }, 'syncblob'],
      [{ encryptor: { type: 'aes', key: 'secret', cipher: 'x' } }, 'cipher'],
      [{ compressor: { type: 'lz4', level: 3 } }, 'level'],
      [{ syncBlob: 'no' }, 'options.syncBlob'],
      [{ native: 1 }, 'options.native'],
      [{ encryptor: 'secret' }, 'options.encryptor'],
    ] as const) {
      const dir = freshDir()
      const err = await failure(t, form, () => k.connectFsStore(dir, optsOf(form, opts) as any))
      isInvalidArgument(t, err, 'connectFsStore', mention)
      t.false(existsSync(dir), `${mention}: the directory was created`)
    }
  })

  test(`connectFsStore (${form}): a path that is not a non-empty string`, async (t) => {
    for (const bad of [undefined, '', 5, {}]) {
      const err = await failure(t, form, () => k.connectFsStore(bad as any, optsOf(form) as any))
      isInvalidArgument(t, err, 'directory path')
    }
  })

  test(`newMemStore and deleteStore (${form}): unknown options`, async (t) => {
    isInvalidArgument(t, await failure(t, form, () => k.newMemStore(optsOf(form, { serialiser: 'json' }) as any)), 'newMemStore', 'serialiser')
    isInvalidArgument(t, await failure(t, form, () => k.newMemStore(optsOf(form, { encryptor: { type: 'aes', key: 'k' } }) as any)), 'encrypt')
    const dir = freshDir()
    isInvalidArgument(t, await failure(t, form, () => k.deleteStore(dir, optsOf(form, { force: true }) as any)), 'deleteStore', 'force')
  })
}

test('logStream: not a store is refused on the first step', async (t) => {
  const err = await t.throwsAsync(async () => {
    for await (const _ of k.logStream(notAStore, 'a')) {
      // nothing
    }
  })
  isInvalidArgument(t, err as KonserveError, 'logStream', 'store')
})

// ---- the update function's own errors ------------------------------------------------

for (const form of forms) {
  test(`update functions' own errors reach the caller unchanged (${form})`, async (t) => {
    const db = k.newMemStore({ sync: true })
    k.assoc(db, 'a', 1, { sync: true })
    k.append(db, 'log', 1, { sync: true })
    k.bassoc(db, 'blob', new Uint8Array([1]), { sync: true })
    const mine = new Error('mine')
    const weird = { not: 'an error' }
    for (const thrown of [mine, weird, new KonserveError('ERR_IO', 'a KonserveError of my own')]) {
      for (const call of [
        (o: any) => k.update(db, 'a', () => {
          throw thrown
        }, o),
        (o: any) => k.updateIn(db, ['a'], () => {
          throw thrown
        }, o),
        (o: any) => k.reduceLog(db, 'log', () => {
          throw thrown
        }, 0, o),
        (o: any) => k.bget(db, 'blob', () => {
          throw thrown
        }, o),
      ]) {
        const err = await failure(t, form, () => call(optsOf(form)))
        t.is(err, thrown as any)
      }
    }
    // Async update functions that reject.
    if (form === 'async') t.is<unknown, unknown>(await failure(t, 'async', () => k.update(db, 'a', async () => Promise.reject(mine))), mine)
    t.is(k.get(db, 'a', { sync: true }), 1)
  })
}
