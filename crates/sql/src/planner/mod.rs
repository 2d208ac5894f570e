//! The binder and planner: parsed SQL (`sqlparser`'s AST) to a [`Node`] tree with bound
//! [`Expr`]s.
//!
//! Names resolve against a [`Scope`]: the columns of the current input, each with its table
//! alias. After grouping, the scope becomes the aggregate's output and expressions must be
//! group keys or aggregates (matched structurally on the AST, as Postgres does).
//!
//! Rules applied while planning:
//! - a WHERE over a single table becomes the scan's filter, and equality on every primary key
//!   column (`id = 1`, `id IN (1, 2)`) turns the scan into point lookups; else equality on the
//!   leading columns of a secondary index reads that index's entries under those values and
//!   then the rows they name (the index with the most pinned columns wins);
//! - comparisons (`<`, `<=`, `>`, `>=`, BETWEEN) on the next index column after the pinned
//!   ones narrow the read to spans of that index;
//! - a LIMIT over a filter-only scan without ORDER BY stops the scan early;
//! - WHERE and ON conjuncts naming one side of a join filter that side first (unless it is
//!   the side an outer join keeps whole); equalities between the sides are join keys;
//! - a join whose keys give the right table's primary key or leading columns of one of its
//!   indexes looks up the right rows per left row (a lookup join; past 10,000 left rows it
//!   scans the table); other joins with keys are hash joins;
//! - uncorrelated subqueries run once, before the statement, and become constants; a
//!   correlated one (naming columns of the query directly around it) runs once per row of
//!   that query, in the Filter or Project that evaluates it.
//!
//! Left out for now: references more than one query level out, window functions, join
//! reordering (a lookup join needs the looked-up table on the right of the join as written),
//! statistics (choices are rules, not costs).

mod expr;
mod filter;
mod select;

use std::collections::HashMap;

use sqlparser::ast;

use bini_txn::Txn;

use crate::catalog::TableDesc;
use crate::encoding::encode_key_datum;
use crate::error::{Error, Result};
use crate::exec::resolve_subqueries;
use crate::expr::{cast, exact_cast, BinOp, Expr, Subquery, SubqueryKind};
use crate::functions::Func;
use crate::plan::{AggFunc, Aggregate, BoxFuture, Column, JoinKind, Lookup, Node, SetOp, SortKey};
use crate::types::{Datum, Type};

pub use expr::{coerce_to, type_of};
pub use filter::lookup;
use filter::{join_node, push_filter};

/// What a statement is planned against.
pub struct Context<'a> {
    /// The node's database handle (for what lives outside the transaction: ranges).
    pub db: bini_txn::Db,
    /// The node's sessions and statement statistics.
    pub registry: std::sync::Arc<crate::registry::Registry>,
    /// The statement's transaction.
    pub txn: &'a mut Txn,
    /// The session's current database.
    pub database: String,
    /// Values and types of `$1`, `$2`, …; placeholders of unknown type learn it here.
    pub params: Params,
    /// Describe only: bind and plan, but read and write no rows (DML stops before its
    /// scans; queries are planned, not run).
    pub describe: bool,
    /// The statement's timestamp, for `now()`.
    pub now: chrono::DateTime<chrono::Utc>,
    /// Common table expressions in scope: name → (columns, rows).
    pub ctes: Vec<(String, Vec<Column>, Vec<Vec<Datum>>)>,
    /// While planning a subquery: the scopes of the queries around it, innermost last. A
    /// name not found in the subquery's own scope may name a column of the query directly
    /// around it (an [`Expr::Outer`] reference: the subquery is correlated).
    pub outer: Vec<Scope>,
    /// Set when the subquery being planned referred to its enclosing query's row.
    pub correlated: bool,
    /// What the statement holds until it ends (materialized subqueries, CTEs, rows DML
    /// reads), reserved from the node's SQL memory budget.
    pub mem: crate::memory::Reservation,
    /// The statement's cancel flag and deadline.
    pub interrupt: crate::exec::Interrupt,
}

impl Context<'_> {
    /// What the executor needs to run a plan within this statement.
    pub fn exec(&mut self) -> crate::exec::Exec<'_> {
        crate::exec::Exec {
            txn: &mut *self.txn,
            held: &mut self.mem,
            interrupt: &self.interrupt,
        }
    }
}

