#!/usr/bin/env bash
# Adaptive k on a known mix of clear, close and coin-flip pairs: samples taken and winners
# changed against the full k_max run, for each stop rule (bench/RESULTS.md, "Adaptive k").
# The judge is synthetic (crates/verdict-core/examples/adaptive_mix.rs says why); the stop
# rules and the rounds are the code labeling runs.
# Usage: bash bench/adaptive/run.sh [ITEMS] [K_MAX] [K_MIN]     (default 10000 32 4)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo run --release --quiet -p verdict-core --example adaptive_mix -- "${1:-10000}" "${2:-32}" "${3:-4}"
