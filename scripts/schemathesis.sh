#!/usr/bin/env bash
# Check the OpenAPI document with the reference validator (openapi-spec-validator), then fuzz
# the HTTP API with schemathesis, driven by the document as the server itself serves it
# (GET /api/v1/openapi.json): no generated request may get a 5xx (`not_a_server_error`).
#
#   scripts/schemathesis.sh [BINARY] [extra schemathesis options...]
#
# BINARY defaults to target/debug/upcache, the one `scripts/test.sh` has built. The server runs
# with an admin token, so that authenticated operations are exercised too, and with an upstream
# policy that refuses every upstream URL before any name is resolved (only 127.0.0.1 is an
# allowed host, and private addresses are not allowed): nothing generated can reach anything.
# The run is bounded: ST_MAX_EXAMPLES cases per operation (default 40), ST_MAX_TIME seconds in
# all (default 120).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

binary=${1:-target/debug/upcache}
shift || true
[ -x "$binary" ] || { echo "no upcache binary at $binary: build it first" >&2; exit 1; }
python3 -c 'import schemathesis, openapi_spec_validator' 2>/dev/null ||
  { echo "schemathesis and openapi-spec-validator are not installed (scripts/test.sh installs them)" >&2; exit 1; }

python3 -m openapi_spec_validator --schema 3.1 schema/openapi.json

dir=$(mktemp -d)
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT

token="schemathesis-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
token_sha256=$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)
cat >"$dir/upcache.toml" <<EOF
[server]
listen = "127.0.0.1:0"
instance = "schemathesis"

[storage]
data_dir = "$dir/data"

[cache]
# "Full" by what this run stores, not by this machine's disk.
max_size = "1GiB"

[upstream]
# Every upstream URL is refused before any connection or name lookup: a host other than
# 127.0.0.1 is not allowed, and 127.0.0.1 is a private address.
allow_hosts = ["127.0.0.1"]
allow_private = false
retries = 0

[limits]
per_client_rps = 0
per_client_concurrency = 0
max_upload_size = "1MiB"

[[auth.tokens]]
name = "schemathesis"
sha256 = "$token_sha256"
scopes = ["admin"]
EOF

# The server prints its address once it listens: read it from a pipe as it comes.
mkfifo "$dir/stdout"
RUST_LOG=warn "$binary" serve --config "$dir/upcache.toml" >"$dir/stdout" 2>"$dir/server.log" &
server=$!
exec 3<"$dir/stdout"
base=""
while IFS= read -r -t 60 line <&3; do
  case $line in
    "upcache listening on "*) base=${line#upcache listening on }; break ;;
  esac
done
# Keep draining what else it prints, so that it never blocks on a full pipe.
cat <&3 >/dev/null &
[ -n "$base" ] || { echo "upcache did not start listening" >&2; cat "$dir/server.log" >&2; exit 1; }

# The document's examples are the checksums of "hello" and the URL below: with that stored,
# the examples reach hits (ranges, conditionals, pins, pages), not only 404s.
curl -sSf -o /dev/null -X PUT --data-binary hello -H "Authorization: Bearer $token" \
  "$base/api/v1/upload?url=https%3A%2F%2Fdead.example.org%2Ffoo-1.2.tar.gz"

status=0
# From the temporary directory: schemathesis keeps a cache of failures in the current one.
cd "$dir"
# Loopback only: no proxy from the environment may carry these requests anywhere else.
env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY -u ALL_PROXY -u all_proxy \
  NO_PROXY='*' PYTHONPATH="$repo/scripts" SCHEMATHESIS_HOOKS=schemathesis_hooks \
  timeout 300 python3 -m schemathesis.cli run "$base/api/v1/openapi.json" \
  --url "$base" \
  --checks not_a_server_error \
  --header "Authorization: Bearer $token" \
  --max-examples "${ST_MAX_EXAMPLES:-40}" \
  --max-time "${ST_MAX_TIME:-120}" \
  --request-timeout 30 \
  --workers 2 \
  --suppress-health-check all \
  --no-color \
  "$@" || status=$?
if [ "$status" -ne 0 ]; then
  echo "schemathesis failed ($status); the server's log:" >&2
  tail -n 50 "$dir/server.log" >&2
fi
exit "$status"
