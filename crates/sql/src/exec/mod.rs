//! The executor: a plan ([`Node`] tree) runs as a tree of [`Source`]s, each pulled for a
//! batch of rows at a time.
//!
//! A source produces its rows as its parent asks for them: a scan reads a page of keys from
//! KV per batch, a filter or a projection passes each batch on, a limit stops pulling once it
//! has its rows. Rows are held only where the operation needs them all — a sort, an
//! aggregation, a hash join's build side, DISTINCT's and set operations' seen sets — and
//! what is held is reserved from the node's SQL memory budget first ([`crate::memory`]), so
//! a statement that would need more fails with 53200 instead of taking the node down. A
//! full table scan streams to the client in constant memory.
//!
//! Every batch also checks the statement's [`Interrupt`] ([`Exec::tick`]): a cancel request or
//! a `statement_timeout` stops even a statement that never waits on the network (a cross join
//! computed in memory), as Postgres's `CHECK_FOR_INTERRUPTS` does; and it gives the worker
//! thread back to the runtime now and then, so such a statement does not starve the node's
//! other tasks.
//!
//! Files: `scan.rs` (tables, index lookups, generate_series), `join.rs` (hash, nested-loop and
//! lookup joins), `group.rs` (aggregation, DISTINCT, sort, set operations). This file holds
//! the context, the simple operators and correlated subqueries.

mod group;
mod join;
mod scan;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bini_txn::Txn;

use crate::error::{Error, Result};
use crate::expr::{Expr, SubqueryKind};
use crate::memory::{row_bytes, Growth, Reservation};
use crate::plan::{BoxFuture, Node, Row};
use crate::types::Datum;

pub use scan::scan_table;

/// Rows a source returns per batch (at most; a filter may return fewer).
pub const BATCH_ROWS: usize = 1024;

/// What a running plan works with.
pub struct Exec<'t> {
    /// The statement's transaction.
    pub txn: &'t mut Txn,
    /// What the statement holds until it ends (materialized subqueries and CTEs); operators
    /// take reservations of their own beside it.
    pub held: &'t mut Reservation,
    /// The statement's cancel flag and deadline.
    pub interrupt: &'t Interrupt,
}

impl Exec<'_> {
    /// Called once per batch: lets other tasks of the node run (a statement computing in
    /// memory never waits, and would otherwise keep its worker thread, and the cancel request
    /// meant for it, waiting), then fails if the statement should stop.
    pub async fn tick(&self) -> Result<()> {
        tokio::task::consume_budget().await;
        self.interrupt.check()
    }
}

/// Why a running statement should stop: a cancel request, or its deadline.
#[derive(Clone, Debug, Default)]
pub struct Interrupt {
    canceled: Arc<AtomicBool>,
    deadline: Option<Instant>,
}

impl Interrupt {
    /// An interrupt raised by `canceled` or at `deadline`.
    pub fn new(canceled: Arc<AtomicBool>, deadline: Option<Instant>) -> Self {
        Interrupt { canceled, deadline }
    }

    /// Fails when the statement should stop.
    pub fn check(&self) -> Result<()> {
        if self.canceled.load(Ordering::Relaxed) {
            return Err(Error::Canceled);
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::StatementTimeout);
        }
        Ok(())
    }
}

/// A running operator.
pub trait Source: Send {
    /// The next batch of rows (never empty), or `None` when the source is done.
    fn next<'a>(&'a mut self, cx: &'a mut Exec<'_>) -> BoxFuture<'a, Result<Option<Vec<Row>>>>;
}

/// A boxed source.
pub type BoxSource = Box<dyn Source>;

