//! A SQL session: its current database, its settings and its transaction.
//!
//! [`Session::execute`] runs one statement and returns what the client should see. Outside
//! an explicit transaction every statement runs in its own transaction (autocommit), retried
//! here when the transaction layer asks for a retry — the client never sees those retries,
//! because nothing of the statement's result has been sent yet. Inside `BEGIN … COMMIT` a
//! retryable error goes to the client (SQLSTATE 40001), which retries the whole transaction.
//!
//! Transaction states follow Postgres: after an error inside a transaction, every statement
//! but `ROLLBACK` (and `COMMIT`, which rolls back) fails until the transaction ends.
//!
//! DDL statements are built in `ddl.rs`; EXPLAIN's lines in `explain.rs`.

mod block;
mod copy;
mod cursor;
mod ddl;
mod explain;
mod set;
mod vars;

use ddl::show_create;

pub use cursor::{Cursor, SharedCursor};

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlparser::ast;

use bini_mvcc::Timestamp;
use bini_txn::{Db, Txn};

use crate::catalog::{
    self, CheckDesc, ColumnDesc, IndexDesc, Mutation, TableDesc, DEFAULT_DATABASE,
};
use crate::copy::CopyIn;
use crate::dml;
use crate::error::{Error, Result};
use crate::exec::Interrupt;
use crate::parse::{parse, Parsed};
use crate::plan::{Column, Row};
use crate::planner::{
    ident, is_serial, must_table, name_parts, sql_type, table_name, Context, Params,
};
use crate::registry::{Registry, SessionInfo};
use crate::schema;
use crate::types::{Datum, Type};

/// What Describe tells a client about a prepared statement.
#[derive(Clone, Debug)]
pub struct Described {
    /// Types of `$1`, `$2`, ….
    pub param_types: Vec<Type>,
    /// Result columns (empty for statements that return no rows).
    pub columns: Vec<Column>,
}

/// What a statement returns.
#[derive(Debug)]
pub enum Output {
    /// Rows (SELECT, SHOW, RETURNING): column descriptions and values.
    Rows {
        /// Columns.
        columns: Vec<Column>,
        /// Rows (the first ones, when a cursor follows).
        rows: Vec<Row>,
        /// The command tag's verb (`SELECT`, `INSERT`, …).
        tag: &'static str,
        /// The rest of the rows, read through [`Session::fetch`] (large query results).
        cursor: Option<SharedCursor>,
    },
    /// A command without rows, with its tag (`CREATE TABLE`, `SET`, …).
    Command(String),
    /// INSERT, UPDATE or DELETE without RETURNING: the verb and the rows affected.
    Affected {
        /// `INSERT`, `UPDATE` or `DELETE`.
        verb: &'static str,
        /// Rows written.
        rows: u64,
    },
    /// `BEGIN` started a transaction.
    Begin,
    /// The transaction ended (`COMMIT` or `ROLLBACK`, as the tag says).
    End(&'static str),
    /// `DEALLOCATE` (of statement `name`, or all) or `DISCARD ALL`: the gateway, which keeps
    /// the prepared statements, drops them and answers with `tag`.
    Deallocate {
        /// The statement, or `None` for all of them (and every portal).
        name: Option<String>,
        /// `DEALLOCATE` or `DISCARD ALL`.
        tag: &'static str,
    },
    /// `COPY … FROM STDIN` is ready for this many columns of data
    /// ([`Session::copy_data`], then [`Session::copy_done`]).
    CopyIn(usize),
}

/// Where the session's transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    /// No open transaction.
    Idle,
    /// In `BEGIN … COMMIT`.
    Open,
    /// In a transaction that failed; only ROLLBACK/COMMIT are accepted.
    Failed,
}

/// Autocommit statements are retried this many times on retryable errors.
const AUTO_RETRIES: usize = 20;

