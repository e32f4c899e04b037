//! Shared by the CLI's end-to-end tests: the binary, a tiny model made once per test
//! binary, and the example dataset.

#[allow(dead_code)]
pub mod cluster;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_verdict"))
}

static MODEL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();

/// A tiny random-weight Qwen2 folder, made with `verdict model init`.
pub fn model() -> &'static Path {
    &MODEL
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("tiny");
            let st = bin().args(["model", "init", "--arch", "qwen2", "--size", "tiny", "--out"]).arg(&out).status().unwrap();
            assert!(st.success());
            (dir, out)
        })
        .1
}

pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/preferences.jsonl")
}
