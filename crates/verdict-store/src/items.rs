//! Items: bulk insert, dedup against stored verdicts, and the queue bookkeeping that lets a
//! coordinator find items whose queue entry was lost.
//!
//! Submitting runs a few statements per message of items. Each of them touches only that
//! message's rows, through the primary key, whatever the size of the job: a per-message
//! statement that walked the job's other items would make submitting quadratic in the
//! job's size. Each reaches its rows one id at a time through the primary key (a LATERAL
//! lookup per id, or `job_id = $1 AND item_id = ANY($2)` with no other indexed condition),
//! a shape the planner keeps even when its statistics lag a large submission — exactly when
//! it would otherwise walk the whole job. The statements are in [`per_message`], public so that a test can EXPLAIN
//! them against a large job; [`insert_items`], [`dedup`] and [`set_entry_ids`] run them on
//! any executor, so that one message's writes can share a transaction.

use sqlx::{PgExecutor, Row};
use uuid::Uuid;
use verdict_core::{Item, LabelSpec};

use crate::{corrupt, json_column, Result, Store};

pub struct NewItem {
    pub item_id: String,
    /// Content key of (item, spec, the judge's weights), hex: what dedup matches on.
    pub key: String,
    /// Content key of the item alone, hex: tells a re-sent item from another item that
    /// reuses its id.
    pub content: String,
    pub item: Item,
}

/// What happened to one item of an insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// A new item, queued.
    New,
    /// The job already holds this id with this content: `queued` says whether it is still
    /// waiting for a verdict, `has_entry` whether it has a queue entry.
    Present { queued: bool, has_entry: bool },
    /// The job already holds this id with other content.
    Conflict,
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

/// The statements run once per message of submitted items, with their parameters:
/// `$1` is the job id, `$2` the message's item ids (`text[]`).
pub mod per_message {
    /// Insert items (`$3` keys, `$4` contents, `$5` items as `jsonb[]`) and say, for each
    /// id, whether it was new and what the job held before. Within one statement the
    /// insert's own rows are invisible to the join, so `stored_content` is the earlier row.
    pub const INSERT: &str = "WITH input AS (
             SELECT * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::jsonb[]) AS u(item_id, key, content, item)
         ), ins AS (
             INSERT INTO items (job_id, item_id, key, content, item)
             SELECT $1, item_id, key, content, item FROM input
             ON CONFLICT (job_id, item_id) DO NOTHING
             RETURNING item_id
         )
         SELECT u.item_id, ins.item_id IS NOT NULL AS new, i.content AS stored_content, i.state, i.entry_id IS NOT NULL AS has_entry
         FROM input u
         LEFT JOIN ins ON ins.item_id = u.item_id
         LEFT JOIN LATERAL (SELECT content, state, entry_id FROM items WHERE job_id = $1 AND item_id = u.item_id LIMIT 1) i ON TRUE";

    /// Answer queued items from verdicts stored under the same key in another job: copy
    /// the verdict and its samples, mark the item done.
    pub const DEDUP: &str = "WITH want AS (
             SELECT u.item_id, i.key FROM UNNEST($2::text[]) AS u(item_id)
             CROSS JOIN LATERAL (SELECT key, state FROM items WHERE job_id = $1 AND item_id = u.item_id LIMIT 1) i
             WHERE i.state = 'queued'
         ), pick AS (
             SELECT w.item_id, v.job_id AS src_job, v.item_id AS src_item
             FROM want w
             JOIN LATERAL (
                 SELECT job_id, item_id FROM verdicts v
                 WHERE v.key = w.key AND v.job_id <> $1
                 ORDER BY v.created_at LIMIT 1
             ) v ON TRUE
         ), copy_verdicts AS (
             INSERT INTO verdicts (job_id, item_id, key, judge, fingerprint, meta_fingerprint, template, summed, mean, winner, margin, tie, valid, agreement, worker, stopped, votes, vote_meta)
             SELECT $1, p.item_id, v.key, v.judge, v.fingerprint, v.meta_fingerprint, v.template, v.summed, v.mean, v.winner, v.margin, v.tie, v.valid, v.agreement, '', v.stopped, v.votes, v.vote_meta
             FROM pick p JOIN verdicts v ON v.job_id = p.src_job AND v.item_id = p.src_item
             ON CONFLICT (job_id, item_id) DO NOTHING
         ), copy_samples AS (
             INSERT INTO samples (job_id, item_id, sample_index, permutation, principles, critique, scores, status, failure, finish, prompt_tokens, completion_tokens, meta_score, raw)
             SELECT $1, p.item_id, s.sample_index, s.permutation, s.principles, s.critique, s.scores, s.status, s.failure, s.finish, s.prompt_tokens, s.completion_tokens, s.meta_score, s.raw
             FROM pick p JOIN samples s ON s.job_id = p.src_job AND s.item_id = p.src_item
             ON CONFLICT (job_id, item_id, sample_index) DO NOTHING
         )
         UPDATE items SET state = 'done', deduplicated = TRUE, entry_id = NULL, updated_at = now()
         FROM pick p WHERE items.job_id = $1 AND items.item_id = p.item_id
         RETURNING items.item_id";

    /// Remember each item's queue entry (`$3`: entry ids, in the order of `$2`), joined by
    /// position (`array_position` per row cost 256 text comparisons a row: a fifth of a
    /// submission's Postgres time). Only the unindexed `entry_id` changes, so the update is
    /// HOT (no index entries; migration 0007 leaves room on the page): the item was
    /// inserted, and `updated_at` set, a moment ago.
    pub const SET_ENTRY_IDS: &str = "UPDATE items SET entry_id = u.entry_id
         FROM UNNEST($2::text[], $3::text[]) AS u(item_id, entry_id)
         WHERE items.job_id = $1 AND items.item_id = u.item_id";
}

