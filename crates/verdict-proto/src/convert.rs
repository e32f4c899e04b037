//! Wire ⇄ core conversions.

use serde_json::{Map, Value};
use verdict_core::{
    parse::ParseFailure, Adaptive, Aggregation, FieldError, FinishReason, Item, LabelSpec, Message, OnBudget, ParseStatus,
    Problem, Prompt, Sample, SpecLimits, StopRule, Stopped, TemplateVersion, Verdict, VerdictRecord,
};

use crate::v1;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error("label spec: {0}")]
    Spec(String),
}

/// A wire item to a core item, with the same checks as the JSONL reader: the wire form is
/// turned into the JSON shape `{id, prompt|messages, responses}` and parsed by core, so
/// both edges reject exactly the same things with the same messages.
pub fn item_from_wire(w: &v1::Item) -> Result<Item, FieldError> {
    let mut obj = Map::new();
    if !w.id.is_empty() {
        obj.insert("id".into(), Value::String(w.id.clone()));
    }
    match &w.prompt {
        Some(v1::item::Prompt::Text(t)) => {
            obj.insert("prompt".into(), Value::String(t.clone()));
        }
        Some(v1::item::Prompt::Conversation(c)) => {
            let msgs = c
                .messages
                .iter()
                .map(|m| serde_json::json!({"role": m.role, "content": m.content}))
                .collect();
            obj.insert("messages".into(), Value::Array(msgs));
        }
        None => return Err(FieldError::new("prompt", Problem::Missing)),
    }
    obj.insert("responses".into(), Value::Array(w.responses.iter().cloned().map(Value::String).collect()));
    let mut item = Item::from_json(Value::Object(obj))?;
    if let Some(r) = w.reference_winner {
        if r as usize >= item.responses.len() {
            return Err(FieldError::new(
                "reference_winner",
                Problem::Other(format!("{r} is not a response index (the item has {})", item.responses.len())),
            ));
        }
        item.reference_winner = Some(r as usize);
    }
    if !w.metadata_json.is_empty() {
        match serde_json::from_str::<Value>(&w.metadata_json) {
            Ok(Value::Object(m)) => item.metadata = m,
            _ => return Err(FieldError::new("metadata_json", Problem::Other("must be a JSON object".into()))),
        }
    }
    Ok(item)
}

pub fn item_to_wire(item: &Item) -> v1::Item {
    let prompt = match &item.prompt {
        Prompt::Text(t) => v1::item::Prompt::Text(t.clone()),
        Prompt::Conversation(m) => v1::item::Prompt::Conversation(v1::Conversation {
            messages: m.iter().map(|m| v1::Message { role: m.role.clone(), content: m.content.clone() }).collect(),
        }),
    };
    v1::Item {
        id: item.id.clone(),
        prompt: Some(prompt),
        responses: item.responses.clone(),
        reference_winner: item.reference_winner.map(|r| r as u32),
        metadata_json: if item.metadata.is_empty() { String::new() } else { Value::Object(item.metadata.clone()).to_string() },
    }
}

