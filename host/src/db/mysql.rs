//! MySQL/MariaDB: a pool per node, writes and transactions to the primary, reads round
//! robin over the replicas that a background check finds healthy.
//!
//! A pooled connection is handed from request to request, so two rules keep one
//! request's doings out of the next one's:
//! - A connection goes back to the pool only in step: a [`Lease`] dropped or cut off
//!   while a command is on the wire (the request was cancelled, a limit was reached)
//!   is closed, and the server is told to stop the statement.
//! - The server resets every connection that goes back to the pool
//!   (`COM_RESET_CONNECTION`): an open transaction rolls back, and locks, variables
//!   and temporary tables go, whatever the statement filter missed. It costs a round
//!   trip on the way back to the pool (off the request path) and the connection's
//!   prepared statements: each request prepares its statements again, one round trip
//!   per distinct statement. Correct over fast: the alternative is trusting that no
//!   statement can leave state behind.

use super::statement::{Call, check};
use super::{
    Database, DbError, Dialect, ExecResult, ResultLimits, Rows, Session, Transaction, Value,
};
use crate::config::DatabaseConfig;
use async_trait::async_trait;
use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::prelude::Queryable;
use mysql_async::{Column, Conn, Opts, OptsBuilder, Params, Pool, PoolConstraints, PoolOpts, Row};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

pub struct MysqlCluster {
    primary: Node,
    replicas: Vec<Node>,
    /// Round-robin position over the replicas.
    next: AtomicUsize,
    connect_timeout: Duration,
    query_timeout: Duration,
    max_lag_s: u64,
    checker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// One server: its pool and, for a replica, whether it is in rotation.
struct Node {
    /// `user@host:port`, for logs (never shown to guests).
    name: String,
    opts: Opts,
    /// Made on first use: its connections' setup depends on the server's kind.
    pool: OnceCell<Pool>,
    /// The statement time limit every pooled connection gets from the server itself.
    statement_limit: Duration,
    healthy: AtomicBool,
    /// Why a replica is out of rotation; empty while it is in.
    reason: Mutex<String>,
}

/// Why a statement did not complete on a node.
enum Failure {
    /// The node could not be reached or the connection broke: another node may do.
    Connection(String),
    /// The database answered with an error: retrying elsewhere would not help.
    Db(DbError),
}

impl MysqlCluster {
    /// Opens the pools (connections are made on demand), checks the replicas once so
    /// the first reads go to the right place, then keeps checking in the background.
    pub async fn start(config: &DatabaseConfig) -> anyhow::Result<Arc<Self>> {
        let password = config.password()?;
        let pool_opts = PoolOpts::default()
            .with_constraints(
                PoolConstraints::new(config.pool_min, config.pool_max)
                    .ok_or_else(|| anyhow::anyhow!("database.pool_min is above pool_max"))?,
            )
            // See the module doc: nothing of one request's session reaches the next.
            .with_reset_connection(true);
        let node = |url_opts: &Opts| -> anyhow::Result<Node> {
            let name = format!(
                "{}@{}:{}",
                url_opts.user().unwrap_or_default(),
                url_opts.ip_or_hostname(),
                url_opts.tcp_port()
            );
            let opts: Opts = OptsBuilder::from_opts(url_opts.clone())
                .pass(password.clone())
                // UPDATE reports the rows it matched, as SQLite does, not only those
                // whose values changed.
                .client_found_rows(true)
                .pool_opts(pool_opts.clone())
                .into();
            Ok(Node {
                name,
                pool: OnceCell::new(),
                opts,
                statement_limit: config.query_timeout,
                healthy: AtomicBool::new(false),
                reason: Mutex::new("not checked yet".into()),
            })
        };
        let primary = node(&config.primary)?;
        primary.healthy.store(true, Ordering::Relaxed);
        let replicas = config
            .replicas
            .iter()
            .map(node)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let cluster = Arc::new(Self {
            primary,
            replicas,
            next: AtomicUsize::new(0),
            connect_timeout: config.connect_timeout,
            query_timeout: config.query_timeout,
            max_lag_s: config.max_replica_lag.as_secs(),
            checker: Mutex::new(None),
        });
        let mut probes = Probes::default();
        cluster.check_round(&mut probes).await;
        let checker = tokio::spawn(check_loop(
            Arc::downgrade(&cluster),
            probes,
            config.check_interval,
        ));
        *cluster.checker.lock().unwrap() = Some(checker);
        Ok(cluster)
    }

