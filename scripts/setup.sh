#!/usr/bin/env bash
# One recipe for every place the project is set up: `make setup`, CI and both Dockerfiles.
#   1. Debian build dependencies (apt-get; skipped when all are installed)
#   2. .venv/ at the repo root, from Debian's python3, with the pinned requirements
#   3. BVLC Caffe + pycaffe (scripts/build-caffe.sh; cached outside the clone)
#   4. pycaffe and this project (editable) installed into .venv
# Usage: scripts/setup.sh [--caffe-only] [build-caffe.sh options]
#   --caffe-only   steps 1-3: build Caffe and pycaffe (cached), install nothing into .venv
# Environment: CUDA=1 for the CUDA variant; VENV (default .venv); SETUP_PYTHON (default
# /usr/bin/python3) makes the venv; the rest see build-caffe.sh.
set -euo pipefail
caffe_only=0
if [ "${1:-}" = --caffe-only ]; then caffe_only=1; shift; fi
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$here/.venv}
say() { printf '[setup] %s\n' "$*" >&2; }

# 1. Debian packages.
mapfile -t pkgs <"$here/caffe/apt-packages.txt"
"$here/scripts/apt-install.sh" "${pkgs[@]}"

# 2. The virtual environment. Debian's python3: Boost.Python 1.74 is built for it.
python=${SETUP_PYTHON:-/usr/bin/python3}
[ -x "$venv/bin/python" ] || { say "creating $venv"; "$python" -m venv "$venv"; }
stamp=$venv/.requirements.sha256
want=$(cat "$here/requirements.txt" "$here/requirements-test.txt" | sha256sum | cut -c1-64)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing Python requirements"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check \
      -r "$here/requirements.txt" -r "$here/requirements-test.txt"
  echo "$want" >"$stamp"
fi

# 3. Caffe.
prefix=$(PYTHON="$venv/bin/python" "$here/scripts/build-caffe.sh" "$@")
if [ "$caffe_only" = 1 ]; then say "Caffe built: $prefix"; exit 0; fi

# 4. pycaffe (a .pth file pointing at the cached build) and the project itself.
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$prefix/install/python" >"$site/pycaffe.pth"
if ! "$venv/bin/python" -c 'import deepdream_caffe' 2>/dev/null || [ ! -x "$venv/bin/deepdream-caffe" ]; then
  say "installing deepdream_caffe (editable)"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e "$here"
fi
GLOG_minloglevel=2 "$venv/bin/python" -c 'import caffe' || { say "error: pycaffe does not import"; exit 1; }
say "ready: $venv (Caffe at $prefix)"
