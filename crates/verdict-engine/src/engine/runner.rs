//! The model runner: owns the batch's KV cache and the model, turns a step's rows into
//! tensors, and returns logits.
//!
//! Layout. The cache holds `rows` sequences of up to `capacity` slots. Every row writes its
//! next token at the same slot, the frontier `offset`; row r's sequence occupies slots
//! `pads[r]..offset` (its left padding is `pads[r]`), and masks hide everything before it.
//! A sample admitted into a freed row gets its prompt's keys and values copied so that the
//! prompt ends at the frontier, whatever the other rows are doing: rows start and finish
//! independently (continuous batching) while the step stays one dense `[rows, 1]` forward.
//! Positions count from each row's first real token, so where a sequence sits in the cache
//! changes nothing it computes. When the frontier reaches the end of the cache, the live
//! part is moved left (by the smallest live padding); when an admitted prompt is longer
//! than the frontier, the live part moves right. Both moves are rare (at most once per
//! `max_new_tokens` steps, or when a longer prompt arrives).
//!
//! Prompts are prefilled apart, in chunks of at most `PREFILL_TOKENS` (padding included),
//! into small caches of their own: each distinct prompt once, however many samples continue
//! it. Admission copies from there.

use std::rc::Rc;

use candle_core::{DType, Device, Tensor};

use crate::error::{ComputeContext, Result};
use crate::model::{causal_mask, Decoder, KvCache, Step};
use crate::profile;

/// Most prompt tokens (padding included) prefilled in one forward pass: bounds the prefill's
/// activations and attention scores, which grow with the square of the prompt length.
pub(crate) const PREFILL_TOKENS: usize = 16_384;

/// Prompts prefilled together: their keys and values, left-padded to `width`, and the
/// logits of each one's last position (what its samples' first tokens are drawn from).
pub struct PrefillChunk {
    cache: KvCache,
    pub width: usize,
    pub logits: Tensor,
    pub lengths: Vec<usize>,
}

/// A prefilled prompt: its chunk and its row there.
#[derive(Clone)]
pub struct PromptKv {
    pub chunk: Rc<PrefillChunk>,
    pub row: usize,
}

impl PromptKv {
    /// The prompt's length in tokens.
    pub fn tokens(&self) -> usize {
        self.chunk.lengths[self.row]
    }
}

pub struct Runner<'m> {
    model: &'m Decoder,
    cache: KvCache,
    /// Slot where every row writes its next token.
    offset: usize,
    /// Each row's first slot; a free row's is the frontier where it was freed.
    pads: Vec<usize>,
    live: Vec<bool>,
    /// `pads` on the device, rebuilt when they change.
    pads_dev: Option<Tensor>,
    pad_id: u32,
    window: Option<usize>,
    /// Whether steps must carry mask tensors (the CPU path); on CUDA the kernels build
    /// masks from `pads`, and `dummy_mask` stands in.
    host_masks: bool,
    dummy_mask: Tensor,
    /// Times the live part of the cache was moved (left at the end of the cache, right for a
    /// longer prompt).
    pub moves: usize,
}

impl<'m> Runner<'m> {
    /// A cache of `rows` sequences of `capacity` slots each.
    pub fn new(model: &'m Decoder, rows: usize, capacity: usize, pad_id: u32) -> Result<Self> {
        let cache = KvCache::new(model.config(), rows, capacity, model.dtype(), model.device()).step("allocating the KV cache")?;
        let host_masks = !crate::kernels::masks_in_kernels(model.device(), model.dtype());
        let dummy_mask = Tensor::zeros((1, 1, 1, 1), DType::F32, model.device()).step("allocating the KV cache")?;
        Ok(Self {
            model,
            cache,
            offset: 0,
            pads: vec![0; rows],
            live: vec![false; rows],
            pads_dev: None,
            pad_id,
            window: model.sliding_window(),
            host_masks,
            dummy_mask,
            moves: 0,
        })
    }

    pub fn rows(&self) -> usize {
        self.pads.len()
    }

    pub fn capacity(&self) -> usize {
        self.cache.capacity()
    }

