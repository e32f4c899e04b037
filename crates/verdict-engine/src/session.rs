//! A judging session: prepared items in, verdicts out. Every sample of every submitted item
//! goes to one continuously batched [`Engine`]; an item's verdict is parsed, rated by the
//! meta RM and aggregated in the step its last sample finishes, so a caller can write or
//! report it while the engine keeps decoding the rest. Under adaptive k an item's samples
//! go in rounds: when a round is done its samples are checked against the spec's stop rule
//! ([`verdict_core::adaptive`]), and the next round is queued only for items still open.

use std::collections::HashMap;

use verdict_core::shuffle::{mix, SAMPLING_TAG};
use verdict_core::{LabelSpec, OnBudget, VerdictRecord};

use crate::engine::{Engine, GenOutput, GenRequest, GenStats};
use crate::error::{EngineError, Result};
use crate::judge::{Judge, PreparedItem};

struct InFlight {
    item: PreparedItem,
    /// Per sample of the item (all k), once it is done.
    outputs: Vec<Option<GenOutput>>,
    /// Samples of the current round not done yet.
    remaining: usize,
    /// Samples queued so far (all k at once, or adaptive k's rounds).
    taken: usize,
    /// The engine's ids of the item's distinct prompts.
    prompts: Vec<usize>,
    /// Benchmarks: each sample's exact length.
    lengths: Option<Vec<usize>>,
}

pub struct Session<'a> {
    judge: &'a Judge,
    spec: LabelSpec,
    engine: Engine<'a>,
    fixed_length: bool,
    /// Items submitted and not finished, by the caller's tag.
    items: HashMap<usize, InFlight>,
    /// Engine sample id → (tag, sample index).
    owners: HashMap<usize, (usize, usize)>,
    /// Items with no sample left to make (an extension to the k they already have): voted
    /// at the next step.
    complete: Vec<usize>,
}

impl<'a> Session<'a> {
    pub(crate) fn new(judge: &'a Judge, spec: LabelSpec, engine: Engine<'a>, fixed_length: bool) -> Self {
        Self { judge, spec, engine, fixed_length, items: HashMap::new(), owners: HashMap::new(), complete: Vec::new() }
    }

    pub fn spec(&self) -> &LabelSpec {
        &self.spec
    }

    /// Whether this session's cache holds the item's prompts (a session is sized for prompts
    /// of up to a length; a longer one needs a session of its own).
    pub fn fits(&self, item: &PreparedItem) -> bool {
        item.prompts.iter().all(|(_, ids)| ids.len() <= self.engine.max_prompt())
    }

    /// Queue an item's k samples, under the caller's `tag` (returned with its verdict).
    pub fn submit(&mut self, tag: usize, item: PreparedItem) -> Result<()> {
        self.submit_inner(tag, item, None)
    }

    /// `submit`, with sample j generating exactly `lengths[j]` tokens whatever it writes
    /// (benchmarks of varied judgement lengths; the verdicts mean nothing then). Each length
    /// is at most the spec's `max_new_tokens`.
    pub fn submit_fixed(&mut self, tag: usize, item: PreparedItem, lengths: &[usize]) -> Result<()> {
        if lengths.len() != item.samples.len() || lengths.iter().any(|&l| l == 0 || l > self.spec.max_new_tokens as usize) {
            return Err(EngineError::Device(format!("item {}: {} lengths in 1..={} for {} samples", item.item.id, lengths.len(), self.spec.max_new_tokens, item.samples.len())));
        }
        self.submit_inner(tag, item, Some(lengths))
    }

