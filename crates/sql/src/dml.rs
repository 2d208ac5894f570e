//! INSERT, UPDATE and DELETE: rows and their index entries.
//!
//! A row lives under its primary key in the primary index; each secondary index holds one
//! entry per row: `index columns [+ primary key when not unique] → primary key`. Writes of a
//! statement go out in one batch (one round trip per range), after one batched read that
//! checks uniqueness. Every check a constraint needs (NOT NULL, CHECK, widths via the column
//! type) happens before anything is written, so a failing statement writes nothing.

use std::collections::{HashMap, HashSet};

use bini_proto::Request;
use sqlparser::ast;

use crate::catalog::{IndexDesc, Mutation, TableDesc};
use crate::encoding::{encode_datums, encode_key_datum, encode_row, index_prefix};
use crate::error::{Error, Result};
use crate::exec::scan_table;
use crate::expr::{cast, Expr};
use crate::plan::{primary_key, row_key, Column, Row};
use crate::planner::{coerce_to, ident, must_table, name_parts, type_of, Context, Scope};
use crate::types::Datum;

/// What a DML statement returns.
pub struct DmlResult {
    /// Rows affected.
    pub count: u64,
    /// RETURNING columns and rows, if asked.
    pub returning: Option<(Vec<Column>, Vec<Row>)>,
}

/// The key of a row's entry in a secondary index.
fn index_key(table: &TableDesc, index: &IndexDesc, row: &[Datum]) -> Result<Vec<u8>> {
    entry_key(table, index, &table.primary_positions(), row)
}

/// The key of a row's entry in a secondary index whose entries carry the primary key columns
/// at `pk`.
fn entry_key(table: &TableDesc, index: &IndexDesc, pk: &[usize], row: &[Datum]) -> Result<Vec<u8>> {
    let mut key = index_prefix(table.id, index.id);
    let positions = table.index_positions(index);
    for i in &positions {
        encode_key_datum(&row[*i], &mut key)?;
    }
    // Non-unique entries (and unique ones with a NULL, which never conflict) carry the
    // primary key to stay distinct.
    if !index.unique || positions.iter().any(|i| row[*i].is_null()) {
        for i in pk {
            encode_key_datum(&row[*i], &mut key)?;
        }
    }
    Ok(key)
}

fn index_value(table: &TableDesc, row: &[Datum]) -> Vec<u8> {
    entry_value(&table.primary_positions(), row)
}

fn entry_value(pk: &[usize], row: &[Datum]) -> Vec<u8> {
    let pk: Vec<Datum> = pk.iter().map(|i| row[*i].clone()).collect();
    encode_datums(&pk)
}

/// The key and value a row has in an index under construction: the whole row under the
/// new primary key, or a secondary entry carrying the (future) primary key.
pub(crate) fn mutation_entry(
    table: &TableDesc,
    m: &Mutation,
    row: &[Datum],
) -> Result<(Vec<u8>, Vec<u8>)> {
    if m.primary {
        Ok((row_key(table, &m.index, row)?, row_value(table, row)))
    } else {
        let pk = table.future_primary_positions();
        Ok((entry_key(table, &m.index, &pk, row)?, entry_value(&pk, row)))
    }
}

/// Whether a mutation index holds one entry per key value (checked on every write).
fn mutation_unique(m: &Mutation) -> bool {
    m.primary || m.index.unique
}

/// The error for a second row with the same key in a unique index (primary, secondary or
/// under construction).
pub(crate) fn duplicate(table: &TableDesc, index: &IndexDesc, row: &[Datum]) -> Error {
    Error::UniqueViolation {
        constraint: index.name.clone(),
        detail: describe_key(table, &table.index_positions(index), row),
    }
}

/// Uniqueness of the keys a statement writes into unique indexes under construction.
#[derive(Default)]
struct MutationChecks {
    seen: HashSet<Vec<u8>>,
}

impl MutationChecks {
    /// Checks `new` (replacing `old`, for an update) against the unique mutation indexes:
    /// its key must be new to the statement and to the index, unless the row keeps it.
    async fn check(
        &mut self,
        ctx: &mut Context<'_>,
        table: &TableDesc,
        old: Option<&[Datum]>,
        new: &[Datum],
    ) -> Result<()> {
        for m in table.mutations.iter().filter(|m| mutation_unique(m)) {
            let (key, _) = mutation_entry(table, m, new)?;
            if let Some(old) = old {
                if mutation_entry(table, m, old)?.0 == key {
                    self.seen.insert(key);
                    continue;
                }
            }
            if !self.seen.insert(key.clone()) || ctx.txn.get(&key).await?.is_some() {
                return Err(duplicate(table, &m.index, new));
            }
        }
        Ok(())
    }
}

