//! The engine's side of the pipeline: a preparing thread renders and tokenizes the items it
//! receives (and settles those the judge cannot take), so that work never delays a decode
//! step; the engine thread (which blocks while the device works) feeds them to a
//! continuously batched [`Session`] and sends each item's outcome as soon as its samples
//! are done.
//!
//! A session runs one spec, with a cache sized for prompts up to a length. An item of
//! another spec, or with a longer prompt, waits until the session has drained; then a new
//! session is sized for what waits (at least `PLANNING_PROMPT_TOKENS`, or the longest prompt
//! the caller expects, so that one longer prompt does not mean one session per item).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use verdict_core::{Item, LabelSpec};
use verdict_engine::{EngineError, Judge, PreparedItem, Session};

use crate::pipeline::{Extend, Outcome};

/// Prompt length a session is sized for at least.
pub const PLANNING_PROMPT_TOKENS: usize = 1024;

pub enum EngineEvent {
    Done { seq: u64, outcome: Outcome, samples: u64, tokens: u64 },
    Failed(EngineError),
}

/// How sessions are sized.
#[derive(Debug, Clone, Copy)]
pub struct Sizing {
    /// Samples per item to plan for (capacity in items = rows / this).
    pub k_hint: usize,
    /// The longest prompt to expect, in tokens (0: unknown).
    pub prompt_tokens: usize,
}

pub struct Ready {
    seq: u64,
    spec: LabelSpec,
    item: PreparedItem,
}

fn send(events: &UnboundedSender<EngineEvent>, seq: u64, outcome: Outcome) {
    let (samples, tokens) = match &outcome {
        Outcome::Verdict(r) => (r.samples.len() as u64, r.samples.iter().map(|s| s.completion_tokens as u64).sum()),
        _ => (0, 0),
    };
    let _ = events.send(EngineEvent::Done { seq, outcome, samples, tokens });
}

/// The preparing thread: render and tokenize each item, passing it on ready for the engine;
/// an item the judge cannot take (a prompt too long, a spec it cannot run) is settled here.
/// Ends when the work channel closes.
pub fn prepare(judge: &Judge, work: Receiver<(u64, LabelSpec, Item, Extend)>, ready: std::sync::mpsc::Sender<Ready>, events: UnboundedSender<EngineEvent>) {
    // Items whose spec the judge cannot run are rejected whole, once per spec.
    let mut checked: Vec<(LabelSpec, Option<String>)> = Vec::new();
    for (seq, spec, item, extend) in work {
        let refusal = match checked.iter().find(|(s, _)| *s == spec) {
            Some((_, r)) => r.clone(),
            None => {
                let r = judge.check_spec(&spec).err().map(|e| e.to_string());
                checked.push((spec.clone(), r.clone()));
                r
            }
        };
        if let Some(message) = refusal {
            send(&events, seq, Outcome::Rejected { field: "spec".into(), message });
            continue;
        }
        match judge.prepare_from(item, &spec, extend.first) {
            Ok(mut item) => {
                item.prior = extend.prior;
                if ready.send(Ready { seq, spec, item }).is_err() {
                    return;
                }
            }
            Err(EngineError::Item { error, .. }) => send(&events, seq, Outcome::Rejected { field: error.field.clone(), message: error.problem.to_string() }),
            Err(e) => {
                let _ = events.send(EngineEvent::Failed(e));
                return;
            }
        }
    }
}

/// The engine thread: run until the prepared items' channel closes (and everything received
/// is finished) or `abort`. `capacity` is told how many items the current session holds at
/// once.
pub fn run(judge: &Judge, work: Receiver<Ready>, events: UnboundedSender<EngineEvent>, abort: &AtomicBool, capacity: &AtomicUsize, sizing: Sizing) {
    if let Err(e) = serve(judge, &work, &events, abort, capacity, sizing) {
        let _ = events.send(EngineEvent::Failed(e));
    }
}

fn serve(judge: &Judge, work: &Receiver<Ready>, events: &UnboundedSender<EngineEvent>, abort: &AtomicBool, capacity: &AtomicUsize, sizing: Sizing) -> Result<(), EngineError> {
    let mut waiting: VecDeque<Ready> = VecDeque::new();
    let mut session: Option<Session<'_>> = None;
    let mut closed = false;
    loop {
        if abort.load(Ordering::SeqCst) {
            return Ok(());
        }
        let busy = session.as_ref().is_some_and(|s| !s.is_idle()) || !waiting.is_empty();
        // Take what has arrived: without waiting while there is work, else for a moment.
        loop {
            let got = if busy { work.try_recv().map_err(|e| matches!(e, std::sync::mpsc::TryRecvError::Disconnected)) } else {
                work.recv_timeout(Duration::from_millis(100)).map_err(|e| e == RecvTimeoutError::Disconnected)
            };
            match got {
                Ok(ready) => {
                    waiting.push_back(ready);
                    if !busy {
                        break;
                    }
                }
                Err(true) => {
                    closed = true;
                    break;
                }
                Err(false) => break,
            }
        }
        // Feed the session what fits it; start a new one when it has drained and the next
        // item needs another.
        if session.as_ref().is_none_or(|s| s.is_idle()) {
            if let Some(front) = waiting.front() {
                let fits = session.as_ref().is_some_and(|s| *s.spec() == front.spec && s.fits(&front.item));
                if !fits {
                    let longest = waiting.iter().filter(|r| r.spec == front.spec).flat_map(|r| r.item.prompts.iter().map(|(_, ids)| ids.len())).max().unwrap_or(0);
                    let max_prompt = longest.max(sizing.prompt_tokens).max(PLANNING_PROMPT_TOKENS);
                    // The old session's cache goes before the new one is allocated.
                    drop(session.take());
                    let s = judge.session(&front.spec, max_prompt, None, false)?;
                    capacity.store((s.rows() / sizing.k_hint.max(1)).max(1), Ordering::Relaxed);
                    tracing::debug!(rows = s.rows(), max_prompt, "engine session");
                    session = Some(s);
                }
            }
        }
        if let Some(s) = session.as_mut() {
            while waiting.front().is_some_and(|r| r.spec == *s.spec() && s.fits(&r.item)) {
                if let Some(r) = waiting.pop_front() {
                    s.submit(r.seq as usize, r.item)?;
                }
            }
            if !s.is_idle() {
                for (seq, record) in s.step()? {
                    send(events, seq as u64, Outcome::Verdict(Box::new(record)));
                }
                continue;
            }
        }
        if closed && waiting.is_empty() {
            return Ok(());
        }
    }
}
