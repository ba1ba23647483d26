/**
 * The cross-process lock protocol (docs/FORMAT.md §6) with the implementations
 * mixed: native and pure processes on one directory exclude each other, a
 * killed holder of either kind wedges neither, waits are bounded, faults at
 * each step of the protocol leave no lock behind, and an update function that
 * writes its own key fails fast instead of waiting for itself.
 */
import test from 'ava'
import { type ChildProcess, type ChildProcessByStdio, type ChildProcessWithoutNullStreams, execFile, spawn, spawnSync } from 'node:child_process'
import { existsSync, readFileSync, readdirSync, realpathSync, statSync, utimesSync, writeFileSync } from 'node:fs'
import { createRequire, syncBuiltinESMExports } from 'node:module'
import { hostname } from 'node:os'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { promisify } from 'node:util'
import * as k from 'konserve'
import { FileLocker } from '../ts/backends/pure/filelock.js'
import { tempDir } from './helpers/api.js'
import { holdLock } from './helpers/lock-holder.js'
import { injectFault, injectedLines } from './helpers/strace.js'

const run = promisify(execFile)
const here = import.meta.dirname ?? new URL('.', import.meta.url).pathname
const fixture = (name: string) => join(here, 'fixtures', name)
const IMPLS = ['native', 'pure'] as const
type Impl = (typeof IMPLS)[number]
const lockNames = (dir: string) => readdirSync(dir).filter((n) => /\.(lock|lkt|brk)$/.test(n))

async function newStore(impl: Impl = 'native', extra: k.FsStoreOptions = {}) {
  const dir = join(tempDir(), 'store')
  const store = await k.connectFsStore(dir, { native: impl === 'native', ...extra })
  return { dir, store }
}

// ---- exclusion across implementations ------------------------------------------

for (const [a, b, mode] of [
  ['native', 'pure', 'sync'],
  ['native', 'pure', 'async'],
  ['native', 'pure', 'mixed'],
  ['pure', 'pure', 'mixed'],
] as const) {
  test(`${a} + ${b} processes x 200 updateIn (${mode}) on one key: exactly 400`, async (t) => {
    const { dir } = await newStore()
    await Promise.all([a, b].map((impl) => run(process.execPath, [fixture('incrementer.mjs'), dir, '200', mode, '1', impl])))
    const store = await k.connectFsStore(dir)
    t.is(await k.get(store, 'counter'), 400)
    t.deepEqual(lockNames(dir), [], 'no lock file outlives its lock')
  })
}

// The same with the write-ahead log on (docs/WAL.md): the counter lives in the log, shared by both engines.
for (const mode of ['sync', 'async', 'mixed'] as const) {
  test(`native + pure processes x 200 updateIn (${mode}) on one key, wal: true: exactly 400, in the log`, async (t) => {
    const { dir, store } = await newStore('native', { wal: true })
    await k.close(store)
    // No idle checkpoint (100 ms without appends, in either engine): the counter is to stay in the log.
    await Promise.all((['native', 'pure'] as const).map((impl) => run(process.execPath, [fixture('incrementer.mjs'), dir, '200', mode, '1', impl, '0'])))
    const check = await k.connectFsStore(dir, { native: false })
    t.is(await k.get(check, 'counter'), 400)
    t.deepEqual(
      readdirSync(dir).filter((n) => n.endsWith('.ksv')),
      [],
      'every increment was a record of the log',
    )
    await k.close(check)
    t.deepEqual(lockNames(dir), [], 'no lock file outlives its lock')
  })
}

