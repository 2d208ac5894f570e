//! sqllogictest files under `tests/slt/`, run over the Postgres wire protocol against a real
//! 3-node cluster (one connection per `connection` block, each a pgwire session).

use bini_e2e::{pg_conn_str, wait_for_sql, Cluster};
use sqllogictest::{DBOutput, DefaultColumnType};
use tokio_postgres::{NoTls, SimpleQueryMessage};

/// A pgwire connection as a sqllogictest database.
struct Bini {
    client: tokio_postgres::Client,
}

#[derive(Debug)]
struct SltError(tokio_postgres::Error);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            Some(db) => write!(f, "{}", db.message()),
            None => write!(f, "{}", self.0),
        }
    }
}

impl std::error::Error for SltError {}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Bini {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let msgs = self.client.simple_query(sql).await.map_err(SltError)?;
        let mut rows = Vec::new();
        let mut width = None;
        let mut affected = 0;
        for m in msgs {
            match m {
                SimpleQueryMessage::RowDescription(cols) => width = Some(cols.len()),
                SimpleQueryMessage::Row(r) => {
                    width = Some(r.len());
                    rows.push(
                        (0..r.len())
                            .map(|i| match r.get(i) {
                                None => "NULL".to_string(),
                                Some("") => "(empty)".to_string(),
                                Some(v) => v.to_string(),
                            })
                            .collect(),
                    );
                }
                SimpleQueryMessage::CommandComplete(n) => affected = n,
                _ => {}
            }
        }
        Ok(match width {
            Some(w) => DBOutput::Rows {
                types: vec![DefaultColumnType::Any; w],
                rows,
            },
            None => DBOutput::StatementComplete(affected),
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "bini"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await
    }

    fn error_sql_state(err: &SltError) -> Option<String> {
        err.0.code().map(|c| c.code().to_string())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sqllogictest_files() {
    let c = Cluster::start(3, &[]).await;
    wait_for_sql(&c).await;
    let addrs: Vec<String> = c.nodes.iter().map(|n| n.addr.clone()).collect();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("slt");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/slt")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    for (i, file) in files.iter().enumerate() {
        // Each file talks to a different node, so every node's gateway is exercised.
        let cs = pg_conn_str(&addrs[i % addrs.len()]);
        let mut runner = sqllogictest::Runner::new(move || {
            let cs = cs.clone();
            async move {
                let (client, conn) = tokio_postgres::connect(&cs, NoTls)
                    .await
                    .map_err(SltError)?;
                tokio::spawn(conn);
                Ok(Bini { client })
            }
        });
        if let Err(e) = runner.run_file_async(file).await {
            panic!("{}: {}", file.display(), e.display(false));
        }
    }
}
