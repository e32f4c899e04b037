//! Raising a finished job's k (`verdict extend`): the items to extend, page by page, and
//! the vote over all of an item's samples when a worker reports only the new ones.
//!
//! An extension's queue entry asks for samples `first..k` only; the worker's report then
//! carries just those, and its verdict covers them alone. The store holds samples
//! `0..first`, so the vote over all of them happens here, in the report's transaction.

use std::collections::HashMap;

use sqlx::{PgConnection, PgExecutor, Row};
use uuid::Uuid;
use verdict_core::{aggregate, ContentKey, Item, LabelSpec, Sample, Verdict, VerdictRecord};

use crate::read::sample_from_row;
use crate::{corrupt, json_column, Result, Store};

/// A done item of a job being extended.
#[derive(Debug, Clone)]
pub struct DoneItem {
    pub item_id: String,
    pub item: Item,
    /// Its content key now (under the spec it was judged with).
    pub key: String,
    /// Samples stored: the first sample index an extension makes.
    pub samples: u32,
}

/// Items a page of an extension reads.
pub const EXTEND_PAGE: i64 = 1024;

/// The first sample a partial record (an extension's report) carries, if it is one.
pub fn extension_start(record: &VerdictRecord) -> Option<u32> {
    record.samples.iter().map(|s| s.index).min().filter(|&first| first > 0)
}

impl Store {
    /// Set a job's spec (its k, when extended).
    pub async fn set_job_spec(&self, id: Uuid, spec: &LabelSpec) -> Result<()> {
        set_job_spec(&self.pool, id, spec).await
    }

    /// The fingerprints of the weights that made a job's verdicts.
    pub async fn verdict_fingerprints(&self, job_id: Uuid) -> Result<Vec<String>> {
        verdict_fingerprints(&self.pool, job_id).await
    }

    /// Up to `limit` done items of a job with ids after `after`, in id order, with how many
    /// samples each has stored.
    pub async fn done_items(&self, job_id: Uuid, after: Option<&str>, limit: i64) -> Result<Vec<DoneItem>> {
        done_items(&self.pool, job_id, after, limit).await
    }

    /// Put done items back in the queue's hands under their new keys (`(item id, key)`).
    /// Returns the ids changed: only items still done are.
    pub async fn requeue_for_extension(&self, job_id: Uuid, items: &[(String, String)]) -> Result<Vec<String>> {
        requeue_for_extension(&self.pool, job_id, items).await
    }
}

/// For each `(job, record)` that is an extension's report (its samples start past 0):
/// the verdict over the stored samples before it and its own, under the job's spec,
/// with those samples (as voting reads them). `None` for every other record.
pub(crate) async fn complete_extensions(conn: &mut PgConnection, records: &[(Uuid, &VerdictRecord)]) -> Result<Vec<Option<(Verdict, Vec<Sample>)>>> {
    let partial: Vec<(usize, u32)> = records.iter().enumerate().filter_map(|(i, (_, r))| extension_start(r).map(|f| (i, f))).collect();
    let mut out = vec![None; records.len()];
    if partial.is_empty() {
        return Ok(out);
    }
    let jobs: Vec<Uuid> = partial.iter().map(|&(i, _)| records[i].0).collect();
    let items: Vec<&str> = partial.iter().map(|&(i, _)| records[i].1.id.as_str()).collect();
    let firsts: Vec<i32> = partial.iter().map(|&(_, f)| f as i32).collect();
    // Voting reads indexes, scores, statuses and meta scores: the text stays behind.
    let sample_rows = sqlx::query(
        "SELECT u.job_id, s.item_id, s.sample_index, s.permutation, '' AS principles, '' AS critique, s.scores, s.status,
                s.failure, s.finish, s.prompt_tokens, s.completion_tokens, s.meta_score, '' AS raw
         FROM UNNEST($1::uuid[], $2::text[], $3::int[]) AS u(job_id, item_id, first)
         JOIN samples s ON s.job_id = u.job_id AND s.item_id = u.item_id AND s.sample_index < u.first
         ORDER BY s.sample_index",
    )
    .bind(&jobs)
    .bind(&items)
    .bind(&firsts)
    .fetch_all(&mut *conn)
    .await?;
    let mut stored: HashMap<(Uuid, String), Vec<Sample>> = HashMap::new();
    for r in &sample_rows {
        let job: Uuid = r.try_get("job_id")?;
        let (item, sample) = sample_from_row(r)?;
        stored.entry((job, item)).or_default().push(sample);
    }
    let item_rows = sqlx::query(
        "SELECT u.job_id, i.item_id, i.item, j.spec FROM UNNEST($1::uuid[], $2::text[]) AS u(job_id, item_id)
         JOIN items i ON i.job_id = u.job_id AND i.item_id = u.item_id JOIN jobs j ON j.id = u.job_id",
    )
    .bind(&jobs)
    .bind(&items)
    .fetch_all(&mut *conn)
    .await?;
    let mut context: HashMap<(Uuid, String), (Item, LabelSpec)> = HashMap::new();
    for r in &item_rows {
        let item_id: String = r.try_get("item_id")?;
        let item: Item = json_column(r, "item", || format!("item {item_id}"))?;
        let spec: LabelSpec = json_column(r, "spec", || format!("spec of item {item_id}'s job"))?;
        context.insert((r.try_get("job_id")?, item_id), (item, spec));
    }
    for &(i, _) in &partial {
        let (job, record) = records[i];
        let key = (job, record.id.clone());
        let Some((item, spec)) = context.get(&key) else {
            return Err(corrupt(format!("item {} of job {job}", record.id), "a report extends an item the store does not hold"));
        };
        let mut samples = stored.remove(&key).unwrap_or_default();
        samples.extend(record.samples.iter().cloned());
        let verdict = aggregate(spec, ContentKey::of_item(item).seed_bits(), item.responses.len(), &samples);
        out[i] = Some((verdict, samples));
    }
    Ok(out)
}

