//! Segmented decode attention against a plain per-row softmax, on the CPU: units that split
//! segments over keys and over rows, shared prompt segments, sliding windows and soft caps;
//! and a row's output exactly the same however many rows share its units.

mod common;

use candle_core::{DType, Device, Tensor};
use verdict_engine::folder::ModelFolder;
use verdict_engine::model::{Decoder, KvCache, PromptPool, Segments, Step};
use verdict_engine::segmented::{attend, dense_reference, Plan, PlanSize, Scoring, Segment};

struct Case {
    kv: usize,
    g: usize,
    d: usize,
    /// Prompt lengths; row r continues prompt `rows[r].0` with `rows[r].1` own tokens.
    prompts: Vec<usize>,
    rows: Vec<(usize, usize)>,
    own_cap: usize,
}

struct Built {
    q: Tensor,
    pool: (Tensor, Tensor),
    own: (Tensor, Tensor),
    starts: Vec<usize>,
}

fn build(c: &Case, seed: u64) -> Built {
    let dev = Device::Cpu;
    let slots: usize = c.prompts.iter().sum();
    let mut starts = Vec::new();
    let mut at = 0;
    for &p in &c.prompts {
        starts.push(at);
        at += p;
    }
    let rnd = |n: usize, s: u64| -> Tensor {
        // A small deterministic generator: the same data for every run.
        let mut x = s.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 2001) as f32 / 1000.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, n, &dev).unwrap()
    };
    let r = c.rows.len();
    Built {
        q: rnd(r * c.kv * c.g * c.d, seed).reshape((r, c.kv, c.g, c.d)).unwrap(),
        pool: (rnd(slots * c.kv * c.d, seed + 1).reshape((slots, c.kv, c.d)).unwrap(), rnd(slots * c.kv * c.d, seed + 2).reshape((slots, c.kv, c.d)).unwrap()),
        own: (
            rnd(r * c.kv * c.own_cap * c.d, seed + 3).reshape((r, c.kv, c.own_cap, c.d)).unwrap(),
            rnd(r * c.kv * c.own_cap * c.d, seed + 4).reshape((r, c.kv, c.own_cap, c.d)).unwrap(),
        ),
        starts,
    }
}

/// Groups: each prompt with the rows that continue it, then each row's own segment.
fn groups(c: &Case, starts: &[usize], rows: &[usize]) -> (Vec<(Segment, Vec<usize>)>, Vec<usize>) {
    let mut g = Vec::new();
    for (p, &len) in c.prompts.iter().enumerate() {
        let readers: Vec<usize> = rows.iter().copied().filter(|&r| c.rows[r].0 == p).collect();
        if !readers.is_empty() {
            g.push((Segment::pool(starts[p], len, 0, c.kv, c.d), readers));
        }
    }
    for &r in rows {
        let (p, own) = c.rows[r];
        g.push((Segment::own(r, 0, own, c.prompts[p], c.kv, c.own_cap, c.d), vec![r]));
    }
    let pos = (0..c.rows.len()).map(|r| c.prompts[c.rows[r].0] + c.rows[r].1 - 1).collect();
    (g, pos)
}

