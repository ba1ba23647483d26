/**
 * What the Node entry (ts/index.ts) hands to the Node-free core: the lock
 * context that follows async calls (AsyncLocalStorage), errno names, the
 * per-process clock shared with the file stores' clocks, and Node Readable
 * streams of blobs. Imported for its effect, first thing in ts/index.ts.
 */
import { AsyncLocalStorage } from 'node:async_hooks'
import { constants } from 'node:os'
import { useNodeStreams, useProcessClock } from '../api.js'
import { nowMs } from '../clock.js'
import { useErrnoNames } from '../errors.js'
import { useAsyncContext } from '../locks.js'
import { nodeStream } from './streams.js'

useAsyncContext(new AsyncLocalStorage())
useErrnoNames(constants.errno as Record<string, number>)
useProcessClock(nowMs)
useNodeStreams(nodeStream)
