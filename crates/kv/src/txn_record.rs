//! Evaluating the commands that act on transaction records, as a replica applies them:
//! ending a transaction (EndTxn: finalize the record, resolve the intents that live in this
//! range) and pushing one (PushTxn: abort an expired or forced pushee, or move its commit
//! timestamp above a reader's). Like every apply-time evaluation these are deterministic: each
//! replica computes the same writes from the same state.

use bini_mvcc::{mvcc_resolve, read_record, txn_ts, write_record, Timestamp};
use bini_proto::{BatchHeader, KeySpan, PushKind, TxnMeta, TxnRecord, TxnStatus};
use bini_storage::Reader;

use crate::replica::{Ops, Replica, TXN_EXPIRY};
use crate::{Error, Result};

impl Replica {
    /// Commits or aborts a transaction: finalizes its record (a one-phase commit has none) and
    /// resolves the listed intent keys that live in this range. Intent spans, and keys in other
    /// ranges, stay in the record for the coordinator (or whoever finds them) to resolve.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn end_txn(
        &self,
        reader: &dyn Reader,
        ops: &mut Ops,
        meta: TxnMeta,
        commit: bool,
        (intents, intent_spans): (Vec<Vec<u8>>, Vec<KeySpan>),
        now: Timestamp,
        header: &BatchHeader,
    ) -> Result<TxnRecord> {
        let status = if commit {
            TxnStatus::Committed
        } else {
            TxnStatus::Aborted
        };
        if header.one_phase {
            return Ok(TxnRecord {
                meta: Some(meta),
                status: status as i32,
                ..Default::default()
            });
        }
        self.check_key(&meta.anchor)?;
        let existing = read_record(reader, &meta.anchor, &meta.id)?;
        if let Some(r) = &existing {
            if r.status == TxnStatus::Committed as i32 {
                if commit {
                    return Ok(r.clone());
                }
                return Err(Error::InvalidRequest(
                    "transaction already committed".into(),
                ));
            }
            if r.status == TxnStatus::Aborted as i32 {
                if commit {
                    return Err(Error::TxnAborted(
                        "aborted by a conflicting transaction".into(),
                    ));
                }
                return Ok(r.clone());
            }
            let pushed = r.meta.as_ref().map(txn_ts).unwrap_or_default();
            if commit && pushed > txn_ts(&meta) {
                return Err(Error::TxnPushed { ts: pushed });
            }
        }
        let commit_ts = txn_ts(&meta);
        let mut remote = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for key in intents {
            if !seen.insert(key.clone()) {
                continue;
            }
            if self.check_key(&key).is_ok() {
                mvcc_resolve(reader, ops, &key, &meta.id, status, commit_ts)?;
            } else {
                remote.push(key);
            }
        }
        let record = TxnRecord {
            meta: Some(meta),
            status: status as i32,
            heartbeat: Some(now.into()),
            intents: remote,
            intent_spans,
        };
        write_record(ops, &record);
        Ok(record)
    }
}

/// Evaluates a push of `pushee` at time `now`: returns the record afterwards and whether the
/// pusher got what it asked for (the pushee finalized, aborted, or moved above `push_to`).
pub(crate) fn push_txn(
    reader: &dyn Reader,
    ops: &mut Ops,
    pushee: TxnMeta,
    push_to: Timestamp,
    kind: PushKind,
    force: bool,
    now: Timestamp,
) -> Result<(TxnRecord, bool)> {
    let existing = read_record(reader, &pushee.anchor, &pushee.id)?;
    let mut record = match existing {
        Some(r) if r.status != TxnStatus::Pending as i32 => return Ok((r, true)),
        Some(r) => r,
        // Not written yet (or its writer died before writing it): alive since its start.
        None => TxnRecord {
            heartbeat: pushee.start_ts,
            meta: Some(pushee),
            status: TxnStatus::Pending as i32,
            ..Default::default()
        },
    };
    let heartbeat = record.heartbeat.map(Timestamp::from).unwrap_or_default();
    let expired = heartbeat.add_duration(TXN_EXPIRY) < now;
    if expired || force {
        record.status = TxnStatus::Aborted as i32;
        write_record(ops, &record);
        return Ok((record, true));
    }
    if kind == PushKind::PushTimestamp {
        let meta = record.meta.get_or_insert_with(TxnMeta::default);
        if txn_ts(meta) <= push_to {
            meta.write_ts = Some(push_to.next().into());
            write_record(ops, &record);
        }
        return Ok((record, true));
    }
    Ok((record, false))
}
