#!/usr/bin/env bash
# Fetch, verify, patch and build pristine BVLC Caffe (commit 99bd997) with pycaffe.
#
# The build lives in a cache outside the clone, keyed by everything that affects it,
# so a second run (or CI on the same machine) reuses it:
#     $DEEPDREAM_CAFFE_CACHE/caffe-<key>/            (default ~/.cache/deepdream-caffe)
#         install/            headers, libcaffe, tools, python/ (pycaffe)
#         build/              the CMake build tree (test binary lives here)
#         build-info.json     the build record printed by `deepdream-caffe info`
#
# Usage: scripts/build-caffe.sh [--print-dir] [--test-binary] [--source-only DIR]
#   --print-dir        only print the cache folder the current inputs map to
#   --test-binary      also build Caffe's gtest binary (test.testbin)
#   --source-only DIR  fetch and verify the source into DIR (must not exist), build nothing
# Environment:
#   PYTHON             interpreter pycaffe is built for (required: the venv's python)
#   CUDA=1             build the CUDA variant (no cuDNN); CUDA_ARCH_BIN overrides the arch list
#   CAFFE_PATCHES      openmp (default): the build fixes of caffe/patches/ and the OpenMP
#                      layers of caffe/patches-openmp/ (bit-neutral: docs/performance.md);
#                      pristine: the build fixes only. Both link the same BLAS.
#   CAFFE_SRC_TARBALL  a local copy of Debian's orig tarball (checked by sha256)
#   JOBS               parallel compile jobs (default: number of cores)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
readonly RECIPE_VERSION=2  # bump when a change here changes what gets built
readonly DEBIAN_VERSION=1.0.0+git20180821.99bd997-8
readonly TARBALL_NAME=caffe_1.0.0+git20180821.99bd997.orig.tar.gz
readonly TARBALL_SHA256=e0eb3f06794f7402c77b7dec8e8480273ee1a1bb192e9122b621a69d4147ad0c
readonly BVLC_COMMIT=99bd99795dcdf0b1d3086a8d67ab1782a8a08383
readonly GITHUB_URL=${CAFFE_GITHUB_URL:-https://github.com/BVLC/caffe/archive/$BVLC_COMMIT.tar.gz}
readonly DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
manifest=$here/caffe/source-manifest.sha256
cache=${DEEPDREAM_CAFFE_CACHE:-$HOME/.cache/deepdream-caffe}
: "${PYTHON:?set PYTHON to the interpreter pycaffe is built for (make setup does this)}"
jobs=${JOBS:-$(nproc)}
cuda=${CUDA:-0}
caffe_patches=${CAFFE_PATCHES:-openmp}
case $caffe_patches in
  openmp|pristine) ;;
  *) printf '[build-caffe] error: CAFFE_PATCHES=%s is not a variant: use openmp (the default) or pristine\n' "$caffe_patches" >&2; exit 1 ;;
esac

say() { printf '[build-caffe] %s\n' "$*" >&2; }
die() { printf '[build-caffe] error: %s\n' "$*" >&2; exit 1; }

print_dir=0 test_binary=0 source_only=
while [ $# -gt 0 ]; do
  case $1 in
    --print-dir) print_dir=1 ;;
    --test-binary) test_binary=1 ;;
    --source-only) source_only=${2:?--source-only needs a folder}; shift ;;
    *) die "unknown argument $1 (see the header of $0)" ;;
  esac
  shift
done

py_include=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
py_library=$("$PYTHON" -c 'import sysconfig, os; print(os.path.join(sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")))')
py_version=$("$PYTHON" -c 'import sys; print(sys.version.split()[0])')
numpy_version=$("$PYTHON" -c 'import numpy; print(numpy.__version__)') ||
  die "numpy is not installed for $PYTHON (make setup installs it first)"

