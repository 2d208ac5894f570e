//! `COPY table [(columns)] FROM STDIN` in Postgres's text format: the gateway hands over the
//! CopyData bytes as they come; complete lines become rows, inserted in batches (of
//! [`BATCH_ROWS`] rows or [`BATCH_BYTES`] of data) through the session, inside the open
//! transaction or, when there is none, a transaction of the COPY's own that commits when the
//! data ends: a COPY that fails leaves no row behind, as in Postgres.
//!
//! What COPY holds — the incomplete line and the rows of the batch — is reserved from the
//! node's SQL memory budget, and a line may not pass [`MAX_LINE_BYTES`]: a client sending
//! data without newlines gets an error, not the node's memory.

use crate::error::{Error, Result};
use crate::memory::Reservation;

/// Rows per INSERT, at most.
pub const BATCH_ROWS: usize = 500;

/// Bytes of data per INSERT, about (a batch ends at the line that passes it).
pub const BATCH_BYTES: usize = 1 << 20;

/// The longest line accepted (its INSERT must stay under the statement size limit).
pub const MAX_LINE_BYTES: usize = 8 << 20;

/// A COPY in progress.
#[derive(Debug)]
pub struct CopyIn {
    /// `INSERT INTO <table> (<columns>)` as SQL.
    pub insert_prefix: String,
    /// Number of columns each line must have.
    pub columns: usize,
    /// Bytes of an incomplete line.
    pending: Vec<u8>,
    /// How much of `pending` is known to hold no newline.
    scanned: usize,
    /// Rows parsed and not yet inserted.
    pub rows: Vec<Vec<Option<String>>>,
    /// The data bytes of `rows`.
    rows_bytes: usize,
    /// `pending` and `rows`, reserved from the SQL memory budget.
    mem: Reservation,
    /// Rows inserted so far.
    pub count: u64,
    /// The `\.` end marker was seen.
    ended: bool,
    /// The first error; later data is ignored and the error reported at CopyDone.
    pub failed: Option<Error>,
    /// The COPY runs in a transaction of its own (the session had none open), committed
    /// when the data ends: all rows or none, as in Postgres.
    pub own_txn: bool,
}

impl CopyIn {
    /// A COPY into `insert_prefix` of `columns` columns, holding its data in `mem`.
    pub fn new(insert_prefix: String, columns: usize, mem: Reservation) -> Self {
        CopyIn {
            insert_prefix,
            columns,
            pending: Vec::new(),
            scanned: 0,
            rows: Vec::new(),
            rows_bytes: 0,
            mem,
            count: 0,
            ended: false,
            failed: None,
            own_txn: false,
        }
    }

    /// Takes in CopyData bytes; complete lines become rows.
    pub fn feed(&mut self, data: &[u8]) -> Result<()> {
        self.mem.grow(data.len() as u64)?;
        self.pending.extend_from_slice(data);
        let mut start = 0;
        let mut from = self.scanned;
        while let Some(pos) = self.pending[from..].iter().position(|b| *b == b'\n') {
            let end = from + pos;
            let line = self.pending[start..end].to_vec();
            self.line(&line)?;
            start = end + 1;
            from = start;
        }
        self.pending.drain(..start);
        self.mem.shrink(start as u64);
        self.scanned = self.pending.len();
        if self.pending.len() > MAX_LINE_BYTES {
            return Err(Error::ProgramLimitExceeded(format!(
                "COPY line longer than {MAX_LINE_BYTES} bytes"
            )));
        }
        Ok(())
    }

    /// Whether the rows parsed so far make a batch to insert.
    pub fn batch_full(&self) -> bool {
        self.rows.len() >= BATCH_ROWS || self.rows_bytes >= BATCH_BYTES
    }

    /// The end of the data: a last line without its newline.
    pub fn finish(&mut self) -> Result<()> {
        let rest = std::mem::take(&mut self.pending);
        self.mem.shrink(rest.len() as u64);
        self.scanned = 0;
        if !rest.is_empty() {
            self.line(&rest)?;
        }
        Ok(())
    }

