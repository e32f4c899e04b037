//! `verdict model init`: a complete, random-weight Hugging Face model folder, made from a
//! fixed seed, for tests, demos and benchmarks (no model hub is needed).
//!
//! What it writes: `config.json` and `generation_config.json` in transformers' format, the
//! weights as safetensors (optionally sharded with an index), a byte-level BPE
//! `tokenizer.json` trained by the tokenizers crate on the corpus in `assets/`, and a
//! `tokenizer_config.json` with the architecture family's chat template. A random model's
//! judgements are noise: these folders exercise the machinery, never the judging.

mod tokenizer;
mod weights;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::config::Arch;
use crate::error::{EngineError, Result};

/// `tiny` runs in seconds on 2 cores (tests); `small` has Qwen2.5-0.5B's layer shapes
/// (benchmarks); `medium` has Qwen2.5-7B's (GPU benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Tiny,
    Small,
    Medium,
}

impl std::str::FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "tiny" => Ok(Size::Tiny),
            "small" => Ok(Size::Small),
            "medium" => Ok(Size::Medium),
            other => Err(format!("unknown size {other:?} (tiny, small, medium)")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct InitOptions {
    pub arch: Arch,
    pub size: Size,
    pub out: PathBuf,
    pub seed: u64,
    /// Write a sequence classifier (meta reward model) instead of a causal LM.
    pub classifier: bool,
    /// Store weights as bf16 (half the disk) instead of f32.
    pub bf16: bool,
    /// Split the weights over this many safetensors files, with an index.
    pub shards: usize,
}

struct Shape {
    hidden: usize,
    intermediate: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    max_pos: usize,
}

fn shape(size: Size) -> Shape {
    match size {
        Size::Tiny => Shape { hidden: 64, intermediate: 128, layers: 2, heads: 4, kv_heads: 2, head_dim: 16, max_pos: 2048 },
        Size::Small => Shape { hidden: 896, intermediate: 4864, layers: 24, heads: 14, kv_heads: 2, head_dim: 64, max_pos: 32768 },
        Size::Medium => Shape { hidden: 3584, intermediate: 18944, layers: 28, heads: 28, kv_heads: 4, head_dim: 128, max_pos: 32768 },
    }
}

/// The special tokens and chat template of each architecture's family.
pub(crate) struct Family {
    pub specials: &'static [&'static str],
    pub bos: Option<&'static str>,
    pub eos: &'static str,
    pub pad: &'static str,
    pub template: &'static str,
}

/// The chat template a generated model folder of `arch` carries, with its BOS (if any)
/// and EOS tokens.
pub fn chat_template(arch: Arch) -> (&'static str, Option<&'static str>, &'static str) {
    let f = family(arch);
    (f.template, f.bos, f.eos)
}

