//! `bini sql`: the SQL shell.
//!
//! It speaks the Postgres wire protocol (through `tokio-postgres`, simple query protocol, so a
//! line may hold several statements and every value arrives as text) to any node. Input comes
//! from `-e` statements, a `-f` file, piped stdin, or an interactive prompt
//! (`user@host:port/database>`) with line editing and history. A statement ends at a `;`
//! outside quotes; meta-commands (`\q`, `\?`, `\l`, `\d`, `\dt`) end at the line.
//!
//! Results print as the walk-through shows: an aligned table (numbers right-aligned, headers
//! centred) and `(N rows)`; or tsv, csv, or one record per block with `--format`. Errors print
//! `ERROR: message` and `SQLSTATE: code`; with `-e` or `-f` the first error ends the run with
//! a non-zero exit.

use std::io::{IsTerminal, Read};

use anyhow::{anyhow, bail, Context, Result};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// How results print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned table with a row count.
    Table,
    /// Tab-separated values with a header line.
    Tsv,
    /// Comma-separated values with a header line.
    Csv,
    /// One `column | value` block per row.
    Records,
}

/// What to connect to and what to run.
pub struct ShellConfig {
    /// Host as the user gave it (shown in the prompt).
    pub host: String,
    /// Port.
    pub port: u16,
    /// User.
    pub user: String,
    /// Database.
    pub database: String,
    /// Statements from `-e`.
    pub execute: Vec<String>,
    /// A file from `-f`.
    pub file: Option<String>,
    /// Output format.
    pub format: OutputFormat,
}

impl ShellConfig {
    /// Applies a `postgresql://user@host:port/database` URL.
    pub fn apply_url(&mut self, url: &str) -> Result<()> {
        let rest = url
            .strip_prefix("postgresql://")
            .or_else(|| url.strip_prefix("postgres://"))
            .ok_or_else(|| anyhow!("--url must start with postgresql://"))?;
        let rest = rest.split('?').next().unwrap_or_default();
        let (auth_host, db) = match rest.split_once('/') {
            Some((a, d)) => (a, Some(d)),
            None => (rest, None),
        };
        let host_port = match auth_host.rsplit_once('@') {
            Some((user, hp)) => {
                let user = user.split(':').next().unwrap_or(user);
                if !user.is_empty() {
                    self.user = user.to_string();
                }
                hp
            }
            None => auth_host,
        };
        match host_port.rsplit_once(':') {
            Some((h, p)) => {
                self.host = h.to_string();
                self.port = p.parse().map_err(|_| anyhow!("bad port in --url: {p}"))?;
            }
            None if !host_port.is_empty() => self.host = host_port.to_string(),
            None => {}
        }
        if let Some(d) = db.filter(|d| !d.is_empty()) {
            self.database = d.to_string();
        }
        Ok(())
    }
}

/// Runs the shell; returns whether every statement succeeded.
pub async fn run(cfg: ShellConfig) -> Result<bool> {
    let conn_str = format!(
        "host={} port={} user={} dbname={} connect_timeout=10 application_name=bini-sql",
        cfg.host, cfg.port, cfg.user, cfg.database
    );
    let (client, connection) = tokio_postgres::connect(&conn_str, NoTls)
        .await
        .map_err(|e| {
            anyhow!(
                "cannot connect to {}:{}: {}",
                cfg.host,
                cfg.port,
                pg_message(&e)
            )
        })?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut shell = Shell {
        client,
        cfg,
        database: String::new(),
    };
    shell.database = shell.cfg.database.clone();
    if !shell.cfg.execute.is_empty() {
        for sql in shell.cfg.execute.clone() {
            // `-e` takes one statement list or one meta-command, as psql's `-c` does.
            let ran = if sql.trim_start().starts_with('\\') {
                shell.meta(sql.trim()).await
            } else {
                Fed::Ran(shell.run_sql(&sql).await)
            };
            match ran {
                Fed::Quit => break,
                Fed::Ran(true) => {}
                Fed::Ran(false) => return Ok(false),
            }
        }
        return Ok(true);
    }
    if let Some(f) = &shell.cfg.file {
        let text = std::fs::read_to_string(f).with_context(|| format!("cannot read {f}"))?;
        return Ok(shell.run_script(&text, true).await);
    }
    if !std::io::stdin().is_terminal() {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read stdin")?;
        return Ok(shell.run_script(&text, true).await);
    }
    shell.interactive().await
}

