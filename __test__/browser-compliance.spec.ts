/**
 * The compliance suite inside Chromium: every check of
 * ./helpers/compliance-checks.ts (the list compliance.spec.ts runs on the Node
 * stores) that applies to an async-only store runs in the page on a
 * connectIdbStore store (./browser/compliance-page.ts); one ava test per
 * check, failing with the check's failed assertions.
 */
import test from 'ava'
import { fileURLToPath } from 'node:url'
import { type Harness, type TestPage, launch } from './browser/harness.js'
import { checks } from './helpers/compliance-checks.js'

const PAGE = fileURLToPath(new URL('./browser/compliance-page.ts', import.meta.url))

let h: Harness
let p: TestPage
test.before(async () => {
  h = await launch(PAGE)
  p = await h.newPage()
})
test.after.always(async () => {
  await h?.close()
})

// The idb store is async only: the checks for the sync form do not apply.
const asyncOnly = { mode: 'async', modes: ['async'] } as never
const applicable = checks.filter((c) => !c.when || c.when(asyncOnly))

test.serial('the page runs the same checks: every one but those for the sync form', async (t) => {
  t.deepEqual(await p.call('titles'), applicable.map((c) => c.title))
  t.deepEqual(
    checks.filter((c) => !applicable.includes(c)).map((c) => c.title),
    ['a sync write on a key an async op holds fails fast instead of deadlocking'],
  )
})

test.serial("the page's assertions fail where ava's would", async (t) => {
  t.deepEqual(await p.call('selfCheck'), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
})

for (const c of applicable) {
  test.serial(`idb async: ${c.title}`, async (t) => {
    const r = await p.call<{ failures: string[]; assertions: number }>('run', c.title)
    t.deepEqual(r.failures, [])
    t.true(r.assertions > 0)
  })
}
