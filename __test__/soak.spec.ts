/**
 * The soak run in CI mode (a minute by default; SOAK_SECONDS to change it):
 * mixed operations at full speed, memory and open files stay flat. The long
 * mode is `node scripts/soak.mjs --seconds 7200`.
 */
import test from 'ava'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'

const run = promisify(execFile)
const script = new URL('../scripts/soak.mjs', import.meta.url).pathname

test('soak: mixed operations at full speed, memory and open files stay flat', async (t) => {
  const { stdout } = await run(process.execPath, [script, '--seconds', process.env.SOAK_SECONDS ?? '60']).catch((err) => {
    t.log(err.stdout, err.stderr)
    throw err
  })
  const result = JSON.parse(stdout)
  t.log(result)
  t.true(result.ops > 10_000, 'it ran at speed')
  t.true(result.flat, 'RSS within 64 MB and open fds within 16 of their post-warm-up levels')
})
