/** The `konserve` command, as a user runs it. */
import test from 'ava'
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
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
