//! Golden-script tests of MVCC reads and writes (`testscripts/`; regenerate expected output
//! with `UPDATE_GOLDENFILES=1 cargo test -p bini-mvcc` and review the diff).
//!
//! Commands: `put KEY WALL VALUE`, `del KEY WALL`, `get KEY WALL`, `scan START END WALL`
//! (an empty END is unbounded), `dump` (every engine entry, decoded).

use std::error::Error;
use std::fmt::Write as _;

use bini_storage::{Cf, Engine, MemEngine, Reader, WriteBatch};

use crate::{decode_key, mvcc_delete, mvcc_get, mvcc_put, mvcc_scan, Timestamp, Value};

struct MvccRunner {
    engine: MemEngine,
}

fn ts(s: &str) -> Result<Timestamp, Box<dyn Error>> {
    Ok(Timestamp::new(s.parse()?, 0))
}

impl goldenscript::Runner for MvccRunner {
    type Command = goldenscript::Command;

    fn run(
        &mut self,
        command: &goldenscript::Command,
        _: &goldenscript::Context,
    ) -> Result<String, Box<dyn Error>> {
        let mut args = command.consume_args();
        let mut pos = || args.next_pos().ok_or("missing argument");
        let mut out = String::new();
        match command.name.as_str() {
            "put" => {
                let (k, t, v) = (pos()?, ts(pos()?)?, pos()?);
                let mut b = WriteBatch::new();
                mvcc_put(&mut b, k.as_bytes(), t, v.as_bytes());
                self.engine.write(&b, false)?;
            }
            "del" => {
                let (k, t) = (pos()?, ts(pos()?)?);
                let mut b = WriteBatch::new();
                mvcc_delete(&mut b, k.as_bytes(), t);
                self.engine.write(&b, false)?;
            }
            "get" => {
                let (k, t) = (pos()?, ts(pos()?)?);
                match mvcc_get(&self.engine, k.as_bytes(), t)? {
                    Some(v) => writeln!(out, "{k} → {}", String::from_utf8_lossy(&v))?,
                    None => writeln!(out, "{k} → None")?,
                }
            }
            "scan" => {
                let (start, end, t) = (pos()?, pos()?, ts(pos()?)?);
                for kv in mvcc_scan(
                    &self.engine,
                    start.as_bytes(),
                    end.as_bytes(),
                    t,
                    usize::MAX,
                )? {
                    writeln!(
                        out,
                        "{} → {}",
                        String::from_utf8_lossy(&kv.key),
                        String::from_utf8_lossy(&kv.value)
                    )?;
                }
            }
            "dump" => {
                for (k, v) in self.engine.scan(Cf::Data, b"", b"", usize::MAX)? {
                    let (key, version, _) = decode_key(&k)?;
                    let value = match Value::decode(&v)? {
                        Value::Live(v) => String::from_utf8_lossy(&v).into_owned(),
                        Value::Tombstone => "<tombstone>".into(),
                    };
                    let at = version
                        .map(|t| t.wall.to_string())
                        .unwrap_or_else(|| "meta".into());
                    writeln!(out, "{}@{at} = {value}", String::from_utf8_lossy(&key))?;
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
