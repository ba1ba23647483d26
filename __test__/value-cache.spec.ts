/**
 * The value caches (Linux, docs/RELIABILITY.md "The value cache"), the
 * native core's (inotify) and the pure engine's (a held descriptor and one
 * stat per hit): a repeated get of an unchanged key opens no file (strace
 * counts the opens), and a write, a dissoc, a deleted and recreated store or
 * a store directory swapped for another, by another process, native or
 * pure, is seen by the very next get, thousands of rounds in a row with no
 * pause, values of one size included. `valueCacheBytes: 0` is the plain
 * path: every get opens the file.
 */
import test from 'ava'
import { execFile, spawn } from 'node:child_process'
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { promisify } from 'node:util'
import * as k from 'konserve'
import { tempDir } from './helpers/api.js'
import { SETTLED_MS } from '../ts/backends/pure/held.js'

const run = promisify(execFile)
const dist = new URL('../dist/index.mjs', import.meta.url).pathname

const readers = ['native', 'pure'] as const
/** Waits until a file written now is old enough for the pure cache to hold (../ts/backends/pure/held.ts). */
const settle = () => new Promise((r) => setTimeout(r, SETTLED_MS + 10))

for (const reader of readers)
  for (const form of ['sync', 'async'] as const) {
    for (const cache of [true, false]) {
      test(`${reader} ${form}, cache ${cache ? 'on' : 'off'}: strace counts the key file opens of 300 gets of one unchanged key`, async (t) => {
        const dir = join(tempDir(), 'store')
        const log = join(tempDir(), 'strace.log')
        const opts = JSON.stringify({ native: reader === 'native', durable: false, ...(cache ? {} : { valueCacheBytes: 0 }) })
        const get = form === 'sync' ? `k.get(s, 'key', { sync: true })` : `await k.get(s, 'key')`
        const script = `import * as k from ${JSON.stringify(dist)}; import * as fs from 'node:fs'
        const s = k.connectFsStore(${JSON.stringify(dir)}, { ...${opts}, sync: true })
        k.assoc(s, 'key', { doc: 'value', n: 7 }, { sync: true })
        // The pure cache holds a file only once it is older than its read by SETTLED_MS.
        await new Promise((r) => setTimeout(r, ${SETTLED_MS + 10}))
        ${get}
        try { fs.openSync('/konserve-marker-begin') } catch {}
        for (let i = 0; i < 300; i++) { const v = ${get}; if (v.n !== 7) throw new Error('wrong value') }
        try { fs.openSync('/konserve-marker-end') } catch {}`
        await run('strace', ['-f', '-e', 'trace=open,openat,openat2', '-o', log, process.execPath, '--input-type=module', '-e', script])
        const lines = readFileSync(log, 'utf8').split('\n')
        const begin = lines.findIndex((l) => l.includes('/konserve-marker-begin'))
        const end = lines.findIndex((l) => l.includes('/konserve-marker-end'))
        t.true(begin >= 0 && end > begin, 'both markers traced')
        const opens = lines.slice(begin, end).filter((l) => l.includes('.ksv')).length
        if (cache) t.is(opens, 0, 'no key file opened')
        else t.true(opens >= 300, `every get opened the key file (${opens})`)
      })
    }
  }

/** A writer child (native or pure) on `dir`: reads commands from stdin, answers each with `ok`. */
function writer(dir: string, impl: 'native' | 'pure') {
  const file = join(tempDir(), 'writer.mjs')
  writeFileSync(
    file,
    `import * as k from ${JSON.stringify(dist)}; import { createInterface } from 'node:readline'
    const dir = ${JSON.stringify(dir)}
    let s = k.connectFsStore(dir, { sync: true, durable: false })
    for await (const line of createInterface({ input: process.stdin })) {
      const [op, arg] = line.split(' ')
      if (op === 'put') k.assoc(s, 'key', { n: Number(arg), pad: 'x'.repeat(Number(arg) % 50) }, { sync: true })
      else if (op === 'same') k.assoc(s, 'key', { n: Number(arg) }, { sync: true })
      else if (op === 'del') k.dissoc(s, 'key', { sync: true })
      else if (op === 'recreate') { k.deleteStore(dir, { sync: true }); s = k.connectFsStore(dir, { sync: true, durable: false }); k.assoc(s, 'key', { n: Number(arg) }, { sync: true }) }
      process.stdout.write('ok ' + line + '\\n')
    }`,
  )
  const proc = spawn(process.execPath, [file], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, KONSERVE_NATIVE: impl === 'pure' ? '0' : '1', NODE_OPTIONS: '' },
  })
  const answers = createInterface({ input: proc.stdout })[Symbol.asyncIterator]()
  return {
    async send(line: string) {
      proc.stdin.write(`${line}\n`)
      const got = await answers.next()
      if (got.value !== `ok ${line}`) throw new Error(`the writer answered ${got.value} to ${line}`)
    },
    async close() {
      proc.stdin.end()
      await new Promise((r) => proc.once('exit', r))
    },
  }
}

