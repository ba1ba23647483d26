/**
 * The key check of an encrypted store (docs/FORMAT.md §4.7, issue #22.4): a
 * store knows its key, so opening it with another key, or without one, fails
 * at once with ERR_DECRYPT instead of writing over values it cannot read.
 * Native and pure, and across them; the golden vectors of test-vectors/keycheck.json.
 */
import test from 'ava'
import { existsSync, mkdtempSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as k from 'konserve'
import {
  KEY_CHECK_FILE,
  REKEY_FILE,
  decodeKeyCheck,
  decodePendingRekey,
  encodeKeyCheck,
  encodePendingRekey,
  keyCheckMatches,
  keyCheckWithSalt,
} from '../ts/format/keycheck.js'
import { nodeCryptoProvider } from '../ts/crypto-node.js'

const crypto = nodeCryptoProvider.sync!
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')
const unhex = (s: string) => new Uint8Array(Buffer.from(s, 'hex'))

type Vector =
  | { name: string; kind: 'keycheck'; key: string; salt: string; bytes: string }
  | { name: string; kind: 'rekey'; from: { key: string; salt: string } | null; to: { key: string; salt: string } | null; bytes: string }
const vectors = JSON.parse(readFileSync(new URL('../test-vectors/keycheck.json', import.meta.url), 'utf8')) as Vector[]

test('key check vectors: the TypeScript codec writes and reads the bytes the core does', (t) => {
  t.is(vectors.length, 6)
  for (const v of vectors) {
    if (v.kind === 'keycheck') {
      const c = keyCheckWithSalt(crypto, unhex(v.key), unhex(v.salt))
      t.is(hex(encodeKeyCheck(c)), v.bytes, v.name)
      const back = decodeKeyCheck(unhex(v.bytes))
      t.true(keyCheckMatches(crypto, back, unhex(v.key)), v.name)
      t.false(keyCheckMatches(crypto, back, new TextEncoder().encode('another key')), v.name)
    } else {
      const entry = (e: { key: string; salt: string } | null) => (e ? keyCheckWithSalt(crypto, unhex(e.key), unhex(e.salt)) : null)
      const p = { from: entry(v.from), to: entry(v.to) }
      t.is(hex(encodePendingRekey(p)), v.bytes, v.name)
      t.deepEqual(decodePendingRekey(unhex(v.bytes)), p, v.name)
    }
  }
})

test('a damaged key check is ERR_CORRUPT, byte by byte', (t) => {
  const bytes = unhex((vectors[0] as { bytes: string }).bytes)
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes.slice()
    b[i]! ^= 1
    t.is((t.throws(() => decodeKeyCheck(b)) as { code?: string } | undefined)?.code, 'ERR_CORRUPT', `byte ${i}`)
  }
})

const impls = [
  { name: 'native', native: true },
  { name: 'pure', native: false },
] as const
const A = { type: 'aes', key: 'key A' } as const
const B = { type: 'aes', key: 'key B' } as const

function isDecrypt(t: import('ava').ExecutionContext, err: unknown, message: RegExp, file: RegExp) {
  const e = err as k.KonserveError
  t.true(e instanceof k.KonserveError, String(err))
  t.is(e.code, 'ERR_DECRYPT', e.message)
  t.regex(e.message, message)
  t.regex(String(e.file), file)
}

const tmp = () => mkdtempSync(join(tmpdir(), 'konserve-keycheck-'))

