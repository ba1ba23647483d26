/**
 * Real system-call faults, injected with strace into a live Node process.
 *
 * Every fault runs against both implementations: the native core and the
 * pure-TypeScript store (the child runs with KONSERVE_NATIVE=0 and reports
 * which one it opened). A child (fixtures/fault-child.mjs) opens a store and
 * writes 'victim' with an old value; then strace attaches to it (`strace -f -p PID`) and fails exactly
 * one system call: `-P PATH` restricts tracing, and so injection, to the calls
 * on one path (the write's staging file, the key file or the store
 * directory), and `when=1` fails the first of those. The child then attempts
 * a write and reports the error; strace's own log (`-o`, with `-y` for fd
 * paths) must show the one INJECTED call where we aimed it. Finally this
 * process reopens the store, as a new process would after the failure.
 *
 * Why attach after the open, and aim by path, rather than count calls from
 * the start: strace counts `when=` per system call and per thread, and Node's
 * start-up makes write(2) calls of its own (to eventfds and pipes, on the main
 * thread and the libuv threadpool) whose number is not fixed. Attaching after
 * the store is open and the old value written keeps the open out of reach;
 * `-P` makes the first matching call the one we mean, on whichever thread (the
 * async form runs on the threadpool).
 *
 * What each fault must give (FORMAT.md §5, README "Errors"):
 * - EIO from fsync of the staging file: ERR_FSYNC; the store is poisoned
 *   (ERR_STORE_POISONED for every later write until it is reopened); the
 *   staging file is removed; the key keeps its old value, also after reopening.
 * - EIO from fsync of the directory after the rename: ERR_FSYNC and poisoned,
 *   but the rename had already happened, so the key holds the NEW value, whole,
 *   in this process and after reopening (the page cache was not lost). The
 *   error tells the caller that durability was not confirmed, not that nothing
 *   was written: had the machine lost power, the key would hold the old or the
 *   new value, each whole (the new file was fsynced before the rename).
 *   Likewise a delete whose directory fsync fails: the key is gone, and the
 *   caller was told it may not be durably gone.
 * - ENOSPC / EIO from write(2) to the staging file: ERR_NO_SPACE / ERR_IO, old
 *   value intact, no staging file left, store still writable (not poisoned).
 * - EROFS from rename(2) / renameat(2) / renameat2(2): ERR_READ_ONLY, old
 *   value intact, no staging file left, store still writable.
 * - EROFS from unlink(2) in a delete: ERR_READ_ONLY, the key still there.
 * - A multiAssoc of 'victim' and 'victim2' whose write, fsync or rename of
 *   victim2 fails: the error of that call; victim2 keeps its old value; victim
 *   holds its old value, or (a rename fault: the batch renames in order) its
 *   new one, each whole.
 * - A write whose stamp raises the clock watermark (`.konserve.clock`,
 *   FORMAT.md §7), with the clock's staging write, its fsync or its rename
 *   failing: a KonserveError with a code, naming the key; the key keeps its old
 *   value; the clock file still holds a readable watermark; nothing staged is
 *   left; the table's code (ERR_FSYNC for the fsync, which poisons: the clock
 *   record is written by the one durable write of ts/backends/pure/staging.ts).
 *
 * Needs strace (Debian: `apt-get install strace`) and permission to ptrace
 * one's own child processes; .ci/run installs it. Without strace they fail.
 */
import test, { type ExecutionContext } from 'ava'
import { type ChildProcess, type ChildProcessWithoutNullStreams, spawn, spawnSync } from 'node:child_process'
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { isDeepStrictEqual } from 'node:util'
import * as k from 'konserve'
import { tempDir } from './helpers/api.js'
import { injectFault, injectedLines } from './helpers/strace.js'

const here = import.meta.dirname ?? new URL('.', import.meta.url).pathname
const CHILD = join(here, 'fixtures', 'fault-child.mjs')
const OLD = { value: 'old', n: [1, 2, 3] }
const NEW = { value: 'new', pad: 'x'.repeat(10_000) }
const OLD2 = { value: 'old2' }
const NEW2 = { value: 'new2', pad: 'y'.repeat(10_000) }
const sync = { sync: true } as const

