#!/usr/bin/env bash
# DPO exports as TRL reads them: a real coordinator, worker, Redis and Postgres label the
# example dataset (which has conversation prompts) and a text-only one; each is exported as
# JSONL and Parquet and checked with bench/export/check_trl.py in a virtual environment of
# its own (created here, from PyPI; no torch needed).
# Usage: bench/export/run.sh      (builds release first)
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/lib/services.sh
cargo build --release --quiet
BIN=$PWD/target/release/verdict
W=$(mktemp -d)
VENV=${VERDICT_BENCH_VENV:-$HOME/.cache/verdict/bench-venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q pyarrow datasets transformers packaging jinja2 psutil
  "$VENV/bin/pip" install -q --no-deps trl
fi
start_services "$W"
export VERDICT_REDIS_URL=$REDIS_URL VERDICT_QUEUE_PREFIX=bench-export
PORT=$(free_port)
export VERDICT_COORDINATOR=http://127.0.0.1:$PORT
$BIN model init --out "$W/tiny" 2>/dev/null
$BIN coordinator --listen 127.0.0.1:$PORT 2>"$W/coordinator.log" &
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
$BIN worker --model "$W/tiny" --judge tiny 2>"$W/worker.log" &
for i in $(seq 0 39); do echo "{\"id\":\"t$i\",\"prompt\":\"question $i\",\"chosen\":\"answer $i\",\"rejected\":\"no\"}"; done >"$W/text.jsonl"
files=()
for data in examples/preferences.jsonl "$W/text.jsonl"; do
  job=$($BIN submit "$data" --judge tiny --k 4 --max-new-tokens 48 --wait 2>/dev/null)
  name=$(basename "$data" .jsonl)
  for ext in jsonl parquet; do
    $BIN export "$job" --format dpo -o "$W/$name-dpo.$ext" 2>/dev/null
    files+=("$W/$name-dpo.$ext")
  done
done
"$VENV/bin/python" bench/export/check_trl.py "$W/tiny" "${files[@]}" 2>&1 | grep -v "PyTorch was not found"
