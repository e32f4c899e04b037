//! Training rows from verdicts: DPO pairs (TRL's `prompt` / `chosen` / `rejected`, plus
//! the margin and scores) and per-response rewards.
//!
//! TRL reads a preference dataset in one of two forms, and one file must use one of them
//! throughout: *standard* (the prompt and the responses are strings) or *conversational*
//! (the prompt is a list of `{role, content}` messages and each response a one-message
//! list from the assistant). A conversation cannot be written in the standard form without
//! inventing a way to flatten it, so a job with any conversation prompt exports
//! conversationally (see [`PromptForm`]).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{Message, Prompt, VerdictRecord};

/// How prompts and responses are written in an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptForm {
    /// `prompt`, `chosen`, `rejected` are strings.
    Standard,
    /// `prompt` is a list of messages; `chosen` and `rejected` are
    /// `[{"role": "assistant", "content": ...}]`.
    Conversational,
}

impl PromptForm {
    /// The form for a job: standard unless some prompt is a conversation.
    pub fn for_job(has_conversation: bool) -> Self {
        if has_conversation {
            PromptForm::Conversational
        } else {
            PromptForm::Standard
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("item {id}: its prompt is a conversation, which the standard form cannot hold; export in the conversational form")]
    ConversationInStandardForm { id: String },
}

/// A DPO pair: the winner against the lowest-scored response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpoRow {
    pub id: String,
    /// A string (standard form) or a list of messages (conversational form).
    pub prompt: Value,
    pub chosen: Value,
    pub rejected: Value,
    /// Summed score of chosen minus rejected, over the valid samples: the quantity
    /// `--min-margin` filters on.
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
    /// A string (standard form) or a list of messages (conversational form).
    pub prompt: Value,
    pub response_index: usize,
    pub response: String,
    pub reward: f64,
    pub valid: u32,
}

/// The prompt as JSON in its own shape: a string, or a list of messages.
pub fn prompt_value(p: &Prompt) -> Value {
    match p {
        Prompt::Text(t) => Value::String(t.clone()),
        Prompt::Conversation(m) => serde_json::to_value(m).unwrap_or(Value::Null),
    }
}

fn prompt_in(form: PromptForm, r: &VerdictRecord) -> Result<Value, ExportError> {
    match (form, &r.prompt) {
        (PromptForm::Standard, Prompt::Text(t)) => Ok(Value::String(t.clone())),
        (PromptForm::Standard, Prompt::Conversation(_)) => Err(ExportError::ConversationInStandardForm { id: r.id.clone() }),
        (PromptForm::Conversational, p) => Ok(serde_json::to_value(prompt_messages(p)).unwrap_or(Value::Null)),
    }
}

fn response_in(form: PromptForm, text: &str) -> Value {
    match form {
        PromptForm::Standard => Value::String(text.to_string()),
        PromptForm::Conversational => json!([{"role": "assistant", "content": text}]),
    }
}

/// The DPO pair of a verdict, if it decides something: a winner, no tie, at least two
/// responses, and a pair margin (chosen's sum minus rejected's) of at least `min_margin`
/// (and at least 1: a pair its judge scored equal teaches nothing).
pub fn dpo_row(r: &VerdictRecord, min_margin: u32, form: PromptForm) -> Result<Option<DpoRow>, ExportError> {
    let v = &r.verdict;
    let Some(winner) = v.winner else { return Ok(None) };
    if v.tie || r.responses.len() < 2 {
        return Ok(None);
    }
    // The loser: lowest sum, first by index on equal sums.
    let Some(loser) = (0..r.responses.len()).filter(|&i| i != winner).min_by_key(|&i| (v.summed[i], i)) else {
        return Ok(None);
    };
    let margin = v.summed[winner].saturating_sub(v.summed[loser]);
    if margin < min_margin.max(1) {
        return Ok(None);
    }
    Ok(Some(DpoRow {
        id: r.id.clone(),
        prompt: prompt_in(form, r)?,
        chosen: response_in(form, &r.responses[winner]),
        rejected: response_in(form, &r.responses[loser]),
        margin,
        chosen_score: v.mean[winner],
        rejected_score: v.mean[loser],
        agreement: v.agreement,
    }))
}