/// Puts of a new row's entries in the indexes under construction.
fn mutation_puts(table: &TableDesc, row: &[Datum], w: &mut Vec<Request>) -> Result<()> {
    for m in &table.mutations {
        let (k, v) = mutation_entry(table, m, row)?;
        w.push(bini_txn::put(&k, &v));
    }
    Ok(())
}

fn row_value(table: &TableDesc, row: &[Datum]) -> Vec<u8> {
    encode_row(table.columns.iter().zip(row).map(|(c, d)| (c.id, d)))
}

fn describe_key(table: &TableDesc, positions: &[usize], row: &[Datum]) -> String {
    let names: Vec<&str> = positions
        .iter()
        .map(|i| table.columns[*i].name.as_str())
        .collect();
    let vals: Vec<String> = positions.iter().map(|i| row[*i].to_string()).collect();
    format!(
        "Key ({})=({}) already exists.",
        names.join(", "),
        vals.join(", ")
    )
}

/// Checks NOT NULL and CHECK constraints of a full row.
async fn check_row(ctx: &mut Context<'_>, table: &TableDesc, row: &[Datum]) -> Result<()> {
    for (c, d) in table.columns.iter().zip(row) {
        if d.is_null() && !c.nullable {
            return Err(Error::NotNullViolation(c.name.clone()));
        }
    }
    if table.checks.is_empty() {
        return Ok(());
    }
    let scope = table_scope(table, &table.name);
    for check in &table.checks {
        let ast = parse_expr(&check.expr)?;
        let e = ctx.bind(&ast, &scope).await?;
        if e.eval(row)?.truth()? == Some(false) {
            return Err(Error::CheckViolation(check.expr.clone()));
        }
    }
    Ok(())
}

/// Parses one SQL expression (stored defaults and checks).
pub fn parse_expr(sql: &str) -> Result<ast::Expr> {
    let dialect = sqlparser::dialect::PostgreSqlDialect {};
    Ok(sqlparser::parser::Parser::new(&dialect)
        .try_with_sql(sql)?
        .parse_expr()?)
}

/// The scope of a table's own columns.
pub fn table_scope(table: &TableDesc, alias: &str) -> Scope {
    Scope {
        columns: table
            .columns
            .iter()
            .map(|c| Column {
                name: c.name.clone(),
                table: Some(alias.to_string()),
                ty: c.ty.clone(),
                hidden: c.hidden,
            })
            .collect(),
        grouped: None,
    }
}

/// A unique row id: microseconds of the node's clock, then the node id, so ids of one node
/// rise with insertion order (a table without a primary key lists rows as inserted).
pub fn unique_rowid(ctx: &Context<'_>, node_id: u64) -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = ctx.now.timestamp_micros();
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return (next << 10) | (node_id as i64 & 0x3ff),
            Err(p) => prev = p,
        }
    }
}

/// Fills a column's default.
async fn default_value(
    ctx: &mut Context<'_>,
    table: &TableDesc,
    col: usize,
    node_id: u64,
) -> Result<Datum> {
    let c = &table.columns[col];
    match &c.default {
        None => Ok(Datum::Null),
        Some(d) if d == "unique_rowid()" => Ok(Datum::Int(unique_rowid(ctx, node_id))),
        Some(d) => {
            let ast = parse_expr(d)?;
            let e = ctx.bind(&ast, &Scope::default()).await?;
            cast(e.eval(&[])?, &c.ty)
        }
    }
}

