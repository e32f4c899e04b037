//! Whatever a judge writes: the score and judgement parsers never panic, and the scores
//! they accept are n integers from 1 to 10.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verdict_core::parse::{parse_judgement, parse_scores};

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else { return };
    let n = (n % 6) as usize + 1;
    let text = String::from_utf8_lossy(rest);
    if let Ok(scores) = parse_scores(&text, n) {
        assert_eq!(scores.len(), n);
        assert!(scores.iter().all(|s| (1..=10).contains(s)));
    }
    let _ = parse_judgement(&text, n);
});
