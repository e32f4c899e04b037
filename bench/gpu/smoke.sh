#!/usr/bin/env bash
# First contact with the GPU, in one call on the H200 machine (no Rust there): the carried
# CUDA binary (scripts/build-cuda.sh) runs, its bf16 logits and greedy tokens (decoded as the
# engine decodes: prompt pool and segmented attention) are compared with transformers' on
# the same GPU, `verdict label` runs on a Qwen2.5-0.5B-shaped random model, and a quick
# `verdict model bench` sweep checks the engine's speed (bench/gpu/bench.sh is the full one).
# Carry: .carry/verdict.gz (gzip -9 of target/cuda/verdict); bench/parity/models
# (bench/parity/prepare.sh) may travel too, else the tiny models are made there.
# Usage on the device: bash bench/gpu/smoke.sh   (writes logs under $OUT)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
. bench/gpu/lib.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
ldd "$BIN" | grep -E "not found|cublas|cudart|libcuda" | sed 's/^/ldd: /'

echo "== bf16 parity on the GPU (tiny models)"
for arch in qwen2 qwen3 llama gemma2; do
  # The tiny models are made here when bench/parity/prepare.sh's did not travel.
  [ -f "bench/parity/models/$arch/config.json" ] || "$BIN" model init --arch "$arch" --size tiny --out "bench/parity/models/$arch" 2>/dev/null
  "$BIN" model probe "bench/parity/models/$arch" --device cuda --steps 32 --out "bench/parity/models/$arch.probe.json" || echo "probe $arch failed"
done
python3 bench/parity/parity.py bench/parity/models "$OUT/parity-gpu" --device cuda --dtype bfloat16 2>&1 | grep -v "Loading weights" | tee "$OUT/parity-gpu-bf16.txt"

echo "== verdict label, Qwen2.5-0.5B shape (random), 16 items, k=8, <=256 new tokens, batch auto"
"$BIN" model init --arch qwen2 --size small --out /tmp/small 2>/dev/null
/usr/bin/time -f "wall %e s, max RSS %M KB" "$BIN" label examples/preferences.jsonl -o /tmp/small-auto.jsonl --model /tmp/small \
  --device cuda --k 8 --max-new-tokens 256 2>&1 | grep -E "labeled|samples|rror|wall" | tee -a "$OUT/label-small.txt"
echo "== quick engine bench, Qwen2.5-0.5B shape"
"$BIN" model bench /tmp/small --device cuda --batches ${SMOKE_BATCHES:-8,128,512,1024} | tee "$OUT/bench-small.jsonl"
echo "== where the time goes (VERDICT_PROFILE=1: every region waits for the device)"
VERDICT_PROFILE=1 "$BIN" model bench /tmp/small --device cuda --batches ${PROFILE_BATCHES:-8,512} --new-tokens 32 2>&1 | grep -v '^{' | tee "$OUT/profile-small.txt"
