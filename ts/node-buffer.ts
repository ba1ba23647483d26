/** Node's Buffer, where there is one: the modules that use it also run in browsers. */
export const NodeBuffer = (globalThis as { Buffer?: typeof Buffer }).Buffer
