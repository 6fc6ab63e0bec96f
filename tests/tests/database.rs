//! The database role through real HTTP requests to guest apps: SQLite by default, and
//! a real MariaDB primary with two replicas (GTID replication) started by the harness.
//!
//! `todo` is the example CRUD app; `sqlprobe` runs the statements a test sends it and
//! reports each result or error kind, and which server answered (`@@server_id`).

use mysql_async::prelude::Queryable;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use wharf_tests::mariadb::{Cluster, NodeId, PASSWORD};
use wharf_tests::{HttpClient, Reply, Wharf, apps_dir, poll_until_async, shared_cache_dir};

const SECOND: Duration = Duration::from_secs(1);

/// wharf serving `todo` and `sqlprobe` with the database granted; on `cluster` when
/// given, else on SQLite.
fn start(cluster: Option<&Cluster>) -> (Wharf, tempfile::TempDir) {
    start_configured(cluster, "", "")
}

/// As [`start`], with `database` added to the `[database]` section and `probe` to
/// sqlprobe's manifest.
fn start_configured(
    cluster: Option<&Cluster>,
    database: &str,
    probe: &str,
) -> (Wharf, tempfile::TempDir) {
    let apps = apps_dir(&["todo", "sqlprobe", "hello"]);
    for (app, extra) in [("todo", ""), ("sqlprobe", probe)] {
        let manifest = format!("database = true\n{extra}");
        std::fs::write(apps.path().join(format!("{app}.toml")), manifest).unwrap();
    }
    let envs = [
        ("WHARF_CACHE_DIR", shared_cache_dir().into_os_string()),
        ("WHARF_TEST_DB_PASSWORD", PASSWORD.into()),
    ];
    let envs: Vec<_> = envs.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    let wharf = match cluster {
        None => Wharf::start_with(apps.path(), &envs, &[]),
        Some(cluster) => {
            let replicas: Vec<String> = (0..cluster.replicas())
                .map(|i| format!("{:?}", cluster.url(NodeId::Replica(i))))
                .collect();
            let config = format!(
                "[database]\nprimary = {:?}\nreplicas = [{}]\n\
                 password_env = \"WHARF_TEST_DB_PASSWORD\"\n\
                 check_interval_ms = 100\nconnect_timeout_ms = 500\nmax_replica_lag_s = 1\n\
                 {database}",
                cluster.url(NodeId::Primary),
                replicas.join(", ")
            );
            let path = apps.path().join("wharf.conf");
            std::fs::write(&path, config).unwrap();
            Wharf::start_with(apps.path(), &envs, &["--config", path.to_str().unwrap()])
        }
    };
    (wharf, apps)
}

/// Runs `steps` through sqlprobe (`tx`: none, commit, rollback or drop) and returns
/// its report.
async fn probe(wharf: &Wharf, tx: &str, steps: Value) -> Value {
    let body = json!({ "tx": tx, "steps": steps }).to_string();
    let reply = HttpClient::http1()
        .post_json(&wharf.url("/sqlprobe"), &body)
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    serde_json::from_str(&reply.body).unwrap()
}

fn step(op: &str, sql: &str, params: Value) -> Value {
    json!({ "op": op, "sql": sql, "params": params })
}

/// The kind of error a probe step reported, if any.
fn error_kind(result: &Value) -> Option<&str> {
    result["error"]["kind"].as_str()
}

async fn server_id(client: &HttpClient, wharf: &Wharf, path: &str) -> u32 {
    let reply = client.get(&wharf.url(path)).await.unwrap();
    assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    reply.body.trim().parse().unwrap()
}

