//! The label spec: everything that decides what a verdict is. Two runs with equal specs on
//! equal items produce equal samples (same seed, same judge), so the spec is part of every
//! item's content key.

use serde::{Deserialize, Serialize};

use crate::adaptive::{Adaptive, StopRule};

/// A named version of the GRM prompt. Stored with every verdict so that old labels stay
/// interpretable when the template changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum TemplateVersion {
    /// DeepSeek-GRM's default pointwise template (arXiv 2504.02495, appendix), with
    /// `Specific Criteria` / `Analysis` / `Scores: \boxed{..}` sections.
    #[default]
    #[serde(rename = "grm-v1")]
    GrmV1,
}

impl TemplateVersion {
    pub fn name(self) -> &'static str {
        match self {
            TemplateVersion::GrmV1 => "grm-v1",
        }
    }
}

impl std::str::FromStr for TemplateVersion {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s {
            "grm-v1" => Ok(TemplateVersion::GrmV1),
            other => Err(SpecError::UnknownTemplate(other.to_string())),
        }
    }
}

/// How k samples become one verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Aggregation {
    /// Sum each response's scores over the valid samples (the paper's Eq. 14).
    #[default]
    Voting,
    /// Keep the `k_meta` valid samples the meta reward model rates highest, then vote.
    /// `None` means k/2 (at least one).
    MetaRm { k_meta: Option<u32> },
}

/// What happens to a sample that spends its token budget before writing its scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnBudget {
    /// Close the analysis and make the judge write its scores (`Scores: \boxed{` is
    /// appended and the score block is decoded under constraint), marking the sample
    /// `forced`. No sample is wasted; forced samples can be filtered out later.
    #[default]
    Force,
    /// The sample is invalid (the paper's accounting).
    Invalid,
}

/// Everything that determines a verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelSpec {
    /// The judge's name: a model folder's name in `verdict label`, the name workers serve
    /// in distributed mode. Which weights it stands for is the verdict's fingerprint.
    pub judge: String,
    /// Samples per item.
    pub k: u32,
    pub temperature: f32,
    pub top_p: f32,
    pub max_new_tokens: u32,
    pub seed: u64,
    pub template: TemplateVersion,
    pub aggregation: Aggregation,
    #[serde(default)]
    pub on_budget: OnBudget,
    /// Adaptive k: sample in rounds and stop an item early (then `k` is the most it takes).
    /// Absent from the JSON when off, so content keys of fixed-k specs never change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<Adaptive>,
}

/// Bounds a service puts on specs, so one job cannot ask for unbounded work per item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecLimits {
    /// Most samples per item (default 64: the paper's figures stop at 32).
    pub max_k: u32,
}

impl Default for SpecLimits {
    fn default() -> Self {
        Self { max_k: 64 }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("k must be at least 1")]
    ZeroK,
    #[error("k {k} is more than the {max} samples per item allowed here (raise the limit with --max-k)")]
    TooManySamples { k: u32, max: u32 },
    #[error("temperature must be finite and ≥ 0, got {0}")]
    Temperature(f32),
    #[error("top_p must be in (0, 1], got {0}")]
    TopP(f32),
    #[error("max_new_tokens must be at least 16, got {0}")]
    MaxNewTokens(u32),
    #[error("k_meta must be in 1..=k ({k}), got {k_meta}")]
    KMeta { k_meta: u32, k: u32 },
    #[error("unknown template version {0:?} (known: grm-v1)")]
    UnknownTemplate(String),
    #[error("adaptive k: k_min must be in 1..=k ({k}), got {k_min}")]
    KMin { k_min: u32, k: u32 },
    #[error("adaptive k: a round must take at least 1 sample")]
    ZeroRound,
    #[error("adaptive k: the confidence must be in (0.5, 1), got {0}")]
    Confidence(f64),
    #[error("adaptive k cannot stop meta-RM voting early: it keeps the best-rated samples of all k")]
    AdaptiveMetaRm,
}

impl LabelSpec {
    /// The paper's defaults: k = 8 at temperature 0.5, plain voting.
    pub fn new(judge: impl Into<String>) -> Self {
        Self {
            judge: judge.into(),
            k: 8,
            temperature: 0.5,
            top_p: 1.0,
            max_new_tokens: 512,
            seed: 0,
            template: TemplateVersion::GrmV1,
            aggregation: Aggregation::Voting,
            on_budget: OnBudget::Force,
            adaptive: None,
        }
    }

