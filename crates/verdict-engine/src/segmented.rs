//! Attention over shared segments: the cascade / group-attention idea for GRM sampling,
//! where the k samples of an item continue the same prompt (one per response order) and
//! every item shares the judge template's header. The engine's only attention: decode steps
//! (a row is a sample) and prefill (a row is one prompt token) both run through it.
//!
//! A row's keys and values are a chain of [`Segment`]s in position order: its prompt, held
//! once in a pool (`[slots, kv, D]`, token-major) however many rows read it, then the row's
//! own tokens (`[rows, kv, N, D]`). A [`Plan`] groups the rows that read each segment and
//! cuts the work into units — a segment's keys, split so that long segments spread over the
//! GPU (flash-decoding), against up to a kernel's worth of query rows — so that each key and
//! value is loaded once per group of rows, not once per row. Each unit yields an
//! unnormalized partial softmax per query; a row's partials merge into its output. A query
//! at position p sees keys at positions p - window < k ≤ p, so a prefill's rows are causal
//! without a mask and no score matrix is ever held.
//!
//! The CPU computes the same units and merge in f32 (the reference, and exact about row
//! independence: what a row computes never depends on the rows it shares a unit with); the
//! CUDA kernels (`verdict_seg_mma_d*` then `verdict_seg_merge_bf16`, kernels/verdict.cu) do
//! it on tensor cores, bf16 in and f32 accumulation.

use candle_core::{CpuStorage, DType, Device, Layout, Shape, Tensor};

/// Where a segment's keys live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The prompt pool, `[slots, kv, D]`.
    Pool,
    /// The rows' own tokens, `[rows, kv, N, D]`.
    Own,
}

/// A run of consecutive keys (and values, laid out alike) in one source: key `i` of KV head
/// `h` starts at element `base + i * token_stride + h * head_stride`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub source: Source,
    pub base: usize,
    pub token_stride: usize,
    pub head_stride: usize,
    pub keys: usize,
    /// Position of the first key in the sequence (sliding windows count from it).
    pub pos0: usize,
}

impl Segment {
    /// Pool slots `start..start + keys` of a pool with `kv` heads of `d` dims, holding
    /// positions `pos0..`.
    pub fn pool(start: usize, keys: usize, pos0: usize, kv: usize, d: usize) -> Self {
        Self { source: Source::Pool, base: start * kv * d, token_stride: kv * d, head_stride: d, keys, pos0 }
    }

    /// Own slots `start..start + keys` of `row` in an own cache of `n` slots per row.
    pub fn own(row: usize, start: usize, keys: usize, pos0: usize, kv: usize, n: usize, d: usize) -> Self {
        Self { source: Source::Own, base: (row * kv * n + start) * d, token_stride: d, head_stride: n * d, keys, pos0 }
    }
}

/// Fields of one unit, as the kernel reads them (9 × i64).
const UNIT_FIELDS: usize = 9;

/// One step's attention work, cut into units (see the module header).
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Per unit: source, base, token_stride, head_stride, keys, pos0, first index in
    /// `unit_rows`, rows, first partial slot.
    units: Vec<i64>,
    unit_rows: Vec<u32>,
    row_pos: Vec<u32>,
    /// Row r's units' first partial slots are `row_parts[row_parts_ptr[r]..row_parts_ptr[r + 1]]`,
    /// in the order of their keys' positions.
    row_parts_ptr: Vec<u32>,
    row_parts: Vec<i64>,
    /// Partial slots in all: rows × kv × g over the units.
    slots: usize,
    /// The most query vectors (rows × g) of any unit.
    queries: usize,
    kv: usize,
    g: usize,
}