const straceVersion = (() => {
  const r = spawnSync('strace', ['-V'], { encoding: 'utf8' })
  return r.error ? undefined : r.stdout.split('\n')[0]
})()

type Form = 'sync' | 'async'
type Impl = 'native' | 'pure'
const IMPLS: Impl[] = ['native', 'pure']
/** Which paths' calls a fault is aimed at. */
type Target = 'staging' | 'dir' | 'keyFile' | 'staging2' | 'keyFile2' | 'clockStaging' | 'clockFile'
type State = 'old' | 'new' | 'absent'
interface Fault {
  title: string
  op: 'assoc' | 'bassoc' | 'bassoc-direct' | 'dissoc' | 'multiAssoc' | 'clock'
  /** System calls to fail (a leading '?' lets strace ignore names this architecture lacks). */
  syscalls: string[]
  errno: string
  target: Target
  /** The error code; undefined: any KonserveError code (logged). */
  code?: string
  /** Whether later writes are refused; undefined: not asserted (logged). */
  poisons?: boolean
  /** What 'victim' may hold after the failed write, in the child and after reopening. */
  after: State[]
  /** Likewise 'victim2' (multiAssoc only). */
  after2?: State[]
  /** Which of the aimed calls fails (strace's `when`, counted per thread; default the first). */
  when?: number
  /** The implementations it is run for (default both). */
  impls?: Impl[]
  /** What the failed call's line must show, beyond the path and the errno. */
  shows?: RegExp
}

const WRITE_CALLS = ['write', '?pwrite64', '?writev', '?pwritev', '?pwritev2']
const FSYNC_CALLS = ['fsync', 'fdatasync']
const RENAME_CALLS = ['?rename', '?renameat', '?renameat2']

const faults: Array<[Fault, Form[]]> = [
  [{ title: 'EIO from fsync of the staging file', op: 'assoc', syscalls: FSYNC_CALLS, errno: 'EIO', target: 'staging', code: 'ERR_FSYNC', poisons: true, after: ['old'] }, ['sync', 'async']],
  [{ title: 'EIO from fsync of the directory after the rename', op: 'assoc', syscalls: FSYNC_CALLS, errno: 'EIO', target: 'dir', code: 'ERR_FSYNC', poisons: true, after: ['new'] }, ['sync', 'async']],
  [{ title: 'ENOSPC from write', op: 'assoc', syscalls: WRITE_CALLS, errno: 'ENOSPC', target: 'staging', code: 'ERR_NO_SPACE', poisons: false, after: ['old'] }, ['sync', 'async']],
  [{ title: 'EIO from write', op: 'assoc', syscalls: WRITE_CALLS, errno: 'EIO', target: 'staging', code: 'ERR_IO', poisons: false, after: ['old'] }, ['sync', 'async']],
  [{ title: 'EROFS from rename', op: 'assoc', syscalls: RENAME_CALLS, errno: 'EROFS', target: 'keyFile', code: 'ERR_READ_ONLY', poisons: false, after: ['old'] }, ['sync', 'async']],
  [{ title: 'ENOSPC from write of a blob', op: 'bassoc', syscalls: WRITE_CALLS, errno: 'ENOSPC', target: 'staging', code: 'ERR_NO_SPACE', poisons: false, after: ['old'] }, ['async']],
  // The pure engine's direct write (ts/backends/pure/direct.ts): the blocking form makes its writes in
  // order on one thread: the placeholder header, the metadata, the head up to a block, then 1 MiB direct.
  [{ title: 'EIO from the first direct write of a 3 MiB blob', op: 'bassoc-direct', syscalls: WRITE_CALLS, errno: 'EIO', target: 'staging', code: 'ERR_IO', poisons: false, after: ['old'], when: 4, impls: ['pure'], shows: /, 1048576, \d*4096\) = -1 EIO/ }, ['sync']],
  [{ title: 'EROFS from unlink in a delete', op: 'dissoc', syscalls: ['?unlink', '?unlinkat'], errno: 'EROFS', target: 'keyFile', code: 'ERR_READ_ONLY', poisons: false, after: ['old'] }, ['sync']],
  [{ title: 'EIO from fsync of the directory after a delete', op: 'dissoc', syscalls: FSYNC_CALLS, errno: 'EIO', target: 'dir', code: 'ERR_FSYNC', poisons: true, after: ['absent'] }, ['async']],
  // multiAssoc: the fault hits the second key of the batch.
  [{ title: 'ENOSPC from write of the second key', op: 'multiAssoc', syscalls: WRITE_CALLS, errno: 'ENOSPC', target: 'staging2', code: 'ERR_NO_SPACE', poisons: false, after: ['old'], after2: ['old'] }, ['sync', 'async']],
  [{ title: 'EIO from fsync of the second key\'s staging file', op: 'multiAssoc', syscalls: FSYNC_CALLS, errno: 'EIO', target: 'staging2', code: 'ERR_FSYNC', poisons: true, after: ['old'], after2: ['old'] }, ['sync', 'async']],
  [{ title: 'EROFS from rename of the second key', op: 'multiAssoc', syscalls: RENAME_CALLS, errno: 'EROFS', target: 'keyFile2', code: 'ERR_READ_ONLY', poisons: false, after: ['old', 'new'], after2: ['old'] }, ['sync', 'async']],
  // The clock watermark (FORMAT.md §7): raised before the write that needs it.
  [{ title: 'ENOSPC from write of the clock file', op: 'clock', syscalls: WRITE_CALLS, errno: 'ENOSPC', target: 'clockStaging', code: 'ERR_NO_SPACE', poisons: false, after: ['old'] }, ['sync', 'async']],
  [{ title: 'EIO from fsync of the clock file', op: 'clock', syscalls: FSYNC_CALLS, errno: 'EIO', target: 'clockStaging', code: 'ERR_FSYNC', poisons: true, after: ['old'] }, ['sync', 'async']],
  [{ title: 'EROFS from rename of the clock file', op: 'clock', syscalls: RENAME_CALLS, errno: 'EROFS', target: 'clockFile', code: 'ERR_READ_ONLY', poisons: false, after: ['old'] }, ['sync', 'async']],
]

