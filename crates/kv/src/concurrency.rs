//! What a leaseholder remembers to keep reads and writes serializable: the timestamp cache and
//! the latches of writes in flight.
//!
//! - **Timestamp cache.** Every read served under the lease records its keys (or span) and
//!   timestamp. A write to a key read at `t` by another transaction must land above `t`: the
//!   leaseholder moves it up before proposing it, and the transaction's commit timestamp moves
//!   with it (the coordinator then refreshes its reads, or retries). A transaction's own reads
//!   do not push its writes. The cache is bounded: evicted entries raise a low-water mark that
//!   applies to every key.
//! - **Latches.** A write is evaluated when it applies, after its Raft round trip; a read that
//!   arrives meanwhile must not read around it. Writes register their keys and timestamp before
//!   they are proposed and leave when they have applied (or failed); a read overlapping a write
//!   in flight at or below its (uncertainty) timestamp waits for it.
//!
//! A new lease (a new Raft term on this node) starts an empty cache whose low-water mark is the
//! local physical clock plus twice the maximum clock offset: a leaseholder serves reads at most
//! one offset above its own physical clock, and its clock is at most one offset ahead of ours,
//! so every read a previous leaseholder served is covered.

use std::collections::BTreeMap;
use std::sync::Arc;

use bini_mvcc::Timestamp;
use tokio::sync::Notify;

/// Entries kept before the oldest half is folded into the low-water mark.
const MAX_POINTS: usize = 200_000;
const MAX_SPANS: usize = 10_000;

/// A read recorded in the cache: when, and by which transaction (empty: none).
#[derive(Clone, Debug, Default)]
struct ReadMark {
    ts: Timestamp,
    txn: Vec<u8>,
}

struct SpanRead {
    start: Vec<u8>,
    end: Vec<u8>,
    mark: ReadMark,
}

struct InFlight {
    id: u64,
    keys: Vec<Vec<u8>>,
    ts: Timestamp,
}

/// A key or span a request touches: `end` empty means the single key `start`.
#[derive(Clone, Debug)]
pub(crate) struct Span {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
}

impl Span {
    fn contains(&self, key: &[u8]) -> bool {
        if self.end.is_empty() {
            key == self.start.as_slice()
        } else {
            key >= self.start.as_slice() && key < self.end.as_slice()
        }
    }
}

/// The timestamp cache and latch table of one replica.
pub(crate) struct Concurrency {
    term: u64,
    low_water: Timestamp,
    points: BTreeMap<Vec<u8>, ReadMark>,
    spans: Vec<SpanRead>,
    in_flight: Vec<InFlight>,
    next_id: u64,
    /// Woken whenever a write in flight leaves.
    pub done: Arc<Notify>,
}

impl Default for Concurrency {
    fn default() -> Self {
        Self {
            term: 0,
            low_water: Timestamp::ZERO,
            points: BTreeMap::new(),
            spans: Vec::new(),
            in_flight: Vec::new(),
            next_id: 1,
            done: Arc::new(Notify::new()),
        }
    }
}

impl Concurrency {
    /// Starts over when the lease is new (`term` changed): an empty cache above `low_water`.
    pub fn ensure_term(&mut self, term: u64, low_water: impl FnOnce() -> Timestamp) {
        if self.term != term {
            self.term = term;
            self.low_water = low_water();
            self.points.clear();
            self.spans.clear();
        }
    }

    /// Whether a read of `spans` at `ts` must wait for a write in flight.
    pub fn must_wait(&self, spans: &[Span], ts: Timestamp) -> bool {
        self.in_flight
            .iter()
            .any(|w| w.ts <= ts && w.keys.iter().any(|k| spans.iter().any(|s| s.contains(k))))
    }

    /// Records a read of `spans` at `ts` by `txn` (empty for none).
    pub fn record_read(&mut self, spans: &[Span], ts: Timestamp, txn: &[u8]) {
        for s in spans {
            let mark = ReadMark {
                ts,
                txn: txn.to_vec(),
            };
            if s.end.is_empty() {
                match self.points.get_mut(&s.start) {
                    Some(m) if m.ts > ts => {}
                    Some(m) if m.ts == ts && m.txn != txn => m.txn.clear(),
                    Some(m) => *m = mark,
                    None => {
                        self.points.insert(s.start.clone(), mark);
                    }
                }
            } else {
                self.spans.push(SpanRead {
                    start: s.start.clone(),
                    end: s.end.clone(),
                    mark,
                });
            }
        }
        self.evict();
    }

