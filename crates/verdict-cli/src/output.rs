//! The verdicts file of `verdict label`: one JSON record per line, appended and flushed per
//! batch so that an interrupted run leaves a valid file and a re-run resumes where it
//! stopped. A `.parquet` output cannot be appended to, so its records go to a JSONL journal
//! beside it (`OUTPUT.journal.jsonl`) and become the Parquet file once every item is in;
//! re-running against a finished Parquet output unpacks it into a journal again.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use verdict_core::VerdictRecord;

use crate::sink::{is_parquet, RowKind, RowSink};

/// A verdict already in the output.
pub struct Done {
    pub key: String,
    pub fingerprint: String,
    /// Its samples: the k it was labeled at.
    pub samples: u32,
}

/// What an existing output already holds, by item id.
pub struct Existing {
    pub done: HashMap<String, Done>,
    /// A partial last line (from a killed run) that was cut off.
    pub truncated_bytes: u64,
    /// Records that a later line of the same id replaces (an extension to a larger k
    /// appends the item's new record; `Output::finish` keeps the last one of each id).
    pub superseded: usize,
}

/// Scan an existing JSONL file, cutting off a partial last line so appends stay valid.
pub fn scan_existing(path: &Path) -> anyhow::Result<Existing> {
    let mut done = HashMap::new();
    if !path.exists() {
        return Ok(Existing { done, truncated_bytes: 0, superseded: 0 });
    }
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let total = file.metadata()?.len();
    let mut good_end = 0u64;
    let mut reader = BufReader::new(file);
    let mut buf = String::new();
    let mut line_no = 0;
    let mut superseded = 0;
    loop {
        buf.clear();
        let n = reader.read_line(&mut buf).with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let complete = buf.ends_with('\n');
        #[derive(serde::Deserialize)]
        struct Head {
            id: String,
            key: String,
            #[serde(default)]
            fingerprint: String,
            #[serde(default)]
            samples: Vec<serde::de::IgnoredAny>,
        }
        match serde_json::from_str::<Head>(buf.trim_end()) {
            Ok(h) if complete => {
                let samples = h.samples.len() as u32;
                if done.insert(h.id, Done { key: h.key, fingerprint: h.fingerprint, samples }).is_some() {
                    superseded += 1;
                }
                good_end += n as u64;
            }
            // Only the last line may be partial: anything else means this is not our file.
            _ if !complete => break,
            _ => anyhow::bail!(
                "{} line {line_no} is not a verdict record; refusing to append to a file Verdict did not write",
                path.display()
            ),
        }
    }
    let truncated_bytes = total - good_end;
    if truncated_bytes > 0 {
        let f = OpenOptions::new().write(true).open(path)?;
        f.set_len(good_end)?;
    }
    Ok(Existing { done, truncated_bytes, superseded })
}

/// The whole records of `ids` in a JSONL output (the last of each id): an extension's
/// earlier samples.
pub fn records_of(path: &Path, ids: &HashSet<&str>) -> anyhow::Result<HashMap<String, VerdictRecord>> {
    let mut found = HashMap::new();
    if ids.is_empty() {
        return Ok(found);
    }
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        #[derive(serde::Deserialize)]
        struct Id {
            id: String,
        }
        let Ok(Id { id }) = serde_json::from_str::<Id>(&line) else { continue };
        if ids.contains(id.as_str()) {
            let record: VerdictRecord = serde_json::from_str(&line).with_context(|| format!("{} line {}: a verdict record that cannot be read back", path.display(), n + 1))?;
            found.insert(id, record);
        }
    }
    Ok(found)
}

