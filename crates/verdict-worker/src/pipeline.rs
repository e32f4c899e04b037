//! The one labeling loop: an item source → the engine → a result sink. `verdict worker`
//! runs it with the queue's leases as source and reports to the coordinator as sink;
//! `verdict label` with a file on both ends. Three parts run at once, so the GPU never
//! waits for the ends:
//!
//! - the **feeder** takes items from the source while fewer than the look-ahead are in
//!   flight (leasing ahead while the engine works);
//! - the **engine thread** ([`crate::engine_thread`]) prepares items, runs the continuously
//!   batched session and sends each verdict as soon as its item's samples are done;
//! - the **reporter** hands results to the sink (retrying there as the sink sees fit) while
//!   decoding continues.
//!
//! On shutdown the feeder stops, the items in flight are finished and reported, and
//! whatever is still unreported when the drain time is up is handed back to the source
//! (`release`). An engine error hands back everything in flight and ends the loop with it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use verdict_core::{Item, LabelSpec, VerdictRecord};
use verdict_engine::{EngineError, Judge};

use crate::engine_thread::{self, EngineEvent};
use crate::synthetic::{self, SyntheticJudge};

/// What judges the items: the model, or the stand-in that measures everything around it.
pub enum Engine {
    Model(Arc<Judge>),
    Synthetic(SyntheticJudge),
}

impl From<Arc<Judge>> for Engine {
    fn from(judge: Arc<Judge>) -> Self {
        Engine::Model(judge)
    }
}

impl From<SyntheticJudge> for Engine {
    fn from(judge: SyntheticJudge) -> Self {
        Engine::Synthetic(judge)
    }
}

/// What happened to one item.
#[derive(Debug, Clone)]
pub enum Outcome {
    Verdict(Box<VerdictRecord>),
    /// The item cannot be judged (too long, a spec the judge cannot run); retrying will not
    /// help.
    Rejected { field: String, message: String },
    /// The source decided before judging: delivered too often.
    Dead { message: String, deliveries: u64 },
    /// The source decided before judging: its job was cancelled.
    Cancelled,
}

impl Outcome {
    pub fn is_verdict(&self) -> bool {
        matches!(self, Outcome::Verdict(_))
    }
}

/// One thing a source hands over: an item to judge, or one it already settled.
pub enum Input<T> {
    Judge { tag: T, spec: LabelSpec, item: Item, extend: Extend },
    Settled { tag: T, outcome: Outcome },
}

/// Which of an item's samples to make: all of them, or (extending an earlier run of k
/// samples to the spec's k) only samples k.. — with the earlier samples when the source
/// has them (a file), or without, for the holder of them to vote over all (the coordinator).
#[derive(Debug, Clone, Default)]
pub struct Extend {
    pub first: u32,
    pub prior: Vec<verdict_core::Sample>,
}

impl Extend {
    /// Every sample.
    pub fn none() -> Self {
        Self::default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{0}")]
    Source(String),
    #[error("{0}")]
    Sink(String),
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
}

pub trait Source: Send + 'static {
    /// Identifies an item from the source to the sink (a queue entry, a line number).
    type Tag: Send + 'static;
    /// Up to `max` inputs, waiting at most a moment for some; `Ok(None)` once the source
    /// has nothing more (a file's end).
    fn next(&mut self, max: usize) -> impl Future<Output = Result<Option<Vec<Input<Self::Tag>>>, PipelineError>> + Send;
    /// These items will not be finished here (shutdown, engine failure): let others have them.
    fn release(&mut self, tags: Vec<Self::Tag>) -> impl Future<Output = ()> + Send;
}

pub trait Sink<T>: Send {
    /// Store or forward results. An error here is final for those results: the loop hands
    /// them back to the source and stops.
    fn put(&mut self, results: &[(T, Outcome)]) -> impl Future<Output = Result<(), PipelineError>> + Send;
}

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Samples per item to plan for (look-ahead = rows / this).
    pub k_hint: usize,
    /// Items kept in flight beyond what the batch holds, as a fraction of it.
    pub lookahead: f64,
    /// How long to finish and report items in flight after shutdown begins.
    pub drain_timeout: Duration,
    /// The longest prompt (tokens) to size the engine's cache for, when known up front (a
    /// file's items); a longer prompt later means draining the session and starting a
    /// bigger one.
    pub prompt_tokens: Option<usize>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self { k_hint: 8, lookahead: 0.5, drain_timeout: Duration::from_secs(120), prompt_tokens: None }
    }
}

/// What the loop did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineStats {
    pub items: u64,
    pub verdicts: u64,
    pub samples: u64,
    pub generated_tokens: u64,
    pub released: u64,
}

