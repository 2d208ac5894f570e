//! Reading tables: the rows of spans of the primary index (a page of keys per KV request),
//! of a list of primary keys (a batch of point reads per request), or of the entries a
//! secondary index lists under its spans (read a page at a time, then the rows they name);
//! and `generate_series`, computed as it is pulled.

use std::collections::VecDeque;

use crate::catalog::TableDesc;
use crate::encoding::encode_key_datum;
use crate::error::{Error, Result};
use crate::expr::Expr;
use crate::memory::{row_bytes, Growth};
use crate::plan::{decode_table_row, BoxFuture, Lookup, Row, Span};
use crate::types::{Datum, Type};

use super::{Exec, Source, BATCH_ROWS};

/// What is left to read of a scan.
enum Reading {
    /// Spans of the primary index, in order; the first is read from `resume` on.
    Spans {
        spans: VecDeque<Span>,
        resume: Option<Vec<u8>>,
    },
    /// Primary keys to read, from `next` on.
    Keys {
        keys: Vec<Vec<u8>>,
        next: usize,
    },
    /// Spans of a secondary index whose entries name the rows.
    Index {
        spans: VecDeque<Span>,
        resume: Option<Vec<u8>>,
    },
    Done,
}

/// The rows of a table (all, the given primary keys, or those under spans of an index),
/// through a filter, up to a limit.
pub struct Scan {
    table: TableDesc,
    filter: Option<Expr>,
    /// Rows still wanted.
    left: usize,
    reading: Reading,
}

impl Scan {
    /// A scan of `table`, narrowed by `keys`.
    pub fn new(
        table: TableDesc,
        keys: Option<Lookup>,
        filter: Option<Expr>,
        limit: Option<usize>,
    ) -> Self {
        let reading = match keys {
            None => Reading::Spans {
                spans: VecDeque::from([table.primary_span()]),
                resume: None,
            },
            Some(Lookup::Primary(keys)) => Reading::Keys { keys, next: 0 },
            Some(Lookup::Spans { index, spans }) if index == table.primary.id => Reading::Spans {
                spans: spans.into(),
                resume: None,
            },
            Some(Lookup::Spans { spans, .. }) => Reading::Index {
                spans: spans.into(),
                resume: None,
            },
        };
        Scan {
            table,
            filter,
            left: limit.unwrap_or(usize::MAX),
            reading,
        }
    }

    /// The next batch of (primary key, row) pairs that pass the filter, or `None` at the end.
    pub async fn next_keyed(&mut self, cx: &mut Exec<'_>) -> Result<Option<Vec<(Vec<u8>, Row)>>> {
        while self.left > 0 {
            cx.tick().await?;
            let pairs = match &mut self.reading {
                Reading::Done => break,
                Reading::Spans { spans, resume } => {
                    let Some(kvs) = read_span_page(cx, spans, resume).await? else {
                        self.reading = Reading::Done;
                        continue;
                    };
                    kvs
                }
                Reading::Index { spans, resume } => {
                    let Some(entries) = read_span_page(cx, spans, resume).await? else {
                        self.reading = Reading::Done;
                        continue;
                    };
                    // Each entry's value is its row's primary key values. Spans are disjoint,
                    // so no row is named twice.
                    let mut keys = Vec::with_capacity(entries.len());
                    for (_, value) in entries {
                        let mut key =
                            crate::encoding::index_prefix(self.table.id, self.table.primary.id);
                        for d in &crate::encoding::decode_datums(&value)? {
                            encode_key_datum(d, &mut key)?;
                        }
                        keys.push(key);
                    }
                    fetch(cx, keys).await?
                }
                Reading::Keys { keys, next } => {
                    if *next >= keys.len() {
                        self.reading = Reading::Done;
                        continue;
                    }
                    let end = (*next + BATCH_ROWS).min(keys.len());
                    let chunk = keys[*next..end].to_vec();
                    *next = end;
                    fetch(cx, chunk).await?
                }
            };
            let mut out = Vec::with_capacity(pairs.len());
            for (key, value) in pairs {
                let row = decode_table_row(&self.table, &value)?;
                let pass = match &self.filter {
                    None => true,
                    Some(f) => f.eval(&row)?.truth()? == Some(true),
                };
                if pass {
                    out.push((key, row));
                    if out.len() >= self.left {
                        break;
                    }
                }
            }
            if !out.is_empty() {
                self.left -= out.len();
                return Ok(Some(out));
            }
        }
        Ok(None)
    }
}

