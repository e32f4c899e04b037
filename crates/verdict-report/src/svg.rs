//! Bar charts as inline SVG: no script, no fonts fetched, so a report opens anywhere.
//! Every bar carries its label and value as data attributes (and a tooltip), which is what
//! the browser tests read back.

use std::fmt::Write;

/// Text safe inside XML/HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub struct Bar {
    pub label: String,
    pub value: f64,
    /// A dashed marker at this height (e.g. what chance would give).
    pub marker: Option<f64>,
}

pub struct Chart<'a> {
    /// Identifies the chart in the page (`data-chart`).
    pub id: &'a str,
    pub title: &'a str,
    pub bars: Vec<Bar>,
    /// How a value is written on its bar.
    pub format: fn(f64) -> String,
    /// What the dashed markers mean, for the legend.
    pub marker_legend: Option<&'a str>,
}

const W: f64 = 440.0;
const H: f64 = 230.0;
const LEFT: f64 = 12.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 34.0;

impl Chart<'_> {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = write!(s, r#"<svg class="chart" data-chart="{}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{}">"#, escape(self.id), escape(self.title));
        let _ = write!(s, r#"<text x="{LEFT}" y="18" class="ct">{}</text>"#, escape(self.title));
        let top = self.bars.iter().map(|b| b.value.max(b.marker.unwrap_or(0.0))).fold(0.0, f64::max);
        let plot_h = H - TOP - BOTTOM;
        let n = self.bars.len().max(1) as f64;
        let slot = (W - 2.0 * LEFT) / n;
        let bar_w = (slot * 0.72).max(1.0);
        let base = H - BOTTOM;
        let _ = write!(s, r#"<line x1="{LEFT}" y1="{base}" x2="{}" y2="{base}" class="axis"/>"#, W - LEFT);
        let label_every = ((n / 12.0).ceil() as usize).max(1);
        for (i, b) in self.bars.iter().enumerate() {
            let x = LEFT + i as f64 * slot + (slot - bar_w) / 2.0;
            let h = if top > 0.0 { b.value / top * plot_h } else { 0.0 };
            let text = (self.format)(b.value);
            let _ = write!(
                s,
                r#"<rect class="bar" x="{x:.1}" y="{:.1}" width="{bar_w:.1}" height="{h:.1}" data-label="{}" data-value="{}"><title>{}: {}</title></rect>"#,
                base - h,
                escape(&b.label),
                b.value,
                escape(&b.label),
                escape(&text)
            );
            if let Some(m) = b.marker {
                let y = if top > 0.0 { base - m / top * plot_h } else { base };
                let _ = write!(s, r#"<line class="marker" x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" data-value="{m}"/>"#, x - 2.0, x + bar_w + 2.0);
            }
            if n <= 12.0 && b.value > 0.0 {
                let _ = write!(s, r#"<text x="{:.1}" y="{:.1}" class="v">{}</text>"#, x + bar_w / 2.0, base - h - 4.0, escape(&text));
            }
            if i % label_every == 0 {
                let _ = write!(s, r#"<text x="{:.1}" y="{:.1}" class="l">{}</text>"#, x + bar_w / 2.0, base + 16.0, escape(&b.label));
            }
        }
        if let Some(legend) = self.marker_legend {
            let _ = write!(s, r#"<line class="marker" x1="{}" y1="{}" x2="{}" y2="{}"/><text x="{}" y="{}" class="lg">{}</text>"#, W - 110.0, 29.0, W - 92.0, 29.0, W - 88.0, 32.0, escape(legend));
        }
        s.push_str("</svg>");
        s
    }
}

/// The CSS the charts need, for the page that holds them.
pub const CHART_CSS: &str = ".chart{background:#fff;border:1px solid #ddd;border-radius:6px;margin:6px}\
.chart .ct{font:600 13px sans-serif;fill:#222}.chart .bar{fill:#4c78a8}.chart .bar:hover{fill:#2a5585}\
.chart .axis{stroke:#999}.chart .marker{stroke:#e45756;stroke-width:2;stroke-dasharray:4 2}\
.chart .v{font:10px sans-serif;fill:#333;text-anchor:middle}.chart .l{font:10px sans-serif;fill:#555;text-anchor:middle}\
.chart .lg{font:10px sans-serif;fill:#e45756}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_tallest_and_escape_labels() {
        let c = Chart {
            id: "x",
            title: "a <b>",
            bars: vec![Bar { label: "<1>".into(), value: 2.0, marker: Some(4.0) }, Bar { label: "2".into(), value: 1.0, marker: None }],
            format: |v| format!("{v}"),
            marker_legend: Some("chance"),
        };
        let svg = c.render();
        assert!(svg.contains("a &lt;b&gt;") && svg.contains(r#"data-label="&lt;1&gt;""#));
        // The marker (4) is the top: the bar of 2 is half the plot height.
        let plot_h = H - TOP - BOTTOM;
        assert!(svg.contains(&format!(r#"height="{:.1}""#, plot_h / 2.0)), "{svg}");
    }
}
