//! Norms, attention and MLP of one decoder layer, with each architecture's quirks behind
//! config flags rather than one copy of the layer per architecture.

use candle_core::{DType, Module, Tensor, D};
use candle_nn::{Linear, VarBuilder};

use super::KvCache;

/// What every layer of one step shares: rotary tables for the step's positions, the
/// attention mask (the sliding one for sliding-window layers), and the cache slot where
/// the step's keys and values go.
#[derive(Clone, Copy)]
pub struct LayerInput<'a> {
    pub cos: &'a Tensor,
    pub sin: &'a Tensor,
    /// `None` for a segmented step.
    pub mask: Option<&'a Tensor>,
    pub offset: usize,
    /// Write the step's keys and values where this index says (`KvCache::write_indexed`)
    /// instead of at `offset`.
    pub write_index: Option<&'a Tensor>,
    /// The own-cache slot as a device u32 `[1, 1, 1, 1]` (`Step::slot`), which the fused
    /// decode kernel reads itself.
    pub slot: Option<&'a Tensor>,
    /// Each row's left padding (u32 `[b]`), for the CUDA attention kernels (see `Step::pads`).
    pub pads: Option<&'a Tensor>,
    /// A step whose attention runs over segments (a decode step over prompts held in a pool,
    /// or a prefill of prompts laid end to end), if it is one.
    pub segments: Option<Segments<'a>>,
}

/// Where a segmented step's rows find their prompts, and how their keys are laid out. The
/// rows are the step's query positions: `b` samples of one token (decode), or one sequence
/// of `t` tokens (prefill: `b` = 1, prompts laid end to end).
#[derive(Clone, Copy)]
pub struct Segments<'a> {
    pub pool: &'a super::PromptPool,
    pub plan: &'a crate::segmented::DevicePlan,
}
use crate::config::{Activation, ModelConfig};
use crate::{kernels, profile};

/// RMSNorm, computed in f32 and rounded as transformers rounds: Llama and Qwen round the
/// normalized row to the activation dtype and then multiply by the weight in that dtype;
/// Gemma multiplies by (1 + w) in f32 and rounds once. In f32 the two orders agree; in bf16
/// they differ by a rounding per element, which adds up over layers.
pub struct RmsNorm {
    /// f32; Gemma's already holds 1 + w.
    weight: Tensor,
    /// The weight in the activation dtype, for the round-first order.
    weight_act: Tensor,
    cast_first: bool,
    eps: f64,
}

impl RmsNorm {
    pub fn new(cfg: &ModelConfig, vb: VarBuilder, size: usize) -> candle_core::Result<Self> {
        let w = vb.get(size, "weight")?;
        let cast_first = cfg.gemma.is_none();
        let weight = if cast_first { w.to_dtype(DType::F32)? } else { (w.to_dtype(DType::F32)? + 1.0)? };
        Ok(Self { weight_act: weight.to_dtype(vb.dtype())?, weight, cast_first, eps: cfg.rms_norm_eps })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if kernels::fused(x) {
            return kernels::rms_norm_fused(x, &self.weight, self.eps, self.cast_first);
        }
        let dtype = x.dtype();
        let xf = x.to_dtype(DType::F32)?;
        let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = xf.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        if self.cast_first {
            normed.to_dtype(dtype)?.broadcast_mul(&self.weight_act)
        } else {
            normed.broadcast_mul(&self.weight)?.to_dtype(dtype)
        }
    }
}

/// One linear layer over several checkpoint projections stacked along the output dimension
/// (q, k, v → qkv; gate, up → gate_up): one matmul launch instead of several.
fn stacked_linear(bias: bool, input: usize, parts: &[(usize, &str)], vb: &VarBuilder) -> candle_core::Result<Linear> {
    let weights = parts.iter().map(|(out, name)| vb.pp(name).get((*out, input), "weight")).collect::<candle_core::Result<Vec<_>>>()?;
    let bias = if bias {
        let b = parts.iter().map(|(out, name)| vb.pp(name).get(*out, "bias")).collect::<candle_core::Result<Vec<_>>>()?;
        Some(Tensor::cat(&b, 0)?)
    } else {
        None
    };
    Ok(Linear::new(Tensor::cat(&weights, 0)?, bias))
}

