/** The IndexedDB backing (issue 14): konserve's key files in an IndexedDB database. */
export { IdbBacking, openIdbBacking, type IdbOptions } from './store.js'