/// Turns a plan into its running operators.
pub fn build(node: Node, mem: &Reservation) -> Result<BoxSource> {
    crate::stack::grow(|| {
        Ok::<BoxSource, Error>(match node {
            Node::Scan {
                table,
                keys,
                filter,
                limit,
            } => Box::new(scan::Scan::new(*table, keys, filter, limit)),
            Node::Values { rows } => Box::new(Values { rows: Some(rows) }),
            Node::Rows { rows } => Box::new(Rows {
                rows: rows.into_iter(),
            }),
            Node::Series { args } => Box::new(scan::Series::new(args)),
            Node::Filter { input, predicate } => Box::new(Filter {
                input: build(*input, mem)?,
                correlated: predicate.has_subquery(),
                predicate,
            }),
            Node::Project { input, exprs } => Box::new(Project {
                input: build(*input, mem)?,
                correlated: exprs.iter().any(Expr::has_subquery),
                exprs,
            }),
            Node::Limit {
                input,
                limit,
                offset,
            } => Box::new(Limit {
                input: build(*input, mem)?,
                skip: offset,
                left: limit.unwrap_or(usize::MAX),
            }),
            Node::Aggregate {
                input,
                group_by,
                aggs,
            } => Box::new(group::Aggregate::new(
                build(*input, mem)?,
                group_by,
                aggs,
                mem.sibling(),
            )),
            Node::Sort { input, keys } => {
                Box::new(group::Sort::new(build(*input, mem)?, keys, mem.sibling()))
            }
            Node::Distinct { input } => {
                Box::new(group::Distinct::new(build(*input, mem)?, mem.sibling()))
            }
            Node::SetOp {
                left,
                right,
                op,
                all,
            } => Box::new(group::SetOperation::new(
                build(*left, mem)?,
                build(*right, mem)?,
                op,
                all,
                mem.sibling(),
            )),
            Node::Join {
                left,
                right,
                kind,
                on,
                equi,
                left_width,
                right_width,
            } => Box::new(join::HashJoin::new(
                build(*left, mem)?,
                build(*right, mem)?,
                join::JoinSpec {
                    kind,
                    on,
                    equi,
                    left_width,
                    right_width,
                },
                mem.sibling(),
            )),
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
            } => Box::new(join::LookupJoin::new(
                build(*left, mem)?,
                *table,
                index,
                keys,
                filter,
                join::JoinSpec {
                    kind,
                    on,
                    equi,
                    left_width,
                    right_width,
                },
                mem.sibling(),
            )),
        })
    })
}

/// Runs a plan to the end and returns its rows, reserved in the statement's `held` memory
/// until the statement ends (subqueries, CTEs, `INSERT … SELECT`).
pub fn collect<'a>(node: Node, cx: &'a mut Exec<'_>) -> BoxFuture<'a, Result<Vec<Row>>> {
    crate::stack::deep(async move {
        let mut source = build(node, cx.held)?;
        let (rows, _) = read_rows(source.as_mut(), cx, None, usize::MAX).await?;
        Ok(rows)
    })
}

/// Reads `source` until it ends or `max` rows are in, reserving them (and the vector's
/// growth) in `mem`, or in the statement's own memory for `None`. Returns the rows and whether
/// the source ended.
pub(crate) async fn read_rows(
    source: &mut dyn Source,
    cx: &mut Exec<'_>,
    mut mem: Option<&mut Reservation>,
    max: usize,
) -> Result<(Vec<Row>, bool)> {
    let mut rows = Vec::new();
    let mut growth = Growth::default();
    while rows.len() < max {
        let Some(batch) = source.next(cx).await? else {
            return Ok((rows, true));
        };
        let m = match mem.as_deref_mut() {
            Some(m) => m,
            None => &mut *cx.held,
        };
        m.grow(batch.iter().map(row_bytes).sum())?;
        rows.extend(batch);
        growth.vec(&rows, m)?;
    }
    Ok((rows, false))
}

/// `VALUES` rows, evaluated as they are pulled.
struct Values {
    rows: Option<Vec<Vec<Expr>>>,
}

impl Source for Values {
    fn next<'a>(&'a mut self, cx: &'a mut Exec<'_>) -> BoxFuture<'a, Result<Option<Vec<Row>>>> {
        crate::stack::deep(async move {
            cx.tick().await?;
            let Some(rows) = self.rows.as_mut().filter(|r| !r.is_empty()) else {
                return Ok(None);
            };
            let take = rows.len().min(BATCH_ROWS);
            let out = rows
                .drain(..take)
                .map(|r| r.iter().map(|e| e.eval(&[])).collect::<Result<Row>>())
                .collect::<Result<Vec<Row>>>()?;
            Ok(Some(out))
        })
    }
}

/// Rows computed before the query ran (a CTE's, a virtual table's).
struct Rows {
    rows: std::vec::IntoIter<Row>,
}

impl Source for Rows {
    fn next<'a>(&'a mut self, cx: &'a mut Exec<'_>) -> BoxFuture<'a, Result<Option<Vec<Row>>>> {
        crate::stack::deep(async move {
            cx.tick().await?;
            let batch: Vec<Row> = self.rows.by_ref().take(BATCH_ROWS).collect();
            Ok((!batch.is_empty()).then_some(batch))
        })
    }
}

/// Rows for which the predicate is true.
struct Filter {
    input: BoxSource,
    predicate: Expr,
    correlated: bool,
}

