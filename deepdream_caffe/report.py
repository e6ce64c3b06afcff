"""What a run was made of: versions, the Caffe build, BLAS, files and parameters.

Used for the JSON sidecar of every output (and zoom.json, and export-golden's bundle.json),
for ``deepdream-caffe info`` and for ``reproduce``, which compares the factors recorded here
with the machine it runs on (docs/determinism.md says which of them change bits).
"""

from __future__ import annotations

import ctypes
import os
import platform
import shlex
import sys
from dataclasses import asdict, fields
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from .assets import file_hash
from .errors import DreamError

PACKAGES = ("numpy", "scipy", "pillow", "protobuf", "deepdream_caffe")
RECORD_FORMAT = 2  # 2: the job's every field, command line, times, output hashes, provenance
# OpenBLAS kernels that use AVX or better; any other on an AVX2 CPU is a slow fallback.
AVX_KERNELS = {
    "Sandybridge",
    "Haswell",
    "Zen",
    "SkylakeX",
    "Cooperlake",
    "SapphireRapids",
    "Bulldozer",
    "Piledriver",
    "Steamroller",
    "Excavator",
}


def file_record(path, name=None) -> dict:
    """Absolute path, size and sha256 of a file (``name``: the path to record instead)."""
    path = Path(path)
    return {
        "path": str(Path(name or path).absolute()),
        "bytes": path.stat().st_size,
        "sha256": file_hash(path, "sha256"),
    }


# --- BLAS: Caffe's OpenBLAS and numpy's own ---------------------------------------------
def _openblas(lib: ctypes.CDLL) -> dict | None:
    """Configuration, kernel and thread count of one loaded OpenBLAS (any symbol prefix)."""
    for prefix, suffix in (("openblas_", ""), ("scipy_openblas_", "64_"), ("openblas_", "64_")):
        try:
            config, core, threads = (
                getattr(lib, f"{prefix}{f}{suffix}")
                for f in ("get_config", "get_corename", "get_num_threads")
            )
        except AttributeError:
            continue
        config.restype = core.restype = ctypes.c_char_p
        kernel = core().decode()
        # a DYNAMIC_ARCH build names its kernel in the configuration too: keep them apart
        return {
            "blas": config().decode().replace(f" {kernel} ", " "),
            "blas_kernel": kernel,
            "blas_threads": threads(),
            "set_threads": getattr(lib, f"{prefix}set_num_threads{suffix}"),
        }
    return None


def _caffe_blas():
    try:
        return _openblas(ctypes.CDLL("libopenblas.so.0"))  # what libcaffe links
    except OSError:
        return None


def _numpy_blas():
    import numpy  # noqa: F401  (loads its BLAS)

    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return None
    for line in maps:
        path = line.split()[-1]
        if "numpy" in path and "openblas" in Path(path).name:
            return _openblas(ctypes.CDLL(path))
    return None


def blas_info() -> dict:
    """Caffe's OpenBLAS as loaded by libcaffe: its configuration, kernel and thread count."""
    info = _caffe_blas()
    if info is None:
        return {"blas": "unknown (libopenblas.so.0 not loadable)"}
    info.pop("set_threads")
    return info


def numpy_blas_info() -> dict:
    """numpy's own BLAS (used by the guided objective's dot product)."""
    import numpy as np

    build = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    info = {"numpy_blas": f"{build.get('name', '?')} {build.get('version', '?')}"}
    loaded = _numpy_blas()
    if loaded:
        info.update(
            {
                "numpy_blas_kernel": loaded["blas_kernel"],
                "numpy_blas_threads": loaded["blas_threads"],
            }
        )
    return info


def set_blas_threads(n: int) -> None:
    """Run Caffe's and numpy's OpenBLAS with ``n`` threads from now on.

    Set at run time (``openblas_set_num_threads``), not through OPENBLAS_NUM_THREADS: that
    variable is read once, when the library loads (numpy's is loaded before any flag is
    parsed), and it is capped at the number of cores, which would keep ``reproduce`` from
    repeating a run made on a larger machine. Measured: the two ways give the same bits
    (docs/determinism.md).
    """
    for info in (_caffe_blas(), _numpy_blas()):
        if info is not None:
            info["set_threads"](int(n))


def cpu_flags() -> set:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    line = next((ln for ln in text.splitlines() if ln.startswith("model name")), "")
    return line.partition(":")[2].strip() or platform.processor() or "unknown"


def kernel_warning(kernel: str, flags: set) -> str | None:
    """The line to print when OpenBLAS chose a generic kernel on a CPU with AVX2 or AVX-512."""
    if not kernel or kernel in AVX_KERNELS:
        return None
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        has, fix = "AVX-512", "SkylakeX"
    elif {"avx2", "fma"} <= flags:
        has, fix = "AVX2", "Haswell"
    else:
        return None
    return (
        f"warning: OpenBLAS runs its generic {kernel} kernels on this CPU, which has {has}; "
        f"set OPENBLAS_CORETYPE={fix} for its fast kernels (a kernel changes a dream's "
        "bits: docs/determinism.md)"
    )


_warned = []


def warn_slow_kernel_once(say) -> None:
    """Say :func:`kernel_warning` for Caffe's OpenBLAS, once per process."""
    if _warned:
        return
    _warned.append(True)
    line = kernel_warning(blas_info().get("blas_kernel", ""), cpu_flags())
    if line:
        say(f"deepdream-caffe: {line}")


