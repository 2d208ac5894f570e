//! Reads served on the lease, off the store thread: the leaseholder answers a read-only batch
//! from its engine under the replica's shared lock (so the read never straddles a split or a
//! removal) while its lease is valid; a leader whose lease lapsed asks for a renewal first.

use std::sync::atomic::Ordering;
use std::time::Instant;

use bini_mvcc::{mvcc_changed_between, mvcc_get_with, mvcc_scan_with, ReadOptions, Timestamp};
use bini_proto::{request, BatchHeader, Request, Response};
use bini_storage::Engine;

use crate::replica::ReplicaShared;
use crate::{keys, Error, NodeId};

pub(crate) enum LeaseReadError {
    NeedsRenewal,
    Other(Error),
}

pub(crate) fn lease_read(
    shared: &ReplicaShared,
    engine: &dyn Engine,
    node: NodeId,
    started: Instant,
    requests: &[Request],
    header: &BatchHeader,
    (ts, limit): (Timestamp, Timestamp),
) -> std::result::Result<Vec<Response>, LeaseReadError> {
    let st = shared.state.read();
    let range = shared.range_id;
    if st.destroyed || !st.initialized {
        return Err(LeaseReadError::Other(Error::RangeNotFound(range)));
    }
    let out_of_range = |key: &[u8]| {
        LeaseReadError::Other(Error::KeyOutOfRange {
            range,
            key: keys::pretty(key),
            descriptor: Some(st.desc.clone()),
        })
    };
    for r in requests {
        match &r.kind {
            Some(request::Kind::Get(g)) if !st.contains(&g.key) => {
                return Err(out_of_range(&g.key))
            }
            Some(request::Kind::Scan(s))
                if !st.contains(&s.start_key)
                    || s.end_key.as_slice() > st.desc.end_key.as_slice()
                    || s.end_key.is_empty() =>
            {
                return Err(out_of_range(&s.start_key));
            }
            Some(request::Kind::Refresh(s))
                if !st.contains(&s.start_key)
                    || s.end_key.as_slice() > st.desc.end_key.as_slice() =>
            {
                return Err(out_of_range(&s.start_key));
            }
            _ => {}
        }
    }
    let now = Instant::now();
    if !st.lease_valid(node, now) {
        if st.leader == node.0 {
            return Err(LeaseReadError::NeedsRenewal);
        }
        return Err(LeaseReadError::Other(Error::NotLeaseholder {
            range,
            leaseholder: (st.leader != 0).then_some(NodeId(st.leader)),
            descriptor: Some(st.desc.clone()),
        }));
    }
    shared
        .last_read_ms
        .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    let opts = ReadOptions {
        ts,
        uncertainty_limit: limit,
        txn: header.txn.as_ref(),
    };
    let other = |e: bini_mvcc::Error| LeaseReadError::Other(e.into());
    let mut out = Vec::with_capacity(requests.len());
    for r in requests {
        let mut resp = Response {
            timestamp: Some(ts.into()),
            ..Default::default()
        };
        match &r.kind {
            Some(request::Kind::Get(g)) => {
                resp.value = mvcc_get_with(engine, &g.key, &opts).map_err(other)?;
            }
            Some(request::Kind::Scan(s)) => {
                let limit = if s.limit == 0 {
                    usize::MAX
                } else {
                    s.limit as usize
                };
                let rows = mvcc_scan_with(
                    engine,
                    &s.start_key,
                    &s.end_key,
                    &opts,
                    limit.saturating_add(1),
                )
                .map_err(other)?;
                let mut rows: Vec<_> = rows
                    .into_iter()
                    .map(|kv| bini_proto::KeyValue {
                        key: kv.key,
                        value: kv.value,
                    })
                    .collect();
                if rows.len() > limit {
                    let extra = rows.pop().expect("longer than limit");
                    resp.resume_key = extra.key;
                }
                resp.rows = rows;
            }
            Some(request::Kind::Refresh(f)) => {
                let from = f.from.map(Timestamp::from).unwrap_or_default();
                if let Some((key, at)) = mvcc_changed_between(
                    engine,
                    &f.start_key,
                    &f.end_key,
                    from,
                    ts,
                    header.txn.as_ref(),
                )
                .map_err(other)?
                {
                    return Err(LeaseReadError::Other(Error::RefreshFailed { key, ts: at }));
                }
            }
            _ => {}
        }
        out.push(resp);
    }
    Ok(out)
}
