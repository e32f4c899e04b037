//! Recording what workers report: verdicts with their samples, and items that produced no
//! verdict. One transaction per report, so a report is stored whole or not at all; [`record`]
//! runs on any connection (inside a caller's transaction it is a savepoint), and
//! [`Store::record`] on the pool.

use sqlx::{Connection, PgConnection};
use uuid::Uuid;
use verdict_core::{FinishReason, ParseStatus, VerdictRecord};

use crate::extend::complete_extensions;
use crate::{array_literal, corrupt, Result, Store};

/// The statements of a report that touch items, by primary key only: a report's cost
/// never grows with its job (`tests/store.rs` checks their plans in a large job).
pub mod per_report {
    /// Items with a verdict are done (`$1` jobs, `$2` item ids); cancelled ones stay so.
    pub const MARK_DONE: &str = "UPDATE items SET state = 'done', error = NULL, entry_id = NULL, updated_at = now()
         FROM UNNEST($1::uuid[], $2::text[]) AS u(job_id, item_id)
         WHERE items.job_id = u.job_id AND items.item_id = u.item_id AND items.state <> 'cancelled'";
    /// Items that produced no verdict (`$3` state, `$4` error); a failure never overwrites
    /// a verdict: an item done by one delivery stays done if a stale delivery of it is later
    /// declared dead.
    pub const MARK_FAILED: &str = "UPDATE items SET state = u.state, error = u.error, entry_id = NULL, updated_at = now()
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[]) AS u(job_id, item_id, state, error)
         WHERE items.job_id = u.job_id AND items.item_id = u.item_id AND items.state = 'queued'";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The item cannot be judged (e.g. too long); retrying will not help.
    Rejected,
    /// Delivered too many times without a result.
    Dead,
    /// Its job was cancelled.
    Cancelled,
}

impl FailureKind {
    fn state(self) -> &'static str {
        match self {
            FailureKind::Rejected => "rejected",
            FailureKind::Dead => "dead",
            FailureKind::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: FailureKind,
    pub error: String,
}

/// One item's outcome.
#[derive(Debug, Clone)]
pub enum Outcome {
    Verdict { job_id: Uuid, record: Box<VerdictRecord>, worker: String },
    Failure { job_id: Uuid, item_id: String, failure: Failure },
}

/// Postgres text cannot hold NUL characters; a judge can still generate them. Replace
/// them with U+FFFD so the rest of the judgement is kept.
fn clean(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s.to_string()
    }
}

fn status_name(s: &ParseStatus) -> &'static str {
    match s {
        ParseStatus::Valid => "valid",
        ParseStatus::Forced => "forced",
        ParseStatus::Invalid(_) => "invalid",
    }
}

fn finish_name(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Eos => "eos",
        FinishReason::ScoreBlock => "score_block",
        FinishReason::Length => "length",
    }
}

#[derive(Default)]
struct SampleColumns {
    job: Vec<Uuid>,
    item: Vec<String>,
    index: Vec<i32>,
    permutation: Vec<String>,
    principles: Vec<String>,
    critique: Vec<String>,
    scores: Vec<Option<String>>,
    status: Vec<&'static str>,
    failure: Vec<Option<serde_json::Value>>,
    finish: Vec<&'static str>,
    prompt_tokens: Vec<i32>,
    completion_tokens: Vec<i32>,
    meta: Vec<Option<f32>>,
    raw: Vec<String>,
}

#[derive(Default)]
struct VerdictColumns {
    job: Vec<Uuid>,
    item: Vec<String>,
    key: Vec<String>,
    judge: Vec<String>,
    fingerprint: Vec<String>,
    meta_fingerprint: Vec<Option<String>>,
    template: Vec<String>,
    summed: Vec<String>,
    mean: Vec<String>,
    winner: Vec<Option<i32>>,
    margin: Vec<i32>,
    tie: Vec<bool>,
    valid: Vec<i32>,
    agreement: Vec<f64>,
    worker: Vec<String>,
    stopped: Vec<Option<&'static str>>,
    votes: Vec<String>,
    vote_meta: Vec<Option<String>>,
}

