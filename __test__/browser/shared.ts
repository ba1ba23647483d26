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

/** The calls `fillStore` and `dumpStore` make, from either entry (the page's ts/browser.ts, Node's konserve). */
export interface DumpApi {
  keys(s: never): Promise<Array<{ key: unknown; type: string; lastWrite: Date; [f: string]: unknown }>>
  get(s: never, key: never): Promise<unknown>
  readBlob(s: never, key: never): Promise<Uint8Array | undefined>
  log(s: never, key: never): Promise<unknown[] | undefined>
  assoc(s: never, key: never, v: unknown, o?: never): Promise<unknown>
  update(s: never, key: never, f: never): Promise<unknown>
  bassoc(s: never, key: never, v: never, o?: never): Promise<unknown>
  append(s: never, key: never, v: unknown): Promise<unknown>
  trimLog(s: never, key: never, o: never): Promise<unknown>
}

/** A store with every kind of key: values with user metadata and revisions, a composite key, blobs (one over a chunk), logs (trimmed, emptied). */
export async function fillStore(api: DumpApi, store: unknown, seed: number): Promise<void> {
  const k = api as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>
  const s = store
  await k.assoc!(s, 'doc', { name: 'ana', seed, list: [1, 2.5, 'x'], nested: { deep: true } }, { meta: { owner: 'ops' } })
  await k.update!(s, 'doc', (d: Record<string, unknown>) => ({ ...d, version: 2 }))
  await k.assoc!(s, ['user', 42], 'composite key')
  await k.assoc!(s, 'empty string', '')
  await k.bassoc!(s, 'small blob', new Uint8Array([0, 1, 2, 255]), { meta: { mime: 'application/octet-stream' } })
  await k.bassoc!(s, 'big blob', pattern(seed, 0, (1 << 20) + 4099))
  await k.bassoc!(s, 'empty blob', new Uint8Array(0))
  for (let i = 0; i < 5; i++) await k.append!(s, 'log', { i, seed })
  for (let i = 0; i < 7; i++) await k.append!(s, 'trimmed log', i)
  await k.trimLog!(s, 'trimmed log', { keepLast: 3 })
  await k.append!(s, 'emptied log', 'gone')
  await k.trimLog!(s, 'emptied log', { keepLast: 0 })
}

/** Every key of a store as JSON: metadata but lastWrite, and the value, the blob's bytes (hex) or the log. */
export async function dumpStore(api: DumpApi, store: unknown): Promise<Array<Record<string, unknown>>> {
  const k = api as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>
  const metas = (await k.keys!(store)) as Array<{ key: unknown; type: string; lastWrite: Date }>
  const out: Array<Record<string, unknown>> = []
  for (const { lastWrite: _l, ...m } of metas) {
    let content: unknown
    if (m.type === 'binary') {
      const b = (await k.readBlob!(store, m.key)) as Uint8Array
      content = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('')
    } else if (m.type === 'append-log') content = await k.log!(store, m.key)
    else content = await k.get!(store, m.key)
    out.push({ ...m, content })
  }
  return out.sort((a, b) => (JSON.stringify(a.key) < JSON.stringify(b.key) ? -1 : 1))
}
