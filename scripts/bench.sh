#!/usr/bin/env bash
# Side-by-side benchmark of upcache and nginx proxy_cache (Debian's nginx, sendfile on,
# proxy_cache_lock on) serving the same files from the same origin, on loopback.
#
#   scripts/bench.sh                 # RUNS=3 DURATION=10 by default; results also written to
#                                    # target/bench/results.md
#   RUNS=5 DURATION=20 scripts/bench.sh
#
# Measures (medians of RUNS runs; ratios are upcache / nginx):
#   1. HIT throughput, one client, 1 GiB file
#   2. HIT requests/s and p50/p99 latency, 1 KiB and 100 KiB files, 64 and 600 connections (wrk)
#   3. MISS on a slow origin (50 ms to first byte, 20 MB/s): time to first byte and total,
#      against downloading directly from the origin
#   4. Stampede: 600 clients at once on one uncached 10 MiB URL: origin requests, total time
#   5. Peak RSS of each server during 2 (600 connections), during the stampede, and during
#      600 concurrent 10 MiB hits
#   6. upcache alone: making the set, start-up to ready (clean shutdown / after a crash) and
#      sweeper passes (nothing to evict, then 10 % evicted; scrub time apart) over an index of
#      SWEEP_BLOBS blobs (default 100000), then SWEEP_BLOBS_1M (default 1000000, 0 skips),
#      and hit latency on random URLs of a 1M index against a 1k one (bench_index_hits.sh)
#   7. upcache alone: time to first byte of a warm 100 KiB HIT fetched through https_proxy
#      (proxy.connect = "intercept", after the TLS handshake) against the same HIT in plain
#      proxy form (curl -x, after the TCP connect)
# Every step is bounded in time; every process started here is stopped (by PID) on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
OUT=${OUT:-target/bench/results.md}
WORK=$(mktemp -d /tmp/upcache-bench.XXXXXX)
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT
log() { printf '== %s\n' "$*" >&2; }

# --- tools -----------------------------------------------------------------------------------
need=()
command -v nginx >/dev/null || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
  log "installing ${need[*]}"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Pinned layout: the clients (curl, wrk, bench_client) and the origin on CPU 0, the server under
# test on CPU 1, each server with one worker, so that neither server competes with the load
# generator for a core and the two are compared on equal terms. NO_PIN=1, or fewer than two
# CPUs, runs everything unpinned (servers with a worker per CPU).
if [ -z "${NO_PIN:-}" ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  CLIENT=(taskset -c 0) SERVER=(taskset -c 1) NGINX_WORKERS=1 WRK_THREADS=1
  LAYOUT="pinned: clients and origin on CPU 0, the server under test on CPU 1, one worker each"
else
  CLIENT=() SERVER=() NGINX_WORKERS=auto WRK_THREADS=2
  LAYOUT="unpinned: clients and servers share every CPU"
fi
log "building (release)"
timeout 1800 cargo build --release --locked --bin upcache --example bench_origin --example bench_client --example bench_sweep
BIN=target/release
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq "${2:-200}"); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done; echo "no answer from $1" >&2; return 1; }

# --- origin ----------------------------------------------------------------------------------
PO=$(free_port)
MIB=$((1024 * 1024))
origin_args=(--listen "127.0.0.1:$PO" --stats "$WORK/hits.json"
  --file /f/1k.bin=1024 --file /f/100k.bin=102400 --file /f/10m.bin=$((10 * MIB))
  --file /f/1g.bin=$((1024 * MIB)) --ttfb-ms 50 --rate 20000000)
for r in $(seq "$RUNS"); do
  for s in upcache nginx direct; do origin_args+=(--slow "/s/miss-$s-$r.bin=$((10 * MIB))"); done
  for s in upcache nginx; do origin_args+=(--slow "/s/stampede-$s-$r.bin=$((10 * MIB))"); done
