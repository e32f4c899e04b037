#!/usr/bin/env bash
# Segmented decode attention on the H200: the CUDA kernels against the CPU on the same data
# (the engine's `segmented` test binary: `scripts/build-cuda.sh --tests`, then
# `strip -o /tmp/s target/cuda/tests/segmented && gzip -9 -c /tmp/s > .carry/segmented-test.gz`), then one decode step's attention at labeling
# shapes, today's segmented kernels against the per-row layout with cuBLAS products
# (`verdict model bench-attention`, random data, no model).
# Usage on the device: bash bench/gpu/attention.sh      (writes under $OUT)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/attention-out}; mkdir -p "$OUT"
. bench/gpu/lib.sh
if [ -f .carry/segmented-test.gz ]; then
  gunzip -c .carry/segmented-test.gz > /tmp/segmented-test && chmod +x /tmp/segmented-test
  echo "== the kernels against the CPU"
  /tmp/segmented-test --nocapture the_cuda_kernels_match_the_cpu 2>&1 | tee "$OUT/kernels-vs-cpu.txt" | grep -E "head_dim|test result|panicked"
fi
echo "== one decode step's attention: Qwen2.5-7B shape (kv 4, g 7, head_dim 128)"
"$BIN" model bench-attention --device cuda --rows ${ROWS:-8,128,512,1024} --kv 4 --g 7 --head-dim 128 --prompt ${PROMPT:-1800} --own ${OWN:-200} | tee "$OUT/attention-7b.jsonl"
echo "== Qwen2.5-0.5B shape (kv 2, g 7, head_dim 64)"
"$BIN" model bench-attention --device cuda --rows ${ROWS:-8,128,512,1024} --kv 2 --g 7 --head-dim 64 --prompt ${PROMPT:-1800} --own ${OWN:-200} | tee "$OUT/attention-05b.jsonl"
