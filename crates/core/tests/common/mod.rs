//! What the golden-vector tests share: hex, where the vectors live, and the
//! check-or-regenerate rule (`KONSERVE_REGEN_VECTORS=1` rewrites them; do that
//! only for a deliberate format change, and review the diff). The log vectors
//! only check ([`check_vectors`]); `scripts/regen-log-vectors.sh` rewrites them.
#![allow(dead_code)] // each test uses its own part

use std::path::PathBuf;

use serde_json::Value;

pub mod log_gen;

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

pub fn vector_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../test-vectors").join(name)
}

pub fn regenerate() -> bool {
    std::env::var_os("KONSERVE_REGEN_VECTORS").is_some()
}

/// Writes the vectors when regenerating; otherwise checks they equal the committed file.
pub fn check_or_write(name: &str, computed: Value) {
    let path = vector_path(name);
    if regenerate() {
        std::fs::write(&path, serde_json::to_string_pretty(&computed).unwrap() + "\n").unwrap();
        return;
    }
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let (c, w) = (computed.as_array().unwrap(), committed.as_array().unwrap());
    assert_eq!(c.len(), w.len(), "{name}: number of vectors");
    for (c, w) in c.iter().zip(w) {
        assert_eq!(c, w, "{name}: vector {}", w["name"]);
    }
}

/// Checks that the computed vectors equal the committed file (never writes
/// it: a script regenerates it, see `scripts/regen-log-vectors.sh`).
pub fn check_vectors(name: &str, computed: Value) {
    let path = vector_path(name);
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let (c, w) = (computed.as_array().unwrap(), committed.as_array().unwrap());
    assert_eq!(c.len(), w.len(), "{name}: number of vectors");
    for (c, w) in c.iter().zip(w) {
        assert_eq!(c, w, "{name}: vector {}", w["name"]);
    }
}
