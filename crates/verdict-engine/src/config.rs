//! `config.json` of the four supported architectures, read into one normalised
//! [`ModelConfig`]. Field names and defaults follow Hugging Face transformers, including
//! the v5 `rope_parameters` spelling, so a folder written by `save_pretrained` loads as is.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{EngineError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Qwen2,
    Qwen3,
    Llama,
    Gemma2,
}

impl Arch {
    pub fn model_type(self) -> &'static str {
        match self {
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Llama => "llama",
            Arch::Gemma2 => "gemma2",
        }
    }

    /// The transformers class name of the causal LM ("Qwen2ForCausalLM", ...).
    pub fn class_prefix(self) -> &'static str {
        match self {
            Arch::Qwen2 => "Qwen2",
            Arch::Qwen3 => "Qwen3",
            Arch::Llama => "Llama",
            Arch::Gemma2 => "Gemma2",
        }
    }
}

impl std::str::FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "qwen2" => Ok(Arch::Qwen2),
            "qwen3" => Ok(Arch::Qwen3),
            "llama" => Ok(Arch::Llama),
            "gemma2" => Ok(Arch::Gemma2),
            other => Err(format!("unsupported architecture {other:?} (supported: qwen2, qwen3, llama, gemma2)")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Activation {
    Silu,
    GeluTanh,
}

/// Llama 3's long-context frequency scaling (`rope_type: "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Llama3Scaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// Whether the model is a generator (judge) or a scorer (meta reward model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Head {
    CausalLm,
    /// `*ForSequenceClassification`: a linear `score` head read at the last token.
    SequenceClassification { num_labels: usize },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub arch: Arch,
    pub head: Head,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3Scaling>,
    pub tie_word_embeddings: bool,
    pub activation: Activation,
    /// Bias on q/k/v projections (Qwen2 always; Llama when `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the output projection (Llama's `attention_bias` covers it too).
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// Qwen3's per-head RMSNorm on queries and keys.
    pub qk_norm: bool,
    /// Gemma 2: norms multiply by (1 + w), embeddings scale by √hidden, extra norms around
    /// attention and MLP, soft-capped logits, sliding window on alternate layers.
    pub gemma: Option<GemmaExtras>,
    pub eos_token_ids: Vec<u32>,
    pub bos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GemmaExtras {
    pub query_pre_attn_scalar: f64,
    pub attn_logit_softcapping: Option<f64>,
    pub final_logit_softcapping: Option<f64>,
    pub sliding_window: Option<usize>,
    /// Per layer: true where attention is limited to the sliding window.
    pub sliding_layers: Vec<bool>,
}

fn get_usize(v: &Value, key: &str) -> Option<usize> {
    v.get(key).and_then(Value::as_u64).map(|x| x as usize)
}

fn get_f64(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn get_bool(v: &Value, key: &str) -> Option<bool> {
    v.get(key).and_then(Value::as_bool)
}

/// `eos_token_id` may be an integer or a list.
pub(crate) fn token_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).map(|x| x as u32).collect(),
        _ => vec![],
    }
}

