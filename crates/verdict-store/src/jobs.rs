//! Jobs: creation, listing, sealing, cancellation and progress.
//!
//! The writes and the per-job reads are free functions over any executor (a pool, a
//! connection, a transaction), so a caller can make several of them one transaction; the
//! [`Store`] methods of the same names run them on the pool.

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection, PgExecutor, Row};
use uuid::Uuid;
use verdict_core::LabelSpec;

use crate::{corrupt, Result, Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Open,
    Running,
    Done,
    Cancelled,
}

/// Counts of a job's items by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub total: u64,
    pub queued: u64,
    pub done: u64,
    pub rejected: u64,
    pub dead: u64,
    pub deduplicated: u64,
    pub cancelled: u64,
}

#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: Uuid,
    pub name: String,
    pub judge: String,
    pub spec: LabelSpec,
    pub sealed: bool,
    pub cancelled: bool,
    pub created_at: DateTime<Utc>,
    /// When items last arrived.
    pub submitted_at: DateTime<Utc>,
    /// What went wrong with the job's submission, if anything ('' when nothing).
    pub note: String,
    /// The client identity that created the job.
    pub owner: String,
}

impl JobRow {
    /// The state follows from the flags and the counts; nothing else is kept, so any
    /// coordinator replica computes the same answer.
    pub fn state(&self, p: &Progress) -> JobState {
        if self.cancelled {
            JobState::Cancelled
        } else if !self.sealed {
            JobState::Open
        } else if p.queued > 0 {
            JobState::Running
        } else {
            JobState::Done
        }
    }
}

fn job_from_row(row: &sqlx::postgres::PgRow) -> Result<JobRow> {
    let id: Uuid = row.try_get("id")?;
    let spec: serde_json::Value = row.try_get("spec")?;
    Ok(JobRow {
        id,
        name: row.try_get("name")?,
        judge: row.try_get("judge")?,
        spec: serde_json::from_value(spec).map_err(|e| corrupt(format!("spec of job {id}"), e))?,
        sealed: row.try_get("sealed")?,
        cancelled: row.try_get("cancelled")?,
        created_at: row.try_get("created_at")?,
        submitted_at: row.try_get("submitted_at")?,
        note: row.try_get("note")?,
        owner: row.try_get("owner")?,
    })
}

const COLUMNS: &str = "id, name, judge, spec, sealed, cancelled, created_at, submitted_at, note, owner";

impl Store {
    pub async fn create_job(&self, name: &str, spec: &LabelSpec, owner: &str) -> Result<JobRow> {
        create_job(&self.pool, name, spec, owner).await
    }

    pub async fn get_job(&self, id: Uuid) -> Result<JobRow> {
        get_job(&self.pool, id).await
    }

    /// Jobs newest first; `before` is the (created_at, id) of the last job of the previous page;
    /// `owner`, if given, keeps only that client's jobs.
    pub async fn list_jobs(&self, limit: i64, before: Option<(DateTime<Utc>, Uuid)>, owner: Option<&str>) -> Result<Vec<JobRow>> {
        list_jobs(&self.pool, limit, before, owner).await
    }

    pub async fn seal_job(&self, id: Uuid) -> Result<()> {
        seal_job(&self.pool, id).await
    }

    /// Items arrived just now: an open job with recent submissions is not idle.
    pub async fn touch_submission(&self, id: Uuid) -> Result<()> {
        touch_submission(&self.pool, id).await
    }

    /// Record what went wrong with a job's submission (shown with the job).
    pub async fn note_job(&self, id: Uuid, note: &str) -> Result<()> {
        note_job(&self.pool, id, note).await
    }

    /// Seal open jobs that received no items for `idle_secs`, saying so in their note: a
    /// submission that broke off, or a `keep_open` job nobody came back to, must not stay
    /// open (and never done) forever. Returns the jobs sealed.
    pub async fn seal_idle_jobs(&self, idle_secs: f64) -> Result<Vec<Uuid>> {
        seal_idle_jobs(&self.pool, idle_secs).await
    }

    /// Cancel a job: its queued items become cancelled; stored verdicts stay.
    pub async fn cancel_job(&self, id: Uuid) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        cancel_job(&mut conn, id).await
    }

    /// A job's counts by state, from the counters the items' triggers keep (migration 0006):
    /// a few rows whatever the job's size.
    pub async fn progress(&self, id: Uuid) -> Result<Progress> {
        progress(&self.pool, id).await
    }

    /// The same counts by a scan of the job's items: what the counters must always equal
    /// (tests and checks; O(items)).
    pub async fn progress_by_scan(&self, id: Uuid) -> Result<Progress> {
        progress_by_scan(&self.pool, id).await
    }
}

/// Progress from (state, deduplicated, n) rows.
fn tally(id: Uuid, rows: &[sqlx::postgres::PgRow]) -> Result<Progress> {
    let mut p = Progress::default();
    for row in rows {
        let state: String = row.try_get("state")?;
        let n = row.try_get::<i64, _>("n")?;
        if n < 0 {
            return Err(corrupt(format!("count of job {id}'s {state} items"), n));
        }
        let n = n as u64;
        p.total += n;
        match state.as_str() {
            "queued" => p.queued += n,
            "done" => p.done += n,
            "rejected" => p.rejected += n,
            "dead" => p.dead += n,
            "cancelled" => p.cancelled += n,
            other => return Err(corrupt(format!("state of an item of job {id}"), other)),
        }
        if row.try_get::<bool, _>("deduplicated")? {
            p.deduplicated += n;
        }
    }
    Ok(p)
}

