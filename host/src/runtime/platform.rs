//! Host side of the `wharf:platform` WIT package (`sdk/wit/`): what wharf offers apps
//! beyond `wasi:http`.

use super::state::HostState;
use crate::db::{self, DbError};
use wasmtime::component::{HasSelf, Linker, Resource};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "wharf:platform/imports",
        imports: { default: async | trappable },
        with: {
            "wharf:platform/sql.transaction": super::SqlTransaction,
        },
    });
}

use bindings::wharf::platform::{config, sql};

/// A guest's open transaction, kept in its resource table.
pub struct SqlTransaction(Box<dyn db::Transaction>);

pub fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    config::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)?;
    sql::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)?;
    Ok(())
}

impl config::Host for HostState {
    async fn get(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self
            .variables()
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone()))
    }

    async fn get_all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.variables().to_vec())
    }
}

type SqlResult<T> = wasmtime::Result<Result<T, sql::Error>>;

impl sql::Host for HostState {
    async fn query(&mut self, statement: String, params: Vec<sql::Value>) -> SqlResult<sql::Rows> {
        let Some((db, session)) = self.database() else {
            return Ok(Err(not_granted()));
        };
        let params = params.into_iter().map(Into::into).collect();
        Ok(db
            .query(session, &statement, params)
            .await
            .map(Into::into)
            .map_err(Into::into))
    }

    async fn execute(
        &mut self,
        statement: String,
        params: Vec<sql::Value>,
    ) -> SqlResult<sql::ExecResult> {
        let Some((db, session)) = self.database() else {
            return Ok(Err(not_granted()));
        };
        let params = params.into_iter().map(Into::into).collect();
        Ok(db
            .execute(session, &statement, params)
            .await
            .map(Into::into)
            .map_err(Into::into))
    }

    async fn begin(&mut self) -> SqlResult<Resource<SqlTransaction>> {
        let Some((db, session)) = self.database() else {
            return Ok(Err(not_granted()));
        };
        match db.begin(session).await {
            Ok(tx) => Ok(Ok(self.table().push(SqlTransaction(tx))?)),
            Err(e) => Ok(Err(e.into())),
        }
    }

    async fn get_dialect(&mut self) -> wasmtime::Result<sql::Dialect> {
        Ok(match self.database() {
            Some((db, _)) if db.dialect() == db::Dialect::Mysql => sql::Dialect::Mysql,
            _ => sql::Dialect::Sqlite,
        })
    }
}

impl sql::HostTransaction for HostState {
    async fn query(
        &mut self,
        tx: Resource<SqlTransaction>,
        statement: String,
        params: Vec<sql::Value>,
    ) -> SqlResult<sql::Rows> {
        let params = params.into_iter().map(Into::into).collect();
        let tx = self.table().get_mut(&tx)?;
        Ok(tx
            .0
            .query(&statement, params)
            .await
            .map(Into::into)
            .map_err(Into::into))
    }

    async fn execute(
        &mut self,
        tx: Resource<SqlTransaction>,
        statement: String,
        params: Vec<sql::Value>,
    ) -> SqlResult<sql::ExecResult> {
        let params = params.into_iter().map(Into::into).collect();
        let tx = self.table().get_mut(&tx)?;
        Ok(tx
            .0
            .execute(&statement, params)
            .await
            .map(Into::into)
            .map_err(Into::into))
    }

    async fn commit(&mut self, tx: Resource<SqlTransaction>) -> SqlResult<()> {
        let tx = self.table().delete(tx)?;
        Ok(tx.0.commit().await.map_err(Into::into))
    }

    async fn rollback(&mut self, tx: Resource<SqlTransaction>) -> SqlResult<()> {
        let tx = self.table().delete(tx)?;
        Ok(tx.0.rollback().await.map_err(Into::into))
    }

    /// Dropped without commit: the transaction's own drop rolls it back.
    async fn drop(&mut self, tx: Resource<SqlTransaction>) -> wasmtime::Result<()> {
        self.table().delete(tx)?;
        Ok(())
    }
}

fn not_granted() -> sql::Error {
    sql::Error::NotAllowed("this app has no database: add `database = true` to its manifest".into())
}

impl From<sql::Value> for db::Value {
    fn from(v: sql::Value) -> Self {
        use sql::Value as W;
        match v {
            W::Null => Self::Null,
            W::Int(i) => Self::Int(i),
            W::Uint(u) => Self::Uint(u),
            W::Float(f) => Self::Float(f),
            W::Decimal(s) => Self::Decimal(s),
            W::Text(s) => Self::Text(s),
            W::Binary(b) => Self::Binary(b),
            W::Date(s) => Self::Date(s),
            W::Time(s) => Self::Time(s),
            W::Datetime(s) => Self::Datetime(s),
            W::Json(s) => Self::Json(s),
        }
    }
}

impl From<db::Value> for sql::Value {
    fn from(v: db::Value) -> Self {
        use db::Value as V;
        match v {
            V::Null => Self::Null,
            V::Int(i) => Self::Int(i),
            V::Uint(u) => Self::Uint(u),
            V::Float(f) => Self::Float(f),
            V::Decimal(s) => Self::Decimal(s),
            V::Text(s) => Self::Text(s),
            V::Binary(b) => Self::Binary(b),
            V::Date(s) => Self::Date(s),
            V::Time(s) => Self::Time(s),
            V::Datetime(s) => Self::Datetime(s),
            V::Json(s) => Self::Json(s),
        }
    }
}

impl From<db::Rows> for sql::Rows {
    fn from(r: db::Rows) -> Self {
        Self {
            columns: r.columns,
            rows: r
                .rows
                .into_iter()
                .map(|row| row.into_iter().map(Into::into).collect())
                .collect(),
        }
    }
}

impl From<db::ExecResult> for sql::ExecResult {
    fn from(r: db::ExecResult) -> Self {
        Self {
            rows_affected: r.rows_affected,
            last_insert_id: r.last_insert_id,
        }
    }
}

impl From<DbError> for sql::Error {
    fn from(e: DbError) -> Self {
        match e {
            DbError::BadStatement(m) => Self::BadStatement(m),
            DbError::ConstraintViolation(m) => Self::ConstraintViolation(m),
            DbError::Unavailable(m) => Self::Unavailable(m),
            DbError::Timeout(m) => Self::Timeout(m),
            DbError::NotAllowed(m) => Self::NotAllowed(m),
        }
    }
}