/// One client session.
pub struct Session {
    db: Db,
    database: String,
    user: String,
    /// The transaction of the open block. `None` inside a block when a statement was
    /// interrupted mid-way and its transaction dropped (see `block.rs`).
    txn: Option<Txn>,
    /// Inside `BEGIN … COMMIT` (or a COPY's implicit block).
    in_block: bool,
    /// Counts blocks, so a cursor knows whether the block it read in is still open.
    block: u64,
    /// Cursors of the block still open, drained before its next statement (`cursor.rs`).
    open_cursors: Vec<std::sync::Weak<tokio::sync::Mutex<Cursor>>>,
    /// The block failed: only ROLLBACK (or ROLLBACK TO SAVEPOINT) is accepted.
    failed: bool,
    /// The block is read-only.
    read_only: bool,
    /// A statement has run in the block (its read-write mode is fixed).
    queried: bool,
    /// The transaction's open savepoints, oldest first.
    savepoints: Vec<(String, bini_txn::Savepoint)>,
    /// The session variables' values, in `vars::VARS` order.
    settings: Vec<String>,
    /// What `SET LOCAL` replaced (variable index, old value), put back at the block's end.
    local_undo: Vec<(usize, String)>,
    /// The node's registry, where this session shows in `bini_internal.sessions`.
    registry: Arc<Registry>,
    /// A `COPY … FROM STDIN` taking data.
    copy: Option<CopyIn>,
    /// The table whose new index the statement just run left to fill (`schema.rs`).
    backfill: Option<u32>,
    /// Set by a cancel request for the running statement (cleared as each one starts).
    canceled: Arc<AtomicBool>,
    /// The running statement's cancel flag and deadline.
    interrupt: Interrupt,
    id: u64,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.registry.deregister(self.id);
    }
}

impl Session {
    /// A new session on a node, for a client at `client` (an address, for display).
    pub fn new(
        db: Db,
        registry: Arc<Registry>,
        user: &str,
        database: Option<&str>,
        client: &str,
    ) -> Self {
        let database = database
            .filter(|d| !d.is_empty())
            .unwrap_or(DEFAULT_DATABASE)
            .to_string();
        let id = registry.register(SessionInfo {
            id: 0,
            user: user.to_string(),
            database: database.clone(),
            client: client.to_string(),
            application: String::new(),
            active_query: None,
            started: chrono::Utc::now(),
            txn_state: "idle",
        });
        Session {
            registry,
            copy: None,
            backfill: None,
            id,
            db,
            database,
            user: user.to_string(),
            txn: None,
            in_block: false,
            block: 0,
            open_cursors: Vec::new(),
            failed: false,
            read_only: false,
            queried: false,
            savepoints: Vec::new(),
            settings: set::default_settings(),
            local_undo: Vec::new(),
            canceled: Arc::default(),
            interrupt: Interrupt::default(),
        }
    }

    /// The current database.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The session's user.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Makes `flag` the one a cancel request sets to stop the running statement.
    pub fn set_cancel_flag(&mut self, flag: Arc<AtomicBool>) {
        self.canceled = flag;
    }

    /// The transaction state.
    pub fn txn_state(&self) -> TxnState {
        match (self.in_block, self.failed || self.txn.is_none()) {
            (false, _) => TxnState::Idle,
            (true, false) => TxnState::Open,
            (true, true) => TxnState::Failed,
        }
    }

    /// Runs a string of statements (the simple query protocol), stopping at the first error.
    pub async fn execute_sql(&mut self, sql: &str) -> Vec<Result<Output>> {
        let stmts = match parse(sql) {
            Ok(s) => s,
            Err(e) => return vec![self.fail(Err(e))],
        };
        let mut out = Vec::new();
        for s in &stmts {
            let r = self.execute(s, &Params::default()).await;
            let failed = r.is_err();
            out.push(r);
            if failed {
                break;
            }
        }
        out
    }

