"""The default Caffe build (caffe/patches-openmp/) against the pristine one: the same bits?

``python -m deepdream_caffe.lab.variants [--size 1024x575] [--threads 1 2]`` runs, in each
build's pycaffe and in a fresh process per build and thread count:

- every layer of bvlc_googlenet's deploy net (force_backward, as the notebook loads it: the
  convolutions, max and average pooling, LRN, ReLU, Split, Concat, the classifier), one
  forward and one backward pass on a seeded random image at ``--pass-size``; every blob's
  data and diff is hashed;
- a net of the patched layers' edge cases (``EDGE_NET``: max pooling's ties, NaN,
  infinities, cut windows and the mask as a top blob; ReLU with and without a negative
  slope; LRN; each also in place), one forward and one backward pass, every blob hashed;
- the notebook's default dream (our default net, 4 octaves) on a seeded random image at
  ``--size`` with ``--iter-n`` steps per octave; its float32 result is hashed.

Both on bvlc_googlenet's architecture with seeded synthetic weights. The two builds link the
same BLAS (scripts/build-caffe.sh), so any difference comes from the patches. Prints one line
per thread count and writes ``OUT/variants.json``; exit status 1 when any bit differs.
The builds are made by ``make setup`` (openmp) and ``make caffe-pristine``.

``--layer-times N`` also runs Caffe's own ``caffe time`` (N iterations) on our dream net
(data gradient only, up to inception_4c/output) at ``--size`` in each build and thread
count, and sums its per-layer forward and backward times by layer type (``OUT/layers.md``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

VARIANTS = ("openmp", "pristine")
HERE = Path(__file__).resolve().parents[2]


def build_dir(variant: str) -> Path:
    """The cache folder of one variant, as scripts/build-caffe.sh names it, in the cache that
    holds the installed build."""
    from ..build import caffe_build_dir

    cache = caffe_build_dir().parent
    env = dict(
        os.environ, CAFFE_PATCHES=variant, PYTHON=sys.executable, DEEPDREAM_CAFFE_CACHE=str(cache)
    )
    out = subprocess.run(
        [HERE / "scripts" / "build-caffe.sh", "--print-dir"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip())


def digest(array) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def measure(pass_size, size, iter_n: int, threads: int) -> dict:
    """In this process: the hashes of the whole-net pass and of the dream (module docstring)."""
    from .. import dream, environment
    from ..models import IMAGENET_MEAN_BGR
    from ..net import load_net
    from .bench import bench_cache, synthetic_net_files

    environment.set_blas_threads(threads)
    definition, weights = synthetic_net_files(bench_cache())
    net = load_net(definition, weights, None, IMAGENET_MEAN_BGR, prune_net=False, notebook_net=True)
    w, h = pass_size
    net.blobs["data"].reshape(1, 3, h, w)
    net.blobs["data"].data[...] = np.random.RandomState(0).uniform(-100, 100, (1, 3, h, w))
    net.forward()
    top = net.blobs[net.outputs[0]]
    top.diff[...] = top.data
    net.backward()
    hashes = {
        f"{name} {part}": digest(getattr(blob, part))
        for name, blob in net.blobs.items()
        for part in ("data", "diff")
    }
    del net
    hashes.update(edge_cases())
    ours = load_net(definition, weights, "inception_4c/output", IMAGENET_MEAN_BGR)
    image = np.random.RandomState(1).uniform(0, 255, (size[1], size[0], 3)).astype(np.float32)
    result = dream.deepdream(ours, image, iter_n=iter_n, rng=np.random.RandomState(0))
    hashes["dream"] = digest(result)
    return {"threads": threads, "blas": environment.blas_info(), "hashes": hashes}


# Where the patched layers' rules decide. Max pooling: windows with equal maxima (the first
# wins), NaN among numbers (never wins), all NaN (no winner: -FLT_MAX and mask -1), -inf and
# -FLT_MAX, edge windows cut by padding and by the ceil rule, strides of 1, 2 (done eight at
# a time with AVX2) and 3 (not), the mask as a top blob, poolings in place (Caffe then pools
# its own fill and the other planes' outputs, not the input: the patches keep that, one plane
# after the other). ReLU's backward pass (eight at a time with AVX2, each thread's tail one by
# one) on NaN, infinities, -0 and subnormals, with a negative slope and in place. LRN, whose
# backward pass reuses the forward pass's powers, and in place, where it must not.
EDGE_NET = """
force_backward: true
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 9 dim: 61 dim: 67 } } }
layer { name: "s2" type: "Pooling" bottom: "data" top: "s2"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "s1" type: "Pooling" bottom: "data" top: "s1"
        pooling_param { pool: MAX kernel_size: 3 stride: 1 pad: 1 } }
