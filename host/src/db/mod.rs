//! The database role: what guests reach through `wharf:platform/sql`.
//!
//! Two backends behind one trait: a MySQL/MariaDB cluster (writes and transactions to
//! the primary, reads round robin over healthy replicas, read-your-writes per request)
//! and an embedded SQLite file per app when no `[database]` is configured. This module
//! knows nothing of wasmtime; `runtime` adapts it to the WIT interface.

mod mysql;
mod sqlite;
mod statement;

pub use mysql::MysqlCluster;
pub use sqlite::SqliteDir;

use crate::config::DatabaseConfig;
use crate::health::Health;
use async_trait::async_trait;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A parameter or column value, as the WIT `value` variant (dates and times as ISO text).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Uint(u64),
    Float(f64),
    Decimal(String),
    Text(String),
    Binary(Vec<u8>),
    Date(String),
    Time(String),
    Datetime(String),
    Json(String),
}

/// The result of a read.
#[derive(Debug, Default)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

/// The result of a write.
#[derive(Debug)]
pub struct ExecResult {
    pub rows_affected: u64,
    pub last_insert_id: Option<u64>,
}

/// What went wrong, in the terms the guest sees. Messages never carry a database
/// address or credentials; the host logs those details itself.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DbError {
    #[error("bad statement: {0}")]
    BadStatement(String),
    #[error("constraint violation: {0}")]
    ConstraintViolation(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("timeout: {0}")]
    Timeout(String),
    #[error("not allowed: {0}")]
    NotAllowed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Mysql,
    Sqlite,
}

/// One request's dealings with its database: what it has done so far (once it has
/// written, its reads go to the primary) and the bounds every call of it runs under.
#[derive(Debug)]
pub struct Session {
    pub wrote: bool,
    /// When the request's time is up: a statement still running then is stopped.
    pub deadline: Instant,
    pub limits: ResultLimits,
}

impl Session {
    pub fn new(deadline: Instant, limits: ResultLimits) -> Self {
        Self {
            wrote: false,
            deadline,
            limits,
        }
    }
}

/// How much one call may hand back to the guest. Both are counted while the result is
/// read, so a huge result fails at the limit instead of first filling the host's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultLimits {
    pub max_rows: usize,
    pub max_bytes: usize,
}

/// Rows one call may return when the app's manifest sets no limit.
pub const DEFAULT_MAX_ROWS: usize = 100_000;

impl ResultLimits {
    /// The default for an app whose instances may hold `max_memory` bytes: a result
    /// larger than that could never be handed to the guest anyway.
    pub fn for_memory(max_memory: usize) -> Self {
        Self {
            max_rows: DEFAULT_MAX_ROWS,
            max_bytes: max_memory,
        }
    }

    /// The error a call gets once its result passes a limit (`what` says which way);
    /// it names the limits by their manifest keys, where the app's owner can raise them.
    pub fn exceeded(&self, what: &str) -> DbError {
        DbError::NotAllowed(format!(
            "the result is over the limit of one call ({what}): max_result_rows = {}, \
             max_result_mb = {} (the app's manifest sets both)",
            self.max_rows,
            self.max_bytes >> 20
        ))
    }
}

/// One app's view of its database.
#[async_trait]
pub trait Database: Send + Sync {
    fn dialect(&self) -> Dialect;
    /// A read; may be served by a replica unless the session has written.
    async fn query(
        &self,
        session: &mut Session,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Rows, DbError>;
    /// A write on the primary; never retried.
    async fn execute(
        &self,
        session: &mut Session,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<ExecResult, DbError>;
    /// A transaction on the primary.
    async fn begin(&self, session: &mut Session) -> Result<Box<dyn Transaction>, DbError>;
}

/// An open transaction. Dropped without `commit`, it rolls back.
#[async_trait]
pub trait Transaction: Send {
    async fn query(&mut self, sql: &str, params: Vec<Value>) -> Result<Rows, DbError>;
    async fn execute(&mut self, sql: &str, params: Vec<Value>) -> Result<ExecResult, DbError>;
    async fn commit(self: Box<Self>) -> Result<(), DbError>;
    async fn rollback(self: Box<Self>) -> Result<(), DbError>;
}

/// A database server's part in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

/// One server as its checks found it, for the status page and metrics.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub role: Role,
    /// `user@host:port`.
    pub name: String,
    pub health: Health,
    /// How far a replica was behind the primary at its last check, when it knew.
    pub lag: Option<Duration>,
    /// Its connection pool, once the first statement made it.
    pub pool: Option<PoolGauges>,
}

/// A server's pooled connections now.
#[derive(Debug, Clone, Copy)]
pub struct PoolGauges {
    pub idle: usize,
    pub in_use: usize,
    /// Statements waiting for a connection.
    pub waiting: usize,
}

/// Where apps that are granted a database get it from.
pub enum Provider {
    Mysql(Arc<MysqlCluster>),
    Sqlite(SqliteDir),
}

impl Provider {
    /// The MySQL cluster of `config`, or SQLite files under `data_dir` without one.
    pub async fn new(
        config: Option<&DatabaseConfig>,
        data_dir: PathBuf,
        metrics: &crate::metrics::Metrics,
    ) -> anyhow::Result<Self> {
        Ok(match config {
            Some(config) => Provider::Mysql(MysqlCluster::start(config, metrics).await?),
            None => Provider::Sqlite(SqliteDir::new(data_dir)),
        })
    }

    /// Whether the provider can serve: the MySQL primary answered (the replicas were
    /// checked too, so the first reads go the right way), or SQLite's directory exists
    /// or can be made. A reload checks a new provider before it replaces the old one.
    pub fn check(&self) -> anyhow::Result<()> {
        match self {
            Provider::Mysql(cluster) => cluster.check(),
            Provider::Sqlite(dir) => dir.check(),
        }
    }

    /// Each database server, primary first; none for SQLite, which has no server.
    pub fn status(&self) -> Vec<NodeStatus> {
        match self {
            Provider::Mysql(cluster) => cluster.status(),
            Provider::Sqlite(_) => Vec::new(),
        }
    }

    /// The database of app `name`: the shared cluster, or the app's own SQLite file.
    pub fn for_app(&self, name: &str) -> anyhow::Result<Arc<dyn Database>> {
        Ok(match self {
            Provider::Mysql(cluster) => cluster.clone(),
            Provider::Sqlite(dir) => dir.open(name)?,
        })
    }

    /// One line for the startup output.
    pub fn describe(&self) -> String {
        match self {
            Provider::Mysql(cluster) => cluster.describe(),
            Provider::Sqlite(dir) => dir.describe(),
        }
    }
}
