//! The sampling stage: from one row of logits to a sequence's next token. Temperature and
//! top-p (on the device, `kernels::sample_rows`), the score-block constraint (once a
//! judgement writes `\boxed{`, only tokens that keep the block well formed, chosen from the
//! logits of the score vocabulary), stop tokens, and forced scores (a judgement about to run
//! out of budget gets `\nScores: \boxed{` appended and writes its scores under the
//! constraint).
//!
//! Each sequence has its own RNG and draws exactly one uniform per step it is live, so its
//! tokens depend on its own seed and logits only, never on the rows it shares a step with.

use std::collections::VecDeque;

use candle_core::Tensor;
use verdict_core::shuffle::SplitMix64;
use verdict_core::FinishReason;

use crate::constraint::{ScoreState, ScoreVocab};
use crate::error::{ComputeContext, Result};
use crate::kernels::sample_rows;
use crate::profile;
use crate::sampler::{sample, SamplingParams};

const BLOCK_OPEN: &str = "\\boxed{";

/// Tokens kept for a forced score block: the prefix that opens it, then the longest block
/// the grammar allows, one character per token.
pub(crate) fn forced_reserve(prefix_tokens: usize, n_scores: usize) -> usize {
    prefix_tokens + ScoreState::longest_block_chars(n_scores)
}

/// One sequence to generate.
#[derive(Debug, Clone)]
pub struct GenRequest {
    /// Index of its prompt in the caller's prompt list.
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

/// A finished sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct GenOutput {
    pub tokens: Vec<u32>,
    pub text: String,
    pub finish: FinishReason,
    pub forced: bool,
}

enum Phase {
    Free,
    Block(ScoreState),
}

/// A sequence being generated: what it wrote, its RNG, where it is in its judgement.
pub struct Sequence {
    req: GenRequest,
    pub generated: Vec<u32>,
    rng: SplitMix64,
    phase: Phase,
    pending: VecDeque<u32>,
    done: Option<FinishReason>,
    forced: bool,
    /// The last few characters written, to spot `\boxed{` without decoding.
    tail: String,
}

impl Sequence {
    pub fn new(req: GenRequest) -> Self {
        Self {
            generated: Vec::with_capacity(req.max_new_tokens.min(4096)),
            rng: SplitMix64::new(req.seed),
            phase: Phase::Free,
            pending: VecDeque::new(),
            done: None,
            forced: false,
            tail: String::new(),
            req,
        }
    }

    pub fn request(&self) -> &GenRequest {
        &self.req
    }

    pub fn is_done(&self) -> bool {
        self.done.is_some()
    }

    /// The token the next forward step feeds for this sequence.
    pub fn last_token(&self) -> Option<u32> {
        self.generated.last().copied()
    }

    fn in_block(&self) -> bool {
        matches!(self.phase, Phase::Block(_))
    }

    /// The finished sequence, its text decoded by `decode`.
    pub fn finish(self, decode: impl Fn(&[u32]) -> String) -> GenOutput {
        GenOutput { text: decode(&self.generated), finish: self.done.unwrap_or(FinishReason::Length), forced: self.forced, tokens: self.generated }
    }
}

/// What choosing a token needs besides logits: the vocabulary's texts, stop ids, the score
/// vocabulary, the forced prefix, and the sampling parameters.
pub struct SamplingStage<'a> {
    /// The text of each token id, decoded alone.
    pub token_texts: &'a [String],
    pub stop_ids: &'a [u32],
    pub score_vocab: &'a ScoreVocab,
    /// `\nScores: \boxed{`, tokenized.
    pub forced_prefix: &'a [u32],
    pub params: SamplingParams,
    /// Tokens the sampler may pick from (the tokenizer's; embedding rows past it are padding).
    pub vocab: usize,
    /// The score vocabulary's ids on the device, to gather the logits of block rows.
    pub score_ids: Tensor,
}

