//! Aggregation of samples into a verdict.
//!
//! Voting is DeepSeek-GRM's Eq. 14: a response's score is the sum of its pointwise scores
//! over the valid samples; the winner is the argmax, ties broken by a seeded random
//! permutation of the responses. Meta-RM guided voting first keeps the k_meta valid samples
//! with the highest meta-RM score. Both take any slice of samples, so voting@k' for k' ≤ k
//! is `vote(&samples[..k'], ..)`.

use crate::shuffle::{mix, permutation, TIE_TAG};
use crate::{Aggregation, LabelSpec, Sample, Verdict};

/// Aggregate an item's samples as its spec says, with the tie-break seeded by the spec seed
/// and the item's own seed (`ContentKey::of_item(..).seed_bits()`).
pub fn aggregate(spec: &LabelSpec, item_seed: u64, n: usize, samples: &[Sample]) -> Verdict {
    let tie_seed = mix(&[spec.seed, item_seed]);
    match spec.aggregation {
        Aggregation::Voting => vote(samples, n, tie_seed),
        Aggregation::MetaRm { .. } => meta_vote(samples, n, spec.k_meta() as usize, tie_seed),
    }
}

/// Vote over `samples` for an item with `n` responses. `tie_seed` fixes the tie-break order
/// (derive it from the spec seed and the item key so re-aggregation is reproducible).
pub fn vote(samples: &[Sample], n: usize, tie_seed: u64) -> Verdict {
    let valid: Vec<&[u8]> = samples.iter().filter_map(Sample::valid_scores).collect();
    let mut summed = vec![0u32; n];
    for scores in &valid {
        for (acc, &s) in summed.iter_mut().zip(scores.iter()) {
            *acc += s as u32;
        }
    }
    let sample_scores = samples.iter().map(|s| s.valid_scores().map(<[u8]>::to_vec)).collect();

    if valid.is_empty() {
        return Verdict {
            summed,
            mean: vec![0.0; n],
            sample_scores,
            winner: None,
            margin: 0,
            tie: false,
            valid: 0,
            agreement: 0.0,
            stopped: None,
        };
    }

    let top = summed.iter().copied().max().unwrap_or(0);
    let tied: Vec<usize> = (0..n).filter(|&i| summed[i] == top).collect();
    let order = permutation(n, mix(&[TIE_TAG, tie_seed]));
    let winner = order
        .iter()
        .map(|&i| i as usize)
        .find(|i| tied.contains(i))
        .unwrap_or(tied[0]);
    let second = (0..n).filter(|&i| i != winner).map(|i| summed[i]).max().unwrap_or(0);
    let agree = valid
        .iter()
        .filter(|s| s.iter().copied().max() == Some(s[winner]))
        .count();

    Verdict {
        mean: summed.iter().map(|&s| s as f64 / valid.len() as f64).collect(),
        summed,
        sample_scores,
        winner: Some(winner),
        margin: top - second.min(top),
        tie: tied.len() > 1,
        valid: valid.len() as u32,
        agreement: agree as f64 / valid.len() as f64,
        stopped: None,
    }
}

