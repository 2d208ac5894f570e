//! The Postgres wire protocol gateway (DESIGN.md layer 6), built on the `pgwire` crate.
//!
//! Each accepted connection gets its own handler set ([`Connection`]) owning one
//! [`bini_sql::Session`]: the simple query protocol runs a string of statements; the extended
//! protocol parses once (Parse), binds parameters (Bind) and executes portals (Execute), with
//! result columns in text or binary as the client asks. Cancel requests go through pgwire's
//! connection manager and drop the running statement.
//!
//! Authentication is trust (`--insecure`) for now; [`Startup`] is where passwords and TLS
//! will plug in. SQL errors become SQLSTATE codes in exactly one place, [`sqlstate`].

mod encode;
mod socket;

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use futures::{stream, Sink, SinkExt, StreamExt};
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
    DefaultServerParameterProvider, StartupHandler,
};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    CopyResponse, DescribePortalResponse, DescribeStatementResponse, FieldInfo, QueryResponse,
    Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionManager, PgWireServerHandlers, Type,
    METADATA_DATABASE, METADATA_USER,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::startup::SecretKey;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::net::TcpStream;

use bini_sql::{Datum, Output, Params, Parsed, Session, Type as SqlType};
use bini_txn::Db;

/// The SQLSTATE of a SQL error. This is the only place codes are chosen.
pub fn sqlstate(e: &bini_sql::Error) -> &'static str {
    use bini_sql::Error as E;
    match e {
        E::Syntax(_) => "42601",
        E::FeatureNotSupported(_) => "0A000",
        E::UndefinedDatabase(_) => "3D000",
        E::UndefinedTable(_) => "42P01",
        E::UndefinedColumn(_) => "42703",
        E::UndefinedIndex(_) => "42704",
        E::UndefinedFunction(_) => "42883",
        E::UndefinedParameter(_) => "42P02",
        E::DuplicateDatabase(_) => "42P04",
        E::DuplicateTable(_) => "42P07",
        E::DuplicateColumn(_) => "42701",
        E::AmbiguousColumn(_) => "42702",
        E::UniqueViolation { .. } => "23505",
        E::NotNullViolation(_) => "23502",
        E::CheckViolation(_) => "23514",
        E::DatatypeMismatch(_) => "42804",
        E::InvalidTextRepresentation(_) => "22P02",
        E::InvalidDatetime(_) => "22007",
        E::DatetimeOverflow(_) => "22008",
        E::NumericOutOfRange(_) => "22003",
        E::StringTooLong(_) => "22001",
        E::DivisionByZero => "22012",
        E::InvalidParameterValue(_) => "22023",
        E::InvalidTableDefinition(_) => "42P16",
        E::ObjectNotInPrerequisiteState(_) => "55000",
        E::Grouping(_) => "42803",
        E::CardinalityViolation => "21000",
        E::InvalidTransactionState(_) => "25000",
        E::InFailedTransaction => "25P02",
        E::NoActiveTransaction(_) => "25P01",
        E::InvalidSavepoint(_) => "3B001",
        E::ProgramLimitExceeded(_) => "54000",
        E::StatementTooComplex(_) => "54001",
        E::OutOfMemory(_) => "53200",
        E::Canceled | E::StatementTimeout => "57014",
        E::UnrecognizedSetting(_) => "42704",
        E::ReadOnlyTransaction(_) | E::Txn(bini_txn::Error::ReadOnly(_)) => "25006",
        E::ActiveTransaction(_) => "25001",
        E::InvalidPreparedStatement(_) => "26000",
        E::Txn(t) if t.is_retryable() => "40001",
        E::Txn(bini_txn::Error::Kv(bini_kv::Error::BelowGcThreshold { .. })) => "72000",
        E::Txn(bini_txn::Error::Kv(k)) if k.is_retryable() => "40001",
        E::Txn(_) => "XX000",
        E::Internal(_) => "XX000",
    }
}

