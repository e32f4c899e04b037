//! Judge bindings: which weights a judge name stands for. Workers report their weights'
//! fingerprints in every heartbeat; the first worker binds the name, and a worker with other
//! weights is refused while any of the judge's items is queued or in flight, so one job is
//! never judged by two checkpoints. Once the judge's queue is empty, the next worker's
//! weights rebind the name.
//!
//! [`judge`] and [`bind_judge`] run on any connection, so a caller can bind inside its own
//! transaction; the [`Store`] methods of the same names run them on the pool.

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection, PgExecutor, Row};
use verdict_core::Fingerprints;

use crate::{Result, Store, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct JudgeRow {
    pub name: String,
    pub fingerprints: Fingerprints,
    /// Context length in tokens, as its workers report it.
    pub context_length: Option<u32>,
    pub bound_at: DateTime<Utc>,
}

fn judge_from_row(r: &sqlx::postgres::PgRow) -> Result<JudgeRow> {
    Ok(JudgeRow {
        name: r.try_get("name")?,
        fingerprints: Fingerprints::new(r.try_get::<String, _>("fingerprint")?, r.try_get("meta_fingerprint")?),
        context_length: r.try_get::<Option<i32>, _>("context_length")?.map(|c| c as u32),
        bound_at: r.try_get("bound_at")?,
    })
}

const COLUMNS: &str = "name, fingerprint, meta_fingerprint, context_length, bound_at";

impl Store {
    /// The weights `name` is bound to, if any worker ever served it.
    pub async fn judge(&self, name: &str) -> Result<Option<JudgeRow>> {
        judge(&self.pool, name).await
    }

    /// Every bound judge, by name.
    pub async fn judges(&self) -> Result<Vec<JudgeRow>> {
        judges(&self.pool).await
    }

    /// Every judge name that is bound or that a job not cancelled names: those whose queue
    /// may hold work (a judge with items and no worker yet is the one to scale up).
    pub async fn judge_names(&self) -> Result<Vec<String>> {
        judge_names(&self.pool).await
    }

    /// Items of `name`'s live jobs that wait for a verdict (queued or leased).
    pub async fn judge_backlog(&self, name: &str) -> Result<u64> {
        backlog(&self.pool, name).await
    }

    /// Bind `name` to these weights, or confirm it is bound to them. Refused
    /// ([`StoreError::Conflict`], naming both fingerprints) while the name is bound to other
    /// weights and has a backlog.
    pub async fn bind_judge(&self, name: &str, weights: &Fingerprints, context_length: Option<u32>) -> Result<JudgeRow> {
        let mut conn = self.pool.acquire().await?;
        bind_judge(&mut conn, name, weights, context_length).await
    }
}

/// The weights `name` is bound to, if any worker ever served it.
pub async fn judge<'e>(db: impl PgExecutor<'e>, name: &str) -> Result<Option<JudgeRow>> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM judges WHERE name = $1")).bind(name).fetch_optional(db).await?;
    row.as_ref().map(judge_from_row).transpose()
}

/// Bind `name` to these weights, or confirm it is bound to them. Refused
/// ([`StoreError::Conflict`], naming both fingerprints) while the name is bound to other
/// weights and has a backlog.
pub async fn bind_judge(conn: &mut PgConnection, name: &str, weights: &Fingerprints, context_length: Option<u32>) -> Result<JudgeRow> {
    // The common case, every heartbeat: already bound to these weights.
    if let Some(j) = judge(&mut *conn, name).await? {
        if &j.fingerprints == weights && (context_length.is_none() || j.context_length == context_length) {
            return Ok(j);
        }
    }
    let mut tx = conn.begin().await?;
    sqlx::query("INSERT INTO judges (name, fingerprint, meta_fingerprint, context_length) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(&weights.judge)
        .bind(&weights.meta_rm)
        .bind(context_length.map(|c| c as i32))
        .execute(&mut *tx)
        .await?;
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM judges WHERE name = $1 FOR UPDATE")).bind(name).fetch_one(&mut *tx).await?;
    let bound = judge_from_row(&row)?;
    if &bound.fingerprints != weights {
        let backlog = backlog(&mut *tx, name).await?;
        if backlog > 0 {
            return Err(StoreError::Conflict(format!(
                "judge {name} is bound to weights {} while {backlog} of its items wait for a verdict, and these weights are {}; \
                 serve them under another judge name, or start them once the judge's queue is empty (or its jobs are cancelled)",
                describe(&bound.fingerprints),
                describe(weights)
            )));
        }
        tracing::info!(judge = name, from = %describe(&bound.fingerprints), to = %describe(weights), "judge rebound to other weights");
    }
    let row = sqlx::query(&format!(
        "UPDATE judges SET fingerprint = $2, meta_fingerprint = $3, context_length = coalesce($4, context_length),
                bound_at = CASE WHEN fingerprint = $2 AND meta_fingerprint IS NOT DISTINCT FROM $3 THEN bound_at ELSE now() END
         WHERE name = $1 RETURNING {COLUMNS}"
    ))
    .bind(name)
    .bind(&weights.judge)
    .bind(&weights.meta_rm)
    .bind(context_length.map(|c| c as i32))
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    judge_from_row(&row)
}

/// From the jobs' counters (migration 0006), so it costs a row per job and counter shard,
/// never a row per queued item: a refused worker asks again at every retry.
async fn backlog<'e>(db: impl PgExecutor<'e>, name: &str) -> Result<u64> {
    let row = sqlx::query(
        "SELECT coalesce(sum(c.n), 0)::bigint AS n FROM jobs j JOIN job_counts c ON c.job_id = j.id
         WHERE j.judge = $1 AND NOT j.cancelled AND c.state = 'queued'",
    )
    .bind(name)
    .fetch_one(db)
    .await?;
    Ok(row.try_get::<i64, _>("n")? as u64)
}

/// Fingerprints in full, for messages a person compares by eye.
fn describe(f: &Fingerprints) -> String {
    match &f.meta_rm {
        Some(m) => format!("{} (meta RM {m})", f.judge),
        None => f.judge.clone(),
    }
}

/// Every bound judge, by name.
pub async fn judges<'e>(db: impl PgExecutor<'e>) -> Result<Vec<JudgeRow>> {
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM judges ORDER BY name")).fetch_all(db).await?;
    rows.iter().map(judge_from_row).collect()
}

/// Every judge name that is bound or that a job not cancelled names: those whose queue
/// may hold work (a judge with items and no worker yet is the one to scale up).
pub async fn judge_names<'e>(db: impl PgExecutor<'e>) -> Result<Vec<String>> {
    let rows = sqlx::query("SELECT name FROM judges UNION SELECT DISTINCT judge FROM jobs WHERE NOT cancelled ORDER BY 1").fetch_all(db).await?;
    rows.iter().map(|r| Ok(r.try_get::<String, _>(0)?)).collect()
}
