#!/usr/bin/env bash
# cargo-mutants over the durability code, with the crash tests (and the
# core crate's own tests) as the test suite. The full run is long (760
# mutants, about a minute or two each on 2 cores: 13-25 hours); shard it or
# narrow it with the variables below. See docs/TESTING.md, "Mutation
# testing", for the last results and the mutants that cannot matter.
#
#   bash scripts/mutants.sh                          # everything
#   bash scripts/mutants.sh --list                   # only list the mutants (extra args go to cargo mutants)
#   IQDB_MUTANTS_FOCUS=1 bash scripts/mutants.sh     # the durability-critical functions only (87 mutants)
#   IQDB_MUTANTS_SHARD=0/8 bash scripts/mutants.sh   # shard 0 of 8 (run 0/8 .. 7/8, anywhere)
#   IQDB_MUTANTS_FILES="crates/iqdb-persist/src/wal/writer.rs" bash scripts/mutants.sh
#   IQDB_MUTANTS_RE='WalWriter::sync' bash scripts/mutants.sh   # mutants whose name matches
#
# Other variables: IQDB_MUTANTS_SUITE=fast (the crash tests only; default
# full: crash tests + iqdb-persist's unit and integration tests),
# IQDB_MUTANTS_JOBS (default 1), IQDB_MUTANTS_TIMEOUT (seconds per test run,
# default 600), IQDB_MUTANTS_BASELINE (run|skip, default run),
# IQDB_MUTANTS_OUT (default target/mutants), IQDB_MUTANTS_NICE (default 10),
# and the crash tests' sizes IQDB_CRASH_RANDOM (default 4) and
# IQDB_KILL9_ITERATIONS (default 5). Results:
# $IQDB_MUTANTS_OUT/mutants.out/{caught,missed,timeout,unviable}.txt and
# outcomes.json.
#
# Needs cargo-mutants 27.x: cargo install cargo-mutants --locked --version 27.1.0
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! cargo mutants --version > /dev/null 2>&1; then
  echo "mutants.sh: cargo-mutants is not installed (cargo install cargo-mutants --locked --version 27.1.0)" >&2
  exit 2
fi

src=crates/iqdb-persist/src
default_files="$src/recovery.rs $src/checkpoint.rs $src/replace.rs $src/lock.rs $src/persisted.rs
  $src/wal/format.rs $src/wal/mod.rs $src/wal/reader.rs $src/wal/record.rs $src/wal/writer.rs
  $src/snapshot/write.rs"
args=()
for f in ${IQDB_MUTANTS_FILES:-$default_files}; do
  args+=(--file "$f")
done

# The durability-critical functions: the checkpoint protocol, making the
# log durable on load, the writer's sync bookkeeping, atomic replacement,
# the lock.
if [ -n "${IQDB_MUTANTS_FOCUS:-}" ]; then
  args+=(
    --re 'recovery\.rs:.* (make_durable|recover_log|count_operations|pending_operations)\b'
    --re 'writer\.rs:.*WalWriter::(sync|commit|rollback|write_frames|shutdown|replace_file)\b'
    --re 'replace\.rs:.* (prepare|PreparedFile::install|write_atomically|sweep_stale_temps)\b'
    --re 'lock\.rs:.* acquire\b'
    --re 'checkpoint\.rs:.* (write|read|remove)\b'
    --re 'wal/mod\.rs:.* create_log\b'
    --re 'persisted\.rs:.* (install|PersistedIndex<I>::checkpoint_locked)\b'
  )
fi
if [ -n "${IQDB_MUTANTS_RE:-}" ]; then
  args+=(--re "$IQDB_MUTANTS_RE")
fi
if [ -n "${IQDB_MUTANTS_SHARD:-}" ]; then
  args+=(--shard "$IQDB_MUTANTS_SHARD")
fi

export IQDB_CRASH_RANDOM="${IQDB_CRASH_RANDOM:-4}"
export IQDB_KILL9_ITERATIONS="${IQDB_KILL9_ITERATIONS:-5}"

# The suite. cargo-mutants runs `cargo test` for these packages with the
# arguments after `--`.
case "${IQDB_MUTANTS_SUITE:-full}" in
  fast)
    suite=(--test-package iqdb-persist-crash-tests --
      --test durability_points --test chained_faults --test policies --test io_faults
      --test power_loss)
    ;;
  full)
    suite=(--test-package iqdb-persist-crash-tests --test-package iqdb-persist -- --lib --tests)
    ;;
  *)
    echo "mutants.sh: IQDB_MUTANTS_SUITE is fast or full" >&2
    exit 2
    ;;
esac

out="${IQDB_MUTANTS_OUT:-target/mutants}"
mkdir -p "$out"
# The copy cargo-mutants builds in starts from this tree's target directory
# (--copy-target), so only the workspace's own crates are rebuilt.
exec nice -n "${IQDB_MUTANTS_NICE:-10}" cargo mutants \
  "${args[@]}" \
  --copy-target=true \
  --baseline="${IQDB_MUTANTS_BASELINE:-run}" \
  --no-shuffle \
  --jobs "${IQDB_MUTANTS_JOBS:-1}" \
  --timeout "${IQDB_MUTANTS_TIMEOUT:-600}" \
  --output "$out" \
  "$@" \
  "${suite[@]}"
