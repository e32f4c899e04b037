//! The generation engine, in three roles as the engines we measure against have them:
//! the [`scheduler`] (waiting and running samples, when to prefill, admission into freed
//! rows), the model [`runner`] (the KV cache, each step's tensors, logits) and the
//! [`sampling`] stage (temperature / top-p, the score-block constraint, stops, forced
//! scores). [`Engine::step`] advances every running sample by one token, admits waiting
//! samples into the rows that freed up, and returns the samples that finished, so the GPU
//! never waits for the longest judgement of a batch.

pub mod graphs;
pub mod runner;
pub mod sampling;
pub mod scheduler;
pub mod slots;

use std::collections::HashMap;

use candle_core::Tensor;

use crate::error::{ComputeContext, Result};
use crate::model::Decoder;
use crate::tokenizer::Tok;
use runner::{PromptKv, Runner, PREFILL_TOKENS};
use sampling::{SamplingStage, Sequence};
use scheduler::Scheduler;

pub use sampling::{GenOutput, GenRequest};

/// What generation cost, for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default)]
pub struct GenStats {
    /// Rows of the batch (the most sequences decoded together), as sized.
    pub rows: usize,
    /// Samples generated.
    pub sequences: usize,
    /// Distinct prompts prefilled.
    pub prompts: usize,
    /// Prompt tokens computed in prefill, padding included.
    pub prefill_tokens: usize,
    /// Tokens generated (kept) over all samples.
    pub generated_tokens: usize,
    /// Decode forward passes.
    pub decode_steps: usize,
    /// Rows computed over all decode steps (the batch's rows, live or not).
    pub decode_rows: usize,
    /// Rows holding a running sample, over all decode steps: `live_rows / decode_rows` is how
    /// full the batch was kept.
    pub live_rows: usize,
    /// Times the live part of the KV cache was moved to make room.
    pub cache_moves: usize,
    /// KV slots allocated (prompt pool and own caches), and the most in use at once: how
    /// much of the memory given to keys and values held something.
    pub kv_slots: usize,
    pub kv_slots_peak: usize,
    /// Pool slots prompts hold now (the template header aside): none once all is done.
    pub prompt_slots_held: usize,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    /// Decode steps captured into CUDA graphs, and steps replayed from them.
    pub graph_captures: usize,
    pub graph_replays: usize,
}

impl GenStats {
    pub fn add(&mut self, o: &GenStats) {
        self.rows = self.rows.max(o.rows);
        self.sequences += o.sequences;
        self.prompts += o.prompts;
        self.prefill_tokens += o.prefill_tokens;
        self.generated_tokens += o.generated_tokens;
        self.decode_steps += o.decode_steps;
        self.decode_rows += o.decode_rows;
        self.live_rows += o.live_rows;
        self.cache_moves += o.cache_moves;
        self.kv_slots = self.kv_slots.max(o.kv_slots);
        self.kv_slots_peak = self.kv_slots_peak.max(o.kv_slots_peak);
        self.prompt_slots_held += o.prompt_slots_held;
        self.prefill_seconds += o.prefill_seconds;
        self.decode_seconds += o.decode_seconds;
        self.graph_captures += o.graph_captures;
        self.graph_replays += o.graph_replays;
    }
}

/// A prompt known to the engine: its tokens until prefilled, then its place in the pool
/// until its last sample has finished.
struct Prompt {
    tokens: Vec<u32>,
    kv: Option<PromptKv>,
    /// Rows running one of its samples.
    readers: usize,
    /// Every sample has been admitted.
    spent: bool,
    /// Kept after its samples are done, for more of them later (adaptive k's next round),
    /// until [`Engine::release_prompt`].
    held: bool,
}

/// How big an engine is.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Samples decoded together.
    pub rows: usize,
    /// The longest prompt taken, in tokens.
    pub max_prompt: usize,
    /// The most tokens a sample generates.
    pub max_new: usize,
    /// Prompt-pool slots (at least `max_prompt`), besides the header's.
    pub pool_slots: usize,
    /// Replay small decode steps from CUDA graphs (on CUDA).
    pub cuda_graphs: bool,
}

/// Own-cache slots per row for judgements of up to `max_new` tokens: slack beyond the
/// longest, so the cache's live part moves left at most once per slack steps.
pub fn own_slots(max_new: usize) -> usize {
    max_new + 1 + (max_new / 8).max(32)
}

