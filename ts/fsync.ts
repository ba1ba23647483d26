/** The durable file-system steps the TypeScript stores share (Node only). */
import * as fs from 'node:fs'

/** Makes a directory's entries (creations, renames, removals) durable. */
export function fsyncDirSync(path: string): void {
  const fd = fs.openSync(path, 'r')
  try {
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
}
