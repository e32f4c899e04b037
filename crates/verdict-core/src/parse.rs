//! Reading a judgement: scores from the last `\boxed{...}` or `[[...]]` (exactly n integers
//! in 1..=10, else the sample is invalid with a reason), the principles from the
//! `Specific Criteria:` section and the critique from `Analysis:`.

use serde::{Deserialize, Serialize};

/// Why a judgement's scores could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum ParseFailure {
    #[error("no \\boxed{{..}} or [[..]] score block")]
    NoScoreBlock,
    #[error("score block holds {got} values, expected {expected}")]
    WrongCount { expected: usize, got: usize },
    #[error("score {value:?} is not an integer")]
    NotInteger { value: String },
    #[error("score {value} is outside 1..=10")]
    OutOfRange { value: i64 },
}

/// A judgement split into its parts. `scores` are in the order the judge saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedJudgement {
    pub principles: String,
    pub critique: String,
    pub scores: Result<Vec<u8>, ParseFailure>,
}

/// The contents of the last score block, whichever delimiter it uses.
fn last_block(text: &str) -> Option<&str> {
    let boxed = text.rfind("\\boxed{").and_then(|start| {
        let body = &text[start + "\\boxed{".len()..];
        body.find('}').map(|end| (start, &body[..end]))
    });
    let brackets = text.rfind("[[").and_then(|start| {
        let body = &text[start + 2..];
        body.find("]]").map(|end| (start, &body[..end]))
    });
    match (boxed, brackets) {
        (Some(a), Some(b)) => Some(if a.0 > b.0 { a.1 } else { b.1 }),
        (a, b) => a.or(b).map(|(_, s)| s),
    }
}

/// Parse the scores of a judgement over `n` responses.
pub fn parse_scores(text: &str, n: usize) -> Result<Vec<u8>, ParseFailure> {
    let block = last_block(text).ok_or(ParseFailure::NoScoreBlock)?;
    let parts: Vec<&str> = block.split(',').map(str::trim).collect();
    if parts.len() != n {
        return Err(ParseFailure::WrongCount { expected: n, got: parts.len() });
    }
    parts
        .iter()
        .map(|p| {
            let v: i64 = p
                .parse()
                .map_err(|_| ParseFailure::NotInteger { value: (*p).to_string() })?;
            if (1..=10).contains(&v) {
                Ok(v as u8)
            } else {
                Err(ParseFailure::OutOfRange { value: v })
            }
        })
        .collect()
}

/// The text after `marker` up to the first of `ends` (or the end), trimmed.
fn section<'a>(text: &'a str, marker: &str, ends: &[&str]) -> Option<&'a str> {
    let start = text.find(marker)? + marker.len();
    let rest = &text[start..];
    let end = ends.iter().filter_map(|e| rest.find(e)).min().unwrap_or(rest.len());
    Some(rest[..end].trim())
}

/// Split a judgement into principles, critique and scores.
pub fn parse_judgement(text: &str, n: usize) -> ParsedJudgement {
    let principles = section(text, "Specific Criteria:", &["Analysis:", "Scores:"]).unwrap_or("");
    let critique = match section(text, "Analysis:", &["Scores:"]) {
        Some(c) => c.to_string(),
        // A judge that skipped the headings still wrote a critique: everything before the
        // score line.
        None => text.split("Scores:").next().unwrap_or("").trim().to_string(),
    };
    ParsedJudgement {
        principles: principles.to_string(),
        critique,
        scores: parse_scores(text, n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_sections_and_scores() {
        let t = "Specific Criteria: correctness (60%), style (40%).\nAnalysis: A is right, B is wrong.\nScores: \\boxed{8, 3}";
        let p = parse_judgement(t, 2);
        assert_eq!(p.principles, "correctness (60%), style (40%).");
        assert_eq!(p.critique, "A is right, B is wrong.");
        assert_eq!(p.scores, Ok(vec![8, 3]));
    }

    #[test]
    fn takes_the_last_block_of_either_kind() {
        assert_eq!(parse_scores("\\boxed{1, 2} then [[9, 10]]", 2), Ok(vec![9, 10]));
        assert_eq!(parse_scores("[[9, 10]] then \\boxed{1,2}", 2), Ok(vec![1, 2]));
        assert_eq!(parse_scores("\\boxed{7}", 1), Ok(vec![7]));
    }

    #[test]
    fn rejects_bad_blocks_with_reasons() {
        assert_eq!(parse_scores("no scores", 2), Err(ParseFailure::NoScoreBlock));
        assert_eq!(parse_scores("\\boxed{1, 2", 2), Err(ParseFailure::NoScoreBlock));
        assert_eq!(parse_scores("\\boxed{1, 2, 3}", 2), Err(ParseFailure::WrongCount { expected: 2, got: 3 }));
        assert_eq!(parse_scores("\\boxed{7.5, 2}", 2), Err(ParseFailure::NotInteger { value: "7.5".into() }));
        assert_eq!(parse_scores("\\boxed{0, 2}", 2), Err(ParseFailure::OutOfRange { value: 0 }));
        assert_eq!(parse_scores("\\boxed{11, 2}", 2), Err(ParseFailure::OutOfRange { value: 11 }));
        assert_eq!(parse_scores("\\boxed{}", 1), Err(ParseFailure::NotInteger { value: "".into() }));
    }

    proptest! {
        #[test]
        fn any_well_formed_block_round_trips(scores in prop::collection::vec(1u8..=10, 1..8), prefix in "[a-zA-Z ,.\n]{0,80}", spaces in 0usize..3) {
            let sep = format!(",{}", " ".repeat(spaces));
            let body = scores.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(&sep);
            let text = format!("{prefix}Scores: \\boxed{{{body}}}");
            prop_assert_eq!(parse_scores(&text, scores.len()), Ok(scores.clone()));
            let text = format!("{prefix}[[{body}]]");
            prop_assert_eq!(parse_scores(&text, scores.len()), Ok(scores));
        }

        #[test]
        fn never_panics_and_only_accepts_valid_scores(text in "\\PC{0,200}", n in 1usize..6) {
            if let Ok(s) = parse_scores(&text, n) {
                prop_assert_eq!(s.len(), n);
                prop_assert!(s.iter().all(|v| (1..=10).contains(v)));
            }
        }

        #[test]
        fn out_of_range_is_never_accepted(v in prop_oneof![-1000i64..=0, 11i64..1000]) {
            let text = format!("\\boxed{{5, {v}}}");
            prop_assert_eq!(parse_scores(&text, 2), Err(ParseFailure::OutOfRange { value: v }));
        }
    }
}
