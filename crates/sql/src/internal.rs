//! `bini_internal.*`: virtual tables, computed from the cluster's state when a query reads
//! them. `SHOW RANGES FROM TABLE t` is a query over `bini_internal.ranges`.
//!
//! - `ranges`: one row per (table, range holding some of its keys) in every database, with
//!   the range's span, replicas and the leaseholder this node knows of (NULL until the node
//!   has routed a request to the range);
//! - `sessions`: this node's SQL sessions, with the statement each is running;
//! - `statements`: this node's statements by text: runs, errors, mean and max latency.
//!
//! `pg_catalog.pg_database`, `pg_namespace`, `pg_class`, `pg_index`, `pg_indexes` and `pg_am`
//! hold what psql's listing commands read (`docs/psql-catalog-queries.md`); oids are descriptor
//! ids.

use crate::catalog::{self, IndexDesc, TableDesc};
use crate::encoding::{table_span, TABLE_PREFIX};
use crate::error::Result;
use crate::plan::{Column, Row};
use crate::planner::Context;
use crate::types::{Datum, Type};

/// The schema name of the virtual tables.
pub const SCHEMA: &str = "bini_internal";

/// Postgres's catalog schema: enough of it for psql's `\l`, `\dt`, `\d`, `\dn`, `\di`.
pub const PG_CATALOG: &str = "pg_catalog";

/// The SQL standard's catalog views: `tables`, `columns`, `schemata` of the current database.
pub const INFORMATION_SCHEMA: &str = "information_schema";

/// Whether `schema` holds virtual tables (read through [`table`]).
pub fn is_virtual_schema(schema: &str) -> bool {
    [SCHEMA, PG_CATALOG, INFORMATION_SCHEMA].contains(&schema)
}

/// Namespace oids, as Postgres numbers them (`bini_internal` has one of its own).
const PG_CATALOG_OID: i64 = 11;
const PUBLIC_OID: i64 = 2200;
const INFORMATION_SCHEMA_OID: i64 = 13000;
const BINI_INTERNAL_OID: i64 = 13100;

/// An index's oid: indexes are numbered within their table, oids must be unique.
fn index_oid(table_id: u32, index_id: u32) -> i64 {
    (1i64 << 31) + (table_id as i64) * 1024 + index_id as i64
}

fn column(name: &str, ty: Type) -> Column {
    Column {
        name: name.into(),
        table: None,
        ty,
        hidden: false,
    }
}

/// The tables of the session's current database (none if it was dropped).
async fn current_tables(ctx: &mut Context<'_>) -> Result<Vec<TableDesc>> {
    match catalog::database(ctx.txn, &ctx.database).await? {
        Some(db) => catalog::tables(ctx.txn, db.id).await,
        None => Ok(Vec::new()),
    }
}