pub struct Engine<'a> {
    runner: Runner<'a>,
    scheduler: Scheduler,
    stage: SamplingStage<'a>,
    tok: &'a Tok,
    prompts: HashMap<usize, Prompt>,
    /// Samples not yet admitted, by id.
    waiting: HashMap<usize, Sequence>,
    /// Row → (sample id, its sequence).
    running: Vec<Option<(usize, Sequence)>>,
    next_prompt: usize,
    next_sample: usize,
    /// Samples may wait for prompts up to this long (tokens); longer ones are refused.
    max_prompt: usize,
    stats: GenStats,
}

impl<'a> Engine<'a> {
    /// An engine as `sizes` says, holding the template `header` (the ids every prompt of the
    /// spec starts with; empty: none) once for every row.
    pub fn new(model: &'a Decoder, tok: &'a Tok, stage: SamplingStage<'a>, sizes: Sizes, header: &[u32]) -> Result<Self> {
        let pad_id = tok.stop_ids.first().copied().unwrap_or(0);
        let Sizes { rows, max_prompt, max_new, pool_slots, cuda_graphs } = sizes;
        let rows = rows.max(1);
        Ok(Self {
            runner: Runner::new(model, rows, own_slots(max_new), pool_slots.max(max_prompt), header, pad_id, cuda_graphs)?,
            scheduler: Scheduler::new(rows),
            stage,
            tok,
            prompts: HashMap::new(),
            waiting: HashMap::new(),
            running: (0..rows).map(|_| None).collect(),
            next_prompt: 0,
            next_sample: 0,
            max_prompt,
            stats: GenStats { rows, ..GenStats::default() },
        })
    }

    /// The longest prompt this engine takes.
    pub fn max_prompt(&self) -> usize {
        self.max_prompt
    }

    /// Rows of the batch (sequences decoded together).
    pub fn rows(&self) -> usize {
        self.scheduler.rows()
    }

    pub fn is_idle(&self) -> bool {
        self.scheduler.is_idle()
    }

    pub fn stats(&self) -> GenStats {
        GenStats {
            cache_moves: self.runner.moves,
            prefill_tokens: self.runner.prefill_tokens,
            kv_slots: self.runner.kv_allocated(),
            kv_slots_peak: self.runner.kv_peak,
            prompt_slots_held: self.runner.prompts_held(),
            graph_captures: self.runner.graph_counts().0,
            graph_replays: self.runner.graph_counts().1,
            ..self.stats
        }
    }

    /// A prompt its samples will continue; returns its id.
    pub fn add_prompt(&mut self, tokens: Vec<u32>) -> usize {
        let id = self.next_prompt;
        self.next_prompt += 1;
        self.prompts.insert(id, Prompt { tokens, kv: None, readers: 0, spent: false, held: false });
        id
    }

    /// A prompt whose keys and values stay after its samples are done, so samples added
    /// later start without a prefill; free it with [`Engine::release_prompt`].
    pub fn add_held_prompt(&mut self, tokens: Vec<u32>) -> usize {
        let id = self.add_prompt(tokens);
        if let Some(p) = self.prompts.get_mut(&id) {
            p.held = true;
        }
        id
    }

    /// No more samples will be added to a held prompt, and none of its samples waits: it
    /// goes once no row reads it (at once if none ever did, or it was never prefilled).
    pub fn release_prompt(&mut self, id: usize) {
        if let Some(p) = self.prompts.get_mut(&id) {
            p.held = false;
            p.spent = true;
        }
        self.maybe_free(id);
    }

    /// A sample to generate (its `prompt` is an id from [`Engine::add_prompt`]); returns its
    /// id. Samples are admitted in the order they are added.
    pub fn add_sample(&mut self, req: GenRequest) -> usize {
        let id = self.next_sample;
        self.next_sample += 1;
        // A held prompt's keys and values may be there already: its new sample needs no
        // prefill. Either way the prompt has a sample waiting again.
        let prefilled = match self.prompts.get_mut(&req.prompt) {
            Some(p) => {
                p.spent = false;
                p.kv.is_some()
            }
            None => false,
        };
        if prefilled {
            self.scheduler.add_ready(id, req.prompt);
        } else {
            self.scheduler.add(id, req.prompt);
        }
        self.waiting.insert(id, Sequence::new(req));
        self.stats.sequences += 1;
        id
    }

