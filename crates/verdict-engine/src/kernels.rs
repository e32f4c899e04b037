//! Operations with a CUDA kernel of our own (kernels/verdict.cu, compiled to PTX by build.rs
//! with the `cuda` feature): token sampling on the device, RMSNorm in one pass, the gated
//! MLP activation fused with its product, and prefill attention's masked softmax. Decode
//! attention's kernels are driven from crate::segmented.
//!
//! Sampling has a CPU implementation with the same meaning (sampler.rs), so both devices run
//! one code path. The two fused layer ops are used only for bf16 on CUDA; elsewhere the model
//! composes candle ops that round in the same order (see model/layers.rs).

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};

use crate::sampler::{sample, SamplingParams};

/// What every launch repeats: the module's PTX, contiguous views of inputs, the launch
/// shape, wrapping the output.
#[cfg(feature = "cuda")]
pub(crate) mod cuda {
    use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, DeviceRepr, LaunchConfig};
    use candle_core::cuda_backend::CudaDType;
    use candle_core::{CudaDevice, CudaStorage, Layout, Shape, Storage, Tensor};

    pub const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/verdict.ptx"));
    pub const MODULE: &str = "verdict";

    /// The contiguous part of a tensor's storage, from a held `storage_and_layout()` guard
    /// (a tensor an op holds besides its inputs).
    pub fn held<'a, T: CudaDType>(s: &'a Storage, l: &Layout, what: &str) -> candle_core::Result<CudaView<'a, T>> {
        match s {
            Storage::Cuda(c) => view(c, l, what),
            _ => candle_core::bail!("{what} must be on the GPU"),
        }
    }

    /// The contiguous part of `s` that `l` describes.
    pub fn view<'a, T: CudaDType>(s: &'a CudaStorage, l: &Layout, what: &str) -> candle_core::Result<CudaView<'a, T>> {
        let (a, b) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg(format!("{what} must be contiguous")))?;
        Ok(s.as_cuda_slice::<T>()?.slice(a..b))
    }

    /// Run `f` on the u32 device view of `pads` (a per-row padding tensor held by an op).
    pub fn with_pads<R>(pads: &Tensor, f: impl FnOnce(&CudaView<'_, u32>) -> candle_core::Result<R>) -> candle_core::Result<R> {
        let (storage, layout) = pads.storage_and_layout();
        f(&held::<u32>(&storage, layout, "the padding tensor")?)
    }

    /// Copy `data` into the start of `t`'s device buffer, in place (on its stream, in order
    /// with the work queued there): how a captured graph's inputs change between replays.
    pub fn overwrite<T: CudaDType + DeviceRepr>(t: &Tensor, data: &[T]) -> candle_core::Result<()> {
        use candle_core::backend::BackendStorage;
        use candle_core::cuda_backend::cudarc::driver::{result, DevicePtr};
        use candle_core::cuda_backend::WrapErr;
        if data.is_empty() {
            return Ok(());
        }
        let (storage, layout) = t.storage_and_layout();
        let Storage::Cuda(c) = &*storage else { candle_core::bail!("overwrite: the tensor is not on the GPU") };
        let slice = c.as_cuda_slice::<T>()?;
        if layout.start_offset() + data.len() > slice.len() {
            candle_core::bail!("overwrite: {} elements into a buffer of {}", data.len(), slice.len() - layout.start_offset());
        }
        let stream = c.device().cuda_stream();
        let (ptr, _sync) = slice.device_ptr(&stream);
        let at = ptr + (layout.start_offset() * std::mem::size_of::<T>()) as u64;
        // SAFETY: the destination lies inside the tensor's buffer (checked above); a copy from
        // pageable host memory is staged before the call returns, so `data` may go after it.
        unsafe { result::memcpy_htod_async(at, data, stream.cu_stream()) }.w()
    }

    pub fn grid(blocks: usize, threads: u32) -> LaunchConfig {
        LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
    }

    pub fn done<T: DeviceRepr + CudaDType>(out: CudaSlice<T>, dev: &CudaDevice, shape: Shape) -> (CudaStorage, Shape) {
        (CudaStorage::wrap_cuda_slice(out, dev.clone()), shape)
    }
}

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
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
        use candle_core::cuda_backend::WrapErr;
        use cuda::{done, grid, view};
        let dev = s1.device();
        let (rows, cols) = l1.shape().dims2()?;
        let (x, u) = (view::<f32>(s1, l1, "logits")?, view::<f32>(s2, l2, "uniforms")?);
        // SAFETY: every element is written by the kernel (one per block).
        let out = unsafe { dev.alloc::<u32>(rows)? };
        let func = dev.get_or_load_custom_func("verdict_sample_f32", cuda::MODULE, cuda::PTX)?;
        let (stride, vocab) = (cols as i64, self.vocab.min(cols) as i32);
        let inv_t = if self.params.temperature > 0.0 { 1.0 / self.params.temperature } else { 0.0f32 };
        let mut b = func.builder();
        b.arg(&x).arg(&stride).arg(&vocab).arg(&u).arg(&inv_t).arg(&self.params.top_p).arg(&out);
        // SAFETY: argument types and order match verdict_sample_f32.
        unsafe { b.launch(grid(rows, 1024)) }.w()?;
        Ok(done(out, dev, Shape::from(rows)))
    }
}