fn user_error(e: &bini_sql::Error) -> PgWireError {
    let mut info = ErrorInfo::new("ERROR".into(), sqlstate(e).into(), e.to_string());
    if let bini_sql::Error::UniqueViolation { detail, .. } = e {
        info.detail = Some(detail.clone());
    }
    if e.is_retryable() {
        info.hint = Some("retry the transaction".into());
    }
    PgWireError::UserError(Box::new(info))
}

/// Serves Postgres connections for one node.
#[derive(Clone)]
pub struct Gateway {
    db: Db,
    ready: tokio::sync::watch::Receiver<bool>,
    registry: Arc<bini_sql::Registry>,
    manager: Arc<ConnectionManager>,
    pids: Arc<pgwire::api::RandomPidSecretKeyGenerator>,
    cancels: Arc<CancelFlags>,
}

/// Each connection's cancel flag, by the process id and secret key its cancel requests name.
type CancelFlags = parking_lot::Mutex<HashMap<i32, (SecretKey, Arc<AtomicBool>)>>;

/// Cancel requests. pgwire's connection manager drops the connection's running Execute (a
/// statement waiting on KV stops at once); the session's flag stops one that is computing
/// between awaits, or streaming its result, at its next batch.
struct Cancel {
    manager: DefaultCancelHandler,
    cancels: Arc<CancelFlags>,
}

#[async_trait]
impl pgwire::api::cancel::CancelHandler for Cancel {
    async fn on_cancel_request(&self, request: pgwire::messages::cancel::CancelRequest) {
        let flag = self
            .cancels
            .lock()
            .get(&request.pid)
            .filter(|(key, _)| *key == request.secret_key)
            .map(|(_, flag)| flag.clone());
        if let Some(flag) = flag {
            flag.store(true, Ordering::Relaxed);
        }
        self.manager.on_cancel_request(request).await;
    }
}

impl Gateway {
    /// A gateway for the node whose transactions go through `db` and whose statements share
    /// the `memory` budget. Clients wait at startup until `ready` (the SQL catalog exists: a
    /// node just started may not have it yet).
    pub fn new(
        db: Db,
        ready: tokio::sync::watch::Receiver<bool>,
        memory: Arc<bini_sql::MemoryPool>,
    ) -> Self {
        Gateway {
            db,
            ready,
            registry: Arc::new(bini_sql::Registry::new(memory)),
            manager: Arc::new(ConnectionManager::new()),
            pids: Arc::new(pgwire::api::RandomPidSecretKeyGenerator::default()),
            cancels: Arc::default(),
        }
    }

    /// Serves one client connection until it closes.
    pub async fn serve(&self, stream: TcpStream) {
        let session = Arc::new(SessionSlot {
            db: self.db.clone(),
            registry: self.registry.clone(),
            session: tokio::sync::Mutex::new(None),
            reset_statements: AtomicBool::new(false),
            canceled: Arc::default(),
            pid: std::sync::OnceLock::new(),
        });
        let handlers = Arc::new(Connection {
            conn: Arc::new(Conn {
                session: session.clone(),
                parser: Arc::new(Parser {
                    session: session.clone(),
                }),
            }),
            startup: Arc::new(Startup {
                db: self.db.clone(),
                ready: self.ready.clone(),
                manager: self.manager.clone(),
                pids: self.pids.clone(),
                cancels: self.cancels.clone(),
                slot: session.clone(),
            }),
            cancel: Arc::new(Cancel {
                manager: DefaultCancelHandler::new(self.manager.clone()),
                cancels: self.cancels.clone(),
            }),
        });
        let memory = self.registry.memory.reservation();
        if let Err(e) = socket::serve(stream, handlers, memory).await {
            tracing::debug!(error = %e, "pgwire connection ended with an error");
        }
        if let Some(pid) = session.pid.get() {
            self.cancels.lock().remove(pid);
        }
    }
}

/// The handlers of one connection.
struct Connection {
    conn: Arc<Conn>,
    startup: Arc<Startup>,
    cancel: Arc<Cancel>,
}

impl PgWireServerHandlers for Connection {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.conn.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.conn.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }

    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        self.conn.clone()
    }
}

