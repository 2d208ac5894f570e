//! A reader that sees writes not yet in the engine.
//!
//! Commands apply into one write batch per round, written once at the end of the round; a
//! command must still see the writes of the commands applied before it in the same round, and
//! its own earlier writes. [`Overlay`] layers maps of pending `Data` writes (engine key → value,
//! or `None` for a deletion) over the engine; later layers win. Other column families read
//! straight through.

use std::collections::BTreeMap;
use std::ops::Bound;

use bini_storage::{Cf, EngineIterator, Reader, Result};

/// Pending writes of the `Data` column family: engine key → value, `None` for a deletion.
pub(crate) type Pending = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// The engine seen through layers of pending writes.
pub(crate) struct Overlay<'a> {
    pub base: &'a dyn Reader,
    pub layers: Vec<&'a Pending>,
}

impl Overlay<'_> {
    fn pending(&self, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.layers.iter().rev().find_map(|l| l.get(key))
    }
}

impl Reader for Overlay<'_> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if cf == Cf::Data {
            if let Some(v) = self.pending(key) {
                return Ok(v.clone());
            }
        }
        self.base.get(cf, key)
    }

    fn iter(&self, cf: Cf, lower: &[u8], upper: &[u8]) -> Box<dyn EngineIterator + '_> {
        let base = self.base.iter(cf, lower, upper);
        if cf != Cf::Data || self.layers.iter().all(|l| l.is_empty()) {
            return base;
        }
        Box::new(OverlayIter {
            overlay: self,
            base,
            lower: lower.to_vec(),
            upper: upper.to_vec(),
            current: None,
        })
    }
}

/// Merges the engine iterator with the pending maps. Positioned on `current` (key, value).
struct OverlayIter<'a> {
    overlay: &'a Overlay<'a>,
    base: Box<dyn EngineIterator + 'a>,
    lower: Vec<u8>,
    upper: Vec<u8>,
    current: Option<(Vec<u8>, Vec<u8>)>,
}

impl OverlayIter<'_> {
    fn in_bounds(&self, key: &[u8]) -> bool {
        key >= self.lower.as_slice() && (self.upper.is_empty() || key < self.upper.as_slice())
    }

    /// The first pending key in direction `forward` from `from` (inclusive or not).
    fn pending_from(&self, from: Bound<&[u8]>, forward: bool) -> Option<Vec<u8>> {
        let mut best: Option<Vec<u8>> = None;
        for layer in &self.overlay.layers {
            let found = if forward {
                layer
                    .range::<[u8], _>((from, Bound::Unbounded))
                    .next()
                    .map(|(k, _)| k.clone())
            } else {
                layer
                    .range::<[u8], _>((Bound::Unbounded, from))
                    .next_back()
                    .map(|(k, _)| k.clone())
            };
            if let Some(k) = found.filter(|k| self.in_bounds(k)) {
                best = match best {
                    Some(b) if (forward && b <= k) || (!forward && b >= k) => Some(b),
                    _ => Some(k),
                };
            }
        }
        best
    }

    /// Settles on the nearest live entry at or beyond the base cursor / `from`, skipping
    /// pending deletions.
    fn settle(&mut self, mut from: Vec<u8>, mut inclusive: bool, forward: bool) {
        loop {
            let bound = if inclusive {
                Bound::Included(from.as_slice())
            } else {
                Bound::Excluded(from.as_slice())
            };
            let pending = self.pending_from(bound, forward);
            let base = match self.base.valid() {
                Ok(true) => Some(self.base.key().to_vec()),
                _ => None,
            };
            let key = match (base, pending) {
                (None, None) => {
                    self.current = None;
                    return;
                }
                (Some(b), None) => b,
                (None, Some(p)) => p,
                (Some(b), Some(p)) => {
                    if (forward && b <= p) || (!forward && b >= p) {
                        b
                    } else {
                        p
                    }
                }
            };
            match self.overlay.pending(&key) {
                Some(Some(v)) => {
                    self.current = Some((key, v.clone()));
                    return;
                }
                Some(None) => {
                    // Deleted by a pending write: step past it.
                    self.step_base_past(&key, forward);
                    from = key;
                    inclusive = false;
                }
                None => {
                    self.current = Some((key, self.base.value().to_vec()));
                    return;
                }
            }
        }
    }

    fn step_base_past(&mut self, key: &[u8], forward: bool) {
        while let Ok(true) = self.base.valid() {
            let k = self.base.key();
            let past = if forward { k > key } else { k < key };
            if past {
                break;
            }
            if forward {
                self.base.next();
            } else {
                self.base.prev();
            }
        }
    }
}

