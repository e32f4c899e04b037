//! Random weights for a generated model, written as safetensors. Values come from the
//! core's SplitMix64 through Box–Muller, seeded per tensor by name, so a folder is the same
//! on every machine and a tensor does not change when another is added.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use sha2::{Digest, Sha256};
use verdict_core::shuffle::{mix, SplitMix64};

use super::InitOptions;
use crate::config::{Head, ModelConfig};
use crate::error::{EngineError, Result};

fn name_seed(name: &str) -> u64 {
    let d: [u8; 32] = Sha256::digest(name.as_bytes()).into();
    u64::from_le_bytes(d[..8].try_into().unwrap_or([0; 8]))
}

fn normal(n: usize, seed: u64, mean: f32, std: f32) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1 = rng.next_f64().max(1e-300);
        let u2 = rng.next_f64();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = 2.0 * std::f64::consts::PI * u2;
        out.push(mean + std * (r * t.cos()) as f32);
        out.push(mean + std * (r * t.sin()) as f32);
    }
    out.truncate(n);
    out
}

/// Elements above which a tensor is drawn in parallel blocks (each block its own stream), so
/// a 7B-shaped model is made in seconds. Below it, one stream per tensor: the small models
/// the tests and parity fixtures use keep their exact weights.
const PARALLEL_ABOVE: usize = 1 << 22;
const BLOCK: usize = 1 << 20;

fn normal_tensor(n: usize, seed: u64, mean: f32, std: f32) -> Vec<f32> {
    if n <= PARALLEL_ABOVE {
        return normal(n, seed, mean, std);
    }
    let mut out = vec![0f32; n];
    let threads = std::thread::available_parallelism().map(|t| t.get()).unwrap_or(1);
    let blocks: Vec<(usize, &mut [f32])> = out.chunks_mut(BLOCK).enumerate().collect();
    let per_thread = blocks.len().div_ceil(threads);
    let mut blocks = blocks;
    std::thread::scope(|scope| {
        while !blocks.is_empty() {
            let take = per_thread.min(blocks.len());
            let mine: Vec<(usize, &mut [f32])> = blocks.drain(..take).collect();
            scope.spawn(move || {
                for (i, block) in mine {
                    block.copy_from_slice(&normal(block.len(), mix(&[seed, i as u64]), mean, std));
                }
            });
        }
    });
    out
}

/// Every tensor of the model: name, shape, mean and standard deviation.
fn plan(cfg: &ModelConfig) -> Vec<(String, Vec<usize>, f32, f32)> {
    let (h, i, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
    let (q, kv) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
    let gemma = cfg.gemma.is_some();
    // Gemma stores norm weights as offsets from 1; the others as the scale itself.
    let norm = |name: String, size: usize| (name, vec![size], if gemma { 0.0 } else { 1.0 }, 0.1);
    let lin = |name: String, o: usize, inp: usize| (name, vec![o, inp], 0.0, 1.0 / (inp as f32).sqrt());
    let bias = |name: String, o: usize| (name, vec![o], 0.0, 0.1);
    let mut p = vec![("model.embed_tokens.weight".to_string(), vec![cfg.vocab_size, h], 0.0, 2.0 / (h as f32).sqrt())];
    for l in 0..cfg.num_hidden_layers {
        let a = format!("model.layers.{l}.self_attn");
        p.push(lin(format!("{a}.q_proj.weight"), q, h));
        p.push(lin(format!("{a}.k_proj.weight"), kv, h));
        p.push(lin(format!("{a}.v_proj.weight"), kv, h));
        p.push(lin(format!("{a}.o_proj.weight"), h, q));
        if cfg.qkv_bias {
            p.push(bias(format!("{a}.q_proj.bias"), q));
            p.push(bias(format!("{a}.k_proj.bias"), kv));
            p.push(bias(format!("{a}.v_proj.bias"), kv));
        }
        if cfg.o_bias {
            p.push(bias(format!("{a}.o_proj.bias"), h));
        }
        if cfg.qk_norm {
            p.push(norm(format!("{a}.q_norm.weight"), hd));
            p.push(norm(format!("{a}.k_norm.weight"), hd));
        }
        let m = format!("model.layers.{l}.mlp");
        p.push(lin(format!("{m}.gate_proj.weight"), i, h));
        p.push(lin(format!("{m}.up_proj.weight"), i, h));
        p.push(lin(format!("{m}.down_proj.weight"), h, i));
        let n = format!("model.layers.{l}");
        p.push(norm(format!("{n}.input_layernorm.weight"), h));
        p.push(norm(format!("{n}.post_attention_layernorm.weight"), h));
        if gemma {
            p.push(norm(format!("{n}.pre_feedforward_layernorm.weight"), h));
            p.push(norm(format!("{n}.post_feedforward_layernorm.weight"), h));
        }
    }
    p.push(norm("model.norm.weight".to_string(), h));
    match cfg.head {
        Head::CausalLm if !cfg.tie_word_embeddings => p.push(lin("lm_head.weight".into(), cfg.vocab_size, h)),
        Head::CausalLm => {}
        Head::SequenceClassification { num_labels } => p.push(lin("score.weight".into(), num_labels, h)),
    }
    p
}

pub fn write(cfg: &ModelConfig, opts: &InitOptions) -> Result<()> {
    let dtype = if opts.bf16 { DType::BF16 } else { DType::F32 };
    let tensors = plan(cfg);
    let shards = opts.shards.max(1);
    let per_shard = tensors.len().div_ceil(shards);
    let mut weight_map = serde_json::Map::new();
    let mut total_bytes = 0usize;
    for (s, chunk) in tensors.chunks(per_shard).enumerate() {
        let file = if shards == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", s + 1, shards)
        };
        let mut map = HashMap::new();
        for (name, shape, mean, std) in chunk {
            let n: usize = shape.iter().product();
            let values = normal_tensor(n, mix(&[opts.seed, name_seed(name)]), *mean, *std);
            let t = Tensor::from_vec(values, shape.as_slice(), &Device::Cpu)
                .and_then(|t| t.to_dtype(dtype))
                .map_err(|e| EngineError::Synth(format!("{name}: {e}")))?;
            total_bytes += n * dtype.size_in_bytes();
            weight_map.insert(name.clone(), serde_json::Value::String(file.clone()));
            map.insert(name.clone(), t);
        }
        let path = opts.out.join(&file);
        candle_core::safetensors::save(&map, &path).map_err(|e| EngineError::Synth(format!("{}: {e}", path.display())))?;
        // The safetensors writer creates its file owner-only (0600); a model folder is
        // shared data, readable like every other file in it.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).map_err(|source| EngineError::Io { path: path.clone(), source })?;
    }
    if shards > 1 {
        let index = serde_json::json!({"metadata": {"total_size": total_bytes}, "weight_map": weight_map});
        super::write_json(&opts.out.join("model.safetensors.index.json"), &index)?;
    }
    Ok(())
}
