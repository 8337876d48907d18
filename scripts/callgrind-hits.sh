#!/usr/bin/env bash
# Instructions and system calls per small HIT, repeatable on a busy machine (unlike requests
# per second or CPU time): upcache runs under `valgrind --tool=callgrind`, one keep-alive
# client sends N requests for one cached file, and the instructions counted between zeroing
# and dumping the counters are divided by N. A second pass without valgrind counts system
# calls per request with `strace -c -f`, and a third the TCP segments per request (both
# directions, from the machine-wide `OutSegs` of /proc/net/snmp: run it on an otherwise idle
# loopback).
#
#   scripts/callgrind-hits.sh [SIZE_BYTES] [N] [BIN]   # defaults: 1024 bytes, 2000 requests,
#                                                     # target/release/upcache
#
# PRELOAD=/lib/x86_64-linux-gnu/libmimalloc.so.2 runs upcache with that library preloaded
# (to try another allocator on a binary built with the system one).
#
# Writes target/bench/callgrind-hits.md (and the callgrind dump next to it, for
# `callgrind_annotate`).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1024}
N=${2:-2000}
BIN=${3:-target/release/upcache}
OUT=target/bench/callgrind-hits.md
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
for tool in valgrind callgrind_control strace python3 curl; do
  command -v $tool >/dev/null || { echo "needs $tool (apt-get install valgrind strace)" >&2; exit 1; }
done
BENCH_NAME=callgrind source "$(dirname "$0")/bench-lib.sh"
# GET until the answer is a HIT (the first GET, once the server listens, fills the cache).
wait_hit() { for _ in $(seq 600); do curl -s -D - -o /dev/null "$1" | grep -qi '^x-cache: HIT' && return 0; sleep 0.2; done; echo "no HIT at $1" >&2; return 1; }

mkdir -p "$WORK/origin" "$(dirname "$OUT")"
head -c "$SIZE" /dev/urandom >"$WORK/origin/f.bin"
PO=$(free_port)
python3 -m http.server "$PO" --bind 127.0.0.1 --directory "$WORK/origin" >/dev/null 2>&1 &
PIDS+=($!)

# N GET requests on one keep-alive connection; fails unless every answer is a 200 HIT.
client() { # port count
  python3 - "$1" "$2" "$PO" <<'PY'
import http.client, sys
port, n, po = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(n):
    c.request("GET", f"/http/127.0.0.1:{po}/f.bin")
    r = c.getresponse()
    r.read()
    assert r.status == 200 and r.getheader("X-Cache") == "HIT", (r.status, r.getheader("X-Cache"))
PY
}

run_upcache() { # port data-dir prefix... -> pid
  UPCACHE__UPSTREAM__ALLOW_PRIVATE=true UPCACHE__LOG__LEVEL=info \
    UPCACHE__LIMITS__PER_CLIENT_RPS=0 UPCACHE__LIMITS__PER_CLIENT_CONCURRENCY=0 \
    env ${PRELOAD:+LD_PRELOAD=$PRELOAD} "${@:3}" "$BIN" serve --listen "127.0.0.1:$1" --data-dir "$2" \
    >>"$WORK/upcache.out" 2>>"$WORK/upcache.log" &
  echo $!
}

# 1. Instructions per request.
PU=$(free_port)
VG=$(run_upcache "$PU" "$WORK/data" valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p")
PIDS+=($VG)
URL=http://127.0.0.1:$PU/http/127.0.0.1:$PO/f.bin
wait_hit "$URL"
client "$PU" 200 # warm-up: connection set up, caches filled
callgrind_control -z "$VG" >/dev/null
client "$PU" "$N"
callgrind_control -d "$VG" >/dev/null
DUMP=$(ls -t "$WORK"/cg.* | head -1)
IR=$(awk '/^summary:/ {print $2}' "$DUMP")
cp "$DUMP" target/bench/callgrind-hits.out
kill "$VG"; wait "$VG" 2>/dev/null || true

# 2. System calls per request (no valgrind).
PU2=$(free_port)
UP=$(run_upcache "$PU2" "$WORK/data2" env)
PIDS+=($UP)
URL2=http://127.0.0.1:$PU2/http/127.0.0.1:$PO/f.bin
wait_hit "$URL2"
client "$PU2" 200
strace -c -f -q -p "$UP" -o "$WORK/strace.txt" &
SP=$!
sleep 1
client "$PU2" "$N"
kill -INT $SP; wait $SP 2>/dev/null || true

# 3. TCP segments per request (no tracer).
out_segs() { awk '/^Tcp:/ {n++; if (n == 1) for (i = 1; i <= NF; i++) if ($i == "OutSegs") c = i; if (n == 2) print $c}' /proc/net/snmp; }
S0=$(out_segs)
client "$PU2" "$N"
S1=$(out_segs)
SEGS=$(python3 -c "print(f'{($S1 - $S0) / $N:.2f}')")
SYS=$(python3 - "$WORK/strace.txt" "$N" <<'PY'
import sys
n = int(sys.argv[2])
rows = []
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
        rows.append((int(f[3]), f[-1]))
rows.sort(reverse=True)
total = sum(c for c, _ in rows)
print(f"{total / n:.2f} ({', '.join(f'{name} {c / n:.2f}' for c, name in rows if c / n >= 0.01)})")
PY
)
{
  echo "| per $SIZE-byte HIT ($N requests, one keep-alive connection) | value |"
  echo "| --- | ---: |"
  echo "| instructions (callgrind) | $((IR / N)) |"
  echo "| system calls (strace -c -f) | $SYS |"
  echo "| TCP segments, both directions (OutSegs) | $SEGS |"
} | tee "$OUT"