impl EngineIterator for OverlayIter<'_> {
    fn seek(&mut self, key: &[u8]) {
        let key = if key < self.lower.as_slice() {
            self.lower.clone()
        } else {
            key.to_vec()
        };
        self.base.seek(&key);
        self.settle(key, true, true);
    }

    fn seek_to_first(&mut self) {
        let lower = self.lower.clone();
        self.seek(&lower);
    }

    fn seek_for_prev(&mut self, key: &[u8]) {
        self.base.seek_for_prev(key);
        let mut key = key.to_vec();
        let mut inclusive = true;
        if !self.upper.is_empty() && key >= self.upper {
            key = self.upper.clone();
            inclusive = false;
        }
        self.settle(key, inclusive, false);
    }

    fn valid(&self) -> Result<bool> {
        if self.current.is_none() {
            self.base.valid()?;
        }
        Ok(self.current.is_some())
    }

    fn key(&self) -> &[u8] {
        self.current
            .as_ref()
            .map(|(k, _)| k.as_slice())
            .unwrap_or(&[])
    }

    fn value(&self) -> &[u8] {
        self.current
            .as_ref()
            .map(|(_, v)| v.as_slice())
            .unwrap_or(&[])
    }

    fn next(&mut self) {
        let Some((key, _)) = self.current.take() else {
            return;
        };
        self.step_base_past(&key, true);
        self.settle(key, false, true);
    }

    fn prev(&mut self) {
        let Some((key, _)) = self.current.take() else {
            return;
        };
        self.step_base_past(&key, false);
        self.settle(key, false, false);
    }
}

#[cfg(test)]
mod tests {
    use bini_storage::{Engine, MemEngine, WriteBatch};

    use super::*;

    #[test]
    fn overlay_merges_pending_writes_in_order() {
        let e = MemEngine::new();
        let mut b = WriteBatch::new();
        for k in ["a", "c", "e", "g"] {
            b.put(Cf::Data, k.as_bytes().to_vec(), b"base".to_vec());
        }
        e.write(&b, false).expect("write");
        let mut one = Pending::new();
        one.insert(b"b".to_vec(), Some(b"one".to_vec()));
        one.insert(b"c".to_vec(), None);
        let mut two = Pending::new();
        two.insert(b"c".to_vec(), Some(b"two".to_vec()));
        two.insert(b"e".to_vec(), None);
        two.insert(b"f".to_vec(), Some(b"two".to_vec()));
        let o = Overlay {
            base: &e,
            layers: vec![&one, &two],
        };
        let all: Vec<_> = o
            .scan(Cf::Data, b"", b"", 100)
            .expect("scan")
            .into_iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    String::from_utf8_lossy(&k),
                    String::from_utf8_lossy(&v)
                )
            })
            .collect();
        assert_eq!(all, ["a=base", "b=one", "c=two", "f=two", "g=base"]);
        let mut it = o.iter(Cf::Data, b"b", b"g");
        it.seek(b"d");
        assert_eq!(it.key(), b"f");
        it.seek_for_prev(b"e");
        assert_eq!(it.key(), b"c");
        it.prev();
        assert_eq!(it.key(), b"b");
        it.prev();
        assert!(!it.valid().expect("valid"));
        assert_eq!(o.get(Cf::Data, b"e").expect("get"), None);
        assert_eq!(o.get(Cf::Data, b"b").expect("get"), Some(b"one".to_vec()));
    }
}
