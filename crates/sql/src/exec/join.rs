//! Joins. Both kinds build a table of right-hand rows in memory (reserved from the budget)
//! and stream the left-hand rows past it:
//!
//! - [`HashJoin`] reads its whole right input first (hashed on the equality keys when the
//!   join has some; every pair is tried otherwise, a nested loop), then probes with each left
//!   row; a right or full join emits the right rows nothing matched at the end;
//! - [`LookupJoin`] takes the left rows a chunk at a time and reads only the right table's
//!   rows those left rows name (point reads of primary keys, or spans of an index), then
//!   joins the chunk against them.
//!
//! Output is produced a batch at a time, resuming mid-row: one left row of a cross join with
//! a million right rows yields its million rows over a thousand batches, never all at once.

use std::collections::HashMap;

use crate::catalog::TableDesc;
use crate::encoding::encode_key_datum;
use crate::error::{Error, Result};
use crate::expr::Expr;
use crate::memory::{Growth, Reservation};
use crate::plan::{BoxFuture, JoinKind, Lookup, Row, LOOKUP_JOIN_MAX_ROWS};
use crate::types::{Datum, Type};

use super::group::RowKey;
use super::scan::scan_table;
use super::{read_rows, BoxSource, Exec, Source, BATCH_ROWS};

/// What a join computes.
pub struct JoinSpec {
    /// Which rows without a match are kept.
    pub kind: JoinKind,
    /// The join condition on the concatenated row.
    pub on: Option<Expr>,
    /// Equal-key pairs (left expression, right expression on the right row alone).
    pub equi: Vec<(Expr, Expr)>,
    /// Width of the left row.
    pub left_width: usize,
    /// Width of the right row.
    pub right_width: usize,
}

/// The right-hand rows, hashed on their equality keys when there are some.
struct Build {
    rows: Vec<Row>,
    index: Option<HashMap<RowKey, Vec<usize>>>,
    /// Which right rows found a match (right and full joins).
    matched: Vec<bool>,
}

/// The heap a key's position list takes (an allocation holding a few positions).
const POSITIONS_BYTES: u64 = 48;

impl Build {
    /// Indexes `rows` (already reserved by the caller) on the join's equality keys.
    fn new(rows: Vec<Row>, spec: &JoinSpec, mem: &mut Reservation) -> Result<Build> {
        let index = if spec.equi.is_empty() {
            None
        } else {
            let mut m: HashMap<RowKey, Vec<usize>> = HashMap::new();
            let mut table = Growth::default();
            for (i, r) in rows.iter().enumerate() {
                let k = spec
                    .equi
                    .iter()
                    .map(|(_, e)| e.eval(r))
                    .collect::<Result<Vec<_>>>()?;
                if k.iter().any(Datum::is_null) {
                    continue;
                }
                let key = RowKey::of(&k);
                match m.get_mut(&key) {
                    Some(positions) => {
                        mem.grow(std::mem::size_of::<usize>() as u64)?;
                        positions.push(i);
                    }
                    None => {
                        mem.grow(key.bytes() + POSITIONS_BYTES)?;
                        m.insert(key, vec![i]);
                        table.table::<(RowKey, Vec<usize>)>(m.capacity(), mem)?;
                    }
                }
            }
            Some(m)
        };
        mem.grow(rows.len() as u64)?;
        Ok(Build {
            matched: vec![false; rows.len()],
            rows,
            index,
        })
    }
}

/// Where the probe stands in the current chunk of left rows.
#[derive(Default)]
struct Probe {
    left: Vec<Row>,
    /// The left row being joined.
    li: usize,
    /// Its hash key once computed: `Some(None)` for a key with a NULL, which matches nothing
    /// (and for a join without equality keys, where every right row is a candidate).
    key: Option<Option<RowKey>>,
    /// The next candidate of that row to try.
    ci: usize,
    /// Whether that row matched anything so far.
    matched: bool,
}

impl Probe {
    fn new(left: Vec<Row>) -> Self {
        Probe {
            left,
            ..Default::default()
        }
    }

    /// Adds joined rows to `out` until it holds a batch or the chunk is done (`true`).
    fn emit(&mut self, build: &mut Build, spec: &JoinSpec, out: &mut Vec<Row>) -> Result<bool> {
        while self.li < self.left.len() {
            let l = &self.left[self.li];
            if self.key.is_none() {
                self.key = Some(if spec.equi.is_empty() {
                    None
                } else {
                    let vals = spec
                        .equi
                        .iter()
                        .map(|(e, _)| e.eval(l))
                        .collect::<Result<Vec<_>>>()?;
                    (!vals.iter().any(Datum::is_null)).then(|| RowKey::of(&vals))
                });
            }
            let candidates: &[usize] =
                match (&build.index, self.key.as_ref().and_then(Option::as_ref)) {
                    (Some(index), Some(k)) => index.get(k).map(Vec::as_slice).unwrap_or(&[]),
                    _ => &[],
                };
            let all = build.index.is_none();
            let count = if all {
                build.rows.len()
            } else {
                candidates.len()
            };
            while self.ci < count {
                if out.len() >= BATCH_ROWS {
                    return Ok(false);
                }
                let ri = if all { self.ci } else { candidates[self.ci] };
                self.ci += 1;
                let mut row = Vec::with_capacity(spec.left_width + spec.right_width);
                row.extend(l.iter().cloned());
                row.extend(build.rows[ri].iter().cloned());
                let pass = match &spec.on {
                    None => true,
                    Some(f) => f.eval(&row)?.truth()? == Some(true),
                };
                if pass {
                    self.matched = true;
                    build.matched[ri] = true;
                    out.push(row);
                }
            }
            if out.len() >= BATCH_ROWS {
                return Ok(false);
            }
            if !self.matched && matches!(spec.kind, JoinKind::Left | JoinKind::Full) {
                let mut row = l.clone();
                row.extend(std::iter::repeat_n(Datum::Null, spec.right_width));
                out.push(row);
            }
            self.li += 1;
            self.ci = 0;
            self.key = None;
            self.matched = false;
        }
        Ok(true)
    }
}

