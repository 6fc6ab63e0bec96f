//! A real MariaDB cluster for integration tests: one primary and N replicas, each a
//! `mariadbd` child process with its own data directory and a free 127.0.0.1 port,
//! replicating with GTIDs.
//!
//! The system tables are created once per cluster with `mariadb-install-db` into a
//! template directory that already holds the `app` database and the `wharf` and `repl`
//! users; every node starts from a copy of it, so all nodes share the same users and
//! database from the beginning and the primary's binlog only holds what tests write.
//!
//! Every node runs with `--no-defaults`, so nothing under /etc/mysql applies, and the
//! system service (if the package started one) is never used. Admin SQL goes over each
//! node's unix socket as `root`, which the `unix_socket` plugin maps to the OS user root.
//! The processes are killed and the directories removed when the [`Cluster`] is dropped.

use crate::free_ports;
use crate::poll::poll_until_async;
use anyhow::{Context, anyhow, bail};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Database created on every node; the app user has all rights on it.
pub const DATABASE: &str = "app";
/// Application user (`'wharf'@'%'`), for connections over TCP.
pub const USER: &str = "wharf";
/// Password of [`USER`].
pub const PASSWORD: &str = "wharf-test-pw";

/// Account the replicas use to pull the primary's binlog.
const REPL_USER: &str = "repl";
const REPL_PASSWORD: &str = "wharf-repl-pw";

/// How long a node may take to accept connections after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one `mariadb-install-db` run.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on one admin statement (connection included).
const SQL_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on waiting for a SIGKILLed server to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a node is started on a new port when its port was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;
/// A replica that hears nothing from its primary for this long reconnects; heartbeats
/// come every second, so a silent (not closed) connection is noticed within this time.
const SLAVE_NET_TIMEOUT_SECS: u32 = 3;
/// Lines of a node's error log quoted in errors.
const LOG_TAIL_LINES: usize = 40;

/// A node of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeId {
    Primary,
    /// Replica number `i`, `0..replicas`.
    Replica(usize),
}

/// A running primary with its replicas. Dropping it kills every server and removes
/// their directories.
pub struct Cluster {
    /// Index 0 is the primary, index `i + 1` replica `i`.
    nodes: Vec<Node>,
    mariadbd: PathBuf,
    root: tempfile::TempDir,
}

struct Node {
    id: NodeId,
    server_id: u32,
    port: u16,
    /// Holds `data/` (the datadir), the socket, the pid file and the logs.
    dir: PathBuf,
    child: Option<Child>,
}

impl Cluster {
    /// Creates and starts a primary and `replicas` replicas, and attaches every replica
    /// to the primary. Returns once each replica's I/O and SQL threads run.
    pub async fn start(replicas: usize) -> anyhow::Result<Cluster> {
        let mariadbd = find_binary("mariadbd", &["/usr/sbin", "/usr/local/sbin", "/usr/bin"])
            .context("mariadbd not found in PATH or /usr/sbin (install mariadb-server)")?;
        let install_db = find_binary("mariadb-install-db", &["/usr/bin", "/usr/local/bin"])
            .or_else(|| find_binary("mysql_install_db", &["/usr/bin", "/usr/local/bin"]))
            .context("mariadb-install-db not found in PATH or /usr/bin")?;

        let root = tempfile::Builder::new()
            .prefix("wharf-mariadb-")
            .tempdir()
            .context("creating the cluster directory")?;
        let template = root.path().join("template");
        install_template(&install_db, root.path(), &template).await?;

        let mut cluster = Cluster {
            nodes: Vec::with_capacity(replicas + 1),
            mariadbd,
            root,
        };
        // From here on an early return drops `cluster`, which kills what was started.
        let ports = free_ports(replicas + 1)?;
        for (index, port) in ports.into_iter().enumerate() {
            let id = if index == 0 {
                NodeId::Primary
            } else {
                NodeId::Replica(index - 1)
            };
            let name = match id {
                NodeId::Primary => "primary".to_string(),
                NodeId::Replica(i) => format!("replica-{i}"),
            };
            let dir = cluster.root.path().join(name);
            std::fs::create_dir(&dir)?;
            copy_dir(&template, &dir.join("data"))?;
            let mut node = Node {
                id,
                server_id: server_id_of(id),
                port,
                dir,
                child: None,
            };
            // Start them all before waiting for any, so they boot side by side.
            node.spawn(&cluster.mariadbd)?;
            cluster.nodes.push(node);
        }
        for node in &mut cluster.nodes {
            node.boot(&cluster.mariadbd).await?;
        }
        // The template is no longer needed; free its disk space early.
        let _ = std::fs::remove_dir_all(&template);

        let primary_port = cluster.port(NodeId::Primary);
        for i in 0..replicas {
            cluster
                .sql(
                    NodeId::Replica(i),
                    &format!(
                        "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={primary_port}, \
                         MASTER_USER='{REPL_USER}', MASTER_PASSWORD='{REPL_PASSWORD}', \
                         MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1, \
                         MASTER_HEARTBEAT_PERIOD=1"
                    ),
                )
                .await?;
            cluster.sql(NodeId::Replica(i), "START SLAVE").await?;
        }
        for i in 0..replicas {
            cluster.wait_attached(i, READY_TIMEOUT).await?;
        }
        Ok(cluster)
    }

