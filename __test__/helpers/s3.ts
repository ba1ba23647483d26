/**
 * Real S3 servers for tests: `startWeed()` starts a SeaweedFS `weed server
 * -s3` (the binary at $KONSERVE_WEED, else <repo>/target/go-bin/weed; a
 * missing binary FAILS the test, it is never skipped) on free loopback ports
 * in a temp directory, with one static access key, and resolves once the S3
 * port answers a real request (the bucket `konserve` is created then). One
 * server per test file; stopped when the file's tests end (SIGTERM, then
 * SIGKILL), or earlier with `stop()`; `restart()` starts it again on the
 * same ports and data.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join, resolve } from 'node:path'
import test from 'ava'
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3'
import { type Store, close } from 'konserve'
import { type Mode, tempDir } from './api.js'

export const ACCESS = { accessKeyId: 'konserve', secretAccessKey: 'konserve-secret' }
export const BUCKET = 'konserve'

export interface WeedServer {
  endpoint: string
  port: number
  dir: string
  proc: ChildProcess
  /** A client of this server (path style, the static key). */
  client(options?: object): S3Client
  /** SIGTERM (SIGKILL after 10 s); resolves when it has exited. */
  stop(): Promise<void>
  /** SIGKILL; resolves when it has exited. */
  kill(): Promise<void>
  /** Starts it again on the same ports and directory. */
  restart(): Promise<void>
}

const running = new Set<ChildProcess>()
process.on('exit', () => {
  for (const p of running) p.kill('SIGKILL')
})

/** The weed binary, or a failure saying where it was looked for. */
export function weedBinary(): string {
  const bin = process.env.KONSERVE_WEED ?? resolve('target/go-bin/weed')
  if (!existsSync(bin)) {
    throw new Error(`the SeaweedFS binary is missing at ${bin}: build it (cd seaweedfs && go build -o ${bin} ./weed) or set KONSERVE_WEED to a weed binary`)
  }
  return bin
}

function listenable(port: number): Promise<boolean> {
  return new Promise((r) => {
    const s = createServer()
    s.once('error', () => r(false))
    s.listen(port, '127.0.0.1', () => s.close(() => r(true)))
  })
}

/** A loopback port free now whose grpc twin (port + 10000) is free too. */
async function freePortPair(taken: Set<number>): Promise<number> {
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 35000)
    if (taken.has(port) || taken.has(port + 10000)) continue
    if ((await listenable(port)) && (await listenable(port + 10000))) {
      taken.add(port)
      taken.add(port + 10000)
      return port
    }
  }
}

export function weedClient(endpoint: string, options: object = {}): S3Client {
  return new S3Client({
    endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: ACCESS,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    ...options,
  })
}

/**
 * Starts `weed server -s3`; resolves once S3 answers (and the bucket `konserve` exists).
 * The ports are free when picked, but another test's server may bind one before weed
 * does (a race no picker can close): weed then exits with "address already in use",
 * and it is started again on new ports, up to 3 times.
 */
export async function startWeed(): Promise<WeedServer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startWeedOnce()
    } catch (err) {
      if (attempt >= 3 || !/address already in use/.test((err as Error).message)) throw err
    }
  }
}

