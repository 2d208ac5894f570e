//! One transaction, driven by its coordinator.

use std::collections::BTreeSet;
use std::sync::Arc;

use bini_mvcc::{txn_ts, Timestamp};
use bini_proto::{
    request, BatchHeader, BeginTxnRequest, DeleteRequest, EndTxnRequest, GetRequest,
    HeartbeatTxnRequest, KeySpan, KeyValue, PutRequest, RefreshRequest, Request, Response,
    ScanRequest, TxnMeta, TxnStatus,
};
use parking_lot::Mutex;

use crate::conflict;
use crate::intents::IntentSet;
use crate::{Db, Error, Result, RetryReason, HEARTBEAT_INTERVAL};

/// A span the transaction read: `end` empty means the single key `start`.
#[derive(Clone, Debug)]
struct ReadSpan {
    start: Vec<u8>,
    end: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Committed,
    RolledBack,
}

/// What the heartbeat task shares with the transaction.
struct Shared {
    /// Set when the heartbeat found the record aborted.
    aborted: bool,
    /// Keys (or spans) written so far, reported with heartbeats.
    intents: IntentSet,
}

/// A serializable transaction. Reads and writes go out as they are called; [`commit`]
/// (Self::commit) or [`rollback`](Self::rollback) ends it. Dropping an open transaction rolls it
/// back in the background.
pub struct Txn {
    db: Db,
    meta: TxnMeta,
    read_ts: Timestamp,
    uncertainty_limit: Timestamp,
    read_only_as_of: bool,
    /// Set by [`set_read_only`](Self::set_read_only): writes fail.
    read_only: bool,
    reads: Vec<ReadSpan>,
    has_record: bool,
    state: State,
    shared: Arc<Mutex<Shared>>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
    /// While a savepoint is open: every key written since the oldest one, with the value the
    /// transaction saw there just before (oldest first).
    undo: Option<UndoLog>,
    /// Reads are locking reads ([`set_locking`](Self::set_locking)).
    locking: bool,
}

/// How many times a read or an intent write that timed out (outcome unknown) is sent again.
const AMBIGUOUS_RETRIES: usize = 3;

/// Keys written under savepoints, each with the value the transaction saw before.
type UndoLog = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// A point a transaction can roll back to ([`Txn::savepoint`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Savepoint {
    /// Position in the undo log.
    pos: usize,
    /// Taken before the transaction wrote anything.
    at_start: bool,
}

impl Savepoint {
    /// Whether the savepoint was taken before the transaction wrote anything (rolling back
    /// to it may as well restart the transaction).
    pub fn at_start(&self) -> bool {
        self.at_start
    }
}

impl Txn {
    pub(crate) fn new(db: Db, as_of: Option<Timestamp>) -> Self {
        let clock = db.clock().clone();
        let start = as_of.unwrap_or_else(|| clock.now());
        let mut id = vec![0u8; 16];
        rand::fill(&mut id[..]);
        let meta = TxnMeta {
            id,
            anchor: Vec::new(),
            write_ts: Some(start.into()),
            start_ts: Some(start.into()),
            priority: rand::random::<u32>(),
            coordinator: db.inner.node_id.load(std::sync::atomic::Ordering::Relaxed),
        };
        let uncertainty_limit = if as_of.is_some() {
            start
        } else {
            start.add_duration(clock.max_offset())
        };
        Self {
            db,
            meta,
            read_ts: start,
            uncertainty_limit,
            read_only_as_of: as_of.is_some(),
            read_only: false,
            reads: Vec::new(),
            has_record: false,
            state: State::Open,
            shared: Arc::new(Mutex::new(Shared {
                aborted: false,
                intents: IntentSet::new(),
            })),
            heartbeat: None,
            undo: None,
            locking: false,
        }
    }

    /// The transaction's id.
    pub fn id(&self) -> &[u8] {
        &self.meta.id
    }

    /// The timestamp reads happen at.
    pub fn read_timestamp(&self) -> Timestamp {
        self.read_ts
    }

    /// The provisional commit timestamp.
    pub fn write_timestamp(&self) -> Timestamp {
        txn_ts(&self.meta)
    }

