#!/usr/bin/env bash
# Adaptive k through the engine on one GPU: the same items labeled at a fixed k = KMAX and
# with adaptive k (k_min 4, rounds of 4) under each stopping rule; samples taken, wall time,
# generated tokens and winners changed against the fixed run. Runs on the H200 machine with
# the carried CUDA binary (see bench/gpu/lib.sh).
#
# Usage: bash bench/gpu/adaptive.sh [ITEMS]      (default 512; KMAX=32, TOKENS=256, BATCH=4096)
# The judge has random weights with Qwen2.5-0.5B's shapes: its items are mostly close calls,
# so this measures what adaptive k costs and keeps on the engine, not what a real judge saves
# (bench/adaptive/run.sh has that on a known mix of clear and close items).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/bench-out}; mkdir -p "$OUT"
. bench/gpu/lib.sh
N=${1:-512}; KMAX=${KMAX:-32}; TOKENS=${TOKENS:-256}; BATCH=${BATCH:-4096}
dir=/tmp/models/qwen2.5-0.5b-shape
[ -f "$dir/config.json" ] || "$BIN" model init --arch qwen2 --size small --shards 4 --out "$dir" 2>&1 | tail -1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 - "$N" > "$OUT/items.jsonl" <<'PY'
import json, random, sys
rng = random.Random(7)
words = "the model answer question reason step because therefore result value check correct error".split()
for i in range(int(sys.argv[1])):
    prompt = f"Question {i}: " + " ".join(rng.choice(words) for _ in range(rng.randint(40, 400)))
    responses = [" ".join(rng.choice(words) for _ in range(rng.randint(20, 200))) for _ in range(2)]
    print(json.dumps({"id": f"q{i:05d}", "prompt": prompt, "responses": responses}))
PY
run() {
  local tag=$1; shift
  local t0=$(date +%s.%N)
  "$BIN" label "$OUT/items.jsonl" -o "$OUT/$tag.jsonl" --model "$dir" --device cuda --batch "$BATCH" \
    --max-new-tokens "$TOKENS" --seed 1 "$@" 2> "$OUT/$tag.log" || { tail -5 "$OUT/$tag.log"; exit 1; }
  # awk, not bc: the GPU machine has no bc.
  awk -v tag="$tag" -v t0="$t0" -v t1="$(date +%s.%N)" 'BEGIN { printf "%s %.2f\n", tag, t1 - t0 }' >> "$OUT/times.txt"
}
: > "$OUT/times.txt"
run fixed --k "$KMAX"
run settled --k-max "$KMAX" --k-min 4 --k-round 4 --stop settled
run confident-0.95 --k-max "$KMAX" --k-min 4 --k-round 4 --stop confident --confidence 0.95
run confident-0.99 --k-max "$KMAX" --k-min 4 --k-round 4 --stop confident --confidence 0.99
python3 - "$OUT" "$KMAX" <<'PY' | tee "$OUT/adaptive.md"
import json, sys
out, kmax = sys.argv[1], int(sys.argv[2])
times = dict(l.split() for l in open(f"{out}/times.txt"))
def load(tag):
    return {r["id"]: r for r in map(json.loads, open(f"{out}/{tag}.jsonl"))}
fixed = load("fixed")
def tokens(rs):
    return sum(s["completion_tokens"] for r in rs.values() for s in r["samples"])
print(f"| run | samples | of k = {kmax} | generated tokens | wall s | winners changed | stopped (settled / confident / k_max) |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for tag in ["fixed", "settled", "confident-0.95", "confident-0.99"]:
    rs = load(tag)
    n = sum(len(r["samples"]) for r in rs.values())
    changed = sum(1 for i, r in rs.items() if r["winner"] != fixed[i]["winner"])
    why = [sum(1 for r in rs.values() if r.get("stopped") == w) for w in ("settled", "confident", "k_max")]
    print(f"| {tag} | {n} | {100 * n / (kmax * len(rs)):.1f}% | {tokens(rs)} | {float(times[tag]):.1f} | {changed} of {len(rs)} | {' / '.join(map(str, why))} |")
# Samples 0..k-1 of an item should be the fixed run's first k (same seed, item, index); on a
# GPU the batch an item's samples share changes bf16 rounding, so count how many differ.
same = total = 0
for tag in ["settled", "confident-0.95", "confident-0.99"]:
    for i, r in load(tag).items():
        for s in r["samples"]:
            total += 1
            same += s["raw"] == fixed[i]["samples"][s["index"]]["raw"]
print(f"\nsamples identical to the fixed run's sample of the same index: {same} of {total} ({100 * same / total:.1f}%)")
PY
