//! The MariaDB harness itself: a primary and two replicas really replicate, survive
//! kills and restarts, and a replica with a stopped SQL thread really falls behind.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Row};
use std::time::{Duration, Instant};
use wharf_tests::mariadb::{Cluster, DATABASE, NodeId, PASSWORD, USER};
use wharf_tests::poll_until_async;

const REPLICATION: Duration = Duration::from_secs(20);

/// The `v` column of `app.items`, ordered by id.
async fn items(cluster: &Cluster, node: NodeId) -> Vec<String> {
    cluster
        .sql(node, "SELECT v FROM items ORDER BY id")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
        .into_iter()
        .map(|row| row.get::<String, _>(0).unwrap())
        .collect()
}

async fn one_value(cluster: &Cluster, node: NodeId, stmt: &str) -> Option<String> {
    let rows = cluster
        .sql(node, stmt)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    rows.first()
        .and_then(|row| row.get::<Option<String>, _>(0))
        .flatten()
}

/// One column of `SHOW SLAVE STATUS`, `None` for NULL.
async fn slave_field(cluster: &Cluster, replica: usize, name: &str) -> Option<String> {
    let rows = cluster
        .sql(NodeId::Replica(replica), "SHOW SLAVE STATUS")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let row: &Row = rows.first().expect("replica has a slave status row");
    row.get::<Option<String>, _>(name)
        .unwrap_or_else(|| panic!("no column {name}"))
}

/// Connects as the app user over TCP with the cluster's URL plus the password.
async fn app_conn(cluster: &Cluster, node: NodeId) -> Conn {
    let opts = Opts::from_url(&cluster.url(node)).expect("valid url");
    let opts = OptsBuilder::from_opts(opts).pass(Some(PASSWORD));
    Conn::new(opts).await.expect("app user connects over TCP")
}

