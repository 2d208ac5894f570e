//! PostgreSQL on the same machine, as the reference for bini's figures: single-row INSERTs of a
//! 64-byte value with synchronous commit (PostgreSQL's default), driven by pgbench with the same
//! numbers of clients. Needs Debian's `postgresql` package (server binaries under
//! `/usr/lib/postgresql/*/bin`) and runs the server as the `postgres` user in a temporary
//! directory on a free port; returns `None` when PostgreSQL is not installed.

// Each benchmark includes this file and uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Throughput and latency of one pgbench run.
pub struct PgFigures {
    /// Transactions per second.
    pub tps: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
}

/// A throwaway PostgreSQL server.
pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

fn run(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    if !out.status.success() {
        eprintln!("{:?} failed: {}", cmd, String::from_utf8_lossy(&out.stderr));
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn as_postgres(bin: &Path, tool: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
    c
}

impl Postgres {
    /// Starts a server, or `None` if PostgreSQL is not installed.
    pub fn start(port: u16) -> Option<Postgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").exists())?;
        let dir = tempfile::tempdir().ok()?;
        run(Command::new("chown")
            .args(["-R", "postgres"])
            .arg(dir.path()))?;
        let data = dir.path().join("data");
        run(as_postgres(&bin, "initdb").arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
        ]))?;
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c shared_buffers=256MB",
            dir.path().display()
        );
        run(as_postgres(&bin, "pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-o", &opts, "-w", "-l"])
            .arg(dir.path().join("pg.log"))
            .arg("start"))?;
        let pg = Postgres { bin, dir, port };
        run(Command::new("psql").args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-qc",
            "CREATE TABLE kv (k text PRIMARY KEY, v bytea)",
        ]))?;
        Some(pg)
    }

    /// A libpq connection string for the server's `postgres` database.
    pub fn conn_str(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// Runs `clients` pgbench clients inserting rows for `secs` seconds.
    pub fn insert_bench(&self, clients: usize, secs: u64) -> Option<PgFigures> {
        self.script_bench(
            "INSERT INTO kv VALUES (gen_random_uuid()::text, convert_to(repeat('v', 64), 'UTF8'));\n",
            clients,
            secs,
        )
    }

    /// Runs `clients` pgbench clients executing `sql` (one transaction per run of the script)
    /// for `secs` seconds.
    pub fn script_bench(&self, sql: &str, clients: usize, secs: u64) -> Option<PgFigures> {
        let script = self.dir.path().join("bench.sql");
        std::fs::write(&script, sql).ok()?;
        let prefix = self.dir.path().join(format!("log{clients}"));
        let out = run(Command::new(self.bin.join("pgbench"))
            .args([
                "-n",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-c",
                &clients.to_string(),
                "-j",
                &clients.min(4).to_string(),
                "-T",
                &secs.to_string(),
                "-f",
            ])
            .arg(&script)
            .arg("-l")
            .arg("--log-prefix")
            .arg(&prefix)
            .arg("postgres"))?;
        let tps = out
            .lines()
            .find_map(|l| l.strip_prefix("tps = "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse().ok())?;
        let mut lat: Vec<u64> = Vec::new();
        for e in std::fs::read_dir(self.dir.path()).ok()?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("log{clients}")) {
                let text = std::fs::read_to_string(e.path()).ok()?;
                lat.extend(
                    text.lines()
                        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok()),
                );
                let _ = std::fs::remove_file(e.path());
            }
        }
        lat.sort_unstable();
        let q = |p: f64| {
            lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0) as f64
                / 1000.0
        };
        Some(PgFigures {
            tps,
            p50_ms: q(0.5),
            p99_ms: q(0.99),
        })
    }
}

/// What one `pgbench` run reports.
pub struct PgbenchReport {
    /// Transactions per second.
    pub tps: f64,
    /// Mean latency, milliseconds.
    pub latency_ms: f64,
    /// Transactions that committed.
    pub processed: u64,
    /// Transactions retried after a serialization failure (0 if not reported).
    pub retried: u64,
    /// Transactions that failed for good (0 if not reported).
    pub failed: u64,
}

/// Where a pgbench run connects: host, port, user, database, and server options
/// (`PGOPTIONS`, may be empty).
pub struct Target<'a> {
    /// Host.
    pub host: &'a str,
    /// Port.
    pub port: u16,
    /// User.
    pub user: &'a str,
    /// Database.
    pub db: &'a str,
    /// `PGOPTIONS`.
    pub options: &'a str,
}

/// Runs the `pgbench` on the PATH (as the current user) against `t` with `args`; its output,
/// or `None` (after printing why) if it failed.
pub fn pgbench(t: &Target<'_>, args: &[&str]) -> Option<String> {
    run(Command::new("pgbench")
        .env("PGOPTIONS", t.options)
        .args(["-h", t.host, "-p", &t.port.to_string(), "-U", t.user])
        .args(args)
        .arg(t.db))
}

/// Reads a pgbench run's report.
pub fn pgbench_report(out: &str) -> Option<PgbenchReport> {
    let figure = |label: &str| -> Option<f64> {
        out.lines()
            .find_map(|l| l.strip_prefix(label))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Some(PgbenchReport {
        tps: figure("tps = ")?,
        latency_ms: figure("latency average = ")?,
        processed: figure("number of transactions actually processed: ")? as u64,
        retried: figure("number of transactions retried: ").unwrap_or(0.0) as u64,
        failed: figure("number of failed transactions: ").unwrap_or(0.0) as u64,
    })
}

impl Postgres {
    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = run(as_postgres(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "fast", "stop"]));
    }
}
