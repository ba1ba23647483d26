/**
 * The compliance suite: every store runs every check, in sync and in async form.
 * It ports konserve's own compliance checks and adds ours (key types, value
 * types, errors, metadata, concurrency). The checks themselves are in
 * ./helpers/compliance-checks.ts, apart from ava, so that the IndexedDB store
 * runs the same checks inside Chromium (browser-compliance.spec.ts).
 */
import test from 'ava'
import { Readable } from 'node:stream'
import { KonserveError, addMsgpackExtension, registerSerializer } from 'konserve'
import { type Mode, api, storeKinds } from './helpers/api.js'
import { redisKinds } from './helpers/redis.js'
import { postgresKinds } from './helpers/postgres.js'
import { s3Kinds } from './helpers/s3.js'
import { type Env, type T, checks, registerFixtures } from './helpers/compliance-checks.js'

const modes: Mode[] = ['sync', 'async']

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of stream) chunks.push(Buffer.from(c))
  return Buffer.concat(chunks)
}

registerFixtures({ addMsgpackExtension, registerSerializer })

for (const kind of [...storeKinds, ...redisKinds, ...postgresKinds, ...s3Kinds]) {
  for (const mode of kind.modes ?? modes) {
    const title = (s: string) => `${kind.name} ${mode}: ${s}`
    const env: Env = {
      mode,
      modes: kind.modes ?? modes,
      ...('contendedUpdates' in kind ? { contendedUpdates: kind.contendedUpdates } : {}),
      setup: async (options = {}) => [await kind.open(mode, options), api(mode)],
      api,
      KonserveError,
      // A Buffer in sync form, a Node Readable in async form.
      body(t, b) {
        if (mode === 'sync') {
          t.true(Buffer.isBuffer(b.blob))
          return Buffer.from(b.blob!)
        }
        t.true(b.stream instanceof Readable)
        return readAll(b.stream as Readable)
      },
      bytes: (values) => Buffer.from(values),
    }
    for (const c of checks) {
      if (c.when && !c.when(env)) continue
      ;(c.serial ? test.serial : test)(title(c.title), (t) => c.fn(t as unknown as T, env))
    }
  }
}