/// `COPY … FROM STDIN`: data goes to the session, which inserts it in batches.
#[async_trait]
impl CopyHandler for Conn {
    async fn on_copy_data<C>(&self, client: &mut C, data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.session
            .with(client, async |s| s.copy_data(&data.data).await)
            .await;
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let rows = self
            .session
            .with(client, async |s| s.copy_done().await)
            .await
            .map_err(|e| user_error(&e))?;
        client
            .send(PgWireBackendMessage::CommandComplete(
                Tag::new("COPY").with_rows(rows as usize).into(),
            ))
            .await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.session
            .with(client, async |s| s.copy_fail().await)
            .await;
        PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".into(),
            "57014".into(),
            format!("COPY from stdin failed: {}", fail.message),
        )))
    }
}

/// How long a client connecting to a node that just started waits for its SQL catalog.
const CATALOG_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Trust authentication: the user is who the client says; the database must exist.
struct Startup {
    db: Db,
    ready: tokio::sync::watch::Receiver<bool>,
    manager: Arc<ConnectionManager>,
    pids: Arc<pgwire::api::RandomPidSecretKeyGenerator>,
    cancels: Arc<CancelFlags>,
    slot: Arc<SessionSlot>,
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let PgWireFrontendMessage::Startup(ref startup) = message else {
            return Ok(());
        };
        protocol_negotiation(client, startup).await?;
        save_startup_parameters_to_metadata(client, startup);
        let mut ready = self.ready.clone();
        let ready = tokio::time::timeout(CATALOG_WAIT, ready.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok());
        if !ready {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "57P03".into(),
                "the node is still starting (its SQL catalog is not ready); try again".into(),
            ))));
        }
        let database = client
            .metadata()
            .get(METADATA_DATABASE)
            .cloned()
            .unwrap_or_default();
        if !database.is_empty() && database != bini_sql::DEFAULT_DATABASE {
            let found = bini_sql::database_exists(&self.db, &database)
                .await
                .unwrap_or(false);
            if !found {
                return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                    "FATAL".into(),
                    "3D000".into(),
                    format!("database \"{database}\" does not exist"),
                ))));
            }
        }
        let (pid, key) = {
            use pgwire::api::PidSecretKeyGenerator;
            self.pids.generate(client)
        };
        client.set_pid_and_secret_key(pid, key.clone());
        self.cancels
            .lock()
            .insert(pid, (key.clone(), self.slot.canceled.clone()));
        let _ = self.slot.pid.set(pid);
        let (handle, guard) = self.manager.register(pid, key);
        client
            .session_extensions()
            .insert::<Arc<pgwire::api::ConnectionHandle>>(handle);
        client
            .session_extensions()
            .insert::<pgwire::api::ConnectionGuard>(guard);
        let mut params = DefaultServerParameterProvider::default();
        params.server_version = bini_sql::SERVER_VERSION.to_string();
        params.date_style = "ISO, MDY".into();
        params.time_zone = "UTC".into();
        finish_authentication(client, &params).await
    }
}

/// One connection's session, created on first use with the startup's user and database.
struct SessionSlot {
    db: Db,
    registry: Arc<bini_sql::Registry>,
    session: tokio::sync::Mutex<Option<Session>>,
    /// Set by `DEALLOCATE ALL` / `DISCARD ALL`: the connection loop empties the statement
    /// store once the message is handled.
    reset_statements: AtomicBool,
    /// The session's cancel flag, set by cancel requests.
    canceled: Arc<AtomicBool>,
    /// The process id cancel requests name this connection by.
    pid: std::sync::OnceLock<i32>,
}

impl SessionSlot {
    /// The session's `idle_in_transaction_session_timeout`.
    async fn idle_in_transaction_timeout(&self) -> Option<std::time::Duration> {
        self.session
            .lock()
            .await
            .as_ref()
            .and_then(Session::idle_in_transaction_timeout)
    }

    /// Rolls back the session's open transaction (the connection is being closed).
    async fn abandon(&self) {
        if let Some(s) = self.session.lock().await.as_mut() {
            s.abandon().await;
        }
    }

