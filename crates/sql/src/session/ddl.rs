//! DDL: CREATE TABLE, CREATE INDEX, DROP, ALTER TABLE — building and changing descriptors
//! (an index or new primary key is recorded as a mutation that `schema.rs` fills), the
//! names Postgres gives what the statement leaves unnamed, and SHOW CREATE TABLE.

use super::*;

impl Session {
    pub(super) async fn create_table(
        &self,
        ctx: &mut Context<'_>,
        ct: &ast::CreateTable,
    ) -> Result<()> {
        if let Some(q) = &ct.query {
            let _ = q;
            return Err(Error::FeatureNotSupported("CREATE TABLE … AS".into()));
        }
        let (dbname, name) = table_name(&ctx.database, &ct.name)?;
        let dbd = catalog::must_database(ctx.txn, &dbname).await?;
        if catalog::table(ctx.txn, dbd.id, &name).await?.is_some() {
            if ct.if_not_exists {
                return Ok(());
            }
            return Err(Error::DuplicateTable(name));
        }
        let mut columns: Vec<ColumnDesc> = Vec::new();
        let mut pk: Option<Vec<String>> = None;
        let mut uniques: Vec<(Option<String>, Vec<String>)> = Vec::new();
        let mut checks = Vec::new();
        for (i, c) in ct.columns.iter().enumerate() {
            let cname = ident(&c.name);
            if columns.iter().any(|x| x.name == cname) {
                return Err(Error::DuplicateColumn(cname));
            }
            let ty = sql_type(&c.data_type)?;
            let mut col = ColumnDesc {
                id: i as u32 + 1,
                name: cname.clone(),
                ty,
                nullable: true,
                default: is_serial(&c.data_type).then(|| "unique_rowid()".to_string()),
                hidden: false,
            };
            if is_serial(&c.data_type) {
                col.nullable = false;
            }
            for opt in &c.options {
                match &opt.option {
                    ast::ColumnOption::Null => col.nullable = true,
                    ast::ColumnOption::NotNull => col.nullable = false,
                    ast::ColumnOption::Default(e) => {
                        // Validate now: a default that does not bind fails CREATE TABLE.
                        let d = ctx.bind(e, &crate::planner::Scope::default()).await?;
                        crate::expr::cast(d.eval(&[])?, &col.ty)?;
                        col.default = Some(e.to_string());
                    }
                    ast::ColumnOption::PrimaryKey(_) => {
                        if pk.is_some() {
                            return Err(Error::InvalidTableDefinition(format!(
                                "multiple primary keys for table \"{name}\" are not allowed"
                            )));
                        }
                        pk = Some(vec![cname.clone()]);
                    }
                    ast::ColumnOption::Unique(_) => {
                        uniques.push((opt.name.as_ref().map(ident), vec![cname.clone()]))
                    }
                    ast::ColumnOption::Check(ch) => {
                        checks.push((opt.name.as_ref().map(ident), &*ch.expr))
                    }
                    other => {
                        return Err(Error::FeatureNotSupported(format!("column option {other}")))
                    }
                }
            }
            columns.push(col);
        }
        for c in &ct.constraints {
            match c {
                ast::TableConstraint::PrimaryKey(p) => {
                    if pk.is_some() {
                        return Err(Error::InvalidTableDefinition(format!(
                            "multiple primary keys for table \"{name}\" are not allowed"
                        )));
                    }
                    pk = Some(index_columns(&p.columns)?);
                }
                ast::TableConstraint::Unique(u) => {
                    uniques.push((u.name.as_ref().map(ident), index_columns(&u.columns)?))
                }
                ast::TableConstraint::Check(ch) => {
                    checks.push((ch.name.as_ref().map(ident), &*ch.expr))
                }
                other => return Err(Error::FeatureNotSupported(format!("constraint {other}"))),
            }
        }
        let ids_of = |names: &[String], columns: &[ColumnDesc]| -> Result<Vec<u32>> {
            names
                .iter()
                .map(|n| {
                    columns
                        .iter()
                        .find(|c| &c.name == n)
                        .map(|c| c.id)
                        .ok_or_else(|| Error::UndefinedColumn(n.clone()))
                })
                .collect()
        };
        let pk_ids = match &pk {
            Some(names) => {
                let ids = ids_of(names, &columns)?;
                for c in columns.iter_mut().filter(|c| ids.contains(&c.id)) {
                    if !c.ty.is_indexable() {
                        return Err(Error::FeatureNotSupported(format!(
                            "column {} of type {} cannot be a primary key",
                            c.name, c.ty
                        )));
                    }
                    c.nullable = false;
                }
                ids
            }
            None => {
                let id = columns.len() as u32 + 1;
                columns.push(ColumnDesc {
                    id,
                    name: "rowid".into(),
                    ty: Type::Int8,
                    nullable: false,
                    default: Some("unique_rowid()".into()),
                    hidden: true,
                });
                vec![id]
            }
        };
        let mut indexes = Vec::new();
        for (i, (iname, cols)) in uniques.iter().enumerate() {
            indexes.push(IndexDesc {
                id: i as u32 + 2,
                name: iname
                    .clone()
                    .unwrap_or_else(|| format!("{name}_{}_key", cols.join("_"))),
                unique: true,
                columns: ids_of(cols, &columns)?,
            });
        }
        let desc = TableDesc {
            id: catalog::allocate_id(&self.db).await?,
            parent_id: dbd.id,
            name: name.clone(),
            version: 1,
            next_column_id: columns.len() as u32 + 1,
            columns,
            primary: IndexDesc {
                id: 1,
                name: format!("{name}_pkey"),
                unique: true,
                columns: pk_ids,
            },
            next_index_id: indexes.len() as u32 + 2,
            indexes,
            checks: name_checks(&name, &checks),
            mutations: Vec::new(),
        };
        catalog::create_table(ctx.txn, &desc).await
    }

