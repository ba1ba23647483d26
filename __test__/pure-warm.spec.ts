/**
 * The pure engine's guess of which key files are in the page cache
 * (ts/backends/pure/warm.ts): files read or written lately count as warm,
 * for a while; slow reads on the calling thread turn the guess off, a lone
 * slow one (a preempted thread) does not.
 */
import test from 'ava'
import { isWarm, resetWarm, timed, touch } from '../ts/backends/pure/warm.js'

const sleepSync = (ms: number) => {
  const end = performance.now() + ms
  while (performance.now() < end) {}
}

test.serial('a file read or written lately is warm; one never touched is not', (t) => {
  resetWarm()
  t.false(isWarm('/s/a.ksv'))
  touch('/s/a.ksv')
  t.true(isWarm('/s/a.ksv'))
  t.false(isWarm('/s/b.ksv'))
})

test.serial('warmth wears off after ten seconds', (t) => {
  resetWarm()
  const realNow = performance.now.bind(performance)
  let shift = 0
  performance.now = () => realNow() + shift
  try {
    touch('/s/a.ksv')
    shift = 9_000
    t.true(isWarm('/s/a.ksv'))
    shift = 10_500
    t.false(isWarm('/s/a.ksv'))
  } finally {
    performance.now = realNow
  }
})

test.serial('the set is bounded: the first remembered file is forgotten first', (t) => {
  resetWarm()
  for (let i = 0; i <= 16_384; i++) touch(`/s/${i}.ksv`)
  t.false(isWarm('/s/0.ksv'))
  t.true(isWarm('/s/1.ksv'))
  t.true(isWarm('/s/16384.ksv'))
})

test.serial('a lone slow read (a preempted thread) leaves the guess on; slow reads in a row turn it off', (t) => {
  resetWarm()
  touch('/s/a.ksv')
  t.is(
    timed(() => {
      sleepSync(3)
      return 7
    }),
    7,
  )
  for (let i = 0; i < 40; i++) timed(() => 0) // fast reads wear the strike off
  t.true(isWarm('/s/a.ksv'), 'one slow read among fast ones')
  for (let i = 0; i < 4; i++) timed(() => sleepSync(3))
  t.false(isWarm('/s/a.ksv'), 'four slow reads: the page cache no longer holds what was read lately')
  touch('/s/a.ksv')
  t.false(isWarm('/s/a.ksv'), 'off for a while, even for a file touched since')
})

test.serial('a read that throws is timed too, and its error passes through', (t) => {
  resetWarm()
  touch('/s/a.ksv')
  for (let i = 0; i < 4; i++) {
    t.throws(
      () =>
        timed(() => {
          sleepSync(3)
          throw new Error('EIO')
        }),
      { message: 'EIO' },
    )
  }
  t.false(isWarm('/s/a.ksv'))
})
