//! The driver's side: a pooled connection leased for one statement or transaction
//! (kept in step with the server, or closed), values converted both ways, and driver
//! errors sorted into the guest's kinds.

use super::Node;
use crate::db::{DbError, ExecResult, ResultLimits, Rows, Value};
use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::prelude::Queryable;
use mysql_async::{Column, Conn, Opts, OptsBuilder, Params, Pool};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a statement did not complete on a node.
pub(super) enum Failure {
    /// The node could not be reached or the connection broke: another node may do.
    Connection(String),
    /// The database answered with an error: retrying elsewhere would not help.
    Db(DbError),
}

/// A pooled connection in use. A statement that breaks the connection, that wharf
/// stops waiting for, or whose result is cut off at a limit leaves it in an unknown
/// state (a response may still be on the wire; a timeout the server reports is an
/// answer, and leaves it in step), and so does a lease dropped mid-command: the
/// connection is closed instead of going back to the pool, and the server is told to
/// stop the statement.
pub(super) struct Lease {
    pub(super) conn: Option<Conn>,
    /// A command was sent and its reply not read in full: the state that must never
    /// go back to the pool.
    pub(super) in_flight: bool,
    /// The longest one statement may run (`query_timeout_ms`).
    pub(super) limit: Duration,
    /// When the request's time is up.
    pub(super) deadline: Instant,
    pub(super) limits: ResultLimits,
    pub(super) stopper: Stopper,
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

    pub(super) async fn read(&mut self, sql: &str, params: &[Value]) -> Result<Rows, Failure> {
        let (deadline, limits) = (self.statement_deadline(), self.limits);
        let command = read(self.start()?, sql, params, limits);
        let outcome = tokio::time::timeout_at(deadline, command).await;
        self.settle(outcome)?.map_err(|over| {
            // The rest of the result is still coming: never drain it into the pool.
            self.abandon();
            Failure::Db(over)
        })
    }

    pub(super) async fn write(
        &mut self,
        sql: &str,
        params: &[Value],
    ) -> Result<ExecResult, Failure> {
        let deadline = self.statement_deadline();
        let command = write(self.start()?, sql, params);
        let outcome = tokio::time::timeout_at(deadline, command).await;
        self.settle(outcome)
    }

    /// A fixed statement of the host's own (transaction control).
    pub(super) async fn text(&mut self, sql: &'static str) -> Result<(), Failure> {
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
pub(super) struct Stopper {
    pub(super) opts: Opts,
    /// Bounds connecting and the `KILL` itself.
    pub(super) within: Duration,
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
    pub(super) async fn pool(&self) -> Result<&Pool, mysql_async::Error> {
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
