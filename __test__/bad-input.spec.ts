/**
 * Bad input, as users meet it: damaged files (every truncation, every flipped
 * byte), a newer format version, another tool's file under a key file's name,
 * and keys shaped like paths. Each read gives a typed error naming the key and
 * the file, and nothing on disk changes; no key ever creates a file outside
 * the store directory. Both implementations, plain and lz4+aes.
 */
import test from 'ava'
import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import * as k from 'konserve'
import { xxh3_64 } from '../ts/codec/xxhash.js'
import { tempDir } from './helpers/api.js'

const variants = [
  { name: 'native', options: { native: true } },
  { name: 'native lz4+aes', options: { native: true, compressor: { type: 'lz4' }, encryptor: { type: 'aes', key: 'k' } } },
  { name: 'pure', options: { native: false } },
  { name: 'pure lz4+aes', options: { native: false, compressor: { type: 'lz4' }, encryptor: { type: 'aes', key: 'k' } } },
] as const

const ksv = (dir: string) => readdirSync(dir).filter((f) => /^[0-9a-f]{32}\.ksv$/.test(f))

/** Rewrites the header checksum after changing header bytes, so the later checks are reached. */
function reseal(file: Buffer): Buffer {
  file.writeBigUInt64LE(xxh3_64(file.subarray(0, 40)), 40)
  return file
}

/** Reads `key` (sync and async) and returns the error codes, checking key, file and that the file is unchanged. */
async function readFails(t: import('ava').ExecutionContext, store: k.Store, key: string, path: string): Promise<string[]> {
  const before = readFileSync(path)
  const codes: string[] = []
  for (const attempt of [() => k.get(store, key), () => k.get(store, key, { sync: true }), () => k.getMeta(store, key)]) {
    try {
      await attempt()
      codes.push('no error')
    } catch (err) {
      const e = err as k.KonserveError
      t.true(e instanceof k.KonserveError, String(err))
      t.is(e.key, key)
      t.is(e.file, path)
      codes.push(e.code)
    }
  }
  t.deepEqual(readFileSync(path), before, 'a failed read changes nothing')
  return codes
}

for (const v of variants) {
  test(`${v.name}: every truncation and every flipped byte is a typed error; nothing changes`, async (t) => {
    const dir = join(tempDir(), 'store')
    const store = await k.connectFsStore(dir, v.options as k.FsStoreOptions)
    await k.assoc(store, 'victim', { important: [1, 2, 3], note: 'x'.repeat(40) }, { meta: { owner: 'ana' } })
    const path = join(dir, ksv(dir)[0]!)
    const good = readFileSync(path)
    let tried = 0
    for (let n = 0; n < good.length; n++) {
      writeFileSync(path, good.subarray(0, n))
      const codes = await readFails(t, store, 'victim', path)
      t.true(codes.every((c) => c === 'ERR_CORRUPT'), `truncated to ${n}: ${codes}`)
      tried++
    }
    for (let i = 0; i < good.length; i++) {
      const bad = Buffer.from(good)
      bad[i]! ^= 0x20
      writeFileSync(path, bad)
      const codes = await readFails(t, store, 'victim', path)
      // getMeta does not read the value segment, so damage there is not its concern.
      const valueDamage = i >= 48 + good.readUInt32LE(12)
      const expected = valueDamage ? ['ERR_CORRUPT', 'ERR_CORRUPT'] : ['ERR_CORRUPT', 'ERR_CORRUPT', 'ERR_CORRUPT']
      t.deepEqual(valueDamage ? codes.slice(0, 2) : codes, expected, `flipped byte ${i}`)
      tried++
    }
    writeFileSync(path, good)
    t.deepEqual(await k.get(store, 'victim'), { important: [1, 2, 3], note: 'x'.repeat(40) })
    t.log(`${v.name}: ${tried} damaged files read, each a typed error`)
  })

  test(`${v.name}: a newer format version and another tool's file are typed errors, listed as such, left alone`, async (t) => {
    const dir = join(tempDir(), 'store')
    const store = await k.connectFsStore(dir, v.options as k.FsStoreOptions)
    await k.assoc(store, 'future', 1)
    const path = join(dir, ksv(dir)[0]!)
    const newer = Buffer.from(readFileSync(path))
    newer[4] = 2
    writeFileSync(path, reseal(newer))
    t.deepEqual(await readFails(t, store, 'future', path), ['ERR_UNSUPPORTED_VERSION', 'ERR_UNSUPPORTED_VERSION', 'ERR_UNSUPPORTED_VERSION'])

    await k.assoc(store, 'overwritten', 1)
    const other = join(dir, ksv(dir).find((f) => join(dir, f) !== path)!)
    writeFileSync(other, '{"written": "by another tool"}')
    t.deepEqual(await readFails(t, store, 'overwritten', other), ['ERR_CORRUPT', 'ERR_CORRUPT', 'ERR_CORRUPT'])

    const reported: k.KonserveError[] = []
    t.deepEqual(await k.keys(store, { onCorrupt: (e: k.KonserveError) => reported.push(e) }), [])
    t.deepEqual(reported.map((e) => e.code).sort(), ['ERR_CORRUPT', 'ERR_UNSUPPORTED_VERSION'])
    t.deepEqual(reported.map((e) => e.file).sort(), [other, path].sort())
    // Writing the key again replaces the bad file whole.
    await k.assoc(store, 'future', 2)
    t.is(await k.get(store, 'future'), 2)
  })

  test(`${v.name}: keys shaped like paths are stored as themselves and never create files outside the store`, async (t) => {
    const parent = tempDir()
    const dir = join(parent, 'a', 'store')
    const store = await k.connectFsStore(dir, v.options as k.FsStoreOptions)
    const passwd = statSync('/etc/passwd').mtimeMs
    const keys = [
      '../../etc/passwd',
      '../escape',
      '/etc/passwd',
      '/tmp/absolute',
      '..',
      '.',
      '',
      'a/b/c',
      '..\\..\\windows\\system32',
      'nul\u0000byte',
      'CON',
      'aux.txt',
      '.konserve.lock',
      `${'f'.repeat(32)}.ksv`,
      'x'.repeat(100_000),
    ]
    for (const [i, key] of keys.entries()) await k.assoc(store, key, i)
    for (const [i, key] of keys.entries()) t.is(await k.get(store, key), i, JSON.stringify(key.slice(0, 40)))
    t.is((await k.keys(store)).length, keys.length)
    const everything: string[] = []
    const walk = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        const p = join(d, e.name)
        everything.push(relative(parent, p))
        if (e.isDirectory()) walk(p)
      }
    }
    walk(parent)
    const outside = everything.filter((p) => p !== 'a' && p !== join('a', 'store') && !/^a\/store\/([0-9a-f]{32}\.ksv|\.konserve\.lock|\.konserve\.clock|\.konserve\.keycheck)$/.test(p))
    t.deepEqual(outside, [], 'only hashed key files, the lock file, the clock file and the key check, all inside the store')
    t.is(statSync('/etc/passwd').mtimeMs, passwd)
  })
}
