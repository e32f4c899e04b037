//! Voting again over the first k of an item's stored samples: what a fresh run at that k
//! would have recorded, without a GPU. A sample's tokens depend only on (spec seed, item,
//! sample index), never on k, so the first k samples of a K-sample run are a k-sample run's
//! samples, and aggregating them with the spec that run would have had (k, and the meta-RM's
//! default k_meta of k/2) gives its verdict and its content key.

use crate::{aggregate, Aggregation, ContentKey, Item, LabelSpec, VerdictRecord};

/// The k to vote at, and for meta-RM voting how many of them to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtK {
    pub k: u32,
    pub k_meta: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevoteError {
    #[error("--k must be at least 1")]
    ZeroK,
    #[error("--k {k} is more than the job's k = {job_k}: samples {job_k}..{k} were never taken (`verdict extend JOB --k {k}` makes only those)")]
    MoreThanTaken { k: u32, job_k: u32 },
    #[error("--meta-rm-k {k_meta} is more than --k {k}")]
    MetaMoreThanK { k_meta: u32, k: u32 },
    #[error("--meta-rm-k needs a job voted with a meta reward model; this job sums plain votes")]
    NoMetaRm,
    #[error("item {item}: sample {index} (of the first {k}) is not stored")]
    MissingSample { item: String, index: u32, k: u32 },
}

impl AtK {
    /// The spec a fresh run of `job`'s at this k would have had.
    pub fn spec(&self, job: &LabelSpec) -> Result<LabelSpec, RevoteError> {
        if self.k == 0 {
            return Err(RevoteError::ZeroK);
        }
        if self.k > job.k {
            return Err(RevoteError::MoreThanTaken { k: self.k, job_k: job.k });
        }
        let aggregation = match (job.aggregation, self.k_meta) {
            (Aggregation::Voting, None) => Aggregation::Voting,
            (Aggregation::Voting, Some(_)) => return Err(RevoteError::NoMetaRm),
            (Aggregation::MetaRm { .. }, Some(m)) if m > self.k => return Err(RevoteError::MetaMoreThanK { k_meta: m, k: self.k }),
            (Aggregation::MetaRm { .. }, Some(m)) => Aggregation::MetaRm { k_meta: Some(m) },
            // The job's own k_meta when it still fits; else the default a run at k would take.
            (Aggregation::MetaRm { k_meta: Some(m) }, None) if m <= self.k => Aggregation::MetaRm { k_meta: Some(m) },
            (Aggregation::MetaRm { .. }, None) => Aggregation::MetaRm { k_meta: None },
        };
        Ok(LabelSpec { k: self.k, aggregation, ..job.clone() })
    }

    /// `record` (of a job whose spec at this k is `spec`, from [`AtK::spec`]) as a run at
    /// this k would have recorded it: its first k samples by index, their verdict and the
    /// content key of (item, spec at k, weights).
    pub fn apply(&self, spec: &LabelSpec, mut record: VerdictRecord) -> Result<VerdictRecord, RevoteError> {
        let k = spec.k;
        record.samples.sort_by_key(|s| s.index);
        record.samples.retain(|s| s.index < k);
        // Sorted and cut below k, sample i must sit at position i.
        if let Some(index) = (0..k).find(|&i| record.samples.get(i as usize).map(|s| s.index) != Some(i)) {
            return Err(RevoteError::MissingSample { item: record.id, index, k });
        }
        let item = Item { id: record.id.clone(), prompt: record.prompt.clone(), responses: record.responses.clone(), reference_winner: record.reference_winner, metadata: record.metadata.clone() };
        let verdict = aggregate(spec, ContentKey::of_item(&item).seed_bits(), item.responses.len(), &record.samples);
        record.key = ContentKey::of(&item, spec, &record.fingerprints()).hex();
        record.agrees_with_reference = match (record.reference_winner, verdict.winner) {
            (Some(r), Some(w)) => Some(r == w),
            _ => None,
        };
        if !spec.uses_meta_rm() {
            record.meta_fingerprint = None;
        }
        record.verdict = verdict;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FinishReason, Fingerprints, ParseStatus, Sample};