/// What a line of input did.
enum Fed {
    /// It ran what it completed (nothing, if it completed nothing): whether all succeeded.
    Ran(bool),
    /// It asked to quit.
    Quit,
}

struct Shell {
    client: Client,
    cfg: ShellConfig,
    database: String,
}

/// The message of a client error: the server's, when there is one.
fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

/// Splits text into complete statements (ending at `;` outside quotes and comments) and what
/// is left over.
pub fn split_statements(text: &str) -> (Vec<String>, String) {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    cur.push(c);
                }
                '-' if chars.peek() == Some(&'-') => {
                    // A comment runs to the end of the line.
                    for c in chars.by_ref() {
                        if c == '\n' {
                            cur.push('\n');
                            break;
                        }
                    }
                }
                ';' => {
                    let s = cur.trim().to_string();
                    if !s.is_empty() {
                        out.push(s);
                    }
                    cur.clear();
                }
                _ => cur.push(c),
            },
        }
    }
    (out, cur)
}

impl Shell {
    fn prompt(&self, continuation: bool) -> String {
        let p = format!(
            "{}@{}:{}/{}",
            self.cfg.user, self.cfg.host, self.cfg.port, self.database
        );
        if continuation {
            format!("{}-> ", " ".repeat(p.len().saturating_sub(2)))
        } else {
            format!("{p}> ")
        }
    }

    /// Runs a script line by line as the prompt would (statements end at `;`, a line
    /// starting with `\\` outside a statement is a meta-command, `\\q` ends the script),
    /// stopping at the first error if `stop`. Returns whether everything succeeded.
    async fn run_script(&mut self, text: &str, stop: bool) -> bool {
        let mut buf = String::new();
        let mut ok = true;
        for line in text.lines() {
            match self.feed(&mut buf, line, stop).await {
                Fed::Quit => return ok,
                Fed::Ran(true) => {}
                Fed::Ran(false) => {
                    ok = false;
                    if stop {
                        return false;
                    }
                }
            }
        }
        // A last statement without its `;` still runs.
        let tail = buf.trim();
        if !tail.is_empty() && !self.run_sql(tail).await {
            ok = false;
        }
        ok
    }

    /// Takes one line of input into `buf`: runs a meta-command, or the statements the line
    /// completes (all of them, or up to the first failure if `stop`).
    async fn feed(&mut self, buf: &mut String, line: &str, stop: bool) -> Fed {
        if buf.trim().is_empty() && line.trim_start().starts_with('\\') {
            buf.clear();
            return self.meta(line.trim()).await;
        }
        buf.push_str(line);
        buf.push('\n');
        let (stmts, rest) = split_statements(buf);
        *buf = if rest.trim().is_empty() {
            String::new()
        } else {
            rest
        };
        let mut ok = true;
        for s in stmts {
            if !self.run_sql(&s).await {
                ok = false;
                if stop {
                    break;
                }
            }
        }
        Fed::Ran(ok)
    }

