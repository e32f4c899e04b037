//! From leased entries to results: drop what must not run (cancelled jobs, entries
//! delivered too often), judge the rest grouped by label spec, and turn per-item engine
//! errors into rejections that name the field.

use std::collections::{BTreeMap, HashSet};

use verdict_core::LabelSpec;
use verdict_engine::{EngineError, Judge};
use verdict_proto::convert::record_to_wire;
use verdict_proto::v1::{self, item_failure::Kind};
use verdict_queue::Entry;

fn failure(e: &Entry, kind: Kind, field: &str, message: String, deliveries: u64) -> v1::ItemResult {
    v1::ItemResult {
        entry_id: e.id.clone(),
        job_id: e.item.job_id.clone(),
        item_id: e.item.item.id.clone(),
        outcome: Some(v1::item_result::Outcome::Failure(v1::ItemFailure { kind: kind as i32, field: field.into(), message, deliveries })),
    }
}

/// What a batch produced.
pub struct Processed {
    pub results: Vec<v1::ItemResult>,
    pub samples: u64,
    pub generated_tokens: u64,
}

/// Judge a batch of entries. Blocking (runs the engine): call from a blocking thread.
pub fn process(judge: &Judge, entries: &[Entry], cancelled: &HashSet<String>, max_deliveries: u64) -> Result<Processed, EngineError> {
    let mut results = Vec::with_capacity(entries.len());
    let mut groups: BTreeMap<String, (LabelSpec, Vec<&Entry>)> = BTreeMap::new();
    for e in entries {
        if e.deliveries > max_deliveries {
            let msg = format!("delivered {} times without a result (maximum {max_deliveries})", e.deliveries);
            results.push(failure(e, Kind::Dead, "", msg, e.deliveries));
        } else if cancelled.contains(&e.item.job_id) {
            results.push(failure(e, Kind::Cancelled, "", "job cancelled".into(), e.deliveries));
        } else {
            let key = serde_json::to_string(&e.item.spec).unwrap_or_default();
            groups.entry(key).or_insert_with(|| (e.item.spec.clone(), Vec::new())).1.push(e);
        }
    }
    let (mut samples, mut tokens) = (0u64, 0u64);
    for (spec, group) in groups.into_values() {
        // A spec this judge cannot run (a budget beyond its context, meta-RM voting without
        // a meta RM) fails every item of it the same way; retrying elsewhere would not help,
        // since every worker of a judge name loads the same weights.
        if let Err(e) = judge.check_spec(&spec) {
            for entry in group {
                results.push(failure(entry, Kind::Rejected, "spec", e.to_string(), entry.deliveries));
            }
            continue;
        }
        let mut prepared = Vec::with_capacity(group.len());
        let mut owners = Vec::with_capacity(group.len());
        for e in group {
            match judge.prepare(e.item.item.clone(), &spec) {
                Ok(p) => {
                    prepared.push(p);
                    owners.push(e);
                }
                Err(EngineError::Item { error, .. }) => {
                    results.push(failure(e, Kind::Rejected, &error.field, error.problem.to_string(), e.deliveries));
                }
                Err(other) => return Err(other),
            }
        }
        if prepared.is_empty() {
            continue;
        }
        for (e, record) in owners.into_iter().zip(judge.judge(&prepared, &spec)?) {
            samples += record.samples.len() as u64;
            tokens += record.samples.iter().map(|s| s.completion_tokens as u64).sum::<u64>();
            results.push(v1::ItemResult {
                entry_id: e.id.clone(),
                job_id: e.item.job_id.clone(),
                item_id: record.id.clone(),
                outcome: Some(v1::item_result::Outcome::Verdict(record_to_wire(&e.item.job_id, &record))),
            });
        }
    }
    Ok(Processed { results, samples, generated_tokens: tokens })
}