impl Plan {
    /// `groups`: each segment with the rows that read it (a row's segments must not overlap
    /// in position); `row_pos`: each row's query position. At most `max_queries` query
    /// vectors (rows × `g`) and `split` keys per unit. A unit's keys stop at its last row's
    /// position (the keys after it are masked for all its rows): a prefill's rows read about
    /// half of their prompt's keys, not all of them.
    pub fn new(groups: &[(Segment, Vec<usize>)], row_pos: &[usize], kv: usize, g: usize, max_queries: usize, split: usize) -> Self {
        let rows_per_unit = (max_queries / g.max(1)).max(1);
        let split = split.max(1);
        let mut plan = Plan { row_pos: row_pos.iter().map(|&p| p as u32).collect(), kv, g, ..Default::default() };
        // (key position, first slot) per row, sorted by position below.
        let mut parts: Vec<Vec<(usize, i64)>> = vec![Vec::new(); row_pos.len()];
        for (seg, rows) in groups {
            for chunk in rows.chunks(rows_per_unit) {
                let last = chunk.iter().map(|&r| row_pos[r]).max().unwrap_or(0);
                let visible = (last + 1).saturating_sub(seg.pos0).min(seg.keys);
                for k0 in (0..visible).step_by(split) {
                    let keys = split.min(visible - k0);
                    let first = plan.slots as i64;
                    plan.units.extend_from_slice(&[
                        (seg.source == Source::Own) as i64,
                        (seg.base + k0 * seg.token_stride) as i64,
                        seg.token_stride as i64,
                        seg.head_stride as i64,
                        keys as i64,
                        (seg.pos0 + k0) as i64,
                        plan.unit_rows.len() as i64,
                        chunk.len() as i64,
                        first,
                    ]);
                    for (j, &r) in chunk.iter().enumerate() {
                        plan.unit_rows.push(r as u32);
                        parts[r].push((seg.pos0 + k0, first + (j * kv * g) as i64));
                    }
                    plan.slots += chunk.len() * kv * g;
                    plan.queries = plan.queries.max(chunk.len() * g);
                }
            }
        }
        plan.row_parts_ptr.push(0);
        for mut p in parts {
            p.sort_by_key(|&(pos, _)| pos);
            plan.row_parts.extend(p.into_iter().map(|(_, slot)| slot));
            plan.row_parts_ptr.push(plan.row_parts.len() as u32);
        }
        plan
    }

    pub fn units(&self) -> usize {
        self.units.len() / UNIT_FIELDS
    }

    /// Keys per unit for `groups`: the longest split, from `min_split` doubling up to the
    /// longest segment, that still gives at least `min_blocks` blocks (units × KV heads).
    /// Splitting spreads a few long rows over the GPU, but every extra unit is one more
    /// partial per row to write and merge: at large batches the rows alone fill the GPU.
    pub fn split_for(groups: &[(Segment, Vec<usize>)], kv: usize, g: usize, max_queries: usize, min_split: usize, min_blocks: usize) -> usize {
        let rows_per_unit = (max_queries / g.max(1)).max(1);
        let blocks = |split: usize| -> usize { groups.iter().map(|(seg, rows)| seg.keys.div_ceil(split) * rows.len().div_ceil(rows_per_unit)).sum::<usize>() * kv };
        let longest = groups.iter().map(|(seg, _)| seg.keys).max().unwrap_or(0);
        let mut split = min_split.max(1);
        while split < longest && blocks(split * 2) >= min_blocks {
            split *= 2;
        }
        split
    }

    /// How big the plan's tables are.
    pub fn size(&self) -> PlanSize {
        PlanSize { units: self.units(), unit_rows: self.unit_rows.len(), row_parts: self.row_parts.len(), slots: self.slots }
    }

    /// The same work in tables of exactly `size` (each at least this plan's): units that
    /// read no rows and no keys (the kernel's blocks for them return at once), rows and parts
    /// no unit points at, partial slots nobody writes. A step captured in a CUDA graph
    /// launches a fixed grid over fixed buffers; any plan that fits is padded to them.
    pub fn padded(&self, size: PlanSize) -> Option<Plan> {
        if !self.size().fits(size) {
            return None;
        }
        let mut p = self.clone();
        p.units.resize(size.units * UNIT_FIELDS, 0);
        p.unit_rows.resize(size.unit_rows, 0);
        p.row_parts.resize(size.row_parts, 0);
        p.slots = size.slots;
        Some(p)
    }

