"""``deepdream-caffe bench``: the notebook's default dream, timed, beside its baselines.

The dream is dream.ipynb's cell 12: sky1024px.jpg (1024x575), inception_4c/output, 4 octaves
x 10 iterations, on the bvlc_googlenet architecture with synthetic, seeded weights (the
published weights cannot be downloaded everywhere; the arithmetic done is the same). Three
variants, each in a process of its own (so that peak memory is its own):

- ``ours``: deepdream_caffe's default (the net rewritten to compute only the data gradient);
- ``notebook``: the notebook's own code cells, read from dream.ipynb, on the notebook's net
  (the whole deploy file, force_backward), same Caffe, same seed;
- ``pytorch``: the same loop with forward/backward in PyTorch on the CPU, same weights (only
  when torch is installed: ``make bench`` installs it).

Each is timed whole and per octave, split into forward, backward and the rest (numpy: roll,
step, clip, zoom). GFLOP/s counts two flops per multiply-add of the convolutions and fully
connected layers, forward and data-gradient backward (the notebook's net also computes weight
gradients: its GFLOP/s is counted on the same work, so the three compare).

Beside them, the machine's sgemm peak (:mod:`.sgemm`: numpy's BLAS and the BLAS libcaffe calls)
at each thread count used, and each variant's GFLOP/s as a fraction of the peak at its own
thread count. Every variant runs with ``threads`` BLAS and OpenMP threads (OPENBLAS_NUM_THREADS
and OMP_NUM_THREADS, set for its process only); ``ours`` and the peaks are also measured at 1
and 2 threads, for the scaling (speed-up = time at 1 thread / time at 2). Results go to
``OUT/bench.json`` and ``OUT/bench.md``. Numbers only: no test asserts a timing.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from .. import assets, dream, environment
from ..imageio import all_or_nothing
from ..params import DreamParams
from . import sgemm

VARIANTS = ("ours", "notebook", "pytorch")
SEED = 0
QUICK = dict(size=(256, 144), iter_n=2, octave_n=2)  # every code path, in seconds
QUICK_SGEMM_N = 1024  # the quick sgemm peak's matrix size (sgemm.N otherwise)
SCALING = (1, 2)  # thread counts of the scaling: ours and the peaks at each
RUN_KEYS = ("runs_dream_s", "runs_same_bits")  # what median_run adds about every run


class TimedNet:
    """A net whose forward and backward passes add their time to ``times``."""

    def __init__(self, net):
        self._net, self.times = net, defaultdict(float)

    def __getattr__(self, name):
        return getattr(self._net, name)

    def forward(self, **kwargs):
        t0 = time.perf_counter()
        out = self._net.forward(**kwargs)
        self.times["forward"] += time.perf_counter() - t0
        return out

    def backward(self, **kwargs):
        t0 = time.perf_counter()
        out = self._net.backward(**kwargs)
        self.times["backward"] += time.perf_counter() - t0
        return out


def conv_macs(net, end) -> int:
    """Multiply-adds of one forward pass up to ``end`` at the net's current size."""
    total = 0
    for name, layer in zip(net._layer_names, net.layers, strict=True):
        if layer.type in ("Convolution", "InnerProduct"):
            top = net.blobs[net.top_names[name][0]].data
            total += int(np.prod(top.shape)) * int(np.prod(layer.blobs[0].data.shape[1:]))
        if name == end:
            break
    return total


def synthetic_net_files(cache: Path) -> tuple[Path, Path]:
    """bvlc_googlenet's definition and seeded synthetic weights (made once, then cached)."""
    from ..build import caffe_source_dir
    from .synthetic import write_synthetic_weights

    definition = caffe_source_dir() / "models" / "bvlc_googlenet" / "deploy.prototxt"
    weights = cache / "bvlc_googlenet.SYNTHETIC-seed0.caffemodel"
    if not weights.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        write_synthetic_weights(definition, weights, seed=0)
    return definition, weights


def bench_cache() -> Path:
    """Where the synthetic weights are kept between runs."""
    return assets.cache_root() / "bench"


def bench_image(size) -> np.ndarray:
    import PIL.Image

    with PIL.Image.open(assets.fetch(assets.NOTEBOOK_ASSETS["sky1024px.jpg"])) as im:
        if im.size != tuple(size):
            im = im.resize(size, PIL.Image.BILINEAR)
        return np.float32(im)


def load_variant(variant, definition, weights, end, size=None):
    """The variant's net; ``size`` (H, W), the largest image ours gets (the command builds
    its net for it, net.build)."""
    from ..definition import prune, read_definition
    from ..models import IMAGENET_MEAN_BGR
    from ..net import load_net

    if variant == "notebook":
        return load_net(
            definition, weights, end, IMAGENET_MEAN_BGR, prune_net=False, notebook_net=True
        )
    net = load_net(definition, weights, end, IMAGENET_MEAN_BGR, size=size)
    if variant == "pytorch":
        import torch

        from .torchnet import TorchNet

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
        return TorchNet(prune(read_definition(definition), end), net, IMAGENET_MEAN_BGR)
    return net


