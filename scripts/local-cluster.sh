#!/usr/bin/env bash
# Builds bini and runs a local 3-node cluster on localhost:26257-26259 (stores under
# ./bini-data/node{1,2,3}), initialises it, and waits; Ctrl-C stops the nodes.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
cargo build --workspace --all-targets
target="${CARGO_TARGET_DIR:-target}"
bini="$target/debug/bini"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait; }
trap cleanup EXIT INT TERM
mkdir -p bini-data
join="localhost:26257,localhost:26258,localhost:26259"
for i in 1 2 3; do
  port=$((26256 + i))
  "$bini" start --insecure --store="bini-data/node$i" --listen-addr="localhost:$port" \
    --http-addr="localhost:$((8079 + i))" --join="$join" 2>>"bini-data/node$i.log" &
  pids+=($!)
done
for _ in $(seq 1 50); do
  if out=$("$bini" init --insecure --host=localhost:26257 2>&1); then echo "$out"; break; fi
  case "$out" in *already*) echo "cluster already initialised"; break;; esac
  sleep 0.2
done
cat <<MSG
bini is running: 3 nodes on localhost:26257, :26258, :26259 (logs in bini-data/node*.log).
Try:  $bini sql --insecure --host=localhost        (or: psql -h localhost -p 26257 -U root defaultdb)
      $bini debug kv put hello world --insecure --host=localhost:26258
      $bini debug kv get hello --insecure --host=localhost:26259
      $bini debug ranges --insecure --host=localhost:26257
Ctrl-C stops the cluster.
MSG
wait
