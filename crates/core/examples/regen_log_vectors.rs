//! Rewrites test-vectors/logs.json from the computed log vectors
//! (`tests/common/log_gen.rs`). Run it through `scripts/regen-log-vectors.sh`,
//! only for a deliberate format change, and review the diff.

#[path = "../tests/common/mod.rs"]
mod common;

fn main() {
    let path = common::vector_path("logs.json");
    let vectors = common::log_gen::log_vectors();
    std::fs::write(&path, serde_json::to_string_pretty(&vectors).unwrap() + "\n").unwrap();
    println!("wrote {}", path.display());
}
