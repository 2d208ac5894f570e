#!/usr/bin/env bash
# The test command: format and lint checks, then every test of the workspace — unit, golden,
# engine conformance, and end-to-end tests that start real `bini` processes on loopback.
set -euo pipefail
export BINI_LOG=${BINI_LOG:-info}
cd "$(dirname "$0")/.."
./scripts/deps.sh
cargo fmt --all -- --check
cargo build --workspace --all-targets
cargo clippy --workspace --all-targets -- -D warnings
# One test at a time: the cluster tests each run several nodes, and the machine has 2 cores.
# (Always select the whole workspace: a narrower selection resolves different features and
# rebuilds RocksDB.)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace -- --test-threads=1 2>&1 | tee "$log"
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "all tests: %d passed, %d failed\n", p, f }' "$log"
