/**
 * Sources that fail (issue #12.3): a stream or iterable given to bassoc that
 * errors, throws or is destroyed, before its first piece, midway or after
 * many chunks, makes the call fail with ERR_SOURCE (key and cause attached),
 * leaves the old blob as it was and nothing staged, and never crashes the
 * process. Also the multi-key calls' iterables.
 */
import test from 'ava'
import { execFile } from 'node:child_process'
import { createReadStream, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { promisify } from 'node:util'
import * as k from 'konserve'
import { type Mode, type StoreKind, storeKinds, tempDir } from './helpers/api.js'

const KiB = 1024
const MiB = 1 << 20
const kinds = storeKinds.filter((s) => ['memory', 'file', 'pure file', 'cached file', 'tiered memory/file write-behind'].includes(s.name))

function pattern(n: number, seed = 1): Buffer {
  const b = Buffer.alloc(n)
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7 + (i >> 9)) & 255
  return b
}

function stagingFiles(s: k.Store): string[] {
  return s.path ? readdirSync(s.path).filter((n) => n.endsWith('.stage')) : []
}

/** How far a source gets before it fails: the number of 64 KiB pieces it yields. */
const stages = { 'before the first piece': 0, midway: 3, 'after many chunks': 64 } as const
type Stage = keyof typeof stages
const PIECE = 64 * KiB

/** Async sources that fail after `n` pieces, each new on every call. */
const asyncSources: Record<string, (n: number) => unknown> = {
  'Readable that errors': (n) => {
    let i = 0
    return new Readable({
      read() {
        if (i < n) this.push(pattern(PIECE, i++))
        else this.destroy(new Error('boom'))
      },
    })
  },
  'Readable destroyed without an error': (n) => {
    let i = 0
    return new Readable({
      read() {
        if (i < n) this.push(pattern(PIECE, i++))
        else this.destroy()
      },
    })
  },
  'Readable whose _read throws': (n) => {
    let i = 0
    return new Readable({
      read() {
        if (i < n) this.push(pattern(PIECE, i++))
        else throw new Error('boom')
      },
    })
  },
  'web ReadableStream that errors': (n) => {
    let i = 0
    return new ReadableStream<Uint8Array>({
      pull(c) {
        if (i < n) c.enqueue(pattern(PIECE, i++))
        else c.error(new Error('boom'))
      },
    })
  },
  'web ReadableStream whose pull throws': (n) => {
    let i = 0
    return new ReadableStream<Uint8Array>({
      pull(c) {
        if (i < n) c.enqueue(pattern(PIECE, i++))
        else throw new Error('boom')
      },
    })
  },
  'async generator that throws': (n) =>
    (async function* () {
      for (let i = 0; i < n; i++) yield pattern(PIECE, i)
      throw new Error('boom')
    })(),
  'async iterator whose next rejects': (n) => {
    let i = 0
    return {
      [Symbol.asyncIterator]: () => ({
        next: () => (i < n ? Promise.resolve({ done: false, value: pattern(PIECE, i++) }) : Promise.reject(new Error('boom'))),
      }),
    }
  },
}

/** Sync sources (both forms of bassoc read them). */
const syncSources: Record<string, (n: number) => unknown> = {
  'generator that throws': (n) =>
    (function* () {
      for (let i = 0; i < n; i++) yield pattern(PIECE, i)
      throw new Error('boom')
    })(),
  'iterator whose next throws': (n) => {
    let i = 0
    return {
      [Symbol.iterator]: () => ({
        next: () => {
          if (i < n) return { done: false, value: pattern(PIECE, i++) }
          throw new Error('boom')
        },
      }),
    }
  },
}

async function open(kind: StoreKind, mode: Mode): Promise<k.Store> {
  return kind.open(mode)
}

