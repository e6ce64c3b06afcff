#!/usr/bin/env bash
# Fetch, verify and build a current OpenBLAS (Debian trixie's source package) that picks its
# kernels at run time for any x86-64 CPU (DYNAMIC_ARCH) and threads with OpenMP.
#
# It keeps Debian's soname, libopenblas.so.0, so the Caffe already built (which links
# libopenblas.so.0) runs on it through LD_LIBRARY_PATH, without being rebuilt:
#     LD_LIBRARY_PATH=$(scripts/build-openblas.sh)/install/lib deepdream-caffe ...
# Only real single and double BLAS is built: libcaffe calls cblas_s* and cblas_d*, nothing else.
#
# The build lives in a cache, keyed by everything that affects it:
#     $DEEPDREAM_CAFFE_CACHE/openblas-<version>-<key>/   (default ~/.cache/deepdream-caffe)
#         install/lib/libopenblas.so.0
#         build-info.json     written last: a folder without it is an interrupted build, redone
#
# Usage: scripts/build-openblas.sh [--print-dir]
#   --print-dir   only print the cache folder the current inputs map to
# Environment:
#   OPENBLAS_SRC_TARBALL   a local copy of Debian's orig tarball (checked by sha256)
#   JOBS                   parallel compile jobs (default: number of cores)
set -euo pipefail

readonly RECIPE_VERSION=1  # bump when a change here changes what gets built
readonly VERSION=0.3.29
readonly DEBIAN_SUITE=trixie
readonly DEBIAN_VERSION=0.3.29+ds-3
readonly TARBALL_NAME=openblas_0.3.29+ds.orig.tar.xz
readonly TARBALL_SHA256=eb691e2cff83799400da22aa6ab93ebaa346ad317fea578b7ae119e226ce1b01
readonly DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${DEEPDREAM_CAFFE_CACHE:-$HOME/.cache/deepdream-caffe}
jobs=${JOBS:-$(nproc)}

say() { printf '[build-openblas] %s\n' "$*" >&2; }
die() { printf '[build-openblas] error: %s\n' "$*" >&2; exit 1; }

print_dir=0
while [ $# -gt 0 ]; do
  case $1 in
    --print-dir) print_dir=1 ;;
    *) die "unknown argument $1 (see the header of $0)" ;;
  esac
  shift
done

make_flags=(
  DYNAMIC_ARCH=1 TARGET=GENERIC  # every x86-64 kernel set, chosen at load time from the CPU
  USE_OPENMP=1                   # one thread pool with the OpenMP in Caffe's layers
  NUM_THREADS=64                 # the most threads it can use (not this machine's core count)
  NO_LAPACK=1 BUILD_SINGLE=1 BUILD_DOUBLE=1 NO_STATIC=1  # what libcaffe calls: cblas_s*, cblas_d*
)
key=$( {
  echo "source $TARBALL_SHA256"
  printf '%s\n' "${make_flags[@]}"
  cc --version | head -n1
  echo "recipe $RECIPE_VERSION"
} | sha256sum | cut -c1-16)
dest=$cache/openblas-$VERSION-$key

if [ "$print_dir" = 1 ]; then echo "$dest"; exit 0; fi
if [ -f "$dest/build-info.json" ]; then
  say "up to date: $dest"
  echo "$dest"; exit 0
fi

check_sha256() { echo "$TARBALL_SHA256  $1" | sha256sum --check --status; }

fetch_debian() {  # apt-get source with a private sources list; the system's apt setup is untouched
  local tmp; tmp=$(mktemp -d)
  mkdir -p "$tmp/lists/partial" "$tmp/parts" "$tmp/dl"
  echo "deb-src $DEBIAN_MIRROR $DEBIAN_SUITE main" >"$tmp/sources.list"
  local o=(-o "Dir::Etc::sourcelist=$tmp/sources.list" -o "Dir::Etc::sourceparts=$tmp/parts"
           -o "Dir::State::Lists=$tmp/lists" -o "APT::Sandbox::User=root")
  if apt-get -qq "${o[@]}" update && (cd "$tmp/dl" && apt-get -qq "${o[@]}" source --download-only "openblas=$DEBIAN_VERSION"); then
    mv "$tmp/dl/$TARBALL_NAME" "$1"
  fi
  rm -rf "$tmp"
  [ -f "$1" ]
}

tarball=$cache/src/$TARBALL_NAME
mkdir -p "$cache/src"
if [ -n "${OPENBLAS_SRC_TARBALL:-}" ]; then
  check_sha256 "$OPENBLAS_SRC_TARBALL" || die "OPENBLAS_SRC_TARBALL=$OPENBLAS_SRC_TARBALL is missing or its sha256 is not $TARBALL_SHA256 (Debian's $TARBALL_NAME). Nothing was built."
  tarball=$OPENBLAS_SRC_TARBALL
  source_origin="OPENBLAS_SRC_TARBALL ($OPENBLAS_SRC_TARBALL)"
elif [ -f "$tarball" ] && check_sha256 "$tarball"; then
  source_origin="debian:openblas=$DEBIAN_VERSION (cached)"
else
  say "fetching Debian source package openblas=$DEBIAN_VERSION ($DEBIAN_SUITE)"
  rm -f "$tarball" "$tarball.part"
  fetch_debian "$tarball.part" || die "cannot fetch openblas=$DEBIAN_VERSION from $DEBIAN_MIRROR; set OPENBLAS_SRC_TARBALL to a local copy of $TARBALL_NAME"
  check_sha256 "$tarball.part" || { rm -f "$tarball.part"; die "Debian's $TARBALL_NAME does not have sha256 $TARBALL_SHA256; refusing to build"; }
  mv "$tarball.part" "$tarball"
  source_origin="debian:openblas=$DEBIAN_VERSION"
fi

start=$(date +%s)
rm -rf "$dest"; mkdir -p "$dest/src"
tar -xJf "$tarball" -C "$dest/src" --strip-components=1
say "source verified ($source_origin); building with $jobs jobs (log: $dest/build.log)"
{ make -C "$dest/src" -j "$jobs" "${make_flags[@]}" libs shared &&
  make -C "$dest/src" "${make_flags[@]}" PREFIX="$dest/install" install; } >"$dest/build.log" 2>&1 ||
  { tail -n 30 "$dest/build.log" >&2; die "build failed (log: $dest/build.log)"; }
soname=$(objdump -p "$dest/install/lib/libopenblas.so" | awk '$1 == "SONAME" {print $2}')
[ "$soname" = libopenblas.so.0 ] || die "the library's soname is $soname, not libopenblas.so.0"
seconds=$(( $(date +%s) - start ))
cat >"$dest/build-info.json" <<EOF
{
  "openblas_version": "$VERSION",
  "debian_version": "$DEBIAN_VERSION",
  "source_tarball": "$TARBALL_NAME",
  "source_sha256": "$TARBALL_SHA256",
  "source_origin": "$source_origin",
  "make_flags": "${make_flags[*]}",
  "compiler": "$(cc --version | head -n1)",
  "build_seconds": $seconds,
  "jobs": $jobs,
  "cache_key": "$key"
}
EOF
say "built in ${seconds}s: $dest"
echo "$dest"
