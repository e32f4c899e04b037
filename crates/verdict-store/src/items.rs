//! Items: bulk insert, dedup against stored verdicts, and the queue bookkeeping that lets a
//! coordinator find items whose queue entry was lost.

use sqlx::Row;
use uuid::Uuid;
use verdict_core::{Item, LabelSpec};

use crate::{corrupt, Result, Store};

pub struct NewItem {
    pub item_id: String,
    pub key: String,
    pub item: Item,
}

/// A queued item not touched for a while, with what is needed to enqueue it again.
#[derive(Debug, Clone)]
pub struct StaleItem {
    pub job_id: Uuid,
    pub item_id: String,
    pub entry_id: Option<String>,
    pub item: Item,
    pub spec: LabelSpec,
}

impl Store {
    /// Insert items as queued; ids already in the job are left as they are. Returns the ids
    /// that were new.
    pub async fn insert_items(&self, job_id: Uuid, items: &[NewItem]) -> Result<Vec<String>> {
        if items.is_empty() {
            return Ok(vec![]);
        }
        let ids: Vec<&str> = items.iter().map(|i| i.item_id.as_str()).collect();
        let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
        let json = items
            .iter()
            .map(|i| serde_json::to_value(&i.item).map_err(|e| corrupt(format!("item {}", i.item_id), e)))
            .collect::<Result<Vec<_>>>()?;
        let rows = sqlx::query(
            "INSERT INTO items (job_id, item_id, key, item)
             SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::jsonb[])
             ON CONFLICT (job_id, item_id) DO NOTHING
             RETURNING item_id",
        )
        .bind(job_id)
        .bind(&ids)
        .bind(&keys)
        .bind(&json)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get::<String, _>("item_id")?)).collect()
    }

    /// Answer queued items from verdicts already stored under the same content key (in any
    /// other job): the verdict and its samples are copied and the item is done. Returns the
    /// ids answered.
    pub async fn dedup(&self, job_id: Uuid, item_ids: &[String]) -> Result<Vec<String>> {
        if item_ids.is_empty() {
            return Ok(vec![]);
        }
        let rows = sqlx::query(
            "WITH pick AS (
                 SELECT i.job_id, i.item_id, v.job_id AS src_job, v.item_id AS src_item
                 FROM items i
                 JOIN LATERAL (
                     SELECT job_id, item_id FROM verdicts v
                     WHERE v.key = i.key AND v.job_id <> i.job_id
                     ORDER BY v.created_at LIMIT 1
                 ) v ON TRUE
                 WHERE i.job_id = $1 AND i.item_id = ANY($2) AND i.state = 'queued'
             ), copy_verdicts AS (
                 INSERT INTO verdicts (job_id, item_id, key, judge, template, summed, mean, winner, margin, tie, valid, agreement, worker)
                 SELECT p.job_id, p.item_id, v.key, v.judge, v.template, v.summed, v.mean, v.winner, v.margin, v.tie, v.valid, v.agreement, ''
                 FROM pick p JOIN verdicts v ON v.job_id = p.src_job AND v.item_id = p.src_item
                 ON CONFLICT (job_id, item_id) DO NOTHING
             ), copy_samples AS (
                 INSERT INTO samples (job_id, item_id, sample_index, permutation, principles, critique, scores, status, failure, finish, prompt_tokens, completion_tokens, meta_score, raw)
                 SELECT p.job_id, p.item_id, s.sample_index, s.permutation, s.principles, s.critique, s.scores, s.status, s.failure, s.finish, s.prompt_tokens, s.completion_tokens, s.meta_score, s.raw
                 FROM pick p JOIN samples s ON s.job_id = p.src_job AND s.item_id = p.src_item
                 ON CONFLICT (job_id, item_id, sample_index) DO NOTHING
             )
             UPDATE items SET state = 'done', deduplicated = TRUE, entry_id = NULL, updated_at = now()
             FROM pick p WHERE items.job_id = p.job_id AND items.item_id = p.item_id
             RETURNING items.item_id",
        )
        .bind(job_id)
        .bind(item_ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get::<String, _>("item_id")?)).collect()
    }

    /// Of these ids, the ones still queued, with their queue entry if they have one.
    pub async fn still_queued(&self, job_id: Uuid, item_ids: &[String]) -> Result<Vec<(String, Item, Option<String>)>> {
        let rows = sqlx::query("SELECT item_id, item, entry_id FROM items WHERE job_id = $1 AND item_id = ANY($2) AND state = 'queued' ORDER BY item_id")
            .bind(job_id)
            .bind(item_ids)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("item_id")?;
                let item: serde_json::Value = r.try_get("item")?;
                let item = serde_json::from_value(item).map_err(|e| corrupt(format!("item {id}"), e))?;
                Ok((id, item, r.try_get("entry_id")?))
            })
            .collect()
    }

    /// Remember each item's queue entry.
    pub async fn set_entry_ids(&self, job_id: Uuid, pairs: &[(String, String)]) -> Result<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = pairs.iter().map(|p| p.0.as_str()).collect();
        let entries: Vec<&str> = pairs.iter().map(|p| p.1.as_str()).collect();
        sqlx::query(
            "UPDATE items SET entry_id = u.entry_id, updated_at = now()
             FROM UNNEST($2::text[], $3::text[]) AS u(item_id, entry_id)
             WHERE items.job_id = $1 AND items.item_id = u.item_id AND items.state = 'queued'",
        )
        .bind(job_id)
        .bind(&ids)
        .bind(&entries)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Claim up to `limit` queued items of live jobs untouched for `older_than_secs`, marking
    /// them touched so that concurrent coordinators split the work (SKIP LOCKED).
    pub async fn claim_stale(&self, older_than_secs: f64, limit: i64) -> Result<Vec<StaleItem>> {
        let rows = sqlx::query(
            "WITH stale AS (
                 SELECT i.job_id, i.item_id FROM items i JOIN jobs j ON j.id = i.job_id
                 WHERE i.state = 'queued' AND NOT j.cancelled
                   AND i.updated_at < now() - make_interval(secs => $1)
                 ORDER BY i.updated_at LIMIT $2
                 FOR UPDATE OF i SKIP LOCKED
             )
             UPDATE items SET updated_at = now() FROM stale, jobs
             WHERE items.job_id = stale.job_id AND items.item_id = stale.item_id AND jobs.id = items.job_id
             RETURNING items.job_id, items.item_id, items.entry_id, items.item, jobs.spec",
        )
        .bind(older_than_secs)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let item_id: String = r.try_get("item_id")?;
                let item: serde_json::Value = r.try_get("item")?;
                let spec: serde_json::Value = r.try_get("spec")?;
                Ok(StaleItem {
                    job_id: r.try_get("job_id")?,
                    entry_id: r.try_get("entry_id")?,
                    item: serde_json::from_value(item).map_err(|e| corrupt(format!("item {item_id}"), e))?,
                    spec: serde_json::from_value(spec).map_err(|e| corrupt(format!("spec of item {item_id}"), e))?,
                    item_id,
                })
            })
            .collect()
    }
}