done
log "starting the origin on $PO"
"${CLIENT[@]}" "$BIN/examples/bench_origin" "${origin_args[@]}" >"$WORK/origin.log" 2>&1 &
PIDS+=($!)
ORIGIN=http://127.0.0.1:$PO
# The origin prints its address once every file is generated and routed.
for _ in $(seq 1200); do grep -q "origin listening" "$WORK/origin.log" && break; sleep 0.1; done
grep -q "origin listening" "$WORK/origin.log" || { echo "the origin did not start" >&2; exit 1; }

# --- an HTTPS origin for step 7 (Python's http.server over TLS) ------------------------------------
# Its certificate is signed by upcache's interception CA, which upcache also trusts for
# upstream TLS (upstream.ca_file) and the clients trust for the intercepted connections.
"$BIN/upcache" ca new --out "$WORK/ca" >/dev/null
CA=$WORK/ca/ca.pem
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=127.0.0.1 \
  -keyout "$WORK/origin-key.pem" -out "$WORK/origin.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$WORK/origin.ext"
openssl x509 -req -in "$WORK/origin.csr" -CA "$CA" -CAkey "$WORK/ca/ca-key.pem" -CAcreateserial \
  -days 2 -extfile "$WORK/origin.ext" -out "$WORK/origin-cert.pem" 2>/dev/null
mkdir -p "$WORK/https-root/f"
head -c 102400 /dev/urandom >"$WORK/https-root/f/100k.bin"
PS=$(free_port)
python3 - "$PS" "$WORK/https-root" "$WORK/origin-cert.pem" "$WORK/origin-key.pem" >"$WORK/https-origin.log" 2>&1 <<'PY' &
import functools, http.server, ssl, sys
port, root, cert, key = sys.argv[1:5]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=root)
server = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), handler)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()
PY
PIDS+=($!)
HS=https://127.0.0.1:$PS

# --- upcache -----------------------------------------------------------------------------------
PU=$(free_port)
log "starting upcache on $PU"
# Per-client limits off: every benchmark client is 127.0.0.1, and nginx here has none either.
# CONNECTs to the HTTPS origin are intercepted (step 7); nothing else uses CONNECT.
UPCACHE__UPSTREAM__ALLOW_PRIVATE=true UPCACHE__LOG__LEVEL=info \
  UPCACHE__LIMITS__PER_CLIENT_RPS=0 UPCACHE__LIMITS__PER_CLIENT_CONCURRENCY=0 \
  UPCACHE__PROXY__CONNECT=intercept UPCACHE__PROXY__CA_CERT="$CA" \
  UPCACHE__PROXY__CA_KEY="$WORK/ca/ca-key.pem" UPCACHE__PROXY__CONNECT_PORTS="$PS" \
  UPCACHE__UPSTREAM__CA_FILE="$CA" \
  "${SERVER[@]}" "$BIN/upcache" serve --listen "127.0.0.1:$PU" --data-dir "$WORK/upcache-data" \
  >"$WORK/upcache.out" 2>"$WORK/upcache.log" &
UPCACHE_PID=$!
PIDS+=($UPCACHE_PID)
UP=http://127.0.0.1:$PU/http/127.0.0.1:$PO
wait_http "http://127.0.0.1:$PU/healthz"

