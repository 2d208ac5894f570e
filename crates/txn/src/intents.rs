//! The keys a transaction holds intents on, kept small enough to travel in its record.
//!
//! A transaction lists its intent keys in its record (heartbeats keep the list current) so
//! that whoever finds it abandoned can clean up, and it hands them to EndTxn for resolution.
//! Listing every key does not scale: a bulk load in one transaction (pgbench's initial COPY
//! writes a million rows) would make a record of tens of megabytes, rewritten by every
//! heartbeat. So past a budget of key bytes, the keys condense into spans — one per range the
//! keys fall in, from the smallest key to just past the largest — as CockroachDB does with its
//! lock spans. A span is resolved by a ranged ResolveIntent that looks at every key in it.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound::{Included, Unbounded};

use bini_proto::KeySpan;

/// Key bytes listed individually before they condense into spans.
pub(crate) const MAX_INTENT_BYTES: usize = 64 << 10;

/// Intent keys and spans of one transaction.
#[derive(Debug, Default, Clone)]
pub(crate) struct IntentSet {
    keys: BTreeSet<Vec<u8>>,
    /// Disjoint spans, start → end.
    spans: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Bytes of `keys`.
    bytes: usize,
    /// Bumped by every change, so a heartbeat can tell whether the record is current.
    version: u64,
    /// The budget of `bytes` before keys condense.
    budget: usize,
}

impl IntentSet {
    pub(crate) fn new() -> Self {
        Self::with_budget(MAX_INTENT_BYTES)
    }

    pub(crate) fn with_budget(budget: usize) -> Self {
        Self {
            budget,
            ..Default::default()
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.spans.is_empty()
    }

    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// Adds `keys`. When the listed keys pass the budget they condense into one span per
    /// group, `group` naming the range a key lives in (or `None` when unknown: such keys share
    /// one span).
    pub(crate) fn add<'a>(
        &mut self,
        keys: impl IntoIterator<Item = &'a Vec<u8>>,
        group: impl Fn(&[u8]) -> Option<u64>,
    ) {
        for key in keys {
            if !self.covered(key) && self.keys.insert(key.clone()) {
                self.bytes += key.len();
                self.version += 1;
            }
        }
        if self.bytes > self.budget {
            self.condense(group);
        }
    }

    fn covered(&self, key: &[u8]) -> bool {
        self.spans
            .range::<[u8], _>((Unbounded, Included(key)))
            .next_back()
            .is_some_and(|(_, end)| key < end.as_slice())
    }

    fn condense(&mut self, group: impl Fn(&[u8]) -> Option<u64>) {
        let mut bounds: BTreeMap<Option<u64>, (Vec<u8>, Vec<u8>)> = BTreeMap::new();
        for key in std::mem::take(&mut self.keys) {
            let past = key_next(&key);
            bounds
                .entry(group(&key))
                .and_modify(|(_, end)| *end = past.clone())
                .or_insert((key, past));
        }
        for (start, end) in bounds.into_values() {
            self.add_span(start, end);
        }
        self.bytes = 0;
        self.version += 1;
    }

    /// Adds `[start, end)`, merging it with the spans it overlaps or touches.
    fn add_span(&mut self, mut start: Vec<u8>, mut end: Vec<u8>) {
        if let Some((s, e)) = self
            .spans
            .range::<[u8], _>((Unbounded, Included(start.as_slice())))
            .next_back()
        {
            if e.as_slice() >= start.as_slice() {
                start = s.clone();
                end = end.max(e.clone());
            }
        }
        let overlapping: Vec<Vec<u8>> = self
            .spans
            .range::<[u8], _>((Included(start.as_slice()), Included(end.as_slice())))
            .map(|(s, _)| s.clone())
            .collect();
        for s in overlapping {
            if let Some(e) = self.spans.remove(&s) {
                end = end.max(e);
            }
        }
        self.spans.insert(start, end);
    }

    /// The listed keys and the spans, as a record holds them.
    pub(crate) fn parts(&self) -> (Vec<Vec<u8>>, Vec<KeySpan>) {
        let spans = self
            .spans
            .iter()
            .map(|(start, end)| KeySpan {
                start: start.clone(),
                end: end.clone(),
            })
            .collect();
        (self.keys.iter().cloned().collect(), spans)
    }
}

/// The smallest key greater than `key`.
fn key_next(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn keys_stay_listed_under_the_budget() {
        let mut set = IntentSet::with_budget(100);
        set.add(&[k("a"), k("b"), k("a")], |_| Some(1));
        let (keys, spans) = set.parts();
        assert_eq!(keys, vec![k("a"), k("b")]);
        assert!(spans.is_empty());
        assert_eq!(set.version(), 2);
    }

    #[test]
    fn keys_condense_into_one_span_per_range() {
        let mut set = IntentSet::with_budget(8);
        let keys = [k("a1"), k("a5"), k("a3"), k("m2"), k("m7")];
        // Keys below "m" live in range 1, the rest in range 2.
        let group = |key: &[u8]| Some(if key < b"m".as_slice() { 1 } else { 2 });
        set.add(&keys, group);
        let (listed, spans) = set.parts();
        assert!(listed.is_empty());
        let spans: Vec<(Vec<u8>, Vec<u8>)> = spans.into_iter().map(|s| (s.start, s.end)).collect();
        assert_eq!(
            spans,
            vec![(k("a1"), k("a5\0")), (k("m2"), k("m7\0"))],
            "one span per range, from the first key to just past the last"
        );
        // A key inside a span is already covered; one outside is listed again.
        let before = set.version();
        set.add(&[k("a4")], group);
        assert_eq!(set.version(), before);
        set.add(&[k("z")], group);
        assert_eq!(set.parts().0, vec![k("z")]);
    }

    #[test]
    fn condensed_spans_merge_when_they_overlap() {
        let mut set = IntentSet::with_budget(4);
        set.add(&[k("b"), k("d"), k("f")], |_| Some(1));
        set.add(&[k("a"), k("c"), k("x"), k("y")], |_| Some(1));
        let (listed, spans) = set.parts();
        assert!(listed.is_empty());
        assert_eq!(spans.len(), 1);
        assert_eq!(
            (spans[0].start.clone(), spans[0].end.clone()),
            (k("a"), k("y\0"))
        );
    }
}
