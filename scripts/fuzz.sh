#!/usr/bin/env bash
# Coverage-guided fuzzing of every input parser (fuzz/: cargo-fuzz and libFuzzer), on the
# stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass the flags it needs, and the
# address sanitizer runtime ships with stable Rust.
#
#   scripts/fuzz.sh                 # every target for 60 s each
#   scripts/fuzz.sh 20              # every target for 20 s (the smoke run of scripts/test.sh)
#   scripts/fuzz.sh 600 spec_list   # some targets, 10 minutes each
#
# Each target starts from its committed seeds (fuzz/corpus/<target>/seed-*, and finding-* for
# inputs that once failed); what a run discovers goes to fuzz/grown/<target>/ (not committed).
# A failure leaves its input in fuzz/artifacts/<target>/ and makes this script exit 1;
# reproduce it with `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <that file>`.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
[ $# -gt 0 ] && shift
if ! [[ $seconds =~ ^[0-9]+$ ]]; then
  echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2
  exit 2
fi
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi

echo "== building the fuzz targets (address sanitizer, debug assertions)" >&2
cargo fuzz build

status=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/grown/$t" "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log="fuzz/artifacts/$t/last-run.log"
  # -timeout: one input taking 10 s is a finding (bounded time); -rss_limit_mb and
  # -malloc_limit_mb: so is one needing 2 GiB (bounded memory).
  if cargo fuzz run "$t" "fuzz/grown/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
    -print_final_stats=1 >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    echo "fuzz $t: ok, ${runs:-?} inputs in ${seconds}s, ${cov:-cov: ?}" >&2
  else
    status=1
    echo "fuzz $t: FAILED (full log: $log)" >&2
    grep -E -A2 '^thread .* panicked|^==[0-9]+== ERROR|^SUMMARY|Test unit written' "$log" |
      cut -c1-300 | head -30 >&2 || true
  fi
done
exit $status