pub async fn create_job<'e>(db: impl PgExecutor<'e>, name: &str, spec: &LabelSpec, owner: &str) -> Result<JobRow> {
    let id = Uuid::new_v4();
    let spec_json = serde_json::to_value(spec).map_err(|e| corrupt("spec", e))?;
    let row = sqlx::query(&format!(
        "INSERT INTO jobs (id, name, judge, spec, owner) VALUES ($1, $2, $3, $4, $5)
         RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(name)
    .bind(&spec.judge)
    .bind(spec_json)
    .bind(owner)
    .fetch_one(db)
    .await?;
    job_from_row(&row)
}

pub async fn get_job<'e>(db: impl PgExecutor<'e>, id: Uuid) -> Result<JobRow> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM jobs WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("job {id}")))?;
    job_from_row(&row)
}

pub async fn seal_job<'e>(db: impl PgExecutor<'e>, id: Uuid) -> Result<()> {
    sqlx::query("UPDATE jobs SET sealed = TRUE WHERE id = $1").bind(id).execute(db).await?;
    Ok(())
}

/// Items arrived just now: an open job with recent submissions is not idle.
pub async fn touch_submission<'e>(db: impl PgExecutor<'e>, id: Uuid) -> Result<()> {
    sqlx::query("UPDATE jobs SET submitted_at = now() WHERE id = $1").bind(id).execute(db).await?;
    Ok(())
}

/// Record what went wrong with a job's submission (shown with the job).
pub async fn note_job<'e>(db: impl PgExecutor<'e>, id: Uuid, note: &str) -> Result<()> {
    sqlx::query("UPDATE jobs SET note = $2 WHERE id = $1").bind(id).bind(note).execute(db).await?;
    Ok(())
}

/// Cancel a job: its queued items become cancelled; stored verdicts stay.
pub async fn cancel_job(conn: &mut PgConnection, id: Uuid) -> Result<()> {
    let mut tx = conn.begin().await?;
    let n = sqlx::query("UPDATE jobs SET cancelled = TRUE WHERE id = $1").bind(id).execute(&mut *tx).await?;
    if n.rows_affected() == 0 {
        return Err(StoreError::NotFound(format!("job {id}")));
    }
    sqlx::query("UPDATE items SET state = 'cancelled', updated_at = now() WHERE job_id = $1 AND state = 'queued'")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// A job's counts by state, from the counters the items' triggers keep (migration 0006):
/// a few rows whatever the job's size.
pub async fn progress<'e>(db: impl PgExecutor<'e>, id: Uuid) -> Result<Progress> {
    let rows = sqlx::query("SELECT state, deduplicated, sum(n)::bigint AS n FROM job_counts WHERE job_id = $1 GROUP BY state, deduplicated")
        .bind(id)
        .fetch_all(db)
        .await?;
    tally(id, &rows)
}

/// Jobs newest first; `before` is the (created_at, id) of the last job of the previous page;
/// `owner`, if given, keeps only that client's jobs.
pub async fn list_jobs<'e>(db: impl PgExecutor<'e>, limit: i64, before: Option<(DateTime<Utc>, Uuid)>, owner: Option<&str>) -> Result<Vec<JobRow>> {
    let rows = sqlx::query(
        &format!("SELECT {COLUMNS} FROM jobs
         WHERE ($1::timestamptz IS NULL OR (created_at, id) < ($1, $2)) AND ($4::text IS NULL OR owner = $4)
         ORDER BY created_at DESC, id DESC LIMIT $3"),
    )
    .bind(before.map(|b| b.0))
    .bind(before.map(|b| b.1))
    .bind(limit)
    .bind(owner)
    .fetch_all(db)
    .await?;
    rows.iter().map(job_from_row).collect()
}

/// Seal open jobs that received no items for `idle_secs`, saying so in their note: a
/// submission that broke off, or a `keep_open` job nobody came back to, must not stay
/// open (and never done) forever. Returns the jobs sealed.
pub async fn seal_idle_jobs<'e>(db: impl PgExecutor<'e>, idle_secs: f64) -> Result<Vec<Uuid>> {
    let rows = sqlx::query(
        "UPDATE jobs SET sealed = TRUE,
                note = CASE WHEN note = '' THEN '' ELSE note || '; ' END
                       || format('sealed after %s s without new items', round($1::numeric))
         WHERE NOT sealed AND NOT cancelled AND submitted_at < now() - make_interval(secs => $1)
         RETURNING id",
    )
    .bind(idle_secs)
    .fetch_all(db)
    .await?;
    rows.iter().map(|r| Ok(r.try_get::<Uuid, _>("id")?)).collect()
}

/// The same counts by a scan of the job's items: what the counters must always equal
/// (tests and checks; O(items)).
pub async fn progress_by_scan<'e>(db: impl PgExecutor<'e>, id: Uuid) -> Result<Progress> {
    let rows = sqlx::query("SELECT state, deduplicated, count(*) AS n FROM items WHERE job_id = $1 GROUP BY state, deduplicated")
        .bind(id)
        .fetch_all(db)
        .await?;
    tally(id, &rows)
}