/// The columns and rows of the virtual table `schema.name`, or `None` if there is none.
pub async fn table(
    ctx: &mut Context<'_>,
    schema: &str,
    name: &str,
) -> Result<Option<(Vec<Column>, Vec<Row>)>> {
    match (schema, name) {
        (SCHEMA, "ranges") => ranges(ctx).await.map(Some),
        (SCHEMA, "sessions") => Ok(Some(sessions(ctx))),
        (SCHEMA, "statements") => Ok(Some(statements(ctx))),
        (INFORMATION_SCHEMA, "tables" | "columns" | "schemata") => {
            information_schema(ctx, name).await.map(Some)
        }
        (PG_CATALOG, "pg_database") => pg_database(ctx).await.map(Some),
        (PG_CATALOG, "pg_namespace") => Ok(Some(pg_namespace())),
        (PG_CATALOG, "pg_class") => pg_class(ctx).await.map(Some),
        (PG_CATALOG, "pg_index") => pg_index(ctx).await.map(Some),
        (PG_CATALOG, "pg_indexes") => pg_indexes(ctx).await.map(Some),
        (PG_CATALOG, "pg_roles" | "pg_user" | "pg_authid") => Ok(Some(pg_roles())),
        (PG_CATALOG, "pg_attribute") => pg_attribute(ctx).await.map(Some),
        (PG_CATALOG, "pg_attrdef") => pg_attrdef(ctx).await.map(Some),
        (PG_CATALOG, "pg_constraint") => pg_constraint(ctx).await.map(Some),
        (PG_CATALOG, "pg_type") => Ok(Some(pg_type())),
        (PG_CATALOG, "pg_auth_members") => Ok(Some((
            vec![
                column("roleid", Type::Int8),
                column("member", Type::Int8),
                column("grantor", Type::Int8),
                column("admin_option", Type::Bool),
            ],
            Vec::new(),
        ))),
        (PG_CATALOG, "pg_am") => Ok(Some((
            vec![column("oid", Type::Int8), column("amname", Type::TEXT)],
            vec![
                vec![Datum::Int(2), Datum::String("heap".into())],
                vec![Datum::Int(403), Datum::String("btree".into())],
            ],
        ))),
        (PG_CATALOG, name) => Ok(empty_pg_table(name)),
        _ => Ok(None),
    }
}

async fn ranges(ctx: &mut Context<'_>) -> Result<(Vec<Column>, Vec<Row>)> {
    let columns = vec![
        column("database_name", Type::TEXT),
        column("table_name", Type::TEXT),
        column("range_id", Type::Int8),
        column("start_key", Type::TEXT),
        column("end_key", Type::TEXT),
        column("replicas", Type::TEXT),
        column("lease_holder", Type::Int8),
    ];
    let sender = ctx.db.sender().clone();
    let descs = sender.all_ranges().await?;
    let mut rows = Vec::new();
    for db in catalog::databases(ctx.txn).await? {
        for t in catalog::tables(ctx.txn, db.id).await? {
            let (start, end) = table_span(t.id);
            for r in &descs {
                let overlaps = r.start_key < end
                    && (r.end_key.is_empty() || r.end_key.as_slice() > &start[..]);
                if !overlaps {
                    continue;
                }
                let replicas: Vec<String> =
                    r.replicas.iter().map(|x| x.node_id.to_string()).collect();
                let lease = sender
                    .cached_leaseholder(r.start_key.as_slice().max(&start[..]))
                    .map(|n| Datum::Int(n.0 as i64))
                    .unwrap_or(Datum::Null);
                rows.push(vec![
                    Datum::String(db.name.clone()),
                    Datum::String(t.name.clone()),
                    Datum::Int(r.range_id as i64),
                    Datum::String(pretty_key(&r.start_key)),
                    Datum::String(pretty_key(&r.end_key)),
                    Datum::String(format!("{{{}}}", replicas.join(","))),
                    lease,
                ]);
            }
        }
    }
    Ok((columns, rows))
}

