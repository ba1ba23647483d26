#!/usr/bin/env node
// The S3 store against the raw client doing the same thing: on a SeaweedFS
// `weed server -s3` this script starts on free loopback ports ($KONSERVE_WEED
// or target/go-bin/weed), one S3Client for both (so both pay the same HTTP
// stack), interleaved rounds, medians per operation, our/raw ratios, and the
// requests each operation takes (counted by a client middleware).
//
//   small values (1 KiB)   assoc vs PutObject, get vs GetObject, updateIn
//   blobs (4 MiB)          bassoc vs PutObject, readBlob vs GetObject
//
// What the ratio pays for: the key file's header, checksums and the lease
// lock object (create + delete) per write; a value read is one GET either way.
//
//   npm run build:ts && node bench/s3.mjs [--rounds N]
import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3'

const root = resolve(fileURLToPath(import.meta.url), '../..')
const k = await import(join(root, 'dist/index.mjs'))
const { connectS3Store } = await import(join(root, 'dist/s3.mjs'))
const arg = (name, dflt) => {
  const i = process.argv.indexOf(name)
  return i > 0 ? Number(process.argv[i + 1]) : dflt
}
const ROUNDS = arg('--rounds', 5)
const SMALL_OPS = 20
const BLOB_OPS = 3

const bin = process.env.KONSERVE_WEED ?? join(root, 'target/go-bin/weed')
if (!existsSync(bin)) {
  console.error(`the SeaweedFS binary is missing at ${bin} (set KONSERVE_WEED)`)
  process.exit(1)
}
const listenable = (port) =>
  new Promise((r) => {
    const s = createServer()
    s.once('error', () => r(false))
    s.listen(port, '127.0.0.1', () => s.close(() => r(true)))
  })
const taken = new Set()
async function portPair() {
  for (;;) {
    const p = 20000 + Math.floor(Math.random() * 35000)
    if (taken.has(p) || taken.has(p + 10000)) continue
    if ((await listenable(p)) && (await listenable(p + 10000))) {
      taken.add(p).add(p + 10000)
      return p
    }
  }
}
const dir = mkdtempSync(join(tmpdir(), 'konserve-bench-s3-'))
mkdirSync(join(dir, 'data'))
const access = { accessKeyId: 'bench', secretAccessKey: 'bench-secret' }
writeFileSync(join(dir, 's3.json'), JSON.stringify({ identities: [{ name: 'bench', credentials: [{ accessKey: access.accessKeyId, secretKey: access.secretAccessKey }], actions: ['Admin', 'Read', 'Write', 'List'] }] }))
const [m, v, f, s3] = [await portPair(), await portPair(), await portPair(), await portPair()]
const weed = spawn(
  bin,
  ['server', '-s3', '-dir', join(dir, 'data'), '-ip', '127.0.0.1', '-ip.bind', '127.0.0.1',
    '-master.port', m, '-master.port.grpc', m + 10000, '-volume.port', v, '-volume.port.grpc', v + 10000,
    '-filer.port', f, '-filer.port.grpc', f + 10000, '-s3.port', s3, '-s3.port.grpc', s3 + 10000,
    '-s3.port.iceberg', '0', '-s3.port.lance', '0', '-s3.config', join(dir, 's3.json'),
    '-master.telemetry=false', '-master.volumeSizeLimitMB', '64'].map(String),
  { stdio: 'ignore', cwd: dir },
)
const stop = () => {
  weed.kill('SIGTERM')
  rmSync(dir, { recursive: true, force: true })
}
process.on('exit', () => weed.kill('SIGKILL'))

