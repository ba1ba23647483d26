/**
 * The registry's network backends known by name: `createStore({ backend:
 * 'redis', url })` and the rest work with no import of konserve/redis (the
 * Node entry loads it on first async use), from the built package in both
 * module forms and here under tsx; the sync form is ERR_NOT_SUPPORTED; a
 * missing client package or subpath module is a typed error naming what to
 * install. The 'redis' backend's own semantics: marker key, exists for a
 * store made without the registry, one winner of concurrent creates, delete
 * of only the layout's keys, open stores ended by deleteStore.
 */
import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import test from 'ava'
import Redis from 'ioredis'
import * as k from 'konserve'
import { tempDir } from './helpers/api.js'
import { nodeRedisClient, sharedRedis } from './helpers/redis.js'

let n = 0
const prefix = () => `reg${process.pid}-${++n}`

test.serial('before first use: the network backends are known by name, not registered; their sync form is ERR_NOT_SUPPORTED', async (t) => {
  t.false(k.registeredBackends().includes('redis'))
  for (const backend of ['redis', 'postgres', 's3']) {
    const err = t.throws(() => k.storeExists({ backend, url: 'redis://127.0.0.1:1' }, { sync: true })) as k.KonserveError
    t.is(err.code as string, 'ERR_NOT_SUPPORTED', backend)
    t.regex(err.message, new RegExp(`konserve/${backend}`))
  }
  const unknown = (await t.throwsAsync(k.connectStore({ backend: 'nope' }))) as k.KonserveError
  t.is(unknown.code, 'ERR_INVALID_ARGUMENT')
  t.regex(unknown.message, /known by name: "redis" \(konserve\/redis\)/)
  // The first async call loads konserve/redis, which registers 'redis'.
  const server = await sharedRedis()
  t.false(await k.storeExists({ backend: 'redis', url: server.url, prefix: prefix() }))
  t.true(k.registeredBackends().includes('redis'))
  // Still no blocking form once loaded.
  t.is((t.throws(() => k.connectStore({ backend: 'redis', url: server.url }, { sync: true })) as k.KonserveError).code as string, 'ERR_NOT_SUPPORTED')
})

for (const via of ['url', 'node-redis client'] as const) {
  test(`redis by name (${via}): create, exists, connect, edge cases, release, delete ends open stores`, async (t) => {
    const server = await sharedRedis()
    const target = via === 'url' ? { url: server.url } : { client: await nodeRedisClient(server.url) }
    const config = { backend: 'redis', ...target, prefix: prefix(), serializer: 'cbor' as const }
    t.false(await k.storeExists(config))
    t.is(((await t.throwsAsync(k.connectStore(config))) as k.KonserveError).code, 'ERR_STORE_NOT_FOUND')
    const a = await k.createStore(config)
    t.true(a instanceof k.Store)
    t.is(((await t.throwsAsync(k.createStore(config))) as k.KonserveError).code, 'ERR_STORE_EXISTS')
    t.true(await k.storeExists(config))
    await k.assoc(a, 'x', new Set([1]))
    const b = await k.connectStore(config)
    t.deepEqual(await k.get(b, 'x'), new Set([1]), 'options pass through (cbor)')
    await k.releaseStore(b)
    t.is(((await t.throwsAsync(k.get(b, 'x'))) as k.KonserveError).code, 'ERR_CLOSED')
    t.deepEqual(await k.get(a, 'x'), new Set([1]))
    await k.deleteStore(config)
    t.false(await k.storeExists(config))
    t.is(((await t.throwsAsync(k.get(a, 'x'))) as k.KonserveError).code, 'ERR_STORE_DELETED')
    await k.deleteStore(config) // nothing there: nothing to do
    const c = await k.createStore(config)
    t.is(await k.get(c, 'x'), undefined)
    await k.close(c)
  })
}

