//! What is counted per judge, and the rates read from the counts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use verdict_core::parse::ParseFailure;
use verdict_core::{ParseStatus, VerdictRecord};

use crate::histogram::TokenHistogram;

/// Counts over a judge's verdicts and samples. Every field adds under [`Telemetry::merge`],
/// so figures of several jobs combine into a judge's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Telemetry {
    pub verdicts: u64,
    /// Verdicts with no counted sample (no winner).
    pub undecided: u64,
    /// Decided verdicts whose top sum was shared (the winner was drawn by the seed).
    pub ties: u64,
    /// Sum of the decided verdicts' agreement (share of counted samples ranking the winner
    /// first), and their distribution in tenths (0.0–0.1 … 0.9–1.0).
    pub agreement_sum: f64,
    pub agreement_bins: Vec<u64>,
    pub samples: u64,
    /// Samples that wrote their own score block.
    pub valid: u64,
    /// Samples whose score block was forced when the token budget ran out (they count).
    pub forced: u64,
    /// Samples without usable scores, by reason (they do not count).
    pub invalid: BTreeMap<String, u64>,
    /// Samples that stopped at the token limit.
    pub truncated: u64,
    /// Counted samples with a single top score: the ones that say which response won.
    pub decisive: u64,
    /// Of those, how often the winner was shown at each position (0 = first), and how often
    /// it would be by chance (the sum of 1/n over the samples with that position).
    pub wins_by_position: Vec<u64>,
    pub chance_by_position: Vec<f64>,
    /// Variance of the first position's win count under no bias: Σ (1/n)(1 − 1/n).
    pub first_variance: f64,
    /// Every counted score, 1..=10 (index 0 is score 1).
    pub scores: Vec<u64>,
    /// Verdicts whose item named a chosen response, and how many the judge agreed with.
    pub with_reference: u64,
    pub agrees_with_reference: u64,
    /// Completion tokens per sample (judgement).
    pub completion_tokens: TokenHistogram,
    pub prompt_tokens: u64,
    /// Under adaptive k: why items stopped.
    pub stopped: BTreeMap<String, u64>,
}

fn bump<T: Clone + Default + std::ops::AddAssign>(v: &mut Vec<T>, i: usize, by: T) {
    if v.len() <= i {
        v.resize(i + 1, T::default());
    }
    v[i] += by;
}

fn add_all<T: Clone + Default + std::ops::AddAssign>(into: &mut Vec<T>, from: &[T]) {
    for (i, x) in from.iter().enumerate() {
        bump(into, i, x.clone());
    }
}

/// The name a failure is recorded under (the `reason` of an invalid sample).
fn reason(f: &ParseFailure) -> &'static str {
    match f {
        ParseFailure::NoScoreBlock => "no_score_block",
        ParseFailure::WrongCount { .. } => "wrong_count",
        ParseFailure::NotInteger { .. } => "not_integer",
        ParseFailure::OutOfRange { .. } => "out_of_range",
    }
}

impl Telemetry {
    pub fn add(&mut self, r: &VerdictRecord) {
        let v = &r.verdict;
        self.verdicts += 1;
        if v.winner.is_none() {
            self.undecided += 1;
        } else {
            if v.tie {
                self.ties += 1;
            }
            self.agreement_sum += v.agreement;
            bump(&mut self.agreement_bins, ((v.agreement * 10.0) as usize).min(9), 1);
            if let Some(agrees) = r.agrees_with_reference {
                self.with_reference += 1;
                self.agrees_with_reference += agrees as u64;
            }
        }
        if let Some(s) = v.stopped {
            *self.stopped.entry(s.name().to_string()).or_default() += 1;
        }
        for s in &r.samples {
            self.samples += 1;
            self.prompt_tokens += s.prompt_tokens as u64;
            self.completion_tokens.add(s.completion_tokens);
            if s.finish == verdict_core::FinishReason::Length {
                self.truncated += 1;
            }
            match &s.status {
                ParseStatus::Valid => self.valid += 1,
                ParseStatus::Forced => self.forced += 1,
                ParseStatus::Invalid(f) => *self.invalid.entry(reason(f).to_string()).or_default() += 1,
            }
            if let Some(scores) = s.valid_scores() {
                self.add_scores(scores, &s.permutation);
            }
        }
    }

