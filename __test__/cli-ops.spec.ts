/** `konserve verify`, `stats`, `gc`, `export`/`import`, encryption keys: through the real command. */
import test from 'ava'
import { spawn } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import * as k from 'konserve'
import { tempDir } from './helpers/api.js'
import { cli, konserve, konserveTty } from './helpers/cli.js'

const lines = (b: Buffer) => b.toString().trim().split('\n').filter(Boolean)

test('verify finds a byte flipped in a key file: names the key and its file, exit 1; --json for scripts', async (t) => {
  const cwd = tempDir()
  await konserve(['put', 'good', '{"a":1}'], { cwd })
  await konserve(['put', 'bad', `"${'x'.repeat(200)}"`], { cwd })
  await konserve(['put-file', 'blob', '-'], { cwd, input: Buffer.alloc(3 << 20, 7) })
  await konserve(['append', 'log', '1'], { cwd })
  const clean = await konserve(['verify'], { cwd })
  t.is(clean.code, 0)
  t.regex(clean.stdout.toString(), /verify: 4 keys checked, 0 damaged/)
  const s = await k.connectFsStore(join(cwd, 'konserve-data'))
  const files: Record<string, string> = {}
  for await (const e of k.scanStore(s)) files[e.key as string] = e.file!
  for (const key of ['bad', 'blob']) {
    const bytes = readFileSync(files[key]!)
    bytes[key === 'bad' ? bytes.length - 20 : 2_000_000]! ^= 0x10
    writeFileSync(files[key]!, bytes)
  }
  const r = await konserve(['verify'], { cwd })
  t.is(r.code, 1)
  const out = r.stdout.toString()
  t.regex(out, new RegExp(`DAMAGED "bad" file ${files.bad}: ERR_CORRUPT`))
  t.regex(out, new RegExp(`DAMAGED "blob" file ${files.blob}: ERR_CORRUPT`))
  t.regex(out, /4 keys checked, 2 damaged/)
  const j = await konserve(['verify', '--json'], { cwd })
  t.is(j.code, 1)
  const report = JSON.parse(j.stdout.toString())
  t.is(report.ok, false)
  t.is(report.checked, 4)
  t.deepEqual(report.damaged.map((d: { key: string }) => d.key).sort(), ['bad', 'blob'])
  t.is(report.damaged.find((d: { key: string }) => d.key === 'bad').file, files.bad)
  // On a terminal, a progress bar of keys.
  const tty = await konserveTty(['verify'], { cwd })
  t.regex(tty.stdout.toString(), /verify \[[^\]]*\] 100% \| 4 of 4/)
})

test('stats: keys, bytes, types, codecs, largest keys, implementation', async (t) => {
  const cwd = tempDir()
  await konserve(['put', 'a', '1'], { cwd })
  await konserve(['--lz4', 'put', 'b', `"${'y'.repeat(5000)}"`], { cwd })
  await konserve(['put-file', 'big', '-'], { cwd, input: Buffer.alloc(100_000, 1) })
  await konserve(['append', 'l', '1'], { cwd })
  const r = await konserve(['stats', '--json', '--top', '2'], { cwd })
  t.is(r.code, 0)
  const st = JSON.parse(r.stdout.toString())
  t.is(st.keys, 4)
  t.deepEqual(st.byType, { value: 2, binary: 1, 'append-log': 1 })
  t.deepEqual(st.compressor, { none: 3, lz4: 1 })
  t.deepEqual(st.encryptor, { none: 4 })
  t.is(st.implementation, 'native')
  t.is(st.largest.length, 2)
  t.is(st.largest[0].key, 'big')
  t.is(st.largest[0].type, 'binary')
  t.true(st.bytes > 100_000)
  const human = await konserve(['stats'], { cwd, env: { KONSERVE_NATIVE: '0' } })
  t.regex(human.stdout.toString(), /implementation {2}pure/)
  t.regex(human.stdout.toString(), /keys {12}4/)
  t.is(human.stderr, '', 'no fallback warning')
})

test('sweep({ dryRun: true }) reports the keys it would delete and deletes none', async (t) => {
  for (const s of [await k.newMemStore(), await k.connectFsStore(join(tempDir(), 's'), { native: false })]) {
    await k.assoc(s, 'old', 1)
    await k.assoc(s, 'kept', 2)
    const cutoff = new Date(Date.now() + 60_000)
    t.deepEqual(await k.sweep(s, ['kept'], cutoff, { dryRun: true }), ['old'])
    t.true(await k.exists(s, 'old'))
    t.deepEqual(await k.sweep(s, ['kept'], cutoff), ['old'])
    t.false(await k.exists(s, 'old'))
  }
})