    fn sample(index: u32, scores: [u8; 2], meta: f32) -> Sample {
        Sample {
            index,
            permutation: vec![0, 1],
            principles: String::new(),
            critique: String::new(),
            scores: Some(scores.to_vec()),
            status: ParseStatus::Valid,
            finish: FinishReason::ScoreBlock,
            prompt_tokens: 10,
            completion_tokens: 5,
            meta_score: Some(meta),
            raw: format!("sample {index}"),
        }
    }

    fn record(spec: &LabelSpec, samples: Vec<Sample>) -> (Item, VerdictRecord) {
        let mut item = Item::from_json_line(r#"{"id":"a","prompt":"Which?","responses":["one","two"]}"#).unwrap();
        item.reference_winner = Some(1);
        let weights = Fingerprints::new("judge-fp", Some("meta-fp".into()));
        let verdict = aggregate(spec, ContentKey::of_item(&item).seed_bits(), 2, &samples);
        let key = ContentKey::of(&item, spec, &weights).hex();
        (item.clone(), VerdictRecord::new(&item, key, spec, &weights, verdict, samples))
    }

    #[test]
    fn the_first_k_samples_revoted_are_what_a_run_at_k_records() {
        // Four samples: the first two prefer response 0, the last two response 1 strongly.
        let all = vec![sample(0, [8, 3], 0.1), sample(1, [7, 4], 0.9), sample(2, [1, 9], 0.5), sample(3, [2, 10], 0.7)];
        for aggregation in [Aggregation::Voting, Aggregation::MetaRm { k_meta: None }] {
            let job = LabelSpec { k: 4, aggregation, ..LabelSpec::new("judge") };
            let (_, full) = record(&job, all.clone());
            assert_eq!(full.verdict.winner, Some(1));
            let at = AtK { k: 2, k_meta: None };
            let spec2 = at.spec(&job).unwrap();
            assert_eq!(spec2.k, 2);
            // Stored out of order, as a store may return them: the index decides.
            let shuffled = VerdictRecord { samples: vec![all[3].clone(), all[1].clone(), all[0].clone(), all[2].clone()], ..full.clone() };
            let revoted = at.apply(&spec2, shuffled).unwrap();
            let (_, fresh) = record(&spec2, all[..2].to_vec());
            assert_eq!(revoted, fresh, "{aggregation:?}");
            assert_eq!(revoted.verdict.winner, Some(0));
            assert_eq!(revoted.agrees_with_reference, Some(false));
            // At the job's own k nothing changes.
            assert_eq!(AtK { k: 4, k_meta: None }.apply(&job, full.clone()).unwrap(), full);
        }
    }

    #[test]
    fn impossible_k_and_missing_samples_are_named() {
        let job = LabelSpec { k: 4, ..LabelSpec::new("judge") };
        assert_eq!(AtK { k: 0, k_meta: None }.spec(&job), Err(RevoteError::ZeroK));
        assert_eq!(AtK { k: 5, k_meta: None }.spec(&job), Err(RevoteError::MoreThanTaken { k: 5, job_k: 4 }));
        assert_eq!(AtK { k: 2, k_meta: Some(1) }.spec(&job), Err(RevoteError::NoMetaRm));
        let meta = LabelSpec { aggregation: Aggregation::MetaRm { k_meta: None }, ..job.clone() };
        assert_eq!(AtK { k: 2, k_meta: Some(3) }.spec(&meta), Err(RevoteError::MetaMoreThanK { k_meta: 3, k: 2 }));
        let (_, r) = record(&job, vec![sample(0, [5, 5], 0.0), sample(2, [5, 6], 0.0), sample(3, [5, 6], 0.0)]);
        let spec3 = AtK { k: 3, k_meta: None }.spec(&job).unwrap();
        let err = AtK { k: 3, k_meta: None }.apply(&spec3, r).unwrap_err();
        assert_eq!(err, RevoteError::MissingSample { item: "a".into(), index: 1, k: 3 });
        assert_eq!(err.to_string(), "item a: sample 1 (of the first 3) is not stored");
    }
}