# --- nginx -------------------------------------------------------------------------------------
PN=$(free_port)
mkdir -p "$WORK/nginx-cache" "$WORK/nginx-tmp"
user_line=""
[ "$(id -u)" = 0 ] && user_line="user root;"
cat >"$WORK/nginx.conf" <<EOF
$user_line
worker_processes $NGINX_WORKERS;
worker_rlimit_nofile 65536;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 8192; }
http {
  access_log $WORK/nginx-access.log combined buffer=64k flush=1s;
  sendfile on;
  # Debian's default "tcp_nopush on" stalls keep-alive hits by 40 ms on loopback; off is
  # nginx at its best here.
  tcp_nopush off;
  tcp_nodelay on;
  keepalive_timeout 65;
  keepalive_requests 1000000;
  client_body_temp_path $WORK/nginx-tmp/body;
  proxy_temp_path $WORK/nginx-tmp/proxy;
  fastcgi_temp_path $WORK/nginx-tmp/fastcgi;
  uwsgi_temp_path $WORK/nginx-tmp/uwsgi;
  scgi_temp_path $WORK/nginx-tmp/scgi;
  proxy_cache_path $WORK/nginx-cache levels=1:2 keys_zone=c:64m max_size=20g inactive=1y use_temp_path=off;
  upstream origin { server 127.0.0.1:$PO; keepalive 64; }
  server {
    listen 127.0.0.1:$PN backlog=4096;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache c;
      proxy_cache_valid 200 1y;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 600s;
      proxy_cache_lock_age 600s;
      add_header X-Cache \$upstream_cache_status;
    }
  }
}
EOF
log "starting nginx on $PN"
"${SERVER[@]}" nginx -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;' >"$WORK/nginx.out" 2>&1 &
NGINX_PID=$!
PIDS+=($NGINX_PID)
NG=http://127.0.0.1:$PN
wait_http "$NG/f/1k.bin"

# --- helpers -----------------------------------------------------------------------------------
# Peak RSS (KiB) of a process and its children (nginx workers), since the last reset.
pids_of() { echo "$1"; pgrep -P "$1" || true; }
reset_peak() { for p in $(pids_of "$1"); do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true; done; }
peak_rss_kib() {
  local sum=0 v
  for p in $(pids_of "$1"); do
    v=$(awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"
}
origin_hits() { python3 -c "import json,sys; print(json.load(open('$WORK/hits.json')).get('$1', 0))"; }
median() { python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print(statistics.median(v))' "$@"; }
# Wait until a cache says HIT for a URL it has downloaded (committing 1 GiB takes a moment).
warm() {
  for _ in $(seq 600); do
    if curl -s -I "$1" | grep -qi '^x-cache: HIT'; then return 0; fi
    sleep 0.1
  done
  echo "never became a hit: $1" >&2
  return 1
}

declare -A R
record() { R[$1]=$2; }

# --- 1 + 2: hits ---------------------------------------------------------------------------------
log "warming both caches"
for f in 1k 100k 10m 1g; do
  timeout 300 curl -s -o /dev/null "$UP/f/$f.bin"
  timeout 300 curl -s -o /dev/null "$NG/f/$f.bin"
  warm "$UP/f/$f.bin"
  warm "$NG/f/$f.bin"
done

log "1: HIT throughput, 1 GiB, one client"
for s in upcache nginx; do
  base=$UP; [ $s = nginx ] && base=$NG
  vals=()
  for _ in $(seq "$RUNS"); do
    vals+=("$(timeout 300 "${CLIENT[@]}" curl -s -o /dev/null -w '%{speed_download}' "$base/f/1g.bin")")
  done
  record "tput_$s" "$(python3 -c "print(round($(median "${vals[@]}")/1e6, 1))")"
done

log "2: HIT requests/s and latency (wrk, ${DURATION}s per run)"
parse_wrk() { # stdin: wrk --latency output -> "rps p50_ms p99_ms"
  python3 -c '
import re,sys
t=sys.stdin.read()
def ms(v,u): return float(v)*{"us":0.001,"ms":1,"s":1000}[u]
rps=float(re.search(r"Requests/sec:\s+([\d.]+)",t).group(1))
lat={}
for p in ("50","99"):
  m=re.search(r"\s"+p+r"(?:\.000)?%\s+([\d.]+)(us|ms|s)\b",t); lat[p]=ms(*m.groups())
errs=re.search(r"Non-2xx or 3xx responses: (\d+)",t)
sock=re.search(r"Socket errors: (.*)",t)
print(rps, lat["50"], lat["99"], errs.group(1) if errs else 0, "|", sock.group(1) if sock else "none")'
}
# Medians of RUNS runs, the two servers alternating (upcache first in odd runs, nginx first in
# even ones), so that a slow phase of the machine does not favour one of them.
for f in 1k 100k; do
  for c in 64 600; do
    declare -A RPS=() P50=() P99=()
    reset_peak "$UPCACHE_PID"
    reset_peak "$NGINX_PID"
    for r in $(seq "$RUNS"); do
      order=(upcache nginx)
      [ $((r % 2)) = 0 ] && order=(nginx upcache)
      for s in "${order[@]}"; do
        base=$UP
        [ $s = nginx ] && base=$NG
        out=$(timeout $((DURATION + 30)) "${CLIENT[@]}" wrk -t"$WRK_THREADS" -c"$c" -d"${DURATION}s" --timeout 10s --latency "$base/f/$f.bin" | parse_wrk)
        read -r a b d non2xx _ sock <<<"$out"
        [ "$non2xx" = 0 ] || { echo "wrk saw $non2xx non-2xx responses from $s" >&2; exit 1; }
        RPS[$s]+=" $a" P50[$s]+=" $b" P99[$s]+=" $d"
      done
    done
    for s in upcache nginx; do
      pid=$UPCACHE_PID
      [ $s = nginx ] && pid=$NGINX_PID
      # shellcheck disable=SC2086 # the lists are space-separated numbers
      record "rps_${s}_${f}_$c" "$(median ${RPS[$s]})"
      # shellcheck disable=SC2086
      record "p50_${s}_${f}_$c" "$(median ${P50[$s]})"
      # shellcheck disable=SC2086
      record "p99_${s}_${f}_$c" "$(median ${P99[$s]})"
      [ "$c" = 600 ] && record "rss_wrk_${s}_${f}" "$(peak_rss_kib "$pid")"
    done
    unset RPS P50 P99
  done
done

# --- 3: miss on a slow origin --------------------------------------------------------------------
log "3: MISS on a slow origin (50 ms TTFB, 20 MB/s)"
for s in direct upcache nginx; do
  ttfb=() total=()
  for r in $(seq "$RUNS"); do
    case $s in
      direct) url="$ORIGIN/s/miss-direct-$r.bin" ;;
      upcache) url="$UP/s/miss-upcache-$r.bin" ;;
      nginx) url="$NG/s/miss-nginx-$r.bin" ;;
    esac
    read -r a b < <(timeout 120 "${CLIENT[@]}" curl -s -o /dev/null -w '%{time_starttransfer} %{time_total}\n' "$url")
    ttfb+=("$(python3 -c "print($a*1000)")"); total+=("$(python3 -c "print($b*1000)")")
  done
  record "miss_ttfb_$s" "$(median "${ttfb[@]}")"
  record "miss_total_$s" "$(median "${total[@]}")"