/// Set a job's spec (its k, when extended).
pub async fn set_job_spec<'e>(db: impl PgExecutor<'e>, id: Uuid, spec: &LabelSpec) -> Result<()> {
    let spec = serde_json::to_value(spec).map_err(|e| corrupt("spec", e))?;
    sqlx::query("UPDATE jobs SET spec = $2 WHERE id = $1").bind(id).bind(spec).execute(db).await?;
    Ok(())
}

/// The fingerprints of the weights that made a job's verdicts.
pub async fn verdict_fingerprints<'e>(db: impl PgExecutor<'e>, job_id: Uuid) -> Result<Vec<String>> {
    let rows = sqlx::query("SELECT DISTINCT fingerprint FROM verdicts WHERE job_id = $1").bind(job_id).fetch_all(db).await?;
    rows.iter().map(|r| Ok(r.try_get::<String, _>("fingerprint")?)).collect()
}

/// Up to `limit` done items of a job with ids after `after`, in id order, with how many
/// samples each has stored.
pub async fn done_items<'e>(db: impl PgExecutor<'e>, job_id: Uuid, after: Option<&str>, limit: i64) -> Result<Vec<DoneItem>> {
    let rows = sqlx::query(
        "SELECT i.item_id, i.item, i.key,
                (SELECT count(*) FROM samples s WHERE s.job_id = i.job_id AND s.item_id = i.item_id) AS samples
         FROM items i
         WHERE i.job_id = $1 AND i.state = 'done' AND i.item_id > COALESCE($2::text, '')
         ORDER BY i.item_id LIMIT $3",
    )
    .bind(job_id)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            let item_id: String = r.try_get("item_id")?;
            Ok(DoneItem {
                item: json_column(r, "item", || format!("item {item_id}"))?,
                key: r.try_get("key")?,
                samples: r.try_get::<i64, _>("samples")?.clamp(0, u32::MAX as i64) as u32,
                item_id,
            })
        })
        .collect()
}

/// Put done items back in the queue's hands under their new keys (`(item id, key)`).
/// Returns the ids changed: only items still done are.
pub async fn requeue_for_extension<'e>(db: impl PgExecutor<'e>, job_id: Uuid, items: &[(String, String)]) -> Result<Vec<String>> {
    let ids: Vec<&str> = items.iter().map(|i| i.0.as_str()).collect();
    let keys: Vec<&str> = items.iter().map(|i| i.1.as_str()).collect();
    let rows = sqlx::query(
        "UPDATE items SET state = 'queued', key = u.key, entry_id = NULL, updated_at = now()
         FROM UNNEST($2::text[], $3::text[]) AS u(item_id, key)
         WHERE items.job_id = $1 AND items.item_id = u.item_id AND items.state = 'done'
         RETURNING items.item_id",
    )
    .bind(job_id)
    .bind(&ids)
    .bind(&keys)
    .fetch_all(db)
    .await?;
    rows.iter().map(|r| Ok(r.try_get::<String, _>("item_id")?)).collect()
}