    pub fn describe(&self) -> String {
        let replicas: Vec<_> = self.replicas.iter().map(|r| r.name.as_str()).collect();
        format!(
            "MySQL primary {}, replicas [{}]",
            self.primary.name,
            replicas.join(", ")
        )
    }

    /// The next healthy replica after the round-robin position, other than `skip`.
    fn pick_replica(&self, skip: Option<usize>) -> Option<usize> {
        let n = self.replicas.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| Some(i) != skip && self.replicas[i].healthy.load(Ordering::Relaxed))
    }

    /// Takes a connection from `node`'s pool within the connect timeout, for a
    /// statement of `session`.
    async fn lease(&self, node: &Node, session: &Session) -> Result<Lease, Failure> {
        let conn = async { node.pool().await?.get_conn().await };
        match tokio::time::timeout(self.connect_timeout, conn).await {
            Ok(Ok(conn)) => Ok(Lease {
                conn: Some(conn),
                in_flight: false,
                limit: self.query_timeout,
                deadline: session.deadline,
                limits: session.limits,
                stopper: Stopper {
                    opts: node.opts.clone(),
                    within: self.connect_timeout,
                },
            }),
            Ok(Err(e)) => Err(Failure::Connection(format!("cannot connect: {e}"))),
            Err(_) => Err(Failure::Connection(format!(
                "no connection within {:?}",
                self.connect_timeout
            ))),
        }
    }

    async fn read_on(
        &self,
        node: &Node,
        session: &Session,
        sql: &str,
        params: &[Value],
    ) -> Result<Rows, Failure> {
        self.lease(node, session).await?.read(sql, params).await
    }

    /// Logs a connection failure with the node's address and turns it into what the
    /// guest sees, which names no address.
    fn unavailable(&self, node: &Node, what: &str, detail: &str) -> DbError {
        tracing::warn!(node = %node.name, "{what} failed: {detail}");
        DbError::Unavailable(format!(
            "{what} failed: the database connection broke or could not be made"
        ))
    }

    fn read_failed(&self, node: &Node, failure: Failure) -> DbError {
        match failure {
            Failure::Connection(detail) => self.unavailable(node, "read", &detail),
            Failure::Db(e) => e,
        }
    }

    /// Takes a replica out of rotation after a read on it failed to connect, until the
    /// background check finds it healthy again.
    fn eject(&self, i: usize, detail: &str) {
        let node = &self.replicas[i];
        if node.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(node = %node.name, "replica left rotation: {detail}");
            *node.reason.lock().unwrap() = detail.to_string();
        }
    }

    /// One round of health checks: the primary answers, and each replica replicates
    /// without lagging past the limit.
    async fn check_round(&self, probes: &mut Probes) {
        probes.conns.resize_with(self.replicas.len() + 1, || None);
        let (primary_conn, replica_conns) = probes.conns.split_first_mut().unwrap();
        let primary = self.probe(&self.primary, primary_conn, "DO 1").await;
        let primary_up = primary.is_ok();
        if self.primary.healthy.swap(primary_up, Ordering::Relaxed) != primary_up {
            match primary {
                Ok(_) => tracing::info!(node = %self.primary.name, "primary answers again"),
                Err(e) => tracing::warn!(node = %self.primary.name, "primary unreachable: {e}"),
            }
        }
        for (node, conn) in self.replicas.iter().zip(replica_conns) {
            let status = self.probe(node, conn, "SHOW SLAVE STATUS").await;
            let verdict = match status {
                Err(e) => Err(format!("not answering: {e}")),
                Ok(row) => replica_verdict(row, primary_up, self.max_lag_s),
            };
            let was = node.healthy.load(Ordering::Relaxed);
            match verdict {
                Ok(()) => {
                    node.healthy.store(true, Ordering::Relaxed);
                    if !was {
                        tracing::info!(node = %node.name, "replica in rotation");
                        node.reason.lock().unwrap().clear();
                    }
                }
                Err(reason) => {
                    node.healthy.store(false, Ordering::Relaxed);
                    let mut last = node.reason.lock().unwrap();
                    if was || *last != reason {
                        tracing::warn!(node = %node.name, "replica out of rotation: {reason}");
                        *last = reason;
                    }
                }
            }
        }
    }

    /// Runs a check statement on `node` over the checker's own connection (not the
    /// pool's), reconnecting when needed, bounded by the connect timeout. Returns the
    /// first row, if any.
    async fn probe(
        &self,
        node: &Node,
        slot: &mut Option<Conn>,
        statement: &'static str,
    ) -> Result<Option<Row>, String> {
        let limit = self.connect_timeout;
        if slot.is_none() {
            let conn = tokio::time::timeout(limit, Conn::new(node.opts.clone()))
                .await
                .map_err(|_| format!("no connection within {limit:?}"))?
                .map_err(|e| e.to_string())?;
            *slot = Some(conn);
        }
        let conn = slot.as_mut().unwrap();
        let result = match tokio::time::timeout(limit, conn.query_first(statement)).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {limit:?}"),
        };
        // The connection may be broken or mid-answer: the next round makes a new one.
        *slot = None;
        Err(result)
    }
}

