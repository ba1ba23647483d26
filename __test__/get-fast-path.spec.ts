/**
 * The hot read path of `get`/`getIn` lends bytes instead of copying them: the
 * native store reads small files into shared slabs (and answers an async get
 * of a cached file without a thread hop), the memory store and the read cache
 * hand their stored bytes to the decoder. These tests pin down what that must
 * never change: values read earlier stay intact while later reads fill the
 * slabs, a caller that changes what it got never changes the store, and a
 * serializer that keeps its input gets bytes of its own.
 */
import test from 'ava'
import type * as k from 'konserve'
import { type Mode, api, storeKinds } from './helpers/api.js'

const modes: Mode[] = ['sync', 'async']

/** A serializer (id 200) whose decode returns its input itself: it keeps what it is given. */
const keeper: k.Serializer = {
  id: 200,
  name: 'keeper',
  encode: (v) => Uint8Array.from(v as number[]),
  decode: (bytes) => bytes,
}

const doc = (i: number) => ({ i, name: `document ${i}`, bin: Buffer.alloc(24, i & 0xff), pad: 'x'.repeat(i % 300) })

for (const kind of storeKinds) {
  for (const mode of modes) {
    const a = api(mode)
    const title = `${kind.name} ${mode}`

    test(`${title}: thousands of values read one after another all stay intact`, async (t) => {
      const store = await kind.open(mode)
      const n = 3000 // several 64 KiB slabs' worth of reads
      const kept: unknown[] = []
      for (let i = 0; i < n; i += 500) await a.multiAssoc(store, Object.fromEntries(Array.from({ length: 500 }, (_, j) => [`k${i + j}`, doc(i + j)])))
      for (let i = 0; i < n; i++) kept.push(await a.get(store, `k${i}`))
      for (let i = 0; i < n; i++) t.deepEqual(kept[i], doc(i), `k${i}`)
    })

    test(`${title}: changing what get returned never changes the store`, async (t) => {
      const store = await kind.open(mode)
      await a.assoc(store, 'd', doc(7))
      await a.bassoc(store, 'raw', Buffer.from('raw bytes'))
      const d = (await a.get(store, 'd')) as ReturnType<typeof doc>
      d.bin.fill(0xee)
      const raw = (await a.get(store, 'raw')) as Uint8Array
      raw.fill(0x21)
      const inner = (await a.getIn(store, ['d', 'bin'])) as Buffer
      inner.fill(0x33)
      t.deepEqual(await a.get(store, 'd'), doc(7))
      t.deepEqual(Buffer.from((await a.get(store, 'raw')) as Uint8Array).toString(), 'raw bytes')
    })

    test(`${title}: values past the read slab (20 KB, 200 KB) and missing keys`, async (t) => {
      const store = await kind.open(mode)
      for (const size of [20_000, 200_000]) {
        const v = { big: 'y'.repeat(size) }
        await a.assoc(store, `big${size}`, v)
        t.deepEqual(await a.get(store, `big${size}`), v)
        t.is(await a.getIn(store, [`big${size}`, 'big', 'length'] as never), undefined)
      }
      t.is(await a.get(store, 'missing'), undefined)
      t.is(await a.get(store, 'missing', { notFound: 'nf' }), 'nf')
    })

    test(`${title}: a serializer that keeps its input gets bytes of its own`, async (t) => {
      const store = await kind.open(mode, { serializer: keeper, serializers: [keeper] } as k.FsStoreOptions)
      await a.assoc(store, 'v', [1, 2, 3])
      const first = (await a.get(store, 'v')) as Uint8Array
      first.fill(9)
      t.deepEqual([...((await a.get(store, 'v')) as Uint8Array)], [1, 2, 3])
      // And later reads never rewrite it.
      for (let i = 0; i < 2000; i++) await a.assoc(store, `w${i % 50}`, [i & 0xff])
      const second = (await a.get(store, 'v')) as Uint8Array
      for (let i = 0; i < 2000; i++) await a.get(store, `w${i % 50}`)
      t.deepEqual([...second], [1, 2, 3])
    })
  }
}
