//! Judge telemetry: how a generative reward model behaves on a job, from the records
//! Verdict stores (each sample's status, permutation, scores and token counts).
//!
//! [`Telemetry`] is an accumulator: fed one [`verdict_core::VerdictRecord`] at a time, so a
//! job of any size streams through it, and mergeable, so per-job figures add up to a
//! judge's. [`Summary`] turns its counts into the rates a user reads; [`render_text`] prints
//! them and [`render_html`] writes one self-contained page (inline CSS and SVG, no script,
//! nothing fetched) that can be mailed or attached to a dataset card. The coordinator's
//! dashboard uses the same figures and charts.

mod histogram;
mod html;
mod svg;
mod telemetry;
mod text;

pub use histogram::TokenHistogram;
pub use html::{render_html, render_judge_section};
pub use telemetry::{JudgeKey, Report, Summary, Telemetry};
pub use text::render_text;