layer { name: "s2pad" type: "Pooling" bottom: "data" top: "s2pad"
        pooling_param { pool: MAX kernel_h: 2 kernel_w: 5 stride: 2 pad: 1 } }
layer { name: "s3" type: "Pooling" bottom: "data" top: "s3"
        pooling_param { pool: MAX kernel_size: 3 stride: 3 pad: 1 } }
layer { name: "masked" type: "Pooling" bottom: "data" top: "masked" top: "mask"
        pooling_param { pool: MAX kernel_h: 2 kernel_w: 4 stride_h: 1 stride_w: 3
                        pad_h: 0 pad_w: 1 } }
layer { name: "copy" type: "Power" bottom: "data" top: "copy" }
layer { name: "inplace" type: "Pooling" bottom: "copy" top: "copy" top: "inplace_mask"
        pooling_param { pool: MAX kernel_size: 2 stride: 1 pad: 1 } }
layer { name: "wide" type: "Input" top: "wide"
        input_param { shape { dim: 2 dim: 2 dim: 200 dim: 400 } } }
layer { name: "inplace_s2" type: "Pooling" bottom: "wide" top: "wide"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "relu" type: "ReLU" bottom: "data" top: "relu" }
layer { name: "leaky" type: "ReLU" bottom: "data" top: "leaky"
        relu_param { negative_slope: 0.1 } }
layer { name: "relu_copy" type: "Power" bottom: "data" top: "relu_copy" }
layer { name: "relu_inplace" type: "ReLU" bottom: "relu_copy" top: "relu_copy"
        relu_param { negative_slope: -0.5 } }
layer { name: "lrn" type: "LRN" bottom: "data" top: "lrn"
        lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "lrn_copy" type: "Power" bottom: "data" top: "lrn_copy" }
layer { name: "lrn_inplace" type: "LRN" bottom: "lrn_copy" top: "lrn_copy"
        lrn_param { local_size: 3 alpha: 0.01 beta: 0.5 } }
"""
EDGE_TOPS = "s2 s1 s2pad s3 masked copy wide relu leaky relu_copy lrn lrn_copy".split()


def edge_cases() -> dict:
    """Hashes of every blob's data and diff of EDGE_NET, one forward and backward pass."""
    import tempfile

    import caffe

    rng = np.random.RandomState(2)
    data = rng.randint(-3, 4, (2, 9, 61, 67)).astype(np.float32)  # many ties
    special = [np.nan, -np.inf, np.inf, -np.finfo(np.float32).max, -0.0, 1e-40, -1e-40]
    data[rng.uniform(size=data.shape) < 0.1] = np.nan
    for i, value in enumerate(special):
        data[rng.uniform(size=data.shape) < 0.02] = value
        data[1, i, 10:20, 10:20] = value  # whole windows of it
    # the first plane keeps a winner in every window: a mask of -1 there would make Caffe's
    # backward pass write before the start of the array (elsewhere it lands in the plane before)
    data[0, 0] = rng.randint(-3, 4, data.shape[2:])
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt") as f:
        f.write(EDGE_NET)
        f.flush()
        net = caffe.Net(f.name, caffe.TEST)
    net.blobs["data"].data[...] = data
    # 4 planes of 80,000 inputs pooled in place: each plane's windows read the next planes'
    # outputs, which other threads write when the planes run in parallel (0003 did). (Net
    # set-up left the blob at the pooled shape: the input's is set again.)
    net.blobs["wide"].reshape(2, 2, 200, 400)
    net.blobs["wide"].data[...] = rng.standard_normal(net.blobs["wide"].data.shape)
    net.forward()
    for name in EDGE_TOPS:
        net.blobs[name].diff[...] = rng.uniform(-1, 1, net.blobs[name].diff.shape)
    net.backward()
    return {
        f"edges {name} {part}": digest(getattr(blob, part))
        for name, blob in net.blobs.items()
        for part in ("data", "diff")
    }


