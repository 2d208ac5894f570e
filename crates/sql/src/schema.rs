//! Schema changes that fill an index from a table's rows: CREATE INDEX, ADD CONSTRAINT …
//! UNIQUE and ADD PRIMARY KEY.
//!
//! The statement's own transaction only records the new index in the table's descriptor, as a
//! [`Mutation`]. From the moment that commits every write to the table keeps the index up to
//! date, because every statement reads the table's descriptor in its own transaction. Then
//! [`complete`] walks the table's primary index a page at a time, each page in a transaction of
//! its own that reads the rows and writes their entries — so the table takes writes throughout
//! and no transaction grows with the table. Last, one transaction makes the index public (or
//! swaps in the new primary index and the secondary indexes rebuilt beside it), and the keys
//! of what was replaced are cleared, a page per transaction.
//!
//! A failed backfill (a duplicate key, a NULL in a new primary key column) takes the mutation
//! out again, clears what it wrote and reports the error. Inside an explicit transaction the
//! same steps run in that transaction, and its rollback undoes them.
//!
//! Left out for now: resuming a backfill whose node died. Its mutation stays in the descriptor
//! (writers keep the unfinished index up to date) and further schema changes of the table are
//! refused with SQLSTATE 55000.

use std::collections::HashSet;

use bini_txn::{Db, Txn};

use crate::catalog::{self, Mutation, TableDesc};
use crate::dml::{duplicate, mutation_entry};
use crate::encoding::{index_prefix, prefix_end};
use crate::error::{Error, Result};
use crate::plan::decode_table_row;
use crate::session::{retry_pause, settle};

/// Rows per backfill transaction (and keys per clearing transaction).
const PAGE: u64 = 1000;

/// Retries of one page on retryable errors.
const RETRIES: usize = 30;

