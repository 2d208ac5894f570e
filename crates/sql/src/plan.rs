//! Query plans: a tree of relational operators over rows of [`Datum`]s.
//!
//! The planner (`planner.rs`) builds a [`Node`] tree from a bound query; [`execute`] runs it
//! inside the statement's transaction. Each node produces its whole result before its parent
//! runs (results are materialized); a streaming executor is a later step, and the node shapes
//! do not change for it.
//!
//! What reaches KV: a [`Node::Scan`] reads one table's primary index, either a list of
//! primary keys (point lookups, one round trip per range) or the whole span, with its filter
//! applied as rows arrive and its limit stopping the scan early.

use std::collections::{HashMap, HashSet};

use bini_txn::Txn;

use crate::catalog::{IndexDesc, TableDesc};
use crate::encoding::{decode_row, encode_key_datum};
use crate::error::{Error, Result};
use crate::expr::{Expr, SubqueryKind};
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

/// `e` with each correlated subquery in it run for `row` (its outer references taking the
/// row's values) and replaced by its result.
pub fn resolve_subqueries<'a>(
    e: &'a Expr,
    row: &'a [Datum],
    txn: &'a mut Txn,
) -> BoxFuture<'a, Result<Expr>> {
    crate::stack::deep(async move {
        // The subqueries of this level (not those inside them), left to right.
        let mut subqueries = Vec::new();
        let mut out = e.clone();
        visit_subqueries(&mut out, &mut |x| {
            if let Expr::Subquery(sub) = x {
                subqueries.push(sub.clone());
            }
        });
        let mut values = Vec::with_capacity(subqueries.len());
        for sub in subqueries {
            let mut node = sub.node.clone();
            node.map_exprs(&mut |x| x.bind_outer(row));
            let rows = execute(&node, txn).await?;
            values.push(subquery_value(&sub.kind, rows, row)?);
        }
        let mut values = values.into_iter();
        visit_subqueries(&mut out, &mut |x| {
            *x = Expr::Literal(values.next().unwrap_or(Datum::Null));
        });
        Ok(out)
    })
}

/// Calls `f` on each subquery of `e`, left to right, without entering them.
fn visit_subqueries(e: &mut Expr, f: &mut dyn FnMut(&mut Expr)) {
    crate::stack::grow(|| {
        if let Expr::Subquery(_) = e {
            f(e);
            return;
        }
        e.for_each_child(&mut |c| visit_subqueries(c, f));
    })
}

/// The value of a subquery of `kind` that returned `rows`, evaluated on the enclosing `row`.
fn subquery_value(kind: &SubqueryKind, rows: Vec<Row>, row: &[Datum]) -> Result<Datum> {
    Ok(match kind {
        SubqueryKind::Scalar => {
            if rows.len() > 1 {
                return Err(Error::CardinalityViolation);
            }
            rows.into_iter()
                .next()
                .and_then(|r| r.into_iter().next())
                .unwrap_or(Datum::Null)
        }
        SubqueryKind::Exists { negated } => Datum::Bool(rows.is_empty() == *negated),
        SubqueryKind::In { expr, negated } => {
            let list: Vec<Expr> = rows
                .into_iter()
                .map(|r| Expr::Literal(r.into_iter().next().unwrap_or(Datum::Null)))
                .collect();
            Expr::InList(Box::new((**expr).clone()), list, *negated).eval(row)?
        }
        SubqueryKind::Array => Datum::String(crate::functions::array_literal(
            rows.into_iter()
                .map(|r| r.into_iter().next().unwrap_or(Datum::Null)),
        )),
    })
}

/// The most rows `generate_series` makes (they are built in memory).
const MAX_SERIES: usize = 1_000_000;

