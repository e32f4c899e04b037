//! The model runner: owns the prompt pool, the rows' own-token cache and the model; turns a
//! step's rows into tensors and an attention plan, and returns logits.
//!
//! Layout. Each distinct prompt's keys and values are held once, in the prompt pool
//! ([`PromptPool`]), for as long as a sample may still read them: the k samples of an item
//! continue at most n! prompts (two for a pair), so a step reads each prompt once per group
//! of rows that continue it instead of once per row (segmented attention, crate::segmented),
//! and memory holds each prompt once. Each row's own generated tokens go in a small cache of
//! `rows` × `own` slots where every row writes its next token at the same slot, the frontier
//! `offset`; row r's tokens occupy `starts[r]..offset`. Positions count from each row's
//! prompt, so where a row's tokens sit changes nothing it computes. When the frontier
//! reaches the end, the live part moves left (by the earliest live start); the own cache
//! has slack beyond the longest judgement, so that happens at most once per `slack` steps.
//!
//! Prompts are prefilled apart, in chunks of at most `PREFILL_TOKENS` (padding included),
//! into small caches of their own, and copied into the pool; the chunk's caches then go.

use std::rc::Rc;

use candle_core::{Device, Tensor};

use crate::error::{ComputeContext, Result};
use super::graphs::{DeviceInputs, StepInputs};
use crate::model::{Decoder, KvCache, PromptPool, Segments, Step};
use crate::profile;
use crate::segmented::{self, Plan, Segment};

/// Most prompt tokens (padding included) prefilled in one forward pass: bounds the prefill's
/// activations and attention scores, which grow with the square of the prompt length.
pub(crate) const PREFILL_TOKENS: usize = 16_384;

/// Fewest keys per unit of segmented attention: long prompts are split into units of at least
/// this many keys so that a few long rows still spread over the GPU (Plan::split_for).
/// `VERDICT_MIN_SPLIT_KEYS` overrides it, for benchmarks: at small batches every split is
/// the shortest, and a unit's keys are one tile after another in one block
/// (bench/RESULTS.md, the fourth H200 session, says why that is the next thing to measure).
fn min_split_keys() -> usize {
    static KEYS: std::sync::LazyLock<usize> =
        std::sync::LazyLock::new(|| std::env::var("VERDICT_MIN_SPLIT_KEYS").ok().and_then(|v| v.parse().ok()).filter(|&k| k >= 32).unwrap_or(256));
    *KEYS
}

/// Blocks (units × KV heads) a step's attention should have before splitting stops paying:
/// about eight per streaming multiprocessor of an H100/H200.
const FILL_BLOCKS: usize = 1_024;

/// A prompt held in the pool: the slots of its own part (all of it, or what follows the
/// shared template header), and the logits its samples' first tokens are drawn from (row
/// `row` of its prefill chunk's last-position logits).
#[derive(Clone)]
pub struct PromptKv {
    pub reads: Reads,
    pub logits: Rc<Tensor>,
    pub row: usize,
}

/// What a row reads from the pool: the template header (if its prompt starts with it) and
/// the prompt's own part, `len` slots from `start`, at positions `header..header + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reads {
    pub header: usize,
    pub start: usize,
    pub len: usize,
}

impl Reads {
    /// The prompt's length in tokens.
    pub fn tokens(&self) -> usize {
        self.header + self.len
    }
}

/// The judge template's header, held once in the pool for every row whose prompt starts
/// with it (crate::judge::Prompter::template_header).
struct Header {
    ids: Vec<u32>,
    start: usize,
}

/// A header shorter than this is not worth a segment of its own.
const MIN_HEADER: usize = 16;

pub struct Runner<'m> {
    model: &'m Decoder,
    pool: PromptPool,
    own: KvCache,
    /// Own-cache slot where every row writes its next token.
    offset: usize,
    /// Each row's first own slot; a free row's is the frontier where it was freed.
    starts: Vec<usize>,
    /// What each live row reads from the pool.
    prompts: Vec<Option<Reads>>,
    header: Option<Header>,
    pad_id: u32,
    /// CUDA graphs of decode steps, when the device is CUDA and they are wanted.
    #[cfg(feature = "cuda")]
    graphs: Option<super::graphs::DecodeGraphs>,
    #[cfg(not(feature = "cuda"))]
    graphs: Option<std::convert::Infallible>,
    /// The most query vectors a unit of segmented attention takes (the CUDA kernel's bound).
    max_queries: usize,
    /// Times the live part of the own cache was moved left.
    pub moves: usize,
    /// Prompt tokens computed in prefill, padding included.
    pub prefill_tokens: usize,
    /// The most KV slots in use at once (pool slots held, plus the live rows' own tokens).
    pub kv_peak: usize,
}

