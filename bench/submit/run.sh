#!/usr/bin/env bash
# How `verdict submit` scales with the job: wall time and the client's peak memory for jobs
# of N items (no workers: the items are stored and queued, nothing is judged), each into a
# fresh Redis and Postgres. Before the fix a per-message query walked every queued item of
# the job, so a submit slowed down as the job grew; now it should be linear.
# Usage: bench/submit/run.sh [N ...]            (default: 20000 100000)
#        VERDICT_BIN=path/to/verdict bench/submit/run.sh ...   (another build, e.g. an older commit)
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/lib/services.sh
if [ -z "${VERDICT_BIN:-}" ]; then cargo build --release --quiet; fi
BIN=${VERDICT_BIN:-$PWD/target/release/verdict}
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(20000 100000)
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); binary: $BIN"
for n in "${sizes[@]}"; do
  W=$(mktemp -d)
  start_services "$W"
  start_coordinator "$BIN" "$W" bench-submit
  # Preference pairs of a realistic size: a question and two answers of ~300 characters.
  python3 - "$n" >"$W/items.jsonl" <<'PY'
import json, sys
answer = "The answer explains the steps one by one, with an example and a caveat. " * 4
for i in range(int(sys.argv[1])):
    print(json.dumps({"id": f"q{i:07d}", "prompt": f"Question {i}: how does this work?", "chosen": answer + str(i), "rejected": answer[::-1] + str(i)}))
PY
  /usr/bin/time -f "%e %M" -o "$W/time" $BIN submit "$W/items.jsonl" --judge bench --k 8 >/dev/null 2>"$W/submit.log"
  read -r secs kb <"$W/time"
  printf '%8d items: %7.1f s, %8.0f items/s, client peak RSS %4.0f MB (%s)\n' "$n" "$secs" "$(echo "$n / $secs" | bc -l)" "$(echo "$kb / 1024" | bc -l)" "$(grep -o '[0-9]* item(s) queued' "$W/submit.log")"
  stop_services
  trap - EXIT
  rm -rf "$W"
done