test('redis by name: a store made by connectRedisStore (no marker) exists and connects; delete removes only the layout keys under the prefix', async (t) => {
  const server = await sharedRedis()
  const { connectRedisStore } = await import('konserve/redis')
  const p = prefix()
  const raw = await connectRedisStore({ url: server.url, prefix: p })
  await k.assoc(raw, 'a', 1)
  await k.bassoc(raw, 'blob', Buffer.alloc(10, 1))
  await k.append(raw, 'log', 1)
  const config = { backend: 'redis', url: server.url, prefix: p }
  t.true(await k.storeExists(config))
  t.is(await k.get(await k.connectStore(config), 'a'), 1)
  t.is(((await t.throwsAsync(k.createStore(config))) as k.KonserveError).code, 'ERR_STORE_EXISTS')
  // Another store whose prefix starts with this one's, and a foreign key under it.
  const nested = await k.createStore({ ...config, prefix: `${p}:sub` })
  await k.assoc(nested, 'a', 2)
  const redis = new Redis(server.port)
  await redis.set(`${p}:foreign`, 'keep me')
  await k.deleteStore(config)
  t.false(await k.storeExists(config))
  t.is(await redis.get(`${p}:foreign`), 'keep me')
  t.is(await k.get(nested, 'a'), 2)
  t.deepEqual((await redis.keys(`${p}:*`)).filter((key) => !key.startsWith(`${p}:sub:`)), [`${p}:foreign`])
  t.is(((await t.throwsAsync(k.get(raw, 'a'))) as k.KonserveError).code, 'ERR_STORE_DELETED')
  await k.close(nested)
  redis.disconnect()
})

test('redis by name: of concurrent creates of one store exactly one succeeds (SET NX on the marker)', async (t) => {
  const server = await sharedRedis()
  for (let round = 0; round < 5; round++) {
    const config = { backend: 'redis', url: server.url, prefix: prefix() }
    const results = await Promise.allSettled([1, 2, 3, 4].map(() => k.createStore(config)))
    const ok = results.filter((r) => r.status === 'fulfilled')
    t.is(ok.length, 1, `round ${round}`)
    for (const r of results) if (r.status === 'rejected') t.is((r.reason as k.KonserveError).code, 'ERR_STORE_EXISTS')
    await k.close((ok[0] as PromiseFulfilledResult<k.Store>).value)
  }
})

test('redis by name: an unreachable server is ERR_BACKEND_UNAVAILABLE; a bad client is ERR_INVALID_ARGUMENT', async (t) => {
  await t.throwsAsync(k.storeExists({ backend: 'redis', url: 'redis://127.0.0.1:1' }), { code: 'ERR_BACKEND_UNAVAILABLE' } as never)
  await t.throwsAsync(k.createStore({ backend: 'redis', client: {} }), { code: 'ERR_INVALID_ARGUMENT' } as never)
  await t.throwsAsync(k.createStore({ backend: 'redis' }), { code: 'ERR_INVALID_ARGUMENT' } as never)
})

// ---- from the built package, in a child process ----

/**
 * Runs `code` as a module in a Node child (no tsx), with a resolve hook that
 * can hide packages (`hide`) or stand in for a subpath module (`fake`:
 * specifier -> module source). Resolves with its stdout and exit code.
 */
async function child(code: string, opts: { ext?: 'mjs' | 'cjs'; hide?: string[]; fake?: Record<string, string>; args?: string[] } = {}) {
  const dir = tempDir()
  const hooks = join(dir, 'hooks.mjs')
  writeFileSync(
    hooks,
    `const hide = ${JSON.stringify(opts.hide ?? [])}, fake = ${JSON.stringify(opts.fake ?? {})}
    export async function resolve(specifier, context, next) {
      if (hide.includes(specifier)) {
        const e = new Error("Cannot find package '" + specifier + "' imported from " + context.parentURL)
        e.code = 'ERR_MODULE_NOT_FOUND'
        throw e
      }
      if (specifier in fake) return { url: 'data:text/javascript,' + encodeURIComponent(fake[specifier]), shortCircuit: true }
      return next(specifier, context)
    }`,
  )
  const register = join(dir, 'register.mjs')
  writeFileSync(register, `import { register } from 'node:module'\nregister(${JSON.stringify(`file://${hooks}`)})\n`)
  const file = join(dir, `child.${opts.ext ?? 'mjs'}`)
  writeFileSync(file, code)
  const proc = spawn(process.execPath, ['--import', register, file, ...(opts.args ?? [])], {
    cwd: resolve('.'),
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NODE_OPTIONS: '' },
  })
  let out = ''
  let err = ''
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()))
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()))
  // 'close', not 'exit': the child's output may still be in the pipe when it exits.
  const code_ = await new Promise<number | null>((r) => proc.once('close', (code) => r(code)))
  return { out: out.trim(), err, code: code_ }
}