impl<'m> Runner<'m> {
    /// `rows` rows of `own` own slots each, and a pool of `pool_slots` prompt tokens besides
    /// the template `header` (held once for every prompt that starts with it; empty: none).
    /// `graphs`: capture small decode steps into CUDA graphs (on CUDA; a profile then times
    /// a replay as one region).
    pub fn new(model: &'m Decoder, rows: usize, own: usize, pool_slots: usize, header: &[u32], pad_id: u32, graphs: bool) -> Result<Self> {
        let (cfg, dtype, device) = (model.config(), model.dtype(), model.device());
        let own_cache = KvCache::new(cfg, rows, own, dtype, device).step("allocating the KV cache")?;
        let header = if header.len() >= MIN_HEADER { header } else { &[] };
        let pool = PromptPool::new(cfg, pool_slots + header.len(), dtype, device).step("allocating the prompt pool")?;
        let max_queries = if device.is_cuda() {
            segmented::max_queries(cfg.head_dim).ok_or_else(|| crate::EngineError::Device(format!("no attention kernel for head_dim {}", cfg.head_dim)))?
        } else {
            64
        };
        let mut runner = Self { model, pool, own: own_cache, offset: 0, starts: vec![0; rows], prompts: vec![None; rows], header: None, pad_id, graphs: None, max_queries, moves: 0, prefill_tokens: 0, kv_peak: 0 };
        #[cfg(feature = "cuda")]
        if graphs && device.is_cuda() {
            runner.graphs = Some(super::graphs::DecodeGraphs::new(rows));
        }
        #[cfg(not(feature = "cuda"))]
        let _ = graphs;
        if !header.is_empty() {
            runner.hold_header(header)?;
        }
        Ok(runner)
    }

    /// Prefill the header alone (so its keys and values never depend on a prompt it came
    /// with) and hold it in the pool for the runner's life.
    fn hold_header(&mut self, ids: &[u32]) -> Result<()> {
        let start = self.pool.slots.alloc(ids.len()).ok_or_else(|| crate::EngineError::Device("the prompt pool has no room for the template header".into()))?;
        let (cache, _) = self.forward_flat(&[(ids, 0)])?;
        self.pool.store(&cache, 0, 0, ids.len(), start).step("header prefill")?;
        self.header = Some(Header { ids: ids.to_vec(), start });
        Ok(())
    }

    /// One prefill forward over `parts` laid end to end as one sequence: each part's tokens
    /// (what follows the header, for a prompt that starts with it) at positions from its
    /// `header` on, reading the pool's header (when `header` > 0) and its own tokens,
    /// causally. No padding, no score matrix, and the header is never computed again.
    /// Returns the parts' keys and values (one row, the parts in order) and the hidden
    /// states `[1, Σ len, hidden]`.
    fn forward_flat(&mut self, parts: &[(&[u32], usize)]) -> Result<(KvCache, Tensor)> {
        let device = self.model.device().clone();
        let cfg = self.model.config();
        let (kv, d) = (cfg.num_key_value_heads, cfg.head_dim);
        let g = cfg.num_attention_heads / kv;
        let total: usize = parts.iter().map(|(ids, _)| ids.len()).sum();
        let mut tokens = Vec::with_capacity(total);
        let mut positions = Vec::with_capacity(total);
        let mut groups: Vec<(Segment, Vec<usize>)> = Vec::with_capacity(parts.len() + 1);
        let mut header_rows = Vec::new();
        for &(ids, header) in parts {
            let rows: Vec<usize> = (tokens.len()..tokens.len() + ids.len()).collect();
            if header > 0 {
                header_rows.extend_from_slice(&rows);
            }
            groups.push((Segment::own(0, tokens.len(), ids.len(), header, kv, total, d), rows));
            tokens.extend_from_slice(ids);
            positions.extend((header..header + ids.len()).map(|p| p as u32));
        }
        if let (Some(h), false) = (&self.header, header_rows.is_empty()) {
            groups.insert(0, (Segment::pool(h.start, h.ids.len(), 0, kv, d), header_rows));
        }
        let row_pos: Vec<usize> = positions.iter().map(|&p| p as usize).collect();
        let split = Plan::split_for(&groups, kv, g, self.max_queries, min_split_keys(), FILL_BLOCKS);
        let plan = Plan::new(&groups, &row_pos, kv, g, self.max_queries, split).upload(&device).step("prefill plan")?;
        let mut cache = KvCache::new(cfg, 1, total, self.model.dtype(), &device).step("allocating the prefill cache")?;
        let step = Step::segmented(
            Tensor::from_vec(tokens, (1, total), &device).step("prefill input")?,
            Tensor::from_vec(positions, (1, total), &device).step("prefill input")?,
            0,
        );
        self.prefill_tokens += total;
        let segments = Segments { pool: &self.pool, plan: &plan };
        let hidden = profile::time("prefill", "forward", &device, || self.model.forward_segmented(&step, &mut cache, segments)).step("prefill")?;
        Ok((cache, hidden))
    }