done

# --- 4: stampede -----------------------------------------------------------------------------------
log "4: stampede, 600 clients on one uncached 10 MiB URL"
for s in upcache nginx; do
  base=$UP; pid=$UPCACHE_PID
  [ $s = nginx ] && base=$NG && pid=$NGINX_PID
  walls=() origin=()
  reset_peak "$pid"
  for r in $(seq "$RUNS"); do
    path=/s/stampede-$s-$r.bin
    out=$(timeout 300 "${CLIENT[@]}" "$BIN/examples/bench_client" --url "$base$path" --concurrency 600 --expect-size $((10 * MIB)))
    walls+=("$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['wall_ms'])" "$out")")
    sleep 0.2 # the origin writes its counts every 50 ms
    origin+=("$(origin_hits "$path")")
  done
  record "stampede_wall_$s" "$(median "${walls[@]}")"
  record "stampede_origin_$s" "$(python3 -c "print(max(int(x) for x in '${origin[*]}'.split()))")"
  record "rss_stampede_$s" "$(peak_rss_kib "$pid")"
done

# --- 5: 600 concurrent 10 MiB hits (memory) -----------------------------------------------------
log "5: 600 concurrent 10 MiB hits"
for s in upcache nginx; do
  base=$UP; pid=$UPCACHE_PID
  [ $s = nginx ] && base=$NG && pid=$NGINX_PID
  reset_peak "$pid"
  out=$(timeout 300 "${CLIENT[@]}" "$BIN/examples/bench_client" --url "$base/f/10m.bin" --concurrency 600 --expect-size $((10 * MIB)))
  record "hits600_wall_$s" "$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['wall_ms'])" "$out")"
  record "rss_hits600_$s" "$(peak_rss_kib "$pid")"