const dist = (f: string) => JSON.stringify(resolve('dist', f))

const byName = (load: string) => `
  ${load}
  const server = process.argv[2], p = process.argv[3]
  const out = []
  out.push(k.registeredBackends().includes('redis'))
  const config = { backend: 'redis', url: server, prefix: p }
  const s = await k.createStore(config)
  await k.assoc(s, 'a', { n: 1 })
  out.push(await k.get(await k.connectStore(config), 'a'))
  out.push(s instanceof k.Store, k.registeredBackends().includes('redis'))
  await k.deleteStore(config)
  out.push(await k.storeExists(config))
  console.log(JSON.stringify(out))
  process.exit(0)
`

for (const [ext, load] of [
  ['cjs', `const k = require(${dist('index.js')}); (async () => {`],
  ['mjs', `const k = await import(${dist('index.mjs')}); {`],
] as const) {
  test(`built package (${ext === 'cjs' ? 'dist/index.js, require' : 'dist/index.mjs, import'}): createStore by name loads konserve/redis by itself`, async (t) => {
    const server = await sharedRedis()
    const r = await child(`${byName(load)}${ext === 'cjs' ? '})()' : '}'}`, { ext, args: [server.url, prefix()] })
    t.is(r.code, 0, r.err)
    t.deepEqual(JSON.parse(r.out), [false, { n: 1 }, true, true, false])
  })
}

const tryConnect = (config: string) => `
  const k = await import(${dist('index.mjs')})
  try { await k.connectStore(${config}); console.log('connected') } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message, typed: e instanceof k.KonserveError })) }
  process.exit(0)
`

test('built package: without ioredis, { url } uses node-redis; without either, a typed error naming the packages', async (t) => {
  const server = await sharedRedis()
  const p = prefix()
  await k.createStore({ backend: 'redis', url: server.url, prefix: p }).then((s) => k.close(s))
  const config = JSON.stringify({ backend: 'redis', url: server.url, prefix: p })
  const noIoredis = await child(tryConnect(config), { hide: ['ioredis'] })
  t.is(noIoredis.out, 'connected', noIoredis.err)
  const neither = await child(tryConnect(config), { hide: ['ioredis', 'redis'] })
  const e = JSON.parse(neither.out)
  t.is(e.code, 'ERR_NOT_SUPPORTED')
  t.true(e.typed)
  t.regex(e.message, /npm install ioredis/)
  t.regex(e.message, /npm install redis/)
})

test("built package: a backend module whose peer is missing, or that registers nothing, is ERR_NOT_SUPPORTED naming what's wrong", async (t) => {
  // Stand-ins for the subpath modules, so this holds whatever konserve/postgres and konserve/s3 do.
  const missingPeer = await child(tryConnect(JSON.stringify({ backend: 'postgres' })), { hide: ['pg'], fake: { 'konserve/postgres': "import 'pg'" } })
  const e = JSON.parse(missingPeer.out)
  t.is(e.code, 'ERR_NOT_SUPPORTED', missingPeer.err)
  t.true(e.typed)
  t.regex(e.message, /the "postgres" backend needs pg: npm install pg/)
  const none = await child(tryConnect(JSON.stringify({ backend: 's3' })), { fake: { 'konserve/s3': 'export const x = 1' } })
  const e2 = JSON.parse(none.out)
  t.is(e2.code, 'ERR_NOT_SUPPORTED', none.err)
  t.regex(e2.message, /konserve\/s3 was loaded but registered no "s3" backend/)
})
