/**
 * Blob commands, streamed both ways in bounded memory: put-file (a file or
 * stdin into a blob) and cat / get-file (a blob out to stdout or a file).
 */
import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { KonserveError, bassoc, bget, readBlob } from '../index'
import type { Context } from './open.js'
import { NotFound, OutputError, type Progress, outputError, progress, writeFileAtomic, writeOptions } from './io.js'

const PIECE = 1 << 20

/** Pieces of `src`, counted into the progress bar as they pass. */
async function* counted(src: AsyncIterable<Uint8Array>, bar: Progress): AsyncGenerator<Uint8Array> {
  for await (const p of src) {
    bar.add(p.length)
    yield p
  }
}

export async function putFileCmd(c: Context): Promise<number> {
  const [keyText, path] = c.args
  const key = c.key(keyText!)
  const o = writeOptions(c.opts)
  let total: number | undefined
  let input: AsyncIterable<Uint8Array>
  if (path === '-') {
    input = process.stdin
  } else {
    let st
    try {
      st = await stat(path!)
    } catch (err) {
      throw new KonserveError('ERR_IO', `cannot read ${path}: ${(err as Error).message}`, { file: path!, cause: err })
    }
    if (st.isFile()) total = st.size
    input = createReadStream(path!, { highWaterMark: PIECE })
  }
  const store = await c.store(true)
  const bar = progress(c.g.progress, 'put-file', total, 'bytes')
  try {
    await bassoc(store, key, counted(input, bar), o)
  } finally {
    bar.stop()
  }
  return 0
}

/** The blob at the command's key as a stream; NotFound when missing. */
async function blobStream(c: Context): Promise<Readable> {
  const stream = await readBlob(await c.store(false), c.key(c.args[0]!), { as: 'stream' })
  if (!stream) throw new NotFound(`not found: ${c.args[0]}`)
  return stream
}

/** A blob's size, for the progress bar (only asked when a bar is shown): bget tells it without reading the blob. */
async function blobSize(c: Context): Promise<number | undefined> {
  if (!c.g.progress || !process.stderr.isTTY) return undefined
  let size: number | undefined
  await bget(await c.store(false), c.key(c.args[0]!), ({ size: s, stream }) => {
    size = s
    stream?.destroy()
  })
  return size
}

/** Copies a blob to `dest` with backpressure, counting into a progress bar. */
async function copyOut(c: Context, stream: Readable, dest: NodeJS.WritableStream, onWriteError: (err: unknown) => Error): Promise<void> {
  const bar = progress(c.g.progress, c.args[1] === undefined ? 'cat' : 'get-file', await blobSize(c), 'bytes')
  let writeFailed: unknown
  let readFailed: unknown
  dest.on('error', (err) => {
    writeFailed ??= err
  })
  stream.on('error', (err) => {
    readFailed ??= err
  })
  try {
    await pipeline(stream, (src: AsyncIterable<Buffer>) => counted(src, bar), dest)
  } catch (err) {
    // pipeline destroys the destination with a read's error too (a damaged chunk): that is no output error.
    if (writeFailed !== undefined && writeFailed !== readFailed) throw onWriteError(writeFailed)
    throw err
  } finally {
    bar.stop()
  }
}

export async function catCmd(c: Context): Promise<number> {
  await copyOut(c, await blobStream(c), process.stdout, outputError)
  return 0
}

/**
 * A blob into a file: written to a temporary file beside it, synced, then
 * renamed over PATH, so PATH is never left half written. `-` is stdout.
 */
export async function getFileCmd(c: Context): Promise<number> {
  const path = c.args[1]!
  if (path === '-') return catCmd(c)
  // A missing key fails before anything is created.
  const stream = await blobStream(c)
  await writeFileAtomic(path, (dest) => copyOut(c, stream, dest, (err) => new OutputError(`cannot write ${path}: ${(err as Error).message}`, { cause: err })), () => stream.destroy())
  return 0
}