    /// One step: prefill what the next admissions need, admit samples into free rows (drawing
    /// each one's first token from its prompt's logits), then one decode step for every
    /// running row. Returns the samples that finished, by id.
    pub fn step(&mut self) -> Result<Vec<(usize, GenOutput)>> {
        let mut finished = Vec::new();
        let started = std::time::Instant::now();
        self.prefill()?;
        self.admit(&mut finished)?;
        for p in self.scheduler.spent_prompts() {
            if let Some(prompt) = self.prompts.get_mut(&p) {
                prompt.spent = true;
            }
            self.maybe_free(p);
        }
        self.stats.prefill_seconds += started.elapsed().as_secs_f64();
        if self.scheduler.running() == 0 && self.scheduler.waiting() > 0 && self.evict_idle_held() == 0 {
            // Nothing runs and nothing could start: only a prompt pool that never frees could
            // get here; say so rather than spin.
            return Err(crate::EngineError::Device(format!(
                "no sample can start: {} wait, and the prompt pool has {} free slots for their prompts",
                self.scheduler.waiting(),
                self.runner.pool_free()
            )));
        }
        if self.scheduler.running() > 0 {
            let started = std::time::Instant::now();
            self.decode(&mut finished)?;
            self.stats.decode_seconds += started.elapsed().as_secs_f64();
        }
        self.compact()?;
        self.stats.generated_tokens += finished.iter().map(|(_, o)| o.tokens.len()).sum::<usize>();
        Ok(finished)
    }

    fn prefill(&mut self) -> Result<()> {
        // A little slack beyond the free rows, so rows that free up next find their prompt
        // already prefilled.
        let slack = self.scheduler.rows() / 8;
        // While most rows are free (the start, or a new wave of work) prefill in bigger
        // steps: there is little decoding to hold up, and larger chunks prefill faster.
        // Never more than the pool has room for.
        let rows = self.scheduler.rows().max(1);
        let budget = (PREFILL_TOKENS * (1 + 3 * self.scheduler.free_rows() / rows)).min(self.runner.pool_free());
        let want = self.scheduler.to_prefill(|p| self.prompts.get(&p).map(|x| x.tokens.len()).unwrap_or(0), budget, slack);
        if want.is_empty() {
            return Ok(());
        }
        let seqs: Vec<&[u32]> = want.iter().map(|p| self.prompts[p].tokens.as_slice()).collect();
        let kvs = self.runner.prefill(&seqs)?;
        let mut ready = Vec::new();
        let mut no_room = false;
        for (p, kv) in want.iter().zip(kvs) {
            // A prompt the pool had no room for waits for a later step.
            let (Some(kv), Some(prompt)) = (kv, self.prompts.get_mut(p)) else {
                no_room = true;
                continue;
            };
            // A held prompt keeps its tokens: it may leave the pool while idle and come back.
            if !prompt.held {
                prompt.tokens = Vec::new();
            }
            prompt.kv = Some(kv);
            ready.push(*p);
        }
        self.stats.prompts += ready.len();
        self.scheduler.mark_ready(&ready);
        if no_room {
            self.evict_idle_held();
        }
        Ok(())
    }

    /// Held prompts are a cache: one that no row reads and no sample waits for leaves the
    /// pool when a prompt needs the room (it is prefilled again if its item takes another
    /// round). Without this, items between rounds could fill the pool with prompts their
    /// next rounds do not use and no new prompt could start. Returns how many left.
    fn evict_idle_held(&mut self) -> usize {
        let idle: Vec<usize> = self.prompts.iter().filter(|(_, x)| x.held && x.spent && x.readers == 0 && x.kv.is_some()).map(|(&p, _)| p).collect();
        for p in &idle {
            if let Some(kv) = self.prompts.get_mut(p).and_then(|x| x.kv.take()) {
                self.runner.free_prompt(&kv);
            }
        }
        idle.len()
    }

    /// A prompt whose samples are all admitted and finished leaves the pool.
    fn maybe_free(&mut self, p: usize) {
        if self.prompts.get(&p).is_some_and(|x| x.spent && x.readers == 0 && !x.held) {
            if let Some(kv) = self.prompts.remove(&p).and_then(|x| x.kv) {
                self.runner.free_prompt(&kv);
            }
        }
    }

