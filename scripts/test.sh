#!/usr/bin/env bash
# Every check CI runs, set up from nothing on a fresh machine: formatting,
# lints, all tests (including the crash tests and, against a local S3
# server this script installs and starts, the replication tests), docs, the
# build with default features off, the published `iqdb` crate running over
# this one, and short smoke runs of the benchmark and the fuzz targets.
# Needs: a Rust toolchain, Python 3 with pip and venv, curl.
#
#   bash scripts/test.sh            # everything (28 minutes cold on 2 cores in CI, 11 warm)
#   IQDB_SKIP_FUZZ=1 bash scripts/test.sh   # without the fuzz smoke run
#
# Long soaks are opt-in: IQDB_KILL9_ITERATIONS=5000, IQDB_CRASH_RANDOM=5000;
# the full deletion check and mutation run: scripts/sync-deletions.sh,
# scripts/mutants.sh (docs/TESTING.md, "Mutation testing").
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

started=$(date +%s)
step() { printf '\n==> %s (%ss)\n' "$*" "$(( $(date +%s) - started ))"; }

step "formatting"
cargo fmt --all --check

step "clippy, all targets and features, warnings denied"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "S3 test server (moto 5.2.5 on loopback, installed into target/moto-venv)"
bash scripts/s3-server.sh start
trap 'bash scripts/s3-server.sh stop' EXIT

step "tests, all features"
cargo test --workspace --all-features

step "iqdb-persist with default features only, and with none"
cargo test -p iqdb-persist --lib --tests
cargo build -p iqdb-persist --no-default-features
cargo build -p iqdb-persist-cli --no-default-features   # the lean tool: no replication stack

step "iqdb-persist 1.0.0's own 27 tests over this crate: features zstd,lz4, default, none"
bash scripts/upstream-tests.sh

step "cargo-deny: licenses, duplicates, sources (advisories need the network: IQDB_DENY_ADVISORIES=1)"
bash scripts/deny.sh

step "durability points: deleting a critical fsync, directory fsync or synced update fails a test (CI slice)"
if [ -z "$(git status --porcelain -- crates)" ]; then IQDB_MUTANTS_CI=1 bash scripts/sync-deletions.sh; else echo "skipped: uncommitted changes (scripts/sync-deletions.sh changes sources in place)"; fi

step "documentation, warnings denied"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps

if [ -d compat/iqdb ]; then
  step "the published iqdb 1.x over this crate, and 1.0.0 reading what it wrote (compat/iqdb)"
  bash scripts/compat-iqdb.sh
fi

step "benchmark smoke run"
cargo run -p iqdb-persist-bench -- --smoke --dir target/bench-smoke --charts target/bench-smoke-charts > /dev/null

if [ -z "${IQDB_SKIP_FUZZ:-}" ]; then
  step "fuzz smoke run (cargo-fuzz on stable, no sanitizer)"
  bash scripts/fuzz.sh "${IQDB_FUZZ_SECONDS:-10}"
fi

step "all checks passed"