impl Drop for MysqlCluster {
    fn drop(&mut self) {
        if let Some(checker) = self.checker.lock().unwrap().take() {
            checker.abort();
        }
    }
}

/// The checker's own connections: primary first, then each replica.
#[derive(Default)]
struct Probes {
    conns: Vec<Option<Conn>>,
}

async fn check_loop(cluster: Weak<MysqlCluster>, mut probes: Probes, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        cluster.check_round(&mut probes).await;
    }
}

/// Whether a replica may serve reads, from its `SHOW SLAVE STATUS` row.
fn replica_verdict(row: Option<Row>, primary_up: bool, max_lag_s: u64) -> Result<(), String> {
    let row = row.ok_or("replication is not configured")?;
    let field = |name: &str| -> Option<String> { row.get_opt::<Option<String>, _>(name)?.ok()? };
    if field("Slave_SQL_Running").as_deref() != Some("Yes") {
        let error = field("Last_SQL_Error").unwrap_or_default();
        return Err(format!("replication SQL thread is not running {error}")
            .trim_end()
            .to_string());
    }
    if field("Slave_IO_Running").as_deref() != Some("Yes") {
        // With the primary down, replicas cannot fetch anything new, but what they have
        // applied is the newest data there is: keep serving reads from them.
        if primary_up {
            let error = field("Last_IO_Error").unwrap_or_default();
            return Err(format!("replication IO thread is not running {error}")
                .trim_end()
                .to_string());
        }
        return Ok(());
    }
    match field("Seconds_Behind_Master").and_then(|s| s.parse::<u64>().ok()) {
        None => Err("replication lag is unknown".into()),
        Some(lag) if lag > max_lag_s => Err(format!(
            "replication lag {lag} s is over the {max_lag_s} s limit"
        )),
        Some(_) => Ok(()),
    }
}

#[async_trait]
impl Database for MysqlCluster {
    fn dialect(&self) -> Dialect {
        Dialect::Mysql
    }

