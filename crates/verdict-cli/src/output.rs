//! The verdicts file: one JSON record per line, appended and flushed per batch so that an
//! interrupted run leaves a valid file and a re-run resumes where it stopped.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

/// What an existing output file already holds: id → content key.
pub struct Existing {
    pub done: HashMap<String, String>,
    /// A partial last line (from a killed run) that was cut off.
    pub truncated_bytes: u64,
}

/// Scan an existing output, cutting off a partial last line so appends stay valid JSONL.
pub fn scan_existing(path: &Path) -> anyhow::Result<Existing> {
    let mut done = HashMap::new();
    if !path.exists() {
        return Ok(Existing { done, truncated_bytes: 0 });
    }
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let total = file.metadata()?.len();
    let mut good_end = 0u64;
    let mut reader = BufReader::new(file);
    let mut buf = String::new();
    let mut line_no = 0;
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
        }
        match serde_json::from_str::<Head>(buf.trim_end()) {
            Ok(h) if complete => {
                done.insert(h.id, h.key);
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
    Ok(Existing { done, truncated_bytes })
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
