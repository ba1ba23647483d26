/** Helpers shared by the page code (./idb-page.ts) and the Node side of __test__/idb.spec.ts. */
import { type CryptoProvider, webCryptoProvider } from '../../ts/codec/aes.js'

/**
 * Fixed "random" bytes (tests only): the n-th draw of `len` bytes is a
 * function of (seed, n, i), so two engines that draw in the same order
 * draw the same salts and IVs. Everything else is WebCrypto.
 */
export function seededCrypto(seed: number): CryptoProvider {
  let draw = 0
  return {
    async: {
      ...webCryptoProvider.async,
      async randomBytes(n: number) {
        const d = draw++
        return Uint8Array.from({ length: n }, (_, i) => (seed + d * 131 + i * 7) & 255)
      },
    },
  }
}

/** Byte i of the test blob of this seed. */
export const patternByte = (seed: number, i: number): number => (i * 31 + seed + (i >>> 11)) & 255

/** Bytes `from .. from + n` of the test blob of this seed. */
export function pattern(seed: number, from: number, n: number): Uint8Array {
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) out[i] = patternByte(seed, from + i)
  return out
}
