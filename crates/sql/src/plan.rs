//! Query plans: a tree of relational operators over rows of [`Datum`]s.
//!
//! The planner (`planner/`) builds a [`Node`] tree from a bound query; the executor
//! (`exec/`) runs it inside the statement's transaction, streaming rows through it a batch at
//! a time.
//!
//! What reaches KV: a [`Node::Scan`] reads one table's primary index, either a list of
//! primary keys (point lookups, one round trip per range), spans of it, or the rows a
//! secondary index names, with its filter applied as rows arrive and its limit stopping the
//! scan early.

use crate::catalog::{IndexDesc, TableDesc};
use crate::encoding::{decode_row, encode_key_datum};
use crate::error::Result;
use crate::expr::Expr;
use crate::types::{Datum, Type};

/// A row.
pub type Row = Vec<Datum>;

/// A column of a node's output.
#[derive(Clone, Debug)]
pub struct Column {
    /// The name clients see.
    pub name: String,
    /// The table (or alias) it comes from, for qualified references.
    pub table: Option<String>,
    /// Its type.
    pub ty: Type,
    /// Left out of `*` (a hidden row id).
    pub hidden: bool,
}

/// How a join keeps unmatched rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinKind {
    /// Only matches.
    Inner,
    /// Every left row.
    Left,
    /// Every right row.
    Right,
    /// Every row of both.
    Full,
}

/// A set operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetOp {
    /// UNION
    Union,
    /// INTERSECT
    Intersect,
    /// EXCEPT
    Except,
}

/// An aggregate function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggFunc {
    /// count(*)
    CountStar,
    /// count(x)
    Count,
    /// sum(x)
    Sum,
    /// avg(x)
    Avg,
    /// min(x)
    Min,
    /// max(x)
    Max,
    /// string_agg(x, sep)
    StringAgg,
    /// bool_and(x)
    BoolAnd,
    /// bool_or(x)
    BoolOr,
}

/// One aggregate computed per group.
#[derive(Clone, Debug)]
pub struct Aggregate {
    /// Which.
    pub func: AggFunc,
    /// Its argument (and separator for string_agg).
    pub args: Vec<Expr>,
    /// `DISTINCT` inside the call.
    pub distinct: bool,
}

/// A sort key.
#[derive(Clone, Debug)]
pub struct SortKey {
    /// What to sort by.
    pub expr: Expr,
    /// Descending.
    pub desc: bool,
    /// NULLs before other values (Postgres: last ascending, first descending).
    pub nulls_first: bool,
}

/// A plan node.
#[derive(Clone, Debug)]
pub enum Node {
    /// Rows of a table's primary index.
    Scan {
        /// The table.
        table: Box<TableDesc>,
        /// Only the rows this finds, if set.
        keys: Option<Lookup>,
        /// Rows failing it are dropped.
        filter: Option<Expr>,
        /// Stop after this many rows pass the filter.
        limit: Option<usize>,
    },
    /// Literal rows.
    Values {
        /// Each row's expressions (constant).
        rows: Vec<Vec<Expr>>,
    },
    /// Already computed rows (a CTE or a materialized subquery).
    Rows {
        /// The rows.
        rows: Vec<Row>,
    },
    /// `generate_series(start, stop[, step])`: integers, computed when run.
    Series {
        /// Start, stop and step.
        args: Vec<Expr>,
    },
    /// Rows for which the predicate is true.
    Filter {
        /// Input.
        input: Box<Node>,
        /// Predicate.
        predicate: Expr,
    },
    /// Computes new columns.
    Project {
        /// Input.
        input: Box<Node>,
        /// One expression per output column.
        exprs: Vec<Expr>,
    },
    /// Groups and aggregates: output is the group expressions, then the aggregates.
    Aggregate {
        /// Input.
        input: Box<Node>,
        /// Group keys.
        group_by: Vec<Expr>,
        /// Aggregates.
        aggs: Vec<Aggregate>,
    },
    /// Sorts.
    Sort {
        /// Input.
        input: Box<Node>,
        /// Keys, most significant first.
        keys: Vec<SortKey>,
    },
    /// OFFSET and LIMIT.
    Limit {
        /// Input.
        input: Box<Node>,
        /// Rows kept at most.
        limit: Option<usize>,
        /// Rows skipped first.
        offset: usize,
    },
    /// Drops duplicate rows (first occurrence kept).
    Distinct {
        /// Input.
        input: Box<Node>,
    },
    /// A join; output is the left row then the right row.
    Join {
        /// Left input.
        left: Box<Node>,
        /// Right input.
        right: Box<Node>,
        /// Kind.
        kind: JoinKind,
        /// The join condition on the concatenated row (none: cross join).
        on: Option<Expr>,
        /// Equal-key pairs (left expr, right expr on the right row alone) for a hash join.
        equi: Vec<(Expr, Expr)>,
        /// Width of the left row.
        left_width: usize,
        /// Width of the right row.
        right_width: usize,
    },
    /// An inner or left join that reads only the right table's rows whose key columns equal
    /// a left row's values (point lookups of primary keys, or spans of a secondary index's
    /// leading columns) instead of scanning the table; past [`LOOKUP_JOIN_MAX_ROWS`] left
    /// rows it scans the table instead. Output as [`Node::Join`].
    LookupJoin {
        /// Left input.
        left: Box<Node>,
        /// The right table.
        table: Box<TableDesc>,
        /// The index whose leading columns the keys give (the primary index, or a secondary
        /// one).
        index: u32,
        /// On the left row: the value of each leading column of the index, in order.
        keys: Vec<Expr>,
        /// The right table's own filter.
        filter: Option<Expr>,
        /// Inner or left.
        kind: JoinKind,
        /// The join condition on the concatenated row.
        on: Option<Expr>,
        /// Equal-key pairs (left expr, right expr on the right row alone).
        equi: Vec<(Expr, Expr)>,
        /// Width of the left row.
        left_width: usize,
        /// Width of the right row.
        right_width: usize,
    },
    /// UNION / INTERSECT / EXCEPT.
    SetOp {
        /// Left input.
        left: Box<Node>,
        /// Right input.
        right: Box<Node>,
        /// Which.
        op: SetOp,
        /// Keep duplicates.
        all: bool,
    },
}

