# Sourced on the GPU machine: unpack .carry/services.tar.xz (bench/gpu/services-bundle.sh)
# and start Redis and Postgres on free ports, Postgres as an unprivileged user of our own
# (it refuses root). Sets REDIS_URL and DATABASE_URL.
SVC=/tmp/svc
if [ ! -d "$SVC/libs" ]; then
  mkdir -p "$SVC" && tar -C "$SVC" -xJf .carry/services.tar.xz
fi
PGDIR=$SVC$(cat "$SVC/pg-path")
export LD_LIBRARY_PATH=$SVC/libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
id verdictpg >/dev/null 2>&1 || useradd -M -s /bin/sh verdictpg
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RPORT=$(free_port); PPORT=$(free_port)
"$SVC/usr/bin/redis-server" --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes --logfile /tmp/svc-redis.log --pidfile /tmp/svc-redis.pid
DATA=/tmp/svc-pgdata; rm -rf "$DATA"; mkdir -p "$DATA"; chown verdictpg "$DATA"; chmod 755 /tmp/svc "$SVC"
runuser -u verdictpg -- env LD_LIBRARY_PATH="$LD_LIBRARY_PATH" "$PGDIR/bin/initdb" -D "$DATA/d" -A trust -U postgres --no-sync -E UTF8 >/dev/null
runuser -u verdictpg -- env LD_LIBRARY_PATH="$LD_LIBRARY_PATH" "$PGDIR/bin/pg_ctl" -D "$DATA/d" -l "$DATA/log" -s -o "-p $PPORT -k $DATA -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" start
"$PGDIR/bin/createdb" -h 127.0.0.1 -p "$PPORT" -U postgres verdict
export REDIS_URL="redis://127.0.0.1:$RPORT/" DATABASE_URL="postgres://postgres@127.0.0.1:$PPORT/verdict"
echo "services: $REDIS_URL $DATABASE_URL"
# Stop both (the caller runs this when done).
stop_services() {
  "$SVC/usr/bin/redis-server" --version >/dev/null 2>&1 && kill "$(cat /tmp/svc-redis.pid 2>/dev/null)" 2>/dev/null
  runuser -u verdictpg -- env LD_LIBRARY_PATH="$LD_LIBRARY_PATH" "$PGDIR/bin/pg_ctl" -D "$DATA/d" -s -m fast stop
}
