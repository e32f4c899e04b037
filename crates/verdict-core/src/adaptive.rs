//! Adaptive k: sample an item in rounds and stop as soon as more samples cannot change, or
//! are very unlikely to change, its winner. The spec's k is then the most samples an item
//! takes (k_max); every item takes at least `k_min`.
//!
//! Two rules, checked after each round over the valid samples so far:
//! - **settled**: the samples still allowed cannot change the winner. A sample gives each
//!   response 1–10 points, so it moves any two responses' sums at most 9 points apart; with
//!   r samples left, a lead over every other response of more than 9·r is final. It never
//!   changes a verdict's winner against the full k_max run — nor does it stop early often:
//!   a lead of 9·r needs more than half of k_max samples, near unanimous.
//! - **confident**: settled, or the leader's share of the samples that rank it first has a
//!   one-sided Wilson lower bound above one half at the confidence the user sets. This is
//!   where samples are saved; a stopped item's winner may differ from the full run's with
//!   about the probability the confidence leaves.
//!
//! Meta-RM voting keeps the best-rated samples of all k, so no early stop can bound it: the
//! spec refuses the combination.

use serde::{Deserialize, Serialize};

use crate::Sample;

/// When an item stops taking samples before the spec's k.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Adaptive {
    /// Samples every item takes before the first check.
    pub k_min: u32,
    /// Samples taken between checks.
    pub round: u32,
    pub stop: StopRule,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum StopRule {
    /// The samples still allowed cannot change the winner.
    Settled,
    /// Settled, or the lower bound of the leader's share of first places is above one half
    /// at this confidence (in (0.5, 1)).
    Confident { confidence: f64 },
}

/// Why an item took the samples it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stopped {
    /// The winner could no longer change.
    Settled,
    /// The leader's share was confidently above one half.
    Confident,
    /// All k samples were taken.
    KMax,
}

impl Stopped {
    pub fn name(self) -> &'static str {
        match self {
            Stopped::Settled => "settled",
            Stopped::Confident => "confident",
            Stopped::KMax => "k_max",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "settled" => Some(Stopped::Settled),
            "confident" => Some(Stopped::Confident),
            "k_max" => Some(Stopped::KMax),
            _ => None,
        }
    }
}

/// The most points one sample moves two responses' sums apart (scores are 1–10).
pub const MAX_SWING: u32 = 9;

impl Adaptive {
    /// How many samples to take next, having taken `taken` of at most `k`: 0 when done.
    pub fn next_round(&self, taken: u32, k: u32) -> u32 {
        let want = if taken == 0 { self.k_min } else { self.round };
        want.min(k.saturating_sub(taken))
    }

    /// Whether an item with `samples` (its first ones, in index order) over `n` responses
    /// may stop, at most `k` samples in all.
    pub fn check(&self, samples: &[Sample], n: usize, k: u32) -> Option<Stopped> {
        let taken = samples.len() as u32;
        if taken >= k {
            return Some(Stopped::KMax);
        }
        if taken < self.k_min {
            return None;
        }
        let summed = sums(samples, n);
        let leader = leader(&summed)?;
        let left = k - taken;
        let lead = summed.iter().enumerate().filter(|&(i, _)| i != leader).map(|(_, &s)| summed[leader] as i64 - s as i64).min().unwrap_or(i64::MAX);
        if lead > (MAX_SWING * left) as i64 {
            return Some(Stopped::Settled);
        }
        if let StopRule::Confident { confidence } = self.stop {
            let (wins, valid) = first_places(samples, leader);
            if valid > 0.0 && wilson_lower(wins / valid, valid, normal_quantile(confidence)) > 0.5 {
                return Some(Stopped::Confident);
            }
        }
        None
    }
}

fn sums(samples: &[Sample], n: usize) -> Vec<u32> {
    let mut summed = vec![0u32; n];
    for scores in samples.iter().filter_map(Sample::valid_scores) {
        for (acc, &s) in summed.iter_mut().zip(scores) {
            *acc += s as u32;
        }
    }
    summed
}

/// The response with the strictly highest sum; none while the top is shared (a tie is
/// drawn by the seed, so it is never settled).
fn leader(summed: &[u32]) -> Option<usize> {
    let top = *summed.iter().max()?;
    let mut at_top = summed.iter().enumerate().filter(|&(_, &s)| s == top);
    let (i, _) = at_top.next()?;
    at_top.next().is_none().then_some(i)
}

/// First places of `leader` over the valid samples, a shared first place counting as a
/// share, and the number of valid samples.
fn first_places(samples: &[Sample], leader: usize) -> (f64, f64) {
    let (mut wins, mut valid) = (0.0, 0.0);
    for scores in samples.iter().filter_map(Sample::valid_scores) {
        valid += 1.0;
        let top = scores.iter().copied().max().unwrap_or(0);
        if scores.get(leader) == Some(&top) {
            wins += 1.0 / scores.iter().filter(|&&s| s == top).count() as f64;
        }
    }
    (wins, valid)
}

/// The Wilson score interval's lower bound for a share `p` of `n` trials at `z`.
pub fn wilson_lower(p: f64, n: f64, z: f64) -> f64 {
    let z2 = z * z;
    (p + z2 / (2.0 * n) - z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt()) / (1.0 + z2 / n)
}