    fn check_open(&self) -> Result<()> {
        self.db.check_running()?;
        match self.state {
            State::Open if self.shared.lock().aborted => Err(Error::retry(
                RetryReason::Aborted,
                "the transaction record was aborted by a conflicting transaction",
            )),
            State::Open => Ok(()),
            State::Committed => Err(Error::Finished("committed")),
            State::RolledBack => Err(Error::Finished("rolled back")),
        }
    }

    /// Makes the reads that follow locking reads (until turned off): the reads of a statement
    /// that will overwrite what it reads (UPDATE, DELETE). A locking read that meets another
    /// transaction's intent waits for that transaction to finish, as a write would, instead of
    /// reading below it; and it sees the newest committed value, moving the transaction's read
    /// timestamp up to it (when the transaction's earlier reads still hold there). Without this,
    /// two transactions updating one row both read the old value and the later one must
    /// restart; with it, the later one waits and then reads the value it overwrites.
    pub fn set_locking(&mut self, on: bool) {
        self.locking = on;
    }

    fn header(&self) -> BatchHeader {
        // A locking read treats every newer version as uncertain: it moves up to read it.
        let limit = if self.locking {
            Timestamp::MAX
        } else {
            self.uncertainty_limit
        };
        BatchHeader {
            timestamp: Some(self.read_ts.into()),
            uncertainty_limit: Some(limit.into()),
            txn: Some(self.meta.clone()),
            now: Some(self.db.clock().now().into()),
            one_phase: false,
            can_bump: false,
        }
    }

