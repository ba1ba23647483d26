/**
 * Runs test suites written for vitest (`test.it`, `test.beforeEach`,
 * `test.afterEach`, `t.expect(x).toBe(y)`) as ava tests: each `it` becomes a
 * serial ava test (the suites share one store between tests) with the hooks
 * around it, and each matcher one ava assertion, so `expect.assertions(n)` is
 * `t.plan(n)`. Only the matchers the suites we run use.
 */
import test, { type ExecutionContext } from 'ava'

type Hook = () => unknown
type Body = (ctx: { expect: Expect }) => unknown

interface Matchers {
  toBe(y: unknown): void
  toEqual(y: unknown): void
  toMatchObject(y: unknown): void
  toBeTruthy(): void
  toBeFalsy(): void
  toBeUndefined(): void
  toBeNull(): void
  toBeDefined(): void
}
type Expect = ((x: unknown) => Matchers & { not: Matchers; rejects: { toThrow(message?: string): Promise<void> } }) & { assertions(n: number): void }

function matchers(t: ExecutionContext, x: unknown, negate: boolean): Matchers {
  const check = (ok: boolean, what: string) => t.true(negate ? !ok : ok, `expected ${String(x)} ${negate ? 'not ' : ''}${what}`)
  const deep = (y: unknown) => {
    if (negate) t.notDeepEqual(x, y)
    else t.deepEqual(x, y)
  }
  return {
    toBe: (y) => (negate ? t.not(x, y) : t.is(x, y)),
    toEqual: deep,
    toMatchObject: (y) => t.like(x as Record<string, unknown>, y as Record<string, unknown>),
    toBeTruthy: () => check(Boolean(x), 'to be truthy'),
    toBeFalsy: () => check(!x, 'to be falsy'),
    toBeUndefined: () => check(x === undefined, 'to be undefined'),
    toBeNull: () => check(x === null, 'to be null'),
    toBeDefined: () => check(x !== undefined, 'to be defined'),
  }
}

export function expectFor(t: ExecutionContext): Expect {
  const expect = ((x: unknown) => ({
    ...matchers(t, x, false),
    not: matchers(t, x, true),
    rejects: {
      toThrow: async (message?: string) => {
        await t.throwsAsync(x as Promise<unknown>, message === undefined ? undefined : { message: (m: string) => m.includes(message) })
      },
    },
  })) as Expect
  expect.assertions = (n) => t.plan(n)
  return expect
}

/** A vitest-shaped `test` object whose tests are ava tests titled `${prefix}: ${name}`. */
export function vitestShim(prefix: string) {
  const before: Hook[] = []
  const after: Hook[] = []
  const it = (name: string, body: Body) =>
    test.serial(`${prefix}: ${name}`, async (t) => {
      for (const h of before) await h()
      try {
        await body({ expect: expectFor(t) })
      } finally {
        for (const h of after) await h()
      }
    })
  return {
    it,
    beforeEach: (h: Hook) => void before.push(h),
    afterEach: (h: Hook) => void after.push(h),
  }
}
