//! The storage engine of konserve: the on-disk format (docs/FORMAT.md), the
//! durable file store, and the key locks. No N-API in here: the binding crate
//! at the repository root only converts arguments and calls this crate.
//!
//! Keys arrive as their canonical key encoding (CKE, [`format::key`]); values and
//! metadata as bytes the caller serialized. The store writes each key to its
//! own file, durably: staging file, fsync, rename, directory fsync.

#![warn(missing_docs, missing_debug_implementations)]

// The format, bytes only: no I/O, and no module here imports one below.
pub mod codec;
pub mod error;
pub mod format;
pub mod keyhash;

// I/O, bottom up: vfs (the file system seam); staging (staging file names),
// filelock (lock files) and locks (the in-process lock table); keyfile (an
// open store's key files: head reads, the durable write, the poison flag);
// blob, log and keycheck, which import none of each other; store on top;
// wal (the write-ahead log protocol, used by the store behind its marker).
pub mod blob;
pub mod filelock;
mod keycheck;
mod keyfile;
mod locks;
pub mod log;
pub mod staging;
pub mod store;
pub mod valuecache;
pub mod vfs;
pub mod wal;

pub use error::{Error, ErrorCode, Result};
pub use keyhash::file_name;
pub use store::{
    delete_store, BlobReplace, BlobReplaced, Done, Entry, FileStore, ListCursor, ListResult, MetaEntry, Options, Replace, Replaced,
    ValueInto, ValueRef, Write, CLOCK_FILE_NAME, LOCK_FILE_NAME, WAL_CHECKPOINT_BYTES, WAL_MAX_RECORD,
};
pub use valuecache::ValueCacheStats;
