#!/usr/bin/env bash
# Labeling as it looks: judgements of varied length over prompts of varied length, Verdict
# against transformers' generate on the same prompts and lengths, on one GPU.
# Runs on the H200 machine with the carried CUDA binary (see bench/gpu/lib.sh).
#
# Usage: bash bench/gpu/workload.sh [small|medium ...]     (default: medium small)
# Each size: `verdict model bench --workload varied` (items with prompts of 600–3,000 tokens,
# k = 8, judgement lengths log-normal around 350 tokens, 5th–95th percentile ~136–900, cap
# 1,024) at each batch cap, with the drawn lengths and with every sample at their mean; for
# medium, transformers eager and static+compile on the same workload file.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/bench-out}; mkdir -p "$OUT"
. bench/gpu/lib.sh
SIZES=${*:-medium small}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
for size in $SIZES; do
  case $size in
    small) name=qwen2.5-0.5b-shape; items=${ITEMS:-256}; vb=${VERDICT_BATCHES:-512,4096}; hf="" ;;
    medium) name=qwen2.5-7b-shape; items=${ITEMS:-64}; vb=${VERDICT_BATCHES:-128,512}; hf=${HF_BATCHES:-64,128} ;;
    *) echo "unknown size $size (small or medium)"; exit 2 ;;
  esac
  dir=/tmp/models/$name
  [ -f "$dir/config.json" ] || /usr/bin/time -f "model init: %e s" "$BIN" model init --arch qwen2 --size "$size" --shards 4 --out "$dir" 2>&1 | tail -1
  echo "== $name: Verdict, varied and fixed at the mean"
  "$BIN" model bench "$dir" --device cuda --k 8 --workload varied --items-count "$items" --new-tokens 1024 \
    --batches "$vb" --prompts-out "$OUT/workload-$name.json" | tee "$OUT/workload-verdict-$name.jsonl"
  if [ -n "$hf" ]; then
    for mode in eager static; do
      echo "== $name: transformers $mode"
      python3 bench/gpu/hf_bench.py "$dir" "$OUT/workload-$name.json" --mode $mode --batches "$hf" 2>"$OUT/workload-hf-$mode-$name.log" | tee "$OUT/workload-hf-$mode-$name.jsonl"
    done
  fi
  rm -f "$OUT/workload-$name.json"
done
