/**
 * Real PostgreSQL servers for tests: `startPostgres()` runs Debian's
 * PostgreSQL (`/usr/lib/postgresql/<version>/bin`): `initdb` into a fresh
 * temp directory, then `pg_ctl start` on a free loopback port with fsync on,
 * unix sockets in that directory and trust authentication on 127.0.0.1. When
 * the tests run as root (postgres refuses to), both run as the `postgres`
 * user (`runuser`) on a directory it owns. A server is stopped
 * (`pg_ctl stop -m immediate`) and removed by `remove()`, or when the test
 * process exits.
 */
import { execFileSync, execFile } from 'node:child_process'
import { chownSync, existsSync, readdirSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { promisify } from 'node:util'
import test from 'ava'
import { type Store, close } from 'konserve'
import { type Mode, tempDir } from './api.js'

const run = promisify(execFile)

/** A loopback port nobody listens on right now. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number }
      s.close(() => resolve(port))
    })
  })
}

/** The newest installed PostgreSQL's bin directory. */
export function pgBin(): string {
  const root = '/usr/lib/postgresql'
  const versions = existsSync(root) ? readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'initdb'))) : []
  if (versions.length === 0) throw new Error('PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): apt-get install postgresql')
  versions.sort((a, b) => Number(b) - Number(a))
  return join(root, versions[0]!, 'bin')
}

const asRoot = process.getuid?.() === 0

/** Runs a PostgreSQL program, as the postgres user when we are root. */
function pgArgs(program: string, args: string[]): [string, string[]] {
  const bin = join(pgBin(), program)
  return asRoot ? ['runuser', ['-u', 'postgres', '--', bin, ...args]] : [bin, args]
}

export interface PostgresServer {
  port: number
  /** `postgres://postgres@127.0.0.1:<port>/postgres` */
  url: string
  dir: string
  /** Starts it (again), on the same port and data; resolves once it accepts connections. */
  start(): Promise<void>
  /** `pg_ctl stop -m immediate`: every backend is killed at once, as in a crash. */
  stop(): Promise<void>
  /** Stops it and removes its directory. */
  remove(): Promise<void>
}

const live = new Set<PostgresServer>()
process.on('exit', () => {
  for (const s of live) {
    try {
      const [cmd, args] = pgArgs('pg_ctl', ['-D', join(s.dir, 'data'), '-m', 'immediate', 'stop'])
      execFileSync(cmd, args, { stdio: 'ignore' })
    } catch {}
    rmSync(s.dir, { recursive: true, force: true })
  }
})

/** A new PostgreSQL server in a temp directory on a free loopback port, started. */
export async function startPostgres(): Promise<PostgresServer> {
  const port = await freePort()
  const dir = tempDir('konserve-pg-')
  if (asRoot) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString())
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString())
    chownSync(dir, uid, gid)
  }
  const data = join(dir, 'data')
  const [initdb, initArgs] = pgArgs('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8', '--locale', 'C'])
  await run(initdb, initArgs)
  let running = false
  const server: PostgresServer = {
    port,
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    dir,
    async start() {
      const opts = `-c fsync=on -c listen_addresses=127.0.0.1 -p ${port} -k ${dir} -c max_connections=300`
      const [cmd, args] = pgArgs('pg_ctl', ['-D', data, '-l', join(dir, 'log'), '-w', '-t', '60', '-o', opts, 'start'])
      await run(cmd, args)
      running = true
    },
    async stop() {
      if (!running) return
      running = false
      const [cmd, args] = pgArgs('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop'])
      await run(cmd, args)
    },
    async remove() {
      await server.stop()
      live.delete(server)
      rmSync(dir, { recursive: true, force: true })
    },
  }
  live.add(server)
  await server.start()
  return server
}

// ---- the compliance suite's PostgreSQL kinds (async only) ----

let shared: Promise<PostgresServer> | undefined
let stores = 0
const opened: Store[] = []

// The stores opened here hold connections: closed, and the server removed, after the file's tests.
test.after.always(async () => {
  await Promise.allSettled(opened.map((s) => close(s)))
  if (shared) await (await shared).remove()
})

/** One server per test file (process), started on first use. */
export function sharedPostgres(): Promise<PostgresServer> {
  return (shared ??= startPostgres())
}

/** A store kind on the shared server; each store gets its own table. */
function postgresKind(name: string, base: object) {
  return {
    name,
    modes: ['async'] as Mode[],
    async open(_mode: Mode, options: object = {}) {
      const { connectPostgresStore } = await import('konserve/postgres')
      const server = await sharedPostgres()
      const s = await connectPostgresStore({
        connectionString: server.url,
        table: `t${process.pid}_${++stores}`,
        maxConnections: 4,
        ...base,
        ...options,
      })
      opened.push(s)
      return s
    },
  }
}

export const postgresKinds = [
  postgresKind('postgres', {}),
  postgresKind('postgres lz4+aes', { compressor: { type: 'lz4' }, encryptor: { type: 'aes', key: 'compliance' } }),
]