/// A join that reads its whole right input, then streams the left one past it.
pub struct HashJoin {
    left: BoxSource,
    right: Option<BoxSource>,
    spec: JoinSpec,
    build: Option<Build>,
    probe: Probe,
    left_done: bool,
    /// Right rows without a match emitted so far (right and full joins, at the end).
    unmatched_at: usize,
    mem: Reservation,
}

impl HashJoin {
    /// A join of `left` and `right`.
    pub fn new(left: BoxSource, right: BoxSource, spec: JoinSpec, mem: Reservation) -> Self {
        HashJoin {
            left,
            right: Some(right),
            spec,
            build: None,
            probe: Probe::default(),
            left_done: false,
            unmatched_at: 0,
            mem,
        }
    }
}

impl Source for HashJoin {
    fn next<'a>(&'a mut self, cx: &'a mut Exec<'_>) -> BoxFuture<'a, Result<Option<Vec<Row>>>> {
        crate::stack::deep(async move {
            if let Some(mut right) = self.right.take() {
                let (rows, _) =
                    read_rows(right.as_mut(), cx, Some(&mut self.mem), usize::MAX).await?;
                self.build = Some(Build::new(rows, &self.spec, &mut self.mem)?);
            }
            let Some(build) = self.build.as_mut() else {
                return Err(Error::Internal("join without a build side".into()));
            };
            let mut out = Vec::with_capacity(BATCH_ROWS);
            while !self.left_done {
                cx.tick().await?;
                if self.probe.emit(build, &self.spec, &mut out)? {
                    match self.left.next(cx).await? {
                        Some(batch) => self.probe = Probe::new(batch),
                        None => self.left_done = true,
                    }
                }
                if out.len() >= BATCH_ROWS {
                    return Ok(Some(out));
                }
            }
            if matches!(self.spec.kind, JoinKind::Right | JoinKind::Full) {
                while self.unmatched_at < build.rows.len() && out.len() < BATCH_ROWS {
                    let ri = self.unmatched_at;
                    self.unmatched_at += 1;
                    if !build.matched[ri] {
                        let mut row = vec![Datum::Null; self.spec.left_width];
                        row.extend(build.rows[ri].iter().cloned());
                        out.push(row);
                    }
                }
            }
            Ok((!out.is_empty()).then_some(out))
        })
    }
}

/// An inner or left join that reads only the right table's rows the left rows name.
pub struct LookupJoin {
    left: BoxSource,
    table: TableDesc,
    index: u32,
    keys: Vec<Expr>,
    filter: Option<Expr>,
    spec: JoinSpec,
    /// The chunk being joined and the right rows read for it.
    chunk: Option<(Probe, Build)>,
    left_done: bool,
    mem: Reservation,
}

impl LookupJoin {
    /// A lookup join of `left` with the rows of `table` whose `index` key columns equal the
    /// left row's `keys` values.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        left: BoxSource,
        table: TableDesc,
        index: u32,
        keys: Vec<Expr>,
        filter: Option<Expr>,
        spec: JoinSpec,
        mem: Reservation,
    ) -> Self {
        LookupJoin {
            left,
            table,
            index,
            keys,
            filter,
            spec,
            chunk: None,
            left_done: false,
            mem,
        }
    }

    /// Pulls the next chunk of left rows (up to [`LOOKUP_JOIN_MAX_ROWS`]) and reads the right
    /// rows they name; `false` when the left input is done.
    async fn next_chunk(&mut self, cx: &mut Exec<'_>) -> Result<bool> {
        self.chunk = None;
        self.mem.clear();
        let (left, ended) = read_rows(
            self.left.as_mut(),
            cx,
            Some(&mut self.mem),
            LOOKUP_JOIN_MAX_ROWS,
        )
        .await?;
        self.left_done = ended;
        if left.is_empty() {
            return Ok(false);
        }
        let lookup = join_lookup(&self.table, self.index, &self.keys, &left)?;
        // The rows read are reserved in the statement's memory (`scan_table`) until it ends;
        // give that back as each chunk is done, holding them here instead.
        let right: Vec<Row> = match &lookup {
            Lookup::Primary(k) if k.is_empty() => Vec::new(),
            _ => {
                let before = cx.held.bytes();
                let pairs = scan_table(cx, &self.table, Some(&lookup), &self.filter, None).await?;
                let read = cx.held.bytes() - before;
                self.mem.grow(read)?;
                cx.held.shrink(read);
                pairs.into_iter().map(|(_, r)| r).collect()
            }
        };
        let build = Build::new(right, &self.spec, &mut self.mem)?;
        self.chunk = Some((Probe::new(left), build));
        Ok(true)
    }
}

impl Source for LookupJoin {
    fn next<'a>(&'a mut self, cx: &'a mut Exec<'_>) -> BoxFuture<'a, Result<Option<Vec<Row>>>> {
        crate::stack::deep(async move {
            let mut out = Vec::with_capacity(BATCH_ROWS);
            loop {
                cx.tick().await?;
                let done = match self.chunk.as_mut() {
                    Some((probe, build)) => probe.emit(build, &self.spec, &mut out)?,
                    None => true,
                };
                if out.len() >= BATCH_ROWS {
                    return Ok(Some(out));
                }
                if done && (self.left_done || !self.next_chunk(cx).await?) {
                    self.chunk = None;
                    return Ok((!out.is_empty()).then_some(out));
                }
            }
        })
    }
}

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
