/**
 * The last-write clock: wall time, but never behind a stamp it already gave out
 * in this process, so a wall-clock step back cannot make a new write look old
 * (konserve issue #156: GC swept live data after such a step).
 */
let last = 0

export function now(): Date {
  const t = Date.now()
  last = t > last ? t : last
  return new Date(last)
}