    fn unit(&self, u: usize) -> &[i64] {
        &self.units[u * UNIT_FIELDS..(u + 1) * UNIT_FIELDS]
    }

    /// The plan's tables on `device`, for every layer of the step.
    pub fn upload(&self, device: &Device) -> candle_core::Result<DevicePlan> {
        let u32s = |v: &[u32]| Tensor::from_slice(if v.is_empty() { &[0u32][..] } else { v }, v.len().max(1), device);
        let i64s = |v: &[i64]| Tensor::from_slice(if v.is_empty() { &[0i64][..] } else { v }, v.len().max(1), device);
        Ok(DevicePlan {
            units: i64s(&self.units)?,
            unit_rows: u32s(&self.unit_rows)?,
            row_pos: u32s(&self.row_pos)?,
            row_parts_ptr: u32s(&self.row_parts_ptr)?,
            row_parts: i64s(&self.row_parts)?,
            host: self.clone(),
        })
    }
}

/// The lengths of a plan's tables, and the partial slots it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlanSize {
    pub units: usize,
    pub unit_rows: usize,
    pub row_parts: usize,
    pub slots: usize,
}

impl PlanSize {
    /// Every table of `self` fits in `other`'s.
    pub fn fits(&self, other: PlanSize) -> bool {
        self.units <= other.units && self.unit_rows <= other.unit_rows && self.row_parts <= other.row_parts && self.slots <= other.slots
    }

    /// Room for this plan and the larger ones that follow it: each table rounded up to a
    /// power of two, at least `floor`, and at least `at_least`'s (a size outgrown before).
    pub fn room(&self, floor: usize, at_least: PlanSize) -> PlanSize {
        let up = |x: usize, y: usize| x.max(floor).next_power_of_two().max(y);
        PlanSize {
            units: up(self.units, at_least.units),
            unit_rows: up(self.unit_rows, at_least.unit_rows),
            row_parts: up(self.row_parts, at_least.row_parts),
            slots: up(self.slots, at_least.slots),
        }
    }
}

/// A [`Plan`] with its tables on the device.
pub struct DevicePlan {
    #[allow(dead_code)] // the device tables are read by the CUDA path only
    units: Tensor,
    #[allow(dead_code)]
    unit_rows: Tensor,
    #[allow(dead_code)]
    row_pos: Tensor,
    #[allow(dead_code)]
    row_parts_ptr: Tensor,
    #[allow(dead_code)]
    row_parts: Tensor,
    host: Plan,
}

impl DevicePlan {
    /// Put `plan` (exactly this plan's size: see [`Plan::padded`]) in this plan's device
    /// tables, in place: a captured CUDA graph reads them at the addresses it was captured
    /// with.
    #[cfg(feature = "cuda")]
    pub fn overwrite(&mut self, plan: Plan) -> candle_core::Result<()> {
        use crate::kernels::cuda::overwrite;
        if plan.size() != self.host.size() || plan.row_pos.len() != self.host.row_pos.len() || (plan.kv, plan.g) != (self.host.kv, self.host.g) {
            candle_core::bail!("segmented attention: a plan of {:?} cannot replace one of {:?}", plan.size(), self.host.size());
        }
        overwrite(&self.units, &plan.units)?;
        overwrite(&self.unit_rows, &plan.unit_rows)?;
        overwrite(&self.row_pos, &plan.row_pos)?;
        overwrite(&self.row_parts_ptr, &plan.row_parts_ptr)?;
        overwrite(&self.row_parts, &plan.row_parts)?;
        self.host = plan;
        Ok(())
    }
}

