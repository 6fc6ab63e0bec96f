//! The embedded SQLite database through real requests to the `sqlprobe` guest: what a
//! statement may reach, how long it may run, how much it may return, and what wharf
//! reports it did. Each test starts its own wharf on SQLite files in a temp dir.

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use wharf_tests::{HttpClient, Reply, Wharf, apps_dir, shared_cache_dir};

const SECOND: Duration = Duration::from_secs(1);

/// wharf serving `sqlprobe` (manifest `database = true` plus `manifest_extra`) and
/// `todo`, each on its own SQLite file, in the data dir `data` if given.
fn start(manifest_extra: &str, data: Option<&std::path::Path>) -> (Wharf, tempfile::TempDir) {
    let apps = apps_dir(&["todo", "sqlprobe"]);
    let manifest = format!("database = true\n{manifest_extra}");
    std::fs::write(apps.path().join("sqlprobe.toml"), manifest).unwrap();
    std::fs::write(apps.path().join("todo.toml"), "database = true\n").unwrap();
    let envs = [("WHARF_CACHE_DIR", shared_cache_dir().into_os_string())];
    let envs: Vec<_> = envs.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    let args: Vec<&str> = match data {
        Some(dir) => vec!["--data-dir", dir.to_str().unwrap()],
        None => vec![],
    };
    (Wharf::start_with(apps.path(), &envs, &args), apps)
}

fn step(op: &str, sql: &str) -> Value {
    json!({ "op": op, "sql": sql, "params": [] })
}

/// Posts `steps` to sqlprobe (`tx`: none, commit, rollback or drop); bounded in time.
async fn post(wharf: &Wharf, tx: &str, steps: Value) -> Reply {
    let body = json!({ "tx": tx, "steps": steps }).to_string();
    let reply = tokio::time::timeout(
        30 * SECOND,
        HttpClient::http1().post_json(&wharf.url("/sqlprobe"), &body),
    )
    .await
    .expect("sqlprobe answered within 30 s");
    reply.unwrap()
}

/// Runs `steps` and returns sqlprobe's report, one result per step.
async fn probe(wharf: &Wharf, tx: &str, steps: Value) -> Value {
    let reply = post(wharf, tx, steps).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    serde_json::from_str(&reply.body).unwrap()
}

fn error_kind(result: &Value) -> Option<&str> {
    result["error"]["kind"].as_str()
}