// The lock-free replace of a version-3 store (docs/WAL.md §4.1): compare-and-set
// assocs with no key lock file in one process, updateIn under the key's lock in
// another, on one counter: no increment lost either way.
for (const mode of ['sync', 'async', 'mixed'] as const) {
  // Two loops of one process, except mixed (a blocking call of a key an async call of the same thread holds is ERR_LOCK_BUSY).
  const loops = mode === 'mixed' ? 1 : 2
  test(`native processes: 150 compare-and-set assocs (${mode}, ${loops} loops) against 150 updateIn on one key, wal: true: nothing lost`, async (t) => {
    const { dir, store } = await newStore('native', { wal: true })
    t.is(readFileSync(join(dir, '.konserve.keycheck'))[8], 3, 'a lock-free store')
    await k.close(store)
    const [cas] = await Promise.all([
      run(process.execPath, [fixture('cas-incrementer.mjs'), dir, String(150 / loops), mode, String(loops), 'native']),
      run(process.execPath, [fixture('incrementer.mjs'), dir, '150', mode, '1', 'native']),
    ])
    t.is(Number(cas.stdout.trim()), 150)
    const check = await k.connectFsStore(dir, { native: true })
    t.is(await k.get(check, 'counter'), 300)
    t.is((await k.getMeta(check, 'counter'))!.revision, 300, 'revisions are a sequence')
    await k.close(check)
    t.deepEqual(lockNames(dir), [], 'no lock file outlives its lock')
  })
}

test('native + pure processes x 400 updateIn over 10 shared keys (sync and async): each key exact', async (t) => {
  const { dir } = await newStore()
  await Promise.all(IMPLS.map((impl) => run(process.execPath, [fixture('multi-incrementer.mjs'), dir, '400', impl])))
  const store = await k.connectFsStore(dir)
  for (let i = 0; i < 10; i++) t.is(await k.get(store, `k${i}`), 80, `k${i}`)
})

// ---- killed holders ------------------------------------------------------------------

for (const holder of IMPLS) {
  for (const waiter of IMPLS) {
    test(`a SIGKILLed ${holder} holder does not wedge a ${waiter} waiter (no lease wait)`, async (t) => {
      // A lock timeout far below the 30 s lease: the dead holder must be seen dead at once.
      const { dir, store } = await newStore(waiter, { lockTimeoutMs: 10_000 })
      await k.assoc(store, 'held', 1)
      const h = holdLock(dir, holder)
      await h.locked
      t.is(lockNames(dir).length, 1, 'the holder has a lock file')
      await h.kill()
      const started = Date.now()
      t.deepEqual(await k.updateIn(store, ['held'], (x: number) => x + 1), [1, 2])
      k.assoc(store, 'held', 3, { sync: true })
      t.true(Date.now() - started < 5_000, `took ${Date.now() - started} ms`)
      t.deepEqual(lockNames(dir), [])
    })
  }
}