def glibc_version() -> str:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") or "unknown"
    except (ValueError, OSError):
        return "unknown"


def gpu_info() -> str:
    from .build import build_record

    try:
        variant = build_record().get("variant", "cpu")
    except DreamError:
        return "unknown"
    return "CPU-only build" if variant == "cpu" else "CUDA build"


def environment(with_caffe: bool = True) -> dict:
    """Every factor that can change a dream's bits, and the versions around them."""
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "glibc": glibc_version(),
        "cpu": cpu_model(),
    }
    for name in PACKAGES:
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = "not installed"
    info.update(numpy_blas_info())
    if with_caffe:
        info.update(caffe_environment())
    return info


def caffe_environment() -> dict:
    """The Caffe build record, BLAS and GPU; DreamError when pycaffe is not installed."""
    from .build import build_record

    info = {f"caffe_{k}": v for k, v in build_record().items()}
    info.update(blas_info())
    info["gpu"] = gpu_info()
    return info


# --- the records of a run ---------------------------------------------------------------
def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def job_fields(job) -> dict:
    """Every field of the job, paths made absolute, so that the record can rebuild it."""
    out = {}
    for f in fields(job):
        value = getattr(job, f.name)
        out[f.name] = (
            str(value)
            if is_noise(value)
            else str(Path(value).absolute())
            if isinstance(value, Path)
            else list(value)
            if isinstance(value, tuple)
            else value
        )
    return out


def shared_fields(job, run, outputs: dict) -> dict:
    """What every record of a run carries: the sidecar, zoom.json and bundle.json alike.

    ``run``: the prepared run (its ``started``, ``clock``, ``weights``, ``definition``);
    ``outputs``: name -> file written (hashed here).
    """
    import time

    record = {
        "record_format": RECORD_FORMAT,
        "command_line": job.command_line,
        "cwd": os.getcwd(),
        "started_utc": run.started,
        "duration_s": round(time.perf_counter() - run.clock, 3),
        "job": job_fields(job),
        "outputs": {name: file_record(path) for name, path in outputs.items()},
        "weights": run.weights.record(),
        "definition": file_record(run.definition),
        "environment": environment(with_caffe=True),
    }
    if job.input is not None:
        record["input"] = input_record(job.input)
    return record


def input_record(path) -> dict:
    """An input image's file record, or what a ``noise:WxH`` input was."""
    from .noise import record

    return record(path) if is_noise(path) else file_record(path)


def is_noise(value) -> bool:
    from .noise import is_noise

    return isinstance(value, (str, Path)) and is_noise(value)


def run_record(job, run, timings, outputs: dict, **extra) -> dict:
    """The JSON sidecar: everything needed to repeat the run and check its inputs."""
    record = {
        "command": job.command,
        "params": asdict(run.params),
        "seed": run.seed,
        "rng": "numpy.random.RandomState(seed).randint(-jitter, jitter+1, 2) per step",
        "model": run.model_name,
        "mean_bgr": list(run.mean),
        "channel_swap": list(run.swap),
        "device": "cpu" if job.gpu is None else f"gpu:{job.gpu}",
        "timings_s": timings,
        **shared_fields(job, run, outputs),
    }
    record.update(extra)
    return record


def stamp(path, job, run, outputs: dict) -> None:
    """Add :func:`shared_fields` to the JSON record at ``path`` (export-golden's bundle.json),
    under the key ``run``: they name this machine's paths, which the record's own fields avoid."""
    import json

    from .imageio import save_json

    path = Path(path)
    save_json({**json.loads(path.read_text()), "run": shared_fields(job, run, outputs)}, path)


def command_line(argv) -> str:
    return shlex.join(["deepdream-caffe", *map(str, argv)])


def layer_table(model, size) -> list[str]:
    """``deepdream-caffe layers``: the dreamable layers with their blob shapes at ``size``."""
    from .definition import dream_layers

    shapes = blob_shapes(model, size)
    lines = [
        f"# layers usable as --end, blob shape at {size[0]}x{size[1]} input;"
        " * = pre-ReLU (the notebook optimised the value before its ReLU);"
        " too small = empty at this size"
    ]
    for info in dream_layers(model):
        shape = shapes.get(info.name, ())
        shape = "too small" if shape is None else "x".join(map(str, shape)) or "?"
        lines.append(f"{info.name:32s} {info.type:12s} {shape:>16s} {'*' if info.pre_relu else ''}")
    return lines


def blob_shapes(model, size) -> dict:
    """Blob shapes (batch axis left out) of ``model`` for one image of ``size`` (W, H), up to
    its deepest layer that is not fully connected, from shapes.py: no Caffe net is built.
    A layer whose output would be empty at this size maps to None."""
    from .checks import smallest_side
    from .definition import prune
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
        raise DreamError(
            f"--size {w}x{h} is too small for this net: even layer {last[0]}'s "
            f"output would be empty",
            f"give a --size of at least {side}x{side}",
        )
    return out


def _ends(model):
    """Dreamable layers up to the last one that is not fully connected."""
    from .definition import dream_layers

    return [
        info.name for info in dream_layers(model) if info.type not in ("InnerProduct", "Softmax")
    ]
