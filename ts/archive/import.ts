/**
 * Reading an archive into a store (docs/ARCHIVE.md), streamed: memory is
 * bounded by one value (blobs: by one chunk; logs: by one batch of records).
 * No `node:` imports: shared with the browser store.
 */
import { KonserveError, withKey } from '../errors.js'
import { type Key, decodeKey } from '../format/key.js'
import type { NewRecord } from '../backing/index.js'
import {
  type ArchiveCounts,
  ByteReader,
  type EndFrame,
  FRAME_DATA,
  FRAME_END,
  FRAME_KEY,
  FRAME_RECORD,
  FRAME_TRAILER,
  HEADER_LEN,
  KIND_BLOB,
  KIND_LOG,
  type KeyFrame,
  type ReadFrame,
  archiveError,
  chain,
  decodeEndFrame,
  decodeHeader,
  decodeKeyFrame,
  decodeRecordFrame,
  decodeTrailer,
  readFrame,
} from './format.js'
import { type RawLogSink, appendRecords, blobWriter, deleteKey, lockKey, logWriter, putEntry, trimRecords } from './raw.js'
import { type Store, whileOpen } from '../store.js'
import { byteSource, bytesOf } from '../sources.js'

export interface ImportProgress extends ArchiveCounts {
  /** Bytes of the archive read so far. */
  archiveBytes: number
}

export interface ImportOptions {
  /** Called after each key. */
  onProgress?: (p: ImportProgress) => void
}

/** Log records appended per write, and the most bytes they hold. */
const LOG_BATCH = 1024
const LOG_BATCH_BYTES = 8 << 20

/**
 * Reads an archive from `next` (the next byte piece, undefined at the end)
 * into `store`. Each key of the archive replaces the store's key of the same
 * name; other keys stay. Returns the archive's counts.
 */
export async function importPieces(store: Store, next: () => Promise<Uint8Array | undefined>, opts: ImportOptions = {}): Promise<ArchiveCounts> {
  const r = new ByteReader(next)
  const { sum, version } = decodeHeader(await r.read(HEADER_LEN))
  let checksum = sum
  const counts: ArchiveCounts = { keys: 0, values: 0, blobs: 0, logs: 0, records: 0, bytes: 0 }

  /**
   * The next frame of a key, chained into the checksum. An END frame is
   * decoded here and, from version 2, its running checksum compared with the
   * chain so far: frames each intact but reordered, dropped or spliced in
   * from elsewhere are found before the key is written.
   */
  const nextFrame: NextFrame = async () => {
    const f = await readFrame(r, version)
    const prior = checksum
    checksum = chain(checksum, f.sum)
    if (f.type !== FRAME_END) return { ...f, end: undefined }
    const end = decodeEndFrame(f.body, version)
    if (end.chain !== undefined && end.chain !== prior) {
      throw archiveError('the archive checksum at the end of a key does not match (frames reordered, dropped or from another archive)', f.offset)
    }
    return { ...f, end }
  }

  for (;;) {
    const f = await readFrame(r, version)
    if (f.type === FRAME_TRAILER) {
      const t = decodeTrailer(f.body)
      if (t.checksum !== checksum) throw archiveError('the archive checksum does not match', f.offset)
      for (const k of Object.keys(counts) as (keyof ArchiveCounts)[]) {
        if (t.counts[k] !== counts[k]) throw archiveError(`the trailer counts ${t.counts[k]} ${k}, the archive holds ${counts[k]}`, f.offset)
      }
      if (!(await r.atEnd())) throw archiveError('bytes follow the trailer', r.offset)
      return counts
    }
    if (f.type !== FRAME_KEY) throw archiveError(`a frame of type ${f.type} where a KEY frame belongs`, f.offset)
    checksum = chain(checksum, f.sum)
    const k = decodeKeyFrame(f.body)
    const key = k.key.slice()
    let name: Key
    try {
      name = decodeKey(key)
    } catch (err) {
      throw archiveError(`a KEY frame holds no valid key (${(err as Error).message})`, f.offset)
    }
    const entry: KeyFrame = { ...k, key, meta: k.meta.slice() }
    try {
      if (k.kind === KIND_LOG) await importLog(store, entry, nextFrame, counts)
      else await importData(store, entry, nextFrame, counts)
    } catch (err) {
      throw withKey(err, name)
    }
    counts.keys++
    opts.onProgress?.({ ...counts, archiveBytes: r.offset })
  }
}

