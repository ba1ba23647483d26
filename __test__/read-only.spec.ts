/**
 * `connectFsStore(dir, { readOnly: true })`, native and pure (issue 21):
 * every read works; opening creates, sweeps and writes nothing; every write
 * and lock fails with ERR_READ_ONLY naming the directory, and the directory
 * is left exactly as it was (names, sizes, mtimes, inodes). Watched with
 * strace: a read-only open and its reads make no write, no open for writing,
 * no link, unlink, rename or mkdir. A real read-only mount (a read-only bind
 * mount in a user and mount namespace, `unshare -rm`) and a directory this
 * process may not write (as `nobody` when the tests run as root): a writable
 * open fails with a typed error that names `readOnly: true`, a read-only one
 * reads.
 */
import test from 'ava'
import { execFile } from 'node:child_process'
import { chmodSync, mkdirSync, readFileSync, readdirSync, realpathSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import * as k from 'konserve'
import { tempDir } from './helpers/api.js'

const run = promisify(execFile)
const dist = new URL('../dist/index.mjs', import.meta.url).pathname

/** Every entry of `dir` with its size, mtime and inode, and the directory's own. */
function listing(dir: string): Record<string, string> {
  const out: Record<string, string> = {}
  const st = (p: string) => {
    const s = statSync(p, { bigint: true })
    return `${s.size}:${s.mtimeNs}:${s.ino}`
  }
  out['.'] = st(dir)
  for (const name of readdirSync(dir)) out[name] = st(join(dir, name))
  return out
}

const blobBytes = Buffer.alloc(200_000, 7)

/** A store with a value, a blob and a log, closed; plus a dead writer's staging file a writable open would sweep. */
async function makeStore(native: boolean, encryptor?: k.EncryptorOption): Promise<string> {
  const dir = join(tempDir(), 'store')
  const s = await k.connectFsStore(dir, { native, encryptor })
  await k.assoc(s, 'a', { x: { y: 1 } })
  await k.assoc(s, 'b', 2)
  await k.bassoc(s, 'blob', blobBytes)
  await k.append(s, 'log', 'one')
  await k.append(s, 'log', 'two')
  await k.close(s)
  writeFileSync(join(dir, `.${'0'.repeat(32)}.2147483647.0.stage`), 'dead writer')
  return dir
}

for (const native of [true, false]) {
  const impl = native ? 'native' : 'pure'

  test(`${impl}: a read-only store reads everything and refuses every write, the directory unchanged`, async (t) => {
    const dir = await makeStore(native)
    const before = listing(dir)
    const s = await k.connectFsStore(dir, { native, readOnly: true })
    t.is(k.implementation(s), impl)
    t.deepEqual(await k.get(s, 'a'), { x: { y: 1 } })
    t.deepEqual(k.get(s, 'a', { sync: true }), { x: { y: 1 } })
    t.is(await k.getIn(s, ['a', 'x', 'y']), 1)
    t.is((await k.getMeta(s, 'a'))!.key, 'a')
    t.true(await k.exists(s, 'b'))
    t.false(await k.exists(s, 'missing'))
    t.deepEqual((await k.keys(s)).map((m) => m.key).sort(), ['a', 'b', 'blob', 'log'])
    t.true(Buffer.from((await k.readBlob(s, 'blob'))!).equals(blobBytes))
    t.is(await k.bget(s, 'blob', (acc: k.BlobAccess) => acc.size), blobBytes.length)
    t.deepEqual(await k.log(s, 'log'), ['one', 'two'])
    t.is(await k.reduceLog(s, 'log', (n: number) => n + 1, 0), 2)
    t.deepEqual([...(await k.multiGet(s, ['a', 'b'])).values()], [{ x: { y: 1 } }, 2])

    const writes: Array<[string, () => unknown]> = [
      ['assoc', () => k.assoc(s, 'a', 1)],
      ['assoc (new key)', () => k.assoc(s, 'new', 1)],
      ['assoc sync', () => k.assoc(s, 'a', 1, { sync: true })],
      ['assocIn', () => k.assocIn(s, ['a', 'x'], 1)],
      ['updateIn', () => k.updateIn(s, ['a', 'x', 'y'], (v: number) => v + 1)],
      ['update', () => k.update(s, 'b', (v: number) => v + 1)],
      ['dissoc', () => k.dissoc(s, 'a')],
      ['bassoc', () => k.bassoc(s, 'blob2', Buffer.from('x'))],
      ['append', () => k.append(s, 'log', 'three')],
      ['append (new log)', () => k.append(s, 'log2', 'one')],
      ['trimLog', () => k.trimLog(s, 'log', { keepLast: 1 })],
      ['multiAssoc', () => k.multiAssoc(s, new Map<k.Key, unknown>([['a', 1], ['c', 2]]))],
      ['multiDissoc', () => k.multiDissoc(s, ['a', 'b'])],
      ['sweep', () => k.sweep(s, [], new Date(Date.now() + 86_400_000))],
    ]
    for (const [name, call] of writes) {
      const err = await t.throwsAsync(async () => await call(), undefined, name)
      t.is((err as k.KonserveError).code, 'ERR_READ_ONLY', `${name}: ${err?.message}`)
      t.true(err!.message.includes(realpathSync(dir)), `${name} names the directory: ${err?.message}`)
      t.true(err!.message.includes('readOnly'), `${name}: ${err?.message}`)
    }
    // Reads still work after the refusals, and nothing changed.
    t.deepEqual(await k.get(s, 'a'), { x: { y: 1 } })
    await k.close(s)
    t.deepEqual(listing(dir), before)
  })

  test(`${impl}: a read-only open of a keyed store without a key check checks the key and writes none`, async (t) => {
    const dir = await makeStore(native, { type: 'aes', key: 'k1' })
    const check = readdirSync(dir).find((n) => n.includes('keycheck'))
    t.truthy(check, 'the writable open wrote a key check')
    // As if written by a build before key checks: a writable open would adopt the key.
    const { unlinkSync } = await import('node:fs')
    unlinkSync(join(dir, check!))
    const before = listing(dir)
    const s = await k.connectFsStore(dir, { native, readOnly: true, encryptor: { type: 'aes', key: 'k1' } })
    t.deepEqual(await k.get(s, 'a'), { x: { y: 1 } })
    await k.close(s)
    await t.throwsAsync(k.connectFsStore(dir, { native, readOnly: true, encryptor: { type: 'aes', key: 'wrong' } }), { code: 'ERR_DECRYPT' } as any)
    t.deepEqual(listing(dir), before)
  })

  test(`${impl}: a read-only open of a missing directory fails and creates nothing`, async (t) => {
    const dir = join(tempDir(), 'missing', 'store')
    await t.throwsAsync(k.connectFsStore(dir, { native, readOnly: true }), { code: 'ERR_IO' } as any)
    t.throws(() => k.connectFsStore(dir, { native, readOnly: true, sync: true }), { code: 'ERR_IO' } as any)
    t.deepEqual(readdirSync(join(dir, '..', '..')), [])
  })

  test(`${impl}: strace: a read-only open and its reads make no write to the file system`, async (t) => {
    const dir = await makeStore(native)
    const log = join(tempDir(), 'strace.log')
    const script = `import * as k from ${JSON.stringify(dist)}
      const dir = ${JSON.stringify(dir)}
      const s = await k.connectFsStore(dir, { native: ${native}, readOnly: true })
      const got = [await k.get(s, 'a'), k.getIn(s, ['a', 'x', 'y'], undefined, { sync: true }), (await k.keys(s)).length, await k.exists(s, 'b'),
        (await k.readBlob(s, 'blob')).length, await k.log(s, 'log'), await k.reduceLog(s, 'log', (n) => n + 1, 0), (await k.getMeta(s, 'b')).key]
      await k.close(s)
      process.stdout.write(JSON.stringify(got))`
    const { stdout } = await run('strace', [
      '-f',
      '-y',
      '-e',
      'trace=open,openat,openat2,creat,write,pwrite64,writev,pwritev,pwritev2,link,linkat,symlink,symlinkat,unlink,unlinkat,rename,renameat,renameat2,mkdir,mkdirat,rmdir,truncate,ftruncate,fsync,fdatasync',
      '-o',
      log,
      process.execPath,
      '--input-type=module',
      '-e',
      script,
    ])
    t.deepEqual(JSON.parse(stdout), [{ x: { y: 1 } }, 1, 4, true, blobBytes.length, ['one', 'two'], 2, 'b'])
    const lines = readFileSync(log, 'utf8').split('\n')
    const inStore = lines.filter((l) => l.includes(dir))
    t.true(inStore.some((l) => /open(at)?\(/.test(l)), 'the reads were traced')
    const bad = inStore.filter(
      (l) =>
        /\b(creat|link|linkat|symlink|symlinkat|unlink|unlinkat|rename|renameat|renameat2|mkdir|mkdirat|rmdir|truncate|ftruncate|fsync|fdatasync)\(/.test(l) ||
        (/\bopen(at|at2)?\(/.test(l) && /O_WRONLY|O_RDWR|O_CREAT|O_TRUNC/.test(l)) ||
        (/\b(write|pwrite64|writev|pwritev2?)\(\d+</.test(l) && l.includes(`${dir}/`)),
    )
    t.deepEqual(bad, [])
  })

  test(`${impl}: a read-only bind mount: a writable open fails naming readOnly, a read-only one reads`, async (t) => {
    const dir = await makeStore(native)
    const mnt = join(tempDir(), 'ro')
    mkdirSync(mnt)
    const script = `import * as k from ${JSON.stringify(dist)}
      const out = {}
      try { await k.connectFsStore(process.argv[1], { native: ${native} }) ; out.writable = 'opened' } catch (e) { out.writable = { code: e.code, message: e.message } }
      const s = await k.connectFsStore(process.argv[1], { native: ${native}, readOnly: true })
      out.value = await k.get(s, 'a')
      try { await k.assoc(s, 'a', 1) } catch (e) { out.write = e.code }
      process.stdout.write(JSON.stringify(out))`
    const sh = `mount --bind "$1" "$2" && mount -o remount,bind,ro "$2" && exec "$3" --input-type=module -e "$4" "$2"`
    let stdout: string
    try {
      ;({ stdout } = await run('unshare', ['-rm', 'sh', '-c', sh, 'sh', dir, mnt, process.execPath, script]))
    } catch (err) {
      // No user namespaces here: the mount cannot be made without privileges.
      t.log(`unshare -rm failed: ${(err as Error).message}`)
      t.fail('this test needs unprivileged user and mount namespaces (unshare -rm)')
      return
    }
    const out = JSON.parse(stdout)
    t.is(out.writable.code, 'ERR_READ_ONLY', JSON.stringify(out))
    t.regex(out.writable.message, /read-only file system.*readOnly: true/)
    t.deepEqual(out.value, { x: { y: 1 } })
    t.is(out.write, 'ERR_READ_ONLY')
  })

  test(`${impl}: a directory this process may not write: a writable open fails naming readOnly, a read-only one reads`, async (t) => {
    const dir = await makeStore(native)
    // As root, permissions do not apply: run the child as nobody, who may enter the temporary directory.
    const asRoot = process.getuid?.() === 0
    if (asRoot) chmodSync(join(dir, '..'), 0o755)
    for (const name of readdirSync(dir)) chmodSync(join(dir, name), 0o444)
    chmodSync(dir, 0o555)
    const before = listing(dir)
    const script = `import * as k from ${JSON.stringify(dist)}
      const out = {}
      try { await k.connectFsStore(process.argv[1], { native: ${native} }) ; out.writable = 'opened' } catch (e) { out.writable = { code: e.code, message: e.message } }
      const s = await k.connectFsStore(process.argv[1], { native: ${native}, readOnly: true })
      out.value = await k.get(s, 'a')
      process.stdout.write(JSON.stringify(out))`
    const cmd = asRoot ? 'setpriv' : process.execPath
    const args = [...(asRoot ? ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath] : []), '--input-type=module', '-e', script, dir]
    const { stdout } = await run(cmd, args)
    const out = JSON.parse(stdout)
    t.is(out.writable.code, 'ERR_PERMISSION', JSON.stringify(out))
    t.regex(out.writable.message, /cannot be written.*readOnly: true/)
    t.deepEqual(out.value, { x: { y: 1 } })
    t.deepEqual(listing(dir), before)
  })
}

test('the CLI read commands open the store read-only: on a read-only mount they work, the directory unchanged', async (t) => {
  const dir = await makeStore(true)
  const before = listing(dir)
  const mnt = join(tempDir(), 'ro')
  mkdirSync(mnt)
  const cli = new URL('../dist/cli.js', import.meta.url).pathname
  const commands = [['get', 'a'], ['get-in', 'a', 'x'], ['meta', 'a'], ['exists', 'a'], ['keys'], ['log', 'log'], ['cat', 'blob'], ['verify'], ['stats'], ['export', '-'], ['gc', '--older-than', '1d', '--dry-run']]
  // Each command's exit code and first line of stderr, then a write's.
  const sh = `mount --bind "$1" "$2" && mount -o remount,bind,ro "$2" || exit 99
    node="$3"; cli="$4"; shift 4
    while [ $# -gt 0 ]; do cmd="$1"; shift; eval "\\"$node\\" \\"$cli\\" --dir \\"$MNT\\" --no-progress $cmd" >/dev/null 2>/tmp/konserve-ro-err.$$; echo "$cmd => $? $(head -c 300 /tmp/konserve-ro-err.$$ | tr '\\n' ' ')"; done
    rm -f /tmp/konserve-ro-err.$$`
  const cmdLines = [...commands.map((c) => c.join(' ')), 'put a 1']
  const { stdout } = await run('unshare', ['-rm', 'sh', '-c', sh, 'sh', dir, mnt, process.execPath, cli, ...cmdLines], { env: { ...process.env, MNT: mnt, KONSERVE_NATIVE: '1' } })
  const lines = stdout.trim().split('\n')
  t.is(lines.length, cmdLines.length, stdout)
  for (const [i, c] of commands.entries()) t.regex(lines[i]!, new RegExp(`^${c.join(' ')} => 0 `), stdout)
  // A write is refused on the read-only mount, with the way out named.
  t.regex(lines.at(-1)!, /^put a 1 => [1-9]\d* .*ERR_READ_ONLY.*readOnly: true/, stdout)
  t.deepEqual(listing(dir), before)
})

for (const [writer, reader] of [
  [true, false],
  [false, true],
] as const) {
  const name = `${writer ? 'native' : 'pure'} writer, ${reader ? 'native' : 'pure'} read-only reader`
  test(`${name} through a read-only mount: every read whole, never going back`, async (t) => {
    const dir = join(tempDir(), 'store')
    const s = await k.connectFsStore(dir, { native: writer, durable: false })
    const value = (n: number) => ({ n, pad: String(n).repeat((n % 50) * 40) })
    await k.assoc(s, 'v', value(0))
    const mnt = join(tempDir(), 'ro')
    mkdirSync(mnt)
    const N = 300
    const script = `import * as k from ${JSON.stringify(dist)}
      const s = await k.connectFsStore(process.argv[1], { native: ${reader}, readOnly: true })
      let last = -1, reads = 0, seen = new Set()
      for (;;) {
        const done = await k.get(s, 'done')
        const v = await k.get(s, 'v')
        if (v.pad !== String(v.n).repeat((v.n % 50) * 40)) throw new Error('torn value ' + v.n)
        if (v.n < last) throw new Error('went back from ' + last + ' to ' + v.n)
        last = v.n; reads++; seen.add(v.n)
        if (reads === 1) process.stdout.write('ready\\n')
        if (done) break
      }
      process.stdout.write(JSON.stringify({ last, reads, seen: seen.size }) + '\\n')`
    const sh = `mount --bind "$1" "$2" && mount -o remount,bind,ro "$2" && exec "$3" --input-type=module -e "$4" "$2"`
    const { spawn } = await import('node:child_process')
    const child = spawn('unshare', ['-rm', 'sh', '-c', sh, 'sh', dir, mnt, process.execPath, script], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stderr.on('data', (b) => (err += b))
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve))
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (b) => {
        out += b
        if (out.includes('ready\n')) resolve()
      })
      child.on('close', () => reject(new Error(`the reader ended before it was ready: ${out} ${err}`)))
    })
    for (let n = 1; n <= N; n++) await k.assoc(s, 'v', value(n))
    await k.assoc(s, 'done', true)
    await k.close(s)
    t.is(await exited, 0, err)
    const report = JSON.parse(out.split('\n')[1]!)
    t.is(report.last, N, out)
    t.true(report.seen >= 2, out)
    t.log(`${report.reads} reads saw ${report.seen} of ${N + 1} values`)
  })
}
