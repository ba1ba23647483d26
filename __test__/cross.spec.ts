/**
 * One format, two implementations: for every serializer x compressor x
 * encryptor combination, random keys and values (fast-check) written by the
 * native core read back identically through pure TypeScript, and the other way
 * round, from the same store directory; and both list the same keys.
 */
import test from 'ava'
import fc from 'fast-check'
import { join } from 'node:path'
import * as k from 'konserve'
import { tempDir } from './helpers/api.js'

const user: k.Serializer = {
  id: 151,
  name: 'json-user',
  encode: (v) => new TextEncoder().encode(JSON.stringify(v)),
  decode: (b) => JSON.parse(new TextDecoder().decode(b)),
}
const serializers: Array<[string, k.Serializer]> = [
  ['msgpack', k.msgpackSerializer()],
  ['json', k.jsonSerializer()],
  ['cbor', k.cborSerializer()],
  ['user', user],
]

const key = fc.oneof(
  fc.string(),
  fc.integer(),
  fc.double(),
  fc.uint8Array({ maxLength: 20 }),
  fc.array(fc.oneof(fc.string(), fc.integer(), fc.boolean(), fc.constant(null)), { maxLength: 4 }),
  fc.dictionary(fc.string(), fc.oneof(fc.string(), fc.integer())),
)
const value = (serializer: string) =>
  serializer === 'msgpack' || serializer === 'cbor'
    ? fc.oneof(
        fc.jsonValue(),
        fc.uint8Array({ maxLength: 3000 }),
        fc.date({ noInvalidDate: true }),
        fc.bigInt(),
        fc.array(fc.string(), { maxLength: 200 }).map((a) => new Set(a)),
        fc.string({ maxLength: 5000 }),
      )
    : fc.jsonValue()

for (const [sName, serializer] of serializers) {
  for (const compressor of [null, { type: 'lz4' as const }]) {
    for (const encryptor of [null, { type: 'aes' as const, key: 'cross' }]) {
      const name = `${sName}${compressor ? ' + lz4' : ''}${encryptor ? ' + aes' : ''}`
      test(`native and pure read each other's files: ${name}`, (t) => {
        const dir = join(tempDir(), 'store')
        const opts = { serializer, compressor, encryptor, syncBlob: false, sync: true as const }
        const stores = { native: k.connectFsStore(dir, { ...opts, native: true }), pure: k.connectFsStore(dir, { ...opts, native: false }) }
        t.is(k.implementation(stores.native), 'native')
        t.is(k.implementation(stores.pure), 'pure')
        const written = new Map<string, unknown>()
        fc.assert(
          fc.property(key, value(sName), fc.boolean(), (kk, v, nativeWrites) => {
            const [writer, reader] = nativeWrites ? [stores.native, stores.pure] : [stores.pure, stores.native]
            const expected = serializer.decode(serializer.encode(v))
            k.assoc(writer, kk, v, { sync: true })
            written.set(JSON.stringify(k.encodeKey(kk)), kk)
            t.deepEqual(k.get(reader, kk, { sync: true }), expected)
            t.deepEqual(k.get(writer, kk, { sync: true }), expected)
            const bytes = new Uint8Array([1, 2, 3, ...new TextEncoder().encode(JSON.stringify(kk))])
            k.bassoc(writer, ['blob', kk], bytes, { sync: true })
            written.set(JSON.stringify(k.encodeKey(['blob', kk])), ['blob', kk])
            t.deepEqual(new Uint8Array(k.get(reader, ['blob', kk], { sync: true }) as Uint8Array), bytes)
          }),
          { numRuns: 60, seed: 42 },
        )
        const listed = (s: k.Store) =>
          k
            .keys(s, { sync: true, onCorrupt: (e: Error) => t.fail(e.message) })
            .map((m: k.Metadata) => JSON.stringify(k.encodeKey(m.key)))
            .sort()
        t.deepEqual(listed(stores.native), [...written.keys()].sort())
        t.deepEqual(listed(stores.pure), listed(stores.native))
      })
    }
  }
}

test('one directory holding every combination: native reads all that pure wrote, and the reverse', async (t) => {
  const combos: k.FsStoreOptions[] = []
  for (const [, serializer] of serializers) {
    for (const compressor of [null, { type: 'lz4' as const }]) {
      for (const encryptor of [null, { type: 'aes' as const, key: 'cross' }]) combos.push({ serializer, compressor, encryptor })
    }
  }
  const value = (i: number) => ({ i, text: `value ${i} `.repeat(20), list: [i, null, 'x'] })
  for (const [writer, reader] of [[true, false], [false, true]]) {
    const dir = join(tempDir(), 'store')
    // Plaintext combinations first: once an encrypted store has its key check,
    // a plain store no longer opens the directory (FORMAT.md §4.7), and the
    // encrypted writers open a directory with plaintext files (a migration).
    const order = [...combos.entries()].sort(([, a], [, b]) => Number(!!a.encryptor) - Number(!!b.encryptor))
    for (const [i, c] of order) {
      await k.assoc(await k.connectFsStore(dir, { ...c, native: writer, acceptPlaintext: !!c.encryptor }), ['combo', i], value(i))
    }
    // Any store with the key reads every file: the header names serializer and codec.
    const r = await k.connectFsStore(dir, { native: reader, serializers: [user], encryptor: { type: 'aes', key: 'cross' }, acceptPlaintext: true })
    for (const [i] of combos.entries()) t.deepEqual(await k.get(r, ['combo', i]), value(i), `${writer ? 'native' : 'pure'} wrote combination ${i}`)
    t.is((await k.keys(r, { onCorrupt: (e: Error) => t.fail(e.message) })).length, combos.length)
  }
})
