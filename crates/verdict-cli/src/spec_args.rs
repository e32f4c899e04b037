//! The label-spec flags shared by `label` and `submit`, and their checks.

use clap::Args;
use verdict_core::{Adaptive, Aggregation, LabelSpec, OnBudget, SpecLimits, StopRule};

#[derive(Args, Clone, Debug)]
pub struct SpecArgs {
    /// Samples per item (at most --max-k); with --k-min, the most an item takes (--k-max).
    #[arg(long, visible_alias = "k-max", default_value_t = 8)]
    pub k: u32,
    /// Adaptive k: every item takes this many samples, then more in rounds of --k-round only
    /// while --stop says it is open, up to --k.
    #[arg(long)]
    pub k_min: Option<u32>,
    /// Adaptive k: samples taken between checks (default: --k-min).
    #[arg(long, requires = "k_min")]
    pub k_round: Option<u32>,
    /// Adaptive k: settled (stop once the samples left cannot change the winner; never
    /// changes one) or confident (also stop once the leader's share of first places is above
    /// one half at --confidence).
    #[arg(long, requires = "k_min", default_value = "settled", value_parser = ["settled", "confident"])]
    pub stop: String,
    /// Adaptive k with --stop confident: the confidence, in (0.5, 1).
    #[arg(long, default_value_t = 0.95)]
    pub confidence: f64,
    /// Sampling temperature, ≥ 0 (0 with k = 1 is greedy).
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Nucleus sampling threshold, in (0, 1].
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Most tokens per judgement (the judge's context must hold the prompt and these).
    #[arg(long, default_value_t = 512)]
    pub max_new_tokens: u32,
    /// Seed: with the same seed, judge and input, every sample is the same.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// How samples become a verdict: voting, or meta-rm (keep the samples a meta reward model rates best, then vote). Default: meta-rm when a meta RM is given, else voting.
    #[arg(long, value_parser = ["voting", "meta-rm"])]
    pub aggregation: Option<String>,
    /// Samples kept by meta-RM voting (default k/2); only with meta-RM voting.
    #[arg(long)]
    pub k_meta: Option<u32>,
    /// When a judgement runs out of tokens before its scores: force them (marked "forced") or count it invalid.
    #[arg(long, default_value = "force", value_parser = ["force", "invalid"])]
    pub on_budget: String,
    /// Most samples per item a spec may ask for.
    #[arg(long, env = "VERDICT_MAX_K", default_value_t = 64)]
    pub max_k: u32,
}

impl SpecArgs {
    /// The spec for `judge`, checked. `meta_rm_given`: a meta RM was named, which makes
    /// meta-RM voting the default aggregation.
    pub fn spec(&self, judge: &str, meta_rm_given: bool) -> anyhow::Result<LabelSpec> {
        let mut s = LabelSpec::new(judge);
        s.k = self.k;
        s.temperature = self.temperature;
        s.top_p = self.top_p;
        s.max_new_tokens = self.max_new_tokens;
        s.seed = self.seed;
        s.on_budget = if self.on_budget == "invalid" { OnBudget::Invalid } else { OnBudget::Force };
        let meta = match self.aggregation.as_deref() {
            Some("meta-rm") => true,
            Some(_) => false,
            None => meta_rm_given,
        };
        if meta {
            s.aggregation = Aggregation::MetaRm { k_meta: self.k_meta };
        } else if self.k_meta.is_some() {
            anyhow::bail!("--k-meta sets how many samples meta-RM voting keeps, and this run votes without a meta RM (give --meta-rm, or --aggregation meta-rm)");
        }
        if let Some(k_min) = self.k_min {
            let stop = if self.stop == "confident" { StopRule::Confident { confidence: self.confidence } } else { StopRule::Settled };
            s.adaptive = Some(Adaptive { k_min, round: self.k_round.unwrap_or(k_min), stop });
        }
        s.validate_within(&SpecLimits { max_k: self.max_k }).map_err(|e| anyhow::anyhow!("invalid label settings: {e}"))?;
        Ok(s)
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        spec: SpecArgs,
    }

    fn spec(args: &[&str], meta: bool) -> anyhow::Result<LabelSpec> {
        let cli = Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).map_err(|e| anyhow::anyhow!("{e}"))?;
        cli.spec.spec("j", meta)
    }

    #[test]
    fn flags_are_checked_with_clear_errors() {
        let e = spec(&["--temperature", "-1"], false).unwrap_err().to_string();
        assert!(e.contains("temperature must be finite and ≥ 0, got -1"), "{e}");
        assert!(spec(&["--k", "65"], false).unwrap_err().to_string().contains("k 65"));
        assert_eq!(spec(&["--k", "65", "--max-k", "128"], false).unwrap().k, 65);
        assert!(spec(&["--k-meta", "2"], false).unwrap_err().to_string().contains("--k-meta"));
        assert_eq!(spec(&["--k-meta", "2"], true).unwrap().aggregation, Aggregation::MetaRm { k_meta: Some(2) });
        assert_eq!(spec(&[], true).unwrap().aggregation, Aggregation::MetaRm { k_meta: None });
        assert_eq!(spec(&["--aggregation", "voting"], true).unwrap().aggregation, Aggregation::Voting);
        assert_eq!(spec(&["--aggregation", "meta-rm"], false).unwrap().aggregation, Aggregation::MetaRm { k_meta: None });
    }

    #[test]
    fn adaptive_k_flags() {
        assert_eq!(spec(&[], false).unwrap().adaptive, None);
        let s = spec(&["--k-max", "32", "--k-min", "4", "--stop", "confident", "--confidence", "0.9"], false).unwrap();
        assert_eq!(s.k, 32);
        assert_eq!(s.adaptive, Some(Adaptive { k_min: 4, round: 4, stop: StopRule::Confident { confidence: 0.9 } }));
        assert_eq!(spec(&["--k-min", "2", "--k-round", "3"], false).unwrap().adaptive.map(|a| (a.round, a.stop)), Some((3, StopRule::Settled)));
        assert!(spec(&["--k", "4", "--k-min", "5"], false).unwrap_err().to_string().contains("k_min must be in 1..=k (4), got 5"));
        assert!(spec(&["--k-min", "2", "--stop", "confident", "--confidence", "0.4"], false).unwrap_err().to_string().contains("confidence must be in (0.5, 1)"));
        assert!(spec(&["--k-min", "2"], true).unwrap_err().to_string().contains("cannot stop meta-RM voting early"));
        assert!(spec(&["--k-round", "2"], false).is_err(), "--k-round needs --k-min");
    }
}