fn linear(bias: bool, input: usize, output: usize, vb: VarBuilder, name: &str) -> candle_core::Result<Linear> {
    stacked_linear(bias, input, &[(output, name)], &vb)
}

struct Attention {
    qkv: Linear,
    o: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    scale: f64,
    softcap: Option<f64>,
    /// Sliding-window layers (Gemma 2): how many slots back a query sees.
    window: Option<usize>,
}

impl Attention {
    fn new(cfg: &ModelConfig, vb: VarBuilder, sliding: bool) -> candle_core::Result<Self> {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let (q_out, kv_out) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
        let (q_norm, k_norm) = if cfg.qk_norm {
            (Some(RmsNorm::new(cfg, vb.pp("q_norm"), hd)?), Some(RmsNorm::new(cfg, vb.pp("k_norm"), hd)?))
        } else {
            (None, None)
        };
        let scale = match &cfg.gemma {
            Some(g) => 1.0 / g.query_pre_attn_scalar.sqrt(),
            None => 1.0 / (hd as f64).sqrt(),
        };
        Ok(Self {
            qkv: stacked_linear(cfg.qkv_bias, h, &[(q_out, "q_proj"), (kv_out, "k_proj"), (kv_out, "v_proj")], &vb)?,
            o: linear(cfg.o_bias, q_out, h, vb.clone(), "o_proj")?,
            q_norm,
            k_norm,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim: hd,
            scale,
            softcap: cfg.gemma.as_ref().and_then(|g| g.attn_logit_softcapping),
            window: if sliding { cfg.gemma.as_ref().and_then(|g| g.sliding_window) } else { None },
        })
    }