/// Whether attention builds its masks itself from the rows' paddings (the fused path), so
/// a step's mask tensors are never read.
pub fn masks_in_kernels(device: &candle_core::Device, dtype: DType) -> bool {
    cfg!(feature = "cuda") && device.is_cuda() && dtype == DType::BF16
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
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
        use candle_core::cuda_backend::WrapErr;
        use cuda::{done, grid, view};
        let dev = s1.device();
        let cols = l1.shape().dims().last().copied().unwrap_or(1);
        let el = l1.shape().elem_count();
        let (x, w) = (view::<half::bf16>(s1, l1, "the norm input")?, view::<f32>(s2, l2, "the norm weight")?);
        if w.len() != cols {
            candle_core::bail!("norm weight has {} elements for rows of {cols}", w.len());
        }
        // SAFETY: the kernel writes every element.
        let out = unsafe { dev.alloc::<half::bf16>(el)? };
        let func = dev.get_or_load_custom_func("verdict_rmsnorm_bf16", cuda::MODULE, cuda::PTX)?;
        let (cols_i, cast) = (cols as i32, self.cast_first as i32);
        let mut b = func.builder();
        b.arg(&x).arg(&w).arg(&out).arg(&cols_i).arg(&self.eps).arg(&cast);
        let threads = if cols <= 128 { 128 } else if cols <= 1024 { 256 } else { 512 };
        // SAFETY: argument types and order match verdict_rmsnorm_bf16.
        unsafe { b.launch(grid(el / cols, threads)) }.w()?;
        Ok(done(out, dev, l1.shape().clone()))
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
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
        use candle_core::cuda_backend::WrapErr;
        use cuda::{done, grid, view};
        let dev = s.device();
        let mut dims = l.shape().dims().to_vec();
        let two_i = dims.pop().unwrap_or(0);
        if two_i % 2 != 0 {
            candle_core::bail!("gate-up output has an odd last dimension {two_i}");
        }
        dims.push(two_i / 2);
        let total = l.shape().elem_count() / 2;
        let gu = view::<half::bf16>(s, l, "the gate-up output")?;
        // SAFETY: the kernel writes every element.
        let out = unsafe { dev.alloc::<half::bf16>(total)? };
        let func = dev.get_or_load_custom_func("verdict_gated_act_bf16", cuda::MODULE, cuda::PTX)?;
        let (inter, total_i, act) = ((two_i / 2) as i32, total as i64, self.gelu as i32);
        let mut b = func.builder();
        b.arg(&gu).arg(&out).arg(&inter).arg(&total_i).arg(&act);
        // SAFETY: argument types and order match verdict_gated_act_bf16.
        unsafe { b.launch(grid(total.div_ceil(256).clamp(1, 65_535), 256)) }.w()?;
        Ok(done(out, dev, Shape::from(dims)))
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
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
        use candle_core::cuda_backend::WrapErr;
        use cuda::{done, grid, view, with_pads};
        let dev = s.device();
        let (b, kv, gt, len) = l.shape().dims4()?;
        let scores = view::<half::bf16>(s, l, "the scores")?;
        // SAFETY: the kernel writes every element.
        let out = unsafe { dev.alloc::<half::bf16>(b * kv * gt * len)? };
        let func = dev.get_or_load_custom_func("verdict_prefill_softmax_bf16", cuda::MODULE, cuda::PTX)?;
        let dims = [kv as i32, gt as i32, self.t as i32, len as i32, self.offset as i32];
        let window = self.window as i32;
        with_pads(&self.pads, |pads| {
            let mut f = func.builder();
            f.arg(&scores).arg(&out).arg(pads);
            for d in &dims {
                f.arg(d);
            }
            f.arg(&self.scale).arg(&self.softcap).arg(&window);
            // SAFETY: argument types and order match verdict_prefill_softmax_bf16.
            unsafe { f.launch(grid(b * kv * gt, 256)) }.w()?;
            Ok(())
        })?;
        Ok(done(out, dev, l.shape().clone()))
    }
}

