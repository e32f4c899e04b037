//! Operations with a CUDA kernel of our own (kernels/verdict.cu, compiled to PTX by build.rs
//! with the `cuda` feature): token sampling on the device, RMSNorm in one pass, and the
//! gated MLP activation fused with its product.
//!
//! Sampling has a CPU implementation with the same meaning (sampler.rs), so both devices run
//! one code path. The two fused layer ops are used only for bf16 on CUDA; elsewhere the model
//! composes candle ops that round in the same order (see model/layers.rs).

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};

use crate::sampler::{sample, SamplingParams};

#[cfg(feature = "cuda")]
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/verdict.ptx"));
#[cfg(feature = "cuda")]
const MODULE: &str = "verdict";

fn contiguous<'a, T>(data: &'a [T], layout: &Layout, what: &str) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

/// One token per row of `logits` (`[rows, V]` f32), each row with its own uniform draw.
/// On CUDA only the chosen ids cross to the host.
pub fn sample_rows(logits: &Tensor, uniforms: &[f32], vocab: usize, params: SamplingParams) -> candle_core::Result<Vec<u32>> {
    let logits = logits.to_dtype(DType::F32)?.contiguous()?;
    let (rows, _) = logits.dims2()?;
    if uniforms.len() != rows {
        candle_core::bail!("{} uniform draws for {rows} rows", uniforms.len());
    }
    let u = Tensor::from_slice(uniforms, rows, logits.device())?;
    logits.apply_op2_no_bwd(&u, &Sample { vocab, params })?.to_vec1::<u32>()
}

struct Sample {
    vocab: usize,
    params: SamplingParams,
}

impl CustomOp2 for Sample {
    fn name(&self) -> &'static str {
        "verdict-sample"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), CpuStorage::F32(u)) = (s1, s2) else {
            candle_core::bail!("sampling takes f32 logits and f32 uniforms");
        };
        let (x, u) = (contiguous(x, l1, "logits")?, contiguous(u, l2, "uniforms")?);
        let (rows, cols) = l1.shape().dims2()?;
        let out: Vec<u32> =
            (0..rows).map(|r| sample(&x[r * cols..(r + 1) * cols], self.vocab, self.params, u[r]) as u32).collect();
        Ok((CpuStorage::U32(out), Shape::from(rows)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::WrapErr;
        let dev = s1.device();
        let (rows, cols) = l1.shape().dims2()?;
        let (a, b) = l1.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("logits must be contiguous".into()))?;
        let x = s1.as_cuda_slice::<f32>()?.slice(a..b);
        let (a, b) = l2.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("uniforms must be contiguous".into()))?;
        let u = s2.as_cuda_slice::<f32>()?.slice(a..b);
        // SAFETY: every element is written by the kernel (one per block).
        let out = unsafe { dev.alloc::<u32>(rows)? };
        let func = dev.get_or_load_custom_func("verdict_sample_f32", MODULE, PTX)?;
        let stride = cols as i64;
        let vocab = self.vocab.min(cols) as i32;
        let inv_t = if self.params.temperature > 0.0 { 1.0 / self.params.temperature } else { 0.0f32 };
        let top_p = self.params.top_p;
        let mut launch = func.builder();
        launch.arg(&x);
        launch.arg(&stride);
        launch.arg(&vocab);
        launch.arg(&u);
        launch.arg(&inv_t);
        launch.arg(&top_p);
        launch.arg(&out);
        let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (1024, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: argument types and order match verdict_sample_f32.
        unsafe { launch.launch(cfg) }.w()?;
        Ok((candle_core::CudaStorage::wrap_cuda_slice(out, dev.clone()), Shape::from(rows)))
    }
}

/// Whether the fused layer kernels apply to `x`: bf16 on a CUDA device, in a CUDA build.
pub fn fused(x: &Tensor) -> bool {
    cfg!(feature = "cuda") && x.device().is_cuda() && x.dtype() == DType::BF16
}

/// RMSNorm over the last dimension of bf16 `x` with an f32 weight, in one kernel; see
/// `verdict_rmsnorm_bf16` for the rounding order `cast_first` selects.
pub fn rms_norm_fused(x: &Tensor, weight: &Tensor, eps: f64, cast_first: bool) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op2_no_bwd(weight, &RmsNormOp { eps: eps as f32, cast_first })
}

