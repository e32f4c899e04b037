//! Seeded randomness that must not change between versions or machines: the per-sample
//! response permutation and the tie-break order. SplitMix64 is written out here rather
//! than taken from a crate so that a dependency update can never reshuffle stored labels.

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough for shuffles.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, n), by rejection (no modulo bias).
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// Uniform in [0, 1) with 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Mix several words into one seed.
pub fn mix(parts: &[u64]) -> u64 {
    let mut r = SplitMix64::new(0x5EED_u64);
    let mut acc = r.next_u64();
    for &p in parts {
        acc ^= p;
        acc = SplitMix64::new(acc).next_u64();
    }
    acc
}

/// A uniformly random permutation of 0..n (Fisher–Yates).
pub fn permutation(n: usize, seed: u64) -> Vec<u32> {
    let mut perm: Vec<u32> = (0..n as u32).collect();
    let mut rng = SplitMix64::new(seed);
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        perm.swap(i, j);
    }
    perm
}

/// Domain tags so that the streams used for different purposes never coincide.
pub const SHUFFLE_TAG: u64 = 1;
pub const TIE_TAG: u64 = 2;
pub const SAMPLING_TAG: u64 = 3;

/// The permutation for sample `index` of an item: `perm[j]` is the input index of the
/// response shown in position j.
pub fn sample_permutation(n: usize, spec_seed: u64, item_seed: u64, index: u32) -> Vec<u32> {
    permutation(n, mix(&[SHUFFLE_TAG, spec_seed, item_seed, index as u64]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutations_are_stable_and_valid() {
        // Pinned: changing these reshuffles every stored label, so it must be deliberate.
        assert_eq!(permutation(5, 42), [1, 2, 0, 4, 3]);
        assert_eq!(sample_permutation(3, 0, 7, 1), [1, 2, 0]);
        assert_eq!(mix(&[1, 2, 3]), 6_587_488_511_219_224_913);
        let mut p = permutation(7, 3);
        p.sort();
        assert_eq!(p, (0..7).collect::<Vec<_>>());
        assert_eq!(SplitMix64::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn permutations_are_roughly_uniform() {
        let mut first = [0u32; 3];
        for s in 0..3000 {
            first[permutation(3, s)[0] as usize] += 1;
        }
        assert!(first.iter().all(|&c| (850..1150).contains(&c)), "{first:?}");
    }
}
