//! The catalog: databases and tables, stored as versioned descriptors in the system span.
//!
//! ```text
//!   \x03sql/ns/<parent id:4><name>   → id (4 bytes)       names; parent 0 for databases
//!   \x03sql/desc/<id:4>              → descriptor (JSON)
//!   \x03sql/id                       → the last id handed out (an integer counter)
//! ```
//!
//! Descriptors are read and written inside the statement's transaction, so DDL is
//! transactional and a statement sees the catalog as of its own timestamp. Ids come from a
//! counter incremented outside any transaction (an id is never reused, even if the
//! transaction that took it rolls back). A table descriptor's `version` goes up on every
//! change. Every table lives in its database's `public` schema.
//!
//! [`DescCache`] remembers which descriptor ids names resolve to, so a statement reads one
//! key — its table's descriptor, in its own transaction — instead of four (two names, two
//! descriptors).
//!
//! Left out for now: schemas other than `public`, and foreign keys.

use serde::{Deserialize, Serialize};

use bini_txn::{Db, Txn};

use crate::encoding::{index_prefix, prefix_end, table_span};
use crate::error::{Error, Result};
use crate::types::Type;

const NS_PREFIX: &[u8] = b"\x03sql/ns/";
const DESC_PREFIX: &[u8] = b"\x03sql/desc/";
const ID_COUNTER: &[u8] = b"\x03sql/id";

/// The database every session starts in.
pub const DEFAULT_DATABASE: &str = "defaultdb";

/// A database.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatabaseDesc {
    /// Its id.
    pub id: u32,
    /// Its name.
    pub name: String,
}

/// A column of a table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ColumnDesc {
    /// Stable id (row values are keyed by it).
    pub id: u32,
    /// Name.
    pub name: String,
    /// Declared type.
    pub ty: Type,
    /// Whether NULL is allowed.
    pub nullable: bool,
    /// The DEFAULT expression, as SQL text.
    pub default: Option<String>,
    /// Hidden from `SELECT *` (the row id of a table without a primary key).
    pub hidden: bool,
}

/// An index of a table (the primary index holds the rows).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IndexDesc {
    /// Id within the table (the primary index is 1).
    pub id: u32,
    /// Name.
    pub name: String,
    /// Whether the indexed columns are unique.
    pub unique: bool,
    /// The indexed columns, by column id.
    pub columns: Vec<u32>,
}

/// A CHECK constraint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckDesc {
    /// Name.
    pub name: String,
    /// The boolean expression, as SQL text.
    pub expr: String,
}

/// A table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TableDesc {
    /// Its id (the key prefix of its data).
    pub id: u32,
    /// The database it belongs to.
    pub parent_id: u32,
    /// Name.
    pub name: String,
    /// Goes up on every change.
    pub version: u64,
    /// Columns, in declaration order.
    pub columns: Vec<ColumnDesc>,
    /// The next column id to give out.
    pub next_column_id: u32,
    /// The primary index.
    pub primary: IndexDesc,
    /// Secondary indexes.
    pub indexes: Vec<IndexDesc>,
    /// The next index id to give out.
    pub next_index_id: u32,
    /// CHECK constraints.
    pub checks: Vec<CheckDesc>,
    /// Indexes being built by a schema change: writers keep them up to date, readers do not
    /// use them yet (see `schema.rs`).
    #[serde(default)]
    pub mutations: Vec<Mutation>,
}

/// An index under construction. While a new primary index is being built (ALTER TABLE … ADD
/// PRIMARY KEY) the table's secondary indexes are rebuilt beside it, keyed by the new primary
/// key; they become the table's indexes when the new primary does.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Mutation {
    /// The index (ids are the table's, from `next_index_id`).
    pub index: IndexDesc,
    /// Whether it is to become the primary index (it holds whole rows).
    pub primary: bool,
    /// Columns the change made NOT NULL (given back if it fails).
    #[serde(default)]
    pub made_not_null: Vec<u32>,
}

impl TableDesc {
    /// The position of the column called `name`.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The position of the column with id `id`.
    pub fn column_index_by_id(&self, id: u32) -> Option<usize> {
        self.columns.iter().position(|c| c.id == id)
    }

    /// Positions of an index's columns.
    pub fn index_positions(&self, index: &IndexDesc) -> Vec<usize> {
        index
            .columns
            .iter()
            .filter_map(|id| self.column_index_by_id(*id))
            .collect()
    }