    /// Reads one key.
    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let req = Request {
            kind: Some(request::Kind::Get(GetRequest { key: key.to_vec() })),
        };
        let mut resp = self.read(vec![req]).await?;
        self.reads.push(ReadSpan {
            start: key.to_vec(),
            end: Vec::new(),
        });
        Ok(resp.pop().and_then(|r| r.value))
    }

    /// Reads several keys in one round trip per range.
    pub async fn get_many(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        let reqs = keys
            .iter()
            .map(|k| Request {
                kind: Some(request::Kind::Get(GetRequest { key: k.clone() })),
            })
            .collect();
        let resp = self.read(reqs).await?;
        for k in keys {
            self.reads.push(ReadSpan {
                start: k.clone(),
                end: Vec::new(),
            });
        }
        Ok(resp.into_iter().map(|r| r.value).collect())
    }

    /// Scans `[start, end)` up to `limit` rows (0: no limit). The span read is recorded up to
    /// where the scan stopped.
    pub async fn scan(&mut self, start: &[u8], end: &[u8], limit: u64) -> Result<Vec<KeyValue>> {
        let req = Request {
            kind: Some(request::Kind::Scan(ScanRequest {
                start_key: start.to_vec(),
                end_key: end.to_vec(),
                limit,
            })),
        };
        let resp = self.read(vec![req]).await?.pop().unwrap_or_default();
        let read_end = if resp.resume_key.is_empty() {
            end.to_vec()
        } else {
            resp.resume_key.clone()
        };
        self.reads.push(ReadSpan {
            start: start.to_vec(),
            end: read_end,
        });
        Ok(resp.rows)
    }

    async fn read(&mut self, reqs: Vec<Request>) -> Result<Vec<Response>> {
        self.check_open()?;
        let mut ambiguous = 0;
        loop {
            let header = self.header();
            match self.db.sender().send_with(&header, reqs.clone()).await {
                Ok(r) => return Ok(r),
                Err(bini_kv::Error::WriteIntent { key, txn }) => {
                    let push_to = self.uncertainty_limit.max(self.read_ts);
                    // A locking read waits for the writer to finish, as a write would.
                    let waits = self.locking;
                    let pushed =
                        conflict::resolve(&self.db, Some(&self.meta), &key, *txn, waits, push_to)
                            .await;
                    if let Err(e) = pushed {
                        self.abandon().await;
                        return Err(e);
                    }
                }
                Err(bini_kv::Error::ReadUncertain { ts }) => {
                    // A write that may precede us in real time: read above it, if what we read
                    // so far is still valid there.
                    self.refresh_to(ts).await?;
                }
                // A read changes nothing: one that timed out (its range lost its leader) can
                // simply go again.
                Err(bini_kv::Error::Timeout(why)) if ambiguous < AMBIGUOUS_RETRIES => {
                    ambiguous += 1;
                    tracing::debug!(reason = %why, "retrying a read that timed out");
                }
                Err(e) => return Err(self.fail(e).await),
            }
        }
    }

    /// Writes `value` at `key`.
    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.write(vec![put(key, value)]).await
    }

    /// Deletes `key`.
    pub async fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.write(vec![delete(key)]).await
    }

    /// Makes the transaction read-only (or read-write again): its writes fail with
    /// [`Error::ReadOnly`]. A SQL `READ ONLY` transaction is refused writes here as well as
    /// by statement, so no path around the statement check can write.
    pub fn set_read_only(&mut self, on: bool) {
        self.read_only = on;
    }

    fn check_writable(&self) -> Result<()> {
        if self.read_only_as_of {
            return Err(Error::ReadOnly(
                "a transaction AS OF SYSTEM TIME is read-only",
            ));
        }
        if self.read_only {
            return Err(Error::ReadOnly("the transaction is read-only"));
        }
        Ok(())
    }

    /// Sends writes (puts and deletes) in one batch, one round trip per range.
    pub async fn write(&mut self, mut reqs: Vec<Request>) -> Result<()> {
        self.check_open()?;
        self.check_writable()?;
        let keys: Vec<Vec<u8>> = reqs.iter().filter_map(write_key).collect();
        let Some(first) = keys.first().cloned() else {
            return Ok(());
        };
        if self.undo.is_some() {
            // Under a savepoint: remember what each key held, to put it back on rollback.
            let before = self.get_many(&keys).await?;
            if let Some(undo) = &mut self.undo {
                undo.extend(keys.iter().cloned().zip(before));
            }
        }
        if !self.has_record {
            self.meta.anchor = first;
            reqs.push(Request {
                kind: Some(request::Kind::BeginTxn(BeginTxnRequest {
                    txn: Some(self.meta.clone()),
                })),
            });
        }
        let sender = self.db.sender();
        self.shared
            .lock()
            .intents
            .add(&keys, |k| sender.cached_range_id(k));
        if !self.has_record {
            // From the first attempt on, a record may exist: rollback must reach it.
            self.has_record = true;
            self.start_heartbeat();
        }
        let resp = self.send_writes(reqs).await?;
        self.absorb(&resp);
        Ok(())
    }

    /// Marks a point to roll back to. Until [`forget_savepoints`](Self::forget_savepoints),
    /// each write first reads what it overwrites (one extra round trip per write batch).
    pub fn savepoint(&mut self) -> Savepoint {
        let at_start = self.shared.lock().intents.is_empty();
        Savepoint {
            pos: self.undo.get_or_insert_with(Vec::new).len(),
            at_start,
        }
    }

    /// Undoes every write made since `sp`, restoring what the transaction saw then. The keys
    /// stay locked by this transaction until it ends, as in CockroachDB.
    pub async fn rollback_to(&mut self, sp: Savepoint) -> Result<()> {
        let Some(undo) = &mut self.undo else {
            return Ok(());
        };
        let later = undo.split_off(sp.pos.min(undo.len()));
        let mut restored = BTreeSet::new();
        let mut reqs = Vec::new();
        for (key, before) in later {
            // The first record of a key holds its value at the savepoint.
            if restored.insert(key.clone()) {
                reqs.push(match before {
                    Some(v) => put(&key, &v),
                    None => delete(&key),
                });
            }
        }
        let undo = self.undo.take();
        let r = self.write(reqs).await;
        self.undo = undo;
        r
    }

    /// Ends savepoint bookkeeping (no savepoint is open any more).
    pub fn forget_savepoints(&mut self) {
        self.undo = None;
    }

    async fn send_writes(&mut self, reqs: Vec<Request>) -> Result<Vec<Response>> {
        let mut ambiguous = 0;
        loop {
            let header = self.header();
            match self.db.sender().send_with(&header, reqs.clone()).await {
                Ok(r) => return Ok(r),
                // The range lost its leader (or the proposal timed out) with the writes in
                // flight: they may or may not have applied. Intents (and the record's
                // BeginTxn) are idempotent for this transaction, so sending them again is
                // safe; only a commit's outcome must reach the client as unknown.
                Err(bini_kv::Error::Timeout(why)) if ambiguous < AMBIGUOUS_RETRIES => {
                    ambiguous += 1;
                    tracing::debug!(reason = %why, "resending writes of unknown outcome");
                }
                Err(bini_kv::Error::WriteIntent { key, txn }) => {
                    let waited = conflict::resolve(
                        &self.db,
                        Some(&self.meta),
                        &key,
                        *txn,
                        true,
                        self.read_ts,
                    )
                    .await;
                    if let Err(e) = waited {
                        // A deadlock victim or a timeout: let go of our intents at once.
                        self.abandon().await;
                        return Err(e);
                    }
                }
                Err(e) => return Err(self.fail(e).await),
            }
        }
    }

    /// Moves the write timestamp up to the highest timestamp a write landed at.
    fn absorb(&mut self, resp: &[Response]) {
        for r in resp {
            if let Some(ts) = r.timestamp.map(Timestamp::from) {
                if ts > txn_ts(&self.meta) {
                    self.meta.write_ts = Some(ts.into());
                }
            }
            if let Some(rec) = &r.record {
                if rec.status == TxnStatus::Aborted as i32 {
                    self.shared.lock().aborted = true;
                }
            }
        }
        let _ = self.db.clock().update(txn_ts(&self.meta));
    }

    /// Moves the read timestamp up to `ts` if nothing read so far changed in between.
    async fn refresh_to(&mut self, ts: Timestamp) -> Result<()> {
        if ts <= self.read_ts {
            return Ok(());
        }
        if self.read_only_as_of {
            // A read in the past has no uncertainty; nothing can move it.
            return Err(Error::retry(RetryReason::RefreshFailed, "read in the past"));
        }
        if !self.reads.is_empty() {
            let reqs: Vec<Request> = self
                .reads
                .iter()
                .map(|s| Request {
                    kind: Some(request::Kind::Refresh(RefreshRequest {
                        start_key: s.start.clone(),
                        end_key: s.end.clone(),
                        from: Some(self.read_ts.into()),
                    })),
                })
                .collect();
            let mut header = self.header();
            header.timestamp = Some(ts.into());
            header.uncertainty_limit = Some(ts.into());
            match self.db.sender().send_with(&header, reqs).await {
                Ok(_) => {}
                Err(bini_kv::Error::RefreshFailed { key, ts: at }) => {
                    let detail = format!(
                        "key {} changed at {at} after this transaction read it at {}",
                        bini_kv::keys::pretty(&key),
                        self.read_ts
                    );
                    self.abandon().await;
                    return Err(Error::retry(RetryReason::RefreshFailed, detail));
                }
                Err(bini_kv::Error::WriteIntent { key, txn }) => {
                    // Someone else's intent in a span we read, at or below the new timestamp:
                    // we cannot move past it without knowing its fate.
                    let _ =
                        conflict::resolve(&self.db, Some(&self.meta), &key, *txn, false, ts).await;
                    self.abandon().await;
                    return Err(Error::retry(
                        RetryReason::RefreshFailed,
                        format!(
                            "a concurrent write to {} blocks moving the read timestamp",
                            bini_kv::keys::pretty(&key)
                        ),
                    ));
                }
                Err(e) => return Err(self.fail(e).await),
            }
        }
        self.read_ts = ts;
        if txn_ts(&self.meta) < ts {
            self.meta.write_ts = Some(ts.into());
        }
        Ok(())
    }

    /// Commits. A transaction that wrote nothing just ends; one whose writes (all given here,
    /// in one range) can go in one batch commits in one phase.
    pub async fn commit(&mut self) -> Result<()> {
        self.commit_with(Vec::new()).await
    }

    /// Sends `reqs` (puts and deletes) and commits, in one round trip when the transaction has
    /// no intents yet and they all fall in one range (the one-phase commit).
    pub async fn commit_with(&mut self, reqs: Vec<Request>) -> Result<()> {
        self.check_open()?;
        if !reqs.is_empty() {
            self.check_writable()?;
        }
        if !reqs.is_empty() && !self.has_record {
            match self.commit_one_phase(reqs.clone()).await {
                Ok(()) => return Ok(()),
                Err(Error::Kv(bini_kv::Error::SpansRanges)) => {}
                Err(e) => return Err(e),
            }
        }
        if !reqs.is_empty() {
            self.write(reqs).await?;
        }
        if !self.has_record {
            self.state = State::Committed;
            return Ok(());
        }
        loop {
            let ts = txn_ts(&self.meta);
            if ts > self.read_ts {
                self.refresh_to(ts).await?;
            }
            let end = end_txn(&self.meta, true, self.intents());
            let header = self.header();
            match self.db.sender().send_with(&header, vec![end]).await {
                Ok(mut resp) => {
                    let record = resp.pop().and_then(|r| r.record).unwrap_or_default();
                    self.finish(State::Committed);
                    let left = (record.intents, record.intent_spans);
                    self.resolve_async(left, TxnStatus::Committed);
                    self.db.commit_wait(txn_ts(&self.meta)).await;
                    return Ok(());
                }
                Err(bini_kv::Error::TxnPushed { ts }) => {
                    // A reader pushed us: commit later, if our reads still hold there.
                    self.meta.write_ts = Some(ts.into());
                }
                Err(e) => return Err(self.fail(e).await),
            }
        }
    }

    async fn commit_one_phase(&mut self, reqs: Vec<Request>) -> Result<()> {
        let keys: Vec<Vec<u8>> = reqs.iter().filter_map(write_key).collect();
        self.meta.anchor = keys.first().cloned().unwrap_or_default();
        loop {
            let mut batch = reqs.clone();
            batch.push(end_txn(&self.meta, true, Default::default()));
            let mut header = self.header();
            header.one_phase = true;
            header.can_bump = self.reads.is_empty();
            match self.db.sender().send_with(&header, batch).await {
                Ok(resp) => {
                    self.absorb(&resp);
                    self.finish(State::Committed);
                    self.db.commit_wait(txn_ts(&self.meta)).await;
                    return Ok(());
                }
                Err(bini_kv::Error::WriteIntent { key, txn }) => {
                    conflict::resolve(&self.db, Some(&self.meta), &key, *txn, true, self.read_ts)
                        .await?;
                }
                Err(bini_kv::Error::TxnPushed { ts }) => self.refresh_to(ts).await?,
                Err(e @ bini_kv::Error::SpansRanges) => return Err(Error::Kv(e)),
                Err(e) => return Err(self.fail(e).await),
            }
        }
    }

    /// Rolls back: aborts the record and removes the intents.
    pub async fn rollback(&mut self) -> Result<()> {
        if self.state != State::Open {
            return Ok(());
        }
        self.abandon().await;
        Ok(())
    }

    /// Aborts the record (if any) and cleans up, leaving the transaction rolled back.
    async fn abandon(&mut self) {
        self.finish(State::RolledBack);
        if !self.has_record {
            return;
        }
        let end = end_txn(&self.meta, false, self.intents());
        let header = self.header();
        match self.db.sender().send_with(&header, vec![end]).await {
            Ok(_) => {
                // Every intent, not just those the record lists: after a push aborted us, the
                // record knows only the keys of our last heartbeat.
                self.resolve_async(self.intents(), TxnStatus::Aborted);
            }
            Err(e) => {
                // The record will expire and whoever meets the intents cleans them up.
                tracing::debug!(error = %e, "rollback could not reach the record");
            }
        }
    }

    /// Turns a lower-layer error into the transaction's error, rolling back when the
    /// transaction cannot go on.
    async fn fail(&mut self, e: bini_kv::Error) -> Error {
        match e {
            bini_kv::Error::TxnAborted(why) => {
                self.abandon().await;
                Error::retry(RetryReason::Aborted, why)
            }
            e => Error::Kv(e),
        }
    }

    fn finish(&mut self, state: State) {
        self.state = state;
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }

    /// The keys and spans of the transaction's intents.
    fn intents(&self) -> (Vec<Vec<u8>>, Vec<KeySpan>) {
        self.shared.lock().intents.parts()
    }

    fn resolve_async(&self, (keys, spans): (Vec<Vec<u8>>, Vec<KeySpan>), status: TxnStatus) {
        if keys.is_empty() && spans.is_empty() {
            return;
        }
        let db = self.db.clone();
        let (id, ts) = (self.meta.id.clone(), txn_ts(&self.meta));
        tokio::spawn(async move {
            let resolved = conflict::resolve_intents(&db, &id, &keys, &spans, status, ts).await;
            if let Err(e) = resolved {
                tracing::debug!(error = %e, "asynchronous intent resolution failed");
            }
        });
    }

    fn start_heartbeat(&mut self) {
        let db = self.db.clone();
        let meta = self.meta.clone();
        let shared = self.shared.clone();
        self.heartbeat = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
            tick.tick().await;
            // The version of the intents the record holds, once a heartbeat wrote them.
            let mut recorded = None;
            loop {
                tick.tick().await;
                if db.inner.stopped.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let mut beat = HeartbeatTxnRequest {
                    txn: Some(meta.clone()),
                    ..Default::default()
                };
                let version = {
                    let shared = shared.lock();
                    let version = shared.intents.version();
                    if recorded == Some(version) {
                        beat.intents_unchanged = true;
                    } else {
                        (beat.intents, beat.intent_spans) = shared.intents.parts();
                    }
                    version
                };
                let req = Request {
                    kind: Some(request::Kind::HeartbeatTxn(beat)),
                };
                let header = BatchHeader {
                    now: Some(db.clock().now().into()),
                    ..Default::default()
                };
                if let Ok(mut r) = db.sender().send_with(&header, vec![req]).await {
                    let record = r.pop().and_then(|r| r.record).unwrap_or_default();
                    if record.status == TxnStatus::Aborted as i32 {
                        shared.lock().aborted = true;
                        return;
                    }
                    recorded = Some(version);
                }
            }
        }));
    }
}