    /// How much of `prompt` the header covers: all of the header if the prompt starts with it
    /// and goes on past it, else nothing.
    fn shared_header(&self, prompt: &[u32]) -> usize {
        match &self.header {
            Some(h) if prompt.len() > h.ids.len() && prompt.starts_with(&h.ids) => h.ids.len(),
            _ => 0,
        }
    }

    pub fn rows(&self) -> usize {
        self.starts.len()
    }

    pub fn device(&self) -> &Device {
        self.model.device()
    }

    /// Pool slots free for prompts.
    pub fn pool_free(&self) -> usize {
        self.pool.slots.free_slots()
    }

    /// Pool slots held by prompts (the template header aside).
    pub fn prompts_held(&self) -> usize {
        let header = self.header.as_ref().map_or(0, |h| h.ids.len());
        self.pool.slots.capacity() - self.pool.slots.free_slots() - header
    }

    /// KV slots allocated: the pool and every row's own cache.
    pub fn kv_allocated(&self) -> usize {
        self.pool.slots.capacity() + self.rows() * self.own.capacity()
    }

    /// Prefill `prompts` (token ids), each once, in chunks of at most `PREFILL_TOKENS` tokens
    /// (a longer prompt goes alone), and hold each in the pool. The answer is in the order
    /// given, `None` for a prompt the pool had no room for (it waits for a later step).
    pub fn prefill(&mut self, prompts: &[&[u32]]) -> Result<Vec<Option<PromptKv>>> {
        let mut out: Vec<Option<PromptKv>> = vec![None; prompts.len()];
        let device = self.model.device().clone();
        let mut next = 0;
        while next < prompts.len() {
            // Room in the pool first (for what follows the header): a prompt without it is not
            // computed now.
            let mut placed: Vec<(usize, usize)> = Vec::new();
            let mut tokens = 0;
            while next < prompts.len() {
                let rest = prompts[next].len() - self.shared_header(prompts[next]);
                if !placed.is_empty() && tokens + rest > PREFILL_TOKENS {
                    break;
                }
                if let Some(at) = self.pool.slots.alloc(rest) {
                    placed.push((next, at));
                    tokens += rest;
                }
                next += 1;
            }
            if placed.is_empty() {
                continue;
            }
            let parts: Vec<(&[u32], usize)> = placed
                .iter()
                .map(|&(i, _)| {
                    let header = self.shared_header(prompts[i]);
                    (&prompts[i][header..], header)
                })
                .collect();
            let (cache, hidden) = self.forward_flat(&parts)?;
            // Each prompt's last token: where its samples' first tokens come from.
            let mut ends = Vec::with_capacity(parts.len());
            let mut off = 0;
            for (ids, _) in &parts {
                off += ids.len();
                ends.push(off as u32 - 1);
            }
            let ends = Tensor::from_vec(ends, parts.len(), &device).step("prefill")?;
            let last = hidden.squeeze(0).and_then(|h| h.index_select(&ends, 0)).step("prefill")?;
            let logits = Rc::new(self.model.head(&last).step("prefill head")?);
            self.store_flat(&cache, &placed.iter().zip(&parts).map(|(&(_, at), (ids, _))| (at, ids.len())).collect::<Vec<_>>())?;
            for (row, (&(i, at), &(ids, header))) in placed.iter().zip(&parts).enumerate() {
                out[i] = Some(PromptKv { reads: Reads { header, start: at, len: ids.len() }, logits: logits.clone(), row });
            }
        }
        Ok(out)
    }