    fn line(&mut self, line: &[u8]) -> Result<()> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if self.ended {
            return Ok(());
        }
        if line == b"\\." {
            self.ended = true;
            return Ok(());
        }
        let text = std::str::from_utf8(line)
            .map_err(|_| Error::InvalidTextRepresentation("COPY data is not UTF-8".into()))?;
        let fields: Vec<Option<String>> = text.split('\t').map(field).collect::<Result<_>>()?;
        if fields.len() != self.columns {
            return Err(Error::InvalidTextRepresentation(format!(
                "COPY row has {} columns, expected {}",
                fields.len(),
                self.columns
            )));
        }
        self.mem.grow(line.len() as u64)?;
        self.rows_bytes += line.len();
        self.rows.push(fields);
        Ok(())
    }

    /// The INSERT for the rows parsed so far, if any (and forgets them).
    pub fn take_insert(&mut self) -> Option<(String, u64)> {
        if self.rows.is_empty() {
            return None;
        }
        let rows = std::mem::take(&mut self.rows);
        self.mem.shrink(self.rows_bytes as u64);
        self.rows_bytes = 0;
        let n = rows.len() as u64;
        let values: Vec<String> = rows
            .into_iter()
            .map(|r| {
                let vals: Vec<String> = r
                    .into_iter()
                    .map(|v| match v {
                        Some(s) => format!("'{}'", s.replace('\'', "''")),
                        None => "NULL".into(),
                    })
                    .collect();
                format!("({})", vals.join(", "))
            })
            .collect();
        Some((
            format!("{} VALUES {}", self.insert_prefix, values.join(", ")),
            n,
        ))
    }
}

/// One field of the text format: `\N` is NULL, backslash escapes are undone.
fn field(s: &str) -> Result<Option<String>> {
    if s == "\\N" {
        return Ok(None);
    }
    if !s.contains('\\') {
        return Ok(Some(s.to_string()));
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('v') => out.push('\u{b}'),
            Some(other) => out.push(other),
            None => {
                return Err(Error::InvalidTextRepresentation(
                    "COPY field ends with a backslash".into(),
                ))
            }
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_messages_become_rows() {
        let pool = crate::memory::MemoryPool::new(1 << 30);
        let mut c = CopyIn::new("INSERT INTO t (a, b)".into(), 2, pool.reservation());
        c.feed(b"1\tone\n2\t\\N\n3\tit's\\ttab").expect("feed");
        assert_eq!(c.rows.len(), 2);
        c.feed(b"bed\n\\.\n").expect("feed");
        c.finish().expect("finish");
        let (sql, n) = c.take_insert().expect("rows");
        assert_eq!(n, 3);
        assert_eq!(
            sql,
            "INSERT INTO t (a, b) VALUES ('1', 'one'), ('2', NULL), ('3', 'it''s\ttabbed')"
        );
        assert_eq!(pool.used(), 0, "nothing held once inserted");
        let mut bad = CopyIn::new("INSERT INTO t (a)".into(), 1, pool.reservation());
        assert!(bad.feed(b"1\t2\n").is_err());
    }

    #[test]
    fn endless_lines_are_refused_and_data_is_budgeted() {
        let pool = crate::memory::MemoryPool::new(1 << 30);
        let mut c = CopyIn::new("INSERT INTO t (a)".into(), 1, pool.reservation());
        let chunk = vec![b'x'; 64 << 10];
        let mut failed = None;
        for _ in 0..200 {
            if let Err(e) = c.feed(&chunk) {
                failed = Some(e);
                break;
            }
        }
        assert!(matches!(failed, Some(Error::ProgramLimitExceeded(_))));
        let small = crate::memory::MemoryPool::new(1 << 20);
        let mut c = CopyIn::new("INSERT INTO t (a)".into(), 1, small.reservation());
        let line = [vec![b'y'; 1000], vec![b'\n']].concat();
        let mut err = None;
        for _ in 0..2000 {
            if let Err(e) = c.feed(&line) {
                err = Some(e);
                break;
            }
        }
        assert!(matches!(err, Some(Error::OutOfMemory(_))), "{err:?}");
    }
}
