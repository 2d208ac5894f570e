//! Errors of the SQL layer. Each variant is one class of SQLSTATE; the mapping to codes lives in
//! one place, the pgwire gateway (`bini_pgwire::sqlstate`).

/// A SQL error, shown to the client as `ERROR: <message>` with a SQLSTATE.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The statement does not parse.
    #[error("{0}")]
    Syntax(String),
    /// Valid SQL that bini does not implement.
    #[error("unimplemented: {0}")]
    FeatureNotSupported(String),
    /// No such database.
    #[error("database \"{0}\" does not exist")]
    UndefinedDatabase(String),
    /// No such table.
    #[error("relation \"{0}\" does not exist")]
    UndefinedTable(String),
    /// No such column.
    #[error("column \"{0}\" does not exist")]
    UndefinedColumn(String),
    /// No such index.
    #[error("index \"{0}\" does not exist")]
    UndefinedIndex(String),
    /// No such function (or no variant for these argument types).
    #[error("unknown function: {0}")]
    UndefinedFunction(String),
    /// A parameter `$n` with no value.
    #[error("no value given for placeholder ${0}")]
    UndefinedParameter(usize),
    /// The database exists already.
    #[error("database \"{0}\" already exists")]
    DuplicateDatabase(String),
    /// The table (or index) name is taken.
    #[error("relation \"{0}\" already exists")]
    DuplicateTable(String),
    /// Two columns with one name.
    #[error("column \"{0}\" specified more than once")]
    DuplicateColumn(String),
    /// A column name matches columns of several tables.
    #[error("column reference \"{0}\" is ambiguous")]
    AmbiguousColumn(String),
    /// A unique constraint (primary key or unique index) would be broken.
    #[error("duplicate key value violates unique constraint \"{constraint}\"")]
    UniqueViolation {
        /// The constraint or index name.
        constraint: String,
        /// `Key (col)=(value) already exists.`
        detail: String,
    },
    /// NULL into a NOT NULL column.
    #[error("null value in column \"{0}\" violates not-null constraint")]
    NotNullViolation(String),
    /// A CHECK constraint failed.
    #[error("failed to satisfy CHECK constraint ({0})")]
    CheckViolation(String),
    /// An expression of the wrong type.
    #[error("{0}")]
    DatatypeMismatch(String),
    /// Text that is not a value of the type it must become.
    #[error("{0}")]
    InvalidTextRepresentation(String),
    /// A date or time that does not parse or does not exist.
    #[error("{0}")]
    InvalidDatetime(String),
    /// A date, timestamp or interval outside its type's range (SQLSTATE 22008).
    #[error("{0}")]
    DatetimeOverflow(String),
    /// A number too large for its type.
    #[error("{0}")]
    NumericOutOfRange(String),
    /// A string longer than its column allows.
    #[error("value too long for type {0}")]
    StringTooLong(String),
    /// Division by zero.
    #[error("division by zero")]
    DivisionByZero,
    /// A table definition that cannot be (a second primary key).
    #[error("{0}")]
    InvalidTableDefinition(String),
    /// An object busy with something else (a schema change in progress).
    #[error("{0}")]
    ObjectNotInPrerequisiteState(String),
    /// A bad argument (to a function, a setting, a clause).
    #[error("{0}")]
    InvalidParameterValue(String),
    /// An aggregate or GROUP BY misuse.
    #[error("{0}")]
    Grouping(String),
    /// A subquery used as a value returned more than one row.
    #[error("more than one row returned by a subquery used as an expression")]
    CardinalityViolation,
    /// A statement not allowed in the current transaction state.
    #[error("{0}")]
    InvalidTransactionState(String),
    /// A transaction-block statement (SAVEPOINT …) outside a transaction.
    #[error("{0} can only be used in transaction blocks")]
    NoActiveTransaction(&'static str),
    /// ROLLBACK TO or RELEASE of a savepoint that does not exist.
    #[error("savepoint \"{0}\" does not exist")]
    InvalidSavepoint(String),
    /// A value or request beyond what the node will build.
    #[error("{0}")]
    ProgramLimitExceeded(String),
    /// `SET` or `SHOW` of a variable bini does not have (SQLSTATE 42704).
    #[error("unrecognized configuration parameter \"{0}\"")]
    UnrecognizedSetting(String),
    /// A write in a read-only transaction (SQLSTATE 25006); the statement's verb.
    #[error("cannot execute {0} in a read-only transaction")]
    ReadOnlyTransaction(String),
    /// A statement that must run outside a transaction block, or before its first query
    /// (SQLSTATE 25001).
    #[error("{0}")]
    ActiveTransaction(String),
    /// `DEALLOCATE` of a prepared statement that does not exist (SQLSTATE 26000).
    #[error("prepared statement \"{0}\" does not exist")]
    InvalidPreparedStatement(String),
    /// The statement ran past `statement_timeout` (SQLSTATE 57014).
    #[error("canceling statement due to statement timeout")]
    StatementTimeout,
    /// A statement needs more memory than the node's SQL budget has (SQLSTATE 53200).
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// A statement nested too deeply to run (SQLSTATE 54001, as Postgres's "stack depth
    /// limit exceeded").
    #[error("statement too complex: {0}")]
    StatementTooComplex(String),
    /// A statement in a transaction that already failed.
    #[error("current transaction is aborted, commands ignored until end of transaction block")]
    InFailedTransaction,
    /// The statement was canceled.
    #[error("query execution canceled")]
    Canceled,
    /// The transaction layer failed (retryable errors become SQLSTATE 40001).
    #[error("{0}")]
    Txn(#[from] bini_txn::Error),
    /// A stored descriptor or row that does not decode: a bug or corruption.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Whether the client should retry the whole transaction (SQLSTATE 40001).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Txn(e) if e.is_retryable())
    }
}

impl From<bini_kv::Error> for Error {
    fn from(e: bini_kv::Error) -> Self {
        Error::Txn(bini_txn::Error::Kv(e))
    }
}

impl From<sqlparser::parser::ParserError> for Error {
    fn from(e: sqlparser::parser::ParserError) -> Self {
        let msg = match e {
            sqlparser::parser::ParserError::ParserError(m)
            | sqlparser::parser::ParserError::TokenizerError(m) => m,
            sqlparser::parser::ParserError::RecursionLimitExceeded => {
                return Error::StatementTooComplex(format!(
                    "brackets, subqueries or prefix operators nested more than {} levels deep",
                    crate::nesting::PARSER_RECURSION_LIMIT
                ));
            }
        };
        Error::Syntax(format!("syntax error: {msg}"))
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