def notebook_deepdream(net):
    """The notebook's deepdream (cells 3, 6, 8; lab/notebook.py), on ``net``."""
    from . import notebook

    return notebook.definitions(notebook.code_cells(), net)["deepdream"]


def run_variant(variant, size, iter_n, octave_n, cache: Path, raw_out: Path | None) -> dict:
    """Time one variant in this process; return its record."""
    params = DreamParams(iter_n=iter_n, octave_n=octave_n)
    definition, weights = synthetic_net_files(cache)
    img = bench_image(size)
    t0 = time.perf_counter()
    net = TimedNet(load_variant(variant, definition, weights, params.end, img.shape[:2]))
    load_s = time.perf_counter() - t0

    octaves, marks = [], {"t": None, "times": None, "macs": 0}

    def on_step(octave, i, _net):
        now = time.perf_counter()
        if i == 0:
            marks["macs"] = conv_macs(net, params.end) if variant != "pytorch" else None
        if i == iter_n - 1:
            fwd, bwd = net.times["forward"], net.times["backward"]
            prev = marks["times"] or (0.0, 0.0)
            total = now - marks["t"]
            octaves.append(
                {
                    "octave": octave,
                    "size": list(net.blobs["data"].data.shape[-2:][::-1]),
                    "total_s": total,
                    "forward_s": fwd - prev[0],
                    "backward_s": bwd - prev[1],
                    "numpy_s": total - (fwd - prev[0]) - (bwd - prev[1]),
                    "macs_per_pass": marks["macs"],
                }
            )
            marks["t"], marks["times"] = now, (fwd, bwd)

    if variant == "notebook":
        deepdream = notebook_deepdream(net)
        # cell 8 displays where ours calls back: time the octaves around its make_step calls
        np.random.seed(SEED)
        step = deepdream.__globals__["make_step"]
        counter = {"n": 0}

        def counted(*args, **kwargs):
            step(*args, **kwargs)
            on_step(counter["n"] // iter_n, counter["n"] % iter_n, net)
            counter["n"] += 1

        deepdream.__globals__["make_step"] = counted
        marks["t"] = time.perf_counter()
        result = deepdream(net, img, iter_n=iter_n, octave_n=octave_n)
    else:
        marks["t"] = time.perf_counter()
        result = dream.deepdream(
            net,
            img,
            iter_n=iter_n,
            octave_n=octave_n,
            callback=on_step,
            rng=np.random.RandomState(SEED),
        )
    dream_s = sum(o["total_s"] for o in octaves)
    if raw_out is not None:
        np.save(raw_out, result)
    macs = [o["macs_per_pass"] for o in octaves]
    flops = None if None in macs else sum(4 * m * iter_n for m in macs)  # 2 per MAC, fwd+bwd
    blas = environment.blas_info()
    return {
        "variant": variant,
        "load_s": load_s,
        "dream_s": dream_s,
        "octaves": octaves,
        "gflops": None if flops is None else flops / 1e9,
        "gflop_per_s": None if flops is None else flops / 1e9 / dream_s,
        "peak_rss_mib": peak_rss_bytes() / 2**20,
        "blas_kernel": blas.get("blas_kernel"),  # what Caffe's OpenBLAS really ran
        "blas_threads": blas.get("blas_threads"),
    }


def peak_rss_bytes() -> int:
    """This process's own peak resident memory (VmHWM). Not ``ru_maxrss``: the kernel starts
    that from the parent's peak when the parent started this process with vfork and exec,
    as Python's subprocess does."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # no /proc: the best left


def torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def thread_env(threads: int) -> dict:
    """This process's environment for a child with ``threads`` BLAS and OpenMP threads."""
    n = str(threads)
    return {**os.environ, "GLOG_minloglevel": "2", "OPENBLAS_NUM_THREADS": n, "OMP_NUM_THREADS": n}


def run_child(args: list[str], threads: int) -> dict:
    """``python -m ARGS`` in a process of its own with ``threads`` threads: its last line, read
    as JSON."""
    p = subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, env=thread_env(threads)
    )
    if p.returncode != 0:
        raise RuntimeError(f"bench: {args[0]} {args[1]} failed:\n{p.stderr}")
    return json.loads(p.stdout.splitlines()[-1])


