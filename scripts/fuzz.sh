#!/usr/bin/env bash
# Short coverage-guided fuzzing run of every decoder of the Rust core
# (crates/core/fuzz, cargo-fuzz + libFuzzer): builds all targets, then runs
# each for FUZZ_SECONDS (default 20) on a temporary copy of its committed
# corpus, one after the other. Prints the executions per target; exits
# non-zero if a build fails or any target finds a crash, a hang
# (FUZZ_TIMEOUT, default 10 s per input) or an out-of-memory input; the
# crashing input is left in crates/core/fuzz/artifacts/<target>/.
#
#   FUZZ_SECONDS=15 scripts/fuzz.sh              # every target
#   scripts/fuzz.sh cke_decode lz4_decompress    # some targets
#   FUZZ_SANITIZER=none scripts/fuzz.sh          # no AddressSanitizer
#
# cargo-fuzz passes nightly-only flags (-Zsanitizer=address); on a stable
# toolchain RUSTC_BOOTSTRAP=1 lets them through. With FUZZ_SANITIZER=auto (the
# default) the build falls back to no sanitizer where the toolchain has no
# ASan runtime. The committed corpus is never modified: to grow it, run a
# target on crates/core/fuzz/corpus/<target> by hand and minimize it with
# `cargo fuzz cmin` (crates/core/fuzz/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
fuzz_dir=$root/crates/core/fuzz

seconds=${FUZZ_SECONDS:-20}
timeout=${FUZZ_TIMEOUT:-10}
sanitizer=${FUZZ_SANITIZER:-auto}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
cargo fuzz --version

cd "$fuzz_dir"
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

echo "== build (${#targets[@]} targets, sanitizer: $sanitizer)"
if [ "$sanitizer" = auto ]; then
  if cargo fuzz build -s address; then
    sanitizer=address
  else
    echo "-- the build with AddressSanitizer failed; building without a sanitizer"
    sanitizer=none
    cargo fuzz build -s none
  fi
else
  cargo fuzz build -s "$sanitizer"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

failed=()
total=0
printf '%-16s %12s %8s %s\n' target executions corpus result
for t in "${targets[@]}"; do
  mkdir -p "$tmp/corpus/$t"
  if [ -d "corpus/$t" ]; then
    cp -R "corpus/$t/." "$tmp/corpus/$t/"
  fi
  log=$tmp/$t.log
  status=0
  cargo fuzz run -s "$sanitizer" "$t" "$tmp/corpus/$t" -- \
    -max_total_time="$seconds" -timeout="$timeout" -print_final_stats=1 >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  execs=${execs:-0}
  total=$((total + execs))
  if [ "$status" -eq 0 ]; then
    result=ok
  else
    result="FAILED (exit $status)"
    failed+=("$t")
  fi
  printf '%-16s %12s %8s %s\n' "$t" "$execs" "$(find "corpus/$t" -type f 2>/dev/null | wc -l)" "$result"
  if [ "$status" -ne 0 ]; then
    mkdir -p "artifacts/$t"
    cp "$log" "artifacts/$t/fuzz.log"
    echo "---- $t: the failure"
    grep -m 1 -A 8 -E "panicked at|==[0-9]+==ERROR|ERROR: libFuzzer" "$log" || true
    echo "---- $t: the end of its log (whole log: $fuzz_dir/artifacts/$t/fuzz.log)"
    grep -v -E '^ +[0-9]+: |^ +at ' "$log" | tail -n 25
    echo "---- $t: artifacts in $fuzz_dir/artifacts/$t/"
    ls -l "artifacts/$t/"
  fi
done

echo "fuzz: ${#targets[@]} targets, ${seconds}s each, $total executions in all"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz: no crash"
