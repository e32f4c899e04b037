//! The label-spec flags shared by `label` and `submit`.

use clap::Args;
use verdict_core::{LabelSpec, OnBudget};

#[derive(Args, Clone, Debug)]
pub struct SpecArgs {
    /// Samples per item.
    #[arg(long, default_value_t = 8)]
    pub k: u32,
    /// Sampling temperature (0 with k = 1 is greedy).
    #[arg(long, default_value_t = 0.5)]
    pub temperature: f32,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Most tokens per judgement.
    #[arg(long, default_value_t = 512)]
    pub max_new_tokens: u32,
    /// Seed: with the same seed, judge and input, every sample is the same.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Samples kept by meta-RM voting (default k/2).
    #[arg(long)]
    pub k_meta: Option<u32>,
    /// When a judgement runs out of tokens before its scores: force them (marked "forced") or count it invalid.
    #[arg(long, default_value = "force", value_parser = ["force", "invalid"])]
    pub on_budget: String,
}

impl SpecArgs {
    /// A spec for `judge` with these settings (voting; meta-RM is set by the caller).
    pub fn spec(&self, judge: &str) -> LabelSpec {
        let mut s = LabelSpec::new(judge);
        s.k = self.k;
        s.temperature = self.temperature;
        s.top_p = self.top_p;
        s.max_new_tokens = self.max_new_tokens;
        s.seed = self.seed;
        s.on_budget = if self.on_budget == "invalid" { OnBudget::Invalid } else { OnBudget::Force };
        s
    }
}

/// `--batch`: a number of sequences, or `auto` (usize::MAX): as many as the device memory
/// holds on CUDA, 32 on the CPU.
pub fn parse_batch(s: &str) -> Result<usize, String> {
    if s == "auto" {
        return Ok(usize::MAX);
    }
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?}: expected a positive number of sequences or \"auto\"")),
    }
}

/// Prompt length assumed when planning how many items to read per batch; the engine sizes
/// the real batches from the real prompts.
pub const PLANNING_PROMPT_TOKENS: usize = 1024;
