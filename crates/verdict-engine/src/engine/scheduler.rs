//! The scheduler: which samples wait, which row each running sample holds, and which
//! prompts to prefill now. Pure bookkeeping over ids (no tensors), so its decisions are
//! tested on their own.
//!
//! Policy. Samples are admitted in arrival order into free rows as soon as their prompt is
//! prefilled: a row freed by a finished sample is refilled at the next step (continuous
//! batching). Prompts are prefilled only for samples about to be admitted — the free rows
//! plus a little slack, so a prompt's samples rarely wait long — and within a token budget
//! per step, so a burst of new prompts never stalls decoding for long. A prompt's keys and
//! values are held until its last waiting sample is admitted, so each distinct prompt is
//! prefilled once however its samples are spread over time.

use std::collections::{HashMap, VecDeque};

/// A sample waiting for a row, and its prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Waiting {
    sample: usize,
    prompt: usize,
}

#[derive(Debug, Default)]
pub struct Scheduler {
    waiting: VecDeque<Waiting>,
    /// Row → the sample running in it.
    rows: Vec<Option<usize>>,
    /// Prompts prefilled and held, with how many of their samples still wait.
    ready: HashMap<usize, usize>,
    /// Waiting samples per prompt not yet prefilled.
    unready: HashMap<usize, usize>,
}

impl Scheduler {
    pub fn new(rows: usize) -> Self {
        Self { rows: vec![None; rows], ..Default::default() }
    }

    /// A new sample of `prompt`, after every sample added before it.
    pub fn add(&mut self, sample: usize, prompt: usize) {
        self.waiting.push_back(Waiting { sample, prompt });
        match self.ready.get_mut(&prompt) {
            Some(n) => *n += 1,
            None => *self.unready.entry(prompt).or_default() += 1,
        }
    }

    /// A new sample of a prompt whose keys and values are held already (prefilled for an
    /// earlier sample, and kept): it waits only for a row.
    pub fn add_ready(&mut self, sample: usize, prompt: usize) {
        self.waiting.push_back(Waiting { sample, prompt });
        *self.ready.entry(prompt).or_default() += 1;
    }

    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    pub fn free_rows(&self) -> usize {
        self.rows.iter().filter(|r| r.is_none()).count()
    }

    pub fn running(&self) -> usize {
        self.rows.len() - self.free_rows()
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Nothing waits and nothing runs.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running() == 0
    }

    /// The sample running in `row`.
    pub fn sample_in(&self, row: usize) -> Option<usize> {
        self.rows[row]
    }

    /// Prompts to prefill this step, in the order their samples arrived: enough to fill the
    /// free rows (plus `slack` samples), within `budget` prompt tokens (`len` gives each
    /// prompt's length). At least one when a row is free and no admission is possible.
    pub fn to_prefill(&self, len: impl Fn(usize) -> usize, budget: usize, slack: usize) -> Vec<usize> {
        let free = self.free_rows();
        if free == 0 {
            return vec![];
        }
        let mut covered: usize = self.ready.values().sum();
        let mut tokens = 0;
        let mut out: Vec<usize> = Vec::new();
        for w in &self.waiting {
            if covered >= free + slack {
                break;
            }
            if self.ready.contains_key(&w.prompt) || out.contains(&w.prompt) {
                continue;
            }
            let l = len(w.prompt);
            if !out.is_empty() && tokens + l > budget {
                break;
            }
            tokens += l;
            covered += self.unready.get(&w.prompt).copied().unwrap_or(0);
            out.push(w.prompt);
        }
        out
    }

    /// These prompts are prefilled.
    pub fn mark_ready(&mut self, prompts: &[usize]) {
        for p in prompts {
            let n = self.unready.remove(p).unwrap_or(0);
            self.ready.insert(*p, n);
        }
    }

    /// Admit waiting samples whose prompt is prefilled into free rows, in arrival order.
    /// Returns (sample, prompt, row).
    pub fn admit(&mut self) -> Vec<(usize, usize, usize)> {
        let mut free: Vec<usize> = (0..self.rows.len()).filter(|&r| self.rows[r].is_none()).collect();
        free.reverse();
        let mut out = Vec::new();
        let mut kept = VecDeque::with_capacity(self.waiting.len());
        while let Some(w) = self.waiting.pop_front() {
            match (self.ready.get_mut(&w.prompt), free.last()) {
                (Some(n), Some(&row)) => {
                    free.pop();
                    *n -= 1;
                    self.rows[row] = Some(w.sample);
                    out.push((w.sample, w.prompt, row));
                }
                _ => kept.push_back(w),
            }
        }
        self.waiting = kept;
        out
    }

