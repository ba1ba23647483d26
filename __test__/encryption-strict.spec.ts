/**
 * An encrypted store refuses every file that is not encrypted (issue #23.1):
 * anyone who can write the directory could otherwise plant a value, a blob or
 * a log that the store returns as if it were authenticated. With
 * `acceptPlaintext` (an explicit migration) it reads them. Native and pure.
 */
import test from 'ava'
import { copyFileSync, mkdtempSync, readdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as k from 'konserve'

const impls = [
  { name: 'native', native: true },
  { name: 'pure', native: false },
] as const
const aes = { type: 'aes', key: 's3cr3t' } as const

function isDecrypt(t: import('ava').ExecutionContext, err: unknown, key: string) {
  const e = err as k.KonserveError
  t.true(e instanceof k.KonserveError, String(err))
  t.is(e.code, 'ERR_DECRYPT', e.message)
  t.is(e.key, key)
  t.regex(String(e.file), /[0-9a-f]{32}\.ksv$/)
}

for (const { name, native } of impls) {
  test(`${name}: an encrypted store refuses planted plaintext values, blobs and logs`, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'konserve-strict-'))
    // The encrypted store exists first; then someone writes plaintext files into its directory.
    // (A plain store cannot open the encrypted store's directory, which has a
    // key check: the files are written elsewhere and copied in, as anyone who
    // can write the directory can.)
    const strict = k.connectFsStore(dir, { native, encryptor: aes, sync: true })
    const elsewhere = mkdtempSync(join(tmpdir(), 'konserve-plant-'))
    const plain = k.connectFsStore(elsewhere, { native, sync: true })
    k.assoc(plain, 'value', { amount: 1_000_000 }, { sync: true })
    k.bassoc(plain, 'blob', Buffer.alloc(3 << 20, 7), { sync: true })
    k.append(plain, 'log', 'planted record', { sync: true })
    for (const name of readdirSync(elsewhere)) if (name.endsWith('.ksv')) copyFileSync(join(elsewhere, name), join(dir, name))

    for (const key of ['value', 'blob', 'log']) {
      isDecrypt(t, t.throws(() => k.get(strict, key, { sync: true })), key)
      isDecrypt(t, t.throws(() => k.getMeta(strict, key, { sync: true })), key)
      isDecrypt(t, await t.throwsAsync(k.getMeta(strict, key)), key)
    }
    isDecrypt(t, await t.throwsAsync(k.get(strict, 'value')), 'value')
    isDecrypt(t, t.throws(() => k.bget(strict, 'blob', (b) => b, { sync: true })), 'blob')
    isDecrypt(t, await t.throwsAsync(k.readBlob(strict, 'blob')), 'blob')
    isDecrypt(t, t.throws(() => k.log(strict, 'log', { sync: true })), 'log')
    isDecrypt(t, await t.throwsAsync(k.log(strict, 'log')), 'log')
    isDecrypt(t, t.throws(() => k.append(strict, 'log', 'more', { sync: true })), 'log')
    const corrupt: k.KonserveError[] = []
    const listed = k.keys(strict, { sync: true, onCorrupt: (e) => corrupt.push(e) })
    t.deepEqual(listed, [], 'no planted file is listed as a key')
    t.deepEqual(corrupt.map((e) => e.code), ['ERR_DECRYPT', 'ERR_DECRYPT', 'ERR_DECRYPT'])

    // The migration option reads them.
    const migrating = k.connectFsStore(dir, { native, encryptor: aes, acceptPlaintext: true, sync: true })
    t.deepEqual(k.get(migrating, 'value', { sync: true }), { amount: 1_000_000 })
    t.deepEqual(await k.log(migrating, 'log'), ['planted record'])
    t.true(Buffer.from((await k.readBlob(migrating, 'blob')) as Uint8Array).equals(Buffer.alloc(3 << 20, 7)))
    t.is(k.keys(migrating, { sync: true }).length, 3)
  })
}
