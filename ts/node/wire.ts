/**
 * What the Node entry (ts/index.ts) hands to the Node-free core: the lock
 * context that follows async calls (AsyncLocalStorage), errno names, the
 * per-process clock shared with the file stores' clocks, Node Readable
 * streams of blobs, and the loader of the registry's backends known by name
 * (`konserve/redis`, …: a dynamic import of the package's own subpath, which
 * the built entry resolves to the built subpath next to it). Imported for its
 * effect, first thing in ts/index.ts.
 */
import { AsyncLocalStorage } from 'node:async_hooks'
import { constants } from 'node:os'
import { useNodeStreams, useProcessClock } from '../api.js'
import { nowMs } from '../clock.js'
import { useErrnoNames } from '../errors.js'
import { useAsyncContext } from '../locks.js'
import { useBackendLoader } from '../registry.js'
import { nodeStream } from './streams.js'

useAsyncContext(new AsyncLocalStorage())
useErrnoNames(constants.errno as Record<string, number>)
useProcessClock(nowMs)
useNodeStreams(nodeStream)
useBackendLoader((specifier) => import(specifier))
