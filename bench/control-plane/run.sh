#!/usr/bin/env bash
# The control plane's ceiling: everything but the model, measured on the real path, with
# Celery beside it in the same run.
#
# For each N: fresh throwaway Redis and Postgres, a coordinator, and WORKERS `verdict worker
# --synthetic` processes (the real worker loop — leases, look-ahead, reports over gRPC,
# heartbeats — with a stand-in that writes k samples of TEXT bytes per item at once in the
# model's place). `verdict submit` sends N items (k = K) and the run ends when the job is
# done. Then the same N items go through a Celery application (Redis broker, one task per
# item writing its verdict and k sample rows with psycopg, CELERY_CONCURRENCY processes),
# on fresh services too.
#
# Reports: end-to-end items/s (submit start to the last commit), submit items/s, enqueue-
# to-commit latency (p50/p99: each item's commit time minus its insert time), CPU seconds
# and peak RSS of the coordinator, the workers and the submitting client, Redis commands/s
# and Postgres rows written/s. With HALF=1 a second run of each N feeds the items at half
# the measured peak (one submit a second) and reports the latency there.
#
# Usage: bench/control-plane/run.sh [N ...]          (default: 10000 100000)
#   WORKERS=4 K=8 TEXT=300 PEER=1 HALF=1 CELERY_CONCURRENCY=8 (Celery's best here: 653, 770, 839, 762 items/s at 2, 4, 8, 16)
#   VERDICT_BIN=path/to/verdict (another build)
set -euo pipefail
cd "$(dirname "$0")/../.."
here=bench/control-plane
source bench/lib/services.sh
if [ -z "${VERDICT_BIN:-}" ]; then cargo build --release --quiet; fi
BIN=${VERDICT_BIN:-$PWD/target/release/verdict}
WORKERS=${WORKERS:-4} K=${K:-8} TEXT=${TEXT:-300} PEER=${PEER:-1} HALF=${HALF:-1} CELERY_CONCURRENCY=${CELERY_CONCURRENCY:-8}
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(10000 100000)
PSQL="$(pg_bin)/psql"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "binary: $BIN; workers: $WORKERS; k = $K; judgement text: $TEXT bytes; $(date -u +%Y-%m-%dT%H:%MZ)"