    /// Prompts whose every sample is admitted: their keys and values can go.
    pub fn spent_prompts(&mut self) -> Vec<usize> {
        let spent: Vec<usize> = self.ready.iter().filter(|(_, &n)| n == 0).map(|(&p, _)| p).collect();
        for p in &spent {
            self.ready.remove(p);
        }
        spent
    }

    /// The sample in `row` finished; the row is free.
    pub fn finish(&mut self, row: usize) -> Option<usize> {
        self.rows[row].take()
    }

    /// Rows `keep` move to rows `0..keep.len()`, in that order; the others are free (after
    /// the runner moved their keys and values the same way).
    pub fn pack(&mut self, keep: &[usize]) {
        let mut rows: Vec<Option<usize>> = keep.iter().map(|&r| self.rows[r]).collect();
        rows.resize(self.rows.len(), None);
        self.rows = rows;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_rows_are_refilled_in_arrival_order_and_prompts_are_prefilled_once() {
        let mut s = Scheduler::new(2);
        // Two items of two samples each, each item with one prompt.
        for (sample, prompt) in [(0, 10), (1, 10), (2, 11), (3, 11)] {
            s.add(sample, prompt);
        }
        // Two free rows: prefill the first prompt only (it covers both rows).
        let want = s.to_prefill(|_| 100, 1000, 0);
        assert_eq!(want, [10]);
        s.mark_ready(&want);
        assert_eq!(s.admit(), [(0, 10, 0), (1, 10, 1)]);
        assert_eq!(s.spent_prompts(), [10], "its samples are all admitted");
        assert!(s.to_prefill(|_| 100, 1000, 0).is_empty(), "no free row");
        // Sample 0 finishes: its row is refilled by the next prompt's first sample at once.
        assert_eq!(s.finish(0), Some(0));
        let want = s.to_prefill(|_| 100, 1000, 0);
        assert_eq!(want, [11]);
        s.mark_ready(&want);
        assert_eq!(s.admit(), [(2, 11, 0)]);
        assert!(s.spent_prompts().is_empty(), "sample 3 still needs prompt 11");
        assert_eq!((s.running(), s.waiting()), (2, 1));
        assert_eq!(s.finish(1), Some(1));
        assert!(s.to_prefill(|_| 100, 1000, 0).is_empty(), "prompt 11 is held, not prefilled again");
        assert_eq!(s.admit(), [(3, 11, 1)]);
        assert_eq!(s.spent_prompts(), [11]);
        s.finish(0);
        s.finish(1);
        assert!(s.is_idle());
    }

    #[test]
    fn prefill_stays_within_its_token_budget_but_always_makes_progress() {
        let mut s = Scheduler::new(8);
        for i in 0..8 {
            s.add(i, i);
        }
        assert_eq!(s.to_prefill(|_| 300, 1000, 0), [0, 1, 2], "three prompts of 300 fit in 1,000 tokens");
        assert_eq!(s.to_prefill(|_| 5000, 1000, 0), [0], "one prompt over the budget still goes, alone");
        s.mark_ready(&[0, 1, 2]);
        assert_eq!(s.admit().len(), 3);
        assert_eq!(s.to_prefill(|_| 300, 10_000, 0), [3, 4, 5, 6, 7], "enough for the five free rows");
    }

    #[test]
    fn packing_keeps_the_running_samples_and_every_row() {
        let mut s = Scheduler::new(4);
        for i in 0..4 {
            s.add(i, 0);
        }
        s.mark_ready(&[0]);
        s.admit();
        s.finish(0);
        s.finish(2);
        s.pack(&[1, 3]);
        assert_eq!((s.rows(), s.sample_in(0), s.sample_in(1)), (4, Some(1), Some(3)));
        assert_eq!(s.free_rows(), 2, "the rows behind the packed ones are free again");
        // Later arrivals take the freed rows, lowest first.
        s.add(4, 1);
        s.add(5, 1);
        s.mark_ready(&[1]);
        assert_eq!(s.admit(), [(4, 1, 2), (5, 1, 3)]);
    }
}
