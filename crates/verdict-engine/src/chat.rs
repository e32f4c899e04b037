//! The judge's chat template, rendered with minijinja the way transformers'
//! `apply_chat_template` renders it (Python string methods through minijinja-contrib's
//! pycompat, `raise_exception`, `bos_token` / `eos_token` in the context).

use std::path::Path;

use minijinja::{Environment, Error, ErrorKind};
use serde::Serialize;
use serde_json::Value;

use crate::error::{EngineError, Result};
use crate::tokenizer::Tok;

pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

#[derive(Serialize)]
pub struct ChatMessage<'a> {
    pub role: &'a str,
    pub content: &'a str,
}

fn raise_exception(msg: String) -> std::result::Result<String, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

/// Find the template: `chat_template.jinja` (transformers ≥ 4.47 writes it there), or the
/// `chat_template` field of `tokenizer_config.json` (a string, or a list of named templates
/// of which we take "default").
fn find_template(folder: &Path) -> Result<String> {
    let jinja = folder.join("chat_template.jinja");
    if let Ok(t) = std::fs::read_to_string(&jinja) {
        return Ok(t);
    }
    let tc_path = folder.join("tokenizer_config.json");
    let text = std::fs::read_to_string(&tc_path).map_err(|_| {
        EngineError::folder(folder, "no chat template: neither chat_template.jinja nor tokenizer_config.json is there")
    })?;
    let tc: Value = serde_json::from_str(&text)
        .map_err(|e| EngineError::config(&tc_path, format!("not valid JSON: {e}")))?;
    match tc.get("chat_template") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(list)) => list
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template").and_then(Value::as_str))
            .map(str::to_string)
            .ok_or_else(|| EngineError::config(&tc_path, "`chat_template` list has no template named \"default\"")),
        _ => Err(EngineError::config(&tc_path, "field `chat_template` is missing (a judge needs a chat model)")),
    }
}

impl ChatTemplate {
    pub fn load(folder: &Path, tok: &Tok) -> Result<Self> {
        Self::from_source(find_template(folder)?, tok)
    }

    pub fn from_source(source: String, tok: &Tok) -> Result<Self> {
        Self::from_parts(source, tok.bos_token.as_deref(), tok.eos_token.as_deref().unwrap_or_default())
    }

    /// A template with its special tokens given directly (no tokenizer needed).
    pub fn from_parts(source: String, bos_token: Option<&str>, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_template_owned("chat", source)
            .map_err(|e| EngineError::ChatTemplate(format!("does not parse: {e}")))?;
        Ok(Self { env, bos_token: bos_token.unwrap_or_default().to_string(), eos_token: eos_token.to_string() })
    }

    /// Render a conversation, ending with the assistant's turn opened when
    /// `add_generation_prompt` is set.
    pub fn render(&self, messages: &[ChatMessage<'_>], add_generation_prompt: bool) -> Result<String> {
        let tmpl = self.env.get_template("chat").map_err(|e| EngineError::ChatTemplate(e.to_string()))?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        })
        .map_err(|e| EngineError::ChatTemplate(format!("rendering failed: {e}")))
    }
}