    /// Runs one parsed statement with parameter values. The statement shows in
    /// `bini_internal.sessions` while it runs and is counted in `bini_internal.statements`.
    pub async fn execute(&mut self, parsed: &Parsed, params: &Params) -> Result<Output> {
        let text = &parsed.text;
        self.registry
            .update(self.id, |s| s.active_query = Some(text.clone()));
        let started = std::time::Instant::now();
        self.canceled.store(false, Ordering::Relaxed);
        let deadline = self.statement_timeout().map(|t| started + t);
        self.interrupt = Interrupt::new(self.canceled.clone(), deadline);
        let r = match self.statement_timeout() {
            Some(limit) => {
                match tokio::time::timeout(limit, self.execute_inner(parsed, params)).await {
                    Ok(r) => r,
                    Err(_) => {
                        self.statement_interrupted();
                        Err(Error::StatementTimeout)
                    }
                }
            }
            None => self.execute_inner(parsed, params).await,
        };
        self.registry.record(text, started.elapsed(), r.is_err());
        let (database, state) = (self.database.clone(), self.txn_state());
        let application = self.setting("application_name").to_string();
        self.registry.update(self.id, |s| {
            s.active_query = None;
            s.database = database;
            s.application = application;
            s.txn_state = match state {
                TxnState::Idle => "idle",
                TxnState::Open => "open",
                TxnState::Failed => "failed",
            };
        });
        r
    }

    async fn execute_inner(&mut self, parsed: &Parsed, params: &Params) -> Result<Output> {
        use ast::Statement as S;
        let (stmt, upsert) = (&parsed.stmt, parsed.upsert);
        let as_of = match &parsed.as_of {
            Some(a) => Some(self.fail(a.resolve(self.db.clock().now().wall))?),
            None => None,
        };
        match stmt {
            S::StartTransaction { modes, .. } => return self.begin(modes, as_of),
            S::Commit { .. } => return self.commit().await,
            S::Rollback {
                savepoint: None, ..
            } => return Ok(self.rollback().await),
            S::Savepoint { name } => return self.savepoint(ident(name)),
            S::Rollback {
                savepoint: Some(name),
                ..
            } => return self.rollback_to(ident(name)).await,
            S::ReleaseSavepoint { name } => return self.release(ident(name)),
            _ => {}
        }
        if self.failed || (self.in_block && self.txn.is_none()) {
            return Err(Error::InFailedTransaction);
        }
        if let Some(out) = self.session_statement(stmt).await? {
            return Ok(out);
        }
        let writable = self.check_writable(stmt, upsert);
        self.fail(writable)?;
        if let S::Copy {
            source:
                ast::CopySource::Table {
                    table_name,
                    columns,
                },
            to: false,
            target: ast::CopyTarget::Stdin,
            ..
        } = stmt
        {
            let r = self.copy_in(table_name, columns).await;
            return self.fail(r);
        }
        if as_of.is_some() && !matches!(stmt, S::Query(_)) {
            return self.fail(Err(Error::FeatureNotSupported(
                "AS OF SYSTEM TIME on a statement other than SELECT or BEGIN".into(),
            )));
        }
        if self.in_block {
            if as_of.is_some() {
                return self.fail(Err(Error::InvalidTransactionState(
                    "inside a transaction, AS OF SYSTEM TIME belongs on BEGIN".into(),
                )));
            }
            self.queried = true;
            if !self.open_cursors.is_empty() {
                self.drain_cursors().await?;
            }
            // Out of the session while the statement runs (it borrows the session too); an
            // interrupted statement drops it, which fails the block (see block.rs).
            let Some(mut txn) = self.txn.take() else {
                return Err(Error::InFailedTransaction);
            };
            self.backfill = None;
            let r = self.run(&mut txn, stmt, params, upsert).await;
            let r = match (r, self.backfill.take()) {
                (Ok(out), Some(id)) => schema::complete(schema::Mode::Within(&mut txn), id)
                    .await
                    .map(|_| out),
                (r, _) => r,
            };
            self.txn = Some(txn);
            if let Ok(Output::Rows {
                cursor: Some(c), ..
            }) = &r
            {
                self.track(c);
            }
            return self.fail(r);
        }
        // Autocommit, with transparent retries.
        let mut attempt = 0;
        loop {
            let mut txn = match as_of {
                Some(wall) => self.db.begin_as_of(Timestamp { wall, logical: 0 }),
                None => self.db.begin(),
            };
            txn.set_read_only(self.reads_only());
            self.backfill = None;
            let r = self.run(&mut txn, stmt, params, upsert).await;
            if let Ok(Output::Rows {
                cursor: Some(c), ..
            }) = &r
            {
                // A large result streams: its transaction goes with it (cursor.rs).
                c.try_lock()
                    .map_err(|_| Error::Internal("a new cursor is in use".into()))?
                    .own(txn);
                return r;
            }
            match settle(&mut txn, r).await {
                Err(e) if e.is_retryable() && attempt < AUTO_RETRIES => {
                    attempt += 1;
                    retry_pause(attempt).await;
                }
                Ok(out) => {
                    // The new index is committed as a mutation; fill it now, page by page.
                    if let Some(id) = self.backfill.take() {
                        schema::complete(schema::Mode::Own(&self.db), id).await?;
                    }
                    return Ok(out);
                }
                other => return other,
            }
        }
    }

