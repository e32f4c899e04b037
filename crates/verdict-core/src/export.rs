//! Training rows from verdicts: DPO pairs (TRL's `prompt` / `chosen` / `rejected`, plus
//! the margin and scores) and per-response rewards.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Message, Prompt, VerdictRecord};

/// A DPO pair: the winner against the lowest-scored response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpoRow {
    pub id: String,
    /// A string, or TRL's conversational form (a list of messages).
    pub prompt: Value,
    pub chosen: String,
    pub rejected: String,
    /// Summed score of chosen minus rejected.
    pub margin: u32,
    /// Mean scores on the 1–10 scale.
    pub chosen_score: f64,
    pub rejected_score: f64,
    /// Share of valid samples that rank the chosen response first.
    pub agreement: f64,
}

/// One response's reward: its mean score over valid samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardRow {
    pub id: String,
    pub prompt: Value,
    pub response_index: usize,
    pub response: String,
    pub reward: f64,
    pub valid: u32,
}

pub fn prompt_value(p: &Prompt) -> Value {
    match p {
        Prompt::Text(t) => Value::String(t.clone()),
        Prompt::Conversation(m) => serde_json::to_value(m).unwrap_or(Value::Null),
    }
}

/// The DPO pair of a verdict, if it decides something: a winner, no tie, at least two
/// responses, and a margin of at least `min_margin`.
pub fn dpo_row(r: &VerdictRecord, min_margin: u32) -> Option<DpoRow> {
    let v = &r.verdict;
    let winner = v.winner?;
    if v.tie || r.responses.len() < 2 || v.margin < min_margin.max(1) {
        return None;
    }
    // The loser: lowest sum, first by index on equal sums.
    let loser = (0..r.responses.len()).filter(|&i| i != winner).min_by_key(|&i| (v.summed[i], i))?;
    Some(DpoRow {
        id: r.id.clone(),
        prompt: prompt_value(&r.prompt),
        chosen: r.responses[winner].clone(),
        rejected: r.responses[loser].clone(),
        margin: v.summed[winner] - v.summed[loser],
        chosen_score: v.mean[winner],
        rejected_score: v.mean[loser],
        agreement: v.agreement,
    })
}

/// One reward row per response, for items with at least one valid sample.
pub fn reward_rows(r: &VerdictRecord) -> Vec<RewardRow> {
    if r.verdict.valid == 0 {
        return vec![];
    }
    r.responses
        .iter()
        .enumerate()
        .map(|(i, resp)| RewardRow {
            id: r.id.clone(),
            prompt: prompt_value(&r.prompt),
            response_index: i,
            response: resp.clone(),
            reward: r.verdict.mean[i],
            valid: r.verdict.valid,
        })
        .collect()
}

/// A conversation prompt as messages, for writers that need a fixed column type.
pub fn prompt_messages(p: &Prompt) -> Vec<Message> {
    match p {
        Prompt::Text(t) => vec![Message { role: "user".into(), content: t.clone() }],
        Prompt::Conversation(m) => m.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Item, LabelSpec, Verdict};

    fn rec(summed: Vec<u32>, winner: Option<usize>, tie: bool) -> VerdictRecord {
        let item = Item::from_json_line(r#"{"id":"x","prompt":"p","responses":["a","b","c"]}"#).unwrap();
        let valid = 2;
        let v = Verdict {
            mean: summed.iter().map(|&s| s as f64 / valid as f64).collect(),
            margin: 0,
            summed,
            sample_scores: vec![],
            winner,
            tie,
            valid,
            agreement: 1.0,
        };
        VerdictRecord::new(&item, "k".into(), &LabelSpec::new("j"), v, vec![])
    }

    #[test]
    fn dpo_pairs_winner_with_the_worst() {
        let mut r = rec(vec![10, 18, 4], Some(1), false);
        r.verdict.margin = 8;
        let row = dpo_row(&r, 0).unwrap();
        assert_eq!((row.chosen.as_str(), row.rejected.as_str(), row.margin), ("b", "c", 14));
        assert_eq!(row.prompt, Value::String("p".into()));
        assert!(dpo_row(&r, 9).is_none(), "below the minimum margin");
        assert!(dpo_row(&rec(vec![9, 9, 1], Some(0), true), 0).is_none(), "ties decide nothing");
        assert!(dpo_row(&rec(vec![0, 0, 0], None, false), 0).is_none());
        assert_eq!(reward_rows(&r).iter().map(|x| x.reward).collect::<Vec<_>>(), vec![5.0, 9.0, 2.0]);
    }
}
