//! `Handle`: what a use-case's statements run on, a transaction or (optimistic) one pooled
//! PostgreSQL connection held for the use-case, behind sea-orm's `ConnectionTrait`, so
//! the store's statements run on either.

use std::sync::Arc;

use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::{AssertSqlSafe, Postgres};
use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, ExecResult, QueryResult, RuntimeErr,
    Statement,
};
use sea_query_sqlx::SqlxValues;

/// What a use-case's statements run on: its transaction, or (optimistic) one pooled
/// PostgreSQL connection held for the use-case, each statement on its own (autocommit):
/// one checkout for all of them (sqlx tests a connection at each checkout, a round trip).
pub(super) enum Handle {
    Txn(DatabaseTransaction),
    Conn(tokio::sync::Mutex<PoolConnection<Postgres>>),
}

/// A sea-orm statement as sqlx runs it (what sea-orm's own PostgreSQL driver does).
fn sqlx_query(stmt: &Statement) -> sea_orm::sqlx::query::Query<'_, Postgres, SqlxValues> {
    let values = stmt.values.clone().unwrap_or(sea_orm::Values(Vec::new()));
    sea_orm::sqlx::query_with(AssertSqlSafe(stmt.sql.as_str()), SqlxValues(values))
}

fn query_err(e: sea_orm::sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(Arc::new(e)))
}

fn exec_err(e: sea_orm::sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(Arc::new(e)))
}

// sea-orm declares the trait with async-trait (re-exported by sea-orm-migration).
#[sea_orm_migration::async_trait::async_trait]
impl ConnectionTrait for Handle {
    fn get_database_backend(&self) -> DbBackend {
        match self {
            Handle::Txn(t) => t.get_database_backend(),
            Handle::Conn(_) => DbBackend::Postgres,
        }
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        match self {
            Handle::Txn(t) => t.execute_raw(stmt).await,
            Handle::Conn(c) => {
                let mut c = c.lock().await;
                let done = sqlx_query(&stmt).execute(&mut **c).await;
                done.map(Into::into).map_err(exec_err)
            }
        }
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        match self {
            Handle::Txn(t) => t.execute_unprepared(sql).await,
            Handle::Conn(c) => {
                let mut c = c.lock().await;
                let done = sea_orm::sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(&mut **c)
                    .await;
                done.map(Into::into).map_err(exec_err)
            }
        }
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        match self {
            Handle::Txn(t) => t.query_one_raw(stmt).await,
            Handle::Conn(c) => {
                let mut c = c.lock().await;
                let row = sqlx_query(&stmt).fetch_optional(&mut **c).await;
                row.map(|r| r.map(Into::into)).map_err(query_err)
            }
        }
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        match self {
            Handle::Txn(t) => t.query_all_raw(stmt).await,
            Handle::Conn(c) => {
                let mut c = c.lock().await;
                let rows = sqlx_query(&stmt).fetch_all(&mut **c).await;
                rows.map(|r| r.into_iter().map(Into::into).collect())
                    .map_err(query_err)
            }
        }
    }
}