    async fn query(
        &self,
        session: &mut Session,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Rows, DbError> {
        check(sql, Call::Query, Dialect::Mysql)?;
        if !session.wrote
            && let Some(first) = self.pick_replica(None)
        {
            let detail = match self
                .read_on(&self.replicas[first], session, sql, &params)
                .await
            {
                Err(Failure::Connection(detail)) => detail,
                Ok(rows) => return Ok(rows),
                Err(Failure::Db(e)) => return Err(e),
            };
            self.eject(first, &detail);
            // Retried once, on another replica or else the primary.
            let node = match self.pick_replica(Some(first)) {
                Some(i) => &self.replicas[i],
                None => &self.primary,
            };
            let result = self.read_on(node, session, sql, &params).await;
            return result.map_err(|f| self.read_failed(node, f));
        }
        let detail = match self.read_on(&self.primary, session, sql, &params).await {
            Err(Failure::Connection(detail)) => detail,
            result => return result.map_err(|f| self.read_failed(&self.primary, f)),
        };
        // The primary is unreachable and no replica is in rotation (they may have just
        // lost their connection to it): a replica's data beats no answer, except for a
        // request that has written and must see its writes.
        match self.replicas.len() {
            n if n > 0 && !session.wrote => {
                let node = &self.replicas[self.next.fetch_add(1, Ordering::Relaxed) % n];
                let result = self.read_on(node, session, sql, &params).await;
                result.map_err(|f| self.read_failed(node, f))
            }
            _ => Err(self.unavailable(&self.primary, "read", &detail)),
        }
    }

    async fn execute(
        &self,
        session: &mut Session,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<ExecResult, DbError> {
        let writes = check(sql, Call::Execute, Dialect::Mysql)?;
        session.wrote |= writes;
        let session = &*session;
        let result = async {
            let mut lease = self.lease(&self.primary, session).await?;
            lease.write(sql, &params).await
        };
        result.await.map_err(|f| match f {
            Failure::Connection(detail) => self.unavailable(&self.primary, "write", &detail),
            Failure::Db(e) => e,
        })
    }

    async fn begin(&self, session: &mut Session) -> Result<Box<dyn Transaction>, DbError> {
        session.wrote = true;
        let started = async {
            // The transaction's statements run under this request's deadline and limits.
            let mut lease = self.lease(&self.primary, session).await?;
            lease.text("START TRANSACTION").await?;
            Ok(lease)
        };
        let lease = started.await.map_err(|f| match f {
            Failure::Connection(detail) => self.unavailable(&self.primary, "begin", &detail),
            Failure::Db(e) => e,
        })?;
        Ok(Box::new(MysqlTransaction { lease }))
    }
}

/// A transaction holding its primary connection until commit or rollback. Dropped
/// without either (the guest dropped it, trapped or ran out of time), its lease goes:
/// back to the pool, whose reset rolls the transaction back, or, with a statement in
/// flight, closed, and the server rolls back.
struct MysqlTransaction {
    lease: Lease,
}

impl MysqlTransaction {
    async fn finish(mut self: Box<Self>, statement: &'static str) -> Result<(), DbError> {
        self.lease.text(statement).await.map_err(in_transaction)?;
        // Back to the pool, outside any transaction.
        self.lease.conn.take();
        Ok(())
    }
}

/// A broken connection ends the transaction: the server rolls it back.
fn in_transaction(f: Failure) -> DbError {
    match f {
        Failure::Db(e) => e,
        Failure::Connection(detail) => {
            tracing::warn!("transaction connection failed: {detail}");
            DbError::Unavailable("the transaction's connection broke; it was rolled back".into())
        }
    }
}

#[async_trait]
impl Transaction for MysqlTransaction {
    async fn query(&mut self, sql: &str, params: Vec<Value>) -> Result<Rows, DbError> {
        check(sql, Call::Query, Dialect::Mysql)?;
        self.lease.read(sql, &params).await.map_err(in_transaction)
    }

    async fn execute(&mut self, sql: &str, params: Vec<Value>) -> Result<ExecResult, DbError> {
        check(sql, Call::Execute, Dialect::Mysql)?;
        self.lease.write(sql, &params).await.map_err(in_transaction)
    }

    async fn commit(self: Box<Self>) -> Result<(), DbError> {
        self.finish("COMMIT").await
    }

    async fn rollback(self: Box<Self>) -> Result<(), DbError> {
        self.finish("ROLLBACK").await
    }
}

/// A pooled connection in use. A statement that breaks the connection, that wharf
/// stops waiting for, or whose result is cut off at a limit leaves it in an unknown
/// state (a response may still be on the wire; a timeout the server reports is an
/// answer, and leaves it in step), and so does a lease dropped mid-command: the
/// connection is closed instead of going back to the pool, and the server is told to
/// stop the statement.
struct Lease {
    conn: Option<Conn>,
    /// A command was sent and its reply not read in full: the state that must never
    /// go back to the pool.
    in_flight: bool,
    /// The longest one statement may run (`query_timeout_ms`).
    limit: Duration,
    /// When the request's time is up.
    deadline: Instant,
    limits: ResultLimits,
    stopper: Stopper,
}

type Outcome<T> = Result<Result<T, mysql_async::Error>, tokio::time::error::Elapsed>;

impl Lease {
    /// The connection, marked busy until [`Lease::settle`] sees the command's outcome.
    fn start(&mut self) -> Result<&mut Conn, Failure> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| Failure::Connection("the connection was closed".into()))?;
        self.in_flight = true;
        Ok(conn)
    }

