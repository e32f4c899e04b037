//! Batched generation: the prompts of many samples (of many items) are left-padded into one
//! batch, prefilled together, then decoded one token per step for the whole batch. Each
//! sequence has its own RNG, its own stop condition and its own score-block state; a
//! sequence that runs short of budget before its scores may be made to write them.

use std::collections::VecDeque;

use candle_core::Tensor;
use verdict_core::shuffle::SplitMix64;
use verdict_core::FinishReason;

use crate::constraint::{ScoreState, ScoreVocab};
use crate::error::{ComputeContext, Result};
use crate::model::{causal_mask, Decoder, KvCache, Step};
use crate::sampler::{sample, SamplingParams};
use crate::tokenizer::Tok;

/// One sequence to generate.
#[derive(Debug, Clone)]
pub struct GenRequest {
    pub prompt: Vec<u32>,
    pub seed: u64,
    pub max_new_tokens: usize,
    /// Number of responses, for the score-block constraint.
    pub n_scores: usize,
    /// Make the judge write its scores when the budget is about to run out.
    pub force_scores: bool,
}

#[derive(Debug, Clone)]
pub struct GenOutput {
    pub tokens: Vec<u32>,
    pub text: String,
    pub finish: FinishReason,
    pub forced: bool,
}

const BLOCK_OPEN: &str = "\\boxed{";

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
}

/// What a generator needs besides the model: the tokenizer and the precomputed token sets.
pub struct Generator<'a> {
    pub model: &'a Decoder,
    pub tok: &'a Tok,
    pub score_vocab: &'a ScoreVocab,
    /// The forced score prefix (`\nScores: \boxed{`), tokenized.
    pub forced_prefix: &'a [u32],
}