/// `information_schema.tables`, `.columns` and `.schemata` of the current database.
async fn information_schema(ctx: &mut Context<'_>, name: &str) -> Result<(Vec<Column>, Vec<Row>)> {
    let text = |s: &str| Datum::String(s.to_string());
    let catalog_name = ctx.database.clone();
    if name == "schemata" {
        let columns = vec![
            column("catalog_name", Type::TEXT),
            column("schema_name", Type::TEXT),
            column("schema_owner", Type::TEXT),
        ];
        let rows = ["public", INFORMATION_SCHEMA, PG_CATALOG, SCHEMA]
            .iter()
            .map(|s| vec![text(&catalog_name), text(s), text("root")])
            .collect();
        return Ok((columns, rows));
    }
    let tables = current_tables(ctx).await?;
    if name == "tables" {
        let columns = vec![
            column("table_catalog", Type::TEXT),
            column("table_schema", Type::TEXT),
            column("table_name", Type::TEXT),
            column("table_type", Type::TEXT),
        ];
        let rows = tables
            .iter()
            .map(|t| {
                vec![
                    text(&catalog_name),
                    text("public"),
                    text(&t.name),
                    text("BASE TABLE"),
                ]
            })
            .collect();
        return Ok((columns, rows));
    }
    let columns = vec![
        column("table_catalog", Type::TEXT),
        column("table_schema", Type::TEXT),
        column("table_name", Type::TEXT),
        column("column_name", Type::TEXT),
        column("ordinal_position", Type::Int8),
        column("column_default", Type::TEXT),
        column("is_nullable", Type::TEXT),
        column("data_type", Type::TEXT),
        column("character_maximum_length", Type::Int8),
    ];
    let mut rows = Vec::new();
    for t in &tables {
        for (i, c) in t.columns.iter().filter(|c| !c.hidden).enumerate() {
            let max_len = match c.ty {
                Type::String {
                    max_len: Some(n), ..
                } => Datum::Int(n as i64),
                _ => Datum::Null,
            };
            rows.push(vec![
                text(&catalog_name),
                text("public"),
                text(&t.name),
                text(&c.name),
                Datum::Int(i as i64 + 1),
                c.default.clone().map(Datum::String).unwrap_or(Datum::Null),
                text(if c.nullable { "YES" } else { "NO" }),
                text(c.ty.pg_name()),
                max_len,
            ]);
        }
    }
    Ok((columns, rows))
}

async fn pg_database(ctx: &mut Context<'_>) -> Result<(Vec<Column>, Vec<Row>)> {
    let columns = vec![
        column("oid", Type::Int8),
        column("datname", Type::TEXT),
        column("datdba", Type::Int8),
        column("encoding", Type::Int4),
        column("datcollate", Type::TEXT),
        column("datctype", Type::TEXT),
        column("daticulocale", Type::TEXT),
        column("datlocprovider", Type::TEXT),
        column("datacl", Type::TEXT),
    ];
    let rows = catalog::databases(ctx.txn)
        .await?
        .into_iter()
        .map(|d| {
            vec![
                Datum::Int(d.id as i64),
                Datum::String(d.name),
                Datum::Int(crate::functions::ROOT_OID),
                Datum::Int(6),
                Datum::String("C.UTF-8".into()),
                Datum::String("C.UTF-8".into()),
                Datum::Null,
                Datum::String("c".into()),
                Datum::Null,
            ]
        })
        .collect();
    Ok((columns, rows))
}

/// Catalogs of features bini does not have (collations beyond the default, row-level security,
/// extended statistics, logical replication, inheritance, triggers, tablespaces): they exist,
/// with Postgres's columns, and are empty.
fn empty_pg_table(name: &str) -> Option<(Vec<Column>, Vec<Row>)> {
    use Type as T;
    let cols: &[(&str, Type)] = match name {
        "pg_collation" => &[
            ("oid", T::Int8),
            ("collname", T::TEXT),
            ("collnamespace", T::Int8),
        ],
        "pg_policy" => &[
            ("oid", T::Int8),
            ("polname", T::TEXT),
            ("polrelid", T::Int8),
            ("polcmd", T::TEXT),
            ("polpermissive", T::Bool),
            ("polroles", T::TEXT),
            ("polqual", T::TEXT),
            ("polwithcheck", T::TEXT),
        ],
        "pg_statistic_ext" => &[
            ("oid", T::Int8),
            ("stxrelid", T::Int8),
            ("stxname", T::TEXT),
            ("stxnamespace", T::Int8),
            ("stxstattarget", T::Int4),
            ("stxkind", T::TEXT),
        ],
        "pg_publication" => &[
            ("oid", T::Int8),
            ("pubname", T::TEXT),
            ("puballtables", T::Bool),
        ],
        "pg_publication_namespace" => {
            &[("oid", T::Int8), ("pnpubid", T::Int8), ("pnnspid", T::Int8)]
        }
        "pg_publication_rel" => &[
            ("oid", T::Int8),
            ("prpubid", T::Int8),
            ("prrelid", T::Int8),
            ("prqual", T::TEXT),
            ("prattrs", T::TEXT),
        ],
        "pg_inherits" => &[
            ("inhrelid", T::Int8),
            ("inhparent", T::Int8),
            ("inhseqno", T::Int4),
            ("inhdetachpending", T::Bool),
        ],
        "pg_trigger" => &[
            ("oid", T::Int8),
            ("tgrelid", T::Int8),
            ("tgparentid", T::Int8),
            ("tgname", T::TEXT),
            ("tgenabled", T::TEXT),
            ("tgisinternal", T::Bool),
        ],
        "pg_tablespace" => &[("oid", T::Int8), ("spcname", T::TEXT)],
        _ => return None,
    };
    Some((
        cols.iter().map(|(n, t)| column(n, t.clone())).collect(),
        Vec::new(),
    ))
}

