/**
 * The per-process last-write clock: wall time, but never behind a stamp this
 * process already gave out, so a wall-clock step back cannot make a new
 * write look old (GC once swept live data after such a step;
 * docs/RELIABILITY.md promise 13). A file store adds a floor kept in the
 * store directory, shared by every process that writes it:
 * ./backends/pure/clock.ts (docs/FORMAT.md §7).
 */
let last = 0

/** The per-process clock, in ms since the epoch. */
export function nowMs(): number {
  const t = Date.now()
  last = Math.max(t, last)
  return last
}

/** The per-process clock. */
export function now(): Date {
  return new Date(nowMs())
}
