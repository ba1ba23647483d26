/**
 * Compression and encryption (docs/FORMAT.md §4.2-§4.4): every serializer x
 * compressor x encryptor combination round-trips and reads the others' files;
 * encrypted stores hold no plaintext; tampering and wrong keys are typed errors;
 * and our bytes are standard, checked against independent implementations
 * (lz4-napi for LZ4 frames, node:crypto for HKDF, HMAC-SHA256 and AES-256-CBC).
 */
import test from 'ava'
import { createDecipheriv, createHmac, hkdfSync } from 'node:crypto'
import { readFileSync, readdirSync, unlinkSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { compressFrameSync, decompressFrameSync } from 'lz4-napi'
import * as k from 'konserve'
import { tempDir } from './helpers/api.js'

const native = createRequire(import.meta.url)('../index.js') as {
  lz4Compress(b: Buffer): Buffer
  lz4Decompress(b: Buffer): Buffer
  fileName(b: Buffer): string
}
const vectors = (name: string) => JSON.parse(readFileSync(new URL(`../test-vectors/${name}`, import.meta.url), 'utf8'))
const hex = (s: string) => Buffer.from(s, 'hex')

const MARKER = 'PLAINTEXT-MARKER-7f3a'
const serializers = ['msgpack', 'json', 'user'] as const
const compressors = [null, { type: 'lz4' as const }]
const encryptors = [null, { type: 'aes' as const, key: 's3cr3t' }]

const userSerializer: k.Serializer = {
  id: 150,
  name: 'json-reversed',
  encode: (v) => Buffer.from([...JSON.stringify(v)].reverse().join('')),
  decode: (b) => JSON.parse([...Buffer.from(b).toString()].reverse().join('')),
}
k.registerSerializer(userSerializer)

function combos() {
  const out: Array<{ name: string; options: k.FsStoreOptions }> = []
  for (const s of serializers) {
    for (const compressor of compressors) {
      for (const encryptor of encryptors) {
        out.push({
          name: `${s}${compressor ? ' + lz4' : ''}${encryptor ? ' + aes' : ''}`,
          options: { serializer: s === 'user' ? userSerializer : s, compressor, encryptor },
        })
      }
    }
  }
  return out
}

const storeBytes = (dir: string) => Buffer.concat(readdirSync(dir).map((f) => readFileSync(join(dir, f))))

for (const { name, options: combo } of combos()) {
  for (const [impl, mode] of [['native', 'sync'], ['native', 'async'], ['pure', 'sync'], ['pure', 'async']] as const) {
    test(`${impl} ${name} (${mode}): values, metadata, blobs and logs round-trip`, async (t) => {
      const dir = join(tempDir(), 'store')
      const sync = mode === 'sync'
      const options = { ...combo, native: impl === 'native' }
      const store = sync ? k.connectFsStore(dir, { ...options, sync: true }) : await k.connectFsStore(dir, options)
      t.is(k.implementation(store), impl)
      const o = sync ? { sync: true as const } : {}
      const doc = { text: `${MARKER} `.repeat(50), n: 42, list: [1, 'two', null] }
      await k.assoc(store, MARKER, doc, { ...o, meta: { note: MARKER } })
      t.deepEqual(await k.get(store, MARKER, o), doc)
      t.deepEqual(await k.updateIn(store, [MARKER, 'n'], (n: number) => n + 1, o), [doc, { ...doc, n: 43 }])
      const blob = Buffer.from(`${MARKER}`.repeat(100))
      await k.bassoc(store, 'blob', blob, o)
      t.deepEqual(Buffer.from((await k.get(store, 'blob', o)) as Uint8Array), blob)
      await k.append(store, 'log', MARKER, o)
      await k.append(store, 'log', 2, o)
      t.deepEqual(await k.log(store, 'log', o), [MARKER, 2])
      const metas = await k.keys(store, { ...o, onCorrupt: (e: Error) => t.fail(e.message) })
      t.deepEqual(metas.map((m: k.Metadata) => String(m.key)).sort(), [MARKER, 'blob', 'log'].sort())
      t.is((await k.getMeta(store, MARKER, o))?.note, MARKER)
      const onDisk = storeBytes(dir)
      if (options.encryptor) {
        t.false(onDisk.includes(MARKER), 'no plaintext (values, metadata or keys) in the encrypted store')
      } else if (!options.compressor) {
        t.true(onDisk.includes(MARKER), 'the check above can see plaintext when it is there')
      }
    })
  }
}

test('a store reads the files of every other combination (the header names the codec)', async (t) => {
  const dir = join(tempDir(), 'store')
  const all = combos()
  // Plaintext combinations first: once an encrypted store has its key check,
  // a plain store no longer opens the directory, and the encrypted writers
  // open a directory holding plaintext files (a migration: acceptPlaintext).
  const order = [...all.entries()].sort(([, a], [, b]) => Number(!!a.options.encryptor) - Number(!!b.options.encryptor))
  for (const [i, c] of order) {
    const s = await k.connectFsStore(dir, { ...c.options, acceptPlaintext: !!c.options.encryptor })
    await k.assoc(s, `k${i}`, { i, name: c.name })
  }
  const reader = await k.connectFsStore(dir, { encryptor: { type: 'aes', key: 's3cr3t' }, acceptPlaintext: true })
  for (const [i, c] of all.entries()) t.deepEqual(await k.get(reader, `k${i}`), { i, name: c.name })
  t.is((await k.keys(reader)).length, all.length)
})

test('a wrong or missing key, or a flipped byte, is a typed error naming key and file; nothing changes', async (t) => {
  const dir = join(tempDir(), 'store')
  const s = await k.connectFsStore(dir, { compressor: { type: 'lz4' }, encryptor: { type: 'aes', key: 'right' } })
  await k.assoc(s, 'secret', { v: MARKER })
  const [file] = readdirSync(dir).filter((f) => f.endsWith('.ksv'))
  const path = join(dir, file!)
  const before = readFileSync(path)
  const wrong = { encryptor: { type: 'aes' as const, key: 'wrong' } }
  // The store's key check refuses both opens (FORMAT.md §4.7) ...
  for (const opts of [wrong, {}]) await t.throwsAsync(k.connectFsStore(dir, opts), { code: 'ERR_DECRYPT' })
  // ... and without it (a store from before key checks) the wrong key still
  // does not open (no file authenticates with it), and no key reads nothing.
  unlinkSync(join(dir, '.konserve.keycheck'))
  await t.throwsAsync(k.connectFsStore(dir, wrong), { code: 'ERR_DECRYPT', message: /wrong encryption key/ })
  for (const opts of [{}]) {
    const other = await k.connectFsStore(dir, opts)
    const err = (await t.throwsAsync(k.get(other, 'secret'))) as k.KonserveError
    t.is(err.code, 'ERR_DECRYPT')
    t.is(err.key, 'secret')
    t.is(err.file, path)
    t.throws(() => k.get(other, 'secret', { sync: true }), { code: 'ERR_DECRYPT' } as object)
    const reported: k.KonserveError[] = []
    t.deepEqual(await k.keys(other, { onCorrupt: (e: k.KonserveError) => reported.push(e) }), [])
    t.is(reported[0]?.code, 'ERR_DECRYPT')
  }
  t.deepEqual(readFileSync(path), before)
  // Flip each byte of the value segment's ciphertext region in turn (a sample of them).
  for (let i = 60; i < before.length; i += 7) {
    const bad = Buffer.from(before)
    bad[i]! ^= 0x01
    writeFileSync(path, bad)
    const err = (await t.throwsAsync(k.get(s, 'secret'))) as k.KonserveError
    t.true(['ERR_CORRUPT', 'ERR_DECRYPT'].includes(err.code), `byte ${i}: ${err.code}`)
  }
  writeFileSync(path, before)
  t.deepEqual(await k.get(s, 'secret'), { v: MARKER })
})

test('bad codec options are typed errors', async (t) => {
  const dir = join(tempDir(), 'store')
  for (const bad of [
    { compressor: { type: 'zstd' } },
    { compressor: 'lz4' },
    { encryptor: { type: 'des', key: 'x' } },
    { encryptor: { type: 'aes' } },
    { encryptor: { type: 'aes', key: '' } },
    { encryptor: { type: 'aes', key: 42 } },
  ]) {
    t.throws(() => k.connectFsStore(dir, { ...(bad as k.FsStoreOptions), sync: true }), { code: 'ERR_INVALID_ARGUMENT' } as object)
    await t.throwsAsync(k.connectFsStore(dir, bad as k.FsStoreOptions), { code: 'ERR_INVALID_ARGUMENT' } as object)
  }
  // A memory store has no codec: the option is unknown. The async form rejects, the sync form throws.
  await t.throwsAsync(k.newMemStore({ encryptor: { type: 'aes', key: 'x' } } as k.StoreOptions), { code: 'ERR_INVALID_ARGUMENT' } as object)
  t.throws(() => k.newMemStore({ encryptor: { type: 'aes', key: 'x' }, sync: true } as k.StoreOptions & { sync: true }), { code: 'ERR_INVALID_ARGUMENT' } as object)
})

// ---- our bytes are standard ----------------------------------------------------

test('LZ4: our frames decode with lz4-napi, its frames decode with ours, and the vectors hold', (t) => {
  for (const v of vectors('lz4.json') as Array<{ name: string; plain: string; frame: string }>) {
    t.deepEqual(native.lz4Compress(hex(v.plain)), hex(v.frame), `${v.name}: reference compressor output`)
    t.deepEqual(decompressFrameSync(hex(v.frame)), hex(v.plain), `${v.name}: lz4-napi decodes our frame`)
  }
  const samples = [Buffer.alloc(0), Buffer.from('a'), Buffer.alloc(5 << 20, 'konserve '), Buffer.from(readFileSync(new URL('../README.md', import.meta.url)))]
  for (const plain of samples) {
    for (const opts of [{}, { contentChecksum: true, blockChecksums: true }]) {
      t.deepEqual(native.lz4Decompress(compressFrameSync(plain, opts)), plain, `lz4-napi frame of ${plain.length} bytes, ${JSON.stringify(opts)}`)
    }
    t.deepEqual(decompressFrameSync(native.lz4Compress(plain)), plain)
  }
  t.throws(() => native.lz4Decompress(Buffer.from('not a frame')), { code: 'ERR_CORRUPT' })
})

/** Splits a key file into its header fields and segments (FORMAT.md §4). */
function splitFile(file: Buffer) {
  const metaLen = file.readUInt32LE(12)
  const valueLen = Number(file.readBigUInt64LE(16))
  return { compressor: file[6], encryptor: file[7], meta: file.subarray(48, 48 + metaLen), value: file.subarray(48 + metaLen, 48 + metaLen + valueLen) }
}

/** Opens a sealed segment with node:crypto alone (FORMAT.md §4.3). */
function openWithNodeCrypto(secret: string, kind: number, keyHash: Buffer, sealed: Buffer): Buffer {
  const salt = sealed.subarray(0, 16)
  const iv = sealed.subarray(16, 32)
  const ct = sealed.subarray(32, sealed.length - 32)
  const tag = sealed.subarray(sealed.length - 32)
  const okm = Buffer.from(hkdfSync('sha256', Buffer.from(secret), salt, Buffer.from('konserve/1 aes-256-cbc hmac-sha256'), 64))
  const mac = createHmac('sha256', okm.subarray(32)).update(Buffer.from([kind])).update(keyHash).update(sealed.subarray(0, sealed.length - 32)).digest()
  if (!mac.equals(tag)) throw new Error('tag mismatch')
  const d = createDecipheriv('aes-256-cbc', okm.subarray(0, 32), iv)
  return Buffer.concat([d.update(ct), d.final()])
}

test('AES: node:crypto (HKDF, HMAC-SHA256, AES-256-CBC) opens the segments of the golden files', (t) => {
  const files = vectors('files.json') as Array<{ name: string; encryptor: number; compressor: number; secret: string | null; key: string; meta: string; value: string; file: string }>
  const keyNames = new Map((vectors('keys.json') as Array<{ cke: string; file: string }>).map((v) => [v.cke, v.file]))
  let opened = 0
  for (const v of files) {
    if (!v.encryptor) continue
    const { meta, value } = splitFile(hex(v.file))
    // The key hash is the file name's hex (FORMAT.md §3); take it from the binding.
    const name = keyNames.get(v.key) ?? native.fileName(hex(v.key))
    const keyHash = Buffer.from(name.slice(0, 32), 'hex')
    const unwrap = (b: Buffer) => (v.compressor ? decompressFrameSync(b) : b)
    const metaPlain = unwrap(openWithNodeCrypto(v.secret!, 0, keyHash, meta))
    t.deepEqual(metaPlain.subarray(4 + metaPlain.readUInt32LE(0)), hex(v.meta), `${v.name}: metadata`)
    t.deepEqual(metaPlain.subarray(4, 4 + metaPlain.readUInt32LE(0)), hex(v.key), `${v.name}: the key inside`)
    t.deepEqual(unwrap(openWithNodeCrypto(v.secret!, 1, keyHash, value)), hex(v.value), `${v.name}: value`)
    t.throws(() => openWithNodeCrypto('wrong', 1, keyHash, value))
    opened++
  }
  t.is(opened, 6)
})
