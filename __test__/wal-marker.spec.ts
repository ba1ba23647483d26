/**
 * The switch of docs/WAL.md §8 relies on this build's open: a store whose
 * `.konserve.keycheck` has version 2 (the write-ahead log's format marker,
 * the same 81 bytes with version byte 2) is refused by every open of a build
 * that does not know the log, native and pure, writable and read-only, with a
 * key and without, with ERR_UNSUPPORTED_VERSION naming the file, and the open
 * writes nothing. So no process of this build can open a store that has a log
 * and read key files that the log supersedes.
 *
 * Both engines now know the log (docs/WAL.md §9 items 3 and 4) and its
 * version 3 (§4.1: lock-free replaces): they open a store of version 2 or 3
 * and use its log, whatever the options say; the key check in the marker is
 * checked as before. What they refuse now is a later version (4 here), the
 * same way, for the same reason.
 */
import test from 'ava'
import { mkdtempSync, readFileSync, readdirSync, realpathSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as k from 'konserve'
import { xxh3_64 } from '../ts/codec/xxhash.js'
import { KEY_CHECK_FILE, KEY_CHECK_FILE_LEN, encodeKeyCheck } from '../ts/format/keycheck.js'

const aes = { type: 'aes', key: 's3cr3t' } as const

/** `bytes` (a version-1 key check) as `version` (2 by default), its checksum fixed. */
function asVersion2(bytes: Uint8Array, version = 2): Uint8Array {
  const out = Uint8Array.from(bytes)
  out[8] = version
  new DataView(out.buffer).setBigUint64(KEY_CHECK_FILE_LEN - 8, xxh3_64(out.subarray(0, KEY_CHECK_FILE_LEN - 8)), true)
  return out
}

// A marker this build does not know (version 4) is refused by both engines.
for (const native of [true, false]) {
  const impl = native ? 'native' : 'pure'
  for (const keyed of [false, true]) {
    test(`${impl}: a version-4 key check (${keyed ? 'encrypted' : 'plaintext'} store) refuses every open with ERR_UNSUPPORTED_VERSION`, (t) => {
      const dir = mkdtempSync(join(tmpdir(), 'konserve-walmark-'))
      const store = k.connectFsStore(dir, { native, sync: true, ...(keyed ? { encryptor: aes } : {}) })
      k.assoc(store, 'a', 1, { sync: true })
      k.close(store, { sync: true })
      const v1 = keyed ? readFileSync(join(dir, KEY_CHECK_FILE)) : encodeKeyCheck({ salt: new Uint8Array(32), check: new Uint8Array(32) })
      writeFileSync(join(dir, KEY_CHECK_FILE), asVersion2(v1, 4))
      const before = readdirSync(dir).sort()
      const opens = [{}, { readOnly: true }, { encryptor: aes }, { encryptor: aes, readOnly: true }]
      for (const o of opens) {
        const err = t.throws(() => k.connectFsStore(dir, { native, sync: true, ...o }), undefined, JSON.stringify(o)) as k.KonserveError
        t.is(err.code, 'ERR_UNSUPPORTED_VERSION', JSON.stringify(o))
        t.is(err.file, join(realpathSync(dir), KEY_CHECK_FILE), JSON.stringify(o))
      }
      t.deepEqual(readdirSync(dir).sort(), before)
    })
  }
}

for (const [native, keyed, version] of [true, false].flatMap((n) => [false, true].flatMap((kd) => [2, 3].map((v) => [n, kd, v] as const)))) {
  test(`${native ? 'native' : 'pure'}: a version-${version} key check (${keyed ? 'encrypted' : 'plaintext'} store) is opened on its log, its key still checked`, (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'konserve-walmark-'))
    const store = k.connectFsStore(dir, { native, sync: true, ...(keyed ? { encryptor: aes } : {}) })
    k.assoc(store, 'a', 1, { sync: true })
    k.close(store, { sync: true })
    const v1 = keyed ? readFileSync(join(dir, KEY_CHECK_FILE)) : encodeKeyCheck({ salt: new Uint8Array(32), check: new Uint8Array(32) })
    const v2 = asVersion2(v1, version)
    writeFileSync(join(dir, KEY_CHECK_FILE), v2)
    // The store's own key opens it (the first, writable, open creates the log); the other is refused as before.
    const right = keyed ? [{ encryptor: aes }, { encryptor: aes, readOnly: true }] : [{}, { readOnly: true }]
    const wrong = keyed ? [{}, { readOnly: true }] : [{ encryptor: aes }, { encryptor: aes, readOnly: true }]
    for (const o of right) {
      const s = k.connectFsStore(dir, { native, sync: true, ...o })
      t.is(k.get(s, 'a', { sync: true }), 1, JSON.stringify(o))
      if (!o.readOnly) k.assoc(s, 'b', 2, { sync: true })
      t.is(k.get(s, 'b', { sync: true }), 2, JSON.stringify(o))
      k.close(s, { sync: true })
    }
    t.true(readdirSync(dir).includes('.konserve.wal'))
    t.deepEqual(readFileSync(join(dir, KEY_CHECK_FILE)), Buffer.from(v2), 'the marker is kept')
    for (const o of wrong) {
      const err = t.throws(() => k.connectFsStore(dir, { native, sync: true, ...o }), undefined, JSON.stringify(o)) as k.KonserveError
      t.is(err.code, 'ERR_DECRYPT', JSON.stringify(o))
    }
  })
}

// Version 3 (docs/WAL.md §4.1: replacing writes take no key lock file) is what
// the core's upgrade writes, and the core opens it on its log, the key checked.
for (const keyed of [false, true]) {
  test(`native: wal: true writes a version-3 key check (${keyed ? 'encrypted' : 'plaintext'} store), concurrent async assocs through the core's lock-free replace, opened again on its log`, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'konserve-walmark-'))
    const base = { native: true, sync: true, ...(keyed ? { encryptor: aes } : {}) } as const
    const store = k.connectFsStore(dir, { ...base, wal: true })
    const marker = readFileSync(join(dir, KEY_CHECK_FILE))
    t.is(marker[8], 3)
    await Promise.all(Array.from({ length: 16 }, (_, i) => k.assoc(store, `a${i}`, i)))
    k.assoc(store, 'a0', 'sync', { sync: true })
    k.close(store, { sync: true })
    const locks = readdirSync(dir).filter((n) => n.endsWith('.lock'))
    t.deepEqual(locks, [], 'no lock file left')
    const again = k.connectFsStore(dir, base)
    t.is(k.get(again, 'a0', { sync: true }), 'sync')
    t.is(k.get(again, 'a15', { sync: true }), 15)
    k.close(again, { sync: true })
    t.deepEqual(readFileSync(join(dir, KEY_CHECK_FILE)), marker, 'the marker is kept')
    if (keyed) {
      const err = t.throws(() => k.connectFsStore(dir, { native: true, sync: true })) as k.KonserveError
      t.is(err.code, 'ERR_DECRYPT')
    }
  })
}
