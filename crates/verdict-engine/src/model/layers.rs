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
    pub mask: &'a Tensor,
    pub offset: usize,
}
use crate::config::{Activation, ModelConfig};

/// RMSNorm computed in f32. Gemma scales by (1 + w) instead of w.
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(cfg: &ModelConfig, vb: VarBuilder, size: usize) -> candle_core::Result<Self> {
        let w = vb.get(size, "weight")?;
        let weight = if cfg.gemma.is_some() { (w.to_dtype(DType::F32)? + 1.0)? } else { w.to_dtype(DType::F32)? };
        Ok(Self { weight, eps: cfg.rms_norm_eps })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dtype = x.dtype();
        let xf = x.to_dtype(DType::F32)?;
        let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = xf.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        // transformers casts back before the weight for Llama/Qwen and after it for Gemma;
        // in f32 the two agree, in bf16 the difference is within bf16 rounding.
        normed.broadcast_mul(&self.weight)?.to_dtype(dtype)
    }
}

fn linear(cfg_bias: bool, i: usize, o: usize, vb: VarBuilder) -> candle_core::Result<Linear> {
    if cfg_bias {
        candle_nn::linear(i, o, vb)
    } else {
        candle_nn::linear_no_bias(i, o, vb)
    }
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    scale: f64,
    softcap: Option<f64>,
}

impl Attention {
    fn new(cfg: &ModelConfig, vb: VarBuilder) -> candle_core::Result<Self> {
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
            q: linear(cfg.qkv_bias, h, q_out, vb.pp("q_proj"))?,
            k: linear(cfg.qkv_bias, h, kv_out, vb.pp("k_proj"))?,
            v: linear(cfg.qkv_bias, h, kv_out, vb.pp("v_proj"))?,
            o: linear(cfg.o_bias, q_out, h, vb.pp("o_proj"))?,
            q_norm,
            k_norm,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim: hd,
            scale,
            softcap: cfg.gemma.as_ref().and_then(|g| g.attn_logit_softcapping),
        })
    }

    fn forward(&self, x: &Tensor, input: &LayerInput<'_>, cache: &mut KvCache, layer: usize) -> candle_core::Result<Tensor> {
        let LayerInput { cos, sin, mask, offset } = *input;
        let (b, t, _) = x.dims3()?;
        let hd = self.head_dim;
        let split = |y: Tensor, heads: usize, norm: &Option<RmsNorm>| -> candle_core::Result<Tensor> {
            let y = y.reshape((b, t, heads, hd))?;
            let y = match norm {
                Some(n) => n.forward(&y)?,
                None => y,
            };
            y.transpose(1, 2)?.contiguous()
        };
        let q = split(self.q.forward(x)?, self.heads, &self.q_norm)?;
        let k = split(self.k.forward(x)?, self.kv_heads, &self.k_norm)?;
        let v = split(self.v.forward(x)?, self.kv_heads, &None)?;
        let q = candle_nn::rotary_emb::rope(&q, cos, sin)?;
        let k = candle_nn::rotary_emb::rope(&k, cos, sin)?;
        let (k_all, v_all) = cache.write(layer, offset, &k, &v)?;
        let l = k_all.dim(2)?;

        // Grouped-query attention without copying K/V per query head: fold each KV head's
        // query group into the row dimension, [b, kv, g*t, hd] x [b, kv, hd, L].
        let g = self.heads / self.kv_heads;
        let q = (q.reshape((b, self.kv_heads, g * t, hd))? * self.scale)?;
        let mut scores = q.matmul(&k_all.t()?)?.to_dtype(DType::F32)?;
        if let Some(cap) = self.softcap {
            scores = ((scores / cap)?.tanh()? * cap)?;
        }
        let scores = scores
            .reshape((b, self.kv_heads, g, t, l))?
            .broadcast_add(&mask.to_dtype(DType::F32)?.unsqueeze(2)?)?
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

struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
    act: Activation,
}

impl Mlp {
    fn new(cfg: &ModelConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate: linear(cfg.mlp_bias, h, i, vb.pp("gate_proj"))?,
            up: linear(cfg.mlp_bias, h, i, vb.pp("up_proj"))?,
            down: linear(cfg.mlp_bias, i, h, vb.pp("down_proj"))?,
            act: cfg.activation,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let gate = self.gate.forward(x)?;
        let gate = match self.act {
            Activation::Silu => candle_nn::ops::silu(&gate)?,
            Activation::GeluTanh => gate.gelu()?,
        };
        self.down.forward(&(gate * self.up.forward(x)?)?)
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
        Ok(Self {
            attn: Attention::new(cfg, vb.pp("self_attn"))?,
            mlp: Mlp::new(cfg, vb.pp("mlp"))?,
            input_norm: RmsNorm::new(cfg, vb.pp("input_layernorm"), h)?,
            post_attn_norm: RmsNorm::new(cfg, vb.pp("post_attention_layernorm"), h)?,
            ffn_norms,
            sliding: cfg.gemma.as_ref().map(|g| g.sliding_layers[index]).unwrap_or(false),
        })
    }

    pub fn forward(&self, x: &Tensor, input: &LayerInput<'_>, cache: &mut KvCache, layer: usize) -> candle_core::Result<Tensor> {
        let a = self.attn.forward(&self.input_norm.forward(x)?, input, cache, layer)?;
        match &self.ffn_norms {
            // Gemma 2: sandwich norms; the "post attention" norm is applied to the attention
            // output before the residual add.
            Some((pre, post)) => {
                let x = (x + self.post_attn_norm.forward(&a)?)?;
                let m = post.forward(&self.mlp.forward(&pre.forward(&x)?)?)?;
                x + m
            }
            None => {
                let x = (x + a)?;
                let m = self.mlp.forward(&self.post_attn_norm.forward(&x)?)?;
                x + m
            }
        }
    }
}
