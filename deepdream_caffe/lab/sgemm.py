"""The machine's sgemm peak: numpy's BLAS and the BLAS that libcaffe calls.

``python -m deepdream_caffe.lab.sgemm N`` (``bench`` runs it once per thread count, each in a
fresh process with OPENBLAS_NUM_THREADS and OMP_NUM_THREADS set) times the product of two N x N
float32 matrices, best of :data:`REPEATS`: through ``np.dot`` (numpy's bundled OpenBLAS) and
through ``cblas_sgemm`` of the library libcaffe is linked to, called with ctypes after
``import caffe``. GFLOP/s counts 2 N^3 flops per product. Numbers only: no test asserts one.
"""

from __future__ import annotations

import ctypes
import json
import sys
import time

import numpy as np

from .. import environment
from ..errors import DreamError

N = 4096
REPEATS = 3
ROW_MAJOR, NO_TRANS = 101, 111  # CBLAS's CblasRowMajor and CblasNoTrans


def caffe_sgemm():
    """libcaffe's ``cblas_sgemm`` and the path of the library that defines it."""
    path = environment.caffe_blas_path()
    if path is None:
        raise DreamError("no BLAS found for libcaffe (is pycaffe installed?)")
    sgemm = ctypes.CDLL(path).cblas_sgemm
    sgemm.restype = None
    i, f, p = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
    # order, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc
    sgemm.argtypes = [i, i, i, i, i, i, f, p, i, p, i, f, p, i]
    return sgemm, path


def caffe_product(sgemm, a, b, c) -> None:
    """c = a @ b through ``sgemm``, for square, C-contiguous float32 a, b and c."""
    n = a.shape[0]
    sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, n, n, n, 1.0, a.ctypes.data, n, b.ctypes.data, n, 0.0,
          c.ctypes.data, n)  # fmt: skip


def best_gflop_per_s(product, n: int, repeats: int = REPEATS) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        product()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def measure(n: int = N, repeats: int = REPEATS) -> dict:
    """Both peaks in this process, at the thread count it was started with."""
    sgemm, path = caffe_sgemm()
    rng = np.random.RandomState(0)
    a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    c = np.empty_like(a)
    return {
        "n": n,
        "repeats": repeats,
        "caffe_blas_path": path,
        "caffe_blas_threads": environment.blas_info().get("blas_threads"),
        "caffe_blas_gflop_per_s": best_gflop_per_s(
            lambda: caffe_product(sgemm, a, b, c), n, repeats
        ),
        "numpy_blas_threads": environment.numpy_blas_info().get("numpy_blas_threads"),
        "numpy_gflop_per_s": best_gflop_per_s(lambda: np.dot(a, b, out=c), n, repeats),
    }


if __name__ == "__main__":  # one thread count, in a process of its own (see bench.bench())
    print(json.dumps(measure(int(sys.argv[1]))))
