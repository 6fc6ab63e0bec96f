//! Embedded SQLite when no MySQL is configured: one file per app under the data
//! directory, the same calls and errors as MySQL.
//!
//! SQLite has one writer at a time, so each app has one connection behind an async
//! mutex, used from blocking threads. A transaction holds the connection until it
//! ends; the request's deadline bounds how long that can be.
//!
//! What a guest statement may do is decided by SQLite itself, not only by the keyword
//! check: an authorizer refuses attaching files, pragmas outside a short list,
//! transaction control (the host's own BEGIN/COMMIT/ROLLBACK aside) and temporary
//! objects; no database can be attached (which also rules out `VACUUM`, that works
//! through an attached file); the connection is in defensive mode and does not trust
//! functions named by its schema. Every call owns the connection together with its
//! own cancel flag and the request's deadline, which a progress handler checks, so a
//! statement stops when its caller gives up or its time is up, inside a transaction
//! too, and never on behalf of another call.

use super::statement::{Call, check};
use super::{
    Database, DbError, Dialect, ExecResult, ResultLimits, Rows, Session, Transaction, Value,
};
use async_trait::async_trait;
use rusqlite::config::DbConfig;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::OwnedMutexGuard;

/// How long a statement waits for a lock held by another connection (another wharf
/// process, or the sqlite3 shell) before it fails with `timeout`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// SQLite VM steps between two checks of the running call's cancel flag and deadline:
/// a few microseconds of work, so a statement stops promptly, and a check costs
/// nothing measurable.
const PROGRESS_CHECK_STEPS: i32 = 1_000;

/// The pragmas a guest may run: read-only looks at its own schema. Everything else
/// (journal mode, foreign keys, writable_schema, database_list...) is the host's.
const GUEST_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
];

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

    /// Makes the directory if it is not there: what it takes to serve.
    pub fn check(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| anyhow::anyhow!("data directory {}: {e}", self.dir.display()))
    }

    /// App `name`'s database, created on first use.
    pub fn open(&self, name: &str) -> anyhow::Result<Arc<dyn Database>> {
        let mut open = self.open.lock().unwrap();
        if let Some(db) = open.get(name).and_then(Weak::upgrade) {
            return Ok(db);
        }
        self.check()?;
        let db = Arc::new(SqliteDb::open(&self.dir.join(format!("{name}.db")))?);
        open.insert(name.to_string(), Arc::downgrade(&db));
        Ok(db)
    }
}

pub struct SqliteDb {
    conn: Arc<tokio::sync::Mutex<SqliteConn>>,
}

impl SqliteDb {
    fn open(path: &Path) -> anyhow::Result<Self> {
        let conn =
            SqliteConn::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(Self {
            conn: Arc::new(tokio::sync::Mutex::new(conn)),
        })
    }

    /// The connection, once no other transaction holds it; like SQLITE_BUSY, waiting
    /// is bounded (a request that opened a transaction and then calls the top-level
    /// functions would otherwise wait for itself), and never past the deadline.
    async fn lock(&self, deadline: Instant) -> Result<OwnedMutexGuard<SqliteConn>, DbError> {
        let until = deadline.min(Instant::now() + BUSY_TIMEOUT);
        tokio::time::timeout_at(until.into(), self.conn.clone().lock_owned())
            .await
            .map_err(|_| {
                DbError::Timeout(format!(
                    "the database stayed locked by a transaction (waited up to {BUSY_TIMEOUT:?} \
                     or the request's deadline)"
                ))
            })
    }

    /// Runs `op` as one call of `session` on a blocking thread (see [`SqliteConn::begin_call`]).
    async fn run<T: Send + 'static>(
        &self,
        session: &Session,
        op: impl FnOnce(&SqliteConn) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, DbError> {
        let mut conn = self.lock(session.deadline).await?;
        let bounds = CallBounds::new(session);
        let _cancel = bounds.cancel_on_drop();
        blocking(move || conn.begin_call(bounds).and_then(|_call| op(&conn))).await?
    }