cmake_flags=(
  -DCMAKE_BUILD_TYPE=Release
  -DBLAS=Open
  -DUSE_OPENCV=OFF -DUSE_LEVELDB=OFF -DUSE_LMDB=OFF
  -DUSE_HDF5=ON            # OFF breaks the build: net.cpp calls H5Fis_hdf5 outside its guard
  -DBUILD_python=ON -Dpython_version=3 -DBUILD_docs=OFF -DBUILD_matlab=OFF
  -DPYTHON_INCLUDE_DIR="$py_include" -DPYTHON_LIBRARY="$py_library"
  -DUSE_OPENMP=ON          # one OpenMP thread pool for the layers and the BLAS
)
# Debian's OpenMP build of OpenBLAS (the alternatives system may point libopenblas.so.0 at
# another build), linked and found at run time by path. A conda environment (OpenBLAS_HOME)
# brings its own.
blas_dir=
if [ -z "${OpenBLAS_HOME:-}" ]; then
  multiarch=$(gcc -print-multiarch)
  blas_dir=/usr/lib/$multiarch/openblas-openmp
  [ -f "$blas_dir/libopenblas.so" ] ||
    die "$blas_dir/libopenblas.so is missing: install libopenblas-openmp-dev (make setup installs caffe/apt-packages.txt)"
  cmake_flags+=(-DOpenBLAS_LIB="$blas_dir/libopenblas.so"
                -DOpenBLAS_INCLUDE_DIR="/usr/include/$multiarch/openblas-openmp")
fi
# The venv's path differs from clone to clone, so it stays out of the key (its Python and
# numpy versions, which are what matter, are in it).
python_flag=-DPYTHON_EXECUTABLE="$PYTHON"
# The record is shared by every clone too, so it names the venv's Python by role, not path.
recorded_python_flag="-DPYTHON_EXECUTABLE=<venv python>"
if [ "$cuda" = 1 ]; then
  # Caffe 1.0 speaks the cuDNN 7 API only, so no cuDNN. sm_90 is the H100/H200.
  cmake_flags+=(-DCPU_ONLY=OFF -DUSE_CUDNN=OFF -DUSE_NCCL=OFF
                -DCUDA_ARCH_NAME=Manual -DCUDA_ARCH_BIN="${CUDA_ARCH_BIN:-75 80 86 89 90}"
                -DCUDA_ARCH_PTX="${CUDA_ARCH_PTX:-90}")
  read -r -a extra_flags <<<"${CUDA_CMAKE_FLAGS:-}"  # split on spaces, as documented
  cmake_flags+=("${extra_flags[@]}")
  patch_dirs=("$here/caffe/patches" "$here/caffe/patches-cuda")
  [ "$caffe_patches" = openmp ] && patch_dirs+=("$here/caffe/patches-openmp")
  cuda_home=${CUDA_HOME:-/usr/local/cuda}
  if ! compgen -G "$cuda_home/lib64/libcublas.so*" >/dev/null; then
    # A toolkit without cuBLAS/cuRAND (nvcc alone): PyPI's nvidia-cublas and nvidia-curand
    # (requirements-cuda.txt), installed into the cache at a path that names their versions.
    nvidia=$cache/nvidia-$(sha256sum "$here/requirements-cuda.txt" | cut -c1-12)
    cmake_flags+=(-DCUDA_TOOLKIT_ROOT_DIR="$cuda_home" -DCMAKE_LIBRARY_PATH="$nvidia/links"
                  -DCMAKE_CXX_FLAGS="-I$nvidia/nvidia/cu13/include"
                  -DCUDA_NVCC_FLAGS="-I$nvidia/nvidia/cu13/include")
  fi
else
  cmake_flags+=(-DCPU_ONLY=ON)
  patch_dirs=("$here/caffe/patches")
  [ "$caffe_patches" = openmp ] && patch_dirs+=("$here/caffe/patches-openmp")
