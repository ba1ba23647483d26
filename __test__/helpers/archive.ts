/** Reading archives whole in tests: a frame reader over the bytes, past a checked header. */
import { ByteReader, HEADER_LEN, decodeHeader } from '../../ts/archive/format.js'

/** A reader over `archive` positioned after its header, and the archive's version. */
export async function archiveReader(archive: Uint8Array): Promise<{ r: ByteReader; version: number }> {
  let given = false
  const r = new ByteReader(async () => (given ? undefined : ((given = true), archive)))
  const { version } = decodeHeader(await r.read(HEADER_LEN))
  return { r, version }
}
