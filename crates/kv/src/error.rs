//! Errors of the replication layer.

use bini_mvcc::Timestamp;
use bini_proto::range_error::Kind;
use bini_proto::{RangeDescriptor, RangeError, TxnMeta};

use crate::{NodeId, RangeId};

/// An error from a store, a replica or the router.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This replica is not the leaseholder; retry at `leaseholder` if known.
    #[error("range {range} is not led here (leaseholder: {leaseholder:?})")]
    NotLeaseholder {
        /// The range.
        range: RangeId,
        /// The leaseholder, if this replica knows it.
        leaseholder: Option<NodeId>,
        /// This replica's descriptor.
        descriptor: Option<RangeDescriptor>,
    },
    /// No replica of this range lives on the store.
    #[error("range {0} not found on this node")]
    RangeNotFound(RangeId),
    /// A key falls outside the addressed range (the range split or the cache was stale).
    #[error("key {key} is outside range {range}")]
    KeyOutOfRange {
        /// The range.
        range: RangeId,
        /// The key, printed.
        key: String,
        /// The range's current descriptor.
        descriptor: Option<RangeDescriptor>,
    },
    /// The proposal was dropped before it committed (leadership changed); it did not apply.
    #[error("proposal to range {0} was dropped; it did not apply")]
    ProposalDropped(RangeId),
    /// The request is invalid; retrying will not help.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The cluster has not been initialised yet.
    #[error("the cluster is not initialised yet (run `bini init`)")]
    NotInitialized,
    /// A remote node could not be reached.
    #[error("node {node} unreachable: {reason}")]
    Unreachable {
        /// The node.
        node: NodeId,
        /// What went wrong.
        reason: String,
    },
    /// The request did not finish in time; it may or may not have applied.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The store is shutting down.
    #[error("store is stopping")]
    Stopping,
    /// Another transaction's intent is in the way; the caller pushes it, waits, or cleans up.
    #[error("conflicting intent on key {}", crate::keys::pretty(key))]
    WriteIntent {
        /// The key.
        key: Vec<u8>,
        /// The intent's transaction.
        txn: Box<TxnMeta>,
    },
    /// A read found a version in its uncertainty interval.
    #[error("read found a version at {ts} within its uncertainty interval")]
    ReadUncertain {
        /// The version's timestamp: the read must move above it.
        ts: Timestamp,
    },
    /// The transaction was aborted.
    #[error("transaction aborted: {0}")]
    TxnAborted(String),
    /// The transaction must commit at `ts` or later.
    #[error("transaction pushed: it must commit at {ts} or later")]
    TxnPushed {
        /// The lowest commit timestamp allowed.
        ts: Timestamp,
    },
    /// A read refresh found a change.
    #[error("refresh failed: key {} changed at {ts}", crate::keys::pretty(key))]
    RefreshFailed {
        /// The key.
        key: Vec<u8>,
        /// When it changed.
        ts: Timestamp,
    },
    /// A one-phase batch turned out to span several ranges; it was not sent.
    #[error("one-phase batch spans several ranges")]
    SpansRanges,
    /// The node's clock is too far from the cluster's to serve.
    #[error("{0}")]
    ClockOffset(String),
    /// A read below the garbage-collection threshold.
    #[error("read at {ts} is below the garbage collection threshold {threshold}")]
    BelowGcThreshold {
        /// The read timestamp.
        ts: Timestamp,
        /// The threshold.
        threshold: Timestamp,
    },
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] bini_storage::Error),
    /// MVCC failed.
    #[error(transparent)]
    Mvcc(bini_mvcc::Error),
    /// Raft failed.
    #[error("raft: {0}")]
    Raft(String),
    /// Stored or received bytes did not decode.
    #[error("decode: {0}")]
    Decode(String),
}