for (const wal of [false, true]) {
  const KILLS = wal ? 15 : 30
  test(`4 processes (native and pure) increment while holders are SIGKILLed ${KILLS} times${wal ? ' (wal: true)' : ''}: every acknowledged increment is there`, async (t) => {
    const { dir, store: opened } = await newStore('native', wal ? { wal: true } : {})
    await k.close(opened)
    const acked = new Map<string, number>()
    let nextId = 0
    const live = new Map<string, ChildProcessByStdio<null, Readable, Readable>>()
    let ackWaiter: (() => void) | undefined
    const spawnOne = (impl: Impl) => {
      const id = `${impl}-${nextId++}`
      const child = spawn(process.execPath, [fixture('ack-incrementer.mjs'), dir, impl, id], { stdio: ['ignore', 'pipe', 'pipe'] })
      acked.set(id, 0)
      live.set(id, child)
      let err = ''
      child.stderr.on('data', (d) => (err += d))
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        acked.set(id, acked.get(id)! + (d.match(/a\n/g)?.length ?? 0))
        ackWaiter?.()
      })
      child.once('exit', (code, signal) => {
        if (signal !== 'SIGKILL') t.fail(`${id} exited with ${code}: ${err}`)
      })
      return id
    }
    const impls: Impl[] = ['native', 'pure', 'native', 'pure']
    for (const impl of impls) spawnOne(impl)
    const totalAcked = () => [...acked.values()].reduce((a, b) => a + b, 0)
    const untilAcked = async (n: number) => {
      while (totalAcked() < n) await new Promise<void>((r) => (ackWaiter = r))
    }
    for (let kill = 0; kill < KILLS; kill++) {
      await untilAcked(totalAcked() + 5)
      const ids = [...live.keys()]
      const victim = ids[kill % ids.length]!
      const child = live.get(victim)!
      live.delete(victim)
      const exited = new Promise((r) => child.once('exit', r))
      child.kill('SIGKILL')
      await exited
      spawnOne(victim.startsWith('native') ? 'native' : 'pure')
    }
    await untilAcked(totalAcked() + 5)
    await Promise.all(
      [...live.values()].map((c) => {
        const exited = new Promise((r) => c.once('exit', r))
        c.kill('SIGKILL')
        return exited
      }),
    )
    const store = await k.connectFsStore(dir, { lockTimeoutMs: 10_000 })
    // The last state reads and writes at once, whatever the killed left.
    await k.assoc(store, 'after', 1)
    const final = (await k.get(store, 'counter')) as { total: number; per: Record<string, number> }
    const sum = Object.values(final.per).reduce((a, b) => a + b, 0)
    t.is(final.total, sum, 'no update was lost (each one counted once, in total and per process)')
    for (const [id, n] of acked) {
      const stored = final.per[id] ?? 0
      // Killed between its write and its acknowledgement, a process has one more than it printed.
      t.true(stored >= n && stored <= n + 1, `${id}: acknowledged ${n}, stored ${stored}`)
    }
    if (wal) t.true(existsSync(join(dir, '.konserve.wal')), 'the store stayed on its log')
    t.log(`${final.total} increments, ${nextId} processes, ${KILLS} killed holding or waiting`)
  })
}

// ---- bounded waits -----------------------------------------------------------------

for (const holder of IMPLS) {
  for (const waiter of IMPLS) {
    test(`a live ${holder} holder makes a ${waiter} waiter fail with ERR_LOCK_TIMEOUT naming it`, async (t) => {
      const { dir, store } = await newStore(waiter, { lockTimeoutMs: 300 })
      const h = holdLock(dir, holder)
      try {
        await h.locked
        const err = (await t.throwsAsync(k.assoc(store, 'held', 1))) as k.KonserveError
        t.is(err.code, 'ERR_LOCK_TIMEOUT')
        t.regex(err.message, new RegExp(`process ${h.child.pid} on host `))
        t.true(err.file?.endsWith('.lock'), err.file)
        t.deepEqual(err.key, 'held')
        const syncErr = t.throws(() => k.assoc(store, 'held', 1, { sync: true })) as k.KonserveError
        t.is(syncErr.code, 'ERR_LOCK_TIMEOUT')
        t.regex(syncErr.message, new RegExp(`process ${h.child.pid} `))
      } finally {
        await h.kill()
      }
      await k.assoc(store, 'held', 2) // free again once the holder is gone
    })
  }
}

// ---- re-entry --------------------------------------------------------------------------

for (const impl of IMPLS) {
  test(`${impl}: an async update function that writes its own key fails fast with ERR_LOCK_REENTRY`, async (t) => {
    // The default 60 s lock timeout: the failure must come from the re-entry check, not from a wait.
    const { store } = await newStore(impl)
    const started = Date.now()
    const err = (await t.throwsAsync(
      k.updateIn(store, ['k'], async () => {
        await k.assoc(store, 'k', 1)
        return 2
      }),
    )) as k.KonserveError
    t.is(err.code, 'ERR_LOCK_REENTRY')
    // Milliseconds when idle; the bound leaves room for a machine loaded by a full test run.
    const took = Date.now() - started
    t.log(`rejected after ${took} ms`)
    t.true(took < 5_000, `${took} ms`)
    // A sync write from the async function is a re-entry too; and multi-key ops.
    const e2 = (await t.throwsAsync(k.update(store, 'k', async () => k.multiAssoc(store, { j: 1, k: 1 }, { sync: true })))) as k.KonserveError
    t.is(e2.code, 'ERR_LOCK_REENTRY')
    // The key stays usable; a write the function starts but does not await is no re-entry.
    let later: Promise<unknown> | undefined
    await k.updateIn(store, ['k'], async () => {
      later = new Promise((r) => setTimeout(r, 20)).then(() => k.assoc(store, 'k', 7))
      return 3
    })
    await later
    t.is(await k.get(store, 'k'), 7)
  })
}

