"""The default Caffe build (OpenMP layers) against the pristine one: the same bits?

``python -m deepdream_caffe.lab.variants [--size 1024x575] [--threads 1 2]`` runs, in each
build's pycaffe and in a fresh process per build and thread count:

- every layer of bvlc_googlenet's deploy net (force_backward, as the notebook loads it: the
  convolutions, max and average pooling, LRN, ReLU, Split, Concat, the classifier), one
  forward and one backward pass on a seeded random image at ``--pass-size``; every blob's
  data and diff is hashed;
- the notebook's default dream (our default net, 4 octaves) on the notebook's sky at
  ``--size`` with ``--iter-n`` steps per octave; its float32 result is hashed.

Both on bvlc_googlenet's architecture with seeded synthetic weights. The two builds link the
same BLAS (scripts/build-caffe.sh), so any difference comes from the patches. Prints one line
per thread count and writes ``OUT/variants.json``; exit status 1 when any bit differs.
The builds are made by ``make setup`` (openmp) and ``make caffe-pristine``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

VARIANTS = ("openmp", "pristine")
HERE = Path(__file__).resolve().parents[2]


def build_dir(variant: str) -> Path:
    """The cache folder of one variant, as scripts/build-caffe.sh names it."""
    env = dict(os.environ, CAFFE_PATCHES=variant, PYTHON=sys.executable)
    out = subprocess.run(
        [HERE / "scripts" / "build-caffe.sh", "--print-dir"],
        env=env, capture_output=True, text=True, check=True,
    )
    return Path(out.stdout.strip())


def digest(array) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def measure(pass_size, size, iter_n: int, threads: int) -> dict:
    """In this process: the hashes of the whole-net pass and of the dream (module docstring)."""
    from .. import dream, environment
    from ..models import IMAGENET_MEAN_BGR
    from ..net import load_net
    from .bench import bench_cache, bench_image, synthetic_net_files

    environment.set_blas_threads(threads)
    definition, weights = synthetic_net_files(bench_cache())
    net = load_net(definition, weights, None, IMAGENET_MEAN_BGR, prune_net=False,
                   notebook_net=True)
    w, h = pass_size
    net.blobs["data"].reshape(1, 3, h, w)
    net.blobs["data"].data[...] = np.random.RandomState(0).uniform(-100, 100, (1, 3, h, w))
    net.forward()
    top = net.blobs[net.outputs[0]]
    top.diff[...] = top.data
    net.backward()
    hashes = {f"{name} {part}": digest(getattr(blob, part))
              for name, blob in net.blobs.items() for part in ("data", "diff")}
    del net
    ours = load_net(definition, weights, "inception_4c/output", IMAGENET_MEAN_BGR)
    result = dream.deepdream(ours, bench_image(size), iter_n=iter_n,
                             rng=np.random.RandomState(0))
    hashes["dream"] = digest(result)
    return {"threads": threads, "blas": environment.blas_info(), "hashes": hashes}


def run_in(variant: str, pass_size, size, iter_n: int, threads: int) -> dict:
    """:func:`measure` in a fresh process on ``variant``'s pycaffe."""
    python = build_dir(variant) / "install" / "python"
    if not (python / "caffe" / "__init__.py").is_file():
        raise SystemExit(f"variants: the {variant} build is missing ({python}): "
                         f"run `make caffe-pristine` and `make setup`")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(python), str(HERE)]),
               OMP_NUM_THREADS=str(threads), GLOG_minloglevel="2")
    code = (f"import json; from deepdream_caffe.lab.variants import measure; "
            f"print(json.dumps(measure({list(pass_size)}, {list(size)}, {iter_n}, {threads})))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise SystemExit(f"variants: the {variant} run failed: "
                         f"{(out.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(pass_size, size, iter_n: int, threads_list) -> list[dict]:
    rows = []
    for threads in threads_list:
        runs = {v: run_in(v, pass_size, size, iter_n, threads) for v in VARIANTS}
        a, b = (runs[v]["hashes"] for v in VARIANTS)
        rows.append({
            "threads": threads,
            "kernel": runs["openmp"]["blas"].get("blas_kernel"),
            "compared": len(a),
            "differ": sorted(k for k in a if a[k] != b.get(k)),
            "dream": a["dream"],
            "runs": runs,
        })
    return rows


def size_arg(text: str) -> tuple[int, int]:
    w, _, h = text.partition("x")
    return int(w), int(h)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m deepdream_caffe.lab.variants",
                                description=__doc__.splitlines()[0])
    p.add_argument("--pass-size", type=size_arg, default=(224, 224))
    p.add_argument("--size", type=size_arg, default=(256, 144))
    p.add_argument("--iter-n", type=int, default=2)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("-o", "--output", type=Path, default=Path("out/bench-variants"))
    args = p.parse_args(argv)
    rows = compare(args.pass_size, args.size, args.iter_n, args.threads)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "variants.json").write_text(json.dumps(rows, indent=2) + "\n")
    for r in rows:
        verdict = "same bits" if not r["differ"] else f"{len(r['differ'])} differ: {r['differ'][:5]}"
        print(f"threads {r['threads']} ({r['kernel']} kernels): {r['compared']} arrays, "
              f"{verdict}; dream {r['dream']}")
    return 1 if any(r["differ"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
