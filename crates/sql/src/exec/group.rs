//! Operators that hold rows: aggregation (GROUP BY), DISTINCT, ORDER BY and set operations
//! (UNION, INTERSECT, EXCEPT). Each reserves what it keeps from the SQL memory budget as it
//! grows — a group's key and accumulators, a row waiting to be sorted, a key seen — and
//! fails with 53200 past it.

use std::collections::{HashMap, HashSet};

use crate::encoding::encode_key_datum;
use crate::error::{Error, Result};
use crate::expr::Expr;
use crate::memory::{row_bytes, Growth, Reservation};
use crate::plan::{AggFunc, Aggregate as AggregateCall, BoxFuture, Row, SetOp, SortKey};
use crate::types::Datum;

use super::{BoxSource, Exec, Source, BATCH_ROWS};

/// A row as a hashable key, with SQL equality for numbers (`1 = 1.0`).
#[derive(PartialEq, Eq, Hash, Clone)]
pub struct RowKey(Vec<u8>);

impl RowKey {
    /// The key of a row (or of some of its values).
    pub fn of(row: &[Datum]) -> RowKey {
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

    /// The heap the key occupies.
    pub fn bytes(&self) -> u64 {
        16 + self.0.capacity() as u64
    }
}

/// A set of keys seen, reserving each new key and the table's growth.
#[derive(Default)]
struct Seen {
    keys: HashSet<RowKey>,
    table: Growth,
}

impl Seen {
    /// Adds `k`; whether it was new.
    fn insert(&mut self, k: RowKey, mem: &mut Reservation) -> Result<bool> {
        let bytes = k.bytes();
        if !self.keys.insert(k) {
            return Ok(false);
        }
        mem.grow(bytes)?;
        self.table.table::<RowKey>(self.keys.capacity(), mem)?;
        Ok(true)
    }
}

/// Results computed in full, turned into rows and handed out a batch at a time (turned as
/// they go, so no second copy of them all is ever made).
struct Finished<T> {
    items: std::vec::IntoIter<T>,
    into_row: fn(T) -> Result<Row>,
}

impl<T> Finished<T> {
    fn next_batch(&mut self) -> Result<Option<Vec<Row>>> {
        let batch = self
            .items
            .by_ref()
            .take(BATCH_ROWS)
            .map(self.into_row)
            .collect::<Result<Vec<Row>>>()?;
        Ok((!batch.is_empty()).then_some(batch))
    }
}

/// One group's state as it is kept during aggregation.
type Group = (Row, Vec<Acc>, Vec<Seen>);

/// A finished group's row: its keys, then each aggregate's value.
fn group_row((mut key, accs, _): Group) -> Result<Row> {
    for acc in accs {
        key.push(finish(acc)?);
    }
    Ok(key)
}

/// GROUP BY and aggregates: the group keys, then one value per aggregate, per group.
pub struct Aggregate {
    input: BoxSource,
    group_by: Vec<Expr>,
    aggs: Vec<AggregateCall>,
    out: Option<Finished<Group>>,
    mem: Reservation,
}

impl Aggregate {
    /// Groups `input` by `group_by`, computing `aggs`.
    pub fn new(
        input: BoxSource,
        group_by: Vec<Expr>,
        aggs: Vec<AggregateCall>,
        mem: Reservation,
    ) -> Self {
        Aggregate {
            input,
            group_by,
            aggs,
            out: None,
            mem,
        }
    }

    async fn run(&mut self, cx: &mut Exec<'_>) -> Result<Vec<Group>> {
        let mut groups: HashMap<RowKey, usize> = HashMap::new();
        let mut states: Vec<Group> = Vec::new();
        let (mut groups_table, mut states_buffer) = (Growth::default(), Growth::default());
        let aggs = &self.aggs;
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
        // Each group's accumulators and DISTINCT sets are allocations of their own.
        let group_bytes =
            32 + ((std::mem::size_of::<Acc>() + std::mem::size_of::<Seen>()) * aggs.len()) as u64;
        while let Some(batch) = self.input.next(cx).await? {
            cx.tick().await?;
            for row in &batch {
                let mut key = Vec::with_capacity(self.group_by.len() + aggs.len());
                for e in &self.group_by {
                    key.push(e.eval(row)?);
                }
                let hashed = RowKey::of(&key);
                let idx = match groups.get(&hashed) {
                    Some(&i) => i,
                    None => {
                        self.mem
                            .grow(row_bytes(&key) + hashed.bytes() + group_bytes)?;
                        let seen = (0..aggs.len()).map(|_| Seen::default()).collect();
                        states.push((key, fresh(), seen));
                        groups.insert(hashed, states.len() - 1);
                        groups_table.table::<(RowKey, usize)>(groups.capacity(), &mut self.mem)?;
                        states_buffer.vec(&states, &mut self.mem)?;
                        states.len() - 1
                    }
                };
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
                    if a.distinct && !distinct[i].insert(RowKey::of(&vals[..1]), &mut self.mem)? {
                        continue;
                    }
                    let grown = accumulate(&mut accs[i], a.func, vals)?;
                    self.mem.grow(grown)?;
                }
            }
        }
        if states.is_empty() && self.group_by.is_empty() {
            states.push((Vec::new(), fresh(), Vec::new()));
        }
        Ok(states)
    }
}