fn dense(c: &Case, b: &Built, scoring: Scoring, pos: &[usize]) -> Tensor {
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    for (r, &(p, own)) in c.rows.iter().enumerate() {
        let pk = b.pool.0.narrow(0, b.starts[p], c.prompts[p]).unwrap().transpose(0, 1).unwrap();
        let pv = b.pool.1.narrow(0, b.starts[p], c.prompts[p]).unwrap().transpose(0, 1).unwrap();
        let ok = b.own.0.get(r).unwrap().narrow(1, 0, own).unwrap();
        let ov = b.own.1.get(r).unwrap().narrow(1, 0, own).unwrap();
        keys.push(Tensor::cat(&[pk.contiguous().unwrap(), ok.contiguous().unwrap()], 1).unwrap());
        values.push(Tensor::cat(&[pv.contiguous().unwrap(), ov.contiguous().unwrap()], 1).unwrap());
    }
    dense_reference(&b.q, &keys, &values, pos, scoring).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn case() -> Case {
    // Three prompts; rows 0–3 share prompt 0, rows 4–5 prompt 1, row 6 prompt 2.
    Case { kv: 2, g: 3, d: 8, prompts: vec![37, 20, 5], rows: vec![(0, 3), (0, 9), (0, 1), (0, 14), (1, 2), (1, 16), (2, 7)], own_cap: 16 }
}

#[test]
fn segments_equal_one_softmax_over_each_rows_keys() {
    let c = case();
    let b = build(&c, 1);
    let all: Vec<usize> = (0..c.rows.len()).collect();
    let (groups, pos) = groups(&c, &b.starts, &all);
    for scoring in [
        Scoring { scale: 0.35, softcap: 0.0, window: 0 },
        Scoring { scale: 0.35, softcap: 2.0, window: 0 },
        Scoring { scale: 0.35, softcap: 0.0, window: 12 },
    ] {
        let want = dense(&c, &b, scoring, &pos);
        // Units of every shape: whole segments, splits of 5 keys, one row per unit.
        for (max_queries, split) in [(64, 1024), (6, 5), (3, 7)] {
            let plan = Plan::new(&groups, &pos, c.kv, c.g, max_queries, split);
            let got = attend(&b.q, (&b.pool.0, &b.pool.1), (&b.own.0, &b.own.1), &plan.upload(&Device::Cpu).unwrap(), scoring).unwrap();
            let diff = max_diff(&got, &want);
            assert!(diff < 1e-5, "{scoring:?}, {max_queries} queries and {split} keys a unit: off by {diff}");
            // Padded to a CUDA graph's fixed tables (empty units, unread parts and slots),
            // the same work gives the same numbers.
            let padded = plan.padded(plan.size().room(64, PlanSize::default())).unwrap();
            assert!(padded.units() >= 64 && padded.units() > plan.units());
            let again = attend(&b.q, (&b.pool.0, &b.pool.1), (&b.own.0, &b.own.1), &padded.upload(&Device::Cpu).unwrap(), scoring).unwrap();
            assert_eq!(max_diff(&again, &got), 0.0, "{scoring:?}: padding the plan changed the output");
            assert!(plan.padded(PlanSize { units: plan.units() - 1, ..plan.size() }).is_none(), "a plan padded into fewer units than it has");
        }
    }
}

#[test]
fn a_rows_output_does_not_depend_on_the_rows_sharing_its_units() {
    let c = case();
    let b = build(&c, 2);
    let scoring = Scoring { scale: 0.35, softcap: 2.0, window: 0 };
    let all: Vec<usize> = (0..c.rows.len()).collect();
    let (g_all, pos) = groups(&c, &b.starts, &all);
    let together = attend(&b.q, (&b.pool.0, &b.pool.1), (&b.own.0, &b.own.1), &Plan::new(&g_all, &pos, c.kv, c.g, 64, 16).upload(&Device::Cpu).unwrap(), scoring).unwrap();
    for r in all {
        // Only row r reads anything; the other rows' outputs are left at zero.
        let (g_one, _) = groups(&c, &b.starts, &[r]);
        let alone = attend(&b.q, (&b.pool.0, &b.pool.1), (&b.own.0, &b.own.1), &Plan::new(&g_one, &pos, c.kv, c.g, 64, 16).upload(&Device::Cpu).unwrap(), scoring).unwrap();
        let (x, y) = (together.get(r).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), alone.get(r).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap());
        assert_eq!(x, y, "row {r} changed with the rows that share its prompt");
    }
}

fn tiny_decoder(arch: verdict_engine::Arch) -> (verdict_engine::ModelConfig, Decoder) {
    tiny_decoder_on(arch, DType::F32, &Device::Cpu)
}

