#!/usr/bin/env bash
# Where a small HIT's time goes, upcache beside nginx proxy_cache: per request, the system
# calls (strace -c), user and kernel CPU time and context switches (/proc), and the hottest
# symbols (perf record -e cpu-clock -g; this VM has no hardware counters). Counts per request
# do not depend on what else the machine runs, unlike requests per second.
#
#   scripts/profile-hits.sh [SIZE_BYTES] [SECONDS]     # defaults: 1024 bytes, 5 s per phase
#
# Uses target/release/upcache (build it first; BIN=path picks another build). Server on
# CPU 1, wrk on CPU 0, 64 connections (CONNS=n for another count), one worker per server. Writes the report to
# target/bench/profile-hits.md.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1024}
SECS=${2:-5}
CONNS=${CONNS:-64}
OUT=target/bench/profile-hits.md
BIN=${BIN:-target/release/upcache}
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
for tool in nginx wrk strace perf taskset; do
  command -v $tool >/dev/null || { echo "needs $tool (apt-get install nginx wrk strace linux-perf util-linux)" >&2; exit 1; }
done
BENCH_NAME=profile source "$(dirname "$0")/bench-lib.sh"
wait_hit() { for _ in $(seq 300); do curl -s -I "$1" | grep -qi '^x-cache: HIT' && return 0; sleep 0.1; done; echo "no HIT at $1" >&2; return 1; }

mkdir -p "$WORK/origin"
head -c "$SIZE" /dev/urandom >"$WORK/origin/f.bin"
PO=$(free_port)
taskset -c 0 python3 -m http.server "$PO" --bind 127.0.0.1 --directory "$WORK/origin" >/dev/null 2>&1 &
PIDS+=($!)

PU=$(free_port)
UPCACHE__UPSTREAM__ALLOW_PRIVATE=true UPCACHE__LOG__LEVEL=info \
  UPCACHE__LIMITS__PER_CLIENT_RPS=0 UPCACHE__LIMITS__PER_CLIENT_CONCURRENCY=0 \
  taskset -c 1 "$BIN" serve --listen "127.0.0.1:$PU" --data-dir "$WORK/data" \
  >"$WORK/upcache.out" 2>"$WORK/upcache.log" &
UPCACHE_PID=$!
PIDS+=($UPCACHE_PID)

PN=$(free_port)
nginx_conf "$PN" "$PO"
taskset -c 1 nginx -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;' >"$WORK/nginx.out" 2>&1 &
PIDS+=($!)
sleep 0.5
NGINX_WORKER=$(pgrep -P "$(cat "$WORK/nginx.pid")" | head -1)

UP=http://127.0.0.1:$PU/http/127.0.0.1:$PO/f.bin
NG=http://127.0.0.1:$PN/f.bin
for u in "$UP" "$NG"; do curl -s -o /dev/null "$u"; wait_hit "$u"; done

wrk_requests() { # url seconds -> requests completed
  taskset -c 0 wrk -t1 -c"$CONNS" -d"${2}s" "$1" | awk '/requests in/ {print $1}'
}
proc_cpu() { # pid -> "utime stime" in clock ticks, summed over threads
  awk '{print $14, $15}' "/proc/$1/stat"
}
ctxt() { # pid -> voluntary + involuntary context switches, summed over threads
  cat /proc/"$1"/task/*/status | awk '/ctxt_switches/ {s += $2} END {print s}'
}

declare -A R
for s in upcache nginx; do
  url=$UP pid=$UPCACHE_PID
  [ $s = nginx ] && url=$NG pid=$NGINX_WORKER
  wrk_requests "$url" 1 >/dev/null # warm-up
  # CPU time and context switches per request, no tracer attached.
  read -r u0 k0 <<<"$(proc_cpu "$pid")"
  c0=$(ctxt "$pid")
  n=$(wrk_requests "$url" "$SECS")
  read -r u1 k1 <<<"$(proc_cpu "$pid")"
  c1=$(ctxt "$pid")
  hz=$(getconf CLK_TCK)
  R[${s}_req]=$n
  R[${s}_user_us]=$(python3 -c "print(round(($u1-$u0)/$hz/$n*1e6, 2))")
  R[${s}_sys_us]=$(python3 -c "print(round(($k1-$k0)/$hz/$n*1e6, 2))")
  R[${s}_ctxt]=$(python3 -c "print(round(($c1-$c0)/$n, 3))")
  # System calls per request.
  strace -c -f -q -p "$pid" -o "$WORK/strace-$s.txt" &
  spid=$!
  sleep 0.5
  n=$(wrk_requests "$url" "$SECS")
  kill -INT $spid
  wait $spid 2>/dev/null || true
  R[${s}_strace_req]=$n
  python3 - "$WORK/strace-$s.txt" "$n" >"$WORK/syscalls-$s.txt" <<'PY'
import sys
n = int(sys.argv[2])
rows = []
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
        rows.append((int(f[3]), f[-1]))
rows.sort(reverse=True)
total = sum(c for c, _ in rows)
print(f"{total / n:.2f} per request: " + ", ".join(f"{name} {c / n:.2f}" for c, name in rows if c / n >= 0.01))
PY
  # Hottest symbols.
  perf record -q -e cpu-clock -g -p "$pid" -o "$WORK/perf-$s.data" -- sleep "$SECS" >/dev/null 2>&1 &
  ppid=$!
  wrk_requests "$url" "$SECS" >/dev/null
  wait $ppid || true
  perf report -q -i "$WORK/perf-$s.data" --no-children --sort dso --stdio -g none 2>/dev/null |
    grep -v '^#' | grep -v '^$' | head -6 >"$WORK/dso-$s.txt" || true
  perf report -q -i "$WORK/perf-$s.data" --no-children --sort sym --stdio -g none 2>/dev/null |
    grep -v '^#' | grep -v '^$' | head -15 >"$WORK/sym-$s.txt" || true
done

mkdir -p "$(dirname "$OUT")"
{
  echo "HIT of a $SIZE-byte file, wrk -t1 -c$CONNS on CPU 0, server on CPU 1 with one worker; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')."
  echo
  echo "| per request | upcache | nginx |"
  echo "| --- | ---: | ---: |"
  echo "| user CPU (µs) | ${R[upcache_user_us]} | ${R[nginx_user_us]} |"
  echo "| kernel CPU (µs) | ${R[upcache_sys_us]} | ${R[nginx_sys_us]} |"
  echo "| context switches | ${R[upcache_ctxt]} | ${R[nginx_ctxt]} |"
  echo "| requests in ${SECS} s (no tracer) | ${R[upcache_req]} | ${R[nginx_req]} |"
  echo
  for s in upcache nginx; do
    echo "$s system calls: $(cat "$WORK/syscalls-$s.txt")"
    echo
  done
  for s in upcache nginx; do
    echo "$s CPU samples by object:"
    echo '```'
    cat "$WORK/dso-$s.txt"
    echo '```'
    echo "$s hottest symbols:"
    echo '```'
    cat "$WORK/sym-$s.txt"
    echo '```'
  done
} >"$OUT"
cat "$OUT"