    /// CREATE INDEX: records the index as a mutation and returns the table, whose index
    /// the caller fills (`schema.rs`).
    pub(super) async fn create_index(
        &self,
        ctx: &mut Context<'_>,
        ci: &ast::CreateIndex,
    ) -> Result<Option<u32>> {
        let mut table = must_table(ctx, &ci.table_name).await?;
        schema::check_idle(&table)?;
        let cols = index_columns(&ci.columns)?;
        let name = match &ci.name {
            Some(n) => name_parts(n).pop().unwrap_or_default(),
            None => format!("{}_{}_idx", table.name, cols.join("_")),
        };
        if table.index(&name).is_some() || table.mutations.iter().any(|m| m.index.name == name) {
            if ci.if_not_exists {
                return Ok(None);
            }
            return Err(Error::DuplicateTable(name));
        }
        add_index(&mut table, name, ci.unique, &cols, false)?;
        let old = table.name.clone();
        catalog::update_table(ctx.txn, &old, &mut table).await?;
        Ok(Some(table.id))
    }

    pub(super) async fn drop(
        &mut self,
        ctx: &mut Context<'_>,
        kind: ast::ObjectType,
        if_exists: bool,
        names: &[ast::ObjectName],
    ) -> Result<Output> {
        for n in names {
            match kind {
                ast::ObjectType::Database => {
                    let name = name_parts(n).pop().unwrap_or_default();
                    match catalog::database(ctx.txn, &name).await? {
                        Some(d) => {
                            if d.name == self.database {
                                self.database = DEFAULT_DATABASE.into();
                            }
                            catalog::drop_database(ctx.txn, &d).await?
                        }
                        None if if_exists => {}
                        None => return Err(Error::UndefinedDatabase(name)),
                    }
                }
                ast::ObjectType::Table => match must_table(ctx, n).await {
                    Ok(t) => catalog::drop_table(ctx.txn, &t).await?,
                    Err(Error::UndefinedTable(_)) if if_exists => {}
                    Err(e) => return Err(e),
                },
                ast::ObjectType::Index => {
                    // `DROP INDEX [table@]name`: look through the database's tables.
                    let name = name_parts(n).pop().unwrap_or_default();
                    let dbd = catalog::must_database(ctx.txn, &ctx.database.clone()).await?;
                    let mut found = false;
                    for mut t in catalog::tables(ctx.txn, dbd.id).await? {
                        if let Some(pos) = t.indexes.iter().position(|i| i.name == name) {
                            schema::check_idle(&t)?;
                            let idx = t.indexes.remove(pos);
                            let p = crate::encoding::index_prefix(t.id, idx.id);
                            catalog::delete_span(ctx.txn, &p, &crate::encoding::prefix_end(&p))
                                .await?;
                            let old = t.name.clone();
                            catalog::update_table(ctx.txn, &old, &mut t).await?;
                            found = true;
                            break;
                        }
                    }
                    if !found && !if_exists {
                        return Err(Error::UndefinedIndex(name));
                    }
                }
                other => return Err(Error::FeatureNotSupported(format!("DROP {other}"))),
            }
        }
        Ok(Output::Command(format!(
            "DROP {}",
            match kind {
                ast::ObjectType::Database => "DATABASE",
                ast::ObjectType::Index => "INDEX",
                _ => "TABLE",
            }
        )))
    }

