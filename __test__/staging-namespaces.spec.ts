/**
 * The sweep on open and staging files written in another pid namespace or on
 * another host (docs/FORMAT.md §5). A staging file's name carries its
 * writer's pid, which means nothing outside the writer's pid namespace: two
 * containers on one volume are often both PID 1. The sweep used to take a
 * live writer there for this process (same pid, no write in flight) or for a
 * dead one (a pid with no process here) and remove its staging file, failing
 * its write. A name now also carries a tag of its writer's boot, pid namespace
 * and host; a file with another tag is removed only once it is a lease (30 s)
 * old unchanged, by the open's sweep or by a sweep the open schedules.
 */
import test from 'ava'
import { spawn, spawnSync } from 'node:child_process'
import { readdirSync, utimesSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import * as k from 'konserve'
import { namespaceTag, namespaceTagOf } from '../ts/backends/pure/staging.js'
import { tempDir } from './helpers/api.js'

const CHILD = new URL('./fixtures/ns-child.mjs', import.meta.url).pathname
const HEX = 'ab'.repeat(16)
const TAG = 2 ** 32
const stagingFiles = (dir: string) => readdirSync(dir).filter((n) => n.endsWith('.stage')).sort()
const here = namespaceTag()
const elsewhere = (here % (2 ** 20 - 1)) + 1
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** A pid with no process: a child's, after it exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'])
  return Number(r.stdout.toString())
}

/** A leftover staging file, its mtime `ageMs` ago. */
function leftover(dir: string, pid: number, tag: number, ageMs = 0): string {
  const name = `.${HEX}.${pid}.${tag * TAG + 7}.stage`
  writeFileSync(join(dir, name), 'a staging file')
  const t = (Date.now() - ageMs) / 1000
  utimesSync(join(dir, name), t, t)
  return name
}

test('the tag is the hash the Rust core computes (crates/core/src/staging.rs)', (t) => {
  t.is(namespaceTagOf({ bootId: 'b', pidNs: '4026531836', pid: 1, startTicks: '9', host: 'h' }), 131812)
  t.true(here >= 1 && here < 2 ** 20)
})

/** The staging file name a blob write of `engine` uses in a child (run by `run`, given the fixture's arguments). */
async function childStagingName(engine: 'native' | 'pure', run: (args: string[]) => ReturnType<typeof spawn>): Promise<{ tag: number; engineBit: number }> {
  const dir = join(tempDir(), 'store')
  const child = run(['names', dir, engine])
  const name = await firstLine(child)
  const seq = Number(/^\.[0-9a-f]{32}\.\d+\.(\d+)\.stage$/.exec(name)?.[1])
  return { tag: Math.floor(seq / TAG), engineBit: Math.floor(seq / 2 ** 31) % 2 }
}