impl Generator<'_> {
    /// Generate all requests as one batch.
    pub fn generate(&self, reqs: &[GenRequest], params: SamplingParams) -> Result<Vec<GenOutput>> {
        if reqs.is_empty() {
            return Ok(vec![]);
        }
        let device = self.model.device().clone();
        let dtype = self.model.dtype();
        let b = reqs.len();
        let p = reqs.iter().map(|r| r.prompt.len()).max().unwrap_or(0);
        let max_new = reqs.iter().map(|r| r.max_new_tokens).max().unwrap_or(0);
        let pads: Vec<usize> = reqs.iter().map(|r| p - r.prompt.len()).collect();
        let window = self.model.sliding_window();
        let pad_id = self.tok.stop_ids.first().copied().unwrap_or(0);

        let mut tokens = Vec::with_capacity(b * p);
        let mut positions = Vec::with_capacity(b * p);
        for (r, &pad) in reqs.iter().zip(&pads) {
            tokens.extend(std::iter::repeat_n(pad_id, pad));
            tokens.extend_from_slice(&r.prompt);
            positions.extend((0..p).map(|c| c.saturating_sub(pad) as u32));
        }
        let mut cache = KvCache::new(self.model.config(), b, p + max_new, dtype, &device).step("allocating the KV cache")?;
        let step = Step {
            tokens: Tensor::from_vec(tokens, (b, p), &device).step("prefill input")?,
            positions: Tensor::from_vec(positions, (b, p), &device).step("prefill input")?,
            mask: causal_mask(&pads, 0, p, None, dtype, &device).step("prefill mask")?,
            sliding_mask: window.map(|w| causal_mask(&pads, 0, p, Some(w), dtype, &device)).transpose().step("prefill mask")?,
            offset: 0,
        };
        let hidden = self.model.forward(&step, &mut cache).step("prefill")?;
        let mut logits = self.model.head(&Decoder::last(&hidden).step("prefill")?).step("prefill head")?;

        let mut seqs: Vec<Seq> = reqs
            .iter()
            .map(|r| Seq {
                generated: Vec::with_capacity(r.max_new_tokens),
                rng: SplitMix64::new(r.seed),
                phase: Phase::Free,
                pending: VecDeque::new(),
                done: None,
                forced: false,
            })
            .collect();

        for s in 0..max_new {
            let rows: Vec<Vec<f32>> = logits.to_vec2().step("reading logits")?;
            let mut next = Vec::with_capacity(b);
            for (i, (seq, req)) in seqs.iter_mut().zip(reqs).enumerate() {
                if seq.done.is_none() {
                    self.advance(seq, req, &rows[i], params);
                }
                next.push(seq.generated.last().copied().unwrap_or(pad_id));
            }
            if seqs.iter().all(|q| q.done.is_some()) {
                break;
            }
            let offset = p + s;
            let step = Step {
                tokens: Tensor::from_vec(next, (b, 1), &device).step("decode input")?,
                positions: Tensor::from_vec(
                    pads.iter().map(|&pad| (offset - pad) as u32).collect::<Vec<_>>(),
                    (b, 1),
                    &device,
                )
                .step("decode input")?,
                mask: causal_mask(&pads, offset, 1, None, dtype, &device).step("decode mask")?,
                sliding_mask: window.map(|w| causal_mask(&pads, offset, 1, Some(w), dtype, &device)).transpose().step("decode mask")?,
                offset,
            };
            let hidden = self.model.forward(&step, &mut cache).step("decode step")?;
            logits = self.model.head(&Decoder::last(&hidden).step("decode step")?).step("decode head")?;
        }

        Ok(seqs
            .into_iter()
            .map(|q| GenOutput {
                text: self.tok.decode(&q.generated),
                finish: q.done.unwrap_or(FinishReason::Length),
                forced: q.forced,
                tokens: q.generated,
            })
            .collect())
    }

    /// Choose and append one token for `seq`, updating its phase and stop state.
    fn advance(&self, seq: &mut Seq, req: &GenRequest, logits: &[f32], params: SamplingParams) {
        let remaining = req.max_new_tokens - seq.generated.len();
        let reserve = self.forced_prefix.len() + ScoreState::worst_case_tokens(req.n_scores);
        if req.force_scores && matches!(seq.phase, Phase::Free) && seq.pending.is_empty() && remaining <= reserve && !seq.forced {
            seq.pending.extend(self.forced_prefix.iter().copied());
            seq.forced = true;
        }
        let token = if let Some(t) = seq.pending.pop_front() {
            t
        } else if let Phase::Block(state) = &seq.phase {
            let allowed = self.score_vocab.allowed(state);
            if allowed.is_empty() {
                seq.done = Some(FinishReason::Length);
                return;
            }
            let sub: Vec<f32> = allowed.iter().map(|(id, _)| logits[*id as usize]).collect();
            let pick = sample(&sub, sub.len(), params, &mut seq.rng);
            let (id, new_state) = allowed[pick].clone();
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
            sample(logits, self.tok.vocab, params, &mut seq.rng) as u32
        };

        if seq.pending.is_empty() && !seq.forced && self.tok.stop_ids.contains(&token) {
            seq.done = Some(FinishReason::Eos);
            return;
        }
        seq.generated.push(token);
        if self.opened_block(&seq.generated) {
            seq.phase = Phase::Block(ScoreState::new(req.n_scores));
        }
        if seq.generated.len() >= req.max_new_tokens {
            seq.done = Some(FinishReason::Length);
        }
    }

    /// Whether the last token completed a `\boxed{` (looking at a short window, since the
    /// marker spans at most a few tokens).
    fn opened_block(&self, generated: &[u32]) -> bool {
        let n = generated.len();
        let from = n.saturating_sub(8);
        let after = self.tok.decode(&generated[from..]);
        if !after.ends_with(BLOCK_OPEN) {
            return false;
        }
        let before = self.tok.decode(&generated[from..n - 1]);
        after.matches(BLOCK_OPEN).count() > before.matches(BLOCK_OPEN).count()
    }
}