    /// Positions of the primary key columns.
    pub fn primary_positions(&self) -> Vec<usize> {
        self.index_positions(&self.primary)
    }

    /// The span of the primary index.
    pub fn primary_span(&self) -> (Vec<u8>, Vec<u8>) {
        let p = index_prefix(self.id, self.primary.id);
        let end = prefix_end(&p);
        (p, end)
    }

    /// Every key of the table.
    pub fn span(&self) -> (Vec<u8>, Vec<u8>) {
        table_span(self.id)
    }

    /// Whether the primary key is the hidden row id of a table created without one.
    pub fn primary_is_rowid(&self) -> bool {
        self.primary.columns.iter().any(|id| {
            self.column_index_by_id(*id)
                .is_some_and(|i| self.columns[i].hidden)
        })
    }

    /// Positions of the primary key columns that index entries carry: those of the primary
    /// index being built, if there is one, else the current primary's. Entries of
    /// secondary-index mutations use these; entries of `indexes` use the current primary's.
    pub fn future_primary_positions(&self) -> Vec<usize> {
        match self.mutations.iter().find(|m| m.primary) {
            Some(m) => self.index_positions(&m.index),
            None => self.primary_positions(),
        }
    }

    /// The index called `name`, primary included.
    pub fn index(&self, name: &str) -> Option<&IndexDesc> {
        std::iter::once(&self.primary)
            .chain(&self.indexes)
            .find(|i| i.name == name)
    }

    /// The index with id `id`, primary included.
    pub fn index_by_id(&self, id: u32) -> Option<&IndexDesc> {
        std::iter::once(&self.primary)
            .chain(&self.indexes)
            .find(|i| i.id == id)
    }
}

/// Any descriptor.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Descriptor {
    /// A database.
    Database(DatabaseDesc),
    /// A table.
    Table(TableDesc),
}

fn ns_key(parent: u32, name: &str) -> Vec<u8> {
    let mut k = NS_PREFIX.to_vec();
    k.extend_from_slice(&parent.to_be_bytes());
    k.extend_from_slice(name.as_bytes());
    k
}