    /// One counted sample's scores (input order) and the order it was shown in.
    fn add_scores(&mut self, scores: &[u8], permutation: &[u32]) {
        for &x in scores {
            if (1..=10).contains(&x) {
                bump(&mut self.scores, x as usize - 1, 1);
            }
        }
        let n = permutation.len();
        let Some(&top) = scores.iter().max() else { return };
        if n < 2 || scores.iter().filter(|&&x| x == top).count() != 1 {
            return;
        }
        // permutation[j] is the input index shown at position j.
        let Some(shown_at) = permutation.iter().position(|&i| scores.get(i as usize) == Some(&top)) else { return };
        self.decisive += 1;
        bump(&mut self.wins_by_position, shown_at, 1);
        let p = 1.0 / n as f64;
        for j in 0..n {
            bump(&mut self.chance_by_position, j, p);
        }
        self.first_variance += p * (1.0 - p);
    }

    pub fn merge(&mut self, o: &Telemetry) {
        self.verdicts += o.verdicts;
        self.undecided += o.undecided;
        self.ties += o.ties;
        self.agreement_sum += o.agreement_sum;
        add_all(&mut self.agreement_bins, &o.agreement_bins);
        self.samples += o.samples;
        self.valid += o.valid;
        self.forced += o.forced;
        for (k, n) in &o.invalid {
            *self.invalid.entry(k.clone()).or_default() += n;
        }
        self.truncated += o.truncated;
        self.decisive += o.decisive;
        add_all(&mut self.wins_by_position, &o.wins_by_position);
        add_all(&mut self.chance_by_position, &o.chance_by_position);
        self.first_variance += o.first_variance;
        add_all(&mut self.scores, &o.scores);
        self.with_reference += o.with_reference;
        self.agrees_with_reference += o.agrees_with_reference;
        self.completion_tokens.merge(&o.completion_tokens);
        self.prompt_tokens += o.prompt_tokens;
        for (k, n) in &o.stopped {
            *self.stopped.entry(k.clone()).or_default() += n;
        }
    }

    pub fn invalid_total(&self) -> u64 {
        self.invalid.values().sum()
    }

    pub fn summary(&self) -> Summary {
        let share = |a: u64, b: u64| if b == 0 { None } else { Some(a as f64 / b as f64) };
        let decided = self.verdicts - self.undecided;
        let first_wins = self.wins_by_position.first().copied().unwrap_or(0);
        let first_chance = self.chance_by_position.first().copied().unwrap_or(0.0);
        Summary {
            verdicts: self.verdicts,
            samples: self.samples,
            samples_per_verdict: share(self.samples, self.verdicts),
            valid_rate: share(self.valid, self.samples),
            forced_rate: share(self.forced, self.samples),
            invalid_rate: share(self.invalid_total(), self.samples),
            truncated_rate: share(self.truncated, self.samples),
            undecided_rate: share(self.undecided, self.verdicts),
            tie_rate: share(self.ties, decided),
            mean_agreement: if decided == 0 { None } else { Some(self.agreement_sum / decided as f64) },
            first_shown_wins: share(first_wins, self.decisive),
            first_shown_chance: if self.decisive == 0 { None } else { Some(first_chance / self.decisive as f64) },
            position_bias_z: if self.first_variance > 0.0 { Some((first_wins as f64 - first_chance) / self.first_variance.sqrt()) } else { None },
            decisive_samples: self.decisive,
            mean_score: {
                let n: u64 = self.scores.iter().sum();
                let total: u64 = self.scores.iter().enumerate().map(|(i, c)| (i as u64 + 1) * c).sum();
                share(total, n)
            },
            reference_agreement: share(self.agrees_with_reference, self.with_reference),
            with_reference: self.with_reference,
            completion_tokens_mean: (self.samples > 0).then(|| self.completion_tokens.mean()),
            completion_tokens_p50: self.completion_tokens.quantile(0.5),
            completion_tokens_p90: self.completion_tokens.quantile(0.9),
            completion_tokens_max: self.completion_tokens.max,
            prompt_tokens_mean: share(self.prompt_tokens, self.samples),
        }
    }
}

