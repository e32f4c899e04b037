//! Reading a dataset into items, line by line (JSONL) or row by row (Parquet), keeping every
//! bad line with its line number, the field that is wrong and the line itself, so that
//! nothing is dropped silently. The reader streams: what it keeps per item is a 64-bit hash
//! of its id, its line number and a 64-bit hash of its content (about 30 bytes, to spot an
//! id reused with other content), not the item. Two ids sharing a 64-bit hash in one file
//! (odds of about 1 in 3·10^7 for a million ids) would be reported as a repeated id.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::Context;
use verdict_core::{FieldError, Item};

/// A line that could not become an item.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub line: usize,
    pub id: Option<String>,
    pub error: String,
    pub field: String,
    /// The input line as it was read.
    pub input: String,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}", self.line)?;
        if let Some(id) = &self.id {
            write!(f, " (id {id})")?;
        }
        write!(f, ": {}", self.error)
    }
}

impl Rejected {
    /// A line that parsed but cannot be used (e.g. too long for the judge).
    pub fn of_item(line: usize, id: &str, e: &FieldError, input: String) -> Self {
        Rejected { line, id: Some(id.to_string()), error: e.to_string(), field: e.field.clone(), input }
    }

    /// As written to a rejects file.
    pub fn record(&self) -> serde_json::Value {
        serde_json::json!({"line": self.line, "id": self.id, "field": self.field, "error": self.error, "input": self.input})
    }
}

/// One line of a dataset, read.
pub enum Parsed {
    /// An item, with its 1-based line number and the line's text.
    Item { line: usize, item: Item, text: String },
    Rejected(Rejected),
}

/// The `id` of a line, if it has a readable one (to name it in errors).
fn peek_id(text: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    match v.get("id")? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(crate) fn hash64(x: impl Hash) -> u64 {
    // DefaultHasher::new() has fixed keys: the same text hashes the same in every run.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    x.hash(&mut h);
    h.finish()
}

pub(crate) fn content_hash(item: &Item) -> u64 {
    hash64(serde_json::to_string(&(&item.prompt, &item.responses)).unwrap_or_default())
}

type Lines = Box<dyn Iterator<Item = anyhow::Result<(usize, String)>>>;

/// The numbered lines of a dataset: Parquet (by the `.parquet` extension; "line" then means
/// row, from 1) or JSONL.
fn lines(path: &Path) -> anyhow::Result<Lines> {
    if crate::sink::is_parquet(path) {
        let rows = crate::tabular::parquet_rows(path)?;
        Ok(Box::new(rows.enumerate().map(|(i, r)| r.map(|r| (i + 1, r)))))
    } else {
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let path = path.to_path_buf();
        Ok(Box::new(std::io::BufReader::new(file).lines().enumerate().map(move |(i, line)| {
            line.map(|l| (i + 1, l)).with_context(|| format!("{}: line {} is not readable UTF-8 text", path.display(), i + 1))
        })))
    }
}

/// A dataset, read one line at a time.
pub struct Reader {
    lines: Lines,
    /// Hash of id → (line, hash of content); `None` when repeats are not tracked.
    seen: Option<HashMap<u64, (u32, u64)>>,
    /// Lines that repeat an earlier item exactly (same id and content): labeled once.
    pub duplicates: usize,
    /// Lines that were not blank.
    pub non_blank: usize,
}

impl Reader {
    /// A reader that reports ids repeated with other content and skips exact repeats.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        Ok(Self { lines: lines(path)?, seen: Some(HashMap::new()), duplicates: 0, non_blank: 0 })
    }

    /// A reader that keeps nothing per item (a second pass over a file already checked).
    pub fn unchecked(path: &Path) -> anyhow::Result<Self> {
        Ok(Self { lines: lines(path)?, seen: None, duplicates: 0, non_blank: 0 })
    }
}