    /// A read, without the keyword check: what SQLite itself lets a guest do.
    async fn read(
        &self,
        session: &Session,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Rows, DbError> {
        let sql = sql.to_string();
        self.run(session, move |conn| conn.read(&sql, &params))
            .await
    }

    /// A write, without the keyword check: what SQLite itself lets a guest do.
    async fn write(
        &self,
        session: &Session,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<ExecResult, DbError> {
        let sql = sql.to_string();
        self.run(session, move |conn| conn.write(&sql, &params))
            .await
    }
}

#[async_trait]
impl Database for SqliteDb {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn query(
        &self,
        session: &mut Session,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Rows, DbError> {
        check(sql, Call::Query, Dialect::Sqlite)?;
        self.read(session, sql, params).await
    }

    async fn execute(
        &self,
        session: &mut Session,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<ExecResult, DbError> {
        check(sql, Call::Execute, Dialect::Sqlite)?;
        self.write(session, sql, params).await
    }

    async fn begin(&self, session: &mut Session) -> Result<Box<dyn Transaction>, DbError> {
        let conn = self.lock(session.deadline).await?;
        let mut tx = SqliteTransaction {
            tx: Some(TxConn { conn, open: false }),
            deadline: session.deadline,
            limits: session.limits,
        };
        tx.run(|tx| {
            tx.conn.host_exec("BEGIN")?;
            tx.open = true;
            Ok(())
        })
        .await?;
        Ok(Box::new(tx))
    }
}

/// Runs `op` on a blocking thread.
async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> T + Send + 'static,
) -> Result<T, DbError> {
    tokio::task::spawn_blocking(op)
        .await
        .map_err(|e| DbError::Unavailable(format!("SQLite worker failed: {e}")))
}

/// What the connection's hooks read; the host sets it around each call.
#[derive(Default)]
struct Hooks {
    /// Set while the host runs its own transaction control statements.
    host: AtomicBool,
    /// The call that owns the connection now, if any.
    call: Mutex<Option<CallBounds>>,
    /// What the statement prepared last does to rows itself (not through triggers).
    effect: Mutex<Effect>,
}

impl Hooks {
    /// The authorizer: runs while a statement is prepared, once per action in it.
    fn authorize(&self, ctx: AuthContext<'_>) -> Authorization {
        use AuthAction as A;
        let top_level = ctx.accessor.is_none();
        // Temporary objects (`CREATE TEMP ...`, `CREATE TABLE temp.x`) live in the
        // connection, not the app's file: they would outlive the request.
        let in_temp = ctx
            .database_name
            .is_some_and(|db| db.eq_ignore_ascii_case("temp"));
        let allowed = match ctx.action {
            _ if in_temp => false,
            A::Transaction { .. } | A::Savepoint { .. } => self.host.load(Ordering::Relaxed),
            A::Attach { .. } | A::Detach { .. } => false,
            A::Pragma { pragma_name, .. } => GUEST_PRAGMAS
                .iter()
                .any(|p| p.eq_ignore_ascii_case(pragma_name)),
            A::Function { function_name } => !function_name.eq_ignore_ascii_case("load_extension"),
            A::Insert { table_name } if top_level && !is_schema_table(table_name) => {
                self.note(Effect::Inserts);
                true
            }
            A::Update { table_name, .. } | A::Delete { table_name }
                if top_level && !is_schema_table(table_name) =>
            {
                self.note(Effect::Changes);
                true
            }
            _ => true,
        };
        if allowed {
            Authorization::Allow
        } else {
            Authorization::Deny
        }
    }

    fn note(&self, effect: Effect) {
        let mut noted = self.effect.lock().unwrap();
        *noted = (*noted).max(effect);
    }

    /// The progress handler: true stops the running statement.
    fn should_stop(&self) -> bool {
        match &*self.call.lock().unwrap() {
            Some(call) => call.cancel.load(Ordering::Relaxed) || Instant::now() >= call.deadline,
            None => false,
        }
    }
}

/// DDL writes the schema table; that is its bookkeeping, not rows it changed.
fn is_schema_table(table: &str) -> bool {
    [
        "sqlite_master",
        "sqlite_schema",
        "sqlite_temp_master",
        "sqlite_temp_schema",
    ]
    .iter()
    .any(|t| t.eq_ignore_ascii_case(table))
}

/// What a statement does to rows of the app's tables, as its authorizer calls show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
enum Effect {
    /// Changes no rows itself (DDL, a read).
    #[default]
    None,
    /// Updates or deletes rows.
    Changes,
    /// Inserts rows (and may update some, as an upsert).
    Inserts,
}

/// What bounds one call: its own cancel flag, and the deadline of its request.
#[derive(Clone)]
struct CallBounds {
    cancel: Arc<AtomicBool>,
    deadline: Instant,
    limits: ResultLimits,
}

impl CallBounds {
    fn new(session: &Session) -> Self {
        Self::until(session.deadline, session.limits)
    }

    fn until(deadline: Instant, limits: ResultLimits) -> Self {
        Self {
            cancel: Default::default(),
            deadline,
            limits,
        }
    }

    /// Cancels the call when dropped: once the caller stops waiting (its request was
    /// cancelled or timed out), the statement stops too. The flag is this call's own,
    /// so setting it after the call ended reaches nothing.
    fn cancel_on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(self.cancel.clone())
    }
}

struct CancelOnDrop(Arc<AtomicBool>);

/// While it lives, the connection belongs to one call (see [`SqliteConn::begin_call`]);
/// dropped, even by a panic, the connection runs under no call's bounds.
struct CallScope(Arc<Hooks>);

impl Drop for CallScope {
    fn drop(&mut self) {
        *self.0.call.lock().unwrap() = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// An app's connection, with the hooks SQLite calls into.
struct SqliteConn {
    conn: Connection,
    hooks: Arc<Hooks>,
    /// The limits of the call running now.
    limits: ResultLimits,
}

impl SqliteConn {
    fn open(path: &Path) -> rusqlite::Result<Self> {
        let mut conn = Connection::open(path)?;
        // WAL lets readers in other processes work during a write; foreign keys
        // are off by default in SQLite, on in MySQL's InnoDB.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // No guest statement may edit the schema table or other internals directly,
        // and functions named in a schema (triggers, views, defaults) must be harmless.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
        conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)?;
        // Installed last: the setup pragmas above are the host's, not a guest's.
        let hooks = Arc::new(Hooks::default());
        let h = hooks.clone();
        conn.authorizer(Some(move |ctx: AuthContext<'_>| h.authorize(ctx)))?;
        let h = hooks.clone();
        conn.progress_handler(PROGRESS_CHECK_STEPS, Some(move || h.should_stop()))?;
        Ok(Self {
            conn,
            hooks,
            limits: ResultLimits::for_memory(usize::MAX),
        })
    }

    /// Makes the connection the call bounded by `bounds` until the returned scope
    /// ends: the progress handler stops its statements once its cancel flag is set or
    /// its deadline has passed, and its results may not pass its limits.
    fn begin_call(&mut self, bounds: CallBounds) -> Result<CallScope, DbError> {
        // No single string or blob, read or written, may be larger than a result may
        // be: SQLite refuses it before allocating it.
        let length = i32::try_from(bounds.limits.max_bytes).unwrap_or(i32::MAX);
        self.conn
            .set_limit(Limit::SQLITE_LIMIT_LENGTH, length)
            .map_err(error)?;
        self.limits = bounds.limits;
        *self.hooks.call.lock().unwrap() = Some(bounds);
        Ok(CallScope(self.hooks.clone()))
    }

    /// Runs one of the host's own transaction control statements, which the
    /// authorizer refuses to guests.
    fn host_exec(&self, sql: &str) -> Result<(), DbError> {
        self.hooks.host.store(true, Ordering::Relaxed);
        let result = self.conn.execute_batch(sql);
        self.hooks.host.store(false, Ordering::Relaxed);
        result.map_err(|e| self.error(e))
    }

    fn read(&self, sql: &str, params: &[Value]) -> Result<Rows, DbError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.error(e))?;
        // SQLite knows for sure whether a statement writes; the keyword check already ran.
        if !stmt.readonly() {
            return Err(DbError::BadStatement(
                "query runs reads only; send writes through execute".into(),
            ));
        }
        let columns: Vec<String> = stmt.column_names().map(String::from).collect();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params))
            .map_err(|e| self.error(e))?;
        let limits = self.limits;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while let Some(row) = rows.next().map_err(|e| self.error(e))? {
            if out.len() == limits.max_rows {
                return Err(limits.exceeded("too many rows"));
            }
            let mut values = Vec::with_capacity(columns.len());
            for i in 0..columns.len() {
                let value = row.get_ref(i).map_err(|e| self.error(e))?;
                // Counted before the value is copied out of SQLite.
                bytes = bytes.saturating_add(size(value));
                if bytes > limits.max_bytes {
                    return Err(limits.exceeded("too many bytes"));
                }
                values.push(from_sqlite(value));
            }
            out.push(values);
        }
        Ok(Rows { columns, rows: out })
    }

    fn write(&self, sql: &str, params: &[Value]) -> Result<ExecResult, DbError> {
        // Prepared afresh, not from the cache, so the authorizer sees this statement
        // and says what it does; next to a write's commit, preparing costs nothing.
        *self.hooks.effect.lock().unwrap() = Effect::None;
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.error(e))?;
        let effect = *self.hooks.effect.lock().unwrap();
        let params = rusqlite::params_from_iter(params);
        // The last row id stays as it was when a statement inserts no row (an upsert
        // that updated, an ignored insert, a table without row ids); cleared here, a
        // non-zero id afterwards is one this statement inserted, never an earlier
        // statement's row on this connection.
        // SAFETY: the handle is this open connection's, used on the thread that holds
        // it, and setting the last row id touches nothing else.
        unsafe { rusqlite::ffi::sqlite3_set_last_insert_rowid(self.conn.handle(), 0) };
        if stmt.column_count() > 0 {
            // A statement that returns rows (a read, or `RETURNING`): run it to the end.
            let mut rows = stmt.query(params).map_err(|e| self.error(e))?;
            while rows.next().map_err(|e| self.error(e))?.is_some() {}
        } else {
            stmt.execute(params).map_err(|e| self.error(e))?;
        }
        // `changes()` keeps its value through statements that do not set it (DDL): only
        // the statement's own effect says whether it is its. DDL can insert rows of its
        // own (a virtual table's shadow tables), so the row id also needs an insert.
        let rows_affected = match effect {
            Effect::None => 0,
            Effect::Changes | Effect::Inserts => self.conn.changes(),
        };
        // 0 is no row, as MySQL reports it.
        let id = self.conn.last_insert_rowid();
        let inserted = effect == Effect::Inserts && rows_affected > 0 && id != 0;
        Ok(ExecResult {
            rows_affected,
            last_insert_id: inserted.then_some(id as u64),
        })
    }

