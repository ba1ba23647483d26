/** The `konserve` command, as a user runs it. */
import test from 'ava'
import { execFile, spawn, spawnSync } from 'node:child_process'
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import * as k from 'konserve'
import { tempDir } from './helpers/api.js'

const run = promisify(execFile)
const cli = new URL('../dist/cli.js', import.meta.url).pathname

async function konserve(cwd: string, ...args: string[]) {
  try {
    const { stdout, stderr } = await run(process.execPath, [cli, ...args], { cwd })
    return { code: 0, stdout, stderr }
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string }
    return { code: e.code, stdout: e.stdout, stderr: e.stderr }
  }
}

test('put, get, exists, keys, del on ./konserve-data', async (t) => {
  const cwd = tempDir()
  t.is((await konserve(cwd, 'put', 'greeting', '"hello"')).code, 0)
  t.true(existsSync(join(cwd, 'konserve-data')))
  t.is((await konserve(cwd, 'get', 'greeting')).stdout.trim(), '"hello"')
  await konserve(cwd, 'put', 'user', '{"name":"ana","tags":["a"]}')
  t.deepEqual(JSON.parse((await konserve(cwd, 'get', 'user')).stdout), { name: 'ana', tags: ['a'] })
  await konserve(cwd, 'put', 'plain', 'not json')
  t.is((await konserve(cwd, 'get', 'plain')).stdout.trim(), '"not json"')
  t.is((await konserve(cwd, 'exists', 'user')).stdout.trim(), 'true')
  const listed = (await konserve(cwd, 'keys')).stdout.trim().split('\n').map((l) => JSON.parse(l))
  t.deepEqual(listed.map((m) => m.key).sort(), ['greeting', 'plain', 'user'])
  t.is((await konserve(cwd, 'del', 'user')).stdout.trim(), 'true')
  t.is((await konserve(cwd, 'del', 'user')).stdout.trim(), 'false')
  const missing = await konserve(cwd, 'get', 'user')
  t.is(missing.code, 1)
  t.regex(missing.stderr, /not found/)
})

test('--json-key, --dir and errors', async (t) => {
  const cwd = tempDir()
  await konserve(cwd, '--dir', 'other', '--json-key', 'put', '["user",42]', '7')
  t.is((await konserve(cwd, '--dir', 'other', '--json-key', 'get', '["user",42]')).stdout.trim(), '7')
  t.is((await konserve(cwd, '--dir', 'other', 'get', '["user",42]')).code, 1, 'without --json-key it is a string key')
  const bad = await konserve(cwd, 'frobnicate')
  t.is(bad.code, 2)
  t.regex(bad.stderr, /unknown command/)
  const usage = await konserve(cwd, 'put', 'only-key')
  t.is(usage.code, 2)
  t.regex(usage.stderr, /ERR_INVALID_ARGUMENT/)
})

/** Runs the command with `input` on stdin and stdout sent to `stdout` (a pipe unless an fd is given). */
function konserveWith(cwd: string, args: string[], opts: { input?: string | Buffer; stdout?: number } = {}) {
  const r = spawnSync(process.execPath, [cli, ...args], {
    cwd,
    input: opts.input,
    stdio: ['pipe', opts.stdout ?? 'pipe', 'pipe'],
    encoding: 'utf8',
  })
  return { code: r.status, signal: r.signal, stdout: r.stdout ?? '', stderr: r.stderr ?? '' }
}

test('integers beyond 2^53 are stored and printed exactly (issue #12.7)', async (t) => {
  const cwd = tempDir()
  t.is((await konserve(cwd, 'put', 'id', '12345678901234567890')).code, 0)
  t.is((await konserve(cwd, 'get', 'id')).stdout.trim(), '12345678901234567890')
  await konserve(cwd, 'put', 'doc', '{"big":-123456789012345678901234567890,"safe":9007199254740991,"f":1.5,"list":[18446744073709551615]}')
  t.is((await konserve(cwd, 'get', 'doc')).stdout.trim(), '{"big":-123456789012345678901234567890,"safe":9007199254740991,"f":1.5,"list":[18446744073709551615]}')
  // Through the API: a BigInt where the number is beyond 2^53, a number where it is safe.
  const s = await k.connectFsStore(join(cwd, 'konserve-data'))
  t.is(await k.get(s, 'id'), 12345678901234567890n)
  t.deepEqual(await k.get(s, 'doc'), { big: -123456789012345678901234567890n, safe: 9007199254740991, f: 1.5, list: [18446744073709551615n] })
})