impl Error {
    /// Whether the router should retry (after refreshing its caches).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::NotLeaseholder { .. }
                | Error::RangeNotFound(_)
                | Error::KeyOutOfRange { .. }
                | Error::ProposalDropped(_)
                | Error::Unreachable { .. }
                | Error::Stopping
                | Error::ClockOffset(_)
        )
    }

    /// Converts to the wire form carried in a `RangeBatchResponse`.
    pub fn to_range_error(&self) -> RangeError {
        let (kind, leaseholder, descriptor) = match self {
            Error::NotLeaseholder {
                leaseholder,
                descriptor,
                ..
            } => (
                Kind::NotLeaseholder,
                leaseholder.map(|n| n.0).unwrap_or(0),
                descriptor.clone(),
            ),
            Error::RangeNotFound(_) | Error::Stopping => (Kind::RangeNotFound, 0, None),
            Error::KeyOutOfRange { descriptor, .. } => (Kind::KeyOutOfRange, 0, descriptor.clone()),
            Error::ProposalDropped(_) => (Kind::ProposalDropped, 0, None),
            Error::WriteIntent { key, txn } => {
                return RangeError {
                    kind: Kind::WriteIntent as i32,
                    message: self.to_string(),
                    txn: Some((**txn).clone()),
                    key: key.clone(),
                    ..Default::default()
                }
            }
            Error::ReadUncertain { ts } => return timestamped(Kind::ReadUncertain, self, *ts, &[]),
            Error::TxnPushed { ts } => return timestamped(Kind::TxnPushed, self, *ts, &[]),
            Error::RefreshFailed { key, ts } => {
                return timestamped(Kind::RefreshFailed, self, *ts, key)
            }
            Error::BelowGcThreshold { ts, .. } => {
                return timestamped(Kind::BelowGcThreshold, self, *ts, &[])
            }
            Error::TxnAborted(_) => (Kind::TxnAborted, 0, None),
            Error::ClockOffset(_) => (Kind::ClockOffset, 0, None),
            _ => (Kind::Other, 0, None),
        };
        RangeError {
            kind: kind as i32,
            message: self.to_string(),
            leaseholder,
            descriptor,
            ..Default::default()
        }
    }

    /// Converts back from the wire form.
    pub fn from_range_error(range: RangeId, e: RangeError) -> Self {
        match Kind::try_from(e.kind).unwrap_or(Kind::Other) {
            Kind::NotLeaseholder => Error::NotLeaseholder {
                range,
                leaseholder: (e.leaseholder != 0).then_some(NodeId(e.leaseholder)),
                descriptor: e.descriptor,
            },
            Kind::RangeNotFound => Error::RangeNotFound(range),
            Kind::KeyOutOfRange => Error::KeyOutOfRange {
                range,
                key: e.message,
                descriptor: e.descriptor,
            },
            Kind::ProposalDropped => Error::ProposalDropped(range),
            Kind::WriteIntent => Error::WriteIntent {
                key: e.key,
                txn: Box::new(e.txn.unwrap_or_default()),
            },
            Kind::ReadUncertain => Error::ReadUncertain { ts: ts(&e) },
            Kind::TxnPushed => Error::TxnPushed { ts: ts(&e) },
            Kind::RefreshFailed => Error::RefreshFailed {
                ts: ts(&e),
                key: e.key,
            },
            Kind::BelowGcThreshold => Error::BelowGcThreshold {
                ts: ts(&e),
                threshold: Timestamp::ZERO,
            },
            Kind::TxnAborted => Error::TxnAborted(
                e.message
                    .strip_prefix("transaction aborted: ")
                    .unwrap_or(&e.message)
                    .to_string(),
            ),
            Kind::ClockOffset => Error::ClockOffset(e.message),
            Kind::Other => Error::InvalidRequest(e.message),
        }
    }
}

fn ts(e: &RangeError) -> Timestamp {
    e.timestamp.map(Timestamp::from).unwrap_or_default()
}

fn timestamped(kind: Kind, e: &Error, ts: Timestamp, key: &[u8]) -> RangeError {
    RangeError {
        kind: kind as i32,
        message: e.to_string(),
        timestamp: Some(ts.into()),
        key: key.to_vec(),
        ..Default::default()
    }
}

impl From<bini_mvcc::Error> for Error {
    fn from(e: bini_mvcc::Error) -> Self {
        match e {
            bini_mvcc::Error::WriteIntent { key, txn } => Error::WriteIntent { key, txn },
            bini_mvcc::Error::ReadUncertain { ts, .. } => Error::ReadUncertain { ts },
            bini_mvcc::Error::WriteTooOld { ts, .. } => Error::TxnPushed { ts },
            bini_mvcc::Error::ClockOffset { .. } => Error::ClockOffset(e.to_string()),
            e => Error::Mvcc(e),
        }
    }
}

impl From<raft::Error> for Error {
    fn from(e: raft::Error) -> Self {
        Error::Raft(e.to_string())
    }
}

impl From<prost::DecodeError> for Error {
    fn from(e: prost::DecodeError) -> Self {
        Error::Decode(e.to_string())
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