// ---- faults at each step (strace) ----------------------------------------------------

const hasStrace = !spawnSync('strace', ['-V']).error

interface LockFault {
  title: string
  syscalls: string[]
  errno: string
  /** Which paths strace aims at (-P); a rename is matched by its source, a temp. */
  target: 'lock' | 'temps'
  /** The error the write gets; undefined: it succeeds. */
  code?: string
  /** Plant a dead holder's lock first, so that the write takes it over. */
  deadHolder?: boolean
  forms: Array<'sync' | 'async'>
}
const WRITES = ['write', '?pwrite64', '?writev', '?pwritev']
const UNLINKS = ['?unlink', '?unlinkat']
const RENAMES = ['?rename', '?renameat', '?renameat2']
const lockFaults: LockFault[] = [
  { title: 'ENOSPC writing the record', syscalls: WRITES, errno: 'ENOSPC', target: 'lock', code: 'ERR_NO_SPACE', forms: ['sync', 'async'] },
  { title: 'EIO writing the record', syscalls: WRITES, errno: 'EIO', target: 'lock', code: 'ERR_LOCK', forms: ['sync'] },
  { title: 'EIO from rename in a takeover', syscalls: RENAMES, errno: 'EIO', target: 'temps', code: 'ERR_LOCK', deadHolder: true, forms: ['sync'] },
  { title: 'EIO from unlink in the release', syscalls: UNLINKS, errno: 'EIO', target: 'lock', code: 'ERR_LOCK', forms: ['sync'] },
]

function lineReader(child: ChildProcessWithoutNullStreams) {
  const lines: unknown[] = []
  const waiters: Array<(v: unknown) => void> = []
  let buffered = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    buffered += chunk
    for (let nl; (nl = buffered.indexOf('\n')) >= 0; ) {
      const v = JSON.parse(buffered.slice(0, nl))
      buffered = buffered.slice(nl + 1)
      const w = waiters.shift()
      if (w) w(v)
      else lines.push(v)
    }
  })
  child.once('close', () => {
    for (const w of waiters.splice(0)) w(undefined)
  })
  return () =>
    new Promise<any>((resolve) => (lines.length > 0 ? resolve(lines.shift()) : child.exitCode !== null ? resolve(undefined) : waiters.push(resolve)))
}

/** A lock record of a dead process of this boot and pid namespace (FORMAT.md §6). */
function deadRecord(): string {
  const dead = spawnSync(process.execPath, ['-e', '0']).pid!
  const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').trim()
  const ns = statSync('/proc/self/ns/pid', { bigint: true }).ino.toString()
  const host = [...Buffer.from(hostname())].map((b) => (b >= 0x21 && b <= 0x7e ? String.fromCharCode(b) : '_')).join('') || '-'
  return `konserve-lock 1 ${'ab'.repeat(16)} ${boot} ${ns} ${dead} 1 ${host}\n`
}

