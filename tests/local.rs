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
    // A URL as `bini demo` prints them connects as it is; one that does not turn TLS off is
    // refused with one line (secure mode is not built yet).
    let url = |q: &str| {
        Command::new(bini_bin())
            .args([
                "sql",
                "--url",
                &format!("postgresql://root@{addr}/defaultdb{q}"),
            ])
            .args(["-e", "select 1"])
            .output()
            .expect("run bini sql")
    };
    let out = url("?sslmode=disable");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = url("");
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr),
        "ERROR: secure mode is not available yet; pass --insecure\n"
    );
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
    let admin = out
        .lines()
        .find_map(|l| l.strip_prefix("# Admin UI: http://"))
        .unwrap_or_else(|| panic!("no Admin UI address: {out}"));
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
    assert!(
        std::net::TcpStream::connect(admin).is_err(),
        "the demo's Admin UI still listens after exit"
    );
}

/// A plain HTTP GET (status and body), or `None` while nothing answers.
fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, buf.split_once("\r\n\r\n")?.1.to_string()))
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_http_answers_health_and_readiness_lists_nodes_and_serves_the_ui() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    // `bini start` without `bini init`: the process runs but is not ready, as a StatefulSet's
    // pods are (0/1) until the cluster is initialised.
    let _node = Proc(
        Command::new(bini_bin())
            .args(["start", "--insecure", "--store"])
            .arg(dir.path().join("store"))
            .args([
                "--listen-addr",
                &addr,
                "--http-addr",
                &http,
                "--join",
                &addr,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn bini start"),
    );
    wait_for(
        Duration::from_secs(30),
        "the admin port to answer",
        || async { http_get(&http, "/health").filter(|(s, _)| *s == 200) },
    )
    .await;
    let (status, body) = http_get(&http, "/health?ready=1").expect("readiness");
    assert_eq!(status, 503, "ready before init: {body}");

    let out = Command::new(bini_bin())
        .args(["init", "--insecure", "--host", &addr])
        .output()
        .expect("bini init");
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for(Duration::from_secs(60), "readiness after init", || async {
        http_get(&http, "/health?ready=1").filter(|(s, _)| *s == 200)
    })
    .await;
    // Ready means SQL works.
    let out = bini_sql(&addr, "select 1");
    assert!(out.status.success(), "{}", text(&out.stderr));

    let nodes = wait_for(Duration::from_secs(30), "the node's record", || async {
        let (status, body) = http_get(&http, "/api/v2/nodes")?;
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let nodes = v["nodes"].as_array().expect("nodes").clone();
        (!nodes.is_empty()).then_some(nodes)
    })
    .await;
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[0]["id"], 1);
    assert_eq!(nodes[0]["address"], addr.as_str());
    assert_eq!(nodes[0]["http_address"], http.as_str());
    assert_eq!(nodes[0]["is_live"], true);

    let (status, page) = http_get(&http, "/").expect("UI");
    assert_eq!(status, 200);
    assert!(
        page.contains("<title>bini</title>") && page.contains("/api/v2/nodes"),
        "{page}"
    );
}
