/**
 * The core (api, store, backing, memory backend, layers, format, codec) has no
 * Node in it: bundled by esbuild for the browser it resolves no `node:`
 * module, and run where no Node global is (no Buffer, process, setImmediate,
 * require) it works, sync and async. ts/node/ (wired by the Node entry) holds
 * what needs Node.
 */
import test from 'ava'
import { build } from 'esbuild'
import { join } from 'node:path'
import vm from 'node:vm'

const ts = (f: string) => join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', 'ts', f)

const entry = `
import * as api from ${JSON.stringify(ts('api.ts'))}
import { newMemStore, close } from ${JSON.stringify(ts('store.ts'))}
import { withCache, tieredStore, flush } from ${JSON.stringify(ts('stacked.ts'))}
import { sweep } from ${JSON.stringify(ts('gc.ts'))}
export { api, newMemStore, close, withCache, tieredStore, flush, sweep }
`

async function bundle() {
  return build({
    stdin: { contents: entry, resolveDir: ts('.'), loader: 'ts' },
    bundle: true,
    platform: 'browser',
    format: 'iife',
    globalName: 'konserve',
    write: false,
    metafile: true,
    logLevel: 'silent',
  })
}

test('the core bundles for the browser: no node: module, nothing of ts/node/, the native binding or the file engine', async (t) => {
  const r = await bundle()
  t.deepEqual(r.errors, [])
  const inputs = Object.keys(r.metafile.inputs)
  t.deepEqual(inputs.filter((f) => /^node:|ts\/node\/|ts\/native\.ts|ts\/clock\.ts|backends\/(native|pure)/.test(f)), [])
})

test('the browser bundle runs without Node globals: memory store, sync and async, layers, sweep', async (t) => {
  const code = (await bundle()).outputFiles[0]!.text
  // Web globals only: what a browser (or a worker) has.
  const sandbox = vm.createContext({
    console,
    setTimeout,
    clearTimeout,
    queueMicrotask,
    TextEncoder,
    TextDecoder,
    crypto: globalThis.crypto,
    performance,
    ReadableStream,
  })
  vm.runInContext(code, sandbox)
  const run = (js: string): Promise<unknown> => vm.runInContext(`(async () => { const { api: k, newMemStore, close, withCache, tieredStore, flush, sweep } = konserve; ${js} })()`, sandbox)
  t.deepEqual(vm.runInContext('[typeof Buffer, typeof process, typeof setImmediate, typeof require]', sandbox), ['undefined', 'undefined', 'undefined', 'undefined'])
  const out = await run(`
    const s = newMemStore({ sync: true })
    k.assoc(s, 'a', { x: 1 }, { sync: true })
    const got = [k.get(s, 'a', { sync: true }), await k.get(s, 'a')]
    got.push(await k.updateIn(s, ['a', 'x'], (x) => x + 1))
    await Promise.all([k.append(s, 'l', 1), k.append(s, 'l', 2), k.append(s, 'l', 3)])
    got.push(await k.log(s, 'l'))
    await k.bassoc(s, 'b', new Uint8Array([1, 2, 3]))
    const web = await k.readBlob(s, 'b', { as: 'web' })
    const reader = web.getReader(); const piece = await reader.read()
    got.push(Array.from(piece.value))
    const c = withCache(s)
    got.push(k.get(c, 'a', { sync: true }), await k.get(c, 'a'))
    const tiered = tieredStore(newMemStore({ sync: true }), s, { writePolicy: 'write-behind' })
    await k.assoc(tiered, 't', 7); await flush(tiered)
    got.push(await k.get(s, 't'))
    got.push((await sweep(s, ['a', 'l', 'b'], new Date(Date.now() + 60000))).length)
    got.push((await k.keys(s)).map((m) => m.key).sort())
    await close(s)
    return JSON.stringify(got)
  `)
  t.deepEqual(JSON.parse(out as string), [{ x: 1 }, { x: 1 }, [{ x: 1 }, { x: 2 }], [1, 2, 3], [1, 2, 3], { x: 2 }, { x: 2 }, 7, 1, ['a', 'b', 'l']])
})