fn tiny_decoder_on(arch: verdict_engine::Arch, dtype: DType, device: &Device) -> (verdict_engine::ModelConfig, Decoder) {
    let folder = ModelFolder::open(&common::tiny(arch, false)).unwrap();
    let cfg = folder.config().unwrap();
    let model = folder.decoder(&cfg, dtype, device).unwrap();
    (cfg, model)
}

/// Prefill `seqs` together (left-padded) and return the cache with each one's padding.
fn prefill(model: &Decoder, cfg: &verdict_engine::ModelConfig, seqs: &[&[u32]]) -> (KvCache, Vec<usize>) {
    let width = seqs.iter().map(|s| s.len()).max().unwrap();
    let (step, pads) = Step::left_padded(seqs, width, 0, model.sliding_window(), &Device::Cpu).unwrap();
    let mut cache = KvCache::new(cfg, seqs.len(), width, DType::F32, &Device::Cpu).unwrap();
    model.forward(&step, &mut cache).unwrap();
    (cache, pads)
}

/// Feed `own_tokens[r]` to row r one step at a time through the pool and the own cache
/// (`segments(s)`: the step's groups, the own segments holding s + 1 tokens), and check each
/// row's last logits against the model's on `prompts[r]` + its own tokens.
fn check_pooled_decode(
    arch: verdict_engine::Arch,
    (cfg, model): (&verdict_engine::ModelConfig, &Decoder),
    pool: &PromptPool,
    prompts: &[Vec<u32>],
    own_tokens: &[Vec<u32>],
    segments: impl Fn(usize) -> Vec<(Segment, Vec<usize>)>,
) {
    let dev = Device::Cpu;
    let rows = prompts.len();
    let steps = own_tokens[0].len();
    let (kv, g) = (cfg.num_key_value_heads, cfg.num_attention_heads / cfg.num_key_value_heads);
    let mut own = KvCache::new(cfg, rows, steps, DType::F32, &dev).unwrap();
    let mut logits = None;
    for s in 0..steps {
        let positions: Vec<usize> = prompts.iter().map(|p| p.len() + s).collect();
        let plan = Plan::new(&segments(s), &positions, kv, g, 64, 16).upload(&dev).unwrap();
        // Odd steps write their keys and values at a slot read from a tensor, as the
        // engine's decode steps (and their CUDA graphs) do; even steps at `offset`.
        let segmented = Step::segmented(
            Tensor::from_vec(own_tokens.iter().map(|t| t[s]).collect::<Vec<u32>>(), (rows, 1), &dev).unwrap(),
            Tensor::from_vec(positions.iter().map(|&p| p as u32).collect::<Vec<u32>>(), (rows, 1), &dev).unwrap(),
            if s % 2 == 1 { 0 } else { s },
        );
        let slot = (s % 2 == 1).then(|| Tensor::from_slice(&[s as u32], (1, 1, 1, 1), &dev).unwrap());
        let step = Step { slot, ..segmented };
        let h = model.forward_segmented(&step, &mut own, Segments { pool, plan: &plan }).unwrap();
        logits = Some(model.head(&Decoder::last(&h).unwrap()).unwrap());
    }
    let logits = logits.unwrap();
    for r in 0..rows {
        let seq: Vec<u32> = prompts[r].iter().chain(&own_tokens[r]).copied().collect();
        let want = model.full_logits(&seq).unwrap().get(seq.len() - 1).unwrap();
        let diff = max_diff(&logits.get(r).unwrap(), &want);
        assert!(diff < 1e-4, "{arch:?}, row {r}: logits off by {diff}");
    }
}

