//! A mergeable histogram of token counts with bounded memory: exact below 64, then 16
//! buckets per power of two (each within about 6% of its values), so a job of millions of
//! judgements costs a few hundred counters and quantiles stay honest to a few percent.

use serde::{Deserialize, Serialize};

const EXACT: u32 = 64;
const SUB: u32 = 16;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenHistogram {
    /// Counts by bucket; grown on demand.
    counts: Vec<u64>,
    pub total: u64,
    pub sum: u64,
    pub max: u32,
}

fn bucket(v: u32) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let e = 31 - v.leading_zeros(); // 6..=31
    let sub = (v >> (e - 4)) & (SUB - 1);
    (EXACT + (e - 6) * SUB + sub) as usize
}

/// The smallest value that falls in bucket `b`.
fn lower(b: usize) -> u32 {
    let b = b as u32;
    if b < EXACT {
        return b;
    }
    let (e, sub) = ((b - EXACT) / SUB + 6, (b - EXACT) % SUB);
    (1 << e) | (sub << (e - 4))
}

impl TokenHistogram {
    pub fn add(&mut self, v: u32) {
        let b = bucket(v);
        if self.counts.len() <= b {
            self.counts.resize(b + 1, 0);
        }
        self.counts[b] += 1;
        self.total += 1;
        self.sum += v as u64;
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, other: &TokenHistogram) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// The value below which a share `q` of the counts lie (the lower edge of its bucket;
    /// the maximum for q = 1).
    pub fn quantile(&self, q: f64) -> u32 {
        if self.total == 0 {
            return 0;
        }
        if q >= 1.0 {
            return self.max;
        }
        let rank = (q * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return lower(b).min(self.max);
            }
        }
        self.max
    }

    /// Counts in `n` equal-width bins from 0 to the maximum, for a chart: (bin start, count).
    pub fn bins(&self, n: usize) -> Vec<(u32, u64)> {
        let n = n.max(1);
        let width = (self.max as usize / n + 1).max(1);
        let mut out: Vec<(u32, u64)> = (0..n).map(|i| ((i * width) as u32, 0)).collect();
        for (b, &c) in self.counts.iter().enumerate() {
            if c > 0 {
                let i = (lower(b) as usize / width).min(n - 1);
                out[i].1 += c;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_tight() {
        let mut prev = 0;
        for v in [0u32, 1, 63, 64, 65, 100, 127, 128, 1000, 4096, 70_000, u32::MAX] {
            let b = bucket(v);
            assert!(b >= prev, "bucket of {v} went back");
            prev = b;
            let lo = lower(b);
            assert!(lo <= v && (v - lo) as f64 <= v as f64 * 0.07 + 1.0, "{v} in bucket starting at {lo}");
        }
    }

    #[test]
    fn quantiles_and_merge() {
        let mut a = TokenHistogram::default();
        let mut b = TokenHistogram::default();
        for v in 1..=500u32 {
            if v % 2 == 0 { a.add(v) } else { b.add(v) }
        }
        a.merge(&b);
        assert_eq!((a.total, a.max), (500, 500));
        assert!((a.mean() - 250.5).abs() < 1e-9);
        let p50 = a.quantile(0.5);
        assert!((235..=250).contains(&p50), "p50 {p50}");
        assert_eq!(a.quantile(1.0), 500);
        assert_eq!(a.bins(5).iter().map(|b| b.1).sum::<u64>(), 500);
    }
}
