//! Verdict records back out of the store, whole (with samples) or without samples.

use std::collections::HashMap;

use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;
use verdict_core::parse::ParseFailure;
use verdict_core::{FinishReason, Item, ParseStatus, Sample, Stopped, Verdict, VerdictRecord};

use crate::{corrupt, Result, Store, StoreError};

/// Filters of `QueryVerdicts`; `None` means no filter.
#[derive(Debug, Clone, Default)]
pub struct VerdictFilter {
    pub winner: Option<u32>,
    pub min_margin: Option<u32>,
    pub ties: Option<bool>,
    pub min_agreement: Option<f64>,
    pub after_item_id: Option<String>,
    pub limit: Option<i64>,
    pub with_samples: bool,
    /// With samples: leave out their text (principles, critique, raw: empty strings), which
    /// is nearly all of their bytes; what voting reads (index, scores, status, meta score)
    /// stays. For verdicts computed after reading (a re-vote) whose samples are not sent.
    pub samples_without_text: bool,
    /// With samples: only what voting reads (index, status, scores, meta score), taken from
    /// the verdict row's votes where they are stored (see [`crate::votes`]), so the sample
    /// rows are not read at all. Such samples are for voting; they are never sent out.
    pub votes_only: bool,
}

impl VerdictFilter {
    /// Whether `v` passes the verdict filters (winner, margin, ties, agreement), as the
    /// store's query applies them: for verdicts computed after reading (a re-vote).
    pub fn keeps(&self, v: &Verdict) -> bool {
        self.winner.is_none_or(|w| v.winner == Some(w as usize))
            && self.min_margin.is_none_or(|m| v.margin >= m)
            && self.ties.is_none_or(|t| v.tie == t)
            && self.min_agreement.is_none_or(|a| v.agreement >= a)
    }
}

pub(crate) fn sample_from_row(r: &PgRow) -> Result<(String, Sample)> {
    let item_id: String = r.try_get("item_id")?;
    let index: i32 = r.try_get("sample_index")?;
    let what = || format!("sample {index} of item {item_id}");
    let status: String = r.try_get("status")?;
    let status = match status.as_str() {
        "valid" => ParseStatus::Valid,
        "forced" => ParseStatus::Forced,
        "invalid" => {
            let f: Option<serde_json::Value> = r.try_get("failure")?;
            let f: ParseFailure = match f {
                Some(v) => serde_json::from_value(v).map_err(|e| corrupt(what(), e))?,
                None => ParseFailure::NoScoreBlock,
            };
            ParseStatus::Invalid(f)
        }
        other => return Err(corrupt(what(), format!("status {other:?}"))),
    };
    let finish: String = r.try_get("finish")?;
    let finish = match finish.as_str() {
        "eos" => FinishReason::Eos,
        "score_block" => FinishReason::ScoreBlock,
        "length" => FinishReason::Length,
        other => return Err(corrupt(what(), format!("finish {other:?}"))),
    };
    let perm: Vec<i32> = r.try_get("permutation")?;
    let scores: Option<Vec<i16>> = r.try_get("scores")?;
    let sample = Sample {
        index: index as u32,
        permutation: perm.into_iter().map(|x| x as u32).collect(),
        principles: r.try_get("principles")?,
        critique: r.try_get("critique")?,
        scores: scores.map(|s| s.into_iter().map(|x| x as u8).collect()),
        status,
        finish,
        prompt_tokens: r.try_get::<i32, _>("prompt_tokens")? as u32,
        completion_tokens: r.try_get::<i32, _>("completion_tokens")? as u32,
        meta_score: r.try_get("meta_score")?,
        raw: r.try_get("raw")?,
    };
    Ok((item_id, sample))
}

fn record_from_row(r: &PgRow, samples: Vec<Sample>) -> Result<VerdictRecord> {
    let item_id: String = r.try_get("item_id")?;
    let item: serde_json::Value = r.try_get("item")?;
    let item: Item = serde_json::from_value(item).map_err(|e| corrupt(format!("item {item_id}"), e))?;
    let summed: Vec<i32> = r.try_get("summed")?;
    let winner: Option<i32> = r.try_get("winner")?;
    let verdict = Verdict {
        summed: summed.into_iter().map(|x| x as u32).collect(),
        mean: r.try_get("mean")?,
        sample_scores: samples.iter().map(|s| s.valid_scores().map(<[u8]>::to_vec)).collect(),
        winner: winner.map(|w| w as usize),
        margin: r.try_get::<i32, _>("margin")? as u32,
        tie: r.try_get("tie")?,
        valid: r.try_get::<i32, _>("valid")? as u32,
        agreement: r.try_get("agreement")?,
        stopped: r.try_get::<Option<String>, _>("stopped")?.as_deref().and_then(Stopped::from_name),
    };
    let agrees_with_reference = match (item.reference_winner, verdict.winner) {
        (Some(a), Some(b)) => Some(a == b),
        _ => None,
    };
    Ok(VerdictRecord {
        id: item.id.clone(),
        key: r.try_get("key")?,
        judge: r.try_get("judge")?,
        fingerprint: r.try_get("fingerprint")?,
        meta_fingerprint: r.try_get("meta_fingerprint")?,
        template: r.try_get("template")?,
        prompt: item.prompt,
        responses: item.responses,
        verdict,
        reference_winner: item.reference_winner,
        agrees_with_reference,
        metadata: item.metadata,
        samples,
    })
}

