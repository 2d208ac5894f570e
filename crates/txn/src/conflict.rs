//! Resolving a conflict with another transaction's intent.
//!
//! - A **reader** at `t` pushes the intent's transaction above `t` (PUSH_TIMESTAMP): it always
//!   succeeds unless the pushee already finished; either way the intent is then resolved
//!   (committed, removed, or moved above the reader) and the read retried.
//! - A **writer** asks the record to abort the pushee (PUSH_ABORT), which succeeds only if the
//!   pushee's record expired (its coordinator stopped heartbeating). Otherwise it waits and asks
//!   again, until the pushee commits or aborts. While waiting it publishes a wait-for edge (the
//!   coordinator's `waits` map) and follows the chain of edges through the pushees'
//!   coordinators; if the chain leads back to itself, the transaction with the lowest priority
//!   in the cycle is aborted — by the waiter that found the cycle, possibly itself.

use std::time::Duration;

use bini_kv::NodeId;
use bini_mvcc::{txn_ts, Timestamp};
use bini_proto::{
    request, BatchHeader, KeySpan, PushKind, PushTxnRequest, Request, ResolveIntentRequest,
    TxnMeta, TxnRecord, TxnStatus, TxnWaitsRequest,
};

use crate::{Db, Error, Result, RetryReason};

/// How long a writer waits for conflicting transactions before giving up with a retryable error.
pub(crate) const CONFLICT_DEADLINE: Duration = Duration::from_secs(20);

/// How far a deadlock search follows wait-for edges.
const MAX_CHAIN: usize = 16;

