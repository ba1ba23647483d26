/**
 * User sources of bytes (what `bassoc` streams to disk) and of items (what
 * the multi-key calls iterate), brought to one shape.
 *
 * A source that fails, throws or is destroyed before its end makes the call
 * fail with `ERR_SOURCE` (the source's error as `cause`); it never crashes
 * the process and never ends a blob early. For that, a Node Readable gets its
 * 'error' listener the moment it is handed over: its own async iterator only
 * listens once the first piece is asked for, and a stream that fails while
 * the write waits for its lock (a `createReadStream` of a missing file) would
 * otherwise throw an unhandled 'error' event.
 */
import { KonserveError } from './errors.js'

const utf8 = new TextEncoder()

/** Bytes given whole (not a stream), as a Uint8Array view; undefined for anything else. */
export function bytesOf(input: unknown): Uint8Array | undefined {
  if (input instanceof Uint8Array) return input
  if (input instanceof ArrayBuffer) return new Uint8Array(input)
  if (ArrayBuffer.isView(input)) return new Uint8Array(input.buffer, input.byteOffset, input.byteLength)
  if (typeof input === 'string') return utf8.encode(input)
  // konserve takes a vector of byte numbers: an array whose every item is an integer 0..255.
  if (Array.isArray(input) && input.length > 0 && input.every(isByte)) return Uint8Array.from(input)
  return undefined
}

const isByte = (v: unknown): boolean => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 255

/** A source of byte pieces, read one at a time. */
export interface ByteSource {
  /** What the source is, for messages. */
  readonly kind: 'Readable' | 'ReadableStream' | 'AsyncIterable' | 'Iterable'
  /** Whether `nextSync` works: only a sync Iterable can be read by a blocking call. */
  readonly sync: boolean
  /** The next piece; throws ERR_SOURCE if the source failed. */
  nextSync(): IteratorResult<Uint8Array, undefined>
  /** The next piece; rejects with ERR_SOURCE if the source failed. */
  next(): Promise<IteratorResult<Uint8Array, undefined>>
  /**
   * Stops reading before the end: destroys a Readable, cancels a web stream,
   * returns an iterator. Never throws; idempotent. The promise (for async
   * iterators' `return`) may be left unawaited.
   */
  close(reason?: unknown): Promise<void>
}

const DONE: IteratorResult<Uint8Array, undefined> = { done: true, value: undefined }

/** The error a call fails with when its source does. */
export function sourceError(cause: unknown, what: string): KonserveError {
  if (cause instanceof KonserveError) return cause
  const message = cause instanceof Error ? cause.message : String(cause)
  return new KonserveError('ERR_SOURCE', `the ${what} failed: ${message}`, { cause })
}

function pieceOf(value: unknown, kind: string): Uint8Array {
  const piece = bytesOf(value)
  if (!piece) {
    throw new KonserveError('ERR_INVALID_ARGUMENT', `a bassoc ${kind} must yield Uint8Array, Buffer or string pieces, got ${describe(value)}`)
  }
  return piece
}

function describe(v: unknown): string {
  if (v === null) return 'null'
  if (typeof v === 'object') return (v as object).constructor?.name ?? 'an object'
  return typeof v
}

function checkResult(r: unknown, kind: string): IteratorResult<unknown> {
  if (r === null || typeof r !== 'object') throw sourceError(new TypeError(`iterator result ${String(r)} is not an object`), `source (${kind})`)
  return r as IteratorResult<unknown>
}

/** The parts of a Node Readable used here (duck-typed: any stream module's Readable works). */
interface NodeReadable {
  read(): unknown
  on(event: string, f: (...a: never[]) => void): unknown
  off?(event: string, f: (...a: never[]) => void): unknown
  removeListener(event: string, f: (...a: never[]) => void): unknown
  destroy(err?: Error): unknown
  destroyed?: boolean
  errored?: unknown
  readableEnded?: boolean
}

