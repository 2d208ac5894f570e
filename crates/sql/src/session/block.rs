//! Transaction blocks: `BEGIN … COMMIT`, their modes, savepoints, and how a block fails.
//!
//! A block holds one transaction. Its state follows Postgres:
//!
//! - after an error, every statement but `ROLLBACK` (or `COMMIT`, which then rolls back, or
//!   `ROLLBACK TO SAVEPOINT`) fails with 25P02 until the block ends;
//! - `BEGIN READ ONLY`, `SET TRANSACTION READ ONLY` and `default_transaction_read_only`
//!   make the block read-only: a statement that writes fails with 25006, and the transaction
//!   itself refuses writes (`Txn::set_read_only`) should any path reach it;
//! - a block's read-write mode can only be set before its first query (25001);
//! - isolation levels are accepted and run SERIALIZABLE (`vars.rs` says why).
//!
//! A statement interrupted mid-way (a cancel request, `statement_timeout`) may have had the
//! block's transaction out of the session when it stopped; the transaction is then dropped,
//! which rolls it back, and the block is failed: [`Session::txn`] is `None` while
//! [`Session::in_block`] stays set.

use sqlparser::ast;

use bini_mvcc::Timestamp;
use bini_txn::Txn;

use super::{Output, Session};
use crate::error::{Error, Result};

impl Session {
    /// Starts a block around `txn`.
    pub(super) fn open_block(&mut self, txn: Txn, read_only: bool) {
        let mut txn = txn;
        txn.set_read_only(read_only);
        self.txn = Some(txn);
        self.in_block = true;
        self.block += 1;
        self.open_cursors.clear();
        self.failed = false;
        self.read_only = read_only;
        self.queried = false;
        self.savepoints.clear();
    }

    /// Ends the block, handing back its transaction (absent if an interrupted statement
    /// dropped it) and putting back what `SET LOCAL` changed.
    pub(super) fn close_block(&mut self) -> Option<Txn> {
        self.in_block = false;
        self.failed = false;
        self.read_only = false;
        self.queried = false;
        self.savepoints.clear();
        self.undo_local_settings();
        self.txn.take()
    }

    /// `BEGIN [modes]`, optionally `AS OF SYSTEM TIME` (`as_of`, in nanoseconds).
    pub(super) fn begin(
        &mut self,
        modes: &[ast::TransactionMode],
        as_of: Option<u64>,
    ) -> Result<Output> {
        if self.in_block {
            // Postgres warns and carries on.
            return Ok(Output::Command("BEGIN".into()));
        }
        let mut read_only = self.setting("default_transaction_read_only") == "on";
        for m in modes {
            if let ast::TransactionMode::AccessMode(a) = m {
                read_only = *a == ast::TransactionAccessMode::ReadOnly;
            }
        }
        let txn = match as_of {
            Some(wall) => self.db.begin_as_of(Timestamp { wall, logical: 0 }),
            None => self.db.begin(),
        };
        self.open_block(txn, read_only);
        Ok(Output::Begin)
    }

    /// `COMMIT`: commits, or rolls back a failed block.
    pub(super) async fn commit(&mut self) -> Result<Output> {
        if !self.in_block {
            return Ok(Output::End("COMMIT"));
        }
        let failed = self.failed || self.txn.is_none();
        let Some(mut txn) = self.close_block() else {
            return Ok(Output::End("ROLLBACK"));
        };
        if failed {
            let _ = txn.rollback().await;
            return Ok(Output::End("ROLLBACK"));
        }
        txn.commit().await?;
        Ok(Output::End("COMMIT"))
    }

    /// `ROLLBACK`.
    pub(super) async fn rollback(&mut self) -> Output {
        if let Some(mut txn) = self.close_block() {
            let _ = txn.rollback().await;
        }
        Output::End("ROLLBACK")
    }

    /// Rolls back the block's transaction and fails the block (the connection is closing,
    /// idle in it for too long).
    pub async fn abandon(&mut self) {
        if let Some(mut txn) = self.txn.take() {
            let _ = txn.rollback().await;
        }
        if self.in_block {
            self.failed = true;
        }
    }

    /// Records that the running statement was stopped before it finished.
    pub(super) fn statement_interrupted(&mut self) {
        if self.in_block {
            self.failed = true;
        }
    }

    /// Marks the block failed when `r` is an error.
    pub(super) fn fail<T>(&mut self, r: Result<T>) -> Result<T> {
        if r.is_err() && self.in_block {
            self.failed = true;
        }
        r
    }

    /// `SET TRANSACTION …` (or `SET SESSION CHARACTERISTICS AS TRANSACTION …` when
    /// `session`).
    pub(super) fn set_transaction(
        &mut self,
        modes: &[ast::TransactionMode],
        snapshot: bool,
        session: bool,
    ) -> Result<Output> {
        if snapshot {
            return Err(Error::FeatureNotSupported(
                "SET TRANSACTION SNAPSHOT".into(),
            ));
        }
        if !session && !self.in_block {
            return Err(Error::NoActiveTransaction("SET TRANSACTION"));
        }
        for m in modes {
            match m {
                ast::TransactionMode::AccessMode(a) => {
                    let read_only = *a == ast::TransactionAccessMode::ReadOnly;
                    if session {
                        let value = if read_only { "on" } else { "off" };
                        self.set_var("default_transaction_read_only", value, false)?;
                    } else {
                        self.set_read_only(read_only)?;
                    }
                }
                // Every level runs SERIALIZABLE (see vars.rs).
                ast::TransactionMode::IsolationLevel(_) => {}
            }
        }
        Ok(Output::Command("SET".into()))
    }