    /// Whether prepared statements were dropped since last asked.
    fn take_statement_reset(&self) -> bool {
        self.reset_statements.swap(false, Ordering::Relaxed)
    }

    /// Answers `DEALLOCATE name` (dropping one prepared statement) or `DEALLOCATE ALL` /
    /// `DISCARD ALL` (dropping them all, with every portal).
    fn deallocate<C>(
        &self,
        client: &C,
        name: Option<String>,
        tag: &'static str,
    ) -> PgWireResult<Response>
    where
        C: ClientPortalStore,
        C::PortalStore: PortalStore,
    {
        match name {
            Some(name) => {
                if client.portal_store().get_statement(&name).is_none() {
                    return Err(user_error(&bini_sql::Error::InvalidPreparedStatement(name)));
                }
                client.portal_store().rm_statement(&name);
            }
            None => {
                client.portal_store().clear_portals();
                self.reset_statements.store(true, Ordering::Relaxed);
            }
        }
        Ok(Response::Execution(Tag::new(tag)))
    }

    async fn with<C: ClientInfo, T>(
        &self,
        client: &C,
        f: impl AsyncFnOnce(&mut Session) -> T,
    ) -> T {
        let mut guard = self.session.lock().await;
        let session = guard.get_or_insert_with(|| {
            let user = client
                .metadata()
                .get(METADATA_USER)
                .cloned()
                .unwrap_or_else(|| "root".into());
            let database = client.metadata().get(METADATA_DATABASE).cloned();
            let mut s = Session::new(
                self.db.clone(),
                self.registry.clone(),
                &user,
                database.as_deref(),
                &client.socket_addr().to_string(),
            );
            s.set_cancel_flag(self.canceled.clone());
            s
        });
        f(session).await
    }
}

/// One connection's query handlers.
struct Conn {
    session: Arc<SessionSlot>,
    parser: Arc<Parser>,
}

fn to_response(out: Output, format: &Format, slot: &Arc<SessionSlot>) -> PgWireResult<Response> {
    Ok(match out {
        Output::Rows {
            columns,
            rows,
            tag,
            cursor,
        } => {
            let (schema, rows) = encode::rows(&columns, rows, format)?;
            let first = stream::iter(rows);
            let mut r = match cursor {
                None => QueryResponse::new(schema, first),
                Some(c) => {
                    let rest = cursor_rows(slot.clone(), c, columns, format.clone(), &schema);
                    QueryResponse::new(schema, first.chain(rest))
                }
            };
            // pgwire appends the row count; INSERT's tag has an OID before it.
            r.set_command_tag(if tag == "INSERT" { "INSERT 0" } else { tag });
            Response::Query(r)
        }
        Output::Command(tag) => Response::Execution(Tag::new(&tag)),
        // INSERT's tag carries an OID (always 0) before the count.
        Output::Affected {
            verb: "INSERT",
            rows,
        } => Response::Execution(Tag::new("INSERT").with_oid(0).with_rows(rows as usize)),
        Output::Affected { verb, rows } => {
            Response::Execution(Tag::new(verb).with_rows(rows as usize))
        }
        Output::CopyIn(columns) => Response::CopyIn(CopyResponse::new(0, columns, stream::empty())),
        // Answered by the caller, which has the connection's statement store.
        Output::Deallocate { tag, .. } => Response::Execution(Tag::new(tag)),
        Output::Begin => Response::TransactionStart(Tag::new("BEGIN")),
        Output::End(tag) => Response::TransactionEnd(Tag::new(tag)),
    })
}

