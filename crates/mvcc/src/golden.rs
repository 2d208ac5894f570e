//! Golden-script tests of MVCC reads and writes (`testscripts/`; regenerate expected output
//! with `UPDATE_GOLDENFILES=1 cargo test --workspace --lib golden` and review the diff).
//!
//! Commands:
//! - `put KEY WALL VALUE [txn=T]`, `del KEY WALL [txn=T]`: a committed write, or an intent of
//!   transaction `T` (a one-letter name; its anchor is the key). Output: the timestamp written.
//! - `get KEY WALL [txn=T] [limit=WALL]`, `scan START END WALL [txn=T] [limit=WALL]`: reads at
//!   WALL, as transaction T, with an uncertainty limit (an empty END is unbounded).
//! - `resolve KEY T commit|abort|push WALL`; `resolve-span START END T commit|abort|push WALL`
//!   resolves T's intents in [START, END) (an empty END is unbounded).
//! - `changed START END FROM TO [txn=T]`: the first change a refresh would find.
//! - `gc START END WALL`: removes what no read at or above WALL can see.
//! - `dump`: every engine entry, decoded.

use std::error::Error;
use std::fmt::Write as _;

use bini_proto::{StoredIntent, TxnMeta, TxnStatus};
use bini_storage::{Cf, Engine, MemEngine, Reader, WriteBatch};
use prost::Message as _;

use crate::{
    decode_key, mvcc_changed_between, mvcc_gc_candidates, mvcc_gc_key, mvcc_resolve,
    mvcc_resolve_span, mvcc_scan_with, mvcc_write, ReadOptions, Slot, Timestamp, Value,
};

struct MvccRunner {
    engine: MemEngine,
}

fn ts(s: &str) -> Result<Timestamp, Box<dyn Error>> {
    Ok(Timestamp::new(s.parse()?, 0))
}

fn txn(name: &str, key: &[u8], at: Timestamp) -> TxnMeta {
    TxnMeta {
        id: name.as_bytes().to_vec(),
        anchor: key.to_vec(),
        write_ts: Some(at.into()),
        ..Default::default()
    }
}

/// A timestamp as `wall` or `wall.logical`.
fn at(t: Timestamp) -> String {
    if t.logical == 0 {
        t.wall.to_string()
    } else {
        format!("{}.{}", t.wall, t.logical)
    }
}