impl Source for Aggregate {
    fn next<'a>(&'a mut self, cx: &'a mut Exec<'_>) -> BoxFuture<'a, Result<Option<Vec<Row>>>> {
        crate::stack::deep(async move {
            if self.out.is_none() {
                let groups = self.run(cx).await?;
                self.out = Some(Finished {
                    items: groups.into_iter(),
                    into_row: group_row,
                });
            }
            match self.out.as_mut() {
                Some(out) => out.next_batch(),
                None => Ok(None),
            }
        })
    }
}

/// ORDER BY: every row, sorted by its keys.
pub struct Sort {
    input: BoxSource,
    keys: Vec<SortKey>,
    out: Option<Finished<(Row, Row)>>,
    mem: Reservation,
}

impl Sort {
    /// Sorts `input` by `keys`.
    pub fn new(input: BoxSource, keys: Vec<SortKey>, mem: Reservation) -> Self {
        Sort {
            input,
            keys,
            out: None,
            mem,
        }
    }

    async fn run(&mut self, cx: &mut Exec<'_>) -> Result<Vec<(Row, Row)>> {
        let mut keyed = Vec::new();
        let mut growth = Growth::default();
        while let Some(batch) = self.input.next(cx).await? {
            for r in batch {
                let mut k = Vec::with_capacity(self.keys.len());
                for s in &self.keys {
                    k.push(s.expr.eval(&r)?);
                }
                self.mem.grow(row_bytes(&r) + row_bytes(&k))?;
                keyed.push((k, r));
            }
            growth.vec(&keyed, &mut self.mem)?;
        }
        cx.tick().await?;
        let keys = &self.keys;
        // In place: SQL does not ask for a stable sort, and a merge sort's buffer would need
        // half the rows' size again.
        keyed.sort_unstable_by(|(a, _), (b, _)| {
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
        Ok(keyed)
    }
}

impl Source for Sort {
    fn next<'a>(&'a mut self, cx: &'a mut Exec<'_>) -> BoxFuture<'a, Result<Option<Vec<Row>>>> {
        crate::stack::deep(async move {
            if self.out.is_none() {
                let sorted = self.run(cx).await?;
                self.out = Some(Finished {
                    items: sorted.into_iter(),
                    into_row: |(_, row)| Ok(row),
                });
            }
            match self.out.as_mut() {
                Some(out) => out.next_batch(),
                None => Ok(None),
            }
        })
    }
}

/// DISTINCT: each row the first time it appears.
pub struct Distinct {
    input: BoxSource,
    seen: Seen,
    mem: Reservation,
}

impl Distinct {
    /// The distinct rows of `input`.
    pub fn new(input: BoxSource, mem: Reservation) -> Self {
        Distinct {
            input,
            seen: Seen::default(),
            mem,
        }
    }
}

/// Keeps the rows of `batch` whose key `seen` did not have, adding their keys.
fn first_seen(batch: Vec<Row>, seen: &mut Seen, mem: &mut Reservation) -> Result<Vec<Row>> {
    let mut out = Vec::with_capacity(batch.len());
    for r in batch {
        if seen.insert(RowKey::of(&r), mem)? {
            out.push(r);
        }
    }
    Ok(out)
}

impl Source for Distinct {
    fn next<'a>(&'a mut self, cx: &'a mut Exec<'_>) -> BoxFuture<'a, Result<Option<Vec<Row>>>> {
        crate::stack::deep(async move {
            while let Some(batch) = self.input.next(cx).await? {
                let out = first_seen(batch, &mut self.seen, &mut self.mem)?;
                if !out.is_empty() {
                    return Ok(Some(out));
                }
            }
            Ok(None)
        })
    }
}

/// UNION, INTERSECT, EXCEPT (with or without ALL). UNION streams both inputs; INTERSECT and
/// EXCEPT count the right rows first, then stream the left ones past the counts.
pub struct SetOperation {
    left: BoxSource,
    right: Option<BoxSource>,
    op: SetOp,
    all: bool,
    left_done: bool,
    /// Right rows by key, with how many are left to match (INTERSECT, EXCEPT).
    counts: HashMap<RowKey, usize>,
    counts_table: Growth,
    /// Keys already returned (without ALL).
    seen: Seen,
    mem: Reservation,
}

impl SetOperation {
    /// `left op right`.
    pub fn new(left: BoxSource, right: BoxSource, op: SetOp, all: bool, mem: Reservation) -> Self {
        SetOperation {
            left,
            right: Some(right),
            op,
            all,
            left_done: false,
            counts: HashMap::new(),
            counts_table: Growth::default(),
            seen: Seen::default(),
            mem,
        }
    }