test('put KEY - reads the value from stdin: JSON if it parses, else the string (issue #12.7)', (t) => {
  const cwd = tempDir()
  t.is(konserveWith(cwd, ['put', 'k', '-'], { input: 'x\n' }).code, 0)
  t.is(konserveWith(cwd, ['get', 'k']).stdout, '"x"\n', 'echo x | konserve put k - stores "x", not "-"')
  konserveWith(cwd, ['put', 'j', '-'], { input: '{"n": 98765432109876543210, "s": "multi\\nline"}\n' })
  t.is(konserveWith(cwd, ['get', 'j']).stdout, '{"n":98765432109876543210,"s":"multi\\nline"}\n')
  konserveWith(cwd, ['put', 'text', '-'], { input: 'two\nlines\n' })
  t.is(konserveWith(cwd, ['get', 'text']).stdout, '"two\\nlines"\n')
  const bytes = Buffer.from([0, 1, 2, 255, 10])
  t.is(konserveWith(cwd, ['put-file', 'f', '-'], { input: bytes }).code, 0)
  t.deepEqual(JSON.parse(konserveWith(cwd, ['get', 'f']).stdout), { bytes: 5, base64: bytes.toString('base64') })
})

test('output that cannot be written exits non-zero with a message (issue #23.7)', (t) => {
  const cwd = tempDir()
  t.is(konserveWith(cwd, ['put', 'k', '"some value"']).code, 0)
  for (const args of [['get', 'k'], ['keys'], ['exists', 'k'], ['--version']]) {
    const full = openSync('/dev/full', 'w')
    try {
      const r = konserveWith(cwd, args, { stdout: full })
      t.is(r.code, 3, `${args.join(' ')} > /dev/full`)
      t.regex(r.stderr, /cannot write the output: ENOSPC/)
    } finally {
      closeSync(full)
    }
  }
})

test('read commands create nothing: a missing store directory is an error, and is not created (issue #23.7)', (t) => {
  const cwd = tempDir()
  for (const args of [['keys'], ['get', 'x'], ['exists', 'x']]) {
    for (const dir of [[], ['--dir', 'nested/missing']]) {
      const r = konserveWith(cwd, [...dir, ...args])
      t.is(r.code, 1, `${[...dir, ...args].join(' ')}`)
      t.regex(r.stderr, /no store at .* \(the directory does not exist\)/)
      t.is(r.stdout, '')
    }
  }
  t.deepEqual(readdirSync(cwd), [], 'nothing was created')
  const unknown = konserveWith(cwd, ['frobnicate'])
  t.is(unknown.code, 2)
  t.deepEqual(readdirSync(cwd), [], 'an unknown command creates nothing either')
})

test('create: false opens an existing store and refuses a missing directory, for both implementations', async (t) => {
  for (const native of [true, false]) {
    const dir = join(tempDir(), 'a', 'b')
    const err = (await t.throwsAsync(k.connectFsStore(dir, { native, create: false }))) as k.KonserveError
    t.is(err.code, 'ERR_IO')
    t.is((err.cause as NodeJS.ErrnoException).code, 'ENOENT')
    t.throws(() => k.connectFsStore(dir, { native, create: false, sync: true }), { code: 'ERR_IO', message: /does not exist/ } as any)
    t.false(existsSync(join(dir, '..')), 'not even the parent was created')
    await k.assoc(await k.connectFsStore(dir, { native }), 'k', 1)
    t.is(await k.get(await k.connectFsStore(dir, { native, create: false }), 'k'), 1)
  }
})

test('--version prints the package version', (t) => {
  const cwd = tempDir()
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }
  for (const flag of ['--version', '-v']) {
    const r = konserveWith(cwd, [flag])
    t.is(r.code, 0)
    t.is(r.stdout, `${pkg.version}\n`)
  }
  t.deepEqual(readdirSync(cwd), [])
})

