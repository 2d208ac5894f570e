#!/usr/bin/env bash
# The test command: format and lint checks, then every test of the workspace — unit, golden,
# engine conformance, and end-to-end tests that start real `bini` processes on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
cargo fmt --all -- --check
cargo build --workspace --all-targets
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --exclude bini-e2e
# The end-to-end tests each run a cluster of several processes; one at a time on 2 cores.
cargo test -p bini-e2e -- --test-threads=1
