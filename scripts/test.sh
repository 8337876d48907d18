#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need when it is missing,
# builds once, and runs every test (unit, integration, the real binary, real clients).
#
#   scripts/test.sh            # everything, ending with a 20 s fuzzing smoke run per target
#   scripts/test.sh <filter>   # only tests matching a nextest filter expression, e.g. 'test(hit)'
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*" >&2; }

# --- tools the tests drive for real --------------------------------------------------------
apt_packages=()
command -v curl >/dev/null || apt_packages+=(curl)
command -v wget >/dev/null || apt_packages+=(wget)
command -v ip >/dev/null || apt_packages+=(iproute2)
command -v rpmbuild >/dev/null || apt_packages+=(rpm)
[ -x /usr/sbin/nginx ] || apt_packages+=(nginx)   # the gateway tests run deploy/nginx.conf
if ((${#apt_packages[@]})); then
  log "installing ${apt_packages[*]}"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
fi
# The FTP tests run a real FTP server: pyftpdlib (tests/common/ftp_server.py).
if ! python3 -c 'import pyftpdlib' 2>/dev/null; then
  log "installing pyftpdlib"
  python3 -m pip install --quiet pyftpdlib 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages pyftpdlib
fi
# The object-store tests (tests/s3.rs) run a real S3 server: moto's, with boto3 to create
# the bucket (tests/common/s3_server.py). See the README for why moto.
if ! python3 -c 'import moto.server, boto3, flask' 2>/dev/null; then
  log "installing moto[server]"
  python3 -m pip install --quiet 'moto[server]' 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages 'moto[server]'
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

# A documentation-range address on loopback lets tests reach a "public" upstream while the
# SSRF guard is on (redirects from it to 127.0.0.1 must be refused). Tests that need it skip
# with a message when it cannot be added (not root).
if command -v ip >/dev/null && ! ip -4 addr show dev lo | grep -q '203.0.113.7/'; then
  ip addr add 203.0.113.7/32 dev lo 2>/dev/null || echo "note: cannot add 203.0.113.7 to lo; SSRF redirect tests will skip" >&2
fi

# --- checks and tests --------------------------------------------------------------------------
log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings

log "tests"
if [ $# -gt 0 ]; then
  cargo nextest run --locked --profile ci -E "$1"
else
  cargo nextest run --locked --profile ci
  cargo test --doc --locked --quiet
  # Every fuzz target for a short smoke run, from its committed seeds (FUZZ_SECONDS=0 skips).
  if [ "${FUZZ_SECONDS:-20}" != 0 ]; then
    log "fuzzing: scripts/fuzz.sh ${FUZZ_SECONDS:-20}"
    scripts/fuzz.sh "${FUZZ_SECONDS:-20}"
  fi
fi