fi
patches=()
for d in "${patch_dirs[@]}"; do
  for p in "$d"/*.patch; do [ -e "$p" ] && patches+=("$p"); done
done

# Relative, so that the installed tree does not depend on where the cache is.
# shellcheck disable=SC2016  # $ORIGIN is for the dynamic loader, not the shell
rpath='$ORIGIN/../lib;$ORIGIN/../../lib'
[ -n "$blas_dir" ] && rpath="$rpath;$blas_dir"

# Everything that affects the build goes into the key.
toolchain() {
  c++ --version | head -n1
  cmake --version | head -n1
  [ "$cuda" = 1 ] && nvcc --version | tail -n1
  # shellcheck disable=SC2016  # dpkg-query's format, not the shell's
  xargs dpkg-query -W -f '${Package} ${Version}\n' <"$here/caffe/apt-packages.txt" 2>/dev/null || true
}
key=$( {
  echo "source $TARBALL_SHA256"
  sha256sum "$manifest" | cut -d' ' -f1
  for p in "${patches[@]}"; do sha256sum "$p" | cut -d' ' -f1; done
  printf '%s\n' "${cmake_flags[@]}" "python $py_version" "numpy $numpy_version"
  toolchain
  echo "recipe $RECIPE_VERSION"
} | sha256sum | cut -c1-16)
variant=cpu; [ "$cuda" = 1 ] && variant=cuda
[ "$caffe_patches" = pristine ] && variant=$variant-pristine
dest=$cache/caffe-$variant-$key

if [ "$print_dir" = 1 ]; then echo "$dest"; exit 0; fi

# --- source -----------------------------------------------------------------------
check_sha256() { echo "$TARBALL_SHA256  $1" | sha256sum --check --status; }

fetch_debian() {  # apt-get source with a private sources list; the system's apt setup is untouched
  local tmp; tmp=$(mktemp -d)
  mkdir -p "$tmp/lists/partial" "$tmp/parts" "$tmp/dl"
  echo "deb-src $DEBIAN_MIRROR bullseye main" >"$tmp/sources.list"
  local o=(-o "Dir::Etc::sourcelist=$tmp/sources.list" -o "Dir::Etc::sourceparts=$tmp/parts"
           -o "Dir::State::Lists=$tmp/lists" -o "APT::Sandbox::User=root")
  if apt-get -qq "${o[@]}" update && (cd "$tmp/dl" && apt-get -qq "${o[@]}" source --download-only "caffe=$DEBIAN_VERSION"); then
    mv "$tmp/dl/$TARBALL_NAME" "$1"
  fi
  rm -rf "$tmp"
  [ -f "$1" ]
}

verify_tree() {  # every file of the manifest, with its sha256, and nothing else
  local listed actual
  listed=$(cut -c67- "$manifest")
  actual=$(cd "$1" && find . -type f -printf '%P\n' | LC_ALL=C sort)
  [ "$listed" = "$actual" ] && (cd "$1" && sha256sum --check --quiet --status "$manifest")
}

unpack_source() {  # -> $1: a verified, pristine source tree; sets source_origin
  local tarball=$cache/src/$TARBALL_NAME
  mkdir -p "$cache/src"
  if [ -n "${CAFFE_SRC_TARBALL:-}" ]; then
    [ -f "$CAFFE_SRC_TARBALL" ] || die "CAFFE_SRC_TARBALL=$CAFFE_SRC_TARBALL does not exist"
    check_sha256 "$CAFFE_SRC_TARBALL" || die "CAFFE_SRC_TARBALL=$CAFFE_SRC_TARBALL has sha256 $(sha256sum "$CAFFE_SRC_TARBALL" | cut -d' ' -f1), expected $TARBALL_SHA256 (Debian's $TARBALL_NAME). Nothing was built."
    tarball=$CAFFE_SRC_TARBALL
    source_origin="CAFFE_SRC_TARBALL ($CAFFE_SRC_TARBALL)"
  elif [ -f "$tarball" ] && check_sha256 "$tarball"; then
    source_origin="debian:caffe=$DEBIAN_VERSION (cached)"
  else
    rm -f "$tarball"
    say "fetching Debian source package caffe=$DEBIAN_VERSION"
    if fetch_debian "$tarball.part"; then
      check_sha256 "$tarball.part" || { rm -f "$tarball.part"; die "Debian's $TARBALL_NAME does not have sha256 $TARBALL_SHA256; refusing to build"; }
      mv "$tarball.part" "$tarball"
      source_origin="debian:caffe=$DEBIAN_VERSION"
    else
      say "Debian source unavailable; trying $GITHUB_URL (verified file by file)"
      local tmp; tmp=$(mktemp -d)
      curl -fsSL "$GITHUB_URL" -o "$tmp/gh.tar.gz" || die "cannot fetch the Caffe source from Debian ($DEBIAN_MIRROR) or GitHub; set CAFFE_SRC_TARBALL to a local copy of $TARBALL_NAME"
      mkdir -p "$1" && tar -xzf "$tmp/gh.tar.gz" -C "$1" --strip-components=1
      rm -rf "$tmp"
      verify_tree "$1" || die "the GitHub archive does not match caffe/source-manifest.sha256; refusing to build"
      source_origin="github:BVLC/caffe@$BVLC_COMMIT"
      return
    fi
  fi
  mkdir -p "$1" && tar -xzf "$tarball" -C "$1"
  verify_tree "$1" || die "unpacked source does not match caffe/source-manifest.sha256"
}

if [ -n "$source_only" ]; then
  [ -e "$source_only" ] && die "$source_only already exists"
  unpack_source "$source_only"
  say "source verified ($source_origin): $source_only"
  exit 0
fi

# --- build ------------------------------------------------------------------------
if [ -f "$dest/build-info.json" ] && { [ "$test_binary" = 0 ] || [ -x "$dest/build/test/test.testbin" ]; }; then
  say "up to date: $dest"
  echo "$dest"; exit 0
fi

install_nvidia_wheels() {  # -> $nvidia: cuBLAS and cuRAND from PyPI, with unversioned links
  [ -d "$nvidia/links" ] && return
  say "installing cuBLAS and cuRAND from PyPI (requirements-cuda.txt) into $nvidia"
  rm -rf "$nvidia.part"
  "$PYTHON" -m pip install -q --disable-pip-version-check --no-deps --target "$nvidia.part" \
      -r "$here/requirements-cuda.txt" ||
    die "cannot install requirements-cuda.txt (a machine without PyPI: pip's --find-links)"
  mkdir -p "$nvidia.part/links"
  local lib file
  for lib in cublas cublasLt curand; do  # the name the linker wants, and the soname
    file=$(compgen -G "$nvidia.part/nvidia/cu13/lib/lib$lib.so.*" | sort | head -n1)
    file=${file##*/}
    ln -s "$nvidia/nvidia/cu13/lib/$file" "$nvidia.part/links/lib$lib.so"
    ln -s "$nvidia/nvidia/cu13/lib/$file" "$nvidia.part/links/$file"
  done
  mv "$nvidia.part" "$nvidia"
}

