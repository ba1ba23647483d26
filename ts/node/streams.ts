/**
 * Node Readable streams of blobs (`bget`'s stream, `readBlob`'s `as:
 * 'stream'`): the only part of reading a blob that needs Node. The facade
 * (ts/api.ts) gets it from ts/node/wire.ts.
 */
import { Readable } from 'node:stream'
import type { BlobSource } from '../backing/seam.js'
import { READ_PIECE, readPiece } from '../api.js'

/** Pieces read ahead of the consumer: two reads run on the threadpool while it takes the last one. */
const AHEAD = 2

/**
 * The bytes [start, end) of an open blob as a Node Readable; closes the
 * source when done. Up to AHEAD pieces are read ahead (each read is a
 * threadpool task: one at a time, a 10 MB stream spent more time waiting for
 * the hop than reading), delivered in order; a failed read fails the stream
 * at its turn, and the reads still running when it ends are left to settle.
 */
export function nodeStream(src: BlobSource, start: number, end: number): Readable {
  let pos = start
  const queue: Promise<Buffer>[] = []
  const fill = () => {
    while (queue.length < AHEAD && pos < end) {
      const piece = readPiece(src, pos, end)
      piece.catch(() => {}) // settled after a destroy: nobody waits for it
      queue.push(piece)
      pos += Math.min(READ_PIECE - (pos % READ_PIECE), end - pos)
    }
  }
  return new Readable({
    highWaterMark: READ_PIECE,
    read() {
      fill()
      const next = queue.shift()
      if (!next) {
        this.push(null)
        return
      }
      next.then(
        (b) => {
          fill()
          this.push(b)
        },
        (err) => this.destroy(err),
      )
    },
    destroy(err, cb) {
      src.close()
      cb(err)
    },
  })
}
