//! `COPY … FROM STDIN`: the session side. The data arrives in CopyData messages after the
//! statement returns [`Output::CopyIn`]; rows are parsed (`crate::copy`) and inserted in
//! batches. A COPY outside a transaction block is one transaction of its own, so a bad row
//! anywhere leaves nothing behind.

use sqlparser::ast;

use super::{Output, Session};
use crate::copy::CopyIn;
use crate::error::{Error, Result};
use crate::planner::{ident, must_table, Params};

impl Session {
    /// Starts `COPY table (columns) FROM STDIN`: checks the names, then waits for data.
    pub(super) async fn copy_in(
        &mut self,
        table: &ast::ObjectName,
        columns: &[ast::Ident],
    ) -> Result<Output> {
        let mut txn = self.db.begin();
        let desc = {
            let mut ctx = self.context(&mut txn, Params::default(), true);
            must_table(&mut ctx, table).await
        };
        let _ = txn.rollback().await;
        let desc = desc?;
        let names: Vec<String> = if columns.is_empty() {
            desc.columns
                .iter()
                .filter(|c| !c.hidden)
                .map(|c| c.name.clone())
                .collect()
        } else {
            let mut v = Vec::new();
            for c in columns {
                let n = ident(c);
                if desc.column_index(&n).is_none() {
                    return Err(Error::UndefinedColumn(n));
                }
                v.push(n);
            }
            v
        };
        let quoted: Vec<String> = names
            .iter()
            .map(|n| format!("\"{}\"", n.replace('"', "\"\"")))
            .collect();
        let prefix = format!("INSERT INTO {table} ({})", quoted.join(", "));
        let mut copy = CopyIn::new(prefix, names.len(), self.registry.memory.reservation());
        if !self.in_block {
            // Outside a transaction block the whole COPY is one transaction (its batches of
            // rows run inside it, as statements of an implicit block).
            self.open_block(self.db.begin(), false);
            copy.own_txn = true;
        }
        self.copy = Some(copy);
        Ok(Output::CopyIn(names.len()))
    }

    /// Takes CopyData bytes of the running COPY. Errors are kept for [`copy_done`]
    /// (Self::copy_done), as Postgres reports them when the data ends.
    pub async fn copy_data(&mut self, data: &[u8]) {
        let Some(mut copy) = self.copy.take() else {
            return;
        };
        if copy.failed.is_none() {
            if let Err(e) = copy.feed(data) {
                copy.failed = Some(e);
            } else if copy.batch_full() {
                self.copy_flush(&mut copy).await;
            }
        }
        self.copy = Some(copy);
    }

    /// Ends the running COPY: inserts what is left and reports the rows copied.
    pub async fn copy_done(&mut self) -> Result<u64> {
        let Some(mut copy) = self.copy.take() else {
            return Err(Error::InvalidTransactionState(
                "no COPY is in progress".into(),
            ));
        };
        if copy.failed.is_none() {
            if let Err(e) = copy.finish() {
                copy.failed = Some(e);
            } else {
                self.copy_flush(&mut copy).await;
            }
        }
        if copy.own_txn {
            let txn = self.close_block();
            let Some(mut txn) = txn else {
                return Err(Error::Internal("COPY lost its transaction".into()));
            };
            return match copy.failed {
                Some(e) => {
                    let _ = txn.rollback().await;
                    Err(e)
                }
                None => {
                    txn.commit().await?;
                    Ok(copy.count)
                }
            };
        }
        match copy.failed {
            Some(e) => self.fail(Err(e)),
            None => Ok(copy.count),
        }
    }

    /// Abandons the running COPY (the client sent CopyFail).
    pub async fn copy_fail(&mut self) {
        let Some(copy) = self.copy.take() else {
            return;
        };
        if copy.own_txn {
            if let Some(mut txn) = self.close_block() {
                let _ = txn.rollback().await;
            }
        } else if self.in_block {
            self.failed = true;
        }
    }

    async fn copy_flush(&mut self, copy: &mut CopyIn) {
        let Some((sql, n)) = copy.take_insert() else {
            return;
        };
        match self.execute_sql(&sql).await.pop() {
            Some(Ok(_)) => copy.count += n,
            Some(Err(e)) => copy.failed = Some(e),
            None => {}
        }
    }
}
