//! Embedded SQLite when no MySQL is configured: one file per app under the data
//! directory, the same calls and errors as MySQL.
//!
//! SQLite has one writer at a time, so each app has one connection behind an async
//! mutex, used from blocking threads. A transaction holds the connection until it
//! ends; the request's deadline bounds how long that can be.

use super::statement::{Call, check};
use super::{Database, DbError, Dialect, ExecResult, Rows, Session, Transaction, Value};
use async_trait::async_trait;
use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, InterruptHandle};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::OwnedMutexGuard;

/// How long a statement waits for a lock held by another connection (another wharf
/// process, or the sqlite3 shell) before it fails with `timeout`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The data directory: `NAME.db` for app `NAME`.
pub struct SqliteDir {
    dir: PathBuf,
    /// Open databases, so a reloaded app keeps its connection.
    open: Mutex<HashMap<String, Weak<SqliteDb>>>,
}

impl SqliteDir {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            open: Default::default(),
        }
    }

    pub fn describe(&self) -> String {
        format!("SQLite files in {}", self.dir.display())
    }

    /// App `name`'s database, created on first use.
    pub fn open(&self, name: &str) -> anyhow::Result<Arc<dyn Database>> {
        let mut open = self.open.lock().unwrap();
        if let Some(db) = open.get(name).and_then(Weak::upgrade) {
            return Ok(db);
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| anyhow::anyhow!("data directory {}: {e}", self.dir.display()))?;
        let path = self.dir.join(format!("{name}.db"));
        let conn = Connection::open(&path)
            .and_then(|conn| {
                // WAL lets readers in other processes work during a write; foreign keys
                // are off by default in SQLite, on in MySQL's InnoDB.
                conn.pragma_update(None, "journal_mode", "WAL")?;
                conn.pragma_update(None, "foreign_keys", true)?;
                conn.busy_timeout(BUSY_TIMEOUT)?;
                Ok(conn)
            })
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let db = Arc::new(SqliteDb {
            interrupt: Arc::new(conn.get_interrupt_handle()),
            conn: Arc::new(tokio::sync::Mutex::new(conn)),
        });
        open.insert(name.to_string(), Arc::downgrade(&db));
        Ok(db)
    }
}

pub struct SqliteDb {
    conn: Arc<tokio::sync::Mutex<Connection>>,
    interrupt: Arc<InterruptHandle>,
}

impl SqliteDb {
    /// Runs `op` on the connection on a blocking thread. If the request gives up
    /// (deadline), the statement is interrupted rather than left running.
    async fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, DbError> {
        let mut conn = self.lock().await?;
        let guard = InterruptOnDrop(Some(self.interrupt.clone()));
        let result = tokio::task::spawn_blocking(move || op(&mut conn)).await;
        guard.disarm();
        result.unwrap_or_else(|e| Err(DbError::Unavailable(format!("SQLite worker failed: {e}"))))
    }
}

impl SqliteDb {
    /// The connection, once no other transaction holds it; like SQLITE_BUSY, waiting
    /// is bounded (a request that opened a transaction and then calls the top-level
    /// functions would otherwise wait for itself).
    async fn lock(&self) -> Result<OwnedMutexGuard<Connection>, DbError> {
        tokio::time::timeout(BUSY_TIMEOUT, self.conn.clone().lock_owned())
            .await
            .map_err(|_| {
                DbError::Timeout(format!(
                    "the database stayed locked by a transaction for {BUSY_TIMEOUT:?}"
                ))
            })
    }
}

struct InterruptOnDrop(Option<Arc<InterruptHandle>>);

impl InterruptOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.interrupt();
        }
    }
}