    /// What Describe reports of a statement, without running it: the types of its
    /// parameters (declared ones kept, the rest inferred from where they appear, TEXT when
    /// nothing says) and its result columns.
    pub async fn describe(&mut self, parsed: &Parsed, declared: &[Type]) -> Result<Described> {
        use ast::Statement as S;
        let (stmt, upsert) = (&parsed.stmt, parsed.upsert);
        let mut params = Params {
            values: Vec::new(),
            types: declared.to_vec(),
        };
        let bind = matches!(
            stmt,
            S::Query(_) | S::Insert(_) | S::Update(_) | S::Delete(_)
        );
        let shows = matches!(
            stmt,
            S::ShowVariable { .. }
                | S::ShowDatabases { .. }
                | S::ShowTables { .. }
                | S::ShowColumns { .. }
                | S::ShowCreate { .. }
                | S::Explain { .. }
        );
        let mut columns = Vec::new();
        if bind || shows {
            let mut attempt = 0;
            loop {
                // Planned in a transaction of its own that reads nothing it keeps (retried, as
                // autocommit statements are: a concurrent schema change may conflict with it).
                let mut txn = self.db.begin();
                let (r, p) = if bind {
                    let mut ctx = self.context(&mut txn, params.clone(), true);
                    let r = self.run_in(&mut ctx, stmt, upsert).await;
                    (r, ctx.params)
                } else {
                    (
                        self.run(&mut txn, stmt, &params, false).await,
                        params.clone(),
                    )
                };
                let _ = txn.rollback().await;
                match r {
                    Err(e) if e.is_retryable() && attempt < AUTO_RETRIES => {
                        attempt += 1;
                        retry_pause(attempt).await;
                    }
                    r => {
                        params = p;
                        if let Output::Rows { columns: c, .. } = r? {
                            columns = c;
                        }
                        break;
                    }
                }
            }
        }
        let param_types = params
            .types
            .into_iter()
            .map(|t| if t == Type::Unknown { Type::TEXT } else { t })
            .collect();
        Ok(Described {
            param_types,
            columns,
        })
    }

    async fn run(
        &mut self,
        txn: &mut Txn,
        stmt: &ast::Statement,
        params: &Params,
        upsert: bool,
    ) -> Result<Output> {
        let mut ctx = self.context(txn, params.clone(), false);
        self.run_in(&mut ctx, stmt, upsert).await
    }

