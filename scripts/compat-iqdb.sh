#!/usr/bin/env bash
# The published `iqdb` 1.x crate over this repository's iqdb-persist
# (compat/iqdb), including the rollback tests, which read what it wrote with
# the published iqdb 1.0.0 over the published iqdb-persist 1.0.0
# (compat/iqdb-1-0-reader, built here first). Both share the main target
# directory, so their registry dependencies are built once.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --locked --manifest-path compat/iqdb-1-0-reader/Cargo.toml
export IQDB_1_0_READER="$CARGO_TARGET_DIR/debug/iqdb-1-0-reader"
(cd compat/iqdb && cargo test --locked)