    /// Makes the block read-only or read-write (`SET TRANSACTION`, `transaction_read_only`).
    pub(super) fn set_read_only(&mut self, read_only: bool) -> Result<()> {
        if !self.in_block {
            return Err(Error::NoActiveTransaction("SET TRANSACTION"));
        }
        if !read_only && self.read_only && self.queried {
            return Err(Error::ActiveTransaction(
                "transaction read-write mode must be set before any query".into(),
            ));
        }
        self.read_only = read_only;
        if let Some(txn) = &mut self.txn {
            txn.set_read_only(read_only);
        }
        Ok(())
    }

    /// Whether a statement run now runs read-only.
    pub(super) fn reads_only(&self) -> bool {
        if self.in_block {
            self.read_only
        } else {
            self.setting("default_transaction_read_only") == "on"
        }
    }

    /// Refuses a statement that writes when the transaction is read-only.
    pub(super) fn check_writable(&self, stmt: &ast::Statement, upsert: bool) -> Result<()> {
        if !self.reads_only() {
            return Ok(());
        }
        match writes(stmt, upsert) {
            Some(verb) => Err(Error::ReadOnlyTransaction(verb)),
            None => Ok(()),
        }
    }

    /// SAVEPOINT: a point in the open transaction to roll back to.
    pub(super) fn savepoint(&mut self, name: String) -> Result<Output> {
        if !self.in_block {
            return Err(Error::NoActiveTransaction("SAVEPOINT"));
        }
        let Some(txn) = &mut self.txn else {
            return Err(Error::InFailedTransaction);
        };
        if self.failed {
            return Err(Error::InFailedTransaction);
        }
        let sp = txn.savepoint();
        self.savepoints.push((name, sp));
        Ok(Output::Command("SAVEPOINT".into()))
    }

    /// ROLLBACK TO SAVEPOINT: undoes what the transaction wrote since, and clears a failure.
    /// The savepoint stays open. A transaction the cluster aborted (a retryable error) cannot
    /// be mended in place; rolling back to a savepoint set before any write
    /// (`cockroach_restart`) starts it again instead.
    pub(super) async fn rollback_to(&mut self, name: String) -> Result<Output> {
        if !self.in_block {
            return Err(Error::NoActiveTransaction("ROLLBACK TO SAVEPOINT"));
        }
        let Some(txn) = &mut self.txn else {
            // An interrupted statement dropped the transaction: nothing is left to mend.
            return Err(Error::InFailedTransaction);
        };
        let Some(pos) = self.savepoints.iter().rposition(|(n, _)| *n == name) else {
            return self.fail(Err(Error::InvalidSavepoint(name)));
        };
        self.savepoints.truncate(pos + 1);
        let sp = self.savepoints[pos].1;
        match txn.rollback_to(sp).await {
            Ok(()) => {}
            Err(e) if e.is_retryable() && sp.at_start() => {
                let _ = txn.rollback().await;
                let mut fresh = self.db.begin();
                fresh.set_read_only(self.read_only);
                self.savepoints[pos].1 = fresh.savepoint();
                self.txn = Some(fresh);
            }
            Err(e) => return self.fail(Err(e.into())),
        }
        self.failed = false;
        Ok(Output::Command("ROLLBACK".into()))
    }

    /// RELEASE SAVEPOINT: forgets the savepoint and every later one; its writes stay.
    pub(super) fn release(&mut self, name: String) -> Result<Output> {
        if !self.in_block {
            return Err(Error::NoActiveTransaction("RELEASE SAVEPOINT"));
        }
        let Some(txn) = &mut self.txn else {
            return Err(Error::InFailedTransaction);
        };
        if self.failed {
            return Err(Error::InFailedTransaction);
        }
        let Some(pos) = self.savepoints.iter().rposition(|(n, _)| *n == name) else {
            return self.fail(Err(Error::InvalidSavepoint(name)));
        };
        self.savepoints.truncate(pos);
        if self.savepoints.is_empty() {
            txn.forget_savepoints();
        }
        Ok(Output::Command("RELEASE".into()))
    }
}

/// The verb of a statement that writes (for "cannot execute … in a read-only transaction"),
/// or `None` for one that only reads.
fn writes(stmt: &ast::Statement, upsert: bool) -> Option<String> {
    use ast::Statement as S;
    let verb = match stmt {
        S::Insert(_) if upsert => "UPSERT",
        S::Insert(_) => "INSERT",
        S::Update(_) => "UPDATE",
        S::Delete(_) => "DELETE",
        S::Truncate(_) => "TRUNCATE",
        S::Copy { to: false, .. } => "COPY FROM",
        S::CreateDatabase { .. } => "CREATE DATABASE",
        S::CreateTable(_) => "CREATE TABLE",
        S::CreateIndex(_) => "CREATE INDEX",
        S::AlterTable(_) => "ALTER TABLE",
        S::Drop { object_type, .. } => return Some(format!("DROP {object_type}")),
        _ => return None,
    };
    Some(verb.into())
}