/// `act(gate) * up` for the fused gate-up projection's output `[.., 2 * inter]`.
pub fn gated_act_fused(gate_up: &Tensor, gelu: bool) -> candle_core::Result<Tensor> {
    gate_up.contiguous()?.apply_op1_no_bwd(&GatedAct { gelu })
}

#[allow(dead_code)] // fields are read by the CUDA path only
struct RmsNormOp {
    eps: f32,
    cast_first: bool,
}

impl CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "verdict-rmsnorm"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("the fused RMSNorm is CUDA-only; the CPU composes candle ops")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::WrapErr;
        let dev = s1.device();
        let cols = l1.shape().dims().last().copied().unwrap_or(1);
        let el = l1.shape().elem_count();
        let (a, b) = l1.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("norm input must be contiguous".into()))?;
        let x = s1.as_cuda_slice::<half::bf16>()?.slice(a..b);
        let (a, b) = l2.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("norm weight must be contiguous".into()))?;
        let w = s2.as_cuda_slice::<f32>()?.slice(a..b);
        if b - a != cols {
            candle_core::bail!("norm weight has {} elements for rows of {cols}", b - a);
        }
        // SAFETY: the kernel writes every element.
        let out = unsafe { dev.alloc::<half::bf16>(el)? };
        let func = dev.get_or_load_custom_func("verdict_rmsnorm_bf16", MODULE, PTX)?;
        let (cols_i, eps, cast) = (cols as i32, self.eps, self.cast_first as i32);
        let mut launch = func.builder();
        launch.arg(&x);
        launch.arg(&w);
        launch.arg(&out);
        launch.arg(&cols_i);
        launch.arg(&eps);
        launch.arg(&cast);
        let threads = if cols <= 128 { 128 } else if cols <= 1024 { 256 } else { 512 };
        let cfg = LaunchConfig { grid_dim: ((el / cols) as u32, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: argument types and order match verdict_rmsnorm_bf16.
        unsafe { launch.launch(cfg) }.w()?;
        Ok((candle_core::CudaStorage::wrap_cuda_slice(out, dev.clone()), l1.shape().clone()))
    }
}

#[allow(dead_code)] // read by the CUDA path only
struct GatedAct {
    gelu: bool,
}

impl candle_core::CustomOp1 for GatedAct {
    fn name(&self) -> &'static str {
        "verdict-gated-act"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("the fused gated activation is CUDA-only; the CPU composes candle ops")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::WrapErr;
        let dev = s.device();
        let mut dims = l.shape().dims().to_vec();
        let two_i = dims.pop().unwrap_or(0);
        if two_i % 2 != 0 {
            candle_core::bail!("gate-up output has an odd last dimension {two_i}");
        }
        let inter = two_i / 2;
        dims.push(inter);
        let total = l.shape().elem_count() / 2;
        let (a, b) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("gate-up output must be contiguous".into()))?;
        let gu = s.as_cuda_slice::<half::bf16>()?.slice(a..b);
        // SAFETY: the kernel writes every element.
        let out = unsafe { dev.alloc::<half::bf16>(total)? };
        let func = dev.get_or_load_custom_func("verdict_gated_act_bf16", MODULE, PTX)?;
        let (inter_i, total_i, act) = (inter as i32, total as i64, self.gelu as i32);
        let mut launch = func.builder();
        launch.arg(&gu);
        launch.arg(&out);
        launch.arg(&inter_i);
        launch.arg(&total_i);
        launch.arg(&act);
        let blocks = total.div_ceil(256).clamp(1, 65_535) as u32;
        let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: argument types and order match verdict_gated_act_bf16.
        unsafe { launch.launch(cfg) }.w()?;
        Ok((candle_core::CudaStorage::wrap_cuda_slice(out, dev.clone()), Shape::from(dims)))
    }
}

/// The decode attention kernel for a head size: its name, and the most query heads per KV
/// head it takes (its accumulators live in registers, so both are bounded).
fn decode_kernel(head_dim: usize) -> Option<(&'static str, usize)> {
    match head_dim {
        // Key rows are read in 16-byte pieces.
        d if d % 8 != 0 => None,
        0..=32 => Some(("verdict_decode_attention_e1", 16)),
        33..=64 => Some(("verdict_decode_attention_e2", 16)),
        65..=128 => Some(("verdict_decode_attention_e4", 8)),
        129..=256 => Some(("verdict_decode_attention_e8", 4)),
        _ => None,
    }
}

