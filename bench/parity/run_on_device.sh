#!/usr/bin/env bash
# Runs on the GPU machine (no Rust there): compares the carried probes with transformers.
# Expects bench/parity/models/ (made here by bench/parity/prepare.sh) to be carried along.
set -euo pipefail
cd "$(dirname "$0")"
OUT=${OUT:-/tmp/parity-out}
python3 parity.py models "$OUT" --device cpu --dtype float32 2>&1 | tee "$OUT/parity-cpu-f32.txt"
