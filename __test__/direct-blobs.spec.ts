/**
 * Large durable blobs written past the page cache (the native core's
 * `O_DIRECT` path, crates/core/src/blob.rs `DIRECT_FROM`; option
 * `directBlobs`): blobs around the 1 MiB threshold and the 4096-byte block
 * read back byte for byte in both engines, lie as plain bytes in their file
 * where `blobFile` says, and the direct path is really taken (strace sees
 * `fcntl(..., O_DIRECT)`) with `directBlobs: true`; not with `false`, not if the store is not
 * durable, or (the default, 'auto') below the volume at which a process
 * starts writing direct. The byte-level proof (files identical to the buffered path's, the
 * fallback, crashes) is in crates/core/tests/blob_direct.rs and crash_blob.rs.
 */
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { openSync, readFileSync, readSync, closeSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { Readable } from 'node:stream'
import { randomFillSync } from 'node:crypto'
import * as k from 'konserve'
import { tempDir } from './helpers/api.js'

const root = join(import.meta.dirname ?? __dirname, '..')
const MiB = 1 << 20
const SIZES = [MiB - 1, MiB + 1, MiB + 4097, 5 * MiB + 13]
const blobOf = (n: number) => randomFillSync(Buffer.allocUnsafe(n))

/** The bytes of `file` from `offset`, `length` of them. */
function fileRange(file: string, offset: number, length: number): Buffer {
  const fd = openSync(file, 'r')
  try {
    const out = Buffer.alloc(length)
    readSync(fd, out, 0, length, offset)
    return out
  } finally {
    closeSync(fd)
  }
}

test('bassoc of large blobs on a durable native store reads back in both engines', async (t) => {
  const dir = tempDir('konserve-direct-')
  try {
    const native = k.connectFsStore(dir, { native: true, sync: true, directBlobs: true })
    const blobs = SIZES.map(blobOf)
    for (const [i, blob] of blobs.entries()) {
      k.bassoc(native, `sync-${i}`, blob, { sync: true })
      // A stream in odd pieces: the direct buffer fills across writes.
      const pieces = Array.from({ length: Math.ceil(blob.length / 700_001) }, (_, j) => blob.subarray(j * 700_001, (j + 1) * 700_001))
      await k.bassoc(native, `stream-${i}`, Readable.from(pieces))
    }
    const pure = k.connectFsStore(dir, { native: false, sync: true })
    for (const store of [native, pure]) {
      const engine = store === native ? 'native' : 'pure'
      for (const [i, blob] of blobs.entries()) {
        for (const key of [`sync-${i}`, `stream-${i}`]) {
          const got = k.bget(store, key, ({ blob }) => Buffer.from(blob!), { sync: true })!
          t.true(got.equals(blob), `${engine} ${key}: ${blob.length} bytes`)
          const tail = await k.readBlob(store, key, { offset: blob.length - 5000, length: 5000 })
          t.true(Buffer.from(tail!).equals(blob.subarray(blob.length - 5000)), `${engine} ${key}: the last 5000 bytes`)
        }
      }
    }
    const where = (await k.blobFile(native, 'stream-3'))!
    t.true(fileRange(where.file, where.offset, where.length).equals(blobs[3]!), 'the file holds the blob as plain bytes')
    k.close(pure, { sync: true })
    k.close(native, { sync: true })
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

/** The fcntl calls of a child process that writes a 3 MiB blob with `options`, as strace saw them. */
function fcntlsOfABlobWrite(options: object): string {
  const dir = tempDir('konserve-direct-strace-')
  try {
    const script = join(dir, 'write.mjs')
    writeFileSync(
      script,
      `import * as k from ${JSON.stringify(pathToFileURL(join(root, 'dist', 'index.mjs')).href)}
const s = await k.connectFsStore(${JSON.stringify(join(dir, 'store'))}, ${JSON.stringify({ native: true, ...options })})
await k.bassoc(s, 'big', Buffer.alloc(3 << 20, 7))
k.bassoc(s, 'big-sync', Buffer.alloc(3 << 20, 8), { sync: true })
await k.close(s)
`,
    )
    const log = join(dir, 'strace.log')
    execFileSync('strace', ['-f', '-e', 'trace=fcntl', '-o', log, process.execPath, script])
    return readFileSync(log, 'utf8')
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

test('large durable blobs are written with O_DIRECT with directBlobs: true; not with false, not durable, or below the volume of auto', (t) => {
  const direct = fcntlsOfABlobWrite({ directBlobs: true })
  t.is(direct.match(/F_SETFL, [^)]*O_DIRECT/g)?.length, 2, 'each blob turns O_DIRECT on once')
  t.false(/F_SETFL, [^)]*O_DIRECT/.test(fcntlsOfABlobWrite({ directBlobs: false })), 'directBlobs: false')
  t.false(/F_SETFL, [^)]*O_DIRECT/.test(fcntlsOfABlobWrite({ durable: false, directBlobs: true })), 'durable: false')
  // The default, 'auto': 6 MiB is far below the volume (1 GiB lately) at which direct writes start
  // (the switch at volume: crates/core/tests/blob_volume.rs).
  t.false(/F_SETFL, [^)]*O_DIRECT/.test(fcntlsOfABlobWrite({})), "directBlobs: 'auto', 6 MiB written")
})

test("directBlobs must be true, false or 'auto'", (t) => {
  const dir = tempDir('konserve-direct-')
  try {
    for (const native of [true, false]) {
      const err = t.throws(() => k.connectFsStore(dir, { native, sync: true, directBlobs: 'yes' as unknown as boolean }))
      t.is((err as k.KonserveError).code, 'ERR_INVALID_ARGUMENT')
      // Accepted by both engines (the pure one's direct path: pure-direct.spec.ts).
      for (const directBlobs of [false, true, 'auto'] as const) k.close(k.connectFsStore(dir, { native, sync: true, directBlobs }), { sync: true })
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})
