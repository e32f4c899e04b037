//! `verdict label` as a user runs it: the real binary on real files with a tiny random
//! model. Covers the demo path, resume, interruption, and every kind of bad input.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{bin, examples, model, parquet, retrained};
use serde_json::Value;

/// `label` at k = 2 with short judgements: the settings of most tests here.
fn label(input: &Path, output: &Path, extra: &[&str]) -> Output {
    label_at("2", input, output, extra)
}

/// `label` at k samples per item, otherwise as `label`.
fn label_at(k: &str, input: &Path, output: &Path, extra: &[&str]) -> Output {
    bin().arg("label").arg(input).arg("-o").arg(output).arg("--model").arg(model()).args(["--k", k, "--max-new-tokens", "24"]).args(extra).output().unwrap()
}

fn read_lines(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn labels_the_example_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("v.jsonl");
    let o = label(&examples(), &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let input: Vec<Value> = read_lines(&examples());
    let records = read_lines(&out);
    assert_eq!(records.len(), input.len());
    for (i, r) in input.iter().zip(&records) {
        assert_eq!(i["id"], r["id"]);
        let n = r["responses"].as_array().unwrap().len();
        assert_eq!(r["samples"].as_array().unwrap().len(), 2);
        assert_eq!(r["summed"].as_array().unwrap().len(), n);
        assert_eq!(r["template"], "grm-v1");
        for s in r["samples"].as_array().unwrap() {
            assert!(s["raw"].is_string() && s["permutation"].as_array().unwrap().len() == n);
        }
        if i.get("chosen").is_some() && r["winner"].is_number() {
            assert!(r["agrees_with_reference"].is_boolean());
        }
    }
}

#[test]
fn rerunning_resumes_and_repairs_a_cut_line() {
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full.jsonl");
    assert!(label(&examples(), &full, &[]).status.success());
    let expected = std::fs::read_to_string(&full).unwrap();

    // As if killed mid-write: five whole lines and half of the sixth.
    let part = tmp.path().join("part.jsonl");
    let lines: Vec<&str> = expected.lines().collect();
    let mut cut = lines[..5].join("\n");
    cut.push('\n');
    cut.push_str(&lines[5][..lines[5].len() / 2]);
    std::fs::write(&part, cut).unwrap();
    let o = label(&examples(), &part, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("partial last line"), "{}", stderr(&o));
    assert!(stderr(&o).contains("5 already in"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&part).unwrap(), expected, "resumed output equals an uninterrupted run");

    // A third run has nothing left to do.
    let o = label(&examples(), &part, &[]);
    assert!(stderr(&o).contains("labeled 0 item(s)"), "{}", stderr(&o));
    // Other settings against the same output are refused rather than mixed in.
    let o = label(&examples(), &part, &["--seed", "7"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("under other settings"), "{}", stderr(&o));
}

#[test]
fn a_larger_k_on_an_existing_output_makes_only_the_new_samples_and_equals_a_fresh_run() {
    let tmp = tempfile::tempdir().unwrap();
    let fresh = tmp.path().join("fresh.jsonl");
    assert!(label_at("4", &examples(), &fresh, &[]).status.success());
    let out = tmp.path().join("out.jsonl");
    assert!(label_at("2", &examples(), &out, &[]).status.success());

    let o = label_at("4", &examples(), &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("extending 16 item(s)"), "{}", stderr(&o));
    assert!(stderr(&o).contains("samples: 32 total"), "only samples 2 and 3 of each item are made: {}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), std::fs::read_to_string(&fresh).unwrap(), "extended to k = 4, the output is a fresh k = 4 run's, line for line");

    // Interrupted between the extended records and the compaction: the next run keeps the
    // last record of each id and writes one line per item again.
    let two = tmp.path().join("two.jsonl");
    assert!(label_at("2", &examples(), &two, &[]).status.success());
    let lines: Vec<String> = std::fs::read_to_string(&fresh).unwrap().lines().map(str::to_string).collect();
    let mut half = std::fs::read_to_string(&two).unwrap();
    for l in &lines[..5] {
        half.push_str(l);
        half.push('\n');
    }
    std::fs::write(&two, half).unwrap();
    let o = label_at("4", &examples(), &two, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("5 already in"), "{}", stderr(&o));
    assert!(stderr(&o).contains("extending 11 item(s)"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&two).unwrap(), std::fs::read_to_string(&fresh).unwrap());

    // A smaller k is refused with what to do instead.
    let o = label_at("3", &examples(), &out, &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("at k = 4, more samples than this run's 3"), "{}", stderr(&o));
}

#[test]
fn a_report_counts_every_sample_of_an_output_and_opens_in_a_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("v.jsonl");
    let o = label_at("4", &examples(), &out, &["--seed", "5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let html = tmp.path().join("r.html");
    let o = bin().arg("report").arg(&out).arg("--json").arg("--html").arg(&html).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let t = &report["judges"][0][1];

    // Count the same figures here, from the records, the plain way.
    let records = read_lines(&out);
    let samples: Vec<&Value> = records.iter().flat_map(|r| r["samples"].as_array().unwrap()).collect();
    let status = |s: &str| samples.iter().filter(|x| x["status"] == s).count() as u64;
    let (mut decisive, mut first) = (0u64, 0u64);
    for s in &samples {
        let Some(scores) = s["scores"].as_array().filter(|_| s["status"] != "invalid") else { continue };
        let scores: Vec<u64> = scores.iter().map(|x| x.as_u64().unwrap()).collect();
        let top = *scores.iter().max().unwrap();
        if scores.len() > 1 && scores.iter().filter(|&&x| x == top).count() == 1 {
            decisive += 1;
            let shown_first = s["permutation"][0].as_u64().unwrap() as usize;
            first += (scores[shown_first] == top) as u64;
        }
    }
    let ties = records.iter().filter(|r| r["winner"].is_number() && r["tie"] == true).count() as u64;
    let tokens: u64 = samples.iter().map(|s| s["completion_tokens"].as_u64().unwrap()).sum();
    assert_eq!(t["verdicts"].as_u64(), Some(records.len() as u64));
    assert_eq!(t["samples"].as_u64(), Some(samples.len() as u64));
    assert_eq!((t["valid"].as_u64(), t["forced"].as_u64()), (Some(status("valid")), Some(status("forced"))));
    let invalid: u64 = t["invalid"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(invalid, status("invalid"));
    assert_eq!((t["decisive"].as_u64(), t["wins_by_position"][0].as_u64().unwrap_or(0)), (Some(decisive), first));
    assert_eq!((t["ties"].as_u64(), t["completion_tokens"]["sum"].as_u64()), (Some(ties), Some(tokens)));
    assert!(decisive > 0, "a test that checks no decisive sample proves nothing");

    // The text form says the same, and the page renders in a browser with every chart.
    let o = bin().arg("report").arg(&out).arg("--html").arg(&html).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains(&format!("verdicts        {} from {} samples", records.len(), samples.len())), "{text}");
    let dom = verdict_testkit::browser_dom(&format!("file://{}", html.display()), std::time::Duration::from_secs(2));
    for chart in ["scores", "position", "tokens", "samples", "agreement"] {
        assert!(dom.contains(&format!(r#"data-chart="{chart}""#)), "chart {chart} missing: {dom}");
    }
    assert!(dom.contains(&format!(r#"<tr data-figure="verdicts"><td>Verdicts</td><td class="n">{}</td>"#, records.len())), "{dom}");
    let bars_in_scores = dom.split(r#"data-chart="scores""#).nth(1).unwrap().split("</svg>").next().unwrap().matches(r#"class="bar""#).count();
    assert_eq!(bars_in_scores, 10, "one bar per score 1..=10");

    // A broken line is named, not skipped.
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, format!("{}\n{{\"id\": 3}}\n", serde_json::to_string(&records[0]).unwrap())).unwrap();
    let o = bin().arg("report").arg(&bad).output().unwrap();
    assert!(!o.status.success() && stderr(&o).contains("record 2 is not a verdict record"), "{}", stderr(&o));
}

#[test]
fn adaptive_k_writes_why_each_item_stopped_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("adaptive.jsonl");
    let flags = ["--k-min", "2", "--stop", "confident", "--confidence", "0.6"];
    let o = label_at("6", &examples(), &out, &flags);
    assert!(o.status.success(), "{}", stderr(&o));
    let records = read_lines(&out);
    assert_eq!(records.len(), 16);
    let taken: Vec<usize> = records.iter().map(|r| r["samples"].as_array().unwrap().len()).collect();
    for (r, n) in records.iter().zip(&taken) {
        assert!([2, 4, 6].contains(n), "{r}");
        let why = r["stopped"].as_str().unwrap();
        assert!(["settled", "confident", "k_max"].contains(&why), "{why}");
        assert_eq!(why == "k_max", *n == 6, "{r}");
    }
    assert!(taken.iter().sum::<usize>() < 16 * 6, "some items stop early: {taken:?}");
    assert!(stderr(&o).contains(&format!("samples: {} total", taken.iter().sum::<usize>())), "{}", stderr(&o));
    let o = label_at("6", &examples(), &out, &flags);
    assert!(stderr(&o).contains("labeled 0 item(s)"), "an adaptive output resumes: {}", stderr(&o));
}

const BAD: &str = r#"{"id":"ok-1","prompt":"p","chosen":"c","rejected":"r"}
{"id":"broken", "prompt": "p", "responses": ["a"
{"id":"no-rejected","prompt":"p","chosen":"c"}
{"id":"zero","prompt":"p","responses":[]}
{"id":"number","prompt":"p","responses":["a", 42]}

{"id":"ok-2","messages":[{"role":"user","content":"q"}],"responses":["x","y","z"]}
"#;

fn too_long() -> String {
    format!(r#"{{"id":"too-long","prompt":"{}","responses":["a","b"]}}"#, "word ".repeat(4000))
}

#[test]
fn bad_lines_stop_the_run_with_line_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("bad.jsonl");
    // A prompt too long for the judge is found in the same up-front scan as the rest,
    // even after lines that are fine.
    std::fs::write(&input, format!("{BAD}{}\n", too_long())).unwrap();
    let out = tmp.path().join("v.jsonl");
    let o = label(&input, &out, &[]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("line 2") && e.contains("not valid JSON"), "{e}");
    assert!(e.contains("line 3 (id no-rejected): field `rejected` is missing"), "{e}");
    assert!(e.contains("line 4 (id zero): field `responses` must hold at least one response"), "{e}");
    assert!(e.contains("line 5 (id number): field `responses[1]` expected a string, got a number"), "{e}");
    assert!(e.contains("line 8 (id too-long): field `prompt` has") && e.contains("tokens"), "{e}");
    assert!(e.contains("5 bad line(s)"), "{e}");
    assert!(!out.exists(), "nothing is written from a bad file");
}

#[test]
fn an_empty_or_blank_file_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, text) in [("empty.jsonl", ""), ("blank.jsonl", "\n \n")] {
        let input = tmp.path().join(name);
        std::fs::write(&input, text).unwrap();
        let out = tmp.path().join(format!("{name}.out.jsonl"));
        let o = label(&input, &out, &[]);
        assert!(!o.status.success() && stderr(&o).contains("has no items: it is empty or holds only blank lines"), "{}", stderr(&o));
        assert!(!out.exists());
    }
}

#[test]
fn skip_invalid_writes_rejects_and_labels_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("bad.jsonl");
    std::fs::write(&input, format!("{BAD}{}\n", too_long())).unwrap();
    let out = tmp.path().join("v.jsonl");
    let o = label(&input, &out, &["--skip-invalid"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ids: Vec<_> = read_lines(&out).iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, ["ok-1", "ok-2"]);
    let rejects = read_lines(&tmp.path().join("v.jsonl.rejects.jsonl"));
    let got: Vec<(u64, String)> = rejects.iter().map(|r| (r["line"].as_u64().unwrap(), r["field"].as_str().unwrap().to_string())).collect();
    assert_eq!(
        got,
        [(2, "(line)".to_string()), (3, "rejected".into()), (4, "responses".into()), (5, "responses[1]".into()), (8, "prompt".into())]
    );
    assert!(rejects[4]["error"].as_str().unwrap().contains("tokens"), "{}", rejects[4]);
    assert!(rejects[1]["input"].as_str().unwrap().contains("no-rejected"), "the rejected line is kept whole");
    assert_eq!(rejects[4]["input"].as_str().unwrap(), too_long(), "a line too long for the judge is kept too");
}

#[test]
fn a_broken_model_folder_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(model().join(f), dir.join(f)).unwrap();
    }
    let o = bin()
        .arg("label")
        .arg(examples())
        .arg("-o")
        .arg(tmp.path().join("v.jsonl"))
        .arg("--model")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no model.safetensors"), "{}", stderr(&o));
}

#[test]
fn ctrl_c_keeps_a_valid_file_and_the_rerun_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("many.jsonl");
    let mut text = String::new();
    for i in 0..60 {
        text.push_str(&format!("{{\"id\":\"q{i}\",\"prompt\":\"question {i}\",\"responses\":[\"yes\",\"no {i}\"]}}\n"));
    }
    std::fs::write(&input, text).unwrap();
    let out = tmp.path().join("v.jsonl");
    // The same command twice: interrupted, then resumed.
    let run = || {
        let mut c = bin();
        c.arg("label").arg(&input).arg("-o").arg(&out).arg("--model").arg(model());
        c.args(["--k", "2", "--max-new-tokens", "48", "--batch", "2"]);
        c
    };
    let child = run()
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::fs::read_to_string(&out).map(|t| t.lines().count()).unwrap_or(0) < 2 {
        assert!(std::time::Instant::now() < deadline, "no progress");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let st = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(st.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    let partial = read_lines(&out);
    assert!(partial.len() < 60, "stopped early");
    let o = run()
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let ids: std::collections::HashSet<_> = read_lines(&out).iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 60);
    assert_eq!(read_lines(&out).len(), 60, "each item exactly once");
}

#[test]
fn other_weights_of_the_same_shape_do_not_resume_an_output() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("v.jsonl");
    assert!(label(&examples(), &out, &[]).status.success());
    let first = read_lines(&out);
    let other = retrained(tmp.path());
    let o = bin().arg("label").arg(examples()).arg("-o").arg(&out).arg("--model").arg(&other).args(["--k", "2", "--max-new-tokens", "24"]).output().unwrap();
    assert!(!o.status.success());
    let e = stderr(&o);
    let fp = first[0]["fingerprint"].as_str().unwrap();
    assert!(e.contains("judged by other weights") && e.contains(fp), "{e}");
    assert_eq!(read_lines(&out), first, "the output is left as it was");
}

#[test]
fn a_parquet_output_is_parquet_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let js = tmp.path().join("v.jsonl");
    let pq = tmp.path().join("v.parquet");
    assert!(label(&examples(), &js, &[]).status.success());
    // Half the items first, then all: the second run adds to the finished Parquet file.
    let half = tmp.path().join("half.jsonl");
    let all = std::fs::read_to_string(examples()).unwrap();
    std::fs::write(&half, all.lines().take(8).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let o = label(&half, &pq, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(parquet(&pq).0.len(), 8);
    let o = label(&examples(), &pq, &[]);
    assert!(o.status.success() && stderr(&o).contains("8 already in"), "{}", stderr(&o));
    let rows = parquet(&pq).0;
    assert!(!tmp.path().join("v.parquet.journal.jsonl").exists(), "the journal goes once the file is written");
    let expected = read_lines(&js);
    assert_eq!(rows.len(), expected.len());
    for (r, e) in rows.iter().zip(&expected) {
        for field in ["id", "key", "fingerprint", "summed", "winner", "margin", "tie", "valid"] {
            assert_eq!(r.get(field), e.get(field), "item {} field {field}", e["id"]);
        }
        let raw = |v: &Value| v["samples"].as_array().unwrap().iter().map(|s| s["raw"].clone()).collect::<Vec<_>>();
        assert_eq!(raw(r), raw(e));
        match &e["prompt"] {
            Value::String(_) => assert_eq!(r["prompt"], e["prompt"]),
            conversation => assert_eq!(&r["messages"], conversation),
        }
    }
}

#[test]
fn model_folders_are_readable_files_and_json_logs_are_json() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    assert!(bin().args(["model", "init", "--out"]).arg(&out).status().unwrap().success());
    for e in std::fs::read_dir(&out).unwrap() {
        let e = e.unwrap();
        assert_eq!(e.metadata().unwrap().permissions().mode() & 0o777, 0o644, "{}", e.path().display());
    }
    let o = bin()
        .args(["--log-format", "json", "label"])
        .arg(examples())
        .arg("-o")
        .arg(tmp.path().join("v.jsonl"))
        .arg("--model")
        .arg(model())
        .args(["--k", "2", "--max-new-tokens", "24"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("labeled 16 item(s)"), "{e}");
    for line in e.lines() {
        assert!(serde_json::from_str::<Value>(line).is_ok(), "not a JSON line: {line:?}");
    }
}
