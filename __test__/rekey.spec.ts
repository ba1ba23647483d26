/**
 * rekey (docs/FORMAT.md §4.7): every key file, blob and log of a store is
 * re-encrypted from one key to another (or from or to plaintext), and a
 * crash at any step leaves a store that a rerun of rekey finishes, with every
 * value readable under the new key and none lost. Rekey is written once, over
 * the shared format, and the result is read by both implementations.
 */
import test from 'ava'
import { spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, unlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as k from 'konserve'
import { KEY_CHECK_FILE, REKEY_FILE } from '../ts/format/keycheck.js'

const CHILD = new URL('./fixtures/rekey-child.mjs', import.meta.url).pathname
const A = { type: 'aes', key: 'key A' } as const
const B = { type: 'aes', key: 'key B' } as const
const BLOB = Buffer.alloc((2 << 20) + 12345)
for (let i = 0; i < BLOB.length; i++) BLOB[i] = (i * 131 + (i >> 9)) & 0xff

type Enc = typeof A | typeof B | null
const opts = (native: boolean, encryptor: Enc) => ({ native, ...(encryptor ? { encryptor } : {}) })

/** A store with every kind of key: values (one LZ4-compressed), a chunked blob, a small raw value, a trimmed log. */
async function fill(dir: string, native: boolean, encryptor: Enc): Promise<void> {
  const s = await k.connectFsStore(dir, opts(native, encryptor))
  await k.assoc(s, 'a', { n: 1, text: 'alpha' })
  await k.assoc(s, ['nested', 2], [1, 2, 3])
  await k.assoc(s, 'twice', 1)
  await k.assoc(s, 'twice', 2) // revision 2
  const lz4 = await k.connectFsStore(dir, { ...opts(native, encryptor), compressor: { type: 'lz4' } })
  await k.assoc(lz4, 'compressed', 'z'.repeat(5000))
  await k.bassoc(s, 'blob', BLOB)
  await k.bassoc(s, 'small-raw', Buffer.from('raw bytes'))
  for (let i = 0; i < 6; i++) await k.append(s, 'log', { i })
  await k.trimLog(s, 'log', { dropFirst: 2 }) // the log starts at index 2
}

/** Everything a store says about its keys: metadata (lastWrite, revision) and contents. */
async function snapshot(dir: string, native: boolean, encryptor: Enc): Promise<unknown> {
  const s = await k.connectFsStore(dir, opts(native, encryptor))
  const out: Record<string, unknown> = {}
  const metas = await k.keys(s, { onCorrupt: (e: Error) => { throw e } })
  for (const m of metas.sort((x, y) => JSON.stringify(x.key).localeCompare(JSON.stringify(y.key)))) {
    const id = JSON.stringify(m.key)
    const meta = await k.getMeta(s, m.key as k.Key)
    const value =
      m.type === 'append-log'
        ? await k.log(s, m.key as k.Key)
        : m.type === 'binary'
          ? Buffer.from((await k.readBlob(s, m.key as k.Key)) as Uint8Array).toString('base64')
          : await k.get(s, m.key as k.Key)
    out[id] = { meta, value }
  }
  return out
}

const headerIds = (dir: string) =>
  readdirSync(dir)
    .filter((n) => n.endsWith('.ksv'))
    .map((n) => readFileSync(join(dir, n)).subarray(6, 8).join(','))
    .sort()

const tmp = () => mkdtempSync(join(tmpdir(), 'konserve-rekey-'))

for (const native of [true, false]) {
  const name = native ? 'native' : 'pure'
  test(`${name}: rekey A -> B -> plaintext -> A keeps every value, blob and log, metadata included`, async (t) => {
    const dir = tmp()
    await fill(dir, native, A)
    const before = await snapshot(dir, native, A)
    t.is(Object.keys(before as object).length, 7)

    t.deepEqual(await k.rekey(dir, { from: A, to: B }), { rewritten: 7, skipped: 0 })
    t.false(existsSync(join(dir, REKEY_FILE)))
    await t.throwsAsync(k.connectFsStore(dir, opts(native, A)), { code: 'ERR_DECRYPT', message: /wrong encryption key/ })
    for (const reader of [true, false]) t.deepEqual(await snapshot(dir, reader, B), before, `read by ${reader ? 'native' : 'pure'}`)
    // Each file keeps its compressor; every one is encrypted.
    t.deepEqual(headerIds(dir), ['0,1', '0,1', '0,1', '0,1', '0,1', '0,1', '1,1'])

    t.deepEqual(k.rekey(dir, { from: B, to: null, sync: true }), { rewritten: 7, skipped: 0 })
    t.false(existsSync(join(dir, KEY_CHECK_FILE)))
    t.deepEqual(headerIds(dir), ['0,0', '0,0', '0,0', '0,0', '0,0', '0,0', '1,0'])
    for (const reader of [true, false]) t.deepEqual(await snapshot(dir, reader, null), before)

    t.deepEqual(await k.rekey(dir, { from: null, to: A }), { rewritten: 7, skipped: 0 })
    for (const reader of [true, false]) t.deepEqual(await snapshot(dir, reader, A), before)
    await t.throwsAsync(k.connectFsStore(dir, opts(native, null)), { code: 'ERR_DECRYPT', message: /store is encrypted/ })
  })
}

test('rekey refuses a wrong `from`, a store of another state, and bad options', async (t) => {
  const dir = tmp()
  await fill(dir, true, A)
  const fromB = await t.throwsAsync(k.rekey(dir, { from: B, to: A }), { code: 'ERR_DECRYPT', message: /wrong encryption key/ })
  t.regex(String((fromB as k.KonserveError).file), /keycheck$/)
  await t.throwsAsync(k.rekey(dir, { from: null, to: B }), { code: 'ERR_DECRYPT', message: /store is encrypted/ })
  t.throws(() => k.rekey(dir, { from: A, to: { type: 'aes', key: 'key A' }, sync: true }), { code: 'ERR_INVALID_ARGUMENT' })
  t.throws(() => k.rekey(dir, { from: null, to: null, sync: true }), { code: 'ERR_INVALID_ARGUMENT' })
  t.false(existsSync(join(dir, REKEY_FILE)), 'a refused rekey starts nothing')
  t.truthy(await snapshot(dir, true, A))
  // A plaintext file planted in the encrypted store stops the rekey (and is named); the rerun after removing it finishes.
  const other = tmp()
  await k.assoc(await k.connectFsStore(other, { native: true }), 'planted', 1)
  const planted = readdirSync(other).find((n) => n.endsWith('.ksv'))!
  copyFileSync(join(other, planted), join(dir, planted))
  const e = await t.throwsAsync(k.rekey(dir, { from: A, to: B }), { code: 'ERR_DECRYPT', message: /not encrypted/ })
  t.is((e as k.KonserveError).file, join(dir, planted))
  await t.throwsAsync(k.connectFsStore(dir, { encryptor: B }), { code: 'ERR_DECRYPT', message: /unfinished rekey/ })
  unlinkSync(join(dir, planted))
  const resumed = await k.rekey(dir, { from: A, to: B })
  t.is(resumed.rewritten + resumed.skipped, 7, 'the files rewritten before the stop are skipped')
  t.is(Object.keys((await snapshot(dir, false, B)) as object).length, 7)
})

// A SIGKILL of the process doing the rekey at each step of the protocol; then
// every open is refused until rekey runs again, which finishes it, and every
// value is there under the new key, as both implementations read it.
const points: Array<[string, number?]> = [['pending'], ['file', 1], ['file', 4], ['file', 7], ['keycheck'], ['done']]
for (const [from, to] of [
  [A, B],
  [null, A],
  [A, null],
] as const) {
  for (const [step, n] of points) {
    const label = `${from?.key ?? 'plaintext'} -> ${to?.key ?? 'plaintext'}`
    test(`crash during rekey ${label} at ${step}${n ? ` ${n}` : ''}: a rerun finishes it, nothing lost`, async (t) => {
      const dir = tmp()
      await fill(dir, false, from)
      const before = await snapshot(dir, true, from)
      const r = spawnSync(process.execPath, [CHILD, dir, from?.key ?? '-', to?.key ?? '-', step, String(n ?? 0)], { encoding: 'utf8' })
      t.is(r.signal, 'SIGKILL', r.stderr)
      if (step === 'done') {
        t.false(existsSync(join(dir, REKEY_FILE)))
      } else {
        t.true(existsSync(join(dir, REKEY_FILE)), 'the rekey is pending')
        for (const e of [from, to]) {
          await t.throwsAsync(k.connectFsStore(dir, opts(true, e)), { code: 'ERR_DECRYPT', message: /unfinished rekey/ })
          await t.throwsAsync(k.connectFsStore(dir, opts(false, e)), { code: 'ERR_DECRYPT', message: /unfinished rekey/ })
        }
        const done = await k.rekey(dir, { from, to })
        t.is(done.rewritten + done.skipped, 7)
        t.is(done.skipped, step === 'pending' ? 0 : step === 'file' ? n! : 7)
      }
      t.false(existsSync(join(dir, REKEY_FILE)))
      for (const reader of [true, false]) t.deepEqual(await snapshot(dir, reader, to), before, `read by ${reader ? 'native' : 'pure'}`)
      t.deepEqual(readdirSync(dir).filter((f) => f.endsWith('.stage')), [], 'no staging file is left')
    })
  }
}