pub(crate) fn family(arch: Arch) -> Family {
    match arch {
        Arch::Qwen2 | Arch::Qwen3 => Family {
            specials: &["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
            bos: None,
            eos: "<|im_end|>",
            pad: "<|endoftext|>",
            template: "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
        },
        Arch::Llama => Family {
            specials: &["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
            bos: Some("<|begin_of_text|>"),
            eos: "<|eot_id|>",
            pad: "<|end_of_text|>",
            template: "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
        },
        Arch::Gemma2 => Family {
            specials: &["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
            bos: Some("<bos>"),
            eos: "<end_of_turn>",
            pad: "<pad>",
            template: "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}",
        },
    }
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| EngineError::Synth(e.to_string()))?;
    std::fs::write(path, text + "\n").map_err(|source| EngineError::Io { path: path.to_path_buf(), source })
}

fn config_json(opts: &InitOptions, s: &Shape, vocab: usize, ids: &tokenizer::SpecialIds) -> Value {
    let arch = opts.arch;
    let class = format!(
        "{}For{}",
        arch.class_prefix(),
        if opts.classifier { "SequenceClassification" } else { "CausalLM" }
    );
    let tie = matches!(arch, Arch::Gemma2) || (matches!(opts.size, Size::Tiny | Size::Small) && arch != Arch::Llama);
    let mut c = json!({
        "architectures": [class],
        "model_type": arch.model_type(),
        "vocab_size": vocab,
        "hidden_size": s.hidden,
        "intermediate_size": s.intermediate,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads,
        "head_dim": s.head_dim,
        "max_position_embeddings": s.max_pos,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": tie,
        "bos_token_id": ids.bos.unwrap_or(ids.pad),
        "eos_token_id": ids.eos,
        "pad_token_id": ids.pad,
        "torch_dtype": if opts.bf16 { "bfloat16" } else { "float32" },
        "use_cache": true,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
    });
    let m = c.as_object_mut().expect("json! object");
    match arch {
        Arch::Qwen2 => {
            m.insert("hidden_act".into(), json!("silu"));
            m.insert("rope_theta".into(), json!(1_000_000.0));
            m.insert("use_sliding_window".into(), json!(false));
            m.insert("sliding_window".into(), Value::Null);
            m.insert("max_window_layers".into(), json!(s.layers));
        }
        Arch::Qwen3 => {
            m.insert("hidden_act".into(), json!("silu"));
            m.insert("rope_theta".into(), json!(1_000_000.0));
            m.insert("attention_bias".into(), json!(false));
            m.insert("use_sliding_window".into(), json!(false));
            m.insert("sliding_window".into(), Value::Null);
        }
        Arch::Llama => {
            m.insert("hidden_act".into(), json!("silu"));
            m.insert("rope_theta".into(), json!(500_000.0));
            m.insert("attention_bias".into(), json!(false));
            m.insert("mlp_bias".into(), json!(false));
            m.insert(
                "rope_scaling".into(),
                json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": if opts.size == Size::Tiny { 256 } else { 8192 }}),
            );
        }
        Arch::Gemma2 => {
            m.insert("hidden_activation".into(), json!("gelu_pytorch_tanh"));
            m.insert("hidden_act".into(), json!("gelu_pytorch_tanh"));
            m.insert("rope_theta".into(), json!(10_000.0));
            m.insert("query_pre_attn_scalar".into(), json!(s.head_dim));
            m.insert("attn_logit_softcapping".into(), json!(50.0));
            m.insert("final_logit_softcapping".into(), json!(30.0));
            // A tiny window so that tests exercise the sliding-window mask on short prompts.
            m.insert("sliding_window".into(), json!(if opts.size == Size::Tiny { 64 } else { 4096 }));
            m.insert("attention_bias".into(), json!(false));
        }
    }
    if opts.classifier {
        m.insert("num_labels".into(), json!(1));
        m.insert("id2label".into(), json!({"0": "LABEL_0"}));
        m.insert("label2id".into(), json!({"LABEL_0": 0}));
    }
    c
}

/// Write a model folder. Returns the folder.
pub fn init(opts: &InitOptions) -> Result<PathBuf> {
    std::fs::create_dir_all(&opts.out).map_err(|source| EngineError::Io { path: opts.out.clone(), source })?;
    let fam = family(opts.arch);
    let s = shape(opts.size);
    let tok_vocab_target = 1024;
    let ids = tokenizer::train(&fam, tok_vocab_target, &opts.out.join("tokenizer.json"))?;
    // Real checkpoints pad the embedding matrix past the tokenizer (Qwen: 151,936 rows for
    // 151,665 tokens); tiny models do too, so the engine's masking of those rows is tested.
    let vocab = match opts.size {
        Size::Tiny => ids.vocab.div_ceil(64) * 64 + 64,
        Size::Small | Size::Medium => 151_936,
    };
    let config = config_json(opts, &s, vocab, &ids);
    write_json(&opts.out.join("config.json"), &config)?;
    write_json(
        &opts.out.join("generation_config.json"),
        &json!({"bos_token_id": ids.bos.unwrap_or(ids.pad), "eos_token_id": [ids.eos], "pad_token_id": ids.pad}),
    )?;
    let mut tc = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": fam.eos,
        "pad_token": fam.pad,
        "model_max_length": s.max_pos,
        "clean_up_tokenization_spaces": false,
        "chat_template": fam.template,
    });
    if let Some(bos) = fam.bos {
        tc.as_object_mut().expect("json! object").insert("bos_token".into(), json!(bos));
    }
    write_json(&opts.out.join("tokenizer_config.json"), &tc)?;
    let cfg = crate::config::ModelConfig::from_json(&config).map_err(EngineError::Synth)?;
    weights::write(&cfg, opts)?;
    Ok(opts.out.clone())
}

/// The English text the synthetic tokenizers are trained on; benchmarks build prompts of a
/// chosen length from it.
pub fn corpus() -> &'static str {
    tokenizer::CORPUS
}
