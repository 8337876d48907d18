#!/usr/bin/env bash
# Source tarball and source RPM of the checked-out commit (README, "Packages").
#
#   dist/srpm.sh [--vendor] [OUTDIR]      # OUTDIR defaults to dist/out
#
# --vendor also packs the crates (`cargo vendor`) as Source1, for builders without network
# (mock, koji, OBS): rebuild that source package with `--with vendor`.
set -euo pipefail
cd "$(dirname "$0")/.."

vendor=0
if [ "${1:-}" = "--vendor" ]; then
  vendor=1
  shift
fi
out=$(realpath -m "${1:-dist/out}")
version=$(rpmspec -q --srpm --qf '%{version}' dist/upcache.spec)
crate_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
if [ "$version" != "$crate_version" ]; then
  echo "dist/upcache.spec says version $version, Cargo.toml $crate_version" >&2
  exit 1
fi

top=$(mktemp -d)
trap 'rm -rf "$top"' EXIT
mkdir -p "$top/SOURCES" "$out"
git archive --format=tar.gz --prefix="upcache-$version/" \
  -o "$top/SOURCES/upcache-$version.tar.gz" HEAD
with=()
if ((vendor)); then
  cargo vendor --locked --versioned-dirs "$top/vendor" >/dev/null
  tar -C "$top" -cJf "$top/SOURCES/upcache-$version-vendor.tar.xz" vendor
  with=(--with vendor)
fi
# --nodeps: the build dependencies are the builder's business, not this host's.
rpmbuild -bs --nodeps --define "_topdir $top" "${with[@]}" dist/upcache.spec >&2
mv "$top"/SRPMS/*.src.rpm "$out/"
ls "$out"/upcache-"$version"-*.src.rpm
