# Sourced by the hit-profiling scripts (profile-hits.sh, callgrind-hits.sh, bench-hits-ab.sh):
# a work directory and the processes started, both removed on exit; a free port; and the
# nginx proxy_cache configuration they compare upcache's hits with. It serves hits as
# bench.sh's does (sendfile, tcp_nopush off, buffered access log, one worker); bench.sh keeps
# its own, which adds what its miss and stampede steps need (upstream keepalive, lock
# timeouts, max_size).
#
#   BENCH_NAME=profile source "$(dirname "$0")/bench-lib.sh"
WORK=$(mktemp -d "/tmp/upcache-${BENCH_NAME:-bench}.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  # One started in a command substitution is not our child (`wait` returns at once): give
  # it time to finish its shutdown before its data directory goes.
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# nginx_conf PORT ORIGIN_PORT: write $WORK/nginx.conf, one worker with proxy_cache (lock on,
# sendfile on, a buffered access log) on 127.0.0.1:PORT in front of 127.0.0.1:ORIGIN_PORT.
nginx_conf() {
  local user_line=""
  [ "$(id -u)" = 0 ] && user_line="user root;"
  mkdir -p "$WORK/nginx-cache" "$WORK/nginx-tmp"
  cat >"$WORK/nginx.conf" <<NGINX
$user_line
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 8192; }
http {
  access_log $WORK/nginx-access.log combined buffer=64k flush=1s;
  sendfile on; tcp_nopush off; tcp_nodelay on;
  keepalive_timeout 65; keepalive_requests 1000000;
  client_body_temp_path $WORK/nginx-tmp/body; proxy_temp_path $WORK/nginx-tmp/proxy;
  fastcgi_temp_path $WORK/nginx-tmp/fastcgi; uwsgi_temp_path $WORK/nginx-tmp/uwsgi;
  scgi_temp_path $WORK/nginx-tmp/scgi;
  proxy_cache_path $WORK/nginx-cache levels=1:2 keys_zone=c:64m inactive=1y use_temp_path=off;
  server {
    listen 127.0.0.1:$1 backlog=4096;
    location / {
      proxy_pass http://127.0.0.1:$2; proxy_http_version 1.1;
      proxy_cache c; proxy_cache_valid 200 1y; proxy_cache_lock on;
      add_header X-Cache \$upstream_cache_status;
    }
  }
}
NGINX
}