test('gc --older-than --keep --dry-run, then for real', async (t) => {
  const cwd = tempDir()
  for (const key of ['a', 'b', 'c']) await konserve(['put', key, '1'], { cwd })
  writeFileSync(join(cwd, 'keep.txt'), '# keys to keep\nb\n\n')
  // A date far in the future (a mistyped year) would match every key: refused, nothing deleted.
  for (const far of [new Date(Date.now() + 2 * 86_400_000).toISOString(), '2062-01-01']) {
    const ahead = await konserve(['gc', '--older-than', far], { cwd })
    t.is(ahead.code, 2)
    t.regex(ahead.stderr, /is more than a day in the future, so every key would be deleted/)
  }
  t.is((await konserve(['exists', 'a'], { cwd })).stdout.toString(), 'true\n')
  // A duration beyond the calendar is a usage error too.
  t.regex((await konserve(['gc', '--older-than', '99999999999d'], { cwd })).stderr, /--older-than takes a duration/)
  // Up to a day ahead is taken (a store's clock may run ahead of this machine's).
  const future = new Date(Date.now() + 3_600_000).toISOString()
  const dry = await konserve(['gc', '--older-than', future, '--keep', 'keep.txt', '--dry-run'], { cwd })
  t.is(dry.code, 0, dry.stderr)
  t.deepEqual(lines(dry.stdout).map((l) => JSON.parse(l)).sort(), ['a', 'c'])
  t.regex(dry.stderr, /2 keys would be deleted \(dry run: nothing deleted\)/)
  t.is((await konserve(['exists', 'a'], { cwd })).stdout.toString(), 'true\n')
  // 7 days: nothing is that old.
  t.deepEqual(lines((await konserve(['gc', '--older-than', '7d'], { cwd })).stdout), [])
  const real = await konserve(['gc', '--older-than', '0s', '--keep', 'keep.txt', '--json'], { cwd })
  const report = JSON.parse(real.stdout.toString())
  t.deepEqual(report.deleted.sort(), ['a', 'c'])
  t.false(report.dryRun)
  t.deepEqual(lines((await konserve(['keys'], { cwd })).stdout).map((l) => JSON.parse(l).key), ['b'])
  const bad = await konserve(['gc', '--older-than', 'soon'], { cwd })
  t.is(bad.code, 2)
  // A day that is not on the calendar is refused, not read as the next month's (Date reads 2024-02-30 as March 1).
  for (const day of ['2024-02-30', '2023-02-29', '2024-13-01', '2024-04-31T12:00:00Z']) {
    t.is((await konserve(['gc', '--older-than', day, '--dry-run'], { cwd })).code, 2, day)
  }
  t.is((await konserve(['gc', '--older-than', '2024-02-29', '--dry-run'], { cwd })).code, 0, 'a leap day is a day')
  t.is((await konserve(['gc', '--older-than', '2024-03-01T00:30:00+02:00', '--dry-run'], { cwd })).code, 0, 'an offset that moves the UTC day back')
  t.is((await konserve(['gc'], { cwd })).code, 2, 'gc without --older-than is refused')
})