impl Source for Filter {
    fn next<'a>(&'a mut self, cx: &'a mut Exec<'_>) -> BoxFuture<'a, Result<Option<Vec<Row>>>> {
        crate::stack::deep(async move {
            loop {
                let Some(batch) = self.input.next(cx).await? else {
                    return Ok(None);
                };
                let mut out = Vec::with_capacity(batch.len());
                for r in batch {
                    let pass = if self.correlated {
                        resolve_subqueries(&self.predicate, &r, cx)
                            .await?
                            .eval(&r)?
                    } else {
                        self.predicate.eval(&r)?
                    };
                    if pass.truth()? == Some(true) {
                        out.push(r);
                    }
                }
                if !out.is_empty() {
                    return Ok(Some(out));
                }
            }
        })
    }
}

/// New columns computed from each row.
struct Project {
    input: BoxSource,
    exprs: Vec<Expr>,
    correlated: bool,
}

impl Source for Project {
    fn next<'a>(&'a mut self, cx: &'a mut Exec<'_>) -> BoxFuture<'a, Result<Option<Vec<Row>>>> {
        crate::stack::deep(async move {
            let Some(batch) = self.input.next(cx).await? else {
                return Ok(None);
            };
            let mut out = Vec::with_capacity(batch.len());
            for r in &batch {
                let mut row = Vec::with_capacity(self.exprs.len());
                for e in &self.exprs {
                    row.push(if self.correlated {
                        resolve_subqueries(e, r, cx).await?.eval(r)?
                    } else {
                        e.eval(r)?
                    });
                }
                out.push(row);
            }
            Ok(Some(out))
        })
    }
}

/// OFFSET and LIMIT: stops pulling its input once it has its rows.
struct Limit {
    input: BoxSource,
    skip: usize,
    left: usize,
}

impl Source for Limit {
    fn next<'a>(&'a mut self, cx: &'a mut Exec<'_>) -> BoxFuture<'a, Result<Option<Vec<Row>>>> {
        crate::stack::deep(async move {
            while self.left > 0 {
                let Some(mut batch) = self.input.next(cx).await? else {
                    return Ok(None);
                };
                let skipped = self.skip.min(batch.len());
                batch.drain(..skipped);
                self.skip -= skipped;
                batch.truncate(self.left);
                self.left -= batch.len();
                if !batch.is_empty() {
                    return Ok(Some(batch));
                }
            }
            Ok(None)
        })
    }
}

/// `e` with each correlated subquery in it run for `row` (its outer references taking the
/// row's values) and replaced by its result.
pub fn resolve_subqueries<'a>(
    e: &'a Expr,
    row: &'a [Datum],
    cx: &'a mut Exec<'_>,
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
            let mut source = build(node, cx.held)?;
            values.push(subquery_value(&sub.kind, source.as_mut(), row, cx).await?);
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

/// The value of a subquery of `kind` whose rows `source` produces, evaluated on the enclosing
/// `row`. It reads only what the value needs: one row for EXISTS, two for a scalar.
async fn subquery_value(
    kind: &SubqueryKind,
    source: &mut dyn Source,
    row: &[Datum],
    cx: &mut Exec<'_>,
) -> Result<Datum> {
    let first_column = |r: Row| r.into_iter().next().unwrap_or(Datum::Null);
    Ok(match kind {
        SubqueryKind::Scalar => {
            let mut found = None;
            while let Some(batch) = source.next(cx).await? {
                for r in batch {
                    if found.is_some() {
                        return Err(Error::CardinalityViolation);
                    }
                    found = Some(first_column(r));
                }
            }
            found.unwrap_or(Datum::Null)
        }
        SubqueryKind::Exists { negated } => {
            let any = source.next(cx).await?.is_some();
            Datum::Bool(any != *negated)
        }
        SubqueryKind::In { expr, negated } => {
            let mut list = Vec::new();
            let (mut mem, mut growth) = (cx.held.sibling(), Growth::default());
            while let Some(batch) = source.next(cx).await? {
                mem.grow(batch.iter().map(row_bytes).sum())?;
                list.extend(batch.into_iter().map(|r| Expr::Literal(first_column(r))));
                growth.vec(&list, &mut mem)?;
            }
            Expr::InList(Box::new((**expr).clone()), list, *negated).eval(row)?
        }
        SubqueryKind::Array => {
            let mut values = Vec::new();
            let (mut mem, mut growth) = (cx.held.sibling(), Growth::default());
            while let Some(batch) = source.next(cx).await? {
                mem.grow(batch.iter().map(row_bytes).sum())?;
                values.extend(batch.into_iter().map(first_column));
                growth.vec(&values, &mut mem)?;
            }
            Datum::String(crate::functions::array_literal(values.into_iter()))
        }
    })
}
