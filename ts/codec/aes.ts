/**
 * Encryptor id 1 (docs/FORMAT.md §4.3): AES-256-CBC with PKCS#7 padding,
 * encrypt-then-MAC with HMAC-SHA256, per-segment keys from HKDF-SHA256 over a
 * fresh salt. Byte-identical to crates/core/src/codec/aes.rs.
 *
 * The primitives come from an injected `CryptoProvider`: WebCrypto is
 * async-only and Node's blocking API is `node:crypto`, which this module (shared
 * with the browser) may not import; see ../crypto-node.ts. The scheme is
 * written once, as gensync generators, and runs blocking or as a Promise.
 */
import gensync, { type Handler } from 'gensync'
import { KonserveError } from '../errors.js'

/** Length of the per-segment HKDF salt. */
export const SALT_LEN = 16
/** Length of the AES-CBC IV. */
export const IV_LEN = 16
/** Length of the HMAC-SHA256 tag. */
export const TAG_LEN = 32
/** Fixed overhead of a sealed segment besides the ciphertext. */
export const OVERHEAD = SALT_LEN + IV_LEN + TAG_LEN
/** The HKDF `info`: binds the derived keys to this scheme and format version. */
export const HKDF_INFO = new TextEncoder().encode('konserve/1 aes-256-cbc hmac-sha256')