#[test]
fn decode_steps_over_pooled_prompts_equal_the_whole_sequence() {
    // Three rows, two of them continuing one prompt held once in the pool, step through six
    // own tokens with segmented attention; each row's last logits must be the model's own on
    // the whole sequence, for the four architectures (Gemma 2's soft cap and sliding
    // window, Qwen3's q/k norms, Llama's rope).
    for arch in common::ARCHS {
        let (cfg, model) = tiny_decoder(arch);
        let distinct: [Vec<u32>; 2] = [(0..23).map(|i| (i * 7 + 3) % 200 + 5).collect(), (0..9).map(|i| (i * 11 + 1) % 200 + 5).collect()];
        // Both prompts prefilled together (left-padded), then held once in the pool.
        let (chunk, pads) = prefill(&model, &cfg, &[&distinct[0], &distinct[1]]);
        let mut pool = PromptPool::new(&cfg, 64, DType::F32, &Device::Cpu).unwrap();
        let mut starts = Vec::new();
        for (i, p) in distinct.iter().enumerate() {
            let start = pool.slots.alloc(p.len()).unwrap();
            pool.store(&chunk, i, pads[i], p.len(), start).unwrap();
            starts.push(start);
        }
        let reads = [0usize, 0, 1];
        let prompts: Vec<Vec<u32>> = reads.iter().map(|&p| distinct[p].clone()).collect();
        let own_tokens: Vec<Vec<u32>> = (0..3).map(|r| (0..6).map(|i| ((r * 31 + i * 13) % 200 + 5) as u32).collect()).collect();
        let (kv, d) = (cfg.num_key_value_heads, cfg.head_dim);
        check_pooled_decode(arch, (&cfg, &model), &pool, &prompts, &own_tokens, |s| {
            let mut groups = vec![(Segment::pool(starts[0], distinct[0].len(), 0, kv, d), vec![0, 1]), (Segment::pool(starts[1], distinct[1].len(), 0, kv, d), vec![2])];
            groups.extend((0..3).map(|r| (Segment::own(r, 0, s + 1, prompts[r].len(), kv, 6, d), vec![r])));
            groups
        });
    }
}

#[test]
fn a_header_held_once_then_each_prompts_rest_equals_the_whole_sequence() {
    // Two prompts that start with the same 15-token header: the header is prefilled alone and
    // held once, each prompt keeps only what follows it, and a row reads header, rest and
    // its own tokens as three segments. The logits must be the model's on the whole
    // sequence.
    for arch in common::ARCHS {
        let (cfg, model) = tiny_decoder(arch);
        let header: Vec<u32> = (0..15).map(|i| (i * 5 + 2) % 200 + 5).collect();
        let rests: [Vec<u32>; 2] = [(0..8).map(|i| (i * 7 + 3) % 200 + 5).collect(), (0..3).map(|i| (i * 11 + 1) % 200 + 5).collect()];
        let prompts: Vec<Vec<u32>> = rests.iter().map(|r| header.iter().chain(r).copied().collect()).collect();
        let mut pool = PromptPool::new(&cfg, 64, DType::F32, &Device::Cpu).unwrap();
        let (hc, _) = prefill(&model, &cfg, &[&header]);
        let h_start = pool.slots.alloc(header.len()).unwrap();
        pool.store(&hc, 0, 0, header.len(), h_start).unwrap();
        let (pc, pads) = prefill(&model, &cfg, &[&prompts[0], &prompts[1]]);
        let mut rest_starts = Vec::new();
        for (i, r) in rests.iter().enumerate() {
            let at = pool.slots.alloc(r.len()).unwrap();
            pool.store(&pc, i, pads[i] + header.len(), r.len(), at).unwrap();
            rest_starts.push(at);
        }
        let own_tokens = vec![vec![17, 40, 9], vec![61, 8, 33]];
        let (kv, d) = (cfg.num_key_value_heads, cfg.head_dim);
        check_pooled_decode(arch, (&cfg, &model), &pool, &prompts, &own_tokens, |s| {
            let mut groups = vec![(Segment::pool(h_start, header.len(), 0, kv, d), vec![0, 1])];
            for r in 0..2 {
                groups.push((Segment::pool(rest_starts[r], rests[r].len(), header.len(), kv, d), vec![r]));
                groups.push((Segment::own(r, 0, s + 1, prompts[r].len(), kv, 3, d), vec![r]));
            }
            groups
        });
    }
}