for (const readerImpl of readers)
  for (const impl of ['native', 'pure'] as const) {
    const by = `${readerImpl} reader: ${impl} writer`
    // The pure cache holds a file only once it has settled (SETTLED_MS): every other round waits for that, so its reads are hits.
    const pure = readerImpl === 'pure'
    const total = pure ? 400 : 2000
    test(`${by}: a write or dissoc is seen by the next get, ${total} rounds${pure ? ', every other one settled' : ' without a pause'}`, async (t) => {
      const dir = join(tempDir(), 'store')
      const reader = k.connectFsStore(dir, { sync: true, native: readerImpl === 'native', durable: false })
      const w = writer(dir, impl)
      let rounds = 0
      for (let i = 0; i < total; i++) {
        if (i % 10 === 9) {
          await w.send('del')
          if (k.get(reader, 'key', { sync: true }) !== undefined) t.fail(`round ${i}: the dissoc was not seen`)
          if ((await k.get(reader, 'key')) !== undefined) t.fail(`round ${i}: the dissoc was not seen (async)`)
          continue
        }
        // Two rounds in three a value of one size (n from 1000 on is a uint16): often a file of the same length as the last.
        const same = i % 3 !== 0
        await w.send(same ? `same ${1000 + i}` : `put ${i}`)
        if (pure && i % 2 === 0) await settle()
        const want = same ? 1000 + i : i
        // Twice each: the second read is answered from the cache, and the next round's write must drop it.
        for (let j = 0; j < 2; j++) {
          const v = k.get(reader, 'key', { sync: true }) as { n: number } | undefined
          if (v?.n !== want) t.fail(`round ${i}: read ${JSON.stringify(v)}`)
          const a = (await k.get(reader, 'key')) as { n: number } | undefined
          if (a?.n !== want) t.fail(`round ${i}: read ${JSON.stringify(a)} (async)`)
        }
        rounds++
      }
      await w.close()
      t.is(rounds, total * 0.9)
    })

    test(`${by}: the store deleted and recreated is read from its new files`, async (t) => {
      const dir = join(tempDir(), 'store')
      const reader = k.connectFsStore(dir, { sync: true, native: readerImpl === 'native', durable: false })
      const w = writer(dir, impl)
      for (let i = 0; i < 50; i++) {
        await w.send(`put ${i}`)
        if (pure) await settle()
        t.is((k.get(reader, 'key', { sync: true }) as { n: number }).n, i)
        t.is((k.get(reader, 'key', { sync: true }) as { n: number }).n, i)
        await w.send(`recreate ${i + 1000}`)
        t.is((k.get(reader, 'key', { sync: true }) as { n: number }).n, i + 1000)
      }
      await w.close()
    })

    test(`${by}: a store directory swapped for another is read from the new one`, async (t) => {
      const base = tempDir()
      const dir = join(base, 'store')
      mkdirSync(dir)
      const reader = k.connectFsStore(dir, { sync: true, native: readerImpl === 'native', durable: false })
      for (let i = 0; i < 20; i++) {
        // The next store is made aside by the writer process, then swapped in by two renames.
        const next = join(base, `next-${i}`)
        const w = writer(next, impl)
        await w.send(`same ${2000 + i}`)
        await w.close()
        k.assoc(reader, 'key', { n: 1000 + i }, { sync: true })
        if (pure) await settle()
        t.is((k.get(reader, 'key', { sync: true }) as { n: number }).n, 1000 + i)
        t.is(((await k.get(reader, 'key')) as { n: number }).n, 1000 + i)
        renameSync(dir, join(base, `old-${i}`))
        renameSync(next, dir)
        t.is((k.get(reader, 'key', { sync: true }) as { n: number }).n, 2000 + i)
        t.is(((await k.get(reader, 'key')) as { n: number }).n, 2000 + i)
      }
    })
  }

test('valueCacheBytes must be a number of bytes >= 0', (t) => {
  const dir = join(tempDir(), 'store')
  for (const bad of [-1, Number.NaN, '1', Number.POSITIVE_INFINITY]) {
    const err = t.throws(() => k.connectFsStore(dir, { sync: true, valueCacheBytes: bad as number }))
    t.is((err as k.KonserveError).code, 'ERR_INVALID_ARGUMENT')
  }
  t.truthy(k.connectFsStore(dir, { sync: true, valueCacheBytes: 0 }))
})