    fn evict(&mut self) {
        if self.points.len() > MAX_POINTS {
            // Fold half the entries (the oldest timestamps) into the low-water mark.
            let mut ts: Vec<Timestamp> = self.points.values().map(|m| m.ts).collect();
            ts.sort_unstable();
            let cut = ts[ts.len() / 2];
            self.low_water = self.low_water.max(cut);
            self.points.retain(|_, m| m.ts > cut);
        }
        if self.spans.len() > MAX_SPANS {
            self.spans.sort_by_key(|s| s.mark.ts);
            let keep = self.spans.split_off(self.spans.len() / 2);
            if let Some(last) = self.spans.last() {
                self.low_water = self.low_water.max(last.mark.ts);
            }
            self.spans = keep;
        }
    }

    /// The highest timestamp at which another transaction read any of `keys` (or the
    /// low-water mark).
    pub fn max_read(&self, keys: &[Vec<u8>], txn: &[u8]) -> Timestamp {
        let foreign = |m: &ReadMark| txn.is_empty() || m.txn != txn;
        let mut max = self.low_water;
        for k in keys {
            if let Some(m) = self.points.get(k) {
                if foreign(m) && m.ts > max {
                    max = m.ts;
                }
            }
        }
        for s in &self.spans {
            if s.mark.ts > max
                && foreign(&s.mark)
                && keys
                    .iter()
                    .any(|k| k.as_slice() >= s.start.as_slice() && k.as_slice() < s.end.as_slice())
            {
                max = s.mark.ts;
            }
        }
        max
    }

    /// Registers a write in flight; returns its id for [`finish`](Self::finish).
    pub fn begin_write(&mut self, keys: Vec<Vec<u8>>, ts: Timestamp) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.in_flight.push(InFlight { id, keys, ts });
        id
    }

    /// Removes a write from the latch table and wakes waiting reads.
    pub fn finish(&mut self, id: u64) {
        self.in_flight.retain(|w| w.id != id);
        self.done.notify_waiters();
    }

    /// Keys of the cache in `[start, end)` (tests and debugging).
    #[cfg(test)]
    fn points_in(&self, start: &[u8], end: &[u8]) -> usize {
        self.points
            .range::<[u8], _>((
                std::ops::Bound::Included(start),
                std::ops::Bound::Excluded(end),
            ))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(w: u64) -> Timestamp {
        Timestamp::new(w, 0)
    }

    fn point(k: &str) -> Span {
        Span {
            start: k.as_bytes().to_vec(),
            end: Vec::new(),
        }
    }

    #[test]
    fn writes_land_above_foreign_reads_only() {
        let mut c = Concurrency::default();
        c.ensure_term(1, || t(5));
        let k = vec![b"a".to_vec()];
        assert_eq!(c.max_read(&k, b""), t(5));
        c.record_read(&[point("a")], t(10), b"T1");
        assert_eq!(c.max_read(&k, b"T2"), t(10));
        assert_eq!(c.max_read(&k, b"T1"), t(5));
        c.record_read(
            &[Span {
                start: b"a".to_vec(),
                end: b"c".to_vec(),
            }],
            t(20),
            b"",
        );
        assert_eq!(c.max_read(&[b"b".to_vec()], b"T1"), t(20));
        assert_eq!(c.max_read(&[b"c".to_vec()], b"T1"), t(5));
        assert_eq!(c.points_in(b"a", b"z"), 1);
        c.ensure_term(2, || t(100));
        assert_eq!(c.max_read(&[b"b".to_vec()], b"T1"), t(100));
    }

    #[test]
    fn reads_wait_for_overlapping_writes_in_flight_at_or_below_them() {
        let mut c = Concurrency::default();
        let id = c.begin_write(vec![b"k".to_vec()], t(10));
        assert!(c.must_wait(&[point("k")], t(10)));
        assert!(!c.must_wait(&[point("k")], t(9)));
        assert!(!c.must_wait(&[point("j")], t(10)));
        c.finish(id);
        assert!(!c.must_wait(&[point("k")], t(10)));
    }
}
