//! The engine against Hugging Face transformers: the fixtures in `fixtures/parity/` are
//! transformers' (PyTorch, f32, eager attention) logits and greedy tokens on the same
//! generated folders, written by `bench/parity/parity.py`. Model init is seeded, so the
//! folders made here are the ones transformers saw.

mod common;

use candle_core::{DType, Device};
use verdict_engine::folder::ModelFolder;
use verdict_engine::probe::{probe, probe_inputs, ProbeRecord};

#[test]
fn logits_and_greedy_tokens_match_transformers() {
    for arch in common::ARCHS {
        let dir = common::tiny(arch, false);
        let fixture = format!("{}/tests/fixtures/parity/{}.hf.json", env!("CARGO_MANIFEST_DIR"), arch.model_type());
        let theirs: Vec<ProbeRecord> = serde_json::from_str(&std::fs::read_to_string(&fixture).unwrap()).unwrap();
        let folder = ModelFolder::open(&dir).unwrap();
        let cfg = folder.config().unwrap();
        let tok = folder.tokenizer(&cfg).unwrap();
        let model = folder.decoder(&cfg, DType::F32, &Device::Cpu).unwrap();
        let inputs = probe_inputs(tok.vocab);
        assert_eq!(inputs.len(), theirs.len());
        for (input, hf) in inputs.iter().zip(&theirs) {
            assert_eq!(input, &hf.input, "{arch:?}: the fixture was made from other inputs");
            let ours = probe(&model, input, hf.greedy.len(), tok.vocab).unwrap();
            for (a, b) in ours.logits.iter().zip(&hf.logits) {
                assert_eq!(a.len(), b.len());
                let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                assert!(worst < 1e-4, "{arch:?}: logits differ from transformers by {worst}");
            }
            assert_eq!(ours.greedy, hf.greedy, "{arch:?}: greedy tokens differ from transformers");
        }
    }
}
