#!/usr/bin/env bash
# Runs every fuzz target for a while on stable Rust (no sanitizer).
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
bash scripts/install-tool.sh cargo-fuzz 0.13.2
cargo run --quiet -p iqdb-persist-crash-tests --example fuzz_seeds -- fuzz/corpus
cd fuzz
for target in $(cargo fuzz list); do
  mkdir -p "corpus/$target"
  echo "== fuzzing $target for ${seconds}s"
  cargo fuzz run --sanitizer none "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -timeout=10
done
