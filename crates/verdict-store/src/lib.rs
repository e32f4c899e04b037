//! Verdict's Postgres store, through sqlx: jobs, items, samples and verdicts.
//!
//! Every write is an upsert keyed by (job, item) or (job, item, sample index), so a
//! redelivered item writes the same rows and never a second copy. Bulk writes pass one
//! array per column through `UNNEST`. Array-valued columns (permutations, scores) travel as
//! Postgres array literals in a text array and are cast per row, since `UNNEST` of a
//! two-dimensional array would flatten it.
//!
//! Layout: [`jobs`] (create, list, seal, cancel, progress), [`items`] (insert, dedup,
//! queue bookkeeping), [`judges`] (which weights a judge name stands for), [`results`]
//! (recording verdicts and failures), [`extend`] (raising a job's k), [`read`] (verdict
//! records back out, with filters).
//!
//! Every statement but [`read`]'s is a free function in those modules over any executor or
//! connection (sqlx's `PgExecutor`, `&mut PgConnection`), so that a caller can run several
//! in one transaction; a function of several statements opens its own transaction, which
//! inside a caller's becomes a savepoint. [`Store`]'s methods of the same names run them on
//! the pool.

pub mod extend;
pub mod items;
pub mod jobs;
pub mod judges;
pub mod read;
pub mod results;
mod votes;

use sqlx::postgres::{PgPool, PgPoolOptions};

pub use extend::{extension_start, DoneItem, EXTEND_PAGE};
pub use items::{Inserted, NewItem, StaleItem};
pub use jobs::{JobRow, JobState, Progress};
pub use judges::JudgeRow;
pub use read::VerdictFilter;
pub use results::{Failure, FailureKind, Outcome};

pub use sqlx;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0} not found")]
    NotFound(String),
    /// The request contradicts what is stored (e.g. other weights for a bound judge).
    #[error("{0}")]
    Conflict(String),
    #[error("stored {what} is unreadable: {problem}")]
    Corrupt { what: String, problem: String },
    /// The schema is not the one this build needs, and this connection may not change it.
    #[error("the database schema is at migration {found}, this build needs {needed}: run `verdict migrate` with the schema owner's URL")]
    Schema { found: i64, needed: i64 },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Connect and bring the schema up to date (migrations are idempotent and take an
    /// advisory lock, so many coordinators may start at once).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let store = Self::open(url, max_connections).await?;
        MIGRATOR.run(&store.pool).await?;
        Ok(store)
    }

    /// Connect without changing the schema, for a role that may only read and write rows
    /// (least privilege: migrations run once, as the schema's owner, with `verdict migrate`).
    /// Fails with [`StoreError::Schema`] unless every migration of this build is applied.
    pub async fn connect_current(url: &str, max_connections: u32) -> Result<Self> {
        let store = Self::open(url, max_connections).await?;
        let needed = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let found: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&store.pool)
            .await
            .or_else(|e| match &e {
                // No migration table: nothing was ever applied.
                sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => Ok(None),
                _ => Err(e),
            })?;
        let found = found.unwrap_or(0);
        if found < needed {
            return Err(StoreError::Schema { found, needed });
        }
        Ok(store)
    }

    /// Apply this build's migrations (as the schema's owner) and return.
    pub async fn migrate(url: &str) -> Result<()> {
        Self::connect(url, 1).await.map(drop)
    }

    async fn open(url: &str, max_connections: u32) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url)
            .await?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Whether the database answers (for health checks).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// A Postgres array literal (`{1,2,3}`) for values cast per row after `UNNEST`.
pub(crate) fn array_literal<T: std::fmt::Display>(values: &[T]) -> String {
    let body: Vec<String> = values.iter().map(|v| v.to_string()).collect();
    format!("{{{}}}", body.join(","))
}

/// A JSONB column read back into its type (an item, a spec); `what` names it in the error.
pub(crate) fn json_column<T: serde::de::DeserializeOwned>(r: &sqlx::postgres::PgRow, column: &str, what: impl FnOnce() -> String) -> Result<T> {
    use sqlx::Row;
    let v: serde_json::Value = r.try_get(column)?;
    serde_json::from_value(v).map_err(|e| corrupt(what(), e))
}

pub(crate) fn corrupt(what: impl Into<String>, problem: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { what: what.into(), problem: problem.to_string() }
}