impl SamplingStage<'_> {
    /// Choose the next token of every sequence in `seqs` from its row of `logits`
    /// (`[seqs.len(), V]`; `None` rows are not sampled): one device sampling pass for all
    /// rows, plus the score-vocabulary logits of the rows inside a score block.
    pub fn choose(&self, logits: &Tensor, seqs: &mut [Option<&mut Sequence>]) -> Result<()> {
        if seqs.iter().all(Option::is_none) {
            return Ok(());
        }
        let device = logits.device().clone();
        let uniforms: Vec<f32> = seqs.iter_mut().map(|s| s.as_mut().map(|s| s.rng.next_f64() as f32).unwrap_or(0.0)).collect();
        let free = profile::time("decode", "sampling", &device, || sample_rows(logits, &uniforms, self.vocab, self.params)).step("sampling")?;
        let block_rows: Vec<u32> = (0..seqs.len()).filter(|&r| seqs[r].as_ref().is_some_and(|s| s.in_block())).map(|r| r as u32).collect();
        let mut block_logits = Vec::new();
        if !block_rows.is_empty() && !self.score_vocab.ids().is_empty() {
            let idx = Tensor::from_vec(block_rows.clone(), block_rows.len(), &device).step("score block")?;
            block_logits = logits.index_select(&idx, 0).and_then(|l| l.index_select(&self.score_ids, 1)).and_then(|l| l.to_vec2::<f32>()).step("score block")?;
        }
        for (r, seq) in seqs.iter_mut().enumerate() {
            let Some(seq) = seq else { continue };
            let cand = block_rows.iter().position(|&x| x as usize == r).map(|k| block_logits[k].as_slice());
            self.advance(seq, free[r], cand, uniforms[r]);
        }
        Ok(())
    }

    /// Append one token to `seq`: a pending forced token, else a token of the score block
    /// chosen from `cand` (the score vocabulary's logits, when the sequence is in its block),
    /// else `free` (sampled on the device from the whole vocabulary).
    pub fn advance(&self, seq: &mut Sequence, free: u32, cand: Option<&[f32]>, u: f32) {
        let req = &seq.req;
        if req.fixed_length {
            seq.generated.push(free);
            if seq.generated.len() >= req.max_new_tokens {
                seq.done = Some(FinishReason::Length);
            }
            return;
        }
        let remaining = req.max_new_tokens - seq.generated.len();
        if req.force_scores && !seq.in_block() && seq.pending.is_empty() && remaining <= forced_reserve(self.forced_prefix.len(), req.n_scores) && !seq.forced {
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
            let pick = sample(&sub, sub.len(), self.params, u);
            let (_, id, new_state) = allowed[pick].clone();
            let closed = new_state.closed();
            seq.phase = Phase::Block(new_state);
            seq.generated.push(id);
            if closed {
                seq.done = Some(FinishReason::ScoreBlock);
            } else if seq.generated.len() >= seq.req.max_new_tokens {
                seq.done = Some(FinishReason::Length);
            }
            return;
        } else {
            free
        };

        if seq.pending.is_empty() && !seq.forced && self.stop_ids.contains(&token) {
            seq.done = Some(FinishReason::Eos);
            return;
        }
        seq.generated.push(token);
        if self.opened_block(seq, token) {
            seq.phase = Phase::Block(ScoreState::new(seq.req.n_scores));
        }
        if seq.generated.len() >= seq.req.max_new_tokens {
            seq.done = Some(FinishReason::Length);
        }
    }

    /// Whether `token` completed a `\boxed{`: its text is appended to the sequence's last few
    /// characters, which are then checked for the marker.
    fn opened_block(&self, seq: &mut Sequence, token: u32) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// A character-level vocabulary: one token per character of `chars`, plus `<eos>`.
    struct Vocab {
        texts: Vec<String>,
        score: ScoreVocab,
        ids: Tensor,
    }

    const CHARS: &str = "ab \\boxed{}0123456789,S:\n";

    fn vocab() -> Vocab {
        let mut texts: Vec<String> = CHARS.chars().map(|c| c.to_string()).collect();
        texts.push("<eos>".into());
        let score = ScoreVocab::new(&texts);
        let ids = Tensor::from_slice(score.ids(), score.ids().len(), &Device::Cpu).unwrap();
        Vocab { texts, score, ids }
    }

    fn id(v: &Vocab, s: &str) -> Vec<u32> {
        s.chars().map(|c| v.texts.iter().position(|t| *t == c.to_string()).unwrap() as u32).collect()
    }

    fn request(max_new: usize, force: bool) -> GenRequest {
        GenRequest { prompt: 0, seed: 7, max_new_tokens: max_new, n_scores: 2, force_scores: force, fixed_length: false }
    }

    #[test]
    fn a_judgement_about_to_run_out_is_made_to_write_its_scores() {
        let v = vocab();
        let eos = [v.texts.len() as u32 - 1];
        let prefix = id(&v, "\nS:\\boxed{");
        let params = SamplingParams { temperature: 1.0, top_p: 1.0 };
        let stage = SamplingStage { token_texts: &v.texts, stop_ids: &eos, score_vocab: &v.score, forced_prefix: &prefix, params, vocab: v.texts.len(), score_ids: v.ids.clone() };
        for max_new in [prefix.len() + 10, prefix.len() + 4, 40] {
            let mut seq = Sequence::new(request(max_new, true));
            let a = id(&v, "a")[0];
            // The model only ever proposes `a`; every score logit is equal.
            let cand = vec![0.0f32; v.score.ids().len()];
            let mut steps = 0;
            while !seq.is_done() {
                let u = seq.rng.next_f64() as f32;
                stage.advance(&mut seq, a, Some(&cand), u);
                steps += 1;
                assert!(steps <= max_new, "ran past the budget");
            }
            let out = seq.finish(|ids| ids.iter().map(|&i| v.texts[i as usize].clone()).collect());
            assert!(out.forced && out.finish == FinishReason::ScoreBlock, "{max_new}: {out:?}");
            assert!(out.tokens.len() <= max_new);
            assert!(verdict_core::parse::parse_scores(&out.text, 2).is_ok(), "{max_new}: {:?}", out.text);
        }
    }

    #[test]
    fn stop_tokens_end_a_free_judgement_and_fixed_length_ignores_them() {
        let v = vocab();
        let eos_id = v.texts.len() as u32 - 1;
        let eos = [eos_id];
        let prefix = id(&v, "\\boxed{");
        let params = SamplingParams { temperature: 0.0, top_p: 1.0 };
        let stage = SamplingStage { token_texts: &v.texts, stop_ids: &eos, score_vocab: &v.score, forced_prefix: &prefix, params, vocab: v.texts.len(), score_ids: v.ids.clone() };
        let mut seq = Sequence::new(request(50, true));
        stage.advance(&mut seq, id(&v, "a")[0], None, 0.5);
        stage.advance(&mut seq, eos_id, None, 0.5);
        assert!(seq.is_done());
        assert_eq!(seq.finish(|_| String::new()).finish, FinishReason::Eos);
        let mut fixed = Sequence::new(GenRequest { fixed_length: true, ..request(3, true) });
        for _ in 0..3 {
            stage.advance(&mut fixed, eos_id, None, 0.5);
        }
        let out = fixed.finish(|_| String::new());
        assert_eq!((out.tokens.len(), out.finish), (3, FinishReason::Length));
    }
}
