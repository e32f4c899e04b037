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
use sha2::{Digest, Sha256};

use crate::chat::ChatTemplate;
use crate::config::ModelConfig;
use crate::error::{EngineError, Result};
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

    /// A stable identity for labels: the folder's name and a fingerprint of its config,
    /// tokenizer and weight file sizes (hashing gigabytes of weights at every start would be
    /// slow; a changed checkpoint almost always changes a size or the config).
    pub fn identity(&self) -> Result<String> {
        let mut h = Sha256::new();
        for f in ["config.json", "tokenizer.json"] {
            let p = self.path.join(f);
            let bytes = std::fs::read(&p).map_err(|source| EngineError::Io { path: p, source })?;
            h.update(&bytes);
        }
        for w in &self.weights {
            let len = std::fs::metadata(w).map_err(|source| EngineError::Io { path: w.clone(), source })?.len();
            h.update(w.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default().as_bytes());
            h.update(len.to_le_bytes());
        }
        let digest: [u8; 32] = h.finalize().into();
        let name = self
            .path
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into());
        Ok(format!("{name}@{}", digest[..6].iter().map(|b| format!("{b:02x}")).collect::<String>()))
    }
}
