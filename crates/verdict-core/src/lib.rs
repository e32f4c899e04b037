//! Verdict's domain, with no I/O: what an item, a label spec, a sample and a verdict are,
//! how a GRM prompt is written, how a judgement's scores are parsed, and how k samples are
//! aggregated into a verdict (voting and meta-RM guided voting, DeepSeek-GRM Eq. 14).
//!
//! Layout, top-down:
//! - [`item`]: items (a prompt or a conversation plus n ≥ 1 responses) and the input shapes
//!   people already have (`{prompt, chosen, rejected}`, `{prompt, responses}`,
//!   `{messages, responses}`), with errors that name the field.
//! - [`spec`]: the label spec (judge, k, sampling, seed, template, aggregation).
//! - [`key`]: stable content keys for (item, spec, weights' fingerprints), used for resume
//!   and dedup.
//! - [`shuffle`]: the seeded per-sample response permutation and its RNG.
//! - [`template`]: the DeepSeek-GRM prompt, by named version.
//! - [`parse`]: scores out of a judgement (`\boxed{..}` or `[[..]]`), principles, critique.
//! - [`sample`], [`vote`], [`verdict`]: samples, aggregation, and the verdict record.
//! - [`revote`], [`adaptive`]: a verdict at a smaller k, and the rules that stop an item
//!   early under adaptive k.
//!
//! - [`redact`]: service URLs without their passwords, for messages.
//!
//! Everything here is deterministic: the same inputs give the same outputs on any machine.

pub mod adaptive;
pub mod export;
pub mod item;
pub mod key;
pub mod parse;
pub mod redact;
pub mod revote;
pub mod sample;
pub mod shuffle;
pub mod spec;
pub mod template;
pub mod verdict;
pub mod vote;

pub use adaptive::{Adaptive, StopRule, Stopped};
pub use item::{FieldError, Item, Message, Problem, Prompt};
pub use key::{ContentKey, Fingerprints};
pub use parse::{parse_judgement, ParseFailure, ParsedJudgement};
pub use revote::{AtK, RevoteError};
pub use sample::{FinishReason, ParseStatus, Sample};
pub use spec::{Aggregation, LabelSpec, OnBudget, SpecError, SpecLimits, TemplateVersion};
pub use verdict::{Verdict, VerdictRecord};
pub use vote::{aggregate, meta_vote, vote};
