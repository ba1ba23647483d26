/**
 * How the native binding's errors cross into JavaScript (src/lib.rs
 * `js_error`, ts/errors.ts `fromNative`): as Errors whose `code` and `file`
 * are properties (issue 20), so a store path, a key or a message holding
 * U+001F and text that looks like the old packed head (`CODE\x1fn\x1f...`)
 * cannot change the code or the file the error carries (issue #23.5a).
 */
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import * as k from 'konserve'
import type * as Binding from '../index.js'
import { KonserveError, fromNative } from '../ts/errors.js'
import { encodeKey } from '../ts/format/key.js'

const binding = createRequire(import.meta.url)('../index.js') as typeof Binding
const cke = (key: string) => Buffer.from(encodeKey(key))

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

test('the binding throws and rejects with code and file as properties, the message free of them', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'konserve-props-'))
  const store = binding.NativeFileStore.open(dir, { syncBlob: false, compressor: 0 })
  const key = cke('a')
  store.putSync([{ key, serializer: 1, meta: Buffer.alloc(0), value: Buffer.from('v') }])
  const path = store.filePath(key)
  const bytes = readFileSync(path)
  bytes[bytes.length - 2]! ^= 0x01
  writeFileSync(path, bytes)
  for (const err of [t.throws(() => store.getSync(key)), await t.throwsAsync(store.getAsync(key))]) {
    t.true(err instanceof Error)
    t.false(err instanceof KonserveError, 'the binding throws plain Errors; fromNative types them')
    t.is((err as { code?: unknown }).code, 'ERR_CORRUPT')
    t.is((err as { file?: unknown }).file, path)
    t.false(err!.message.includes('\u001f'))
    t.false(err!.message.includes('ERR_CORRUPT'))
  }
  // An error that names no file has no `file` property.
  const lz4 = t.throws(() => binding.lz4Decompress(Buffer.from([1, 2, 3])))
  t.is((lz4 as { code?: unknown }).code, 'ERR_CORRUPT')
  t.false('file' in lz4!)
})

test("the binding's own argument checks are ERR_INVALID_ARGUMENT, blocking and on the threadpool", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'konserve-args-'))
  const code = (e: unknown) => fromNative(e).code
  t.is(code(t.throws(() => binding.NativeFileStore.open(dir, { syncBlob: false, compressor: 300 }))), 'ERR_INVALID_ARGUMENT')
  t.is(code(t.throws(() => binding.NativeFileStore.openAsync(dir, { syncBlob: false, compressor: 0, lockTimeoutMs: -1 }))), 'ERR_INVALID_ARGUMENT')
  const store = binding.NativeFileStore.open(dir, { syncBlob: false, compressor: 0 })
  const write = { key: cke('a'), serializer: 256, meta: Buffer.alloc(0), value: Buffer.alloc(0) }
  t.is(code(t.throws(() => store.putSync([write]))), 'ERR_INVALID_ARGUMENT')
  t.is(code(t.throws(() => store.putAsync([write]))), 'ERR_INVALID_ARGUMENT')
  const log = binding.logOpenSync(store, cke('b'))
  t.is(log, null)
  t.is(code(t.throws(() => binding.logTrimSync(store, cke('b'), -1, Buffer.alloc(0)))), 'ERR_INVALID_ARGUMENT')
  // A rejection carries its code too: a blob writer used after its commit.
  const w = binding.blobWriterOpenSync(store, cke('c'), Buffer.alloc(0))
  await w.commitAsync()
  t.is(code(await t.throwsAsync(w.writeAsync(Buffer.from('x')))), 'ERR_INVALID_ARGUMENT')
})

test('fromNative reads the properties, never the message; an unknown code is a foreign error', (t) => {
  const native = (message: string, props: object) => Object.assign(new Error(message), props)
  const file = `/a${US}ERR_FSYNC${US}1${US}b`
  const e1 = fromNative(native(`bad checksum ${US}ERR_IO${US}0${US}`, { code: 'ERR_CORRUPT', file }))
  t.is(e1.code, 'ERR_CORRUPT')
  t.is(e1.file, file)
  t.is(e1.message, `bad checksum ${US}ERR_IO${US}0${US}`)
  // The old packed head in a napi GenericFailure's message, an unknown code: a foreign error (ERR_IO), never a forged code.
  for (const e of [native(`ERR_FSYNC${US}0${US}x`, { code: 'GenericFailure' }), native('x', { code: 'ERR_MADE_UP', file: '/f' })]) {
    const typed = fromNative(e)
    t.is(typed.code, 'ERR_IO', e.message)
    t.is(typed.file, undefined)
    t.is(typed.cause, e)
  }
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
