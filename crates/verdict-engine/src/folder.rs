//! A Hugging Face model folder: finding and checking its files, then loading the config,
//! the tokenizer, the chat template and the weights. Every failure names the file.
//!
//! Expected layout: `config.json`, `model.safetensors` or `model.safetensors.index.json`
//! plus the shards it lists, `tokenizer.json`, and a chat template in
//! `tokenizer_config.json` (`chat_template`) or `chat_template.jinja`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde_json::Value;

use crate::chat::ChatTemplate;
use crate::config::ModelConfig;
use crate::error::{EngineError, Result};
use crate::fingerprint::DigestCache;
use crate::model::Decoder;
use crate::tokenizer::Tok;

/// A checked model folder, not yet loaded.
#[derive(Debug, Clone)]
pub struct ModelFolder {
    pub path: PathBuf,
    pub weights: Vec<PathBuf>,
}

impl ModelFolder {
    /// Check that the folder holds every file a model needs.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_dir() {
            return Err(EngineError::folder(path, "is not a directory"));
        }
        for f in ["config.json", "tokenizer.json"] {
            if !path.join(f).is_file() {
                return Err(EngineError::folder(path, format!("{f} is missing")));
            }
        }
        let index = path.join("model.safetensors.index.json");
        let weights = if index.is_file() {
            let text = std::fs::read_to_string(&index).map_err(|source| EngineError::Io { path: index.clone(), source })?;
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| EngineError::config(&index, format!("not valid JSON: {e}")))?;
            let map = v
                .get("weight_map")
                .and_then(Value::as_object)
                .ok_or_else(|| EngineError::config(&index, "field `weight_map` is missing"))?;
            let shards: BTreeSet<&str> = map.values().filter_map(Value::as_str).collect();
            let mut files = Vec::new();
            for s in shards {
                let p = path.join(s);
                if !p.is_file() {
                    return Err(EngineError::folder(path, format!("shard {s} listed in model.safetensors.index.json is missing")));
                }
                files.push(p);
            }
            files
        } else if path.join("model.safetensors").is_file() {
            vec![path.join("model.safetensors")]
        } else {
            return Err(EngineError::folder(path, "no model.safetensors or model.safetensors.index.json"));
        };
        Ok(Self { path: path.to_path_buf(), weights })
    }

    pub fn config(&self) -> Result<ModelConfig> {
        ModelConfig::load(&self.path)
    }

    pub fn tokenizer(&self, cfg: &ModelConfig) -> Result<Tok> {
        Tok::load(&self.path, cfg)
    }

    pub fn chat_template(&self, tok: &Tok) -> Result<ChatTemplate> {
        ChatTemplate::load(&self.path, tok)
    }

    /// Memory-map the weights and build the decoder, checking every tensor's shape.
    pub fn decoder(&self, cfg: &ModelConfig, dtype: DType, device: &Device) -> Result<Decoder> {
        // SAFETY: the files are memory-mapped read-only; Verdict never writes a model folder
        // it is reading, and candle copies what it needs to the target device.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&self.weights, dtype, device) }
            .map_err(|source| EngineError::Weights { path: self.path.clone(), source })?;
        Decoder::new(cfg, vb).map_err(|source| EngineError::Weights { path: self.path.clone(), source })
    }

    /// The folder's name (its last path component, after resolving links).
    pub fn name(&self) -> String {
        self.path
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into())
    }

    /// The files whose content decides what the model writes: config, tokenizer, chat
    /// template and every weight file.
    pub fn identity_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = ["config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]
            .iter()
            .map(|f| self.path.join(f))
            .filter(|p| p.is_file())
            .collect();
        files.extend(self.weights.iter().cloned());
        files
    }

    /// A fingerprint of the folder's content (see [`crate::fingerprint`]).
    pub fn fingerprint(&self, cache: &DigestCache) -> Result<String> {
        crate::fingerprint::fingerprint(&self.identity_files(), cache)
    }
}
