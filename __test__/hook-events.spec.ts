/**
 * What write hooks report for the log operations, as README.md's "Write
 * hooks" table (and ts/hooks.ts, which points to it) says: `append` reports
 * the element appended as `newValue` (the very object) and no `oldValue` (an
 * append never reads the log); `trimLog` reports an event only when it removed
 * elements. Memory, native and pure stores, sync and async.
 */
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import * as k from 'konserve'
import type { Store, WriteEvent } from 'konserve'
import { type Mode, api } from './helpers/api.js'

const kinds = {
  memory: (mode: Mode) => (mode === 'sync' ? k.newMemStore({ sync: true }) : k.newMemStore()),
  native: (mode: Mode) => open(mode, true),
  pure: (mode: Mode) => open(mode, false),
}

function open(mode: Mode, native: boolean): Store | Promise<Store> {
  const dir = join(mkdtempSync(join(tmpdir(), 'konserve-hooks-')), 'store')
  return mode === 'sync' ? k.connectFsStore(dir, { native, sync: true }) : k.connectFsStore(dir, { native })
}

for (const [kind, make] of Object.entries(kinds)) {
  for (const mode of ['sync', 'async'] as const) {
    test(`${kind} ${mode}: append reports the element (not the log), trimLog only when it removed some`, async (t) => {
      const s = await make(mode)
      const a = api(mode)
      const events: WriteEvent[] = []
      k.addWriteHook(s, 'probe', (e) => {
        events.push(e)
      })
      const first = { n: 1 }
      const second = { n: 2 }
      await a.append(s, 'log', first)
      await a.append(s, 'log', second)
      t.is(await a.trimLog(s, 'log', { keepLast: 5 }), 0)
      t.is(await a.trimLog(s, 'log', { keepLast: 1 }), 1)
      t.deepEqual(events, [
        { op: 'append', key: 'log', path: ['log'], oldValue: undefined, newValue: { n: 1 } },
        { op: 'append', key: 'log', path: ['log'], oldValue: undefined, newValue: { n: 2 } },
        { op: 'trimLog', key: 'log', path: ['log'], oldValue: undefined, newValue: undefined },
      ])
      t.is(events[0]!.newValue, first, 'the very element the caller appended')
      t.is(events[1]!.newValue, second)
      t.deepEqual(await a.log(s, 'log'), [{ n: 2 }])
      await a.append(s, 'log', 3)
      t.deepEqual(events[3], { op: 'append', key: 'log', path: ['log'], oldValue: undefined, newValue: 3 }, 'no log before or after, even for a log that has elements')
    })
  }
}
