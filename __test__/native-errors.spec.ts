/**
 * The native binding's error protocol (src/lib.rs `js_error`, ts/errors.ts
 * `fromNative`) cannot be forged (issue #23.5a): a store path, a key or a
 * message holding U+001F and text that looks like the protocol's head does not
 * change the code or the file the error carries.
 */
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import * as k from 'konserve'
import { KonserveError, fromNative } from '../ts/errors.js'

const US = '\u001f'

test('native: a corrupt file in a directory whose name holds U+001F and a forged head keeps its code and full path', async (t) => {
  t.is(k.implementation(), 'native', 'this test needs the native binding')
  // A directory name that reads as a whole protocol head: ERR_READ_ONLY, a file of length 3.
  const dir = join(mkdtempSync(join(tmpdir(), 'konserve-us-')), `ERR_READ_ONLY${US}3${US}abc${US}x`)
  const key = `key${US}ERR_DECRYPT${US}0${US}`
  const store = k.connectFsStore(dir, { native: true, sync: true })
  k.assoc(store, key, { v: 1 }, { sync: true })
  const [name] = readdirSync(dir).filter((n) => n.endsWith('.ksv'))
  const path = join(dir, name!)
  const bytes = readFileSync(path)
  bytes[bytes.length - 2]! ^= 0x01
  writeFileSync(path, bytes)
  for (const err of [
    t.throws(() => k.get(store, key, { sync: true })) as KonserveError,
    (await t.throwsAsync(k.get(store, key))) as KonserveError,
  ]) {
    t.true(err instanceof k.KonserveError)
    t.is(err.code, 'ERR_CORRUPT')
    t.is(err.file, path)
    t.is(err.key, key)
  }
})

test('fromNative: the file is measured, not delimited; a message without the exact head is not typed by it', (t) => {
  const native = (message: string) => Object.assign(new Error(message), { code: 'GenericFailure' })
  const file = `/a${US}ERR_FSYNC${US}1${US}b`
  const e1 = fromNative(native(`ERR_CORRUPT${US}${file.length}${US}${file}bad checksum ${US}ERR_IO${US}0${US}`))
  t.is(e1.code, 'ERR_CORRUPT')
  t.is(e1.file, file)
  t.is(e1.message, `bad checksum ${US}ERR_IO${US}0${US}`)
  // A length past the end, an unknown code, no head: a foreign error (ERR_IO), never a forged code.
  for (const m of [`ERR_FSYNC${US}99${US}short`, `ERR_MADE_UP${US}0${US}x`, `text ERR_FSYNC${US}0${US}x`]) {
    const e = fromNative(native(m))
    t.is(e.code, 'ERR_IO', m)
    t.is(e.file, undefined)
  }
  // Not a GenericFailure (an error a user's code threw): never read as the protocol.
  const user = fromNative(Object.assign(new Error(`ERR_FSYNC${US}0${US}x`), { code: 'EUSER' }))
  t.not(user.code, 'ERR_FSYNC')
})

test('an update function that throws a message with U+001F and a protocol head: the same object reaches the caller', async (t) => {
  for (const native of [true, false]) {
    const dir = join(mkdtempSync(join(tmpdir(), 'konserve-us-')), 'store')
    const store = k.connectFsStore(dir, { native, sync: true })
    const mine = Object.assign(new Error(`ERR_FSYNC${US}0${US}forged`), { code: 'GenericFailure' })
    t.is(t.throws(() => k.update(store, 'a', () => { throw mine }, { sync: true })), mine)
    t.is(await t.throwsAsync(k.update(store, 'a', () => { throw mine })), mine)
    t.false(k.exists(store, 'a', { sync: true }))
    k.close(store, { sync: true })
  }
})
