#!/usr/bin/env bash
# One recipe for every place the project is set up: `make setup`, CI and both Dockerfiles.
#   1. Debian build dependencies (apt-get; skipped when all are installed)
#   2. .venv/ at the repo root, from Debian's python3, with the pinned requirements
#   (In an activated conda environment, $CONDA_PREFIX replaces both: the C++ dependencies come
#    from environment.yml and everything is installed into the environment; not yet verified.)
#   3. BVLC Caffe + pycaffe (scripts/build-caffe.sh; cached outside the clone)
#   4. pycaffe and this project (editable) installed into .venv
# Usage: scripts/setup.sh [--caffe-only] [build-caffe.sh options]
#   --caffe-only   steps 1-3: build Caffe and pycaffe (cached), install nothing into .venv
# Environment: CUDA=1 for the CUDA variant; VENV (default .venv); SETUP_PYTHON (default
# /usr/bin/python3) makes the venv; the rest see build-caffe.sh.
#   SETUP_TEST_TOOLS=0  only requirements.txt (no test and lint tools: the Docker images)
#   SETUP_PROJECT=0     stop after Caffe: no pycaffe link, no project (the images' builder
#                       stage, which must not depend on the Python code)
#   SETUP_NO_CONDA=1    the Debian route even inside an activated conda environment
set -euo pipefail
caffe_only=0
if [ "${1:-}" = --caffe-only ]; then caffe_only=1; shift; fi
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$here/.venv}
say() { printf '[setup] %s\n' "$*" >&2; }

conda=${CONDA_PREFIX:-}
[ "${SETUP_NO_CONDA:-0}" = 1 ] && conda=

# Files environment.yml's conda-forge packages provide, which Caffe's build needs.
conda_needs=(bin/cmake bin/protoc bin/h5cc include/boost/version.hpp include/boost/python.hpp
             include/glog/logging.h include/gflags/gflags.h include/google/protobuf/message.h
             include/hdf5.h include/cblas.h lib/libopenblas.so)

setup_conda() {  # 1 (conda). The environment's libraries, compilers and Python instead of apt
  local missing=() f
  for f in "${conda_needs[@]}"; do [ -e "$conda/$f" ] || missing+=("$f"); done
  if [ ${#missing[@]} -gt 0 ]; then
    say "error: the conda environment $conda lacks ${missing[*]}: run \`conda env update -f environment.yml\` (or SETUP_NO_CONDA=1 for the Debian route)"
    exit 1
  fi
  venv=$conda
  export SETUP_PYTHON=$conda/bin/python
  export DEEPDREAM_CAFFE_CACHE=${DEEPDREAM_CAFFE_CACHE:-$conda/var/cache/deepdream-caffe}
  # CMake searches the prefix first (FindOpenBLAS reads OpenBLAS_HOME), and the libraries
  # Caffe links are found at run time through an rpath to the environment.
  export CMAKE_PREFIX_PATH=$conda${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH} OpenBLAS_HOME=$conda
  export LDFLAGS="${LDFLAGS:-} -L$conda/lib -Wl,-rpath,$conda/lib"
  if [ -n "${CXX:-}" ] && command -v "$CXX" >/dev/null; then
    # build-caffe.sh asks `c++` for the compiler that goes into its key: make that conda's.
    mkdir -p "$DEEPDREAM_CAFFE_CACHE/bin"
    ln -sf "$(command -v "$CXX")" "$DEEPDREAM_CAFFE_CACHE/bin/c++"
    export PATH=$DEEPDREAM_CAFFE_CACHE/bin:$PATH
  fi
  say "conda environment $conda: C++ dependencies and Python from it (apt is not used)"
}

setup_debian() {  # 1. Debian packages.
  local pkgs
  mapfile -t pkgs <"$here/caffe/apt-packages.txt"
  "$here/scripts/apt-install.sh" "${pkgs[@]}"
}

if [ -n "$conda" ]; then setup_conda; else setup_debian; fi

# 2. The virtual environment. Debian's python3: Boost.Python 1.74 is built for it.
python=${SETUP_PYTHON:-/usr/bin/python3}
[ -x "$venv/bin/python" ] || { say "creating $venv"; "$python" -m venv "$venv"; }  # not in conda
stamp=$venv/.requirements.sha256
reqs=("$here/requirements.txt")
[ "${SETUP_TEST_TOOLS:-1}" = 0 ] || reqs+=("$here/requirements-test.txt")
want=$(cat "${reqs[@]}" | sha256sum | cut -c1-64)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing Python requirements"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "${reqs[@]/#/-r}"
  echo "$want" >"$stamp"
fi

# 3. Caffe.
prefix=$(PYTHON="$venv/bin/python" "$here/scripts/build-caffe.sh" "$@")
if [ "$caffe_only" = 1 ] || [ "${SETUP_PROJECT:-1}" = 0 ]; then say "Caffe ready at $prefix"; exit 0; fi

# 4. pycaffe (a .pth file pointing at the cached build) and the project itself.
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$prefix/install/python" >"$site/pycaffe.pth"
if ! "$venv/bin/python" -c 'import deepdream_caffe' 2>/dev/null || [ ! -x "$venv/bin/deepdream-caffe" ]; then
  say "installing deepdream_caffe (editable)"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e "$here"
fi
GLOG_minloglevel=2 "$venv/bin/python" -c 'import caffe' || { say "error: pycaffe does not import"; exit 1; }
# Their bytecode, written now: where PYTHONDONTWRITEBYTECODE is set or the folder is not the
# user's, Python would compile every module again at each start (docs/performance.md).
"$venv/bin/python" -m compileall -q "$here/deepdream_caffe" "$prefix/install/python" >/dev/null \
  || say "note: Python bytecode not written for every module; each run compiles the rest"
say "ready: $venv (Caffe at $prefix)"