    /// When the statement about to run must have finished: its own limit or the
    /// request's deadline, whichever comes first.
    fn statement_deadline(&self) -> tokio::time::Instant {
        (Instant::now() + self.limit).min(self.deadline).into()
    }

    async fn read(&mut self, sql: &str, params: &[Value]) -> Result<Rows, Failure> {
        let (deadline, limits) = (self.statement_deadline(), self.limits);
        let command = read(self.start()?, sql, params, limits);
        let outcome = tokio::time::timeout_at(deadline, command).await;
        self.settle(outcome)?.map_err(|over| {
            // The rest of the result is still coming: never drain it into the pool.
            self.abandon();
            Failure::Db(over)
        })
    }

    async fn write(&mut self, sql: &str, params: &[Value]) -> Result<ExecResult, Failure> {
        let deadline = self.statement_deadline();
        let command = write(self.start()?, sql, params);
        let outcome = tokio::time::timeout_at(deadline, command).await;
        self.settle(outcome)
    }

    /// A fixed statement of the host's own (transaction control).
    async fn text(&mut self, sql: &'static str) -> Result<(), Failure> {
        let deadline = self.statement_deadline();
        let command = self.start()?.query_drop(sql);
        let outcome = tokio::time::timeout_at(deadline, command).await;
        self.settle(outcome)
    }

    fn settle<T>(&mut self, outcome: Outcome<T>) -> Result<T, Failure> {
        let failure = match outcome {
            Ok(Ok(value)) => {
                self.in_flight = false;
                return Ok(value);
            }
            Ok(Err(e)) => failure(e),
            // wharf gave up waiting: the reply may still come.
            Err(_) => {
                self.abandon();
                return Err(Failure::Db(DbError::Timeout(
                    if Instant::now() >= self.deadline {
                        "the request ran out of time during the statement".into()
                    } else {
                        format!("the statement took longer than {:?}", self.limit)
                    },
                )));
            }
        };
        match failure {
            Failure::Connection(_) => self.abandon(),
            // The server answered with an error, its own timeouts included (a lock
            // wait timeout rolls back only the statement): the connection is in step.
            Failure::Db(_) => self.in_flight = false,
        }
        Err(failure)
    }

    /// Closes the connection without reading what is still on its way, and has the
    /// server stop the statement: until it notices the closed socket, a statement left
    /// running keeps its locks and its transaction open.
    fn abandon(&mut self) {
        self.in_flight = false;
        let Some(conn) = self.conn.take() else {
            return;
        };
        let id = conn.id();
        let stopper = self.stopper.clone();
        // Always inside the runtime that ran the statement; without one the process
        // is shutting down and the connection goes with it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = tokio::join!(conn.disconnect(), stopper.stop(id));
            });
        }
    }
}

impl Drop for Lease {
    /// Dropped mid-command (the request's future was dropped): the reply is unread.
    fn drop(&mut self) {
        if self.in_flight {
            self.abandon();
        }
    }
}

/// Stops a statement that wharf gave up on, over a connection of its own (the
/// statement's connection is busy with it).
#[derive(Clone)]
struct Stopper {
    opts: Opts,
    /// Bounds connecting and the `KILL` itself.
    within: Duration,
}