/// One reward row per response, for items with at least one valid sample.
pub fn reward_rows(r: &VerdictRecord, form: PromptForm) -> Result<Vec<RewardRow>, ExportError> {
    if r.verdict.valid == 0 {
        return Ok(vec![]);
    }
    let prompt = prompt_in(form, r)?;
    Ok(r.responses
        .iter()
        .enumerate()
        .map(|(i, resp)| RewardRow {
            id: r.id.clone(),
            prompt: prompt.clone(),
            response_index: i,
            response: resp.clone(),
            reward: r.verdict.mean[i],
            valid: r.verdict.valid,
        })
        .collect())
}

/// A prompt as messages: a text prompt is one user message.
pub fn prompt_messages(p: &Prompt) -> Vec<Message> {
    match p {
        Prompt::Text(t) => vec![Message { role: "user".into(), content: t.clone() }],
        Prompt::Conversation(m) => m.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Fingerprints, Item, LabelSpec, Verdict};

    fn rec(line: &str, summed: Vec<u32>, winner: Option<usize>, tie: bool) -> VerdictRecord {
        let item = Item::from_json_line(line).unwrap();
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
            stopped: None,
        };
        VerdictRecord::new(&item, "k".into(), &LabelSpec::new("j"), &Fingerprints::default(), v, vec![])
    }

    const THREE: &str = r#"{"id":"x","prompt":"p","responses":["a","b","c"]}"#;

    #[test]
    fn dpo_pairs_winner_with_the_worst_and_filters_on_that_pair() {
        // Winner 18, runner-up 10, worst 4: the pair's margin is 14, the verdict's 8.
        let mut r = rec(THREE, vec![10, 18, 4], Some(1), false);
        r.verdict.margin = 8;
        let row = dpo_row(&r, 0, PromptForm::Standard).unwrap().unwrap();
        assert_eq!((row.chosen.as_str(), row.rejected.as_str(), row.margin), (Some("b"), Some("c"), 14));
        assert_eq!(row.prompt, Value::String("p".into()));
        assert!(dpo_row(&r, 14, PromptForm::Standard).unwrap().is_some(), "the filter reads the row's own margin");
        assert!(dpo_row(&r, 15, PromptForm::Standard).unwrap().is_none());
        assert!(dpo_row(&rec(THREE, vec![9, 9, 1], Some(0), true), 0, PromptForm::Standard).unwrap().is_none(), "ties decide nothing");
        assert!(dpo_row(&rec(THREE, vec![0, 0, 0], None, false), 0, PromptForm::Standard).unwrap().is_none());
        let rewards = reward_rows(&r, PromptForm::Standard).unwrap();
        assert_eq!(rewards.iter().map(|x| x.reward).collect::<Vec<_>>(), vec![5.0, 9.0, 2.0]);
    }

    #[test]
    fn one_form_per_file() {
        let text = rec(THREE, vec![10, 18, 4], Some(1), false);
        let conv = rec(r#"{"id":"y","messages":[{"role":"system","content":"s"},{"role":"user","content":"q"}],"responses":["a","b"]}"#, vec![3, 9], Some(1), false);
        let row = dpo_row(&text, 0, PromptForm::Conversational).unwrap().unwrap();
        assert_eq!(row.prompt, json!([{"role": "user", "content": "p"}]));
        assert_eq!(row.chosen, json!([{"role": "assistant", "content": "b"}]));
        let row = dpo_row(&conv, 0, PromptForm::Conversational).unwrap().unwrap();
        assert_eq!(row.prompt.as_array().unwrap().len(), 2);
        assert_eq!(dpo_row(&conv, 0, PromptForm::Standard), Err(ExportError::ConversationInStandardForm { id: "y".into() }));
        assert!(reward_rows(&conv, PromptForm::Standard).is_err());
        assert_eq!(PromptForm::for_job(true), PromptForm::Conversational);
    }
}
