#!/usr/bin/env bash
# The test command: format and lint checks, then every test of the workspace — unit, golden,
# engine conformance, and end-to-end tests that start real `bini` processes on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
cargo fmt --all -- --check
cargo build --workspace --all-targets
cargo clippy --workspace --all-targets -- -D warnings
# One test at a time: the cluster tests each run several nodes, and the machine has 2 cores.
# (Always select the whole workspace: a narrower selection resolves different features and
# rebuilds RocksDB.)
cargo test --workspace -- --test-threads=1