impl Stopper {
    async fn stop(self, connection_id: u32) {
        let kill = async {
            let mut conn = Conn::new(self.opts).await?;
            // QUERY, not CONNECTION: the connection is closed by wharf already, and
            // the server then ends its session and rolls back.
            let killed = conn.query_drop(format!("KILL QUERY {connection_id}")).await;
            let _ = conn.disconnect().await;
            killed
        };
        match tokio::time::timeout(self.within, kill).await {
            Ok(Ok(())) => {}
            // The statement ended and its connection closed in the meantime.
            Ok(Err(mysql_async::Error::Server(e))) if e.code == ER_NO_SUCH_THREAD => {}
            Ok(Err(e)) => tracing::warn!("stopping statement {connection_id} failed: {e}"),
            Err(_) => tracing::warn!(
                "stopping statement {connection_id} failed: no answer within {:?}",
                self.within
            ),
        }
    }
}

/// MySQL's "Unknown thread id".
const ER_NO_SUCH_THREAD: u16 = 1094;

impl Node {
    /// The node's pool. Its connections get the server's own statement time limit,
    /// set again after each reset (a reset clears session variables); the variable
    /// differs between MariaDB and MySQL, so the first connection tells which.
    async fn pool(&self) -> Result<&Pool, mysql_async::Error> {
        self.pool
            .get_or_try_init(|| async {
                let conn = Conn::new(self.opts.clone()).await?;
                let setup = statement_limit(conn.server_version(), self.statement_limit);
                let _ = conn.disconnect().await;
                let opts = OptsBuilder::from_opts(self.opts.clone()).setup(vec![setup]);
                Ok(Pool::new(opts))
            })
            .await
    }
}

/// The session setting that makes the server stop any statement after `limit`, for a
/// server of `version`. MariaDB (versions 10 and up; MySQL is at 9) bounds every
/// statement; MySQL's `max_execution_time` bounds only SELECTs, which is what it has.
fn statement_limit(version: (u16, u16, u16), limit: Duration) -> String {
    if version.0 >= 10 {
        format!(
            "SET SESSION max_statement_time = {:.3}",
            limit.as_secs_f64()
        )
    } else {
        format!("SET SESSION max_execution_time = {}", limit.as_millis())
    }
}

/// Reads the result row by row, counting rows and bytes against `limits`; the inner
/// error is the limit passed, with the rest of the result still on the wire.
async fn read(
    conn: &mut Conn,
    sql: &str,
    params: &[Value],
    limits: ResultLimits,
) -> Result<Result<Rows, DbError>, mysql_async::Error> {
    let mut result = conn.exec_iter(sql, to_params(params)).await?;
    let columns = result.columns().unwrap_or_else(|| Arc::from(Vec::new()));
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    while let Some(row) = result.next().await? {
        if rows.len() == limits.max_rows {
            return Ok(Err(limits.exceeded("too many rows")));
        }
        let values = row.unwrap();
        bytes = bytes.saturating_add(values.iter().map(size).sum());
        if bytes > limits.max_bytes {
            return Ok(Err(limits.exceeded("too many bytes")));
        }
        let values = values.into_iter().zip(columns.iter());
        rows.push(values.map(|(v, c)| from_mysql(v, c)).collect());
    }
    Ok(Ok(Rows {
        columns: columns.iter().map(|c| c.name_str().into_owned()).collect(),
        rows,
    }))
}

/// What a value costs the guest: its bytes, or 8 for a number, date or time.
fn size(value: &mysql_async::Value) -> usize {
    match value {
        mysql_async::Value::Bytes(bytes) => bytes.len(),
        _ => 8,
    }
}

async fn write(
    conn: &mut Conn,
    sql: &str,
    params: &[Value],
) -> Result<ExecResult, mysql_async::Error> {
    conn.exec_drop(sql, to_params(params)).await?;
    Ok(ExecResult {
        rows_affected: conn.affected_rows(),
        last_insert_id: conn.last_insert_id().filter(|&id| id != 0),
    })
}

fn to_params(params: &[Value]) -> Params {
    if params.is_empty() {
        return Params::Empty;
    }
    Params::Positional(params.iter().map(to_mysql).collect())
}