/** The primitives the encryptor needs, blocking. */
export interface SyncCrypto {
  /** HKDF-SHA256 (extract and expand) of `length` bytes. */
  hkdfSha256(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Uint8Array
  /** HMAC-SHA256 of the concatenation of `parts`. */
  hmacSha256(key: Uint8Array, parts: readonly Uint8Array[]): Uint8Array
  /** Whether `tag` is the HMAC-SHA256 of `parts`, compared in constant time. */
  hmacSha256Verify(key: Uint8Array, parts: readonly Uint8Array[], tag: Uint8Array): boolean
  /** AES-256-CBC with PKCS#7 padding. */
  aesCbcEncrypt(key: Uint8Array, iv: Uint8Array, plain: Uint8Array): Uint8Array
  /** AES-256-CBC decryption; `null` if the padding is invalid. */
  aesCbcDecrypt(key: Uint8Array, iv: Uint8Array, ciphertext: Uint8Array): Uint8Array | null
  /** `n` bytes from a cryptographic random source. */
  randomBytes(n: number): Uint8Array
}

/** The same primitives, returning promises. */
export type AsyncCrypto = {
  [K in keyof SyncCrypto]: (...args: Parameters<SyncCrypto[K]>) => Promise<ReturnType<SyncCrypto[K]>>
}

/** Where the encryptor's primitives come from: always async, blocking where the platform allows. */
export interface CryptoProvider {
  /** Absent on async-only platforms (WebCrypto): blocking calls then fail with `ERR_NOT_SUPPORTED`. */
  readonly sync?: SyncCrypto
  readonly async: AsyncCrypto
}

// ---- WebCrypto ----------------------------------------------------------------

// WebCrypto's types want views of an ArrayBuffer, not of a SharedArrayBuffer; konserve's buffers are.
const bs = (b: Uint8Array) => b as Uint8Array<ArrayBuffer>

function subtle(): SubtleCrypto {
  const s = globalThis.crypto?.subtle
  if (!s) throw new KonserveError('ERR_NOT_SUPPORTED', 'this platform has no WebCrypto (globalThis.crypto.subtle)')
  return s
}

/** The parts joined into one new array. */
export function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

const hmacKey = (key: Uint8Array, use: KeyUsage) =>
  subtle().importKey('raw', bs(key), { name: 'HMAC', hash: 'SHA-256' }, false, [use])
const aesKey = (key: Uint8Array, use: KeyUsage) => subtle().importKey('raw', bs(key), 'AES-CBC', false, [use])

/** The encryptor's primitives over `globalThis.crypto` (browsers, Deno, Node >= 19). Async only. */
export const webCryptoProvider: CryptoProvider = {
  async: {
    async hkdfSha256(ikm, salt, info, length) {
      const key = await subtle().importKey('raw', bs(ikm), 'HKDF', false, ['deriveBits'])
      const bits = await subtle().deriveBits({ name: 'HKDF', hash: 'SHA-256', salt: bs(salt), info: bs(info) }, key, length * 8)
      return new Uint8Array(bits)
    },
    async hmacSha256(key, parts) {
      return new Uint8Array(await subtle().sign('HMAC', await hmacKey(key, 'sign'), bs(concat(parts))))
    },
    async hmacSha256Verify(key, parts, tag) {
      // subtle.verify compares in constant time.
      return subtle().verify('HMAC', await hmacKey(key, 'verify'), bs(tag), bs(concat(parts)))
    },
    async aesCbcEncrypt(key, iv, plain) {
      return new Uint8Array(await subtle().encrypt({ name: 'AES-CBC', iv: bs(iv) }, await aesKey(key, 'encrypt'), bs(plain)))
    },
    async aesCbcDecrypt(key, iv, ciphertext) {
      const k = await aesKey(key, 'decrypt')
      try {
        return new Uint8Array(await subtle().decrypt({ name: 'AES-CBC', iv: bs(iv) }, k, bs(ciphertext)))
      } catch {
        return null // WebCrypto rejects bad padding with an OperationError
      }
    },
    async randomBytes(n) {
      const out = new Uint8Array(n)
      // getRandomValues fills at most 65536 bytes per call.
      for (let at = 0; at < n; at += 65536) globalThis.crypto.getRandomValues(out.subarray(at, Math.min(n, at + 65536)))
      return out
    },
  },
}

// ---- the primitives as gensync operations ------------------------------------------

function syncOf(p: CryptoProvider): SyncCrypto {
  if (!p.sync) {
    throw new KonserveError(
      'ERR_NOT_SUPPORTED',
      'encryption in a { sync: true } call needs a crypto provider with blocking primitives (WebCrypto has none); use the async form',
    )
  }
  return p.sync
}

const deriveKeys = gensync({
  sync: (p: CryptoProvider, secret: Uint8Array, salt: Uint8Array) => syncOf(p).hkdfSha256(secret, salt, HKDF_INFO, 64),
  async: (p: CryptoProvider, secret: Uint8Array, salt: Uint8Array) => p.async.hkdfSha256(secret, salt, HKDF_INFO, 64),
})
const hmac = gensync({
  sync: (p: CryptoProvider, key: Uint8Array, parts: Uint8Array[]) => syncOf(p).hmacSha256(key, parts),
  async: (p: CryptoProvider, key: Uint8Array, parts: Uint8Array[]) => p.async.hmacSha256(key, parts),
})
const hmacVerify = gensync({
  sync: (p: CryptoProvider, key: Uint8Array, parts: Uint8Array[], tag: Uint8Array) => syncOf(p).hmacSha256Verify(key, parts, tag),
  async: (p: CryptoProvider, key: Uint8Array, parts: Uint8Array[], tag: Uint8Array) => p.async.hmacSha256Verify(key, parts, tag),
})
const encrypt = gensync({
  sync: (p: CryptoProvider, key: Uint8Array, iv: Uint8Array, plain: Uint8Array) => syncOf(p).aesCbcEncrypt(key, iv, plain),
  async: (p: CryptoProvider, key: Uint8Array, iv: Uint8Array, plain: Uint8Array) => p.async.aesCbcEncrypt(key, iv, plain),
})
const decrypt = gensync({
  sync: (p: CryptoProvider, key: Uint8Array, iv: Uint8Array, ct: Uint8Array) => syncOf(p).aesCbcDecrypt(key, iv, ct),
  async: (p: CryptoProvider, key: Uint8Array, iv: Uint8Array, ct: Uint8Array) => p.async.aesCbcDecrypt(key, iv, ct),
})

/** `n` random bytes from the provider. */
export const randomBytes = gensync({
  sync: (p: CryptoProvider, n: number) => syncOf(p).randomBytes(n),
  async: (p: CryptoProvider, n: number) => p.async.randomBytes(n),
})

// ---- the scheme ---------------------------------------------------------------

/**
 * What the MAC covers before the sealed bytes: the segment kind, the key's
 * 16-byte hash and, for blob chunks and log records (kinds 2, 3, 4), their
 * index as u64 LE (FORMAT.md §4.3).
 */
function macPrefix(kind: number, keyHash: Uint8Array, index?: number): Uint8Array {
  if (keyHash.length !== 16) throw new KonserveError('ERR_INVALID_ARGUMENT', 'a key hash is 16 bytes')
  if (index !== undefined && !(Number.isSafeInteger(index) && index >= 0)) {
    throw new KonserveError('ERR_INVALID_ARGUMENT', `a chunk or record index is an integer from 0 to 2^53 - 1, not ${index}`)
  }
  const prefix = new Uint8Array(index === undefined ? 17 : 25)
  prefix[0] = kind
  prefix.set(keyHash, 1)
  if (index !== undefined) {
    const v = new DataView(prefix.buffer)
    v.setUint32(17, index % 0x100000000, true)
    v.setUint32(21, Math.floor(index / 0x100000000), true)
  }
  return prefix
}

/**
 * Encrypts one segment: `salt || iv || AES-256-CBC(plain) || tag`. `kind` is 0
 * for the meta segment, 1 for the value segment, 2 / 3 for a blob chunk (not
 * the last / the last), 4 for a log record; `keyHash` is XXH3-128 of the key's
 * CKE, big-endian (the file name's digits). `index` (chunks and records only)
 * is bound into the MAC.
 */
export const sealSegment = gensync(function* (
  provider: CryptoProvider,
  secret: Uint8Array,
  kind: number,
  keyHash: Uint8Array,
  plain: Uint8Array,
  salt: Uint8Array,
  iv: Uint8Array,
  index?: number,
): Handler<Uint8Array> {
  if (salt.length !== SALT_LEN || iv.length !== IV_LEN) throw new KonserveError('ERR_INVALID_ARGUMENT', 'salt and IV are 16 bytes each')
  const okm = yield* deriveKeys(provider, secret, salt)
  const ct = yield* encrypt(provider, okm.subarray(0, 32), iv, plain)
  const out = new Uint8Array(OVERHEAD + ct.length)
  out.set(salt, 0)
  out.set(iv, SALT_LEN)
  out.set(ct, SALT_LEN + IV_LEN)
  const body = out.subarray(0, out.length - TAG_LEN)
  out.set(yield* hmac(provider, okm.subarray(32), [macPrefix(kind, keyHash, index), body]), body.length)
  return out
})

/**
 * Checks the tag of a sealed segment, then decrypts it. A wrong key, an altered
 * byte, or a segment from another file or place (or with another `index`)
 * give `ERR_DECRYPT`; an impossible length gives `ERR_CORRUPT`.
 */
export const openSegment = gensync(function* (
  provider: CryptoProvider,
  secret: Uint8Array,
  kind: number,
  keyHash: Uint8Array,
  sealed: Uint8Array,
  index?: number,
): Handler<Uint8Array> {
  if (sealed.length < OVERHEAD + 16 || (sealed.length - OVERHEAD) % 16 !== 0) {
    throw new KonserveError('ERR_CORRUPT', 'an encrypted segment has an impossible length')
  }
  const body = sealed.subarray(0, sealed.length - TAG_LEN)
  const tag = sealed.subarray(sealed.length - TAG_LEN)
  const okm = yield* deriveKeys(provider, secret, body.subarray(0, SALT_LEN))
  // The tag is checked before anything is decrypted: no padding oracle.
  if (!(yield* hmacVerify(provider, okm.subarray(32), [macPrefix(kind, keyHash, index), body], tag))) {
    throw new KonserveError('ERR_DECRYPT', 'the segment does not authenticate: wrong encryption key, or the file was altered')
  }
  const plain = yield* decrypt(provider, okm.subarray(0, 32), body.subarray(SALT_LEN, SALT_LEN + IV_LEN), body.subarray(SALT_LEN + IV_LEN))
  // Authentic but badly padded: only a broken writer produces this.
  if (plain === null) throw new KonserveError('ERR_CORRUPT', 'an authenticated segment has invalid padding')
  return plain
})

/** The MAC kind of a log's commit slot (FORMAT.md §4.6). */
export const KIND_COMMIT = 5

/**
 * The tag of a log's commit slot (FORMAT.md §4.6): HMAC-SHA256 over
 * `5 || keyHash || body` with the MAC key that HKDF derives from `salt`, the
 * log's meta segment's salt (the slot stores the first 24 bytes).
 */
export const commitTag = gensync(function* (
  provider: CryptoProvider,
  secret: Uint8Array,
  keyHash: Uint8Array,
  salt: Uint8Array,
  body: Uint8Array,
): Handler<Uint8Array> {
  const okm = yield* deriveKeys(provider, secret, salt)
  return yield* hmac(provider, okm.subarray(32), [macPrefix(KIND_COMMIT, keyHash), body])
})