/// A wire spec to a core spec validated within `limits`, zero values taking the documented
/// defaults.
pub fn spec_from_wire(w: &v1::LabelSpec, limits: &SpecLimits) -> Result<LabelSpec, ConvertError> {
    if w.judge.trim().is_empty() {
        return Err(ConvertError::Spec("`judge` is required: the name of the judge model workers serve".into()));
    }
    let mut s = LabelSpec::new(w.judge.clone());
    if w.k != 0 {
        s.k = w.k;
    }
    if w.has_temperature || w.temperature != 0.0 {
        s.temperature = w.temperature;
    }
    if w.top_p != 0.0 {
        s.top_p = w.top_p;
    }
    if w.max_new_tokens != 0 {
        s.max_new_tokens = w.max_new_tokens;
    }
    s.seed = w.seed;
    if !w.template.is_empty() {
        s.template = w.template.parse::<TemplateVersion>().map_err(|e| ConvertError::Spec(e.to_string()))?;
    }
    s.on_budget = match v1::OnBudget::try_from(w.on_budget).unwrap_or_default() {
        v1::OnBudget::Invalid => OnBudget::Invalid,
        _ => OnBudget::Force,
    };
    if v1::Aggregation::try_from(w.aggregation).unwrap_or_default() == v1::Aggregation::MetaRm {
        s.aggregation = Aggregation::MetaRm { k_meta: (w.k_meta != 0).then_some(w.k_meta) };
    } else if w.k_meta != 0 {
        return Err(ConvertError::Spec("k_meta is set but aggregation is not AGGREGATION_META_RM".into()));
    }
    if let Some(a) = &w.adaptive {
        let stop = match a.stop.as_str() {
            "" | "settled" => StopRule::Settled,
            "confident" => StopRule::Confident { confidence: a.confidence },
            other => return Err(ConvertError::Spec(format!("adaptive.stop {other:?}: use \"settled\" or \"confident\""))),
        };
        s.adaptive = Some(Adaptive { k_min: a.k_min, round: if a.round == 0 { a.k_min } else { a.round }, stop });
    }
    s.validate_within(limits).map_err(|e| ConvertError::Spec(e.to_string()))?;
    Ok(s)
}

pub fn spec_to_wire(s: &LabelSpec) -> v1::LabelSpec {
    let (aggregation, k_meta) = match s.aggregation {
        Aggregation::Voting => (v1::Aggregation::Voting, 0),
        Aggregation::MetaRm { k_meta } => (v1::Aggregation::MetaRm, k_meta.unwrap_or(0)),
    };
    v1::LabelSpec {
        judge: s.judge.clone(),
        k: s.k,
        temperature: s.temperature,
        has_temperature: true,
        top_p: s.top_p,
        max_new_tokens: s.max_new_tokens,
        seed: s.seed,
        template: s.template.name().to_string(),
        aggregation: aggregation as i32,
        k_meta,
        on_budget: match s.on_budget {
            OnBudget::Force => v1::OnBudget::Force,
            OnBudget::Invalid => v1::OnBudget::Invalid,
        } as i32,
        adaptive: s.adaptive.map(|a| {
            let (stop, confidence) = match a.stop {
                StopRule::Settled => ("settled", 0.0),
                StopRule::Confident { confidence } => ("confident", confidence),
            };
            v1::AdaptiveK { k_min: a.k_min, round: a.round, stop: stop.to_string(), confidence }
        }),
    }
}