for (const { name, native } of impls) {
  test(`${name}: another key or no key is refused at open, and nothing is written over`, async (t) => {
    const dir = tmp()
    const store = k.connectFsStore(dir, { native, encryptor: A, sync: true })
    k.assoc(store, 'x', 'value of A', { sync: true })
    t.true(existsSync(join(dir, KEY_CHECK_FILE)))
    const before = readFileSync(join(dir, KEY_CHECK_FILE))
    isDecrypt(t, t.throws(() => k.connectFsStore(dir, { native, encryptor: B, sync: true })), /wrong encryption key/, /\.konserve\.keycheck$/)
    isDecrypt(t, await t.throwsAsync(k.connectFsStore(dir, { native, encryptor: B })), /wrong encryption key/, /\.konserve\.keycheck$/)
    isDecrypt(t, t.throws(() => k.connectFsStore(dir, { native, sync: true })), /store is encrypted/, /\.konserve\.keycheck$/)
    isDecrypt(t, await t.throwsAsync(k.connectFsStore(dir, { native })), /store is encrypted/, /\.konserve\.keycheck$/)
    const again = await k.connectFsStore(dir, { native, encryptor: A })
    t.is(await k.get(again, 'x'), 'value of A')
    t.deepEqual(readFileSync(join(dir, KEY_CHECK_FILE)), before, 'the key check is written once')
  })

  test(`${name}: a plaintext store opens with a key only to migrate it`, async (t) => {
    const dir = tmp()
    k.assoc(k.connectFsStore(dir, { native, sync: true }), 'plain', 1, { sync: true })
    isDecrypt(t, t.throws(() => k.connectFsStore(dir, { native, encryptor: A, sync: true })), /acceptPlaintext/, /[0-9a-f]{32}\.ksv$/)
    t.false(existsSync(join(dir, KEY_CHECK_FILE)), 'a refused open writes no key check')
    const migrating = await k.connectFsStore(dir, { native, encryptor: A, acceptPlaintext: true })
    t.is(await k.get(migrating, 'plain'), 1)
    await k.assoc(migrating, 'plain', 2) // written again: encrypted now
    t.true(existsSync(join(dir, KEY_CHECK_FILE)))
    t.is(await k.get(await k.connectFsStore(dir, { native, encryptor: A }), 'plain'), 2)
    isDecrypt(t, await t.throwsAsync(k.connectFsStore(dir, { native, encryptor: B, acceptPlaintext: true })), /wrong encryption key/, /keycheck$/)
  })

  test(`${name}: an encrypted store without a key check (older builds) adopts its key`, async (t) => {
    const dir = tmp()
    await k.assoc(await k.connectFsStore(dir, { native, encryptor: A }), 'x', 1)
    unlinkSync(join(dir, KEY_CHECK_FILE))
    isDecrypt(t, await t.throwsAsync(k.connectFsStore(dir, { native, encryptor: B })), /wrong encryption key/, /[0-9a-f]{32}\.ksv$/)
    t.false(existsSync(join(dir, KEY_CHECK_FILE)))
    t.is(await k.get(await k.connectFsStore(dir, { native, encryptor: A }), 'x'), 1)
    t.true(existsSync(join(dir, KEY_CHECK_FILE)))
  })

  test(`${name}: an unfinished rekey refuses every open`, async (t) => {
    const dir = tmp()
    await k.connectFsStore(dir, { native, encryptor: A })
    const check = (key: string, salt: number) => keyCheckWithSalt(crypto, new TextEncoder().encode(key), new Uint8Array(32).fill(salt))
    writeFileSync(join(dir, REKEY_FILE), encodePendingRekey({ from: check('key A', 1), to: check('key B', 2) }))
    for (const encryptor of [A, B, undefined]) {
      isDecrypt(t, await t.throwsAsync(k.connectFsStore(dir, { native, encryptor })), /unfinished rekey/, /\.konserve\.rekey$/)
    }
  })

  test(`${name}: deleteStore removes the key check`, async (t) => {
    const dir = join(tmp(), 's')
    await k.connectFsStore(dir, { native, encryptor: A })
    await k.deleteStore(dir, { native })
    t.false(existsSync(dir))
  })
}

for (const [writer, reader] of [
  [impls[0], impls[1]],
  [impls[1], impls[0]],
] as const) {
  test(`a key check written by ${writer.name} is honoured by ${reader.name}`, async (t) => {
    const dir = tmp()
    await k.assoc(await k.connectFsStore(dir, { native: writer.native, encryptor: A }), 'x', 'A')
    isDecrypt(t, await t.throwsAsync(k.connectFsStore(dir, { native: reader.native, encryptor: B })), /wrong encryption key/, /keycheck$/)
    isDecrypt(t, await t.throwsAsync(k.connectFsStore(dir, { native: reader.native })), /store is encrypted/, /keycheck$/)
    t.is(await k.get(await k.connectFsStore(dir, { native: reader.native, encryptor: A }), 'x'), 'A')
  })
}
