//! Batched generation with shared prompt prefills.
//!
//! A batch is a set of distinct prompts and the sequences (samples) that continue them. Each
//! distinct prompt is prefilled once; its keys and values are copied into the cache rows of
//! every sample that uses it (an item with two responses and k = 8 costs two prefills, not
//! eight). Then the whole batch decodes one token per step. Each sequence has its own RNG,
//! its own stop condition and its own score-block state; a sequence that runs short of
//! budget before its scores may be made to write them.
//!
//! Per step, only small things cross between host and device: the token ids in, the chosen
//! ids out (sampling runs on the device, `kernels::sample_rows`), and the logits of the few
//! score-block tokens for the rows that are inside a score block. When half the rows have
//! finished, the finished ones are dropped from the cache, so they stop costing compute.

use std::collections::VecDeque;

use candle_core::{Tensor, D};
use verdict_core::shuffle::SplitMix64;
use verdict_core::FinishReason;

use crate::constraint::{ScoreState, ScoreVocab};
use crate::error::{ComputeContext, Result};
use crate::kernels::sample_rows;
use crate::model::{causal_mask, Decoder, KvCache, Step};
use crate::profile;
use crate::sampler::{sample, SamplingParams};
use crate::tokenizer::Tok;

/// Most prompt tokens (padding included) prefilled in one forward pass: bounds the prefill's
/// activations and attention scores, which grow with the square of the prompt length.
pub(crate) const PREFILL_TOKENS: usize = 16_384;

/// One sequence to generate.
#[derive(Debug, Clone)]
pub struct GenRequest {
    /// Index of its prompt in the batch's prompt list.
    pub prompt: usize,
    pub seed: u64,
    pub max_new_tokens: usize,
    /// Number of responses, for the score-block constraint.
    pub n_scores: usize,
    /// Make the judge write its scores when the budget is about to run out.
    pub force_scores: bool,
    /// Generate exactly `max_new_tokens`, ignoring stop tokens and the score block (for
    /// benchmarks that compare fixed lengths).
    pub fixed_length: bool,
}

#[derive(Debug, Clone)]
pub struct GenOutput {
    pub tokens: Vec<u32>,
    pub text: String,
    pub finish: FinishReason,
    pub forced: bool,
}

/// What one batch cost, for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default)]
pub struct GenStats {
    /// Sequences in the batch.
    pub sequences: usize,
    /// Distinct prompts prefilled.
    pub prompts: usize,
    /// Prompt tokens computed in prefill, padding included.
    pub prefill_tokens: usize,
    /// Tokens generated (kept) over all sequences.
    pub generated_tokens: usize,
    /// Decode forward passes.
    pub decode_steps: usize,
    /// Sum over decode steps of the rows computed (finished rows still in the cache count).
    pub decode_rows: usize,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
}

impl GenStats {
    pub fn add(&mut self, o: &GenStats) {
        self.sequences += o.sequences;
        self.prompts += o.prompts;
        self.prefill_tokens += o.prefill_tokens;
        self.generated_tokens += o.generated_tokens;
        self.decode_steps += o.decode_steps;
        self.decode_rows += o.decode_rows;
        self.prefill_seconds += o.prefill_seconds;
        self.decode_seconds += o.decode_seconds;
    }
}

const BLOCK_OPEN: &str = "\\boxed{";

/// Tokens kept for a forced score block: the prefix that opens it, then the longest block
/// the grammar allows, one character per token.
pub(crate) fn forced_reserve(prefix_tokens: usize, n_scores: usize) -> usize {
    prefix_tokens + ScoreState::longest_block_chars(n_scores)
}

enum Phase {
    Free,
    Block(ScoreState),
}

struct Seq {
    generated: Vec<u32>,
    rng: SplitMix64,
    phase: Phase,
    pending: VecDeque<u32>,
    done: Option<FinishReason>,
    forced: bool,
    /// The last few characters written, to spot `\boxed{` without decoding.
    tail: String,
}

