//! The GRM engine on real (tiny, random) candle models: batching, reproducibility, the
//! constrained score block, the meta RM, and clear errors for broken folders and items.

mod common;

use std::path::Path;

use verdict_core::{Aggregation, FinishReason, Item, LabelSpec, OnBudget, ParseStatus, Problem};
use verdict_engine::{Arch, EngineError, EngineOptions, Judge};

fn items(n: usize) -> Vec<Item> {
    (0..n)
        .map(|i| {
            let line = format!(
                r#"{{"id":"i{i}","prompt":"Question number {i}: {}?","responses":["An answer of {} words.","Another answer{}"]}}"#,
                "why ".repeat(i % 5 + 1),
                i,
                "!".repeat(i % 3)
            );
            Item::from_json_line(&line).unwrap()
        })
        .collect()
}

fn spec(judge: &Judge) -> LabelSpec {
    LabelSpec { k: 3, max_new_tokens: 24, ..LabelSpec::new(judge.name()) }
}

/// The first `n` test items, prepared for `judge` under `spec`.
fn prepared(judge: &Judge, spec: &LabelSpec, n: usize) -> Vec<verdict_engine::PreparedItem> {
    items(n).into_iter().map(|i| judge.prepare(i, spec).unwrap()).collect()
}

fn load(arch: Arch, batch: usize) -> Judge {
    Judge::load(&common::tiny(arch, false), None, EngineOptions { max_batch: batch, ..EngineOptions::cpu() }).unwrap()
}

#[test]
fn a_sample_does_not_depend_on_its_batch() {
    // Same items judged with batch 1 (no padding) and batch 12 (mixed lengths, padding):
    // every sample's text must be the same, for every architecture.
    for arch in common::ARCHS {
        let alone = load(arch, 1);
        let batched = load(arch, 12);
        let spec = spec(&alone);
        let p = prepared(&alone, &spec, 4);
        let a = alone.judge(&p, &spec).unwrap();
        let b = batched.judge(&p, &spec).unwrap();
        for (x, y) in a.iter().zip(&b) {
            let tx: Vec<_> = x.samples.iter().map(|s| &s.raw).collect();
            let ty: Vec<_> = y.samples.iter().map(|s| &s.raw).collect();
            assert_eq!(tx, ty, "{arch:?}: item {} changed with the batch", x.id);
        }
    }
}

#[test]
fn seeds_reproduce_and_differ() {
    let judge = load(Arch::Qwen2, 16);
    let s0 = spec(&judge);
    let s1 = LabelSpec { seed: 1, ..s0.clone() };
    let run = |s: &LabelSpec| {
        let p = prepared(&judge, s, 3);
        judge.judge(&p, s).unwrap()
    };
    let (a, b, c) = (run(&s0), run(&s0), run(&s1));
    assert_eq!(a, b, "same seed, same verdicts");
    let raw = |r: &Vec<verdict_core::VerdictRecord>| r.iter().flat_map(|v| v.samples.iter().map(|s| s.raw.clone())).collect::<Vec<_>>();
    assert_ne!(raw(&a), raw(&c), "another seed, other samples");
}

#[test]
fn samples_shuffle_responses_and_every_forced_block_parses() {
    let judge = load(Arch::Llama, 32);
    let s = LabelSpec { k: 8, ..spec(&judge) };
    let p = prepared(&judge, &s, 2);
    let records = judge.judge(&p, &s).unwrap();
    for r in &records {
        assert_eq!(r.samples.len(), 8);
        let perms: std::collections::HashSet<_> = r.samples.iter().map(|s| s.permutation.clone()).collect();
        assert_eq!(perms.len(), 2, "both orders of two responses appear among 8 samples");
        for smp in &r.samples {
            assert!(smp.completion_tokens <= 24);
            match smp.finish {
                // A random model never writes its own score block: a sample either ends its
                // turn early (invalid) or is forced, and the constraint makes it parse.
                FinishReason::ScoreBlock => {
                    assert_eq!(smp.status, ParseStatus::Forced, "{}", smp.raw);
                    assert!(smp.scores.as_ref().unwrap().iter().all(|v| (1..=10).contains(v)));
                }
                FinishReason::Eos => assert!(matches!(smp.status, ParseStatus::Invalid(_))),
                FinishReason::Length => panic!("with forcing, no sample runs out of budget: {:?}", smp.raw),
            }
        }
        let valid: Vec<_> = r.samples.iter().filter_map(|s| s.valid_scores()).collect();
        assert!(!valid.is_empty());
        assert_eq!(r.verdict.valid as usize, valid.len());
        assert_eq!(r.verdict.summed.iter().sum::<u32>(), valid.iter().map(|s| s.iter().map(|&v| v as u32).sum::<u32>()).sum::<u32>());
    }
}