const client = new S3Client({
  endpoint: `http://127.0.0.1:${s3}`,
  region: 'us-east-1',
  forcePathStyle: true,
  credentials: access,
  requestChecksumCalculation: 'WHEN_REQUIRED',
  responseChecksumValidation: 'WHEN_REQUIRED',
})
let requests = 0
client.middlewareStack.add(
  (next) => (args) => {
    requests++
    return next(args)
  },
  { step: 'finalizeRequest' },
)
const Bucket = 'bench'
for (let t0 = Date.now(); ; ) {
  try {
    await client.send(new CreateBucketCommand({ Bucket }))
    break
  } catch (err) {
    if (Date.now() - t0 > 120_000) throw err
    await new Promise((r) => setTimeout(r, 200))
  }
}

const db = await connectS3Store({ bucket: Bucket, prefix: 'ours', client })
const small = Buffer.alloc(1024, 7)
const blob = Buffer.alloc(4 * 1024 * 1024)
for (let i = 0; i < blob.length; i++) blob[i] = (i * 31) % 251

const scenarios = {
  'put 1 KiB': {
    ops: SMALL_OPS,
    ours: (i) => k.assoc(db, ['v', i], small),
    raw: (i) => client.send(new PutObjectCommand({ Bucket, Key: `raw/v${i}`, Body: small })),
  },
  'get 1 KiB': {
    ops: SMALL_OPS,
    ours: (i) => k.get(db, ['v', i]),
    raw: async (i) => (await client.send(new GetObjectCommand({ Bucket, Key: `raw/v${i}` }))).Body.transformToByteArray(),
  },
  'updateIn (counter)': {
    ops: SMALL_OPS,
    ours: () => k.updateIn(db, ['n'], (x = 0) => x + 1),
    // The raw equivalent: GET, then a conditional PUT (no lock; retried on conflict, never here).
    raw: async () => {
      let etag
      let n = 0
      try {
        const r = await client.send(new GetObjectCommand({ Bucket, Key: 'raw/n' }))
        n = Number(await r.Body.transformToString())
        etag = r.ETag
      } catch {}
      await client.send(new PutObjectCommand({ Bucket, Key: 'raw/n', Body: String(n + 1), ...(etag ? { IfMatch: etag } : { IfNoneMatch: '*' }) }))
    },
  },
  'put 4 MiB blob': {
    ops: BLOB_OPS,
    ours: (i) => k.bassoc(db, ['b', i], blob),
    raw: (i) => client.send(new PutObjectCommand({ Bucket, Key: `raw/b${i}`, Body: blob })),
  },
  'get 4 MiB blob': {
    ops: BLOB_OPS,
    ours: (i) => k.readBlob(db, ['b', i]),
    raw: async (i) => (await client.send(new GetObjectCommand({ Bucket, Key: `raw/b${i}` }))).Body.transformToByteArray(),
  },
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const results = []
for (const [name, s] of Object.entries(scenarios)) {
  const t = { ours: [], raw: [] }
  const req = { ours: 0, raw: 0 }
  for (let round = 0; round < ROUNDS; round++) {
    for (const side of round % 2 ? ['raw', 'ours'] : ['ours', 'raw']) {
      const r0 = requests
      const t0 = performance.now()
      for (let i = 0; i < s.ops; i++) await s[side](i)
      t[side].push((performance.now() - t0) / s.ops)
      req[side] += requests - r0
    }
  }
  const ours = median(t.ours)
  const raw = median(t.raw)
  results.push({
    scenario: name,
    'ours ms/op': ours.toFixed(2),
    'raw ms/op': raw.toFixed(2),
    'ours/raw': (ours / raw).toFixed(2),
    'ours req/op': (req.ours / (ROUNDS * s.ops)).toFixed(2),
    'raw req/op': (req.raw / (ROUNDS * s.ops)).toFixed(2),
  })
}
if ((await k.get(db, 'n')) !== ROUNDS * SMALL_OPS) throw new Error('updateIn counted wrong')
console.log(`SeaweedFS ${bin}, ${ROUNDS} interleaved rounds, medians per operation (node ${process.version})`)
console.table(results)
await k.close(db)
client.destroy()
stop()
