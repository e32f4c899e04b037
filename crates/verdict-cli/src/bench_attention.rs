//! `verdict model bench-attention`: one decode step's attention at a labeling shape, the way
//! the engine runs it today (every row holds its own copy of its prompt's keys and values;
//! cuBLAS products around our masked softmax) against segmented attention (each prompt's
//! keys held once and read once for the rows that continue it; segmented.rs). Random data,
//! no model: the figure bench/gpu/ records for the attention kernels alone.

use std::time::Instant;

use anyhow::Context;
use clap::Args;
use candle_core::{DType, Device, Tensor};
use serde_json::json;
use verdict_engine::segmented::{self, Plan, Scoring, Segment};

#[derive(Args)]
pub struct BenchAttentionArgs {
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cuda")]
    device: String,
    /// Rows (samples decoded together), comma-separated sizes.
    #[arg(long, default_value = "8,128,1024")]
    rows: String,
    /// KV heads, query heads per KV head and head size (7B shape: 4, 7, 128; 0.5B: 2, 7, 64).
    #[arg(long, default_value_t = 4)]
    kv: usize,
    #[arg(long, default_value_t = 7)]
    g: usize,
    #[arg(long, default_value_t = 128)]
    head_dim: usize,
    /// Prompt tokens per row, and tokens each row has generated.
    #[arg(long, default_value_t = 1800)]
    prompt: usize,
    #[arg(long, default_value_t = 200)]
    own: usize,
    /// Rows that continue each prompt (k = 8 over two response orders: 4).
    #[arg(long, default_value_t = 4)]
    share: usize,
    /// Fewest keys per unit of segmented attention (splits long prompts over the GPU; units
    /// are longer where the rows alone fill it, as in the engine).
    #[arg(long, default_value_t = 256)]
    split: usize,
    /// Timed repetitions per measurement.
    #[arg(long, default_value_t = 20)]
    iters: usize,
}

fn timed(device: &Device, iters: usize, mut f: impl FnMut() -> candle_core::Result<Tensor>) -> anyhow::Result<(f64, Tensor)> {
    let mut out = f()?;
    device.synchronize()?;
    let start = Instant::now();
    for _ in 0..iters {
        out = f()?;
    }
    device.synchronize()?;
    Ok((start.elapsed().as_secs_f64() * 1e3 / iters as f64, out))
}

pub fn run(args: &BenchAttentionArgs) -> anyhow::Result<()> {
    let (device, dtype) = verdict_engine::device::pick(&args.device)?;
    let (kv, g, d) = (args.kv, args.g, args.head_dim);
    let max_q = segmented::max_queries(d).filter(|&m| g <= m).with_context(|| format!("no segmented kernel for head_dim {d} with {g} query heads per KV head"))?;
    let scoring = Scoring { scale: 1.0 / (d as f32).sqrt(), softcap: 0.0, window: 0 };
    let bytes = dtype.size_in_bytes();
    for rows in args.rows.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let rows: usize = rows.parse().with_context(|| format!("--rows: {rows:?} is not a number"))?;
        let prompts = rows.div_ceil(args.share.max(1));
        let (p, own, l) = (args.prompt, args.own, args.prompt + args.own);
        let rnd = |shape: &[usize]| Tensor::randn(0f32, 1.0, shape, &device).and_then(|t| t.to_dtype(dtype));
        let q = rnd(&[rows, kv, g, d])?;
        let pool = (rnd(&[prompts * p, kv, d])?, rnd(&[prompts * p, kv, d])?);
        let own_kv = (rnd(&[rows, kv, own, d])?, rnd(&[rows, kv, own, d])?);
        // The engine's layout today: every row its prompt's copy, then its own tokens.
        let dense = |pool: &Tensor, own: &Tensor| -> candle_core::Result<Tensor> {
            let per_row: Vec<Tensor> = (0..rows)
                .map(|r| {
                    let prompt = pool.narrow(0, (r / args.share) * p, p)?.transpose(0, 1)?;
                    Tensor::cat(&[prompt, own.get(r)?], 1)
                })
                .collect::<candle_core::Result<_>>()?;
            Tensor::stack(&per_row, 0)?.contiguous()
        };
        let (dk, dv) = (dense(&pool.0, &own_kv.0)?, dense(&pool.1, &own_kv.1)?);
        let pads = Tensor::zeros(rows, DType::U32, &device)?;
        let qd = q.reshape((rows, kv, g, d))?;
        let (dense_ms, dense_out) = timed(&device, args.iters, || {
            let scores = qd.matmul(&dk.t()?)?;
            let probs = if verdict_engine::kernels::fused(&scores) {
                verdict_engine::kernels::prefill_softmax(&scores, &pads, 1, l - 1, scoring.scale as f64, None, None)?
            } else {
                candle_nn::ops::softmax_last_dim(&(scores * scoring.scale as f64)?)?
            };
            probs.matmul(&dv)
        })?;
        let mut groups: Vec<(Segment, Vec<usize>)> = (0..prompts)
            .map(|i| (Segment::pool(i * p, p, 0, kv, d), (i * args.share..((i + 1) * args.share).min(rows)).collect()))
            .collect();
        groups.extend((0..rows).map(|r| (Segment::own(r, 0, own, p, kv, own, d), vec![r])));
        let positions = vec![l - 1; rows];
        let plan_start = Instant::now();
        let split = Plan::split_for(&groups, kv, g, max_q, args.split, 1_024);
        let plan = Plan::new(&groups, &positions, kv, g, max_q, split);
        let dplan = plan.upload(&device)?;
        let plan_ms = plan_start.elapsed().as_secs_f64() * 1e3;
        let (seg_ms, seg_out) = timed(&device, args.iters, || segmented::attend(&q, (&pool.0, &pool.1), (&own_kv.0, &own_kv.1), &dplan, scoring))?;
        let diff = (seg_out.to_dtype(DType::F32)? - dense_out.to_dtype(DType::F32)?)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        let kv_bytes = |tokens: usize| (2 * tokens * kv * d * bytes) as f64;
        let dense_bytes = kv_bytes(rows * l);
        let seg_bytes = kv_bytes(prompts * p + rows * own);
        crate::say::out(json!({
            "rows": rows, "kv": kv, "g": g, "head_dim": d, "prompt": p, "own": own, "share": args.share, "split": split,
            "units": plan.units(), "plan_ms": plan_ms,
            "dense_ms": dense_ms, "segmented_ms": seg_ms, "speedup": dense_ms / seg_ms,
            "dense_gb_per_s": dense_bytes / dense_ms / 1e6, "segmented_gb_per_s": seg_bytes / seg_ms / 1e6,
            "kv_bytes_dense": dense_bytes, "kv_bytes_segmented": seg_bytes,
            "max_abs_difference": diff,
        }))?;
    }
    Ok(())
}