/// Insert and dedup in one: (id → outcome) in input order.
pub type InsertOutcome = Vec<(String, Inserted)>;

impl Store {
    /// [`insert_items`] on the pool.
    pub async fn insert_items(&self, job_id: Uuid, items: &[NewItem]) -> Result<InsertOutcome> {
        insert_items(&self.pool, job_id, items).await
    }

    /// [`dedup`] on the pool.
    pub async fn dedup(&self, job_id: Uuid, item_ids: &[String]) -> Result<Vec<String>> {
        dedup(&self.pool, job_id, item_ids).await
    }

    /// [`set_entry_ids`] on the pool.
    pub async fn set_entry_ids(&self, job_id: Uuid, pairs: &[(String, String)]) -> Result<()> {
        set_entry_ids(&self.pool, job_id, pairs).await
    }

    /// A dead item goes back to `queued` (with no entry yet: if the caller fails to enqueue
    /// it, the sweeper will). Returns the item, or `None` if it is not dead (it has a verdict
    /// by now, or was requeued already).
    pub async fn requeue_dead(&self, job_id: Uuid, item_id: &str) -> Result<Option<Item>> {
        requeue_dead(&self.pool, job_id, item_id).await
    }

    /// Claim up to `limit` queued items of live jobs untouched for `older_than_secs`, marking
    /// them touched so that concurrent coordinators split the work (SKIP LOCKED).
    pub async fn claim_stale(&self, older_than_secs: f64, limit: i64) -> Result<Vec<StaleItem>> {
        claim_stale(&self.pool, older_than_secs, limit).await
    }

    /// Whether any item of the job has a conversation prompt (decides an export's form).
    pub async fn has_conversations(&self, job_id: Uuid) -> Result<bool> {
        has_conversations(&self.pool, job_id).await
    }
}

// One message's statements, on any executor (the pool, a connection, a transaction), so a
// caller can run them in one transaction.

