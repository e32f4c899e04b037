//! A stand-in for the model, for measuring everything around it: `verdict worker
//! --synthetic` runs the real worker loop (leases, look-ahead, reports over gRPC,
//! heartbeats) with this in the engine's place. For each item it writes the spec's k
//! samples at once — responses shuffled per sample, principles and a critique of a set size,
//! scores in a score block that the real parser reads — and votes them as the engine does.
//! Its verdicts mean nothing; its load on the coordinator, Redis and Postgres is a real
//! judge's (`bench/control-plane`).
//!
//! Scores come from the item's key and the sample index, so a redelivered item gets the
//! same samples. An optional rate (items a second) stands in for a GPU's pace, to measure
//! latency below the control plane's peak.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use verdict_core::shuffle::{mix, sample_permutation, SplitMix64};
use verdict_core::{aggregate, ContentKey, FinishReason, Fingerprints, Item, LabelSpec, Sample, VerdictRecord};

use crate::engine_thread::EngineEvent;
use crate::pipeline::{Extend, Outcome};

/// How the stand-in judges.
#[derive(Debug, Clone)]
pub struct SyntheticJudge {
    /// Bytes of principles and critique per sample (a real judgement's are a few hundred).
    pub text_bytes: usize,
    /// Items a second at most (0: as fast as the loop takes them).
    pub items_per_second: f64,
    /// Items held at once, as a batch would (the look-ahead is planned from it).
    pub capacity: usize,
    /// What the worker reports as its weights: the judge name is bound to them.
    pub fingerprints: Fingerprints,
}

impl SyntheticJudge {
    pub fn new(text_bytes: usize, items_per_second: f64, capacity: usize) -> Self {
        let fingerprints = Fingerprints::new(format!("synthetic-{text_bytes}"), None);
        Self { text_bytes, items_per_second, capacity: capacity.max(1), fingerprints }
    }

    /// The judgement of sample `index` of an item: what a judge would write, sized to
    /// `text_bytes`, ending in scores for the responses in the order shown.
    fn judgement(&self, seed: u64, index: u32, shown: usize) -> (String, u32) {
        let mut rng = SplitMix64::new(mix(&[seed, index as u64]));
        let scores: Vec<String> = (0..shown).map(|_| (1 + rng.below(10)).to_string()).collect();
        let filler = "The response states its claim, supports it with a worked example and names the case where it fails. ";
        let body: String = filler.chars().cycle().take(self.text_bytes.saturating_sub(40)).collect();
        let (principles, critique) = body.split_at(body.len() / 3);
        let raw = format!("Principles: {principles}\nAnalysis: {critique}\nScores: \\boxed{{{}}}", scores.join(", "));
        // About four bytes a token, as English text under a BPE vocabulary.
        let tokens = (raw.len() / 4) as u32;
        (raw, tokens)
    }

    /// The item's record: samples `extend.first..k` judged now (after the prior ones, when
    /// the source has them), voted as the engine votes.
    pub fn judge(&self, spec: &LabelSpec, item: &Item, extend: &Extend) -> VerdictRecord {
        let n = item.responses.len();
        let item_seed = ContentKey::of_item(item).seed_bits();
        let made = (extend.first..spec.k).map(|index| {
            let perm = sample_permutation(n, spec.seed, item_seed, index);
            let (raw, tokens) = self.judgement(item_seed ^ spec.seed, index, n);
            Sample::from_generation(index, perm, raw, FinishReason::ScoreBlock, false, 512, tokens)
        });
        let samples: Vec<Sample> = extend.prior.iter().cloned().chain(made).collect();
        let verdict = aggregate(spec, item_seed, n, &samples);
        let key = ContentKey::of(item, spec, &self.fingerprints).hex();
        VerdictRecord::new(item, key, spec, &self.fingerprints, verdict, samples)
    }
}

/// The engine thread's stand-in: judge each item as it arrives (at most at the set rate)
/// and send its outcome, until the work channel closes or `abort`.
pub fn run(judge: &SyntheticJudge, work: Receiver<(u64, LabelSpec, Item, Extend)>, events: UnboundedSender<EngineEvent>, abort: &AtomicBool, capacity: &AtomicUsize) {
    capacity.store(judge.capacity, Ordering::Relaxed);
    let started = Instant::now();
    let mut judged = 0u64;
    while !abort.load(Ordering::SeqCst) {
        let (seq, spec, item, extend) = match work.recv_timeout(Duration::from_millis(100)) {
            Ok(w) => w,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if judge.items_per_second > 0.0 {
            let due = started + Duration::from_secs_f64(judged as f64 / judge.items_per_second);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        judged += 1;
        let outcome = if extend.first >= spec.k {
            Outcome::Rejected { field: "k".into(), message: format!("the item already has {} samples", extend.first) }
        } else {
            Outcome::Verdict(Box::new(judge.judge(&spec, &item, &extend)))
        };
        let (samples, tokens) = match &outcome {
            Outcome::Verdict(r) => (r.samples.len() as u64, r.samples.iter().map(|s| s.completion_tokens as u64).sum()),
            _ => (0, 0),
        };
        if events.send(EngineEvent::Done { seq, outcome, samples, tokens }).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_parse_vote_and_repeat() {
        let j = SyntheticJudge::new(300, 0.0, 64);
        let item = Item::from_json_line(r#"{"id":"a","prompt":"Which?","responses":["one","two","three"]}"#).unwrap();
        let mut spec = LabelSpec::new("synthetic");
        spec.k = 8;
        let r = j.judge(&spec, &item, &Extend::none());
        assert_eq!(r.samples.len(), 8);
        assert!(r.samples.iter().all(|s| s.status.is_valid() && s.scores.as_ref().is_some_and(|x| x.len() == 3)), "{:?}", r.samples[0]);
        assert!(r.samples.iter().all(|s| (280..=320).contains(&s.raw.len())), "{}", r.samples[0].raw.len());
        assert_eq!(r.verdict.valid, 8);
        // The same item judged again writes the same samples (a redelivery's rows are equal).
        assert_eq!(j.judge(&spec, &item, &Extend::none()).samples, r.samples);
        // An extension makes only the samples after the first ones.
        let ext = j.judge(&spec, &item, &Extend { first: 6, prior: r.samples[..6].to_vec() });
        assert_eq!(ext.samples, r.samples);
    }
}