async function startWeedOnce(): Promise<WeedServer> {
  const bin = weedBinary()
  const dir = tempDir('konserve-weed-')
  const config = join(dir, 's3.json')
  writeFileSync(
    config,
    JSON.stringify({ identities: [{ name: 'konserve', credentials: [{ accessKey: ACCESS.accessKeyId, secretKey: ACCESS.secretAccessKey }], actions: ['Admin', 'Read', 'Write', 'List', 'Tagging'] }] }),
  )
  const taken = new Set<number>()
  const [master, volume, filer, s3] = [await freePortPair(taken), await freePortPair(taken), await freePortPair(taken), await freePortPair(taken)]
  const endpoint = `http://127.0.0.1:${s3}`
  const args = [
    'server',
    '-s3',
    '-dir', join(dir, 'data'),
    '-ip', '127.0.0.1',
    '-ip.bind', '127.0.0.1',
    '-master.port', String(master), '-master.port.grpc', String(master + 10000),
    '-volume.port', String(volume), '-volume.port.grpc', String(volume + 10000),
    '-filer.port', String(filer), '-filer.port.grpc', String(filer + 10000),
    '-s3.port', String(s3), '-s3.port.grpc', String(s3 + 10000),
    '-s3.port.iceberg', '0', '-s3.port.lance', '0',
    '-s3.config', config,
    '-master.telemetry=false',
    '-master.volumeSizeLimitMB', '64',
  ]
  const { mkdirSync } = await import('node:fs')
  mkdirSync(join(dir, 'data'), { recursive: true })
  let proc!: ChildProcess
  let exited!: Promise<void>
  const client = weedClient(endpoint, { maxAttempts: 1 })
  const start = async () => {
    proc = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'], cwd: dir })
    running.add(proc)
    let log = ''
    proc.stderr!.on('data', (d: Buffer) => {
      log = (log + d.toString()).slice(-4000)
    })
    const p = proc
    exited = new Promise<void>((r) => p.once('exit', () => (running.delete(p), r())))
    const began = Date.now()
    for (let pause = 20; ; pause = Math.min(pause * 2, 250)) {
      if (p.exitCode !== null || p.signalCode !== null) throw new Error(`weed exited (${p.exitCode ?? p.signalCode}) before it was ready:\n${log}`)
      try {
        await client.send(new CreateBucketCommand({ Bucket: BUCKET }))
        return
      } catch (err) {
        const name = (err as Error).name
        if (name === 'BucketAlreadyOwnedByYou' || name === 'BucketAlreadyExists') return
      }
      if (Date.now() - began > 120_000) throw new Error(`weed did not answer on ${endpoint} within 120 s:\n${log}`)
      await new Promise((r) => setTimeout(r, pause))
    }
  }
  await start()
  const server: WeedServer = {
    endpoint,
    port: s3,
    dir,
    get proc() {
      return proc
    },
    client: (options = {}) => weedClient(endpoint, options),
    async stop() {
      const p = proc
      if (p.exitCode === null && p.signalCode === null) {
        p.kill('SIGTERM')
        const t = setTimeout(() => p.kill('SIGKILL'), 10_000)
        await exited
        clearTimeout(t)
      }
    },
    async kill() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
      await exited
    },
    restart: start,
  }
  return server
}

// ---- the compliance suite's S3 kinds (async only) ----

let shared: Promise<WeedServer> | undefined
let stores = 0
const opened: Store[] = []

// The stores opened here hold clients: closed, and the server stopped, after the file's tests.
test.after.always(async () => {
  await Promise.allSettled(opened.map((s) => close(s)))
  if (shared) await (await shared.catch(() => undefined))?.stop()
})

/** One server per test file, started on first use. */
export function sharedWeed(): Promise<WeedServer> {
  return (shared ??= startWeed())
}

/** A store kind on the shared server; each store gets its own prefix. */
function s3Kind(name: string, base: object) {
  return {
    name,
    modes: ['async'] as Mode[],
    // 8 x 1000 locked updates take minutes over S3 requests under load: 8 x 150 still interleave every loop.
    contendedUpdates: 150,
    async open(_mode: Mode, options: object = {}) {
      const { connectS3Store } = await import('konserve/s3')
      const server = await sharedWeed()
      const s = await connectS3Store({ bucket: BUCKET, prefix: `t${process.pid}-${++stores}`, endpoint: server.endpoint, credentials: ACCESS, ...base, ...options })
      opened.push(s)
      return s
    },
  }
}

export const s3Kinds = [s3Kind('s3', {}), s3Kind('s3 lz4+aes', { compressor: { type: 'lz4' }, encryptor: { type: 'aes', key: 'compliance' } })]