impl ModelConfig {
    /// Read `config.json` (and `generation_config.json` for extra stop tokens, if present).
    pub fn load(folder: &Path) -> Result<Self> {
        let path = folder.join("config.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| EngineError::config(&path, format!("cannot read: {e}")))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| EngineError::config(&path, format!("not valid JSON: {e}")))?;
        let mut cfg = Self::from_json(&v).map_err(|p| EngineError::config(&path, p))?;
        let gen_path = folder.join("generation_config.json");
        if let Ok(gen) = std::fs::read_to_string(&gen_path) {
            let g: Value = serde_json::from_str(&gen)
                .map_err(|e| EngineError::config(&gen_path, format!("not valid JSON: {e}")))?;
            for id in token_ids(g.get("eos_token_id")) {
                if !cfg.eos_token_ids.contains(&id) {
                    cfg.eos_token_ids.push(id);
                }
            }
        }
        Ok(cfg)
    }

    pub fn from_json(v: &Value) -> std::result::Result<Self, String> {
        let model_type = v
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or("field `model_type` is missing")?;
        let arch: Arch = model_type.parse()?;
        let need = |k: &str| get_usize(v, k).ok_or_else(|| format!("field `{k}` is missing or not an integer"));
        let hidden_size = need("hidden_size")?;
        let num_attention_heads = need("num_attention_heads")?;
        let head_dim = get_usize(v, "head_dim").unwrap_or(hidden_size / num_attention_heads.max(1));
        let num_hidden_layers = need("num_hidden_layers")?;
        let head = match v.get("architectures").and_then(Value::as_array).and_then(|a| a.first()).and_then(Value::as_str) {
            Some(name) if name.ends_with("ForSequenceClassification") => {
                let num_labels = v
                    .get("id2label")
                    .and_then(Value::as_object)
                    .map(|m| m.len())
                    .or_else(|| get_usize(v, "num_labels"))
                    .unwrap_or(1);
                Head::SequenceClassification { num_labels }
            }
            _ => Head::CausalLm,
        };
        // transformers v5 folds rope settings into `rope_parameters`; v4 uses top-level
        // `rope_theta` and `rope_scaling`.
        let rope = v.get("rope_parameters").or_else(|| v.get("rope_scaling")).filter(|r| r.is_object());
        let rope_theta = rope
            .and_then(|r| get_f64(r, "rope_theta"))
            .or_else(|| get_f64(v, "rope_theta"))
            .unwrap_or(10_000.0);
        let rope_scaling = match rope.and_then(|r| r.get("rope_type").or_else(|| r.get("type"))).and_then(Value::as_str) {
            None | Some("default") => None,
            Some("llama3") => {
                let r = rope.ok_or("rope settings missing")?;
                Some(Llama3Scaling {
                    factor: get_f64(r, "factor").ok_or("rope_scaling.factor is missing")?,
                    low_freq_factor: get_f64(r, "low_freq_factor").unwrap_or(1.0),
                    high_freq_factor: get_f64(r, "high_freq_factor").unwrap_or(4.0),
                    original_max_position_embeddings: get_usize(r, "original_max_position_embeddings").unwrap_or(8192),
                })
            }
            Some(other) => return Err(format!("rope scaling type {other:?} is not supported (supported: default, llama3)")),
        };
        let act = v
            .get("hidden_activation")
            .or_else(|| v.get("hidden_act"))
            .and_then(Value::as_str)
            .unwrap_or(if arch == Arch::Gemma2 { "gelu_pytorch_tanh" } else { "silu" });
        let activation = match act {
            "silu" | "swish" => Activation::Silu,
            "gelu_pytorch_tanh" | "gelu_tanh" => Activation::GeluTanh,
            other => return Err(format!("activation {other:?} is not supported (silu, gelu_pytorch_tanh)")),
        };
        let attention_bias = get_bool(v, "attention_bias");
        let (qkv_bias, o_bias) = match arch {
            Arch::Qwen2 => (true, false),
            _ => {
                let b = attention_bias.unwrap_or(false);
                (b, b)
            }
        };
        let gemma = if arch == Arch::Gemma2 {
            let sliding_window = get_usize(v, "sliding_window");
            let sliding_layers = match v.get("layer_types").and_then(Value::as_array) {
                Some(types) => types.iter().map(|t| t.as_str() == Some("sliding_attention")).collect(),
                // transformers' Gemma 2 rule: even layers use the sliding window.
                None => (0..num_hidden_layers).map(|i| i % 2 == 0).collect(),
            };
            Some(GemmaExtras {
                query_pre_attn_scalar: get_f64(v, "query_pre_attn_scalar").unwrap_or(head_dim as f64),
                attn_logit_softcapping: get_f64(v, "attn_logit_softcapping"),
                final_logit_softcapping: get_f64(v, "final_logit_softcapping"),
                sliding_window,
                sliding_layers,
            })
        } else {
            None
        };
        let cfg = ModelConfig {
            arch,
            head,
            vocab_size: need("vocab_size")?,
            hidden_size,
            intermediate_size: need("intermediate_size")?,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads: get_usize(v, "num_key_value_heads").unwrap_or(num_attention_heads),
            head_dim,
            max_position_embeddings: get_usize(v, "max_position_embeddings").unwrap_or(4096),
            rms_norm_eps: get_f64(v, "rms_norm_eps").unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            tie_word_embeddings: get_bool(v, "tie_word_embeddings").unwrap_or(arch == Arch::Gemma2),
            activation,
            qkv_bias,
            o_bias,
            mlp_bias: get_bool(v, "mlp_bias").unwrap_or(false),
            qk_norm: arch == Arch::Qwen3,
            gemma,
            eos_token_ids: token_ids(v.get("eos_token_id")),
            bos_token_id: get_usize(v, "bos_token_id").map(|x| x as u32),
            pad_token_id: get_usize(v, "pad_token_id").map(|x| x as u32),
        };
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.num_key_value_heads == 0 || !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return Err(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!("head_dim ({}) must be even for rotary embeddings", self.head_dim));
        }
        if let Some(g) = &self.gemma {
            if g.sliding_layers.len() != self.num_hidden_layers {
                return Err(format!(
                    "layer_types has {} entries for {} layers",
                    g.sliding_layers.len(),
                    self.num_hidden_layers
                ));
            }
        }
        Ok(())
    }

    pub fn num_parameters(&self) -> usize {
        let h = self.hidden_size;
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let layer = h * q + 2 * h * kv + q * h + 3 * h * self.intermediate_size;
        let head = if self.tie_word_embeddings { 0 } else { self.vocab_size * h };
        self.vocab_size * h + self.num_hidden_layers * layer + head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_v4_and_v5_rope_spellings() {
        let v4 = serde_json::json!({"model_type":"llama","hidden_size":64,"num_attention_heads":4,"num_hidden_layers":2,
            "vocab_size":100,"intermediate_size":128,"rope_theta":500000.0,
            "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}});
        let c = ModelConfig::from_json(&v4).unwrap();
        assert_eq!(c.rope_theta, 500000.0);
        assert_eq!(c.rope_scaling.unwrap().factor, 8.0);
        let v5 = serde_json::json!({"model_type":"qwen3","hidden_size":64,"num_attention_heads":4,"num_hidden_layers":2,"head_dim":32,
            "vocab_size":100,"intermediate_size":128,"rope_parameters":{"rope_type":"default","rope_theta":1000000.0}});
        let c = ModelConfig::from_json(&v5).unwrap();
        assert_eq!(c.rope_theta, 1e6);
        assert!(c.qk_norm && !c.qkv_bias);
        assert_eq!(c.head_dim, 32);
    }

    #[test]
    fn names_missing_and_unsupported_fields() {
        let e = ModelConfig::from_json(&serde_json::json!({"model_type":"qwen2"})).unwrap_err();
        assert!(e.contains("hidden_size"), "{e}");
        let e = ModelConfig::from_json(&serde_json::json!({"model_type":"mamba"})).unwrap_err();
        assert!(e.contains("unsupported architecture"), "{e}");
    }
}
