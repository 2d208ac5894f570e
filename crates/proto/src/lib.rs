//! bini's RPC messages and gRPC services, generated from `proto/bini.proto` at build time.
//!
//! Three services share each node's listen port: `Raft` (Raft message streams and snapshots
//! between nodes), `Node` (join, init, gossip, range-addressed batches, operator calls) and `Kv`
//! (the client batch API that any node accepts for any key).

#![allow(missing_docs, clippy::all, clippy::unwrap_used)]

tonic::include_proto!("bini");