    /// Sorts a SQLite error into the guest's error kinds; a value over the length
    /// limit is the call's result limit.
    fn error(&self, e: rusqlite::Error) -> DbError {
        match e.sqlite_error_code() {
            Some(ErrorCode::TooBig) => self.limits.exceeded("a single value is too large"),
            _ => error(e),
        }
    }
}

/// Bytes a value takes once handed to the guest.
fn size(value: ValueRef<'_>) -> usize {
    match value {
        ValueRef::Null => 0,
        ValueRef::Integer(_) | ValueRef::Real(_) => 8,
        ValueRef::Text(b) | ValueRef::Blob(b) => b.len(),
    }
}

/// The connection of an open transaction. However it is dropped (commit, rollback,
/// guest gone, request cancelled mid-statement), the transaction does not outlive it.
struct TxConn {
    conn: OwnedMutexGuard<SqliteConn>,
    open: bool,
}

impl Drop for TxConn {
    fn drop(&mut self) {
        if self.open {
            let _ = self.conn.host_exec("ROLLBACK");
        }
    }
}

/// A transaction: its connection, and the bounds of the request that began it, which
/// each of its calls runs under.
struct SqliteTransaction {
    tx: Option<TxConn>,
    deadline: Instant,
    limits: ResultLimits,
}

