//! MVCC reads and writes over an engine, with write intents.
//!
//! Reads take any [`Reader`] (the engine, a snapshot, or the store's overlay of a round's
//! pending writes); writes go to a [`Writer`] so the caller decides atomicity and durability —
//! the replication layer collects the writes of one command and keeps them only if the whole
//! command succeeds.
//!
//! # Intents
//!
//! A transaction's provisional write is a [`StoredIntent`] in the key's metadata slot, holding
//! the transaction's [`TxnMeta`] (id, record anchor, provisional timestamp) and the value. At
//! most one intent exists per key. A read at `ts`:
//! - sees its own transaction's intent as the value;
//! - fails with [`Error::WriteIntent`] on another transaction's intent at or below its
//!   uncertainty limit (the caller resolves the conflict: push, wait, or clean up);
//! - otherwise reads committed versions, failing with [`Error::ReadUncertain`] on a version in
//!   `(ts, uncertainty_limit]` — a write that may have happened before the read in real time.
//!
//! A write meets another transaction's intent → [`Error::WriteIntent`]; a committed version at or
//! above its timestamp → it moves just above that version (when allowed; the transaction's
//! commit timestamp moves with it) or fails with [`Error::WriteTooOld`].
//!
//! Resolving an intent turns it into a committed version at the commit timestamp (COMMITTED),
//! removes it (ABORTED), or moves it to a later timestamp (PENDING, after a push).

use bini_proto::{StoredIntent, TxnMeta, TxnRecord, TxnStatus};
use bini_storage::{Cf, EngineIterator, Reader, WriteBatch};
use prost::Message as _;

use crate::encoding::{
    decode_key, encode_key, encode_key_end, encode_record_key, encode_version, prefix_end, Slot,
    Value,
};
use crate::{Error, Result, Timestamp};

/// A key and its value as seen at some timestamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// User key.
    pub key: Vec<u8>,
    /// Value.
    pub value: Vec<u8>,
}

/// Where MVCC writes go: a write batch, or the store's per-command overlay.
pub trait Writer {
    /// Sets an engine key of the `Data` column family.
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>);
    /// Removes an engine key of the `Data` column family.
    fn delete(&mut self, key: Vec<u8>);
}

impl Writer for WriteBatch {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        WriteBatch::put(self, Cf::Data, key, value);
    }
    fn delete(&mut self, key: Vec<u8>) {
        WriteBatch::delete(self, Cf::Data, key);
    }
}

/// How a read treats time and intents.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadOptions<'a> {
    /// The read timestamp.
    pub ts: Timestamp,
    /// Versions in `(ts, uncertainty_limit]` are uncertain; at or below `ts`, no uncertainty.
    pub uncertainty_limit: Timestamp,
    /// The reading transaction: its own intents are visible to it.
    pub txn: Option<&'a TxnMeta>,
}

impl<'a> ReadOptions<'a> {
    /// A plain read at `ts`: no uncertainty, no transaction.
    pub fn at(ts: Timestamp) -> Self {
        Self {
            ts,
            uncertainty_limit: ts,
            txn: None,
        }
    }

    fn limit(&self) -> Timestamp {
        self.uncertainty_limit.max(self.ts)
    }

    fn owns(&self, intent: &StoredIntent) -> bool {
        match (self.txn, &intent.txn) {
            (Some(me), Some(them)) => me.id == them.id,
            _ => false,
        }
    }
}

/// An iterator over every slot of the user keys in `[start, end)` (an empty `end`: no upper
/// bound), positioned at the first.
fn span_iter<'a>(reader: &'a dyn Reader, start: &[u8], end: &[u8]) -> Box<dyn EngineIterator + 'a> {
    let upper = if end.is_empty() {
        Vec::new()
    } else {
        encode_key(end)
    };
    let mut it = reader.iter(Cf::Data, &encode_key(start), &upper);
    it.seek_to_first();
    it
}

/// The timestamp of a transaction's provisional writes.
pub fn txn_ts(meta: &TxnMeta) -> Timestamp {
    meta.write_ts.map(Timestamp::from).unwrap_or_default()
}

/// Reads the intent on `key`, if any.
pub fn read_intent(reader: &dyn Reader, key: &[u8]) -> Result<Option<StoredIntent>> {
    match reader.get(Cf::Data, &encode_key(key))? {
        Some(b) => Ok(Some(decode_intent(&b)?)),
        None => Ok(None),
    }
}

fn decode_intent(bytes: &[u8]) -> Result<StoredIntent> {
    StoredIntent::decode(bytes).map_err(|e| Error::Corrupt(format!("intent: {e}")))
}