/// The CUDA kernels against the CPU on the same (bf16-rounded) data, for each head size the
/// kernels take: run on the GPU machine with the test binary built `--features cuda`.
#[cfg(feature = "cuda")]
#[test]
fn the_cuda_kernels_match_the_cpu() {
    use candle_core::DType;
    let gpu = Device::new_cuda(0).expect("a CUDA build's tests run on a GPU");
    let bf = |t: &Tensor| t.to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap();
    for (kv, g, d) in [(2, 2, 16), (2, 7, 64), (4, 7, 128), (8, 2, 256)] {
        // 24 rows over three prompts of very different lengths, own tokens up to 300.
        let rows: Vec<(usize, usize)> = (0..24).map(|r| (r % 3, 1 + (r * 37) % 300)).collect();
        let c = Case { kv, g, d, prompts: vec![600, 1_500, 37], rows, own_cap: 320 };
        let b = build(&c, 3);
        let b = Built { q: bf(&b.q), pool: (bf(&b.pool.0), bf(&b.pool.1)), own: (bf(&b.own.0), bf(&b.own.1)), starts: b.starts };
        let all: Vec<usize> = (0..c.rows.len()).collect();
        let (groups, pos) = groups(&c, &b.starts, &all);
        let on = |t: &Tensor| t.to_device(&gpu).unwrap().to_dtype(DType::BF16).unwrap();
        let max_q = verdict_engine::segmented::max_queries(d).unwrap();
        for scoring in [Scoring { scale: 0.1, softcap: 0.0, window: 0 }, Scoring { scale: 0.1, softcap: 5.0, window: 700 }] {
            let plan = Plan::new(&groups, &pos, kv, g, max_q, 256);
            // As a CUDA graph runs it: padded with empty units the kernel must skip.
            let padded = plan.padded(plan.size().room(64, PlanSize::default())).unwrap();
            let want = attend(&b.q, (&b.pool.0, &b.pool.1), (&b.own.0, &b.own.1), &plan.upload(&Device::Cpu).unwrap(), scoring).unwrap();
            let got = attend(&on(&b.q), (&on(&b.pool.0), &on(&b.pool.1)), (&on(&b.own.0), &on(&b.own.1)), &plan.upload(&gpu).unwrap(), scoring)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .to_device(&Device::Cpu)
                .unwrap();
            let scale = want.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            let diff = max_diff(&got, &want);
            assert!(diff <= 1e-2 * scale, "head_dim {d}, {scoring:?}: off by {diff} (outputs up to {scale})");
            let got_padded = attend(&on(&b.q), (&on(&b.pool.0), &on(&b.pool.1)), (&on(&b.own.0), &on(&b.own.1)), &padded.upload(&gpu).unwrap(), scoring)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .to_device(&Device::Cpu)
                .unwrap();
            assert_eq!(max_diff(&got_padded, &got), 0.0, "head_dim {d}: padding the plan changed the kernel's output");
            eprintln!("head_dim {d}, {scoring:?}: max difference {diff:.2e} of {scale:.2e}, {} units", plan.units());
        }
    }
}