/// Where the steps of a schema change run.
pub enum Mode<'a> {
    /// All in the statement's explicit transaction.
    Within(&'a mut Txn),
    /// Each in a transaction of its own.
    Own(&'a Db),
}

/// A span of keys, `[start, end)`.
type Span = (Vec<u8>, Vec<u8>);

/// One step of a schema change, run in one transaction.
#[derive(Clone, Copy)]
enum Step<'a> {
    /// Fill the mutations from a page of rows from this key on (the table's start if none).
    Backfill(Option<&'a [u8]>),
    /// Make the mutations public.
    Publish,
    /// Take the mutations out.
    Revert,
    /// Delete a page of keys of a span.
    Clear(&'a [u8], &'a [u8]),
}

/// What a step hands back.
enum Done {
    /// Where the next page starts, if there is one.
    Next(Option<Vec<u8>>),
    /// Spans whose keys are now garbage.
    Garbage(Vec<Span>),
}

async fn run_step(txn: &mut Txn, table_id: u32, s: Step<'_>) -> Result<Done> {
    match s {
        Step::Backfill(from) => backfill_page(txn, table_id, from).await.map(Done::Next),
        Step::Publish => publish(txn, table_id).await.map(Done::Garbage),
        Step::Revert => revert(txn, table_id).await.map(Done::Garbage),
        Step::Clear(start, end) => clear_page(txn, start, end).await.map(Done::Next),
    }
}

/// Runs a step in the explicit transaction, or in a new transaction committed here (retried
/// on retryable errors).
async fn step(mode: &mut Mode<'_>, table_id: u32, s: Step<'_>) -> Result<Done> {
    let db = match mode {
        Mode::Within(txn) => return run_step(txn, table_id, s).await,
        Mode::Own(db) => *db,
    };
    let mut attempt = 0;
    loop {
        let mut txn = db.begin();
        let r = run_step(&mut txn, table_id, s).await;
        match settle(&mut txn, r).await {
            Err(e) if e.is_retryable() && attempt < RETRIES => {
                attempt += 1;
                retry_pause(attempt).await;
            }
            other => return other,
        }
    }
}

/// Runs a step that hands back a page position.
async fn page(mode: &mut Mode<'_>, table_id: u32, s: Step<'_>) -> Result<Option<Vec<u8>>> {
    match step(mode, table_id, s).await? {
        Done::Next(n) => Ok(n),
        Done::Garbage(_) => Err(Error::Internal("a page step handed back spans".into())),
    }
}

/// Runs a step that hands back garbage spans.
async fn spans(mode: &mut Mode<'_>, table_id: u32, s: Step<'_>) -> Result<Vec<Span>> {
    match step(mode, table_id, s).await? {
        Done::Garbage(g) => Ok(g),
        Done::Next(_) => Err(Error::Internal("a step handed back a page".into())),
    }
}

/// Refuses a schema change of a table that has one in progress.
pub fn check_idle(table: &TableDesc) -> Result<()> {
    if table.mutations.is_empty() {
        return Ok(());
    }
    Err(Error::ObjectNotInPrerequisiteState(format!(
        "table \"{}\" has a schema change in progress",
        table.name
    )))
}

/// Fills the table's mutation indexes and makes them public; on failure takes them out again.
pub async fn complete(mut mode: Mode<'_>, table_id: u32) -> Result<()> {
    match fill(&mut mode, table_id).await {
        Ok(garbage) => clear(&mut mode, table_id, &garbage).await,
        Err(e) => {
            if let Mode::Own(_) = mode {
                // The explicit transaction's rollback undoes everything; here it is undone step
                // by step.
                match spans(&mut mode, table_id, Step::Revert).await {
                    Ok(garbage) => {
                        if let Err(ce) = clear(&mut mode, table_id, &garbage).await {
                            tracing::warn!(error = %ce, "could not clear a failed index build");
                        }
                    }
                    Err(re) => tracing::warn!(error = %re, "could not revert a schema change"),
                }
            }
            Err(e)
        }
    }
}

async fn fill(mode: &mut Mode<'_>, table_id: u32) -> Result<Vec<Span>> {
    let mut from: Option<Vec<u8>> = None;
    while let Some(next) = page(mode, table_id, Step::Backfill(from.as_deref())).await? {
        from = Some(next);
    }
    spans(mode, table_id, Step::Publish).await
}

/// Deletes every key of the spans, a page per step.
async fn clear(mode: &mut Mode<'_>, table_id: u32, garbage: &[Span]) -> Result<()> {
    for (start, end) in garbage {
        let mut from = start.clone();
        while let Some(next) = page(mode, table_id, Step::Clear(&from, end)).await? {
            from = next;
        }
    }
    Ok(())
}

async fn must_table(txn: &mut Txn, table_id: u32) -> Result<TableDesc> {
    catalog::table_by_id(txn, table_id)
        .await?
        .ok_or_else(|| Error::UndefinedTable(format!("[{table_id}]")))
}

/// Writes the entries of up to a page of rows from `from` on; returns where the next page
/// starts, if there is one.
async fn backfill_page(
    txn: &mut Txn,
    table_id: u32,
    from: Option<&[u8]>,
) -> Result<Option<Vec<u8>>> {
    let table = must_table(txn, table_id).await?;
    let (start, end) = table.primary_span();
    let kvs = txn.scan(from.unwrap_or(&start), &end, PAGE).await?;
    let mut puts = Vec::new();
    // Entries of unique indexes, to check against what the index holds already.
    let mut unique = Vec::new();
    let mut seen = HashSet::new();
    for kv in &kvs {
        let row = decode_table_row(&table, &kv.value)?;
        for m in &table.mutations {
            if m.primary {
                for i in table.index_positions(&m.index) {
                    if row[i].is_null() {
                        return Err(Error::NotNullViolation(table.columns[i].name.clone()));
                    }
                }
            }
            let (k, v) = mutation_entry(&table, m, &row)?;
            if m.primary || m.index.unique {
                if !seen.insert(k.clone()) {
                    return Err(duplicate(&table, &m.index, &row));
                }
                unique.push((k.clone(), v.clone(), m, row.clone()));
            }
            puts.push(bini_txn::put(&k, &v));
        }
    }
    let keys: Vec<Vec<u8>> = unique.iter().map(|(k, ..)| k.clone()).collect();
    let existing = txn.get_many(&keys).await?;
    for ((_, v, m, row), old) in unique.iter().zip(existing) {
        // A writer may have put this very entry already; anything else is another row's.
        if old.is_some_and(|old| &old != v) {
            return Err(duplicate(&table, &m.index, row));
        }
    }
    if !puts.is_empty() {
        txn.write(puts).await?;
    }
    Ok(next_page(&kvs))
}

fn index_span(table: &TableDesc, index_id: u32) -> Span {
    let p = index_prefix(table.id, index_id);
    let end = prefix_end(&p);
    (p, end)
}

/// Makes the mutations the table's indexes; returns the spans of the indexes they replace.
async fn publish(txn: &mut Txn, table_id: u32) -> Result<Vec<Span>> {
    let mut table = must_table(txn, table_id).await?;
    let mutations: Vec<Mutation> = std::mem::take(&mut table.mutations);
    let mut garbage = Vec::new();
    if let Some(p) = mutations.iter().find(|m| m.primary) {
        garbage.push(index_span(&table, table.primary.id));
        for idx in &table.indexes {
            garbage.push(index_span(&table, idx.id));
        }
        table.primary = p.index.clone();
        table.indexes = mutations
            .into_iter()
            .filter(|m| !m.primary)
            .map(|m| m.index)
            .collect();
    } else {
        table.indexes.extend(mutations.into_iter().map(|m| m.index));
    }
    let name = table.name.clone();
    catalog::update_table(txn, &name, &mut table).await?;
    Ok(garbage)
}

/// Takes the mutations out of the table (giving back the nullability they took); returns
/// the spans they wrote.
async fn revert(txn: &mut Txn, table_id: u32) -> Result<Vec<Span>> {
    let mut table = must_table(txn, table_id).await?;
    let mutations: Vec<Mutation> = std::mem::take(&mut table.mutations);
    let mut garbage = Vec::new();
    for m in &mutations {
        garbage.push(index_span(&table, m.index.id));
        for c in table.columns.iter_mut() {
            if m.made_not_null.contains(&c.id) {
                c.nullable = true;
            }
        }
    }
    let name = table.name.clone();
    catalog::update_table(txn, &name, &mut table).await?;
    Ok(garbage)
}

/// Deletes up to a page of keys from `from` on; returns where the next page starts.
async fn clear_page(txn: &mut Txn, from: &[u8], end: &[u8]) -> Result<Option<Vec<u8>>> {
    let kvs = txn.scan(from, end, PAGE).await?;
    if !kvs.is_empty() {
        txn.write(kvs.iter().map(|kv| bini_txn::delete(&kv.key)).collect())
            .await?;
    }
    Ok(next_page(&kvs))
}

/// Where the page after `kvs` starts, if `kvs` was a full page.
fn next_page(kvs: &[bini_proto::KeyValue]) -> Option<Vec<u8>> {
    match kvs.last() {
        Some(last) if kvs.len() as u64 == PAGE => {
            let mut next = last.key.clone();
            next.push(0);
            Some(next)
        }
        _ => None,
    }
}