impl SqliteTransaction {
    /// Runs `op` as one call on the transaction's connection, on a blocking thread.
    async fn run<T: Send + 'static>(
        &mut self,
        op: impl FnOnce(&mut TxConn) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, DbError> {
        let mut tx = self
            .tx
            .take()
            .ok_or_else(|| DbError::Unavailable("the transaction has ended".into()))?;
        let bounds = CallBounds::until(self.deadline, self.limits);
        let _cancel = bounds.cancel_on_drop();
        // Cancelled mid-call, the transaction ends on the blocking thread: `tx` is
        // dropped there once the stopped statement returns, and rolls back.
        let (tx, result) = blocking(move || {
            let result = tx.conn.begin_call(bounds).and_then(|_call| op(&mut tx));
            (tx, result)
        })
        .await?;
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
        self.run(move |tx| tx.conn.read(&sql, &params)).await
    }

    async fn execute(&mut self, sql: &str, params: Vec<Value>) -> Result<ExecResult, DbError> {
        check(sql, Call::Execute, Dialect::Sqlite)?;
        let sql = sql.to_string();
        self.run(move |tx| tx.conn.write(&sql, &params)).await
    }

    async fn commit(mut self: Box<Self>) -> Result<(), DbError> {
        self.run(|tx| {
            tx.conn.host_exec("COMMIT")?;
            tx.open = false;
            Ok(())
        })
        .await
    }