/** The call failed as it should and left the store as it was. */
async function assertUnchanged(t: any, s: k.Store, err: unknown, old: Buffer, cause: RegExp) {
  const e = err as k.KonserveError
  t.true(e instanceof k.KonserveError, `a KonserveError, got ${String(err)}`)
  t.is(e.code, 'ERR_SOURCE', e.message)
  t.is(e.key, 'v')
  t.regex(e.message, /"v"/, 'the message names the key')
  t.regex(String((e.cause as Error)?.message ?? ''), cause)
  t.true((await k.readBlob(s, 'v'))!.equals(old), 'the old blob is unchanged')
  t.is((await k.getMeta(s, 'v'))!.revision, 1, 'no new revision')
  t.deepEqual(stagingFiles(s), [], 'nothing staged')
}

for (const kind of kinds) {
  for (const [name, make] of Object.entries(asyncSources)) {
    for (const stage of Object.keys(stages) as Stage[]) {
      test(`${kind.name}: a ${name} ${stage} fails bassoc with ERR_SOURCE and leaves the old blob`, async (t) => {
        const s = await open(kind, 'async')
        const old = pattern(3000, 99)
        await k.bassoc(s, 'v', old)
        const source = make(stages[stage])
        const err = await t.throwsAsync(k.bassoc(s, 'v', source as k.BlobInput))
        const cause = name.includes('without an error') ? /destroyed before its end/ : /boom/
        await assertUnchanged(t, s, err, old, cause)
        if (source instanceof Readable) t.true(source.destroyed, 'the stream is destroyed')
      })
    }
  }

  for (const mode of ['sync', 'async'] as Mode[]) {
    for (const [name, make] of Object.entries(syncSources)) {
      for (const stage of Object.keys(stages) as Stage[]) {
        test(`${kind.name} ${mode}: an Iterable (${name}) ${stage} fails bassoc with ERR_SOURCE`, async (t) => {
          const s = await open(kind, mode)
          const old = pattern(3000, 99)
          await k.bassoc(s, 'v', old, mode === 'sync' ? { sync: true } : {})
          const source = make(stages[stage]) as Iterable<Uint8Array>
          const err =
            mode === 'sync' ? t.throws(() => k.bassoc(s, 'v', source, { sync: true })) : await t.throwsAsync(k.bassoc(s, 'v', source))
          await assertUnchanged(t, s, err, old, /boom/)
        })
      }
    }

    test(`${kind.name} ${mode}: an Iterable of pieces is stored whole`, async (t) => {
      const s = await open(kind, mode)
      const parts = [pattern(10), 'text', pattern(MiB + 3, 2), new Uint16Array([1, 2, 3])]
      const want = Buffer.concat([parts[0] as Buffer, Buffer.from('text'), parts[2] as Buffer, Buffer.from(new Uint16Array([1, 2, 3]).buffer)])
      const opts = mode === 'sync' ? { sync: true as const } : {}
      await k.bassoc(s, 'arr', parts as Iterable<Uint8Array>, opts)
      await k.bassoc(s, 'gen', (function* () { yield* parts as Uint8Array[] })(), opts)
      t.true((await k.readBlob(s, 'arr'))!.equals(want))
      t.true((await k.readBlob(s, 'gen'))!.equals(want))
    })
  }

  test(`${kind.name}: a source that is slow then fails never shows a half-written blob`, async (t) => {
    const s = await open(kind, 'async')
    const old = pattern(5000, 3)
    await k.bassoc(s, 'v', old)
    let reached!: () => void
    const atGate = new Promise<void>((r) => (reached = r))
    let release!: () => void
    const gate = new Promise<void>((r) => (release = r))
    const slow = (async function* () {
      for (let i = 0; i < 48; i++) {
        yield pattern(PIECE, i)
        await new Promise((r) => setImmediate(r))
      }
      reached()
      await gate
      throw new Error('boom after 3 MiB')
    })()
    const writing = k.bassoc(s, 'v', slow)
    writing.catch(() => {})
    await atGate
    // 3 MiB went to the sink; readers still see the old blob, whole.
    if (s.path) t.is(stagingFiles(s).length, 1, 'the new blob is being staged')
    t.true((await k.readBlob(s, 'v'))!.equals(old))
    t.is((await k.getMeta(s, 'v'))!.revision, 1)
    release()
    await assertUnchanged(t, s, await t.throwsAsync(writing), old, /boom after 3 MiB/)
  })

  test(`${kind.name}: a stream refused for another reason is destroyed, and its later error does not crash`, async (t) => {
    const s = await open(kind, 'async')
    await k.bassoc(s, 'v', pattern(10))
    const stream = new Readable({ read() {} })
    await t.throwsAsync(k.bassoc(s, 'v', stream, { expectedRevision: 7 }), { code: 'ERR_REVISION_MISMATCH' } as any)
    t.true(stream.destroyed)
    stream.emit('error', new Error('late'))
    t.deepEqual(stagingFiles(s), [])
  })
}