/// The parameters of a statement.
#[derive(Clone, Debug, Default)]
pub struct Params {
    /// Values of `$1`, `$2`, … (absent when only describing).
    pub values: Vec<Datum>,
    /// Their types: declared by the client, or inferred from where each placeholder appears
    /// (`Unknown` until then).
    pub types: Vec<Type>,
}

impl Params {
    /// Values with no declared types.
    pub fn values(values: Vec<Datum>) -> Self {
        Params {
            values,
            types: Vec::new(),
        }
    }

    /// The type of `$n` (0-based `i`), if known.
    pub fn type_of(&self, i: usize) -> Type {
        self.types.get(i).cloned().unwrap_or(Type::Unknown)
    }
}

/// The 0-based index of a `$n` placeholder expression.
fn placeholder_index(e: &ast::Expr) -> Option<usize> {
    match e {
        ast::Expr::Nested(x) => placeholder_index(x),
        ast::Expr::Value(v) => match &v.value {
            ast::Value::Placeholder(p) => p
                .trim_start_matches('$')
                .parse::<usize>()
                .ok()
                .and_then(|n| n.checked_sub(1)),
            _ => None,
        },
        _ => None,
    }
}

/// The columns an expression may name.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Input columns.
    pub columns: Vec<Column>,
    /// After grouping: AST expressions (group keys, aggregates) and the column they are.
    pub grouped: Option<Vec<(ast::Expr, usize)>>,
}

impl Scope {
    fn new(columns: Vec<Column>) -> Self {
        Scope {
            columns,
            grouped: None,
        }
    }

    /// Finds a column by name and optional table qualifier.
    fn resolve(&self, table: Option<&str>, name: &str) -> Result<usize> {
        let mut found = None;
        for (i, c) in self.columns.iter().enumerate() {
            if c.name == name && table.is_none_or(|t| c.table.as_deref() == Some(t)) {
                if found.is_some() {
                    return Err(Error::AmbiguousColumn(name.to_string()));
                }
                found = Some(i);
            }
        }
        found.ok_or_else(|| {
            Error::UndefinedColumn(match table {
                Some(t) => format!("{t}.{name}"),
                None => name.to_string(),
            })
        })
    }
}

/// A planned query: the node and its output columns.
pub struct Planned {
    /// The plan.
    pub node: Node,
    /// Output columns.
    pub columns: Vec<Column>,
}