/// Whether `decode_attention` handles this shape: bf16 on CUDA, a head_dim that is a
/// multiple of 8 and at most 256, and few enough query heads per KV head (16 up to head_dim 64, 8 up to 128, 4 up to
/// 256). Other shapes take the composed-ops path.
pub fn decode_attention_fits(q: &Tensor, g: usize, head_dim: usize) -> bool {
    fused(q) && *DECODE_KERNEL && decode_kernel(head_dim).is_some_and(|(_, max_g)| g <= max_g)
}

/// The one-kernel decode attention is opt-in (`VERDICT_DECODE_ATTENTION=kernel`): on the H200
/// it is slower than cuBLAS's products around `prefill_softmax` (14.4 against 9.5 ms per step
/// for the Qwen2.5-0.5B shape at batch 512, bench/RESULTS.md), so the default decode step
/// uses those. It stays as the starting point of a fixed-shape, graph-capturable step.
static DECODE_KERNEL: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var("VERDICT_DECODE_ATTENTION").is_ok_and(|v| v == "kernel"));

/// Attention of one new query per row over the cached keys and values, in one kernel.
/// `q` is `[b, kv, g, hd]`, `k` and `v` the cache views `[b, kv, L, hd]`, `pads` (u32 `[b]`)
/// each row's first real slot; with `window`, only the last `window` slots are seen.
/// Returns `[b, kv, g, hd]`.
pub fn decode_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    pads: &Tensor,
    scale: f64,
    softcap: Option<f64>,
    window: Option<usize>,
) -> candle_core::Result<Tensor> {
    let op = DecodeAttention {
        pads: pads.clone(),
        scale: scale as f32,
        softcap: softcap.unwrap_or(0.0) as f32,
        window: window.unwrap_or(0),
    };
    q.contiguous()?.apply_op3_no_bwd(k, v, &op)
}

#[allow(dead_code)] // read by the CUDA path only
struct DecodeAttention {
    pads: Tensor,
    scale: f32,
    softcap: f32,
    window: usize,
}

impl candle_core::CustomOp3 for DecodeAttention {
    fn name(&self) -> &'static str {
        "verdict-decode-attention"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("the decode attention kernel is CUDA-only; the CPU composes candle ops")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        sq: &candle_core::CudaStorage,
        lq: &Layout,
        sk: &candle_core::CudaStorage,
        lk: &Layout,
        sv: &candle_core::CudaStorage,
        lv: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::WrapErr;
        let dev = sq.device();
        let (b, kv, g, hd) = lq.shape().dims4()?;
        let (kb, kkv, l, khd) = lk.shape().dims4()?;
        if (kb, kkv, khd) != (b, kv, hd) || lv.shape() != lk.shape() {
            candle_core::bail!("decode attention: q {:?}, k {:?}, v {:?} do not fit", lq.shape(), lk.shape(), lv.shape());
        }
        let (ks, vs) = (lk.stride(), lv.stride());
        if ks[2] != hd || ks[3] != 1 || vs[2] != hd || vs[3] != 1 {
            candle_core::bail!("decode attention: cache rows must be contiguous");
        }
        let (a, e) = lq.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("q must be contiguous".into()))?;
        let q = sq.as_cuda_slice::<half::bf16>()?.slice(a..e);
        let k = sk.as_cuda_slice::<half::bf16>()?.slice(lk.start_offset()..);
        let v = sv.as_cuda_slice::<half::bf16>()?.slice(lv.start_offset()..);
        let (pads_storage, pads_layout) = self.pads.storage_and_layout();
        let candle_core::Storage::Cuda(pads_storage) = &*pads_storage else {
            candle_core::bail!("decode attention: pads must be on the GPU");
        };
        let pads = pads_storage.as_cuda_slice::<u32>()?.slice(pads_layout.start_offset()..);
        // SAFETY: the kernel writes every element.
        let out = unsafe { dev.alloc::<half::bf16>(b * kv * g * hd)? };
        let (name, _) = decode_kernel(hd).ok_or_else(|| candle_core::Error::Msg(format!("decode attention: head_dim {hd} unsupported")))?;
        let func = dev.get_or_load_custom_func(name, MODULE, PTX)?;
        let (kv_i, g_i, hd_i, l_i) = (kv as i32, g as i32, hd as i32, l as i32);
        let (k_sb, k_sh, v_sb, v_sh) = (ks[0] as i64, ks[1] as i64, vs[0] as i64, vs[1] as i64);
        let (scale, softcap, window) = (self.scale, self.softcap, self.window as i32);
        let mut launch = func.builder();
        launch.arg(&q);
        launch.arg(&k);
        launch.arg(&v);
        launch.arg(&pads);
        launch.arg(&out);
        launch.arg(&kv_i);
        launch.arg(&g_i);
        launch.arg(&hd_i);
        launch.arg(&l_i);
        launch.arg(&k_sb);
        launch.arg(&k_sh);
        launch.arg(&v_sb);
        launch.arg(&v_sh);
        launch.arg(&scale);
        launch.arg(&softcap);
        launch.arg(&window);
        let cfg = LaunchConfig { grid_dim: ((b * kv) as u32, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: argument types and order match the verdict_decode_attention_e* kernels.
        unsafe { launch.launch(cfg) }.w()?;
        Ok((candle_core::CudaStorage::wrap_cuda_slice(out, dev.clone()), lq.shape().clone()))
    }
}

