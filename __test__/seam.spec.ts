/**
 * The sync/async seam (issue 20): a backend with no blocking I/O
 * (`blocking: false`) is refused every `{ sync: true }` call in one place,
 * with ERR_NOT_SUPPORTED, before any of its operations is touched; its async
 * form works. And the fsync option's clear name, `durable`, beside the seed's
 * `syncBlob`.
 */
import test from 'ava'
import { execFile, spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import * as k from 'konserve'
import type { Backing, Store } from 'konserve'
import { tempDir } from './helpers/api.js'

const backingOf = (s: Store): Backing => (s as unknown as { backing: Backing }).backing

/** A memory backing seen as async-only, counting every member used besides `blocking` and `implementation`. */
function asyncOnly(): { store: Store; touched: string[] } {
  const inner = backingOf(k.newMemStore({ sync: true }))
  const touched: string[] = []
  const backing = new Proxy(inner, {
    get(target, name, receiver) {
      if (name === 'blocking') return false
      if (name !== 'implementation' && typeof name === 'string') touched.push(name)
      return Reflect.get(target, name, receiver)
    },
  })
  return { store: new k.Store(backing, {}), touched }
}

const syncCalls: Array<[string, (s: Store) => unknown]> = [
  ['get', (s) => k.get(s, 'a', { sync: true })],
  ['getIn', (s) => k.getIn(s, ['a', 'x'], undefined, { sync: true })],
  ['getMeta', (s) => k.getMeta(s, 'a', { sync: true })],
  ['exists', (s) => k.exists(s, 'a', { sync: true })],
  ['keys', (s) => k.keys(s, { sync: true })],
  ['assoc', (s) => k.assoc(s, 'a', 1, { sync: true })],
  ['assocIn', (s) => k.assocIn(s, ['a', 'x'], 1, { sync: true })],
  ['update', (s) => k.update(s, 'a', () => 1, { sync: true })],
  ['updateIn', (s) => k.updateIn(s, ['a'], () => 1, { sync: true })],
  ['dissoc', (s) => k.dissoc(s, 'a', { sync: true })],
  ['bassoc', (s) => k.bassoc(s, 'b', new Uint8Array([1]), { sync: true })],
  ['bget', (s) => k.bget(s, 'b', () => 1, { sync: true })],
  ['readBlob', (s) => k.readBlob(s, 'b', { sync: true })],
  ['blobFile', (s) => k.blobFile(s, 'b', { sync: true })],
  ['append', (s) => k.append(s, 'l', 1, { sync: true })],
  ['log', (s) => k.log(s, 'l', { sync: true })],
  ['reduceLog', (s) => k.reduceLog(s, 'l', (a) => a, 0, { sync: true })],
  ['trimLog', (s) => k.trimLog(s, 'l', { keepLast: 1, sync: true })],
  ['multiGet', (s) => k.multiGet(s, ['a'], { sync: true })],
  ['multiAssoc', (s) => k.multiAssoc(s, { a: 1 }, { sync: true })],
  ['multiDissoc', (s) => k.multiDissoc(s, ['a'], { sync: true })],
  ['sweep', (s) => k.sweep(s, [], new Date(), { sync: true })],
  ['close', (s) => k.close(s, { sync: true })],
]

for (const [name, call] of syncCalls) {
  test(`blocking: false: ${name} with { sync: true } fails with ERR_NOT_SUPPORTED before touching the backing`, (t) => {
    const { store, touched } = asyncOnly()
    const err = t.throws(() => call(store))
    t.is((err as k.KonserveError).code, 'ERR_NOT_SUPPORTED')
    t.deepEqual(touched, [])
  })
}

test('blocking: false: the async forms work, and a refused blocking write wrote nothing', async (t) => {
  const { store } = asyncOnly()
  t.throws(() => k.assoc(store, 'a', 'sync', { sync: true }), { code: 'ERR_NOT_SUPPORTED' })
  t.is(await k.get(store, 'a'), undefined)
  await k.assoc(store, 'a', { x: 1 })
  t.deepEqual(await k.updateIn(store, ['a', 'x'], (x: number) => x + 1), [{ x: 1 }, { x: 2 }])
  t.is(await Promise.all([k.append(store, 'l', 1), k.append(store, 'l', 2)]).then(() => k.log(store, 'l')).then((l) => l?.length), 2)
  await k.close(store)
  t.throws(() => k.get(store, 'a', { sync: true }), { code: 'ERR_CLOSED' })
})

test('blocking: false: a cached or tiered store over an async-only store is async-only too', (t) => {
  const { store } = asyncOnly()
  const cached = k.withCache(store)
  t.throws(() => k.get(cached, 'a', { sync: true }), { code: 'ERR_NOT_SUPPORTED' })
  const tiered = k.tieredStore(k.newMemStore({ sync: true }), store)
  t.throws(() => k.assoc(tiered, 'a', 1, { sync: true }), { code: 'ERR_NOT_SUPPORTED' })
})

// ---- durable (the fsync option) and its seed spelling syncBlob ------------------------

const hasStrace = !spawnSync('strace', ['-V']).error
const run = promisify(execFile)
const dist = new URL('../dist/index.mjs', import.meta.url).pathname

/** How many fsyncs 5 sync writes and 1 async write make in the store directory, opened with `opts`. */
async function fsyncsOfWrites(native: boolean, opts: string): Promise<number> {
  const dir = join(tempDir(), 'store')
  await k.close(await k.connectFsStore(dir, { native })) // created (and its directory synced) beforehand
  const log = join(tempDir(), 'strace.log')
  const script = `import * as k from ${JSON.stringify(dist)}
    const s = k.connectFsStore(${JSON.stringify(dir)}, { sync: true, native: ${native}, ${opts} })
    for (let i = 0; i < 5; i++) k.assoc(s, 'k' + i, i, { sync: true })
    await k.assoc(s, 'a', 1)`
  await run('strace', ['-f', '-y', '-e', 'trace=fsync,fdatasync', '-o', log, process.execPath, '--input-type=module', '-e', script])
  return readFileSync(log, 'utf8').split('\n').filter((l) => l.includes(dir)).length
}

for (const native of [true, false]) {
  const impl = native ? 'native' : 'pure'
  test(`${impl}: durable: false skips the fsyncs, like syncBlob: false; durable: true makes them`, async (t) => {
    if (!hasStrace) return t.fail('strace is needed (apt-get install strace)')
    t.is(await fsyncsOfWrites(native, 'durable: false'), 0)
    t.is(await fsyncsOfWrites(native, 'syncBlob: false'), 0)
    t.true((await fsyncsOfWrites(native, 'durable: true')) >= 12)
  })
}

test('durable and syncBlob are one option: both given must agree', async (t) => {
  const dir = join(tempDir(), 'store')
  t.throws(() => k.connectFsStore(dir, { sync: true, durable: true, syncBlob: false }), { code: 'ERR_INVALID_ARGUMENT' })
  await t.throwsAsync(k.connectFsStore(dir, { durable: false, syncBlob: true }), { code: 'ERR_INVALID_ARGUMENT' })
  t.throws(() => k.connectFsStore(dir, { sync: true, durable: 'no' as unknown as boolean }), { code: 'ERR_INVALID_ARGUMENT' })
  await k.close(await k.connectFsStore(dir, { durable: false, syncBlob: false }))
})
