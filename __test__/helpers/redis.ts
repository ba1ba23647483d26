/**
 * Real Redis servers for tests: `startRedis()` starts a redis-server on a
 * free loopback port in a temp directory and resolves once it accepts
 * connections; `startCluster()` starts three cluster-enabled ones and joins
 * them (`redis-cli --cluster create`). Both are stopped when the test process
 * exits, or earlier with `stop()`. `startRedis({ persist: true })` keeps an
 * append-only file fsynced on every write (appendfsync always) in its `dir`:
 * a server started again on that dir (`{ dir }`) has every acknowledged write.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { createServer } from 'node:net'
import test from 'ava'
import { type Store, close } from 'konserve'
import { promisify } from 'node:util'
import { type Mode, tempDir } from './api.js'

export interface RedisServer {
  port: number
  url: string
  proc: ChildProcess
  /** Its working directory (the append-only file, with `persist`). */
  dir: string
  /** SIGTERM, resolves when it has exited. */
  stop(): Promise<void>
  /** SIGKILL (no shutdown, no final save), resolves when it has exited. */
  kill(): Promise<void>
}

const running = new Set<ChildProcess>()
process.on('exit', () => {
  for (const p of running) p.kill('SIGKILL')
})

/** A loopback port nobody listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number }
      s.close(() => resolve(port))
    })
  })
}

export interface StartOptions {
  /** An append-only file, fsynced before every write is acknowledged. */
  persist?: boolean
  /** The working directory (default a new temp dir): a restart passes the old server's. */
  dir?: string
}

/** Starts redis-server with these extra arguments; resolves once it is ready. */
export async function startRedis(args: string[] = [], port?: number, options: StartOptions = {}): Promise<RedisServer> {
  port ??= await freePort()
  const dir = options.dir ?? tempDir('konserve-redis-')
  const aof = options.persist ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no']
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', ...aof, '--dir', dir, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  running.add(proc)
  const exited = new Promise<void>((resolve) => proc.once('exit', () => (running.delete(proc), resolve())))
  await new Promise<void>((resolve, reject) => {
    let out = ''
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString()
      if (out.includes('Ready to accept connections')) resolve()
    })
    proc.once('exit', (code) => reject(new Error(`redis-server exited (${code}) before it was ready: ${out}`)))
  })
  proc.stdout!.resume()
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    proc,
    dir,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM')
      await exited
    },
    async kill() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
      await exited
    },
  }
}

/** Three cluster-enabled servers joined into one cluster (three masters, no replicas). */
export async function startCluster(): Promise<{ nodes: RedisServer[]; stop(): Promise<void> }> {
  const nodes: RedisServer[] = []
  for (let i = 0; i < 3; i++) nodes.push(await startRedis(['--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${i}.conf`]))
  await promisify(execFile)('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-yes'])
  // Ready once every node sees every slot assigned.
  for (const n of nodes) {
    for (;;) {
      const { stdout } = await promisify(execFile)('redis-cli', ['-p', String(n.port), 'cluster', 'info'])
      if (stdout.includes('cluster_state:ok')) break
      await new Promise((r) => setTimeout(r, 50))
    }
  }
  return { nodes, stop: async () => void (await Promise.all(nodes.map((n) => n.stop()))) }
}

// ---- the compliance suite's Redis kinds (async only) ----

let shared: Promise<RedisServer> | undefined
let stores = 0
const opened: Store[] = []
const clients: Array<{ close(): Promise<unknown> }> = []

// The stores opened here hold connections: closed, and the server stopped, after the file's tests.
test.after.always(async () => {
  await Promise.allSettled(opened.map((s) => close(s)))
  await Promise.allSettled(clients.map((c) => c.close()))
  if (shared) await (await shared).stop()
})

/** One server per test process, started on first use. */
export function sharedRedis(): Promise<RedisServer> {
  return (shared ??= startRedis())
}

/** A node-redis v5 client on `url`, connected; closed after the file's tests. */
export async function nodeRedisClient(url: string) {
  const { createClient } = await import('redis')
  const client = createClient({ url })
  client.on('error', () => {})
  await client.connect()
  clients.push(client)
  return client
}

/** A store kind on the shared server; each store gets its own key prefix. `client: 'node-redis'` passes a node-redis client instead of the URL. */
function redisKind(name: string, base: object, client: 'ioredis-url' | 'node-redis' = 'ioredis-url') {
  return {
    name,
    modes: ['async'] as Mode[],
    async open(_mode: Mode, options: object = {}) {
      const { connectRedisStore } = await import('konserve/redis')
      const server = await sharedRedis()
      const target = client === 'node-redis' ? { client: await nodeRedisClient(server.url) } : { url: server.url }
      const s = await connectRedisStore({ ...target, prefix: `t${process.pid}-${++stores}`, ...base, ...options })
      opened.push(s)
      return s
    },
  }
}

export const redisKinds = [
  redisKind('redis', {}),
  redisKind('redis lz4+aes', { compressor: { type: 'lz4' }, encryptor: { type: 'aes', key: 'compliance' } }),
  redisKind('redis (node-redis)', {}, 'node-redis'),
]
