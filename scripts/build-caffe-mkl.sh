#!/usr/bin/env bash
# Build Caffe's `caffe` tool (CPU only, no pycaffe) against Intel MKL from PyPI, for the BLAS
# comparison (python -m deepdream_caffe.lab.blasbench). Not part of the product's setup.
#
# The source is the one scripts/build-caffe.sh verifies (--source-only), with the same patches.
# MKL comes from PyPI (requirements-mkl.txt, --no-deps) into the cache, never into the venv:
#     $DEEPDREAM_CAFFE_CACHE/mkl-<requirements hash>/      lib/, include/, links/ (libmkl_rt.so)
#     $DEEPDREAM_CAFFE_CACHE/caffe-mkl-<key>/
#         build/tools/caffe   runs from the build tree (its RUNPATH names libcaffe and MKL)
#         build-info.json     written last: a folder without it is an interrupted build, redone
#
# Usage: scripts/build-caffe-mkl.sh [--print-dir]
#   --print-dir   only print the cache folder the current inputs map to
# Environment:
#   PYTHON   the venv's python (pip, and build-caffe.sh --source-only, need it)
#   JOBS     parallel compile jobs (default: number of cores)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
readonly RECIPE_VERSION=1  # bump when a change here changes what gets built
cache=${DEEPDREAM_CAFFE_CACHE:-$HOME/.cache/deepdream-caffe}
: "${PYTHON:?set PYTHON to the interpreter of the venv}"
jobs=${JOBS:-$(nproc)}

say() { printf '[build-caffe-mkl] %s\n' "$*" >&2; }
die() { printf '[build-caffe-mkl] error: %s\n' "$*" >&2; exit 1; }

print_dir=0
while [ $# -gt 0 ]; do
  case $1 in
    --print-dir) print_dir=1 ;;
    *) die "unknown argument $1 (see the header of $0)" ;;
  esac
  shift
done

mkl=$cache/mkl-$(sha256sum "$here/requirements-mkl.txt" | cut -c1-12)
patches=("$here"/caffe/patches/*.patch)
cmake_flags=(
  -DCMAKE_BUILD_TYPE=Release -DCPU_ONLY=ON
  -DBLAS=MKL -DMKL_ROOT="$mkl" -DMKL_INCLUDE_DIR="$mkl/include"  # mkl_rt: one library
  -DUSE_OPENCV=OFF -DUSE_LEVELDB=OFF -DUSE_LMDB=OFF -DUSE_HDF5=ON
  -DBUILD_python=OFF -DBUILD_docs=OFF -DBUILD_matlab=OFF
)
key=$( {
  sha256sum "$here/requirements-mkl.txt" "${patches[@]}" | cut -d' ' -f1
  printf '%s\n' "${cmake_flags[@]}"
  c++ --version | head -n1
  cmake --version | head -n1
  echo "recipe $RECIPE_VERSION"
} | sha256sum | cut -c1-16)
dest=$cache/caffe-mkl-$key

if [ "$print_dir" = 1 ]; then echo "$dest"; exit 0; fi
if [ -f "$dest/build-info.json" ] && [ -x "$dest/build/tools/caffe" ]; then
  say "up to date: $dest"
  echo "$dest"; exit 0
fi

if [ ! -d "$mkl/links" ]; then
  say "installing MKL from PyPI (requirements-mkl.txt) into $mkl"
  rm -rf "$mkl.part"
  "$PYTHON" -m pip install -q --disable-pip-version-check --no-warn-script-location --no-deps \
      --prefix "$mkl.part" -r "$here/requirements-mkl.txt" ||
    die "cannot install requirements-mkl.txt"
  # The wheels ship only sonames (libmkl_rt.so.3); the linker and FindMKL want libmkl_rt.so.
  mkdir -p "$mkl.part/links"
  file=$(compgen -G "$mkl.part/lib/libmkl_rt.so.*" | head -n1) || die "the mkl wheel has no libmkl_rt.so.*"
  ln -s "../lib/${file##*/}" "$mkl.part/links/libmkl_rt.so"
  mv "$mkl.part" "$mkl"
fi
# FindMKL looks for lib/libmkl_rt.so under MKL_ROOT; links/ is that root's lib.
cmake_flags+=(-DMKL_RT_LIBRARY="$mkl/links/libmkl_rt.so")

start=$(date +%s)
rm -rf "$dest"; mkdir -p "$dest"
PYTHON=$PYTHON "$here/scripts/build-caffe.sh" --source-only "$dest/src"
for p in "${patches[@]}"; do patch -d "$dest/src" -p1 --quiet --forward <"$p"; done
# The tool's target is caffe.bin (the target caffe is libcaffe).
say "configuring and building the caffe tool with $jobs jobs (log: $dest/build.log)"
{ cmake -S "$dest/src" -B "$dest/build" "${cmake_flags[@]}" \
        -DCMAKE_BUILD_RPATH="$mkl/lib" &&
  cmake --build "$dest/build" -j "$jobs" --target caffe.bin; } >"$dest/build.log" 2>&1 ||
  { tail -n 30 "$dest/build.log" >&2; die "build failed (log: $dest/build.log)"; }
seconds=$(( $(date +%s) - start ))
cat >"$dest/build-info.json" <<EOF
{
  "blas": "MKL (PyPI: $(grep -E '^mkl==' "$here/requirements-mkl.txt"))",
  "mkl_prefix": "$mkl",
  "cmake_flags": "${cmake_flags[*]}",
  "patches": "$(for p in "${patches[@]}"; do printf '%s ' "${p##*/}"; done)",
  "compiler": "$(c++ --version | head -n1)",
  "build_seconds": $seconds,
  "jobs": $jobs,
  "cache_key": "$key"
}
EOF
say "built in ${seconds}s: $dest"
echo "$dest"
