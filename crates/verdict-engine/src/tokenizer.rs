//! The tokenizer (`tokenizer.json` through the tokenizers crate) plus what the engine needs
//! to know about it: special tokens, stop tokens, and the text of every token (for the
//! constrained score block).

use std::path::Path;

use serde_json::Value;
use tokenizers::Tokenizer;

use crate::config::{token_ids, ModelConfig};
use crate::error::{EngineError, Result};

pub struct Tok {
    pub inner: Tokenizer,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// Ids that end a judgement: the config's and generation config's `eos_token_id`s and
    /// the tokenizer config's `eos_token`.
    pub stop_ids: Vec<u32>,
    /// Size of the tokenizer's vocabulary; ids at or above it (padding rows of a larger
    /// embedding matrix) are never sampled.
    pub vocab: usize,
}

fn special(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

impl Tok {
    pub fn load(folder: &Path, cfg: &ModelConfig) -> Result<Self> {
        let path = folder.join("tokenizer.json");
        let inner = Tokenizer::from_file(&path)
            .map_err(|e| EngineError::Tokenizer { path: path.clone(), problem: e.to_string() })?;
        let vocab = inner.get_vocab_size(true);
        if vocab > cfg.vocab_size {
            return Err(EngineError::Tokenizer {
                path,
                problem: format!("it has {vocab} tokens but config.json's vocab_size is {}: tokenizer and weights do not belong together", cfg.vocab_size),
            });
        }
        let tc_path = folder.join("tokenizer_config.json");
        let tc: Value = match std::fs::read_to_string(&tc_path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| EngineError::config(&tc_path, format!("not valid JSON: {e}")))?,
            Err(_) => Value::Null,
        };
        let bos_token = special(&tc, "bos_token");
        let eos_token = special(&tc, "eos_token");
        let mut stop_ids = cfg.eos_token_ids.clone();
        for id in token_ids(tc.get("eos_token_id")) {
            stop_ids.push(id);
        }
        if let Some(id) = eos_token.as_deref().and_then(|t| inner.token_to_id(t)) {
            stop_ids.push(id);
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        Ok(Self { inner, bos_token, eos_token, stop_ids, vocab })
    }

    /// Encode text that already holds its special tokens (a rendered chat template).
    pub fn encode(&self, text: &str, what: &str) -> Result<Vec<u32>> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| EngineError::Encode { what: what.to_string(), problem: e.to_string() })
    }

    /// Decode generated ids to text, without special tokens.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, true).unwrap_or_default()
    }

    /// The text of each token id below `vocab`, as it appears when decoded alone.
    pub fn token_texts(&self) -> Vec<String> {
        (0..self.vocab as u32).map(|id| self.inner.decode(&[id], false).unwrap_or_default()).collect()
    }
}