/// The rates a user reads; `None` where there was nothing to count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub verdicts: u64,
    pub samples: u64,
    pub samples_per_verdict: Option<f64>,
    pub valid_rate: Option<f64>,
    pub forced_rate: Option<f64>,
    pub invalid_rate: Option<f64>,
    pub truncated_rate: Option<f64>,
    pub undecided_rate: Option<f64>,
    pub tie_rate: Option<f64>,
    pub mean_agreement: Option<f64>,
    /// How often the response shown first won a decisive sample, and how often it would by
    /// chance; `position_bias_z` is the difference in standard deviations (|z| > 3: biased).
    pub first_shown_wins: Option<f64>,
    pub first_shown_chance: Option<f64>,
    pub position_bias_z: Option<f64>,
    pub decisive_samples: u64,
    pub mean_score: Option<f64>,
    pub reference_agreement: Option<f64>,
    pub with_reference: u64,
    pub completion_tokens_mean: Option<f64>,
    pub completion_tokens_p50: u32,
    pub completion_tokens_p90: u32,
    pub completion_tokens_max: u32,
    pub prompt_tokens_mean: Option<f64>,
}

/// A judge as telemetry tells judges apart: its name and the fingerprint of its weights.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JudgeKey {
    pub judge: String,
    pub fingerprint: String,
}

/// Telemetry of one job (or output file), per judge.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// What the report is about: a job id or a file name.
    pub title: String,
    pub judges: Vec<(JudgeKey, Telemetry)>,
}

impl Report {
    pub fn new(title: impl Into<String>) -> Self {
        Self { title: title.into(), judges: Vec::new() }
    }

    pub fn add(&mut self, r: &VerdictRecord) {
        let key = JudgeKey { judge: r.judge.clone(), fingerprint: r.fingerprint.clone() };
        match self.judges.iter_mut().find(|(k, _)| *k == key) {
            Some((_, t)) => t.add(r),
            None => {
                let mut t = Telemetry::default();
                t.add(r);
                self.judges.push((key, t));
            }
        }
    }

    pub fn merge(&mut self, other: &Report) {
        for (key, t) in &other.judges {
            match self.judges.iter_mut().find(|(k, _)| k == key) {
                Some((_, mine)) => mine.merge(t),
                None => self.judges.push((key.clone(), t.clone())),
            }
        }
    }

    pub fn verdicts(&self) -> u64 {
        self.judges.iter().map(|(_, t)| t.verdicts).sum()
    }
}

#[cfg(test)]
mod tests {
    use verdict_core::{vote, FinishReason, Prompt, Sample};

    use super::*;

    /// A record of `n` responses from samples given as (shown order, scores as shown, text).
    fn record(judge: &str, reference: Option<usize>, samples: &[(Vec<u32>, &str)]) -> VerdictRecord {
        let n = samples[0].0.len();
        let samples: Vec<Sample> = samples
            .iter()
            .enumerate()
            .map(|(i, (perm, text))| {
                let finish = if text.contains("boxed") { FinishReason::ScoreBlock } else { FinishReason::Length };
                Sample::from_generation(i as u32, perm.clone(), text.to_string(), finish, text.starts_with("forced"), 100, 10 + i as u32)
            })
            .collect();
        let verdict = vote(&samples, n, 7);
        VerdictRecord {
            id: "i".into(),
            key: "k".into(),
            judge: judge.into(),
            fingerprint: "f".repeat(64),
            meta_fingerprint: None,
            template: "t".into(),
            prompt: Prompt::Text("p".into()),
            responses: vec!["r".into(); n],
            agrees_with_reference: reference.zip(verdict.winner).map(|(r, w)| r == w),
            verdict,
            reference_winner: reference,
            metadata: Default::default(),
            samples,
        }
    }