const SAMPLE_COLUMNS: &str = "item_id, sample_index, permutation, principles, critique, scores, status, failure, finish, prompt_tokens, completion_tokens, meta_score, raw";
const SAMPLE_COLUMNS_WITHOUT_TEXT: &str = "item_id, sample_index, permutation, '' AS principles, '' AS critique, scores, status, failure, finish, prompt_tokens, completion_tokens, meta_score, '' AS raw";

impl Store {
    pub async fn get_verdict(&self, job_id: Uuid, item_id: &str) -> Result<VerdictRecord> {
        let mut found = self
            .query_verdicts(
                job_id,
                &VerdictFilter { after_item_id: None, limit: None, with_samples: true, ..Default::default() },
                Some(item_id),
            )
            .await?;
        found.pop().ok_or_else(|| StoreError::NotFound(format!("verdict for item {item_id} of job {job_id}")))
    }

    /// Verdicts of a job matching the filter, in item-id order. The page's start is an
    /// index condition (`item_id > after`, '' when none) in every plan, the generic one
    /// included: written as `$6 IS NULL OR item_id > $6` it was a filter there, and each page
    /// of a 100k-item job read all the job's verdicts again. It is stated for the items too:
    /// Postgres does not carry an inequality across the join, and the merge join it picks
    /// then read the job's items from the first one on every page (quadratic in the job).
    pub async fn query_verdicts(&self, job_id: Uuid, f: &VerdictFilter, only_item: Option<&str>) -> Result<Vec<VerdictRecord>> {
        let rows = sqlx::query(
            "SELECT v.item_id, v.key, v.judge, v.fingerprint, v.meta_fingerprint, v.template, v.summed, v.mean, v.winner, v.margin, v.tie, v.valid, v.agreement, v.stopped, i.item,
                    CASE WHEN $9 THEN v.votes END AS votes, CASE WHEN $9 THEN v.vote_meta END AS vote_meta
             FROM verdicts v JOIN items i ON i.job_id = v.job_id AND i.item_id = v.item_id
             WHERE v.job_id = $1
               AND ($2::int IS NULL OR v.winner = $2)
               AND ($3::int IS NULL OR v.margin >= $3)
               AND ($4::bool IS NULL OR v.tie = $4)
               AND ($5::float8 IS NULL OR v.agreement >= $5)
               AND v.item_id > COALESCE($6::text, '')
               AND i.item_id > COALESCE($6::text, '')
               AND ($7::text IS NULL OR v.item_id = $7)
             ORDER BY v.item_id
             LIMIT $8",
        )
        .bind(job_id)
        .bind(f.winner.map(|x| x as i32))
        .bind(f.min_margin.map(|x| x as i32))
        .bind(f.ties)
        .bind(f.min_agreement)
        .bind(f.after_item_id.as_deref())
        .bind(only_item)
        .bind(f.limit.unwrap_or(i64::MAX))
        .bind(f.with_samples && f.votes_only)
        .fetch_all(&self.pool)
        .await?;
        let mut samples: HashMap<String, Vec<Sample>> = HashMap::new();
        // Items whose samples come from the sample rows: every one, unless its votes do.
        let mut from_rows: Vec<String> = Vec::new();
        if f.with_samples {
            for r in &rows {
                let id: String = r.try_get("item_id")?;
                match r.try_get::<Option<Vec<i16>>, _>("votes")? {
                    Some(votes) => {
                        let meta: Option<Vec<Option<f32>>> = r.try_get("vote_meta")?;
                        let n = r.try_get::<Vec<i32>, _>("summed")?.len();
                        let decoded = crate::votes::decode(&votes, meta.as_deref(), n, || format!("votes of item {id}"))?;
                        samples.insert(id, decoded);
                    }
                    // Not asked for, or stored before votes were kept.
                    None => from_rows.push(id),
                }
            }
        }
        if !from_rows.is_empty() {
            let ids = from_rows;
            let columns = if f.samples_without_text || f.votes_only { SAMPLE_COLUMNS_WITHOUT_TEXT } else { SAMPLE_COLUMNS };
            let srows = sqlx::query(&format!("SELECT {columns} FROM samples WHERE job_id = $1 AND item_id = ANY($2) ORDER BY item_id, sample_index"))
            .bind(job_id)
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?;
            for r in &srows {
                let (id, s) = sample_from_row(r)?;
                samples.entry(id).or_default().push(s);
            }
        }
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("item_id")?;
                record_from_row(r, samples.remove(&id).unwrap_or_default())
            })
            .collect()
    }
}
