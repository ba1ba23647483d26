// Timing, latency, memory and event-loop measurement for bench/peers.mjs.
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'

setFlagsFromString('--expose-gc')
/** A full garbage collection (between runs, never inside one). */
export const gc = runInNewContext('gc')

const rss = () => process.memoryUsage.rss()

/** Samples the process's resident set size, at most every 2 ms. */
export class RssSampler {
  constructor() {
    this.base = rss()
    this.peak = this.base
    this.last = performance.now()
    this.timer = setInterval(() => this.sample(), 2)
  }
  sample() {
    const r = rss()
    if (r > this.peak) this.peak = r
    this.last = performance.now()
  }
  tick(now) {
    if (now - this.last >= 2) this.sample()
  }
  stop() {
    clearInterval(this.timer)
    this.sample()
    return this.peak - this.base
  }
}

/** One measured run: ops done, seconds, per-op latencies (ms), peak RSS growth, worst loop delay. */
class Run {
  constructor(api) {
    this.api = api
    this.lat = []
    this.sampler = new RssSampler()
    this.loop = api === 'async' ? monitorEventLoopDelay({ resolution: 2 }) : undefined
    this.loop?.enable()
    this.start = performance.now()
  }
  async finish(ops, bytes = 0) {
    const secs = (performance.now() - this.start) / 1000
    if (this.loop) {
      // A run whose promises never yield to the loop (all microtasks) gives the
      // monitor's timer no chance to fire: let it fire once now, so that the
      // histogram records the stretch the loop was held.
      await new Promise((r) => setTimeout(r, 5))
      this.loop.disable()
    }
    return {
      ops,
      secs,
      bytes,
      lat: this.lat,
      rss: this.sampler.stop(),
      loopMax: this.loop ? this.loop.max / 1e6 : undefined,
      maxOp: this.lat.length ? this.lat.reduce((a, b) => Math.max(a, b), 0) : undefined,
    }
  }
}

/**
 * Runs op(0), op(1), ... one at a time until n ops or maxMs elapsed. A sync
 * api calls op in a plain loop; an async one awaits each call.
 */
export async function serial({ api, n, maxMs = Infinity, op, bytesPerOp = 0 }) {
  const run = new Run(api)
  let i = 0
  if (api === 'sync') {
    for (; i < n; i++) {
      const t0 = performance.now()
      op(i)
      const t1 = performance.now()
      run.lat.push(t1 - t0)
      run.sampler.tick(t1)
      if (t1 - run.start > maxMs) { i++; break }
    }
  } else {
    for (; i < n; i++) {
      const t0 = performance.now()
      await op(i)
      const t1 = performance.now()
      run.lat.push(t1 - t0)
      run.sampler.tick(t1)
      if (t1 - run.start > maxMs) { i++; break }
    }
  }
  return await run.finish(i, i * bytesPerOp)
}

/**
 * Keeps `conc` async ops in flight until n ops were started or maxMs elapsed;
 * waits for all. `bytesOf(i)`: op i's bytes, summed over the ops done.
 */
export async function inflight({ n, conc, maxMs = Infinity, op, bytesOf }) {
  const run = new Run('async')
  let next = 0
  let done = 0
  let bytes = 0
  const worker = async () => {
    while (next < n && performance.now() - run.start < maxMs) {
      const i = next++
      const t0 = performance.now()
      await op(i)
      const t1 = performance.now()
      run.lat.push(t1 - t0)
      run.sampler.tick(t1)
      done++
      if (bytesOf) bytes += bytesOf(i)
    }
  }
  await Promise.all(Array.from({ length: conc }, worker))
  return await run.finish(done, bytes)
}

/** Times one call (sync or async), with the same memory and loop measurements. */
export async function once(api, fn) {
  const run = new Run(api)
  const t0 = performance.now()
  const r = api === 'sync' ? fn() : await fn()
  run.lat.push(performance.now() - t0)
  const m = await run.finish(1)
  m.result = r
  return m
}

// ---------------------------------------------------------------- statistics

export const median = (xs) => {
  if (!xs.length) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

export function percentile(xs, p) {
  if (!xs.length) return NaN
  const s = Float64Array.from(xs).sort()
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]
}

/** A deterministic shuffle (xorshift), so every store reads the keys in the same order. */
export function shuffled(xs, seed = 0x9e3779b9) {
  const a = [...xs]
  let s = seed >>> 0 || 1
  for (let i = a.length - 1; i > 0; i--) {
    s ^= s << 13; s >>>= 0
    s ^= s >>> 17
    s ^= s << 5; s >>>= 0
    const j = s % (i + 1)
    ;[a[i], a[j]] = [a[j], a[i]]
  }
  return a
}

/**
 * The many-blobs case's blob sizes: `count` sizes from `minSize` to `maxSize`,
 * log-uniform, from a fixed xorshift seed (the same for every store and script).
 */
export function manyBlobSizes(count, minSize, maxSize) {
  let s = 0x2545f491
  const rnd = () => {
    s ^= s << 13
    s >>>= 0
    s ^= s >>> 17
    s ^= s << 5
    s >>>= 0
    return s / 2 ** 32
  }
  return Array.from({ length: count }, () => Math.round(minSize * (maxSize / minSize) ** rnd()))
}
