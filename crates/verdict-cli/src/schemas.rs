//! The Parquet layouts of what Verdict writes, one fixed schema per kind of row, and the
//! reshaping of a verdict record into its Parquet row (and back).
//!
//! JSONL keeps a record's own JSON shape. Parquet needs one type per column, so a verdict
//! row differs in three places, all reversible: a text prompt is in `prompt` and a
//! conversation in `messages` (the two input shapes Verdict reads), `metadata` is a JSON
//! object written as text, and an invalid sample's failure is spread over `reason`,
//! `expected`, `got` and `value`.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema};
use serde_json::{json, Value};
use verdict_core::export::PromptForm;

fn list(item: DataType, nullable_items: bool) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, nullable_items)))
}

fn messages() -> DataType {
    list(DataType::Struct(Fields::from(vec![Field::new("role", DataType::Utf8, false), Field::new("content", DataType::Utf8, false)])), false)
}

/// `prompt`, `chosen`, `rejected` and `response` columns in a form.
fn text_or_messages(form: PromptForm) -> DataType {
    match form {
        PromptForm::Standard => DataType::Utf8,
        PromptForm::Conversational => messages(),
    }
}

/// TRL's DPO columns (`prompt`, `chosen`, `rejected`) plus the pair's id, margin and scores.
pub fn dpo(form: PromptForm) -> Schema {
    Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("prompt", text_or_messages(form), false),
        Field::new("chosen", text_or_messages(form), false),
        Field::new("rejected", text_or_messages(form), false),
        Field::new("margin", DataType::Int64, false),
        Field::new("chosen_score", DataType::Float64, false),
        Field::new("rejected_score", DataType::Float64, false),
        Field::new("agreement", DataType::Float64, false),
    ])
}

/// One row per response: its reward (mean score over the valid samples).
pub fn rewards(form: PromptForm) -> Schema {
    Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("prompt", text_or_messages(form), false),
        Field::new("response_index", DataType::Int64, false),
        Field::new("response", DataType::Utf8, false),
        Field::new("reward", DataType::Float64, false),
        Field::new("valid", DataType::Int64, false),
    ])
}

fn sample() -> DataType {
    DataType::Struct(Fields::from(vec![
        Field::new("index", DataType::Int64, false),
        Field::new("permutation", list(DataType::Int64, false), false),
        Field::new("principles", DataType::Utf8, false),
        Field::new("critique", DataType::Utf8, false),
        Field::new("scores", list(DataType::Int64, false), true),
        Field::new("status", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, true),
        Field::new("expected", DataType::Int64, true),
        Field::new("got", DataType::Int64, true),
        Field::new("value", DataType::Utf8, true),
        Field::new("finish", DataType::Utf8, false),
        Field::new("prompt_tokens", DataType::Int64, false),
        Field::new("completion_tokens", DataType::Int64, false),
        Field::new("meta_score", DataType::Float64, true),
        Field::new("raw", DataType::Utf8, false),
    ]))
}

/// Whole verdict records.
pub fn verdicts() -> Schema {
    Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("key", DataType::Utf8, false),
        Field::new("judge", DataType::Utf8, false),
        Field::new("fingerprint", DataType::Utf8, false),
        Field::new("meta_fingerprint", DataType::Utf8, true),
        Field::new("template", DataType::Utf8, false),
        Field::new("prompt", DataType::Utf8, true),
        Field::new("messages", messages(), true),
        Field::new("responses", list(DataType::Utf8, false), false),
        Field::new("summed", list(DataType::Int64, false), false),
        Field::new("mean", list(DataType::Float64, false), false),
        Field::new("sample_scores", list(list(DataType::Int64, false), true), false),
        Field::new("winner", DataType::Int64, true),
        Field::new("margin", DataType::Int64, false),
        Field::new("tie", DataType::Boolean, false),
        Field::new("valid", DataType::Int64, false),
        Field::new("agreement", DataType::Float64, false),
        Field::new("reference_winner", DataType::Int64, true),
        Field::new("agrees_with_reference", DataType::Boolean, true),
        Field::new("metadata", DataType::Utf8, true),
        Field::new("samples", list(sample(), false), false),
    ])
}

/// A verdict record's JSON (as `VerdictRecord` serializes) in the Parquet layout.
pub fn verdict_row(mut record: Value) -> Value {
    let Some(obj) = record.as_object_mut() else { return record };
    if let Some(p @ Value::Array(_)) = obj.get("prompt").cloned() {
        obj.insert("messages".into(), p);
        obj.insert("prompt".into(), Value::Null);
    }
    if let Some(m) = obj.remove("metadata") {
        obj.insert("metadata".into(), Value::String(m.to_string()));
    }
    if let Some(Value::Array(samples)) = obj.get_mut("samples") {
        for s in samples.iter_mut().filter_map(Value::as_object_mut) {
            // A not-integer failure's value is text, an out-of-range one's a number.
            if let Some(v) = s.get("value").cloned().filter(|v| !v.is_string() && !v.is_null()) {
                s.insert("value".into(), Value::String(v.to_string()));
            }
        }
    }
    record
}

/// A Parquet verdict row (as read back to JSON) in the record's own JSON shape.
pub fn verdict_from_row(mut row: Value) -> Value {
    let Some(obj) = row.as_object_mut() else { return row };
    if let Some(m) = obj.remove("messages") {
        obj.insert("prompt".into(), m);
    }
    if let Some(Value::String(text)) = obj.remove("metadata") {
        if let Ok(m @ Value::Object(_)) = serde_json::from_str::<Value>(&text) {
            obj.insert("metadata".into(), m);
        }
    }
    if let Some(Value::Array(samples)) = obj.get_mut("samples") {
        for s in samples.iter_mut().filter_map(Value::as_object_mut) {
            if s.get("reason").and_then(Value::as_str) == Some("out_of_range") {
                if let Some(n) = s.get("value").and_then(Value::as_str).and_then(|v| v.parse::<i64>().ok()) {
                    s.insert("value".into(), json!(n));
                }
            }
        }
    }
    row
}
