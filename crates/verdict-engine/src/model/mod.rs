//! The decoder forward pass for Qwen2, Qwen3, Llama 3 and Gemma 2, written with candle ops
//! over our own preallocated KV cache.
//!
//! Why not candle-transformers' models: they grow the cache with `Tensor::cat`, take one
//! position offset for the whole batch and have no padding masks, so a batch of prompts of
//! different lengths cannot be decoded together. Here every sequence carries its own
//! positions and its own mask, and the cache is written in place.
//!
//! Tensor names mirror the checkpoints (`model.layers.{i}.self_attn.q_proj.weight`, ...),
//! so any folder written by transformers' `save_pretrained` for these architectures loads.

mod cache;
mod layers;
mod pool;
mod rope;

pub use cache::KvCache;
pub use layers::Segments;
pub use pool::PromptPool;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, Linear, VarBuilder};

use crate::config::{Head, ModelConfig};
use layers::{DecoderLayer, LayerInput, RmsNorm};
use rope::RopeTables;

/// One forward step's inputs for a batch of sequences.
pub struct Step {
    /// `[b, t]` token ids (u32).
    pub tokens: Tensor,
    /// `[b, t]` rotary positions (u32): each sequence counts from its own first real token.
    pub positions: Tensor,
    /// `[b, 1, t, L]` f32 additive mask (0 or -inf) over the L = `offset + t` cache slots;
    /// `None` for a segmented step, whose kernels mask by position.
    pub mask: Option<Tensor>,
    /// The same for sliding-window layers (Gemma 2), when the model has any.
    pub sliding_mask: Option<Tensor>,
    /// Cache slot where this step's first token is written.
    pub offset: usize,
    /// Each row's left padding (u32 `[b]`), from which the CUDA attention kernels build the
    /// mask themselves instead of reading `mask`. `None` means: use `mask`.
    pub pads: Option<Tensor>,
    /// A decode step's own-cache slot as a device u32 `[1, 1, 1, 1]`, read in place of
    /// `offset`: what a step captured in a CUDA graph writes at wherever it is replayed.
    pub slot: Option<Tensor>,
}

impl Step {
    /// A step whose attention runs over segments (crate::segmented): `tokens` and `positions`
    /// `[b, t]`, keys and values written at own-cache slot `offset`. No mask: the kernels
    /// mask by position.
    pub fn segmented(tokens: Tensor, positions: Tensor, offset: usize) -> Step {
        Step { tokens, positions, mask: None, sliding_mask: None, offset, pads: None, slot: None }
    }

    /// The prefill step for whole sequences, left-padded with `pad_id` to `width` (at least
    /// the longest): every sequence counts its positions from its first real token. Returns
    /// the step and the padding of each row.
    pub fn left_padded(
        seqs: &[&[u32]],
        width: usize,
        pad_id: u32,
        window: Option<usize>,
        device: &Device,
    ) -> candle_core::Result<(Step, Vec<usize>)> {
        let b = seqs.len();
        let p = seqs.iter().map(|s| s.len()).max().unwrap_or(0).max(width);
        let pads: Vec<usize> = seqs.iter().map(|s| p - s.len()).collect();
        let mut tokens = Vec::with_capacity(b * p);
        let mut positions = Vec::with_capacity(b * p);
        for (s, &pad) in seqs.iter().zip(&pads) {
            tokens.extend(std::iter::repeat_n(pad_id, pad));
            tokens.extend_from_slice(s);
            positions.extend((0..p).map(|c| c.saturating_sub(pad) as u32));
        }
        let step = Step {
            tokens: Tensor::from_vec(tokens, (b, p), device)?,
            positions: Tensor::from_vec(positions, (b, p), device)?,
            mask: Some(causal_mask(&pads, 0, p, None, device)?),
            sliding_mask: window.map(|w| causal_mask(&pads, 0, p, Some(w), device)).transpose()?,
            offset: 0,
            pads: Some(Tensor::from_vec(pads.iter().map(|&x| x as u32).collect::<Vec<_>>(), b, device)?),
            slot: None,
        };
        Ok((step, pads))
    }
}

pub struct Decoder {
    cfg: ModelConfig,
    embed: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    head: Linear,
    rope: RopeTables,
    dtype: DType,
    device: Device,
}