    async fn rollback(mut self: Box<Self>) -> Result<(), DbError> {
        self.run(|tx| {
            tx.open = false;
            tx.conn.host_exec("ROLLBACK")
        })
        .await
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ResultLimits = ResultLimits {
        max_rows: 100,
        max_bytes: 1 << 20,
    };

    fn session() -> Session {
        Session::new(Instant::now() + Duration::from_secs(30), LIMITS)
    }

    fn open() -> (SqliteDb, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        (SqliteDb::open(&dir.path().join("app.db")).unwrap(), dir)
    }

    const RUNAWAY: &str =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";

    #[tokio::test]
    async fn the_engine_itself_refuses_what_reaches_outside_the_apps_database() {
        let (db, dir) = open();
        let other = dir.path().join("other.db");
        let copy = dir.path().join("copy.db");
        let s = session();
        for sql in [
            format!("ATTACH DATABASE '{}' AS o", other.display()),
            "DETACH DATABASE main".into(),
            format!("VACUUM INTO '{}'", copy.display()),
            "VACUUM".into(),
            "PRAGMA database_list".into(),
            "PRAGMA foreign_keys = OFF".into(),
            "PRAGMA writable_schema = ON".into(),
            "BEGIN".into(),
            "COMMIT".into(),
            "SAVEPOINT s".into(),
            "CREATE TEMP TABLE t (x)".into(),
            "CREATE TEMPORARY VIEW v AS SELECT 1".into(),
            "CREATE TABLE temp.t (x)".into(),
            "SELECT load_extension('/tmp/x.so')".into(),
        ] {
            let got = db.write(&s, &sql, vec![]).await;
            assert!(got.is_err(), "{sql} was run: {got:?}");
            let got = db.read(&s, &sql, vec![]).await;
            assert!(got.is_err(), "{sql} was run as a read: {got:?}");
        }
        assert!(!other.exists() && !copy.exists());
        // The schema pragmas a guest may use, and the host's own transactions, work.
        db.write(&s, "CREATE TABLE t (x)", vec![]).await.unwrap();
        let info = db.read(&s, "PRAGMA table_info(t)", vec![]).await.unwrap();
        assert_eq!(info.rows.len(), 1);
        let mut tx = db.begin(&mut session()).await.unwrap();
        tx.execute("INSERT INTO t VALUES (1)", vec![])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let rows = db.read(&s, "SELECT x FROM t", vec![]).await.unwrap();
        assert_eq!(rows.rows, vec![vec![Value::Int(1)]]);
    }

    #[tokio::test]
    async fn a_write_reports_its_own_row_id_and_row_count() {
        let (db, _dir) = open();
        let s = session();
        let run = |sql: &'static str| db.write(&s, sql, vec![]);
        run("CREATE TABLE a (id INTEGER PRIMARY KEY, v)")
            .await
            .unwrap();
        run("CREATE TABLE b (id INTEGER PRIMARY KEY, v)")
            .await
            .unwrap();
        let a = run("INSERT INTO a (v) VALUES (1)").await.unwrap();
        assert_eq!((a.rows_affected, a.last_insert_id), (1, Some(1)));
        let b = run("INSERT INTO b (v) VALUES (1)").await.unwrap();
        assert_eq!((b.rows_affected, b.last_insert_id), (1, Some(1)));
        let ddl = run("CREATE TABLE c (id INTEGER PRIMARY KEY)")
            .await
            .unwrap();
        assert_eq!((ddl.rows_affected, ddl.last_insert_id), (0, None));
        let update = run("UPDATE a SET v = 2").await.unwrap();
        assert_eq!((update.rows_affected, update.last_insert_id), (1, None));
        let ignored = run("INSERT OR IGNORE INTO b (id) VALUES (1)")
            .await
            .unwrap();
        assert_eq!((ignored.rows_affected, ignored.last_insert_id), (0, None));
        // A trigger's inserts are not the statement's.
        run("CREATE TRIGGER log AFTER UPDATE ON a BEGIN INSERT INTO b (v) VALUES (9); END")
            .await
            .unwrap();
        let update = run("UPDATE a SET v = 3").await.unwrap();
        assert_eq!((update.rows_affected, update.last_insert_id), (1, None));
        let returning = run("INSERT INTO c DEFAULT VALUES RETURNING id")
            .await
            .unwrap();
        assert_eq!(
            (returning.rows_affected, returning.last_insert_id),
            (1, Some(1))
        );
        let delete = run("DELETE FROM b").await.unwrap();
        assert_eq!((delete.rows_affected, delete.last_insert_id), (2, None));
        // Statements that insert no row report no id, not the connection's last one.
        run("CREATE TABLE u (id INTEGER PRIMARY KEY, k UNIQUE, v)")
            .await
            .unwrap();
        let first = run("INSERT INTO u (k, v) VALUES ('a', 1)").await.unwrap();
        assert_eq!((first.rows_affected, first.last_insert_id), (1, Some(1)));
        let second = run("INSERT INTO u (k, v) VALUES ('b', 1)").await.unwrap();
        assert_eq!((second.rows_affected, second.last_insert_id), (1, Some(2)));
        let upsert = run(
            "INSERT INTO u (k, v) VALUES ('a', 2) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
        )
        .await
        .unwrap();
        assert_eq!((upsert.rows_affected, upsert.last_insert_id), (1, None));
        let nothing = run("INSERT INTO u (k, v) VALUES ('a', 3) ON CONFLICT DO NOTHING")
            .await
            .unwrap();
        assert_eq!((nothing.rows_affected, nothing.last_insert_id), (0, None));
        let ignored = run("INSERT OR IGNORE INTO u (k, v) VALUES ('b', 3)")
            .await
            .unwrap();
        assert_eq!((ignored.rows_affected, ignored.last_insert_id), (0, None));
        let none_selected = run("INSERT INTO u (k, v) SELECT k, v FROM u WHERE 0")
            .await
            .unwrap();
        assert_eq!(
            (none_selected.rows_affected, none_selected.last_insert_id),
            (0, None)
        );
        // A table without row ids gives none to report.
        run("CREATE TABLE w (k PRIMARY KEY) WITHOUT ROWID")
            .await
            .unwrap();
        let keyed = run("INSERT INTO w (k) VALUES ('a')").await.unwrap();
        assert_eq!((keyed.rows_affected, keyed.last_insert_id), (1, None));
    }

    #[tokio::test]
    async fn a_result_fails_at_its_row_or_byte_limit_before_it_is_read_whole() {
        let (db, _dir) = open();
        let s = session();
        let rows = |n| {
            format!(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT {n}) SELECT x FROM c"
            )
        };
        assert_eq!(
            db.read(&s, &rows(100), vec![]).await.unwrap().rows.len(),
            100
        );
        let err = db.read(&s, &rows(101), vec![]).await.unwrap_err();
        assert!(err.to_string().contains("max_result_rows = 100"), "{err}");
        for sql in [
            "SELECT zeroblob(600000), zeroblob(600000)",
            "SELECT zeroblob(400000000)",
        ] {
            let err = db.read(&s, sql, vec![]).await.unwrap_err();
            assert!(
                err.to_string().contains("max_result_mb = 1"),
                "{sql}: {err}"
            );
        }
        // No single value larger than a result may be is written either.
        db.write(&s, "CREATE TABLE t (b)", vec![]).await.unwrap();
        let big = Value::Binary(vec![0; 2 << 20]);
        let err = db
            .write(&s, "INSERT INTO t VALUES (?)", vec![big])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("max_result_mb"), "{err}");
    }

    #[tokio::test]
    async fn a_runaway_statement_in_a_transaction_stops_at_the_deadline() {
        let (db, _dir) = open();
        let mut s = session();
        s.deadline = Instant::now() + Duration::from_millis(200);
        let mut tx = db.begin(&mut s).await.unwrap();
        let started = Instant::now();
        let err = tx.query(RUNAWAY, vec![]).await.unwrap_err();
        assert!(matches!(err, DbError::Timeout(_)), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        drop(tx);
        let rows = db.read(&session(), "SELECT 1", vec![]).await.unwrap();
        assert_eq!(rows.rows, vec![vec![Value::Int(1)]]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_call_leaves_no_transaction_open_and_no_interrupt_for_the_next_call() {
        let (db, _dir) = open();
        db.write(&session(), "CREATE TABLE t (x)", vec![])
            .await
            .unwrap();
        let mut tx = db.begin(&mut session()).await.unwrap();
        tx.execute("INSERT INTO t VALUES (1)", vec![])
            .await
            .unwrap();
        // The request gives up mid-statement: its future is dropped.
        let cancelled =
            tokio::time::timeout(Duration::from_millis(100), tx.query(RUNAWAY, vec![])).await;
        assert!(cancelled.is_err());
        drop(tx);
        // The next call gets the connection promptly, outside any transaction, and is
        // not interrupted by the cancelled one.
        let started = Instant::now();
        let mut tx = db.begin(&mut session()).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 200000) \
                    SELECT count(*) FROM c";
        let rows = tx.query(slow, vec![]).await.unwrap();
        assert_eq!(rows.rows, vec![vec![Value::Int(200_000)]]);
        let rows = tx.query("SELECT count(*) FROM t", vec![]).await.unwrap();
        assert_eq!(
            rows.rows,
            vec![vec![Value::Int(0)]],
            "the cancelled insert stayed"
        );
        tx.rollback().await.unwrap();
    }
}