/// The peak resident memory of process `pid`, from /proc.
fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/PID/status");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_statement_cannot_attach_pragma_vacuum_into_or_create_temp_objects() {
    let (wharf, _apps) = start("", None);
    // The other app's database, with a row in it.
    let created = HttpClient::http1()
        .post_json(&wharf.url("/todo"), r#"{"title":"secret"}"#)
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.body);
    let other = wharf.data.path().join("todo.db");
    assert!(other.exists());
    let outside = tempfile::tempdir().unwrap();
    let copy = outside.path().join("copy.db");

    let attach = format!("--SELECT\nATTACH DATABASE '{}' AS o", other.display());
    let report = probe(
        &wharf,
        "none",
        json!([
            step("query", &attach),
            step("execute", &attach),
            step("query", "SELECT title FROM o.todos"),
            step(
                "execute",
                &format!("--SELECT\nVACUUM INTO '{}'", copy.display())
            ),
            step("query", "--SELECT\nPRAGMA database_list"),
            step("execute", "--SELECT\nPRAGMA foreign_keys = OFF"),
            step("execute", "--SELECT\nCREATE TEMP TABLE t (x)"),
            step("query", "SELECT 1"),
        ]),
    )
    .await;
    let r = report["results"].as_array().unwrap();
    for (i, what) in [
        (0, "ATTACH (query)"),
        (1, "ATTACH (execute)"),
        (3, "VACUUM INTO"),
        (4, "PRAGMA (query)"),
        (5, "PRAGMA (execute)"),
        (6, "CREATE TEMP TABLE"),
    ] {
        assert!(error_kind(&r[i]).is_some(), "{what} was run: {report}");
    }
    assert!(
        error_kind(&r[2]).is_some(),
        "the other app's rows were read: {report}"
    );
    assert!(!copy.exists(), "VACUUM INTO wrote {}", copy.display());
    // The refusals left the connection serving.
    assert_eq!(r[7]["rows"], json!([[{"int": 1}]]), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_begun_by_a_guest_statement_cannot_swallow_acknowledged_writes() {
    let (mut wharf, _apps) = start("", None);
    let report = probe(
        &wharf,
        "none",
        json!([
            step("execute", "--SELECT\nBEGIN"),
            step("execute", "--SELECT\nSAVEPOINT s"),
        ]),
    )
    .await;
    assert!(error_kind(&report["results"][0]).is_some(), "{report}");
    assert!(error_kind(&report["results"][1]).is_some(), "{report}");
    // Acknowledged in a later request, on the same connection.
    let report = probe(
        &wharf,
        "none",
        json!([
            step("execute", "CREATE TABLE kept (x INTEGER)"),
            step("execute", "INSERT INTO kept VALUES (1)"),
        ]),
    )
    .await;
    assert_eq!(report["results"][1]["rows_affected"], 1, "{report}");

    wharf.signal("TERM");
    assert!(wharf.wait_exit(20 * SECOND).is_some(), "no exit after TERM");
    let data = wharf.stop();
    let (wharf, _apps) = start("", Some(data.path()));
    let report = probe(&wharf, "none", json!([step("query", "SELECT x FROM kept")])).await;
    assert_eq!(
        report["results"][0]["rows"],
        json!([[{"int": 1}]]),
        "an acknowledged write was lost: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_statement_in_a_transaction_ends_at_the_request_deadline() {
    let (mut wharf, _apps) = start("timeout_ms = 500\n", None);
    let forever = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) \
                   SELECT count(*) FROM c";
    let started = Instant::now();
    let reply = post(&wharf, "commit", json!([step("query", forever)])).await;
    assert!(
        reply.status == 504 || reply.body.contains("timeout"),
        "{} {}",
        reply.status,
        reply.body
    );
    assert!(started.elapsed() < 5 * SECOND, "{:?}", started.elapsed());

    // The database is free again for the next request, well within its deadline.
    let report = probe(&wharf, "none", json!([step("query", "SELECT 1")])).await;
    assert_eq!(
        report["results"][0]["rows"],
        json!([[{"int": 1}]]),
        "{report}"
    );
    // And the same in a top-level call.
    let reply = post(&wharf, "none", json!([step("query", forever)])).await;
    assert!(reply.status == 504 || reply.body.contains("timeout"));
    let report = probe(&wharf, "commit", json!([step("query", "SELECT 2")])).await;
    assert_eq!(
        report["results"][0]["rows"],
        json!([[{"int": 2}]]),
        "{report}"
    );

    wharf.signal("TERM");
    assert!(
        wharf.wait_exit(10 * SECOND).is_some(),
        "wharf still running 10 s after TERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_sqlite_value_fails_naming_the_limit_without_reaching_wharfs_memory() {
    let (wharf, _apps) = start("", None);
    let report = probe(
        &wharf,
        "none",
        json!([step("query", "SELECT zeroblob(400000000)")]),
    )
    .await;
    let result = &report["results"][0];
    assert_eq!(error_kind(result), Some("not_allowed"), "{report}");
    let message = result["error"]["message"].as_str().unwrap();
    assert!(message.contains("max_result_mb"), "{message}");
    let peak = peak_rss_bytes(wharf.pid());
    assert!(peak < 300 << 20, "wharf's peak RSS reached {peak} bytes");
    // Inside a transaction too, and the app keeps serving.
    let report = probe(
        &wharf,
        "commit",
        json!([
            step("query", "SELECT zeroblob(400000000)"),
            step("query", "SELECT 1")
        ]),
    )
    .await;
    assert_eq!(error_kind(&report["results"][0]), Some("not_allowed"));
    assert_eq!(
        report["results"][1]["rows"],
        json!([[{"int": 1}]]),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_bounds_rows_and_bytes_of_one_result() {
    let (wharf, _apps) = start("max_result_rows = 10\nmax_result_mb = 1\n", None);
    let rows = |n: u32| {
        format!(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT {n}) \
             SELECT x FROM c"
        )
    };
    let report = probe(
        &wharf,
        "none",
        json!([
            step("query", &rows(10)),
            step("query", &rows(11)),
            step("query", "SELECT zeroblob(600000), zeroblob(600000)"),
            step("query", "SELECT zeroblob(2000000)"),
        ]),
    )
    .await;
    let r = report["results"].as_array().unwrap();
    assert_eq!(r[0]["rows"].as_array().unwrap().len(), 10, "{report}");
    assert_eq!(error_kind(&r[1]), Some("not_allowed"), "{report}");
    assert!(
        r[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_result_rows = 10")
    );
    for r in &r[2..] {
        assert_eq!(error_kind(r), Some("not_allowed"), "{report}");
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .contains("max_result_mb = 1")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reports_the_row_id_and_row_count_of_the_statement_itself() {
    let (wharf, _apps) = start("", None);
    let report = probe(
        &wharf,
        "none",
        json!([
            step("execute", "CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT)"),
            step("execute", "CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT)"),
            step("execute", "INSERT INTO a (v) VALUES ('x')"),
            step("execute", "INSERT INTO b (v) VALUES ('y')"),
            step("execute", "CREATE TABLE c (id INTEGER PRIMARY KEY)"),
            step("execute", "UPDATE a SET v = 'z'"),
            step(
                "execute",
                "INSERT OR IGNORE INTO b (id, v) VALUES (1, 'again')"
            ),
            step(
                "execute",
                "CREATE TABLE u (id INTEGER PRIMARY KEY, k TEXT UNIQUE, v INT)"
            ),
            step("execute", "INSERT INTO u (k, v) VALUES ('a', 1)"),
            step("execute", "INSERT INTO u (k, v) VALUES ('b', 1)"),
            step(
                "execute",
                "INSERT INTO u (k, v) VALUES ('a', 2) ON CONFLICT (k) DO UPDATE SET v = excluded.v"
            ),
            step("execute", "INSERT INTO u (k, v) SELECT k, v FROM u WHERE 0"),
        ]),
    )
    .await;
    let r = report["results"].as_array().unwrap();
    assert_eq!(r[2]["last_insert_id"], 1, "{report}");
    assert_eq!(
        r[3]["last_insert_id"], 1,
        "second table's first row: {report}"
    );
    assert_eq!(r[4]["rows_affected"], 0, "CREATE TABLE: {report}");
    assert_eq!(r[4]["last_insert_id"], Value::Null, "{report}");
    assert_eq!(r[5]["rows_affected"], 1, "{report}");
    assert_eq!(r[5]["last_insert_id"], Value::Null, "UPDATE: {report}");
    assert_eq!(r[6]["rows_affected"], 0, "{report}");
    assert_eq!(
        r[6]["last_insert_id"],
        Value::Null,
        "ignored INSERT: {report}"
    );
    assert_eq!(r[9]["last_insert_id"], 2, "{report}");
    // The upsert updated row 1 and inserted nothing: row 2 is not its id.
    assert_eq!(r[10]["rows_affected"], 1, "{report}");
    assert_eq!(
        r[10]["last_insert_id"],
        Value::Null,
        "upsert that updated: {report}"
    );
    assert_eq!(r[11]["rows_affected"], 0, "{report}");
    assert_eq!(
        r[11]["last_insert_id"],
        Value::Null,
        "INSERT ... SELECT of no rows: {report}"
    );

    // Inside a transaction the same.
    let report = probe(
        &wharf,
        "commit",
        json!([
            step("execute", "CREATE TABLE d (id INTEGER PRIMARY KEY)"),
            step("execute", "INSERT INTO d DEFAULT VALUES"),
        ]),
    )
    .await;
    assert_eq!(report["results"][0]["rows_affected"], 0, "{report}");
    assert_eq!(report["results"][1]["last_insert_id"], 1, "{report}");
}