/// Writes new rows (INSERT): checks, then one batch.
pub async fn insert(
    ctx: &mut Context<'_>,
    ins: &ast::Insert,
    node_id: u64,
    upsert: bool,
) -> Result<DmlResult> {
    let ast::TableObject::TableName(name) = &ins.table else {
        return Err(Error::FeatureNotSupported("INSERT into a function".into()));
    };
    let table = must_table(ctx, name).await?;
    let alias = ins
        .table_alias
        .as_ref()
        .map(|a| ident(&a.alias))
        .unwrap_or_else(|| table.name.clone());
    // Target columns.
    let targets: Vec<usize> = if ins.columns.is_empty() {
        (0..table.columns.len())
            .filter(|i| !table.columns[*i].hidden)
            .collect()
    } else {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for c in &ins.columns {
            let n = name_parts(c).pop().unwrap_or_default();
            let i = table
                .column_index(&n)
                .ok_or_else(|| Error::UndefinedColumn(n.clone()))?;
            if !seen.insert(i) {
                return Err(Error::DuplicateColumn(n));
            }
            out.push(i);
        }
        out
    };
    // Source rows.
    let source_rows: Vec<Vec<Option<Expr>>> = match &ins.source {
        None => vec![Vec::new()],
        Some(q) => match &*q.body {
            ast::SetExpr::Values(v) if q.order_by.is_none() && q.limit_clause.is_none() => {
                let empty = Scope::default();
                let mut rows = Vec::new();
                for r in &v.rows {
                    if r.len() > targets.len() {
                        return Err(Error::Syntax(
                            "INSERT has more expressions than target columns".into(),
                        ));
                    }
                    let mut row = Vec::new();
                    for (k, e) in r.iter().enumerate() {
                        if matches!(e, ast::Expr::Identifier(i) if i.value.eq_ignore_ascii_case("default") && i.quote_style.is_none())
                        {
                            row.push(None);
                            continue;
                        }
                        let ty = &table.columns[targets[k]].ty;
                        ctx.hint(e, ty);
                        let x = ctx.bind(e, &empty).await?;
                        row.push(Some(coerce_to(x, ty, &[])?));
                    }
                    rows.push(row);
                }
                rows
            }
            _ => {
                let planned = ctx.plan_query(q).await?;
                if planned.columns.len() > targets.len() {
                    return Err(Error::Syntax(
                        "INSERT has more expressions than target columns".into(),
                    ));
                }
                if ctx.describe {
                    Vec::new()
                } else {
                    crate::exec::collect(planned.node, &mut ctx.exec())
                        .await?
                        .into_iter()
                        .map(|r| r.into_iter().map(|d| Some(Expr::Literal(d))).collect())
                        .collect()
                }
            }
        },
    };
    // Describe: the values are bound (their parameters typed); no row is built.
    let source_rows = if ctx.describe {
        Vec::new()
    } else {
        source_rows
    };
    // Build full rows.
    let mut rows: Vec<Row> = Vec::with_capacity(source_rows.len());
    for src in source_rows {
        let mut row = vec![Datum::Null; table.columns.len()];
        let mut given = vec![false; table.columns.len()];
        for (k, e) in src.into_iter().enumerate() {
            let col = targets[k];
            if let Some(e) = e {
                let v = e.eval(&[])?;
                row[col] = cast(v, &table.columns[col].ty).map_err(|err| match err {
                    Error::DatatypeMismatch(_) => Error::DatatypeMismatch(format!(
                        "value type {} doesn't match type {} of column \"{}\"",
                        type_of(&e, &[]).pg_name(),
                        table.columns[col].ty.pg_name(),
                        table.columns[col].name
                    )),
                    other => other,
                })?;
                given[col] = true;
            }
        }
        for col in 0..table.columns.len() {
            if !given[col] {
                row[col] = default_value(ctx, &table, col, node_id).await?;
            }
        }
        check_row(ctx, &table, &row).await?;
        rows.push(row);
    }
    // ON CONFLICT.
    enum OnConflict {
        Error,
        Nothing,
        Update(Vec<ast::Assignment>, Option<Box<ast::Expr>>),
    }
    let on_conflict = match &ins.on {
        None if upsert => OnConflict::Update(
            targets
                .iter()
                .filter(|i| !table.primary_positions().contains(i))
                .map(|i| ast::Assignment {
                    target: ast::AssignmentTarget::ColumnName(ast::ObjectName::from(vec![
                        ast::Ident::with_quote('"', table.columns[*i].name.clone()),
                    ])),
                    value: ast::Expr::CompoundIdentifier(vec![
                        ast::Ident::new("excluded"),
                        ast::Ident::with_quote('"', table.columns[*i].name.clone()),
                    ]),
                })
                .collect(),
            None,
        ),
        None => OnConflict::Error,
        Some(ast::OnInsert::OnConflict(oc)) => match &oc.action {
            ast::OnConflictAction::DoNothing => OnConflict::Nothing,
            ast::OnConflictAction::DoUpdate(u) => {
                OnConflict::Update(u.assignments.clone(), u.selection.clone().map(Box::new))
            }
        },
        Some(other) => return Err(Error::FeatureNotSupported(format!("{other}"))),
    };
    if let (true, OnConflict::Update(assignments, selection)) = (ctx.describe, &on_conflict) {
        // Bind what a conflict would run, for the types of its parameters.
        let scope = conflict_scope(&table, &alias);
        if let Some(sel) = selection {
            ctx.hint(sel, &crate::types::Type::Bool);
            ctx.bind(sel, &scope).await?;
        }
        for a in assignments {
            assignment(ctx, &table, a, &scope).await?;
        }
    }
    // Uniqueness: one batched read of every primary key and unique index key.
    let mut pks = Vec::with_capacity(rows.len());
    for r in &rows {
        pks.push(primary_key(&table, r)?);
    }
    let existing = ctx.txn.get_many(&pks).await?;
    let unique: Vec<&IndexDesc> = table.indexes.iter().filter(|i| i.unique).collect();
    let mut writes: Vec<Request> = Vec::new();
    let mut written: Vec<Row> = Vec::new();
    let mut seen_pk: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut seen_unique: HashSet<Vec<u8>> = HashSet::new();
    let mut checks = MutationChecks::default();
    for (i, row) in rows.into_iter().enumerate() {
        let pk = &pks[i];
        let old = match seen_pk.get(pk) {
            Some(&w) => Some(written[w].clone()),
            None => existing[i]
                .as_ref()
                .map(|v| crate::plan::decode_table_row(&table, v))
                .transpose()?,
        };
        if let Some(old) = old {
            match &on_conflict {
                OnConflict::Error => return Err(duplicate(&table, &table.primary, &row)),
                OnConflict::Nothing => continue,
                OnConflict::Update(assignments, selection) => {
                    if seen_pk.contains_key(pk) {
                        return Err(Error::CardinalityViolation);
                    }
                    let scope = conflict_scope(&table, &alias);
                    let mut both = old.clone();
                    both.extend(row.iter().cloned());
                    if let Some(sel) = selection {
                        let p = ctx.bind(sel, &scope).await?;
                        if p.eval(&both)?.truth()? != Some(true) {
                            continue;
                        }
                    }
                    let mut new = old.clone();
                    for a in assignments {
                        let (col, value) = assignment(ctx, &table, a, &scope).await?;
                        new[col] = cast(value.eval(&both)?, &table.columns[col].ty)?;
                    }
                    check_row(ctx, &table, &new).await?;
                    checks.check(ctx, &table, Some(&old), &new).await?;
                    update_writes(&table, &old, &new, &mut writes)?;
                    seen_pk.insert(pk.clone(), written.len());
                    written.push(new);
                    continue;
                }
            }
        }
        for idx in &unique {
            let key = index_key(&table, idx, &row)?;
            let dup = !seen_unique.insert(key.clone()) || ctx.txn.get(&key).await?.is_some();
            if dup {
                if matches!(on_conflict, OnConflict::Nothing) {
                    continue;
                }
                return Err(duplicate(&table, idx, &row));
            }
        }
        checks.check(ctx, &table, None, &row).await?;
        writes.push(bini_txn::put(pk, &row_value(&table, &row)));
        for idx in &table.indexes {
            writes.push(bini_txn::put(
                &index_key(&table, idx, &row)?,
                &index_value(&table, &row),
            ));
        }
        mutation_puts(&table, &row, &mut writes)?;
        seen_pk.insert(pk.clone(), written.len());
        written.push(row);
    }
    finish(ctx, &table, &alias, writes, written, &ins.returning).await
}