fn conflict(key: &[u8], intent: StoredIntent) -> Error {
    Error::WriteIntent {
        key: key.to_vec(),
        txn: Box::new(intent.txn.unwrap_or_default()),
    }
}

/// Reads the value of `key` visible at `ts` (no transaction, no uncertainty).
pub fn mvcc_get(reader: &dyn Reader, key: &[u8], ts: Timestamp) -> Result<Option<Vec<u8>>> {
    mvcc_get_with(reader, key, &ReadOptions::at(ts))
}

/// Reads the value of `key` visible to a reader with `opts`.
pub fn mvcc_get_with(
    reader: &dyn Reader,
    key: &[u8],
    opts: &ReadOptions<'_>,
) -> Result<Option<Vec<u8>>> {
    let mut end = key.to_vec();
    end.push(0);
    Ok(mvcc_scan_with(reader, key, &end, opts, 1)?
        .pop()
        .map(|kv| kv.value))
}

/// The timestamp of the newest committed version of `key` (live or tombstone), if any.
pub fn mvcc_latest_timestamp(reader: &dyn Reader, key: &[u8]) -> Result<Option<Timestamp>> {
    let prefix = encode_key(key);
    let mut it = reader.iter(Cf::Data, &prefix, &prefix_end(&prefix));
    it.seek(&encode_version(key, Timestamp::MAX));
    if !it.valid()? {
        return Ok(None);
    }
    match decode_key(it.key())?.1 {
        Slot::Version(ts) => Ok(Some(ts)),
        _ => Ok(None),
    }
}

/// Writes a committed version of `key` at `ts` (bootstrap and tests).
pub fn mvcc_put(batch: &mut WriteBatch, key: &[u8], ts: Timestamp, value: &[u8]) {
    Writer::put(
        batch,
        encode_version(key, ts),
        Value::Live(value.to_vec()).encode(),
    );
}

/// Writes a committed tombstone for `key` at `ts` (tests).
pub fn mvcc_delete(batch: &mut WriteBatch, key: &[u8], ts: Timestamp) {
    Writer::put(batch, encode_version(key, ts), Value::Tombstone.encode());
}

/// Scans live values of user keys in `[start, end)` at `ts`, up to `limit` keys. An empty `end`
/// means no upper bound.
pub fn mvcc_scan(
    reader: &dyn Reader,
    start: &[u8],
    end: &[u8],
    ts: Timestamp,
    limit: usize,
) -> Result<Vec<KeyValue>> {
    mvcc_scan_with(reader, start, end, &ReadOptions::at(ts), limit)
}

/// Scans `[start, end)` as a reader with `opts`, up to `limit` live keys.
pub fn mvcc_scan_with(
    reader: &dyn Reader,
    start: &[u8],
    end: &[u8],
    opts: &ReadOptions<'_>,
    limit: usize,
) -> Result<Vec<KeyValue>> {
    let (ts, max) = (opts.ts, opts.limit());
    let mut it = span_iter(reader, start, end);
    let mut out = Vec::new();
    while out.len() < limit && it.valid()? {
        let (key, slot, _) = decode_key(it.key())?;
        let value = match slot {
            Slot::Record => {
                it.next();
                continue;
            }
            Slot::Meta => {
                let intent = decode_intent(it.value())?;
                if opts.owns(&intent) {
                    intent.value.map(Value::Live).unwrap_or(Value::Tombstone)
                } else if intent.txn.as_ref().map(txn_ts).unwrap_or_default() <= max {
                    return Err(conflict(&key, intent));
                } else {
                    // Written above anything this read could see: look at the versions.
                    it.next();
                    continue;
                }
            }
            // Too new even for uncertainty: jump to the newest version at or below the limit.
            Slot::Version(v) if v > max => {
                it.seek(&encode_version(&key, max));
                continue;
            }
            Slot::Version(v) if v > ts => {
                return Err(Error::ReadUncertain {
                    key,
                    ts: v,
                    read_ts: ts,
                });
            }
            Slot::Version(_) => Value::decode(it.value())?,
        };
        // Skip the remaining versions (and any records) of this key.
        let next = encode_key_end(&key);
        if let Value::Live(v) = value {
            out.push(KeyValue { key, value: v });
        }
        it.seek(&next);
    }
    Ok(out)
}