for (const fault of lockFaults) {
  for (const impl of IMPLS) {
    for (const form of fault.forms) {
      test(`${impl} (${form}): ${fault.title} -> ${fault.code ?? 'succeeds'}, no lock left, a new process writes at once`, async (t) => {
        if (!hasStrace) return t.fail('strace is not installed (Debian: apt-get install strace)')
        const dir = join(tempDir(), 'store')
        const child = spawn(process.execPath, [fixture('lock-fault-child.mjs'), dir, impl, form], { stdio: ['pipe', 'pipe', 'pipe'] })
        let childErr = ''
        child.stderr.on('data', (d) => (childErr += d))
        const next = lineReader(child)
        const ready = await next()
        if (!ready) throw new Error(`the child failed: ${childErr}`)
        if (fault.deadHolder) writeFileSync(ready.lockFile, deadRecord())
        const log = join(tempDir(), 'strace.log')
        const paths: string[] = fault.target === 'lock' ? [ready.lockFile] : ready.temps
        let strace: ChildProcess | undefined
        try {
          strace = (await injectFault({ pid: ready.pid, syscalls: fault.syscalls, inject: `error=${fault.errno}:when=1`, paths, log })).strace
          child.stdin.end('go\n')
          const report = await next()
          if (!report) throw new Error(`the child died: ${childErr}`)
          const tracer = strace
          await new Promise((r) => (tracer.exitCode !== null ? r(0) : tracer.once('close', r)))
          const injected = injectedLines(log)
          t.log(injected[0], JSON.stringify(report))
          t.is(injected.length, 1, 'exactly one call failed')
          t.true(injected[0]?.includes(`-1 ${fault.errno}`))
          if (fault.code) {
            t.false(report.first.ok, 'the write failed')
            t.is(report.first.code, fault.code, report.first.message)
            t.true(report.first.isKonserveError)
          } else {
            t.true(report.first.ok, report.first.message)
            t.is(report.value, 'new')
          }
          const leftover = report.left.filter((n: string) => !(fault.deadHolder && n.endsWith('.lock')))
          if (fault.title.includes('release')) {
            t.is(report.value, 'new', 'the write itself was done before the release failed')
          } else {
            t.deepEqual(leftover, [], 'no lock, temp or marker file left behind')
          }
        } finally {
          child.kill('SIGKILL')
          strace?.kill('SIGKILL')
        }
        // A new process (this one, each kind) writes the key at once: far below the lease.
        for (const other of IMPLS) {
          const store = k.connectFsStore(dir, { sync: true, native: other === 'native', lockTimeoutMs: 3_000 })
          k.assoc(store, 'victim', other, { sync: true })
          t.is(k.get(store, 'victim', { sync: true }), other)
        }
        t.deepEqual(lockNames(realpathSync(dir)), [])
      })
    }
  }
}

// ---- no link, no temp file ------------------------------------------------------------