    /// ALTER TABLE; returns the table when it left an index to fill (ADD PRIMARY KEY, ADD
    /// CONSTRAINT … UNIQUE).
    pub(super) async fn alter_table(
        &self,
        ctx: &mut Context<'_>,
        at: &ast::AlterTable,
    ) -> Result<Option<u32>> {
        let mut table = match must_table(ctx, &at.name).await {
            Ok(t) => t,
            Err(Error::UndefinedTable(_)) if at.if_exists => return Ok(None),
            Err(e) => return Err(e),
        };
        schema::check_idle(&table)?;
        let old_name = table.name.clone();
        for op in &at.operations {
            match op {
                ast::AlterTableOperation::AddConstraint {
                    constraint: ast::TableConstraint::PrimaryKey(p),
                    ..
                } => {
                    if !table.primary_is_rowid() || table.mutations.iter().any(|m| m.primary) {
                        return Err(Error::InvalidTableDefinition(format!(
                            "multiple primary keys for table \"{}\" are not allowed",
                            table.name
                        )));
                    }
                    let name = p
                        .name
                        .as_ref()
                        .map(ident)
                        .unwrap_or_else(|| format!("{}_pkey", table.name));
                    let cols = index_columns(&p.columns)?;
                    add_index(&mut table, name, true, &cols, true)?;
                    // The secondary indexes are rebuilt beside it, keyed by the new primary key.
                    for idx in table.indexes.clone() {
                        let id = table.next_index_id;
                        table.next_index_id += 1;
                        table.mutations.push(Mutation {
                            index: IndexDesc { id, ..idx },
                            primary: false,
                            made_not_null: Vec::new(),
                        });
                    }
                }
                ast::AlterTableOperation::AddConstraint {
                    constraint: ast::TableConstraint::Unique(u),
                    ..
                } => {
                    let cols = index_columns(&u.columns)?;
                    let name = u
                        .name
                        .as_ref()
                        .map(ident)
                        .unwrap_or_else(|| format!("{}_{}_key", table.name, cols.join("_")));
                    if table.index(&name).is_some()
                        || table.mutations.iter().any(|m| m.index.name == name)
                    {
                        return Err(Error::DuplicateTable(name));
                    }
                    add_index(&mut table, name, true, &cols, false)?;
                }
                ast::AlterTableOperation::AddColumn {
                    column_def,
                    if_not_exists,
                    ..
                } => {
                    let name = ident(&column_def.name);
                    if table.column_index(&name).is_some() {
                        if *if_not_exists {
                            continue;
                        }
                        return Err(Error::DuplicateColumn(name));
                    }
                    let mut col = ColumnDesc {
                        id: table.next_column_id,
                        name,
                        ty: sql_type(&column_def.data_type)?,
                        nullable: true,
                        default: None,
                        hidden: false,
                    };
                    for opt in &column_def.options {
                        match &opt.option {
                            ast::ColumnOption::Null => col.nullable = true,
                            ast::ColumnOption::NotNull => col.nullable = false,
                            ast::ColumnOption::Default(e) => col.default = Some(e.to_string()),
                            other => {
                                return Err(Error::FeatureNotSupported(format!(
                                    "ADD COLUMN with {other}"
                                )))
                            }
                        }
                    }
                    // Existing rows take the default; write it into them so reads stay simple.
                    let default = match &col.default {
                        Some(d) => {
                            let e = ctx
                                .bind(&dml::parse_expr(d)?, &crate::planner::Scope::default())
                                .await?;
                            crate::expr::cast(e.eval(&[])?, &col.ty)?
                        }
                        None => Datum::Null,
                    };
                    let rows =
                        crate::exec::scan_table(&mut ctx.exec(), &table, None, &None, None).await?;
                    if default.is_null() && !col.nullable && !rows.is_empty() {
                        return Err(Error::NotNullViolation(col.name.clone()));
                    }
                    table.next_column_id += 1;
                    table.columns.push(col);
                    if !default.is_null() {
                        let mut writes = Vec::new();
                        for (key, mut row) in rows {
                            row.push(default.clone());
                            let value = crate::encoding::encode_row(
                                table.columns.iter().zip(&row).map(|(c, d)| (c.id, d)),
                            );
                            writes.push(bini_txn::put(&key, &value));
                        }
                        if !writes.is_empty() {
                            ctx.txn.write(writes).await?;
                        }
                    }
                }
                ast::AlterTableOperation::DropColumn {
                    column_names,
                    if_exists,
                    ..
                } => {
                    for n in column_names {
                        let name = ident(n);
                        let Some(i) = table.column_index(&name) else {
                            if *if_exists {
                                continue;
                            }
                            return Err(Error::UndefinedColumn(name));
                        };
                        let id = table.columns[i].id;
                        if table.primary.columns.contains(&id) {
                            return Err(Error::FeatureNotSupported(
                                "dropping a primary key column".into(),
                            ));
                        }
                        let dropped: Vec<IndexDesc> = table
                            .indexes
                            .iter()
                            .filter(|x| x.columns.contains(&id))
                            .cloned()
                            .collect();
                        for idx in &dropped {
                            let p = crate::encoding::index_prefix(table.id, idx.id);
                            catalog::delete_span(ctx.txn, &p, &crate::encoding::prefix_end(&p))
                                .await?;
                        }
                        table.indexes.retain(|x| !x.columns.contains(&id));
                        table.columns.remove(i);
                    }
                }
                ast::AlterTableOperation::RenameColumn {
                    old_column_name,
                    new_column_name,
                } => {
                    let (old, new) = (ident(old_column_name), ident(new_column_name));
                    if table.column_index(&new).is_some() {
                        return Err(Error::DuplicateColumn(new));
                    }
                    let i = table
                        .column_index(&old)
                        .ok_or_else(|| Error::UndefinedColumn(old.clone()))?;
                    table.columns[i].name = new;
                }
                ast::AlterTableOperation::RenameTable { table_name } => {
                    let n = match table_name {
                        ast::RenameTableNameKind::As(n) | ast::RenameTableNameKind::To(n) => n,
                    };
                    let new = name_parts(n).pop().unwrap_or_default();
                    if catalog::table(ctx.txn, table.parent_id, &new)
                        .await?
                        .is_some()
                    {
                        return Err(Error::DuplicateTable(new));
                    }
                    table.name = new;
                }
                other => return Err(Error::FeatureNotSupported(format!("ALTER TABLE {other}"))),
            }
        }
        let backfill = (!table.mutations.is_empty()).then_some(table.id);
        catalog::update_table(ctx.txn, &old_name, &mut table).await?;
        Ok(backfill)
    }
}