/// Handles `key`'s intent of `pushee`, met by `pusher` (none for non-transactional requests)
/// reading at `read_ts` or writing. Returns when the request may be retried.
pub(crate) async fn resolve(
    db: &Db,
    pusher: Option<&TxnMeta>,
    key: &[u8],
    pushee: TxnMeta,
    writing: bool,
    read_ts: Timestamp,
) -> Result<()> {
    let mut backoff = Duration::from_millis(5);
    let mut next_deadlock_check = tokio::time::Instant::now() + Duration::from_millis(50);
    let deadline = tokio::time::Instant::now() + CONFLICT_DEADLINE;
    let my_id = pusher.map(|p| p.id.clone()).unwrap_or_default();
    let result = loop {
        let kind = if writing {
            PushKind::PushAbort
        } else {
            PushKind::PushTimestamp
        };
        let (record, done) = match push(db, &pushee, read_ts, kind, false).await {
            Ok(r) => r,
            Err(e) => break Err(e),
        };
        if done {
            break clean_up(db, key, &record).await;
        }
        // A writer waits for a live transaction to finish.
        if let Some(me) = pusher {
            db.inner
                .waits
                .lock()
                .insert(me.id.clone(), record.meta.clone().unwrap_or(pushee.clone()));
            if tokio::time::Instant::now() > next_deadlock_check {
                next_deadlock_check = tokio::time::Instant::now() + Duration::from_millis(100);
                if let Some(victim) = find_deadlock_victim(db, me, &pushee).await {
                    if victim.id == me.id {
                        break Err(Error::retry(
                            RetryReason::Deadlock,
                            "deadlock detected; this transaction was chosen to restart",
                        ));
                    }
                    tracing::debug!("aborting a deadlock victim");
                    if let Err(e) = push(db, &victim, read_ts, PushKind::PushAbort, true).await {
                        break Err(e);
                    }
                    continue;
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            break Err(Error::retry(
                RetryReason::ContentionTimeout,
                format!(
                    "waited {}s for a conflicting transaction",
                    CONFLICT_DEADLINE.as_secs()
                ),
            ));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(50));
    };
    if !my_id.is_empty() {
        db.inner.waits.lock().remove(&my_id);
    }
    result
}

/// Pushes `pushee`; returns its record and whether the push achieved its goal.
pub(crate) async fn push(
    db: &Db,
    pushee: &TxnMeta,
    push_to: Timestamp,
    kind: PushKind,
    force: bool,
) -> Result<(TxnRecord, bool)> {
    let req = Request {
        kind: Some(request::Kind::PushTxn(PushTxnRequest {
            pushee: Some(pushee.clone()),
            push_to: Some(push_to.into()),
            kind: kind as i32,
            force,
        })),
    };
    let header = BatchHeader {
        now: Some(db.inner.clock.now().into()),
        ..Default::default()
    };
    let mut resp = db.inner.sender.send_with(&header, vec![req]).await?;
    let resp = resp.pop().unwrap_or_default();
    Ok((resp.record.unwrap_or_default(), resp.succeeded))
}

/// After a successful push: resolves the intent that was in the way, and — when the pushee was
/// aborted — every intent its record lists (its coordinator is gone and will not); when it
/// committed, the rest of the intent span the key is in.
async fn clean_up(db: &Db, key: &[u8], record: &TxnRecord) -> Result<()> {
    let meta = record.meta.clone().unwrap_or_default();
    let status = TxnStatus::try_from(record.status).unwrap_or(TxnStatus::Pending);
    let mut keys = vec![key.to_vec()];
    let mut spans = Vec::new();
    match status {
        TxnStatus::Aborted => {
            keys.extend(
                record
                    .intents
                    .iter()
                    .filter(|k| k.as_slice() != key)
                    .cloned(),
            );
            spans = record.intent_spans.clone();
        }
        TxnStatus::Committed => {
            // The key may be one of many in a span its coordinator is still resolving (a bulk
            // load): resolve the rest of the span from here on, rather than meeting its intents
            // one read at a time.
            let span = record
                .intent_spans
                .iter()
                .find(|s| s.start.as_slice() <= key && key < s.end.as_slice());
            if let Some(s) = span {
                keys.clear();
                spans.push(KeySpan {
                    start: key.to_vec(),
                    end: s.end.clone(),
                });
            }
        }
        TxnStatus::Pending => {}
    }
    resolve_intents(db, &meta.id, &keys, &spans, status, txn_ts(&meta)).await
}

/// Point resolutions sent in one batch (one Raft command per range).
const RESOLVE_BATCH: usize = 1000;

/// Resolves intents of transaction `id` on `keys` and in `spans`.
pub(crate) async fn resolve_intents(
    db: &Db,
    id: &[u8],
    keys: &[Vec<u8>],
    spans: &[KeySpan],
    status: TxnStatus,
    ts: Timestamp,
) -> Result<()> {
    let resolve = |key: &[u8], end_key: &[u8]| Request {
        kind: Some(request::Kind::ResolveIntent(ResolveIntentRequest {
            key: key.to_vec(),
            end_key: end_key.to_vec(),
            txn_id: id.to_vec(),
            status: status as i32,
            commit_ts: Some(ts.into()),
        })),
    };
    let batches = keys
        .chunks(RESOLVE_BATCH)
        .map(|chunk| chunk.iter().map(|k| resolve(k, &[])).collect::<Vec<_>>())
        .chain(spans.iter().map(|s| vec![resolve(&s.start, &s.end)]));
    for reqs in batches {
        let header = BatchHeader {
            now: Some(db.inner.clock.now().into()),
            ..Default::default()
        };
        db.inner.sender.send_with(&header, reqs).await?;
    }
    Ok(())
}

/// Follows wait-for edges from `first` (which `me` waits for); if they lead back to `me`,
/// returns the cycle's member with the lowest priority (ties: the smallest id).
async fn find_deadlock_victim(db: &Db, me: &TxnMeta, first: &TxnMeta) -> Option<TxnMeta> {
    let mut cycle = vec![me.clone()];
    let mut cur = first.clone();
    for _ in 0..MAX_CHAIN {
        if cur.id == me.id {
            return cycle
                .into_iter()
                .min_by(|a, b| (a.priority, &a.id).cmp(&(b.priority, &b.id)));
        }
        if cycle.iter().any(|t| t.id == cur.id) {
            return None; // a cycle not through us: its members will find it
        }
        let next = waits_of(db, &cur).await?;
        cycle.push(cur);
        cur = next;
    }
    None
}

/// What `txn` waits for, asked of its coordinator.
async fn waits_of(db: &Db, txn: &TxnMeta) -> Option<TxnMeta> {
    let node = NodeId(txn.coordinator);
    if node.0 == db.inner.node_id.load(std::sync::atomic::Ordering::Relaxed) {
        return db.waiting_for(&txn.id);
    }
    let addr = db.inner.sender.directory().address(node)?;
    let mut client = db.inner.sender.node_client(&addr)?;
    let req = TxnWaitsRequest {
        txn_id: txn.id.clone(),
    };
    let resp = tokio::time::timeout(Duration::from_secs(1), client.txn_waits(req))
        .await
        .ok()?
        .ok()?;
    resp.into_inner().waiting_for
}
