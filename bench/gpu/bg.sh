#!/usr/bin/env bash
# A benchmark longer than one device call (each is cut at 10 minutes): start it in the
# background in one call, then wait for it in the next ones (the machine stays warm between
# calls that follow each other closely). Its $OUT is /tmp/bg/out; when it has ended, `wait`
# packs that folder and the log into one file under the call's $OUT (a call brings back at
# most 8 files).
# Usage on the device: bash bench/gpu/bg.sh start CMD [ARGS...]
#                      bash bench/gpu/bg.sh wait [SECONDS]     (default 540)
# e.g. `PROMPTS="512 1400" bash bench/gpu/bg.sh start bash bench/gpu/bench.sh small medium`.
set -uo pipefail
BG=/tmp/bg
case ${1:-} in
  start)
    shift
    [ -f $BG/pid ] && [ ! -f $BG/rc ] && kill -0 "$(cat $BG/pid)" 2>/dev/null && { echo "a run is going: $(cat $BG/cmd)"; exit 2; }
    rm -rf $BG && mkdir -p $BG/out
    echo "$*" > $BG/cmd
    OUT=$BG/out setsid nohup bash -c '"$@" > /tmp/bg/log 2>&1; echo $? > /tmp/bg/rc' bg "$@" > /dev/null 2>&1 &
    echo $! > $BG/pid
    echo "started: $*"
    ;;
  wait)
    limit=${2:-540}
    for ((i = 0; i < limit; i += 5)); do
      [ -f $BG/rc ] && break
      sleep 5
    done
    tail -n "${TAIL:-40}" $BG/log
    if [ -f $BG/rc ]; then
      echo "ended: rc $(cat $BG/rc) ($(cat $BG/cmd))"
      tar czf "${OUT:-/tmp}/bg-out.tar.gz" -C $BG out log cmd
    else
      echo "still running: $(cat $BG/cmd)"
    fi
    ;;
  *) echo "usage: bg.sh start CMD... | bg.sh wait [SECONDS]"; exit 2 ;;
esac
