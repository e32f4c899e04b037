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

    /// Layer `layer`'s whole keys and values, `[rows, kv_heads, capacity, head_dim]`.
    pub fn layer(&self, layer: usize) -> (&Tensor, &Tensor) {
        let (k, v) = &self.layers[layer];
        (k, v)
    }

    /// Rows the cache holds.
    pub fn rows(&self) -> usize {
        self.layers.first().and_then(|(k, _)| k.dims().first().copied()).unwrap_or(0)
    }

    /// Write `k`, `v` (`[b, kv_heads, t, head_dim]`) at slot `offset` of layer `layer`, into
    /// the first `b` rows (a step may run only a prefix of the rows), and return views of
    /// the filled part of those rows, slots `0..offset + t`.
    pub fn write(&mut self, layer: usize, offset: usize, k: &Tensor, v: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let (b, t) = (k.dim(0)?, k.dim(2)?);
        if offset + t > self.capacity {
            candle_core::bail!("KV cache full: {} + {} > {}", offset, t, self.capacity);
        }
        let (ck, cv) = &self.layers[layer];
        // A prefix of the outermost dimension of a contiguous tensor is contiguous: a view.
        let (ck, cv) = (ck.narrow(0, 0, b)?, cv.narrow(0, 0, b)?);
        ck.slice_set(&k.contiguous()?, 2, offset)?;
        cv.slice_set(&v.contiguous()?, 2, offset)?;
        Ok((ck.narrow(2, 0, offset + t)?, cv.narrow(2, 0, offset + t)?))
    }

    /// Write one token per row, `k`, `v` (`[b, kv_heads, 1, head_dim]`), into the first `b`
    /// rows of layer `layer` at the slot `index` holds (u32 `[b, kv_heads, 1, head_dim]`, every
    /// element that slot). The slot is read on the device, so a decode step captured in a CUDA
    /// graph writes wherever the frontier is when it is replayed.
    pub fn write_indexed(&mut self, layer: usize, index: &Tensor, k: &Tensor, v: &Tensor) -> candle_core::Result<()> {
        let b = k.dim(0)?;
        let (ck, cv) = &self.layers[layer];
        ck.narrow(0, 0, b)?.scatter_set(index, &k.contiguous()?, 2)?;
        cv.narrow(0, 0, b)?.scatter_set(index, &v.contiguous()?, 2)
    }

    /// Copy prompt caches into this one: row `rows[i]` of `src` becomes row `row0 + i` here,
    /// its slots `0..src.capacity` landing at slots `at..at + src.capacity`. This is how one
    /// prefill of a prompt is shared by every sample that uses it.
    pub fn copy_rows_from(&mut self, src: &KvCache, rows: &Tensor, row0: usize, at: usize) -> candle_core::Result<()> {
        let n = rows.dim(0)?;
        if at + src.capacity > self.capacity {
            candle_core::bail!("KV cache copy past the end: {} + {} > {}", at, src.capacity, self.capacity);
        }
        for ((dk, dv), (sk, sv)) in self.layers.iter().zip(&src.layers) {
            dk.narrow(0, row0, n)?.slice_set(&sk.index_select(rows, 0)?, 2, at)?;
            dv.narrow(0, row0, n)?.slice_set(&sv.index_select(rows, 0)?, 2, at)?;
        }
        Ok(())
    }

    /// Move slots `from..from + len` of the first `rows` rows to `to..to + len` (the ranges
    /// may overlap; one layer's window at a time is held aside).
    pub fn move_slots(&mut self, rows: usize, from: usize, to: usize, len: usize) -> candle_core::Result<()> {
        if from.max(to) + len > self.capacity {
            candle_core::bail!("KV cache move past the end: {}..{} to {}..{} of {}", from, from + len, to, to + len, self.capacity);
        }
        for (k, v) in &self.layers {
            let (k, v) = (k.narrow(0, 0, rows)?, v.narrow(0, 0, rows)?);
            let kw = k.narrow(2, from, len)?.contiguous()?;
            k.slice_set(&kw, 2, to)?;
            let vw = v.narrow(2, from, len)?.contiguous()?;
            v.slice_set(&vw, 2, to)?;
        }
        Ok(())
    }

    /// Gather rows `rows` (in that order) into rows `0..rows.len()`. The allocation stays:
    /// rows freed at a batch's tail are there again when more work arrives.
    pub fn pack_rows(&mut self, rows: &Tensor) -> candle_core::Result<()> {
        for (k, v) in &self.layers {
            // index_select copies out first, so the gathered rows may overlap their targets.
            k.slice_set(&k.index_select(rows, 0)?, 0, 0)?;
            v.slice_set(&v.index_select(rows, 0)?, 0, 0)?;
        }
        Ok(())
    }

    /// Bytes one sequence of `capacity` slots takes: what batch sizing divides free memory by.
    pub fn bytes_per_sequence(cfg: &ModelConfig, capacity: usize, dtype: DType) -> usize {
        2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * capacity * dtype.size_in_bytes()
    }
}