/// A column's type modifier as Postgres stores it (`atttypmod`): length + 4, or
/// (precision << 16 | scale) + 4; -1 for none.
fn typmod(ty: &Type) -> i64 {
    match ty {
        Type::String {
            max_len: Some(n), ..
        } => i64::from(*n) + 4,
        Type::Decimal {
            precision: Some(p),
            scale,
        } => ((i64::from(*p) << 16) | i64::from(scale.unwrap_or(0))) + 4,
        _ => -1,
    }
}

/// `pg_attribute`: the visible columns of the current database's tables, numbered from 1.
async fn pg_attribute(ctx: &mut Context<'_>) -> Result<(Vec<Column>, Vec<Row>)> {
    let columns = vec![
        column("attrelid", Type::Int8),
        column("attname", Type::TEXT),
        column("atttypid", Type::Int8),
        column("atttypmod", Type::Int4),
        column("attnum", Type::Int2),
        column("atthasdef", Type::Bool),
        column("attnotnull", Type::Bool),
        column("attcollation", Type::Int8),
        column("attidentity", Type::TEXT),
        column("attgenerated", Type::TEXT),
        column("attisdropped", Type::Bool),
    ];
    let mut rows = Vec::new();
    for t in current_tables(ctx).await? {
        for (i, c) in t.columns.iter().filter(|c| !c.hidden).enumerate() {
            rows.push(vec![
                Datum::Int(t.id as i64),
                Datum::String(c.name.clone()),
                Datum::Int(i64::from(c.ty.oid())),
                Datum::Int(typmod(&c.ty)),
                Datum::Int(i as i64 + 1),
                Datum::Bool(c.default.is_some()),
                Datum::Bool(!c.nullable),
                Datum::Int(0),
                Datum::String(String::new()),
                Datum::String(String::new()),
                Datum::Bool(false),
            ]);
        }
    }
    Ok((columns, rows))
}

/// `pg_attrdef`: column defaults, as SQL text (which `pg_get_expr` returns as it is).
async fn pg_attrdef(ctx: &mut Context<'_>) -> Result<(Vec<Column>, Vec<Row>)> {
    let columns = vec![
        column("oid", Type::Int8),
        column("adrelid", Type::Int8),
        column("adnum", Type::Int2),
        column("adbin", Type::TEXT),
    ];
    let mut rows = Vec::new();
    for t in current_tables(ctx).await? {
        for (i, c) in t.columns.iter().filter(|c| !c.hidden).enumerate() {
            if let Some(d) = &c.default {
                rows.push(vec![
                    Datum::Int(constraint_oid(t.id, 2048 + i as u32)),
                    Datum::Int(t.id as i64),
                    Datum::Int(i as i64 + 1),
                    Datum::String(d.clone()),
                ]);
            }
        }
    }
    Ok((columns, rows))
}

/// A constraint's oid: the table's `n`th (index id for key constraints, 1024 + position for
/// checks).
fn constraint_oid(table_id: u32, n: u32) -> i64 {
    (3i64 << 30) + (table_id as i64) * 4096 + n as i64
}