interface Ready {
  pid: number
  lockFile: string
  impl: string
  dir: string
  keyFile: string
  staging: string[]
  keyFile2?: string
  staging2?: string[]
  clockFile: string
  clockStaging: string[]
}
interface Attempt {
  ok: boolean
  how: string
  code?: string
  message?: string
  name?: string
  isKonserveError?: boolean
  value?: unknown
}
interface ReadBack {
  ok: boolean
  value?: unknown
  code?: string
  message?: string
}
interface Report {
  first: Attempt & { key?: unknown; file?: string }
  stagingAfter: string[]
  readBack: ReadBack
  readBack2?: ReadBack
  clockText: string
  followUp: Attempt
}

/** Resolves with each JSON line the child prints, in order. */
function lineReader(child: ChildProcessWithoutNullStreams) {
  const lines: unknown[] = []
  const waiters: Array<(v: unknown) => void> = []
  let buffered = ''
  let closed = false
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (chunk: string) => {
    buffered += chunk
    let nl
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const v = JSON.parse(buffered.slice(0, nl))
      buffered = buffered.slice(nl + 1)
      const w = waiters.shift()
      if (w) w(v)
      else lines.push(v)
    }
  })
  child.once('close', () => {
    closed = true
    for (const w of waiters.splice(0)) w(undefined)
  })
  return () =>
    new Promise<unknown>((resolve) => {
      if (lines.length > 0) resolve(lines.shift())
      else if (closed) resolve(undefined)
      else waiters.push(resolve)
    })
}

function closed(p: ChildProcessWithoutNullStreams | ReturnType<typeof spawn>) {
  return new Promise<number | null>((resolve) => {
    if (p.exitCode !== null || p.signalCode !== null) resolve(p.exitCode)
    else p.once('close', (code) => resolve(code))
  })
}

interface Outcome {
  ready: Ready
  report: Report
  injected: string[]
  straceLog: string
}

