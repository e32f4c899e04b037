#!/usr/bin/env bash
# The labeling pipeline's overhead on one GPU: the same items through `verdict model bench
# --items` (the engine alone), `verdict label` (a file at both ends) and `verdict worker`
# fed by a coordinator (Redis and Postgres started here from .carry/services.tar.xz, see
# bench/gpu/services-bundle.sh). Qwen2.5-0.5B shape, k = 8, judgements of up to 512 tokens
# with the lengths the random judge writes.
# Usage: bash bench/gpu/pipeline.sh [ITEMS]     (default 512; WORKER=0 stops after label,
#        BENCH=0 skips the engine alone, LABEL=0 label)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/bench-out}; mkdir -p "$OUT"
. bench/gpu/lib.sh
N=${1:-512}
dir=/tmp/models/qwen2.5-0.5b-shape
[ -f "$dir/config.json" ] || "$BIN" model init --arch qwen2 --size small --out "$dir" 2>/dev/null
# Items whose prompts render to about 700–2,000 tokens: a question and two answers of
# 100–600 words drawn from a fixed list.
python3 - "$N" >"$OUT/items.jsonl" <<'PY'
import json, random, sys
random.seed(7)
words = ("the of and to in is that it for on with as was by at be this from or an are not have "
         "but which they all were we when one there can their has more if will about what so some "
         "would into its time only could other than then these may like them two also any how our "
         "first after most such where over good new very well even back way because down each").split()
for i in range(int(sys.argv[1])):
    ans = lambda: " ".join(random.choice(words) for _ in range(random.randint(100, 600)))
    print(json.dumps({"id": f"p{i}", "prompt": f"Question {i}: " + ans()[:200] + "?", "chosen": ans(), "rejected": ans()}))
PY
if [ "${BENCH:-1}" != 0 ]; then
echo "== engine alone (model bench --items)"
"$BIN" model bench "$dir" --device cuda --k 8 --new-tokens 512 --items "$OUT/items.jsonl" --batches 4096 | tee "$OUT/pipeline-bench.jsonl"
fi
if [ "${LABEL:-1}" != 0 ]; then
echo "== verdict label"
/usr/bin/time -f "label wall: %e s" "$BIN" label "$OUT/items.jsonl" -o "$OUT/label.jsonl" --model "$dir" --device cuda --k 8 --max-new-tokens 512 2>&1 | grep -E "labeled|samples|wall"
fi
[ "${WORKER:-1}" = 0 ] && exit 0
echo "== verdict worker fed by a coordinator"
. bench/gpu/services.sh
export VERDICT_REDIS_URL=$REDIS_URL VERDICT_COORDINATOR=http://127.0.0.1:50151
"$BIN" coordinator --listen 127.0.0.1:50151 2>"$OUT/coordinator.log" &
sleep 2
"$BIN" worker --model "$dir" --judge small --device cuda --prompt-tokens 2400 2>"$OUT/worker.log" &
for _ in $(seq 120); do grep -q "worker started" "$OUT/worker.log" && break; sleep 0.5; done
start=$(date +%s.%N)
job=$("$BIN" submit "$OUT/items.jsonl" --judge small --k 8 --max-new-tokens 512 --wait 2>"$OUT/submit.log")
end=$(date +%s.%N)
tail -1 "$OUT/submit.log"
echo "worker: $N items from submit to done in $(python3 -c "print(round($end - $start, 2))") s"
"$BIN" status "$job" | grep progress
kill %2 %1 2>/dev/null; wait 2>/dev/null
stop_services
