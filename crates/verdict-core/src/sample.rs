//! One sampled judgement, with everything needed to re-aggregate it later without a GPU.

use serde::{Deserialize, Serialize};

use crate::parse::{parse_judgement, ParseFailure};

/// Why decoding of a sample stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The judge ended its turn.
    Eos,
    /// The score block closed (`}`), so nothing after it could change the verdict.
    ScoreBlock,
    /// The token budget ran out.
    Length,
}

/// Whether a sample counts in voting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ParseStatus {
    /// The judge wrote a well-formed score block itself.
    Valid,
    /// The judge ran out of budget and was made to write its scores (`OnBudget::Force`).
    Forced,
    /// No usable scores.
    Invalid(ParseFailure),
}

impl ParseStatus {
    pub fn is_valid(&self) -> bool {
        !matches!(self, ParseStatus::Invalid(_))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub index: u32,
    /// `permutation[j]` is the input index of the response shown as Response j+1.
    pub permutation: Vec<u32>,
    pub principles: String,
    pub critique: String,
    /// Scores in input order (not shown order), present when the status is valid or forced.
    pub scores: Option<Vec<u8>>,
    #[serde(flatten)]
    pub status: ParseStatus,
    pub finish: FinishReason,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_score: Option<f32>,
    /// The judgement as generated.
    pub raw: String,
}

impl Sample {
    /// Build a sample from a finished generation: parse, and map scores back to input order.
    pub fn from_generation(
        index: u32,
        permutation: Vec<u32>,
        raw: String,
        finish: FinishReason,
        forced: bool,
        prompt_tokens: u32,
        completion_tokens: u32,
    ) -> Sample {
        // A judge can generate NUL, which Postgres text cannot hold: the store would keep
        // U+FFFD where a label file kept NUL, and the same sample would read differently by
        // where it was stored. Every path carries this text instead.
        let raw = if raw.contains('\0') { raw.replace('\0', "\u{FFFD}") } else { raw };
        let n = permutation.len();
        let parsed = parse_judgement(&raw, n);
        let (scores, status) = match parsed.scores {
            Ok(shown) => {
                let mut input_order = vec![0u8; n];
                for (j, &s) in shown.iter().enumerate() {
                    input_order[permutation[j] as usize] = s;
                }
                let status = if forced { ParseStatus::Forced } else { ParseStatus::Valid };
                (Some(input_order), status)
            }
            Err(e) => (None, ParseStatus::Invalid(e)),
        };
        Sample {
            index,
            permutation,
            principles: parsed.principles,
            critique: parsed.critique,
            scores,
            status,
            finish,
            prompt_tokens,
            completion_tokens,
            meta_score: None,
            raw,
        }
    }

    pub fn valid_scores(&self) -> Option<&[u8]> {
        if self.status.is_valid() {
            self.scores.as_deref()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_scores_back_to_input_order() {
        // Shown order: input 2, input 0, input 1.
        let s = Sample::from_generation(0, vec![2, 0, 1], "Scores: \\boxed{9, 5, 1}".into(), FinishReason::Eos, false, 10, 5);
        assert_eq!(s.scores, Some(vec![5, 1, 9]));
        assert_eq!(s.status, ParseStatus::Valid);
        let bad = Sample::from_generation(1, vec![0, 1], "Scores: none".into(), FinishReason::Length, false, 10, 5);
        assert_eq!(bad.status, ParseStatus::Invalid(ParseFailure::NoScoreBlock));
        assert_eq!(bad.valid_scores(), None);
    }

    #[test]
    fn nul_becomes_the_replacement_character_everywhere() {
        // What Postgres stores is what a label file holds: found by the chaos test, where
        // 11 of 200 items read differently from embedded mode's by their NULs alone.
        let s = Sample::from_generation(0, vec![0, 1], "Analysis: ab\0\0c\nScores: \\boxed{7, 4}".into(), FinishReason::ScoreBlock, false, 10, 5);
        assert!(!s.raw.contains('\0') && s.raw.contains("ab\u{FFFD}\u{FFFD}c"), "{:?}", s.raw);
        assert!(!s.critique.contains('\0'));
        assert_eq!(s.scores, Some(vec![7, 4]));
    }
}