/// What a decode step's fused attention inputs need besides the q/k/v projection's output
/// (see `verdict_qkv_rope_write_bf16`): the projection's bias (bf16), Qwen3's q and k norm
/// weights (f32, normalized rows rounded to bf16 before the weight, as Llama and Qwen round)
/// and their epsilon, the step's rotary tables (`[b, 1, d/2]`), the rows' own caches
/// (`[rows, kv, cap, d]`, written in place) and the slot to write (u32 `[1, 1, 1, 1]`).
pub struct QkvRopeWrite<'a> {
    pub bias: Option<&'a Tensor>,
    pub q_norm: Option<&'a Tensor>,
    pub k_norm: Option<&'a Tensor>,
    pub eps: f32,
    pub cos: &'a Tensor,
    pub sin: &'a Tensor,
    pub own_k: &'a Tensor,
    pub own_v: &'a Tensor,
    pub slot: &'a Tensor,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// From the q/k/v projection `qkv` (`[b, (heads + 2 kv) * d]` bf16, no bias yet): the step's
/// queries, `[b, heads * d]`, rotated; keys and values go to the own caches at the slot.
pub fn qkv_rope_write(qkv: &Tensor, op: &QkvRopeWrite<'_>) -> candle_core::Result<Tensor> {
    qkv.contiguous()?.apply_op1_no_bwd(op)
}

impl candle_core::CustomOp1 for QkvRopeWrite<'_> {
    fn name(&self) -> &'static str {
        "verdict-qkv-rope-write"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("the fused q/k/v kernel is CUDA-only; the CPU composes candle ops")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::WrapErr;
        use cuda::{done, held, view};
        let dev = s.device();
        let (h, kv, d) = (self.heads, self.kv_heads, self.head_dim);
        let (b, width) = l.shape().dims2()?;
        let (rows, own_kv, cap, own_d) = self.own_k.dims4()?;
        if width != (h + 2 * kv) * d || (own_kv, own_d) != (kv, d) || rows < b || d % 2 != 0 {
            candle_core::bail!("fused q/k/v: [{b}, {width}] for {h} heads, {kv} KV heads of {d}, own cache {:?}", self.own_k.shape());
        }
        if self.cos.dims().iter().product::<usize>() != b * d / 2 {
            candle_core::bail!("fused q/k/v: rotary tables {:?} for {b} rows of {d}", self.cos.shape());
        }
        let qkv = view::<half::bf16>(s, l, "the q/k/v projection")?;
        let guards: Vec<_> = [self.cos, self.sin, self.own_k, self.own_v, self.slot].iter().map(|t| t.storage_and_layout()).collect();
        let cos = held::<half::bf16>(&guards[0].0, guards[0].1, "the rotary cos")?;
        let sin = held::<half::bf16>(&guards[1].0, guards[1].1, "the rotary sin")?;
        let own_k = held::<half::bf16>(&guards[2].0, guards[2].1, "the own keys")?;
        let own_v = held::<half::bf16>(&guards[3].0, guards[3].1, "the own values")?;
        let slot = held::<u32>(&guards[4].0, guards[4].1, "the write slot")?;
        let optional: Vec<_> = [self.bias, self.q_norm, self.k_norm].iter().map(|t| t.map(|t| t.storage_and_layout())).collect();
        let bias = optional[0].as_ref().map(|(s, l)| held::<half::bf16>(s, l, "the q/k/v bias")).transpose()?;
        let q_norm = optional[1].as_ref().map(|(s, l)| held::<f32>(s, l, "the q norm")).transpose()?;
        let k_norm = optional[2].as_ref().map(|(s, l)| held::<f32>(s, l, "the k norm")).transpose()?;
        // SAFETY: the kernel writes every element (every (row, q head) block, all d).
        let q = unsafe { dev.alloc::<half::bf16>(b * h * d)? };
        let func = dev.get_or_load_custom_func("verdict_qkv_rope_write_bf16", cuda::MODULE, cuda::PTX)?;
        let null: u64 = 0;
        let (h_i, kv_i, d_i, cap_i) = (h as i32, kv as i32, d as i32, cap as i32);
        let mut f = func.builder();
        f.arg(&qkv);
        match &bias {
            Some(x) => f.arg(x),
            None => f.arg(&null),
        };
        match &q_norm {
            Some(x) => f.arg(x),
            None => f.arg(&null),
        };
        match &k_norm {
            Some(x) => f.arg(x),
            None => f.arg(&null),
        };
        f.arg(&self.eps).arg(&cos).arg(&sin).arg(&q).arg(&own_k).arg(&own_v).arg(&slot).arg(&h_i).arg(&kv_i).arg(&d_i).arg(&cap_i);
        let threads = (d / 2).next_multiple_of(32) as u32;
        let cfg = LaunchConfig { grid_dim: (b as u32, (h + 2 * kv) as u32, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: argument types and order match verdict_qkv_rope_write_bf16; the own caches
        // hold `rows` ≥ b rows of `cap` slots, and the slot is below cap (the runner's frontier).
        unsafe { f.launch(cfg) }.w()?;
        Ok(done(q, dev, Shape::from((b, h * d))))
    }
}
