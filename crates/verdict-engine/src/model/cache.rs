//! The KV cache: one key and one value tensor per layer, `[b, kv_heads, capacity, head_dim]`,
//! allocated once for the batch and written in place with `slice_set` (no per-step copy of
//! the whole cache, unlike a `Tensor::cat` cache).

use candle_core::{DType, Device, Tensor};

use crate::config::ModelConfig;

pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    capacity: usize,
}

impl KvCache {
    pub fn new(cfg: &ModelConfig, batch: usize, capacity: usize, dtype: DType, device: &Device) -> candle_core::Result<Self> {
        let shape = (batch, cfg.num_key_value_heads, capacity, cfg.head_dim);
        let layers = (0..cfg.num_hidden_layers)
            .map(|_| Ok((Tensor::zeros(shape, dtype, device)?, Tensor::zeros(shape, dtype, device)?)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { layers, capacity })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Write `k`, `v` (`[b, kv_heads, t, head_dim]`) at slot `offset` of layer `layer` and
    /// return views of the filled part, slots `0..offset + t`.
    pub fn write(&mut self, layer: usize, offset: usize, k: &Tensor, v: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let t = k.dim(2)?;
        if offset + t > self.capacity {
            candle_core::bail!("KV cache full: {} + {} > {}", offset, t, self.capacity);
        }
        let (ck, cv) = &self.layers[layer];
        ck.slice_set(&k.contiguous()?, 2, offset)?;
        cv.slice_set(&v.contiguous()?, 2, offset)?;
        Ok((ck.narrow(2, 0, offset + t)?, cv.narrow(2, 0, offset + t)?))
    }
}
