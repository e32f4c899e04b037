//! Token choice from one row of logits: greedy at temperature 0, else temperature and
//! nucleus (top-p) sampling driven by one uniform draw from the sequence's own seeded RNG,
//! so a sample's tokens depend only on (seed, item, sample index) and the logits, never on
//! what else is in the batch.
//!
//! The algorithm is the one the CUDA kernel runs (kernels/verdict.cu, `verdict_sample_f32`),
//! chosen because it needs no sort and so parallelizes over the vocabulary:
//! weights `w_i = exp((x_i - max) / T)`; top-p keeps `{w_i >= t}` for the largest `t` whose
//! kept mass is at least `top_p` of the total (found by 32 rounds of bisection, which is the
//! sorted-prefix rule of nucleus sampling up to ties); the token is the first index, in index
//! order, where the running kept mass passes `u` times the kept mass.

#[derive(Debug, Clone, Copy)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_p: f32,
}

/// Index of the largest value, the lowest index among equals.
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best
}

/// Choose one index of `logits` (restricted to the first `vocab` entries) with the uniform
/// draw `u` in [0, 1).
pub fn sample(logits: &[f32], vocab: usize, params: SamplingParams, u: f32) -> usize {
    let logits = &logits[..vocab.min(logits.len())];
    if logits.is_empty() {
        return 0;
    }
    let best = argmax(logits);
    if params.temperature <= 0.0 || logits[best] == f32::NEG_INFINITY {
        return best;
    }
    let max = logits[best];
    let inv_t = 1.0 / params.temperature;
    let w: Vec<f32> = logits.iter().map(|&x| ((x - max) * inv_t).exp()).collect();
    let total: f32 = w.iter().sum();
    let (mut t, mut kept) = (0.0f32, total);
    if params.top_p < 1.0 {
        let want = params.top_p * total;
        let (mut lo, mut hi) = (0.0f32, 1.0f32);
        for _ in 0..32 {
            let mid = 0.5 * (lo + hi);
            let m: f32 = w.iter().filter(|&&x| x >= mid).sum();
            if m >= want {
                lo = mid;
                kept = m;
            } else {
                hi = mid;
            }
        }
        t = lo;
    }
    let target = u * kept;
    let mut acc = 0.0;
    let mut last = best;
    for (i, &x) in w.iter().enumerate() {
        if x >= t {
            acc += x;
            last = i;
            if target < acc {
                return i;
            }
        }
    }
    // Rounding left the target at the very top of the mass: the last kept token.
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use verdict_core::shuffle::SplitMix64;

    #[test]
    fn greedy_and_top_p() {
        let mut rng = SplitMix64::new(1);
        let mut u = || rng.next_f64() as f32;
        let logits = [0.0, 3.0, 1.0, 2.9];
        let greedy = SamplingParams { temperature: 0.0, top_p: 1.0 };
        assert_eq!(sample(&logits, 4, greedy, u()), 1);
        assert_eq!(sample(&logits, 1, greedy, u()), 0, "ids past the vocabulary are never chosen");
        let tight = SamplingParams { temperature: 1.0, top_p: 0.01 };
        for _ in 0..50 {
            assert_eq!(sample(&logits, 4, tight, u()), 1);
        }
        // top-p 0.6 over weights ~ (0.05, 1, 0.14, 0.90): the two largest hold 0.91 of the
        // mass, so only 1 and 3 may come out.
        let nucleus = SamplingParams { temperature: 1.0, top_p: 0.6 };
        let picks: std::collections::HashSet<_> = (0..200).map(|_| sample(&logits, 4, nucleus, u())).collect();
        assert_eq!(picks, [1, 3].into_iter().collect());
        let hot = SamplingParams { temperature: 1.0, top_p: 1.0 };
        let picks: std::collections::HashSet<_> = (0..200).map(|_| sample(&logits, 4, hot, u())).collect();
        assert!(picks.len() >= 3);
    }

    #[test]
    fn frequencies_follow_the_softmax() {
        let logits = [0.0f32, 1.0, 2.0];
        let params = SamplingParams { temperature: 1.0, top_p: 1.0 };
        let mut counts = [0usize; 3];
        let n = 30_000;
        for i in 0..n {
            counts[sample(&logits, 3, params, (i as f32 + 0.5) / n as f32)] += 1;
        }
        let z: f32 = logits.iter().map(|x| x.exp()).sum();
        for (c, x) in counts.iter().zip(logits) {
            let expected = x.exp() / z;
            assert!((*c as f32 / n as f32 - expected).abs() < 1e-3, "{counts:?}");
        }
    }
}