/// Meta-RM guided voting: keep the `k_meta` valid samples with the highest meta score
/// (ties by sample index), then vote over those. Samples without a meta score rank last.
pub fn meta_vote(samples: &[Sample], n: usize, k_meta: usize, tie_seed: u64) -> Verdict {
    let mut ranked: Vec<&Sample> = samples.iter().filter(|s| s.status.is_valid()).collect();
    ranked.sort_by(|a, b| {
        let (x, y) = (a.meta_score.unwrap_or(f32::NEG_INFINITY), b.meta_score.unwrap_or(f32::NEG_INFINITY));
        y.total_cmp(&x).then(a.index.cmp(&b.index))
    });
    let kept: Vec<Sample> = ranked.into_iter().take(k_meta).cloned().collect();
    vote(&kept, n, tie_seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FinishReason, ParseStatus};
    use proptest::prelude::*;

    fn sample(index: u32, scores: Option<Vec<u8>>, meta: Option<f32>) -> Sample {
        let n = scores.as_ref().map(|s| s.len()).unwrap_or(2);
        Sample {
            index,
            permutation: (0..n as u32).collect(),
            principles: String::new(),
            critique: String::new(),
            status: if scores.is_some() { ParseStatus::Valid } else { ParseStatus::Invalid(crate::ParseFailure::NoScoreBlock) },
            scores,
            finish: FinishReason::Eos,
            prompt_tokens: 0,
            completion_tokens: 0,
            meta_score: meta,
            raw: String::new(),
        }
    }

    #[test]
    fn sums_valid_samples_only() {
        let s = vec![sample(0, Some(vec![8, 3]), None), sample(1, None, None), sample(2, Some(vec![6, 7]), None)];
        let v = vote(&s, 2, 0);
        assert_eq!(v.summed, vec![14, 10]);
        assert_eq!(v.winner, Some(0));
        assert_eq!(v.margin, 4);
        assert_eq!(v.valid, 2);
        assert!(!v.tie);
        assert_eq!(v.agreement, 0.5);
        assert_eq!(v.sample_scores[1], None);
        assert_eq!(v.mean, vec![7.0, 5.0]);
    }

    #[test]
    fn no_valid_sample_means_no_winner() {
        let v = vote(&[sample(0, None, None)], 2, 0);
        assert_eq!(v.winner, None);
        assert_eq!(v.valid, 0);
    }

    #[test]
    fn ties_are_broken_by_the_seed_and_both_sides_win_sometimes() {
        let s = vec![sample(0, Some(vec![5, 5]), None)];
        let winners: Vec<_> = (0..64).map(|seed| vote(&s, 2, seed).winner.unwrap()).collect();
        assert!(winners.contains(&0) && winners.contains(&1));
        assert!(vote(&s, 2, 9).tie);
        // Pinned: the tie-break is part of every stored verdict, so it must not drift.
        let pinned: Vec<usize> = (0..8).map(|seed| vote(&s, 2, seed).winner.unwrap()).collect();
        assert_eq!(pinned, [0, 0, 1, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn meta_voting_keeps_the_best_rated_samples() {
        let s = vec![
            sample(0, Some(vec![1, 10]), Some(-3.0)),
            sample(1, Some(vec![9, 2]), Some(2.0)),
            sample(2, Some(vec![8, 4]), Some(1.0)),
            sample(3, None, Some(99.0)),
        ];
        let v = meta_vote(&s, 2, 2, 0);
        assert_eq!(v.summed, vec![17, 6]);
        assert_eq!(v.valid, 2);
        assert_eq!(vote(&s, 2, 0).summed, vec![18, 16]);
    }

    proptest! {
        #[test]
        fn winner_has_the_top_sum_and_margin_is_consistent(
            rows in prop::collection::vec(prop::option::of(prop::collection::vec(1u8..=10, 3)), 1..12),
            seed in any::<u64>(),
        ) {
            let samples: Vec<Sample> = rows.iter().enumerate().map(|(i, r)| sample(i as u32, r.clone(), None)).collect();
            let v = vote(&samples, 3, seed);
            let valid = rows.iter().filter(|r| r.is_some()).count();
            prop_assert_eq!(v.valid as usize, valid);
            if let Some(w) = v.winner {
                let top = *v.summed.iter().max().unwrap();
                prop_assert_eq!(v.summed[w], top);
                let others: Vec<u32> = (0..3).filter(|&i| i != w).map(|i| v.summed[i]).collect();
                prop_assert_eq!(v.margin, top - others.iter().max().unwrap());
                prop_assert_eq!(v.tie, v.margin == 0);
                // The winner by sum need not top any single sample, so agreement can be 0.
                prop_assert!((0.0..=1.0).contains(&v.agreement));
            } else {
                prop_assert_eq!(valid, 0);
            }
            // Summation order does not matter.
            let mut rev = samples.clone();
            rev.reverse();
            prop_assert_eq!(vote(&rev, 3, seed).summed, v.summed.clone());
        }

        #[test]
        fn meta_voting_with_k_meta_k_equals_voting(
            rows in prop::collection::vec(prop::collection::vec(1u8..=10, 2), 1..10),
            metas in prop::collection::vec(-5.0f32..5.0, 10),
        ) {
            let samples: Vec<Sample> = rows.iter().enumerate().map(|(i, r)| sample(i as u32, Some(r.clone()), Some(metas[i]))).collect();
            let all = meta_vote(&samples, 2, samples.len(), 1);
            prop_assert_eq!(all.summed, vote(&samples, 2, 1).summed);
            let one = meta_vote(&samples, 2, 1, 1);
            prop_assert_eq!(one.valid, 1);
        }
    }
}