/** The paths whose calls strace may fail, and how the log names them. */
function aim(ready: Ready, target: Target): { paths: string[]; shown: string; mark: string } {
  switch (target) {
    case 'dir':
      return { paths: [ready.dir], shown: 'the store directory', mark: `${ready.dir}>` }
    case 'keyFile':
      return { paths: [ready.keyFile, ...ready.staging], shown: 'the key file (and staging files)', mark: ready.keyFile }
    case 'staging':
      return { paths: ready.staging, shown: `the ${ready.staging.length} possible staging files`, mark: '.stage' }
    case 'keyFile2':
      return { paths: [ready.keyFile2!, ...ready.staging2!], shown: "the second key's file (and staging files)", mark: ready.keyFile2! }
    case 'staging2':
      return { paths: ready.staging2!, shown: "the second key's possible staging files", mark: ready.staging2![0]!.replace(/\.\d+\.\d+\.stage$/, '') }
    case 'clockFile':
      return { paths: [ready.clockFile, ...ready.clockStaging], shown: 'the clock file (and its staging files)', mark: ready.clockFile }
    case 'clockStaging':
      return { paths: ready.clockStaging, shown: "the clock's possible staging files", mark: '.c10cc10c' }
  }
}

async function runWithFault(t: ExecutionContext, dir: string, impl: Impl, fault: Fault, form: Form): Promise<Outcome> {
  const env = { ...process.env, KONSERVE_NATIVE: impl === 'pure' ? '0' : '1' }
  const child = spawn(process.execPath, [CHILD, dir, fault.op, form], { stdio: ['pipe', 'pipe', 'pipe'], env })
  let childErr = ''
  child.stderr.setEncoding('utf8').on('data', (d: string) => (childErr += d))
  const next = lineReader(child)
  const ready = (await next()) as Ready | undefined
  if (!ready) throw new Error(`the child failed before it was ready: ${childErr}`)

  const { paths, shown } = aim(ready, fault.target)
  const logFile = join(tempDir('konserve-strace-'), 'strace.log')
  const set = fault.syscalls.join(',')
  let strace: ChildProcess | undefined
  try {
    // Go only once every thread of the child is traced (new threads are followed: -f).
    const when = fault.when ?? 1
    strace = (await injectFault({ pid: ready.pid, syscalls: fault.syscalls, inject: `error=${fault.errno}:when=${when}`, paths, log: logFile })).strace
    child.stdin.end('go\n')
    const report = (await next()) as Report | undefined
    await closed(child)
    await closed(strace)
    if (!report) throw new Error(`the child died: ${childErr}`)
    const straceLog = readFileSync(logFile, 'utf8')
    const injected = injectedLines(logFile)
    t.log(`strace -f -y -e trace=${set} -e inject=${set}:error=${fault.errno}:when=${when} -P <${shown}> -p <child>`)
    for (const l of injected) t.log(`injected: ${l.length > 240 ? `${l.slice(0, 240)}...` : l}`)
    return { ready, report, injected, straceLog }
  } finally {
    child.kill('SIGKILL')
    strace?.kill('SIGKILL')
  }
}

const VALUES: Record<State, unknown> = { old: OLD, new: NEW, absent: undefined }
const VALUES2: Record<State, unknown> = { old: OLD2, new: NEW2, absent: undefined }
// FORMAT.md §7, version 2: the mark H, the floor F, the boot id, wall and monotonic times.
const CLOCK = /^konserve-clock 2 (\d+) (\d+) ([0-9a-f-]+) (\d+) (\d+)\n$/

/** The one of `states` whose value `v` is, or undefined. */
const which = (values: Record<State, unknown>, states: State[], v: unknown) => states.find((s) => isDeepStrictEqual(values[s], v))

