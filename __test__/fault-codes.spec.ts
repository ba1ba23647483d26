/**
 * One fault, one code (docs/RELIABILITY.md "One fault, one code"; issues #22
 * item 3, #23 item 5): each errno maps to one documented `err.code` in the
 * native core and in the pure TypeScript store alike, wherever it happens
 * (open of a key file, rename over it, unlink, the clock file, the directory
 * fsync). Faults are real system-call failures injected by strace into a
 * child (fixtures/fault-codes-child.mjs), attached after the store is open
 * and aimed by path (`-P`), as in faults.spec.ts. (chmod does not bite as
 * root, so permissions are injected too.)
 */
import test, { type ExecutionContext } from 'ava'
import { type ChildProcessWithoutNullStreams, spawn, spawnSync } from 'node:child_process'
import { readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import * as k from 'konserve'
import { tempDir } from './helpers/api.js'

const here = import.meta.dirname ?? new URL('.', import.meta.url).pathname
const CHILD = join(here, 'fixtures', 'fault-codes-child.mjs')
const hasStrace = !spawnSync('strace', ['-V']).error

/** The table, as docs/RELIABILITY.md states it. */
const TABLE: Array<[string, string]> = [
  ['EACCES', 'ERR_PERMISSION'],
  ['EPERM', 'ERR_PERMISSION'],
  ['EROFS', 'ERR_READ_ONLY'],
  ['ENOSPC', 'ERR_NO_SPACE'],
  ['EDQUOT', 'ERR_NO_SPACE'],
  ['EMFILE', 'ERR_TOO_MANY_FILES'],
  ['ENFILE', 'ERR_TOO_MANY_FILES'],
  ['ENOTDIR', 'ERR_NOT_A_DIRECTORY'],
  ['ELOOP', 'ERR_NOT_A_FILE'],
  ['EISDIR', 'ERR_NOT_A_FILE'],
  ['EIO', 'ERR_IO'],
]

interface Ready {
  pid: number
  dir: string
  keyFile: string
  clockFile: string
  staging: string[]
  clockStaging: string[]
}
interface Result {
  op: string
  ok: boolean
  code?: string
  isKonserveError?: boolean
  file?: string
  message?: string
  value?: unknown
}

function lineReader(child: ChildProcessWithoutNullStreams) {
  const lines: string[] = []
  const waiters: Array<(v: string | undefined) => void> = []
  let buffered = ''
  let done = false
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    buffered += chunk
    let nl
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl)
      buffered = buffered.slice(nl + 1)
      const w = waiters.shift()
      if (w) w(line)
      else lines.push(line)
    }
  })
  child.once('close', () => {
    done = true
    for (const w of waiters.splice(0)) w(undefined)
  })
  return () => new Promise<string | undefined>((resolve) => (lines.length > 0 ? resolve(lines.shift()) : done ? resolve(undefined) : waiters.push(resolve)))
}

function allTracedBy(pid: number, tracer: number): boolean {
  try {
    const tasks = readdirSync(`/proc/${pid}/task`)
    return tasks.length > 0 && tasks.every((tid) => /^TracerPid:\s*(\d+)$/m.exec(readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'))?.[1] === String(tracer))
  } catch {
    return false
  }
}

const closed = (p: { exitCode: number | null; signalCode: NodeJS.Signals | null; once: (e: 'close', f: () => void) => unknown }) =>
  new Promise<void>((resolve) => (p.exitCode !== null || p.signalCode !== null ? resolve() : p.once('close', () => resolve())))

interface Injection {
  syscalls: string[]
  errno: string
  /** Which paths of the child's the calls must be on. */
  on: (r: Ready) => string[]
  /** Fail only the first matching call (else every one). */
  once?: boolean
}

/** Runs the child's `ops` with `fault` injected; returns each op's result and strace's INJECTED lines. */
async function withFault(impl: string, ops: string[], fault: Injection, env: Record<string, string> = {}) {
  const dir = join(tempDir('konserve-codes-'), 'store')
  const child = spawn(process.execPath, [CHILD, dir, impl, ...ops], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } })
  let childErr = ''
  child.stderr.setEncoding('utf8').on('data', (d: string) => (childErr += d))
  const next = lineReader(child)
  const first = await next()
  if (!first) throw new Error(`the child failed before it was ready: ${childErr}`)
  const ready = JSON.parse(first) as Ready
  const log = join(tempDir('konserve-strace-'), 'strace.log')
  const set = fault.syscalls.join(',')
  const args = ['-f', '-y', '-o', log, '-e', `trace=${set}`, '-e', `inject=${set}:error=${fault.errno}${fault.once ? ':when=1' : ''}`, ...fault.on(ready).flatMap((p) => ['-P', p]), '-p', String(ready.pid)]
  const strace = spawn('strace', args, { stdio: ['ignore', 'ignore', 'pipe'] })
  let straceErr = ''
  strace.stderr.setEncoding('utf8').on('data', (d: string) => (straceErr += d))
  try {
    for (let waited = 0; !allTracedBy(ready.pid, strace.pid!); waited += 10) {
      if (strace.exitCode !== null || waited > 10_000) throw new Error(`strace did not attach: ${straceErr}`)
      await new Promise((r) => setTimeout(r, 10))
    }
    child.stdin.end('go\n')
    const line = await next()
    await closed(child)
    await closed(strace)
    if (!line) throw new Error(`the child died: ${childErr}`)
    const injected = readFileSync(log, 'utf8').split('\n').filter((l) => l.includes('(INJECTED)'))
    return { ready, results: JSON.parse(line) as Result[], injected }
  } finally {
    child.kill('SIGKILL')
    strace.kill('SIGKILL')
  }
}

