//! Errors of the replication layer.

use bini_proto::range_error::Kind;
use bini_proto::{RangeDescriptor, RangeError};

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
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] bini_storage::Error),
    /// MVCC failed.
    #[error(transparent)]
    Mvcc(#[from] bini_mvcc::Error),
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
            _ => (Kind::Other, 0, None),
        };
        RangeError {
            kind: kind as i32,
            message: self.to_string(),
            leaseholder,
            descriptor,
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
            Kind::Other => Error::InvalidRequest(e.message),
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