#[test]
fn without_forcing_a_cut_off_sample_is_invalid() {
    let judge = load(Arch::Qwen3, 16);
    let s = LabelSpec { on_budget: OnBudget::Invalid, ..spec(&judge) };
    let p = prepared(&judge, &s, 2);
    for r in judge.judge(&p, &s).unwrap() {
        assert!(r.samples.iter().all(|s| matches!(s.status, ParseStatus::Invalid(_))));
        assert_eq!(r.verdict.winner, None);
        assert_eq!(r.verdict.valid, 0);
    }
}

#[test]
fn meta_rm_scores_every_sample_and_filters_the_vote() {
    let meta = common::tiny(Arch::Qwen2, true);
    let judge = Judge::load(&common::tiny(Arch::Qwen2, false), Some(&meta), EngineOptions::cpu()).unwrap();
    let s = LabelSpec {
        k: 4,
        aggregation: Aggregation::MetaRm { k_meta: Some(2) },
        ..spec(&judge)
    };
    let p = prepared(&judge, &s, 2);
    for r in judge.judge(&p, &s).unwrap() {
        assert_eq!(r.meta_fingerprint.as_deref(), judge.fingerprints().meta_rm.as_deref(), "the verdict names the meta RM that voted");
        assert!(r.samples.iter().all(|s| s.meta_score.is_some_and(f32::is_finite)));
        assert_eq!(r.verdict.valid, 2, "meta-RM voting keeps k_meta samples");
    }
}

