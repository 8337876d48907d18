#!/usr/bin/env bash
# Hit latency against the size of the index (issue 14: hit p99 with 1M entries within 10 % of
# 1k entries). For each BLOBS DIR pair: make (or reuse) the set of `examples/bench_sweep`
# there (BLOBS blobs, each bound to https://example.org/pkg/<i>.tar.gz), serve it with
# `upcache serve`, and load it with wrk requesting a random URL of the whole set per request
# (a Lua script), with the settings of bench.sh's step 2 (pinned layout, --latency, 10 s).
# Prints one JSON line per set and connection count.
#
#   scripts/bench_index_hits.sh 1000 /var/tmp/set1k 1000000 /var/tmp/set1m
#
# BIN (target/release), DURATION (10), CONNS ("64 600"), NO_PIN as in bench.sh. Builds
# nothing: bench.sh builds the release binaries first. Stops what it started, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64 600}
if [ -z "${NO_PIN:-}" ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  CLIENT=(taskset -c 0) SERVER=(taskset -c 1) WRK_THREADS=1
else
  CLIENT=() SERVER=() WRK_THREADS=2
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
WORK=$(mktemp -d /tmp/upcache-index-hits.XXXXXX)
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
log() { printf '== %s\n' "$*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# One random URL of the set per request; wrk's own PRNG, seeded per thread.
cat >"$WORK/random.lua" <<'LUA'
local n
function init(args) n = tonumber(args[1]); math.randomseed(os.time()) end
function request()
  return wrk.format("GET", "/https/example.org/pkg/" .. math.random(0, n - 1) .. ".tar.gz")
end
LUA

while [ $# -ge 2 ]; do
  blobs=$1 dir=$2
  shift 2
  log "index hits: $blobs blobs in $dir"
  mkdir -p "$dir"
  # Make the set, or repair a kept one (blobs evicted by an earlier bench_sweep run).
  timeout 3600 "$BIN/examples/bench_sweep" --blobs "$blobs" --phase setup --data "$dir/data" >&2
  port=$(free_port)
  UPCACHE__LIMITS__PER_CLIENT_RPS=0 UPCACHE__LIMITS__PER_CLIENT_CONCURRENCY=0 \
    "${SERVER[@]}" "$BIN/upcache" serve --listen "127.0.0.1:$port" --data-dir "$dir/data" \
    >"$WORK/serve.out" 2>"$WORK/serve.log" &
  SERVER_PID=$!
  start=$(date +%s.%N)
  for _ in $(seq 1200); do curl -sf -o /dev/null "http://127.0.0.1:$port/readyz" && break; sleep 0.05; done
  ready_s=$(python3 -c "import sys; print(round($(date +%s.%N) - $start, 2))")
  # Measured once the background reconciliation (a walk of every file) is over.
  for _ in $(seq 6000); do grep -q "background reconciliation done" "$WORK/serve.log" && break; sleep 0.1; done
  # Every URL of the set is a hit (checked on a few), never a fill.
  for i in 0 $((blobs / 2)) $((blobs - 1)); do
    curl -s -D - -o /dev/null "http://127.0.0.1:$port/https/example.org/pkg/$i.tar.gz" | grep -qi '^x-cache: HIT' ||
      { echo "pkg/$i.tar.gz is not a hit" >&2; exit 1; }
  done
  for c in $CONNS; do
    out=$(timeout $((DURATION + 30)) "${CLIENT[@]}" wrk -t"$WRK_THREADS" -c"$c" -d"${DURATION}s" --timeout 10s \
      --latency -s "$WORK/random.lua" "http://127.0.0.1:$port" -- "$blobs")
    echo "$out" | python3 -c '
import json, re, sys
t = sys.stdin.read()
def ms(v, u): return float(v) * {"us": 0.001, "ms": 1, "s": 1000}[u]
lat = {p: ms(*re.search(r"\s" + p + r"(?:\.000)?%\s+([\d.]+)(us|ms|s)\b", t).groups()) for p in ("50", "99")}
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(json.dumps({"blobs": int(sys.argv[1]), "conns": int(sys.argv[2]), "ready_s": float(sys.argv[3]),
    "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1)), "p50_ms": lat["50"], "p99_ms": lat["99"],
    "non_2xx": int(errs.group(1)) if errs else 0}))' "$blobs" "$c" "$ready_s"
  done
  kill "$SERVER_PID"
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
done
