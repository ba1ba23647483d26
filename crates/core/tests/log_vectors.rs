//! Golden vectors for append logs (FORMAT.md §4.6): test-vectors/logs.json.
//! Every implementation must produce exactly these bytes from these inputs and
//! read them back; the pure-TypeScript implementation checks the same file.
//! The vectors and their schema are in `common/log_gen.rs`.
//!
//! This test only checks. `scripts/regen-log-vectors.sh` rewrites the file;
//! do that only for a deliberate format change, and review the diff.

mod common;
use common::*;

#[test]
fn log_files() {
    check_vectors("logs.json", log_gen::log_vectors());
}