    async fn interactive(&mut self) -> Result<bool> {
        let mut editor = rustyline::DefaultEditor::new().map_err(|e| anyhow!("terminal: {e}"))?;
        let history =
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".bini_sql_history"));
        if let Some(h) = &history {
            let _ = editor.load_history(h);
        }
        println!("# Welcome to the bini SQL shell. Type \\? for help, \\q to quit.");
        let mut buf = String::new();
        loop {
            let line = match editor.readline(&self.prompt(!buf.trim().is_empty())) {
                Ok(l) => l,
                Err(rustyline::error::ReadlineError::Interrupted) => {
                    buf.clear();
                    continue;
                }
                Err(rustyline::error::ReadlineError::Eof) => break,
                Err(e) => bail!("terminal: {e}"),
            };
            let entry = if buf.trim().is_empty() {
                line.trim().to_string()
            } else {
                format!("{}\n{}", buf.trim_end(), line.trim_end())
            };
            if let Fed::Quit = self.feed(&mut buf, &line, false).await {
                break;
            }
            // A finished statement or meta-command goes into the history whole.
            if buf.is_empty() && !entry.is_empty() {
                let _ = editor.add_history_entry(entry.as_str());
            }
        }
        if let Some(h) = &history {
            let _ = editor.save_history(h);
        }
        Ok(true)
    }

    /// Handles a meta-command.
    async fn meta(&mut self, cmd: &str) -> Fed {
        let mut parts = cmd.split_whitespace();
        let name = parts.next().unwrap_or_default();
        let arg = parts.next();
        let ok = match (name, arg) {
            ("\\q", _) => return Fed::Quit,
            ("\\?", _) | ("\\h", _) => {
                println!(
                    "\\q          quit\n\\l          list databases\n\\dt         list tables\n\
                     \\d [TABLE]  list tables, or describe TABLE\n\\?          this help"
                );
                true
            }
            ("\\l", _) => self.run_sql("SHOW DATABASES").await,
            ("\\dt", _) | ("\\d", None) => self.run_sql("SHOW TABLES").await,
            ("\\d", Some(t)) => self.run_sql(&format!("SHOW COLUMNS FROM {t}")).await,
            _ => {
                eprintln!("ERROR: unknown command {name}; \\? lists the commands");
                false
            }
        };
        Fed::Ran(ok)
    }

    /// Runs one statement (or several, as the server splits them); prints results or the
    /// error. Returns whether it succeeded.
    async fn run_sql(&mut self, sql: &str) -> bool {
        match self.client.simple_query(sql).await {
            Ok(msgs) => {
                self.print(msgs);
                if sql.trim_start().to_ascii_lowercase().starts_with("set")
                    || sql.trim_start().to_ascii_lowercase().starts_with("use")
                    || sql
                        .trim_start()
                        .to_ascii_lowercase()
                        .starts_with("drop database")
                {
                    self.refresh_database().await;
                }
                true
            }
            Err(e) => {
                match e.as_db_error() {
                    Some(db) => {
                        eprintln!("ERROR: {}", db.message());
                        if let Some(d) = db.detail() {
                            eprintln!("DETAIL: {d}");
                        }
                        eprintln!("SQLSTATE: {}", db.code().code());
                    }
                    None => eprintln!("ERROR: {e}"),
                }
                false
            }
        }
    }

    async fn refresh_database(&mut self) {
        if let Ok(msgs) = self.client.simple_query("SHOW database").await {
            for m in msgs {
                if let SimpleQueryMessage::Row(r) = m {
                    if let Some(d) = r.get(0) {
                        self.database = d.to_string();
                    }
                }
            }
        }
    }

    fn print(&self, msgs: Vec<SimpleQueryMessage>) {
        let mut columns: Vec<String> = Vec::new();
        let mut rows: Vec<Vec<Option<String>>> = Vec::new();
        for m in msgs {
            match m {
                SimpleQueryMessage::RowDescription(cols) => {
                    columns = cols.iter().map(|c| c.name().to_string()).collect();
                    rows.clear();
                }
                SimpleQueryMessage::Row(r) => {
                    if columns.is_empty() {
                        columns = r.columns().iter().map(|c| c.name().to_string()).collect();
                    }
                    rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
                }
                SimpleQueryMessage::CommandComplete(_) => {
                    if !columns.is_empty() {
                        print!("{}", render(self.cfg.format, &columns, &rows));
                    }
                    columns.clear();
                    rows.clear();
                }
                _ => {}
            }
        }
    }
}

fn looks_numeric(s: &str) -> bool {
    !s.is_empty() && s.parse::<f64>().is_ok()
}