    /// Keeps the left rows of `batch` that INTERSECT / EXCEPT keep.
    fn filter_left(&mut self, batch: Vec<Row>) -> Result<Vec<Row>> {
        let mut out = Vec::with_capacity(batch.len());
        for r in batch {
            let k = RowKey::of(&r);
            let c = self.counts.get_mut(&k);
            let present = c.as_ref().is_some_and(|c| **c > 0);
            let keep = (self.op == SetOp::Intersect) == present;
            if self.all {
                if keep {
                    out.push(r);
                }
                if present {
                    if let Some(c) = c {
                        *c -= 1;
                    }
                }
            } else if keep && self.seen.insert(k, &mut self.mem)? {
                out.push(r);
            }
        }
        Ok(out)
    }
}

impl Source for SetOperation {
    fn next<'a>(&'a mut self, cx: &'a mut Exec<'_>) -> BoxFuture<'a, Result<Option<Vec<Row>>>> {
        crate::stack::deep(async move {
            if self.op == SetOp::Union {
                loop {
                    let batch = if !self.left_done {
                        match self.left.next(cx).await? {
                            Some(b) => b,
                            None => {
                                self.left_done = true;
                                continue;
                            }
                        }
                    } else {
                        let Some(right) = self.right.as_mut() else {
                            return Ok(None);
                        };
                        match right.next(cx).await? {
                            Some(b) => b,
                            None => return Ok(None),
                        }
                    };
                    let out = if self.all {
                        batch
                    } else {
                        first_seen(batch, &mut self.seen, &mut self.mem)?
                    };
                    if !out.is_empty() {
                        return Ok(Some(out));
                    }
                }
            }
            if let Some(mut right) = self.right.take() {
                while let Some(batch) = right.next(cx).await? {
                    for r in batch {
                        let k = RowKey::of(&r);
                        match self.counts.get_mut(&k) {
                            Some(n) => *n += 1,
                            None => {
                                self.mem.grow(k.bytes())?;
                                self.counts.insert(k, 1);
                                self.counts_table.table::<(RowKey, usize)>(
                                    self.counts.capacity(),
                                    &mut self.mem,
                                )?;
                            }
                        }
                    }
                }
            }
            while let Some(batch) = self.left.next(cx).await? {
                let out = self.filter_left(batch)?;
                if !out.is_empty() {
                    return Ok(Some(out));
                }
            }
            Ok(None)
        })
    }
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

/// Adds one value to an aggregate's state; returns the bytes the state grew by.
fn accumulate(acc: &mut Acc, func: AggFunc, mut vals: Vec<Datum>) -> Result<u64> {
    use crate::expr::{binary, BinOp};
    let v = if vals.is_empty() {
        Datum::Null
    } else {
        vals.swap_remove(0)
    };
    match acc {
        Acc::Count(n) => {
            *n = n
                .checked_add(1)
                .ok_or_else(|| Error::NumericOutOfRange("count out of range".into()))?
        }
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
            let before = s.as_ref().map_or(0, String::capacity);
            *s = Some(match s.take() {
                None => text,
                Some(cur) => cur + &sep + &text,
            });
            let after = s.as_ref().map_or(0, String::capacity);
            return Ok(after.saturating_sub(before) as u64);
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
    Ok(0)
}

fn finish(acc: Acc) -> Result<Datum> {
    Ok(match acc {
        Acc::Count(n) => Datum::Int(n),
        Acc::Sum(s) => s.unwrap_or(Datum::Null),
        Acc::Avg(None, _) => Datum::Null,
        Acc::Avg(Some(s), n) => match s {
            Datum::Decimal(d) => Datum::Decimal(crate::functions::decimal_avg(d, n)?),
            Datum::Float(f) => Datum::Float(f / n as f64),
            Datum::Interval(i) => Datum::Interval(interval_avg(i, n)?),
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

/// An interval sum divided by a count, as Postgres divides intervals: the remainder of the
/// months carries into days (30 a month), the days' into microseconds, in wide integers (a
/// count past 2^31 must not wrap).
fn interval_avg(sum: crate::types::Interval, n: i64) -> Result<crate::types::Interval> {
    const DAY_US: i128 = 86_400_000_000;
    let n = i128::from(n.max(1));
    let months = i128::from(sum.months);
    let days = i128::from(sum.days) + (months % n) * 30;
    let micros = i128::from(sum.micros) + (days % n) * DAY_US;
    let overflow = || Error::DatetimeOverflow("interval out of range".into());
    Ok(crate::types::Interval {
        months: i32::try_from(months / n).map_err(|_| overflow())?,
        days: i32::try_from(days / n).map_err(|_| overflow())?,
        micros: i64::try_from(micros / n).map_err(|_| overflow())?,
    })
}
