/** The document commands of `konserve`: get-in, update-in, meta, append, log, keys filters, help, errors, exit statuses. */
import test from 'ava'
import { tempDir } from './helpers/api.js'
import { konserve } from './helpers/cli.js'

const text = (r: { stdout: Buffer }) => r.stdout.toString()

test('get-in and update-in with paths; integers beyond 2^53 exact', async (t) => {
  const cwd = tempDir()
  await konserve(['put', 'doc', '{"user":{"tags":["a","b"],"id":98765432109876543210}}'], { cwd })
  t.is(text(await konserve(['get-in', 'doc', 'user', 'tags', '1'], { cwd })), '"b"\n')
  t.is(text(await konserve(['get-in', 'doc', 'user', 'id'], { cwd })), '98765432109876543210\n')
  const missing = await konserve(['get-in', 'doc', 'user', 'nope'], { cwd })
  t.is(missing.code, 1)
  t.regex(missing.stderr, /not found: doc user nope/)
  const up = await konserve(['update-in', 'doc', 'user', 'score', '18446744073709551615'], { cwd })
  t.is(up.code, 0, up.stderr)
  t.is(text(await konserve(['get', 'doc'], { cwd })), '{"user":{"tags":["a","b"],"id":98765432109876543210,"score":18446744073709551615}}\n')
  t.is(text(await konserve(['update-in', 'doc', 'user', 'tags', '0', '"z"'], { cwd })), '{"user":{"tags":["z","b"],"id":98765432109876543210,"score":18446744073709551615}}\n')
  const notJson = await konserve(['update-in', 'doc', 'x', 'plain words'], { cwd })
  t.is(notJson.code, 2)
  t.regex(notJson.stderr, /update-in takes a JSON value/)
  t.is((await konserve(['update-in', 'fresh', 'a', '-'], { cwd, input: '{"deep": [1]}\n' })).code, 0)
  t.is(text(await konserve(['get', 'fresh'], { cwd })), '{"a":{"deep":[1]}}\n')
  // --json-key: steps are JSON too.
  await konserve(['--json-key', 'put', '["m",1]', '{"1":"one","x":{"2":"two"}}'], { cwd })
  t.is(text(await konserve(['--json-key', 'get-in', '["m",1]', '"x"', '"2"'], { cwd })), '"two"\n')
})

test('meta, append, log, keys with --prefix and --type', async (t) => {
  const cwd = tempDir()
  await konserve(['put', 'user:1', '"ana"'], { cwd })
  await konserve(['put', 'user:2', '"bo"'], { cwd })
  await konserve(['put', 'other', '1'], { cwd })
  await konserve(['--json-key', 'put', '["user",3]', '3'], { cwd })
  const meta = JSON.parse(text(await konserve(['meta', 'user:1'], { cwd })))
  t.is(meta.key, 'user:1')
  t.is(meta.type, 'value')
  t.is(meta.revision, 1)
  t.false(Number.isNaN(Date.parse(meta.lastWrite)))
  t.is((await konserve(['meta', 'nope'], { cwd })).code, 1)
  t.is(text(await konserve(['append', 'events', '{"n":1}'], { cwd })), '1\n')
  t.is(text(await konserve(['append', 'events', '-'], { cwd, input: '12345678901234567890\n' })), '2\n')
  t.is(text(await konserve(['log', 'events'], { cwd })), '{"n":1}\n12345678901234567890\n')
  t.is((await konserve(['log', 'nope'], { cwd })).code, 1)
  const keysOf = async (...args: string[]) =>
    text(await konserve(['keys', ...args], { cwd }))
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l).key)
      .sort()
  t.deepEqual(await keysOf('--prefix', 'user:'), ['user:1', 'user:2'])
  t.deepEqual(await keysOf('--type', 'append-log'), ['events'])
  t.deepEqual(await keysOf('--json-key', '--prefix', '["user"]'), [['user', 3]])
  t.is((await konserve(['keys', '--type', 'blob'], { cwd })).code, 2)
  t.is(text(await konserve(['del', 'user:2'], { cwd })), 'true\n')
  t.deepEqual(await keysOf('--prefix', 'user'), ['user:1'])
})