    fn forward(&self, x: &Tensor, input: &LayerInput<'_>, cache: &mut KvCache, layer: usize) -> candle_core::Result<Tensor> {
        let LayerInput { cos, sin, mask, offset, write_index, slot, pads, segments } = *input;
        let (b, t, hidden) = x.dims3()?;
        let hd = self.head_dim;
        let g = self.heads / self.kv_heads;
        // A decode step on CUDA: bias, q/k norms, rotary embedding and the cache write in one
        // kernel (kernels::qkv_rope_write) instead of about ten launches.
        if let (Some(seg), Some(slot), true) = (segments, slot, t == 1 && kernels::fused(x) && self.q_norm.as_ref().is_none_or(|n| n.cast_first)) {
            let qkv = profile::time("decode", "qkv proj", x.device(), || x.reshape((b, hidden))?.matmul(&self.qkv.weight().t()?))?;
            let (own_k, own_v) = cache.layer(layer);
            let op = kernels::QkvRopeWrite {
                bias: self.qkv.bias(),
                q_norm: self.q_norm.as_ref().map(|n| &n.weight),
                k_norm: self.k_norm.as_ref().map(|n| &n.weight),
                eps: self.q_norm.as_ref().map_or(0.0, |n| n.eps as f32),
                cos,
                sin,
                own_k,
                own_v,
                slot,
                heads: self.heads,
                kv_heads: self.kv_heads,
                head_dim: hd,
            };
            let q = profile::time("decode", "rope+write", x.device(), || kernels::qkv_rope_write(&qkv, &op))?.reshape((b, self.kv_heads, g, hd))?;
            return self.attend_segmented(&q, seg, cache, layer, b, t);
        }
        let qkv = self.qkv.forward(x)?;
        let mut from = 0;
        let mut split = |heads: usize, norm: &Option<RmsNorm>| -> candle_core::Result<Tensor> {
            let y = qkv.narrow(2, from, heads * hd)?.reshape((b, t, heads, hd))?;
            from += heads * hd;
            let y = match norm {
                Some(n) => n.forward(&y)?,
                None => y,
            };
            y.transpose(1, 2)?.contiguous()
        };
        let q = split(self.heads, &self.q_norm)?;
        let k = split(self.kv_heads, &self.k_norm)?;
        let v = split(self.kv_heads, &None)?;
        let q = candle_nn::rotary_emb::rope(&q, cos, sin)?;
        let k = candle_nn::rotary_emb::rope(&k, cos, sin)?;
        if let Some(seg) = segments {
            if b > 1 && t > 1 {
                candle_core::bail!("segmented attention takes one token per row or one sequence, not [{b}, {t}]");
            }
            match (write_index, slot) {
                (Some(index), _) => cache.write_indexed(layer, index, &k, &v)?,
                (None, None) => {
                    cache.write(layer, offset, &k, &v)?;
                }
                // `offset` is stale in a replayed graph: never write there instead.
                (None, Some(_)) => candle_core::bail!("a decode step with a device-side slot reached the unfused write without its index"),
            }
            // [b, heads, t, hd] → one query row per position: [b·t, kv, g, hd].
            let q = if t == 1 { q.reshape((b, self.kv_heads, g, hd))? } else { q.transpose(1, 2)?.reshape((b * t, self.kv_heads, g, hd))? };
            return self.attend_segmented(&q, seg, cache, layer, b, t);
        }

        let (k_all, v_all) = cache.write(layer, offset, &k, &v)?;
        let l = k_all.dim(2)?;
        let Some(mask) = mask else { candle_core::bail!("a dense attention step needs a mask") };
        // Grouped-query attention without copying K/V per query head: fold each KV head's
        // query group into the row dimension, [b, kv, g*t, hd] x [b, kv, hd, L]. Scores are
        // scaled after the product, in the activation dtype, as transformers does.
        let q = q.reshape((b, self.kv_heads, g * t, hd))?;
        if let (true, Some(pads)) = (kernels::fused(&q), pads) {
            let scores = q.matmul(&k_all.t()?)?;
            let probs = kernels::prefill_softmax(&scores, pads, t, offset, self.scale, self.softcap, self.window)?;
            let out = probs.matmul(&v_all)?.reshape((b, self.heads, t, hd))?.transpose(1, 2)?.reshape((b, t, self.heads * hd))?;
            return self.o.forward(&out);
        }
        let mut scores = (q.matmul(&k_all.t()?)? * self.scale)?.to_dtype(DType::F32)?;
        if let Some(cap) = self.softcap {
            scores = ((scores / cap)?.tanh()? * cap)?;
        }
        let scores = scores
            .reshape((b, self.kv_heads, g, t, l))?
            .broadcast_add(&mask.unsqueeze(2)?)?
            .reshape((b, self.kv_heads, g * t, l))?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(v_all.dtype())?;
        let out = probs.matmul(&v_all)?; // [b, kv, g*t, hd]
        let out = out
            .reshape((b, self.heads, t, hd))?
            .transpose(1, 2)?
            .reshape((b, t, self.heads * hd))?;
        self.o.forward(&out)
    }
}

impl Attention {
    /// Segmented attention of the step's queries (`[b·t, kv, g, hd]`, one row per query
    /// position) over the pool and the rows' own tokens, then the output projection.
    fn attend_segmented(&self, q: &Tensor, seg: Segments<'_>, cache: &KvCache, layer: usize, b: usize, t: usize) -> candle_core::Result<Tensor> {
        // The rows' own tokens are in `cache` (whole rows: the plan addresses them by slot);
        // their prompts in the pool.
        let (own_k, own_v) = cache.layer(layer);
        let (own_k, own_v) = (own_k.narrow(0, 0, b)?, own_v.narrow(0, 0, b)?);
        let scoring = crate::segmented::Scoring { scale: self.scale as f32, softcap: self.softcap.unwrap_or(0.0) as f32, window: self.window.unwrap_or(0) };
        let phase = if t == 1 { "decode" } else { "prefill" };
        let out = profile::time(phase, "segments", q.device(), || crate::segmented::attend(q, seg.pool.layer(layer), (&own_k, &own_v), seg.plan, scoring))?;
        profile::time(phase, "o proj", q.device(), || self.o.forward(&out.reshape((b, t, self.heads * self.head_dim))?))
    }
}