/// How scores are shaped before the softmax.
#[derive(Debug, Clone, Copy)]
pub struct Scoring {
    pub scale: f32,
    /// Gemma 2's attention soft cap (0: none).
    pub softcap: f32,
    /// Sliding window in positions (0: none): a query at position p sees keys after p - window.
    pub window: usize,
}

/// The most query vectors (rows × query heads per KV head) the CUDA kernel takes per unit,
/// for a head size; `None` where it has no kernel.
pub fn max_queries(head_dim: usize) -> Option<usize> {
    match head_dim {
        16 | 32 | 64 | 128 | 256 => Some(MMA_Q),
        _ => None,
    }
}

/// Queries per block and keys per tile of the CUDA kernel (MMA_Q and MMA_KT in
/// kernels/verdict.cu).
const MMA_Q: usize = 64;
#[cfg(feature = "cuda")]
const MMA_KT: usize = 32;

/// Attention of each row's query `q` (`[R, kv, g, D]`) over its segments: the prompt pool
/// (`pool_k`, `pool_v`: `[slots, kv, D]`) and the own tokens (`own_k`, `own_v`: `[rows, kv,
/// N, D]`), as `plan` lays out. Returns `[R, kv, g, D]` in `q`'s dtype.
pub fn attend(q: &Tensor, pool: (&Tensor, &Tensor), own: (&Tensor, &Tensor), plan: &DevicePlan, scoring: Scoring) -> candle_core::Result<Tensor> {
    let (r, kv, g, d) = q.dims4()?;
    if (kv, g) != (plan.host.kv, plan.host.g) || r + 1 != plan.host.row_parts_ptr.len() {
        candle_core::bail!("segmented attention: q {:?} does not fit the plan ({} rows, kv {}, g {})", q.shape(), plan.host.row_parts_ptr.len() - 1, plan.host.kv, plan.host.g);
    }
    for t in [pool.0, pool.1, own.0, own.1] {
        if !t.is_contiguous() || t.dims().last() != Some(&d) {
            candle_core::bail!("segmented attention: K/V tensors must be contiguous with head_dim {d}, got {:?}", t.shape());
        }
    }
    let op = Segmented { own_k: own.0.clone(), own_v: own.1.clone(), plan, scoring };
    q.contiguous()?.apply_op3_no_bwd(pool.0, pool.1, &op)
}

struct Segmented<'p> {
    own_k: Tensor,
    own_v: Tensor,
    plan: &'p DevicePlan,
    scoring: Scoring,
}

fn score(dot: f32, s: Scoring) -> f32 {
    let x = dot * s.scale;
    if s.softcap > 0.0 {
        s.softcap * (x / s.softcap).tanh()
    } else {
        x
    }
}

/// Keys and values of both sources, as f32 slices.
struct Sources<'a> {
    pool_k: &'a [f32],
    pool_v: &'a [f32],
    own_k: &'a [f32],
    own_v: &'a [f32],
}