    /// The planning context of a statement in `txn`.
    fn context<'t>(&self, txn: &'t mut Txn, params: Params, describe: bool) -> Context<'t> {
        let now = {
            let ts = txn.read_timestamp();
            chrono::DateTime::from_timestamp_nanos(ts.wall as i64)
        };
        Context {
            db: self.db.clone(),
            registry: self.registry.clone(),
            txn,
            database: self.database.clone(),
            params,
            describe,
            now,
            ctes: Vec::new(),
            outer: Vec::new(),
            correlated: false,
            mem: self.registry.memory.reservation(),
            interrupt: self.interrupt.clone(),
        }
    }

    async fn run_in(
        &mut self,
        ctx: &mut Context<'_>,
        stmt: &ast::Statement,
        upsert: bool,
    ) -> Result<Output> {
        use ast::Statement as S;
        match stmt {
            S::Query(q) => {
                let planned = ctx.plan_query(q).await?;
                // Describe wants the columns only: the query is planned, not run.
                if ctx.describe {
                    return Ok(Output::Rows {
                        columns: planned.columns,
                        rows: Vec::new(),
                        tag: "SELECT",
                        cursor: None,
                    });
                }
                let mut source = crate::exec::build(planned.node, &ctx.mem)?;
                let mut rows = Vec::new();
                let mut done = false;
                while rows.len() < cursor::FIRST_ROWS {
                    match source.next(&mut ctx.exec()).await? {
                        Some(batch) => rows.extend(batch),
                        None => {
                            done = true;
                            break;
                        }
                    }
                }
                let cursor = (!done).then(|| {
                    let fresh = ctx.mem.sibling();
                    let mem = std::mem::replace(&mut ctx.mem, fresh);
                    let c = Cursor::new(source, self.block, mem, ctx.interrupt.clone());
                    Arc::new(tokio::sync::Mutex::new(c))
                });
                Ok(Output::Rows {
                    columns: planned.columns,
                    rows,
                    tag: "SELECT",
                    cursor,
                })
            }
            S::Insert(ins) => {
                let r = dml::insert(ctx, ins, self.db.node_id(), upsert).await?;
                Ok(dml_output(r, if upsert { "UPSERT" } else { "INSERT" }))
            }
            S::Update(u) => Ok(dml_output(dml::update(ctx, u).await?, "UPDATE")),
            S::Delete(d) => Ok(dml_output(dml::delete(ctx, d).await?, "DELETE")),
            S::CreateDatabase {
                db_name,
                if_not_exists,
                ..
            } => {
                let name = name_parts(db_name).pop().unwrap_or_default();
                catalog::create_database(&self.db, ctx.txn, &name, *if_not_exists).await?;
                Ok(Output::Command("CREATE DATABASE".into()))
            }
            S::CreateTable(ct) => {
                self.create_table(ctx, ct).await?;
                Ok(Output::Command("CREATE TABLE".into()))
            }
            S::CreateIndex(ci) => {
                self.backfill = self.create_index(ctx, ci).await?;
                Ok(Output::Command("CREATE INDEX".into()))
            }
            S::Drop {
                object_type,
                if_exists,
                names,
                ..
            } => self.drop(ctx, *object_type, *if_exists, names).await,
            S::AlterTable(at) => {
                self.backfill = self.alter_table(ctx, at).await?;
                Ok(Output::Command("ALTER TABLE".into()))
            }
            S::ShowDatabases { .. } => {
                let dbs = catalog::databases(ctx.txn).await?;
                Ok(text_rows(
                    &["database_name"],
                    dbs.into_iter().map(|d| vec![d.name]).collect(),
                ))
            }
            S::ShowTables { show_options, .. } => {
                let db = match show_options
                    .show_in
                    .as_ref()
                    .and_then(|s| s.parent_name.as_ref())
                {
                    Some(n) => name_parts(n).pop().unwrap_or_default(),
                    None => self.database.clone(),
                };
                let dbd = catalog::must_database(ctx.txn, &db).await?;
                let tables = catalog::tables(ctx.txn, dbd.id).await?;
                Ok(text_rows(
                    &["schema_name", "table_name", "type"],
                    tables
                        .into_iter()
                        .map(|t| vec!["public".into(), t.name, "table".into()])
                        .collect(),
                ))
            }
            S::ShowColumns { show_options, .. } => {
                let Some(n) = show_options
                    .show_in
                    .as_ref()
                    .and_then(|s| s.parent_name.as_ref())
                else {
                    return Err(Error::Syntax("SHOW COLUMNS needs FROM <table>".into()));
                };
                let t = must_table(ctx, n).await?;
                let pk: Vec<usize> = t.primary_positions();
                Ok(Output::Rows {
                    columns: ["column_name", "data_type", "is_nullable", "column_default"]
                        .iter()
                        .map(|n| text_column(n))
                        .chain(std::iter::once(Column {
                            name: "is_primary_key".into(),
                            table: None,
                            ty: Type::Bool,
                            hidden: false,
                        }))
                        .collect(),
                    rows: t
                        .columns
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| !c.hidden)
                        .map(|(i, c)| {
                            vec![
                                Datum::String(c.name.clone()),
                                Datum::String(c.ty.name()),
                                Datum::Bool(c.nullable),
                                c.default.clone().map(Datum::String).unwrap_or(Datum::Null),
                                Datum::Bool(pk.contains(&i)),
                            ]
                        })
                        .collect(),
                    tag: "SHOW",
                    cursor: None,
                })
            }
            S::ShowCreate { obj_name, .. } => {
                let t = must_table(ctx, obj_name).await?;
                Ok(text_rows(
                    &["table_name", "create_statement"],
                    vec![vec![t.name.clone(), show_create(&t)]],
                ))
            }
            S::Explain { statement, .. } => {
                let S::Query(q) = &**statement else {
                    return Err(Error::FeatureNotSupported(
                        "EXPLAIN of this statement".into(),
                    ));
                };
                let planned = ctx.plan_query(q).await?;
                let mut lines = Vec::new();
                explain::explain(&planned.node, 0, &mut lines);
                Ok(text_rows(
                    &["info"],
                    lines.into_iter().map(|l| vec![l]).collect(),
                ))
            }
            S::Truncate(t) => {
                for target in &t.table_names {
                    let desc = must_table(ctx, &target.name).await?;
                    schema::check_idle(&desc)?;
                    let (start, end) = desc.primary_span();
                    catalog::delete_span(ctx.txn, &start, &end).await?;
                    for idx in &desc.indexes {
                        let p = crate::encoding::index_prefix(desc.id, idx.id);
                        catalog::delete_span(ctx.txn, &p, &crate::encoding::prefix_end(&p)).await?;
                    }
                }
                Ok(Output::Command("TRUNCATE".into()))
            }
            other => Err(Error::FeatureNotSupported(format!(
                "statement {}",
                other
                    .to_string()
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            ))),
        }
    }
}

