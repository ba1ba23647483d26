/**
 * The CBOR serializer (id 3) through stores: chosen by name per store, its id
 * in each file's header, its files read back by the other implementation and
 * by a store whose own serializer is another one (the header decides).
 */
import test from 'ava'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import * as k from 'konserve'
import { tempDir } from './helpers/api.js'

const value = () => ({
  when: new Date(Date.UTC(2024, 1, 29, 12, 0, 0, 7)),
  far: new Date(-8.64e15 + 1),
  big: 2n ** 80n,
  tags: new Set(['a', 'b']),
  index: new Map<unknown, unknown>([[1, 'one'], [{ k: 'obj' }, [1, 2]]]),
  bytes: new Uint8Array([0, 1, 255]),
  floats: new Float64Array([1.5, -0, NaN]),
  z: -0,
  nothing: undefined,
})

for (const [writer, reader] of [['native', 'pure'], ['pure', 'native']] as const) {
  test(`a cbor store's files (${writer}) carry serializer id 3 and read back on ${reader}`, async (t) => {
    const dir = join(tempDir(), 'store')
    const w = await k.connectFsStore(dir, { serializer: 'cbor', native: writer === 'native' })
    await k.assoc(w, 'doc', value())
    const files = readdirSync(dir).filter((f) => f.endsWith('.ksv'))
    t.is(files.length, 1)
    const head = readFileSync(join(dir, files[0]!))
    t.is(head.subarray(0, 4).toString('latin1'), 'KNSV')
    t.is(head[5], 3, 'the value segment names serializer 3 (cbor)')
    // The reader's own serializer is msgpack: it reads by the id in the header.
    const r = await k.connectFsStore(dir, { native: reader === 'native' })
    const back = (await k.get(r, 'doc')) as ReturnType<typeof value>
    t.deepEqual(back, value())
    t.true(Object.is(back.z, -0))
    t.is(back.far.getTime(), -8.64e15 + 1)
    // It writes msgpack (id 1) next to the cbor file; the cbor store reads both.
    await k.assoc(r, 'other', { from: reader })
    t.deepEqual(await k.get(w, 'other'), { from: reader })
    await k.close(w)
    await k.close(r)
  })
}

test('cbor in a memory store, sync and async, and refused values leave the old one', async (t) => {
  const m = k.newMemStore({ serializer: 'cbor', sync: true })
  k.assoc(m, 'a', { s: new Set([1]) }, { sync: true })
  t.deepEqual(k.get(m, 'a', { sync: true }), { s: new Set([1]) })
  const err = await t.throwsAsync(k.assoc(m, 'a', { b: new ArrayBuffer(1) }), { code: 'ERR_SERIALIZE' } as any)
  t.regex(err!.message, /cbor cannot store a ArrayBuffer \(at \.b\)/)
  t.deepEqual(await k.get(m, 'a'), { s: new Set([1]) })
})