test('a file stream of a missing file rejects with ERR_SOURCE naming the key (README example)', async (t) => {
  for (const native of [true, false]) {
    const s = await k.connectFsStore(join(tempDir(), 'store'), { native })
    await k.bassoc(s, 'video', 'old')
    const err = await t.throwsAsync(k.bassoc(s, 'video', createReadStream(join(tempDir(), 'big.mp4'))), { code: 'ERR_SOURCE' } as any)
    t.regex(err!.message, /ENOENT/)
    t.regex(err!.message, /"video"/)
    t.is(((err as k.KonserveError).cause as NodeJS.ErrnoException).code, 'ENOENT')
    t.is((await k.readBlob(s, 'video'))!.toString(), 'old')
    t.deepEqual(stagingFiles(s), [])
  }
})

test('the process survives a failing stream: a child process running the README example exits 0', async (t) => {
  const script = `
    import * as k from 'konserve'
    import fs from 'node:fs'
    const db = await k.connectFsStore(process.argv[1])
    try { await k.bassoc(db, 'video', fs.createReadStream(process.argv[1] + '/missing.mp4')) }
    catch (e) { console.log(e.code) }
    // An iterable that fails in the sync form.
    try { k.bassoc(db, 'x', (function* () { yield 'a'; throw new Error('no') })(), { sync: true }) }
    catch (e) { console.log(e.code) }
    // A stream whose failure arrives while the write waits for the key's lock.
    const held = k.bassoc(db, 'video', (async function* () { yield 'a'; await new Promise((r) => setImmediate(r)); yield 'b' })())
    const early = new (await import('node:stream')).Readable({ read() {} })
    const second = k.bassoc(db, 'video', early)
    early.destroy(new Error('early'))
    await held
    try { await second } catch (e) { console.log(e.code) }
    console.log((await k.readBlob(db, 'video')).toString())
  `
  const dir = join(tempDir(), 'store')
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script, dir], { cwd: new URL('..', import.meta.url).pathname })
  t.deepEqual(stdout.trim().split('\n'), ['ERR_SOURCE', 'ERR_SOURCE', 'ERR_SOURCE', 'ab'])
})

test('a locked or non-byte source is an ERR_INVALID_ARGUMENT, and a stream in the sync form too', async (t) => {
  const s = await k.newMemStore()
  const locked = new ReadableStream<Uint8Array>()
  locked.getReader()
  await t.throwsAsync(k.bassoc(s, 'v', locked), { code: 'ERR_INVALID_ARGUMENT' } as any)
  // An array of byte numbers is bytes (below); anything else in an array is not a byte piece.
  await t.throwsAsync(k.bassoc(s, 'v', [1, 256] as any), { code: 'ERR_INVALID_ARGUMENT' } as any)
  await t.throwsAsync(k.bassoc(s, 'v', [1, 1.5] as any), { code: 'ERR_INVALID_ARGUMENT' } as any)
  const sync = await k.newMemStore({ sync: true })
  const stream = Readable.from([Buffer.from('x')])
  t.throws(() => k.bassoc(sync, 'v', stream, { sync: true }), { code: 'ERR_INVALID_ARGUMENT', message: /async form/ } as any)
  t.true(stream.destroyed, 'a refused stream is not left half-listened-to')
  t.false(k.exists(sync, 'v', { sync: true }))
})