    /// The TCP port the node listens on (on 127.0.0.1); kept across restarts.
    pub fn port(&self, node: NodeId) -> u16 {
        self.node(node).port
    }

    /// `@@server_id` of the node: 1 for the primary, `i + 2` for replica `i`.
    pub fn server_id(&self, node: NodeId) -> u32 {
        self.node(node).server_id
    }

    /// `mysql://wharf@127.0.0.1:PORT/app`, without the password ([`PASSWORD`]).
    pub fn url(&self, node: NodeId) -> String {
        format!("mysql://{USER}@127.0.0.1:{}/{DATABASE}", self.port(node))
    }

    /// Runs `stmt` on the node as root over its unix socket with the text protocol,
    /// with [`DATABASE`] selected when it exists, and returns the rows of the first
    /// result set.
    pub async fn sql(&self, node: NodeId, stmt: &str) -> anyhow::Result<Vec<Row>> {
        let n = self.node(node);
        if n.child.is_none() {
            bail!("{node:?} is not running (killed); cannot run {stmt:?}");
        }
        let run = async {
            let mut conn = n.connect_root().await?;
            let rows = conn.query::<Row, _>(stmt).await;
            let _ = conn.disconnect().await;
            anyhow::Ok(rows?)
        };
        tokio::time::timeout(SQL_TIMEOUT, run)
            .await
            .map_err(|_| anyhow!("timed out after {SQL_TIMEOUT:?}"))
            .and_then(|r| r)
            .with_context(|| format!("{node:?}: {stmt}"))
    }

    /// A root connection to the node (over its unix socket) that the caller keeps, e.g.
    /// to hold a row lock while wharf's statement waits on it.
    pub async fn connect(&self, node: NodeId) -> anyhow::Result<Conn> {
        let n = self.node(node);
        tokio::time::timeout(SQL_TIMEOUT, n.connect_root())
            .await
            .map_err(|_| anyhow!("{node:?}: no connection within {SQL_TIMEOUT:?}"))?
    }

    /// Kills the node with SIGKILL and waits for the process to exit. Does nothing
    /// if it is not running.
    pub async fn kill(&mut self, node: NodeId) {
        let n = self.node_mut(node);
        let Some(mut child) = n.child.take() else {
            return;
        };
        let _ = child.kill();
        let exited = poll_until_async(EXIT_TIMEOUT, "mariadbd exits", async || {
            match child.try_wait() {
                Ok(None) => Err("running"),
                Ok(Some(_)) | Err(_) => Ok(()),
            }
        })
        .await;
        if let Err(e) = exited {
            eprintln!("[mariadb] {node:?} after SIGKILL: {e:#}");
            // Keep it so that Drop waits for it.
            n.child = Some(child);
        }
    }

    /// Starts the node again on the same port and data directory (killing it first if
    /// it runs) and waits until it accepts connections. A replica resumes replication
    /// by itself from its persisted GTID position; replicas of a restarted primary
    /// reconnect within about a second.
    pub async fn restart(&mut self, node: NodeId) -> anyhow::Result<()> {
        self.kill(node).await;
        let mariadbd = self.mariadbd.clone();
        let n = self.node_mut(node);
        n.spawn(&mariadbd)?;
        n.wait_ready()
            .await
            .with_context(|| format!("restarting {node:?}"))
    }