struct Mlp {
    gate_up: Linear,
    down: Linear,
    inter: usize,
    act: Activation,
}

impl Mlp {
    fn new(cfg: &ModelConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_up: stacked_linear(cfg.mlp_bias, h, &[(i, "gate_proj"), (i, "up_proj")], &vb)?,
            down: linear(cfg.mlp_bias, i, h, vb.clone(), "down_proj")?,
            inter: i,
            act: cfg.activation,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let gu = self.gate_up.forward(x)?;
        let mid = if kernels::fused(&gu) {
            kernels::gated_act_fused(&gu, self.act == Activation::GeluTanh)?
        } else {
            let last = gu.rank() - 1;
            let gate = gu.narrow(last, 0, self.inter)?;
            let gate = match self.act {
                Activation::Silu => candle_nn::ops::silu(&gate)?,
                Activation::GeluTanh => gate.gelu()?,
            };
            (gate * gu.narrow(last, self.inter, self.inter)?)?
        };
        self.down.forward(&mid)
    }
}

pub struct DecoderLayer {
    attn: Attention,
    mlp: Mlp,
    input_norm: RmsNorm,
    post_attn_norm: RmsNorm,
    /// Gemma 2's norms before and after the MLP.
    ffn_norms: Option<(RmsNorm, RmsNorm)>,
    pub sliding: bool,
}

impl DecoderLayer {
    pub fn new(cfg: &ModelConfig, index: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let h = cfg.hidden_size;
        let ffn_norms = if cfg.gemma.is_some() {
            Some((
                RmsNorm::new(cfg, vb.pp("pre_feedforward_layernorm"), h)?,
                RmsNorm::new(cfg, vb.pp("post_feedforward_layernorm"), h)?,
            ))
        } else {
            None
        };
        let sliding = cfg.gemma.as_ref().map(|g| g.sliding_layers[index]).unwrap_or(false);
        Ok(Self {
            attn: Attention::new(cfg, vb.pp("self_attn"), sliding)?,
            mlp: Mlp::new(cfg, vb.pp("mlp"))?,
            input_norm: RmsNorm::new(cfg, vb.pp("input_layernorm"), h)?,
            post_attn_norm: RmsNorm::new(cfg, vb.pp("post_attention_layernorm"), h)?,
            ffn_norms,
            sliding,
        })
    }

    pub fn forward(&self, x: &Tensor, input: &LayerInput<'_>, cache: &mut KvCache, layer: usize) -> candle_core::Result<Tensor> {
        let phase = if x.dim(1)? == 1 { "decode" } else { "prefill" };
        let a = profile::time(phase, "attention", x.device(), || self.attn.forward(&self.input_norm.forward(x)?, input, cache, layer))?;
        match &self.ffn_norms {
            // Gemma 2: sandwich norms; the "post attention" norm is applied to the attention
            // output before the residual add.
            Some((pre, post)) => {
                let x = (x + self.post_attn_norm.forward(&a)?)?;
                let m = profile::time(phase, "mlp", x.device(), || post.forward(&self.mlp.forward(&pre.forward(&x)?)?))?;
                x + m
            }
            None => {
                let x = (x + a)?;
                let m = profile::time(phase, "mlp", x.device(), || self.mlp.forward(&self.post_attn_norm.forward(&x)?))?;
                x + m
            }
        }
    }
}