/// Renders rows in a format.
pub fn render(format: OutputFormat, columns: &[String], rows: &[Vec<Option<String>>]) -> String {
    let cell = |v: &Option<String>| v.clone().unwrap_or_else(|| "NULL".into());
    match format {
        OutputFormat::Table => table(columns, rows),
        OutputFormat::Tsv | OutputFormat::Csv => {
            let sep = if format == OutputFormat::Tsv {
                "\t"
            } else {
                ","
            };
            let quote = |s: String| {
                if format == OutputFormat::Csv && (s.contains([',', '"', '\n'])) {
                    format!("\"{}\"", s.replace('"', "\"\""))
                } else {
                    s
                }
            };
            let mut out = columns
                .iter()
                .map(|c| quote(c.clone()))
                .collect::<Vec<_>>()
                .join(sep);
            out.push('\n');
            for r in rows {
                out.push_str(
                    &r.iter()
                        .map(|v| quote(cell(v)))
                        .collect::<Vec<_>>()
                        .join(sep),
                );
                out.push('\n');
            }
            out
        }
        OutputFormat::Records => {
            let w = columns.iter().map(|c| c.chars().count()).max().unwrap_or(0);
            let mut out = String::new();
            for (i, r) in rows.iter().enumerate() {
                out.push_str(&format!("-[ RECORD {} ]\n", i + 1));
                for (c, v) in columns.iter().zip(r) {
                    out.push_str(&format!("{c:<w$} | {}\n", cell(v)));
                }
            }
            out
        }
    }
}

/// The aligned table of the walk-through: centred headers, numbers right-aligned, a `-+-`
/// rule under the header, then `(N rows)`.
fn table(columns: &[String], rows: &[Vec<Option<String>>]) -> String {
    let text: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|v| v.clone().unwrap_or_else(|| "NULL".into()))
                .collect()
        })
        .collect();
    let numeric: Vec<bool> = (0..columns.len())
        .map(|i| {
            let vals: Vec<&Option<String>> = rows.iter().map(|r| &r[i]).collect();
            vals.iter().any(|v| v.is_some())
                && vals.iter().all(|v| v.as_deref().is_none_or(looks_numeric))
        })
        .collect();
    let width: Vec<usize> = (0..columns.len())
        .map(|i| {
            text.iter()
                .map(|r| r[i].chars().count())
                .chain(std::iter::once(columns[i].chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let mut s = String::from(" ");
        s.push_str(
            &cells
                .iter()
                .map(|c| format!(" {c} "))
                .collect::<Vec<_>>()
                .join("|"),
        );
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(
        columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = width[i] - c.chars().count();
                format!("{}{c}{}", " ".repeat(pad / 2), " ".repeat(pad - pad / 2))
            })
            .collect(),
    );
    out.push('-');
    out.push_str(
        &width
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("+"),
    );
    out.push_str("-\n");
    for r in &text {
        out.push_str(&line(
            r.iter()
                .enumerate()
                .map(|(i, v)| {
                    let pad = " ".repeat(width[i] - v.chars().count());
                    if numeric[i] {
                        format!("{pad}{v}")
                    } else {
                        format!("{v}{pad}")
                    }
                })
                .collect(),
        ));
    }
    out.push_str(&format!(
        "({} row{})\n",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_the_walkthrough() {
        let cols = vec!["name".to_string(), "balance".to_string()];
        let rows = vec![
            vec![Some("Andy".into()), Some("100".into())],
            vec![Some("Bob".into()), Some("200".into())],
            vec![Some("Chris".into()), Some("300".into())],
        ];
        let want = "  name  | balance\n\
                    --------+----------\n  \
                    Andy  |     100\n  \
                    Bob   |     200\n  \
                    Chris |     300\n\
                    (3 rows)\n";
        assert_eq!(table(&cols, &rows), want);
    }

    #[test]
    fn statements_split_outside_quotes() {
        let (s, rest) = split_statements("select ';'; -- x;\nselect 2; sel");
        assert_eq!(s, vec!["select ';'", "select 2"]);
        assert_eq!(rest.trim(), "sel");
    }

    #[test]
    fn urls_set_the_connection() {
        let mut c = ShellConfig {
            host: "localhost".into(),
            port: 26257,
            user: "root".into(),
            database: "defaultdb".into(),
            execute: Vec::new(),
            file: None,
            format: OutputFormat::Table,
        };
        c.apply_url("postgresql://bob@db.example:5432/bank?sslmode=disable")
            .expect("parses");
        assert_eq!(
            (c.user.as_str(), c.host.as_str(), c.port),
            ("bob", "db.example", 5432)
        );
        assert_eq!(c.database, "bank");
    }
}