/// What the feeder shares with the loop: how many items are in flight, and a wake-up when
/// that drops.
struct Flow {
    in_flight: AtomicUsize,
    room: tokio::sync::Notify,
    /// The loop is ending: take nothing more.
    halt: AtomicBool,
}

/// The feeder: takes inputs from the source while fewer than the look-ahead are in flight,
/// until the source ends, `stop` fires or the loop `halt`s. It owns the source, so a call
/// to it is never cut off half-way (a lease taken and then dropped would wait out its
/// timeout); it hands the source back when it ends.
async fn feed<S: Source>(mut source: S, tx: mpsc::Sender<Vec<Input<S::Tag>>>, flow: Arc<Flow>, capacity: Arc<AtomicUsize>, lookahead: f64, mut stop: watch::Receiver<bool>) -> (S, Result<(), PipelineError>) {
    loop {
        if *stop.borrow() || flow.halt.load(Ordering::SeqCst) {
            return (source, Ok(()));
        }
        let cap = capacity.load(Ordering::Relaxed);
        let target = cap + (cap as f64 * lookahead).ceil() as usize;
        let want = target.saturating_sub(flow.in_flight.load(Ordering::SeqCst));
        if want == 0 {
            tokio::select! {
                _ = flow.room.notified() => {}
                _ = stop.changed() => {}
                // Capacity is published by the engine thread when it sizes a session.
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            continue;
        }
        match source.next(want).await {
            Ok(None) => return (source, Ok(())),
            Ok(Some(inputs)) if inputs.is_empty() => {}
            Ok(Some(inputs)) => {
                flow.in_flight.fetch_add(inputs.len(), Ordering::SeqCst);
                if let Err(mpsc::error::SendError(inputs)) = tx.send(inputs).await {
                    // The loop is gone: these were taken for nothing; hand them back.
                    let tags = inputs.into_iter().map(|i| match i {
                        Input::Judge { tag, .. } | Input::Settled { tag, .. } => tag,
                    });
                    source.release(tags.collect()).await;
                    return (source, Ok(()));
                }
            }
            Err(e) => return (source, Err(e)),
        }
    }
}

/// Run `source` → engine → `sink` until the source is exhausted, or `shutdown` fires and the
/// items in flight are drained.
pub async fn run<S: Source>(
    engine: impl Into<Engine>,
    source: S,
    sink: &mut impl Sink<S::Tag>,
    cfg: PipelineConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<PipelineStats, PipelineError> {
    let engine = engine.into();
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let abort = Arc::new(AtomicBool::new(false));
    // Items the engine may hold at once, published by the engine thread when it sizes its
    // batch; the feeder keeps that many (and the look-ahead) in flight.
    let capacity = Arc::new(AtomicUsize::new(cfg.k_hint.max(1)));
    let (work_tx, work_rx) = std::sync::mpsc::channel::<(u64, LabelSpec, Item, Extend)>();
    let (event_tx, mut event_rx) = mpsc::unbounded_channel::<EngineEvent>();
    let thread_error = |e: std::io::Error| PipelineError::Engine(EngineError::Device(format!("cannot start the engine's threads: {e}")));
    let threads: Vec<std::thread::JoinHandle<()>> = match engine {
        Engine::Model(judge) => {
            let (ready_tx, ready_rx) = std::sync::mpsc::channel::<engine_thread::Ready>();
            let preparer = {
                let (judge, events) = (judge.clone(), event_tx.clone());
                std::thread::Builder::new().name("verdict-prepare".into()).spawn(move || engine_thread::prepare(&judge, work_rx, ready_tx, events)).map_err(thread_error)?
            };
            let sizing = engine_thread::Sizing { k_hint: cfg.k_hint.max(1), prompt_tokens: cfg.prompt_tokens.unwrap_or(0) };
            let (abort, capacity) = (abort.clone(), capacity.clone());
            let engine = std::thread::Builder::new()
                .name("verdict-engine".into())
                .spawn(move || engine_thread::run(&judge, ready_rx, event_tx, &abort, &capacity, sizing))
                .map_err(thread_error)?;
            vec![preparer, engine]
        }
        Engine::Synthetic(judge) => {
            let (abort, capacity) = (abort.clone(), capacity.clone());
            vec![std::thread::Builder::new()
                .name("verdict-synthetic".into())
                .spawn(move || synthetic::run(&judge, work_rx, event_tx, &abort, &capacity))
                .map_err(thread_error)?]
        }
    };
    let flow = Arc::new(Flow { in_flight: AtomicUsize::new(0), room: tokio::sync::Notify::new(), halt: AtomicBool::new(false) });
    let (input_tx, mut input_rx) = mpsc::channel::<Vec<Input<S::Tag>>>(2);
    let feeder = tokio::spawn(feed(source, input_tx, flow.clone(), capacity.clone(), cfg.lookahead, stop_rx.clone()));

    // Tags by sequence number, for items handed to the engine.
    let mut tags: std::collections::HashMap<u64, S::Tag> = std::collections::HashMap::new();
    let mut next_seq = 0u64;
    let mut settled: Vec<(S::Tag, Outcome)> = Vec::new();
    let mut stats = PipelineStats::default();
    let mut fed_all = false;
    let mut engine_gone = false;
    let mut stop_rx = stop_rx;
    let mut deadline: Option<Instant> = None;
    let mut failure: Option<PipelineError> = None;

    loop {
        if *stop_rx.borrow() && deadline.is_none() {
            deadline = Some(Instant::now() + cfg.drain_timeout);
        }
        // Done: the feeder has ended (source exhausted, or shutdown) and nothing is left.
        if fed_all && tags.is_empty() && settled.is_empty() {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            tracing::warn!(items = tags.len(), "drain time is up: handing back the items in flight");
            break;
        }
        // Report what is settled (the sink may retry inside; the engine keeps decoding).
        if !settled.is_empty() {
            if let Err(e) = sink.put(&settled).await {
                failure = Some(e);
                break;
            }
            stats.verdicts += settled.iter().filter(|(_, o)| o.is_verdict()).count() as u64;
            flow.in_flight.fetch_sub(settled.len(), Ordering::SeqCst);
            flow.room.notify_one();
            settled.clear();
            continue;
        }
        tokio::select! {
            biased;
            ev = event_rx.recv(), if !engine_gone => {
                let mut next = ev;
                if next.is_none() {
                    engine_gone = true;
                    if !tags.is_empty() {
                        failure = Some(PipelineError::Engine(EngineError::Device("the engine thread ended".into())));
                        break;
                    }
                }
                while let Some(ev) = next {
                    match ev {
                        EngineEvent::Done { seq, outcome, samples, tokens } => {
                            stats.samples += samples;
                            stats.generated_tokens += tokens;
                            if let Some(tag) = tags.remove(&seq) {
                                settled.push((tag, outcome));
                            }
                        }
                        EngineEvent::Failed(e) => {
                            failure = Some(PipelineError::Engine(e));
                            break;
                        }
                    }
                    // Take everything else that is ready, so reports go in batches.
                    next = event_rx.try_recv().ok();
                }
                if failure.is_some() {
                    break;
                }
            },
            got = input_rx.recv(), if !fed_all => match got {
                None => fed_all = true,
                Some(inputs) => {
                    for input in inputs {
                        stats.items += 1;
                        match input {
                            Input::Settled { tag, outcome } => settled.push((tag, outcome)),
                            Input::Judge { tag, spec, item, extend } => {
                                let seq = next_seq;
                                next_seq += 1;
                                tags.insert(seq, tag);
                                if work_tx.send((seq, spec, item, extend)).is_err() {
                                    failure = Some(PipelineError::Engine(EngineError::Device("the engine thread ended".into())));
                                }
                            }
                        }
                    }
                    if failure.is_some() {
                        break;
                    }
                }
            },
            _ = stop_rx.changed(), if !*stop_rx.borrow() => {}
            // Wake up to check the drain deadline.
            _ = tokio::time::sleep(Duration::from_millis(200)), if deadline.is_some() => {}
        }
    }

    // Stop the engine and the feeder; whatever was not reported goes back to the source.
    abort.store(true, Ordering::SeqCst);
    flow.halt.store(true, Ordering::SeqCst);
    flow.room.notify_one();
    drop(work_tx);
    // Inputs the feeder already sent are ours to hand back too.
    input_rx.close();
    while let Some(inputs) = input_rx.recv().await {
        for input in inputs {
            match input {
                Input::Judge { tag, .. } | Input::Settled { tag, .. } => settled.push((tag, Outcome::Cancelled)),
            }
        }
    }
    let (mut source, fed) = match feeder.await {
        Ok(x) => x,
        Err(e) => return Err(PipelineError::Source(format!("the feeder failed: {e}"))),
    };
    if let (None, Err(e)) = (&failure, fed) {
        failure = Some(e);
    }
    let left: Vec<S::Tag> = tags.into_values().chain(settled.into_iter().map(|(t, _)| t)).collect();
    stats.released = left.len() as u64;
    if !left.is_empty() {
        source.release(left).await;
    }
    let _ = tokio::task::spawn_blocking(move || threads.into_iter().map(|t| t.join()).for_each(drop)).await;
    match failure {
        Some(e) => Err(e),
        None => Ok(stats),
    }
}
