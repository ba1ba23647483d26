/** `konserve put-file`, `cat`, `get-file`: blobs streamed both ways in bounded memory, progress on a TTY only. */
import test from 'ava'
import { randomBytes } from 'node:crypto'
import { closeSync, existsSync, openSync, readFileSync, readdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { tempDir } from './helpers/api.js'
import { konserve, konserveTty } from './helpers/cli.js'

test('put-file from a file and from stdin; cat and get-file give the same bytes back', async (t) => {
  const cwd = tempDir()
  const data = randomBytes(3 * 1024 * 1024 + 5)
  writeFileSync(join(cwd, 'in.bin'), data)
  t.is((await konserve(['put-file', 'b', 'in.bin'], { cwd })).code, 0)
  t.is((await konserve(['put-file', 's', '-'], { cwd, input: data })).code, 0)
  for (const key of ['b', 's']) {
    const cat = await konserve(['cat', key], { cwd })
    t.is(cat.code, 0)
    t.true(cat.stdout.equals(data), `cat ${key}`)
    t.is(cat.stderr, '', 'nothing extra when piped')
  }
  t.is((await konserve(['get-file', 'b', 'out.bin'], { cwd })).code, 0)
  t.true(readFileSync(join(cwd, 'out.bin')).equals(data))
  t.true((await konserve(['get-file', 'b', '-'], { cwd })).stdout.equals(data))
  // get prints bytes as base64 JSON, streamed.
  t.deepEqual(JSON.parse((await konserve(['get', 'b'], { cwd })).stdout.toString()), { bytes: data.length, base64: data.toString('base64') })
  // A missing key: exit 1, and get-file creates no file.
  const missing = await konserve(['get-file', 'nope', 'never.bin'], { cwd })
  t.is(missing.code, 1)
  t.regex(missing.stderr, /not found: nope/)
  t.false(existsSync(join(cwd, 'never.bin')))
  t.is((await konserve(['cat', 'nope'], { cwd })).code, 1)
  // A value is not a blob.
  await konserve(['put', 'v', '1'], { cwd })
  const notBlob = await konserve(['cat', 'v'], { cwd })
  t.is(notBlob.code, 3)
  t.regex(notBlob.stderr, /ERR_NOT_BINARY/)
  // A put-file of a missing file fails and writes nothing.
  const noFile = await konserve(['put-file', 'x', 'missing.bin'], { cwd })
  t.is(noFile.code, 3)
  t.regex(noFile.stderr, /ERR_IO: cannot read missing\.bin/)
  t.is((await konserve(['exists', 'x'], { cwd })).stdout.toString(), 'false\n')
  t.deepEqual(readdirSync(cwd).filter((n) => n.endsWith('.tmp')), [], 'no temporary file left')
})

test('a progress bar on a terminal (bytes, rate, ETA), none when piped', async (t) => {
  const cwd = tempDir()
  writeFileSync(join(cwd, 'in.bin'), randomBytes(8 * 1024 * 1024))
  const tty = await konserveTty(['put-file', 'b', 'in.bin'], { cwd })
  t.is(tty.code, 0)
  const shown = tty.stdout.toString()
  t.regex(shown, /put-file \[[^\]]*\] 100% \| 8\.0 MiB of 8\.0 MiB \| [\d.]+ [KMG]?i?B\/s \| ETA/)
  const piped = await konserve(['put-file', 'c', 'in.bin'], { cwd })
  t.is(piped.stderr, '')
  const cat = await konserveTty(['get-file', 'b', 'out.bin'], { cwd })
  t.regex(cat.stdout.toString(), /get-file \[[^\]]*\] 100% \| 8\.0 MiB of 8\.0 MiB/)
  t.is((await konserveTty(['--no-progress', 'get-file', 'b', 'out2.bin'], { cwd })).stdout.toString(), '')
})

// RSS growth of a 1 GiB put-file and cat against the same commands on 1 byte: bounded memory (issue 16: under 100 MB).
// The input is a sparse file (zeros): the test costs disk writes, not reads.
test('put-file and cat of 1 GiB stay in bounded memory (RSS growth under 100 MB)', async (t) => {
  const cwd = tempDir()
  const GiB = 1024 * 1024 * 1024
  closeSync(openSync(join(cwd, 'big.bin'), 'w'))
  truncateSync(join(cwd, 'big.bin'), GiB)
  writeFileSync(join(cwd, 'small.bin'), 'x')
  try {
    const small = await konserve(['--no-sync', 'put-file', 's', 'small.bin'], { cwd, rss: true })
    const big = await konserve(['--no-sync', 'put-file', 'b', 'big.bin'], { cwd, rss: true })
    t.is(big.code, 0, big.stderr)
    const smallCat = await konserve(['cat', 's'], { cwd, rss: true })
    let n = 0
    let nonZero = 0
    const bigCat = await konserve(['cat', 'b'], {
      cwd,
      rss: true,
      onStdout: (p) => {
        n += p.length
        if (p.some((x) => x !== 0)) nonZero++
      },
    })
    t.is(bigCat.code, 0, bigCat.stderr)
    t.is(n, GiB)
    t.is(nonZero, 0)
    const growth = { put: big.maxRss! - small.maxRss!, cat: bigCat.maxRss! - smallCat.maxRss! }
    t.log(`peak RSS (kB): put-file 1 B ${small.maxRss}, 1 GiB ${big.maxRss}; cat 1 B ${smallCat.maxRss}, 1 GiB ${bigCat.maxRss}`)
    t.true(growth.put < 100 * 1024, `put-file grew by ${growth.put} kB`)
    t.true(growth.cat < 100 * 1024, `cat grew by ${growth.cat} kB`)
  } finally {
    rmSync(cwd, { recursive: true, force: true })
  }
})
