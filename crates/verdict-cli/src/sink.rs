//! Where rows go: JSONL on stdout, a JSONL file, or a Parquet file (by the `.parquet`
//! extension) with the schema of its kind of row. Files are written under a temporary name
//! and renamed into place when complete, so a file at the output path is always whole.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;
use verdict_core::export::PromptForm;

use crate::schemas;
use crate::tabular::ParquetWriter;

/// What the rows are, which decides their Parquet schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    Verdicts,
    Dpo(PromptForm),
    Rewards(PromptForm),
}

pub fn is_parquet(p: &Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
}

enum Inner {
    Jsonl(std::io::BufWriter<Box<dyn Write>>),
    Parquet(Box<ParquetWriter>),
}

pub struct RowSink {
    /// `None` once finished.
    inner: Option<Inner>,
    kind: RowKind,
    /// (temporary file, final path) for file outputs.
    rename: Option<(PathBuf, PathBuf)>,
    rows: usize,
}

/// `x.parquet` → `x.parquet.partial`: beside the output, so the rename stays on one disk.
fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    path.with_file_name(name)
}

impl RowSink {
    /// Rows of `kind` to `path` (stdout when `None`).
    pub fn open(path: Option<&Path>, kind: RowKind) -> anyhow::Result<Self> {
        let (inner, rename) = match path {
            None => (Inner::Jsonl(std::io::BufWriter::new(Box::new(std::io::stdout().lock()))), None),
            Some(p) => {
                let tmp = temporary(p);
                let inner = if is_parquet(p) {
                    let schema = match kind {
                        RowKind::Verdicts => schemas::verdicts(),
                        RowKind::Dpo(form) => schemas::dpo(form),
                        RowKind::Rewards(form) => schemas::rewards(form),
                    };
                    Inner::Parquet(Box::new(ParquetWriter::create(&tmp, schema)?))
                } else {
                    let f = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
                    Inner::Jsonl(std::io::BufWriter::new(Box::new(f)))
                };
                (inner, Some((tmp, p.to_path_buf())))
            }
        };
        Ok(Self { inner: Some(inner), kind, rename, rows: 0 })
    }

    pub fn write(&mut self, row: Value) -> anyhow::Result<()> {
        match self.inner.as_mut().context("rows written after the output was finished")? {
            Inner::Jsonl(w) => {
                serde_json::to_writer(&mut *w, &row)?;
                w.write_all(b"\n")?;
            }
            Inner::Parquet(w) => w.write(if self.kind == RowKind::Verdicts { schemas::verdict_row(row) } else { row })?,
        }
        self.rows += 1;
        Ok(())
    }

    /// Complete the output; returns the rows written.
    pub fn finish(mut self) -> anyhow::Result<usize> {
        match self.inner.take() {
            Some(Inner::Jsonl(mut w)) => w.flush()?,
            Some(Inner::Parquet(w)) => {
                w.finish()?;
            }
            None => {}
        }
        if let Some((tmp, path)) = self.rename.take() {
            std::fs::rename(&tmp, &path).with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))?;
        }
        Ok(self.rows)
    }
}

impl Drop for RowSink {
    /// An output abandoned half-way (an error, a broken stream) leaves no partial file.
    fn drop(&mut self) {
        if let Some((tmp, _)) = self.rename.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}