/// The rows of an open result, read a batch at a time as pgwire sends them (and as a
/// suspended portal's Executes ask for them).
fn cursor_rows(
    slot: Arc<SessionSlot>,
    cursor: bini_sql::SharedCursor,
    columns: Vec<bini_sql::Column>,
    format: Format,
    schema: &Arc<Vec<FieldInfo>>,
) -> impl futures::Stream<Item = PgWireResult<pgwire::messages::data::DataRow>> + Send + 'static {
    let schema = schema.clone();
    stream::unfold(Some((slot, cursor)), move |state| {
        let (columns, format, schema) = (columns.clone(), format.clone(), schema.clone());
        async move {
            let (slot, cursor) = state?;
            let batch = {
                let mut session = slot.session.lock().await;
                let session = session.as_mut()?;
                let mut c = cursor.lock().await;
                session.fetch(&mut c).await
            };
            let rows = match batch {
                Ok(Some(rows)) => rows,
                Ok(None) => return None,
                Err(e) => return Some((vec![Err(user_error(&e))], None)),
            };
            match encode::encode_rows(&schema, &columns, rows, &format) {
                Ok(encoded) => Some((encoded, Some((slot, cursor)))),
                Err(e) => Some((vec![Err(e)], None)),
            }
        }
    })
    .flat_map(stream::iter)
}

