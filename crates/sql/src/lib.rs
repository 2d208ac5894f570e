//! bini's SQL layer (DESIGN.md layer 5): parse → bind → plan → execute, over serializable
//! transactions.
//!
//! # Life of a query
//!
//! 1. [`Session::execute_sql`] parses the text with `sqlparser` (PostgreSQL dialect).
//! 2. Session statements (`SET`, `USE`, `SHOW <var>`, `BEGIN`, `COMMIT`) change the session.
//! 3. Everything else runs in the session's transaction, or in a fresh one that commits at the
//!    end (autocommit, retried transparently on retryable errors).
//! 4. Queries are bound and planned (`planner.rs`) into a tree of [`plan::Node`]s, reading
//!    table descriptors from the catalog (`catalog.rs`) in the same transaction.
//! 5. The plan executes (`plan.rs`): scans read the table's primary index through the
//!    transaction (point lookups when the primary key is pinned), rows are decoded
//!    (`encoding.rs`) and flow through filters, joins, grouping, sorting.
//! 6. DML (`dml.rs`) reads what it must check (uniqueness, rows to change) and sends all its
//!    writes in one batch.
//! 7. Schema changes that fill an index (`schema.rs`) commit the index as a mutation first,
//!    then backfill it a page per transaction while the table takes writes.
//!
//! Errors are [`Error`] variants, one per SQLSTATE class; the pgwire gateway maps them.

mod catalog;
mod copy;
mod dml;
mod encoding;
mod error;
mod exec;
mod expr;
mod functions;
mod internal;
mod memory;
mod nesting;
mod parse;
mod plan;
mod planner;
mod registry;
mod schema;
mod session;
mod stack;
mod types;

pub use catalog::{bootstrap, database_exists, DEFAULT_DATABASE};
pub use error::{Error, Result};
pub use expr::cast;
pub use memory::{MemoryPool, Reservation};
pub use parse::{parse, parse_one, AsOf, Parsed, MAX_STATEMENT_BYTES};
pub use plan::Column;
pub use planner::Params;
pub use registry::Registry;
pub use session::{Cursor, Described, Output, Session, SharedCursor, TxnState};
pub use types::{Datum, Interval, Type};

/// The server version reported to clients (a PostgreSQL version drivers accept).
pub const SERVER_VERSION: &str = "15.0.0";
