//! Reference probes for parity with transformers: the logits of fixed token sequences and
//! greedy continuations through the engine's decode path (a prompt pool and segmented
//! attention). `bench/parity/` compares these with
//! PyTorch on the same folder; the engine's tests compare them with stored PyTorch outputs.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{ComputeContext, Result};
use crate::model::{Decoder, KvCache, PromptPool, Segments, Step};
use crate::segmented::{self, Plan, Segment};

/// Fixed probe inputs: deterministic token ids below `vocab`.
pub fn probe_inputs(vocab: usize) -> Vec<Vec<u32>> {
    let mut rng = verdict_core::shuffle::SplitMix64::new(2024);
    [7usize, 33, 96]
        .iter()
        .map(|&len| (0..len).map(|_| rng.below(vocab as u64) as u32).collect())
        .collect()
}

/// What the probe records for one input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeRecord {
    pub input: Vec<u32>,
    /// Positions whose full logits rows are kept.
    pub positions: Vec<usize>,
    pub logits: Vec<Vec<f32>>,
    /// Greedy continuation from the input.
    pub greedy: Vec<u32>,
}

pub fn probe(model: &Decoder, input: &[u32], steps: usize, vocab: usize) -> Result<ProbeRecord> {
    let full = model.full_logits(input).step("probe forward")?;
    let t = input.len();
    let positions = vec![0, t / 2, t - 1];
    let mut logits = Vec::new();
    for &p in &positions {
        let row: Vec<f32> = full.get(p).and_then(|r| r.to_vec1()).step("probe logits")?;
        logits.push(row);
    }
    Ok(ProbeRecord { input: input.to_vec(), positions, logits, greedy: greedy(model, input, steps, vocab)? })
}

/// Greedy decoding as the engine decodes: the input prefilled through segmented attention
/// (one row per token, causal) and held in a prompt pool, then one token per step through
/// segmented attention over the pool and the row's own tokens, each step writing its keys
/// and values at a slot read on the device (so the parity checks cover the engine's own
/// prefill and decode paths, kernels included, the fused decode kernel on CUDA).
pub fn greedy(model: &Decoder, input: &[u32], steps: usize, vocab: usize) -> Result<Vec<u32>> {
    Ok(greedy_steps(model, input, steps, vocab, true)?.0)
}

/// [`greedy`]'s tokens and each step's logits row; `device_slot: false` writes each step's
/// keys and values at a host offset instead, which on CUDA takes the unfused decode ops (the
/// fused kernel's reference).
pub fn greedy_steps(model: &Decoder, input: &[u32], steps: usize, vocab: usize, device_slot: bool) -> Result<(Vec<u32>, Vec<Vec<f32>>)> {
    let dev = model.device().clone();
    let (cfg, dtype, t) = (model.config(), model.dtype(), input.len());
    let (kv, d) = (cfg.num_key_value_heads, cfg.head_dim);
    let max_queries = segmented::max_queries(d).unwrap_or(64);
    let mut pool = PromptPool::new(cfg, t, dtype, &dev).step("probe pool")?;
    let mut prefill = KvCache::new(cfg, 1, t, dtype, &dev).step("probe cache")?;
    let rows: Vec<usize> = (0..t).collect();
    let plan = Plan::new(&[(Segment::own(0, 0, t, 0, kv, t, d), rows.clone())], &rows, kv, cfg.num_attention_heads / kv, max_queries, 256)
        .upload(&dev)
        .step("probe plan")?;
    let step = Step::segmented(
        Tensor::new(input, &dev).and_then(|x| x.unsqueeze(0)).step("probe input")?,
        Tensor::arange(0u32, t as u32, &dev).and_then(|x| x.unsqueeze(0)).step("probe input")?,
        0,
    );
    let h = model.forward_segmented(&step, &mut prefill, Segments { pool: &pool, plan: &plan }).step("probe prefill")?;
    let mut logits = model.head(&Decoder::last(&h).step("probe")?).step("probe head")?;
    pool.store(&prefill, 0, 0, t, 0).step("probe pool")?;
    let own_slots = steps.max(1);
    let mut own = KvCache::new(cfg, 1, own_slots, dtype, &dev).step("probe cache")?;
    let mut out = Vec::with_capacity(steps);
    let mut rows = Vec::with_capacity(steps);
    for s in 0..steps {
        let row: Vec<f32> = logits.squeeze(0).and_then(|r| r.to_dtype(candle_core::DType::F32)).and_then(|r| r.to_vec1()).step("probe logits")?;
        let next = row[..vocab.min(row.len())]
            .iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |best, (i, &x)| if x > best.1 { (i, x) } else { best })
            .0 as u32;
        out.push(next);
        rows.push(row);
        if s + 1 == steps {
            break;
        }
        let groups = [(Segment::pool(0, t, 0, kv, d), vec![0]), (Segment::own(0, 0, s + 1, t, kv, own_slots, d), vec![0])];
        let plan = Plan::new(&groups, &[t + s], kv, cfg.num_attention_heads / kv, max_queries, 256).upload(&dev).step("probe plan")?;
        let segmented = Step::segmented(
            Tensor::new(&[[next]], &dev).step("probe input")?,
            Tensor::new(&[[(t + s) as u32]], &dev).step("probe input")?,
            s,
        );
        let slot = if device_slot { Some(Tensor::from_slice(&[s as u32], (1, 1, 1, 1), &dev).step("probe input")?) } else { None };
        let step = Step { slot, ..segmented };
        let h = model.forward_segmented(&step, &mut own, Segments { pool: &pool, plan: &plan }).step("probe step")?;
        logits = model.head(&Decoder::last(&h).step("probe")?).step("probe head")?;
    }
    Ok((out, rows))
}
