#!/usr/bin/env bash
# CUDA graphs for decode steps, on the H200 machine: the GPU tests (kernels against the CPU,
# padded plans, a graph's replay against the eager step), then `verdict model bench` at
# small batches with graphs and without (--no-cuda-graphs), k = 8, 256 new tokens; with
# SPLITS, graphs again at other shortest units of attention keys.
# Carry: .carry/verdict.gz and .carry/segmented-test.gz (scripts/build-cuda.sh --tests,
# strip, gzip). Usage: bash bench/gpu/graphs.sh [small|medium ...]   (default: small)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/graphs-out}; mkdir -p "$OUT"
. bench/gpu/lib.sh
if [ -f .carry/segmented-test.gz ]; then
  gunzip -c .carry/segmented-test.gz > /tmp/segmented-test && chmod +x /tmp/segmented-test
  echo "== GPU tests (tests/segmented.rs, built with --features cuda)"
  /tmp/segmented-test --test-threads 1 --nocapture 2>&1 | grep -vE "^$" | tail -30 | tee "$OUT/tests.txt"
fi
for size in ${*:-small}; do
  case $size in
    small) name=qwen2.5-0.5b-shape ;;
    medium) name=qwen2.5-7b-shape ;;
  esac
  dir=/tmp/models/$name
  [ -f "$dir/config.json" ] || "$BIN" model init --arch qwen2 --size "$size" --shards 4 --out "$dir" 2>&1 | tail -1
  for mode in graphs eager; do
    flag=; [ $mode = eager ] && flag=--no-cuda-graphs
    echo "== $name, decode steps $mode"
    "$BIN" model bench "$dir" --device cuda --k 8 --prompt-tokens 512 --new-tokens 256 \
      --batches "${GRAPH_BATCHES:-1,8,32,128,256}" $flag | tee "$OUT/$name-$mode.jsonl"
  done
  # SPLITS="64 128": graphs again with shorter units of attention keys (the engine's
  # VERDICT_MIN_SPLIT_KEYS; 256 is the default).
  for split in ${SPLITS:-}; do
    echo "== $name, decode steps in graphs, units of at least $split keys"
    VERDICT_MIN_SPLIT_KEYS=$split "$BIN" model bench "$dir" --device cuda --k 8 --prompt-tokens 512 --new-tokens 256 \
      --batches "${GRAPH_BATCHES:-1,8,32,128,256}" | tee "$OUT/$name-graphs-split$split.jsonl"
  done
done
python3 - "$OUT" <<'PY'
import json, pathlib, sys
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.jsonl")):
    for l in f.read_text().splitlines():
        if l.startswith("{"):
            r = json.loads(l)
            print(f"{f.stem:32} batch {r['batch']:5} {r['tokens_per_s']:10.0f} tok/s {r['ms_per_step']:7.2f} ms/step  graphs {r.get('graph_captures',0)}/{r.get('graph_replays',0)}")
PY
