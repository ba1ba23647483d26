/**
 * Cheap async writes on the native store: the revision read of an async
 * replacing write (assoc, bassoc, multiAssoc) is answered on the calling
 * thread when the key's file is cached, or known missing (the binding's getMetaNow,
 * never a wait for the disk), so the write costs one threadpool task (its
 * put), not two. These tests pin down that the shortcut answers exactly what
 * the blocking read answers, and hands what it cannot answer (append logs,
 * long heads) to the threadpool.
 */
import test from 'ava'
import { mkdtempSync, copyFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as k from 'konserve'

interface NativeLike {
  getMetaNow(key: Buffer): unknown
  getMetaSync(key: Buffer): unknown
  filePath(key: Buffer): string
}
const fresh = () => mkdtempSync(join(tmpdir(), 'konserve-cheap-async-'))
const nativeOf = (store: k.Store) => (store.backing as unknown as { native: NativeLike }).native
const cke = (key: string) => Buffer.from(k.encodeKey(key))

test('getMetaNow answers what getMetaSync answers for cached and missing keys, and refuses a file of another key', async (t) => {
  const store = k.connectFsStore(fresh(), { native: true, sync: true })
  k.assoc(store, 'a', { v: 1 }, { sync: true, meta: { owner: 'me' } })
  const n = nativeOf(store)
  t.deepEqual(n.getMetaNow(cke('a')), n.getMetaSync(cke('a')))
  // A missing key: at once once its (negative) lookup is cached, i.e. after a first lookup.
  t.is(n.getMetaSync(cke('missing')), null)
  t.is(n.getMetaNow(cke('missing')), null)
  copyFileSync(n.filePath(cke('a')), n.filePath(cke('b')))
  t.throws(() => n.getMetaNow(cke('b')), { message: /another key/ })
  await t.throwsAsync(k.getMeta(store, 'b'), { code: 'ERR_KEY_MISMATCH' })
})

test('getMetaNow leaves append logs and heads past its first read to the threadpool (false)', async (t) => {
  const store = k.connectFsStore(fresh(), { native: true, sync: true })
  k.append(store, 'log', 1, { sync: true })
  k.assoc(store, 'long', 1, { sync: true, meta: { pad: 'p'.repeat(5000) } })
  const n = nativeOf(store)
  t.is(n.getMetaNow(cke('log')), false)
  t.is(n.getMetaNow(cke('long')), false)
  // The async forms still read them right, through the threadpool.
  t.deepEqual(await k.getMeta(store, 'log'), k.getMeta(store, 'log', { sync: true }))
  t.is((await k.getMeta(store, 'long'))?.pad, 'p'.repeat(5000))
})

test('async writes count revisions on from what the shortcut read, also after another instance wrote', async (t) => {
  const dir = fresh()
  const store = await k.connectFsStore(dir, { native: true })
  for (let i = 1; i <= 5; i++) {
    await k.assoc(store, 'x', i)
    t.is((await k.getMeta(store, 'x'))?.revision, i)
  }
  // Another instance (the pure engine, same files) writes twice: the next async write counts on from 7.
  const other = k.connectFsStore(dir, { native: false, sync: true })
  k.assoc(other, 'x', 6, { sync: true })
  k.assoc(other, 'x', 7, { sync: true })
  await k.assoc(store, 'x', 8, { expectedRevision: 7 })
  t.is((await k.getMeta(store, 'x'))?.revision, 8)
  await t.throwsAsync(k.assoc(store, 'x', 9, { expectedRevision: 7 }), { code: 'ERR_REVISION_MISMATCH' })
  t.is(await k.get(store, 'x'), 8)
})