async fn insert(cluster: &Cluster, value: &str) {
    cluster
        .sql(
            NodeId::Primary,
            &format!("INSERT INTO items (v) VALUES ('{value}')"),
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
}

#[tokio::test]
async fn primary_and_replicas_replicate_through_kills_and_lag() {
    let started = Instant::now();
    let mut cluster = Cluster::start(2).await.unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("Cluster::start(2) took {:?}", started.elapsed());
    let nodes = [NodeId::Primary, NodeId::Replica(0), NodeId::Replica(1)];

    // Distinct servers with the documented ids and ports.
    let mut ports: Vec<u16> = nodes.iter().map(|&n| cluster.port(n)).collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 3, "ports must differ");
    assert_eq!(cluster.server_id(NodeId::Primary), 1);
    assert_eq!(cluster.server_id(NodeId::Replica(0)), 2);
    assert_eq!(cluster.server_id(NodeId::Replica(1)), 3);
    for node in nodes {
        let id = one_value(&cluster, node, "SELECT @@server_id").await;
        assert_eq!(id, Some(cluster.server_id(node).to_string()), "{node:?}");
        let read_only = one_value(&cluster, node, "SELECT @@read_only").await;
        let expected = if node == NodeId::Primary { "0" } else { "1" };
        assert_eq!(read_only.as_deref(), Some(expected), "{node:?} read_only");
        assert_eq!(
            cluster.url(node),
            format!("mysql://{USER}@127.0.0.1:{}/{DATABASE}", cluster.port(node))
        );
    }

    // The app user exists everywhere, can read replication status, and a replica
    // refuses its writes.
    for node in nodes {
        let mut conn = app_conn(&cluster, node).await;
        let who: Option<String> = conn.query_first("SELECT CURRENT_USER()").await.unwrap();
        assert_eq!(who.as_deref(), Some("wharf@%"), "{node:?}");
        let db: Option<String> = conn.query_first("SELECT DATABASE()").await.unwrap();
        assert_eq!(db.as_deref(), Some(DATABASE));
        let grants: Vec<String> = conn.query("SHOW GRANTS").await.unwrap();
        let grants = grants.join("; ");
        assert!(grants.contains("SLAVE MONITOR"), "{grants}");
        assert!(!grants.contains("SUPER"), "{grants}");
        if node == NodeId::Primary {
            eprintln!("app user grants: {grants}");
        }
        let status: Vec<Row> = conn.query("SHOW SLAVE STATUS").await.unwrap();
        assert_eq!(
            status.len(),
            usize::from(node != NodeId::Primary),
            "{node:?}"
        );
        conn.disconnect().await.unwrap();
    }

    // Writes on the primary reach both replicas.
    cluster
        .sql(
            NodeId::Primary,
            "CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(100) NOT NULL)",
        )
        .await
        .unwrap();
    insert(&cluster, "one").await;
    insert(&cluster, "twö").await;
    cluster.wait_replicated(REPLICATION).await.unwrap();
    for node in nodes {
        assert_eq!(items(&cluster, node).await, ["one", "twö"], "{node:?}");
    }
    let mut conn = app_conn(&cluster, NodeId::Replica(0)).await;
    let refused = conn
        .query_drop("INSERT INTO items (v) VALUES ('nope')")
        .await
        .expect_err("a read-only replica refuses the app user's writes");
    eprintln!("write on replica: {refused}");
    conn.disconnect().await.unwrap();

    // A SIGKILLed replica misses writes, then catches up by itself after a restart.
    let old_pid = cluster.pid(NodeId::Replica(1)).unwrap();
    cluster.kill(NodeId::Replica(1)).await;
    assert_eq!(cluster.pid(NodeId::Replica(1)), None);
    assert!(cluster.sql(NodeId::Replica(1), "SELECT 1").await.is_err());
    insert(&cluster, "three").await;
    // Only running replicas count.
    cluster.wait_replicated(REPLICATION).await.unwrap();
    assert_eq!(
        items(&cluster, NodeId::Replica(0)).await,
        ["one", "twö", "three"]
    );
    let port = cluster.port(NodeId::Replica(1));
    cluster.restart(NodeId::Replica(1)).await.unwrap();
    assert_ne!(cluster.pid(NodeId::Replica(1)), Some(old_pid));
    assert_eq!(cluster.port(NodeId::Replica(1)), port);
    cluster.wait_replicated(REPLICATION).await.unwrap();
    assert_eq!(
        items(&cluster, NodeId::Replica(1)).await,
        ["one", "twö", "three"]
    );

    // A stopped SQL thread makes the replica fall behind, visibly.
    cluster.stop_sql_thread(0).await.unwrap();
    insert(&cluster, "four").await;
    let err = cluster
        .wait_replicated(Duration::from_millis(500))
        .await
        .expect_err("replica 0 cannot apply with its SQL thread stopped");
    eprintln!("lagging replica: {err:#}");
    assert_eq!(
        items(&cluster, NodeId::Replica(0)).await,
        ["one", "twö", "three"]
    );
    assert_eq!(
        items(&cluster, NodeId::Replica(1)).await,
        ["one", "twö", "three", "four"]
    );
    let io = slave_field(&cluster, 0, "Slave_IO_Running").await;
    let sql = slave_field(&cluster, 0, "Slave_SQL_Running").await;
    let behind = slave_field(&cluster, 0, "Seconds_Behind_Master").await;
    eprintln!(
        "SQL thread stopped: Slave_IO_Running={io:?} Slave_SQL_Running={sql:?} \
         Seconds_Behind_Master={behind:?}"
    );
    assert_eq!(io.as_deref(), Some("Yes"));
    assert_eq!(sql.as_deref(), Some("No"));
    assert_eq!(behind, None);
    cluster.start_sql_thread(0).await.unwrap();
    cluster.wait_replicated(REPLICATION).await.unwrap();
    assert_eq!(
        items(&cluster, NodeId::Replica(0)).await,
        ["one", "twö", "three", "four"]
    );

    // A killed primary: replicas notice, then reconnect once it is back, and the
    // restarted primary takes writes again.
    cluster.kill(NodeId::Primary).await;
    let io = poll_until_async(REPLICATION, "the replica's I/O thread stops", async || {
        let io = slave_field(&cluster, 0, "Slave_IO_Running").await;
        match io.as_deref() {
            Some("Yes") => Err(io),
            _ => Ok(io),
        }
    })
    .await
    .unwrap();
    let behind = slave_field(&cluster, 0, "Seconds_Behind_Master").await;
    let sql = slave_field(&cluster, 0, "Slave_SQL_Running").await;
    eprintln!(
        "primary down: Slave_IO_Running={io:?} Slave_SQL_Running={sql:?} \
         Seconds_Behind_Master={behind:?}"
    );
    assert_eq!(io.as_deref(), Some("Connecting"));
    assert_eq!(behind, None);
    cluster.restart(NodeId::Primary).await.unwrap();
    insert(&cluster, "five").await;
    cluster.wait_replicated(REPLICATION).await.unwrap();
    for node in nodes {
        assert_eq!(
            items(&cluster, node).await,
            ["one", "twö", "three", "four", "five"],
            "{node:?}"
        );
    }

    // Dropping the cluster kills the servers and removes their directories.
    let dir = cluster.dir().to_path_buf();
    let pids: Vec<u32> = nodes.iter().filter_map(|&n| cluster.pid(n)).collect();
    assert_eq!(pids.len(), 3);
    drop(cluster);
    assert!(!dir.exists(), "{} still exists", dir.display());
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        assert!(
            !status.contains("mariadbd"),
            "mariadbd {pid} survived the drop"
        );
    }
}