fn failure_to_wire(f: &ParseFailure) -> v1::ParseFailure {
    let reason = serde_json::to_value(f)
        .ok()
        .and_then(|v| v.get("reason").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default();
    let mut w = v1::ParseFailure { reason, detail: f.to_string(), ..Default::default() };
    match f {
        ParseFailure::NoScoreBlock => {}
        ParseFailure::WrongCount { expected, got } => {
            w.expected = *expected as u32;
            w.got = *got as u32;
        }
        ParseFailure::NotInteger { value } => w.value = value.clone(),
        ParseFailure::OutOfRange { value } => w.value = value.to_string(),
    }
    w
}

fn failure_from_wire(f: &v1::ParseFailure) -> ParseFailure {
    match f.reason.as_str() {
        "wrong_count" => ParseFailure::WrongCount { expected: f.expected as usize, got: f.got as usize },
        "not_integer" => ParseFailure::NotInteger { value: f.value.clone() },
        "out_of_range" => ParseFailure::OutOfRange { value: f.value.parse().unwrap_or(0) },
        _ => ParseFailure::NoScoreBlock,
    }
}

pub fn sample_to_wire(s: &Sample) -> v1::Sample {
    let (status, failure) = match &s.status {
        ParseStatus::Valid => (v1::SampleStatus::Valid, None),
        ParseStatus::Forced => (v1::SampleStatus::Forced, None),
        ParseStatus::Invalid(f) => (v1::SampleStatus::Invalid, Some(failure_to_wire(f))),
    };
    v1::Sample {
        index: s.index,
        permutation: s.permutation.clone(),
        principles: s.principles.clone(),
        critique: s.critique.clone(),
        scores: s.scores.as_ref().map(|v| v.iter().map(|&x| x as u32).collect()).unwrap_or_default(),
        status: status as i32,
        failure,
        finish: match s.finish {
            FinishReason::Eos => v1::FinishReason::Eos,
            FinishReason::ScoreBlock => v1::FinishReason::ScoreBlock,
            FinishReason::Length => v1::FinishReason::Length,
        } as i32,
        prompt_tokens: s.prompt_tokens,
        completion_tokens: s.completion_tokens,
        meta_score: s.meta_score,
        raw: s.raw.clone(),
    }
}

pub fn sample_from_wire(w: &v1::Sample) -> Sample {
    let status = match v1::SampleStatus::try_from(w.status).unwrap_or_default() {
        v1::SampleStatus::Valid => ParseStatus::Valid,
        v1::SampleStatus::Forced => ParseStatus::Forced,
        _ => ParseStatus::Invalid(w.failure.as_ref().map(failure_from_wire).unwrap_or(ParseFailure::NoScoreBlock)),
    };
    Sample {
        index: w.index,
        permutation: w.permutation.clone(),
        principles: w.principles.clone(),
        critique: w.critique.clone(),
        scores: (!w.scores.is_empty()).then(|| w.scores.iter().map(|&x| x.min(255) as u8).collect()),
        status,
        finish: match v1::FinishReason::try_from(w.finish).unwrap_or_default() {
            v1::FinishReason::Eos => FinishReason::Eos,
            v1::FinishReason::ScoreBlock => FinishReason::ScoreBlock,
            _ => FinishReason::Length,
        },
        prompt_tokens: w.prompt_tokens,
        completion_tokens: w.completion_tokens,
        meta_score: w.meta_score,
        raw: w.raw.clone(),
    }
}

pub fn verdict_to_wire(v: &Verdict) -> v1::Verdict {
    v1::Verdict {
        summed: v.summed.clone(),
        mean: v.mean.clone(),
        winner: v.winner.map(|w| w as u32),
        margin: v.margin,
        tie: v.tie,
        valid: v.valid,
        agreement: v.agreement,
        stopped: v.stopped.map(|s| s.name().to_string()).unwrap_or_default(),
    }
}

/// Rebuild a core verdict; per-sample scores come from the samples.
pub fn verdict_from_wire(w: &v1::Verdict, samples: &[Sample]) -> Verdict {
    Verdict {
        summed: w.summed.clone(),
        mean: w.mean.clone(),
        sample_scores: samples.iter().map(|s| s.valid_scores().map(<[u8]>::to_vec)).collect(),
        winner: w.winner.map(|x| x as usize),
        margin: w.margin,
        tie: w.tie,
        valid: w.valid,
        agreement: w.agreement,
        stopped: Stopped::from_name(&w.stopped),
    }
}

pub fn record_to_wire(job_id: &str, r: &VerdictRecord) -> v1::VerdictRecord {
    let item = Item {
        id: r.id.clone(),
        prompt: r.prompt.clone(),
        responses: r.responses.clone(),
        reference_winner: r.reference_winner,
        metadata: r.metadata.clone(),
    };
    v1::VerdictRecord {
        job_id: job_id.to_string(),
        item: Some(item_to_wire(&item)),
        key: r.key.clone(),
        judge: r.judge.clone(),
        template: r.template.clone(),
        verdict: Some(verdict_to_wire(&r.verdict)),
        samples: r.samples.iter().map(sample_to_wire).collect(),
        agrees_with_reference: r.agrees_with_reference,
        fingerprint: r.fingerprint.clone(),
        meta_fingerprint: r.meta_fingerprint.clone(),
    }
}

pub fn record_from_wire(w: &v1::VerdictRecord) -> Result<VerdictRecord, FieldError> {
    let item = w.item.as_ref().ok_or_else(|| FieldError::new("item", Problem::Missing))?;
    let item = item_from_wire(item)?;
    let samples: Vec<Sample> = w.samples.iter().map(sample_from_wire).collect();
    let verdict = w.verdict.as_ref().ok_or_else(|| FieldError::new("verdict", Problem::Missing))?;
    let n = item.responses.len();
    if verdict.summed.len() != n {
        return Err(FieldError::new("verdict.summed", Problem::Other(format!("has {} values for {n} responses", verdict.summed.len()))));
    }
    Ok(VerdictRecord {
        id: item.id.clone(),
        key: w.key.clone(),
        judge: w.judge.clone(),
        fingerprint: w.fingerprint.clone(),
        meta_fingerprint: w.meta_fingerprint.clone(),
        template: w.template.clone(),
        prompt: item.prompt.clone(),
        responses: item.responses.clone(),
        verdict: verdict_from_wire(verdict, &samples),
        reference_winner: item.reference_winner,
        agrees_with_reference: w.agrees_with_reference,
        metadata: item.metadata.clone(),
        samples,
    })
}

/// Messages of a conversation prompt, for callers building wire items by hand.
pub fn messages(m: &[Message]) -> Vec<v1::Message> {
    m.iter().map(|m| v1::Message { role: m.role.clone(), content: m.content.clone() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip_and_wire_errors_name_fields() {
        let item = Item::from_json_line(r#"{"id":"x","messages":[{"role":"user","content":"q"}],"responses":["a","b"],"m":1}"#).unwrap();
        let back = item_from_wire(&item_to_wire(&item)).unwrap();
        assert_eq!(back, item);
        let mut bad = item_to_wire(&item);
        bad.responses.clear();
        assert_eq!(item_from_wire(&bad).unwrap_err().field, "responses");
        bad.prompt = None;
        assert_eq!(item_from_wire(&bad).unwrap_err().field, "prompt");
    }

    #[test]
    fn specs_round_trip_with_defaults() {
        let limits = SpecLimits::default();
        let s = spec_from_wire(&v1::LabelSpec { judge: "j".into(), ..Default::default() }, &limits).unwrap();
        assert_eq!(s, LabelSpec::new("j"));
        assert_eq!(spec_from_wire(&spec_to_wire(&s), &limits).unwrap(), s);
        let greedy = spec_from_wire(&v1::LabelSpec { judge: "j".into(), k: 1, has_temperature: true, ..Default::default() }, &limits).unwrap();
        assert_eq!(greedy.temperature, 0.0);
        assert!(spec_from_wire(&v1::LabelSpec::default(), &limits).is_err());
        let big = v1::LabelSpec { judge: "j".into(), k: 100, ..Default::default() };
        assert!(spec_from_wire(&big, &limits).unwrap_err().to_string().contains("k 100"));
        assert_eq!(spec_from_wire(&big, &SpecLimits { max_k: 128 }).unwrap().k, 100);
        let stray = v1::LabelSpec { judge: "j".into(), k_meta: 2, ..Default::default() };
        assert!(spec_from_wire(&stray, &limits).unwrap_err().to_string().contains("k_meta"));
    }

    #[test]
    fn parse_failures_keep_their_details_over_the_wire() {
        for f in [
            ParseFailure::NoScoreBlock,
            ParseFailure::WrongCount { expected: 2, got: 3 },
            ParseFailure::NotInteger { value: "7.5".into() },
            ParseFailure::OutOfRange { value: 11 },
        ] {
            assert_eq!(failure_from_wire(&failure_to_wire(&f)), f);
        }
    }
}