def run_in(variant: str, pass_size, size, iter_n: int, threads: int, kernel=None) -> dict:
    """:func:`measure` in a fresh process on ``variant``'s pycaffe (OpenBLAS's ``kernel`` when
    given; else the package's choice)."""
    python = build_dir(variant) / "install" / "python"
    if not (python / "caffe" / "__init__.py").is_file():
        raise SystemExit(
            f"variants: the {variant} build is missing ({python}): "
            f"run `make caffe-pristine` and `make setup`"
        )
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(python), str(HERE)]),
        OMP_NUM_THREADS=str(threads),
        GLOG_minloglevel="2",
    )
    if kernel:
        env["OPENBLAS_CORETYPE"] = kernel
    code = (
        f"import json; from deepdream_caffe.lab.variants import measure; "
        f"print(json.dumps(measure({list(pass_size)}, {list(size)}, {iter_n}, {threads})))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines() or ["?"]
        fatal = [line for line in lines if line.startswith("F") and "] " in line]  # glog's F-line
        raise SystemExit(f"variants: the {variant} run failed: {(fatal or lines)[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(pass_size, size, iter_n: int, threads_list, kernel=None) -> list[dict]:
    rows = []
    for threads in threads_list:
        runs = {v: run_in(v, pass_size, size, iter_n, threads, kernel) for v in VARIANTS}
        a, b = (runs[v]["hashes"] for v in VARIANTS)
        rows.append(
            {
                "threads": threads,
                "kernel": runs["openmp"]["blas"].get("blas_kernel"),
                "compared": len(a),
                "differ": sorted(k for k in a if a[k] != b.get(k)),
                "dream": a["dream"],
                "runs": runs,
            }
        )
    return rows


def dream_definition(size, path: Path) -> Path:
    """Our default dream net (data gradient only, pruned to inception_4c/output) at ``size``."""
    from .. import fastnet, googlenet
    from ..definition import prune

    end = "inception_4c/output"
    pruned = prune(googlenet.googlenet(input_shape=(1, 3, size[1], size[0])), end)
    counts = {layer.name: 2 for layer in pruned.layer if layer.type == "Convolution"}
    path.write_text(str(fastnet.data_gradient_only(pruned, end, counts)))
    return path


def layer_times(variant: str, definition: Path, iterations: int, threads: int) -> dict:
    """``caffe time`` in ``variant``'s build: milliseconds per pass, by (layer type, pass)."""
    tool = build_dir(variant) / "install" / "bin" / "caffe"
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(threads),
        OPENBLAS_NUM_THREADS=str(threads),
        GLOG_minloglevel="0",
    )
    log = subprocess.run(
        [tool, "time", "-model", definition, "-iterations", str(iterations)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    model = definition.read_text()
    types = dict(re.findall(r'name: "([^"]+)"\n\s+type: "([^"]+)"', model))
    totals: dict[str, float] = {}
    for name, direction, ms in re.findall(r"\] (\S+)\s+(forward|backward): ([\d.]+) ms", log):
        key = f"{types.get(name, 'Split')} {direction}"  # Caffe inserts the Split layers
        totals[key] = totals.get(key, 0.0) + float(ms)
    return totals


def layer_table(size, iterations: int, threads_list, out: Path) -> str:
    definition = dream_definition(size, out / "dream.prototxt")
    columns = [(v, t) for t in threads_list for v in VARIANTS]
    times = {c: layer_times(c[0], definition, iterations, c[1]) for c in columns}
    keys = sorted({k for t in times.values() for k in t}, key=lambda k: -times[columns[0]][k])
    lines = [
        f"`caffe time`, our dream net at {size[0]}x{size[1]}, ms per pass (mean of {iterations})",
        "",
        "| layer type, pass | " + " | ".join(f"{v}, {t} thr" for v, t in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for k in keys + ["total"]:
        row = [sum(t.values()) if k == "total" else t.get(k, 0.0) for t in times.values()]
        lines.append(f"| {k} | " + " | ".join(f"{ms:.1f}" for ms in row) + " |")
    return "\n".join(lines) + "\n"


def size_arg(text: str) -> tuple[int, int]:
    w, _, h = text.partition("x")
    return int(w), int(h)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m deepdream_caffe.lab.variants", description=__doc__.splitlines()[0]
    )
    p.add_argument("--pass-size", type=size_arg, default=(224, 224))
    p.add_argument("--size", type=size_arg, default=(256, 144))
    p.add_argument("--iter-n", type=int, default=2)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--kernel", help="OPENBLAS_CORETYPE for both builds (default: the package's)")
    p.add_argument("--layer-times", type=int, default=0, metavar="N")
    p.add_argument("-o", "--output", type=Path, default=Path("out/bench-variants"))
    args = p.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    if args.layer_times:
        table = layer_table(args.size, args.layer_times, args.threads, args.output)
        (args.output / "layers.md").write_text(table)
        print(table)
    rows = compare(args.pass_size, args.size, args.iter_n, args.threads, args.kernel)
    (args.output / "variants.json").write_text(json.dumps(rows, indent=2) + "\n")
    for r in rows:
        verdict = (
            "same bits" if not r["differ"] else f"{len(r['differ'])} differ: {r['differ'][:5]}"
        )
        print(
            f"threads {r['threads']} ({r['kernel']} kernels): {r['compared']} arrays, "
            f"{verdict}; dream {r['dream']}"
        )
    return 1 if any(r["differ"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