    /// Check every field under the default limits.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.validate_within(&SpecLimits::default())
    }

    /// Check every field; the first problem is the error.
    pub fn validate_within(&self, limits: &SpecLimits) -> Result<(), SpecError> {
        if self.k == 0 {
            return Err(SpecError::ZeroK);
        }
        if self.k > limits.max_k {
            return Err(SpecError::TooManySamples { k: self.k, max: limits.max_k });
        }
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(SpecError::Temperature(self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SpecError::TopP(self.top_p));
        }
        if self.max_new_tokens < 16 {
            return Err(SpecError::MaxNewTokens(self.max_new_tokens));
        }
        if let Aggregation::MetaRm { k_meta: Some(k_meta) } = self.aggregation {
            if k_meta == 0 || k_meta > self.k {
                return Err(SpecError::KMeta { k_meta, k: self.k });
            }
        }
        if let Some(a) = &self.adaptive {
            if a.k_min == 0 || a.k_min > self.k {
                return Err(SpecError::KMin { k_min: a.k_min, k: self.k });
            }
            if a.round == 0 {
                return Err(SpecError::ZeroRound);
            }
            if let StopRule::Confident { confidence } = a.stop {
                if !(confidence > 0.5 && confidence < 1.0) {
                    return Err(SpecError::Confidence(confidence));
                }
            }
            if self.uses_meta_rm() {
                return Err(SpecError::AdaptiveMetaRm);
            }
        }
        Ok(())
    }

    /// The most samples of one item in flight at once: k, or under adaptive k its largest
    /// round (the next round is queued only once the last is done). Plans how many items an
    /// engine holds: planning adaptive k's items at k_max left 7 of 8 rows idle.
    pub fn samples_in_flight(&self) -> u32 {
        match &self.adaptive {
            Some(a) => a.k_min.max(a.round).clamp(1, self.k.max(1)),
            None => self.k.max(1),
        }
    }

    /// Whether verdicts are aggregated with a meta reward model's help.
    pub fn uses_meta_rm(&self) -> bool {
        matches!(self.aggregation, Aggregation::MetaRm { .. })
    }

    /// The number of samples meta-RM voting keeps: `k_meta`, or k/2 (at least 1).
    pub fn k_meta(&self) -> u32 {
        match self.aggregation {
            Aggregation::MetaRm { k_meta: Some(k) } => k,
            _ => (self.k / 2).max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_in_flight_are_a_round_under_adaptive_k() {
        let fixed = LabelSpec { k: 32, ..LabelSpec::new("j") };
        assert_eq!(fixed.samples_in_flight(), 32);
        let adaptive = LabelSpec { adaptive: Some(Adaptive { k_min: 4, round: 2, stop: StopRule::Settled }), ..fixed.clone() };
        assert_eq!(adaptive.samples_in_flight(), 4);
        let wide = LabelSpec { adaptive: Some(Adaptive { k_min: 4, round: 64, stop: StopRule::Settled }), ..fixed };
        assert_eq!(wide.samples_in_flight(), 32, "never more than k");
    }

    #[test]
    fn validates_fields() {
        let ok = LabelSpec::new("j");
        assert!(ok.validate().is_ok());
        assert_eq!(LabelSpec { k: 0, ..ok.clone() }.validate(), Err(SpecError::ZeroK));
        assert!(LabelSpec { temperature: f32::NAN, ..ok.clone() }.validate().is_err());
        assert!(LabelSpec { top_p: 0.0, ..ok.clone() }.validate().is_err());
        assert_eq!(LabelSpec { temperature: -1.0, ..ok.clone() }.validate(), Err(SpecError::Temperature(-1.0)));
        let meta = LabelSpec { aggregation: Aggregation::MetaRm { k_meta: Some(9) }, ..ok.clone() };
        assert_eq!(meta.validate(), Err(SpecError::KMeta { k_meta: 9, k: 8 }));
        assert_eq!(LabelSpec { k: 65, ..ok.clone() }.validate(), Err(SpecError::TooManySamples { k: 65, max: 64 }));
        assert!(LabelSpec { k: 65, ..ok.clone() }.validate_within(&SpecLimits { max_k: 128 }).is_ok());
        assert_eq!(LabelSpec { aggregation: Aggregation::MetaRm { k_meta: None }, ..ok }.k_meta(), 4);
    }
}
