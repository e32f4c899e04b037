//! Adaptive k on a known mix of clear and close items: samples saved, and verdicts kept,
//! against the full k_max run. bench/adaptive/run.sh runs it; bench/RESULTS.md has figures.
//!
//! The judge here is synthetic, and that is the point: the stop rules only see scores, so a
//! workload whose truth is known (how often each item's better response wins a sample)
//! measures them exactly, which a random-weight model on the GPU cannot (its scores are
//! noise). Each item is a pair; each sample scores the two responses 1–10, the better one
//! higher with the item's probability `p` (clear items: p = 0.95, close items: p = 0.6, a
//! coin: p = 0.5), by a gap of 1–4 points, and one sample in 20 is invalid. The adaptive run
//! takes each item's first samples of the very same draw (as the engine does: a sample
//! depends on its index, not on k), so a verdict differs only where the rule stopped early.
//!
//! Usage: cargo run --release -p verdict-core --example adaptive_mix [ITEMS] [K_MAX] [K_MIN]

use verdict_core::shuffle::{mix, SplitMix64};
use verdict_core::{vote, Adaptive, FinishReason, Sample, StopRule, Stopped};

/// Sample `index` of a pair: the item decides which response is better, the sample whether
/// the judge agrees (with probability `p`) and by how much.
fn judgement(item: u64, index: u32, p: f64) -> Sample {
    let mut rng = SplitMix64::new(mix(&[0xada, item, index as u64]));
    let invalid = rng.below(20) == 0;
    let better = (item % 2) as usize;
    let agrees = rng.next_f64() < p;
    let low = 1 + rng.below(6) as u8;
    let high = low + 1 + rng.below(4) as u8;
    let winner = if agrees { better } else { 1 - better };
    let mut scores = [low, low];
    scores[winner] = high;
    let raw = if invalid { "no score block".to_string() } else { format!("Scores: \\boxed{{{}, {}}}", scores[0], scores[1]) };
    Sample::from_generation(index, vec![0, 1], raw, FinishReason::Eos, false, 600, 350)
}

struct Tally {
    samples: u64,
    changed: u64,
    /// Winners that are the better response: of the full run, of the adaptive one.
    right: (u64, u64),
    stops: [u64; 3],
}

fn run(items: u64, k_max: u32, adaptive: Adaptive, kind: &[(f64, &str)]) -> Vec<(String, u64, u64, Tally)> {
    let mut out = Vec::new();
    for &(p, name) in kind {
        let mut t = Tally { samples: 0, changed: 0, right: (0, 0), stops: [0; 3] };
        for item in 0..items {
            let id = mix(&[p.to_bits(), item]);
            let all: Vec<Sample> = (0..k_max).map(|j| judgement(id, j, p)).collect();
            let full = vote(&all, 2, id).winner;
            let mut taken = adaptive.next_round(0, k_max);
            let why = loop {
                if let Some(why) = adaptive.check(&all[..taken as usize], 2, k_max) {
                    break why;
                }
                taken += adaptive.next_round(taken, k_max);
            };
            t.samples += taken as u64;
            let stopped = vote(&all[..taken as usize], 2, id).winner;
            t.changed += u64::from(stopped != full);
            let better = Some((id % 2) as usize);
            t.right.0 += u64::from(full == better);
            t.right.1 += u64::from(stopped == better);
            t.stops[match why {
                Stopped::Settled => 0,
                Stopped::Confident => 1,
                Stopped::KMax => 2,
            }] += 1;
        }
        out.push((name.to_string(), items, items * k_max as u64, t));
    }
    out
}

fn main() {
    let arg = |i: usize, d: u64| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (items, k_max, k_min) = (arg(1, 10_000), arg(2, 32) as u32, arg(3, 4) as u32);
    // A labeling job's mix: mostly clear pairs, a quarter close, a tenth coin flips.
    let mix_of = [(0.95, "clear (p = 0.95)"), (0.6, "close (p = 0.6)"), (0.5, "coin (p = 0.5)")];
    let weights = [0.65, 0.25, 0.10];
    println!("items per kind scaled to a mix of {:.0}% clear, {:.0}% close, {:.0}% coin; k_max = {k_max}, k_min = rounds = {k_min}; {items} items\n", weights[0] * 100.0, weights[1] * 100.0, weights[2] * 100.0);
    println!("| stop rule | kind | samples (share of k_max run) | winners changed | better response wins: full / adaptive | stopped settled / confident / k_max |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let rules = [("settled", StopRule::Settled), ("confident 0.95", StopRule::Confident { confidence: 0.95 }), ("confident 0.99", StopRule::Confident { confidence: 0.99 })];
    for (name, stop) in rules {
        let a = Adaptive { k_min, round: k_min, stop };
        let rows = run(items, k_max, a, &mix_of);
        let (mut used, mut full, mut changed, mut n) = (0.0, 0.0, 0.0, 0.0);
        for ((kind, count, all, t), w) in rows.iter().zip(weights) {
            let pct = |n: u64| 100.0 * n as f64 / *count as f64;
            println!(
                "| {name} | {kind} | {} ({:.1}%) | {} ({:.2}%) | {:.1}% / {:.1}% | {} / {} / {} |",
                t.samples,
                100.0 * t.samples as f64 / *all as f64,
                t.changed,
                pct(t.changed),
                pct(t.right.0),
                pct(t.right.1),
                t.stops[0],
                t.stops[1],
                t.stops[2]
            );
            used += w * t.samples as f64 / *count as f64;
            full += w * *all as f64 / *count as f64;
            changed += w * t.changed as f64 / *count as f64;
            n += w;
        }
        println!("| {name} | **the mix** | **{:.1}% of the samples** | **{:.2}% of winners** | | |", 100.0 * used / full, 100.0 * changed / n);
    }
}
