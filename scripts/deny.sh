#!/usr/bin/env bash
# cargo-deny over the workspace (deny.toml): licenses, duplicate crates
# (`cargo tree -d` with a reason for each allowed one) and sources. The
# advisories check needs the RustSec database, a git repository that CI
# cannot reach (it has only package registries), so it runs only with
# IQDB_DENY_ADVISORIES=1. Installs cargo-deny from crates.io if missing
# (pinned version; a few minutes once per machine).
#
# Also checks that the CLI without its `replication` feature has no
# duplicate crate at all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-tool.sh cargo-deny 0.20.2
# `--offline` needs every platform's crates in the cache (a build fetches only
# the host's; shuttle pulls in windows-sys).
cargo fetch --quiet
checks=(bans licenses sources)
if [ -n "${IQDB_DENY_ADVISORIES:-}" ]; then checks+=(advisories); fi
cargo deny --offline check "${checks[@]}"

dups=$(cargo tree -p iqdb-persist-cli --no-default-features -e normal,build -d --depth 0 | grep -v '^$' || true)
if [ -n "$dups" ]; then
  echo "deny: the CLI without replication has duplicate crates:" >&2
  echo "$dups" >&2
  exit 1
fi
echo "deny: ok (${checks[*]}; CLI without replication: no duplicates)"
