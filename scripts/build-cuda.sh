#!/usr/bin/env bash
# Build the CUDA `verdict` binary on a machine without a GPU or CUDA toolkit.
# Usage: scripts/build-cuda.sh [OUT]    (default OUT: target/cuda/verdict)
#        scripts/build-cuda.sh --tests  (the engine's test binaries, built with the CUDA
#        kernels, into target/cuda/tests/: run them on the GPU machine; CI has no GPU)
#
# 1. Assembles a CUDA 13.0 build root from NVIDIA's PyPI wheels (scripts/cuda/setup_cuda13.sh:
#    nvcc pinned to 13.0 so the PTX loads on a CUDA 13.0 driver, plus a link stub for
#    libcuda.so.1; the real driver library is used at run time).
# 2. Builds `cargo build --release --features cuda` for sm_90 (H100/H200). The first build
#    takes about 20 minutes on 2 cores (candle's kernels); CARGO_TARGET_DIR keeps it.
# The binary looks for the CUDA libraries (cuBLAS, cuRAND, cudart 13) through its RUNPATH,
# set for the H200 machines' Python CUDA wheels; elsewhere set LD_LIBRARY_PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/cuda/verdict}
PIP_PREFIX=${VERDICT_CUDA_PIP:-/tmp/verdict-cuda13}
export CUDA_ROOT=${VERDICT_CUDA_ROOT:-/tmp/verdict-cuda13root}
if [ ! -x "$CUDA_ROOT/bin/nvcc" ]; then
  command -v cc >/dev/null || { apt-get update -qq && apt-get install -y -qq build-essential; }
  bash scripts/cuda/setup_cuda13.sh "$PIP_PREFIX" "$CUDA_ROOT"
fi
. scripts/cuda/env.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda-build}
# Where the H200 machines keep the CUDA 13 libraries (torch's wheels) and the driver.
RPATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib:/usr/local/nvidia/lib64
export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-Wl,-rpath,$RPATH"
if [ "$OUT" = --tests ]; then
  mkdir -p target/cuda/tests
  cargo test --release --locked -p verdict-engine --features cuda --no-run --message-format=json \
    | python3 -c 'import json,sys; [print(m["executable"]) for m in map(json.loads, sys.stdin) if m.get("executable") and m.get("profile", {}).get("test")]' \
    | while read -r exe; do cp "$exe" "target/cuda/tests/$(basename "$exe" | sed 's/-[0-9a-f]*$//')"; done
  ls target/cuda/tests
  exit 0
fi
cargo build --release --locked -p verdict-cli --features cuda
mkdir -p "$(dirname "$OUT")"
cp "$CARGO_TARGET_DIR/release/verdict" "$OUT"
echo "built $OUT ($(du -h "$OUT" | cut -f1))"