test('a sync bassoc given any stream fails with one error that names the async form; nothing escapes to the process', async (t) => {
  const sync = await k.newMemStore({ sync: true })
  const escaped: unknown[] = []
  const onUncaught = (err: unknown) => escaped.push(err)
  process.on('uncaughtException', onUncaught)
  process.on('unhandledRejection', onUncaught)
  try {
    const streams: [string, unknown][] = [
      ['a Readable', Readable.from([Buffer.from('x')])],
      ['a Readable', createReadStream(join(tempDir(), 'missing-file'))],
      ['a ReadableStream', new ReadableStream<Uint8Array>({ start: (c) => c.enqueue(new Uint8Array([1])) })],
      ['an AsyncIterable', (async function* () { yield new Uint8Array([1]) })()],
    ]
    for (const [kind, stream] of streams) {
      const err = t.throws(() => k.bassoc(sync, 'v', stream as k.BlobInput, { sync: true })) as k.KonserveError
      t.is(err.code, 'ERR_INVALID_ARGUMENT')
      t.is(err.message, `${kind} can only be stored with the async form of bassoc (key "v")`)
    }
    // Let any cleanup error of the refused streams surface before looking.
    await new Promise((r) => setTimeout(r, 50))
    t.deepEqual(escaped, [])
    t.false(k.exists(sync, 'v', { sync: true }))
  } finally {
    process.off('uncaughtException', onUncaught)
    process.off('unhandledRejection', onUncaught)
  }
})

for (const kind of kinds) {
  for (const mode of ['sync', 'async'] as Mode[]) {
    test(`${kind.name} ${mode}: bassoc takes an array of byte numbers, as konserve takes a vector of them`, async (t) => {
      const s = await kind.open(mode)
      const opts = mode === 'sync' ? { sync: true as const } : {}
      t.true(await k.bassoc(s, 'bytes', [0, 1, 127, 128, 255], opts))
      const back =
        mode === 'sync'
          ? k.bget(s, 'bytes', ({ blob }) => [...blob!], { sync: true })
          : await k.bget(s, 'bytes', async ({ stream }) => {
              const all: number[] = []
              for await (const c of stream!) all.push(...(c as Buffer))
              return all
            })
      t.deepEqual(back, [0, 1, 127, 128, 255])
      t.is((await k.getMeta(s, 'bytes', opts))?.type, 'binary')
    })
  }
}

for (const mode of ['sync', 'async'] as Mode[]) {
  test(`multiGet, multiAssoc, multiDissoc: an iterable that throws fails with ERR_SOURCE (${mode}), nothing written`, async (t) => {
    const s = mode === 'sync' ? k.newMemStore({ sync: true }) : await k.newMemStore()
    const opts = mode === 'sync' ? { sync: true as const } : {}
    const broken = function* <T>(first: T): Generator<T> {
      yield first
      throw new Error('broken iterable')
    }
    const call = async (f: () => unknown) => {
      if (mode === 'sync') return t.throws(f)
      let r: unknown
      t.notThrows(() => (r = f()), 'the async form rejects, it does not throw')
      return t.throwsAsync(r as Promise<unknown>)
    }
    for (const f of [
      () => k.multiGet(s, broken('a'), opts),
      () => k.multiAssoc(s, broken(['a', 1] as const), opts),
      () => k.multiDissoc(s, broken('a'), opts),
    ]) {
      const err = (await call(f)) as k.KonserveError
      t.is(err.code, 'ERR_SOURCE')
      t.regex((err.cause as Error).message, /broken iterable/)
    }
    t.false(await k.exists(s, 'a', opts))
  })
}
