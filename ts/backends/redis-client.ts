/**
 * The few Redis commands the Redis backing (./redis.ts) sends, over either
 * client: ioredis (a `Redis` or a `Redis.Cluster`) or node-redis v5 (a
 * `createClient()` client). Everything goes through each client's generic
 * command call (ioredis `call`/`callBuffer`, node-redis `sendCommand`), so
 * both send the same commands and get the same replies: no behaviour differs.
 *
 * - `send(args)` one command, replies as strings; `sendBuffers(args)` the
 *   same with bulk replies as Buffers (integers stay numbers, nil is null);
 * - `script(s, keys, args)` EVALSHA, then EVAL if the server does not have
 *   the script (NOSCRIPT): after a restart or a SCRIPT FLUSH;
 * - `multi(cmds)` MULTI … EXEC through the client's own transaction API (a
 *   shared connection must not see MULTI and EXEC as separate commands);
 * - `scanNodes()` where SCAN runs: every master of a Cluster, or the client.
 */
import { createHash } from 'node:crypto'

export type Arg = string | Buffer
// biome-ignore lint/suspicious/noExplicitAny: ioredis and node-redis are optional peers; their types are not required to build
export type AnyClient = any

/** A Lua script and its SHA-1 (for EVALSHA). */
export interface Script {
  lua: string
  sha: string
}

export function script(lua: string): Script {
  return { lua, sha: createHash('sha1').update(lua).digest('hex') }
}

export interface RedisConn {
  /** 'ioredis' or 'node-redis'. */
  readonly kind: 'ioredis' | 'node-redis'
  /** A Redis Cluster (keys of different slots cannot share a script or a MULTI). */
  readonly cluster: boolean
  /** Where the client points, for the lock scope (no credentials). */
  readonly scope: string
  send(args: Arg[]): Promise<unknown>
  sendBuffers(args: Arg[]): Promise<unknown>
  script(s: Script, keys: string[], args: Arg[], buffers?: boolean): Promise<unknown>
  multi(cmds: Arg[][]): Promise<void>
  scanNodes(): Array<{ send(args: Arg[]): Promise<unknown> }>
  /** Ends the client gracefully (QUIT), or at once if that fails. */
  close(): Promise<void>
  /** The client as given. */
  readonly client: AnyClient
}

/** Whether `client` looks like an ioredis client (a Redis or a Cluster). */
export function isIoredis(client: AnyClient): boolean {
  return client != null && typeof client.defineCommand === 'function' && typeof client.callBuffer === 'function'
}

/** Whether `client` looks like a node-redis v5 client (createClient). */
export function isNodeRedis(client: AnyClient): boolean {
  return client != null && typeof client.sendCommand === 'function' && typeof client.defineCommand !== 'function' && 'isOpen' in client
}

/** Whether `client` looks like a node-redis v5 cluster (createCluster): not supported. */
export function isNodeRedisCluster(client: AnyClient): boolean {
  return client != null && typeof client.nodeClient === 'function' && Array.isArray(client.masters)
}

const noScript = (err: unknown) => String((err as Error)?.message ?? '').startsWith('NOSCRIPT')

function withScripts(send: (args: Arg[], buffers: boolean) => Promise<unknown>) {
  return async (s: Script, keys: string[], args: Arg[], buffers = false): Promise<unknown> => {
    const rest = [String(keys.length), ...keys, ...args]
    try {
      return await send(['EVALSHA', s.sha, ...rest], buffers)
    } catch (err) {
      if (!noScript(err)) throw err
      return send(['EVAL', s.lua, ...rest], buffers)
    }
  }
}

/** The ioredis form. */
function ioredisConn(client: AnyClient): RedisConn {
  const send = (args: Arg[], buffers: boolean): Promise<unknown> => {
    const [name, ...rest] = args
    return buffers ? client.callBuffer(name, ...rest) : client.call(name, ...rest)
  }
  const cluster = client.isCluster === true
  return {
    kind: 'ioredis',
    cluster,
    scope: ioredisScope(client),
    client,
    send: (args) => send(args, false),
    sendBuffers: (args) => send(args, true),
    script: withScripts(send),
    async multi(cmds) {
      const results = (await client.multi(cmds.map(([name, ...rest]) => [String(name).toLowerCase(), ...rest])).exec()) as Array<[Error | null, unknown]> | null
      if (!results) throw new Error('the transaction was aborted')
      for (const [err] of results) if (err) throw err
    },
    scanNodes() {
      const nodes: AnyClient[] = cluster ? client.nodes('master') : [client]
      return nodes.map((node) => ({ send: (args: Arg[]) => node.call(args[0], ...args.slice(1)) }))
    },
    async close() {
      await client.quit().catch(() => client.disconnect())
    },
  }
}

function ioredisScope(client: AnyClient): string {
  if (client.isCluster) {
    const nodes = (client.startupNodes ?? []) as Array<{ host?: string; port?: number } | string | number>
    return `cluster:${nodes.map((n) => (typeof n === 'object' ? `${n.host ?? '127.0.0.1'}:${n.port ?? 6379}` : String(n))).join(',')}`
  }
  const o = client.options ?? {}
  return o.path ? `unix:${o.path}/${o.db ?? 0}` : `${o.host ?? '127.0.0.1'}:${o.port ?? 6379}/${o.db ?? 0}`
}

/** node-redis's RESP type code of a bulk string ('$'), mapped to Buffer for `sendBuffers`. */
const BLOB_STRING = 36
const AS_BUFFERS = { typeMapping: { [BLOB_STRING]: Buffer } }

/** The node-redis v5 form. */
function nodeRedisConn(client: AnyClient): RedisConn {
  const send = (args: Arg[], buffers: boolean): Promise<unknown> => client.sendCommand(args, buffers ? AS_BUFFERS : undefined)
  const conn: RedisConn = {
    kind: 'node-redis',
    cluster: false,
    scope: nodeRedisScope(client),
    client,
    send: (args) => send(args, false),
    sendBuffers: (args) => send(args, true),
    script: withScripts(send),
    async multi(cmds) {
      let m = client.multi()
      for (const c of cmds) m = m.addCommand(c)
      // Rejects (a MultiErrorReply) if any command failed.
      await m.exec()
    },
    scanNodes: () => [{ send: (args: Arg[]) => send(args, false) }],
    async close() {
      try {
        await client.close()
      } catch {
        client.destroy()
      }
    },
  }
  return conn
}

function nodeRedisScope(client: AnyClient): string {
  const o = client.options ?? {}
  const db = o.database ?? 0
  if (typeof o.url === 'string') {
    try {
      const u = new URL(o.url)
      return `${u.hostname || '127.0.0.1'}:${u.port || 6379}/${u.pathname.slice(1) || db}`
    } catch {
      // Not a URL we can read: fall through to the socket options.
    }
  }
  const s = o.socket ?? {}
  return s.path ? `unix:${s.path}/${db}` : `${s.host ?? '127.0.0.1'}:${s.port ?? 6379}/${db}`
}

/** The connection over a client of either kind; ERR-free: the caller checks `isIoredis`/`isNodeRedis` first. */
export function redisConn(client: AnyClient): RedisConn {
  return isIoredis(client) ? ioredisConn(client) : nodeRedisConn(client)
}