/// What a generator needs besides the model: the tokenizer and the precomputed token sets.
pub struct Generator<'a> {
    pub model: &'a Decoder,
    pub tok: &'a Tok,
    /// The text of each token id, decoded alone.
    pub token_texts: &'a [String],
    pub score_vocab: &'a ScoreVocab,
    /// The forced score prefix (`\nScores: \boxed{`), tokenized.
    pub forced_prefix: &'a [u32],
}

impl Generator<'_> {
    /// Generate all requests as one batch; outputs come back in request order.
    pub fn generate(&self, prompts: &[&[u32]], reqs: &[GenRequest], params: SamplingParams) -> Result<(Vec<GenOutput>, GenStats)> {
        let mut stats = GenStats { sequences: reqs.len(), ..Default::default() };
        if reqs.is_empty() {
            return Ok((vec![], stats));
        }
        let device = self.model.device().clone();
        let started = std::time::Instant::now();

        // Rows grouped by prompt, so the samples of one prompt occupy consecutive rows.
        let mut order: Vec<usize> = (0..reqs.len()).collect();
        order.sort_by_key(|&i| reqs[i].prompt);
        let mut used: Vec<usize> = order.iter().map(|&i| reqs[i].prompt).collect();
        used.dedup();
        let p = used.iter().map(|&u| prompts[u].len()).max().unwrap_or(0);
        let max_new = reqs.iter().map(|r| r.max_new_tokens).max().unwrap_or(0);
        let window = self.model.sliding_window();
        let pad_id = self.tok.stop_ids.first().copied().unwrap_or(0);
        let b = reqs.len();
        let mut cache = KvCache::new(self.model.config(), b, p + max_new, self.model.dtype(), &device).step("allocating the KV cache")?;

        // Prefill each distinct prompt once, in chunks, and fan it out to its samples' rows.
        let per_chunk = (PREFILL_TOKENS / p.max(1)).max(1);
        let mut first_logits = Vec::new();
        let mut row = 0;
        for chunk in used.chunks(per_chunk) {
            // Left-pad to the batch's longest prompt so every row decodes at one offset.
            let refs: Vec<&[u32]> = chunk.iter().map(|&u| prompts[u]).collect();
            let (step, _) = Step::left_padded(&refs, p, pad_id, window, &device).step("prefill input")?;
            let mut pre = KvCache::new(self.model.config(), chunk.len(), p, self.model.dtype(), &device).step("allocating the prefill cache")?;
            let hidden = profile::time("prefill", "forward", &device, || self.model.forward(&step, &mut pre)).step("prefill")?;
            let logits = self.model.head(&Decoder::last(&hidden).step("prefill")?).step("prefill head")?;
            stats.prefill_tokens += chunk.len() * p;
            stats.prompts += chunk.len();

            let first = row;
            let mut src = Vec::new();
            while row < b && chunk.contains(&reqs[order[row]].prompt) {
                let u = reqs[order[row]].prompt;
                src.push(chunk.iter().position(|&c| c == u).unwrap_or(0) as u32);
                row += 1;
            }
            let src = Tensor::from_vec(src, row - first, &device).step("prefill fan-out")?;
            profile::time("prefill", "fan-out", &device, || cache.copy_rows_from(&pre, &src, first)).step("prefill fan-out")?;
            first_logits.push(logits.index_select(&src, 0).step("prefill fan-out")?);
        }
        let mut logits = Tensor::cat(&first_logits, 0).step("prefill logits")?;
        drop(first_logits);
        let pads_all: Vec<usize> = order.iter().map(|&i| p - prompts[reqs[i].prompt].len()).collect();
        stats.prefill_seconds = started.elapsed().as_secs_f64();
        let decode_started = std::time::Instant::now();

        let mut seqs: Vec<Seq> = reqs
            .iter()
            .map(|r| Seq {
                generated: Vec::with_capacity(r.max_new_tokens),
                rng: SplitMix64::new(r.seed),
                phase: Phase::Free,
                pending: VecDeque::new(),
                done: None,
                forced: false,
                tail: String::new(),
            })
            .collect();
        // rows[r] is the request decoded in cache row r; pads[r] its left padding.
        let mut rows: Vec<usize> = order.clone();
        let mut pads = pads_all;
        let cand_ids = Tensor::from_slice(self.score_vocab.ids(), self.score_vocab.ids().len(), &device).step("score vocabulary")?;
        let mut full_mask = causal_mask(&pads, p + max_new - 1, 1, None, &device).step("decode mask")?;
        let pads_tensor = |pads: &[usize]| Tensor::from_vec(pads.iter().map(|&x| x as u32).collect::<Vec<_>>(), pads.len(), &device);
        let mut pads_dev = pads_tensor(&pads).step("decode input")?;

        for s in 0..max_new {
            let uniforms: Vec<f32> = rows
                .iter()
                .map(|&i| if seqs[i].done.is_none() { seqs[i].rng.next_f64() as f32 } else { 0.0 })
                .collect();
            let free = profile::time("decode", "sampling", &device, || sample_rows(&logits, &uniforms, self.tok.vocab, params)).step("sampling")?;
            let block_rows: Vec<u32> = (0..rows.len())
                .filter(|&r| seqs[rows[r]].done.is_none() && matches!(seqs[rows[r]].phase, Phase::Block(_)))
                .map(|r| r as u32)
                .collect();
            let mut block_logits = Vec::new();
            if !block_rows.is_empty() && !self.score_vocab.ids().is_empty() {
                let idx = Tensor::from_vec(block_rows.clone(), block_rows.len(), &device).step("score block")?;
                block_logits = logits.index_select(&idx, 0).and_then(|l| l.index_select(&cand_ids, 1)).and_then(|l| l.to_vec2::<f32>()).step("score block")?;
            }
            let mut next = Vec::with_capacity(rows.len());
            for (r, &i) in rows.iter().enumerate() {
                if seqs[i].done.is_none() {
                    let cand = block_rows.iter().position(|&x| x as usize == r).map(|k| block_logits[k].as_slice());
                    self.advance(&mut seqs[i], &reqs[i], free[r], cand, uniforms[r], params);
                }
                next.push(seqs[i].generated.last().copied().unwrap_or(pad_id));
            }
            let live: Vec<usize> = (0..rows.len()).filter(|&r| seqs[rows[r]].done.is_none()).collect();
            if live.is_empty() {
                break;
            }
            // Drop finished rows once they are half the batch.
            if live.len() * 2 <= rows.len() && rows.len() >= 8 {
                let keep = Tensor::from_vec(live.iter().map(|&r| r as u32).collect::<Vec<_>>(), live.len(), &device).step("compaction")?;
                cache.retain_rows(&keep).step("compaction")?;
                full_mask = full_mask.index_select(&keep, 0).step("compaction")?;
                rows = live.iter().map(|&r| rows[r]).collect();
                pads = live.iter().map(|&r| pads[r]).collect();
                pads_dev = pads_tensor(&pads).step("compaction")?;
                next = live.iter().map(|&r| next[r]).collect();
            }
            let offset = p + s;
            let n = rows.len();
            let step = Step {
                tokens: Tensor::from_vec(next, (n, 1), &device).step("decode input")?,
                positions: Tensor::from_vec(pads.iter().map(|&pad| (offset - pad) as u32).collect::<Vec<_>>(), (n, 1), &device)
                    .step("decode input")?,
                mask: full_mask.narrow(D::Minus1, 0, offset + 1).step("decode mask")?,
                sliding_mask: window.map(|w| causal_mask(&pads, offset, 1, Some(w), &device)).transpose().step("decode mask")?,
                offset,
                pads: Some(pads_dev.clone()),
            };
            let hidden = profile::time("decode", "forward", &device, || self.model.forward(&step, &mut cache)).step("decode step")?;
            logits = self.model.head(&Decoder::last(&hidden).step("decode step")?).step("decode head")?;
            stats.decode_steps += 1;
            stats.decode_rows += n;
        }
        stats.decode_seconds = decode_started.elapsed().as_secs_f64();

        let outputs: Vec<GenOutput> = seqs
            .into_iter()
            .map(|q| GenOutput {
                text: self.tok.decode(&q.generated),
                finish: q.done.unwrap_or(FinishReason::Length),
                forced: q.forced,
                tokens: q.generated,
            })
            .collect();
        stats.generated_tokens = outputs.iter().map(|o| o.tokens.len()).sum();
        Ok((outputs, stats))
    }

    /// Choose and append one token for `seq`: a pending forced token, else a token of the
    /// score block chosen from `cand` (the score vocabulary's logits, when the sequence is in
    /// its block), else `free` (sampled on the device from the whole vocabulary).
    fn advance(&self, seq: &mut Seq, req: &GenRequest, free: u32, cand: Option<&[f32]>, u: f32, params: SamplingParams) {
        if req.fixed_length {
            seq.generated.push(free);
            if seq.generated.len() >= req.max_new_tokens {
                seq.done = Some(FinishReason::Length);
            }
            return;
        }
        let remaining = req.max_new_tokens - seq.generated.len();
        if req.force_scores && matches!(seq.phase, Phase::Free) && seq.pending.is_empty() && remaining <= forced_reserve(self.forced_prefix.len(), req.n_scores) && !seq.forced {
            seq.pending.extend(self.forced_prefix.iter().copied());
            seq.forced = true;
        }
        let token = if let Some(t) = seq.pending.pop_front() {
            t
        } else if let Phase::Block(state) = &seq.phase {
            let allowed = self.score_vocab.allowed(state, remaining);
            let Some(cand) = cand.filter(|_| !allowed.is_empty()) else {
                seq.done = Some(FinishReason::Length);
                return;
            };
            let sub: Vec<f32> = allowed.iter().map(|(col, _, _)| cand[*col]).collect();
            let pick = sample(&sub, sub.len(), params, u);
            let (_, id, new_state) = allowed[pick].clone();
            let closed = new_state.closed();
            seq.phase = Phase::Block(new_state);
            seq.generated.push(id);
            if closed {
                seq.done = Some(FinishReason::ScoreBlock);
            } else if seq.generated.len() >= req.max_new_tokens {
                seq.done = Some(FinishReason::Length);
            }
            return;
        } else {
            free
        };

        if seq.pending.is_empty() && !seq.forced && self.tok.stop_ids.contains(&token) {
            seq.done = Some(FinishReason::Eos);
            return;
        }
        seq.generated.push(token);
        if self.opened_block(seq, token) {
            seq.phase = Phase::Block(ScoreState::new(req.n_scores));
        }
        if seq.generated.len() >= req.max_new_tokens {
            seq.done = Some(FinishReason::Length);
        }
    }

    /// Whether `token` completed a `\boxed{`: its text is appended to the sequence's last few
    /// characters, which are then checked for the marker.
    fn opened_block(&self, seq: &mut Seq, token: u32) -> bool {
        let piece = self.token_texts.get(token as usize).map(String::as_str).unwrap_or("");
        if piece.is_empty() {
            return false;
        }
        seq.tail.push_str(piece);
        let keep = 2 * BLOCK_OPEN.len();
        if seq.tail.len() > keep {
            let mut cut = seq.tail.len() - keep;
            while !seq.tail.is_char_boundary(cut) {
                cut += 1;
            }
            seq.tail.drain(..cut);
        }
        seq.tail.ends_with(BLOCK_OPEN)
    }
}