/// A table's constraints: (oid, name, contype, index oid or 0, definition).
fn constraints(t: &TableDesc) -> Vec<(i64, String, &'static str, i64, String)> {
    let cols = |idx: &IndexDesc| {
        t.index_positions(idx)
            .into_iter()
            .map(|i| t.columns[i].name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = Vec::new();
    for (idx, primary) in indexes(t) {
        if primary || idx.unique {
            let (kind, what) = if primary {
                ("p", "PRIMARY KEY")
            } else {
                ("u", "UNIQUE")
            };
            out.push((
                constraint_oid(t.id, idx.id),
                idx.name.clone(),
                kind,
                index_oid(t.id, idx.id),
                format!("{what} ({})", cols(idx)),
            ));
        }
    }
    for (i, c) in t.checks.iter().enumerate() {
        out.push((
            constraint_oid(t.id, 1024 + i as u32),
            c.name.clone(),
            "c",
            0,
            format!("CHECK ({})", c.expr),
        ));
    }
    out
}

/// `pg_constraint`: primary keys, unique constraints and checks.
async fn pg_constraint(ctx: &mut Context<'_>) -> Result<(Vec<Column>, Vec<Row>)> {
    let columns = vec![
        column("oid", Type::Int8),
        column("conname", Type::TEXT),
        column("connamespace", Type::Int8),
        column("contype", Type::TEXT),
        column("condeferrable", Type::Bool),
        column("condeferred", Type::Bool),
        column("conrelid", Type::Int8),
        column("conindid", Type::Int8),
        column("conparentid", Type::Int8),
        column("confrelid", Type::Int8),
    ];
    let mut rows = Vec::new();
    for t in current_tables(ctx).await? {
        for (oid, name, kind, index, _) in constraints(&t) {
            rows.push(vec![
                Datum::Int(oid),
                Datum::String(name),
                Datum::Int(PUBLIC_OID),
                Datum::String(kind.into()),
                Datum::Bool(false),
                Datum::Bool(false),
                Datum::Int(t.id as i64),
                Datum::Int(index),
                Datum::Int(0),
                Datum::Int(0),
            ]);
        }
    }
    Ok((columns, rows))
}

/// Constraint oid → definition (`pg_get_constraintdef`), for the current database.
pub async fn constraint_definitions(ctx: &mut Context<'_>) -> Result<Vec<(i64, String)>> {
    Ok(current_tables(ctx)
        .await?
        .iter()
        .flat_map(|t| constraints(t).into_iter().map(|(oid, .., def)| (oid, def)))
        .collect())
}

/// Index oid → `CREATE INDEX` statement (`pg_get_indexdef`), for the current database.
pub async fn index_definitions(ctx: &mut Context<'_>) -> Result<Vec<(i64, String)>> {
    let mut out = Vec::new();
    for t in current_tables(ctx).await? {
        for (idx, _) in indexes(&t) {
            out.push((index_oid(t.id, idx.id), index_definition(&t, idx)));
        }
    }
    Ok(out)
}

fn index_definition(t: &TableDesc, idx: &IndexDesc) -> String {
    let cols: Vec<&str> = t
        .index_positions(idx)
        .into_iter()
        .map(|i| t.columns[i].name.as_str())
        .collect();
    format!(
        "CREATE {}INDEX {} ON public.{} USING btree ({})",
        if idx.unique { "UNIQUE " } else { "" },
        idx.name,
        t.name,
        cols.join(", ")
    )
}

/// `pg_type`: the types bini has.
fn pg_type() -> (Vec<Column>, Vec<Row>) {
    let columns = vec![
        column("oid", Type::Int8),
        column("typname", Type::TEXT),
        column("typnamespace", Type::Int8),
        column("typcollation", Type::Int8),
        column("typtype", Type::TEXT),
    ];
    let names: &[(i64, &str, i64)] = &[
        (16, "bool", 0),
        (17, "bytea", 0),
        (19, "name", 950),
        (20, "int8", 0),
        (21, "int2", 0),
        (23, "int4", 0),
        (25, "text", 100),
        (26, "oid", 0),
        (700, "float4", 0),
        (701, "float8", 0),
        (1042, "bpchar", 100),
        (1043, "varchar", 100),
        (1082, "date", 0),
        (1114, "timestamp", 0),
        (1184, "timestamptz", 0),
        (1186, "interval", 0),
        (1700, "numeric", 0),
        (2950, "uuid", 0),
        (3802, "jsonb", 0),
    ];
    let rows = names
        .iter()
        .map(|(oid, name, coll)| {
            vec![
                Datum::Int(*oid),
                Datum::String((*name).into()),
                Datum::Int(PG_CATALOG_OID),
                Datum::Int(*coll),
                Datum::String("b".into()),
            ]
        })
        .collect();
    (columns, rows)
}

/// The roles: bini has one user so far, `root`, a superuser.
fn pg_roles() -> (Vec<Column>, Vec<Row>) {
    let flags = [
        "rolsuper",
        "rolinherit",
        "rolcreaterole",
        "rolcreatedb",
        "rolcanlogin",
        "rolreplication",
        "rolbypassrls",
    ];
    let mut columns = vec![column("oid", Type::Int8), column("rolname", Type::TEXT)];
    columns.extend(flags.iter().map(|f| column(f, Type::Bool)));
    columns.push(column("rolconnlimit", Type::Int4));
    columns.push(column("rolvaliduntil", Type::TimestampTz));
    let mut root = vec![
        Datum::Int(crate::functions::ROOT_OID),
        Datum::String("root".into()),
    ];
    root.extend(flags.iter().map(|_| Datum::Bool(true)));
    root.push(Datum::Int(-1));
    root.push(Datum::Null);
    (columns, vec![root])
}

fn pg_namespace() -> (Vec<Column>, Vec<Row>) {
    let columns = vec![
        column("oid", Type::Int8),
        column("nspname", Type::TEXT),
        column("nspowner", Type::Int8),
    ];
    let rows = [
        (PG_CATALOG_OID, PG_CATALOG),
        (PUBLIC_OID, "public"),
        (INFORMATION_SCHEMA_OID, "information_schema"),
        (BINI_INTERNAL_OID, SCHEMA),
    ]
    .into_iter()
    .map(|(oid, name)| {
        vec![
            Datum::Int(oid),
            Datum::String(name.into()),
            Datum::Int(crate::functions::ROOT_OID),
        ]
    })
    .collect();
    (columns, rows)
}

/// The current database's tables (relkind `r`) and their secondary indexes (`i`).
async fn pg_class(ctx: &mut Context<'_>) -> Result<(Vec<Column>, Vec<Row>)> {
    let columns = vec![
        column("oid", Type::Int8),
        column("relname", Type::TEXT),
        column("relnamespace", Type::Int8),
        column("relkind", Type::TEXT),
        column("relowner", Type::Int8),
        column("relam", Type::Int8),
        column("reltablespace", Type::Int8),
        column("relhasindex", Type::Bool),
        column("relchecks", Type::Int2),
        column("relhasrules", Type::Bool),
        column("relhastriggers", Type::Bool),
        column("relrowsecurity", Type::Bool),
        column("relforcerowsecurity", Type::Bool),
        column("relispartition", Type::Bool),
        column("reloftype", Type::Int8),
        column("relpersistence", Type::TEXT),
        column("relreplident", Type::TEXT),
        column("reltoastrelid", Type::Int8),
        column("relpartbound", Type::TEXT),
    ];
    let mut rows = Vec::new();
    let class = |oid: i64, name: &str, kind: &str, has_index: bool, checks: usize| {
        let f = Datum::Bool(false);
        vec![
            Datum::Int(oid),
            Datum::String(name.into()),
            Datum::Int(PUBLIC_OID),
            Datum::String(kind.into()),
            Datum::Int(crate::functions::ROOT_OID),
            Datum::Int(if kind == "i" { 403 } else { 2 }),
            Datum::Int(0),
            Datum::Bool(has_index),
            Datum::Int(checks as i64),
            f.clone(),
            f.clone(),
            f.clone(),
            f.clone(),
            f,
            Datum::Int(0),
            Datum::String("p".into()),
            Datum::String("d".into()),
            Datum::Int(0),
            Datum::Null,
        ]
    };
    for t in current_tables(ctx).await? {
        let has_index = indexes(&t).next().is_some();
        rows.push(class(t.id as i64, &t.name, "r", has_index, t.checks.len()));
        for (idx, _) in indexes(&t) {
            rows.push(class(index_oid(t.id, idx.id), &idx.name, "i", false, 0));
        }
    }
    Ok((columns, rows))
}

async fn pg_index(ctx: &mut Context<'_>) -> Result<(Vec<Column>, Vec<Row>)> {
    let columns = vec![
        column("indexrelid", Type::Int8),
        column("indrelid", Type::Int8),
        column("indisunique", Type::Bool),
        column("indisprimary", Type::Bool),
        column("indisclustered", Type::Bool),
        column("indisvalid", Type::Bool),
        column("indisreplident", Type::Bool),
    ];
    let mut rows = Vec::new();
    for t in current_tables(ctx).await? {
        for (idx, primary) in indexes(&t) {
            rows.push(vec![
                Datum::Int(index_oid(t.id, idx.id)),
                Datum::Int(t.id as i64),
                Datum::Bool(idx.unique),
                Datum::Bool(primary),
                Datum::Bool(false),
                Datum::Bool(true),
                Datum::Bool(false),
            ]);
        }
    }
    Ok((columns, rows))
}

/// A table's indexes as Postgres lists them: the primary key's (unless it is the hidden row
/// id), then the secondary ones; with whether each is the primary.
fn indexes(t: &TableDesc) -> impl Iterator<Item = (&IndexDesc, bool)> {
    let primary = (!t.primary_is_rowid()).then_some((&t.primary, true));
    primary
        .into_iter()
        .chain(t.indexes.iter().map(|i| (i, false)))
}

/// `pg_indexes`: one row per index, with the statement that would create it.
async fn pg_indexes(ctx: &mut Context<'_>) -> Result<(Vec<Column>, Vec<Row>)> {
    let columns = vec![
        column("schemaname", Type::TEXT),
        column("tablename", Type::TEXT),
        column("indexname", Type::TEXT),
        column("tablespace", Type::TEXT),
        column("indexdef", Type::TEXT),
    ];
    let mut rows = Vec::new();
    for t in current_tables(ctx).await? {
        for (idx, _) in indexes(&t) {
            let def = index_definition(&t, idx);
            rows.push(vec![
                Datum::String("public".into()),
                Datum::String(t.name.clone()),
                Datum::String(idx.name.clone()),
                Datum::Null,
                Datum::String(def),
            ]);
        }
    }
    Ok((columns, rows))
}

fn sessions(ctx: &Context<'_>) -> (Vec<Column>, Vec<Row>) {
    let columns = vec![
        column("session_id", Type::Int8),
        column("user_name", Type::TEXT),
        column("database_name", Type::TEXT),
        column("client_address", Type::TEXT),
        column("application_name", Type::TEXT),
        column("active_query", Type::TEXT),
        column("session_start", Type::TimestampTz),
        column("txn_state", Type::TEXT),
    ];
    let rows = ctx
        .registry
        .sessions()
        .into_iter()
        .map(|s| {
            vec![
                Datum::Int(s.id as i64),
                Datum::String(s.user),
                Datum::String(s.database),
                Datum::String(s.client),
                Datum::String(s.application),
                s.active_query.map(Datum::String).unwrap_or(Datum::Null),
                Datum::TimestampTz(s.started),
                Datum::String(s.txn_state.into()),
            ]
        })
        .collect();
    (columns, rows)
}

fn statements(ctx: &Context<'_>) -> (Vec<Column>, Vec<Row>) {
    let columns = vec![
        column("statement", Type::TEXT),
        column("count", Type::Int8),
        column("errors", Type::Int8),
        column("mean_latency_ms", Type::Float8),
        column("max_latency_ms", Type::Float8),
    ];
    let rows = ctx
        .registry
        .statements()
        .into_iter()
        .map(|(text, s)| {
            let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
            vec![
                Datum::String(text),
                Datum::Int(s.count as i64),
                Datum::Int(s.errors as i64),
                Datum::Float(ms(s.total) / s.count.max(1) as f64),
                Datum::Float(ms(s.max)),
            ]
        })
        .collect();
    (columns, rows)
}

/// A key as people read it: `/Table/<id>/<index>/<rest>` for table data, `/Min` and `/Max`
/// for the ends of the keyspace, the KV layer's printable form otherwise.
pub fn pretty_key(key: &[u8]) -> String {
    if key.is_empty() {
        return "/Min".into();
    }
    if key == bini_kv::keys::KEY_MAX {
        return "/Max".into();
    }
    if key[0] == TABLE_PREFIX && key.len() >= 5 {
        let id = u32::from_be_bytes([key[1], key[2], key[3], key[4]]);
        let mut s = format!("/Table/{id}");
        if key.len() >= 9 {
            let index = u32::from_be_bytes([key[5], key[6], key[7], key[8]]);
            s += &format!("/{index}");
            if key.len() > 9 {
                s += "/";
                s += &bini_kv::keys::pretty(&key[9..]);
            }
        } else if key.len() > 5 {
            s += "/";
            s += &bini_kv::keys::pretty(&key[5..]);
        }
        return s;
    }
    bini_kv::keys::pretty(key)
}

/// A key of one of `table`'s indexes (`index_id`, over the columns at `positions`) with its
/// column values spelled out (`/Table/52/1/7/x`) where their key forms can be decoded.
pub fn pretty_index_key(
    table: &TableDesc,
    index_id: u32,
    positions: &[usize],
    key: &[u8],
) -> String {
    let prefix = crate::encoding::index_prefix(table.id, index_id);
    let Some(mut rest) = key.strip_prefix(prefix.as_slice()) else {
        return pretty_key(key);
    };
    let mut s = pretty_key(&prefix);
    for i in positions {
        if rest.is_empty() {
            break;
        }
        match crate::encoding::decode_key_datum(&table.columns[*i].ty, rest) {
            Some((d, r)) => {
                s += "/";
                s += &d.to_string();
                rest = r;
            }
            None => break,
        }
    }
    if !rest.is_empty() {
        s += "/";
        s += &bini_kv::keys::pretty(rest);
    }
    s
}

/// A key of `table`'s primary index, values spelled out.
pub fn pretty_primary_key(table: &TableDesc, key: &[u8]) -> String {
    pretty_index_key(table, table.primary.id, &table.primary_positions(), key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::index_prefix;

    #[test]
    fn table_keys_print_as_table_index_and_rest() {
        assert_eq!(pretty_key(&table_span(52).0), "/Table/52");
        assert_eq!(pretty_key(&table_span(52).1), "/Table/53");
        assert_eq!(pretty_key(&index_prefix(52, 1)), "/Table/52/1");
        let mut k = index_prefix(52, 2);
        k.extend_from_slice(b"ab");
        assert_eq!(pretty_key(&k), "/Table/52/2/ab");
        assert_eq!(pretty_key(b""), "/Min");
        assert_eq!(pretty_key(b"\xff\xff"), "/Max");
    }
}