for (const impl of IMPLS) {
  test(`${impl}: a write takes and releases its lock with no link and no temp file (strace)`, async (t) => {
    if (!hasStrace) return t.fail('strace is not installed (Debian: apt-get install strace)')
    const dir = join(tempDir(), 'store')
    const log = join(tempDir(), 'strace.log')
    const script = `import * as k from 'konserve'
const s = k.connectFsStore(process.argv[1], { sync: true, native: process.argv[2] === 'native' })
for (let i = 0; i < 5; i++) k.assoc(s, 'key' + i, i, { sync: true })`
    await run('strace', ['-f', '-qq', '-o', log, '-e', 'trace=link,linkat,openat,unlink,unlinkat', process.execPath, '--input-type=module', '-e', script, dir, impl], {
      cwd: here,
    })
    const lines = readFileSync(log, 'utf8').split('\n')
    const locks = lines.filter((l) => /\.lock"/.test(l) && /O_CREAT\|O_EXCL|O_EXCL\|O_CREAT|unlink/.test(l) && !l.includes('konserve.lock'))
    t.true(locks.length >= 10, `5 acquires and 5 releases of key locks: ${locks.join('\n')}`)
    t.deepEqual(
      lines.filter((l) => /^\d+\s+(link|linkat)\(/.test(l)),
      [],
      'no link(2)',
    )
    t.deepEqual(
      lines.filter((l) => l.includes('.lkt')),
      [],
      'no .lkt temp file',
    )
    t.deepEqual(lockNames(realpathSync(dir)), [])
  })
}

// ---- the read-back after a slow write of the record (pure, in process) ------------------

// The engine skips the read-back when the create and the write took under 1 s
// (a taker needs the empty file to be 5 s old). Here the create is followed by
// a pause the monotonic clock sees as PARTIAL_STALE, during which another
// locker takes the (aged) empty file over: the slow writer must yield.
test.serial('pure: a slow write of the lock record reads back and yields to the taker of the empty file', (t) => {
  const dir = tempDir()
  const locker = new FileLocker(dir)
  const taker = new FileLocker(dir)
  const hex = 'ab'.repeat(16)
  const cjsFs = createRequire(import.meta.url)('node:fs') as typeof import('node:fs')
  const realOpen = cjsFs.openSync
  const realNow = performance.now
  let skew = 0
  let takerGot: { taken?: { token: string } } | undefined
  cjsFs.openSync = ((path: string, flags: string, mode?: number) => {
    const fd = realOpen(path, flags, mode)
    if (takerGot === undefined && flags === 'wx' && String(path).endsWith(`${hex}.lock`)) {
      takerGot = {}
      const old = new Date(Date.now() - 10_000)
      utimesSync(path, old, old)
      skew += 5_000
      takerGot = taker.tryAcquire(hex) as { taken?: { token: string } }
    }
    return fd
  }) as typeof cjsFs.openSync
  performance.now = () => realNow.call(performance) + skew
  syncBuiltinESMExports()
  try {
    const att = locker.tryAcquire(hex) as { taken?: unknown; busy?: { token: string } }
    t.truthy(takerGot?.taken, 'the taker took the aged empty file over')
    t.is(att.taken, undefined, 'the slow writer did not take it too')
    t.is(att.busy?.token, takerGot?.taken?.token)
  } finally {
    cjsFs.openSync = realOpen
    performance.now = realNow
    syncBuiltinESMExports()
  }
  taker.release(hex, takerGot!.taken!.token)
  t.deepEqual(lockNames(dir), [])
})

// ---- the empty lock file of a writer that died between its create and its write -------

for (const impl of IMPLS) {
  // Serial: with the threadpool busy with other tests' blocking lock waits,
  // the write's task could start after the empty file is PARTIAL_STALE (5 s)
  // old, and then rightly take it over (seen once in CI under load).
  test.serial(`${impl}: an empty lock file (a writer that died before its write, or an older build's) is busy while young, taken over once old`, async (t) => {
    const { dir, store } = await newStore(impl, { lockTimeoutMs: 200 })
    k.assoc(store, 'k', 1, { sync: true })
    const hex = readdirSync(dir)
      .find((n) => n.endsWith('.ksv'))!
      .slice(0, 32)
    const lock = join(dir, `.${hex}.lock`)
    t.deepEqual(lockNames(dir), [], 'the first write released its lock')
    writeFileSync(lock, '')
    const err = (await t.throwsAsync(k.assoc(store, 'k', 2))) as k.KonserveError
    t.is(err.code, 'ERR_LOCK_TIMEOUT')
    t.regex(err.message, /being written/)
    const old = new Date(Date.now() - 10_000)
    utimesSync(lock, old, old)
    await k.assoc(store, 'k', 3)
    t.is(await k.get(store, 'k'), 3)
    t.deepEqual(lockNames(dir), [])
  })
}

test('opening a store creates no .konserve.lock, and writes leave no lock file', async (t) => {
  for (const impl of IMPLS) {
    const { dir, store } = await newStore(impl)
    await k.assoc(store, 'a', 1)
    t.false(readdirSync(dir).includes('.konserve.lock'))
    t.deepEqual(lockNames(dir), [])
  }
})
