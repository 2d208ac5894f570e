//! An in-memory engine for tests: one ordered map per column family.
//!
//! Maps are shared copy-on-write (`Arc<BTreeMap>`), so a snapshot or an iterator is a cheap
//! reference that later writes never disturb — the same isolation RocksDB gives. Durability
//! flags are accepted and ignored; `sync_count` still counts synced writes so tests of group
//! commit can run against it.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::{BatchOp, Cf, Engine, EngineIterator, Reader, Result, WriteBatch};

type Map = Arc<BTreeMap<Vec<u8>, Vec<u8>>>;

/// An engine that keeps everything in memory.
#[derive(Default)]
pub struct MemEngine {
    maps: RwLock<[Map; 2]>,
    syncs: AtomicU64,
}

impl MemEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self, cf: Cf) -> Map {
        self.maps.read()[cf as usize].clone()
    }
}

impl Reader for MemEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.maps.read()[cf as usize].get(key).cloned())
    }

    fn iter(&self, cf: Cf, lower: &[u8], upper: &[u8]) -> Box<dyn EngineIterator + '_> {
        Box::new(MemIterator::new(self.map(cf), lower, upper))
    }
}

impl Engine for MemEngine {
    fn write(&self, batch: &WriteBatch, sync: bool) -> Result<()> {
        let mut maps = self.maps.write();
        for op in batch.ops() {
            match op {
                BatchOp::Put { cf, key, value } => {
                    Arc::make_mut(&mut maps[*cf as usize]).insert(key.clone(), value.clone());
                }
                BatchOp::Delete { cf, key } => {
                    Arc::make_mut(&mut maps[*cf as usize]).remove(key);
                }
                BatchOp::DeleteRange { cf, start, end } => {
                    if start < end {
                        let map = Arc::make_mut(&mut maps[*cf as usize]);
                        let doomed: Vec<Vec<u8>> = map
                            .range::<[u8], _>((
                                Bound::Included(start.as_slice()),
                                Bound::Excluded(end.as_slice()),
                            ))
                            .map(|(k, _)| k.clone())
                            .collect();
                        for k in doomed {
                            map.remove(&k);
                        }
                    }
                }
            }
        }
        if sync {
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn snapshot(&self) -> Box<dyn Reader + '_> {
        let maps = self.maps.read().clone();
        Box::new(MemSnapshot { maps })
    }

    fn sync(&self) -> Result<()> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

struct MemSnapshot {
    maps: [Map; 2],
}

impl Reader for MemSnapshot {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.maps[cf as usize].get(key).cloned())
    }

    fn iter(&self, cf: Cf, lower: &[u8], upper: &[u8]) -> Box<dyn EngineIterator + '_> {
        Box::new(MemIterator::new(
            self.maps[cf as usize].clone(),
            lower,
            upper,
        ))
    }
}

/// Iterates a frozen map. Each step is a fresh O(log n) range lookup from the current key, which
/// keeps the iterator free of borrows.
struct MemIterator {
    map: Map,
    lower: Vec<u8>,
    /// Exclusive upper bound; empty means unbounded.
    upper: Vec<u8>,
    current: Option<(Vec<u8>, Vec<u8>)>,
}

impl MemIterator {
    fn new(map: Map, lower: &[u8], upper: &[u8]) -> Self {
        Self {
            map,
            lower: lower.to_vec(),
            upper: upper.to_vec(),
            current: None,
        }
    }

    fn upper_bound(&self) -> Bound<&[u8]> {
        if self.upper.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(self.upper.as_slice())
        }
    }

    /// Entries in `(from, upper)`, respecting that an empty or inverted range is empty.
    fn first_in(&self, from: Bound<&[u8]>) -> Option<(Vec<u8>, Vec<u8>)> {
        let start = match from {
            Bound::Included(k) | Bound::Excluded(k) => k,
            Bound::Unbounded => &[][..],
        };
        if !self.upper.is_empty() && start >= self.upper.as_slice() {
            return None;
        }
        self.map
            .range::<[u8], _>((from, self.upper_bound()))
            .next()
            .map(|(k, v)| (k.clone(), v.clone()))
    }

    fn last_in(&self, to: Bound<&[u8]>) -> Option<(Vec<u8>, Vec<u8>)> {
        let end = match to {
            Bound::Included(k) | Bound::Excluded(k) => k,
            Bound::Unbounded => return None,
        };
        if end < self.lower.as_slice()
            || (end == self.lower.as_slice() && matches!(to, Bound::Excluded(_)))
        {
            return None;
        }
        self.map
            .range::<[u8], _>((Bound::Included(self.lower.as_slice()), to))
            .next_back()
            .map(|(k, v)| (k.clone(), v.clone()))
    }
}

impl EngineIterator for MemIterator {
    fn seek(&mut self, key: &[u8]) {
        let from = if key < self.lower.as_slice() {
            self.lower.clone()
        } else {
            key.to_vec()
        };
        self.current = self.first_in(Bound::Included(&from));
    }

    fn seek_to_first(&mut self) {
        let lower = self.lower.clone();
        self.current = self.first_in(Bound::Included(&lower));
    }

    fn seek_for_prev(&mut self, key: &[u8]) {
        self.current = if !self.upper.is_empty() && key >= self.upper.as_slice() {
            let upper = self.upper.clone();
            self.last_in(Bound::Excluded(&upper))
        } else {
            self.last_in(Bound::Included(key))
        };
    }

    fn valid(&self) -> Result<bool> {
        Ok(self.current.is_some())
    }

    fn key(&self) -> &[u8] {
        self.current
            .as_ref()
            .map(|(k, _)| k.as_slice())
            .unwrap_or_default()
    }

    fn value(&self) -> &[u8] {
        self.current
            .as_ref()
            .map(|(_, v)| v.as_slice())
            .unwrap_or_default()
    }

    fn next(&mut self) {
        if let Some((k, _)) = self.current.take() {
            self.current = self.first_in(Bound::Excluded(&k));
        }
    }

    fn prev(&mut self) {
        if let Some((k, _)) = self.current.take() {
            self.current = self.last_in(Bound::Excluded(&k));
        }
    }
}
