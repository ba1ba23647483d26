/**
 * Damage at any place of an append log (docs/FORMAT.md §4.6): a byte
 * flipped at every offset and the file cut at every length of a 10-record
 * log, in every codec, through the pure-TypeScript codec in memory; and a
 * sample of the same through real files and both stores (native and pure),
 * plain and encrypted. Damage to acknowledged records is ERR_CORRUPT, never a
 * silently shorter log, and the next append refuses it instead of cutting
 * records away. (The Rust core's own loop over every offset is in
 * crates/core/src/log.rs, `damage_at_every_offset_is_never_a_shorter_log`.)
 */
import test from 'ava'
import { readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import * as k from 'konserve'
import type { LogRecord } from '../ts/backing/index.js'
import * as file from '../ts/format/file.js'
import { appendLogFileSync, decodeLogFileSync, encodeLogFileSync } from '../ts/format/log.js'
import { nodeCryptoProvider } from '../ts/crypto-node.js'
import { KonserveError } from '../ts/errors.js'
import { tempDir } from './helpers/api.js'

const META = new Uint8Array(Buffer.from('81a474797065aa617070656e642d6c6f67', 'hex')) // {type: "append-log"}
const SECRET = 'damage s3cr3t'
const codecs = [
  { compressor: 0, encryptor: 0 },
  { compressor: 1, encryptor: 0 },
  { compressor: 0, encryptor: 1 },
  { compressor: 1, encryptor: 1 },
]

function code(f: () => unknown): string {
  try {
    f()
    return 'OK'
  } catch (err) {
    if (err instanceof KonserveError) return err.code
    throw err
  }
}

/** Where the commit area and the records of a log file start. */
function parts(bytes: Uint8Array): { areaAt: number; dataStart: number } {
  const areaAt = 48 + new DataView(bytes.buffer, bytes.byteOffset).getUint32(12, true)
  return { areaAt, dataStart: areaAt + 128 }
}

for (const c of codecs) {
  const name = `${c.compressor ? 'lz4' : 'plain'}${c.encryptor ? '+aes' : ''}`
  test(`log damage in memory (${name}): every offset flipped and every length cut is ERR_CORRUPT or the whole log, never a shorter one`, (t) => {
    const keyCke = new Uint8Array([5, 0, 0, 0, 3, 0x6c, 0x6f, 0x67]) // the string "log"
    const secret = c.encryptor ? SECRET : undefined
    const ctx = { secret, keyHash: file.keyHash(keyCke), crypto: nodeCryptoProvider }
    const records: LogRecord[] = Array.from({ length: 10 }, (_, i) => ({
      index: i,
      stamp: 1000 + i,
      serializer: 1,
      bytes: new Uint8Array(Buffer.from(`record ${i} `.repeat(1 + (i % 4)))),
    }))
    let full = encodeLogFileSync({ ...c, secret, keyCke, meta: META, records: records.slice(0, 1), crypto: nodeCryptoProvider })
    for (const r of records.slice(1)) full = appendLogFileSync(full, { secret, keyCke, records: [r], crypto: nodeCryptoProvider })
    const whole = decodeLogFileSync(full, ctx).records
    t.is(whole.length, 10)
    const { areaAt, dataStart } = parts(full)
    const more = { secret, keyCke, records: [{ serializer: 1, stamp: 7, bytes: new Uint8Array([1]) }], crypto: nodeCryptoProvider }
    let survived = 0
    for (let at = 0; at < full.length; at++) {
      const bad = full.slice()
      bad[at]! ^= 1 << (at % 8)
      let read: LogRecord[] | string
      try {
        read = decodeLogFileSync(bad, ctx).records
      } catch (err) {
        if (!(err instanceof KonserveError)) throw err
        read = err.code
      }
      const appended = code(() => appendLogFileSync(bad, more))
      if (typeof read === 'string') {
        if (at >= dataStart && read !== 'ERR_CORRUPT') t.fail(`byte ${at}: ${read}, not ERR_CORRUPT`)
        if (appended === 'OK') t.fail(`byte ${at}: an append took a damaged log`)
      } else {
        // Only one damaged commit slot goes unnoticed: the other holds the commit.
        if (read.length !== 10 || at < areaAt || at >= dataStart) t.fail(`byte ${at}: read ${read.length} records`)
        survived++
      }
    }
    t.is(survived, 128, 'every byte of the commit area, one slot at a time')
    for (let n = 0; n < full.length; n++) {
      const read = code(() => decodeLogFileSync(full.subarray(0, n), ctx))
      if (read !== 'ERR_CORRUPT') t.fail(`cut to ${n}: ${read}`)
      if (code(() => appendLogFileSync(full.subarray(0, n), more)) === 'OK') t.fail(`cut to ${n}: an append took it`)
    }
    t.is(decodeLogFileSync(appendLogFileSync(full, more), ctx).records.length, 11)
  })
}

const kinds = [
  { name: 'native', native: true },
  { name: 'pure', native: false },
]
const encryption = [
  { name: 'plain', options: {} },
  { name: 'aes', options: { encryptor: { type: 'aes' as const, key: SECRET } } },
]

for (const kind of kinds) {
  for (const enc of encryption) {
    test(`log damage through files (${kind.name}, ${enc.name}): ERR_CORRUPT on read and append, the file untouched`, async (t) => {
      const dir = join(tempDir(), 'store')
      const open = () => k.connectFsStore(dir, { native: kind.native, ...enc.options })
      const s = await open()
      for (let i = 0; i < 10; i++) await k.append(s, 'log', { i, pad: 'x'.repeat(i * 7) })
      t.deepEqual(((await k.log(s, 'log')) as Array<{ i: number }>).map((e) => e.i), [...Array(10).keys()])
      const name = readdirSync(dir).find((n) => n.endsWith('.ksv'))!
      const path = join(dir, name)
      const full = new Uint8Array(readFileSync(path))
      const { dataStart } = parts(full)
      t.is(file.decodeHeader(full, full.length).flags, file.FLAGS_COMMITTED_LOG)
      // Each record's first, middle and last byte flipped; the file cut inside each record and just before its end.
      const ends: number[] = []
      for (let at = dataStart; at < full.length; ) {
        at += 33 + new DataView(full.buffer, full.byteOffset).getUint32(at, true)
        ends.push(at)
      }
      t.is(ends.length, 10)
      // `checked`: the first or the last record, or a shorter file, which every append checks.
      const damages: Array<[string, Uint8Array, boolean]> = []
      let start = dataStart
      for (const [i, end] of ends.entries()) {
        for (const at of [start, (start + end) >> 1, end - 1]) {
          const bad = full.slice()
          bad[at]! ^= 0x20
          damages.push([`byte ${at} flipped`, bad, i === 0 || i === ends.length - 1])
        }
        damages.push([`cut to ${end - 1}`, full.slice(0, end - 1), true], [`cut to ${(start + end) >> 1}`, full.slice(0, (start + end) >> 1), true])
        start = end
      }
      for (const [what, bad, checked] of damages) {
        writeFileSync(path, bad)
        const fresh = await open()
        await t.throwsAsync(k.log(fresh, 'log'), { code: 'ERR_CORRUPT' } as never, `${what}: read`)
        // An append never cuts or writes over acknowledged records. It refuses
        // damage to the first or last record (and a short file) always; damage
        // in between it finds when it is the first append to the log in this
        // process (this process appended to it before: it may append after it).
        const appended = await k.append(fresh, 'log', 'more').then(
          () => 'OK',
          (err: KonserveError) => err.code,
        )
        const after = new Uint8Array(readFileSync(path))
        if (appended === 'OK') {
          t.false(checked, `${what}: an append took it`)
          t.true(Buffer.from(after.subarray(dataStart, full.length)).equals(Buffer.from(bad.subarray(dataStart))), `${what}: the records before are as they were`)
          await t.throwsAsync(k.log(fresh, 'log'), { code: 'ERR_CORRUPT' } as never, `${what}: still damaged`)
        } else {
          t.is(appended, 'ERR_CORRUPT', what)
          t.true(Buffer.from(after).equals(Buffer.from(bad)), `${what}: the file is unchanged`)
        }
      }
      // Bytes past the acknowledged records (an append that never returned) are dropped, and the next append cuts them.
      writeFileSync(path, Buffer.concat([full, Buffer.from('torn tail of an unacknowledged append')]))
      const fresh = await open()
      t.is(((await k.log(fresh, 'log')) as unknown[]).length, 10)
      t.is(await k.append(fresh, 'log', 'more'), 11)
      t.is(((await k.log(fresh, 'log')) as unknown[]).length, 11)
    })
  }
}
