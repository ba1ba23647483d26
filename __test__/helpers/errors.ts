/** How a call failed, for specs that check error codes (shared: pure-*, vectors-blob-log, pure-codec). */
import { KonserveError } from '../../ts/errors.js'

/** The error code a call fails with ('OK' if it succeeds); anything but a KonserveError fails the test. */
export async function outcome(f: () => unknown): Promise<string> {
  try {
    await f()
    return 'OK'
  } catch (err) {
    if (err instanceof KonserveError) return err.code
    throw new Error(`not a KonserveError: ${String(err)}`, { cause: err })
  }
}

/** The KonserveError a call fails with; anything else (or no failure) fails the test. */
export async function failure(f: () => unknown): Promise<KonserveError> {
  try {
    await f()
  } catch (err) {
    if (err instanceof KonserveError) return err
    throw new Error(`not a KonserveError: ${String(err)}`, { cause: err })
  }
  throw new Error('did not fail')
}
