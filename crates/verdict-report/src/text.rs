//! The report as plain text, for the terminal.

use std::fmt::Write;

use crate::telemetry::{JudgeKey, Report, Telemetry};

pub(crate) fn pct(x: Option<f64>) -> String {
    x.map_or("–".into(), |x| format!("{:.1}%", x * 100.0))
}

pub(crate) fn num(x: Option<f64>, digits: usize) -> String {
    x.map_or("–".into(), |x| format!("{x:.digits$}"))
}

/// The fingerprint as people quote it: its first 12 characters.
pub(crate) fn short(fingerprint: &str) -> &str {
    fingerprint.get(..12).unwrap_or(fingerprint)
}

/// Invalid samples by reason, "no_score_block 3, wrong_count 1".
pub(crate) fn reasons(t: &Telemetry) -> String {
    t.invalid.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
}

fn judge_text(out: &mut String, key: &JudgeKey, t: &Telemetry) {
    let s = t.summary();
    let _ = writeln!(out, "judge {} (weights {})", key.judge, short(&key.fingerprint));
    let _ = writeln!(out, "  verdicts        {} from {} samples ({} per verdict)", s.verdicts, s.samples, num(s.samples_per_verdict, 2));
    let mut invalid = pct(s.invalid_rate);
    if !t.invalid.is_empty() {
        invalid.push_str(&format!(" ({})", reasons(t)));
    }
    let _ = writeln!(out, "  samples         valid {}, forced {}, invalid {invalid}; cut off at the token limit {}", pct(s.valid_rate), pct(s.forced_rate), pct(s.truncated_rate));
    let _ = writeln!(out, "  outcomes        no verdict {}, ties {}, mean agreement {}", pct(s.undecided_rate), pct(s.tie_rate), num(s.mean_agreement, 3));
    let _ = writeln!(
        out,
        "  position bias   shown first wins {} of {} decisive samples, {} by chance (z = {})",
        pct(s.first_shown_wins),
        s.decisive_samples,
        pct(s.first_shown_chance),
        num(s.position_bias_z, 2)
    );
    let hist: Vec<String> = t.scores.iter().enumerate().map(|(i, c)| format!("{}:{c}", i + 1)).collect();
    let _ = writeln!(out, "  scores          mean {} [{}]", num(s.mean_score, 2), hist.join(" "));
    if s.with_reference > 0 {
        let _ = writeln!(out, "  reference       agrees with the chosen response on {} of {} items", pct(s.reference_agreement), s.with_reference);
    }
    let _ = writeln!(
        out,
        "  tokens          per judgement mean {}, p50 {}, p90 {}, max {}; prompt mean {}",
        num(s.completion_tokens_mean, 0),
        s.completion_tokens_p50,
        s.completion_tokens_p90,
        s.completion_tokens_max,
        num(s.prompt_tokens_mean, 0)
    );
    if !t.stopped.is_empty() {
        let why: Vec<String> = t.stopped.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(out, "  adaptive k      stopped: {}", why.join(", "));
    }
}

pub fn render_text(r: &Report) -> String {
    let mut out = String::new();
    if r.judges.is_empty() {
        let _ = writeln!(out, "{}: no verdicts yet", r.title);
    }
    for (key, t) in &r.judges {
        judge_text(&mut out, key, t);
    }
    out
}