/// Insert items as queued. Ids already in the job are left as they are; the answer says,
/// per id, whether it was new, re-sent, or reused with other content. Ids must be
/// distinct within one call.
pub async fn insert_items<'e>(db: impl PgExecutor<'e>, job_id: Uuid, items: &[NewItem]) -> Result<InsertOutcome> {
    if items.is_empty() {
        return Ok(vec![]);
    }
    let ids: Vec<&str> = items.iter().map(|i| i.item_id.as_str()).collect();
    let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
    let contents: Vec<&str> = items.iter().map(|i| i.content.as_str()).collect();
    let json = items
        .iter()
        .map(|i| serde_json::to_value(&i.item).map_err(|e| corrupt(format!("item {}", i.item_id), e)))
        .collect::<Result<Vec<_>>>()?;
    let rows = sqlx::query(per_message::INSERT)
        .bind(job_id)
        .bind(&ids)
        .bind(&keys)
        .bind(&contents)
        .bind(&json)
        .fetch_all(db)
        .await?;
    let by_id: std::collections::HashMap<&str, &str> = items.iter().map(|i| (i.item_id.as_str(), i.content.as_str())).collect();
    rows.iter()
        .map(|r| {
            let id: String = r.try_get("item_id")?;
            let outcome = if r.try_get::<bool, _>("new")? {
                Inserted::New
            } else {
                let stored: Option<String> = r.try_get("stored_content")?;
                let state: Option<String> = r.try_get("state")?;
                // Rows stored before contents were recorded have '' and count as equal.
                match stored.as_deref() {
                    Some(c) if c.is_empty() || Some(&c) == by_id.get(id.as_str()) => {
                        Inserted::Present { queued: state.as_deref() == Some("queued"), has_entry: r.try_get("has_entry")? }
                    }
                    _ => Inserted::Conflict,
                }
            };
            Ok((id, outcome))
        })
        .collect()
}

/// Answer queued items from verdicts already stored under the same content key (in any
/// other job): the verdict and its samples are copied and the item is done. Returns the
/// ids answered.
pub async fn dedup<'e>(db: impl PgExecutor<'e>, job_id: Uuid, item_ids: &[String]) -> Result<Vec<String>> {
    if item_ids.is_empty() {
        return Ok(vec![]);
    }
    let rows = sqlx::query(per_message::DEDUP).bind(job_id).bind(item_ids).fetch_all(db).await?;
    rows.iter().map(|r| Ok(r.try_get::<String, _>("item_id")?)).collect()
}

/// Remember each item's queue entry.
pub async fn set_entry_ids<'e>(db: impl PgExecutor<'e>, job_id: Uuid, pairs: &[(String, String)]) -> Result<()> {
    if pairs.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = pairs.iter().map(|p| p.0.as_str()).collect();
    let entries: Vec<&str> = pairs.iter().map(|p| p.1.as_str()).collect();
    sqlx::query(per_message::SET_ENTRY_IDS).bind(job_id).bind(&ids).bind(&entries).execute(db).await?;
    Ok(())
}

/// A dead item goes back to `queued` (with no entry yet: if the caller fails to enqueue
/// it, the sweeper will). Returns the item, or `None` if it is not dead (it has a verdict
/// by now, or was requeued already).
pub async fn requeue_dead<'e>(db: impl PgExecutor<'e>, job_id: Uuid, item_id: &str) -> Result<Option<Item>> {
    let row = sqlx::query(
        "UPDATE items SET state = 'queued', error = NULL, entry_id = NULL, updated_at = now()
         WHERE job_id = $1 AND item_id = $2 AND state = 'dead' RETURNING item",
    )
    .bind(job_id)
    .bind(item_id)
    .fetch_optional(db)
    .await?;
    row.map(|r| json_column(&r, "item", || format!("item {item_id}"))).transpose()
}

/// Claim up to `limit` queued items of live jobs untouched for `older_than_secs`, marking
/// them touched so that concurrent coordinators split the work (SKIP LOCKED).
pub async fn claim_stale<'e>(db: impl PgExecutor<'e>, older_than_secs: f64, limit: i64) -> Result<Vec<StaleItem>> {
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
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            let item_id: String = r.try_get("item_id")?;
            Ok(StaleItem {
                job_id: r.try_get("job_id")?,
                entry_id: r.try_get("entry_id")?,
                item: json_column(r, "item", || format!("item {item_id}"))?,
                spec: json_column(r, "spec", || format!("spec of item {item_id}"))?,
                item_id,
            })
        })
        .collect()
}

/// Whether any item of the job has a conversation prompt (decides an export's form).
pub async fn has_conversations<'e>(db: impl PgExecutor<'e>, job_id: Uuid) -> Result<bool> {
    let row = sqlx::query("SELECT EXISTS (SELECT 1 FROM items WHERE job_id = $1 AND jsonb_typeof(item->'prompt') = 'array') AS any")
        .bind(job_id)
        .fetch_one(db)
        .await?;
    Ok(row.try_get("any")?)
}