/** A key's next frame; an END frame comes decoded and checked. */
type NextFrame = () => Promise<ReadFrame & { end: EndFrame | undefined }>

/** The DATA frames of a value or blob up to its END, each handed to `take`; checks their total. */
async function readData(k: KeyFrame, nextFrame: NextFrame, take: (bytes: Uint8Array) => Promise<void> | void): Promise<void> {
  let got = 0
  for (;;) {
    const f = await nextFrame()
    if (f.type === FRAME_DATA) {
      got += f.body.length
      if (got > k.size) throw archiveError(`more than the ${k.size} bytes its KEY frame announced`, f.offset)
      await take(f.body)
      continue
    }
    if (!f.end) throw archiveError(`a frame of type ${f.type} inside a value`, f.offset)
    const n = f.end.count
    if (n !== k.size || got !== k.size) throw archiveError(`a value of ${got} bytes where ${k.size} were announced`, f.offset)
    return
  }
}

async function importData(store: Store, k: KeyFrame, nextFrame: NextFrame, counts: ArchiveCounts): Promise<void> {
  if (k.kind === KIND_BLOB) {
    if (k.serializer !== 0) throw archiveError(`a blob with serializer ${k.serializer}`)
    // Streamed into a staging file, committed only once its END frame checked out.
    const unlock = await lockKey(store, k.key)
    try {
      const sink = await blobWriter(store, k.key, k.meta)
      try {
        await readData(k, nextFrame, (b) => sink.write(b))
        await sink.commit()
      } catch (err) {
        try {
          sink.abort()
        } catch {}
        throw err
      }
    } finally {
      unlock()
    }
    counts.blobs++
  } else {
    if (k.serializer === 0) throw archiveError('a value with serializer 0 (the blob serializer)')
    if (k.size > 0x7fffffff) throw new KonserveError('ERR_NOT_SUPPORTED', `a value of ${k.size} bytes is larger than this build reads whole`)
    const value = new Uint8Array(k.size)
    let at = 0
    await readData(k, nextFrame, (b) => {
      value.set(b, at)
      at += b.length
    })
    const unlock = await lockKey(store, k.key)
    try {
      await putEntry(store, k.key, k.serializer, k.meta, value)
    } finally {
      unlock()
    }
    counts.values++
  }
  counts.bytes += k.size
}

/** Where an imported log's records go, batch by batch. */
interface LogTarget {
  append(batch: NewRecord[]): Promise<void>
  /** After the END frame checked out, with the number of records. */
  finish(count: number): Promise<void>
  /** The import failed inside the log. */
  fail(): Promise<void>
}

/**
 * A staged log (Backing.logWriter: the file stores): written whole beside
 * the key and committed over it at the END, so the key keeps its old
 * contents until then, also if the process dies in between.
 */
function stagedLog(w: RawLogSink): LogTarget {
  return {
    append: (batch) => w.append(batch),
    finish: () => w.commit(),
    fail: async () => w.abort(),
  }
}

/**
 * A log written on the live key (backings without a staged writer): the key
 * is deleted, then the log appended batch by batch. Its first index `f` is
 * restored by appending `f` empty placeholder records first and trimming
 * them with the log's own metadata. If the import fails inside the log, the
 * key is deleted; if the process dies, the log is left part-written.
 */
