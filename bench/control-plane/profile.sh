#!/usr/bin/env bash
# Where Postgres spends a Verdict run: one run of N items (default 50,000) through a
# coordinator and four `verdict worker --synthetic 300`, with pg_stat_statements on, then
# the statements by total time and the coordinator's report count and mean report time.
# With WORKERS=0 it profiles submitting alone (no --wait), with each process's CPU.
# Usage: bench/control-plane/profile.sh [N]     (VERDICT_BIN=... for another build; WORKERS=4)
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/lib/services.sh
if [ -z "${VERDICT_BIN:-}" ]; then cargo build --release --quiet; fi
BIN=${VERDICT_BIN:-$PWD/target/release/verdict}
N=${1:-50000}
W=$(mktemp -d)
PG_EXTRA_OPTS="-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all" start_services "$W"
PSQL="$(pg_bin)/psql"
"$PSQL" -X -q "$DATABASE_URL" -c "CREATE EXTENSION pg_stat_statements"
mport=$(free_port)
COORDINATOR_ARGS="--metrics-listen 127.0.0.1:$mport" start_coordinator "$BIN" "$W" profile
WORKERS=${WORKERS:-4}
for i in $(seq "$WORKERS"); do "$BIN" worker --synthetic 300 --judge bench --k-hint 8 --worker-id "w$i" 2>"$W/w$i.log" & done
for _ in $(seq 100); do [ "$(grep -l 'worker started' "$W"/w*.log 2>/dev/null | wc -l)" -ge "$WORKERS" ] && break; sleep 0.1; done
python3 - "$N" >"$W/items.jsonl" <<'PY'
import json, sys
answer = "The answer explains the steps one by one, with an example and a caveat. " * 4
for i in range(int(sys.argv[1])):
    print(json.dumps({"id": f"q{i:07d}", "prompt": f"Question {i}: how does this work?", "chosen": answer + str(i), "rejected": answer[::-1] + str(i)}))
PY
"$PSQL" -X -q "$DATABASE_URL" -c "SELECT pg_stat_statements_reset()" >/dev/null
c0=$(cpu_s "$COORD"); p0=$(pg_cpu "$W"); r0=$(redis_cpu)
wait_flag=(--wait); [ "$WORKERS" = 0 ] && wait_flag=()
t0=$(date +%s.%N)
/usr/bin/time -f "%U %S" -o "$W/client.time" "$BIN" submit "$W/items.jsonl" --judge bench --k 8 "${wait_flag[@]}" >/dev/null 2>"$W/submit.log"
echo "$N items in $(echo "$(date +%s.%N) - $t0" | bc -l) s"
read -r cu cs <"$W/client.time"
echo "CPU s: client $(echo "$cu + $cs" | bc -l), coordinator $(echo "$(cpu_s "$COORD") - $c0" | bc -l), postgres $(echo "$(pg_cpu "$W") - $p0" | bc -l), redis $(echo "$(redis_cpu) - $r0" | bc -l)"
curl -s "http://127.0.0.1:$mport/metrics" | grep -E "^verdict_report_seconds_(sum|count)|^verdict_items_done_total"
"$PSQL" -X "$DATABASE_URL" -c "SELECT calls, round(total_exec_time::numeric) AS ms, rows, left(regexp_replace(query, '\s+', ' ', 'g'), 110) AS statement
  FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 14"
"$PSQL" -X "$DATABASE_URL" -c "SELECT relname, pg_size_pretty(pg_total_relation_size(relid)) AS size FROM pg_stat_user_tables ORDER BY pg_total_relation_size(relid) DESC LIMIT 4"
