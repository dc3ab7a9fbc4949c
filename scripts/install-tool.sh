#!/usr/bin/env bash
# Installs a pinned cargo tool if the installed one is missing or another
# version: scripts/install-tool.sh CRATE VERSION [BINARY]
#
# Built with a quick release profile (opt-level 1, no LTO, 16 codegen
# units) instead of the tool's own (cargo-deny asks for fat LTO and one
# codegen unit). cargo-deny then builds in about 3 minutes on 2 cores
# (measured here); what the tools do in CI is tiny, so speed does not matter.
set -euo pipefail
crate="$1" version="$2" bin="${3:-$1}"
sub="${bin#cargo-}"
if cargo "$sub" --version 2>/dev/null | grep -q "$version"; then
  exit 0
fi
echo "install-tool: installing $crate $version (quick release profile)"
CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_LTO=false \
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_DEBUG=0 \
  cargo install --locked "$crate@$version"