#[test]
fn a_prompt_longer_than_the_context_names_the_item_and_field() {
    let judge = load(Arch::Qwen2, 4);
    let s = spec(&judge);
    let long = Item::from_json_line(&format!(r#"{{"id":"long-one","prompt":"{}","responses":["a","b"]}}"#, "word ".repeat(4000))).unwrap();
    match judge.prepare(long, &s) {
        Err(EngineError::Item { id, error }) => {
            assert_eq!(id, "long-one");
            assert_eq!(error.field, "prompt");
            assert!(matches!(error.problem, Problem::TooLong { .. }));
        }
        other => panic!("expected a too-long error, got {:?}", other.map(|_| ())),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn load_err(dir: &Path) -> String {
    match Judge::load(dir, None, EngineOptions::cpu()) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("{} should not load", dir.display()),
    }
}

#[test]
fn broken_folders_get_errors_that_name_the_file() {
    let good = common::tiny(Arch::Qwen2, false);
    let tmp = tempfile::tempdir().unwrap();
    let case = |name: &str, f: &dyn Fn(&Path)| {
        let d = tmp.path().join(name);
        copy_dir(&good, &d);
        f(&d);
        load_err(&d)
    };
    assert!(case("no-config", &|d| std::fs::remove_file(d.join("config.json")).unwrap()).contains("config.json is missing"));
    assert!(case("no-tok", &|d| std::fs::remove_file(d.join("tokenizer.json")).unwrap()).contains("tokenizer.json is missing"));
    assert!(case("no-weights", &|d| std::fs::remove_file(d.join("model.safetensors")).unwrap()).contains("no model.safetensors"));
    let e = case("bad-json", &|d| std::fs::write(d.join("config.json"), "{").unwrap());
    assert!(e.contains("config.json") && e.contains("not valid JSON"), "{e}");
    let e = case("bad-shape", &|d| {
        let p = d.join("config.json");
        let text = std::fs::read_to_string(&p).unwrap().replace("\"intermediate_size\": 128", "\"intermediate_size\": 256");
        std::fs::write(p, text).unwrap();
    });
    assert!(e.contains("weights do not match config.json") && e.contains("mlp"), "{e}");
    let e = case("small-vocab", &|d| {
        let p = d.join("config.json");
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        let text = std::fs::read_to_string(&p).unwrap().replace(&format!("\"vocab_size\": {}", v["vocab_size"]), "\"vocab_size\": 100");
        std::fs::write(p, text).unwrap();
    });
    assert!(e.contains("tokenizer.json") && e.contains("vocab_size"), "{e}");
    let e = case("no-template", &|d| std::fs::remove_file(d.join("tokenizer_config.json")).unwrap());
    assert!(e.contains("chat template"), "{e}");
    let e = case("missing-shard", &|d| {
        std::fs::write(d.join("model.safetensors.index.json"), r#"{"weight_map":{"model.norm.weight":"model-00002-of-00002.safetensors"}}"#).unwrap();
    });
    assert!(e.contains("model-00002-of-00002.safetensors") && e.contains("missing"), "{e}");
}

#[test]
fn sharded_weights_load_like_one_file() {
    use verdict_engine::synth::{init, InitOptions, Size};
    let tmp = tempfile::tempdir().unwrap();
    let sharded = init(&InitOptions { arch: Arch::Gemma2, size: Size::Tiny, out: tmp.path().join("g"), seed: 0, classifier: false, bf16: false, shards: 3 }).unwrap();
    assert!(sharded.join("model.safetensors.index.json").is_file());
    let a = Judge::load(&sharded, None, EngineOptions::cpu()).unwrap();
    let b = load(Arch::Gemma2, 32);
    let s = spec(&b);
    let s_a = LabelSpec { judge: a.name().to_string(), ..s.clone() };
    let p = |j: &Judge, s: &LabelSpec| prepared(j, s, 2);
    let ra = a.judge(&p(&a, &s_a), &s_a).unwrap();
    let rb = b.judge(&p(&b, &s), &s).unwrap();
    for (x, y) in ra.iter().zip(&rb) {
        assert_eq!(x.samples.iter().map(|s| &s.raw).collect::<Vec<_>>(), y.samples.iter().map(|s| &s.raw).collect::<Vec<_>>());
    }
}

#[test]
fn each_distinct_prompt_is_prefilled_once() {
    // k = 8 over two responses: two response orders per item, so two prefills per item,
    // whatever the batch size; the samples still come out as when each is decoded alone.
    let judge = load(Arch::Qwen2, 64);
    let s = LabelSpec { k: 8, max_new_tokens: 12, ..spec(&judge) };
    let p = prepared(&judge, &s, 3);
    let (records, stats) = judge.judge_with(&p, &s, false).unwrap();
    let distinct: usize = p.iter().map(|x| x.prompts.len()).sum();
    assert_eq!(stats.sequences, 24);
    assert_eq!(stats.prompts, distinct, "one prefill per distinct prompt");
    assert!(distinct <= 6);
    let header = judge.template_header(&s).unwrap().len();
    assert!(header >= 16, "the template header is long enough to be held on its own");
    let rest: usize = p.iter().flat_map(|x| x.prompts.iter().map(|(_, ids)| ids.len() - header)).sum();
    assert_eq!(stats.prefill_tokens, rest + header, "each prompt's tokens after the template header, unpadded, and the header once on its own");

    // One row at a time: a prompt's keys and values wait for its later samples, so it is
    // still prefilled once; and the samples come out as when decoded together.
    let alone = load(Arch::Qwen2, 1);
    let (again, single) = alone.judge_with(&p, &s, false).unwrap();
    assert_eq!(single.prompts, distinct, "prefilled once even when its samples run one after another");
    assert_eq!(records, again);
}

#[test]
fn freed_rows_are_refilled_and_no_sample_depends_on_its_neighbours() {
    // Many samples of varied lengths through a few rows: rows are refilled as samples
    // finish (continuous batching), prompts come and go in the pool, and the own cache's
    // frontier moves left when it reaches the end. Every sample must come out exactly as
    // when it runs alone.
    for arch in common::ARCHS {
        let alone = load(arch, 1);
        let s = LabelSpec { k: 3, max_new_tokens: 40, ..spec(&alone) };
        let mut its = items(9);
        // A long prompt late in the stream, among short ones.
        its.push(Item::from_json_line(&format!(r#"{{"id":"long","prompt":"{}","responses":["a","b"]}}"#, "why ".repeat(120))).unwrap());
        let p: Vec<_> = its.into_iter().map(|i| alone.prepare(i, &s).unwrap()).collect();
        let (a, _) = alone.judge_with(&p, &s, false).unwrap();
        for rows in [2, 5] {
            let few = load(arch, rows);
            let (b, stats) = few.judge_with(&p, &s, false).unwrap();
            assert_eq!(a, b, "{arch:?}: a sample changed with {rows} rows");
            assert!(stats.decode_steps < stats.sequences * 40 / rows, "{arch:?}: rows were not refilled ({} steps)", stats.decode_steps);
            assert!(stats.live_rows * 10 >= stats.decode_rows * 8, "{arch:?}, {rows} rows: the batch ran {}/{} full", stats.live_rows, stats.decode_rows);
            assert!(stats.cache_moves > 0, "{arch:?}, {rows} rows: the own cache's frontier never moved");
            assert_eq!(stats.prompt_slots_held, 0, "{arch:?}, {rows} rows: prompts left in the pool after the last sample");
            assert!(stats.kv_slots_peak <= stats.kv_slots, "{arch:?}: more KV in use than allocated");
        }
    }
}

#[test]
fn rows_freed_in_a_lull_serve_later_arrivals() {
    // Work that arrives in waves (a worker between leases, `label` while items are being
    // prepared): when a wave's tail leaves most rows free the live ones are packed at the
    // front, but the batch keeps its width, so the next wave runs as wide as the first,
    // and every sample comes out as when it runs alone.
    let alone = load(Arch::Qwen2, 1);
    let s = LabelSpec { k: 3, max_new_tokens: 40, ..spec(&alone) };
    let p = prepared(&alone, &s, 8);
    let (want, _) = alone.judge_with(&p, &s, false).unwrap();
    let judge = load(Arch::Qwen2, 12);
    let longest = p.iter().flat_map(|x| x.prompts.iter().map(|(_, ids)| ids.len())).max().unwrap();
    let mut session = judge.session(&s, longest, None, false).unwrap();
    assert_eq!(session.rows(), 12);
    let mut got = std::collections::HashMap::new();
    let mut run_wave = |session: &mut verdict_engine::Session<'_>, wave: std::ops::Range<usize>| {
        let before = session.stats();
        for i in wave {
            session.submit(i, p[i].clone()).unwrap();
        }
        while !session.is_idle() {
            for (tag, record) in session.step().unwrap() {
                got.insert(tag, record);
            }
        }
        let after = session.stats();
        (after.live_rows - before.live_rows) as f64 / (after.decode_steps - before.decode_steps) as f64
    };
    let first = run_wave(&mut session, 0..4);
    let second = run_wave(&mut session, 4..8);
    assert!(second >= 6.0, "the second wave ran {second:.1} rows a step on average (the first {first:.1}): the batch shrank in the lull");
    for (i, w) in want.iter().enumerate() {
        assert_eq!(Some(w), got.get(&i), "item {i} changed when run in waves");
    }
}

#[test]
fn every_prompt_of_a_spec_starts_with_its_template_header() {
    // The header is what the engine may hold once for every row: it must be a true prefix
    // of every rendered prompt, and most of a short item's prompt (the judge template's
    // principles and instructions).
    for arch in common::ARCHS {
        let judge = load(arch, 4);
        let s = spec(&judge);
        let header = judge.template_header(&s).unwrap();
        let p = prepared(&judge, &s, 6);
        for item in &p {
            for (_, ids) in &item.prompts {
                assert!(ids.starts_with(&header), "{arch:?}: item {}'s prompt does not start with the header", item.item.id);
                assert!(header.len() * 2 > ids.len(), "{arch:?}: a header of {} tokens in a prompt of {}", header.len(), ids.len());
            }
        }
    }
}

#[test]
fn fixed_length_runs_every_sample_to_the_budget() {
    let judge = load(Arch::Gemma2, 16);
    let s = LabelSpec { k: 4, max_new_tokens: 20, ..spec(&judge) };
    let p = prepared(&judge, &s, 2);
    let (records, stats) = judge.judge_with(&p, &s, true).unwrap();
    assert_eq!(stats.generated_tokens, 8 * 20);
    assert!(records.iter().flat_map(|r| &r.samples).all(|x| x.completion_tokens == 20));
}

#[test]
fn retrained_weights_of_the_same_shape_are_another_judge() {
    use verdict_engine::synth::{init, InitOptions, Size};
    use verdict_engine::{DigestCache, Prompter};
    let tmp = tempfile::tempdir().unwrap();
    let make = |name: &str, seed: u64| init(&InitOptions { arch: Arch::Qwen2, size: Size::Tiny, out: tmp.path().join(name), seed, classifier: false, bf16: false, shards: 1 }).unwrap();
    let (a, b) = (make("judge-a", 0), make("judge-b", 1));
    let size = |d: &Path| std::fs::metadata(d.join("model.safetensors")).unwrap().len();
    assert_eq!(size(&a), size(&b), "same shapes, same file sizes");
    for f in ["config.json", "tokenizer.json"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f} is the same");
    }
    let cache = DigestCache::at(tmp.path().join("digests.json"));
    let fa = Prompter::open(&a, None, &cache).unwrap().fingerprints().clone();
    let fb = Prompter::open(&b, None, &cache).unwrap().fingerprints().clone();
    assert_ne!(fa, fb, "other weights, another fingerprint");
    assert_eq!(Prompter::open(&a, None, &DigestCache::none()).unwrap().fingerprints(), &fa, "stable across opens");

    // Keys follow the weights, so resume and dedup never cross them.
    let pa = Prompter::open(&a, None, &cache).unwrap();
    let pb = Prompter::open(&b, None, &cache).unwrap();
    let s = LabelSpec { k: 2, max_new_tokens: 24, ..LabelSpec::new("judge") };
    let key = |p: &Prompter| p.prepare(items(1).remove(0), &s).unwrap().key;
    assert_ne!(key(&pa), key(&pb));
}

#[test]
fn a_spec_the_judge_cannot_run_is_refused_up_front() {
    let judge = load(Arch::Qwen2, 4);
    let context = judge.config().max_position_embeddings as u32;
    let e = judge.check_spec(&LabelSpec { max_new_tokens: context, ..spec(&judge) }).unwrap_err().to_string();
    assert!(e.contains(&format!("max_new_tokens {context}")) && e.contains("context"), "{e}");
    let meta = LabelSpec { aggregation: Aggregation::MetaRm { k_meta: None }, ..spec(&judge) };
    assert!(judge.check_spec(&meta).unwrap_err().to_string().contains("meta reward model"));
    assert!(judge.check_spec(&spec(&judge)).is_ok());
}

#[test]
fn adaptive_k_takes_rounds_of_the_full_runs_samples_and_says_why_it_stopped() {
    use verdict_core::{aggregate, Adaptive, StopRule, Stopped};
    let judge = load(Arch::Qwen2, 6);
    let full = LabelSpec { k: 6, ..spec(&judge) };
    let p = prepared(&judge, &full, 6);
    let all = judge.judge(&p, &full).unwrap();
    // Batch 2: a prompt pool far smaller than the items in flight, whose held prompts must
    // make room for new ones (items between rounds once filled it and nothing could start).
    let small = load(Arch::Qwen2, 2);
    let confident = StopRule::Confident { confidence: 0.6 };
    for (judge, roomy, stop, confidence) in [(&judge, true, StopRule::Settled, None), (&judge, true, confident, Some(0.6)), (&small, false, confident, Some(0.6))] {
        let adaptive = LabelSpec { adaptive: Some(Adaptive { k_min: 2, round: 2, stop }), ..full.clone() };
        let p = prepared(&judge, &adaptive, 6);
        let (got, stats) = judge.judge_with(&p, &adaptive, false).unwrap();
        // Prompts are held between an item's rounds (with room in the pool, none is prefilled
        // twice), and a batch of 2 with six items in flight still finishes.
        let distinct = p.iter().map(|x| x.prompts.len()).sum::<usize>();
        if roomy {
            assert!(stats.prompts <= distinct, "{} prefills of {distinct} prompts", stats.prompts);
        }
        let mut early = 0;
        for (a, f) in got.iter().zip(&all) {
            let n = a.samples.len();
            assert!([2, 4, 6].contains(&n), "item {}: {n} samples is not a whole number of rounds", a.id);
            // The samples an item took are the full run's first ones, token for token.
            let raw = |r: &verdict_core::VerdictRecord| r.samples.iter().map(|s| (s.index, s.raw.clone())).collect::<Vec<_>>();
            assert_eq!(raw(a), raw(f)[..n].to_vec(), "item {}", a.id);
            let stopped = a.verdict.stopped.expect("an adaptive verdict says why it stopped");
            // Its verdict is the vote over those samples, and it stopped only where the rule says.
            let seed = verdict_core::ContentKey::of_item(&items(6).into_iter().find(|i| i.id == a.id).unwrap()).seed_bits();
            assert_eq!(a.verdict.winner, aggregate(&adaptive, seed, 2, &a.samples).winner);
            let rule = Adaptive { k_min: 2, round: 2, stop };
            assert_eq!(rule.check(&a.samples, 2, 6), Some(stopped), "item {}", a.id);
            for m in (2..n).step_by(2) {
                assert_eq!(rule.check(&a.samples[..m], 2, 6), None, "item {} could have stopped at {m}", a.id);
            }
            if stopped == Stopped::Settled {
                assert_eq!(a.verdict.winner, f.verdict.winner, "a settled item keeps the full run's winner");
            }
            early += usize::from(n < 6);
        }
        if confidence.is_some() {
            assert!(early > 0, "at confidence 0.6 some item stops after its first round");
        }
    }
}
