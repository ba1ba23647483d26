/**
 * The Redis server killed (SIGKILL) in the middle of a command, on a server
 * that persists every write before acknowledging it (appendonly yes,
 * appendfsync always), with each client (ioredis and node-redis):
 * - a multi-key put (one SWAP script for all keys) in flight;
 * - a blob streaming in, after its first chunk was staged, while the next
 *   chunk's MULTI (HSET + PEXPIRE) is in flight; over an old blob and over none;
 * - a log append (one APPEND script) in flight, on an existing log and a new one.
 * The caller gets ERR_BACKEND_UNAVAILABLE; after a restart on the same append-
 * only file the store holds the old state (the write never ran), never a part
 * of the new one: all keys or none, the old blob or none (the staged chunks
 * expire), the old records.
 *
 * Deterministic, no sleeps: the server is held with CLIENT PAUSE WRITE right
 * before the command goes out (a hook on the client's command call, or the
 * blob's source, which is read on only once the previous chunk is stored);
 * the test waits until CLIENT LIST shows that command blocked on the server
 * (flags=b), then kills it.
 */
import test from 'ava'
import Redis from 'ioredis'
import * as k from 'konserve'
import { connectRedisStore } from 'konserve/redis'
import { type RedisServer, startRedis } from './helpers/redis.js'

type Kind = 'ioredis' | 'node-redis'
const kinds: Kind[] = ['ioredis', 'node-redis']

type AnyClient = any

/** A client as connectRedisStore would make it for a URL: commands fail while the server is away (no endless waiting). */
async function clientOf(kind: Kind, server: RedisServer): Promise<AnyClient> {
  if (kind === 'ioredis') {
    const c = new Redis(server.url, { maxRetriesPerRequest: 3 })
    c.on('error', () => {})
    return c
  }
  const { createClient } = await import('redis')
  const c = createClient({ url: server.url, disableOfflineQueue: true, socket: { reconnectStrategy: (n: number) => Math.min(50 * 2 ** n, 1000) } })
  c.on('error', () => {})
  await c.connect()
  return c
}

function closeClient(kind: Kind, c: AnyClient): void {
  if (kind === 'ioredis') c.disconnect()
  else c.destroy()
}

/**
 * Makes the next command of `client` for which `pick(args)` holds wait on the
 * server: CLIENT PAUSE WRITE is in place (admin connection) before it is sent.
 * Resolves once it is sent.
 */
function holdNext(kind: Kind, client: AnyClient, admin: Redis, pick: (args: string[]) => boolean): Promise<void> {
  return new Promise((sent) => {
    const orig = client.sendCommand
    const pause = () => admin.call('CLIENT', 'PAUSE', '60000', 'WRITE')
    if (kind === 'ioredis') {
      client.sendCommand = function (command: { name: string; args: unknown[] }, ...rest: unknown[]) {
        if (!pick([command.name, ...command.args.map(String)])) return orig.call(this, command, ...rest)
        client.sendCommand = orig
        return pause().then(() => {
          const p = orig.call(this, command, ...rest)
          sent()
          return p
        })
      }
    } else {
      client.sendCommand = async function (args: unknown[], ...rest: unknown[]) {
        if (!pick(args.map(String))) return orig.call(this, args, ...rest)
        client.sendCommand = orig
        await pause()
        const p = orig.call(this, args, ...rest)
        sent()
        return p
      }
    }
  })
}

/** A script call writing through the key lock check (SWAP, APPEND: at least 3 keys), not HEAD (1 key) or LOGREAD (2). */
const writeScript = (args: string[]) => /^eval(sha)?$/i.test(args[0]!) && Number(args[2]) >= 3

/** Resolves once a command of `cmds` waits on the server (paused): then it has arrived. */
async function blockedOnServer(admin: Redis, cmds: RegExp): Promise<void> {
  for (;;) {
    const list = (await admin.call('CLIENT', 'LIST')) as string
    if (list.split('\n').some((line) => / flags=\w*b\w* /.test(line) && cmds.test(line))) return
    await new Promise((r) => setImmediate(r))
  }
}

interface Rig {
  server: RedisServer
  admin: Redis
  client: AnyClient
  db: k.Store
}

/** Everything a test opened, closed after the file's tests even when one failed halfway. */
const cleanups: Array<() => unknown> = []
test.after.always(async () => {
  for (const f of cleanups) await Promise.resolve().then(f).catch(() => {})
})

async function rig(kind: Kind): Promise<Rig> {
  const server = await startRedis([], undefined, { persist: true })
  const admin = new Redis(server.port, { maxRetriesPerRequest: 0 })
  admin.on('error', () => {})
  const client = await clientOf(kind, server)
  // A short lease: the locks the killed operation left lapse soon after the restart (a longer one only makes the test wait).
  const db = await connectRedisStore({ client, prefix: 'f', lockLeaseMs: 4000 })
  const r = { server, admin, client, db }
  cleanups.push(() => closeClient(kind, client), () => admin.disconnect(), () => r.server.kill())
  return r
}