/// Ends a transaction of its own after the work done in it: commits if `r` succeeded, else
/// rolls back.
pub(crate) async fn settle<T>(txn: &mut Txn, r: Result<T>) -> Result<T> {
    match r {
        Ok(v) => txn.commit().await.map(|_| v).map_err(Error::from),
        Err(e) => {
            let _ = txn.rollback().await;
            Err(e)
        }
    }
}

/// Waits before retry number `attempt` of a transaction retried here (exponential, capped).
pub(crate) async fn retry_pause(attempt: usize) {
    tokio::time::sleep(Duration::from_millis(2 << attempt.min(6))).await;
}

fn dml_output(r: dml::DmlResult, verb: &'static str) -> Output {
    let tag_verb = if verb == "UPSERT" { "INSERT" } else { verb };
    match r.returning {
        Some((columns, rows)) => Output::Rows {
            columns,
            rows,
            tag: tag_verb,
            cursor: None,
        },
        None => Output::Affected {
            verb: tag_verb,
            rows: r.count,
        },
    }
}

fn text_column(name: &str) -> Column {
    Column {
        name: name.into(),
        table: None,
        ty: Type::TEXT,
        hidden: false,
    }
}

fn text_rows(names: &[&str], rows: Vec<Vec<String>>) -> Output {
    Output::Rows {
        columns: names.iter().map(|n| text_column(n)).collect(),
        rows: rows
            .into_iter()
            .map(|r| r.into_iter().map(Datum::String).collect())
            .collect(),
        tag: "SHOW",
        cursor: None,
    }
}
