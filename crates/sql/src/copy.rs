//! `COPY table [(columns)] FROM STDIN` in Postgres's text format: the gateway hands over the
//! CopyData bytes as they come; complete lines become rows, inserted in batches of
//! [`BATCH_ROWS`] through the session, inside the open transaction or, when there is none, a
//! transaction of the COPY's own that commits when the data ends: a COPY that fails leaves no
//! row behind, as in Postgres.

use crate::error::{Error, Result};

/// Rows per INSERT.
pub const BATCH_ROWS: usize = 500;

/// A COPY in progress.
#[derive(Debug)]
pub struct CopyIn {
    /// `INSERT INTO <table> (<columns>)` as SQL.
    pub insert_prefix: String,
    /// Number of columns each line must have.
    pub columns: usize,
    /// Bytes of an incomplete line.
    pending: Vec<u8>,
    /// Rows parsed and not yet inserted.
    pub rows: Vec<Vec<Option<String>>>,
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
    /// A COPY into `insert_prefix` of `columns` columns.
    pub fn new(insert_prefix: String, columns: usize) -> Self {
        CopyIn {
            insert_prefix,
            columns,
            pending: Vec::new(),
            rows: Vec::new(),
            count: 0,
            ended: false,
            failed: None,
            own_txn: false,
        }
    }

    /// Takes in CopyData bytes; complete lines become rows.
    pub fn feed(&mut self, data: &[u8]) -> Result<()> {
        self.pending.extend_from_slice(data);
        while let Some(pos) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=pos).collect();
            self.line(&line[..line.len() - 1])?;
        }
        Ok(())
    }

    /// The end of the data: a last line without its newline.
    pub fn finish(&mut self) -> Result<()> {
        let rest = std::mem::take(&mut self.pending);
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
        self.rows.push(fields);
        Ok(())
    }

    /// The INSERT for the rows parsed so far, if any (and forgets them).
    pub fn take_insert(&mut self) -> Option<(String, u64)> {
        if self.rows.is_empty() {
            return None;
        }
        let rows = std::mem::take(&mut self.rows);
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
        let mut c = CopyIn::new("INSERT INTO t (a, b)".into(), 2);
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
        let mut bad = CopyIn::new("INSERT INTO t (a)".into(), 1);
        assert!(bad.feed(b"1\t2\n").is_err());
    }
}