    #[test]
    fn position_bias_is_read_from_the_permutations() {
        // A judge that always gives the response it is shown first 9 and the other 2: input
        // order swaps between samples, so only the permutation reveals the bias.
        let mut t = Telemetry::default();
        for _ in 0..50 {
            t.add(&record("j", Some(0), &[(vec![0, 1], "\\boxed{9, 2}"), (vec![1, 0], "\\boxed{9, 2}")]));
        }
        let s = t.summary();
        assert_eq!((t.decisive, t.wins_by_position.clone()), (100, vec![100]));
        assert_eq!(s.first_shown_wins, Some(1.0));
        assert_eq!(s.first_shown_chance, Some(0.5));
        // 100 wins where 50 ± 5 are expected: z = 10.
        assert!((s.position_bias_z.unwrap() - 10.0).abs() < 1e-9, "{s:?}");
        // Each sample ranks a different input first: every verdict is a tie at agreement 0.5.
        assert_eq!((s.tie_rate, s.mean_agreement), (Some(1.0), Some(0.5)));
        assert_eq!(t.scores[8] + t.scores[1], 200);
    }

    #[test]
    fn an_unbiased_judge_sits_at_chance() {
        let mut t = Telemetry::default();
        for i in 0..40u32 {
            // Input 0 always wins; it is shown first in every other sample.
            let perm = if i % 2 == 0 { vec![0, 1, 2] } else { vec![2, 1, 0] };
            let shown = if i % 2 == 0 { "\\boxed{8, 4, 3}" } else { "\\boxed{3, 4, 8}" };
            t.add(&record("j", Some(0), &[(perm, shown)]));
        }
        let s = t.summary();
        assert_eq!(s.first_shown_wins, Some(0.5));
        assert!((s.first_shown_chance.unwrap() - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(t.wins_by_position, vec![20, 0, 20]);
        assert_eq!((s.reference_agreement, s.with_reference, s.tie_rate), (Some(1.0), 40, Some(0.0)));
    }

    #[test]
    fn outcomes_are_counted_by_status_and_reason_and_merge_adds_up() {
        let mut a = Telemetry::default();
        a.add(&record("j", None, &[(vec![0, 1], "\\boxed{7, 3}"), (vec![1, 0], "no scores at all"), (vec![0, 1], "forced \\boxed{5, 6}")]));
        let mut b = Telemetry::default();
        b.add(&record("j", Some(1), &[(vec![0, 1], "\\boxed{3}"), (vec![1, 0], "still nothing")]));
        assert_eq!((a.valid, a.forced, a.invalid_total(), a.truncated), (1, 1, 1, 1));
        assert_eq!(b.undecided, 1);
        let mut all = a.clone();
        all.merge(&b);
        assert_eq!((all.verdicts, all.samples, all.undecided), (2, 5, 1));
        assert_eq!(all.invalid.get("no_score_block"), Some(&2));
        assert_eq!(all.invalid.get("wrong_count"), Some(&1));
        // The undecided item's reference does not count as a disagreement.
        assert_eq!(all.with_reference, 0);
        let s = all.summary();
        assert_eq!(s.invalid_rate, Some(0.6));
        assert_eq!((s.completion_tokens_max, s.samples_per_verdict), (12, Some(2.5)));
        let mut r = Report::new("x");
        r.add(&record("j", None, &[(vec![0, 1], "\\boxed{7, 3}")]));
        r.add(&record("other", None, &[(vec![0, 1], "\\boxed{7, 3}")]));
        let mut r2 = r.clone();
        r2.merge(&r);
        assert_eq!((r2.judges.len(), r2.verdicts()), (2, 4));
    }
}