impl Iterator for Reader {
    type Item = anyhow::Result<Parsed>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (n, text) = match self.lines.next()? {
                Ok(x) => x,
                Err(e) => return Some(Err(e)),
            };
            if text.trim().is_empty() {
                continue;
            }
            self.non_blank += 1;
            let item = match Item::from_json_line(&text) {
                Ok(item) => item,
                Err(e) => return Some(Ok(Parsed::Rejected(Rejected { line: n, id: peek_id(&text), error: e.to_string(), field: e.field, input: text }))),
            };
            let Some(seen) = self.seen.as_mut() else {
                return Some(Ok(Parsed::Item { line: n, item, text }));
            };
            let content = content_hash(&item);
            match seen.get(&hash64(&item.id)) {
                Some((_, c)) if *c == content => self.duplicates += 1,
                Some((first, _)) => {
                    let error = format!("field `id` repeats the id of line {first} with different content");
                    return Some(Ok(Parsed::Rejected(Rejected { line: n, id: Some(item.id), error, field: "id".into(), input: text })));
                }
                None => {
                    seen.insert(hash64(&item.id), (n as u32, content));
                    return Some(Ok(Parsed::Item { line: n, item, text }));
                }
            }
        }
    }
}

/// The error for an input with no items at all.
pub fn no_items(path: &Path) -> anyhow::Error {
    anyhow::anyhow!("{} has no items: it is empty or holds only blank lines", path.display())
}

/// Print bad lines (the first 20) and fail, unless they may be skipped.
pub fn refuse_bad_lines(path: &Path, rejected: &[Rejected], hint: &str) -> anyhow::Result<()> {
    if rejected.is_empty() {
        return Ok(());
    }
    for r in rejected.iter().take(20) {
        crate::say::note(format!("error: {}: {r}", path.display()));
    }
    if rejected.len() > 20 {
        crate::say::note(format!("... and {} more bad lines", rejected.len() - 20));
    }
    anyhow::bail!("{} bad line(s) in {}; fix them, or pass --skip-invalid to {hint}", rejected.len(), path.display())
}

/// Where rejected lines go: `--rejects`, or the output's name with `.rejects.jsonl`.
pub fn rejects_path(output: &Path, explicit: Option<&PathBuf>) -> PathBuf {
    explicit.cloned().unwrap_or_else(|| {
        let mut name = output.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".rejects.jsonl");
        output.with_file_name(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(path: &Path) -> (Vec<Item>, Vec<Rejected>) {
        let (mut items, mut bad) = (Vec::new(), Vec::new());
        for p in Reader::open(path).unwrap() {
            match p.unwrap() {
                Parsed::Item { item, .. } => items.push(item),
                Parsed::Rejected(r) => bad.push(r),
            }
        }
        (items, bad)
    }

    #[test]
    fn parquet_and_jsonl_read_the_same_items() {
        let jsonl = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/preferences.jsonl");
        let rows: Vec<serde_json::Value> =
            std::fs::read_to_string(&jsonl).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        // Parquet needs one type per column: keep the rows whose shape matches the first.
        let same: Vec<serde_json::Value> = rows.iter().filter(|r| r.get("chosen").is_some()).cloned().collect();
        let dir = tempfile::tempdir().unwrap();
        let schema = arrow::datatypes::Schema::new(
            ["id", "prompt", "chosen", "rejected"].map(|c| arrow::datatypes::Field::new(c, arrow::datatypes::DataType::Utf8, false)).to_vec(),
        );
        let pq = dir.path().join("prefs.parquet");
        crate::tabular::write_parquet(&pq, schema, same.iter().cloned()).unwrap();
        let (from_parquet, bad) = read_all(&pq);
        assert!(bad.is_empty(), "{bad:?}");
        let js = dir.path().join("prefs.jsonl");
        std::fs::write(&js, same.iter().map(|r| r.to_string() + "\n").collect::<String>()).unwrap();
        let (from_json, _) = read_all(&js);
        assert_eq!(from_parquet, from_json);
        assert_eq!(from_parquet.len(), 9);
    }

    #[test]
    fn repeats_are_counted_or_rejected_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.jsonl");
        let a = r#"{"id":"a","prompt":"p","responses":["x"]}"#;
        std::fs::write(&p, format!("{a}\n\n{a}\n{{\"id\":\"a\",\"prompt\":\"q\",\"responses\":[\"x\"]}}\n")).unwrap();
        let mut r = Reader::open(&p).unwrap();
        let parsed: Vec<Parsed> = r.by_ref().map(Result::unwrap).collect();
        assert_eq!(parsed.len(), 2);
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.non_blank, 3);
        match &parsed[1] {
            Parsed::Rejected(x) => {
                assert_eq!((x.line, x.field.as_str()), (4, "id"));
                assert!(x.input.contains("\"q\""), "the line is kept");
            }
            Parsed::Item { .. } => panic!("an id reused with other content was accepted"),
        }
    }
}
