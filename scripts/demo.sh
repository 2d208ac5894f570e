#!/usr/bin/env bash
# Builds bini and runs `bini demo`: a 3-node cluster in this one process (free loopback ports,
# temporary stores), the example database `movr`, and the SQL shell. Leaving the shell (\q or
# Ctrl-D) stops the cluster and removes its stores. Extra arguments go to `bini demo`
# (e.g. --nodes 5).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
cargo build --workspace --all-targets
exec "${CARGO_TARGET_DIR:-target}/debug/bini" demo "$@"
