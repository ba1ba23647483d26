//! The storage engine of konserve: the on-disk format (docs/FORMAT.md), the
//! durable file store, and the key locks. No N-API in here: the binding crate
//! at the repository root only converts arguments and calls this crate.
//!
//! Keys arrive as their canonical key encoding (CKE, [`cke`]); values and
//! metadata as bytes the caller serialized. The store writes each key to its
//! own file, durably: staging file, fsync, rename, directory fsync.

#![warn(missing_docs, missing_debug_implementations)]

pub mod blob;
pub mod cke;
pub mod codec;
pub mod error;
pub mod filelock;
pub mod format;
pub mod keyhash;
mod locks;
pub mod log;
#[cfg(test)]
mod sim;
mod staging;
pub mod store;
pub mod vfs;

pub use error::{Error, ErrorCode, Result};
pub use keyhash::file_name;
pub use store::{
    delete_store, Entry, FileStore, ListCursor, ListResult, MetaEntry, Options, ValueInto, ValueRef, Write, CLOCK_FILE_NAME, LOCK_FILE_NAME,
};