done

# --- 6: sweeper over a large index (upcache only: nginx's cache manager has no index) ------------
# Two sizes: SWEEP_BLOBS (default 100000) and the issue-14 step of SWEEP_BLOBS_1M (default
# 1000000; 0 skips it). Each phase runs in a fresh process. The sets are made in SWEEP_DIR
# (default: under the work directory) and reused from there by a later run (making 1M takes
# about 9 minutes; repairing what the evicting pass removed, one or two).
SWEEP_BLOBS=${SWEEP_BLOBS:-100000}
SWEEP_BLOBS_1M=${SWEEP_BLOBS_1M:-1000000}
SWEEP_DIR=${SWEEP_DIR:-$WORK/sets}
sweep_step() { # prefix blobs
  log "6: sweeper over $2 blobs"
  local sweep
  mkdir -p "$SWEEP_DIR/$2"
  sweep=$(timeout 3600 "$BIN/examples/bench_sweep" --blobs "$2" --dir "$SWEEP_DIR/$2")
  for k in blobs setup_s startup_clean_s startup_after_crash_s reconciled_after_crash_s rss_after_startup_mib startup_peak_rss_mib idle_pass_s idle_scrub_s idle_pass_peak_rss_mib evicting_pass_s evicting_scrub_s evicting_pass_peak_rss_mib evicted admit_first_ms admit_next_mean_ms admit_next_max_ms admit_peak_rss_mib; do
    record "$1_$k" "$(python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$sweep" "$k")"
  done
}
sweep_step sweep "$SWEEP_BLOBS"
if [ "$SWEEP_BLOBS_1M" -gt 0 ]; then
  sweep_step sweep1m "$SWEEP_BLOBS_1M"
  # Hit latency with the 1M index against a 1k one: random URLs of each set (wrk, step 2's
  # settings), the server alone on its CPU.
  log "6: hits on an index of 1000 and of $SWEEP_BLOBS_1M blobs"
  hits=$(BIN=$BIN DURATION=$DURATION scripts/bench_index_hits.sh 1000 "$SWEEP_DIR/1000" \
    "$SWEEP_BLOBS_1M" "$SWEEP_DIR/$SWEEP_BLOBS_1M")
  while read -r key value; do record "$key" "$value"; done < <(python3 -c 'import json, sys
for l in sys.stdin:
    j = json.loads(l)
    for k in ("rps", "p99_ms"):
        print("indexhits_%d_%d_%s" % (j["blobs"], j["conns"], k), j[k])' <<<"$hits")
fi

# --- 7: intercepted HTTPS hit vs plain proxy-form hit (upcache only) ---------------------------
log "7: HIT time to first byte, intercepted HTTPS vs proxy form"
# curl through https_proxy, trusting the interception CA.
proxied=(env https_proxy="http://127.0.0.1:$PU" no_proxy= NO_PROXY= curl -s --cacert "$CA")
timeout 60 "${proxied[@]}" -o /dev/null "$HS/f/100k.bin"
for _ in $(seq 600); do
  timeout 30 "${proxied[@]}" -I "$HS/f/100k.bin" | grep -qi '^x-cache: HIT' && break
  sleep 0.1
done
for s in intercept plain; do
  vals=()
  for _ in $(seq $((RUNS * 10))); do
    # Request sent -> first byte: after the TLS handshake inside the tunnel, or after the
    # TCP connect for the plain proxy form.
    if [ $s = intercept ]; then
      t=$(timeout 30 "${proxied[@]}" -o /dev/null -w '%{time_appconnect} %{time_starttransfer}' \
        "$HS/f/100k.bin")
    else
      t=$(timeout 30 curl -s -o /dev/null -x "http://127.0.0.1:$PU" \
        -w '%{time_connect} %{time_starttransfer}' "$ORIGIN/f/100k.bin")
    fi
    vals+=("$(python3 -c 'import sys; a, b = map(float, sys.argv[1:]); print((b - a) * 1000)' $t)")
  done
  record "hit_ttfb_$s" "$(median "${vals[@]}")"
done

# --- report ------------------------------------------------------------------------------------------
mkdir -p "$(dirname "$OUT")"
{
  for k in "${!R[@]}"; do echo "$k=${R[$k]}"; done
} >"$WORK/results.env"
python3 - "$WORK/results.env" "$RUNS" "$DURATION" "$LAYOUT" "$WRK_THREADS" >"$OUT" <<'PY'
import sys, os, platform, subprocess
r = dict(l.strip().split("=", 1) for l in open(sys.argv[1]) if "=" in l)
runs, dur = sys.argv[2], sys.argv[3]
f = lambda k: float(r[k])
def ratio(a, b):
    return f"{f(a) / f(b):.2f}x" if f(b) else "n/a"
mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
nginx_v = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
print(f"Machine: {os.cpu_count()} CPUs ({cpu}), {mem:.1f} GiB RAM, {platform.platform()}; {nginx_v}")
print(f"Layout: {sys.argv[4]}.")
print(f"Medians of {runs} runs, the servers alternating; wrk runs {dur}s each with {sys.argv[5]} thread(s). Ratios are upcache / nginx.\n")
print("| measurement | upcache | nginx | ratio |")
print("| --- | ---: | ---: | ---: |")
print(f"| 1. HIT throughput, 1 GiB, 1 client (MB/s) | {r['tput_upcache']} | {r['tput_nginx']} | {ratio('tput_upcache', 'tput_nginx')} |")
for size in ("1k", "100k"):
    for c in ("64", "600"):
        k = f"{size}_{c}"
        print(f"| 2. HIT {size.replace('k', ' KiB')}, {c} conns: requests/s | {f('rps_upcache_'+k):.0f} | {f('rps_nginx_'+k):.0f} | {ratio('rps_upcache_'+k, 'rps_nginx_'+k)} |")
        print(f"| 2. HIT {size.replace('k', ' KiB')}, {c} conns: p50 / p99 latency (ms) | {f('p50_upcache_'+k):.2f} / {f('p99_upcache_'+k):.2f} | {f('p50_nginx_'+k):.2f} / {f('p99_nginx_'+k):.2f} | p99 {ratio('p99_upcache_'+k, 'p99_nginx_'+k)} |")
d_ttfb, d_tot = f("miss_ttfb_direct"), f("miss_total_direct")
print(f"| 3. MISS 10 MiB, slow origin: time to first byte (ms; direct {d_ttfb:.1f}) | {f('miss_ttfb_upcache'):.1f} (+{f('miss_ttfb_upcache') - d_ttfb:.1f}) | {f('miss_ttfb_nginx'):.1f} (+{f('miss_ttfb_nginx') - d_ttfb:.1f}) | |")
print(f"| 3. MISS 10 MiB, slow origin: total (ms; direct {d_tot:.0f}) | {f('miss_total_upcache'):.0f} ({f('miss_total_upcache') / d_tot:.3f}x direct) | {f('miss_total_nginx'):.0f} ({f('miss_total_nginx') / d_tot:.3f}x direct) | {ratio('miss_total_upcache', 'miss_total_nginx')} |")
print(f"| 4. Stampede, 600 clients, 10 MiB: origin requests | {r['stampede_origin_upcache']} | {r['stampede_origin_nginx']} | |")
print(f"| 4. Stampede: total time (ms; one direct download {d_tot:.0f}) | {f('stampede_wall_upcache'):.0f} ({f('stampede_wall_upcache') / d_tot:.2f}x) | {f('stampede_wall_nginx'):.0f} ({f('stampede_wall_nginx') / d_tot:.2f}x) | {ratio('stampede_wall_upcache', 'stampede_wall_nginx')} |")
mib = lambda k: f"{f(k) / 1024:.0f}"
for size in ("1k", "100k"):
    print(f"| 5. Peak RSS, wrk 600 conns, {size.replace('k', ' KiB')} (MiB) | {mib('rss_wrk_upcache_'+size)} | {mib('rss_wrk_nginx_'+size)} | |")
print(f"| 5. Peak RSS, stampede (600 x 10 MiB miss) (MiB) | {mib('rss_stampede_upcache')} | {mib('rss_stampede_nginx')} | |")
print(f"| 5. Peak RSS, 600 concurrent 10 MiB hits (MiB) | {mib('rss_hits600_upcache')} | {mib('rss_hits600_nginx')} | |")
print(f"| 5. 600 concurrent 10 MiB hits: total time (ms) | {f('hits600_wall_upcache'):.0f} | {f('hits600_wall_nginx'):.0f} | {ratio('hits600_wall_upcache', 'hits600_wall_nginx')} |")
for p in ("sweep", "sweep1m"):
    if p + "_blobs" not in r:
        continue
    g = lambda k: f(p + "_" + k)
    print(f"\n6. upcache sweeper over an index of {int(g('blobs'))} blobs (one run):\n")
    print("| measurement | time (s) | peak RSS (MiB) |")
    print("| --- | ---: | ---: |")
    print(f"| making the set (bulk) | {g('setup_s'):.2f} | |")
    print(f"| start-up to ready after a clean shutdown | {g('startup_clean_s'):.2f} | |")
    print(f"| start-up to ready after a crash (walk in the background) | {g('startup_after_crash_s'):.2f} | {r[p + '_startup_peak_rss_mib']} |")
    print(f"| ... until the background walk is done | {g('reconciled_after_crash_s'):.2f} | {r[p + '_rss_after_startup_mib']} (after) |")
    print(f"| sweeper pass, nothing to evict (scrub {g('idle_scrub_s'):.2f} s of it) | {g('idle_pass_s'):.2f} | {r[p + '_idle_pass_peak_rss_mib']} |")
    print(f"| sweeper pass evicting {r[p + '_evicted']} blobs (scrub {g('evicting_scrub_s'):.2f} s) | {g('evicting_pass_s'):.2f} | {r[p + '_evicting_pass_peak_rss_mib']} |")
    print(f"| admission into the full cache, first download (walks the index) | {g('admit_first_ms') / 1000:.3f} | {r[p + '_admit_peak_rss_mib']} |")
    print(f"| ... each of the next 99 (from that walk's reserve): mean / max | {g('admit_next_mean_ms') / 1000:.4f} / {g('admit_next_max_ms') / 1000:.4f} | |")
big = r.get("sweep1m_blobs")
if big and f"indexhits_1000_64_p99_ms" in r:
    print(f"\n6. upcache hits on random URLs of an index of 1,000 and of {int(float(big)):,} blobs (256 B each; wrk, {dur}s):\n")
    print("| connections | 1k: requests/s | 1k: p99 (ms) | 1M: requests/s | 1M: p99 (ms) | p99 1M / 1k |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for c in ("64", "600"):
        k1, km = f"indexhits_1000_{c}_", f"indexhits_{int(float(big))}_{c}_"
        print(f"| {c} | {f(k1 + 'rps'):.0f} | {f(k1 + 'p99_ms'):.2f} | {f(km + 'rps'):.0f} | {f(km + 'p99_ms'):.2f} | {ratio(km + 'p99_ms', k1 + 'p99_ms')} |")
ti, tp = f("hit_ttfb_intercept"), f("hit_ttfb_plain")
print(f"\n7. upcache HIT, 100 KiB, time to first byte after the connection is set up (median of {int(runs) * 10}; goal: intercepted at most 5 ms more):\n")
print("| intercepted HTTPS (after the TLS handshake) (ms) | plain proxy form (ms) | difference (ms) |")
print("| ---: | ---: | ---: |")
print(f"| {ti:.2f} | {tp:.2f} | {ti - tp:+.2f} |")
PY
cat "$OUT"
