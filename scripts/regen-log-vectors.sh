#!/bin/sh
# Regenerates test-vectors/logs.json (the golden vectors of append logs,
# docs/FORMAT.md §4.6) from the Rust core. Only for a deliberate format
# change: review the diff, then run the vector tests of both implementations
# (cargo test -p konserve-core --test log_vectors; npx ava __test__/vectors-blob-log.spec.ts).
set -eu
cd "$(dirname "$0")/.."
cargo run -q -p konserve-core --example regen_log_vectors
