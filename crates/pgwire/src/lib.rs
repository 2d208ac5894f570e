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

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{stream, Sink};
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
    DefaultServerParameterProvider, StartupHandler,
};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, FieldInfo, QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionManager, PgWireServerHandlers, Type,
    METADATA_DATABASE, METADATA_USER,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::net::TcpStream;

use bini_sql::{Datum, Output, Session};
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
        E::NumericOutOfRange(_) => "22003",
        E::StringTooLong(_) => "22001",
        E::DivisionByZero => "22012",
        E::InvalidParameterValue(_) => "22023",
        E::Grouping(_) => "42803",
        E::CardinalityViolation => "21000",
        E::InvalidTransactionState(_) => "25000",
        E::InFailedTransaction => "25P02",
        E::Canceled => "57014",
        E::Txn(t) if t.is_retryable() => "40001",
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
    manager: Arc<ConnectionManager>,
    pids: Arc<pgwire::api::RandomPidSecretKeyGenerator>,
}

impl Gateway {
    /// A gateway for the node whose transactions go through `db`.
    pub fn new(db: Db) -> Self {
        Gateway {
            db,
            manager: Arc::new(ConnectionManager::new()),
            pids: Arc::new(pgwire::api::RandomPidSecretKeyGenerator::default()),
        }
    }

    /// Serves one client connection until it closes.
    pub async fn serve(&self, stream: TcpStream) {
        let handlers = Arc::new(Connection {
            conn: Arc::new(Conn {
                db: self.db.clone(),
                session: tokio::sync::Mutex::new(None),
                parser: Arc::new(Parser),
            }),
            startup: Arc::new(Startup {
                db: self.db.clone(),
                manager: self.manager.clone(),
                pids: self.pids.clone(),
            }),
            cancel: Arc::new(DefaultCancelHandler::new(self.manager.clone())),
        });
        if let Err(e) = pgwire::tokio::process_socket(stream, None, handlers).await {
            tracing::debug!(error = %e, "pgwire connection ended with an error");
        }
    }
}

/// The handlers of one connection.
struct Connection {
    conn: Arc<Conn>,
    startup: Arc<Startup>,
    cancel: Arc<DefaultCancelHandler>,
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
}

/// Trust authentication: the user is who the client says; the database must exist.
struct Startup {
    db: Db,
    manager: Arc<ConnectionManager>,
    pids: Arc<pgwire::api::RandomPidSecretKeyGenerator>,
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

/// One connection's session and statement parser.
struct Conn {
    db: Db,
    session: tokio::sync::Mutex<Option<Session>>,
    parser: Arc<Parser>,
}

impl Conn {
    async fn with_session<C: ClientInfo, T>(
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
            Session::new(self.db.clone(), &user, database.as_deref())
        });
        f(session).await
    }
}

fn to_response(out: Output, format: &Format) -> PgWireResult<Response> {
    Ok(match out {
        Output::Rows { columns, rows, tag } => {
            let (schema, rows) = encode::rows(&columns, rows, format)?;
            let mut r = QueryResponse::new(schema, stream::iter(rows));
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
        Output::Begin => Response::TransactionStart(Tag::new("BEGIN")),
        Output::End(tag) => Response::TransactionEnd(Tag::new(tag)),
    })
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
            .with_session(client, async |s| s.execute_sql(query).await)
            .await;
        let mut out = Vec::with_capacity(results.len());
        for r in results {
            match r {
                Ok(o) => out.push(to_response(o, &Format::UnifiedText)?),
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
    stmt: Option<Arc<bini_sql::ParsedStatement>>,
    upsert: bool,
    param_types: Vec<Type>,
}

/// Parses statements for the extended protocol.
struct Parser;

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
        _client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let (stmt, upsert) = bini_sql::parse_one(sql).map_err(|e| user_error(&e))?;
        let n = placeholder_count(sql).max(types.len());
        let param_types = (0..n)
            .map(|i| types.get(i).cloned().flatten().unwrap_or(Type::UNKNOWN))
            .collect();
        Ok(Some(Prepared {
            stmt: stmt.map(Arc::new),
            upsert,
            param_types,
        }))
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(stmt.param_types.clone())
    }

    fn get_result_schema(
        &self,
        _stmt: &Prepared,
        _column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        // Result columns need the catalog; Describe asks the session instead.
        Ok(Vec::new())
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
        let params: Vec<Datum> = vec![Datum::Null; prepared.param_types.len()];
        let fields = self
            .describe(client, prepared, &params, &Format::UnifiedText)
            .await?;
        Ok(DescribeStatementResponse::new(
            prepared.param_types.clone(),
            fields,
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
        let params = (0..portal.statement.statement.param_types.len())
            .map(|i| param_datum(portal, i))
            .collect::<PgWireResult<Vec<_>>>()?;
        let fields = self
            .describe(
                client,
                &portal.statement.statement,
                &params,
                &portal.result_column_format,
            )
            .await?;
        Ok(DescribePortalResponse::new(fields))
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
        let params = (0..prepared.param_types.len())
            .map(|i| param_datum(portal, i))
            .collect::<PgWireResult<Vec<_>>>()?;
        let upsert = prepared.upsert;
        let result = self
            .with_session(client, async |s| s.execute(&stmt, &params, upsert).await)
            .await;
        match result {
            Ok(out) => to_response(out, &portal.result_column_format),
            Err(e) => Err(user_error(&e)),
        }
    }
}

impl Conn {
    async fn describe<C: ClientInfo>(
        &self,
        client: &C,
        prepared: &Prepared,
        params: &[Datum],
        format: &Format,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let Some(stmt) = prepared.stmt.clone() else {
            return Ok(Vec::new());
        };
        let columns = self
            .with_session(client, async |s| s.describe(&stmt, params).await)
            .await
            .map_err(|e| user_error(&e))?;
        Ok(encode::fields(&columns, format))
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
