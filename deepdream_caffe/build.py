"""Where the Caffe build lives and what it was built from, without importing Caffe."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from .errors import DreamError

SETUP_HINT = "run `make setup` in the deepdream-caffe checkout (it builds Caffe and pycaffe)"
# The build is shared by every clone, so its record names the Python it was built for by role
# (scripts/build-caffe.sh writes this; older records named the first clone's venv).
PYTHON_FLAG = "-DPYTHON_EXECUTABLE=<venv python>"


def caffe_build_dir() -> Path:
    """The cache folder scripts/build-caffe.sh built pycaffe in (it holds build-info.json)."""
    spec = importlib.util.find_spec("caffe")
    if spec is None or spec.origin is None:
        raise DreamError("pycaffe is not installed", SETUP_HINT)
    # <build>/install/python/caffe/__init__.py
    return Path(spec.origin).resolve().parents[3]


def caffe_source_dir() -> Path:
    """The verified, patched BVLC Caffe source tree the build used."""
    return caffe_build_dir() / "src"


def build_record() -> dict:
    """The build record written by scripts/build-caffe.sh (source sha256, flags, ...)."""
    path = caffe_build_dir() / "build-info.json"
    if not path.is_file():
        raise DreamError(f"no Caffe build record at {path}", SETUP_HINT)
    record = json.loads(path.read_text())
    flags = record.get("cmake_flags", [])
    record["cmake_flags"] = [
        PYTHON_FLAG if f.startswith("-DPYTHON_EXECUTABLE=") else f for f in flags
    ]
    return record