/// The standard normal quantile (Acklam's rational approximation; relative error below
/// 1.2e-9 over (0, 1)).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [-3.969683028665376e1, 2.209460984245205e2, -2.759285104469687e2, 1.383577518672690e2, -3.066479806614716e1, 2.506628277459239];
    const B: [f64; 5] = [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] = [-7.784894002430293e-3, -3.223964580411365e-1, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    let tail = |q: f64| (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5]) / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0);
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{vote, FinishReason};

    fn sample(index: u32, scores: Option<[u8; 2]>) -> Sample {
        let raw = match scores {
            Some([a, b]) => format!("Scores: \\boxed{{{a}, {b}}}"),
            None => "no scores".to_string(),
        };
        Sample::from_generation(index, vec![0, 1], raw, FinishReason::Eos, false, 10, 10)
    }

    fn settled(k_min: u32) -> Adaptive {
        Adaptive { k_min, round: 2, stop: StopRule::Settled }
    }

    #[test]
    fn quantiles_and_bounds_are_the_textbook_ones() {
        assert!((normal_quantile(0.975) - 1.959964).abs() < 1e-5);
        assert!((normal_quantile(0.95) - 1.644854).abs() < 1e-5);
        assert!((normal_quantile(0.5)).abs() < 1e-12);
        assert!((normal_quantile(0.001) + 3.090232).abs() < 1e-5);
        // 8 of 8 at z = 1.645: about 0.747.
        assert!((wilson_lower(1.0, 8.0, 1.644854) - 0.7471).abs() < 1e-3);
    }

    #[test]
    fn settled_stops_only_when_the_samples_left_cannot_change_the_winner() {
        let a = settled(2);
        // 10:1 each time: a lead of 9 a sample. At k = 8, after t samples the lead is 9t and
        // the samples left can swing 9(8 - t): final only past t = 4.
        let unanimous: Vec<Sample> = (0..8).map(|i| sample(i, Some([10, 1]))).collect();
        assert_eq!(a.check(&unanimous[..2], 2, 8), None);
        assert_eq!(a.check(&unanimous[..4], 2, 8), None, "a lead of exactly 9·r is not final: it can end in a tie");
        assert_eq!(a.check(&unanimous[..5], 2, 8), Some(Stopped::Settled));
        assert_eq!(a.check(&unanimous[..1], 2, 8), None, "never before k_min");
        assert_eq!(a.check(&unanimous, 2, 8), Some(Stopped::KMax));
        // A close item runs to k_max.
        let close: Vec<Sample> = (0..7).map(|i| sample(i, Some(if i % 2 == 0 { [6, 5] } else { [5, 6] }))).collect();
        assert_eq!(a.check(&close, 2, 8), None);
        // A tie at the top is never settled.
        assert_eq!(a.check(&[sample(0, Some([5, 5])), sample(1, Some([5, 5]))], 2, 2), Some(Stopped::KMax));
        assert_eq!(a.check(&[sample(0, Some([5, 5])), sample(1, Some([5, 5]))], 2, 3), None);
    }

    #[test]
    fn a_settled_stop_never_changes_the_winner_of_the_full_run() {
        // Every continuation of a settled prefix, down to the worst one for the leader.
        let a = settled(2);
        let prefix: Vec<Sample> = vec![sample(0, Some([10, 1])), sample(1, Some([10, 1])), sample(2, Some([9, 1])), sample(3, Some([10, 2])), sample(4, Some([10, 1]))];
        assert_eq!(a.check(&prefix, 2, 8), Some(Stopped::Settled));
        let stopped = vote(&prefix, 2, 7).winner;
        for rest in [[1u8, 10], [5, 6], [10, 1]] {
            for invalid in [false, true] {
                let mut all = prefix.clone();
                all.extend((5..8).map(|i| sample(i, if invalid && i == 6 { None } else { Some(rest) })));
                assert_eq!(vote(&all, 2, 7).winner, stopped, "continuation {rest:?}");
            }
        }
    }

    #[test]
    fn confident_stops_a_clear_majority_and_not_a_split() {
        let a = Adaptive { k_min: 4, round: 2, stop: StopRule::Confident { confidence: 0.9 } };
        let clear: Vec<Sample> = (0..6).map(|i| sample(i, Some([8, 4]))).collect();
        // 4 of 4 at z = 1.28: the lower bound is about 0.71.
        assert_eq!(a.check(&clear[..4], 2, 32), Some(Stopped::Confident));
        let split: Vec<Sample> = (0..6).map(|i| sample(i, Some(if i % 3 == 0 { [4, 8] } else { [8, 4] }))).collect();
        assert_eq!(a.check(&split, 2, 32), None, "4 of 6 is no confident majority");
        // Invalid samples count for nobody.
        let mostly_invalid = vec![sample(0, Some([8, 4])), sample(1, None), sample(2, None), sample(3, None)];
        assert_eq!(a.check(&mostly_invalid, 2, 32), None);
    }

    #[test]
    fn rounds_take_k_min_then_round_up_to_k() {
        let a = Adaptive { k_min: 4, round: 3, stop: StopRule::Settled };
        assert_eq!(a.next_round(0, 16), 4);
        assert_eq!(a.next_round(4, 16), 3);
        assert_eq!(a.next_round(13, 16), 3);
        assert_eq!(a.next_round(14, 16), 2);
        assert_eq!(a.next_round(16, 16), 0);
        assert_eq!(a.next_round(0, 2), 2, "k below k_min takes k");
    }
}
