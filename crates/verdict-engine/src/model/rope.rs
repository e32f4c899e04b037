//! Rotary position tables, computed in f32 the way transformers computes them (so f32
//! logits agree to rounding), with Llama 3's frequency scaling.

use candle_core::{DType, Device, Tensor};

use crate::config::ModelConfig;

pub struct RopeTables {
    cos: Tensor,
    sin: Tensor,
    half: usize,
}

fn inv_freq(cfg: &ModelConfig) -> Vec<f32> {
    let dim = cfg.head_dim;
    let base = cfg.rope_theta as f32;
    let mut f: Vec<f32> = (0..dim).step_by(2).map(|i| 1.0 / base.powf(i as f32 / dim as f32)).collect();
    if let Some(s) = cfg.rope_scaling {
        let old = s.original_max_position_embeddings as f32;
        let (factor, lo, hi) = (s.factor as f32, s.low_freq_factor as f32, s.high_freq_factor as f32);
        let low_wavelen = old / lo;
        let high_wavelen = old / hi;
        for x in f.iter_mut() {
            let wavelen = 2.0 * std::f32::consts::PI / *x;
            let scaled = if wavelen > low_wavelen { *x / factor } else { *x };
            let smooth = (old / wavelen - lo) / (hi - lo);
            // Written as transformers writes it (`~(wavelen < high) * ~(wavelen > low)`).
            #[allow(clippy::neg_cmp_op_on_partial_ord)]
            let medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
            *x = if medium { (1.0 - smooth) * scaled / factor + smooth * scaled } else { scaled };
        }
    }
    f
}

impl RopeTables {
    pub fn new(cfg: &ModelConfig, dtype: DType, device: &Device) -> candle_core::Result<Self> {
        let inv = inv_freq(cfg);
        let half = inv.len();
        let n = cfg.max_position_embeddings;
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        for p in 0..n {
            for &f in &inv {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (n, half), device)?.to_dtype(dtype)?,
            sin: Tensor::from_vec(sin, (n, half), device)?.to_dtype(dtype)?,
            half,
        })
    }

    /// cos and sin `[b, t, head_dim/2]` for positions `[b, t]`.
    pub fn gather(&self, positions: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let (b, t) = positions.dims2()?;
        let flat = positions.flatten_all()?;
        let cos = self.cos.index_select(&flat, 0)?.reshape((b, t, self.half))?;
        let sin = self.sin.index_select(&flat, 0)?.reshape((b, t, self.half))?;
        Ok((cos, sin))
    }
}
