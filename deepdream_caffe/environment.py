"""The machine a run happens on: versions, the Caffe build, BLAS (Caffe's OpenBLAS and numpy's:
kernel and threads), CPU, glibc and GPU.

Recorded in every sidecar (:mod:`deepdream_caffe.sidecar`), shown by ``deepdream-caffe info``,
and compared by ``reproduce`` with the machine it runs on (docs/determinism.md says which of
these factors change bits).
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import os
import platform
import sys
from pathlib import Path

from .errors import DreamError

# the packages whose versions are recorded, and the module that says each (its __version__:
# asking importlib.metadata for five versions took 6 ms of every command's start)
PACKAGES = {
    "numpy": "numpy",
    "scipy": "scipy",
    "pillow": "PIL",
    "protobuf": "google.protobuf",
    "deepdream_caffe": "deepdream_caffe",
}
CORETYPE = "OPENBLAS_CORETYPE"
WAIT_POLICY, SPIN_COUNT = "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"
DYNAMIC = "OMP_DYNAMIC"
SHRINKING = ("OMP_THREAD_LIMIT", "OMP_MAX_ACTIVE_LEVELS")  # can shrink a team: removed
SPINS = "10000"  # about as long as a short layer: a wait longer than that sleeps
AVX512 = {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"}  # what SkylakeX's kernels use


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


def loaded_libraries() -> list[str]:
    """The files mapped into this process (/proc/self/maps), in address order; [] elsewhere."""
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    return list(dict.fromkeys(f[-1] for f in map(str.split, maps) if f[-1].startswith("/")))


def import_caffe(verbose: bool = False):
    """Import pycaffe, quiet unless ``verbose``, with a clear error when it is missing.

    The one place Caffe is imported: the variables its libraries read once, at load, are set
    here first (glog's log level; OpenBLAS's kernel, from the CPU's flags; how OpenMP's
    threads wait).
    """
    # glog reads this once, when libcaffe loads: 2 keeps only errors.
    os.environ.setdefault("GLOG_minloglevel", "0" if verbose else "2")
    choose_blas_kernel()
    choose_wait_policy()
    keep_thread_teams_whole()
    try:
        import caffe
    except ImportError as e:
        from .build import SETUP_HINT

        raise DreamError(f"pycaffe cannot be imported ({e})", SETUP_HINT) from e
    return caffe


class _DlInfo(ctypes.Structure):  # glibc's Dl_info, filled by dladdr
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


@functools.cache  # a process keeps the libraries it loaded: looked up once (2 ms)
def caffe_blas_path() -> str | None:
    """The BLAS libcaffe calls: the file defining the ``cblas_sgemm`` that the dynamic linker
    resolves for libcaffe (pycaffe is imported first). Never looked up by name: the name
    libopenblas.so.0 may mean another build (Debian's alternatives), and loading that one
    first would make libcaffe use it too."""
    try:
        import_caffe()
    except DreamError:
        return None
    libcaffe = next((p for p in loaded_libraries() if Path(p).name.startswith("libcaffe.so")), None)
    if libcaffe is None:
        return None
    # dlsym on libcaffe's handle searches libcaffe, then the libraries it needs, in load order
    sgemm = ctypes.cast(ctypes.CDLL(libcaffe).cblas_sgemm, ctypes.c_void_p)
    info = _DlInfo()
    if not ctypes.CDLL(None).dladdr(sgemm, ctypes.byref(info)):
        return None
    return os.path.realpath(info.dli_fname.decode())


def _caffe_blas():
    path = caffe_blas_path()
    return path and _openblas(ctypes.CDLL(path))


def _numpy_blas():
    import numpy  # noqa: F401  (loads its BLAS)

    for path in loaded_libraries():
        if "numpy" in path and "openblas" in Path(path).name:
            return _openblas(ctypes.CDLL(path))
    return None


def blas_info() -> dict:
    """Caffe's OpenBLAS as loaded by libcaffe: its configuration, kernel and thread count."""
    info = _caffe_blas()
    if info is None:
        return {"blas": f"unknown ({caffe_blas_path() or 'no BLAS found for libcaffe'})"}
    info.pop("set_threads")
    info["blas_kernel_chosen_by"] = kernel_chosen_by()
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


def blas_threads() -> int | None:
    """The thread count Caffe's OpenBLAS runs with now (None: no OpenBLAS)."""
    info = _caffe_blas()
    return info and info["blas_threads"]


def set_blas_threads(n: int, numpy: bool = True) -> None:
    """Run Caffe's and numpy's OpenBLAS (only Caffe's without ``numpy``) with ``n`` threads
    from now on; with Debian's OpenMP OpenBLAS, Caffe's OpenMP layers too (it sets OpenMP's
    count for the calling thread).

    Set at run time (``openblas_set_num_threads``), not through OPENBLAS_NUM_THREADS: that
    variable is read once, when the library loads (numpy's is loaded before any flag is
    parsed), and it is capped at the number of cores, which would keep ``reproduce`` from
    repeating a run made on a larger machine. Measured: the two ways give the same bits
    (docs/determinism.md).
    """
    for info in (_caffe_blas(), _numpy_blas() if numpy else None):
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


def coretype_for(flags: set) -> str | None:
    """The OpenBLAS kernel set for a CPU with these flags, by instruction set alone.

    OpenBLAS picks its kernels from the CPU's model number and falls back to generic ones
    (Prescott, about 1.7x slower) on a CPU it does not know; its choice among the ones it knows
    also varies (Cooperlake on an AMD EPYC with avx512_bf16, whose sgemm gives other bits than
    SkylakeX's). Named by instruction set, every CPU with AVX-512 runs SkylakeX and every other
    one with AVX2 and FMA runs Haswell, so the same bits. None: OpenBLAS's own choice.
    """
    if AVX512 <= flags:
        return "SkylakeX"
    if {"avx2", "fma"} <= flags:
        return "Haswell"
    return None


def choose_blas_kernel(environ=os.environ, flags: set | None = None) -> None:
    """Set OPENBLAS_CORETYPE by :func:`coretype_for`, unless it is set already (by the user).

    Call before Caffe's OpenBLAS is loaded: the library reads the variable once, at load.
    Child processes inherit it. numpy's own OpenBLAS is loaded before this runs, so it keeps
    its own choice.
    """
    if environ.get(CORETYPE):
        return
    kernel = coretype_for(cpu_flags() if flags is None else flags)
    if kernel:
        environ[CORETYPE] = kernel


def choose_wait_policy(environ=os.environ) -> None:
    """Let idle OpenMP threads spin only briefly (GOMP_SPINCOUNT=10000) before they sleep,
    unless the user chose how they wait (OMP_WAIT_POLICY or GOMP_SPINCOUNT).

    GNU OpenMP's default spins 300000 times first. On a machine where another process holds a
    core, the spinning thread takes the time its partner needs, and each barrier waits for the
    partner's next turn: our dream net's forward and backward pass took 1545 ms at 2 threads
    with the default, 1184 ms with 10000 spins, 1130 ms never spinning (passive). On a quiet
    machine passive was the slowest for a 512x288 dream (sleeping between short layers) and
    10000 spins the fastest (docs/performance.md). It changes no bit. libgomp reads it once,
    when libcaffe loads it.
    """
    if WAIT_POLICY not in environ and SPIN_COUNT not in environ:
        environ[SPIN_COUNT] = SPINS


def keep_thread_teams_whole(environ=os.environ) -> None:
    """OMP_DYNAMIC=false, and no OMP_THREAD_LIMIT or OMP_MAX_ACTIVE_LEVELS, whatever the user
    set. Each can give a parallel region fewer threads than it asks for (dynamic teams, fewer
    the higher the load average; a limit below ``--threads``; no active level at all), and
    OpenBLAS's threaded GEMM then waits forever for partners that never run: with any of them
    the default dream hung at 2 or 3 threads on a 2-core machine, in the pristine build too.
    ``--threads`` sets the thread count; this changes no bit. libgomp reads them once, when
    libcaffe loads it."""
    environ[DYNAMIC] = "false"
    for name in SHRINKING:
        environ.pop(name, None)


def kernel_chosen_by(environ=os.environ, flags: set | None = None) -> str:
    """Who chose Caffe's OpenBLAS kernel: "cpu flags" (deepdream-caffe's rule, whoever set the
    variable to its value), "OPENBLAS_CORETYPE" (the user, to another value) or "OpenBLAS"."""
    asked = environ.get(CORETYPE)
    if not asked:
        return "OpenBLAS"
    if asked == coretype_for(cpu_flags() if flags is None else flags):
        return "cpu flags"
    return CORETYPE


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
    return "CUDA build" if variant.startswith("cuda") else "CPU-only build"


def environment(with_caffe: bool = True) -> dict:
    """Every factor that can change a dream's bits, and the versions around them."""
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "glibc": glibc_version(),
        "cpu": cpu_model(),
    }
    for name, module in PACKAGES.items():
        try:
            info[name] = importlib.import_module(module).__version__
        except (ImportError, AttributeError):
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
