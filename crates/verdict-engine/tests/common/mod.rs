//! Shared helpers: tiny random models made once per test binary.

use std::path::PathBuf;
use std::sync::OnceLock;

use verdict_engine::synth::{init, InitOptions, Size};
use verdict_engine::Arch;

static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

/// A tiny model of `arch` (a classifier when `classifier`), written once per test binary.
pub fn tiny(arch: Arch, classifier: bool) -> PathBuf {
    let root = DIR.get_or_init(|| tempfile::tempdir().expect("temp dir")).path();
    let name = format!("{}{}", arch.model_type(), if classifier { "-meta" } else { "" });
    let out = root.join(name);
    // Tests run in threads: build in a private folder, then rename into place atomically.
    if !out.join("model.safetensors").is_file() {
        let tmp = root.join(format!("building-{}-{:?}", arch.model_type(), std::thread::current().id()));
        init(&InitOptions { arch, size: Size::Tiny, out: tmp.clone(), seed: 0, classifier, bf16: false, shards: 1 })
            .expect("model init");
        let _ = std::fs::rename(&tmp, &out);
    }
    out
}

pub const ARCHS: [Arch; 4] = [Arch::Qwen2, Arch::Qwen3, Arch::Llama, Arch::Gemma2];