impl Source for Scan {
    fn next<'a>(&'a mut self, cx: &'a mut Exec<'_>) -> BoxFuture<'a, Result<Option<Vec<Row>>>> {
        crate::stack::deep(async move {
            Ok(self
                .next_keyed(cx)
                .await?
                .map(|pairs| pairs.into_iter().map(|(_, r)| r).collect()))
        })
    }
}

/// Reads a page of keys and values from the first of `spans`, from `resume` on; moves to the
/// next span when one ends. `None` when every span is read.
async fn read_span_page(
    cx: &mut Exec<'_>,
    spans: &mut VecDeque<Span>,
    resume: &mut Option<Vec<u8>>,
) -> Result<Option<Vec<(Vec<u8>, Vec<u8>)>>> {
    while let Some((start, end)) = spans.front() {
        let from = resume.take().unwrap_or_else(|| start.clone());
        let page = cx.txn.scan(&from, end, BATCH_ROWS as u64).await?;
        if page.len() == BATCH_ROWS {
            let mut next = page.last().expect("a full page").key.clone();
            next.push(0);
            *resume = Some(next);
        } else {
            spans.pop_front();
        }
        if !page.is_empty() {
            return Ok(Some(
                page.into_iter().map(|kv| (kv.key, kv.value)).collect(),
            ));
        }
    }
    Ok(None)
}

/// The rows stored at `keys` (one batched request per range), absent ones left out.
async fn fetch(cx: &mut Exec<'_>, keys: Vec<Vec<u8>>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let values = cx.txn.get_many(&keys).await?;
    Ok(keys
        .into_iter()
        .zip(values)
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect())
}

/// Reads a table's rows with their primary keys (all, the given primary keys, or those under
/// spans of an index) through the filter: what UPDATE, DELETE and index backfills work on.
/// The rows are reserved in the statement's memory.
pub async fn scan_table(
    cx: &mut Exec<'_>,
    table: &TableDesc,
    keys: Option<&Lookup>,
    filter: &Option<Expr>,
    limit: Option<usize>,
) -> Result<Vec<(Vec<u8>, Row)>> {
    let mut scan = Scan::new(table.clone(), keys.cloned(), filter.clone(), limit);
    let mut out = Vec::new();
    let mut growth = Growth::default();
    while let Some(batch) = scan.next_keyed(cx).await? {
        let bytes: u64 = batch
            .iter()
            .map(|(k, r)| 16 + k.capacity() as u64 + row_bytes(r))
            .sum();
        cx.held.grow(bytes)?;
        out.extend(batch);
        growth.vec(&out, cx.held)?;
    }
    Ok(out)
}

/// `generate_series(start, stop[, step])`: integers, made as they are pulled (none when an
/// argument is NULL).
pub struct Series {
    args: Vec<Expr>,
    /// The next value and what remains, once the arguments are evaluated.
    state: Option<(i128, i128, i128)>,
}

impl Series {
    /// A series over `args`, evaluated when first pulled (they may name an outer row).
    pub fn new(args: Vec<Expr>) -> Self {
        Series { args, state: None }
    }

    fn start(&self) -> Result<(i128, i128, i128)> {
        let mut values = Vec::new();
        for a in &self.args {
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
        let (Some(start), Some(stop), Some(step)) = (start, stop, step) else {
            return Ok((0, 0, 1));
        };
        if step == 0 {
            return Err(Error::InvalidParameterValue(
                "step size cannot equal zero".into(),
            ));
        }
        let count = ((i128::from(stop) - i128::from(start)) / i128::from(step) + 1).max(0);
        Ok((i128::from(start), count, i128::from(step)))
    }
}

impl Source for Series {
    fn next<'a>(&'a mut self, cx: &'a mut Exec<'_>) -> BoxFuture<'a, Result<Option<Vec<Row>>>> {
        crate::stack::deep(async move {
            cx.tick().await?;
            let (next, left, step) = match self.state {
                Some(s) => s,
                None => self.start()?,
            };
            let n = left.min(BATCH_ROWS as i128);
            // Every value lies between start and stop, both i64.
            let batch: Vec<Row> = (0..n)
                .map(|i| vec![Datum::Int((next + i * step) as i64)])
                .collect();
            self.state = Some((next + n * step, left - n, step));
            Ok((!batch.is_empty()).then_some(batch))
        })
    }
}