impl Decoder {
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let base = vb.pp("model");
        let embed = candle_nn::embedding(cfg.vocab_size, cfg.hidden_size, base.pp("embed_tokens"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(cfg, i, base.pp("layers").pp(i)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let norm = RmsNorm::new(cfg, base.pp("norm"), cfg.hidden_size)?;
        let head = match cfg.head {
            Head::CausalLm if cfg.tie_word_embeddings => Linear::new(embed.embeddings().clone(), None),
            Head::CausalLm => candle_nn::linear_no_bias(cfg.hidden_size, cfg.vocab_size, vb.pp("lm_head"))?,
            Head::SequenceClassification { num_labels } => {
                candle_nn::linear_no_bias(cfg.hidden_size, num_labels, vb.pp("score"))?
            }
        };
        let rope = RopeTables::new(cfg, vb.dtype(), vb.device())?;
        Ok(Self {
            cfg: cfg.clone(),
            embed,
            layers,
            norm,
            head,
            rope,
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Run the step through all layers, writing its keys and values into `cache`, and
    /// return the final hidden states `[b, t, hidden]`.
    pub fn forward(&self, step: &Step, cache: &mut KvCache) -> candle_core::Result<Tensor> {
        self.forward_with(step, cache, None)
    }

    /// A step whose attention runs over segments as `segments.plan` lays them out: a decode
    /// step (`t = 1`) whose rows read their prompts from a pool, `own` holding only the rows'
    /// own tokens, or a prefill of one sequence (`b = 1`: prompts laid end to end, each
    /// reading the pool's template header and its own tokens causally). The step's keys and
    /// values go at slot `step.offset` of `own`; `step.mask` and `step.pads` are not read.
    pub fn forward_segmented(&self, step: &Step, own: &mut KvCache, segments: Segments<'_>) -> candle_core::Result<Tensor> {
        self.forward_with(step, own, Some(segments))
    }

    fn forward_with(&self, step: &Step, cache: &mut KvCache, segments: Option<Segments<'_>>) -> candle_core::Result<Tensor> {
        let mut h = self.embed.forward(&step.tokens)?;
        if self.cfg.gemma.is_some() {
            // Gemma multiplies by √hidden rounded to the activation dtype, as transformers does.
            let scale = Tensor::new((self.cfg.hidden_size as f64).sqrt() as f32, &self.device)?.to_dtype(self.dtype)?;
            h = h.broadcast_mul(&scale)?;
        }
        let (cos, sin) = self.rope.gather(&step.positions)?;
        // Where each row's keys and values go when the slot is read on the device: every
        // element of a [b, kv, 1, head_dim] index holds it (what scatter_set takes). The
        // fused CUDA decode kernel reads the slot itself.
        let write_index = match &step.slot {
            Some(slot) if !crate::kernels::fused(&h) => {
                let b = step.tokens.dim(0)?;
                Some(slot.broadcast_as((b, self.cfg.num_key_value_heads, 1, self.cfg.head_dim))?.contiguous()?)
            }
            _ => None,
        };
        for (i, layer) in self.layers.iter().enumerate() {
            let mask = match (&step.sliding_mask, layer.sliding) {
                (Some(m), true) => Some(m),
                _ => step.mask.as_ref(),
            };
            let input = LayerInput { cos: &cos, sin: &sin, mask, offset: step.offset, write_index: write_index.as_ref(), slot: step.slot.as_ref(), pads: step.pads.as_ref(), segments };
            h = layer.forward(&h, &input, cache, i)?;
        }
        self.norm.forward(&h)
    }

    /// The head on hidden states `[b, t, hidden]` (or `[b, hidden]`), in f32: vocabulary
    /// logits for a causal LM (Gemma's final soft-cap applied), scores for a classifier.
    pub fn head(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        let mut logits = crate::profile::time("", "head", hidden.device(), || self.head.forward(hidden)?.to_dtype(DType::F32))?;
        if let Some(cap) = self.cfg.gemma.as_ref().and_then(|g| g.final_logit_softcapping) {
            logits = ((logits / cap)?.tanh()? * cap)?;
        }
        Ok(logits)
    }

    /// Hidden state of each sequence's last position: `[b, hidden]`, contiguous (CUDA's
    /// matmul takes no strided operand).
    pub fn last(hidden: &Tensor) -> candle_core::Result<Tensor> {
        let t = hidden.dim(1)?;
        hidden.narrow(1, t - 1, 1)?.squeeze(1)?.contiguous()
    }

    /// Logits for every position of one unpadded sequence, no cache kept: what the parity
    /// check compares with transformers.
    pub fn full_logits(&self, tokens: &[u32]) -> candle_core::Result<Tensor> {
        let t = tokens.len();
        let mut cache = KvCache::new(&self.cfg, 1, t, self.dtype, &self.device)?;
        let step = Step {
            tokens: Tensor::new(tokens, &self.device)?.unsqueeze(0)?,
            positions: Tensor::arange(0u32, t as u32, &self.device)?.unsqueeze(0)?,
            mask: Some(causal_mask(&[0], 0, t, None, &self.device)?),
            sliding_mask: self.sliding_window().map(|w| causal_mask(&[0], 0, t, Some(w), &self.device)).transpose()?,
            offset: 0,
            pads: Some(Tensor::zeros(1, DType::U32, &self.device)?),
            slot: None,
        };
        let h = self.forward(&step, &mut cache)?;
        self.head(&h)?.squeeze(0)
    }

    /// The sliding window, if any layer uses one.
    pub fn sliding_window(&self) -> Option<usize> {
        let g = self.cfg.gemma.as_ref()?;
        if g.sliding_layers.iter().any(|&s| s) {
            g.sliding_window
        } else {
            None
        }
    }

    /// Greedy argmax over the last dimension.
    pub fn argmax(logits: &Tensor) -> candle_core::Result<Vec<u32>> {
        logits.argmax(D::Minus1)?.to_vec1()
    }
}

/// The additive attention mask `[b, 1, t, L]`, f32 (scores are softmaxed in f32), (L = offset + t) for left-padded sequences:
/// sequence i's first `pads[i]` slots are padding; a query at slot q may see slot c when
/// `pads[i] <= c <= q` and, with a window w, `q - c < w`. A padding query sees only itself,
/// so its row stays finite (its output is never read).
pub fn causal_mask(
    pads: &[usize],
    offset: usize,
    t: usize,
    window: Option<usize>,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let l = offset + t;
    let mut m = vec![f32::NEG_INFINITY; pads.len() * t * l];
    for (i, &pad) in pads.iter().enumerate() {
        for r in 0..t {
            let q = offset + r;
            let row = &mut m[(i * t + r) * l..(i * t + r + 1) * l];
            if q < pad {
                row[q] = 0.0;
                continue;
            }
            let lo = match window {
                Some(w) => pad.max((q + 1).saturating_sub(w)),
                None => pad,
            };
            for c in row.iter_mut().take(q + 1).skip(lo) {
                *c = 0.0;
            }
        }
    }
    Tensor::from_vec(m, (pads.len(), 1, t, l), device)
}