    /// Waits until every running replica has applied all the primary's binlog has now
    /// (`@@gtid_binlog_pos`), using `MASTER_GTID_WAIT`. Fails after `timeout`.
    pub async fn wait_replicated(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let rows = self
            .sql(NodeId::Primary, "SELECT @@GLOBAL.gtid_binlog_pos")
            .await?;
        let target: String = rows.first().and_then(|r| text(r, 0)).unwrap_or_default();
        if target.is_empty() {
            return Ok(());
        }
        for node in &self.nodes[1..] {
            let NodeId::Replica(i) = node.id else {
                continue;
            };
            if node.child.is_none() {
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let rows = self
                .sql(
                    node.id,
                    &format!(
                        "SELECT MASTER_GTID_WAIT('{target}', {:.3})",
                        left.as_secs_f64()
                    ),
                )
                .await?;
            let status = rows.first().and_then(|r| text(r, 0));
            if status.as_deref() != Some("0") {
                let state = self
                    .replica_state(i)
                    .await
                    .unwrap_or_else(|e| format!("(status unavailable: {e:#})"));
                bail!(
                    "replica {i} has not applied primary position {target} within {timeout:?}: {state}"
                );
            }
        }
        Ok(())
    }

    /// `STOP SLAVE SQL_THREAD` on replica `replica`: it keeps fetching the primary's
    /// binlog but applies nothing.
    pub async fn stop_sql_thread(&self, replica: usize) -> anyhow::Result<()> {
        self.sql(NodeId::Replica(replica), "STOP SLAVE SQL_THREAD")
            .await
            .map(drop)
    }

    /// `START SLAVE SQL_THREAD` on replica `replica`.
    pub async fn start_sql_thread(&self, replica: usize) -> anyhow::Result<()> {
        self.sql(NodeId::Replica(replica), "START SLAVE SQL_THREAD")
            .await
            .map(drop)
    }

    /// Number of replicas.
    pub fn replicas(&self) -> usize {
        self.nodes.len() - 1
    }

    /// Pid of the node's `mariadbd`, if it runs.
    pub fn pid(&self, node: NodeId) -> Option<u32> {
        self.node(node).child.as_ref().map(Child::id)
    }

    /// The temporary directory holding every node's directory (removed on drop).
    pub fn dir(&self) -> &Path {
        self.root.path()
    }

    /// Path of the node's error log.
    pub fn error_log(&self, node: NodeId) -> PathBuf {
        self.node(node).error_log()
    }

    fn node(&self, node: NodeId) -> &Node {
        &self.nodes[self.index(node)]
    }

    fn node_mut(&mut self, node: NodeId) -> &mut Node {
        let index = self.index(node);
        &mut self.nodes[index]
    }

    fn index(&self, node: NodeId) -> usize {
        let index = match node {
            NodeId::Primary => 0,
            NodeId::Replica(i) => i + 1,
        };
        assert!(
            index < self.nodes.len(),
            "{node:?} does not exist: the cluster has {} replicas",
            self.nodes.len().saturating_sub(1)
        );
        index
    }

    /// Waits until replica `i`'s I/O thread is connected and its SQL thread runs.
    async fn wait_attached(&self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let what = format!("replica {i} attaches to the primary");
        // An SQL error ends the wait: the replica is not coming.
        let attached = poll_until_async(timeout, &what, async || {
            let rows = match self.sql(NodeId::Replica(i), "SHOW SLAVE STATUS").await {
                Ok(rows) => rows,
                Err(e) => return Ok(Err(e)),
            };
            let field = |name| rows.first().and_then(|row| text(row, name));
            match (field("Slave_IO_Running"), field("Slave_SQL_Running")) {
                (Some(io), Some(sql)) if io == "Yes" && sql == "Yes" => Ok(Ok(())),
                threads => Err(threads),
            }
        })
        .await;
        match attached {
            Ok(result) => result,
            Err(e) => {
                let state = self.replica_state(i).await.unwrap_or_default();
                bail!("{e:#}: {state}")
            }
        }
    }

    /// A one-line summary of `SHOW SLAVE STATUS` for error messages.
    async fn replica_state(&self, i: usize) -> anyhow::Result<String> {
        let rows = self.sql(NodeId::Replica(i), "SHOW SLAVE STATUS").await?;
        let Some(row) = rows.first() else {
            return Ok("no replication configured".into());
        };
        let slave_pos = self
            .sql(NodeId::Replica(i), "SELECT @@GLOBAL.gtid_slave_pos")
            .await?
            .first()
            .and_then(|r| text(r, 0))
            .unwrap_or_default();
        let fields = [
            "Slave_IO_Running",
            "Slave_SQL_Running",
            "Seconds_Behind_Master",
            "Gtid_IO_Pos",
            "Last_IO_Error",
            "Last_SQL_Error",
        ];
        let mut summary = format!("gtid_slave_pos={slave_pos}");
        for name in fields {
            let value = text(row, name).unwrap_or_else(|| "NULL".into());
            summary.push_str(&format!(", {name}={value}"));
        }
        Ok(summary)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // `root` (a TempDir) is removed after this, with every node's directory.
    }
}

impl Node {
    fn socket(&self) -> PathBuf {
        self.dir.join("mysqld.sock")
    }

