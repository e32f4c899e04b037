//! Items and the JSON shapes they arrive in.
//!
//! An item is one prompt (plain text or a chat conversation) and n ≥ 1 responses to judge.
//! [`Item::from_json`] accepts the shapes preference datasets already use and rejects
//! anything else with a [`FieldError`] that names the field and says what is wrong, so a
//! caller can point at `line 12, field responses[1]` without guessing.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::key::ContentKey;

/// One chat message of a conversation prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// What the responses answer: a single user turn, or a whole conversation whose last turn
/// is the query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Conversation(Vec<Message>),
}

/// A unit of labeling work: one prompt, n ≥ 1 responses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// The caller's id, or the item's content hash when the input had none.
    pub id: String,
    pub prompt: Prompt,
    pub responses: Vec<String>,
    /// For `{prompt, chosen, rejected}` input: the index the dataset already prefers (0),
    /// so a verdict can say whether the judge agrees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_winner: Option<usize>,
    /// Every input field Verdict does not interpret, carried through to the output.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}

/// What is wrong with a field of an input record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("not valid JSON: {0}")]
    NotJson(String),
    #[error("expected a JSON object, got {0}")]
    NotAnObject(&'static str),
    #[error("is missing")]
    Missing,
    #[error("expected {expected}, got {got}")]
    WrongType { expected: &'static str, got: &'static str },
    #[error("is empty")]
    Empty,
    #[error("must hold at least one response")]
    NoResponses,
    #[error("role must be one of system, user, assistant; got {0:?}")]
    BadRole(String),
    #[error("a conversation must end with a user message, it ends with {0:?}")]
    LastTurnNotUser(String),
    #[error("no known shape: expected {{prompt, chosen, rejected}}, {{prompt, responses}} or {{messages, responses}}")]
    UnknownShape,
    #[error("has {tokens} tokens, more than the {limit} the judge's context leaves after max_new_tokens")]
    TooLong { tokens: usize, limit: usize },
    #[error("{0}")]
    Other(String),
}

/// A bad field: which one, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}` {problem}")]
pub struct FieldError {
    pub field: String,
    pub problem: Problem,
}

impl FieldError {
    pub fn new(field: impl Into<String>, problem: Problem) -> Self {
        Self { field: field.into(), problem }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn nul(field: &str) -> FieldError {
    FieldError::new(field, Problem::Other("contains a NUL character (\\u0000)".into()))
}

/// The first string (or object key) inside `v` holding a NUL, as a field path below `field`.
fn find_nul(v: &Value, field: &str) -> Option<String> {
    match v {
        Value::String(s) => s.contains('\0').then(|| field.to_string()),
        Value::Array(list) => list.iter().enumerate().find_map(|(i, x)| find_nul(x, &format!("{field}[{i}]"))),
        Value::Object(m) => m.iter().find_map(|(k, x)| {
            let at = format!("{field}.{k}");
            if k.contains('\0') {
                Some(at)
            } else {
                find_nul(x, &at)
            }
        }),
        _ => None,
    }
}

fn non_empty_string(v: &Value, field: &str) -> Result<String, FieldError> {
    match v {
        Value::String(s) if s.trim().is_empty() => Err(FieldError::new(field, Problem::Empty)),
        // NUL is never text; it is also what Postgres cannot store.
        Value::String(s) if s.contains('\0') => Err(nul(field)),
        Value::String(s) => Ok(s.clone()),
        other => Err(FieldError::new(
            field,
            Problem::WrongType { expected: "a string", got: type_name(other) },
        )),
    }
}

fn messages(v: &Value, field: &str) -> Result<Vec<Message>, FieldError> {
    let Value::Array(list) = v else {
        return Err(FieldError::new(
            field,
            Problem::WrongType { expected: "an array of messages", got: type_name(v) },
        ));
    };
    if list.is_empty() {
        return Err(FieldError::new(field, Problem::Empty));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let at = format!("{field}[{i}]");
            let Value::Object(obj) = m else {
                return Err(FieldError::new(
                    at,
                    Problem::WrongType { expected: "an object {role, content}", got: type_name(m) },
                ));
            };
            let role = obj
                .get("role")
                .ok_or_else(|| FieldError::new(format!("{at}.role"), Problem::Missing))
                .and_then(|r| non_empty_string(r, &format!("{at}.role")))?;
            if !matches!(role.as_str(), "system" | "user" | "assistant") {
                return Err(FieldError::new(format!("{at}.role"), Problem::BadRole(role)));
            }
            let content = obj
                .get("content")
                .ok_or_else(|| FieldError::new(format!("{at}.content"), Problem::Missing))
                .and_then(|c| non_empty_string(c, &format!("{at}.content")))?;
            Ok(Message { role, content })
        })
        .collect()
}

fn prompt_field(v: &Value, field: &str) -> Result<Prompt, FieldError> {
    match v {
        Value::Array(_) => {
            let msgs = messages(v, field)?;
            check_conversation(&msgs, field)?;
            Ok(Prompt::Conversation(msgs))
        }
        _ => Ok(Prompt::Text(non_empty_string(v, field)?)),
    }
}

fn check_conversation(msgs: &[Message], field: &str) -> Result<(), FieldError> {
    match msgs.last() {
        Some(last) if last.role != "user" => Err(FieldError::new(
            format!("{field}[{}].role", msgs.len() - 1),
            Problem::LastTurnNotUser(last.role.clone()),
        )),
        _ => Ok(()),
    }
}

/// A response given as a string, or (TRL's conversational format) as a one-message list
/// `[{"role": "assistant", "content": ...}]`.
fn response_field(v: &Value, field: &str) -> Result<String, FieldError> {
    match v {
        Value::Array(list) if list.len() == 1 => {
            let msgs = messages(v, field)?;
            let m = &msgs[0];
            if m.role != "assistant" {
                return Err(FieldError::new(
                    format!("{field}[0].role"),
                    Problem::Other(format!("a response message must be from the assistant, got {:?}", m.role)),
                ));
            }
            Ok(m.content.clone())
        }
        Value::Array(_) => Err(FieldError::new(
            field,
            Problem::WrongType {
                expected: "a string or one assistant message",
                got: "an array of several messages",
            },
        )),
        _ => non_empty_string(v, field),
    }
}

impl Item {
    /// Parse one input line (one JSON object) in any of the accepted shapes.
    pub fn from_json_line(line: &str) -> Result<Item, FieldError> {
        let value: Value = serde_json::from_str(line)
            .map_err(|e| FieldError::new("(line)", Problem::NotJson(e.to_string())))?;
        Item::from_json(value)
    }