/// Whether anything in `[start, end)` (or at `start` alone when `end` is empty) changed in
/// `(from, to]`: a committed version in that window, or another transaction's intent at or
/// below `to`. Used to refresh a transaction's reads to a later timestamp.
pub fn mvcc_changed_between(
    reader: &dyn Reader,
    start: &[u8],
    end: &[u8],
    from: Timestamp,
    to: Timestamp,
    txn: Option<&TxnMeta>,
) -> Result<Option<(Vec<u8>, Timestamp)>> {
    let lower = encode_key(start);
    let upper = if end.is_empty() {
        prefix_end(&lower)
    } else {
        encode_key(end)
    };
    let mut it = reader.iter(Cf::Data, &lower, &upper);
    it.seek_to_first();
    let opts = ReadOptions {
        ts: to,
        uncertainty_limit: to,
        txn,
    };
    while it.valid()? {
        let (key, slot, _) = decode_key(it.key())?;
        match slot {
            Slot::Record => {}
            Slot::Meta => {
                let intent = decode_intent(it.value())?;
                let its = intent.txn.as_ref().map(txn_ts).unwrap_or_default();
                if !opts.owns(&intent) && its <= to {
                    return Ok(Some((key, its)));
                }
            }
            Slot::Version(v) if v > from && v <= to => return Ok(Some((key, v))),
            Slot::Version(v) if v > to => {
                it.seek(&encode_version(&key, to));
                continue;
            }
            Slot::Version(_) => {
                // At or below `from`: older versions are older still; go to the next key.
                it.seek(&encode_key_end(&key));
                continue;
            }
        }
        it.next();
    }
    Ok(None)
}

/// Writes `value` (or a deletion, for `None`) to `key` at `ts`: as an intent of `txn`, or as a
/// committed version without one. Returns the timestamp written at: above `ts` when a newer
/// committed version exists and `may_bump` allows it.
pub fn mvcc_write(
    reader: &dyn Reader,
    w: &mut dyn Writer,
    key: &[u8],
    value: Option<&[u8]>,
    ts: Timestamp,
    txn: Option<&TxnMeta>,
    may_bump: bool,
) -> Result<Timestamp> {
    if let Some(intent) = read_intent(reader, key)? {
        let mine = matches!((txn, &intent.txn), (Some(a), Some(b)) if a.id == b.id);
        if !mine {
            return Err(conflict(key, intent));
        }
    }
    let mut wts = ts;
    if let Some(latest) = mvcc_latest_timestamp(reader, key)? {
        if latest >= wts {
            if !may_bump {
                return Err(Error::WriteTooOld {
                    key: key.to_vec(),
                    ts: latest.next(),
                });
            }
            wts = latest.next();
        }
    }
    match txn {
        Some(meta) => {
            let mut meta = meta.clone();
            if txn_ts(&meta) < wts {
                meta.write_ts = Some(wts.into());
            }
            let intent = StoredIntent {
                txn: Some(meta),
                value: value.map(<[u8]>::to_vec),
            };
            w.put(encode_key(key), intent.encode_to_vec());
        }
        None => {
            let v = match value {
                Some(v) => Value::Live(v.to_vec()),
                None => Value::Tombstone,
            };
            w.put(encode_version(key, wts), v.encode());
        }
    }
    Ok(wts)
}

/// Resolves the intent of transaction `txn_id` on `key`, if there is one: commits it at
/// `ts`, removes it, or (PENDING) moves it up to `ts`. Returns whether an intent was resolved.
pub fn mvcc_resolve(
    reader: &dyn Reader,
    w: &mut dyn Writer,
    key: &[u8],
    txn_id: &[u8],
    status: TxnStatus,
    ts: Timestamp,
) -> Result<bool> {
    let Some(intent) = read_intent(reader, key)? else {
        return Ok(false);
    };
    resolve_one(reader, w, key, intent, txn_id, status, ts)
}

/// How far one ranged resolution goes: at most this many intents resolved…
pub const RESOLVE_SPAN_MAX_INTENTS: usize = 1000;
/// …and at most this many user keys looked at.
pub const RESOLVE_SPAN_MAX_KEYS: usize = 20_000;

/// Resolves the intents of transaction `txn_id` in `[start, end)` as [`mvcc_resolve`] does
/// each, stopping after [`RESOLVE_SPAN_MAX_INTENTS`] intents or [`RESOLVE_SPAN_MAX_KEYS`] keys
/// so one command stays small. Returns how many it resolved and the key to resume from when
/// it stopped early.
pub fn mvcc_resolve_span(
    reader: &dyn Reader,
    w: &mut dyn Writer,
    start: &[u8],
    end: &[u8],
    txn_id: &[u8],
    status: TxnStatus,
    ts: Timestamp,
) -> Result<(usize, Option<Vec<u8>>)> {
    let mut it = span_iter(reader, start, end);
    let (mut resolved, mut seen) = (0, 0);
    while it.valid()? {
        let (key, slot, _) = decode_key(it.key())?;
        if resolved == RESOLVE_SPAN_MAX_INTENTS || seen == RESOLVE_SPAN_MAX_KEYS {
            return Ok((resolved, Some(key)));
        }
        seen += 1;
        if slot == Slot::Meta {
            let intent = decode_intent(it.value())?;
            if resolve_one(reader, w, &key, intent, txn_id, status, ts)? {
                resolved += 1;
            }
        }
        // On to the next user key, past this one's versions and records.
        it.seek(&encode_key_end(&key));
    }
    Ok((resolved, None))
}