const OPEN_CALLS = ['openat', '?openat2', '?open']
const RENAME_CALLS = ['?rename', '?renameat', '?renameat2']
const UNLINK_CALLS = ['?unlink', '?unlinkat']

function needStrace(t: ExecutionContext): boolean {
  if (!hasStrace) t.fail('strace is not installed (Debian: apt-get install strace; .ci/run installs it)')
  return hasStrace
}

for (const impl of ['native', 'pure'] as const) {
  // Every errno of the table, on reads (open of the key file), a write
  // (creation of its staging file) and a delete (unlink): one code each time.
  test(`${impl}: every errno of the table gives its one code on get, getMeta, assoc and dissoc`, async (t) => {
    t.timeout(180_000)
    if (!needStrace(t)) return
    for (const [errno, code] of TABLE) {
      const { ready, results, injected } = await withFault(impl, ['get', 'getMeta', 'assoc', 'dissoc'], {
        syscalls: [...OPEN_CALLS, ...UNLINK_CALLS],
        errno,
        on: (r) => [r.keyFile, ...r.staging],
      })
      t.true(injected.length >= 3, `${errno}: strace failed ${injected.length} calls`)
      for (const r of results) {
        t.false(r.ok, `${errno}: ${r.op} succeeded`)
        t.is(r.code, code, `${errno}: ${r.op}: ${r.message}`)
        t.true(r.isKonserveError, `${errno}: ${r.op} threw a ${String(r.code)} that is not a KonserveError`)
        t.true(r.file === ready.keyFile || ready.staging.includes(r.file!), `${errno}: ${r.op} names the key file or its staging file, not ${r.file}`)
      }
    }
  })

  // The clock file's rewrite (FORMAT.md §7) uses the table too, and no raw
  // Node error escapes a multi-key write.
  for (const [errno, code] of [['EROFS', 'ERR_READ_ONLY'], ['EACCES', 'ERR_PERMISSION'], ['ENOSPC', 'ERR_NO_SPACE']] as const) {
    test(`${impl}: ${errno} on the clock file's rename is ${code} from assoc and multiAssoc, a KonserveError`, async (t) => {
      if (!needStrace(t)) return
      const { ready, results, injected } = await withFault(impl, ['assoc', 'multiAssoc'], { syscalls: RENAME_CALLS, errno, on: (r) => r.clockStaging }, { CLOCK_JUMP: '1' })
      t.true(injected.length >= 2, `strace failed ${injected.length} calls`)
      for (const r of results) {
        t.false(r.ok, `${r.op} succeeded`)
        t.is(r.code, code, `${r.op}: ${r.message}`)
        t.true(r.isKonserveError, `${r.op}: a KonserveError`)
        t.is(r.file, ready.clockFile, r.message)
      }
    })
  }

  // Out of descriptors when the directory is opened for its fsync: the
  // rename happened, the fsync was never attempted, nothing was dropped, so
  // the store is NOT poisoned (before: ERR_FSYNC, then ERR_STORE_POISONED).
  for (const errno of ['EMFILE', 'ENFILE']) {
    test(`${impl}: ${errno} opening the directory for its fsync is ERR_TOO_MANY_FILES and does not poison the store`, async (t) => {
      if (!needStrace(t)) return
      const { results, injected } = await withFault(impl, ['assoc', 'assoc', 'get'], { syscalls: OPEN_CALLS, errno, on: (r) => [r.dir], once: true })
      t.is(injected.length, 1, 'one call failed')
      t.true(injected[0]?.includes('O_DIRECTORY'), injected[0])
      const [first, second, read] = results
      t.false(first!.ok)
      t.is(first!.code, 'ERR_TOO_MANY_FILES', first!.message)
      t.true(second!.ok, `the next write: ${second!.code} ${second!.message}`)
      t.deepEqual(read, { op: 'get', ok: true, value: 'new1' })
    })
  }

  test(`${impl}: a store path that is a regular file, or under one, is ERR_NOT_A_DIRECTORY`, async (t) => {
    const file = join(tempDir(), 'plain')
    writeFileSync(file, 'x')
    for (const path of [file, join(file, 'sub')]) {
      for (const sync of [true, false]) {
        const err = sync
          ? t.throws(() => k.connectFsStore(path, { sync: true, native: impl === 'native' }))
          : await t.throwsAsync(k.connectFsStore(path, { native: impl === 'native' }))
        t.true(err instanceof k.KonserveError)
        t.is((err as k.KonserveError).code, 'ERR_NOT_A_DIRECTORY', `${path} (sync: ${sync}): ${err?.message}`)
      }
    }
  })
}
