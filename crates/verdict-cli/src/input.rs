//! Reading a JSONL dataset into items, keeping every bad line with its line number and the
//! field that is wrong, so that nothing is dropped silently.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

use anyhow::Context;
use verdict_core::{FieldError, Item};

/// A line that could not become an item.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub line: usize,
    pub id: Option<String>,
    pub error: String,
    pub field: String,
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

pub struct Dataset {
    /// Items with their 1-based line numbers.
    pub items: Vec<(usize, Item)>,
    pub rejected: Vec<Rejected>,
    /// Lines that repeat an earlier item exactly (same id and content): labeled once.
    pub duplicates: usize,
}

fn reject(line: usize, id: Option<String>, e: &FieldError, input: &str) -> Rejected {
    Rejected { line, id, error: e.to_string(), field: e.field.clone(), input: input.to_string() }
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

/// Read a dataset: Parquet (by the `.parquet` extension; "line" then means row, from 1)
/// or JSONL.
pub fn read_dataset(path: &Path) -> anyhow::Result<Dataset> {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet")) {
        let rows = crate::tabular::read_parquet_rows(path)?;
        Ok(parse_lines(rows.into_iter().enumerate().map(|(i, r)| (i + 1, r))))
    } else {
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut lines = Vec::new();
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.with_context(|| format!("{}: line {} is not readable UTF-8 text", path.display(), i + 1))?;
            lines.push((i + 1, line));
        }
        Ok(parse_lines(lines.into_iter()))
    }
}

/// Parse numbered JSON lines into items, keeping every bad line with its reason.
pub fn parse_lines(lines: impl Iterator<Item = (usize, String)>) -> Dataset {
    let mut items = Vec::new();
    let mut rejected = Vec::new();
    let mut duplicates = 0;
    let mut seen: HashMap<String, (usize, String)> = HashMap::new();
    for (n, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        match Item::from_json_line(&line) {
            Ok(item) => {
                let content = serde_json::to_string(&(&item.prompt, &item.responses)).unwrap_or_default();
                match seen.get(&item.id) {
                    Some((_, c)) if *c == content => duplicates += 1,
                    Some((first, _)) => rejected.push(Rejected {
                        line: n,
                        id: Some(item.id.clone()),
                        error: format!("field `id` repeats the id of line {first} with different content"),
                        field: "id".into(),
                        input: line.clone(),
                    }),
                    None => {
                        seen.insert(item.id.clone(), (n, content));
                        items.push((n, item));
                    }
                }
            }
            Err(e) => rejected.push(reject(n, peek_id(&line), &e, &line)),
        }
    }
    Dataset { items, rejected, duplicates }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parquet_and_jsonl_read_the_same_items() {
        let jsonl = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/preferences.jsonl");
        let rows: Vec<serde_json::Value> =
            std::fs::read_to_string(&jsonl).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        // Parquet needs one type per column: keep the rows whose shape matches the first.
        let same: Vec<serde_json::Value> = rows.iter().filter(|r| r.get("chosen").is_some()).cloned().collect();
        let dir = tempfile::tempdir().unwrap();
        let pq = dir.path().join("prefs.parquet");
        crate::tabular::write_parquet(&pq, &same).unwrap();
        let from_parquet = read_dataset(&pq).unwrap();
        assert!(from_parquet.rejected.is_empty(), "{:?}", from_parquet.rejected);
        let from_json = parse_lines(same.iter().enumerate().map(|(i, r)| (i + 1, r.to_string())));
        let a: Vec<_> = from_parquet.items.iter().map(|(_, i)| i.clone()).collect();
        let b: Vec<_> = from_json.items.iter().map(|(_, i)| i.clone()).collect();
        assert_eq!(a, b);
        assert_eq!(a.len(), 9);
    }
}