/// The column names of an index definition (plain columns only).
pub(super) fn index_columns(cols: &[ast::IndexColumn]) -> Result<Vec<String>> {
    cols.iter()
        .map(|ic| match &ic.column.expr {
            ast::Expr::Identifier(i) => Ok(ident(i)),
            other => Err(Error::FeatureNotSupported(format!("index on {other}"))),
        })
        .collect()
}

/// Adds an index on `cols` to the table as a mutation (to be filled by `schema.rs`); a new
/// primary key makes its columns NOT NULL.
pub(super) fn add_index(
    table: &mut TableDesc,
    name: String,
    unique: bool,
    cols: &[String],
    primary: bool,
) -> Result<()> {
    let mut ids = Vec::new();
    let mut made_not_null = Vec::new();
    for c in cols {
        let i = table
            .column_index(c)
            .ok_or_else(|| Error::UndefinedColumn(c.clone()))?;
        let col = &mut table.columns[i];
        if !col.ty.is_indexable() {
            return Err(Error::FeatureNotSupported(format!(
                "column {c} of type {} cannot be indexed",
                col.ty
            )));
        }
        if ids.contains(&col.id) {
            return Err(Error::DuplicateColumn(c.clone()));
        }
        if primary && col.nullable {
            col.nullable = false;
            made_not_null.push(col.id);
        }
        ids.push(col.id);
    }
    let id = table.next_index_id;
    table.next_index_id += 1;
    table.mutations.push(Mutation {
        index: IndexDesc {
            id,
            name,
            unique,
            columns: ids,
        },
        primary,
        made_not_null,
    });
    Ok(())
}

