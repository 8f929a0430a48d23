#!/usr/bin/env bash
# Build every fuzz target and run each for a bounded time.
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 10)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-10}
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is missing: run scripts/install-deps.sh test" >&2; exit 1; }
targets=$(cargo fuzz list)
cargo fuzz build --release
mkdir -p corpus artifacts
for t in $targets; do
  mkdir -p "corpus/$t"
  log="artifacts/$t.log"
  # -rss_limit_mb keeps a runaway input from eating the machine.
  if cargo fuzz run --release "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo '?')
    echo "fuzz: $t ran ${secs}s, $runs inputs, no crash"
  else
    echo "fuzz: $t FAILED; the input is in fuzz/artifacts/$t; its log:" >&2
    tail -40 "$log" >&2
    exit 1
  fi
done
echo "fuzz: all targets ran ${secs}s without a crash"