/// Resolves `intent`, found on `key`, if it belongs to `txn_id`.
fn resolve_one(
    reader: &dyn Reader,
    w: &mut dyn Writer,
    key: &[u8],
    intent: StoredIntent,
    txn_id: &[u8],
    status: TxnStatus,
    ts: Timestamp,
) -> Result<bool> {
    let Some(mut meta) = intent.txn.clone() else {
        return Ok(false);
    };
    if meta.id != txn_id {
        return Ok(false);
    }
    let its = txn_ts(&meta);
    match status {
        TxnStatus::Committed => {
            w.delete(encode_key(key));
            let mut cts = ts.max(its);
            if let Some(latest) = mvcc_latest_timestamp(reader, key)? {
                // Cannot happen while the intent blocks other writers; kept total.
                if latest >= cts {
                    cts = latest.next();
                }
            }
            let v = match intent.value {
                Some(v) => Value::Live(v),
                None => Value::Tombstone,
            };
            w.put(encode_version(key, cts), v.encode());
        }
        TxnStatus::Aborted => w.delete(encode_key(key)),
        TxnStatus::Pending => {
            if ts > its {
                meta.write_ts = Some(ts.into());
                let moved = StoredIntent {
                    txn: Some(meta),
                    value: intent.value,
                };
                w.put(encode_key(key), moved.encode_to_vec());
            }
        }
    }
    Ok(true)
}

/// Reads the record of transaction `id` anchored at `anchor`.
pub fn read_record(reader: &dyn Reader, anchor: &[u8], id: &[u8]) -> Result<Option<TxnRecord>> {
    match reader.get(Cf::Data, &encode_record_key(anchor, id))? {
        Some(b) => Ok(Some(
            TxnRecord::decode(b.as_slice()).map_err(|e| Error::Corrupt(format!("record: {e}")))?,
        )),
        None => Ok(None),
    }
}

/// Writes a transaction record (at its anchor, from its meta).
pub fn write_record(w: &mut dyn Writer, record: &TxnRecord) {
    let meta = record.meta.clone().unwrap_or_default();
    w.put(
        encode_record_key(&meta.anchor, &meta.id),
        record.encode_to_vec(),
    );
}

/// Versions in `[start, end)` that no read at or above `threshold` can see: for each key, every
/// version older than the newest one at or below `threshold`, and that one too if it is a
/// tombstone. Returns `(key, ts)` pairs meaning "every version of key at or below ts", up to
/// `limit` keys.
pub fn mvcc_gc_candidates(
    reader: &dyn Reader,
    start: &[u8],
    end: &[u8],
    threshold: Timestamp,
    limit: usize,
) -> Result<Vec<(Vec<u8>, Timestamp)>> {
    let mut it = span_iter(reader, start, end);
    let mut out = Vec::new();
    while out.len() < limit && it.valid()? {
        let (key, slot, _) = decode_key(it.key())?;
        match slot {
            Slot::Version(v) if v > threshold => {
                it.seek(&encode_version(&key, threshold));
                continue;
            }
            Slot::Version(v) => {
                // The newest version at or below the threshold: keep it unless it is a
                // tombstone; everything older goes.
                let tombstone = Value::decode(it.value())? == Value::Tombstone;
                it.next();
                let older = it.valid()?
                    && matches!(decode_key(it.key())?, (ref k, Slot::Version(_), _) if *k == key);
                if tombstone {
                    out.push((key.clone(), v));
                } else if older {
                    out.push((key.clone(), v.prev()));
                }
                it.seek(&encode_key_end(&key));
                continue;
            }
            _ => {}
        }
        it.next();
    }
    Ok(out)
}

/// Deletes every committed version of `key` at or below `ts`.
pub fn mvcc_gc_key(
    reader: &dyn Reader,
    w: &mut dyn Writer,
    key: &[u8],
    ts: Timestamp,
) -> Result<usize> {
    let prefix = encode_key(key);
    let mut it = reader.iter(Cf::Data, &encode_version(key, ts), &prefix_end(&prefix));
    it.seek_to_first();
    let mut n = 0;
    while it.valid()? {
        if let (_, Slot::Version(_), _) = decode_key(it.key())? {
            w.delete(it.key().to_vec());
            n += 1;
        }
        it.next();
    }
    Ok(n)
}