test('both engines of one process write its tag, each with its own engine bit', async (t) => {
  const run = (args: string[]) => spawn(process.execPath, [CHILD, ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.deepEqual(await childStagingName('native', run), { tag: here, engineBit: 0 })
  t.deepEqual(await childStagingName('pure', run), { tag: here, engineBit: 1 })
})

const canUnshareUts = process.getuid?.() === 0 && spawnSync('unshare', ['-u', 'true']).status === 0

;(canUnshareUts ? test : test.skip)('a host name that is not UTF-8 gives both engines one tag', async (t) => {
  // A UTS namespace of its own, with the host name h\xffx (Node decodes it to "h\ufffdx").
  const sh = 'printf "h\\377x" > /proc/sys/kernel/hostname && exec "$0" "$@"'
  const run = (args: string[]) => spawn('unshare', ['-u', 'sh', '-c', sh, process.execPath, CHILD, ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
  const native = await childStagingName('native', run)
  const pure = await childStagingName('pure', run)
  t.not(native.tag, here, 'the host name is part of the tag')
  t.is(native.tag, pure.tag)
})

for (const native of [true, false]) {
  const engine = native ? 'native' : 'pure'

  test(`${engine}: a pid is judged only where it means something`, async (t) => {
    const dir = join(tempDir(), 'store')
    await k.close(await k.connectFsStore(dir, { native }))
    const dead = deadPid()
    const gone = [leftover(dir, dead, here), leftover(dir, dead, 0), leftover(dir, process.pid, elsewhere, 60_000), leftover(dir, dead, elsewhere, 31_000)]
    const kept = [leftover(dir, process.pid, elsewhere), leftover(dir, dead, elsewhere, 20_000), leftover(dir, 1, here)]
    const s = await k.connectFsStore(dir, { native })
    t.deepEqual(stagingFiles(dir), kept.sort(), `removed: ${gone.join(' ')}`)
    await k.close(s)
  })

  test(`${engine}: a staging file from elsewhere is removed once a lease old, by a sweep the open schedules`, async (t) => {
    const dir = join(tempDir(), 'store')
    await k.close(await k.connectFsStore(dir, { native }))
    // 25 s old: the sweep is due about 5 s after the open, room enough for an open on a loaded machine.
    const name = leftover(dir, process.pid, elsewhere, 25_000)
    const s = await k.connectFsStore(dir, { native })
    t.deepEqual(stagingFiles(dir), [name], 'kept at the open: younger than the lease')
    const until = Date.now() + 15_000
    while (stagingFiles(dir).length > 0 && Date.now() < until) await sleep(100)
    t.deepEqual(stagingFiles(dir), [], 'removed while the store is open')
    await k.close(s)
  })

  test(`${engine}: close ends the scheduled sweep`, async (t) => {
    const dir = join(tempDir(), 'store')
    await k.close(await k.connectFsStore(dir, { native }))
    const name = leftover(dir, process.pid, elsewhere, 25_000)
    const s = await k.connectFsStore(dir, { native })
    t.deepEqual(stagingFiles(dir), [name], 'kept at the open: younger than the lease')
    await k.close(s)
    // Past the time the sweep was due.
    await sleep(6_500)
    t.deepEqual(stagingFiles(dir), [name])
  })
}

const RESWEEP = new URL('./fixtures/resweep-child.mjs', import.meta.url).pathname

for (const engine of ['native', 'pure'] as const) {
  test(`${engine}: the scheduled sweep of a store in a worker thread leaves a write of the main thread alone`, async (t) => {
    // The sweep on open of one thread can take another thread's live file
    // (the pure engine's in-flight set is per thread); the scheduled sweep,
    // which runs again and again on a shared volume, looks at files of
    // other tags alone.
    const child = spawn(process.execPath, [RESWEEP, 'worker', join(tempDir(), 'store'), engine], { stdio: ['ignore', 'pipe', 'inherit'] })
    t.is(await firstLine(child), 'ok')
  })

  test(`${engine}: a store dropped without close while its sweep is scheduled is still collected`, async (t) => {
    const child = spawn(process.execPath, ['--expose-gc', RESWEEP, 'gc', join(tempDir(), 'store'), engine], { stdio: ['ignore', 'pipe', 'inherit'] })
    t.is(await firstLine(child), 'collected true')
  })
}

/** Runs the fixture as PID 1 of a new pid namespace. */
function inNamespace(args: string[]) {
  return spawn('unshare', ['-p', '-f', '--mount-proc', process.execPath, CHILD, ...args], { stdio: ['pipe', 'pipe', 'inherit'] })
}

function firstLine(child: ReturnType<typeof spawn>): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = ''
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString()
      const nl = out.indexOf('\n')
      if (nl >= 0) resolve(out.slice(0, nl))
    })
    child.once('exit', (code) => reject(new Error(`the child exited (${code}) before a line: ${out}`)))
  })
}

const canUnshare = process.getuid?.() === 0 && spawnSync('unshare', ['-p', '-f', '--mount-proc', 'true']).status === 0

for (const [writer, opener] of [
  ['native', 'native'],
  ['pure', 'pure'],
  ['native', 'pure'],
  ['pure', 'native'],
] as const) {
  const title = `two containers on one volume, both PID 1: a ${writer} blob streaming in one while a ${opener} store opens in the other is committed`
  ;(canUnshare ? test.serial : test.skip)(title, async (t) => {
    const dir = join(tempDir(), 'store')
    await k.close(await k.connectFsStore(dir))
    const w = inNamespace(['writer', dir, writer])
    t.is(await firstLine(w), 'staged 1')
    const o = inNamespace(['opener', dir, opener])
    t.is(await firstLine(o), 'opened 1')
    t.is(stagingFiles(dir).length, 1, "the writer's staging file is still there")
    const done = firstLine(w)
    w.stdin!.end('go\n')
    t.is(await done, 'ok')
    const s = await k.connectFsStore(dir)
    t.is((await k.readBlob(s, 'blob'))?.length, 2 << 20)
    await k.close(s)
    t.deepEqual(stagingFiles(dir), [])
  })
}