fn resolution(how: &str) -> Result<TxnStatus, Box<dyn Error>> {
    Ok(match how {
        "commit" => TxnStatus::Committed,
        "abort" => TxnStatus::Aborted,
        "push" => TxnStatus::Pending,
        other => return Err(format!("unknown resolution {other}").into()),
    })
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(e: crate::Error) -> String {
    match e {
        crate::Error::WriteIntent { key, txn } => format!(
            "error: intent of {} on {}",
            lossy(&txn.id),
            String::from_utf8_lossy(&key)
        ),
        crate::Error::ReadUncertain { key, ts, .. } => {
            format!("error: uncertain: {} at {}", lossy(&key), at(ts))
        }
        crate::Error::WriteTooOld { key, ts } => {
            format!(
                "error: write too old: {} (retry at {})",
                lossy(&key),
                at(ts)
            )
        }
        e => format!("error: {e}"),
    }
}

impl goldenscript::Runner for MvccRunner {
    type Command = goldenscript::Command;

    fn run(
        &mut self,
        command: &goldenscript::Command,
        _: &goldenscript::Context,
    ) -> Result<String, Box<dyn Error>> {
        let mut args = command.consume_args();
        let txn_name = args.take_key("txn").map(str::to_string);
        let limit = args.take_key("limit").map(str::parse::<u64>).transpose()?;
        let mut pos = || {
            args.next_pos()
                .map(str::to_string)
                .ok_or("missing argument")
        };
        let mut out = String::new();
        match command.name.as_str() {
            "put" | "del" => {
                let k = pos()?;
                let t = ts(&pos()?)?;
                let v = if command.name == "put" {
                    Some(pos()?)
                } else {
                    None
                };
                let meta = txn_name.map(|n| txn(&n, k.as_bytes(), t));
                let mut b = WriteBatch::new();
                let res = mvcc_write(
                    &self.engine,
                    &mut b,
                    k.as_bytes(),
                    v.as_deref().map(str::as_bytes),
                    t,
                    meta.as_ref(),
                    true,
                );
                match res {
                    Ok(t) => {
                        self.engine.write(&b, false)?;
                        writeln!(out, "written at {}", at(t))?;
                    }
                    Err(e) => writeln!(out, "{}", show(e))?,
                }
            }
            "get" | "scan" => {
                let start = pos()?;
                let mut end = if command.name == "scan" {
                    pos()?
                } else {
                    String::new()
                };
                if command.name == "get" {
                    end = format!("{start}\0");
                }
                let t = ts(&pos()?)?;
                let meta = txn_name.map(|n| txn(&n, b"", t));
                let opts = ReadOptions {
                    ts: t,
                    uncertainty_limit: limit.map(|l| Timestamp::new(l, 0)).unwrap_or(t),
                    txn: meta.as_ref(),
                };
                match mvcc_scan_with(
                    &self.engine,
                    start.as_bytes(),
                    end.as_bytes(),
                    &opts,
                    usize::MAX,
                ) {
                    Ok(rows) if rows.is_empty() => writeln!(out, "(none)")?,
                    Ok(rows) => {
                        for kv in rows {
                            writeln!(out, "{} → {}", lossy(&kv.key), lossy(&kv.value))?;
                        }
                    }
                    Err(e) => writeln!(out, "{}", show(e))?,
                }
            }
            "resolve" => {
                let (k, t, how, when) = (pos()?, pos()?, pos()?, ts(&pos()?)?);
                let mut b = WriteBatch::new();
                let done = mvcc_resolve(
                    &self.engine,
                    &mut b,
                    k.as_bytes(),
                    t.as_bytes(),
                    resolution(&how)?,
                    when,
                )?;
                self.engine.write(&b, false)?;
                writeln!(out, "resolved: {done}")?;
            }
            "resolve-span" => {
                let (start, end) = (pos()?, pos()?);
                let (t, how, when) = (pos()?, pos()?, ts(&pos()?)?);
                let mut b = WriteBatch::new();
                let (n, resume) = mvcc_resolve_span(
                    &self.engine,
                    &mut b,
                    start.as_bytes(),
                    end.as_bytes(),
                    t.as_bytes(),
                    resolution(&how)?,
                    when,
                )?;
                self.engine.write(&b, false)?;
                writeln!(out, "resolved {n}")?;
                if let Some(k) = resume {
                    writeln!(out, "resume at {}", lossy(&k))?;
                }
            }
            "changed" => {
                let (start, end) = (pos()?, pos()?);
                let (from, to) = (ts(&pos()?)?, ts(&pos()?)?);
                let meta = txn_name.map(|n| txn(&n, b"", to));
                match mvcc_changed_between(
                    &self.engine,
                    start.as_bytes(),
                    end.as_bytes(),
                    from,
                    to,
                    meta.as_ref(),
                )? {
                    Some((k, t)) => writeln!(out, "changed: {} at {}", lossy(&k), at(t))?,
                    None => writeln!(out, "unchanged")?,
                }
            }
            "gc" => {
                let (start, end, threshold) = (pos()?, pos()?, ts(&pos()?)?);
                let mut b = WriteBatch::new();
                for (k, upto) in mvcc_gc_candidates(
                    &self.engine,
                    start.as_bytes(),
                    end.as_bytes(),
                    threshold,
                    100,
                )? {
                    let n = mvcc_gc_key(&self.engine, &mut b, &k, upto)?;
                    writeln!(out, "gc {}: {n} versions", lossy(&k))?;
                }
                self.engine.write(&b, false)?;
            }
            "dump" => {
                for (k, v) in self.engine.scan(Cf::Data, b"", b"", usize::MAX)? {
                    let (key, slot, _) = decode_key(&k)?;
                    let key = lossy(&key);
                    match slot {
                        Slot::Version(t) => {
                            let value = match Value::decode(&v)? {
                                Value::Live(v) => lossy(&v),
                                Value::Tombstone => "<tombstone>".into(),
                            };
                            writeln!(out, "{key}@{} = {value}", at(t))?;
                        }
                        Slot::Meta => {
                            let i = StoredIntent::decode(v.as_slice())?;
                            let m = i.txn.unwrap_or_default();
                            let value = i.value.map(|v| lossy(&v));
                            writeln!(
                                out,
                                "{key} intent of {} at {}: {}",
                                lossy(&m.id),
                                at(crate::txn_ts(&m)),
                                value.as_deref().unwrap_or("<delete>")
                            )?;
                        }
                        Slot::Record => writeln!(out, "{key} record")?,
                    }
                }
            }
            name => return Err(format!("unknown command {name}").into()),
        }
        Ok(out)
    }
}

#[test]
fn versions() -> std::io::Result<()> {
    goldenscript::run(
        &mut MvccRunner {
            engine: MemEngine::new(),
        },
        "src/testscripts/versions",
    )
}

#[test]
fn intents() -> std::io::Result<()> {
    goldenscript::run(
        &mut MvccRunner {
            engine: MemEngine::new(),
        },
        "src/testscripts/intents",
    )
}

#[test]
fn gc() -> std::io::Result<()> {
    goldenscript::run(
        &mut MvccRunner {
            engine: MemEngine::new(),
        },
        "src/testscripts/gc",
    )
}

/// A ranged resolution over more intents than one command may resolve stops at the bound and
/// says where to resume; resuming there finishes the job.
#[test]
fn resolve_span_resumes() -> Result<(), Box<dyn Error>> {
    let engine = MemEngine::new();
    let n = crate::RESOLVE_SPAN_MAX_INTENTS + 500;
    let key = |i: usize| format!("k{i:05}").into_bytes();
    let meta = txn("T", &key(0), Timestamp::new(10, 0));
    let mut b = WriteBatch::new();
    for i in 0..n {
        mvcc_write(
            &engine,
            &mut b,
            &key(i),
            Some(b"v"),
            meta_ts(&meta),
            Some(&meta),
            false,
        )?;
    }
    engine.write(&b, false)?;
    let mut start = key(0);
    let mut rounds = Vec::new();
    loop {
        let mut b = WriteBatch::new();
        let (done, resume) = mvcc_resolve_span(
            &engine,
            &mut b,
            &start,
            b"l",
            b"T",
            TxnStatus::Committed,
            Timestamp::new(20, 0),
        )?;
        engine.write(&b, false)?;
        rounds.push(done);
        match resume {
            Some(k) => start = k,
            None => break,
        }
    }
    assert_eq!(rounds, vec![crate::RESOLVE_SPAN_MAX_INTENTS, 500]);
    let rows = mvcc_scan_with(
        &engine,
        b"k",
        b"l",
        &ReadOptions::at(Timestamp::new(20, 0)),
        usize::MAX,
    )?;
    assert_eq!(rows.len(), n, "every intent committed and readable");
    Ok(())
}

fn meta_ts(meta: &TxnMeta) -> Timestamp {
    crate::txn_ts(meta)
}