/// The scope of ON CONFLICT DO UPDATE: the existing row by its plain names, then the
/// proposed row as `excluded.*`.
fn conflict_scope(table: &TableDesc, alias: &str) -> Scope {
    let mut scope = table_scope(table, alias);
    scope.columns.extend(table_scope(table, "excluded").columns);
    scope
}

async fn assignment(
    ctx: &mut Context<'_>,
    table: &TableDesc,
    a: &ast::Assignment,
    scope: &Scope,
) -> Result<(usize, Expr)> {
    let ast::AssignmentTarget::ColumnName(n) = &a.target else {
        return Err(Error::FeatureNotSupported("tuple assignment".into()));
    };
    let name = name_parts(n).pop().unwrap_or_default();
    let col = table
        .column_index(&name)
        .ok_or_else(|| Error::UndefinedColumn(name.clone()))?;
    let is_default = matches!(&a.value, ast::Expr::Identifier(i)
        if i.value.eq_ignore_ascii_case("default") && i.quote_style.is_none());
    let e = if is_default {
        match &table.columns[col].default {
            Some(d) => ctx.bind(&parse_expr(d)?, &Scope::default()).await?,
            None => Expr::Literal(Datum::Null),
        }
    } else {
        ctx.hint(&a.value, &table.columns[col].ty);
        ctx.bind(&a.value, scope).await?
    };
    let e = coerce_to(e, &table.columns[col].ty, &scope.columns)?;
    Ok((col, e))
}