/** Kills the server, checks the operation failed with ERR_BACKEND_UNAVAILABLE, starts it again on the same files. */
async function killDuring(t: { is: (a: unknown, b: unknown, m?: string) => void }, r: Rig, op: Promise<unknown>): Promise<RedisServer> {
  await r.server.kill()
  const err = (await op.then(
    () => undefined,
    (e: unknown) => e,
  )) as k.KonserveError | undefined
  t.is(err?.code, 'ERR_BACKEND_UNAVAILABLE', String(err))
  r.server = await startRedis([], r.server.port, { persist: true, dir: r.server.dir })
  // The client reconnects by itself; until then its commands fail (ERR_BACKEND_UNAVAILABLE).
  if (!(r.client.status === 'ready' || r.client.isReady === true)) await new Promise((res) => r.client.once('ready', res))
  return r.server
}

/** A fresh store on the restarted server, to look at what it holds. */
async function reader(server: RedisServer): Promise<k.Store> {
  const s = await connectRedisStore({ url: server.url, prefix: 'f' })
  cleanups.push(() => k.close(s))
  return s
}

async function done(kind: Kind, r: Rig, ...more: k.Store[]) {
  for (const s of more) await k.close(s)
  await k.close(r.db).catch(() => {})
  closeClient(kind, r.client)
  r.admin.disconnect()
  await r.server.stop()
}

for (const kind of kinds) {
  test(`${kind}: killed while a multi-key put is in flight: ERR_BACKEND_UNAVAILABLE, then all old (none of the new keys)`, async (t) => {
    const r = await rig(kind)
    await k.multiAssoc(r.db, new Map<string, unknown>([['a', 'old-a'], ['b', 'old-b'], ['c', 'old-c']]))
    const sent = holdNext(kind, r.client, r.admin, writeScript)
    const op = k.multiAssoc(r.db, new Map<string, unknown>([['a', 'new-a'], ['b', 'new-b'], ['c', 'new-c'], ['d', 'new-d']]))
    await sent
    await blockedOnServer(r.admin, / cmd=eval(sha)? /)
    const server = await killDuring(t, r, op)
    const look = await reader(server)
    t.deepEqual(await Promise.all(['a', 'b', 'c', 'd'].map((key) => k.get(look, key))), ['old-a', 'old-b', 'old-c', undefined])
    // The store that saw the failure works again (its locks lapse after their lease).
    await k.multiAssoc(r.db, new Map<string, unknown>([['a', 'new-a'], ['d', 'new-d']]))
    t.deepEqual(await Promise.all(['a', 'b', 'd'].map((key) => k.get(look, key))), ['new-a', 'old-b', 'new-d'])
    await done(kind, r, look)
  })

  test(`${kind}: killed while a blob streams in (a chunk staged, the next chunk's MULTI in flight): the old blob or none, never a torn one`, async (t) => {
    const r = await rig(kind)
    const old = Buffer.alloc((2 << 20) + 3, 7)
    await k.bassoc(r.db, 'b', old)
    for (const key of ['b', 'new']) {
      const redis = new Redis(r.server.port)
      const before = await redis.keys('f:c:*')
      redis.disconnect()
      let sent!: () => void
      const paused = new Promise<void>((res) => (sent = res))
      const admin = r.admin
      async function* source() {
        yield Buffer.alloc((1 << 20) + 100, 1) // one whole chunk: staged before the source is read on
        await admin.call('CLIENT', 'PAUSE', '60000', 'WRITE')
        sent()
        yield Buffer.alloc(1 << 20, 2) // seals the second chunk: its MULTI waits on the server
        yield Buffer.alloc(10, 3)
      }
      const op = k.bassoc(r.db, key, source())
      await paused
      // Redis 7 holds a write queued inside MULTI (flags=xb): the transaction has not run.
      await blockedOnServer(r.admin, / cmd=(exec|hset) /)
      const server = await killDuring(t, r, op)
      const look = await reader(server)
      if (key === 'b') t.true((await k.readBlob(look, 'b'))?.equals(old), 'the old blob, whole')
      else t.is(await k.readBlob(look, 'new'), undefined, 'no blob')
      // The staged generation (its first chunk) is gone (the writer's abort reached the server once it was
      // back) or survived with an expiry: it goes away by itself, never part of a blob.
      const redis2 = new Redis(server.port)
      for (const g of (await redis2.keys('f:c:*')).filter((x) => !before.includes(x))) {
        t.true((await redis2.pttl(g)) > 0, g)
        t.deepEqual(await redis2.hkeys(g), ['0'])
      }
      redis2.disconnect()
      await k.close(look)
    }
    await done(kind, r)
  })

  test(`${kind}: killed while a log append is in flight: the old records (an existing log), no log (a new one)`, async (t) => {
    const r = await rig(kind)
    for (let i = 0; i < 3; i++) await k.append(r.db, 'log', i)
    for (const [key, want] of [
      ['log', [0, 1, 2]],
      ['fresh', undefined],
    ] as const) {
      const sent = holdNext(kind, r.client, r.admin, writeScript)
      const op = k.append(r.db, key, 99)
      await sent
      await blockedOnServer(r.admin, / cmd=eval(sha)? /)
      const server = await killDuring(t, r, op)
      const look = await reader(server)
      t.deepEqual(await k.log(look, key), want)
      await k.close(look)
    }
    t.is(await k.append(r.db, 'log', 3), 4, 'appends go on once the server is back')
    await done(kind, r)
  })
}
