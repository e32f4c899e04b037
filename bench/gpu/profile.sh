#!/usr/bin/env bash
# Where a decode step's time goes, on the H200 machine: `verdict model bench` with
# VERDICT_PROFILE=1 (every timed region waits for the device, so the totals are slower than a
# plain run; read them as shares) on the Qwen2.5-0.5B and 7B shapes.
# Usage: bash bench/gpu/profile.sh        (carry .carry/verdict.gz; writes under $OUT)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/profile-out}; mkdir -p "$OUT"
. bench/gpu/lib.sh
for spec in "small qwen2.5-0.5b-shape ${SMALL_BATCHES:-8,512,4096}" "medium qwen2.5-7b-shape ${MEDIUM_BATCHES:-8,128,1024}"; do
  set -- $spec
  dir=/tmp/models/$2
  [ -f "$dir/config.json" ] || "$BIN" model init --arch qwen2 --size "$1" --shards 4 --out "$dir" 2>/dev/null
  echo "== $2"
  VERDICT_PROFILE=1 "$BIN" model bench "$dir" --device cuda --batches "$3" --new-tokens 32 2>&1 | tee "$OUT/profile-$2.txt"
done
