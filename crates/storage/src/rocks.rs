//! The RocksDB engine: bini's data on local disk.
//!
//! One RocksDB instance per store directory, with a column family per [`Cf`]. Writes go through
//! RocksDB's write-ahead log; a synced write fsyncs it. Reads and iterators use RocksDB's own
//! implicit snapshots, and explicit snapshots pin a sequence number.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DBRawIteratorWithThreadMode, Options, ReadOptions,
    SnapshotWithThreadMode, WriteOptions, DB,
};

use crate::{BatchOp, Cf, Engine, EngineIterator, Error, Reader, Result, WriteBatch};

/// Tuning for a [`RocksEngine`].
#[derive(Clone, Debug)]
pub struct RocksOptions {
    /// Shared block cache size in bytes.
    pub block_cache_bytes: usize,
    /// Memtable size per column family in bytes.
    pub write_buffer_bytes: usize,
    /// Background compaction and flush threads.
    pub background_jobs: i32,
}

impl Default for RocksOptions {
    fn default() -> Self {
        Self {
            block_cache_bytes: 128 << 20,
            write_buffer_bytes: 32 << 20,
            background_jobs: 2,
        }
    }
}

/// An engine backed by RocksDB in a directory.
pub struct RocksEngine {
    db: DB,
    path: PathBuf,
    syncs: AtomicU64,
}

impl RocksEngine {
    /// Opens (creating if needed) the engine in `path`.
    pub fn open(path: impl AsRef<Path>, options: &RocksOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        std::fs::create_dir_all(&path).map_err(|e| Error::Directory {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let cache = rocksdb::Cache::new_lru_cache(options.block_cache_bytes);
        let mut block = rocksdb::BlockBasedOptions::default();
        block.set_block_cache(&cache);
        block.set_bloom_filter(10.0, false);

        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(options.background_jobs);
        db_opts.set_keep_log_file_num(4);

        let cfs = Cf::ALL.iter().map(|cf| {
            let mut o = Options::default();
            o.set_write_buffer_size(options.write_buffer_bytes);
            o.set_block_based_table_factory(&block);
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            ColumnFamilyDescriptor::new(cf.name(), o)
        });
        let db = DB::open_cf_descriptors(&db_opts, &path, cfs).map_err(rocks)?;
        Ok(Self {
            db,
            path,
            syncs: AtomicU64::new(0),
        })
    }

    /// The directory this engine lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self, cf: Cf) -> &ColumnFamily {
        self.db
            .cf_handle(cf.name())
            .expect("column families are created at open")
    }
}

fn rocks(e: rocksdb::Error) -> Error {
    Error::Rocks(e.into_string())
}

fn bounded_read_options(lower: &[u8], upper: &[u8]) -> ReadOptions {
    let mut o = ReadOptions::default();
    o.set_iterate_lower_bound(lower.to_vec());
    if !upper.is_empty() {
        o.set_iterate_upper_bound(upper.to_vec());
    }
    o
}

impl Reader for RocksEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(cf), key).map_err(rocks)
    }

    fn iter(&self, cf: Cf, lower: &[u8], upper: &[u8]) -> Box<dyn EngineIterator + '_> {
        let it = self
            .db
            .raw_iterator_cf_opt(self.cf(cf), bounded_read_options(lower, upper));
        Box::new(RocksIterator { it })
    }
}

impl Engine for RocksEngine {
    fn write(&self, batch: &WriteBatch, sync: bool) -> Result<()> {
        let mut wb = rocksdb::WriteBatch::default();
        for op in batch.ops() {
            match op {
                BatchOp::Put { cf, key, value } => wb.put_cf(self.cf(*cf), key, value),
                BatchOp::Delete { cf, key } => wb.delete_cf(self.cf(*cf), key),
                BatchOp::DeleteRange { cf, start, end } => {
                    wb.delete_range_cf(self.cf(*cf), start, end)
                }
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.db.write_opt(wb, &opts).map_err(rocks)?;
        if sync {
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn snapshot(&self) -> Box<dyn Reader + '_> {
        Box::new(RocksSnapshot {
            engine: self,
            snap: self.db.snapshot(),
        })
    }

    fn sync(&self) -> Result<()> {
        self.db.flush_wal(true).map_err(rocks)?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

struct RocksSnapshot<'a> {
    engine: &'a RocksEngine,
    snap: SnapshotWithThreadMode<'a, DB>,
}

impl Reader for RocksSnapshot<'_> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.snap.get_cf(self.engine.cf(cf), key).map_err(rocks)
    }

    fn iter(&self, cf: Cf, lower: &[u8], upper: &[u8]) -> Box<dyn EngineIterator + '_> {
        let it = self
            .snap
            .raw_iterator_cf_opt(self.engine.cf(cf), bounded_read_options(lower, upper));
        Box::new(RocksIterator { it })
    }
}

struct RocksIterator<'a> {
    it: DBRawIteratorWithThreadMode<'a, DB>,
}

impl EngineIterator for RocksIterator<'_> {
    fn seek(&mut self, key: &[u8]) {
        self.it.seek(key);
    }

    fn seek_to_first(&mut self) {
        self.it.seek_to_first();
    }

    fn seek_for_prev(&mut self, key: &[u8]) {
        self.it.seek_for_prev(key);
    }

    fn valid(&self) -> Result<bool> {
        if self.it.valid() {
            return Ok(true);
        }
        self.it.status().map_err(rocks)?;
        Ok(false)
    }

    fn key(&self) -> &[u8] {
        self.it.key().unwrap_or_default()
    }

    fn value(&self) -> &[u8] {
        self.it.value().unwrap_or_default()
    }

    fn next(&mut self) {
        self.it.next();
    }

    fn prev(&mut self) {
        self.it.prev();
    }
}
