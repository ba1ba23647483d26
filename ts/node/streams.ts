/**
 * Node Readable streams of blobs (`bget`'s stream, `readBlob`'s `as:
 * 'stream'`): the only part of reading a blob that needs Node. The facade
 * (ts/api.ts) gets it from ts/node/wire.ts.
 */
import { Readable } from 'node:stream'
import type { BlobSource } from '../backing/seam.js'
import { READ_PIECE, readPiece } from '../api.js'

/** The bytes [start, end) of an open blob as a Node Readable; closes the source when done. */
export function nodeStream(src: BlobSource, start: number, end: number): Readable {
  let pos = start
  return new Readable({
    highWaterMark: READ_PIECE,
    read() {
      if (pos >= end) {
        this.push(null)
        return
      }
      readPiece(src, pos, end).then(
        (b) => {
          pos += b.length
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