/// The rows of `generate_series(start, stop[, step])` (none when an argument is NULL).
fn series(args: &[Expr]) -> Result<Vec<Row>> {
    let mut values = Vec::new();
    for a in args {
        values.push(match crate::expr::cast(a.eval(&[])?, &Type::Int8)? {
            Datum::Int(i) => Some(i),
            _ => None,
        });
    }
    let (start, stop, step) = match values.as_slice() {
        [a, b] => (*a, *b, Some(1)),
        [a, b, c] => (*a, *b, *c),
        _ => return Err(Error::Internal("generate_series arguments".into())),
    };
    let mut rows = Vec::new();
    if let (Some(start), Some(stop), Some(step)) = (start, stop, step) {
        if step == 0 {
            return Err(Error::InvalidParameterValue(
                "step size cannot equal zero".into(),
            ));
        }
        let count = (i128::from(stop) - i128::from(start)) / i128::from(step) + 1;
        if count > MAX_SERIES as i128 {
            return Err(Error::ProgramLimitExceeded(format!(
                "generate_series() of more than {MAX_SERIES} rows"
            )));
        }
        let mut v = i128::from(start);
        for _ in 0..count.max(0) {
            rows.push(vec![Datum::Int(v as i64)]);
            v += i128::from(step);
        }
    }
    Ok(rows)
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

fn passes(filter: &Option<Expr>, row: &[Datum]) -> Result<bool> {
    match filter {
        None => Ok(true),
        Some(f) => Ok(f.eval(row)?.truth()? == Some(true)),
    }
}

/// A span of keys, `[start, end)`.
pub type Span = (Vec<u8>, Vec<u8>);

/// Rows read per KV scan request.
const SCAN_BATCH: u64 = 1024;

/// Reads a table's rows (all, the given primary keys, or those under spans of an index)
/// through the filter.
pub async fn scan_table(
    txn: &mut Txn,
    table: &TableDesc,
    keys: Option<&Lookup>,
    filter: &Option<Expr>,
    limit: Option<usize>,
) -> Result<Vec<(Vec<u8>, Row)>> {
    let mut out = Vec::new();
    if limit == Some(0) {
        return Ok(out);
    }
    let whole = [table.primary_span()];
    let (index, spans) = match keys {
        Some(Lookup::Primary(keys)) => {
            fetch_rows(txn, table, keys, filter, limit, &mut out).await?;
            return Ok(out);
        }
        Some(Lookup::Spans { index, spans }) => (*index, spans.as_slice()),
        None => (table.primary.id, &whole[..]),
    };
    if index != table.primary.id {
        let keys = index_lookup(txn, table, spans).await?;
        fetch_rows(txn, table, &keys, filter, limit, &mut out).await?;
        return Ok(out);
    }
    for (start, end) in spans {
        let done = scan_span(txn, start, end, |key, value| {
            let row = decode_table_row(table, value)?;
            if passes(filter, &row)? {
                out.push((key.to_vec(), row));
            }
            Ok(limit.is_some_and(|l| out.len() >= l))
        })
        .await?;
        if done {
            break;
        }
    }
    Ok(out)
}

/// Reads `[start, end)` in batches, calling `each` on every key and value until it returns
/// true (then this returns true: the caller has what it needs).
async fn scan_span(
    txn: &mut Txn,
    start: &[u8],
    end: &[u8],
    mut each: impl FnMut(&[u8], &[u8]) -> Result<bool>,
) -> Result<bool> {
    let mut from = start.to_vec();
    loop {
        let batch = txn.scan(&from, end, SCAN_BATCH).await?;
        for kv in &batch {
            if each(&kv.key, &kv.value)? {
                return Ok(true);
            }
        }
        match batch.last() {
            Some(last) if batch.len() as u64 == SCAN_BATCH => {
                from = last.key.clone();
                from.push(0);
            }
            _ => return Ok(false),
        }
    }
}

/// Reads the rows of these primary keys (one batched request per range) through the filter
/// into `out`, stopping at `limit`.
async fn fetch_rows(
    txn: &mut Txn,
    table: &TableDesc,
    keys: &[Vec<u8>],
    filter: &Option<Expr>,
    limit: Option<usize>,
    out: &mut Vec<(Vec<u8>, Row)>,
) -> Result<()> {
    let values = txn.get_many(keys).await?;
    for (k, v) in keys.iter().zip(values) {
        if let Some(v) = v {
            let row = decode_table_row(table, &v)?;
            if passes(filter, &row)? {
                out.push((k.clone(), row));
                if limit.is_some_and(|l| out.len() >= l) {
                    break;
                }
            }
        }
    }
    Ok(())
}

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

/// The primary keys of the rows a secondary index lists under `spans` (each entry's value
/// is its row's primary key values), sorted and without repeats.
async fn index_lookup(txn: &mut Txn, table: &TableDesc, spans: &[Span]) -> Result<Vec<Vec<u8>>> {
    let mut keys = Vec::new();
    for (start, end) in spans {
        scan_span(txn, start, end, |_, value| {
            let mut key = crate::encoding::index_prefix(table.id, table.primary.id);
            for d in &crate::encoding::decode_datums(value)? {
                encode_key_datum(d, &mut key)?;
            }
            keys.push(key);
            Ok(false)
        })
        .await?;
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// Runs a plan.
pub fn execute<'a>(node: &'a Node, txn: &'a mut Txn) -> BoxFuture<'a, Result<Vec<Row>>> {
    crate::stack::deep(async move {
        Ok(match node {
            Node::Scan {
                table,
                keys,
                filter,
                limit,
            } => scan_table(txn, table, keys.as_ref(), filter, *limit)
                .await?
                .into_iter()
                .map(|(_, r)| r)
                .collect(),
            Node::Values { rows } => rows
                .iter()
                .map(|r| r.iter().map(|e| e.eval(&[])).collect::<Result<Row>>())
                .collect::<Result<_>>()?,
            Node::Rows { rows } => rows.clone(),
            Node::Series { args } => series(args)?,
            Node::Filter { input, predicate } => {
                let rows = execute(input, txn).await?;
                let correlated = predicate.has_subquery();
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    let pass = if correlated {
                        resolve_subqueries(predicate, &r, txn).await?.eval(&r)?
                    } else {
                        predicate.eval(&r)?
                    };
                    if pass.truth()? == Some(true) {
                        out.push(r);
                    }
                }
                out
            }
            Node::Project { input, exprs } => {
                let rows = execute(input, txn).await?;
                if exprs.iter().any(Expr::has_subquery) {
                    let mut out = Vec::with_capacity(rows.len());
                    for r in &rows {
                        let mut row = Vec::with_capacity(exprs.len());
                        for e in exprs {
                            row.push(resolve_subqueries(e, r, txn).await?.eval(r)?);
                        }
                        out.push(row);
                    }
                    out
                } else {
                    rows.iter()
                        .map(|r| exprs.iter().map(|e| e.eval(r)).collect::<Result<Row>>())
                        .collect::<Result<_>>()?
                }
            }
            Node::Aggregate {
                input,
                group_by,
                aggs,
            } => aggregate(execute(input, txn).await?, group_by, aggs)?,
            Node::Sort { input, keys } => {
                let rows = execute(input, txn).await?;
                let mut keyed = rows
                    .into_iter()
                    .map(|r| {
                        let k = keys
                            .iter()
                            .map(|s| s.expr.eval(&r))
                            .collect::<Result<Vec<_>>>()?;
                        Ok((k, r))
                    })
                    .collect::<Result<Vec<_>>>()?;
                keyed.sort_by(|(a, _), (b, _)| {
                    for (i, s) in keys.iter().enumerate() {
                        let (x, y) = (&a[i], &b[i]);
                        let ord = match (x.is_null(), y.is_null()) {
                            (true, true) => std::cmp::Ordering::Equal,
                            (true, false) if s.nulls_first => std::cmp::Ordering::Less,
                            (true, false) => std::cmp::Ordering::Greater,
                            (false, true) if s.nulls_first => std::cmp::Ordering::Greater,
                            (false, true) => std::cmp::Ordering::Less,
                            _ => {
                                let o = x.sort_cmp(y);
                                if s.desc {
                                    o.reverse()
                                } else {
                                    o
                                }
                            }
                        };
                        if ord.is_ne() {
                            return ord;
                        }
                    }
                    std::cmp::Ordering::Equal
                });
                keyed.into_iter().map(|(_, r)| r).collect()
            }
            Node::Limit {
                input,
                limit,
                offset,
            } => {
                let rows = execute(input, txn).await?;
                rows.into_iter()
                    .skip(*offset)
                    .take(limit.unwrap_or(usize::MAX))
                    .collect()
            }
            Node::Distinct { input } => {
                let rows = execute(input, txn).await?;
                let mut seen = HashSet::new();
                rows.into_iter()
                    .filter(|r| seen.insert(RowKey::of(r)))
                    .collect()
            }
            Node::Join {
                left,
                right,
                kind,
                on,
                equi,
                left_width,
                right_width,
            } => {
                let l = execute(left, txn).await?;
                let r = execute(right, txn).await?;
                join(l, r, *kind, on, equi, *left_width, *right_width)?
            }
            Node::LookupJoin {
                left,
                table,
                index,
                keys,
                filter,
                kind,
                on,
                equi,
                left_width,
                right_width,
            } => {
                let l = execute(left, txn).await?;
                let lookup = if l.len() <= LOOKUP_JOIN_MAX_ROWS {
                    Some(join_lookup(table, *index, keys, &l)?)
                } else {
                    None
                };
                let r = match &lookup {
                    Some(Lookup::Primary(k)) if k.is_empty() => Vec::new(),
                    _ => scan_table(txn, table, lookup.as_ref(), filter, None)
                        .await?
                        .into_iter()
                        .map(|(_, r)| r)
                        .collect(),
                };
                join(l, r, *kind, on, equi, *left_width, *right_width)?
            }
            Node::SetOp {
                left,
                right,
                op,
                all,
            } => {
                let l = execute(left, txn).await?;
                let r = execute(right, txn).await?;
                set_op(l, r, *op, *all)
            }
        })
    })
}

/// The most left rows a lookup join looks up one by one; past it, reading the whole right
/// table once is the cheaper bet.
pub const LOOKUP_JOIN_MAX_ROWS: usize = 10_000;

/// What a lookup join reads of `table`: the keys of `index` that the left rows' `keys`
/// values name. A value that no row of the column's type can equal (NULL, or changed by the
/// cast to it) names nothing.
fn join_lookup(table: &TableDesc, index: u32, keys: &[Expr], left: &[Row]) -> Result<Lookup> {
    let Some(idx) = table.index_by_id(index) else {
        return Err(Error::Internal(format!("index {index} of {}", table.name)));
    };
    let types: Vec<Type> = table
        .index_positions(idx)
        .iter()
        .map(|&c| table.columns[c].ty.clone())
        .collect();
    let mut found = Vec::with_capacity(left.len());
    'rows: for row in left {
        let mut key = crate::encoding::index_prefix(table.id, index);
        for (e, ty) in keys.iter().zip(&types) {
            let v = e.eval(row)?;
            if v.is_null() {
                continue 'rows;
            }
            match crate::expr::exact_cast(&v, ty) {
                Some(x) => encode_key_datum(&x, &mut key)?,
                None => continue 'rows,
            }
        }
        found.push(key);
    }
    found.sort();
    found.dedup();
    Ok(if index == table.primary.id && keys.len() == types.len() {
        Lookup::Primary(found)
    } else {
        Lookup::Spans {
            index,
            spans: found
                .into_iter()
                .map(|k| {
                    let end = crate::encoding::prefix_end(&k);
                    (k, end)
                })
                .collect(),
        }
    })
}

/// A row as a hashable key, with SQL equality for numbers (`1 = 1.0`).
#[derive(PartialEq, Eq, Hash, Clone)]
struct RowKey(Vec<u8>);

impl RowKey {
    fn of(row: &[Datum]) -> RowKey {
        let mut out = Vec::new();
        for d in row {
            let normalized = match d {
                Datum::Int(i) => Datum::Decimal((*i).into()),
                Datum::Json(j) => Datum::String(j.to_string()),
                other => other.clone(),
            };
            if encode_key_datum(&normalized, &mut out).is_err() {
                out.extend_from_slice(d.to_string().as_bytes());
            }
        }
        RowKey(out)
    }
}

fn join(
    left: Vec<Row>,
    right: Vec<Row>,
    kind: JoinKind,
    on: &Option<Expr>,
    equi: &[(Expr, Expr)],
    left_width: usize,
    right_width: usize,
) -> Result<Vec<Row>> {
    let mut out = Vec::new();
    let mut right_matched = vec![false; right.len()];
    // With equality keys, probe a hash table of the right side instead of every pair.
    let index: Option<HashMap<RowKey, Vec<usize>>> = if equi.is_empty() {
        None
    } else {
        let mut m: HashMap<RowKey, Vec<usize>> = HashMap::new();
        for (i, r) in right.iter().enumerate() {
            let k = equi
                .iter()
                .map(|(_, e)| e.eval(r))
                .collect::<Result<Vec<_>>>()?;
            if k.iter().any(Datum::is_null) {
                continue;
            }
            m.entry(RowKey::of(&k)).or_default().push(i);
        }
        Some(m)
    };
    let all: Vec<usize> = (0..right.len()).collect();
    for l in &left {
        let mut matched = false;
        let candidates: &[usize] = match &index {
            Some(m) => {
                let k = equi
                    .iter()
                    .map(|(e, _)| e.eval(l))
                    .collect::<Result<Vec<_>>>()?;
                if k.iter().any(Datum::is_null) {
                    &[]
                } else {
                    m.get(&RowKey::of(&k)).map(|v| v.as_slice()).unwrap_or(&[])
                }
            }
            None => &all,
        };
        for &ri in candidates {
            let mut row = l.clone();
            row.extend(right[ri].iter().cloned());
            if passes(on, &row)? {
                matched = true;
                right_matched[ri] = true;
                out.push(row);
            }
        }
        if !matched && matches!(kind, JoinKind::Left | JoinKind::Full) {
            let mut row = l.clone();
            row.extend(std::iter::repeat_n(Datum::Null, right_width));
            out.push(row);
        }
    }
    if matches!(kind, JoinKind::Right | JoinKind::Full) {
        for (ri, r) in right.into_iter().enumerate() {
            if !right_matched[ri] {
                let mut row = vec![Datum::Null; left_width];
                row.extend(r);
                out.push(row);
            }
        }
    }
    Ok(out)
}

fn set_op(left: Vec<Row>, right: Vec<Row>, op: SetOp, all: bool) -> Vec<Row> {
    let mut counts: HashMap<RowKey, usize> = HashMap::new();
    for r in &right {
        *counts.entry(RowKey::of(r)).or_default() += 1;
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    match op {
        SetOp::Union => {
            for r in left.into_iter().chain(right) {
                if all || seen.insert(RowKey::of(&r)) {
                    out.push(r);
                }
            }
        }
        SetOp::Intersect | SetOp::Except => {
            for r in left {
                let k = RowKey::of(&r);
                let c = counts.get_mut(&k);
                let present = c.as_ref().is_some_and(|c| **c > 0);
                let keep = (op == SetOp::Intersect) == present;
                if all {
                    if keep {
                        out.push(r);
                    }
                    if present {
                        if let Some(c) = c {
                            *c -= 1;
                        }
                    }
                } else if keep && seen.insert(k) {
                    out.push(r);
                }
            }
        }
    }
    out
}

/// Accumulated state of one aggregate in one group.
#[derive(Clone)]
enum Acc {
    Count(i64),
    Sum(Option<Datum>),
    Avg(Option<Datum>, i64),
    MinMax(Option<Datum>),
    StringAgg(Option<String>),
    Bool(Option<bool>),
}

fn aggregate(rows: Vec<Row>, group_by: &[Expr], aggs: &[Aggregate]) -> Result<Vec<Row>> {
    let mut groups: HashMap<RowKey, usize> = HashMap::new();
    let mut states: Vec<(Row, Vec<Acc>, Vec<HashSet<RowKey>>)> = Vec::new();
    let fresh = || {
        aggs.iter()
            .map(|a| match a.func {
                AggFunc::CountStar | AggFunc::Count => Acc::Count(0),
                AggFunc::Sum => Acc::Sum(None),
                AggFunc::Avg => Acc::Avg(None, 0),
                AggFunc::Min | AggFunc::Max => Acc::MinMax(None),
                AggFunc::StringAgg => Acc::StringAgg(None),
                AggFunc::BoolAnd | AggFunc::BoolOr => Acc::Bool(None),
            })
            .collect::<Vec<_>>()
    };
    for row in &rows {
        let key = group_by
            .iter()
            .map(|e| e.eval(row))
            .collect::<Result<Row>>()?;
        let idx = *groups.entry(RowKey::of(&key)).or_insert_with(|| {
            states.push((key, fresh(), vec![HashSet::new(); aggs.len()]));
            states.len() - 1
        });
        let (_, accs, distinct) = &mut states[idx];
        for (i, a) in aggs.iter().enumerate() {
            let vals = a
                .args
                .iter()
                .map(|e| e.eval(row))
                .collect::<Result<Vec<_>>>()?;
            if a.func != AggFunc::CountStar && vals.first().is_none_or(Datum::is_null) {
                continue;
            }
            if a.distinct && !distinct[i].insert(RowKey::of(&vals[..1])) {
                continue;
            }
            accumulate(&mut accs[i], a.func, vals)?;
        }
    }
    if states.is_empty() && group_by.is_empty() {
        states.push((Vec::new(), fresh(), Vec::new()));
    }
    states
        .into_iter()
        .map(|(mut key, accs, _)| {
            for acc in accs {
                key.push(finish(acc)?);
            }
            Ok(key)
        })
        .collect()
}

fn accumulate(acc: &mut Acc, func: AggFunc, mut vals: Vec<Datum>) -> Result<()> {
    use crate::expr::{binary, BinOp};
    let v = if vals.is_empty() {
        Datum::Null
    } else {
        vals.swap_remove(0)
    };
    match acc {
        Acc::Count(n) => *n += 1,
        Acc::Sum(s) => {
            let v = match v {
                Datum::Int(i) => Datum::Decimal(i.into()),
                other => other,
            };
            *s = Some(match s.take() {
                None => v,
                Some(cur) => binary(BinOp::Add, cur, v)?,
            });
        }
        Acc::Avg(s, n) => {
            let v = match v {
                Datum::Int(i) => Datum::Decimal(i.into()),
                other => other,
            };
            *s = Some(match s.take() {
                None => v,
                Some(cur) => binary(BinOp::Add, cur, v)?,
            });
            *n += 1;
        }
        Acc::MinMax(m) => {
            let better = match m {
                None => true,
                Some(cur) => {
                    let o = v.sort_cmp(cur);
                    if func == AggFunc::Min {
                        o.is_lt()
                    } else {
                        o.is_gt()
                    }
                }
            };
            if better {
                *m = Some(v);
            }
        }
        Acc::StringAgg(s) => {
            let sep = vals
                .first()
                .and_then(|d| d.to_pg_text())
                .unwrap_or_default();
            let text = v.to_pg_text().unwrap_or_default();
            *s = Some(match s.take() {
                None => text,
                Some(cur) => cur + &sep + &text,
            });
        }
        Acc::Bool(b) => {
            let x = v.truth()?.unwrap_or(false);
            *b = Some(match (*b, func) {
                (None, _) => x,
                (Some(c), AggFunc::BoolAnd) => c && x,
                (Some(c), _) => c || x,
            });
        }
    }
    Ok(())
}

fn finish(acc: Acc) -> Result<Datum> {
    Ok(match acc {
        Acc::Count(n) => Datum::Int(n),
        Acc::Sum(s) => s.unwrap_or(Datum::Null),
        Acc::Avg(None, _) => Datum::Null,
        Acc::Avg(Some(s), n) => match s {
            Datum::Decimal(d) => Datum::Decimal(crate::functions::decimal_avg(d, n)?),
            Datum::Float(f) => Datum::Float(f / n as f64),
            Datum::Interval(i) => Datum::Interval(crate::types::Interval {
                months: i.months / n as i32,
                days: i.days / n as i32,
                micros: i.micros / n,
            }),
            other => {
                return Err(Error::DatatypeMismatch(format!(
                    "cannot average {}",
                    other.natural_type()
                )))
            }
        },
        Acc::MinMax(m) => m.unwrap_or(Datum::Null),
        Acc::StringAgg(s) => s.map(Datum::String).unwrap_or(Datum::Null),
        Acc::Bool(b) => b.map(Datum::Bool).unwrap_or(Datum::Null),
    })
}
