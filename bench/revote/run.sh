#!/usr/bin/env bash
# Re-voting a stored job at a smaller k (`verdict revote JOB --k 4`) as the job grows: N
# items are submitted with k = 8 through the real path (no workers), then given verdicts and
# 8 samples each straight in Postgres (scores drawn from the item id, ~600 bytes of
# judgement text per sample, a tenth of the samples invalid), and re-voted at k = 4 through
# the coordinator: wall time and the client's and coordinator's peak memory.
# Usage: bench/revote/run.sh [N ...]            (default: 100000)
# REVOTE_FROM_SAMPLES=1 also re-votes with the verdicts' votes removed (read from the sample
# rows, as verdicts stored before migration 0004 are) and checks the figures are the same.
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/lib/services.sh
if [ -z "${VERDICT_BIN:-}" ]; then cargo build --release --quiet; fi
BIN=${VERDICT_BIN:-$PWD/target/release/verdict}
PSQL=$(ls /usr/lib/postgresql/*/bin/psql | tail -1)
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(100000)
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); binary: $BIN"
for n in "${sizes[@]}"; do
  W=$(mktemp -d)
  start_services "$W"
  start_coordinator "$BIN" "$W" bench-revote
  python3 - "$n" >"$W/items.jsonl" <<'PY'
import json, sys
for i in range(int(sys.argv[1])):
    print(json.dumps({"id": f"q{i:07d}", "prompt": f"Question {i}: which answer is better?", "responses": [f"First answer {i}.", f"Second answer {i}."]}))
PY
  job=$($BIN submit "$W/items.jsonl" --judge bench --k 8 2>/dev/null | tail -1)
  started=$(date +%s.%N)
  # Verdicts and samples as a worker would have stored them (the vote at k = 8 is not
  # recomputed here: only the re-vote is timed).
  # ${job} is a UUID printed by verdict submit.
  "$PSQL" -q "$DATABASE_URL" <<SQL
INSERT INTO samples (job_id, item_id, sample_index, permutation, principles, critique, scores, status, failure, finish, prompt_tokens, completion_tokens, meta_score, raw)
SELECT job_id, item_id, s, ARRAY[s % 2, 1 - s % 2], repeat('A principle. ', 10), repeat('The critique weighs both. ', 10),
       CASE WHEN h % 10 = 0 THEN NULL ELSE ARRAY[(1 + h % 10)::smallint, (1 + (h / 10) % 10)::smallint] END,
       CASE WHEN h % 10 = 0 THEN 'invalid' ELSE 'valid' END,
       CASE WHEN h % 10 = 0 THEN '{"reason": "no_score_block"}'::jsonb END,
       'score_block', 60, 300, NULL, repeat('judgement text ', 20)
FROM (SELECT job_id, item_id, s, abs(hashtext(item_id || s::text)) AS h FROM items, generate_series(0, 7) s WHERE job_id = '${job}') x;
-- The verdict row's votes (migrations/0004_votes.sql) as a worker's report writes them:
-- per sample [index, status, score 1, score 2], from the same draw as the samples above.
INSERT INTO verdicts (job_id, item_id, key, judge, template, summed, mean, winner, margin, tie, valid, agreement, fingerprint, votes)
SELECT job_id, item_id, key, 'bench', 'grm-v1', ARRAY[40, 30], ARRAY[5.0, 3.8], 0, 10, false, 8, 0.75, 'bench-fp',
       (SELECT array_agg(x ORDER BY s, o)
        FROM generate_series(0, 7) s, LATERAL (SELECT abs(hashtext(item_id || s::text)) AS h) hh,
             LATERAL unnest(CASE WHEN h % 10 = 0 THEN ARRAY[s, 2, 0, 0] ELSE ARRAY[s, 0, 1 + h % 10, 1 + (h / 10) % 10] END::smallint[]) WITH ORDINALITY AS u(x, o))
FROM items WHERE job_id = '${job}';
UPDATE items SET state = 'done' WHERE job_id = '${job}';
-- What autovacuum does on a live store after a bulk load: without statistics the planner
-- reads a whole job to return a page.
ANALYZE items; ANALYZE verdicts; ANALYZE samples;
SQL
  printf '%8d items: stored in %.0f s\n' "$n" "$(echo "$(date +%s.%N) - $started" | bc -l)"
  /usr/bin/time -f "%e %M" -o "$W/time" $BIN revote "$job" --k 4 >"$W/revote.out" 2>"$W/revote.log" || { cat "$W/revote.log"; tail -20 "$W/coordinator.log"; exit 1; }
  read -r secs kb <"$W/time"
  coord_kb=$(awk '/VmHWM/ {print $2}' /proc/$COORD/status)
  kill $COORD; wait $COORD 2>/dev/null || true
  printf '%8d items: revote --k 4 in %6.1f s, %8.0f items/s, client peak RSS %4.0f MB, coordinator peak RSS %4.0f MB\n' "$n" "$secs" "$(echo "$n / $secs" | bc -l)" "$(echo "$kb / 1024" | bc -l)" "$(echo "$coord_kb / 1024" | bc -l)"
  sed 's/^/    /' "$W/revote.out"
  if [ "${REVOTE_FROM_SAMPLES:-0}" = 1 ]; then
    # The same re-vote with the votes gone, as for verdicts stored before they were kept:
    # read from the sample rows. It must print the same figures.
    "$PSQL" -q "$DATABASE_URL" -c "UPDATE verdicts SET votes = NULL WHERE job_id = '${job}'" -c "VACUUM ANALYZE verdicts"
    start_coordinator "$BIN" "$W" bench-revote
    /usr/bin/time -f "%e %M" -o "$W/time" $BIN revote "$job" --k 4 >"$W/revote-samples.out" 2>"$W/revote.log" || { cat "$W/revote.log"; exit 1; }
    read -r secs kb <"$W/time"
    kill $COORD; wait $COORD 2>/dev/null || true
    printf '%8d items: from the sample rows (no votes): revote --k 4 in %6.1f s, %8.0f items/s\n' "$n" "$secs" "$(echo "$n / $secs" | bc -l)"
    diff "$W/revote.out" "$W/revote-samples.out" >/dev/null && echo "    same figures" || { echo "    DIFFERENT figures:"; diff "$W/revote.out" "$W/revote-samples.out"; exit 1; }
  fi
  stop_services
  trap - EXIT
  rm -rf "$W"
done