test('export | import through pipes and files, with encryption and compression on either side', async (t) => {
  const cwd = tempDir()
  const enc = { KONSERVE_KEY: 'first secret' }
  await konserve(['--dir', 'a', '--lz4', 'put', 'doc', '{"n":12345678901234567890}'], { cwd, env: enc })
  await konserve(['--dir', 'a', 'put-file', 'blob', '-'], { cwd, env: enc, input: Buffer.alloc(2_500_000, 3) })
  await konserve(['--dir', 'a', 'append', 'log', '"x"'], { cwd, env: enc })
  const exp = await konserve(['--dir', 'a', 'export'], { cwd, env: enc })
  t.is(exp.code, 0, exp.stderr)
  t.is(exp.stdout.subarray(0, 8).toString(), 'KSVARCHV')
  // Into a plaintext store from stdin, and into another key's store from a file.
  const imp = await konserve(['--dir', 'b', 'import', '-'], { cwd, input: exp.stdout })
  t.is(imp.code, 0, imp.stderr)
  t.deepEqual(JSON.parse(imp.stdout.toString()), { keys: 3, values: 1, blobs: 1, logs: 1, records: 1, bytes: JSON.parse(imp.stdout.toString()).bytes })
  t.is((await konserve(['--dir', 'b', 'get', 'doc'], { cwd })).stdout.toString(), '{"n":12345678901234567890}\n')
  t.is((await konserve(['--dir', 'b', 'export', 'b.archive'], { cwd })).code, 0)
  const other = { OTHER_KEY: 'second secret' }
  t.is((await konserve(['--dir', 'c', '--key-env', 'OTHER_KEY', '--lz4', 'import', 'b.archive'], { cwd, env: other })).code, 0)
  t.true((await konserve(['--dir', 'c', '--key-env', 'OTHER_KEY', 'cat', 'blob'], { cwd, env: other })).stdout.equals(Buffer.alloc(2_500_000, 3)))
  t.is((await konserve(['--dir', 'c', '--key-env', 'OTHER_KEY', 'log', 'log'], { cwd, env: other })).stdout.toString(), '"x"\n')
  // Metadata is kept byte for byte: the same revision and lastWrite.
  const metaA = (await konserve(['--dir', 'a', 'meta', 'doc'], { cwd, env: enc })).stdout.toString()
  t.is((await konserve(['--dir', 'c', '--key-env', 'OTHER_KEY', 'meta', 'doc'], { cwd, env: other })).stdout.toString(), metaA)
  // Piped straight from one command into another.
  const piped = await new Promise<number | null>((resolve) => {
    const from = spawn(process.execPath, [cli, '--dir', 'a', 'export'], { cwd, env: { ...process.env, ...enc } })
    const to = spawn(process.execPath, [cli, '--dir', 'd', 'import'], { cwd, stdio: [from.stdout, 'ignore', 'inherit'] })
    to.on('close', resolve)
  })
  t.is(piped, 0)
  t.is((await konserve(['--dir', 'd', 'get', 'doc'], { cwd })).stdout.toString(), '{"n":12345678901234567890}\n')
  // A damaged archive: exit 3 with ERR_CORRUPT.
  const damaged = Buffer.from(exp.stdout)
  damaged[damaged.length - 30]! ^= 1
  const bad = await konserve(['--dir', 'e', 'import'], { cwd, input: damaged })
  t.is(bad.code, 3)
  t.regex(bad.stderr, /ERR_CORRUPT: the archive is damaged/)
  t.true(existsSync(join(cwd, 'e')), 'the keys read before the damage are imported')
  // Not an archive at all: its header is checked before any store is opened, so none is created.
  const notArchive = await konserve(['--dir', 'f/g/h', 'import'], { cwd, input: Buffer.from('{"not": "an archive"}\n') })
  t.is(notArchive.code, 3)
  t.regex(notArchive.stderr, /ERR_CORRUPT: the archive is damaged or not an archive/)
  t.false(existsSync(join(cwd, 'f')))
  writeFileSync(join(cwd, 'not.ksva'), 'KSVARCHV but not more')
  t.is((await konserve(['--dir', 'f', 'import', 'not.ksva'], { cwd })).code, 3)
  t.false(existsSync(join(cwd, 'f')))
  t.is((await konserve(['--dir', 'd', 'import'], { cwd, input: Buffer.from('nope') })).code, 3)
  t.is((await konserve(['--dir', 'd', 'get', 'doc'], { cwd })).stdout.toString(), '{"n":12345678901234567890}\n')
})

test('encryption keys from the environment or a prompt, never argv', async (t) => {
  const cwd = tempDir()
  const asked = await konserveTty(['--ask-key', 'put', 'k', '42'], { cwd, input: 'typed secret\r' })
  t.is(asked.code, 0, asked.stdout.toString())
  t.regex(asked.stdout.toString(), /encryption key: /)
  t.is((await konserve(['get', 'k'], { cwd, env: { KONSERVE_KEY: 'typed secret' } })).stdout.toString(), '42\n')
  const without = await konserve(['get', 'k'], { cwd, env: { KONSERVE_KEY: undefined } })
  t.is(without.code, 3)
  t.regex(without.stderr, /ERR_DECRYPT: the store is encrypted/)
  const wrong = await konserve(['get', 'k'], { cwd, env: { KONSERVE_KEY: 'wrong' } })
  t.regex(wrong.stderr, /ERR_DECRYPT: wrong encryption key/)
  const unset = await konserve(['--key-env', 'NOPE_NOT_SET', 'get', 'k'], { cwd, env: { NOPE_NOT_SET: undefined } })
  t.is(unset.code, 2)
  t.regex(unset.stderr, /NOPE_NOT_SET is not set/)
  t.is((await konserve(['--key', 'x', 'get', 'k'], { cwd })).code, 2, 'there is no option that takes a key')
  const noTty = await konserve(['--ask-key', 'get', 'k'], { cwd })
  t.is(noTty.code, 2)
})
