//! What a node knows about its SQL sessions and statements, for `bini_internal.sessions`
//! and `bini_internal.statements`, and the descriptors its sessions share. One registry per node (the gateway makes it); sessions
//! add themselves when they start and leave when they end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Statements with more distinct texts than this are counted under one row.
const MAX_STATEMENTS: usize = 1000;

/// The row statements past [`MAX_STATEMENTS`] are counted under.
const OTHER: &str = "(other statements)";

/// A session as `bini_internal.sessions` shows it.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    /// The node-local session id.
    pub id: u64,
    /// The user.
    pub user: String,
    /// The current database.
    pub database: String,
    /// Where the client connects from.
    pub client: String,
    /// The `application_name` setting.
    pub application: String,
    /// The statement running now, if any.
    pub active_query: Option<String>,
    /// When the session started.
    pub started: chrono::DateTime<chrono::Utc>,
    /// `idle`, `open` or `failed`.
    pub txn_state: &'static str,
}

/// Counts and latencies of one statement text.
#[derive(Clone, Debug, Default)]
pub struct StatementStats {
    /// Runs.
    pub count: u64,
    /// Runs that ended in an error.
    pub errors: u64,
    /// Total time.
    pub total: Duration,
    /// Longest run.
    pub max: Duration,
}

/// A node's sessions and statement statistics.
pub struct Registry {
    next_id: AtomicU64,
    sessions: Mutex<HashMap<u64, SessionInfo>>,
    statements: Mutex<HashMap<String, StatementStats>>,
    /// Table descriptors shared by the node's sessions.
    pub descriptors: crate::catalog::DescCache,
    /// The node's SQL memory budget, shared by its sessions' statements.
    pub memory: std::sync::Arc<crate::memory::MemoryPool>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new(crate::memory::MemoryPool::unlimited())
    }
}

impl Registry {
    /// A registry for a node whose statements share `memory`.
    pub fn new(memory: std::sync::Arc<crate::memory::MemoryPool>) -> Self {
        Registry {
            next_id: AtomicU64::new(0),
            sessions: Mutex::default(),
            statements: Mutex::default(),
            descriptors: Default::default(),
            memory,
        }
    }

    /// Adds a session; returns its id.
    pub fn register(&self, mut info: SessionInfo) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        info.id = id;
        self.sessions.lock().insert(id, info);
        id
    }

    /// Removes a session.
    pub fn deregister(&self, id: u64) {
        self.sessions.lock().remove(&id);
    }

    /// Changes what is shown of a session.
    pub fn update(&self, id: u64, f: impl FnOnce(&mut SessionInfo)) {
        if let Some(s) = self.sessions.lock().get_mut(&id) {
            f(s);
        }
    }

    /// Records one run of a statement.
    pub fn record(&self, text: &str, took: Duration, failed: bool) {
        let mut stmts = self.statements.lock();
        let key = if stmts.len() >= MAX_STATEMENTS && !stmts.contains_key(text) {
            OTHER
        } else {
            text
        };
        let s = stmts.entry(key.to_string()).or_default();
        s.count += 1;
        s.errors += u64::from(failed);
        s.total += took;
        s.max = s.max.max(took);
    }

    /// The sessions, by id.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = self.sessions.lock().values().cloned().collect();
        v.sort_by_key(|s| s.id);
        v
    }

    /// Statement statistics, most run first.
    pub fn statements(&self) -> Vec<(String, StatementStats)> {
        let mut v: Vec<(String, StatementStats)> = self
            .statements
            .lock()
            .iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        v.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(&b.0)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_beyond_the_cap_share_one_row() {
        let r = Registry::default();
        for i in 0..MAX_STATEMENTS + 5 {
            r.record(&format!("SELECT {i}"), Duration::from_millis(1), false);
        }
        r.record("SELECT 0", Duration::from_millis(3), true);
        let stats = r.statements();
        assert_eq!(stats.len(), MAX_STATEMENTS + 1);
        let first = &stats[0];
        assert_eq!((first.0.as_str(), first.1.count), (OTHER, 5));
        let zero = stats.iter().find(|(k, _)| k == "SELECT 0").expect("kept");
        assert_eq!((zero.1.count, zero.1.errors), (2, 1));
        assert_eq!(zero.1.max, Duration::from_millis(3));
    }
}
