//! What the store's integration tests share: the simulated file system
//! ([`sim`]), the crash harness on top of it ([`crash`]), a forwarding file
//! system for tests that override a call or two ([`passthrough`]), and small helpers.
//! Each test file includes it with `mod support;` and uses its own part.
#![allow(dead_code)]

pub mod crash;
pub mod fixtures;
pub mod passthrough;
pub mod sim;

use std::path::Path;

use konserve_core::format::key::{encode, Key};
use konserve_core::staging::parse_staging_name;

/// The CKE of the string key `s`.
pub fn key(s: &str) -> Vec<u8> {
    encode(&Key::str(s))
}

/// The staging files (FORMAT.md §5) among `names`.
pub fn staging_names(names: impl IntoIterator<Item = String>) -> Vec<String> {
    names.into_iter().filter(|n| parse_staging_name(n).is_some()).collect()
}

/// The names in a real directory, sorted.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

/// What decoding a segment of `key` needs in `store`: its encryption key
/// and whether it reads plaintext (the store's own context, from outside).
pub fn context<'a>(store: &'a konserve_core::FileStore, key: &[u8]) -> konserve_core::codec::SegmentContext<'a> {
    let options = store.options();
    konserve_core::codec::SegmentContext {
        secret: options.encryption_key.as_deref(),
        key_hash: konserve_core::keyhash::key_hash(key),
        accept_plaintext: options.accept_plaintext,
    }
}
