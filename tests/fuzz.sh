#!/usr/bin/env bash
# Fuzzing (README "Fuzzing"): builds every cargo-fuzz target in fuzz/ and runs each for SECONDS
# (default 30). Fails on any crash (a panic, a failed assertion, more than 512 MiB of memory, or
# one input running longer than 10 s); prints one line per target with the executions run, then
# a `fuzz: N passed, N failed` line.
#
#   tests/fuzz.sh [SECONDS] [JOBS]
#   tests/fuzz.sh --build-only      (build every target and stop; CI starts this early)
#
# JOBS targets run side by side (default 1; each fuzzer uses one core).
#
# Needs cargo-fuzz (`cargo install --locked cargo-fuzz --version 0.13.2`). The machine has stable
# Rust only: RUSTC_BOOTSTRAP=1 lets it take the nightly flags libFuzzer's instrumentation needs.
# Built objects, the grown corpora and crash inputs live outside the clone, under
# $CARGO_TARGET_DIR/fuzz; the seeds in fuzz/corpus/<target>/ are only read.
set -euo pipefail
cd "$(dirname "$0")/.."

build_only=0
if [ "${1:-}" = --build-only ]; then
  build_only=1
  shift
fi
secs="${1:-30}"
jobs="${2:-1}"
case "$secs$jobs" in '' | *[!0-9]*) echo "usage: tests/fuzz.sh [SECONDS] [JOBS]" >&2; exit 2 ;; esac
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "tests/fuzz.sh: cargo-fuzz is missing: cargo install --locked cargo-fuzz --version 0.13.2" >&2
  exit 2
fi
export RUSTC_BOOTSTRAP=1
target_dir="${CARGO_TARGET_DIR:-/var/tmp/clawbox-ci-target}/fuzz"
work="$target_dir/runs"

# No sanitizer: the crate forbids unsafe code, so ASan would find little and halve the executions;
# panics, overflow checks (debug assertions are on), timeouts and the RSS limit all still fail.
# 16 codegen units: a much faster cold build of the dependency tree for a small loss of speed.
# The run must pass the same flags as the build, or cargo-fuzz rebuilds.
flags=(--debug-assertions --sanitizer none --codegen-units 16 --target-dir "$target_dir")

echo "== cargo fuzz build"
cargo fuzz build "${flags[@]}"
[ "$build_only" = 1 ] && exit 0

# One target: its verdict line goes to $work/<target>.verdict.
run_target() {
  local t="$1" corpus="$work/corpus/$1" artifacts="$work/artifacts/$1/" log="$work/$1.log" runs
  mkdir -p "$corpus" "$artifacts"
  # The first corpus dir receives new inputs; the checked-in seeds are read only.
  if cargo fuzz run "${flags[@]}" "$t" "$corpus" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=512 -timeout=10 \
    -artifact_prefix="$artifacts" -print_final_stats=1 >"$log" 2>&1; then
    runs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
    runs="${runs:-0}"
    echo "fuzz $t: ok, $runs executions in ${secs} s ($((runs / (secs > 0 ? secs : 1)))/s), corpus $(ls "$corpus" | wc -l) inputs" >"$work/$t.verdict"
  else
    {
      echo "fuzz $t: CRASH (log: $log; inputs: $artifacts)"
      grep -E "panicked at|^==[0-9]+== ERROR|SUMMARY|Test unit written|Base64" "$log" | head -20 || true
    } >"$work/$t.verdict"
  fi
}

targets=$(cargo fuzz list)
mkdir -p "$work"
for t in $targets; do
  rm -f "$work/$t.verdict"
  run_target "$t" &
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
done
wait

passed=0
failed=0
for t in $targets; do
  cat "$work/$t.verdict" 2>/dev/null || echo "fuzz $t: CRASH (no verdict)"
  if grep -q "^fuzz $t: ok" "$work/$t.verdict" 2>/dev/null; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" = 0 ]