impl Node {
    /// A lookup join as the plain join of its left input with a scan of its table (for the
    /// planner to reconsider once more filters reach it); any other node as it is.
    pub fn without_lookup_join(self) -> Node {
        match self {
            Node::LookupJoin {
                left,
                table,
                filter,
                kind,
                on,
                equi,
                left_width,
                right_width,
                ..
            } => Node::Join {
                left,
                right: Box::new(Node::Scan {
                    table,
                    keys: None,
                    filter,
                    limit: None,
                }),
                kind,
                on,
                equi,
                left_width,
                right_width,
            },
            other => other,
        }
    }

    /// Applies `f` to every expression of this node and the nodes below it.
    pub fn map_exprs(&mut self, f: &mut dyn FnMut(&mut Expr)) {
        crate::stack::grow(|| match self {
            Node::Scan { filter, .. } => filter.iter_mut().for_each(f),
            Node::Values { rows } => rows.iter_mut().flatten().for_each(f),
            Node::Rows { .. } => {}
            Node::Series { args } => args.iter_mut().for_each(f),
            Node::Filter { input, predicate } => {
                f(predicate);
                input.map_exprs(f);
            }
            Node::Project { input, exprs } => {
                exprs.iter_mut().for_each(&mut *f);
                input.map_exprs(f);
            }
            Node::Aggregate {
                input,
                group_by,
                aggs,
            } => {
                group_by.iter_mut().for_each(&mut *f);
                aggs.iter_mut()
                    .flat_map(|a| a.args.iter_mut())
                    .for_each(&mut *f);
                input.map_exprs(f);
            }
            Node::Sort { input, keys } => {
                keys.iter_mut().for_each(|k| f(&mut k.expr));
                input.map_exprs(f);
            }
            Node::Limit { input, .. } | Node::Distinct { input } => input.map_exprs(f),
            Node::Join {
                left,
                right,
                on,
                equi,
                ..
            } => {
                on.iter_mut().for_each(&mut *f);
                for (a, b) in equi {
                    f(a);
                    f(b);
                }
                left.map_exprs(f);
                right.map_exprs(f);
            }
            Node::LookupJoin {
                left,
                keys,
                filter,
                on,
                equi,
                ..
            } => {
                keys.iter_mut().for_each(&mut *f);
                filter.iter_mut().for_each(&mut *f);
                on.iter_mut().for_each(&mut *f);
                for (a, b) in equi {
                    f(a);
                    f(b);
                }
                left.map_exprs(f);
            }
            Node::SetOp { left, right, .. } => {
                left.map_exprs(f);
                right.map_exprs(f);
            }
        })
    }
}

/// A boxed future, for recursion over the plan tree (polled with stack room).
pub type BoxFuture<'a, T> = crate::stack::DeepFuture<'a, T>;

/// Rows of a scan decoded into table column order (absent columns are NULL).
pub fn decode_table_row(table: &TableDesc, value: &[u8]) -> Result<Row> {
    let mut row = vec![Datum::Null; table.columns.len()];
    for (id, d) in decode_row(value)? {
        if let Some(i) = table.column_index_by_id(id) {
            row[i] = d;
        }
    }
    Ok(row)
}

/// The encoded primary key of a row.
pub fn primary_key(table: &TableDesc, row: &[Datum]) -> Result<Vec<u8>> {
    row_key(table, &table.primary, row)
}

/// The key of a row in an index that holds whole rows under its columns (the primary index,
/// or a new primary index being built).
pub fn row_key(table: &TableDesc, index: &IndexDesc, row: &[Datum]) -> Result<Vec<u8>> {
    let mut key = crate::encoding::index_prefix(table.id, index.id);
    for i in table.index_positions(index) {
        encode_key_datum(&row[i], &mut key)?;
    }
    Ok(key)
}

/// A span of keys, `[start, end)`.
pub type Span = (Vec<u8>, Vec<u8>);

/// The rows a scan reads instead of the whole table.
#[derive(Clone, Debug)]
pub enum Lookup {
    /// These primary keys (encoded).
    Primary(Vec<Vec<u8>>),
    /// Sorted, disjoint spans of one index: of the primary index they hold the rows; of a
    /// secondary index, entries naming the rows.
    Spans {
        /// The index's id (the primary index's: a range scan of the table).
        index: u32,
        /// The spans.
        spans: Vec<Span>,
    },
}

/// The most left rows a lookup join looks up at once (one batched read per range for the
/// chunk).
pub const LOOKUP_JOIN_MAX_ROWS: usize = 10_000;
