//! Results that stream: a query whose rows do not all come in its first batches leaves an
//! open [`Cursor`] in its output, which the gateway pulls from as the client reads (and
//! which backs a suspended portal: an Execute with a row limit reads only that many).
//!
//! - A small result is computed whole before the statement returns, so an autocommit
//!   statement can still be retried transparently on a retryable error; only a result larger
//!   than [`FIRST_ROWS`] rows streams. After that, an error reaches the client mid-result, as
//!   it can in Postgres.
//! - An autocommit query's cursor owns its transaction (read-only: it commits when the rows
//!   end, and dropping the cursor early rolls it back).
//! - A cursor of a transaction block reads in the block's transaction. It sees the block as
//!   it was when the query ran: before the block's next statement runs, every open cursor of
//!   the block reads its remaining rows ahead ([`Session::drain_cursors`]), so that
//!   statement's writes never show in it (Postgres cursors are insensitive too). A cursor
//!   outliving its block fails.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use bini_txn::Txn;

use super::Session;
use crate::error::{Error, Result};
use crate::exec::{BoxSource, Exec, Interrupt, BATCH_ROWS};
use crate::memory::{row_bytes, Reservation};
use crate::plan::Row;

/// Rows a query computes before its result becomes a stream.
pub const FIRST_ROWS: usize = BATCH_ROWS;

/// An open result, shared by the gateway (which reads it) and the session (which may
/// drain it).
pub type SharedCursor = Arc<tokio::sync::Mutex<Cursor>>;

/// The rest of a query's rows, read on demand.
pub struct Cursor {
    source: BoxSource,
    /// The transaction it reads in, if it owns one (an autocommit query).
    txn: Option<Txn>,
    /// The block it reads in otherwise (see `Session::block`).
    block: u64,
    /// Rows read ahead (when drained).
    buffered: VecDeque<Row>,
    /// What the statement holds (subquery and CTE rows) and the buffered rows.
    mem: Reservation,
    interrupt: Interrupt,
    done: bool,
}

impl std::fmt::Debug for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cursor")
            .field("owns_txn", &self.txn.is_some())
            .field("block", &self.block)
            .field("buffered", &self.buffered.len())
            .field("done", &self.done)
            .finish()
    }
}

impl Cursor {
    /// A cursor over `source`, reading in the session's block `block`.
    pub(super) fn new(
        source: BoxSource,
        block: u64,
        mem: Reservation,
        interrupt: Interrupt,
    ) -> Self {
        Cursor {
            source,
            txn: None,
            block,
            buffered: VecDeque::new(),
            mem,
            interrupt,
            done: false,
        }
    }

    /// Gives the cursor the autocommit transaction it read its first rows in.
    pub(super) fn own(&mut self, txn: Txn) {
        self.txn = Some(txn);
    }

    async fn pull(&mut self, txn: &mut Txn) -> Result<Option<Vec<Row>>> {
        if self.done {
            return Ok(None);
        }
        let mut cx = Exec {
            txn,
            held: &mut self.mem,
            interrupt: &self.interrupt,
        };
        let batch = self.source.next(&mut cx).await?;
        self.done = batch.is_none();
        Ok(batch)
    }

    /// The buffered rows, a batch at a time.
    fn take_buffered(&mut self) -> Option<Vec<Row>> {
        if self.buffered.is_empty() {
            return None;
        }
        let n = self.buffered.len().min(BATCH_ROWS);
        let batch: Vec<Row> = self.buffered.drain(..n).collect();
        self.mem.shrink(batch.iter().map(row_bytes).sum());
        Some(batch)
    }
}

impl Session {
    /// The next batch of an open result, `None` at its end.
    pub async fn fetch(&mut self, cursor: &mut Cursor) -> Result<Option<Vec<Row>>> {
        if let Some(batch) = cursor.take_buffered() {
            return Ok(Some(batch));
        }
        if let Some(mut txn) = cursor.txn.take() {
            let batch = cursor.pull(&mut txn).await?;
            match batch {
                Some(b) => {
                    cursor.txn = Some(txn);
                    Ok(Some(b))
                }
                None => {
                    // A query's transaction wrote nothing: this only ends it.
                    txn.commit().await?;
                    Ok(None)
                }
            }
        } else {
            if cursor.done {
                return Ok(None);
            }
            if !self.in_block || self.block != cursor.block {
                return Err(Error::InvalidTransactionState(
                    "the transaction this result was read in has ended".into(),
                ));
            }
            let Some(mut txn) = self.txn.take() else {
                return Err(Error::InFailedTransaction);
            };
            let batch = cursor.pull(&mut txn).await;
            self.txn = Some(txn);
            self.fail(batch)
        }
    }

    /// Keeps a block's cursor, to drain before the block's next statement.
    pub(super) fn track(&mut self, cursor: &SharedCursor) {
        self.open_cursors.retain(|c| c.strong_count() > 0);
        self.open_cursors.push(Arc::downgrade(cursor));
    }

    /// Reads every open cursor of the block to its end, so the statement about to run does
    /// not change what they return.
    pub(super) async fn drain_cursors(&mut self) -> Result<()> {
        let open: Vec<Weak<tokio::sync::Mutex<Cursor>>> = std::mem::take(&mut self.open_cursors);
        for weak in open {
            let Some(shared) = weak.upgrade() else {
                continue;
            };
            // Readers take the session first, so no reader holds the cursor now.
            let Ok(mut cursor) = shared.try_lock() else {
                continue;
            };
            if cursor.txn.is_some() || cursor.block != self.block {
                continue;
            }
            let Some(mut txn) = self.txn.take() else {
                return Err(Error::InFailedTransaction);
            };
            let mut r = Ok(());
            loop {
                match cursor.pull(&mut txn).await {
                    Ok(Some(batch)) => {
                        let bytes = batch.iter().map(row_bytes).sum();
                        if let Err(e) = cursor.mem.grow(bytes) {
                            r = Err(e);
                            break;
                        }
                        cursor.buffered.extend(batch);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        r = Err(e);
                        break;
                    }
                }
            }
            self.txn = Some(txn);
            self.fail(r)?;
        }
        Ok(())
    }
}