    /// Copy a flat prefill's parts (`(pool start, len)` each, laid end to end in `cache`'s
    /// row 0) into the pool: one copy per run of parts whose pool ranges are adjacent too.
    fn store_flat(&mut self, cache: &KvCache, parts: &[(usize, usize)]) -> Result<()> {
        let device = self.model.device().clone();
        let mut from = 0;
        let mut i = 0;
        while i < parts.len() {
            let (at, mut len) = parts[i];
            i += 1;
            while i < parts.len() && parts[i].0 == at + len {
                len += parts[i].1;
                i += 1;
            }
            profile::time("prefill", "to the pool", &device, || self.pool.store(cache, 0, from, len, at)).step("storing a prompt")?;
            from += len;
        }
        Ok(())
    }

    /// A prompt no sample will read again: its pool slots are free.
    pub fn free_prompt(&mut self, kv: &PromptKv) {
        self.pool.slots.release(kv.reads.start, kv.reads.len);
    }

    /// Start sample rows: `rows[i]` continues prompt `kv[i]`, its own tokens from the
    /// frontier on. Nothing is copied: the row reads the prompt where the pool holds it.
    pub fn admit(&mut self, admissions: &[(usize, &PromptKv)]) {
        for (row, kv) in admissions {
            self.prompts[*row] = Some(kv.reads);
            self.starts[*row] = self.offset;
        }
    }

    /// A row's sequence is finished: the row is free for the next admission.
    pub fn release(&mut self, row: usize) {
        self.prompts[row] = None;
        self.starts[row] = self.offset;
    }

    /// Rows a step computes: up to the last live row (admission fills the lowest free rows
    /// first, and `pack` gathers the live rows there at a batch's tail).
    pub fn active(&self) -> usize {
        self.prompts.iter().rposition(Option::is_some).map_or(0, |r| r + 1)
    }

    /// Move rows `keep` (in that order) to rows `0..keep.len()`; every other row becomes free.
    /// Rows past the live ones stop costing compute, and stay allocated for later arrivals.
    pub fn pack(&mut self, keep: &[usize]) -> Result<()> {
        let idx = Tensor::from_vec(keep.iter().map(|&r| r as u32).collect::<Vec<_>>(), keep.len(), self.model.device()).step("packing rows")?;
        profile::time("decode", "pack", self.model.device(), || self.own.pack_rows(&idx)).step("packing rows")?;
        let (starts, prompts): (Vec<usize>, Vec<Option<Reads>>) = keep.iter().map(|&r| (self.starts[r], self.prompts[r])).unzip();
        for r in 0..self.rows() {
            (self.starts[r], self.prompts[r]) = if r < keep.len() { (starts[r], prompts[r]) } else { (self.offset, None) };
        }
        Ok(())
    }

    /// Move the live part of the own cache left, to slot 0.
    fn move_left(&mut self) -> Result<()> {
        let rows = self.active();
        let from = (0..rows).filter(|&r| self.prompts[r].is_some()).map(|r| self.starts[r]).min().unwrap_or(self.offset);
        let len = self.offset - from;
        if len >= self.own.capacity() {
            return Err(crate::EngineError::Device(format!("KV cache full: a live sequence spans all {} own slots", self.own.capacity())));
        }
        if len > 0 && from > 0 {
            self.moves += 1;
            profile::time("decode", "frontier move", self.model.device(), || self.own.move_slots(rows, from, 0, len)).step("moving the cache window")?;
        }
        for s in self.starts.iter_mut() {
            *s = s.saturating_sub(from);
        }
        self.offset = len;
        Ok(())
    }

