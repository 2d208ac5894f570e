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

mod ddl;
mod explain;

use ddl::show_create;

use std::collections::HashSet;
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
use crate::parse::{parse, Parsed};
use crate::plan::{execute, Column, Row};
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
        /// Rows.
        rows: Vec<Row>,
        /// The command tag's verb (`SELECT`, `INSERT`, …).
        tag: &'static str,
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
    txn: Option<Txn>,
    failed: bool,
    /// The transaction's open savepoints, oldest first.
    savepoints: Vec<(String, bini_txn::Savepoint)>,
    settings: Vec<(String, String)>,
    /// The node's registry, where this session shows in `bini_internal.sessions`.
    registry: Arc<Registry>,
    /// A `COPY … FROM STDIN` taking data.
    copy: Option<CopyIn>,
    /// The table whose new index the statement just run left to fill (`schema.rs`).
    backfill: Option<u32>,
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
            failed: false,
            savepoints: Vec::new(),
            settings: vec![
                ("application_name".into(), String::new()),
                ("timezone".into(), "UTC".into()),
                ("search_path".into(), "public".into()),
                ("client_encoding".into(), "UTF8".into()),
                ("datestyle".into(), "ISO, MDY".into()),
                ("standard_conforming_strings".into(), "on".into()),
                ("transaction_isolation".into(), "serializable".into()),
            ],
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

    /// The transaction state.
    pub fn txn_state(&self) -> TxnState {
        match (&self.txn, self.failed) {
            (None, _) => TxnState::Idle,
            (Some(_), false) => TxnState::Open,
            (Some(_), true) => TxnState::Failed,
        }
    }

    /// Runs a string of statements (the simple query protocol), stopping at the first error.
    pub async fn execute_sql(&mut self, sql: &str) -> Vec<Result<Output>> {
        let stmts = match parse(sql) {
            Ok(s) => s,
            Err(e) => {
                if self.txn.is_some() {
                    self.failed = true;
                }
                return vec![Err(e)];
            }
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
        let mut text = parsed.stmt.to_string();
        if text.len() > 2000 {
            let cut = (0..=2000)
                .rev()
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(0);
            text.truncate(cut);
        }
        self.registry
            .update(self.id, |s| s.active_query = Some(text.clone()));
        let started = std::time::Instant::now();
        let r = self.execute_inner(parsed, params).await;
        self.registry.record(&text, started.elapsed(), r.is_err());
        let (database, state) = (self.database.clone(), self.txn_state());
        let application = self.setting("application_name").unwrap_or_default();
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

    /// Starts `COPY table (columns) FROM STDIN`: checks the names, then waits for data.
    async fn copy_in(&mut self, table: &ast::ObjectName, columns: &[ast::Ident]) -> Result<Output> {
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
        let mut copy = CopyIn::new(prefix, names.len());
        if self.txn.is_none() {
            // Outside a transaction the whole COPY is one (its batches of rows run inside it).
            self.txn = Some(self.db.begin());
            self.failed = false;
            self.savepoints.clear();
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
            } else if copy.rows.len() >= crate::copy::BATCH_ROWS {
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
            let Some(mut txn) = self.txn.take() else {
                return Err(Error::Internal("COPY lost its transaction".into()));
            };
            self.failed = false;
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
            if let Some(mut txn) = self.txn.take() {
                let _ = txn.rollback().await;
            }
            self.failed = false;
        } else if self.txn.is_some() {
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

    fn setting(&self, name: &str) -> Option<String> {
        self.settings
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    async fn execute_inner(&mut self, parsed: &Parsed, params: &Params) -> Result<Output> {
        use ast::Statement as S;
        let (stmt, upsert) = (&parsed.stmt, parsed.upsert);
        let as_of = match &parsed.as_of {
            Some(a) => Some(self.fail(a.resolve(self.db.clock().now().wall))?),
            None => None,
        };
        match stmt {
            S::StartTransaction { .. } => {
                if self.txn.is_some() {
                    // Postgres warns and carries on.
                    return Ok(Output::Command("BEGIN".into()));
                }
                self.txn = Some(match as_of {
                    Some(wall) => self.db.begin_as_of(Timestamp { wall, logical: 0 }),
                    None => self.db.begin(),
                });
                self.failed = false;
                self.savepoints.clear();
                return Ok(Output::Begin);
            }
            S::Commit { .. } => {
                self.savepoints.clear();
                let Some(mut txn) = self.txn.take() else {
                    return Ok(Output::End("COMMIT"));
                };
                if self.failed {
                    self.failed = false;
                    let _ = txn.rollback().await;
                    return Ok(Output::End("ROLLBACK"));
                }
                txn.commit().await?;
                return Ok(Output::End("COMMIT"));
            }
            S::Rollback {
                savepoint: None, ..
            } => {
                if let Some(mut txn) = self.txn.take() {
                    let _ = txn.rollback().await;
                }
                self.failed = false;
                self.savepoints.clear();
                return Ok(Output::End("ROLLBACK"));
            }
            S::Savepoint { name } => return self.savepoint(ident(name)),
            S::Rollback {
                savepoint: Some(name),
                ..
            } => return self.rollback_to(ident(name)).await,
            S::ReleaseSavepoint { name } => return self.release(ident(name)),
            _ => {}
        }
        if self.failed {
            return Err(Error::InFailedTransaction);
        }
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
        if let Some(out) = self.session_statement(stmt).await? {
            return Ok(out);
        }
        if as_of.is_some() && !matches!(stmt, S::Query(_)) {
            return self.fail(Err(Error::FeatureNotSupported(
                "AS OF SYSTEM TIME on a statement other than SELECT or BEGIN".into(),
            )));
        }
        if let Some(mut txn) = self.txn.take() {
            let r = if as_of.is_some() {
                Err(Error::InvalidTransactionState(
                    "inside a transaction, AS OF SYSTEM TIME belongs on BEGIN".into(),
                ))
            } else {
                self.backfill = None;
                let r = self.run(&mut txn, stmt, params, upsert).await;
                match (r, self.backfill.take()) {
                    (Ok(out), Some(id)) => schema::complete(schema::Mode::Within(&mut txn), id)
                        .await
                        .map(|_| out),
                    (r, _) => r,
                }
            };
            self.txn = Some(txn);
            return self.fail(r);
        }
        // Autocommit, with transparent retries.
        let mut attempt = 0;
        loop {
            let mut txn = match as_of {
                Some(wall) => self.db.begin_as_of(Timestamp { wall, logical: 0 }),
                None => self.db.begin(),
            };
            self.backfill = None;
            let r = self.run(&mut txn, stmt, params, upsert).await;
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

    /// SAVEPOINT: a point in the open transaction to roll back to.
    fn savepoint(&mut self, name: String) -> Result<Output> {
        let Some(txn) = &mut self.txn else {
            return Err(Error::NoActiveTransaction("SAVEPOINT"));
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
    async fn rollback_to(&mut self, name: String) -> Result<Output> {
        let Some(txn) = &mut self.txn else {
            return Err(Error::NoActiveTransaction("ROLLBACK TO SAVEPOINT"));
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
                self.savepoints[pos].1 = fresh.savepoint();
                self.txn = Some(fresh);
            }
            Err(e) => return self.fail(Err(e.into())),
        }
        self.failed = false;
        Ok(Output::Command("ROLLBACK".into()))
    }

    /// RELEASE SAVEPOINT: forgets the savepoint and every later one; its writes stay.
    fn release(&mut self, name: String) -> Result<Output> {
        let Some(txn) = &mut self.txn else {
            return Err(Error::NoActiveTransaction("RELEASE SAVEPOINT"));
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

    fn fail<T>(&mut self, r: Result<T>) -> Result<T> {
        if r.is_err() && self.txn.is_some() {
            self.failed = true;
        }
        r
    }

    /// Statements about the session itself (no transaction needed).
    async fn session_statement(&mut self, stmt: &ast::Statement) -> Result<Option<Output>> {
        use ast::Statement as S;
        Ok(Some(match stmt {
            // Prepared statements live in the gateway; drivers deallocate to reset their
            // caches after DDL (psycopg sends DEALLOCATE ALL).
            S::Deallocate { .. } => Output::Command("DEALLOCATE".into()),
            // Garbage collection and statistics are the cluster's own business.
            S::Vacuum(_) => Output::Command("VACUUM".into()),
            S::Analyze(_) => Output::Command("ANALYZE".into()),
            S::Discard { .. } => Output::Command("DISCARD ALL".into()),
            S::Set(ast::Set::SingleAssignment {
                variable, values, ..
            }) => {
                let name = variable.to_string().to_lowercase();
                let value = match values.first() {
                    Some(ast::Expr::Value(v)) => match &v.value {
                        ast::Value::SingleQuotedString(s) => s.clone(),
                        other => other.to_string(),
                    },
                    Some(ast::Expr::Identifier(i)) => ident(i),
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                self.set(&name, value).await?;
                Output::Command("SET".into())
            }
            S::Set(ast::Set::SetTimeZone { value, .. }) => {
                let v = value.to_string().trim_matches('\'').to_string();
                self.set("timezone", v).await?;
                Output::Command("SET".into())
            }
            S::Set(ast::Set::SetTransaction { .. }) => Output::Command("SET".into()),
            S::Set(ast::Set::SetNames { .. }) => Output::Command("SET".into()),
            S::Use(ast::Use::Object(n)) | S::Use(ast::Use::Database(n)) => {
                let name = name_parts(n).pop().unwrap_or_default();
                self.set("database", name).await?;
                Output::Command("SET".into())
            }
            S::ShowVariable { variable } => {
                let name = variable
                    .iter()
                    .map(ident)
                    .collect::<Vec<_>>()
                    .join(" ")
                    .replace("time zone", "timezone");
                let value = match name.as_str() {
                    "database" => self.database.clone(),
                    "server_version" => crate::SERVER_VERSION.to_string(),
                    "is_superuser" => "on".into(),
                    "session_user" | "current_user" => self.user.clone(),
                    n => self.setting(n).ok_or_else(|| {
                        Error::InvalidParameterValue(format!(
                            "unrecognized configuration parameter \"{n}\""
                        ))
                    })?,
                };
                Output::Rows {
                    columns: vec![Column {
                        name: name.replace(' ', "_"),
                        table: None,
                        ty: Type::TEXT,
                        hidden: false,
                    }],
                    rows: vec![vec![Datum::String(value)]],
                    tag: "SHOW",
                }
            }
            _ => return Ok(None),
        }))
    }

    async fn set(&mut self, name: &str, value: String) -> Result<()> {
        if name == "database" {
            if !catalog::database_exists(&self.db, &value).await? {
                return Err(Error::UndefinedDatabase(value));
            }
            self.database = value;
            return Ok(());
        }
        match self.settings.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = value,
            None => self.settings.push((name.to_string(), value)),
        }
        Ok(())
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
                let rows = if ctx.describe {
                    Vec::new()
                } else {
                    execute(&planned.node, ctx.txn).await?
                };
                Ok(Output::Rows {
                    columns: planned.columns,
                    rows,
                    tag: "SELECT",
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
    }
}