impl Drop for Txn {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        let stopped = self
            .db
            .inner
            .stopped
            .load(std::sync::atomic::Ordering::SeqCst);
        if self.state == State::Open && self.has_record && !stopped {
            // Roll back in the background; if that fails the record expires.
            let db = self.db.clone();
            let meta = self.meta.clone();
            let (keys, spans) = self.intents();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let end = end_txn(&meta, false, (keys.clone(), spans.clone()));
                    let header = BatchHeader {
                        now: Some(db.clock().now().into()),
                        txn: Some(meta.clone()),
                        ..Default::default()
                    };
                    if db.sender().send_with(&header, vec![end]).await.is_ok() {
                        // Every intent, as in `abandon`: the record may list only some.
                        let _ = conflict::resolve_intents(
                            &db,
                            &meta.id,
                            &keys,
                            &spans,
                            TxnStatus::Aborted,
                            txn_ts(&meta),
                        )
                        .await;
                    }
                });
            }
        }
    }
}

/// An EndTxn request committing or aborting `meta`, listing the keys and spans of its intents.
fn end_txn(
    meta: &TxnMeta,
    commit: bool,
    (intents, intent_spans): (Vec<Vec<u8>>, Vec<KeySpan>),
) -> Request {
    Request {
        kind: Some(request::Kind::EndTxn(EndTxnRequest {
            txn: Some(meta.clone()),
            commit,
            intents,
            intent_spans,
        })),
    }
}

/// A put request.
pub fn put(key: &[u8], value: &[u8]) -> Request {
    Request {
        kind: Some(request::Kind::Put(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
        })),
    }
}

/// A delete request.
pub fn delete(key: &[u8]) -> Request {
    Request {
        kind: Some(request::Kind::Delete(DeleteRequest { key: key.to_vec() })),
    }
}

fn write_key(r: &Request) -> Option<Vec<u8>> {
    match &r.kind {
        Some(request::Kind::Put(p)) => Some(p.key.clone()),
        Some(request::Kind::Delete(d)) => Some(d.key.clone()),
        _ => None,
    }
}