/// The CPU version: every unit's partials in f32, then each row's merge, in the order the
/// kernels use.
fn attend_cpu(q: &[f32], src: &Sources<'_>, d: usize, plan: &Plan, scoring: Scoring) -> Vec<f32> {
    use rayon::prelude::*;
    let (kv, g) = (plan.kv, plan.g);
    let mut part_m = vec![f32::NEG_INFINITY; plan.slots];
    let mut part_l = vec![0f32; plan.slots];
    let mut part_o = vec![0f32; plan.slots * d];
    // Units own consecutive, disjoint runs of partial slots (in unit order): each gets its
    // own slices, and the units run in parallel. A row's numbers do not depend on which
    // thread computed them.
    let mut work = Vec::with_capacity(plan.units());
    let (mut m_rest, mut l_rest, mut o_rest) = (&mut part_m[..], &mut part_l[..], &mut part_o[..]);
    for u in 0..plan.units() {
        let n = plan.unit(u)[7] as usize * kv * g;
        let (m, mr) = std::mem::take(&mut m_rest).split_at_mut(n);
        let (l, lr) = std::mem::take(&mut l_rest).split_at_mut(n);
        let (o, or) = std::mem::take(&mut o_rest).split_at_mut(n * d);
        (m_rest, l_rest, o_rest) = (mr, lr, or);
        work.push((u, m, l, o));
    }
    work.into_par_iter().for_each(|(u, part_m, part_l, part_o)| unit_cpu(q, src, d, plan, scoring, u, part_m, part_l, part_o));
    let rows = plan.row_parts_ptr.len() - 1;
    let mut out = vec![0f32; rows * kv * g * d];
    out.par_chunks_mut((kv * g * d).max(1)).enumerate().for_each(|(row, out)| {
        let parts = &plan.row_parts[plan.row_parts_ptr[row] as usize..plan.row_parts_ptr[row + 1] as usize];
        for h in 0..kv {
            for gi in 0..g {
                let slots = parts.iter().map(|&p| p as usize + h * g + gi);
                let big = slots.clone().map(|s| part_m[s]).fold(f32::NEG_INFINITY, f32::max);
                let o = &mut out[(h * g + gi) * d..][..d];
                let mut den = 0f32;
                for s in slots.filter(|&s| part_m[s] > f32::NEG_INFINITY) {
                    let w = (part_m[s] - big).exp();
                    den += part_l[s] * w;
                    for (acc, x) in o.iter_mut().zip(&part_o[s * d..(s + 1) * d]) {
                        *acc += x * w;
                    }
                }
                if den > 0.0 {
                    o.iter_mut().for_each(|x| *x /= den);
                }
            }
        }
    });
    out
}

/// Unit `u`'s partials into its own slots (`part_*` start at the unit's first slot).
#[allow(clippy::too_many_arguments)]
fn unit_cpu(q: &[f32], src: &Sources<'_>, d: usize, plan: &Plan, scoring: Scoring, u: usize, part_m: &mut [f32], part_l: &mut [f32], part_o: &mut [f32]) {
    let (kv, g) = (plan.kv, plan.g);
    let f = plan.unit(u);
    let (keys_src, vals_src) = if f[0] == 1 { (src.own_k, src.own_v) } else { (src.pool_k, src.pool_v) };
    let (base, ts, hs, keys, pos0) = (f[1] as usize, f[2] as usize, f[3] as usize, f[4] as usize, f[5] as usize);
    let (roff, nrows) = (f[6] as usize, f[7] as usize);
    let mut scores = Vec::with_capacity(keys);
    for j in 0..nrows {
        let row = plan.unit_rows[roff + j] as usize;
        let qpos = plan.row_pos[row] as usize;
        for h in 0..kv {
            for gi in 0..g {
                let qv = &q[((row * kv + h) * g + gi) * d..][..d];
                scores.clear();
                let mut m = f32::NEG_INFINITY;
                for i in 0..keys {
                    let visible = pos0 + i <= qpos && (scoring.window == 0 || pos0 + i + scoring.window > qpos);
                    let s = if visible {
                        let kr = &keys_src[base + i * ts + h * hs..][..d];
                        score(qv.iter().zip(kr).map(|(a, b)| a * b).sum(), scoring)
                    } else {
                        f32::NEG_INFINITY
                    };
                    m = m.max(s);
                    scores.push(s);
                }
                let slot = (j * kv + h) * g + gi;
                part_m[slot] = m;
                if m == f32::NEG_INFINITY {
                    continue;
                }
                let o = &mut part_o[slot * d..(slot + 1) * d];
                for (i, &s) in scores.iter().enumerate() {
                    let p = (s - m).exp();
                    part_l[slot] += p;
                    let vr = &vals_src[base + i * ts + h * hs..][..d];
                    for (acc, v) in o.iter_mut().zip(vr) {
                        *acc += p * v;
                    }
                }
            }
        }
    }
}