/// wharf's own view of the harness: `status()` of the cluster it builds from a
/// `[database]` section names each node with its role, and a killed replica shows
/// down with the reason the checks found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_shows_every_node_and_a_stopped_replica_down_with_its_reason() {
    use wharf::db::{Provider, Role};
    let mut cluster = Cluster::start(1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, PASSWORD).unwrap();
    let config = wharf::config::Config::parse(&format!(
        "[database]\nprimary = {:?}\nreplicas = [{:?}]\npassword_file = {:?}\n\
         check_interval_ms = 100\nconnect_timeout_ms = 500\n",
        cluster.url(NodeId::Primary),
        cluster.url(NodeId::Replica(0)),
        password.to_str().unwrap()
    ))
    .unwrap();
    let metrics = wharf::metrics::Metrics::new();
    let provider = Provider::new(config.database.as_ref(), dir.path().into(), &metrics)
        .await
        .unwrap();
    provider.check().unwrap();

    let status = provider.status();
    let name = |node| format!("{USER}@127.0.0.1:{}", cluster.port(node));
    assert_eq!(status.len(), 2, "{status:?}");
    let (primary, replica) = (&status[0], &status[1]);
    assert_eq!(
        (primary.role, primary.name.as_str()),
        (Role::Primary, name(NodeId::Primary).as_str())
    );
    assert!(primary.health.is_up(), "{primary:?}");
    assert_eq!(
        (replica.role, replica.name.as_str()),
        (Role::Replica, name(NodeId::Replica(0)).as_str())
    );
    assert!(replica.health.is_up(), "{replica:?}");
    assert!(
        replica.lag.is_some(),
        "a replicating replica has a lag: {replica:?}"
    );

    let killed = Instant::now();
    cluster.kill(NodeId::Replica(0)).await;
    let down = poll_until_async(
        Duration::from_secs(10),
        "the killed replica shows down",
        async || {
            let replica = provider.status().remove(1);
            match replica.health.is_up() {
                false => Ok(replica),
                true => Err(replica),
            }
        },
    )
    .await
    .unwrap();
    assert!(
        down.health.reason().starts_with("not answering"),
        "{down:?}"
    );
    assert!(down.health.since() >= killed, "{down:?}");
    assert_eq!(down.lag, None, "{down:?}");
    assert!(provider.status()[0].health.is_up());

    // SQLite has no server to report.
    let sqlite = Provider::new(None, dir.path().join("data"), &metrics)
        .await
        .unwrap();
    assert!(sqlite.status().is_empty());
}
