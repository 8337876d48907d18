#!/usr/bin/env bash
# Small hits of two upcache builds beside nginx proxy_cache, on the same files, in one pinned
# layout (wrk and the origin on CPU 0, each server on CPU 1 with one worker) and alternating
# the three servers within each run, so that a noisy machine shifts all three alike. For an
# A/B of a change to the hit path: requests/s and p99 of 1 KiB and 100 KiB hits at 64 and
# 600 connections, one line per measurement, then the medians.
#
#   scripts/bench-hits-ab.sh OLD_BIN NEW_BIN        # RUNS=3 DURATION=10 by default
#
# Needs nginx, wrk, curl, python3 and taskset (bench.sh installs nginx and wrk). Stops what it
# started, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1 B=$2
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
for tool in nginx wrk curl python3 taskset; do
  command -v $tool >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
BENCH_NAME=ab source "$(dirname "$0")/bench-lib.sh"

mkdir -p "$WORK/origin"
head -c 1024 /dev/urandom >"$WORK/origin/1k.bin"
head -c 102400 /dev/urandom >"$WORK/origin/100k.bin"
PO=$(free_port)
taskset -c 0 python3 -m http.server "$PO" --bind 127.0.0.1 --directory "$WORK/origin" >/dev/null 2>&1 &
PIDS+=($!)
declare -A PORT
for s in a b; do
  bin=$A
  [ $s = b ] && bin=$B
  PORT[$s]=$(free_port)
  UPCACHE__UPSTREAM__ALLOW_PRIVATE=true UPCACHE__LIMITS__PER_CLIENT_RPS=0 \
    UPCACHE__LIMITS__PER_CLIENT_CONCURRENCY=0 \
    taskset -c 1 "$bin" serve --listen "127.0.0.1:${PORT[$s]}" --data-dir "$WORK/data-$s" \
    >"$WORK/$s.out" 2>"$WORK/$s.log" &
  PIDS+=($!)
done
PORT[n]=$(free_port)
nginx_conf "${PORT[n]}" "$PO"
taskset -c 1 nginx -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;' >"$WORK/nginx.out" 2>&1 &
PIDS+=($!)
url() {
  case $1 in
    n) echo "http://127.0.0.1:${PORT[n]}/$2" ;;
    *) echo "http://127.0.0.1:${PORT[$1]}/http/127.0.0.1:$PO/$2" ;;
  esac
}
for s in a b n; do
  for f in 1k.bin 100k.bin; do
    for _ in $(seq 100); do
      curl -s -o /dev/null -D - "$(url $s $f)" | grep -qi '^x-cache: HIT' && break
      sleep 0.1
    done
  done
done
for r in $(seq "$RUNS"); do
  for f in 1k.bin 100k.bin; do
    for c in 64 600; do
      for s in a b n; do
        out=$(timeout $((DURATION + 30)) taskset -c 0 wrk -t1 -c"$c" -d"${DURATION}s" --latency "$(url $s $f)")
        rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
        p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
        echo "run=$r file=$f conns=$c server=$s rps=$rps p99=$p99"
      done
    done
  done
done | tee "$WORK/lines"
python3 - "$WORK/lines" <<'PY'
import re, statistics, sys
rows = [dict(kv.split("=") for kv in l.split()) for l in open(sys.argv[1]) if l.strip()]
def ms(v):
    n, u = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1, "s": 1000}[u]
print("| file | conns | A req/s | B req/s | nginx req/s | B / nginx | p99 A / B / nginx (ms) |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for f in ("1k.bin", "100k.bin"):
    for c in ("64", "600"):
        med = {s: (statistics.median(float(r["rps"]) for r in rows if (r["file"], r["conns"], r["server"]) == (f, c, s)),
                   statistics.median(ms(r["p99"]) for r in rows if (r["file"], r["conns"], r["server"]) == (f, c, s)))
               for s in "abn"}
        print(f"| {f} | {c} | {med['a'][0]:.0f} | {med['b'][0]:.0f} | {med['n'][0]:.0f} | "
              f"{med['b'][0] / med['n'][0]:.2f}x | {med['a'][1]:.2f} / {med['b'][1]:.2f} / {med['n'][1]:.2f} |")
PY
