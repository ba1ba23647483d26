/**
 * The network backends' connect functions check their options before they
 * reach for a server: a bad duration, compressor or encryptor is
 * ERR_INVALID_ARGUMENT naming the connect function and the option (no server
 * runs here; a check that let the option through would fail with another code
 * or hang on the unreachable address).
 */
import test from 'ava'
import type { KonserveError } from 'konserve'
import { connectPostgresStore } from 'konserve/postgres'
import { connectRedisStore } from 'konserve/redis'
import { connectS3Store } from 'konserve/s3'

// Addresses nothing listens on: an option check that passed would try them.
const connects: Array<[string, (o: Record<string, unknown>) => Promise<unknown>]> = [
  ['connectRedisStore', (o) => connectRedisStore({ url: 'redis://127.0.0.1:1', ...o })],
  ['connectPostgresStore', (o) => connectPostgresStore({ connectionString: 'postgres://127.0.0.1:1/x', ...o })],
  ['connectS3Store', (o) => connectS3Store({ bucket: 'b', endpoint: 'http://127.0.0.1:1', region: 'us-east-1', ...o } as never)],
]

const bad: Array<[string, Record<string, unknown>, RegExp]> = [
  ['a negative lockTimeoutMs', { lockTimeoutMs: -1 }, /lockTimeoutMs must be a finite number >= 0, not -1/],
  ['an infinite lockTimeoutMs', { lockTimeoutMs: Number.POSITIVE_INFINITY }, /lockTimeoutMs must be a finite number >= 0/],
  ['a string lockTimeoutMs', { lockTimeoutMs: '5' }, /lockTimeoutMs must be a finite number >= 0, not 5/],
  ['an unknown compressor', { compressor: { type: 'zstd' } }, /unknown compressor \{"type":"zstd"\}; the one compressor is \{ type: 'lz4' \}/],
  ['an unknown encryptor', { encryptor: { type: 'des', key: 'k' } }, /unknown encryptor type "des"/],
  ['an empty AES key', { encryptor: { type: 'aes', key: '' } }, /the aes encryptor needs a non-empty key/],
  ['an AES key of the wrong type', { encryptor: { type: 'aes', key: 42 } }, /the aes encryptor needs a non-empty key/],
]

for (const [fn, connect] of connects) {
  for (const [what, options, message] of bad) {
    test(`${fn}: ${what} is ERR_INVALID_ARGUMENT naming ${fn}`, async (t) => {
      const err = (await t.throwsAsync(connect(options))) as KonserveError
      t.is(err.code, 'ERR_INVALID_ARGUMENT')
      t.regex(err.message, new RegExp(`^${fn}: `))
      t.regex(err.message, message)
    })
  }
}