function isNodeReadable(v: unknown): v is NodeReadable {
  const s = v as NodeReadable
  return (
    v !== null &&
    typeof v === 'object' &&
    typeof s.read === 'function' &&
    typeof s.on === 'function' &&
    typeof s.removeListener === 'function' &&
    typeof s.destroy === 'function' &&
    typeof (v as { pipe?: unknown }).pipe === 'function'
  )
}

function isReadableStream(v: unknown): v is ReadableStream<Uint8Array> {
  return typeof ReadableStream !== 'undefined' && v instanceof ReadableStream
}

const noop = (): void => {}

/**
 * A Readable read with `read()` on 'readable', its failure recorded from the
 * moment it is handed over. 'close' before 'end' (destroyed without an error)
 * is a failure too: the bytes stop short of the stream's end.
 */
function readableSource(s: NodeReadable): ByteSource {
  const what = 'source stream (Readable)'
  let error: unknown
  let failed = false
  let ended = s.readableEnded === true
  let wake: (() => void) | undefined
  const poke = (): void => {
    const w = wake
    wake = undefined
    w?.()
  }
  const fail = (e: unknown): void => {
    if (!failed) {
      failed = true
      error = e ?? new Error('the stream failed without an error')
    }
  }
  const onError = (e: unknown): void => {
    fail(e)
    poke()
  }
  const onEnd = (): void => {
    ended = true
    poke()
  }
  const onClose = (): void => {
    if (!ended) fail(s.errored ?? new Error('the stream was destroyed before its end'))
    poke()
  }
  // The 'error' listener stays for good: an error after we stop reading (a
  // file stream whose open fails after it was destroyed) must not crash.
  s.on('error', onError)
  s.on('end', onEnd)
  s.on('close', onClose)
  s.on('readable', poke)
  const detach = (): void => {
    s.removeListener('end', onEnd)
    s.removeListener('close', onClose)
    s.removeListener('readable', poke)
  }
  const check = (): void => {
    if (!failed && !ended && s.destroyed) fail(s.errored ?? new Error('the stream was destroyed before its end'))
    if (failed) {
      detach()
      throw sourceError(error, what)
    }
  }
  return {
    kind: 'Readable',
    sync: false,
    nextSync() {
      throw new KonserveError('ERR_INVALID_ARGUMENT', 'a stream can only be stored with the async form of bassoc')
    },
    async next() {
      for (;;) {
        check()
        let chunk: unknown
        try {
          chunk = s.read()
        } catch (err) {
          fail(err)
          continue
        }
        if (chunk !== null && chunk !== undefined) return { done: false, value: pieceOf(chunk, 'stream') }
        if (ended) {
          detach()
          return DONE
        }
        await new Promise<void>((r) => {
          wake = r
        })
      }
    },
    async close(reason) {
      detach()
      if (!s.destroyed) {
        try {
          s.destroy()
        } catch {
          // A stream that fails to destroy itself is not our failure to report.
        }
      }
      void reason
    },
  }
}

function webStreamSource(stream: ReadableStream<Uint8Array>): ByteSource {
  const what = 'source stream (ReadableStream)'
  let reader: ReadableStreamDefaultReader<Uint8Array>
  try {
    reader = stream.getReader()
  } catch (err) {
    throw new KonserveError('ERR_INVALID_ARGUMENT', `bassoc cannot read the ReadableStream: ${(err as Error).message}`, { cause: err })
  }
  // The spec marks this promise handled; a polyfill might not.
  reader.closed.catch(noop)
  let closed = false
  return {
    kind: 'ReadableStream',
    sync: false,
    nextSync() {
      throw new KonserveError('ERR_INVALID_ARGUMENT', 'a stream can only be stored with the async form of bassoc')
    },
    async next() {
      let r: ReadableStreamReadResult<Uint8Array>
      try {
        r = await reader.read()
      } catch (err) {
        closed = true
        throw sourceError(err, what)
      }
      if (r.done) {
        closed = true
        return DONE
      }
      return { done: false, value: pieceOf(r.value, 'stream') }
    },
    async close(reason) {
      if (closed) return
      closed = true
      try {
        await reader.cancel(reason)
      } catch {
        // cancel rejects if the stream's cancel algorithm fails: nothing to do.
      }
    },
  }
}