async fn send(client: &HttpClient, wharf: &Wharf, method: &str, path: &str, body: &str) -> Reply {
    client
        .send(method, &wharf.url(path), Some("application/json"), body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"))
}

/// Polls until `path` answers `status`: after a write, a replica may take a moment.
async fn eventually(client: &HttpClient, wharf: &Wharf, path: &str, status: u16) -> Reply {
    let what = format!("GET {path} answers {status}");
    poll_until_async(10 * SECOND, &what, async || {
        let reply = send(client, wharf, "GET", path, "").await;
        match reply.status == status {
            true => Ok(reply),
            false => Err((reply.status, reply.body)),
        }
    })
    .await
    .unwrap()
}

/// The todo app's whole API, the same on SQLite and MySQL.
async fn todo_suite(wharf: &Wharf) {
    let c = HttpClient::http1();
    let list = send(&c, wharf, "GET", "/todo", "").await;
    assert_eq!(list.status, 200, "{}", list.body);

    let created = send(&c, wharf, "POST", "/todo", r#"{"title":"buy milk"}"#).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let todo: Value = serde_json::from_str(&created.body).unwrap();
    let id = todo["id"].as_u64().unwrap();
    assert_eq!(todo, json!({"id": id, "title": "buy milk", "done": false}));
    assert_eq!(created.headers["location"], format!("/todo/{id}").as_str());

    let got = eventually(&c, wharf, &format!("/todo/{id}"), 200).await;
    assert_eq!(serde_json::from_str::<Value>(&got.body).unwrap(), todo);

    let updated = send(&c, wharf, "PUT", &format!("/todo/{id}"), r#"{"done":true}"#).await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(
        serde_json::from_str::<Value>(&updated.body).unwrap(),
        json!({"id": id, "title": "buy milk", "done": true})
    );

    // Injection payloads are stored as data.
    let payload = "x'); DROP TABLE todos; --";
    let evil = send(
        &c,
        wharf,
        "POST",
        "/todo",
        &json!({ "title": payload }).to_string(),
    )
    .await;
    assert_eq!(evil.status, 201, "{}", evil.body);
    let evil_id = serde_json::from_str::<Value>(&evil.body).unwrap()["id"]
        .as_u64()
        .unwrap();
    let got = eventually(&c, wharf, &format!("/todo/{evil_id}"), 200).await;
    assert_eq!(
        serde_json::from_str::<Value>(&got.body).unwrap()["title"],
        payload
    );

    // Validation: bad JSON is 400, a bad field is 422 naming it, an unknown id 404.
    for (body, status, needle) in [
        ("{not json", 400, ""),
        (r#"{"title":""}"#, 422, "title"),
        (r#"{"title":"   "}"#, 422, "title"),
        (r#"{"title":5}"#, 422, "title"),
        (r#"{"done":true}"#, 422, "title"),
        (r#"{"title":"x","done":"yes"}"#, 422, "done"),
        (r#"{"title":"x","colour":"red"}"#, 422, "colour"),
    ] {
        let reply = send(&c, wharf, "POST", "/todo", body).await;
        assert_eq!(reply.status, status, "POST {body}: {}", reply.body);
        assert!(reply.body.contains(needle), "POST {body}: {}", reply.body);
    }
    let long = json!({ "title": "x".repeat(201) }).to_string();
    assert_eq!(send(&c, wharf, "POST", "/todo", &long).await.status, 422);
    assert_eq!(send(&c, wharf, "GET", "/todo/abc", "").await.status, 404);
    assert_eq!(send(&c, wharf, "GET", "/todo/999999", "").await.status, 404);
    let missing = send(&c, wharf, "PUT", "/todo/999999", r#"{"done":true}"#).await;
    assert_eq!(missing.status, 404);

    let deleted = send(&c, wharf, "DELETE", &format!("/todo/{id}"), "").await;
    assert_eq!(deleted.status, 204);
    assert_eq!(
        send(&c, wharf, "DELETE", &format!("/todo/{id}"), "")
            .await
            .status,
        404
    );
    eventually(&c, wharf, &format!("/todo/{id}"), 404).await;
    let list = eventually(&c, wharf, "/todo", 200).await;
    let list: Vec<Value> = serde_json::from_str(&list.body).unwrap();
    assert!(list.iter().any(|t| t["id"] == evil_id));
    assert!(!list.iter().any(|t| t["id"] == id));
}

/// Types, errors, transactions and the statement rules, through sqlprobe.
async fn sql_suite(wharf: &Wharf, mysql: bool) {
    let ddl = if mysql {
        "CREATE TABLE kinds (id INT PRIMARY KEY, i BIGINT, u BIGINT UNSIGNED, f DOUBLE, \
         d DECIMAL(10,2), t VARCHAR(50) UNIQUE, b VARBINARY(10), dt DATE, tm TIME, \
         ts DATETIME(3), j JSON, n INT)"
    } else {
        "CREATE TABLE kinds (id INTEGER PRIMARY KEY, i INTEGER, u INTEGER, f REAL, d TEXT, \
         t TEXT UNIQUE, b BLOB, dt TEXT, tm TEXT, ts TEXT, j TEXT, n INTEGER)"
    };
    let insert = "INSERT INTO kinds VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    let row = json!([1, -5, {"uint": 7}, 1.5, {"decimal": "12.50"}, "héllo", {"binary": "00ff"},
        {"date": "2026-11-27"}, {"time": "13:45:00"}, {"datetime": "2026-11-27 13:45:00.250"},
        {"json": "{\"a\":1}"}, null]);
    // Write and read back in one request: the read goes to the primary.
    let report = probe(
        wharf,
        "none",
        json!([
            step("execute", ddl, json!([])),
            step("execute", insert, row),
            step("query", "SELECT * FROM kinds WHERE id = ?", json!([1])),
        ]),
    )
    .await;
    let results = report["results"].as_array().unwrap();
    assert_eq!(results[1]["rows_affected"], 1, "{report}");
    let got = &results[2]["rows"][0];
    assert_eq!(got[1], json!({"int": -5}), "{report}");
    assert_eq!(got[3], json!({"float": 1.5}));
    assert_eq!(got[5], json!({"text": "héllo"}));
    assert_eq!(got[6], json!({"binary": "00ff"}));
    assert_eq!(got[11], json!({"null": null}));
    if mysql {
        assert_eq!(got[2], json!({"uint": 7}));
        assert_eq!(got[4], json!({"decimal": "12.50"}));
        assert_eq!(got[7], json!({"date": "2026-11-27"}));
        assert_eq!(got[8], json!({"time": "13:45:00"}));
        assert_eq!(got[9], json!({"datetime": "2026-11-27 13:45:00.250000"}));
    } else {
        assert_eq!(got[2], json!({"int": 7}));
        assert_eq!(got[7], json!({"text": "2026-11-27"}));
    }

    // Errors say whose fault it was.
    let report = probe(
        wharf,
        "none",
        json!([
            step(
                "execute",
                insert,
                json!([2, 0, 0, 0, "0", "héllo", null, null, null, null, null, null])
            ),
            step("query", "SELEC 1", json!([])),
            step("query", "DELETE FROM kinds", json!([])),
            step("query", "SELECT 1; DROP TABLE kinds", json!([])),
            step("execute", "SET @x = 1", json!([])),
            step(
                "execute",
                "LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE kinds",
                json!([])
            ),
            step("query", "SELECT * FROM kinds WHERE id = ?", json!([])),
            step(
                "query",
                "SELECT t FROM kinds WHERE t = ?",
                json!(["héllo' OR '1'='1"])
            ),
            step("query", "SELECT COUNT(*) AS n FROM kinds", json!([])),
        ]),
    )
    .await;
    let r = report["results"].as_array().unwrap();
    assert_eq!(error_kind(&r[0]), Some("constraint_violation"), "{report}");
    assert_eq!(error_kind(&r[1]), Some("bad_statement"), "{report}");
    assert_eq!(error_kind(&r[2]), Some("bad_statement"), "{report}");
    assert!(
        r[2]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("execute")
    );
    assert_eq!(error_kind(&r[3]), Some("bad_statement"), "{report}");
    assert_eq!(error_kind(&r[4]), Some("not_allowed"), "{report}");
    assert_eq!(error_kind(&r[5]), Some("not_allowed"), "{report}");
    assert_eq!(error_kind(&r[6]), Some("bad_statement"), "{report}");
    assert_eq!(r[7]["rows"], json!([]), "injection matched rows: {report}");
    assert_eq!(r[8]["rows"][0][0], json!({"int": 1}), "{report}");

    // Transactions: commit keeps, rollback and drop undo.
    let add = |id: i64| {
        step(
            "execute",
            "INSERT INTO kinds (id, t) VALUES (?, ?)",
            json!([id, format!("t{id}")]),
        )
    };
    for (tx, id) in [("commit", 10), ("rollback", 11), ("drop", 12)] {
        let report = probe(wharf, tx, json!([add(id)])).await;
        assert_eq!(report["results"][0]["rows_affected"], 1, "{tx}: {report}");
        assert_eq!(report["end"], Value::Null, "{tx}: {report}");
    }
    let report = probe(
        wharf,
        "commit",
        json!([step(
            "query",
            "SELECT id FROM kinds WHERE id >= 10 ORDER BY id",
            json!([])
        )]),
    )
    .await;
    assert_eq!(
        report["results"][0]["rows"],
        json!([[{"int": 10}]]),
        "{report}"
    );
    // The connection a dropped transaction used is clean again.
    let report = probe(wharf, "commit", json!([add(13)])).await;
    assert_eq!(report["end"], Value::Null, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn todo_and_sql_on_sqlite() {
    let (wharf, apps) = start(None);
    assert!(
        wharf.banner.contains("database: SQLite"),
        "{}",
        wharf.banner
    );
    todo_suite(&wharf).await;
    sql_suite(&wharf, false).await;

    // The data is in the app's own file, and survives a restart.
    let data = wharf.data.path().to_path_buf();
    assert!(data.join("todo.db").exists() && data.join("sqlprobe.db").exists());
    let c = HttpClient::http1();
    let before = send(&c, &wharf, "GET", "/todo", "").await.body;
    let data_dir = wharf.stop();
    let envs = [("WHARF_CACHE_DIR", shared_cache_dir().into_os_string())];
    let envs: Vec<_> = envs.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    let args = ["--data-dir", data_dir.path().to_str().unwrap()];
    let wharf = Wharf::start_with(apps.path(), &envs, &args);
    assert_eq!(send(&c, &wharf, "GET", "/todo", "").await.body, before);

    // An app without the grant gets a precise refusal, not a database.
    std::fs::remove_file(apps.path().join("sqlprobe.toml")).unwrap();
    let url = wharf.url("/sqlprobe");
    let refusal = poll_until_async(10 * SECOND, "the grant is withdrawn", async || {
        let body = json!({"steps": [step("query", "SELECT 1", json!([]))]}).to_string();
        let reply = c.post_json(&url, &body).await.unwrap();
        match reply.body.contains("not_allowed") {
            true => Ok(reply.body),
            false => Err(reply.body),
        }
    })
    .await
    .unwrap();
    assert!(refusal.contains("database = true"), "{refusal}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_routes_reads_to_replicas_and_writes_to_primary() {
    let cluster = Cluster::start(2).await.unwrap();
    let (wharf, _apps) = start(Some(&cluster));
    assert!(wharf.banner.contains("database: MySQL"), "{}", wharf.banner);
    let c = HttpClient::http1();
    let primary = cluster.server_id(NodeId::Primary);
    let replicas = [
        cluster.server_id(NodeId::Replica(0)),
        cluster.server_id(NodeId::Replica(1)),
    ];
    for i in 0..2 {
        let port = cluster.port(NodeId::Replica(i)).to_string();
        wharf
            .wait_for_log(&["replica in rotation", &port], 10 * SECOND)
            .unwrap();
    }

    // Reads go round robin over both replicas, never to the primary.
    let mut seen = std::collections::HashMap::new();
    for _ in 0..40 {
        *seen
            .entry(server_id(&c, &wharf, "/sqlprobe/server-id").await)
            .or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    for id in replicas {
        assert!(seen[&id] >= 15, "uneven round robin: {seen:?}");
    }

    // Writes land on the primary: the row records the server that ran the INSERT.
    let report = probe(
        &wharf,
        "none",
        json!([
            step("execute", "CREATE TABLE probe_ryw (n INT)", json!([])),
            step(
                "execute",
                "INSERT INTO probe_ryw VALUES (@@server_id)",
                json!([])
            ),
        ]),
    )
    .await;
    assert_eq!(report["results"][1]["rows_affected"], 1, "{report}");
    cluster.wait_replicated(10 * SECOND).await.unwrap();
    for node in [NodeId::Primary, NodeId::Replica(0), NodeId::Replica(1)] {
        let rows = cluster.sql(node, "SELECT n FROM probe_ryw").await.unwrap();
        let n: u32 = rows[0].get(0).unwrap();
        assert_eq!(n, primary, "the write ran on server {n}");
    }
    // Read-your-writes: after a write, the same request reads from the primary.
    for _ in 0..6 {
        assert_eq!(
            server_id(&c, &wharf, "/sqlprobe/write-then-read").await,
            primary
        );
    }
    // A transaction runs on the primary, reads included.
    let report = probe(
        &wharf,
        "commit",
        json!([step("query", "SELECT @@server_id", json!([]))]),
    )
    .await;
    assert_eq!(
        report["results"][0]["rows"][0][0],
        json!({"uint": primary}),
        "{report}"
    );

    sql_suite(&wharf, true).await;
    todo_suite(&wharf).await;

    // A connection killed mid-statement: a clear error, and the pool recovers.
    let mut lock = lock_row(&cluster, "probe_lock").await;
    let slow = {
        let url = wharf.url("/sqlprobe");
        tokio::spawn(async move {
            let update = locked_update("probe_lock");
            let body = json!({"steps": [step("execute", &update, json!([]))]});
            let reply = HttpClient::http1()
                .post_json(&url, &body.to_string())
                .await
                .unwrap();
            serde_json::from_str::<Value>(&reply.body).unwrap()
        })
    };
    let started = Instant::now();
    let id = wait_running(&cluster, "UPDATE probe_lock").await;
    cluster
        .sql(NodeId::Primary, &format!("KILL {id}"))
        .await
        .unwrap();
    let report = slow.await.unwrap();
    assert!(started.elapsed() < 10 * SECOND);
    assert_eq!(
        error_kind(&report["results"][0]),
        Some("unavailable"),
        "{report}"
    );
    lock.query_drop("COMMIT").await.unwrap();
    for _ in 0..5 {
        let report = probe(
            &wharf,
            "none",
            json!([step("execute", "SELECT 1", json!([]))]),
        )
        .await;
        assert_eq!(report["results"][0]["rows_affected"], 0, "{report}");
    }
}

/// The statement the lock tests send: it waits on the row [`lock_row`] holds in `table`.
fn locked_update(table: &str) -> String {
    format!("UPDATE {table} SET n = n + 1 WHERE id = 1")
}

/// Creates table `table` with row 1 and holds that row locked from the test's own
/// connection (until it commits or drops), so an UPDATE of it from wharf waits as long
/// as the test wants: a slow statement of the kind real apps send, which no filter
/// refuses.
async fn lock_row(cluster: &Cluster, table: &str) -> mysql_async::Conn {
    for sql in [
        format!("CREATE TABLE {table} (id INT PRIMARY KEY, n INT)"),
        format!("INSERT INTO {table} VALUES (1, 0)"),
    ] {
        cluster.sql(NodeId::Primary, &sql).await.unwrap();
    }
    let mut conn = cluster.connect(NodeId::Primary).await.unwrap();
    conn.query_drop("START TRANSACTION").await.unwrap();
    conn.query_drop(format!("SELECT n FROM {table} WHERE id = 1 FOR UPDATE"))
        .await
        .unwrap();
    conn
}

/// The server thread running a statement that starts with `prefix`, if one is.
async fn running(cluster: &Cluster, prefix: &str) -> Option<u64> {
    let sql = format!("SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE '{prefix}%'");
    let rows = cluster.sql(NodeId::Primary, &sql).await.unwrap();
    rows.first().map(|row| row.get(0).unwrap())
}

/// Waits until a statement starting with `prefix` runs on the primary; its thread id.
async fn wait_running(cluster: &Cluster, prefix: &str) -> u64 {
    let what = format!("{prefix}... runs on the primary");
    poll_until_async(10 * SECOND, &what, async || {
        running(cluster, prefix).await.ok_or("not running")
    })
    .await
    .unwrap()
}

/// Whether no statement starting with `prefix` runs on the primary any more within `limit`.
async fn stops_within(cluster: &Cluster, prefix: &str, limit: Duration) -> bool {
    let what = format!("{prefix}... stops on the primary");
    poll_until_async(limit, &what, async || {
        match running(cluster, prefix).await {
            Some(id) => Err(id),
            None => Ok(()),
        }
    })
    .await
    .is_ok()
}

/// The one value of a one-row, one-column result, as a number of any kind.
fn only_number(result: &Value) -> Option<u64> {
    result["rows"][0][0].as_object()?.values().next()?.as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_transaction_statement_never_returns_its_connection_to_the_pool() {
    let cluster = Cluster::start(0).await.unwrap();
    // One connection: whatever the cancelled request leaves on it, the next ones get.
    let (wharf, _apps) = start_configured(Some(&cluster), "pool_max = 1\n", "");
    let mut lock = lock_row(&cluster, "held").await;
    let create = "CREATE TABLE marks (id INT AUTO_INCREMENT PRIMARY KEY, m VARCHAR(20))";
    cluster.sql(NodeId::Primary, create).await.unwrap();

    // A client sends a transaction whose UPDATE waits on the lock, and goes away.
    let body =
        json!({"tx": "commit", "steps": [step("execute", &locked_update("held"), json!([]))]})
            .to_string();
    let mut client = tokio::net::TcpStream::connect(wharf.addr).await.unwrap();
    let request = format!(
        "POST /sqlprobe HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    client.write_all(request.as_bytes()).await.unwrap();
    wait_running(&cluster, "UPDATE held").await;
    drop(client);
    let stopped = stops_within(&cluster, "UPDATE held", 5 * SECOND).await;
    lock.query_drop("COMMIT").await.unwrap();

    for i in 0..5 {
        let mark = format!("m{i}");
        let report = probe(
            &wharf,
            "none",
            json!([
                step("execute", "INSERT INTO marks (m) VALUES (?)", json!([mark])),
                step("query", "SELECT m FROM marks WHERE m = ?", json!([mark])),
            ]),
        )
        .await;
        let results = &report["results"];
        assert_eq!(results[0]["rows_affected"], 1, "request {i}: {report}");
        assert_eq!(
            results[1]["rows"],
            json!([[{ "text": mark }]]),
            "request {i}: {report}"
        );
    }
    assert!(
        stopped,
        "the cancelled UPDATE still ran on the server 5 s after its client left"
    );
    // The server rolled the abandoned transaction back.
    let rows = cluster
        .sql(NodeId::Primary, "SELECT n FROM held")
        .await
        .unwrap();
    assert_eq!(rows[0].get::<i64, _>(0), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_past_the_query_timeout_is_stopped_on_the_server_too() {
    let cluster = Cluster::start(0).await.unwrap();
    let (wharf, _apps) = start_configured(Some(&cluster), "query_timeout_ms = 1000\n", "");
    let _lock = lock_row(&cluster, "held").await;

    let started = Instant::now();
    let report = probe(
        &wharf,
        "none",
        json!([step("execute", &locked_update("held"), json!([]))]),
    )
    .await;
    assert_eq!(
        error_kind(&report["results"][0]),
        Some("timeout"),
        "{report}"
    );
    assert!(started.elapsed() < 5 * SECOND, "{:?}", started.elapsed());
    assert!(
        stops_within(&cluster, "UPDATE held", 2 * SECOND).await,
        "the UPDATE kept waiting on the server after wharf's timeout"
    );
    // Every pooled connection carries the server's own limit, reset or not.
    for _ in 0..3 {
        let report = probe(
            &wharf,
            "none",
            json!([step("query", "SELECT @@max_statement_time", json!([]))]),
        )
        .await;
        assert_eq!(
            report["results"][0]["rows"],
            json!([[{"float": 1.0}]]),
            "{report}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_wait_timeout_reported_by_the_server_keeps_the_transaction_going() {
    let cluster = Cluster::start(0).await.unwrap();
    // The server gives up on the lock after 1 s, well inside wharf's own limit (the
    // pool's connections are made after this, and take the global value).
    let set = "SET GLOBAL innodb_lock_wait_timeout = 1";
    cluster.sql(NodeId::Primary, set).await.unwrap();
    let (wharf, _apps) = start_configured(
        Some(&cluster),
        "query_timeout_ms = 10000
",
        "",
    );
    let _lock = lock_row(&cluster, "held").await;
    let create = "CREATE TABLE marks (id INT AUTO_INCREMENT PRIMARY KEY, m VARCHAR(20))";
    cluster.sql(NodeId::Primary, create).await.unwrap();

    let report = probe(
        &wharf,
        "commit",
        json!([
            step("execute", &locked_update("held"), json!([])),
            step(
                "execute",
                "INSERT INTO marks (m) VALUES ('after')",
                json!([])
            ),
        ]),
    )
    .await;
    let results = &report["results"];
    assert_eq!(error_kind(&results[0]), Some("timeout"), "{report}");
    assert_eq!(results[1]["rows_affected"], 1, "{report}");
    // InnoDB rolled back the one statement, and the transaction committed the rest.
    let rows = cluster
        .sql(NodeId::Primary, "SELECT m FROM marks")
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        1,
        "the INSERT after the lock wait timeout was not committed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_session_state_survives_into_the_next_request_on_a_pooled_connection() {
    let cluster = Cluster::start(0).await.unwrap();
    let (wharf, _apps) = start_configured(Some(&cluster), "pool_max = 1\n", "");
    let create = "CREATE TABLE ids (id INT AUTO_INCREMENT PRIMARY KEY)";
    cluster.sql(NodeId::Primary, create).await.unwrap();

    // What the filter lets through still ends with the request: the server resets the
    // connection before the next request gets it.
    let report = probe(
        &wharf,
        "none",
        json!([step("execute", "INSERT INTO ids () VALUES ()", json!([]))]),
    )
    .await;
    assert_eq!(report["results"][0]["last_insert_id"], 1, "{report}");
    let report = probe(
        &wharf,
        "none",
        json!([step("query", "SELECT LAST_INSERT_ID()", json!([]))]),
    )
    .await;
    assert_eq!(
        only_number(&report["results"][0]),
        Some(0),
        "the previous request's insert id leaked: {report}"
    );

    // A backticked name is the same function to the server: refused, and no lock taken.
    let report = probe(
        &wharf,
        "none",
        json!([
            step("query", "SELECT `GET_LOCK`('x', 0)", json!([])),
            step("query", "SELECT GET_LOCK ('x', 0)", json!([])),
            step("execute", "SELECT 1 --\u{a0}, BENCHMARK(1, 1)", json!([])),
        ]),
    )
    .await;
    for result in report["results"].as_array().unwrap() {
        assert_eq!(error_kind(result), Some("not_allowed"), "{report}");
    }
    let rows = cluster
        .sql(NodeId::Primary, "SELECT IS_USED_LOCK('x')")
        .await
        .unwrap();
    assert_eq!(
        rows[0].get::<Option<u64>, _>(0),
        Some(None),
        "a lock outlived its request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_over_the_limit_fail_naming_it_and_the_next_request_is_served() {
    let cluster = Cluster::start(0).await.unwrap();
    // An 8 MiB app: no call may hand it more than 8 MiB.
    let (wharf, _apps) = start_configured(Some(&cluster), "pool_max = 1\n", "max_memory_mb = 8\n");
    let report = probe(
        &wharf,
        "none",
        json!([
            step(
                "query",
                "SELECT REPEAT('x', 1000000) FROM seq_1_to_64",
                json!([])
            ),
            step("query", "SELECT seq FROM seq_1_to_200000", json!([])),
            step("query", "SELECT COUNT(*) FROM seq_1_to_200000", json!([])),
        ]),
    )
    .await;
    let results = report["results"].as_array().unwrap();
    let limits = [
        ("too many bytes", "max_result_mb = 8"),
        ("too many rows", "max_result_rows = 100000"),
    ];
    for (result, (over, key)) in results.iter().zip(limits) {
        assert_eq!(error_kind(result), Some("not_allowed"), "{report}");
        let message = result["error"]["message"].as_str().unwrap();
        assert!(message.contains(over) && message.contains(key), "{message}");
    }
    assert_eq!(only_number(&results[2]), Some(200_000), "{report}");
    // The cut-off results did not stay on the wire: no thread still sends them.
    assert!(stops_within(&cluster, "SELECT REPEAT", 2 * SECOND).await);
    assert!(stops_within(&cluster, "SELECT seq", 2 * SECOND).await);
}

/// Reads in a bounded loop from several clients until stopped; counts failures.
struct ReadLoop {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ReadLoop {
    fn start(url: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let tasks = (0..2)
            .map(|_| {
                let (stop, ok, failed, url) =
                    (stop.clone(), ok.clone(), failed.clone(), url.clone());
                tokio::spawn(async move {
                    let client = HttpClient::http1();
                    let deadline = Instant::now() + Duration::from_secs(90);
                    for _ in 0..200_000 {
                        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                            break;
                        }
                        match client.get(&url).await {
                            Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                            Ok(r) => {
                                eprintln!("read failed: {} {}", r.status, r.body);
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                            Err(e) => {
                                eprintln!("read failed: {e:#}");
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_survives_replica_loss_lag_and_primary_loss() {
    let mut cluster = Cluster::start(2).await.unwrap();
    let (wharf, _apps) = start(Some(&cluster));
    let c = HttpClient::http1();
    let created = send(&c, &wharf, "POST", "/todo", r#"{"title":"first"}"#).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let first = serde_json::from_str::<Value>(&created.body).unwrap()["id"]
        .as_u64()
        .unwrap();
    cluster.wait_replicated(10 * SECOND).await.unwrap();
    let replica0 = cluster.port(NodeId::Replica(0)).to_string();
    let replica1 = cluster.port(NodeId::Replica(1)).to_string();
    let replica_ids = [
        cluster.server_id(NodeId::Replica(0)),
        cluster.server_id(NodeId::Replica(1)),
    ];

    // 1. A replica killed under a read loop: no read fails; it comes back when restarted.
    let reads = ReadLoop::start(wharf.url(&format!("/todo/{first}")));
    // The loop is under way (some reads done) before the replica dies.
    poll_until_async(
        10 * SECOND,
        "the read loop has done 20 reads",
        async || match reads.ok.load(Ordering::Relaxed) {
            20.. => Ok(()),
            n => Err(n),
        },
    )
    .await
    .unwrap();
    let mark = wharf.log_len();
    cluster.kill(NodeId::Replica(0)).await;
    wharf
        .wait_for_log_since(mark, &["out of rotation", &replica0], 10 * SECOND)
        .or_else(|_| wharf.wait_for_log_since(mark, &["left rotation", &replica0], SECOND))
        .unwrap();
    let mark = wharf.log_len();
    cluster.restart(NodeId::Replica(0)).await.unwrap();
    wharf
        .wait_for_log_since(mark, &["replica in rotation", &replica0], 20 * SECOND)
        .unwrap();
    let (ok, failed) = reads.finish().await;
    assert_eq!(
        failed, 0,
        "{failed} reads failed ({ok} ok) while a replica died"
    );
    assert!(ok > 20, "too few reads: {ok}");
    let mut back = false;
    for _ in 0..20 {
        back |= server_id(&c, &wharf, "/sqlprobe/server-id").await == replica_ids[0];
    }
    assert!(back, "the restarted replica serves no reads");

    // 2. Lag: a replica whose SQL thread stops leaves rotation; no stale read is served.
    let mark = wharf.log_len();
    cluster.stop_sql_thread(1).await.unwrap();
    wharf
        .wait_for_log_since(mark, &["out of rotation", &replica1], 10 * SECOND)
        .unwrap();
    let created = send(&c, &wharf, "POST", "/todo", r#"{"title":"fresh"}"#).await;
    let fresh = serde_json::from_str::<Value>(&created.body).unwrap()["id"]
        .as_u64()
        .unwrap();
    eventually(&c, &wharf, &format!("/todo/{fresh}"), 200).await;
    for _ in 0..30 {
        let reply = send(&c, &wharf, "GET", &format!("/todo/{fresh}"), "").await;
        assert_eq!(reply.status, 200, "stale read: {}", reply.body);
        assert_ne!(
            server_id(&c, &wharf, "/sqlprobe/server-id").await,
            replica_ids[1]
        );
    }
    let mark = wharf.log_len();
    cluster.start_sql_thread(1).await.unwrap();
    wharf
        .wait_for_log_since(mark, &["replica in rotation", &replica1], 20 * SECOND)
        .unwrap();
    cluster.wait_replicated(10 * SECOND).await.unwrap();

    // 3. Primary killed: reads go on; writes answer 503 + Retry-After within 2 s; after
    //    a restart writes work again and every acknowledged write is there.
    let mut acknowledged = vec![first, fresh];
    for i in 0..5 {
        let reply = send(
            &c,
            &wharf,
            "POST",
            "/todo",
            &json!({"title": format!("t{i}")}).to_string(),
        )
        .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        acknowledged.push(
            serde_json::from_str::<Value>(&reply.body).unwrap()["id"]
                .as_u64()
                .unwrap(),
        );
    }
    cluster.wait_replicated(10 * SECOND).await.unwrap();
    let reads = ReadLoop::start(wharf.url(&format!("/todo/{first}")));
    cluster.kill(NodeId::Primary).await;
    for _ in 0..5 {
        let started = Instant::now();
        let reply = send(&c, &wharf, "POST", "/todo", r#"{"title":"lost"}"#).await;
        assert!(
            started.elapsed() <= 2 * SECOND,
            "write took {:?}",
            started.elapsed()
        );
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert!(reply.headers.contains_key("retry-after"));
    }
    // Reads go on once the check has seen the primary go, through several rounds.
    let primary = cluster.port(NodeId::Primary).to_string();
    wharf
        .wait_for_log(&["primary unreachable", &primary], 10 * SECOND)
        .unwrap();
    for _ in 0..20 {
        let list = send(&c, &wharf, "GET", "/todo", "").await;
        assert_eq!(
            list.status, 200,
            "reads stopped with the primary: {}",
            list.body
        );
        // Not a wait: spreads the reads over about half a second, several check rounds.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (ok, failed) = reads.finish().await;
    assert_eq!(
        failed, 0,
        "{failed} reads failed ({ok} ok) with the primary down"
    );

    cluster.restart(NodeId::Primary).await.unwrap();
    let id = poll_until_async(20 * SECOND, "writes come back", async || {
        let reply = send(&c, &wharf, "POST", "/todo", r#"{"title":"after"}"#).await;
        if reply.status == 201 {
            return Ok(serde_json::from_str::<Value>(&reply.body).unwrap()["id"]
                .as_u64()
                .unwrap());
        }
        assert_eq!(reply.status, 503, "{}", reply.body);
        Err(reply.body)
    })
    .await
    .unwrap();
    acknowledged.push(id);
    cluster.wait_replicated(20 * SECOND).await.unwrap();
    let rows = cluster
        .sql(NodeId::Primary, "SELECT id FROM todos")
        .await
        .unwrap();
    let present: Vec<u64> = rows.iter().map(|r| r.get(0).unwrap()).collect();
    for id in &acknowledged {
        assert!(
            present.contains(id),
            "acknowledged todo {id} is gone: {present:?}"
        );
        eventually(&c, &wharf, &format!("/todo/{id}"), 200).await;
    }
}

/// wharf serving `todo` and `sqlprobe` (database granted) with `config` as its
/// wharf.toml, which [`reload`] rewrites; returns the file's path too.
fn start_reloadable(config: &str) -> (Wharf, tempfile::TempDir, std::path::PathBuf) {
    let apps = apps_dir(&["todo", "sqlprobe", "hello"]);
    for app in ["todo", "sqlprobe"] {
        std::fs::write(apps.path().join(format!("{app}.toml")), "database = true\n").unwrap();
    }
    let path = apps.path().join("wharf.conf");
    std::fs::write(&path, config).unwrap();
    // The file, not the command line, says where SQLite files go, so a reload can
    // move them.
    let wharf = Wharf::builder(apps.path())
        .config_file(&path)
        .env("WHARF_TEST_DB_PASSWORD", PASSWORD)
        .data_dir_from_config()
        .start();
    (wharf, apps, path)
}

/// A `[database]` section on `cluster`'s primary and its first `replicas` replicas.
fn database_section(cluster: &Cluster, replicas: usize, extra: &str) -> String {
    let replicas: Vec<String> = (0..replicas)
        .map(|i| format!("{:?}", cluster.url(NodeId::Replica(i))))
        .collect();
    database_on(&cluster.url(NodeId::Primary), &replicas.join(", "), extra)
}

fn database_on(primary: &str, replicas: &str, extra: &str) -> String {
    format!(
        "[database]\nprimary = {primary:?}\nreplicas = [{replicas}]\n\
         password_env = \"WHARF_TEST_DB_PASSWORD\"\n\
         check_interval_ms = 100\nconnect_timeout_ms = 500\nmax_replica_lag_s = 1\n{extra}\n"
    )
}

/// Replaces wharf.toml in one step (a half-written file would be a reload of its
/// own) and waits until wharf logs the outcome, a line with all of `expect`.
fn reload(wharf: &Wharf, path: &std::path::Path, config: &str, expect: &[&str]) -> String {
    let mark = wharf.log_len();
    let next = path.with_extension("next");
    std::fs::write(&next, config).unwrap();
    std::fs::rename(&next, path).unwrap();
    wharf
        .wait_for_log_since(mark, expect, 20 * SECOND)
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Starts `reads` and waits until it is under way.
async fn read_loop(url: String) -> ReadLoop {
    let reads = ReadLoop::start(url);
    poll_until_async(
        10 * SECOND,
        "the read loop has 20 answers",
        async || match reads.ok.load(Ordering::Relaxed) {
            n if n >= 20 => Ok(()),
            n => Err(n),
        },
    )
    .await
    .unwrap();
    reads
}

/// The ids of wharf's connections (user `wharf`) to the primary.
async fn wharf_connections(cluster: &Cluster) -> Vec<u64> {
    let sql = "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'wharf'";
    let rows = cluster.sql(NodeId::Primary, sql).await.unwrap();
    rows.iter().map(|row| row.get(0).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_changed_by_reload_serves_every_request_and_the_old_pools_close() {
    let cluster = Cluster::start(1).await.unwrap();
    let (wharf, _apps, path) = start_reloadable(&database_section(&cluster, 0, "pool_max = 4"));
    let c = HttpClient::http1();
    let created = send(&c, &wharf, "POST", "/todo", r#"{"title":"kept"}"#).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = serde_json::from_str::<Value>(&created.body).unwrap()["id"]
        .as_u64()
        .unwrap();
    // The replica about to join has the row, so no read of it can miss.
    cluster.wait_replicated(10 * SECOND).await.unwrap();
    let reads = read_loop(wharf.url(&format!("/todo/{id}"))).await;
    let old = wharf_connections(&cluster).await;
    assert!(!old.is_empty(), "wharf holds no connection to the primary");

    // A replica added and the pools resized: the new pools serve, the old ones close.
    let replica = cluster.port(NodeId::Replica(0)).to_string();
    let config = database_section(&cluster, 1, "pool_max = 8");
    reload(&wharf, &path, &config, &["database reloaded", &replica]);
    let replica_id = cluster.server_id(NodeId::Replica(0));
    let mut on_replica = 0;
    for _ in 0..10 {
        on_replica += (server_id(&c, &wharf, "/sqlprobe/server-id").await == replica_id) as u32;
    }
    assert!(on_replica > 0, "no read reached the added replica");
    poll_until_async(
        10 * SECOND,
        "the old pools' connections are closed",
        async || {
            let open = wharf_connections(&cluster).await;
            let left: Vec<_> = old.iter().filter(|id| open.contains(id)).collect();
            match left.is_empty() {
                true => Ok(()),
                false => Err(format!("still open: {left:?}")),
            }
        },
    )
    .await
    .unwrap();

    let (ok, failed) = reads.finish().await;
    assert_eq!(
        failed, 0,
        "{failed} reads failed ({ok} ok) across the reload"
    );
    let got = send(&c, &wharf, "GET", &format!("/todo/{id}"), "").await;
    assert_eq!(got.status, 200, "{}", got.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_to_a_primary_that_does_not_answer_is_refused_and_the_old_pools_serve_on() {
    let cluster = Cluster::start(0).await.unwrap();
    let (wharf, _apps, path) = start_reloadable(&database_section(&cluster, 0, ""));
    let reads = read_loop(wharf.url("/todo")).await;

    // Port 1: nothing listens there, so the new primary refuses every connection.
    let dead = database_on("mysql://wharf@127.0.0.1:1/app", "", "");
    let line = reload(&wharf, &path, &dead, &["reload failed", "does not answer"]);
    assert!(
        line.contains("database.primary wharf@127.0.0.1:1"),
        "the error names no primary: {line}"
    );

    let c = HttpClient::http1();
    let created = send(&c, &wharf, "POST", "/todo", r#"{"title":"still here"}"#).await;
    assert_eq!(created.status, 201, "writes stopped: {}", created.body);
    let (ok, failed) = reads.finish().await;
    assert_eq!(
        failed, 0,
        "{failed} reads failed ({ok} ok) after a refused reload"
    );
    assert!(
        !wharf_connections(&cluster).await.is_empty(),
        "the old pools were closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_and_a_switch_to_mysql_by_reload_serve_every_request() {
    let cluster = Cluster::start(0).await.unwrap();
    let first = tempfile::tempdir().unwrap();
    let (wharf, _apps, path) = start_reloadable(&format!(
        "[apps]\ndata_dir = {:?}\n",
        first.path().to_str().unwrap()
    ));
    assert!(
        wharf.banner.contains("database: SQLite"),
        "{}",
        wharf.banner
    );
    let reads = read_loop(wharf.url("/todo")).await;
    let c = HttpClient::http1();

    // SQLite files under a new directory.
    let moved = tempfile::tempdir().unwrap();
    let data_dir = format!("[apps]\ndata_dir = {:?}\n", moved.path().to_str().unwrap());
    reload(
        &wharf,
        &path,
        &data_dir,
        &["database reloaded", "SQLite files in"],
    );
    let created = send(&c, &wharf, "POST", "/todo", r#"{"title":"moved"}"#).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert!(
        moved.path().join("todo.db").is_file(),
        "no todo.db in the new data dir"
    );

    // SQLite to MySQL: the apps are bound to the cluster, compiled once.
    let mysql = format!("{data_dir}{}", database_section(&cluster, 0, ""));
    reload(
        &wharf,
        &path,
        &mysql,
        &["database reloaded", "MySQL primary"],
    );
    assert_eq!(
        server_id(&c, &wharf, "/sqlprobe/server-id").await,
        cluster.server_id(NodeId::Primary)
    );

    let (ok, failed) = reads.finish().await;
    assert_eq!(
        failed, 0,
        "{failed} reads failed ({ok} ok) across the reloads"
    );
}
