#!/usr/bin/env bash
# What knowing a judge's weights costs: `verdict model fingerprint` on random-weight folders
# of Qwen2.5-0.5B and Qwen2.5-7B shapes (bf16: about 1 GB and 15 GB), once hashing every
# byte and once from the digest cache (what a restarted worker pays).
# Usage: bench/fingerprint/run.sh [small|medium ...]     (default: small medium; medium needs 16 GB of disk)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet
BIN=$PWD/target/release/verdict
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
export VERDICT_CACHE=$W/cache
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(small medium)
for size in "${sizes[@]}"; do
  $BIN model init --size "$size" --out "$W/$size" 2>/dev/null
  bytes=$(du -cb "$W/$size"/*.safetensors | tail -1 | cut -f1)
  # Cold page cache where the machine allows it, so the first run reads the disk.
  sync; if echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then cold="page cache dropped"; else cold="page cache warm"; fi
  for run in "hash every byte ($cold)" "from the digest cache"; do
    start=$(date +%s.%N)
    $BIN model fingerprint "$W/$size" >"$W/fp.json"
    secs=$(echo "$(date +%s.%N) - $start" | bc -l)
    printf '%-7s %6.2f GB  %-40s %6.2f s  %s\n' "$size" "$(echo "$bytes/1000000000" | bc -l)" "$run" "$secs" "$(cat "$W/fp.json")"
  done
  rm -rf "${W:?}/$size"
done