if [ "$PEER" = 1 ]; then
  VENV=${CONTROL_PLANE_VENV:-$HOME/.cache/verdict-bench/control-plane-venv}
  if [ ! -x "$VENV/bin/celery" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -r "$here/requirements.txt"
  fi
fi

sql() { "$PSQL" -X -q -At "$DATABASE_URL" -c "$1"; }
peak_mb() { awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo 0; }
redis_cmds() { redis-cli -u "$REDIS_URL" info stats | awk -F: '/^total_commands_processed/ {print $2+0}'; }
# Rows stored: verdicts and samples (both runs store the same rows per item).
stored_rows() { sql "SELECT (SELECT count(*) FROM verdicts) + (SELECT count(*) FROM samples)"; }

now() { date +%s.%N; }

# The same items for both: a question and two answers of ~300 characters.
make_items() {
  python3 - "$1" "$2" <<'PY'
import json, sys
answer = "The answer explains the steps one by one, with an example and a caveat. " * 4
with open(sys.argv[2], "w") as f:
    for i in range(int(sys.argv[1])):
        f.write(json.dumps({"id": f"q{i:07d}", "prompt": f"Question {i}: how does this work?", "chosen": answer + str(i), "rejected": answer[::-1] + str(i)}) + "\n")
PY
}

latency() { # p50 and p99 seconds from insert to commit, over the done items
  sql "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY s)::numeric, 3) || ' ' || round(percentile_cont(0.99) WITHIN GROUP (ORDER BY s)::numeric, 3)
       FROM (SELECT extract(epoch FROM updated_at - created_at) AS s FROM items WHERE state = 'done') t"
}

wait_done() { # until $1 items are done
  while :; do
    local done
    done=$(sql "SELECT coalesce(sum(n), 0) FROM job_counts WHERE state = 'done'")
    [ "$done" -ge "$1" ] && break
    sleep 0.2
  done
}

# One run of Verdict: N items from FILE, submitted at once (RATE empty) or RATE items a
# second in one-second submits. Prints one result line.
verdict_run() {
  local n=$1 file=$2 rate=${3:-} W
  W=$(mktemp -d)
  start_services "$W"
  start_coordinator "$BIN" "$W" bench-cp
  local workers=()
  for i in $(seq "$WORKERS"); do
    "$BIN" worker --synthetic "$TEXT" --judge bench --k-hint "$K" --worker-id "w$i" 2>"$W/worker$i.log" &
    workers+=($!)
  done
  # Every worker has bound the judge and waits for work.
  for _ in $(seq 100); do [ "$(grep -l 'worker started' "$W"/worker*.log 2>/dev/null | wc -l)" -ge "$WORKERS" ] && break; sleep 0.1; done
  local c0 w0=0 r0 p0 t0 t1 t_sub c1 w1=0 r1 p1 sub_rss
  c0=$(cpu_s "$COORD"); for p in "${workers[@]}"; do w0=$(echo "$w0 + $(cpu_s "$p")" | bc -l); done
  r0=$(redis_cmds); local pc0 rc0; pc0=$(pg_cpu "$W"); rc0=$(redis_cpu); t0=$(now)
  if [ -z "$rate" ]; then
    /usr/bin/time -f "%e %M" -o "$W/time" "$BIN" submit "$file" --judge bench --k "$K" >/dev/null 2>"$W/submit.log"
    t_sub=$(now)
    read -r _ sub_rss <"$W/time"; sub_rss=$((sub_rss / 1024))
  else
    mkdir -p "$W/chunks"
    split -l "$rate" -d -a 6 "$file" "$W/chunks/c"
    local start=$t0 i=0 subs=()
    for c in "$W"/chunks/c*; do
      "$BIN" submit "$c" --judge bench --k "$K" >/dev/null 2>>"$W/submit.log" &
      subs+=($!)
      i=$((i + 1))
      sleep "$(echo "$start + $i - $(now)" | bc -l | awk '{print ($1 > 0) ? $1 : 0}')"
    done
    wait "${subs[@]}"
    t_sub=$(now); sub_rss=-
  fi
  wait_done "$n"
  t1=$(now)
  c1=$(cpu_s "$COORD"); for p in "${workers[@]}"; do w1=$(echo "$w1 + $(cpu_s "$p")" | bc -l); done
  r1=$(redis_cmds)
  local pcpu rcpu rows; pcpu=$(echo "$(pg_cpu "$W") - $pc0" | bc -l); rcpu=$(echo "$(redis_cpu) - $rc0" | bc -l); rows=$(stored_rows)
  local wall sub_wall lat wrss=0
  wall=$(echo "$t1 - $t0" | bc -l); sub_wall=$(echo "$t_sub - $t0" | bc -l)
  lat=$(latency)
  for p in "${workers[@]}"; do m=$(peak_mb "$p"); [ "$m" -gt "$wrss" ] && wrss=$m; done
  printf 'verdict %-9s %8d items: %6.1f s, %7.0f items/s end to end; submit %7.0f items/s; latency p50 %s s p99 %s s; CPU s coordinator %.1f workers %.1f postgres %.1f redis %.1f; peak RSS MB coordinator %s worker %s submit %s; redis %.0f cmds/s; postgres %.0f rows stored/s\n' \
    "${rate:+@${rate}/s}" "$n" "$wall" "$(echo "$n / $wall" | bc -l)" "$(echo "$n / $sub_wall" | bc -l)" ${lat% *} ${lat#* } \
    "$(echo "$c1 - $c0" | bc -l)" "$(echo "$w1 - $w0" | bc -l)" "$pcpu" "$rcpu" "$(peak_mb "$COORD")" "$wrss" "$sub_rss" \
    "$(echo "($r1 - $r0) / $wall" | bc -l)" "$(echo "$rows / $wall" | bc -l)"
  LAST_RATE=$(echo "$n / $wall" | bc -l)
  stop_services; trap - EXIT
  rm -rf "$W"
}

celery_run() {
  local n=$1 file=$2 W
  W=$(mktemp -d)
  start_services "$W"
  sql "$(cat "$here/celery_schema.sql")"
  export CELERY_BROKER=$REDIS_URL CELERY_DATABASE=$DATABASE_URL BENCH_K=$K BENCH_TEXT=$TEXT
  (cd "$here" && exec "$VENV/bin/celery" -A celery_peer worker --concurrency "$CELERY_CONCURRENCY" --loglevel WARNING --without-gossip --without-mingle --without-heartbeat) >"$W/celery.log" 2>&1 &
  local celery=$!
  sleep 3
  local r0 t0 t_sub t1 pc0 rc0
  r0=$(redis_cmds); pc0=$(pg_cpu "$W"); rc0=$(redis_cpu); t0=$(now)
  (cd "$here" && "$VENV/bin/python" celery_peer.py submit "$file") >"$W/submit.log" 2>&1
  t_sub=$(now)
  while [ "$(sql 'SELECT count(*) FROM verdicts')" -lt "$n" ]; do sleep 0.5; done
  t1=$(now)
  local wall; wall=$(echo "$t1 - $t0" | bc -l)
  local cpu=0 rss=0
  for p in $celery $(pgrep -P $celery); do cpu=$(echo "$cpu + $(cpu_s "$p")" | bc -l); m=$(peak_mb "$p"); [ "$m" -gt "$rss" ] && rss=$m; done
  local lat
  lat=$(sql "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY s)::numeric, 3) || ' ' || round(percentile_cont(0.99) WITHIN GROUP (ORDER BY s)::numeric, 3)
             FROM (SELECT extract(epoch FROM created_at - enqueued_at) AS s FROM verdicts) t")
  printf 'celery            %8d items: %6.1f s, %7.0f items/s end to end; submit %7.0f items/s; latency p50 %s s p99 %s s; CPU s workers %.1f postgres %.1f redis %.1f; peak RSS MB worker %s; redis %.0f cmds/s; postgres %.0f rows stored/s\n' \
    "$n" "$wall" "$(echo "$n / $wall" | bc -l)" "$(echo "$n / ($t_sub - $t0)" | bc -l)" ${lat% *} ${lat#* } "$cpu" \
    "$(echo "$(pg_cpu "$W") - $pc0" | bc -l)" "$(echo "$(redis_cpu) - $rc0" | bc -l)" "$rss" \
    "$(echo "($(redis_cmds) - $r0) / $wall" | bc -l)" "$(echo "$(stored_rows) / $wall" | bc -l)"
  PEER_RATE=$(echo "$n / $wall" | bc -l)
  kill -TERM "$celery" 2>/dev/null; wait "$celery" 2>/dev/null || true
  stop_services; trap - EXIT
  rm -rf "$W"
}

for n in "${sizes[@]}"; do
  items=$(mktemp --suffix .jsonl)
  make_items "$n" "$items"
  verdict_run "$n" "$items"
  peak=$LAST_RATE
  if [ "$HALF" = 1 ]; then
    verdict_run "$n" "$items" "$(printf '%.0f' "$(echo "$peak / 2" | bc -l)")"
  fi
  if [ "$PEER" = 1 ]; then
    celery_run "$n" "$items"
    printf 'verdict / celery at %d items: %.1fx\n' "$n" "$(echo "$peak / $PEER_RATE" | bc -l)"
  fi
  rm -f "$items"
done
