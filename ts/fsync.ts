/** The durable file-system steps the TypeScript stores share (Node only). */
import * as fs from 'node:fs'

/** Makes a directory's entries (creations, renames, removals) durable. */
export function fsyncDirSync(path: string): void {
  const fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY)
  try {
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
}

/**
 * Errnos that only the open before an fsync gives (out of descriptors or
 * memory, no access), never fsync(2) itself: no dirty page was dropped, so
 * the store is not poisoned (the core's `is_fsync_failure` is the same list).
 */
const OPEN_ONLY = new Set(['EMFILE', 'ENFILE', 'ENOMEM', 'EACCES', 'ENOENT', 'ENOTDIR', 'ELOOP'])

/** Whether an error of an fsync step means the fsync itself failed (the store must be poisoned). */
export function isFsyncFailure(err: unknown): boolean {
  return !OPEN_ONLY.has((err as NodeJS.ErrnoException | undefined)?.code ?? '')
}
