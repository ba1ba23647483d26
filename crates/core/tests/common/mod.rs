//! What the golden-vector tests share: hex, where the vectors live, and the
//! check. The tests only compare: they never rewrite the committed vectors.
//! Each also leaves what it computed in `target/tmp/konserve-vectors/`, and
//! `npm run vectors:regen` (scripts/regen-vectors.mjs) copies those over the
//! committed files; do that only for a deliberate format change, and review
//! the diff.
#![allow(dead_code)] // each test uses its own part

use std::path::PathBuf;

use serde_json::Value;

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

pub fn vector_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../test-vectors").join(name)
}

/// Where a test leaves the vectors it computed, for `npm run vectors:regen`.
pub fn computed_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("konserve-vectors").join(name)
}

/// Checks that the computed vectors equal the committed file (after leaving
/// them in `computed_path(name)`; the committed file is never written here).
pub fn check_or_write(name: &str, computed: Value) {
    let text = serde_json::to_string_pretty(&computed).unwrap() + "\n";
    let out = computed_path(name);
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, &text).unwrap();
    let path = vector_path(name);
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (npm run vectors:regen writes it)", path.display())),
    )
    .unwrap();
    let (c, w) = (computed.as_array().unwrap(), committed.as_array().unwrap());
    assert_eq!(c.len(), w.len(), "{name}: number of vectors (computed: {})", out.display());
    for (c, w) in c.iter().zip(w) {
        assert_eq!(c, w, "{name}: vector {} (computed: {})", w["name"], out.display());
    }
}