fn desc_key(id: u32) -> Vec<u8> {
    let mut k = DESC_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn decode_id(v: &[u8]) -> Result<u32> {
    Ok(u32::from_be_bytes(v.try_into().map_err(|_| {
        Error::Internal("a namespace entry does not decode".into())
    })?))
}

fn decode_desc(v: &[u8]) -> Result<Descriptor> {
    serde_json::from_slice(v)
        .map_err(|e| Error::Internal(format!("a descriptor does not decode: {e}")))
}

/// Takes a new descriptor id (outside any transaction).
pub async fn allocate_id(db: &Db) -> Result<u32> {
    use bini_proto::{request, IncrementRequest, Request};
    let req = Request {
        kind: Some(request::Kind::Increment(IncrementRequest {
            key: ID_COUNTER.to_vec(),
            delta: 1,
        })),
    };
    let resp = db.batch(vec![req]).await?;
    let id = resp.first().map(|r| r.integer).unwrap_or_default();
    // Ids below 100 are left for system tables.
    u32::try_from(id + 100).map_err(|_| Error::Internal("descriptor ids exhausted".into()))
}

async fn lookup(txn: &mut Txn, parent: u32, name: &str) -> Result<Option<Descriptor>> {
    match lookup_bytes(txn, parent, name).await? {
        Some(v) => Ok(Some(decode_desc(&v)?)),
        None => Ok(None),
    }
}

/// The stored descriptor the name `name` under `parent` points at.
async fn lookup_bytes(txn: &mut Txn, parent: u32, name: &str) -> Result<Option<Vec<u8>>> {
    let Some(id) = txn.get(&ns_key(parent, name)).await? else {
        return Ok(None);
    };
    let id = decode_id(&id)?;
    match txn.get(&desc_key(id)).await? {
        Some(v) => Ok(Some(v)),
        None => Err(Error::Internal(format!(
            "name {name} points at missing descriptor {id}"
        ))),
    }
}

async fn list(txn: &mut Txn, parent: u32) -> Result<Vec<Descriptor>> {
    let mut prefix = NS_PREFIX.to_vec();
    prefix.extend_from_slice(&parent.to_be_bytes());
    let rows = txn.scan(&prefix, &prefix_end(&prefix), 0).await?;
    let keys: Vec<Vec<u8>> = rows
        .iter()
        .map(|kv| decode_id(&kv.value).map(desc_key))
        .collect::<Result<_>>()?;
    let descs = txn.get_many(&keys).await?;
    descs
        .into_iter()
        .flatten()
        .map(|v| decode_desc(&v))
        .collect()
}

/// The database called `name`.
pub async fn database(txn: &mut Txn, name: &str) -> Result<Option<DatabaseDesc>> {
    match lookup(txn, 0, name).await? {
        Some(Descriptor::Database(d)) => Ok(Some(d)),
        _ => Ok(None),
    }
}

/// The database called `name`, or an error naming it.
pub async fn must_database(txn: &mut Txn, name: &str) -> Result<DatabaseDesc> {
    database(txn, name)
        .await?
        .ok_or_else(|| Error::UndefinedDatabase(name.to_string()))
}

/// Whether a database exists (read in a transaction of its own).
pub async fn database_exists(db: &Db, name: &str) -> Result<bool> {
    let mut txn = db.begin();
    let found = database(&mut txn, name).await;
    let _ = txn.rollback().await;
    Ok(found?.is_some())
}

/// Every database, by name.
pub async fn databases(txn: &mut Txn) -> Result<Vec<DatabaseDesc>> {
    let mut out: Vec<DatabaseDesc> = list(txn, 0)
        .await?
        .into_iter()
        .filter_map(|d| match d {
            Descriptor::Database(d) => Some(d),
            _ => None,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Creates a database; `Ok(None)` if it exists and `if_not_exists`.
pub async fn create_database(
    db: &Db,
    txn: &mut Txn,
    name: &str,
    if_not_exists: bool,
) -> Result<Option<DatabaseDesc>> {
    if database(txn, name).await?.is_some() {
        if if_not_exists {
            return Ok(None);
        }
        return Err(Error::DuplicateDatabase(name.to_string()));
    }
    let desc = DatabaseDesc {
        id: allocate_id(db).await?,
        name: name.to_string(),
    };
    write_descriptor(txn, 0, name, desc.id, &Descriptor::Database(desc.clone())).await?;
    Ok(Some(desc))
}

async fn write_descriptor(
    txn: &mut Txn,
    parent: u32,
    name: &str,
    id: u32,
    desc: &Descriptor,
) -> Result<()> {
    let bytes = serde_json::to_vec(desc)
        .map_err(|e| Error::Internal(format!("descriptor does not encode: {e}")))?;
    txn.write(vec![
        bini_txn::put(&ns_key(parent, name), &id.to_be_bytes()),
        bini_txn::put(&desc_key(id), &bytes),
    ])
    .await?;
    Ok(())
}

/// The table `name` in database `db_id`.
pub async fn table(txn: &mut Txn, db_id: u32, name: &str) -> Result<Option<TableDesc>> {
    match lookup(txn, db_id, name).await? {
        Some(Descriptor::Table(t)) => Ok(Some(t)),
        _ => Ok(None),
    }
}

/// The table with id `id`.
pub async fn table_by_id(txn: &mut Txn, id: u32) -> Result<Option<TableDesc>> {
    match txn.get(&desc_key(id)).await? {
        Some(v) => match decode_desc(&v)? {
            Descriptor::Table(t) => Ok(Some(t)),
            Descriptor::Database(_) => Ok(None),
        },
        None => Ok(None),
    }
}

/// Every table of a database, by name.
pub async fn tables(txn: &mut Txn, db_id: u32) -> Result<Vec<TableDesc>> {
    let mut out: Vec<TableDesc> = list(txn, db_id)
        .await?
        .into_iter()
        .filter_map(|d| match d {
            Descriptor::Table(t) => Some(t),
            _ => None,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Stores a new table (its id already allocated).
pub async fn create_table(txn: &mut Txn, desc: &TableDesc) -> Result<()> {
    write_descriptor(
        txn,
        desc.parent_id,
        &desc.name,
        desc.id,
        &Descriptor::Table(desc.clone()),
    )
    .await
}

/// Stores a changed table, bumping its version (and moving its name entry if renamed).
pub async fn update_table(txn: &mut Txn, old_name: &str, desc: &mut TableDesc) -> Result<()> {
    desc.version += 1;
    if old_name != desc.name {
        txn.delete(&ns_key(desc.parent_id, old_name)).await?;
    }
    create_table(txn, desc).await
}

/// Removes a table: its name, its descriptor and its data.
pub async fn drop_table(txn: &mut Txn, desc: &TableDesc) -> Result<()> {
    let (start, end) = desc.span();
    delete_span(txn, &start, &end).await?;
    txn.write(vec![
        bini_txn::delete(&ns_key(desc.parent_id, &desc.name)),
        bini_txn::delete(&desc_key(desc.id)),
    ])
    .await?;
    Ok(())
}

/// Removes a database and everything in it.
pub async fn drop_database(txn: &mut Txn, desc: &DatabaseDesc) -> Result<()> {
    for t in tables(txn, desc.id).await? {
        drop_table(txn, &t).await?;
    }
    txn.write(vec![
        bini_txn::delete(&ns_key(0, &desc.name)),
        bini_txn::delete(&desc_key(desc.id)),
    ])
    .await?;
    Ok(())
}

/// The most names a [`DescCache`] remembers.
const DESC_CACHE_MAX_TABLES: usize = 10_000;

/// Which table descriptor a (database, table) name pair resolves to, kept across
/// transactions, with the descriptor last read for it.
///
/// Why it is safe: a lookup still reads the table's descriptor key in the caller's
/// transaction, so the descriptor is exactly what that transaction would see and joins its
/// read set (a concurrent change conflicts with it like any write to what it read). Only the
/// name resolution is remembered, and it is checked: the descriptor read must still carry
/// that name and database, else (renamed, dropped, or dropped and made again under a new id)
/// the name is resolved afresh. The cached bytes only spare decoding identical ones.
#[derive(Default)]
pub struct DescCache {
    tables: parking_lot::Mutex<std::collections::HashMap<(String, String), CachedTable>>,
}

struct CachedTable {
    /// The descriptor as last read (its id and database id included).
    desc: TableDesc,
    /// Its stored bytes.
    bytes: Vec<u8>,
}

impl DescCache {
    /// The table `name` of database `db`, as `txn` sees it.
    pub async fn table(&self, txn: &mut Txn, db: &str, name: &str) -> Result<Option<TableDesc>> {
        let key = (db.to_string(), name.to_string());
        let cached = self
            .tables
            .lock()
            .get(&key)
            .map(|c| (c.desc.id, c.desc.parent_id));
        if let Some((id, parent)) = cached {
            if let Some(bytes) = txn.get(&desc_key(id)).await? {
                if let Some(c) = self.tables.lock().get(&key) {
                    if c.bytes == bytes {
                        return Ok(Some(c.desc.clone()));
                    }
                }
                if let Descriptor::Table(t) = decode_desc(&bytes)? {
                    if t.name == name && t.parent_id == parent {
                        self.remember(key, &t, bytes);
                        return Ok(Some(t));
                    }
                }
            }
        }
        let Some(d) = database(txn, db).await? else {
            return Ok(None);
        };
        let Some(bytes) = lookup_bytes(txn, d.id, name).await? else {
            return Ok(None);
        };
        match decode_desc(&bytes)? {
            Descriptor::Table(t) => {
                self.remember(key, &t, bytes);
                Ok(Some(t))
            }
            Descriptor::Database(_) => Ok(None),
        }
    }

    fn remember(&self, key: (String, String), desc: &TableDesc, bytes: Vec<u8>) {
        let mut tables = self.tables.lock();
        if tables.len() >= DESC_CACHE_MAX_TABLES && !tables.contains_key(&key) {
            tables.clear();
        }
        tables.insert(
            key,
            CachedTable {
                desc: desc.clone(),
                bytes,
            },
        );
    }
}

/// Deletes every key in `[start, end)`, a batch at a time.
pub async fn delete_span(txn: &mut Txn, start: &[u8], end: &[u8]) -> Result<()> {
    const BATCH: u64 = 1000;
    let mut from = start.to_vec();
    loop {
        let rows = txn.scan(&from, end, BATCH).await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        from = last.key.clone();
        from.push(0);
        let n = rows.len() as u64;
        txn.write(rows.iter().map(|kv| bini_txn::delete(&kv.key)).collect())
            .await?;
        if n < BATCH {
            return Ok(());
        }
    }
}

/// Creates the default database if it is missing (every node tries at start; the
/// transaction makes it happen once).
pub async fn bootstrap(db: &Db) -> Result<()> {
    let mut txn = db.begin();
    let created = create_database(db, &mut txn, DEFAULT_DATABASE, true).await;
    match created {
        Ok(_) => {
            txn.commit().await?;
            Ok(())
        }
        Err(e) => {
            let _ = txn.rollback().await;
            Err(e)
        }
    }
}
