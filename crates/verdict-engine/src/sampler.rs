//! Token choice from one row of logits: greedy at temperature 0, else temperature and
//! nucleus (top-p) sampling from the sequence's own seeded RNG, so a sample's tokens depend
//! only on (seed, item, sample index) and never on what else is in the batch.

use verdict_core::shuffle::SplitMix64;

#[derive(Debug, Clone, Copy)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_p: f32,
}

fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best
}

/// Choose one index of `logits` (restricted to the first `vocab` entries).
pub fn sample(logits: &[f32], vocab: usize, params: SamplingParams, rng: &mut SplitMix64) -> usize {
    let logits = &logits[..vocab.min(logits.len())];
    if params.temperature <= 0.0 {
        return argmax(logits);
    }
    let max = logits[argmax(logits)];
    let inv_t = 1.0 / params.temperature;
    let mut probs: Vec<f32> = logits.iter().map(|&x| ((x - max) * inv_t).exp()).collect();
    let total: f32 = probs.iter().sum();
    for p in probs.iter_mut() {
        *p /= total;
    }
    let u = rng.next_f64() as f32;
    if params.top_p >= 1.0 {
        let mut acc = 0.0;
        for (i, &p) in probs.iter().enumerate() {
            acc += p;
            if u < acc {
                return i;
            }
        }
        return argmax(logits);
    }
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_unstable_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    let mut kept = 0.0;
    let mut cut = order.len();
    for (rank, &i) in order.iter().enumerate() {
        kept += probs[i];
        if kept >= params.top_p {
            cut = rank + 1;
            break;
        }
    }
    let target = u * kept;
    let mut acc = 0.0;
    for &i in &order[..cut] {
        acc += probs[i];
        if target < acc {
            return i;
        }
    }
    order[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_and_top_p() {
        let mut rng = SplitMix64::new(1);
        let logits = [0.0, 3.0, 1.0, 2.9];
        let greedy = SamplingParams { temperature: 0.0, top_p: 1.0 };
        assert_eq!(sample(&logits, 4, greedy, &mut rng), 1);
        assert_eq!(sample(&logits, 1, greedy, &mut rng), 0, "ids past the vocabulary are never chosen");
        let tight = SamplingParams { temperature: 1.0, top_p: 0.01 };
        for _ in 0..50 {
            assert_eq!(sample(&logits, 4, tight, &mut rng), 1);
        }
        let hot = SamplingParams { temperature: 1.0, top_p: 1.0 };
        let picks: std::collections::HashSet<_> = (0..200).map(|_| sample(&logits, 4, hot, &mut rng)).collect();
        assert!(picks.len() >= 3);
    }
}