    /// The step's attention plan: the header with every live row that shares it, each
    /// prompt's own part with the live rows that continue it, and each live row's own
    /// tokens (the step's included).
    fn plan(&self, n: usize, positions: &[usize]) -> Plan {
        let cfg = self.model.config();
        let (kv, d) = (cfg.num_key_value_heads, cfg.head_dim);
        let g = cfg.num_attention_heads / kv;
        let mut header_rows = Vec::new();
        let mut readers: std::collections::BTreeMap<Reads, Vec<usize>> = std::collections::BTreeMap::new();
        for r in 0..n {
            if let Some(p) = self.prompts[r] {
                if p.header > 0 {
                    header_rows.push(r);
                }
                readers.entry(p).or_default().push(r);
            }
        }
        let mut groups: Vec<(Segment, Vec<usize>)> = Vec::new();
        if let (Some(h), false) = (&self.header, header_rows.is_empty()) {
            groups.push((Segment::pool(h.start, h.ids.len(), 0, kv, d), header_rows));
        }
        groups.extend(readers.into_iter().map(|(p, rows)| (Segment::pool(p.start, p.len, p.header, kv, d), rows)));
        let own_cap = self.own.capacity();
        for r in 0..n {
            if let Some(p) = self.prompts[r] {
                groups.push((Segment::own(r, self.starts[r], self.offset + 1 - self.starts[r], p.tokens(), kv, own_cap, d), vec![r]));
            }
        }
        let split = Plan::split_for(&groups, kv, g, self.max_queries, min_split_keys(), FILL_BLOCKS);
        Plan::new(&groups, positions, kv, g, self.max_queries, split)
    }

    /// One decode step over the first `tokens.len()` rows (at least `active()`): `tokens[r]`
    /// is fed for row r (a free row's is ignored). Returns their logits, `[tokens.len(), V]`
    /// f32, valid until the next step (on CUDA they may sit in a graph's output buffer).
    pub fn decode(&mut self, tokens: &[u32]) -> Result<Tensor> {
        let n = tokens.len();
        if n < self.active() || n > self.rows() {
            return Err(crate::EngineError::Device(format!("decode step over {n} rows: {} are live of {}", self.active(), self.rows())));
        }
        if self.offset >= self.own.capacity() {
            self.move_left()?;
        }
        let device = self.model.device().clone();
        let offset = self.offset;
        let own_used: usize = (0..n).filter(|&r| self.prompts[r].is_some()).map(|r| offset + 1 - self.starts[r]).sum();
        self.kv_peak = self.kv_peak.max(self.pool.slots.capacity() - self.pool.slots.free_slots() + own_used);
        // In a graph the step runs over its bucket's rows: those past `n` are free.
        let graphed = self.bucket(n);
        let b = graphed.unwrap_or(n);
        let positions: Vec<usize> = (0..b).map(|r| self.prompts[r].map_or(0, |p| p.tokens() + offset - self.starts[r])).collect();
        let tokens: Vec<u32> = (0..b).map(|r| if self.prompts[r].is_some() { tokens[r] } else { self.pad_id }).collect();
        let plan = profile::time("decode", "plan", &device, || self.plan(b, &positions));
        let positions: Vec<u32> = positions.iter().map(|&p| p as u32).collect();
        let inputs = StepInputs { tokens: &tokens, positions: &positions, slot: offset as u32, plan };
        let (model, pool, own) = (self.model, &self.pool, &mut self.own);
        let mut forward = |inputs: &DeviceInputs| -> candle_core::Result<Tensor> {
            let step = Step { slot: Some(inputs.slot.clone()), ..Step::segmented(inputs.tokens.clone(), inputs.positions.clone(), offset) };
            let hidden = profile::time("decode", "forward", model.device(), || model.forward_segmented(&step, own, Segments { pool, plan: &inputs.plan }))?;
            model.head(&Decoder::last(&hidden)?)
        };
        let logits = match &mut self.graphs {
            #[cfg(feature = "cuda")]
            Some(graphs) if graphed.is_some() => graphs.run(&device, inputs, &mut forward).step("decode step (CUDA graph)")?,
            _ => {
                let inputs = profile::time("decode", "plan upload", &device, || DeviceInputs::upload(inputs, &device)).step("attention plan")?;
                forward(&inputs).step("decode step")?
            }
        };
        self.offset += 1;
        if b == n {
            Ok(logits)
        } else {
            logits.narrow(0, 0, n).step("decode step")
        }
    }

    /// The rows a step of `n` rows runs over in a CUDA graph, if one takes it.
    fn bucket(&self, n: usize) -> Option<usize> {
        #[cfg(feature = "cuda")]
        if let Some(g) = &self.graphs {
            return g.bucket(n);
        }
        let _ = n;
        None
    }

    /// Decode steps captured into CUDA graphs, and steps replayed from them.
    pub fn graph_counts(&self) -> (usize, usize) {
        #[cfg(feature = "cuda")]
        if let Some(g) = &self.graphs {
            return (g.captures, g.replays);
        }
        (0, 0)
    }
}