test('--help for each command, usage errors (exit 2), --json errors', async (t) => {
  const cwd = tempDir()
  const top = await konserve(['--help'], { cwd })
  t.is(top.code, 0)
  for (const cmd of ['get', 'put', 'get-in', 'update-in', 'meta', 'exists', 'del', 'keys', 'append', 'log', 'put-file', 'cat', 'get-file', 'verify', 'stats', 'gc', 'export', 'import']) {
    t.regex(text(top), new RegExp(`\\n  ${cmd} `), `${cmd} in the usage`)
    const h = await konserve([cmd, '--help'], { cwd })
    t.is(h.code, 0)
    t.regex(text(h), new RegExp(`^usage: konserve \\[options\\] ${cmd}`))
  }
  t.regex(text(await konserve(['gc', '--help'], { cwd })), /--dry-run/)
  t.regex(text(top), /Exit status: 0 done; 1 not found/)
  const wrongOption = await konserve(['get', 'k', '--prefix', 'x'], { cwd })
  t.is(wrongOption.code, 2)
  t.regex(wrongOption.stderr, /get takes no option --prefix/)
  const unknownOption = await konserve(['--frob', 'get', 'k'], { cwd })
  t.is(unknownOption.code, 2)
  t.regex(unknownOption.stderr, /^konserve: ERR_INVALID_ARGUMENT: Unknown option '--frob'/)
  const none = await konserve([], { cwd })
  t.is(none.code, 2)
  const j = await konserve(['--json', 'get', 'missing'], { cwd })
  t.is(j.code, 1)
  t.deepEqual(JSON.parse(j.stderr), { error: { code: 'ERR_NOT_FOUND', message: 'no store at konserve-data (the directory does not exist)' }, exit: 1 })
  await konserve(['put', 'k', '1'], { cwd })
  const badKey = await konserve(['--json', '--json-key', 'get', '{not json'], { cwd })
  t.is(badKey.code, 2)
  t.is(JSON.parse(badKey.stderr).error.code, 'ERR_INVALID_ARGUMENT')
})

test('--meta and --expected-revision: user metadata on writes; a lost compare-and-set exits 4 and writes nothing', async (t) => {
  const cwd = tempDir()
  const meta = async (key: string) => JSON.parse(text(await konserve(['meta', key], { cwd })))
  t.is((await konserve(['put', 'doc', '{"n":1}', '--meta', '{"owner":"ana","tags":["x"]}'], { cwd })).code, 0)
  const m1 = await meta('doc')
  t.is(m1.owner, 'ana')
  t.deepEqual(m1.tags, ['x'])
  t.is(m1.revision, 1)
  // The right revision writes; a stale one exits 4 (ERR_REVISION_MISMATCH) and leaves value and revision as they were.
  t.is((await konserve(['put', 'doc', '{"n":2}', '--expected-revision', '1'], { cwd })).code, 0)
  const stale = await konserve(['--json', 'put', 'doc', '{"n":3}', '--expected-revision', '1'], { cwd })
  t.is(stale.code, 4)
  t.is(JSON.parse(stale.stderr.trim()).error.code, 'ERR_REVISION_MISMATCH')
  t.is(text(await konserve(['get', 'doc'], { cwd })), '{"n":2}\n')
  t.is((await meta('doc')).revision, 2)
  // 0: only if the key does not exist.
  t.is((await konserve(['put', 'doc', '1', '--expected-revision', '0'], { cwd })).code, 4)
  t.is((await konserve(['put', 'new', '1', '--expected-revision', '0'], { cwd })).code, 0)
  // update-in and del take it too.
  t.is((await konserve(['update-in', 'doc', 'n', '5', '--expected-revision', '1'], { cwd })).code, 4)
  t.is(text(await konserve(['update-in', 'doc', 'n', '5', '--expected-revision', '2', '--meta', '{"owner":"bo"}'], { cwd })), '{"n":5}\n')
  t.is((await meta('doc')).owner, 'bo')
  t.is((await konserve(['del', 'doc', '--expected-revision', '2'], { cwd })).code, 4)
  t.is(text(await konserve(['del', 'doc', '--expected-revision', '3'], { cwd })), 'true\n')
  // put-file: metadata on a blob.
  t.is((await konserve(['put-file', 'blob', '-', '--meta', '{"mime":"text/plain"}'], { cwd, input: 'hello' })).code, 0)
  t.is((await meta('blob')).mime, 'text/plain')
  // Bad option values are usage errors (exit 2) that write nothing.
  for (const args of [
    ['put', 'x', '1', '--meta', '[1]'],
    ['put', 'x', '1', '--meta', 'nope'],
    ['put', 'x', '1', '--expected-revision', '-1'],
    ['put', 'x', '1', '--expected-revision', 'two'],
  ]) {
    const r = await konserve(args, { cwd })
    t.is(r.code, 2, args.join(' '))
  }
  t.is((await konserve(['exists', 'x'], { cwd })).stdout.toString(), 'false\n')
  // Only the write commands take them.
  t.is((await konserve(['get', 'new', '--meta', '{}'], { cwd })).code, 2)
})
