#!/usr/bin/env bash
# CPU throughput of `verdict label` (the embedded mode) on random-weight models.
# Usage: bench/cpu/label.sh            (builds release first; about 5 minutes on 2 cores)
# Prints the run summaries; copy them into bench/RESULTS.md with the machine and date.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet
BIN=target/release/verdict
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

echo "== tiny qwen2, 16 example items, k=8, 512 new tokens max, batch 32"
$BIN model init --arch qwen2 --size tiny --out "$W/tiny" 2>/dev/null
$BIN label examples/preferences.jsonl -o "$W/tiny.jsonl" --model "$W/tiny" 2>&1 | grep -E 'labeled|samples'

echo "== small qwen2 (Qwen2.5-0.5B shapes, f32 on CPU), 2 items, k=2, 32 new tokens, batch 4"
$BIN model init --arch qwen2 --size small --out "$W/small" 2>/dev/null
head -2 examples/preferences.jsonl > "$W/two.jsonl"
$BIN label "$W/two.jsonl" -o "$W/small.jsonl" --model "$W/small" --k 2 --max-new-tokens 32 --batch 4 2>&1 | grep -E 'labeled|samples'
