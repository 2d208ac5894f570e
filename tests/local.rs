//! The laptop commands of the walk-through: `bini start-single-node` (a real one-node
//! cluster that keeps its data across restarts) and `bini demo` (a throwaway cluster in one
//! process with an example database and the shell).

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use bini_e2e::{bini_bin, free_port, wait_for};

/// A child process killed (by pid) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn bini_sql(addr: &str, stmt: &str) -> Output {
    Command::new(bini_bin())
        .args(["sql", "--insecure", "--host", addr, "-e", stmt])
        .output()
        .expect("run bini sql")
}

fn start_single_node(store: &std::path::Path, addr: &str) -> Proc {
    Proc(
        Command::new(bini_bin())
            .args(["start-single-node", "--insecure", "--store"])
            .arg(store)
            .args(["--listen-addr", addr])
            .args(["--http-addr", &format!("127.0.0.1:{}", free_port())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn bini start-single-node"),
    )
}

async fn wait_for_sql(addr: &str) {
    wait_for(Duration::from_secs(60), "SQL to answer", || async {
        // Answering is not enough: the catalog (defaultdb) is bootstrapped right after init.
        let out = bini_sql(addr, "show databases");
        (out.status.success() && text(&out.stdout).contains("defaultdb")).then_some(())
    })
    .await;
}

/// Waits for a child to exit, at most `limit`.
async fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the process did not exit within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn start_single_node_is_a_one_replica_cluster_that_keeps_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let addr = format!("127.0.0.1:{}", free_port());
    let node = start_single_node(&store, &addr);
    wait_for_sql(&addr).await;
    for stmt in [
        "create table kv (k int primary key, v string)",
        "insert into kv values (1, 'one'), (2, 'two')",
    ] {
        let out = bini_sql(&addr, stmt);
        assert!(out.status.success(), "{stmt}: {}", text(&out.stderr));
    }
    // Every range has exactly one replica: no other node is needed or waited for.
    let out = Command::new(bini_bin())
        .args(["debug", "ranges", "--insecure", "--host", &addr])
        .output()
        .expect("bini debug ranges");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ranges = text(&out.stdout);
    assert!(ranges.contains("{1}"), "replicas: {ranges}");
    assert!(!ranges.contains("{1,2"), "replicas: {ranges}");

    // Restarted on the same store, it is the same one-node cluster with the same rows.
    drop(node);
    let _node = start_single_node(&store, &addr);
    wait_for_sql(&addr).await;
    let out = bini_sql(&addr, "select k, v from kv order by k");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "  k |  v\n----+------\n  1 | one\n  2 | two\n(2 rows)\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_runs_three_nodes_with_an_example_database_and_the_shell() {
    let mut child = Command::new(bini_bin())
        .args(["demo", "--nodes", "3"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bini demo");
    // Statements on stdin, as a user would pipe a script into the shell.
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(
            b"select name from users where city = 'london' order by id;\n\
              select count(*) from rides;\n\
              \\dt\n\
              \\q\n\
              select 1/0;\n",
        )
        .expect("write stdin");
    let status = wait_exit(&mut child, Duration::from_secs(120)).await;
    let mut out = String::new();
    let mut err = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .expect("child output")
        .read_to_string(&mut out)
        .expect("child output");
    child
        .stderr
        .take()
        .expect("child output")
        .read_to_string(&mut err)
        .expect("child output");
    assert!(status.success(), "demo failed: {out}{err}");
    let urls: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("postgresql://root@127.0.0.1:"))
        .collect();
    assert_eq!(urls.len(), 3, "one SQL URL per node: {out}");
    assert!(
        out.contains("      name\n----------------\n  Ada Lovelace\n  Alan Turing\n(2 rows)\n"),
        "{out}"
    );
    assert!(
        out.contains("  count\n---------\n      5\n(1 row)\n"),
        "{out}"
    );
    // Meta-commands work in a piped script too; `\q` ends it (the division by zero after it
    // would have failed the run).
    assert!(
        out.contains("  public      | rides      | table\n"),
        "{out}"
    );
    assert!(!err.contains("division by zero"), "{err}");

    // After exit, nothing listens on the ports it printed.
    let port = urls[1]
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .expect("port in URL");
    assert!(
        std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err(),
        "a demo node still listens after exit"
    );
}
