#!/usr/bin/env bash
# Makes the four tiny models and Verdict's probes of them in bench/parity/models/.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${VERDICT_BIN:-target/release/verdict}
mkdir -p bench/parity/models
for arch in qwen2 qwen3 llama gemma2; do
  "$BIN" model init --arch "$arch" --size tiny --out "bench/parity/models/$arch" 2>/dev/null
  "$BIN" model probe "bench/parity/models/$arch" --out "bench/parity/models/$arch.probe.json"
done