/// The writes that turn `old` into `new`: the row, and index entries that changed.
fn update_writes(
    table: &TableDesc,
    old: &[Datum],
    new: &[Datum],
    w: &mut Vec<Request>,
) -> Result<()> {
    let old_pk = primary_key(table, old)?;
    let new_pk = primary_key(table, new)?;
    if old_pk != new_pk {
        w.push(bini_txn::delete(&old_pk));
    }
    w.push(bini_txn::put(&new_pk, &row_value(table, new)));
    for idx in &table.indexes {
        let (ok, nk) = (index_key(table, idx, old)?, index_key(table, idx, new)?);
        if ok != nk || old_pk != new_pk {
            w.push(bini_txn::delete(&ok));
            w.push(bini_txn::put(&nk, &index_value(table, new)));
        }
    }
    for m in &table.mutations {
        let ((ok, ov), (nk, nv)) = (
            mutation_entry(table, m, old)?,
            mutation_entry(table, m, new)?,
        );
        if ok != nk {
            w.push(bini_txn::delete(&ok));
        }
        if ok != nk || ov != nv {
            w.push(bini_txn::put(&nk, &nv));
        }
    }
    Ok(())
}

/// RETURNING: the select list evaluated over the rows written.
async fn returning(
    ctx: &mut Context<'_>,
    table: &TableDesc,
    alias: &str,
    items: &[ast::SelectItem],
    rows: &[Row],
) -> Result<(Vec<Column>, Vec<Row>)> {
    let scope = table_scope(table, alias);
    let (exprs, cols) = ctx.bind_projection(items, &scope).await?;
    let out = rows
        .iter()
        .map(|r| exprs.iter().map(|e| e.eval(r)).collect::<Result<Row>>())
        .collect::<Result<_>>()?;
    Ok((cols, out))
}

/// Sends a statement's writes in one batch and builds its result.
async fn finish(
    ctx: &mut Context<'_>,
    table: &TableDesc,
    alias: &str,
    writes: Vec<Request>,
    rows: Vec<Row>,
    items: &Option<Vec<ast::SelectItem>>,
) -> Result<DmlResult> {
    if !writes.is_empty() {
        ctx.txn.write(writes).await?;
    }
    let returning = match items {
        Some(items) => Some(returning(ctx, table, alias, items, &rows).await?),
        None => None,
    };
    Ok(DmlResult {
        count: rows.len() as u64,
        returning,
    })
}

fn single_table(t: &ast::TableWithJoins) -> Result<(&ast::ObjectName, Option<String>)> {
    if !t.joins.is_empty() {
        return Err(Error::FeatureNotSupported(
            "UPDATE/DELETE with joins".into(),
        ));
    }
    match &t.relation {
        ast::TableFactor::Table { name, alias, .. } => {
            Ok((name, alias.as_ref().map(|a| ident(&a.name))))
        }
        other => Err(Error::FeatureNotSupported(format!("{other}"))),
    }
}

/// Rows of `table` matching `selection`, with their keys, read to be changed (UPDATE, DELETE).
async fn matching_rows(
    ctx: &mut Context<'_>,
    table: &TableDesc,
    scope: &Scope,
    selection: &Option<ast::Expr>,
) -> Result<Vec<(Vec<u8>, Row)>> {
    let filter = match selection {
        Some(w) => Some(ctx.bind(w, scope).await?),
        None => None,
    };
    if ctx.describe {
        return Ok(Vec::new());
    }
    let keys = match &filter {
        Some(f) => crate::planner::lookup(table, f)?,
        None => None,
    };
    // The rows are read to be overwritten: locking reads (see `Txn::set_locking`).
    ctx.txn.set_locking(true);
    let rows = scan_table(&mut ctx.exec(), table, keys.as_ref(), &filter, None).await;
    ctx.txn.set_locking(false);
    rows
}

