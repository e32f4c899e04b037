//! The prompt pool: each distinct prompt's keys and values held once, token-major
//! (`[slots, kv_heads, head_dim]` per layer), for every row that continues it to read
//! through segmented attention (crate::segmented). Ranges are handed out by
//! [`Slots`](crate::engine::slots::Slots).

use candle_core::{DType, Device, Tensor};

use super::KvCache;
use crate::config::ModelConfig;
use crate::engine::slots::Slots;

pub struct PromptPool {
    layers: Vec<(Tensor, Tensor)>,
    pub slots: Slots,
}

impl PromptPool {
    pub fn new(cfg: &ModelConfig, capacity: usize, dtype: DType, device: &Device) -> candle_core::Result<Self> {
        let shape = (capacity.max(1), cfg.num_key_value_heads, cfg.head_dim);
        let layers = (0..cfg.num_hidden_layers)
            .map(|_| Ok((Tensor::zeros(shape, dtype, device)?, Tensor::zeros(shape, dtype, device)?)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { layers, slots: Slots::new(capacity) })
    }

    /// Layer `layer`'s keys and values, `[slots, kv_heads, head_dim]`.
    pub fn layer(&self, layer: usize) -> (&Tensor, &Tensor) {
        let (k, v) = &self.layers[layer];
        (k, v)
    }

    /// Copy slots `from..from + len` of `row` of a (prefill) cache into pool slots
    /// `start..start + len`, every layer.
    pub fn store(&mut self, cache: &KvCache, row: usize, from: usize, len: usize, start: usize) -> candle_core::Result<()> {
        for (i, (pk, pv)) in self.layers.iter().enumerate() {
            let (ck, cv) = cache.layer(i);
            // [kv, len, hd] → token-major [len, kv, hd].
            pk.slice_set(&ck.get(row)?.narrow(1, from, len)?.transpose(0, 1)?.contiguous()?, 0, start)?;
            pv.slice_set(&cv.get(row)?.narrow(1, from, len)?.transpose(0, 1)?.contiguous()?, 0, start)?;
        }
        Ok(())
    }

    /// Bytes one pool slot takes.
    pub fn bytes_per_slot(cfg: &ModelConfig, dtype: DType) -> usize {
        KvCache::bytes_per_sequence(cfg, 1, dtype)
    }
}