#[async_trait]
impl SimpleQueryHandler for Conn {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let results = self
            .session
            .with(client, async |s| s.execute_sql(query).await)
            .await;
        let mut out = Vec::with_capacity(results.len());
        for r in results {
            match r {
                Ok(Output::Deallocate { name, tag }) => {
                    match self.session.deallocate(client, name, tag) {
                        Ok(resp) => out.push(resp),
                        Err(PgWireError::UserError(info)) => {
                            out.push(Response::Error(info));
                            break;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(o) => out.push(to_response(o, &Format::UnifiedText, &self.session)?),
                Err(e) => {
                    let PgWireError::UserError(info) = user_error(&e) else {
                        unreachable!("user_error builds a UserError")
                    };
                    out.push(Response::Error(info));
                    break;
                }
            }
        }
        Ok(out)
    }
}

/// A statement prepared with Parse.
#[derive(Clone, Debug)]
pub struct Prepared {
    stmt: Option<Arc<Parsed>>,
    /// Parameter types as reported to the client (declared ones as declared).
    param_types: Vec<Type>,
    /// The same as bini types, for typing the values (`Unknown` for declared types bini
    /// lacks, whose values arrive as text).
    sql_types: Vec<SqlType>,
    /// Result columns, when Parse could work them out (else Describe retries).
    columns: Option<Vec<bini_sql::Column>>,
}

/// Parses statements for the extended protocol and infers their parameter types.
struct Parser {
    session: Arc<SessionSlot>,
}

/// The most parameters a statement can have (Bind counts them in 16 bits).
const MAX_PARAMS: usize = u16::MAX as usize;

/// Counts `$n` placeholders in SQL text (outside quotes).
fn placeholder_count(sql: &str) -> usize {
    let mut max = 0;
    let b = sql.as_bytes();
    let (mut i, mut quote) = (0, None::<u8>);
    while i < b.len() {
        match (quote, b[i]) {
            (None, q @ (b'\'' | b'"')) => quote = Some(q),
            (Some(q), c) if c == q => quote = None,
            (None, b'$') => {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
                if j > start {
                    max = max.max(sql[start..j].parse().unwrap_or(0));
                }
                i = j.max(i + 1);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    max
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let stmt = bini_sql::parse_one(sql).map_err(|e| user_error(&e))?;
        let n = placeholder_count(sql).max(types.len());
        if n > MAX_PARAMS {
            // The protocol counts parameters in 16 bits.
            return Err(user_error(&bini_sql::Error::UndefinedParameter(n)));
        }
        let declared: Vec<Option<Type>> = (0..n).map(|i| types.get(i).cloned().flatten()).collect();
        let declared_sql: Vec<SqlType> = declared
            .iter()
            .map(|t| {
                t.as_ref()
                    .and_then(|t| SqlType::from_oid(t.oid()))
                    .unwrap_or(SqlType::Unknown)
            })
            .collect();
        // Types are worked out against the catalog now, as Postgres does at Parse. A statement
        // that cannot be planned yet (its table is created later in the same pipeline) keeps
        // TEXT parameters here, and its error comes at Describe or Execute.
        let described = match &stmt {
            Some(st) => self
                .session
                .with(client, async |s| s.describe(st, &declared_sql).await)
                .await
                .ok(),
            None => None,
        };
        let sql_types: Vec<SqlType> = match &described {
            Some(d) => d.param_types.clone(),
            None => declared_sql
                .iter()
                .map(|t| {
                    if *t == SqlType::Unknown {
                        SqlType::TEXT
                    } else {
                        t.clone()
                    }
                })
                .collect(),
        };
        let param_types = declared
            .into_iter()
            .zip(&sql_types)
            .map(|(d, t)| d.unwrap_or_else(|| encode::pg_type(t)))
            .collect();
        Ok(Some(Prepared {
            stmt: stmt.map(Arc::new),
            param_types,
            sql_types,
            columns: described.map(|d| d.columns),
        }))
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(stmt.param_types.clone())
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let format = column_format.unwrap_or(&Format::UnifiedText);
        Ok(stmt
            .columns
            .as_ref()
            .map(|c| encode::fields(c, format))
            .unwrap_or_default())
    }
}

/// Decodes a Bind parameter into a datum of the parameter's type.
fn param_datum(portal: &Portal<Prepared>, i: usize) -> PgWireResult<Datum> {
    let Some(raw) = portal.parameters.get(i).cloned().flatten() else {
        return Ok(Datum::Null);
    };
    let ty = portal
        .statement
        .statement
        .param_types
        .get(i)
        .cloned()
        .unwrap_or(Type::UNKNOWN);
    encode::decode_param(&raw, &ty, portal.parameter_format.is_binary(i))
        .map_err(|e| user_error(&e))
}

#[async_trait]
impl ExtendedQueryHandler for Conn {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    async fn do_describe_statement<C>(
        &self,
        client: &mut C,
        target: &StoredStatement<Prepared>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &target.statement;
        let columns = self.columns(client, prepared).await?;
        Ok(DescribeStatementResponse::new(
            prepared.param_types.clone(),
            encode::fields(&columns, &Format::UnifiedText),
        ))
    }

    async fn do_describe_portal<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let columns = self.columns(client, &portal.statement.statement).await?;
        Ok(DescribePortalResponse::new(encode::fields(
            &columns,
            &portal.result_column_format,
        )))
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &portal.statement.statement;
        let Some(stmt) = prepared.stmt.clone() else {
            return Ok(Response::EmptyQuery);
        };
        let params = Params {
            values: (0..prepared.param_types.len())
                .map(|i| param_datum(portal, i))
                .collect::<PgWireResult<Vec<_>>>()?,
            types: prepared.sql_types.clone(),
        };
        let result = self
            .session
            .with(client, async |s| s.execute(&stmt, &params).await)
            .await;
        match result {
            Ok(Output::Deallocate { name, tag }) => self.session.deallocate(client, name, tag),
            Ok(out) => to_response(out, &portal.result_column_format, &self.session),
            Err(e) => Err(user_error(&e)),
        }
    }
}

impl Conn {
    /// The result columns of a prepared statement: as Parse found them, or worked out now
    /// (reporting the error if the statement still cannot be planned).
    async fn columns<C: ClientInfo>(
        &self,
        client: &C,
        prepared: &Prepared,
    ) -> PgWireResult<Vec<bini_sql::Column>> {
        if let Some(c) = &prepared.columns {
            return Ok(c.clone());
        }
        let Some(stmt) = prepared.stmt.clone() else {
            return Ok(Vec::new());
        };
        let types = prepared.sql_types.clone();
        self.session
            .with(client, async |s| s.describe(&stmt, &types).await)
            .await
            .map(|d| d.columns)
            .map_err(|e| user_error(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_counted_outside_quotes() {
        assert_eq!(
            placeholder_count("select $1, $12 from t where a = '$3'"),
            12
        );
        assert_eq!(placeholder_count("select 1"), 0);
    }

    #[test]
    fn retryable_errors_are_40001() {
        let e = bini_sql::Error::Txn(bini_txn::Error::Retry {
            reason: bini_txn::RetryReason::RefreshFailed,
            detail: "x".into(),
        });
        assert_eq!(sqlstate(&e), "40001");
        assert_eq!(sqlstate(&bini_sql::Error::DivisionByZero), "22012");
    }
}