/// Softmax of prefill attention scores `[b, kv, g * t, L]` (bf16, straight from Q·Kᵀ) into
/// bf16 probabilities: scale, Gemma's soft cap, the causal and padding mask (from `pads` and
/// `offset`, the cache slot of the first of the t queries) and the softmax in one kernel.
#[allow(clippy::too_many_arguments)]
pub fn prefill_softmax(
    scores: &Tensor,
    pads: &Tensor,
    t: usize,
    offset: usize,
    scale: f64,
    softcap: Option<f64>,
    window: Option<usize>,
) -> candle_core::Result<Tensor> {
    let op = PrefillSoftmax { pads: pads.clone(), t, offset, scale: scale as f32, softcap: softcap.unwrap_or(0.0) as f32, window: window.unwrap_or(0) };
    scores.contiguous()?.apply_op1_no_bwd(&op)
}

#[allow(dead_code)] // read by the CUDA path only
struct PrefillSoftmax {
    pads: Tensor,
    t: usize,
    offset: usize,
    scale: f32,
    softcap: f32,
    window: usize,
}

impl candle_core::CustomOp1 for PrefillSoftmax {
    fn name(&self) -> &'static str {
        "verdict-prefill-softmax"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("the prefill softmax kernel is CUDA-only; the CPU composes candle ops")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::WrapErr;
        let dev = s.device();
        let (b, kv, gt, len) = l.shape().dims4()?;
        let (a, e) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("scores must be contiguous".into()))?;
        let scores = s.as_cuda_slice::<half::bf16>()?.slice(a..e);
        let (pads_storage, pads_layout) = self.pads.storage_and_layout();
        let candle_core::Storage::Cuda(pads_storage) = &*pads_storage else {
            candle_core::bail!("prefill softmax: pads must be on the GPU");
        };
        let pads = pads_storage.as_cuda_slice::<u32>()?.slice(pads_layout.start_offset()..);
        // SAFETY: the kernel writes every element.
        let out = unsafe { dev.alloc::<half::bf16>(b * kv * gt * len)? };
        let func = dev.get_or_load_custom_func("verdict_prefill_softmax_bf16", MODULE, PTX)?;
        let (kv_i, gt_i, t_i, l_i, off_i) = (kv as i32, gt as i32, self.t as i32, len as i32, self.offset as i32);
        let (scale, softcap, window) = (self.scale, self.softcap, self.window as i32);
        let mut launch = func.builder();
        launch.arg(&scores);
        launch.arg(&out);
        launch.arg(&pads);
        launch.arg(&kv_i);
        launch.arg(&gt_i);
        launch.arg(&t_i);
        launch.arg(&l_i);
        launch.arg(&off_i);
        launch.arg(&scale);
        launch.arg(&softcap);
        launch.arg(&window);
        let cfg = LaunchConfig { grid_dim: ((b * kv * gt) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: argument types and order match verdict_prefill_softmax_bf16.
        unsafe { launch.launch(cfg) }.w()?;
        Ok((candle_core::CudaStorage::wrap_cuda_slice(out, dev.clone()), l.shape().clone()))
    }
}