    fn submit_inner(&mut self, tag: usize, item: PreparedItem, lengths: Option<&[usize]>) -> Result<()> {
        if !self.fits(&item) {
            return Err(EngineError::Device(format!("item {}: a prompt is longer than this session's {} tokens", item.item.id, self.engine.max_prompt())));
        }
        let adaptive = self.spec.adaptive;
        if adaptive.is_some() && item.first > 0 {
            return Err(EngineError::Spec(format!("item {}: adaptive k samples an item from its first sample; it cannot extend an earlier run", item.item.id)));
        }
        // Under adaptive k the prompts stay between rounds, so a round starts without a prefill.
        let prompts: Vec<usize> = item
            .prompts
            .iter()
            .map(|(_, ids)| if adaptive.is_some() { self.engine.add_held_prompt(ids.clone()) } else { self.engine.add_prompt(ids.clone()) })
            .collect();
        let k = item.samples.len();
        let first_round = adaptive.map_or(k, |a| a.next_round(0, k as u32) as usize);
        let mut f = InFlight { outputs: vec![None; k], remaining: 0, taken: 0, prompts, lengths: lengths.map(<[usize]>::to_vec), item };
        self.start_round(tag, &mut f, first_round);
        if k == 0 {
            self.complete.push(tag);
        }
        self.items.insert(tag, f);
        Ok(())
    }

    /// Queue the item's next `n` samples.
    fn start_round(&mut self, tag: usize, f: &mut InFlight, n: usize) {
        let max_new = self.spec.max_new_tokens as usize;
        for j in f.taken..f.taken + n {
            let sample = self.engine.add_sample(GenRequest {
                prompt: f.prompts[f.item.samples[j].1],
                // Seeded by the sample's index in the item, so samples `first..` of an
                // extension, or of a later round, are those of a fresh run.
                seed: mix(&[SAMPLING_TAG, self.spec.seed, f.item.item_seed, f.item.first as u64 + j as u64]),
                max_new_tokens: f.lengths.as_ref().map(|l| l[j]).unwrap_or(max_new),
                n_scores: f.item.item.responses.len(),
                force_scores: self.spec.on_budget == OnBudget::Force,
                fixed_length: self.fixed_length || f.lengths.is_some(),
            });
            self.owners.insert(sample, (tag, j));
        }
        f.taken += n;
        f.remaining += n;
    }

    /// One engine step; returns the items whose last sample finished in it, with verdicts.
    pub fn step(&mut self) -> Result<Vec<(usize, VerdictRecord)>> {
        let mut done: Vec<_> = self.complete.drain(..).filter_map(|tag| self.items.remove(&tag).map(|f| (tag, (f.item, Vec::new(), None)))).collect();
        let mut round_over = Vec::new();
        for (sample, out) in self.engine.step()? {
            let Some((tag, j)) = self.owners.remove(&sample) else { continue };
            let Some(f) = self.items.get_mut(&tag) else { continue };
            f.outputs[j] = Some(out);
            f.remaining -= 1;
            if f.remaining == 0 {
                round_over.push(tag);
            }
        }
        for tag in round_over {
            let Some(mut f) = self.items.remove(&tag) else { continue };
            let stopped = match self.spec.adaptive {
                None => None,
                Some(a) => {
                    let k = f.item.samples.len() as u32;
                    let so_far = self.judge.samples_of(&f.item, f.outputs[..f.taken].iter().flatten());
                    match a.check(&so_far, f.item.item.responses.len(), k) {
                        Some(why) => Some(why),
                        None => {
                            let n = a.next_round(f.taken as u32, k) as usize;
                            self.start_round(tag, &mut f, n);
                            self.items.insert(tag, f);
                            continue;
                        }
                    }
                }
            };
            for p in &f.prompts {
                self.engine.release_prompt(*p);
            }
            let outs: Vec<GenOutput> = f.outputs.into_iter().take(f.taken).flatten().collect();
            done.push((tag, (f.item, outs, stopped)));
        }
        if done.is_empty() {
            return Ok(vec![]);
        }
        let (tags, finished): (Vec<usize>, Vec<_>) = done.into_iter().unzip();
        Ok(tags.into_iter().zip(self.judge.verdicts(finished, &self.spec)?).collect())
    }

    /// Nothing submitted is left to judge.
    pub fn is_idle(&self) -> bool {
        self.complete.is_empty() && self.engine.is_idle()
    }

    /// Rows of the batch.
    pub fn rows(&self) -> usize {
        self.engine.rows()
    }

    pub fn stats(&self) -> GenStats {
        self.engine.stats()
    }
}
