//! MySQL/MariaDB: a pool per node, writes and transactions to the primary, reads round
//! robin over the replicas that a background check finds healthy.
//!
//! [`routing`] decides where a read goes, [`health`] runs the checks, [`driver`] is
//! the driver's side.
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

mod driver;
mod health;
mod routing;

use super::statement::{Call, check};
use super::{
    Database, DbError, Dialect, ExecResult, NodeStatus, PoolGauges, Role, Rows, Session,
    Transaction, Value,
};
use crate::config::DatabaseConfig;
use crate::health::Health;
use crate::metrics::{DbRole, DbServerMetrics, Metrics};
use async_trait::async_trait;
use driver::{Failure, Lease, Stopper};
use health::{Probes, check_loop};
use mysql_async::{Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts};
use routing::{Target, route};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
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

/// One server: its pool and what the checks found.
struct Node {
    /// `user@host:port`, for logs and status (never shown to guests).
    name: String,
    opts: Opts,
    /// Made on first use: its connections' setup depends on the server's kind.
    pool: OnceCell<Pool>,
    /// The statement time limit every pooled connection gets from the server itself.
    statement_limit: Duration,
    state: Mutex<Checked>,
    metrics: DbServerMetrics,
}

/// A node's health and, for a replica, the lag its last check reported.
struct Checked {
    health: Health,
    lag: Option<Duration>,
}

impl MysqlCluster {
    /// Opens the pools (connections are made on demand), checks every node once so
    /// the first reads go to the right place (and [`MysqlCluster::check`] can tell
    /// whether the primary answers), then keeps checking in the background.
    pub async fn start(config: &DatabaseConfig, metrics: &Metrics) -> anyhow::Result<Arc<Self>> {
        let password = config.password()?;
        let pool_opts = PoolOpts::default()
            .with_constraints(
                PoolConstraints::new(config.pool_min, config.pool_max)
                    .ok_or_else(|| anyhow::anyhow!("database.pool_min is above pool_max"))?,
            )
            // See the module doc: nothing of one request's session reaches the next.
            .with_reset_connection(true);
        let node = |url_opts: &Opts, health: Health, role| -> anyhow::Result<Node> {
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
                metrics: metrics.db_server(role, &name),
                name,
                pool: OnceCell::new(),
                opts,
                statement_limit: config.query_timeout,
                state: Mutex::new(Checked { health, lag: None }),
            })
        };
        // The primary is taken to answer until a check says otherwise: writes go
        // nowhere else. Replicas serve reads once a check lets them.
        let primary = node(&config.primary, Health::up(health::CHECKS), DbRole::Primary)?;
        let replicas = config
            .replicas
            .iter()
            .map(|url| {
                let unchecked = Health::down(health::CHECKS, "not checked yet");
                node(url, unchecked, DbRole::Replica)
            })
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

    /// Each node as the checks found it: the primary first, then the replicas in the
    /// configuration's order.
    pub fn status(&self) -> Vec<NodeStatus> {
        let primary = std::iter::once((Role::Primary, &self.primary));
        let replicas = self.replicas.iter().map(|r| (Role::Replica, r));
        primary
            .chain(replicas)
            .map(|(role, node)| {
                let state = node.state.lock().unwrap();
                NodeStatus {
                    role,
                    name: node.name.clone(),
                    health: state.health.clone(),
                    lag: state.lag,
                    pool: node.pool.get().map(|pool| {
                        let m = pool.metrics();
                        PoolGauges {
                            idle: m.connections_in_pool.load(Ordering::Relaxed),
                            in_use: m.connections_in_use.load(Ordering::Relaxed),
                            waiting: m.active_wait_requests.load(Ordering::Relaxed),
                        }
                    }),
                }
            })
            .collect()
    }

    /// Whether the primary answered the last check (the first round runs in
    /// [`MysqlCluster::start`]): a configuration whose primary does not is refused.
    pub fn check(&self) -> anyhow::Result<()> {
        let state = self.primary.state.lock().unwrap();
        anyhow::ensure!(
            state.health.is_up(),
            "database.primary {} does not answer: {}",
            self.primary.name,
            state.health.reason()
        );
        Ok(())
    }

    fn node(&self, target: Target) -> &Node {
        match target {
            Target::Primary => &self.primary,
            Target::Replica(i) => &self.replicas[i],
        }
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
        let result = async { self.lease(node, session).await?.read(sql, params).await };
        node.counted(result.await)
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
    fn eject(&self, target: Target, detail: &str) {
        let Target::Replica(i) = target else { return };
        let node = &self.replicas[i];
        if node.state.lock().unwrap().health.mark_down(detail) {
            tracing::warn!(node = %node.name, "replica left rotation: {detail}");
        }
    }
}

impl Drop for MysqlCluster {
    fn drop(&mut self) {
        if let Some(checker) = self.checker.lock().unwrap().take() {
            checker.abort();
        }
    }
}

impl Node {
    fn is_up(&self) -> bool {
        self.state.lock().unwrap().health.is_up()
    }

    /// `result` of a statement on this node, counted.
    fn counted<T>(&self, result: Result<T, Failure>) -> Result<T, Failure> {
        self.metrics.statement(result.is_ok());
        result
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
        let up: Vec<bool> = self.replicas.iter().map(Node::is_up).collect();
        let plan = route(
            session.wrote,
            &up,
            self.next.fetch_add(1, Ordering::Relaxed),
        );
        let first = self.node(plan.first);
        let detail = match self.read_on(first, session, sql, &params).await {
            Err(Failure::Connection(detail)) if plan.then.is_some() => detail,
            result => return result.map_err(|f| self.read_failed(first, f)),
        };
        self.eject(plan.first, &detail);
        let node = self.node(plan.then.unwrap());
        let result = self.read_on(node, session, sql, &params).await;
        result.map_err(|f| self.read_failed(node, f))
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
        self.primary.counted(result.await).map_err(|f| match f {
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
        let lease = self.primary.counted(started.await).map_err(|f| match f {
            Failure::Connection(detail) => self.unavailable(&self.primary, "begin", &detail),
            Failure::Db(e) => e,
        })?;
        let metrics = self.primary.metrics.clone();
        Ok(Box::new(MysqlTransaction { lease, metrics }))
    }
}

/// A transaction holding its primary connection until commit or rollback. Dropped
/// without either (the guest dropped it, trapped or ran out of time), its lease goes:
/// back to the pool, whose reset rolls the transaction back, or, with a statement in
/// flight, closed, and the server rolls back.
struct MysqlTransaction {
    lease: Lease,
    /// The primary's.
    metrics: DbServerMetrics,
}

impl MysqlTransaction {
    fn counted<T>(&self, result: Result<T, Failure>) -> Result<T, DbError> {
        self.metrics.statement(result.is_ok());
        result.map_err(in_transaction)
    }

    async fn finish(mut self: Box<Self>, statement: &'static str) -> Result<(), DbError> {
        let result = self.lease.text(statement).await;
        self.counted(result)?;
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
        let result = self.lease.read(sql, &params).await;
        self.counted(result)
    }

    async fn execute(&mut self, sql: &str, params: Vec<Value>) -> Result<ExecResult, DbError> {
        check(sql, Call::Execute, Dialect::Mysql)?;
        let result = self.lease.write(sql, &params).await;
        self.counted(result)
    }

    async fn commit(self: Box<Self>) -> Result<(), DbError> {
        self.finish("COMMIT").await
    }

    async fn rollback(self: Box<Self>) -> Result<(), DbError> {
        self.finish("ROLLBACK").await
    }
}
