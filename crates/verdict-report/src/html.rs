//! The report as one self-contained HTML page: inline CSS and SVG, no script, nothing
//! fetched, so it opens from a mail attachment or a dataset card as it does here.

use std::fmt::Write;

use crate::svg::{escape, Bar, Chart, CHART_CSS};
use crate::telemetry::{JudgeKey, Report, Telemetry};
use crate::text::{num, pct, reasons, short};

const PAGE_CSS: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;max-width:1000px}\
h1{font-size:20px}h2{font-size:16px;margin-top:28px}table.figures{border-collapse:collapse;margin:8px 0}\
table.figures td{padding:3px 10px;border-bottom:1px solid #eee;vertical-align:top}table.figures td.n{font-variant-numeric:tabular-nums;white-space:nowrap}\
td.why{color:#666;font-size:12px}.charts{display:flex;flex-wrap:wrap}.note{color:#666;font-size:12px}";

fn share(count: f64, total: f64) -> f64 {
    if total > 0.0 {
        count / total
    } else {
        0.0
    }
}

fn charts(t: &Telemetry) -> Vec<Chart<'static>> {
    let mut out = Vec::new();
    let counted: u64 = t.scores.iter().sum();
    out.push(Chart {
        id: "scores",
        title: "Scores given (all responses, counted samples)",
        bars: (1..=10).map(|s| Bar { label: s.to_string(), value: share(t.scores.get(s - 1).copied().unwrap_or(0) as f64, counted as f64), marker: None }).collect(),
        format: |v| format!("{:.0}%", v * 100.0),
        marker_legend: None,
    });
    out.push(Chart {
        id: "position",
        title: "Winner's position as shown to the judge",
        // Every position some sample had, won or not.
        bars: (0..t.wins_by_position.len().max(t.chance_by_position.len()))
            .map(|j| (j, t.wins_by_position.get(j).copied().unwrap_or(0)))
            .map(|(j, w)| Bar {
                label: if j == 0 { "first".into() } else { format!("#{}", j + 1) },
                value: share(w as f64, t.decisive as f64),
                marker: Some(share(t.chance_by_position.get(j).copied().unwrap_or(0.0), t.decisive as f64)),
            })
            .collect(),
        format: |v| format!("{:.0}%", v * 100.0),
        marker_legend: Some("chance"),
    });
    out.push(Chart {
        id: "tokens",
        title: "Tokens per judgement",
        bars: t.completion_tokens.bins(16).into_iter().map(|(from, c)| Bar { label: from.to_string(), value: c as f64, marker: None }).collect(),
        format: |v| format!("{v:.0}"),
        marker_legend: None,
    });
    let mut outcomes = vec![Bar { label: "valid".into(), value: t.valid as f64, marker: None }, Bar { label: "forced".into(), value: t.forced as f64, marker: None }];
    outcomes.extend(t.invalid.iter().map(|(k, n)| Bar { label: k.clone(), value: *n as f64, marker: None }));
    out.push(Chart { id: "samples", title: "Samples by outcome", bars: outcomes, format: |v| format!("{v:.0}"), marker_legend: None });
    out.push(Chart {
        id: "agreement",
        title: "Agreement of the samples with the verdict",
        bars: (0..10).map(|i| Bar { label: format!("{:.1}", i as f64 / 10.0), value: t.agreement_bins.get(i).copied().unwrap_or(0) as f64, marker: None }).collect(),
        format: |v| format!("{v:.0}"),
        marker_legend: None,
    });
    if !t.stopped.is_empty() {
        out.push(Chart {
            id: "stopped",
            title: "Why adaptive k stopped",
            bars: t.stopped.iter().map(|(k, n)| Bar { label: k.clone(), value: *n as f64, marker: None }).collect(),
            format: |v| format!("{v:.0}"),
            marker_legend: None,
        });
    }
    out
}

/// One judge's figures and charts, as an HTML fragment (the dashboard shows the same).
pub fn render_judge_section(key: &JudgeKey, t: &Telemetry) -> String {
    let s = t.summary();
    let mut h = String::new();
    let _ = write!(h, r#"<section class="judge" data-judge="{}"><h2>Judge {} <span class="note">weights {}</span></h2>"#, escape(&key.judge), escape(&key.judge), escape(short(&key.fingerprint)));
    let mut rows: Vec<(&str, &str, String, &str)> = vec![
        ("verdicts", "Verdicts", s.verdicts.to_string(), "items judged"),
        ("samples", "Samples", format!("{} ({} per verdict)", s.samples, num(s.samples_per_verdict, 2)), "independent judgements written"),
        ("valid", "Valid", pct(s.valid_rate), "samples that wrote their own score block"),
        ("forced", "Forced", pct(s.forced_rate), "samples that ran out of tokens and had their scores forced (they count; drop them by status if you wish)"),
        ("invalid", "Invalid", pct(s.invalid_rate), "samples without usable scores (they do not count)"),
        ("truncated", "Cut off", pct(s.truncated_rate), "samples stopped by max_new_tokens without scores (under --on-budget invalid; under force they are forced)"),
        ("undecided", "No verdict", pct(s.undecided_rate), "items with no counted sample"),
        ("ties", "Ties", pct(s.tie_rate), "decided items whose top sum was shared (the winner was drawn by the seed)"),
        ("agreement", "Mean agreement", num(s.mean_agreement, 3), "share of an item's counted samples that rank its winner first, averaged"),
        ("first", "Shown first wins", pct(s.first_shown_wins), "of the samples with a single top score, how often the response shown first won"),
        ("chance", "… by chance", pct(s.first_shown_chance), "what an unbiased judge gives (the mean of 1/n); responses are shuffled per sample"),
        ("z", "Position bias z", num(s.position_bias_z, 2), "difference from chance in standard deviations; beyond ±3 the judge favours a position"),
        ("mean_score", "Mean score", num(s.mean_score, 2), "over every counted score, 1–10"),
        ("tokens", "Tokens per judgement", format!("mean {}, p50 {}, p90 {}, max {}", num(s.completion_tokens_mean, 0), s.completion_tokens_p50, s.completion_tokens_p90, s.completion_tokens_max), "completion tokens per sample"),
    ];
    let reason_text = reasons(t);
    if !reason_text.is_empty() {
        rows.insert(5, ("reasons", "Invalid by reason", reason_text, "why samples did not parse"));
    }
    if s.with_reference > 0 {
        rows.push(("reference", "Agrees with chosen", format!("{} of {}", pct(s.reference_agreement), s.with_reference), "items whose dataset named a chosen response"));
    }
    h.push_str(r#"<table class="figures">"#);
    for (id, name, value, why) in rows {
        let _ = write!(h, r#"<tr data-figure="{id}"><td>{name}</td><td class="n">{}</td><td class="why">{}</td></tr>"#, escape(&value), escape(why));
    }
    h.push_str(r#"</table><div class="charts">"#);
    for c in charts(t) {
        h.push_str(&c.render());
    }
    h.push_str("</div></section>");
    h
}

/// The whole page.
pub fn render_html(r: &Report) -> String {
    let mut h = String::new();
    let title = format!("Verdict report: {}", r.title);
    let _ = write!(h, "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{PAGE_CSS}{CHART_CSS}</style></head><body>", escape(&title));
    let _ = write!(h, "<h1>{}</h1><p class=\"note\">{} verdicts. Rates are over samples unless they say items; a random-weights judge gives meaningless numbers.</p>", escape(&title), r.verdicts());
    if r.judges.is_empty() {
        h.push_str("<p>No verdicts yet.</p>");
    }
    for (key, t) in &r.judges {
        h.push_str(&render_judge_section(key, t));
    }
    h.push_str("</body></html>\n");
    h
}
