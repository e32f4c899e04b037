# Throwaway Redis and Postgres for benchmarks, from the installed binaries, on free ports in
# a temporary folder (the same way the tests start theirs). Source it, then:
#   start_services DIR      # sets REDIS_URL, DATABASE_URL; stops both on exit
#   start_coordinator BIN DIR PREFIX   # a coordinator on them (queue prefix PREFIX): sets
#                                      # VERDICT_COORDINATOR and COORD (its pid)
# PG_EXTRA_OPTS adds server settings (-c name=value ...); COORDINATOR_ARGS adds flags.
#   cpu_s PID, pg_cpu DIR, redis_cpu   # CPU seconds used so far
# Postgres refuses to run as root, so as root it runs as the `postgres` user.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

start_services() {
  local dir=$1
  mkdir -p "$dir"
  chmod 755 "$dir"
  local rport pport pgb run=()
  rport=$(free_port); pport=$(free_port); pgb=$(pg_bin)
  redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" --daemonize no >"$dir/redis.log" 2>&1 &
  SERVICES_PIDS="$!"
  mkdir -p "$dir/pg"
  if [ "$(id -u)" = 0 ]; then chown postgres "$dir/pg"; run=(runuser -u postgres --); fi
  "${run[@]}" "$pgb/initdb" -D "$dir/pg/data" -A trust -U postgres --no-sync -E UTF8 >/dev/null
  "${run[@]}" "$pgb/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/server.log" -s -o "-p $pport -k $dir/pg -c listen_addresses=127.0.0.1 \
      -c fsync=off -c synchronous_commit=off -c full_page_writes=off ${PG_EXTRA_OPTS:-}" start
  PG_STOP=("${run[@]}" "$pgb/pg_ctl" -D "$dir/pg/data" -s -m fast stop)
  for _ in $(seq 100); do "$pgb/pg_isready" -q -h 127.0.0.1 -p "$pport" && break; sleep 0.2; done
  "$pgb/createdb" -h 127.0.0.1 -p "$pport" -U postgres verdict
  REDIS_URL="redis://127.0.0.1:$rport/"
  DATABASE_URL="postgres://postgres@127.0.0.1:$pport/verdict"
  export REDIS_URL DATABASE_URL
  trap stop_services EXIT
}

start_coordinator() {
  local bin=$1 dir=$2 port
  export VERDICT_REDIS_URL=$REDIS_URL VERDICT_QUEUE_PREFIX=$3
  port=$(free_port)
  export VERDICT_COORDINATOR=http://127.0.0.1:$port
  "$bin" coordinator --listen 127.0.0.1:$port ${COORDINATOR_ARGS:-} 2>"$dir/coordinator.log" &
  COORD=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
}

stop_services() {
  # Our own children (coordinator, workers) first, then the servers.
  pkill -TERM -P $$ -f ' (coordinator|worker) ' 2>/dev/null || true
  for p in $SERVICES_PIDS; do kill -TERM "$p" 2>/dev/null || true; done
  "${PG_STOP[@]}" 2>/dev/null || true
}

# CPU seconds (user + system) of a process so far.
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{print ($14 + $15) / t}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# CPU seconds of the Postgres started in DIR (the postmaster and every backend), and of Redis.
pg_cpu() { local pm t=0; pm=$(head -1 "$1/pg/data/postmaster.pid"); for p in $pm $(pgrep -P "$pm"); do t=$(echo "$t + $(cpu_s "$p")" | bc -l); done; echo "$t"; }
redis_cpu() { cpu_s "$(redis-cli -u "$REDIS_URL" info server | awk -F: '/^process_id/ {print $2+0}')"; }