/// A decode step replayed from a CUDA graph computes exactly what the same step computes
/// eagerly: greedy decoding of eight rows over three pooled prompts, through rows freed
/// and refilled (the plan changes under the graph) and the own cache's frontier moving left
/// (the write slot jumps back), for every architecture. Run on the GPU machine.
#[cfg(feature = "cuda")]
#[test]
fn a_decode_step_replayed_from_a_cuda_graph_equals_the_eager_step() {
    use verdict_engine::engine::runner::{PromptKv, Runner};
    let (gpu, dtype) = verdict_engine::device::pick("cuda").expect("a CUDA build's tests run on a GPU");
    for arch in common::ARCHS {
        let (cfg, model) = tiny_decoder_on(arch, dtype, &gpu);
        let prompts: Vec<Vec<u32>> = (0..3).map(|p| (0..20 + 7 * p).map(|i| ((i * 31 + p * 7) % 200 + 3) as u32).collect()).collect();
        let run = |graphs: bool| -> (Vec<Vec<f32>>, (usize, usize)) {
            let mut runner = Runner::new(&model, 8, 64, 256, &[], 0, graphs).unwrap();
            let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
            let kvs: Vec<PromptKv> = runner.prefill(&refs).unwrap().into_iter().map(Option::unwrap).collect();
            let admissions: Vec<(usize, &PromptKv)> = (0..8).map(|r| (r, &kvs[r % 3])).collect();
            runner.admit(&admissions);
            let (mut tokens, mut live, mut out) = (vec![5u32; 8], 8, Vec::new());
            for step in 0..100 {
                if step == 30 {
                    (5..8).for_each(|r| runner.release(r));
                    live = 5;
                }
                if step == 40 {
                    // Every row starts a new sample: at step 64 the frontier reaches the
                    // cache's end and the live part moves left.
                    (0..5).for_each(|r| runner.release(r));
                    runner.admit(&admissions);
                    live = 8;
                }
                let rows: Vec<Vec<f32>> = runner.decode(&tokens).unwrap().to_dtype(DType::F32).unwrap().to_vec2().unwrap();
                tokens = rows.iter().map(|r| r.iter().enumerate().fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0 as u32).collect();
                out.push(rows[..live].concat());
            }
            (out, runner.graph_counts())
        };
        let (eager, none) = run(false);
        let (graphed, (captures, replays)) = run(true);
        assert_eq!(none, (0, 0), "{arch:?}: graphs were used with graphs off");
        assert!(replays >= 90 && captures <= 3, "{arch:?}: {captures} captures, {replays} replays of 100 steps");
        for (s, (a, b)) in eager.iter().zip(&graphed).enumerate() {
            assert!(a == b, "{arch:?}: step {s}'s logits differ between the graph and the eager step");
        }
        eprintln!("{arch:?}: 100 steps, {captures} captures, {replays} replays, logits identical");
    }
}

/// The fused decode kernel (bias, q/k norms, rotary embedding and the cache write in one
/// launch) computes what the unfused candle ops compute, step after step of greedy decoding
/// over a pooled prompt, for every architecture. Run on the GPU machine.
#[cfg(feature = "cuda")]
#[test]
fn the_fused_decode_kernel_matches_the_unfused_ops() {
    let (gpu, dtype) = verdict_engine::device::pick("cuda").expect("a CUDA build's tests run on a GPU");
    for arch in common::ARCHS {
        let (cfg, model) = tiny_decoder_on(arch, dtype, &gpu);
        let input: Vec<u32> = (0..40).map(|i| (i * 37 % 250 + 3) as u32).collect();
        let (fused_tokens, fused) = verdict_engine::probe::greedy_steps(&model, &input, 24, cfg.vocab_size, true).unwrap();
        let (plain_tokens, plain) = verdict_engine::probe::greedy_steps(&model, &input, 24, cfg.vocab_size, false).unwrap();
        let (mut worst, mut scale) = (0f32, 0f32);
        for (a, b) in fused.iter().zip(&plain) {
            for (x, y) in a.iter().zip(b) {
                worst = worst.max((x - y).abs());
                scale = scale.max(y.abs());
            }
        }
        eprintln!("{arch:?}: fused vs unfused decode logits differ by at most {worst:.2e} (logits up to {scale:.2e})");
        assert_eq!(fused_tokens, plain_tokens, "{arch:?}: greedy tokens changed with the fused kernel");
        assert!(worst <= 1e-2 * scale, "{arch:?}: fused decode off by {worst} (logits up to {scale})");
    }
}