start=$(date +%s)
if [ ! -f "$dest/build-info.json" ]; then
  [ -n "${nvidia:-}" ] && install_nvidia_wheels
  # build-info.json is written last: a folder without it is an interrupted build, redone whole.
  mkdir -p "$cache"
  src_tmp=$(mktemp -d "$cache/.source-XXXXXX")
  trap 'rm -rf "$src_tmp"' EXIT
  unpack_source "$src_tmp/tree"  # verified before anything of the build is touched
  rm -rf "$dest"; mkdir -p "$dest"
  mv "$src_tmp/tree" "$dest/src"
  say "source verified ($source_origin)"
  for p in "${patches[@]}"; do
    say "patch $(basename "$p")"
    patch -d "$dest/src" -p1 --quiet --forward <"$p"
  done
  say "configuring and building with $jobs jobs (log: $dest/build.log)"
  { cmake -S "$dest/src" -B "$dest/build" -DCMAKE_INSTALL_PREFIX="$dest/install" \
          -DCMAKE_INSTALL_RPATH="$rpath" "$python_flag" "${cmake_flags[@]}" &&
    cmake --build "$dest/build" -j "$jobs" --target install; } >"$dest/build.log" 2>&1 ||
    { tail -n 30 "$dest/build.log" >&2; die "build failed (log: $dest/build.log)"; }
  seconds=$(( $(date +%s) - start ))
  "$PYTHON" - "$dest/build-info.json" <<EOF
import json, sys
info = {
    "source_sha256": "$TARBALL_SHA256",
    "source_tarball": "$TARBALL_NAME",
    "source_origin": "$source_origin",
    "bvlc_commit": "$BVLC_COMMIT",
    "debian_version": "$DEBIAN_VERSION",
    "patches": """$(for p in "${patches[@]}"; do echo "$(basename "$p") $(sha256sum "$p" | cut -c1-64)"; done)""".split("\n"),
    "cmake_flags": """$(printf '%s\n' "$recorded_python_flag" "${cmake_flags[@]}")""".split("\n"),
    "variant": "$variant",
    "blas": "OpenBLAS ($(dpkg-query -W -f '${Version}' libopenblas-openmp-dev 2>/dev/null || echo unknown), OpenMP build${blas_dir:+: $blas_dir})",
    "caffe_patches": "$caffe_patches",
    "compiler": "$(c++ --version | head -n1)",
    "python": "$py_version",
    "numpy_at_build": "$numpy_version",
    "build_seconds": $seconds,
    "jobs": $jobs,
    "cache_key": "$key",
    "prefix": "$dest/install",
}
info["patches"] = [p for p in info["patches"] if p]
json.dump(info, open(sys.argv[1], "w"), indent=2)
EOF
  say "built in ${seconds}s: $dest"
fi

if [ "$test_binary" = 1 ] && [ ! -x "$dest/build/test/test.testbin" ]; then
  t0=$(date +%s)
  say "building Caffe's gtest binary"
  cmake --build "$dest/build" -j "$jobs" --target test.testbin >"$dest/test-build.log" 2>&1 ||
    { tail -n 30 "$dest/test-build.log" >&2; die "test binary build failed (log: $dest/test-build.log)"; }
  say "test binary built in $(( $(date +%s) - t0 ))s"
fi
echo "$dest"