    fn error_log(&self) -> PathBuf {
        self.dir.join("error.log")
    }

    /// Starts `mariadbd` on `self.port` without waiting for it.
    fn spawn(&mut self, mariadbd: &Path) -> anyhow::Result<()> {
        assert!(self.child.is_none(), "{:?} is already running", self.id);
        let socket = self.socket();
        // Unix sockets paths are limited to 108 bytes.
        if socket.as_os_str().len() >= 100 {
            bail!(
                "socket path {} is too long; set TMPDIR to a shorter directory",
                socket.display()
            );
        }
        // A killed server leaves its socket file; remove it so that its presence means
        // the new server created it.
        let _ = std::fs::remove_file(&socket);
        let dir = &self.dir;
        let mut args = vec![
            // Must come first: ignore /etc/mysql and ~/.my.cnf.
            "--no-defaults".to_string(),
            format!("--datadir={}", dir.join("data").display()),
            format!("--tmpdir={}", dir.display()),
            format!("--socket={}", socket.display()),
            format!("--pid-file={}", dir.join("mysqld.pid").display()),
            format!("--log-error={}", self.error_log().display()),
            format!("--port={}", self.port),
            "--bind-address=127.0.0.1".into(),
            "--user=root".into(),
            "--skip-name-resolve".into(),
            format!("--server-id={}", self.server_id),
            "--log-bin=mariadb-bin".into(),
            "--log-slave-updates".into(),
            "--binlog-format=ROW".into(),
            format!("--slave-net-timeout={SLAVE_NET_TIMEOUT_SECS}"),
        ];
        args.extend(SERVER_TUNING.iter().map(|s| s.to_string()));
        if let NodeId::Replica(_) = self.id {
            args.push("--read-only=1".into());
            args.push("--relay-log=relay-bin".into());
        }
        let out = append(&dir.join("stdout.log"))?;
        let err = append(&dir.join("stderr.log"))?;
        let child = Command::new(mariadbd)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("spawning {}", mariadbd.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits for a freshly spawned node; if it could not bind its port (taken since
    /// it was picked), starts it again on another one, a bounded number of times.
    async fn boot(&mut self, mariadbd: &Path) -> anyhow::Result<()> {
        let mut attempt = 1;
        loop {
            let result = self.wait_ready().await;
            match result {
                Ok(()) => return Ok(()),
                Err(e) if attempt < PORT_ATTEMPTS && self.port_clash() => {
                    eprintln!(
                        "[mariadb] {:?}: port {} was taken ({e:#}); trying another",
                        self.id, self.port
                    );
                    attempt += 1;
                    self.port = free_ports(1)?[0];
                    self.spawn(mariadbd)?;
                }
                Err(e) => return Err(e).with_context(|| format!("starting {:?}", self.id)),
            }
        }
    }

    /// Polls the unix socket until the server accepts a connection, the process exits,
    /// or [`READY_TIMEOUT`] passes. On failure the process is killed and the error quotes
    /// the end of the error log.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let socket = self.socket();
        let what = format!("mariadbd accepts connections on {}", socket.display());
        // Ends with the exit status if the process exits first.
        let ready = poll_until_async(READY_TIMEOUT, &what, async || {
            let child = self.child.as_mut().expect("node was spawned");
            match child.try_wait() {
                Ok(None) => {}
                exited => return Ok(exited),
            }
            if !socket.exists() {
                return Err("no socket yet");
            }
            let attempt = tokio::time::timeout(Duration::from_secs(2), self.connect_root());
            match attempt.await {
                Ok(Ok(conn)) => {
                    let _ = conn.disconnect().await;
                    Ok(Ok(None))
                }
                _ => Err("no connection yet"),
            }
        })
        .await;
        let failure = match ready {
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(status))) => {
                format!("mariadbd exited with {status} before accepting connections")
            }
            Ok(Err(e)) => format!("mariadbd could not be waited for: {e}"),
            Err(timed_out) => format!("{timed_out:#}"),
        };
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        bail!(
            "{failure}; end of {}:\n{}",
            self.error_log().display(),
            self.log_tail()
        )
    }

