// Loaded into every ava worker (package.json "ava.nodeArguments"): the
// worker's temporary files go under one directory of its own, removed when
// the worker exits, so `npm test` leaves nothing behind in the system's temp
// directory (a full run made about 8,000 directories). os.tmpdir() reads
// TMPDIR on every call, and child processes inherit it, so the tests' own
// mkdtempSync(join(tmpdir(), ...)) calls and the servers they start land
// here too. KONSERVE_KEEP_TMP=1 keeps the directory, to look at after a failure.
import { chmodSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const root = mkdtempSync(join(tmpdir(), 'konserve-ava-'))
// Others may pass through, not list: the PostgreSQL tests run the server as
// the postgres user in a directory of its own below this one.
chmodSync(root, 0o711)
process.env.TMPDIR = root
if (!process.env.KONSERVE_KEEP_TMP) {
  process.on('exit', () => {
    try {
      rmSync(root, { recursive: true, force: true, maxRetries: 2 })
    } catch {
      // A file still held by a process that outlived the worker: left behind.
    }
  })
}