/// Lower-cases unquoted identifiers, as Postgres does.
pub fn ident(i: &ast::Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

/// The parts of a possibly qualified name.
pub fn name_parts(n: &ast::ObjectName) -> Vec<String> {
    n.0.iter().filter_map(|p| p.as_ident()).map(ident).collect()
}

/// Resolves `[db.][public.]table` to (database, table name).
pub fn table_name(ctx_db: &str, n: &ast::ObjectName) -> Result<(String, String)> {
    let parts = name_parts(n);
    match parts.as_slice() {
        [t] => Ok((ctx_db.to_string(), t.clone())),
        [db_or_schema, t] if db_or_schema == "public" => Ok((ctx_db.to_string(), t.clone())),
        [db, t] => Ok((db.clone(), t.clone())),
        [db, s, t] if s == "public" => Ok((db.clone(), t.clone())),
        _ => Err(Error::UndefinedTable(n.to_string())),
    }
}

/// Looks a table up, or fails naming it.
pub async fn must_table(ctx: &mut Context<'_>, n: &ast::ObjectName) -> Result<TableDesc> {
    let (db, t) = table_name(&ctx.database, n)?;
    ctx.registry
        .descriptors
        .table(ctx.txn, &db, &t)
        .await?
        .ok_or_else(|| Error::UndefinedTable(n.to_string()))
}

/// Converts a declared SQL type.
pub fn sql_type(dt: &ast::DataType) -> Result<Type> {
    use ast::DataType as D;
    // Postgres's limit on a declared length; past it a CHAR(n) pad alone could take
    // gigabytes.
    const MAX_LENGTH: u64 = 10_485_760;
    let len = |l: &Option<ast::CharacterLength>| -> Result<Option<u32>> {
        match l {
            Some(ast::CharacterLength::IntegerLength { length, .. }) => {
                if *length == 0 || *length > MAX_LENGTH {
                    return Err(Error::InvalidParameterValue(format!(
                        "length for a character type must be between 1 and {MAX_LENGTH}"
                    )));
                }
                Ok(Some(*length as u32))
            }
            _ => Ok(None),
        }
    };
    let decimal = |info: &ast::ExactNumberInfo| -> Result<Type> {
        let num = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        let scale_of = |s: &i64| u32::try_from(*s).unwrap_or(u32::MAX);
        let (precision, scale) = match info {
            ast::ExactNumberInfo::None => (None, None),
            ast::ExactNumberInfo::Precision(p) => (Some(num(*p)), Some(0)),
            ast::ExactNumberInfo::PrecisionAndScale(p, s) => (Some(num(*p)), Some(scale_of(s))),
        };
        if precision.is_some_and(|p| p == 0 || p > 28) {
            return Err(Error::InvalidParameterValue(
                "NUMERIC precision must be between 1 and 28".into(),
            ));
        }
        if scale > precision {
            return Err(Error::InvalidParameterValue(
                "NUMERIC scale must not exceed its precision".into(),
            ));
        }
        Ok(Type::Decimal { precision, scale })
    };
    Ok(match dt {
        D::Bool | D::Boolean => Type::Bool,
        D::SmallInt(_) | D::Int2(_) => Type::Int2,
        D::Int4(_) => Type::Int4,
        D::Integer(_) => Type::Int4,
        // CockroachDB's choice: INT is 64 bits.
        D::Int(_) | D::BigInt(_) | D::Int8(_) => Type::Int8,
        D::Real | D::Float4 => Type::Float4,
        D::DoublePrecision | D::Float8 | D::Double(_) => Type::Float8,
        D::Float(ast::ExactNumberInfo::Precision(p)) if *p <= 24 => Type::Float4,
        D::Float(_) => Type::Float8,
        D::Numeric(i) | D::Decimal(i) | D::Dec(i) => decimal(i)?,
        D::Varchar(l) | D::CharacterVarying(l) | D::CharVarying(l) => Type::String {
            max_len: len(l)?,
            fixed: false,
        },
        D::Char(l) | D::Character(l) => Type::String {
            max_len: Some(len(l)?.unwrap_or(1)),
            fixed: true,
        },
        D::Text | D::String(_) => Type::TEXT,
        D::Bytea => Type::Bytes,
        D::Date => Type::Date,
        D::Timestamp(_, ast::TimezoneInfo::Tz | ast::TimezoneInfo::WithTimeZone) => {
            Type::TimestampTz
        }
        D::Timestamp(_, _) => Type::Timestamp,
        D::Interval { .. } => Type::Interval,
        D::Uuid => Type::Uuid,
        D::JSONB | D::JSON => Type::Jsonb,
        // Arrays are carried as their text form.
        D::Array(_) => Type::TEXT,
        D::Custom(name, _) => {
            let n = name.to_string().to_lowercase();
            let n = n
                .strip_prefix("pg_catalog.")
                .unwrap_or(&n)
                .trim_matches('"');
            match n {
                "text" | "name" | "char" | "varchar" => Type::TEXT,
                "bool" => Type::Bool,
                "int2" => Type::Int2,
                "int4" => Type::Int4,
                "int8" => Type::Int8,
                // Object identifiers are numbers here (an oid prints as its number).
                "oid" | "regclass" | "regtype" | "regnamespace" | "regproc" | "regrole" => {
                    Type::Int8
                }
                "serial" | "serial8" | "bigserial" | "int64" => Type::Int8,
                "serial4" => Type::Int4,
                "serial2" | "smallserial" => Type::Int2,
                "string" => Type::TEXT,
                "bytes" => Type::Bytes,
                "timestamptz" => Type::TimestampTz,
                "float" => Type::Float8,
                _ => return Err(Error::FeatureNotSupported(format!("type {name}"))),
            }
        }
        other => return Err(Error::FeatureNotSupported(format!("type {other}"))),
    })
}

/// Whether a declared type is SERIAL (a column filled with unique ids by default).
pub fn is_serial(dt: &ast::DataType) -> bool {
    matches!(dt, ast::DataType::Custom(name, _)
        if name.to_string().to_lowercase().contains("serial"))
}
