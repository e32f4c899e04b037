#!/usr/bin/env bash
# The measurements issues 9 and 10 still lacked, in one device run (start it with bg.sh):
# the pipeline's overhead (label against the engine alone, the worker against label), the
# shortest attention units at batch 8 (SPLITS), and adaptive k's wall times.
# Usage on the GPU machine: bash bench/gpu/bg.sh start bash bench/gpu/closeout.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/bench-out}
mkdir -p "$OUT/pipeline" "$OUT/graphs" "$OUT/adaptive"
echo "== pipeline.sh 512"; OUT=$OUT/pipeline bash bench/gpu/pipeline.sh 512
echo "== graphs.sh small at batch 8, SPLITS 64 128"; SPLITS="64 128" GRAPH_BATCHES=1,8 OUT=$OUT/graphs bash bench/gpu/graphs.sh small
echo "== adaptive.sh 512"; OUT=$OUT/adaptive bash bench/gpu/adaptive.sh 512