async function liveLog(store: Store, k: KeyFrame): Promise<LogTarget> {
  const first = k.size
  let written = false
  const append = async (batch: NewRecord[]) => {
    await appendRecords(store, k.key, batch, k.meta)
    written = true
  }
  const placeholders = async (n: number) => {
    for (let done = 0; done < n; ) {
      const m = Math.min(LOG_BATCH * 16, n - done)
      await append(Array.from({ length: m }, () => ({ serializer: 0, stamp: 0, bytes: new Uint8Array(0) })))
      done += m
    }
  }
  const fail = async () => {
    if (written) await deleteKey(store, k.key)
  }
  await deleteKey(store, k.key)
  try {
    await placeholders(first)
  } catch (err) {
    await fail().catch(() => {})
    throw err
  }
  return {
    append,
    async finish(count) {
      if (count === 0) {
        // An empty log: one placeholder, trimmed away (the log starts again at index 0).
        await placeholders(1)
        await trimRecords(store, k.key, 1, k.meta)
      } else if (first > 0) {
        await trimRecords(store, k.key, first, k.meta)
      }
    },
    fail,
  }
}

/**
 * A log, under the key's lock: its records in batches to a staged log where
 * the store has one, else to the live key (see stagedLog, liveLog), so that
 * indexes, and with them the log's revision, are as exported.
 */
async function importLog(store: Store, k: KeyFrame, nextFrame: NextFrame, counts: ArchiveCounts): Promise<void> {
  if (k.serializer !== 0) throw archiveError(`a log with serializer ${k.serializer}`)
  const first = k.size
  const unlock = await lockKey(store, k.key)
  let target: LogTarget | undefined
  try {
    const staged = await logWriter(store, k.key, k.meta, first)
    target = staged ? stagedLog(staged) : await liveLog(store, k)
    let expect = first
    let batch: NewRecord[] = []
    let batchBytes = 0
    const flush = async () => {
      if (batch.length === 0) return
      await target!.append(batch)
      batch = []
      batchBytes = 0
    }
    for (;;) {
      const f = await nextFrame()
      if (f.type === FRAME_RECORD) {
        const rec = decodeRecordFrame(f.body)
        if (rec.index !== expect) throw archiveError(`record ${rec.index} where record ${expect} belongs`, f.offset)
        expect++
        batch.push({ serializer: rec.serializer, stamp: rec.stamp, bytes: rec.bytes })
        batchBytes += rec.bytes.length
        if (batch.length >= LOG_BATCH || batchBytes >= LOG_BATCH_BYTES) await flush()
        continue
      }
      if (!f.end) throw archiveError(`a frame of type ${f.type} inside a log`, f.offset)
      const n = f.end.count
      if (n !== expect - first) throw archiveError(`a log of ${expect - first} records where its END frame counts ${n}`, f.offset)
      break
    }
    await flush()
    const count = expect - first
    if (count === 0 && first !== 0) throw archiveError('an empty log whose first index is not 0')
    await target.finish(count)
    counts.logs++
    counts.records += count
  } catch (err) {
    try {
      await target?.fail()
    } catch {}
    throw err
  } finally {
    unlock()
  }
}

/**
 * Reads an archive from `source` (bytes, a Node Readable, a web
 * ReadableStream, a Blob, or an iterable or async iterable of byte pieces)
 * into `store`: the body of both entries' `importStore`.
 */
export function importFrom(store: Store, source: unknown, opts?: ImportOptions): Promise<ArchiveCounts> {
  // An import is one write of the store: a close called meanwhile waits for it to end.
  return whileOpen(store.backing, importAll(store, source, opts))
}

async function importAll(store: Store, source: unknown, opts?: ImportOptions): Promise<ArchiveCounts> {
  const whole = bytesOf(source)
  if (whole) {
    let given = false
    return importPieces(
      store,
      async () => {
        if (given) return undefined
        given = true
        return whole
      },
      opts,
    )
  }
  const src = byteSource(source)
  if (!src) {
    throw new KonserveError('ERR_INVALID_ARGUMENT', 'importStore reads a Readable, a ReadableStream, a Blob, an async iterable of byte pieces or bytes')
  }
  try {
    return await importPieces(
      store,
      async () => {
        const r = await src.next()
        return r.done ? undefined : r.value
      },
      opts,
    )
  } catch (err) {
    await src.close(err)
    throw err
  }
}
