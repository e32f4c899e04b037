//! The verdict on one item, and the self-contained record written per item.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Fingerprints, Item, LabelSpec, Prompt, Sample};

/// The aggregate of an item's samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Each response's score summed over the valid samples (input order).
    pub summed: Vec<u32>,
    /// `summed / valid`: on the 1–10 scale, comparable across k.
    pub mean: Vec<f64>,
    /// Each sample's scores in input order; `None` for invalid samples.
    pub sample_scores: Vec<Option<Vec<u8>>>,
    /// Index of the best response; `None` when no sample was valid.
    pub winner: Option<usize>,
    /// Winner's sum minus the runner-up's (0 on a tie or with one response).
    pub margin: u32,
    /// More than one response shares the top sum (the winner was drawn by the seed).
    pub tie: bool,
    /// Number of samples that counted.
    pub valid: u32,
    /// Share of counted samples that rank the winner first (ties included).
    pub agreement: f64,
    /// Under adaptive k: why the item stopped taking samples (its samples say how many it
    /// took). Absent under a fixed k.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<crate::Stopped>,
}

/// One output line: the item, the spec's identity, the verdict and every sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictRecord {
    pub id: String,
    /// Content key of (item, spec, weights), hex.
    pub key: String,
    /// The judge's name.
    pub judge: String,
    /// Fingerprint of the judge's weights, tokenizer, config and chat template.
    pub fingerprint: String,
    /// Fingerprint of the meta reward model, when the verdict was voted with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_fingerprint: Option<String>,
    pub template: String,
    pub prompt: Prompt,
    pub responses: Vec<String>,
    #[serde(flatten)]
    pub verdict: Verdict,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_winner: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agrees_with_reference: Option<bool>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    pub samples: Vec<Sample>,
}

impl VerdictRecord {
    pub fn new(item: &Item, key: String, spec: &LabelSpec, weights: &Fingerprints, verdict: Verdict, samples: Vec<Sample>) -> Self {
        let weights = weights.for_spec(spec);
        let agrees_with_reference = match (item.reference_winner, verdict.winner) {
            (Some(r), Some(w)) => Some(r == w),
            _ => None,
        };
        VerdictRecord {
            id: item.id.clone(),
            key,
            judge: spec.judge.clone(),
            fingerprint: weights.judge,
            meta_fingerprint: weights.meta_rm,
            template: spec.template.name().to_string(),
            prompt: item.prompt.clone(),
            responses: item.responses.clone(),
            verdict,
            reference_winner: item.reference_winner,
            agrees_with_reference,
            metadata: item.metadata.clone(),
            samples,
        }
    }
}

impl VerdictRecord {
    /// The weights that produced this verdict.
    pub fn fingerprints(&self) -> Fingerprints {
        Fingerprints { judge: self.fingerprint.clone(), meta_rm: self.meta_fingerprint.clone() }
    }
}
