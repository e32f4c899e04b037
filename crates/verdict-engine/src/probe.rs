//! Reference probes for parity with transformers: the logits of fixed token sequences and
//! greedy continuations through the cached decode path. `bench/parity/` compares these with
//! PyTorch on the same folder; the engine's tests compare them with stored PyTorch outputs.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{ComputeContext, Result};
use crate::model::{causal_mask, Decoder, KvCache, Step};

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

/// Greedy decoding through the KV cache, one token per step.
pub fn greedy(model: &Decoder, input: &[u32], steps: usize, vocab: usize) -> Result<Vec<u32>> {
    let dev = model.device().clone();
    let dtype = model.dtype();
    let t = input.len();
    let window = model.sliding_window();
    let mut cache = KvCache::new(model.config(), 1, t + steps, dtype, &dev).step("probe cache")?;
    let mut out = Vec::with_capacity(steps);
    let mut offset = 0;
    let mut tokens = input.to_vec();
    for _ in 0..steps {
        let n = tokens.len();
        let step = Step {
            tokens: Tensor::new(tokens.as_slice(), &dev).and_then(|x| x.unsqueeze(0)).step("probe input")?,
            positions: Tensor::arange(offset as u32, (offset + n) as u32, &dev).and_then(|x| x.unsqueeze(0)).step("probe input")?,
            mask: causal_mask(&[0], offset, n, None, &dev).step("probe mask")?,
            sliding_mask: window.map(|w| causal_mask(&[0], offset, n, Some(w), &dev)).transpose().step("probe mask")?,
            offset,
            // The CUDA attention kernels, as labeling uses them.
            pads: Some(Tensor::zeros(1, candle_core::DType::U32, &dev).step("probe input")?),
        };
        let h = model.forward(&step, &mut cache).step("probe step")?;
        let logits = model.head(&Decoder::last(&h).step("probe")?).step("probe head")?;
        let row: Vec<f32> = logits.squeeze(0).and_then(|r| r.to_vec1()).step("probe logits")?;
        let next = row[..vocab.min(row.len())]
            .iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |best, (i, &x)| if x > best.1 { (i, x) } else { best })
            .0 as u32;
        out.push(next);
        offset += n;
        tokens = vec![next];
    }
    Ok(out)
}
