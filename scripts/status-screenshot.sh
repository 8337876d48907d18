#!/usr/bin/env bash
# Regenerates docs/status-page.png: the status page of a real `upcache serve` during two slow
# downloads (one with three clients), with a failure or two and an open circuit breaker,
# photographed by headless chromium. Everything runs on 127.0.0.1 and is removed afterwards.
#
#   scripts/status-screenshot.sh [path/to/upcache]   # default: target/debug/upcache
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/upcache}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A slow origin: /pool/<name> is 64 MiB sent at about 2 MiB/s; /small/<name> is 100 kB;
# /clip.tar.gz claims to be video.
origin_port=$(port)
python3 - "$origin_port" >"$work/origin.log" 2>&1 <<'PY' &
import http.server, sys, time
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/pool/"):
            size = 64 << 20
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.send_header("Content-Type", "application/x-xz")
            self.end_headers()
            chunk = b"x" * (256 << 10)
            for _ in range(size // len(chunk)):
                self.wfile.write(chunk)
                time.sleep(0.125)
        elif self.path.startswith("/small/"):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"y" * 100000)
        elif self.path == "/clip.tar.gz":
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"12345")
        else:
            self.send_error(404)
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
pids+=($!)

up_port=$(port)
UPCACHE__SERVER__INSTANCE=upcache-1 UPCACHE__UPSTREAM__ALLOW_PRIVATE=true \
  UPCACHE__CACHE__MAX_SIZE=2GiB UPCACHE__UPSTREAM__RETRY_BACKOFF=10ms \
  "$bin" serve --listen "127.0.0.1:$up_port" --data-dir "$work/data" >"$work/upcache.log" 2>&1 &
pids+=($!)
base="http://127.0.0.1:$up_port"
for _ in $(seq 100); do curl -fs "$base/readyz" >/dev/null && break; sleep 0.1; done

origin="127.0.0.1:$origin_port"
for name in zlib-1.3.1.tar.gz xz-5.6.4.tar.gz; do
  for _ in 1 2 3; do curl -s -o /dev/null "$base/http/$origin/small/$name"; done
done
curl -s "$base/http/$origin/missing-1.0.tar.gz" >/dev/null || true
curl -s "$base/http/$origin/clip.tar.gz" >/dev/null || true
dead=$(port)
for _ in 1 2; do curl -s "$base/http/127.0.0.1:$dead/gone-2.1.tar.gz" >/dev/null || true; done
for _ in 1 2 3; do curl -s -o /dev/null "$base/http/$origin/pool/gcc-14.2.0.tar.xz" & pids+=($!); done
curl -s -o /dev/null "$base/http/$origin/pool/llvm-project-19.1.7.src.tar.xz" & pids+=($!)
# Let the downloads get going.
sleep 4

chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1100,1250 \
  --user-data-dir="$work/chromium" --screenshot="$work/shot.png" "$base/" 2>"$work/chromium.log"
mv "$work/shot.png" docs/status-page.png
echo "wrote docs/status-page.png"