    /// Connects as root over the unix socket, selecting [`DATABASE`] if it exists.
    async fn connect_root(&self) -> anyhow::Result<Conn> {
        let opts = OptsBuilder::default()
            .socket(Some(self.socket().to_string_lossy().into_owned()))
            .user(Some("root"))
            .prefer_socket(false);
        match Conn::new(opts.clone().db_name(Some(DATABASE))).await {
            Ok(conn) => Ok(conn),
            // ER_BAD_DB_ERROR: the database was dropped; connect without it.
            Err(mysql_async::Error::Server(e)) if e.code == 1049 => Ok(Conn::new(opts).await?),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the last start failed because the port was in use.
    fn port_clash(&self) -> bool {
        let log = std::fs::read_to_string(self.error_log()).unwrap_or_default();
        let last_start = log.rsplit("Starting MariaDB").next().unwrap_or("");
        last_start.contains("Address already in use")
            || last_start.contains("Bind on TCP/IP port")
            || last_start.contains("another server running on port")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.error_log())
            .unwrap_or_else(|e| format!("(cannot read: {e})"));
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

/// Server settings shared by `mariadb-install-db` and every node: a small InnoDB (the
/// redo log size must match the template's so that a node need not resize it), and
/// Debian's default character set, which `--no-defaults` would otherwise lose.
const SERVER_TUNING: &[&str] = &[
    "--innodb-buffer-pool-size=16M",
    "--innodb-log-file-size=8M",
    "--innodb-temp-data-file-path=ibtmp1:1M:autoextend",
    "--innodb-flush-log-at-trx-commit=2",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
];

/// Runs `mariadb-install-db` into `template`, with the app database and the users
/// created in the same bootstrap.
async fn install_template(install_db: &Path, root: &Path, template: &Path) -> anyhow::Result<()> {
    // Bootstrap runs without grant tables; FLUSH PRIVILEGES loads them so that
    // CREATE USER and GRANT work.
    let setup = format!(
        "FLUSH PRIVILEGES;\n\
         CREATE DATABASE `{DATABASE}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;\n\
         CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}';\n\
         GRANT ALL PRIVILEGES ON `{DATABASE}`.* TO '{USER}'@'%';\n\
         GRANT SLAVE MONITOR, PROCESS ON *.* TO '{USER}'@'%';\n\
         CREATE USER '{REPL_USER}'@'%' IDENTIFIED BY '{REPL_PASSWORD}';\n\
         GRANT REPLICATION SLAVE ON *.* TO '{REPL_USER}'@'%';\n"
    );
    let setup_file = root.join("setup.sql");
    std::fs::write(&setup_file, setup)?;
    let log = root.join("install-db.log");
    // Its own temporary directory: bootstraps of clusters started at the same time
    // (tests run in parallel) must not share /tmp's temporary tables.
    let tmp = root.join("install-tmp");
    std::fs::create_dir_all(&tmp)?;
    let mut command = tokio::process::Command::new(install_db);
    command
        .arg("--no-defaults")
        .arg(format!("--datadir={}", template.display()))
        .arg(format!("--tmpdir={}", tmp.display()))
        .args([
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
            "--skip-name-resolve",
            "--user=root",
        ])
        .arg(format!("--extra-file={}", setup_file.display()))
        .args(SERVER_TUNING)
        .stdin(Stdio::null())
        .stdout(append(&log)?)
        .stderr(append(&log)?)
        .kill_on_drop(true);
    let status = tokio::time::timeout(INSTALL_TIMEOUT, command.status())
        .await
        .map_err(|_| {
            anyhow!(
                "{} timed out after {INSTALL_TIMEOUT:?}",
                install_db.display()
            )
        })?
        .with_context(|| format!("running {}", install_db.display()))?;
    if !status.success() {
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        bail!("{} failed ({status}):\n{output}", install_db.display());
    }
    Ok(())
}

/// `cp -a FROM TO`: a faithful copy of a data directory.
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    let output = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .context("running cp")?;
    if !output.status.success() {
        bail!(
            "cp -a {} {} failed: {}",
            from.display(),
            to.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn server_id_of(node: NodeId) -> u32 {
    match node {
        NodeId::Primary => 1,
        NodeId::Replica(i) => u32::try_from(i).expect("replica index fits u32") + 2,
    }
}

/// `name` in `PATH`, else in one of `dirs`.
fn find_binary(name: &str, dirs: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(dirs.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn append(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// A column of a row as text; `None` for NULL, a missing column or a value that is not
/// text (the text protocol sends every value as text).
fn text(row: &Row, column: impl mysql_async::prelude::ColumnIndex) -> Option<String> {
    row.get_opt::<Option<String>, _>(column)?.ok().flatten()
}
