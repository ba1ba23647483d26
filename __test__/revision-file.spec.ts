/**
 * ERR_REVISION_MISMATCH names the key and, on a file store, the key's file,
 * from every write that takes `expectedRevision`: the general, fused and
 * blocking paths, native (with and without the write-ahead log) and pure. A
 * memory store has no file to name. It used to name the key only.
 */
import test from 'ava'
import { readdirSync, realpathSync } from 'node:fs'
import { join } from 'node:path'
import * as k from 'konserve'
import { tempDir } from './helpers/api.js'

type Kind = 'native' | 'native+wal' | 'pure' | 'memory'
const open = async (kind: Kind, dir: string) =>
  kind === 'memory' ? k.createStore({ backend: 'memory' }) : k.connectFsStore(dir, { native: kind !== 'pure', wal: kind === 'native+wal' })

/** Each way to write with an expected revision that is wrong (the key is at revision 1 as a value, a blob or a log). */
const wrong: Record<string, { setup: 'value' | 'blob' | 'log'; write: (s: k.Store, key: string) => unknown }> = {
  'assoc (sync)': { setup: 'value', write: (s, key) => k.assoc(s, key, 2, { expectedRevision: 5, sync: true }) },
  'assoc (async)': { setup: 'value', write: (s, key) => k.assoc(s, key, 2, { expectedRevision: 5 }) },
  'assoc of a new key (async)': { setup: 'value', write: (s, key) => k.assoc(s, key, 2, { expectedRevision: 0 }) },
  'updateIn (async)': { setup: 'value', write: (s, key) => k.updateIn(s, [key], (n: number) => n + 1, { expectedRevision: 5 }) },
  'updateIn (sync)': { setup: 'value', write: (s, key) => k.updateIn(s, [key], (n: number) => n + 1, { expectedRevision: 5, sync: true }) },
  'dissoc (sync)': { setup: 'value', write: (s, key) => k.dissoc(s, key, { expectedRevision: 5, sync: true }) },
  'dissoc (async)': { setup: 'value', write: (s, key) => k.dissoc(s, key, { expectedRevision: 5 }) },
  'bassoc (async)': { setup: 'blob', write: (s, key) => k.bassoc(s, key, Buffer.from('new'), { expectedRevision: 5 }) },
  'append (async)': { setup: 'log', write: (s, key) => k.append(s, key, 'x', { expectedRevision: 5 }) },
  'trimLog (async)': { setup: 'log', write: (s, key) => k.trimLog(s, key, { keepLast: 1, expectedRevision: 5 }) },
}

for (const kind of ['native', 'native+wal', 'pure', 'memory'] as const) {
  test(`${kind}: every conditional write names the key and its file`, async (t) => {
    const dir = join(tempDir(), 'store')
    const s = await open(kind, dir)
    for (const [name, { setup, write }] of Object.entries(wrong)) {
      const key = `key for ${name}`
      const before = kind === 'memory' ? [] : readdirSync(dir)
      if (setup === 'value') await k.assoc(s, key, 1)
      else if (setup === 'blob') await k.bassoc(s, key, Buffer.from('old'))
      else await k.append(s, key, 'first')
      const added = kind === 'memory' ? [] : readdirSync(dir).filter((n) => n.endsWith('.ksv') && !before.includes(n))
      let err: k.KonserveError | undefined
      try {
        await write(s, key)
      } catch (e) {
        err = e as k.KonserveError
      }
      t.is(err?.code, 'ERR_REVISION_MISMATCH', `${name}: ${err?.message}`)
      t.is(err?.key, key, name)
      t.is(err?.actualRevision, 1, name)
      if (kind === 'memory') t.is(err?.file, undefined, name)
      // On a store with the write-ahead log the key may still live only in the log: its file is where it will be.
      else if (kind === 'native+wal') t.regex(err?.file ?? '', /\.ksv$/, name)
      else t.is(err?.file, join(realpathSync(dir), added[0]!), name)
    }
    await k.close(s)
  })
}
