//! Parquet in and out, through arrow. Input rows become JSON objects so that Parquet and
//! JSONL share one parser and one set of errors. Output goes through a fixed schema per kind
//! of row ([`crate::schemas`]): a column never changes type with the data (a null score, a
//! conversation prompt), and a file with no rows still carries its schema.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use arrow::datatypes::Schema;
use arrow::json::reader::Decoder;
use arrow::json::{LineDelimitedWriter, ReaderBuilder};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use serde_json::Value;

/// The rows of a Parquet file, one JSON object per string, read one record batch at a time.
pub fn parquet_rows(path: &Path) -> anyhow::Result<impl Iterator<Item = anyhow::Result<String>>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{} is not a Parquet file", path.display()))?
        .with_batch_size(1024)
        .build()?;
    let path = path.to_path_buf();
    Ok(reader.flat_map(move |batch| {
        let lines = batch
            .with_context(|| format!("reading {}", path.display()))
            .and_then(|batch| {
                let mut w = LineDelimitedWriter::new(Vec::new());
                w.write_batches(&[&batch])?;
                w.finish()?;
                Ok(String::from_utf8(w.into_inner())?.lines().map(str::to_string).collect::<Vec<_>>())
            });
        match lines {
            Ok(v) => v.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(e)],
        }
    }))
}

/// Every row of a Parquet file (tests).
#[cfg(test)]
pub fn read_parquet_rows(path: &Path) -> anyhow::Result<Vec<String>> {
    parquet_rows(path)?.collect()
}

/// Rows shaped for one schema, written in record batches as they come.
pub struct ParquetWriter {
    decoder: Decoder,
    writer: ArrowWriter<File>,
    pending: Vec<Value>,
    rows: usize,
}

const BATCH: usize = 1024;

impl ParquetWriter {
    pub fn create(path: &Path, schema: Schema) -> anyhow::Result<Self> {
        let schema = Arc::new(schema);
        let decoder = ReaderBuilder::new(schema.clone()).with_batch_size(BATCH).build_decoder()?;
        let file = File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
        let writer = ArrowWriter::try_new(file, schema, None)?;
        Ok(Self { decoder, writer, pending: Vec::with_capacity(BATCH), rows: 0 })
    }

    pub fn write(&mut self, row: Value) -> anyhow::Result<()> {
        self.pending.push(row);
        if self.pending.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.decoder.serialize(&self.pending).with_context(|| format!("row {} does not fit the export's schema", self.rows + 1))?;
        self.rows += self.pending.len();
        self.pending.clear();
        if let Some(batch) = self.decoder.flush()? {
            self.writer.write(&batch)?;
        }
        Ok(())
    }

    /// Write what is pending and the footer; returns the rows written.
    pub fn finish(mut self) -> anyhow::Result<usize> {
        self.flush()?;
        self.writer.close()?;
        Ok(self.rows)
    }
}

/// Write rows of one schema as Parquet (tests).
#[cfg(test)]
pub fn write_parquet(path: &Path, schema: Schema, rows: impl IntoIterator<Item = Value>) -> anyhow::Result<usize> {
    let mut w = ParquetWriter::create(path, schema)?;
    for r in rows {
        w.write(r)?;
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field};

    #[test]
    fn rows_survive_a_parquet_round_trip_and_empty_files_keep_their_schema() {
        let dir = tempfile::tempdir().unwrap();
        let schema = || {
            Schema::new(vec![
                Field::new("prompt", DataType::Utf8, false),
                Field::new("scores", DataType::List(Arc::new(Field::new("item", DataType::Int64, true))), true),
            ])
        };
        let p = dir.path().join("x.parquet");
        let rows = vec![serde_json::json!({"prompt": "p1", "scores": [3, 4]}), serde_json::json!({"prompt": "p2", "scores": null})];
        assert_eq!(write_parquet(&p, schema(), rows.clone()).unwrap(), 2);
        let back: Vec<Value> = read_parquet_rows(&p).unwrap().iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(back, vec![rows[0].clone(), serde_json::json!({"prompt": "p2"})]);

        let empty = dir.path().join("empty.parquet");
        assert_eq!(write_parquet(&empty, schema(), vec![]).unwrap(), 0);
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&empty).unwrap()).unwrap();
        assert_eq!(reader.schema().fields().len(), 2, "an empty file still has its columns");
    }
}