    pub fn device(&self) -> &Device {
        self.model.device()
    }

    /// Prefill `prompts` (token ids), each once, in chunks of at most `PREFILL_TOKENS`.
    /// Prompts are chunked in order of length, so a chunk pads little; the answer is in the
    /// order given.
    pub fn prefill(&self, prompts: &[&[u32]]) -> Result<Vec<PromptKv>> {
        let mut order: Vec<usize> = (0..prompts.len()).collect();
        order.sort_by_key(|&i| prompts[i].len());
        let mut out: Vec<Option<PromptKv>> = vec![None; prompts.len()];
        let device = self.model.device();
        let mut start = 0;
        while start < order.len() {
            // Grow the chunk while its padded size stays within the budget.
            let mut end = start;
            let mut width = 0;
            while end < order.len() {
                let w = width.max(prompts[order[end]].len());
                if end > start && w * (end - start + 1) > PREFILL_TOKENS {
                    break;
                }
                width = w;
                end += 1;
            }
            let chunk: Vec<&[u32]> = order[start..end].iter().map(|&i| prompts[i]).collect();
            let (step, _) = Step::left_padded(&chunk, width, self.pad_id, self.window, device).step("prefill input")?;
            let mut cache = KvCache::new(self.model.config(), chunk.len(), width, self.model.dtype(), device).step("allocating the prefill cache")?;
            let hidden = profile::time("prefill", "forward", device, || self.model.forward(&step, &mut cache)).step("prefill")?;
            let logits = self.model.head(&Decoder::last(&hidden).step("prefill")?).step("prefill head")?;
            let shared = Rc::new(PrefillChunk { cache, width, logits, lengths: chunk.iter().map(|p| p.len()).collect() });
            for (row, &i) in order[start..end].iter().enumerate() {
                out[i] = Some(PromptKv { chunk: shared.clone(), row });
            }
            start = end;
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Move the live part of the cache so that the frontier is at `to`.
    fn move_frontier(&mut self, to: usize) -> Result<()> {
        let from_slot = self.pads.iter().zip(&self.live).filter(|(_, &l)| l).map(|(&p, _)| p).min().unwrap_or(self.offset);
        let len = self.offset - from_slot;
        let dst = to - len;
        let rows = self.active();
        if len > 0 && dst != from_slot && rows > 0 {
            self.moves += 1;
            profile::time("decode", "frontier move", self.model.device(), || self.cache.move_slots(rows, from_slot, dst, len)).step("moving the cache window")?;
        }
        for p in self.pads.iter_mut() {
            *p = (*p + to).saturating_sub(self.offset).min(to);
        }
        self.offset = to;
        self.pads_dev = None;
        Ok(())
    }

    /// Put `prompts[i]` into free row `rows[i]`, ending at the frontier. The frontier moves
    /// right first if a prompt's chunk is wider than it.
    pub fn admit(&mut self, admissions: &[(usize, &PromptKv)]) -> Result<()> {
        let Some(widest) = admissions.iter().map(|(_, p)| p.chunk.width).max() else { return Ok(()) };
        if widest > self.offset {
            self.move_frontier(widest)?;
        }
        // Consecutive rows fed from one chunk are copied together (the first fill of an
        // empty batch is a handful of copies per layer, not one per row).
        let mut sorted: Vec<(usize, &PromptKv)> = admissions.to_vec();
        sorted.sort_by_key(|(row, _)| *row);
        let mut i = 0;
        while i < sorted.len() {
            let (row0, first) = sorted[i];
            let mut j = i + 1;
            while j < sorted.len() && sorted[j].0 == row0 + (j - i) && Rc::ptr_eq(&sorted[j].1.chunk, &first.chunk) {
                j += 1;
            }
            let src: Vec<u32> = sorted[i..j].iter().map(|(_, p)| p.row as u32).collect();
            let src = Tensor::from_vec(src, j - i, self.model.device()).step("admission")?;
            let at = self.offset - first.chunk.width;
            profile::time("prefill", "admission", self.model.device(), || self.cache.copy_rows_from(&first.chunk.cache, &src, row0, at)).step("admission")?;
            for (row, p) in &sorted[i..j] {
                self.pads[*row] = self.offset - p.tokens();
                self.live[*row] = true;
            }
            i = j;
        }
        self.pads_dev = None;
        Ok(())
    }

    /// A row's sequence is finished: the row is free for the next admission.
    pub fn release(&mut self, row: usize) {
        self.live[row] = false;
        self.pads[row] = self.offset;
        self.pads_dev = None;
    }

    /// Rows a step computes: up to the last live row (admission fills the lowest free rows
    /// first, and `pack` gathers the live rows there at a batch's tail).
    pub fn active(&self) -> usize {
        self.live.iter().rposition(|&l| l).map_or(0, |r| r + 1)
    }

    /// Move rows `keep` (in that order) to rows `0..keep.len()`; every other row becomes free.
    /// Rows past the live ones stop costing compute, and stay allocated for later arrivals.
    pub fn pack(&mut self, keep: &[usize]) -> Result<()> {
        let idx = Tensor::from_vec(keep.iter().map(|&r| r as u32).collect::<Vec<_>>(), keep.len(), self.model.device()).step("packing rows")?;
        profile::time("decode", "pack", self.model.device(), || self.cache.pack_rows(&idx)).step("packing rows")?;
        let (pads, live): (Vec<usize>, Vec<bool>) = keep.iter().map(|&r| (self.pads[r], self.live[r])).unzip();
        let offset = self.offset;
        for r in 0..self.rows() {
            (self.pads[r], self.live[r]) = if r < keep.len() { (pads[r], live[r]) } else { (offset, false) };
        }
        self.pads_dev = None;
        Ok(())
    }

    /// One decode step over the first `tokens.len()` rows (at least `active()`): `tokens[r]`
    /// is fed at the frontier for row r (a free row's is ignored). Returns their logits,
    /// `[tokens.len(), V]` f32.
    pub fn decode(&mut self, tokens: &[u32]) -> Result<Tensor> {
        let n = tokens.len();
        if n < self.active() || n > self.rows() {
            return Err(crate::EngineError::Device(format!("decode step over {n} rows: {} are live of {}", self.active(), self.rows())));
        }
        if self.offset >= self.capacity() {
            // The frontier is at the end: move the live part left, to the smallest padding.
            let low = self.pads.iter().zip(&self.live).filter(|(_, &l)| l).map(|(&p, _)| p).min().unwrap_or(self.offset);
            self.move_frontier(self.offset - low)?;
            if self.offset >= self.capacity() {
                return Err(crate::EngineError::Device(format!("KV cache full: a live sequence spans all {} slots", self.capacity())));
            }
        }
        let device = self.model.device().clone();
        let offset = self.offset;
        let pads = &self.pads[..n];
        let positions: Vec<u32> = pads.iter().map(|&p| (offset - p) as u32).collect();
        let tokens: Vec<u32> = tokens.iter().zip(&self.live).map(|(&t, &l)| if l { t } else { self.pad_id }).collect();
        if self.pads_dev.as_ref().is_none_or(|p| p.dims1().ok() != Some(n)) {
            self.pads_dev = Some(Tensor::from_vec(pads.iter().map(|&p| p as u32).collect::<Vec<_>>(), n, &device).step("decode input")?);
        }
        let host = self.host_masks;
        let step = Step {
            tokens: Tensor::from_vec(tokens, (n, 1), &device).step("decode input")?,
            positions: Tensor::from_vec(positions, (n, 1), &device).step("decode input")?,
            mask: if host { causal_mask(pads, offset, 1, None, &device).step("decode mask")? } else { self.dummy_mask.clone() },
            sliding_mask: self.window.filter(|_| host).map(|w| causal_mask(pads, offset, 1, Some(w), &device)).transpose().step("decode mask")?,
            offset,
            pads: self.pads_dev.clone(),
        };
        let hidden = profile::time("decode", "forward", &device, || self.model.forward(&step, &mut self.cache)).step("decode step")?;
        let logits = self.model.head(&Decoder::last(&hidden).step("decode step")?).step("decode head")?;
        self.offset += 1;
        Ok(logits)
    }
}
