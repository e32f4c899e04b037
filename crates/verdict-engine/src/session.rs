//! A judging session: prepared items in, verdicts out. Every sample of every submitted item
//! goes to one continuously batched [`Engine`]; an item's verdict is parsed, rated by the
//! meta RM and aggregated in the step its last sample finishes, so a caller can write or
//! report it while the engine keeps decoding the rest.

use std::collections::HashMap;

use verdict_core::shuffle::{mix, SAMPLING_TAG};
use verdict_core::{LabelSpec, OnBudget, VerdictRecord};

use crate::engine::{Engine, GenOutput, GenRequest, GenStats};
use crate::error::{EngineError, Result};
use crate::judge::{Judge, PreparedItem};

struct InFlight {
    item: PreparedItem,
    outputs: Vec<Option<GenOutput>>,
    remaining: usize,
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
}

impl<'a> Session<'a> {
    pub(crate) fn new(judge: &'a Judge, spec: LabelSpec, engine: Engine<'a>, fixed_length: bool) -> Self {
        Self { judge, spec, engine, fixed_length, items: HashMap::new(), owners: HashMap::new() }
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
        let max_new = self.spec.max_new_tokens as usize;
        let prompt_ids: Vec<usize> = item.prompts.iter().map(|(_, ids)| self.engine.add_prompt(ids.clone())).collect();
        for (j, (_, prompt)) in item.samples.iter().enumerate() {
            let sample = self.engine.add_sample(GenRequest {
                prompt: prompt_ids[*prompt],
                seed: mix(&[SAMPLING_TAG, self.spec.seed, item.item_seed, j as u64]),
                max_new_tokens: lengths.map(|l| l[j]).unwrap_or(max_new),
                n_scores: item.item.responses.len(),
                force_scores: self.spec.on_budget == OnBudget::Force,
                fixed_length: self.fixed_length || lengths.is_some(),
            });
            self.owners.insert(sample, (tag, j));
        }
        let k = item.samples.len();
        self.items.insert(tag, InFlight { item, outputs: vec![None; k], remaining: k });
        Ok(())
    }

    /// One engine step; returns the items whose last sample finished in it, with verdicts.
    pub fn step(&mut self) -> Result<Vec<(usize, VerdictRecord)>> {
        let mut done = Vec::new();
        for (sample, out) in self.engine.step()? {
            let Some((tag, j)) = self.owners.remove(&sample) else { continue };
            let Some(f) = self.items.get_mut(&tag) else { continue };
            f.outputs[j] = Some(out);
            f.remaining -= 1;
            if f.remaining == 0 {
                if let Some(f) = self.items.remove(&tag) {
                    let outs: Vec<GenOutput> = f.outputs.into_iter().flatten().collect();
                    done.push((tag, (f.item, outs)));
                }
            }
        }
        if done.is_empty() {
            return Ok(vec![]);
        }
        let (tags, finished): (Vec<usize>, Vec<_>) = done.into_iter().unzip();
        Ok(tags.into_iter().zip(self.judge.verdicts(finished, &self.spec)?).collect())
    }

    /// Nothing submitted is left to judge.
    pub fn is_idle(&self) -> bool {
        self.engine.is_idle()
    }

    /// Rows of the batch.
    pub fn rows(&self) -> usize {
        self.engine.rows()
    }

    pub fn stats(&self) -> GenStats {
        self.engine.stats()
    }
}