test('a damaged blob read to stdout (cat, get-file -, export -) fails ERR_CORRUPT naming its file, not ERR_OUTPUT', async (t) => {
  // A first version reported a read's error as an output error: pipeline destroys stdout with it.
  const cwd = tempDir()
  const dir = join(cwd, 'konserve-data')
  const s = (await k.connectFsStore(dir)) as k.Store
  await k.bassoc(s, 'b', Buffer.alloc(3_000_000, 7))
  await k.close(s)
  const [file] = readdirSync(dir).filter((n) => n.endsWith('.ksv'))
  const bytes = readFileSync(join(dir, file!))
  bytes[2_000_000]! ^= 1
  writeFileSync(join(dir, file!), bytes)
  for (const args of [['cat', 'b'], ['get-file', 'b', '-'], ['export', '-']]) {
    const devNull = openSync('/dev/null', 'w')
    const r = konserveWith(cwd, ['--json', ...args], { stdout: devNull })
    closeSync(devNull)
    t.is(r.code, 3, args.join(' '))
    const e = JSON.parse(r.stderr.trim().split('\n').pop()!).error
    t.is(e.code, 'ERR_CORRUPT', `${args.join(' ')}: ${r.stderr}`)
    t.is(e.file, join(dir, file!))
  }
})

test('JSON that cannot be stored as written is a usage error, never a string: a number out of range, a duplicated key; update-in from stdin takes JSON only', async (t) => {
  const cwd = tempDir()
  for (const text of ['1e400', '-1e400', '[1e999]', '{"a":1,"a":2}']) {
    const r = await konserve(cwd, 'put', 'k', text)
    t.is(r.code, 2, text)
    t.regex(r.stderr, /ERR_INVALID_ARGUMENT/)
  }
  t.is((await konserve(cwd, 'get', 'k')).code, 1, 'nothing stored')
  t.is((await konserve(cwd, '--json-key', 'put', '1e400', '1')).code, 2, 'nor as a key')
  t.is(konserveWith(cwd, ['update-in', 'm', 'a', '-'], { input: 'hello\n' }).code, 2, 'a bare word on stdin is not JSON')
  t.is(konserveWith(cwd, ['update-in', 'm', 'a', '-'], { input: '"hello"\n' }).code, 0)
  t.is((await konserve(cwd, 'get', 'm')).stdout.trim(), '{"a":"hello"}')
  t.is((await konserve(cwd, 'put', 'text', 'not json at all')).stdout, '', 'text that is not JSON is still a string')
  t.is((await konserve(cwd, 'get', 'text')).stdout.trim(), '"not json at all"')
})

test('a field named __proto__ is printed as a field', async (t) => {
  const cwd = tempDir()
  const s = (await k.connectFsStore(join(cwd, 'konserve-data'), { serializer: 'json' })) as k.Store
  await k.assoc(s, 'obj', JSON.parse('{"__proto__":{"x":1},"y":2}'))
  await k.close(s)
  t.is((await konserve(cwd, 'get', 'obj')).stdout.trim(), '{"__proto__":{"x":1},"y":2}')
})

test('get-file interrupted (SIGINT) leaves neither PATH nor its temporary file', async (t) => {
  // A first version left the hidden temporary file, a partial copy (of an encrypted store: in plaintext).
  const cwd = tempDir()
  const s = (await k.connectFsStore(join(cwd, 'konserve-data'), { durable: false })) as k.Store
  const piece = Buffer.alloc(1 << 20, 3)
  await k.bassoc(
    s,
    'big',
    (async function* () {
      for (let i = 0; i < 400; i++) yield piece
    })(),
  )
  await k.close(s)
  const out = join(cwd, 'out')
  mkdirSync(out)
  const child = spawn(process.execPath, [cli, '--no-progress', '--no-sync', 'get-file', 'big', join(out, 'copy')], { cwd, stdio: 'ignore' })
  const started = Date.now()
  while (!readdirSync(out).some((n) => n.endsWith('.tmp')) && Date.now() - started < 20_000) await new Promise((r) => setTimeout(r, 2))
  t.true(readdirSync(out).some((n) => n.endsWith('.tmp')), 'the copy began')
  child.kill('SIGINT')
  const [code, signal] = await new Promise<[number | null, string | null]>((r) => child.on('exit', (c, sg) => r([c, sg])))
  t.true(signal === 'SIGINT' || code === 130, `ended by the signal (${code}, ${signal})`)
  t.deepEqual(readdirSync(out), [], 'nothing left')
})