for (const impl of IMPLS) {
  for (const [fault, forms] of faults) {
    if (fault.impls && !fault.impls.includes(impl)) continue
    for (const form of forms) {
      const name = `${impl}: ${fault.op} (${form}) with ${fault.title} -> ${fault.code ?? 'a KonserveError'}`
      test(name, async (t) => {
        if (!straceVersion) {
          t.fail('strace is not installed (Debian: apt-get install strace; .ci/run installs it)')
          return
        }
        const dir = join(tempDir('konserve-fault-'), 'store')
        const { ready, report, injected } = await runWithFault(t, dir, impl, fault, form)
        t.is(ready.impl, impl, 'the child runs the implementation under test')

        // strace failed exactly one call, the one we aimed at. (strace counts
        // `when=` per thread: a second INJECTED line means another thread
        // reached the same path later, such as a write a poisoned store should
        // have refused.)
        t.is(injected.length, 1, 'exactly one system call failed')
        const names = fault.syscalls.map((s) => s.replace(/^\?/, ''))
        const m = /^\d+\s+(\w+)\((.*)$/.exec(injected[0] ?? '')
        t.true(m !== null && names.includes(m[1]!), `the failed call is one of ${names}`)
        const { mark } = aim(ready, fault.target)
        t.true(injected[0]?.includes(mark), `the failed call was on ${mark}`)
        t.true(injected[0]?.includes(`-1 ${fault.errno}`), `it failed with ${fault.errno}`)
        if (fault.shows) t.regex(injected[0] ?? '', fault.shows)

        // The caller was told, with a typed error, in the form it called.
        const { first } = report
        t.false(first.ok, 'the write failed')
        t.true(first.isKonserveError, `a KonserveError: ${first.name} ${first.message}`)
        if (fault.code) t.is(first.code, fault.code, first.message)
        else {
          t.regex(first.code ?? '', /^ERR_[A-Z_]+$/, first.message)
          t.log(`${impl} ${form}: ${fault.errno} on the clock gave ${first.code}: ${first.message}`)
        }
        t.is(first.how, form === 'sync' ? 'threw' : 'rejected')
        t.truthy(first.message)
        if (fault.op === 'clock') t.is(first.key, 'victim', 'the error names the key')

        // What the store holds, seen by the same process right after the error.
        t.deepEqual(report.stagingAfter, [], 'no staging file left behind')
        t.true(report.readBack.ok, `the key reads without error: ${report.readBack.message}`)
        const held = which(VALUES, fault.after, report.readBack.value)
        t.truthy(held, `victim holds one of ${fault.after}, whole`)
        let held2: State | undefined
        if (fault.after2) {
          t.true(report.readBack2?.ok, `victim2 reads without error: ${report.readBack2?.message}`)
          held2 = which(VALUES2, fault.after2, report.readBack2?.value)
          t.truthy(held2, `victim2 holds one of ${fault.after2}, whole`)
        }
        t.regex(report.clockText, CLOCK, 'the clock file holds a readable watermark')

        // Poisoned after a failed fsync; otherwise the store still takes writes.
        if (fault.poisons === true) {
          t.false(report.followUp.ok)
          t.is(report.followUp.code, 'ERR_STORE_POISONED', report.followUp.message)
        } else if (fault.poisons === false) {
          t.true(report.followUp.ok, `a later write succeeds: ${report.followUp.code} ${report.followUp.message}`)
        } else {
          t.true(report.followUp.ok || report.followUp.code === 'ERR_STORE_POISONED', `a later write succeeds or is refused: ${report.followUp.code}`)
          t.log(`${impl} ${form}: after the fault a later write ${report.followUp.ok ? 'succeeds' : `is refused (${report.followUp.code})`}`)
        }

        // A new process (this one) opens the store without faults.
        const store = k.connectFsStore(dir, { ...sync, native: impl === 'native' })
        t.deepEqual(k.get(store, 'victim', sync), VALUES[held ?? 'old'], `after reopening, victim holds the ${held} value`)
        if (fault.after2) t.deepEqual(k.get(store, 'victim2', sync), VALUES2[held2 ?? 'old'], `after reopening, victim2 holds the ${held2} value`)
        t.deepEqual(
          readdirSync(dir).filter((n) => n.endsWith('.stage')),
          [],
          'no staging file after reopening',
        )
        const corrupt: string[] = []
        const listed = k.keys(store, { ...sync, onCorrupt: (e: k.KonserveError) => corrupt.push(`${e.code} ${e.file}`) })
        t.deepEqual(corrupt, [], 'keys() finds nothing corrupt')
        const want = [...(held === 'absent' ? [] : ['victim']), ...(fault.after2 ? ['victim2'] : []), ...(report.followUp.ok ? ['other'] : [])].sort()
        t.deepEqual(listed.map((m: k.Metadata) => m.key as string).sort(), want)
        // The reopened store is not poisoned: it writes and reads back, and
        // its stamps are not behind the victim's.
        const before = k.getMeta(store, 'victim', sync)?.lastWrite?.getTime() ?? 0
        k.assoc(store, 'victim', 'after', sync)
        t.is(k.get(store, 'victim', sync), 'after')
        t.true(k.getMeta(store, 'victim', sync)!.lastWrite.getTime() >= before, 'lastWrite did not go back')
      })
    }
  }
}

// Found by crash-kill.spec.ts under an old protocol: a pure writer killed
// between creating its lock file (O_EXCL) and writing its pid into it left an
// empty lock file that wedged the key forever. An empty (partial) lock file is
// now taken over once PARTIAL_STALE (5 s) old (FORMAT.md §6), and the lock is
// taken by exactly that create-then-write (issues 17, 18). Here strace kills
// the writer at the write of its lock record; a new process of either kind
// must then update the key, after at most that wait.
for (const nextImpl of ['native', 'pure'] as const) {
test(`pure: a writer killed at the write of its lock record blocks the key only until the empty file is stale (next: ${nextImpl})`, async (t) => {
  if (!straceVersion) {
    t.fail('strace is not installed (Debian: apt-get install strace; .ci/run installs it)')
    return
  }
  const dir = join(tempDir('konserve-fault-'), 'store')
  const env = { ...process.env, KONSERVE_NATIVE: '0' }
  const child = spawn(process.execPath, [CHILD, dir, 'updateIn', 'sync'], { stdio: ['pipe', 'pipe', 'pipe'], env })
  let childErr = ''
  child.stderr.setEncoding('utf8').on('data', (d: string) => (childErr += d))
  const next = lineReader(child)
  const ready = (await next()) as Ready | undefined
  if (!ready) throw new Error(`the child failed before it was ready: ${childErr}`)
  t.is(ready.impl, 'pure')
  const logFile = join(tempDir('konserve-strace-'), 'strace.log')
  const syscalls = ['write', '?pwrite64', '?writev', '?pwritev']
  let strace: ChildProcess | undefined
  try {
    strace = (await injectFault({ pid: ready.pid, syscalls, inject: 'signal=KILL:when=1', paths: [ready.lockFile], log: logFile })).strace
    child.stdin.end('go\n')
    await closed(child)
    await closed(strace)
  } finally {
    child.kill('SIGKILL')
    strace?.kill('SIGKILL')
  }
  t.is(child.signalCode, 'SIGKILL', 'the writer was killed at the write of its lock record')
  t.true(existsSync(ready.lockFile), 'it left its lock file')
  t.is(statSync(ready.lockFile).size, 0, 'empty: the known cost of the exclusive create first')
  // A new process updates the key. It must finish; 20 s is far beyond any wait for a lock no one holds.
  const script = `import * as k from ${JSON.stringify(new URL('../dist/index.mjs', import.meta.url).pathname)}
const s = k.connectFsStore(${JSON.stringify(dir)}, { sync: true, native: ${nextImpl === 'native'} })
process.stdout.write(JSON.stringify(k.updateIn(s, ['victim', 'n'], (n) => [...n, 5], { sync: true })[1]))`
  const next2 = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  next2.stdout.setEncoding('utf8').on('data', (d: string) => (out += d))
  const deadline = setTimeout(() => next2.kill('SIGKILL'), 20_000)
  const code = await closed(next2)
  clearTimeout(deadline)
  t.is(code, 0, 'the update finished')
  // updateIn returns the whole top-level value: the victim's document with n updated.
  t.deepEqual(out === '' ? undefined : JSON.parse(out).n, [1, 2, 3, 5])
})
}
