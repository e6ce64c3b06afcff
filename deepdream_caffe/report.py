"""What a run was made of: versions, the Caffe build, BLAS, files and parameters.

Used for the JSON sidecar of every output and for ``deepdream-caffe info``.
"""

from __future__ import annotations

import ctypes
import platform
import sys
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

from .assets import file_hash
from .errors import DreamError

PACKAGES = ("numpy", "scipy", "pillow", "protobuf", "deepdream_caffe")


def file_record(path) -> dict:
    path = Path(path)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": file_hash(path, "sha256")}


def blas_info() -> dict:
    """OpenBLAS as loaded by libcaffe: its configuration, kernel and thread count."""
    try:
        lib = ctypes.CDLL("libopenblas.so.0")
    except OSError:
        return {"blas": "unknown (libopenblas.so.0 not loadable)"}
    lib.openblas_get_config.restype = ctypes.c_char_p
    lib.openblas_get_corename.restype = ctypes.c_char_p
    return {"blas": lib.openblas_get_config().decode(),
            "blas_kernel": lib.openblas_get_corename().decode(),
            "blas_threads": lib.openblas_get_num_threads()}


def gpu_info() -> str:
    from .build import build_record
    try:
        variant = build_record().get("variant", "cpu")
    except DreamError:
        return "unknown"
    return "CPU-only build" if variant == "cpu" else "CUDA build"


def environment(with_caffe: bool = True) -> dict:
    info = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = "not installed"
    if with_caffe:
        from .build import build_record
        record = build_record()
        info.update({f"caffe_{k}": v for k, v in record.items()})
        info.update(blas_info())
        info["gpu"] = gpu_info()
    return info


def run_record(args, params, seed, model_name, definition, weights, mean, swap, timings,
               **extra) -> dict:
    """The JSON sidecar: everything needed to repeat the run and check its inputs."""
    record = {
        "command": args.command,
        "input": file_record(args.input),
        "params": asdict(params),
        "seed": seed,
        "rng": "numpy.random.RandomState(seed).randint(-jitter, jitter+1, 2) per step",
        "model": model_name,
        "definition": file_record(definition),
        "weights": file_record(weights),
        "mean_bgr": list(mean),
        "channel_swap": list(swap),
        "device": "cpu" if args.gpu is None else f"gpu:{args.gpu}",
        "timings_s": timings,
        "environment": environment(with_caffe=True),
    }
    record.update(extra)
    return record


def layer_table(model, size) -> list[str]:
    """``deepdream-caffe layers``: the dreamable layers with their blob shapes at ``size``."""
    from .net import dream_layers

    shapes = blob_shapes(model, size)
    lines = [f"# layers usable as --end, blob shape at {size[0]}x{size[1]} input;"
             " * = pre-ReLU (the notebook optimised the value before its ReLU);"
             " too small = empty at this size"]
    for info in dream_layers(model):
        shape = shapes.get(info.name, ())
        shape = "too small" if shape is None else "x".join(map(str, shape)) or "?"
        lines.append(f"{info.name:32s} {info.type:12s} {shape:>16s} "
                     f"{'*' if info.pre_relu else ''}")
    return lines


def blob_shapes(model, size) -> dict:
    """Blob shapes (batch axis left out) of ``model`` for one image of ``size`` (W, H), up to
    its deepest layer that is not fully connected, from shapes.py: no Caffe net is built.
    A layer whose output would be empty at this size maps to None."""
    from .checks import smallest_side
    from .net import prune
    from .shapes import ShapeError, infer_shapes

    last = _ends(model)
    if not last:
        return {}
    # Only the layers the deepest convolutional blob needs: classifier heads need 224x224.
    pruned = prune(model, last[-1])
    w, h = size
    try:
        shapes = infer_shapes(pruned, h, w, partial=True, skip_empty=True)
    except ShapeError as e:
        raise DreamError(f"--size {w}x{h}: {e}", "choose another --size") from None
    out = {top: None for layer in pruned.layer for top in layer.top}  # None: empty here
    out.update({name: shape[1:] for name, shape in shapes.items()})
    if all(out.get(name) is None for name in last):
        side = smallest_side(prune(pruned, last[0]))
        raise DreamError(f"--size {w}x{h} is too small for this net: even layer {last[0]}'s "
                         f"output would be empty", f"give a --size of at least {side}x{side}")
    return out


def _ends(model):
    """Dreamable layers up to the last one that is not fully connected."""
    from .net import dream_layers

    return [info.name for info in dream_layers(model)
            if info.type not in ("InnerProduct", "Softmax")]
