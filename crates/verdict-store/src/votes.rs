//! The narrow copy of an item's samples that voting reads (index, status, scores, meta
//! score), kept on its verdict's row (`verdicts.votes`, `verdicts.vote_meta`; see
//! `migrations/0004_votes.sql`). A re-vote at another k reads it instead of the sample
//! rows, which carry the judgement text and are most of the store's bytes.

use verdict_core::parse::ParseFailure;
use verdict_core::{FinishReason, ParseStatus, Sample};

use crate::{array_literal, corrupt, Result};

const VALID: i16 = 0;
const FORCED: i16 = 1;
const INVALID: i16 = 2;

/// The two columns as Postgres array literals, for an item of `n` responses; samples in
/// index order. `vote_meta` is None when no sample has a meta score.
pub(crate) fn encode(samples: &[Sample], n: usize) -> (String, Option<String>) {
    let mut sorted: Vec<&Sample> = samples.iter().collect();
    sorted.sort_by_key(|s| s.index);
    let mut flat: Vec<i16> = Vec::with_capacity(sorted.len() * (n + 2));
    for s in &sorted {
        flat.push(s.index.min(i16::MAX as u32) as i16);
        flat.push(match s.status {
            ParseStatus::Valid => VALID,
            ParseStatus::Forced => FORCED,
            ParseStatus::Invalid(_) => INVALID,
        });
        let scores = s.valid_scores().filter(|x| x.len() == n);
        flat.extend((0..n).map(|j| scores.map_or(0, |x| x[j] as i16)));
    }
    let meta = sorted.iter().any(|s| s.meta_score.is_some()).then(|| {
        let cells: Vec<String> = sorted.iter().map(|s| s.meta_score.map_or("NULL".to_string(), |m| format!("{m:?}"))).collect();
        format!("{{{}}}", cells.join(","))
    });
    (array_literal(&flat), meta)
}

/// Samples as voting sees them, rebuilt from the columns of an item of `n` responses:
/// index, status, scores and meta score. The rest is empty (no permutation, text or token
/// counts; an invalid sample's reason reads as `no_score_block`): such samples are for
/// voting only and are never sent out.
pub(crate) fn decode(flat: &[i16], meta: Option<&[Option<f32>]>, n: usize, what: impl Fn() -> String) -> Result<Vec<Sample>> {
    let stride = n + 2;
    if n == 0 || flat.len() % stride != 0 {
        return Err(corrupt(what(), format!("votes hold {} values, not a multiple of {stride}", flat.len())));
    }
    let count = flat.len() / stride;
    if meta.is_some_and(|m| m.len() != count) {
        return Err(corrupt(what(), "vote_meta does not match votes"));
    }
    flat.chunks(stride)
        .enumerate()
        .map(|(i, c)| {
            let (status, scores) = match c[1] {
                VALID => (ParseStatus::Valid, Some(c[2..].iter().map(|&x| x as u8).collect())),
                FORCED => (ParseStatus::Forced, Some(c[2..].iter().map(|&x| x as u8).collect())),
                INVALID => (ParseStatus::Invalid(ParseFailure::NoScoreBlock), None),
                other => return Err(corrupt(what(), format!("vote status {other}"))),
            };
            Ok(Sample {
                index: c[0].max(0) as u32,
                permutation: Vec::new(),
                principles: String::new(),
                critique: String::new(),
                scores,
                status,
                finish: FinishReason::ScoreBlock,
                prompt_tokens: 0,
                completion_tokens: 0,
                meta_score: meta.and_then(|m| m[i]),
                raw: String::new(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn votes_keep_what_voting_reads() {
        let mut a = Sample::from_generation(1, vec![1, 0], "\\boxed{3, 8}".into(), FinishReason::ScoreBlock, true, 5, 5);
        a.meta_score = Some(0.25);
        let b = Sample::from_generation(0, vec![0, 1], "none".into(), FinishReason::Length, false, 5, 5);
        let (flat, meta) = encode(&[a.clone(), b.clone()], 2);
        assert_eq!(flat, "{0,2,0,0,1,1,8,3}");
        assert_eq!(meta.as_deref(), Some("{NULL,0.25}"));
        let back = decode(&[0, 2, 0, 0, 1, 1, 8, 3], Some(&[None, Some(0.25)]), 2, || "x".into()).unwrap();
        assert_eq!((back[0].index, back[0].valid_scores(), back[0].status.is_valid()), (0, None, false));
        assert_eq!((back[1].index, back[1].valid_scores(), back[1].status.clone()), (1, Some(&[8u8, 3][..]), ParseStatus::Forced));
        assert_eq!(back[1].meta_score, Some(0.25));
        assert!(decode(&[0, 0, 1], None, 2, || "x".into()).is_err());
    }
}