/// UPDATE.
pub async fn update(ctx: &mut Context<'_>, u: &ast::Update) -> Result<DmlResult> {
    if u.from.is_some() {
        return Err(Error::FeatureNotSupported("UPDATE … FROM".into()));
    }
    let (name, alias) = single_table(&u.table)?;
    let table = must_table(ctx, name).await?;
    let alias = alias.unwrap_or_else(|| table.name.clone());
    let scope = table_scope(&table, &alias);
    let mut sets = Vec::new();
    for a in &u.assignments {
        sets.push(assignment(ctx, &table, a, &scope).await?);
    }
    let rows = matching_rows(ctx, &table, &scope, &u.selection).await?;
    let mut writes = Vec::new();
    let mut updated = Vec::with_capacity(rows.len());
    let mut new_pks = HashSet::new();
    for (_, old) in &rows {
        let mut new = old.clone();
        for (col, e) in &sets {
            new[*col] = cast(e.eval(old)?, &table.columns[*col].ty)?;
        }
        check_row(ctx, &table, &new).await?;
        if !new_pks.insert(primary_key(&table, &new)?) {
            // Two updated rows would share a primary key.
            return Err(duplicate(&table, &table.primary, &new));
        }
        updated.push(new);
    }
    // A changed primary key or unique value must not collide with a row left in place.
    let old_pks: HashSet<Vec<u8>> = rows.iter().map(|(k, _)| k.clone()).collect();
    for new in &updated {
        let pk = primary_key(&table, new)?;
        if !old_pks.contains(&pk) && ctx.txn.get(&pk).await?.is_some() {
            return Err(duplicate(&table, &table.primary, new));
        }
    }
    for idx in table.indexes.iter().filter(|i| i.unique) {
        let old_keys: HashSet<Vec<u8>> = rows
            .iter()
            .map(|(_, r)| index_key(&table, idx, r))
            .collect::<Result<_>>()?;
        let mut seen = HashSet::new();
        for new in &updated {
            let k = index_key(&table, idx, new)?;
            if !seen.insert(k.clone())
                || (!old_keys.contains(&k) && ctx.txn.get(&k).await?.is_some())
            {
                return Err(duplicate(&table, idx, new));
            }
        }
    }
    let mut checks = MutationChecks::default();
    for ((_, old), new) in rows.iter().zip(&updated) {
        checks.check(ctx, &table, Some(old), new).await?;
    }
    // Deletes of moved rows first, so a row moving onto another moved row's old key stays.
    let mut deletes = Vec::new();
    let mut puts = Vec::new();
    for ((_, old), new) in rows.iter().zip(&updated) {
        let mut w = Vec::new();
        update_writes(&table, old, new, &mut w)?;
        for r in w {
            match r.kind {
                Some(bini_proto::request::Kind::Delete(_)) => deletes.push(r),
                _ => puts.push(r),
            }
        }
    }
    let put_keys: HashSet<Vec<u8>> = puts
        .iter()
        .filter_map(|r| match &r.kind {
            Some(bini_proto::request::Kind::Put(p)) => Some(p.key.clone()),
            _ => None,
        })
        .collect();
    writes.extend(deletes.into_iter().filter(|r| match &r.kind {
        Some(bini_proto::request::Kind::Delete(d)) => !put_keys.contains(&d.key),
        _ => true,
    }));
    writes.extend(puts);
    finish(ctx, &table, &alias, writes, updated, &u.returning).await
}

/// DELETE.
pub async fn delete(ctx: &mut Context<'_>, d: &ast::Delete) -> Result<DmlResult> {
    let from = match &d.from {
        ast::FromTable::WithFromKeyword(v) | ast::FromTable::WithoutKeyword(v) => v,
    };
    let [t] = from.as_slice() else {
        return Err(Error::FeatureNotSupported(
            "DELETE from several tables".into(),
        ));
    };
    if d.using.is_some() {
        return Err(Error::FeatureNotSupported("DELETE … USING".into()));
    }
    let (name, alias) = single_table(t)?;
    let table = must_table(ctx, name).await?;
    let alias = alias.unwrap_or_else(|| table.name.clone());
    let scope = table_scope(&table, &alias);
    let rows = matching_rows(ctx, &table, &scope, &d.selection).await?;
    let mut writes = Vec::new();
    for (key, row) in &rows {
        writes.push(bini_txn::delete(key));
        for idx in &table.indexes {
            writes.push(bini_txn::delete(&index_key(&table, idx, row)?));
        }
        for m in &table.mutations {
            writes.push(bini_txn::delete(&mutation_entry(&table, m, row)?.0));
        }
    }
    let deleted: Vec<Row> = rows.into_iter().map(|(_, r)| r).collect();
    finish(ctx, &table, &alias, writes, deleted, &d.returning).await
}