fn f32_data<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(x) = s else { candle_core::bail!("segmented attention on the CPU takes f32 {what}") };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&x[a..b]),
        None => candle_core::bail!("segmented attention: {what} must be contiguous"),
    }
}

impl candle_core::CustomOp3 for Segmented<'_> {
    fn name(&self) -> &'static str {
        "verdict-segmented-attention"
    }

    fn cpu_fwd(&self, sq: &CpuStorage, lq: &Layout, sk: &CpuStorage, lk: &Layout, sv: &CpuStorage, lv: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        // The own caches are read in place (a copy per layer and step would cost more than
        // the attention).
        let (ok_s, ok_l) = self.own_k.storage_and_layout();
        let (ov_s, ov_l) = self.own_v.storage_and_layout();
        let (candle_core::Storage::Cpu(ok_c), candle_core::Storage::Cpu(ov_c)) = (&*ok_s, &*ov_s) else {
            candle_core::bail!("segmented attention: the own caches must be on the CPU with the queries")
        };
        let d = lq.shape().dims().last().copied().unwrap_or(0);
        let src = Sources {
            pool_k: f32_data(sk, lk, "keys")?,
            pool_v: f32_data(sv, lv, "values")?,
            own_k: f32_data(ok_c, ok_l, "own keys")?,
            own_v: f32_data(ov_c, ov_l, "own values")?,
        };
        let out = attend_cpu(f32_data(sq, lq, "queries")?, &src, d, &self.plan.host, self.scoring);
        Ok((CpuStorage::F32(out), lq.shape().clone()))
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
        use crate::kernels::cuda::{done, held, view, MODULE, PTX};
        let dev = sq.device();
        let (rows, kv, g, d) = lq.shape().dims4()?;
        let plan = &self.plan.host;
        let name = match d {
            16 => "verdict_seg_mma_d16",
            32 => "verdict_seg_mma_d32",
            64 => "verdict_seg_mma_d64",
            128 => "verdict_seg_mma_d128",
            256 => "verdict_seg_mma_d256",
            _ => candle_core::bail!("segmented attention: no kernel for head_dim {d}"),
        };
        if plan.queries > MMA_Q {
            candle_core::bail!("segmented attention: the plan puts {} query vectors in a unit, the kernel takes {MMA_Q}", plan.queries);
        }
        // The kernel moves 16 bytes at a time: every tensor must start a multiple of 8 bf16 in.
        for (l, what) in [(lq, "queries"), (lk, "pool keys"), (lv, "pool values"), (self.own_k.layout(), "own keys"), (self.own_v.layout(), "own values")] {
            if l.start_offset() % 8 != 0 {
                candle_core::bail!("segmented attention: {what} start at element {}, not a multiple of 8", l.start_offset());
            }
        }
        let q = view::<half::bf16>(sq, lq, "queries")?;
        let (pk, pv) = (view::<half::bf16>(sk, lk, "pool keys")?, view::<half::bf16>(sv, lv, "pool values")?);
        let (ok_s, ok_l) = self.own_k.storage_and_layout();
        let (ov_s, ov_l) = self.own_v.storage_and_layout();
        let (ok, ov) = (held::<half::bf16>(&ok_s, ok_l, "own keys")?, held::<half::bf16>(&ov_s, ov_l, "own values")?);
        let (units_s, units_l) = self.plan.units.storage_and_layout();
        let (urows_s, urows_l) = self.plan.unit_rows.storage_and_layout();
        let (rpos_s, rpos_l) = self.plan.row_pos.storage_and_layout();
        let (rptr_s, rptr_l) = self.plan.row_parts_ptr.storage_and_layout();
        let (rparts_s, rparts_l) = self.plan.row_parts.storage_and_layout();
        let units = held::<i64>(&units_s, units_l, "the plan")?;
        let unit_rows = held::<u32>(&urows_s, urows_l, "the plan")?;
        let row_pos = held::<u32>(&rpos_s, rpos_l, "the plan")?;
        let row_parts_ptr = held::<u32>(&rptr_s, rptr_l, "the plan")?;
        let row_parts = held::<i64>(&rparts_s, rparts_l, "the plan")?;
        let slots = plan.slots.max(1);
        // SAFETY: every slot a unit covers is written by its block before the merge reads it.
        let part_ml = unsafe { dev.alloc::<f32>(slots * 2)? };
        let part_o = unsafe { dev.alloc::<f32>(slots * d)? };
        // SAFETY: the merge writes every element.
        let out = unsafe { dev.alloc::<half::bf16>(rows * kv * g * d)? };
        let (kv_i, g_i, d_i, window) = (kv as i32, g as i32, d as i32, self.scoring.window as i32);
        if plan.units() > 0 {
            let func = dev.get_or_load_custom_func(name, MODULE, PTX)?;
            // The block's queries and one key and one value tile, rows padded by 8.
            let shared = ((MMA_Q + 2 * MMA_KT) * (d + 8) * 2) as u32;
            if shared > 48 * 1024 {
                use candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute_enum;
                func.set_attribute(CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, shared as i32).w()?;
            }
            let mut b = func.builder();
            b.arg(&q).arg(&pk).arg(&pv).arg(&ok).arg(&ov).arg(&units).arg(&unit_rows).arg(&row_pos).arg(&part_ml).arg(&part_o);
            b.arg(&kv_i).arg(&g_i).arg(&self.scoring.scale).arg(&self.scoring.softcap).arg(&window);
            let cfg = LaunchConfig { grid_dim: (plan.units() as u32, kv as u32, 1), block_dim: (128, 1, 1), shared_mem_bytes: shared };
            // SAFETY: argument types and order match seg_mma's kernels.
            unsafe { b.launch(cfg) }.w()?;
        }
        let merge = dev.get_or_load_custom_func("verdict_seg_merge_bf16", MODULE, PTX)?;
        let mut b = merge.builder();
        b.arg(&part_ml).arg(&part_o).arg(&row_parts_ptr).arg(&row_parts).arg(&out).arg(&kv_i).arg(&g_i).arg(&d_i);
        let cfg = LaunchConfig { grid_dim: ((rows * kv) as u32, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: argument types and order match verdict_seg_merge_bf16.
        unsafe { b.launch(cfg) }.w()?;
        Ok(done(out, dev, lq.shape().clone()))
    }
}

/// `q`'s rows gathered from a dense per-row cache, for comparisons: the reference that
/// every row reads its own copy of its keys (what the engine does today).
pub fn dense_reference(q: &Tensor, keys: &[Tensor], values: &[Tensor], positions: &[usize], scoring: Scoring) -> candle_core::Result<Tensor> {
    // One row at a time, each with its keys concatenated in position order: plain softmax.
    let (r, kv, g, d) = q.dims4()?;
    let q = q.to_dtype(DType::F32)?;
    let mut outs = Vec::with_capacity(r);
    for row in 0..r {
        let k = keys[row].to_dtype(DType::F32)?; // [kv, L, d]
        let v = values[row].to_dtype(DType::F32)?;
        let l = k.dim(1)?;
        let qr = q.get(row)?; // [kv, g, d]
        let mut s = (qr.matmul(&k.t()?)? * scoring.scale as f64)?; // [kv, g, L]
        if scoring.softcap > 0.0 {
            s = ((s / scoring.softcap as f64)?.tanh()? * scoring.softcap as f64)?;
        }
        if scoring.window > 0 {
            let mask: Vec<f32> = (0..l).map(|i| if i + scoring.window > positions[row] { 0.0 } else { f32::NEG_INFINITY }).collect();
            s = s.broadcast_add(&Tensor::from_vec(mask, l, q.device())?)?;
        }
        let p = candle_nn::ops::softmax_last_dim(&s)?;
        outs.push(p.matmul(&v)?.reshape((1, kv, g, d))?);
    }
    Tensor::cat(&outs, 0)
}