impl Store {
    /// [`record`] on a connection of the pool.
    pub async fn record(&self, outcomes: &[Outcome]) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        record(&mut conn, outcomes).await
    }
}

/// Store a report: upsert verdicts and samples, mark items done; mark failed items.
/// Items of cancelled jobs stay cancelled (a late verdict is still kept).
/// An extension's report (samples from index k of the earlier run on) stores its new
/// samples and a verdict voted over all of the item's samples, read in the same
/// transaction.
pub async fn record(conn: &mut PgConnection, outcomes: &[Outcome]) -> Result<()> {
    let records: Vec<(Uuid, &VerdictRecord)> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Verdict { job_id, record, .. } => Some((*job_id, record.as_ref())),
            Outcome::Failure { .. } => None,
        })
        .collect();
    let mut tx = conn.begin().await?;
    let mut voted = complete_extensions(&mut tx, &records).await?.into_iter();
    let mut s = SampleColumns::default();
    let mut v = VerdictColumns::default();
    let (mut f_job, mut f_item, mut f_state, mut f_error) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for o in outcomes {
        match o {
            Outcome::Verdict { job_id, record, worker } => {
                let r = record.as_ref();
                for smp in &r.samples {
                    s.job.push(*job_id);
                    s.item.push(r.id.clone());
                    s.index.push(smp.index as i32);
                    s.permutation.push(array_literal(&smp.permutation));
                    s.principles.push(clean(&smp.principles));
                    s.critique.push(clean(&smp.critique));
                    s.scores.push(smp.scores.as_ref().map(|x| array_literal(x)));
                    s.status.push(status_name(&smp.status));
                    s.failure.push(match &smp.status {
                        ParseStatus::Invalid(f) => Some(serde_json::to_value(f).map_err(|e| corrupt("parse failure", e))?),
                        _ => None,
                    });
                    s.finish.push(finish_name(smp.finish));
                    s.prompt_tokens.push(smp.prompt_tokens as i32);
                    s.completion_tokens.push(smp.completion_tokens as i32);
                    s.meta.push(smp.meta_score);
                    s.raw.push(clean(&smp.raw));
                }
                let whole = voted.next().flatten();
                let (vd, all_samples) = whole.as_ref().map_or((&r.verdict, &r.samples), |(v, s)| (v, s));
                let (votes, vote_meta) = crate::votes::encode(all_samples, r.responses.len());
                v.votes.push(votes);
                v.vote_meta.push(vote_meta);
                v.job.push(*job_id);
                v.item.push(r.id.clone());
                v.key.push(r.key.clone());
                v.judge.push(r.judge.clone());
                v.fingerprint.push(r.fingerprint.clone());
                v.meta_fingerprint.push(r.meta_fingerprint.clone());
                v.template.push(r.template.clone());
                v.summed.push(array_literal(&vd.summed));
                v.mean.push(array_literal(&vd.mean));
                v.winner.push(vd.winner.map(|w| w as i32));
                v.margin.push(vd.margin as i32);
                v.tie.push(vd.tie);
                v.valid.push(vd.valid as i32);
                v.agreement.push(vd.agreement);
                v.worker.push(worker.clone());
                v.stopped.push(vd.stopped.map(|s| s.name()));
            }
            Outcome::Failure { job_id, item_id, failure } => {
                f_job.push(*job_id);
                f_item.push(item_id.clone());
                f_state.push(failure.kind.state());
                f_error.push(failure.error.clone());
            }
        }
    }

    if !v.job.is_empty() {
        sqlx::query(
            "INSERT INTO verdicts (job_id, item_id, key, judge, template, summed, mean, winner, margin, tie, valid, agreement, worker, fingerprint, meta_fingerprint, stopped, votes, vote_meta)
             SELECT job_id, item_id, key, judge, template, summed::int[], mean::float8[], winner, margin, tie, valid, agreement, worker, fingerprint, meta_fingerprint, stopped, votes::smallint[], vote_meta::real[]
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int[], $9::int[], $10::bool[], $11::int[], $12::float8[], $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[])
               AS u(job_id, item_id, key, judge, template, summed, mean, winner, margin, tie, valid, agreement, worker, fingerprint, meta_fingerprint, stopped, votes, vote_meta)
             ON CONFLICT (job_id, item_id) DO UPDATE SET
               key = EXCLUDED.key, judge = EXCLUDED.judge, fingerprint = EXCLUDED.fingerprint, meta_fingerprint = EXCLUDED.meta_fingerprint,
               template = EXCLUDED.template, summed = EXCLUDED.summed,
               mean = EXCLUDED.mean, winner = EXCLUDED.winner, margin = EXCLUDED.margin, tie = EXCLUDED.tie,
               valid = EXCLUDED.valid, agreement = EXCLUDED.agreement, worker = EXCLUDED.worker, stopped = EXCLUDED.stopped,
               votes = EXCLUDED.votes, vote_meta = EXCLUDED.vote_meta",
        )
        .bind(&v.job)
        .bind(&v.item)
        .bind(&v.key)
        .bind(&v.judge)
        .bind(&v.template)
        .bind(&v.summed)
        .bind(&v.mean)
        .bind(&v.winner)
        .bind(&v.margin)
        .bind(&v.tie)
        .bind(&v.valid)
        .bind(&v.agreement)
        .bind(&v.worker)
        .bind(&v.fingerprint)
        .bind(&v.meta_fingerprint)
        .bind(&v.stopped)
        .bind(&v.votes)
        .bind(&v.vote_meta)
        .execute(&mut *tx)
        .await?;
        sqlx::query(per_report::MARK_DONE)
        .bind(&v.job)
        .bind(&v.item)
        .execute(&mut *tx)
        .await?;
    }
    if !s.job.is_empty() {
        sqlx::query(
            "INSERT INTO samples (job_id, item_id, sample_index, permutation, principles, critique, scores, status, failure, finish, prompt_tokens, completion_tokens, meta_score, raw)
             SELECT job_id, item_id, sample_index, permutation::int[], principles, critique, scores::smallint[], status, failure, finish, prompt_tokens, completion_tokens, meta_score, raw
             FROM UNNEST($1::uuid[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::jsonb[], $10::text[], $11::int[], $12::int[], $13::real[], $14::text[])
               AS u(job_id, item_id, sample_index, permutation, principles, critique, scores, status, failure, finish, prompt_tokens, completion_tokens, meta_score, raw)
             ON CONFLICT (job_id, item_id, sample_index) DO UPDATE SET
               permutation = EXCLUDED.permutation, principles = EXCLUDED.principles, critique = EXCLUDED.critique,
               scores = EXCLUDED.scores, status = EXCLUDED.status, failure = EXCLUDED.failure, finish = EXCLUDED.finish,
               prompt_tokens = EXCLUDED.prompt_tokens, completion_tokens = EXCLUDED.completion_tokens,
               meta_score = EXCLUDED.meta_score, raw = EXCLUDED.raw",
        )
        .bind(&s.job)
        .bind(&s.item)
        .bind(&s.index)
        .bind(&s.permutation)
        .bind(&s.principles)
        .bind(&s.critique)
        .bind(&s.scores)
        .bind(&s.status)
        .bind(&s.failure)
        .bind(&s.finish)
        .bind(&s.prompt_tokens)
        .bind(&s.completion_tokens)
        .bind(&s.meta)
        .bind(&s.raw)
        .execute(&mut *tx)
        .await?;
    }
    if !f_job.is_empty() {
        sqlx::query(per_report::MARK_FAILED)
        .bind(&f_job)
        .bind(&f_item)
        .bind(&f_state)
        .bind(&f_error)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
