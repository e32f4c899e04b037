//! `verdict label`'s two ends of the labeling pipeline: the items of the input file (already
//! checked) as the source, and the output file as the sink. Records are written in input
//! order (a small reorder buffer holds the ones that finish early), so a run that is
//! resumed writes the same file as one that was not.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use verdict_core::{Item, LabelSpec, ParseStatus, VerdictRecord};
use verdict_worker::{Extend, Input, Outcome, PipelineError, Sink, Source};

use crate::output::JsonlWriter;

/// The items to label, in input order; each is tagged with its position.
pub struct FileSource {
    items: std::iter::Enumerate<std::vec::IntoIter<(usize, Item, Extend)>>,
    spec: LabelSpec,
}

impl FileSource {
    /// `items`: line number, item, and which samples to make.
    pub fn new(items: Vec<(usize, Item, Extend)>, spec: LabelSpec) -> Self {
        Self { items: items.into_iter().enumerate(), spec }
    }
}

impl Source for FileSource {
    type Tag = usize;

    async fn next(&mut self, max: usize) -> Result<Option<Vec<Input<usize>>>, PipelineError> {
        let batch: Vec<Input<usize>> = self.items.by_ref().take(max).map(|(tag, (_, item, extend))| Input::Judge { tag, spec: self.spec.clone(), item, extend }).collect();
        Ok(if batch.is_empty() { None } else { Some(batch) })
    }

    async fn release(&mut self, _tags: Vec<usize>) {
        // Nothing to hand back: a file's items not written are labeled on the next run.
    }
}

/// Running totals for the closing summary.
#[derive(Default)]
pub struct Totals {
    pub done: usize,
    pub samples: usize,
    pub valid: usize,
    pub forced: usize,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub agree: usize,
    pub compared: usize,
    /// Items the engine refused after the scan passed them (a spec it cannot run).
    pub refused: Vec<(usize, String)>,
}

impl Totals {
    /// Count a record; its samples from `first` on are this run's (an extension's earlier
    /// ones were counted by the run that made them).
    fn add(&mut self, r: &VerdictRecord, first: u32) {
        let made = || r.samples.iter().filter(|s| s.index >= first);
        self.samples += made().count();
        self.valid += made().filter(|s| s.valid_scores().is_some()).count();
        self.forced += made().filter(|s| s.status == ParseStatus::Forced).count();
        self.prompt_tokens += made().map(|s| s.prompt_tokens as usize).sum::<usize>();
        self.generated_tokens += made().map(|s| s.completion_tokens as usize).sum::<usize>();
        if let Some(a) = r.agrees_with_reference {
            self.compared += 1;
            self.agree += a as usize;
        }
        self.done += 1;
    }
}

pub struct FileSink {
    writer: JsonlWriter,
    /// The next position to write, and what finished beyond it.
    next: usize,
    early: BTreeMap<usize, Option<VerdictRecord>>,
    pub totals: Totals,
    bar: indicatif::ProgressBar,
    /// Set by a second Ctrl-C: write nothing more.
    stopped: Arc<AtomicBool>,
    /// The first sample this run makes, by tag, for items it extends.
    firsts: HashMap<usize, u32>,
}

impl FileSink {
    pub fn new(writer: JsonlWriter, bar: indicatif::ProgressBar, stopped: Arc<AtomicBool>, firsts: HashMap<usize, u32>) -> Self {
        Self { writer, next: 0, early: BTreeMap::new(), totals: Totals::default(), bar, stopped, firsts }
    }

    /// Write what finished out of order (at the end of an interrupted run: resuming goes by
    /// id, so order no longer matters).
    pub fn flush_all(&mut self) -> anyhow::Result<()> {
        let rest: Vec<VerdictRecord> = std::mem::take(&mut self.early).into_values().flatten().collect();
        self.writer.write_batch(&rest)
    }

    pub fn finish(self) -> Totals {
        self.bar.finish_and_clear();
        self.totals
    }
}

impl Sink<usize> for FileSink {
    async fn put(&mut self, results: &[(usize, Outcome)]) -> Result<(), PipelineError> {
        if self.stopped.load(Ordering::SeqCst) {
            return Ok(());
        }
        for (tag, outcome) in results {
            let record = match outcome {
                Outcome::Verdict(r) => {
                    self.totals.add(r, self.firsts.get(tag).copied().unwrap_or(0));
                    Some((**r).clone())
                }
                Outcome::Rejected { field, message } => {
                    self.totals.refused.push((*tag, format!("field `{field}` {message}")));
                    None
                }
                Outcome::Dead { .. } | Outcome::Cancelled => None,
            };
            self.early.insert(*tag, record);
        }
        let mut ready = Vec::new();
        while let Some(r) = self.early.remove(&self.next) {
            ready.extend(r);
            self.next += 1;
        }
        self.writer.write_batch(&ready).map_err(|e| PipelineError::Sink(format!("{e:#}")))?;
        self.bar.inc(results.len() as u64);
        self.bar.set_message(format!("{:.0}% samples valid", 100.0 * self.totals.valid as f64 / self.totals.samples.max(1) as f64));
        Ok(())
    }
}