fn to_mysql(value: &Value) -> mysql_async::Value {
    use mysql_async::Value as M;
    match value {
        Value::Null => M::NULL,
        Value::Int(i) => M::Int(*i),
        Value::Uint(u) => M::UInt(*u),
        Value::Float(f) => M::Double(*f),
        Value::Binary(b) => M::Bytes(b.clone()),
        Value::Decimal(s)
        | Value::Text(s)
        | Value::Date(s)
        | Value::Time(s)
        | Value::Datetime(s)
        | Value::Json(s) => M::Bytes(s.clone().into_bytes()),
    }
}

/// The binary protocol types integers, floats and dates; strings, decimals and JSON
/// arrive as bytes and are told apart by the column's type and character set.
fn from_mysql(value: mysql_async::Value, column: &Column) -> Value {
    use mysql_async::Value as M;
    const BINARY_CHARSET: u16 = 63;
    match value {
        M::NULL => Value::Null,
        // The driver hands small unsigned values over as signed; the column says which.
        M::Int(i) if column.flags().contains(ColumnFlags::UNSIGNED_FLAG) && i >= 0 => {
            Value::Uint(i as u64)
        }
        M::Int(i) => Value::Int(i),
        M::UInt(u) => Value::Uint(u),
        M::Float(f) => Value::Float(f as f64),
        M::Double(f) => Value::Float(f),
        M::Date(y, mo, d, h, mi, s, us) => match column.column_type() {
            ColumnType::MYSQL_TYPE_DATE | ColumnType::MYSQL_TYPE_NEWDATE => {
                Value::Date(format!("{y:04}-{mo:02}-{d:02}"))
            }
            _ => Value::Datetime(format!(
                "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}{}",
                fraction(us)
            )),
        },
        M::Time(negative, days, h, mi, s, us) => Value::Time(format!(
            "{}{:02}:{mi:02}:{s:02}{}",
            if negative { "-" } else { "" },
            u64::from(days) * 24 + u64::from(h),
            fraction(us)
        )),
        M::Bytes(bytes) => match column.column_type() {
            ColumnType::MYSQL_TYPE_DECIMAL | ColumnType::MYSQL_TYPE_NEWDECIMAL => {
                Value::Decimal(String::from_utf8_lossy(&bytes).into_owned())
            }
            ColumnType::MYSQL_TYPE_JSON => {
                Value::Json(String::from_utf8_lossy(&bytes).into_owned())
            }
            ColumnType::MYSQL_TYPE_BIT => Value::Binary(bytes),
            _ if column.character_set() == BINARY_CHARSET => Value::Binary(bytes),
            _ => match String::from_utf8(bytes) {
                Ok(text) => Value::Text(text),
                Err(e) => Value::Binary(e.into_bytes()),
            },
        },
    }
}

fn fraction(micros: u32) -> String {
    if micros == 0 {
        String::new()
    } else {
        format!(".{micros:06}")
    }
}

/// Sorts a driver error into the guest's error kinds by MySQL/MariaDB error code.
fn failure(e: mysql_async::Error) -> Failure {
    use mysql_async::{DriverError, Error};
    match e {
        Error::Server(s) => match s.code {
            // Duplicate key, foreign keys, NOT NULL, no default, CHECK constraints.
            1062 | 1216 | 1217 | 1451 | 1452 | 1048 | 1364 | 1557 | 1586 | 3819 | 4025 => {
                Failure::Db(DbError::ConstraintViolation(s.message))
            }
            // Lock wait timeout, statement time limits.
            1205 | 1969 | 3024 => Failure::Db(DbError::Timeout(s.message)),
            // Access denied, read-only server.
            1044 | 1045 | 1142 | 1143 | 1227 | 1290 | 1370 => {
                Failure::Db(DbError::NotAllowed(s.message))
            }
            // Connection killed, query interrupted, server shutting down.
            1927 | 1317 | 1053 => Failure::Connection(s.message),
            _ => Failure::Db(DbError::BadStatement(s.message)),
        },
        Error::Driver(
            ref d @ (DriverError::StmtParamsMismatch { .. }
            | DriverError::Params(_)
            | DriverError::MixedParams),
        ) => Failure::Db(DbError::BadStatement(d.to_string())),
        other => Failure::Connection(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_go_nowhere_without_checks() {
        // The verdict reads only named fields; a missing row means no replication.
        assert!(replica_verdict(None, true, 5).is_err());
    }
}