pub(super) fn show_create(t: &TableDesc) -> String {
    let mut parts: Vec<String> = t
        .columns
        .iter()
        .filter(|c| !c.hidden)
        .map(|c| {
            let mut s = format!("{} {}", c.name, c.ty.name());
            if !c.nullable {
                s.push_str(" NOT NULL");
            }
            if let Some(d) = &c.default {
                s.push_str(&format!(" DEFAULT {d}"));
            }
            s
        })
        .collect();
    let names = |ids: &[u32]| {
        ids.iter()
            .filter_map(|id| t.columns.iter().find(|c| c.id == *id))
            .map(|c| c.name.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !t.primary_is_rowid() {
        parts.push(format!(
            "CONSTRAINT {} PRIMARY KEY ({})",
            t.primary.name,
            names(&t.primary.columns)
        ));
    }
    for i in &t.indexes {
        parts.push(format!(
            "{}INDEX {} ({})",
            if i.unique { "UNIQUE " } else { "" },
            i.name,
            names(&i.columns)
        ));
    }
    for c in &t.checks {
        parts.push(format!("CONSTRAINT {} CHECK ({})", c.name, c.expr));
    }
    format!(
        "CREATE TABLE {} (\n    {}\n)",
        t.name,
        parts.join(",\n    ")
    )
}

/// CHECK constraints with the names Postgres gives unnamed ones: `table_column_check` when
/// the expression names one column, else `table_check`, numbered past the first clash.
pub(super) fn name_checks(table: &str, checks: &[(Option<String>, &ast::Expr)]) -> Vec<CheckDesc> {
    let mut taken: HashSet<String> = checks.iter().filter_map(|(n, _)| n.clone()).collect();
    checks
        .iter()
        .map(|(name, expr)| {
            let name = name.clone().unwrap_or_else(|| {
                let mut cols = Vec::new();
                let _ = ast::visit_expressions(*expr, |e| {
                    if let ast::Expr::Identifier(i) = e {
                        let c = ident(i);
                        if !cols.contains(&c) {
                            cols.push(c);
                        }
                    }
                    std::ops::ControlFlow::<()>::Continue(())
                });
                let base = match cols.as_slice() {
                    [c] => format!("{table}_{c}_check"),
                    _ => format!("{table}_check"),
                };
                let mut n = base.clone();
                for i in 1.. {
                    if !taken.contains(&n) {
                        break;
                    }
                    n = format!("{base}{i}");
                }
                taken.insert(n.clone());
                n
            });
            CheckDesc {
                name,
                expr: expr.to_string(),
            }
        })
        .collect()
}
