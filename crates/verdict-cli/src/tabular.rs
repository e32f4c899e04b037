//! Parquet in and out, through arrow. Input rows become JSON objects so that Parquet and
//! JSONL share one parser and one set of errors; output rows are JSON objects turned into
//! columns with an inferred schema (field order as in the rows), so the export layout is
//! the JSONL layout, column for column.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use arrow::datatypes::{Field, Schema};
use arrow::json::reader::infer_json_schema_from_iterator;
use arrow::json::{LineDelimitedWriter, ReaderBuilder};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use serde_json::Value;

/// Every row of a Parquet file as one JSON object per string.
pub fn read_parquet_rows(path: &Path) -> anyhow::Result<Vec<String>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{} is not a Parquet file", path.display()))?
        .build()?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.with_context(|| format!("reading {}", path.display()))?;
        let mut w = LineDelimitedWriter::new(Vec::new());
        w.write_batches(&[&batch])?;
        w.finish()?;
        let text = String::from_utf8(w.into_inner())?;
        out.extend(text.lines().map(str::to_string));
    }
    Ok(out)
}

/// Write rows (JSON objects) as Parquet.
pub fn write_parquet(path: &Path, rows: &[Value]) -> anyhow::Result<()> {
    anyhow::ensure!(!rows.is_empty(), "nothing to write to {}: no rows", path.display());
    let inferred = infer_json_schema_from_iterator(rows.iter().map(Ok::<_, arrow::error::ArrowError>))?;
    // Keep the columns in the order the rows list them (inference does not).
    let mut order: Vec<String> = Vec::new();
    for r in rows {
        if let Value::Object(m) = r {
            for k in m.keys() {
                if !order.contains(k) {
                    order.push(k.clone());
                }
            }
        }
    }
    let fields: Vec<Arc<Field>> = order.iter().filter_map(|k| inferred.field_with_name(k).ok().map(|f| Arc::new(f.clone()))).collect();
    let schema = Arc::new(Schema::new(fields));
    let mut decoder = ReaderBuilder::new(schema.clone()).with_batch_size(rows.len().max(1)).build_decoder()?;
    let file = File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut writer = ArrowWriter::try_new(file, schema, None)?;
    for chunk in rows.chunks(4096) {
        decoder.serialize(chunk)?;
        if let Some(batch) = decoder.flush()? {
            writer.write(&batch)?;
        }
    }
    writer.close()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_survive_a_parquet_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.parquet");
        let rows = vec![
            serde_json::json!({"prompt": "p1", "chosen": "a", "rejected": "b", "margin": 3}),
            serde_json::json!({"prompt": "p2", "chosen": "c", "rejected": "d", "margin": 1}),
        ];
        write_parquet(&p, &rows).unwrap();
        let back: Vec<Value> = read_parquet_rows(&p).unwrap().iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(back, rows);
    }
}
