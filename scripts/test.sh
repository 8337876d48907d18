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
# Debian (what CI runs) installs them with apt-get. dnf-based hosts (Fedora, openEuler) use
# dnf, asked for the command's path so that it picks each distribution's own package.
#   command (or path) to look for | Debian package | dnf argument
tools=(
  "curl curl /usr/bin/curl"
  "wget wget /usr/bin/wget"
  "ip iproute2 /usr/sbin/ip"                         # network namespaces of the SSRF tests
  "openssl openssl /usr/bin/openssl"                 # a real TLS server (openssl s_server)
  "rpmbuild rpm /usr/bin/rpmbuild"                   # and rpmspec
  "dnf dnf /usr/bin/dnf"                             # tests/build_farm.rs: a real repository through proxy=
  "createrepo_c createrepo-c /usr/bin/createrepo_c"  # ... built with createrepo_c
  "/usr/sbin/nginx nginx /usr/sbin/nginx"            # the gateway tests run deploy/nginx.conf
  "systemd-analyze systemd /usr/bin/systemd-analyze" # tests/it/deploy.rs: dist/upcache.service
  "/usr/bin/promtool prometheus /usr/bin/promtool"   # tests/it/deploy.rs: deploy/prometheus.yml; tests/it/process.rs: promtool check metrics
  "/usr/bin/chromium chromium chromium"              # tests/it/status.rs: the status page in a browser
)
missing=()
for tool in "${tools[@]}"; do
  read -r cmd deb dnf <<<"$tool"
  command -v "$cmd" >/dev/null && continue
  if command -v apt-get >/dev/null; then missing+=("$deb"); else missing+=("$dnf"); fi
done
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  if command -v apt-get >/dev/null; then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  elif command -v dnf >/dev/null; then
    $sudo dnf install -y -q "${missing[@]}"
  else
    echo "cannot install ${missing[*]}: neither apt-get nor dnf is here" >&2
    exit 1
  fi
fi
# The FTP tests run a real FTP server: pyftpdlib (tests/it/common/ftp_server.py).
if ! python3 -c 'import pyftpdlib' 2>/dev/null; then
  log "installing pyftpdlib"
  python3 -m pip install --quiet pyftpdlib 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages pyftpdlib
fi
# The object-store tests (tests/it/s3.rs) run a real S3 server: moto's, with boto3 to create
# the bucket (tests/it/common/s3_server.py). See the README for why moto.
if ! python3 -c 'import moto.server, boto3, flask' 2>/dev/null; then
  log "installing moto[server]"
  python3 -m pip install --quiet 'moto[server]' 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages 'moto[server]'
fi
# scripts/schemathesis.sh validates the OpenAPI document with openapi-spec-validator and fuzzes
# a live server with schemathesis.
if ! python3 -c 'import schemathesis, openapi_spec_validator' 2>/dev/null; then
  log "installing schemathesis"
  python3 -m pip install --quiet schemathesis openapi-spec-validator 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages schemathesis openapi-spec-validator
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

# Tests never change this machine's network: those that need a "public" upstream address make
# a network namespace of their own (tests/it/common/netns.rs; root and unshare from util-linux).

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

if [ $# -eq 0 ]; then
  # `cargo install --path .` works: a debug build (reusing target/) into a throw-away root.
  log "cargo install --path ."
  install_root=$(mktemp -d)
  CARGO_TARGET_DIR="$PWD/target" cargo install --path . --locked --offline --debug --quiet \
    --root "$install_root"
  "$install_root/bin/upcache" --version
  rm -rf "$install_root"

  # The binary the tests above built, fuzzed from its own OpenAPI document: no 5xx.
  log "schemathesis"
  scripts/schemathesis.sh target/debug/upcache
fi
