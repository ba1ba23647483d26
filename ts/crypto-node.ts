/**
 * The encryptor's primitives (codec/aes.ts) over `node:crypto`, blocking, so
 * that `{ sync: true }` calls of the pure-TypeScript store can encrypt. The
 * async flavour runs the same calls: each is CPU work of about a millisecond
 * per megabyte, not I/O.
 */
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto'
import type { AsyncCrypto, CryptoProvider, SyncCrypto } from './codec/aes.js'

function hmacSha256(key: Uint8Array, parts: readonly Uint8Array[]): Uint8Array {
  const h = createHmac('sha256', key)
  for (const p of parts) h.update(p)
  return h.digest()
}

const sync: SyncCrypto = {
  hkdfSha256: (ikm, salt, info, length) => new Uint8Array(hkdfSync('sha256', ikm, salt, info, length)),
  hmacSha256,
  hmacSha256Verify(key, parts, tag) {
    const expected = hmacSha256(key, parts)
    return tag.length === expected.length && timingSafeEqual(expected, tag)
  },
  aesCbcEncrypt(key, iv, plain) {
    const c = createCipheriv('aes-256-cbc', key, iv) // PKCS#7 padding by default
    return Buffer.concat([c.update(plain), c.final()])
  },
  aesCbcDecrypt(key, iv, ciphertext) {
    const d = createDecipheriv('aes-256-cbc', key, iv)
    try {
      return Buffer.concat([d.update(ciphertext), d.final()])
    } catch {
      return null // final() throws on bad padding
    }
  },
  randomBytes: (n) => randomBytes(n),
}

const async: AsyncCrypto = {
  hkdfSha256: async (...a) => sync.hkdfSha256(...a),
  hmacSha256: async (...a) => sync.hmacSha256(...a),
  hmacSha256Verify: async (...a) => sync.hmacSha256Verify(...a),
  aesCbcEncrypt: async (...a) => sync.aesCbcEncrypt(...a),
  aesCbcDecrypt: async (...a) => sync.aesCbcDecrypt(...a),
  randomBytes: async (...a) => sync.randomBytes(...a),
}

/** `node:crypto` primitives, blocking and async. */
export const nodeCryptoProvider: CryptoProvider = { sync, async }