/// Rewrite a JSONL output with one record per id: the last one written, at the place of
/// the first (so the file stays in input order). Two passes and a map of ids to offsets:
/// memory grows with the ids, not the records.
pub fn compact(path: &Path) -> anyhow::Result<()> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    let read = |what: &str| format!("cannot {what} {}", path.display());
    let mut last: HashMap<String, u64> = HashMap::new();
    {
        let mut reader = BufReader::new(File::open(path).with_context(|| read("read"))?);
        let (mut at, mut line) = (0u64, String::new());
        loop {
            line.clear();
            let n = reader.read_line(&mut line).with_context(|| read("read"))?;
            if n == 0 {
                break;
            }
            let Id { id } = serde_json::from_str(line.trim_end()).with_context(|| read("compact"))?;
            last.insert(id, at);
            at += n as u64;
        }
    }
    let tmp = path.with_extension("compacting");
    {
        let mut out = std::io::BufWriter::new(File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?);
        let mut reader = BufReader::new(File::open(path).with_context(|| read("read"))?);
        let mut lookup = BufReader::new(File::open(path).with_context(|| read("read"))?);
        let (mut line, mut record) = (String::new(), String::new());
        loop {
            line.clear();
            if reader.read_line(&mut line).with_context(|| read("read"))? == 0 {
                break;
            }
            let Id { id } = serde_json::from_str(line.trim_end()).with_context(|| read("compact"))?;
            // The first line of an id takes its last record; later lines of it are dropped.
            let Some(at) = last.remove(&id) else { continue };
            lookup.seek(SeekFrom::Start(at))?;
            record.clear();
            lookup.read_line(&mut record).with_context(|| read("read"))?;
            out.write_all(record.as_bytes())?;
        }
        out.flush()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

/// Appends records, one whole line per write, flushed after each batch.
pub struct JsonlWriter {
    file: File,
}

impl JsonlWriter {
    pub fn append(path: &Path) -> anyhow::Result<Self> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        file.seek(SeekFrom::End(0))?;
        Ok(Self { file })
    }

    pub fn write_batch<T: Serialize>(&mut self, records: &[T]) -> anyhow::Result<()> {
        let mut buf = Vec::new();
        for r in records {
            serde_json::to_writer(&mut buf, r)?;
            buf.push(b'\n');
        }
        self.file.write_all(&buf)?;
        self.file.flush()?;
        Ok(())
    }
}

/// The output of one `label` run: where records are appended, and what the user gets.
pub struct Output {
    pub path: PathBuf,
    /// Where records are appended: the output itself, or a Parquet output's journal.
    pub journal: PathBuf,
}

impl Output {
    pub fn new(path: &Path) -> Self {
        let journal = if is_parquet(path) {
            let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
            name.push(".journal.jsonl");
            path.with_file_name(name)
        } else {
            path.to_path_buf()
        };
        Self { path: path.to_path_buf(), journal }
    }

    fn parquet(&self) -> bool {
        self.journal != self.path
    }

    /// What the output already holds. A finished Parquet output is unpacked into a journal
    /// first, so the run can add to it.
    pub fn existing(&self) -> anyhow::Result<Existing> {
        if self.parquet() && !self.journal.exists() && self.path.exists() {
            let mut w = JsonlWriter::append(&self.journal)?;
            let mut batch = Vec::new();
            for row in crate::tabular::parquet_rows(&self.path)? {
                let row: serde_json::Value = serde_json::from_str(&row?)?;
                batch.push(crate::schemas::verdict_from_row(row));
                if batch.len() >= 1024 {
                    w.write_batch(&batch)?;
                    batch.clear();
                }
            }
            w.write_batch(&batch)?;
        }
        scan_existing(&self.journal)
    }

    pub fn writer(&self) -> anyhow::Result<JsonlWriter> {
        JsonlWriter::append(&self.journal)
    }

    /// Every item is in: records that later ones replaced (an extension's) go, and a
    /// Parquet output is written from its journal, which then goes.
    pub fn finish(&self, superseded: bool) -> anyhow::Result<()> {
        if superseded && self.journal.exists() {
            compact(&self.journal)?;
        }
        if !self.parquet() {
            return Ok(());
        }
        let mut sink = RowSink::open(Some(&self.path), RowKind::Verdicts)?;
        if self.journal.exists() {
            let file = File::open(&self.journal).with_context(|| format!("cannot read {}", self.journal.display()))?;
            for line in BufReader::new(file).lines() {
                sink.write(serde_json::from_str(&line?)?)?;
            }
        }
        sink.finish()?;
        if self.journal.exists() {
            std::fs::remove_file(&self.journal).with_context(|| format!("cannot remove {}", self.journal.display()))?;
        }
        Ok(())
    }
}
