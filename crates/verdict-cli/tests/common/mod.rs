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

#[allow(dead_code)]
pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/preferences.jsonl")
}

/// A random model of the tiny shape with other weights (another seed): a "retrained" judge.
#[allow(dead_code)]
pub fn retrained(dir: &Path) -> PathBuf {
    let out = dir.join("tiny-retrained");
    assert!(bin().args(["model", "init", "--seed", "1", "--out"]).arg(&out).status().unwrap().success());
    out
}

/// Every row of a Parquet file as JSON (nulls left out, as arrow writes them), and its
/// column names.
#[allow(dead_code)]
pub fn parquet(path: &Path) -> (Vec<serde_json::Value>, Vec<String>) {
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let columns = reader.schema().fields().iter().map(|f| f.name().clone()).collect();
    let mut rows = Vec::new();
    for batch in reader.build().unwrap() {
        let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
        w.write_batches(&[&batch.unwrap()]).unwrap();
        w.finish().unwrap();
        rows.extend(String::from_utf8(w.into_inner()).unwrap().lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()));
    }
    (rows, columns)
}