    /// Build an item from a JSON object in any of the accepted shapes:
    /// `{prompt, chosen, rejected}`, `{prompt, responses}`, `{messages, responses}`; each
    /// may carry an `id` (string or integer). Unknown fields become metadata.
    pub fn from_json(value: Value) -> Result<Item, FieldError> {
        let Value::Object(mut obj) = value else {
            return Err(FieldError::new("(line)", Problem::NotAnObject(type_name(&value))));
        };
        let id = match obj.remove("id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => {
                return Err(FieldError::new("id", Problem::Empty))
            }
            Some(Value::String(s)) if s.contains('\0') => return Err(nul("id")),
            Some(Value::String(s)) => Some(s),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => {
                return Err(FieldError::new(
                    "id",
                    Problem::WrongType { expected: "a string or a number", got: type_name(&other) },
                ))
            }
        };

        let (prompt, responses, reference_winner) = if obj.contains_key("chosen")
            || obj.contains_key("rejected")
        {
            let prompt = take(&mut obj, "prompt").and_then(|v| prompt_field(&v, "prompt"))?;
            let chosen = take(&mut obj, "chosen").and_then(|v| response_field(&v, "chosen"))?;
            let rejected =
                take(&mut obj, "rejected").and_then(|v| response_field(&v, "rejected"))?;
            (prompt, vec![chosen, rejected], Some(0))
        } else if obj.contains_key("responses") {
            let prompt = match (obj.remove("prompt"), obj.remove("messages")) {
                (Some(p), None) => prompt_field(&p, "prompt")?,
                (None, Some(m)) => {
                    let msgs = messages(&m, "messages")?;
                    check_conversation(&msgs, "messages")?;
                    Prompt::Conversation(msgs)
                }
                (Some(_), Some(_)) => {
                    return Err(FieldError::new(
                        "messages",
                        Problem::Other("give either `prompt` or `messages`, not both".into()),
                    ))
                }
                (None, None) => return Err(FieldError::new("prompt", Problem::Missing)),
            };
            let responses = take(&mut obj, "responses")?;
            let Value::Array(list) = responses else {
                return Err(FieldError::new(
                    "responses",
                    Problem::WrongType { expected: "an array of strings", got: type_name(&responses) },
                ));
            };
            if list.is_empty() {
                return Err(FieldError::new("responses", Problem::NoResponses));
            }
            let responses = list
                .iter()
                .enumerate()
                .map(|(i, r)| response_field(r, &format!("responses[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            (prompt, responses, None)
        } else if obj.contains_key("prompt") || obj.contains_key("messages") {
            return Err(FieldError::new("responses", Problem::Missing));
        } else {
            return Err(FieldError::new("(line)", Problem::UnknownShape));
        };

        // Metadata travels to the store and to every export: a NUL there would be refused
        // by Postgres (JSONB cannot hold \u0000) far from the line that carried it.
        for (k, v) in &obj {
            if k.contains('\0') {
                return Err(nul("(line)"));
            }
            if let Some(at) = find_nul(v, k) {
                return Err(nul(&at));
            }
        }
        let mut item = Item {
            id: String::new(),
            prompt,
            responses,
            reference_winner,
            metadata: obj,
        };
        item.id = id.unwrap_or_else(|| ContentKey::of_item(&item).short());
        Ok(item)
    }

    /// The text of the query the responses answer (the last user turn).
    pub fn query(&self) -> &str {
        match &self.prompt {
            Prompt::Text(t) => t,
            Prompt::Conversation(m) => m.last().map(|m| m.content.as_str()).unwrap_or(""),
        }
    }
}

fn take(obj: &mut Map<String, Value>, field: &str) -> Result<Value, FieldError> {
    obj.remove(field).ok_or_else(|| FieldError::new(field, Problem::Missing))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: &str) -> FieldError {
        Item::from_json_line(line).expect_err("should be rejected")
    }

    #[test]
    fn accepts_the_three_shapes() {
        let a = Item::from_json_line(r#"{"id":"a","prompt":"p","chosen":"c","rejected":"r"}"#).unwrap();
        assert_eq!(a.responses, vec!["c", "r"]);
        assert_eq!(a.reference_winner, Some(0));
        let b = Item::from_json_line(r#"{"id":7,"prompt":"p","responses":["x","y","z"],"src":"hh"}"#).unwrap();
        assert_eq!(b.id, "7");
        assert_eq!(b.responses.len(), 3);
        assert_eq!(b.metadata["src"], "hh");
        let c = Item::from_json_line(
            r#"{"messages":[{"role":"system","content":"s"},{"role":"user","content":"q"}],"responses":["x"]}"#,
        )
        .unwrap();
        assert_eq!(c.query(), "q");
        assert_eq!(c.id.len(), 16, "an item without id is named by its content hash");
    }

    #[test]
    fn accepts_trl_conversational_preference_rows() {
        let row = r#"{"prompt":[{"role":"user","content":"q"}],"chosen":[{"role":"assistant","content":"c"}],"rejected":[{"role":"assistant","content":"r"}]}"#;
        let item = Item::from_json_line(row).unwrap();
        assert_eq!(item.responses, vec!["c", "r"]);
    }

    #[test]
    fn names_the_bad_field() {
        assert_eq!(err("{not json").field, "(line)");
        assert_eq!(err(r#"[1,2]"#).problem, Problem::NotAnObject("an array"));
        assert_eq!(err(r#"{"prompt":"p","responses":[]}"#).problem, Problem::NoResponses);
        let e = err(r#"{"prompt":"p","responses":["a", 3]}"#);
        assert_eq!(e.field, "responses[1]");
        assert!(matches!(e.problem, Problem::WrongType { got: "a number", .. }));
        assert_eq!(err(r#"{"prompt":"p","chosen":"c"}"#).field, "rejected");
        assert_eq!(err(r#"{"chosen":"c","rejected":"r"}"#).field, "prompt");
        assert_eq!(err(r#"{"prompt":"p"}"#).field, "responses");
        assert_eq!(err(r#"{"text":"p"}"#).problem, Problem::UnknownShape);
        assert_eq!(err(r#"{"prompt":"  ","responses":["a"]}"#).problem, Problem::Empty);
        assert_eq!(err(r#"{"id":"","prompt":"p","responses":["a"]}"#).field, "id");
        assert_eq!(err(r#"{"prompt":"p","responses":["a\u0000b"]}"#).field, "responses[0]");
        assert_eq!(err(r#"{"id":"a\u0000","prompt":"p","responses":["a"]}"#).field, "id");
        assert_eq!(err(r#"{"prompt":"p","responses":["a"],"src":{"tags":["x","\u0000"]}}"#).field, "src.tags[1]");
        let e = err(r#"{"messages":[{"role":"user","content":"q"},{"role":"bot","content":"a"}],"responses":["x"]}"#);
        assert_eq!(e.field, "messages[1].role");
        let e = err(r#"{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}],"responses":["x"]}"#);
        assert!(matches!(e.problem, Problem::LastTurnNotUser(_)));
        let e = err(r#"{"messages":[{"role":"user"}],"responses":["x"]}"#);
        assert_eq!(e.field, "messages[0].content");
    }
}