def file_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def middle(runs: list[dict], key) -> dict:
    """The median run by ``key``: the slower middle one of an even count."""
    return sorted(runs, key=key)[len(runs) // 2]


def median_run(every: list[dict]) -> dict:
    """The run with the median dream time (the slower middle one of an even count), with every
    run's time and whether every run gave the same bits."""
    return {
        **middle(every, key=lambda r: r["dream_s"]),
        "runs_dream_s": [r["dream_s"] for r in every],
        "runs_same_bits": len({r["result_sha256"] for r in every}) == 1,
    }


def bench(
    out: Path,
    quick: bool = False,
    variants=VARIANTS,
    threads: int | None = None,
    repeats: int = 1,
    say=print,
) -> dict:
    """Run each variant in its own process with ``threads`` threads (default: one per core),
    ours at 1 and 2 threads, ``repeats`` rounds of them in turn, and the sgemm peaks; write
    bench.json and bench.md into ``out``. Each variant's record is its median run."""
    threads = threads or os.cpu_count() or 1
    config = dict(QUICK) if quick else dict(size=(1024, 575), iter_n=10, octave_n=4)
    cache = bench_cache()
    for name in ("sky1024px.jpg", "dream.ipynb"):  # a clear error here, not in a child
        assets.fetch(assets.NOTEBOOK_ASSETS[name])
    synthetic_net_files(cache)  # once, before the timed processes
    out.mkdir(parents=True, exist_ok=True)  # once the inputs are there: no empty folder else
    runs, skipped = defaultdict(list), {}
    timed_variants = []
    for variant in variants:
        if variant == "pytorch" and not torch_available():
            skipped[variant] = "torch is not installed (pip install torch==2.13.0)"
            say(f"bench: skipping pytorch: {skipped[variant]}")
        else:
            timed_variants.append((variant, threads))
    for n in SCALING:  # ours at 1 and 2 threads, whatever was asked
        if ("ours", n) not in timed_variants:
            timed_variants.append(("ours", n))
    # round by round, so that a drift in the machine's speed reaches every variant alike
    for round_ in range(repeats):
        for variant, n in timed_variants:
            say(f"bench: {variant}, {n} thread(s), run {round_ + 1} of {repeats} ...")
            raw = out / (f"{variant}.npy" if n == threads else f"{variant}-{n}t.npy")
            args = [__name__, variant, json.dumps(config), str(cache), str(raw)]
            run = {**run_child(args, n), "threads": n, "result_sha256": file_sha256(raw)}
            runs[variant, n].append(run)
    median = {key: median_run(every) for key, every in runs.items()}
    results = [median[v, threads] for v in variants if (v, threads) in median]
    one, two = (median["ours", n] for n in SCALING)
    peaks = {}
    for n in sorted({*SCALING, threads}):
        say(f"bench: sgemm peaks, {n} thread(s) ...")
        peaks[n] = run_child([sgemm.__name__, str(QUICK_SGEMM_N if quick else sgemm.N)], n)
    for r in results:
        if r["variant"] == "pytorch":  # the same arithmetic: count it from Caffe's net
            r["gflops"] = one["gflops"]
            r["gflop_per_s"] = r["gflops"] / r["dream_s"]
        peak = peaks[r["threads"]]
        r["fraction_of_sgemm_peak"] = {
            "caffe_blas": r["gflop_per_s"] / peak["caffe_blas_gflop_per_s"],
            "numpy": r["gflop_per_s"] / peak["numpy_gflop_per_s"],
        }
    low, high = (peaks[n] for n in SCALING)
    record = {
        "config": config,
        "seed": SEED,
        "weights": "synthetic (seeded), bvlc_googlenet",
        "threads": threads,
        "repeats": repeats,
        "runs": [
            {"variant": v, "threads": n, **{k: median[v, n][k] for k in RUN_KEYS}}
            for v, n in timed_variants
        ],
        "environment": environment.environment(with_caffe=True),
        "caffe_blas_path": peaks[threads]["caffe_blas_path"],
        "sgemm_peaks": [{"threads": n, **peak} for n, peak in peaks.items()],
        "results": results,
        "skipped": skipped,
        "scaling": {
            "threads": list(SCALING),
            "ours_dream_s": [one["dream_s"], two["dream_s"]],
            "ours_speedup": one["dream_s"] / two["dream_s"],
            "caffe_blas_sgemm_speedup": high["caffe_blas_gflop_per_s"]
            / low["caffe_blas_gflop_per_s"],
            "numpy_sgemm_speedup": high["numpy_gflop_per_s"] / low["numpy_gflop_per_s"],
        },
        "comparison": compare(out, results),
    }
    with all_or_nothing() as batch:  # both reports, or neither
        batch(out / "bench.json").write_text(json.dumps(record, indent=2) + "\n")
        batch(out / "bench.md").write_text(markdown(record))
    return record


def compare(out: Path, results) -> dict:
    """Ratios to ours, and whether ours is bit-identical to the notebook's code."""
    by = {r["variant"]: r for r in results}
    ours = by.get("ours")
    cmp = {}
    if ours is None:
        return cmp
    for name, r in by.items():
        if name != "ours":
            cmp[f"ours_over_{name}"] = ours["dream_s"] / r["dream_s"]
    if "notebook" in by:
        cmp["bit_identical_to_notebook"] = bool(
            np.array_equal(np.load(out / "ours.npy"), np.load(out / "notebook.npy"))
        )
    if "pytorch" in by:
        a, b = np.load(out / "ours.npy"), np.load(out / "pytorch.npy")
        cmp["pytorch_max_abs_diff"] = float(np.abs(a - b).max())
    return cmp


def markdown(record) -> str:
    c = record["config"]
    env, peaks = record["environment"], record["sgemm_peaks"]
    lines = [
        f"# deepdream-caffe bench: {c['size'][0]}x{c['size'][1]}, {c['octave_n']} octaves x "
        f"{c['iter_n']} iterations, inception_4c/output",
        "",
        f"Caffe's BLAS: {record['caffe_blas_path']}, {env.get('blas')} "
        f"({env.get('blas_kernel')} kernels); numpy's: {env.get('numpy_blas')} "
        f"({env.get('numpy_blas_kernel')} kernels). "
        f"Weights: {record['weights']}; seed {record['seed']}.",
        "",
        f"sgemm peak ({peaks[0]['n']}x{peaks[0]['n']} float32, best of {peaks[0]['repeats']}):",
        "",
        "| threads | Caffe's BLAS GFLOP/s | numpy's BLAS GFLOP/s |",
        "|---|---|---|",
        *(
            f"| {p['threads']} | {p['caffe_blas_gflop_per_s']:.1f} | {p['numpy_gflop_per_s']:.1f} |"
            for p in peaks
        ),
        "",
        f"The variants, {record['threads']} thread(s) each; fraction of the sgemm peak at the "
        "same thread count:",
        "",
        "| variant | dream s | forward s | backward s | numpy s | GFLOP/s | "
        "fraction of sgemm peak: Caffe's BLAS | numpy's | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in record["results"]:
        f = sum(o["forward_s"] for o in r["octaves"])
        b = sum(o["backward_s"] for o in r["octaves"])
        n = sum(o["numpy_s"] for o in r["octaves"])
        frac = r["fraction_of_sgemm_peak"]
        lines.append(
            f"| {r['variant']} | {r['dream_s']:.2f} | {f:.2f} | {b:.2f} | {n:.2f} | "
            f"{r['gflop_per_s']:.1f} | {frac['caffe_blas']:.2f} | {frac['numpy']:.2f} | "
            f"{r['peak_rss_mib']:.0f} |"
        )
    if record["repeats"] > 1:
        every = "; ".join(
            f"{r['variant']} at {r['threads']} thread(s): "
            + ", ".join(f"{t:.2f}" for t in r["runs_dream_s"])
            + ("" if r["runs_same_bits"] else " (NOT the same bits from run to run)")
            for r in record["runs"]
        )
        lines += [
            "",
            f"Each time is the median of {record['repeats']} runs, taken in turn (dream s of "
            f"every run: {every}).",
        ]
    sc = record["scaling"]
    t1, t2 = sc["ours_dream_s"]
    lines += [
        "",
        f"Scaling, {sc['threads'][0]} to {sc['threads'][1]} threads (speed-up = time at "
        f"{sc['threads'][0]} / time at {sc['threads'][1]}): ours {t1:.2f} s to {t2:.2f} s, "
        f"{sc['ours_speedup']:.2f}x; sgemm peak: Caffe's BLAS "
        f"{sc['caffe_blas_sgemm_speedup']:.2f}x, numpy's {sc['numpy_sgemm_speedup']:.2f}x.",
    ]
    lines += ["", "Per octave (seconds: total / forward / backward / numpy):", ""]
    for r in record["results"]:
        parts = [
            f"{o['size'][0]}x{o['size'][1]}: {o['total_s']:.2f} / {o['forward_s']:.2f} / "
            f"{o['backward_s']:.2f} / {o['numpy_s']:.2f}"
            for o in r["octaves"]
        ]
        lines.append(f"- {r['variant']}: " + "; ".join(parts))
    lines += [
        "",
        "Comparison: "
        + ", ".join(
            f"{k} = {v:.3f}" if isinstance(v, float) else f"{k} = {v}"
            for k, v in record["comparison"].items()
        ),
    ]
    for name, why in record["skipped"].items():
        lines.append(f"Skipped {name}: {why}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # one variant, in a process of its own (see bench())
    variant, config, cache, raw = sys.argv[1:5]
    config = json.loads(config)
    result = run_variant(
        variant, tuple(config["size"]), config["iter_n"], config["octave_n"], Path(cache), Path(raw)
    )
    print(json.dumps(result))