function asyncIterableSource(input: AsyncIterable<unknown>): ByteSource {
  const what = 'source (AsyncIterable)'
  let it: AsyncIterator<unknown>
  try {
    it = input[Symbol.asyncIterator]()
  } catch (err) {
    throw sourceError(err, what)
  }
  let finished = false
  return {
    kind: 'AsyncIterable',
    sync: false,
    nextSync() {
      throw new KonserveError('ERR_INVALID_ARGUMENT', 'a stream can only be stored with the async form of bassoc')
    },
    async next() {
      let r: IteratorResult<unknown>
      try {
        r = checkResult(await it.next(), 'AsyncIterable')
      } catch (err) {
        finished = true
        throw sourceError(err, what)
      }
      if (r.done) {
        finished = true
        return DONE
      }
      return { done: false, value: pieceOf(r.value, 'AsyncIterable') }
    },
    async close() {
      if (finished) return
      finished = true
      try {
        await it.return?.()
      } catch {
        // Its cleanup failed; the call already fails with the first error.
      }
    },
  }
}

function iterableSource(input: Iterable<unknown>): ByteSource {
  const what = 'source (Iterable)'
  let it: Iterator<unknown>
  try {
    it = input[Symbol.iterator]()
  } catch (err) {
    throw sourceError(err, what)
  }
  let finished = false
  const nextSync = (): IteratorResult<Uint8Array, undefined> => {
    let r: IteratorResult<unknown>
    try {
      r = checkResult(it.next(), 'Iterable')
    } catch (err) {
      finished = true
      throw sourceError(err, what)
    }
    if (r.done) {
      finished = true
      return DONE
    }
    return { done: false, value: pieceOf(r.value, 'Iterable') }
  }
  return {
    kind: 'Iterable',
    sync: true,
    nextSync,
    next: async () => nextSync(),
    async close() {
      if (finished) return
      finished = true
      try {
        it.return?.()
      } catch {
        // As for async iterators.
      }
    },
  }
}

/**
 * The source in `input` (a Node Readable, a web ReadableStream, a Blob, an
 * AsyncIterable or a sync Iterable of byte pieces), listened to from now on;
 * undefined if `input` is none of these. Bytes given whole (`bytesOf`) are
 * not a source: check them first (a string and a Uint8Array are iterable).
 */
export function byteSource(input: unknown): ByteSource | undefined {
  if (input === null || typeof input !== 'object') return undefined
  if (isNodeReadable(input)) return readableSource(input)
  if (isReadableStream(input)) return webStreamSource(input)
  // A Blob (a File) streams in through its ReadableStream, never read whole.
  if (typeof Blob !== 'undefined' && input instanceof Blob) return webStreamSource(input.stream() as ReadableStream<Uint8Array>)
  if (Symbol.asyncIterator in input) return asyncIterableSource(input as AsyncIterable<unknown>)
  if (Symbol.iterator in input) return iterableSource(input as Iterable<unknown>)
  return undefined
}

/**
 * The items of an iterable argument (the keys of multiGet, the pairs of
 * multiAssoc) as an array; an iterable that throws fails with ERR_SOURCE.
 */
export function itemsOf<T>(input: Iterable<T>, what: string): T[] {
  if (Array.isArray(input)) return input.slice()
  if (input == null || typeof (input as { [Symbol.iterator]?: unknown })[Symbol.iterator] !== 'function') {
    throw new KonserveError('ERR_INVALID_ARGUMENT', `${what} takes an iterable, got ${describe(input)}`)
  }
  try {
    return [...input]
  } catch (err) {
    throw sourceError(err, `iterable given to ${what}`)
  }
}
