#!/usr/bin/env bash
# A long run of the chained-fault simulator (docs/TESTING.md).
# Usage: scripts/simulate.sh [SEEDS] [FIRST]   (default 2000 seeds from 1000;
# CI runs seeds 0..100). Prints what it checked; a failing seed prints its
# replay command. Debug build: about 0.1 s of CPU per history.
set -euo pipefail
cd "$(dirname "$0")/.."
IQDB_SIM_SEEDS="${1:-2000}" IQDB_SIM_FIRST="${2:-1000}" \
  cargo test -p iqdb-persist-crash-tests --test simulation \
  chained_faults_never_lose_an_acknowledged_write -- --nocapture