    /// The sample in `row` finished: free the row and its hold on its prompt.
    fn finish_row(&mut self, row: usize, prompt: usize) {
        self.runner.release(row);
        self.scheduler.finish(row);
        if let Some(x) = self.prompts.get_mut(&prompt) {
            x.readers = x.readers.saturating_sub(1);
        }
        self.maybe_free(prompt);
    }

    fn admit(&mut self, finished: &mut Vec<(usize, GenOutput)>) -> Result<()> {
        let admitted = self.scheduler.admit();
        if admitted.is_empty() {
            return Ok(());
        }
        let kvs: Vec<PromptKv> = admitted
            .iter()
            .map(|(_, p, _)| self.prompts.get(p).and_then(|x| x.kv.clone()).ok_or(crate::EngineError::Device(format!("prompt {p} was admitted before its prefill"))))
            .collect::<Result<_>>()?;
        let pairs: Vec<(usize, &PromptKv)> = admitted.iter().zip(&kvs).map(|((_, _, row), kv)| (*row, kv)).collect();
        self.runner.admit(&pairs);
        for (_, p, _) in &admitted {
            if let Some(x) = self.prompts.get_mut(p) {
                x.readers += 1;
            }
        }
        // First tokens: each sample draws from its prompt's last logits with its own RNG.
        let mut rows_of: Vec<Tensor> = Vec::new();
        let mut i = 0;
        while i < kvs.len() {
            let mut j = i + 1;
            while j < kvs.len() && std::rc::Rc::ptr_eq(&kvs[j].logits, &kvs[i].logits) {
                j += 1;
            }
            let idx: Vec<u32> = kvs[i..j].iter().map(|k| k.row as u32).collect();
            let idx = Tensor::from_vec(idx, j - i, self.runner.device()).step("first tokens")?;
            rows_of.push(kvs[i].logits.index_select(&idx, 0).step("first tokens")?);
            i = j;
        }
        let logits = Tensor::cat(&rows_of, 0).step("first tokens")?;
        let mut newcomers: Vec<Option<Sequence>> = admitted.iter().map(|(s, _, _)| self.waiting.remove(s)).collect();
        self.stage.choose(&logits, &mut newcomers.iter_mut().map(Option::as_mut).collect::<Vec<_>>())?;
        for ((sample, prompt, row), seq) in admitted.iter().zip(newcomers) {
            let Some(seq) = seq else { continue };
            if seq.is_done() {
                self.finish_row(*row, *prompt);
                finished.push((*sample, seq.finish(|ids| self.tok.decode(ids))));
            } else {
                self.running[*row] = Some((*sample, seq));
            }
        }
        Ok(())
    }

    fn decode(&mut self, finished: &mut Vec<(usize, GenOutput)>) -> Result<()> {
        // Rows past the last live one are not computed.
        let active = self.runner.active();
        let tokens: Vec<u32> = self.running[..active].iter().map(|r| r.as_ref().and_then(|(_, s)| s.last_token()).unwrap_or(0)).collect();
        let live = self.running.iter().filter(|r| r.is_some()).count();
        let logits = self.runner.decode(&tokens)?;
        self.stats.decode_steps += 1;
        self.stats.decode_rows += active;
        self.stats.live_rows += live;
        let mut seqs: Vec<Option<&mut Sequence>> = self.running[..active].iter_mut().map(|r| r.as_mut().map(|(_, s)| s)).collect();
        self.stage.choose(&logits, &mut seqs)?;
        for row in 0..active {
            if self.running[row].as_ref().is_some_and(|(_, s)| s.is_done()) {
                if let Some((sample, seq)) = self.running[row].take() {
                    self.finish_row(row, seq.request().prompt);
                    finished.push((sample, seq.finish(|ids| self.tok.decode(ids))));
                }
            }
        }
        Ok(())
    }

    /// When at most half of the computed rows are live (a batch's tail, or a lull in
    /// arrivals), gather the live rows at the front: the rows behind them stop costing
    /// compute, and stay allocated for whatever arrives next.
    fn compact(&mut self) -> Result<()> {
        let active = self.runner.active();
        let live: Vec<usize> = (0..active).filter(|&r| self.running[r].is_some()).collect();
        if active < 8 || live.len() * 2 > active {
            return Ok(());
        }
        self.runner.pack(&live)?;
        self.scheduler.pack(&live);
        let mut packed: Vec<Option<(usize, Sequence)>> = live.iter().map(|&r| self.running[r].take()).collect();
        packed.resize_with(self.running.len(), || None);
        self.running = packed;
        Ok(())
    }
}