#[async_trait]
impl Database for SqliteDb {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn query(
        &self,
        _session: &mut Session,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Rows, DbError> {
        check(sql, Call::Query, Dialect::Sqlite)?;
        let sql = sql.to_string();
        self.run(move |conn| read(conn, &sql, &params)).await
    }

    async fn execute(
        &self,
        _session: &mut Session,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<ExecResult, DbError> {
        check(sql, Call::Execute, Dialect::Sqlite)?;
        let sql = sql.to_string();
        self.run(move |conn| write(conn, &sql, &params)).await
    }

    async fn begin(&self, _session: &mut Session) -> Result<Box<dyn Transaction>, DbError> {
        let conn = self.lock().await?;
        let mut tx = TxConn { conn, open: false };
        let tx = tokio::task::spawn_blocking(move || {
            tx.conn.execute_batch("BEGIN").map_err(error)?;
            tx.open = true;
            Ok::<_, DbError>(tx)
        })
        .await
        .map_err(|e| DbError::Unavailable(format!("SQLite worker failed: {e}")))??;
        Ok(Box::new(SqliteTransaction { tx: Some(tx) }))
    }
}

/// The connection of an open transaction. However it is dropped (commit, rollback,
/// guest gone, request cancelled mid-statement), the transaction does not outlive it.
struct TxConn {
    conn: OwnedMutexGuard<Connection>,
    open: bool,
}

impl Drop for TxConn {
    fn drop(&mut self) {
        if self.open {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

struct SqliteTransaction {
    tx: Option<TxConn>,
}

impl SqliteTransaction {
    async fn run<T: Send + 'static>(
        &mut self,
        op: impl FnOnce(&mut TxConn) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, DbError> {
        let mut tx = self
            .tx
            .take()
            .ok_or_else(|| DbError::Unavailable("the transaction has ended".into()))?;
        let (tx, result) = tokio::task::spawn_blocking(move || {
            let result = op(&mut tx);
            (tx, result)
        })
        .await
        .map_err(|e| DbError::Unavailable(format!("SQLite worker failed: {e}")))?;
        if tx.open {
            self.tx = Some(tx);
        }
        result
    }
}

#[async_trait]
impl Transaction for SqliteTransaction {
    async fn query(&mut self, sql: &str, params: Vec<Value>) -> Result<Rows, DbError> {
        check(sql, Call::Query, Dialect::Sqlite)?;
        let sql = sql.to_string();
        self.run(move |tx| read(&tx.conn, &sql, &params)).await
    }

    async fn execute(&mut self, sql: &str, params: Vec<Value>) -> Result<ExecResult, DbError> {
        check(sql, Call::Execute, Dialect::Sqlite)?;
        let sql = sql.to_string();
        self.run(move |tx| write(&tx.conn, &sql, &params)).await
    }

    async fn commit(mut self: Box<Self>) -> Result<(), DbError> {
        self.run(|tx| {
            tx.conn.execute_batch("COMMIT").map_err(error)?;
            tx.open = false;
            Ok(())
        })
        .await
    }

    async fn rollback(mut self: Box<Self>) -> Result<(), DbError> {
        self.run(|tx| {
            tx.open = false;
            tx.conn.execute_batch("ROLLBACK").map_err(error)
        })
        .await
    }
}

fn read(conn: &Connection, sql: &str, params: &[Value]) -> Result<Rows, DbError> {
    let mut stmt = conn.prepare_cached(sql).map_err(error)?;
    // SQLite knows for sure whether a statement writes; the keyword check already ran.
    if !stmt.readonly() {
        return Err(DbError::BadStatement(
            "query runs reads only; send writes through execute".into(),
        ));
    }
    let columns: Vec<String> = stmt.column_names().map(String::from).collect();
    let mut rows = stmt
        .query(rusqlite::params_from_iter(params))
        .map_err(error)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(error)? {
        let values = (0..columns.len())
            .map(|i| row.get_ref(i).map(from_sqlite).map_err(error))
            .collect::<Result<_, _>>()?;
        out.push(values);
    }
    Ok(Rows { columns, rows: out })
}

fn write(conn: &Connection, sql: &str, params: &[Value]) -> Result<ExecResult, DbError> {
    let mut stmt = conn.prepare_cached(sql).map_err(error)?;
    let before = conn.last_insert_rowid();
    let params = rusqlite::params_from_iter(params);
    let rows_affected = if stmt.column_count() > 0 {
        // A statement that returns rows (a read, or `RETURNING`): run it to the end.
        let mut rows = stmt.query(params).map_err(error)?;
        while rows.next().map_err(error)?.is_some() {}
        conn.changes()
    } else {
        stmt.execute(params).map_err(error)? as u64
    };
    let after = conn.last_insert_rowid();
    Ok(ExecResult {
        rows_affected,
        last_insert_id: (after != before).then_some(after as u64),
    })
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Uint(u) => {
                let i = i64::try_from(*u).map_err(|e| {
                    rusqlite::Error::ToSqlConversionFailure(
                        format!("{u} does not fit SQLite's 64-bit signed integers: {e}").into(),
                    )
                })?;
                ToSqlOutput::Borrowed(ValueRef::Integer(i))
            }
            Value::Float(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
            Value::Binary(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            // SQLite has no date, decimal or JSON types: they are stored as text.
            Value::Decimal(s)
            | Value::Text(s)
            | Value::Date(s)
            | Value::Time(s)
            | Value::Datetime(s)
            | Value::Json(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

fn from_sqlite(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Float(f),
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(s) => Value::Text(s.to_string()),
            Err(_) => Value::Binary(t.to_vec()),
        },
        ValueRef::Blob(b) => Value::Binary(b.to_vec()),
    }
}

/// Sorts a SQLite error into the guest's error kinds.
fn error(e: rusqlite::Error) -> DbError {
    use rusqlite::ErrorCode as C;
    let message = e.to_string();
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            C::ConstraintViolation => DbError::ConstraintViolation(message),
            C::DatabaseBusy | C::DatabaseLocked | C::OperationInterrupted => {
                DbError::Timeout(message)
            }
            C::ReadOnly | C::PermissionDenied | C::AuthorizationForStatementDenied => {
                DbError::NotAllowed(message)
            }
            C::CannotOpen
            | C::SystemIoFailure
            | C::DatabaseCorrupt
            | C::DiskFull
            | C::NotADatabase
            | C::OutOfMemory => DbError::Unavailable(message),
            _ => DbError::BadStatement(message),
        },
        _ => DbError::BadStatement(message),
    }
}
