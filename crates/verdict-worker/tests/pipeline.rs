//! The labeling pipeline with a real (tiny, random) judge and in-memory ends: every item
//! comes out once, in whatever order its samples finish; items the judge cannot run are
//! settled without stopping the rest; a shutdown finishes what is in flight and hands back
//! nothing that was reported.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use verdict_core::{Aggregation, Item, LabelSpec};
use verdict_engine::synth::{init, InitOptions, Size};
use verdict_engine::{Arch, EngineOptions, Judge};
use verdict_worker::{Extend, Input, Outcome, PipelineConfig, PipelineError, Sink, Source};

fn judge(dir: &std::path::Path, rows: usize) -> Arc<Judge> {
    let m = init(&InitOptions { arch: Arch::Qwen2, size: Size::Tiny, out: dir.join("m"), seed: 0, classifier: false, bf16: false, shards: 1 }).unwrap();
    Arc::new(Judge::load(&m, None, EngineOptions { max_batch: rows, ..EngineOptions::cpu() }).unwrap())
}

fn items(n: usize) -> Vec<Item> {
    (0..n).map(|i| Item::from_json_line(&format!(r#"{{"id":"i{i}","prompt":"question {i}?","responses":["yes","no {i}"]}}"#)).unwrap()).collect()
}

/// Hands out its items a few at a time; remembers what it was asked to take back.
struct VecSource {
    items: std::vec::IntoIter<(usize, LabelSpec, Item)>,
    released: Arc<Mutex<Vec<usize>>>,
}

impl Source for VecSource {
    type Tag = usize;
    async fn next(&mut self, max: usize) -> Result<Option<Vec<Input<usize>>>, PipelineError> {
        let batch: Vec<_> = self.items.by_ref().take(max.min(3)).map(|(tag, spec, item)| Input::Judge { tag, spec, item, extend: Extend::none() }).collect();
        Ok((!batch.is_empty()).then_some(batch))
    }
    async fn release(&mut self, tags: Vec<usize>) {
        self.released.lock().unwrap().extend(tags);
    }
}

#[derive(Default)]
struct VecSink(Vec<(usize, Outcome)>);

impl Sink<usize> for VecSink {
    async fn put(&mut self, results: &[(usize, Outcome)]) -> Result<(), PipelineError> {
        self.0.extend(results.iter().cloned());
        Ok(())
    }
}

fn spec(k: u32) -> LabelSpec {
    LabelSpec { k, max_new_tokens: 24, ..LabelSpec::new("tiny") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_item_comes_out_once_and_unrunnable_ones_are_settled() {
    let tmp = tempfile::tempdir().unwrap();
    let judge = judge(tmp.path(), 4);
    // The judge has no meta RM: items that ask for meta-RM voting cannot run.
    let meta = LabelSpec { aggregation: Aggregation::MetaRm { k_meta: None }, ..spec(2) };
    let work: Vec<(usize, LabelSpec, Item)> = items(10).into_iter().enumerate().map(|(i, it)| (i, if i == 4 { meta.clone() } else { spec(2) }, it)).collect();
    let released = Arc::new(Mutex::new(Vec::new()));
    let source = VecSource { items: work.clone().into_iter(), released: released.clone() };
    let mut sink = VecSink::default();
    let stats = verdict_worker::pipeline::run(judge.clone(), source, &mut sink, PipelineConfig { k_hint: 2, ..Default::default() }, std::future::pending()).await.unwrap();
    let mut tags: Vec<usize> = sink.0.iter().map(|(t, _)| *t).collect();
    tags.sort();
    assert_eq!(tags, (0..10).collect::<Vec<_>>(), "each item once");
    assert!(released.lock().unwrap().is_empty());
    assert_eq!((stats.items, stats.verdicts, stats.samples), (10, 9, 18));
    match &sink.0.iter().find(|(t, _)| *t == 4).unwrap().1 {
        Outcome::Rejected { field, message } => assert!(field == "spec" && message.contains("meta reward model"), "{message}"),
        other => panic!("item 4 should be refused: {other:?}"),
    }
    // The same items judged in one call give the same verdicts: the pipeline adds no
    // dependence on how items were grouped.
    let alone: Vec<_> = work.iter().filter(|(i, _, _)| *i != 4).map(|(_, s, it)| judge.prepare(it.clone(), s).unwrap()).collect();
    let direct = judge.judge(&alone, &spec(2)).unwrap();
    for r in direct {
        let Some((_, Outcome::Verdict(v))) = sink.0.iter().find(|(_, o)| matches!(o, Outcome::Verdict(v) if v.id == r.id)) else { panic!("no verdict for {}", r.id) };
        assert_eq!(**v, r);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_finishes_what_is_in_flight() {
    let tmp = tempfile::tempdir().unwrap();
    let judge = judge(tmp.path(), 2);
    let work: Vec<(usize, LabelSpec, Item)> = items(40).into_iter().enumerate().map(|(i, it)| (i, spec(2), it)).collect();
    let released = Arc::new(Mutex::new(Vec::new()));
    let source = VecSource { items: work.into_iter(), released: released.clone() };
    let mut sink = VecSink::default();
    let stop = tokio::time::sleep(Duration::from_millis(300));
    let stats = verdict_worker::pipeline::run(judge, source, &mut sink, PipelineConfig { k_hint: 2, ..Default::default() }, stop).await.unwrap();
    let reported = sink.0.len() as u64;
    assert!(reported > 0 && reported < 40, "stopped part-way: {reported}");
    assert_eq!(stats.items, reported + stats.released, "every item taken was reported or handed back");
    assert!(released.lock().unwrap().iter().all(|t| !sink.0.iter().any(|(r, _)| r == t)), "nothing reported was handed back");
}
