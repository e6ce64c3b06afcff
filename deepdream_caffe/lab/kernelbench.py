"""OpenBLAS kernels and thread counts: the default dream timed under each, results compared.

``python -m deepdream_caffe.lab.kernelbench -o out/bench-kernels`` (``make bench`` runs it)
runs bench's ``ours`` variant (the notebook's default dream, synthetic seeded bvlc_googlenet
weights) once per configuration, each in a process of its own with ``OPENBLAS_CORETYPE``,
``OPENBLAS_NUM_THREADS`` and ``OMP_NUM_THREADS`` set for that process only. The kernel each
process reports is the one OpenBLAS really ran (``openblas_get_corename``), not the one asked
for. Results are grouped by identical bits (sha256 of the float32 result). Writes
``kernels.json`` and ``kernels.md``.
Kernels the CPU cannot run are skipped (OpenBLAS does not check a forced kernel: it would die
of an illegal instruction), and a configuration that fails is recorded and the others go on.
Numbers only: no test asserts a timing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from .. import environment
from ..errors import DreamError
from . import bench

# "" is the variable removed, so deepdream-caffe chooses from the CPU flags
# (environment.coretype_for); the others are the kernels an x86-64 CPU with AVX-512 can run:
# the generic fallback, AVX2 and AVX-512.
KERNELS = ("", "Prescott", "Haswell", "SkylakeX")
THREADS = (1, 2)
NEEDS = {  # the CPU flags a forced kernel executes
    "Haswell": {"avx2", "fma"},
    "SkylakeX": {"avx512f", "avx512bw", "avx512dq", "avx512vl"},
}
MODULE = "deepdream_caffe.lab.kernelbench"  # each configuration runs as `python -m MODULE`


def child(config: dict, cache: Path, raw: Path) -> dict:
    """One configuration, in this process: bench's record (with the kernel that really ran)."""
    return bench.run_variant(
        "ours", tuple(config["size"]), config["iter_n"], config["octave_n"], cache, raw
    )


def config_name(kernel: str, threads: int) -> str:
    return f"{kernel or 'default'}-{threads}t"


def run_one(kernel: str, threads: int, config: dict, cache: Path, out: Path) -> dict:
    """One configuration in a process of its own; a failure is returned, not raised."""
    name = config_name(kernel, threads)
    raw = out / f"{name}.npy"
    env = bench.thread_env(threads)
    env.pop("OPENBLAS_CORETYPE", None)
    if kernel:
        env["OPENBLAS_CORETYPE"] = kernel
    cmd = [sys.executable, "-m", MODULE, "--child", json.dumps(config), str(cache), str(raw)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["no message"])[-1]
        return {"name": name, "failed": f"exit status {p.returncode}: {last}"}
    result = json.loads(p.stdout.splitlines()[-1])
    result.update(name=name, asked_kernel=kernel or "(unset)", asked_threads=threads)
    result["sha256"] = hashlib.sha256(np.load(raw).tobytes()).hexdigest()
    return result


def kernelbench(out: Path, quick=False, kernels=KERNELS, threads=THREADS, say=print) -> dict:
    config = dict(bench.QUICK) if quick else dict(size=(1024, 575), iter_n=10, octave_n=4)
    cache = bench.bench_cache()
    out.mkdir(parents=True, exist_ok=True)
    bench.synthetic_net_files(cache)
    bench.assets.fetch(bench.assets.NOTEBOOK_ASSETS["sky1024px.jpg"])  # a clear error, here
    flags = environment.cpu_flags()
    results, skipped, failed = [], [], []
    for kernel in kernels:
        if not NEEDS.get(kernel, set()) <= flags:
            skipped.append(kernel)
            say(f"kernelbench: {kernel} skipped: this CPU lacks {' '.join(sorted(NEEDS[kernel]))}")
            continue
        for n in threads:
            say(f"kernelbench: OPENBLAS_CORETYPE={kernel or '(unset)'}, {n} thread(s) ...")
            result = run_one(kernel, n, config, cache, out)
            if "failed" in result:
                say(f"kernelbench: {result['name']} failed ({result['failed']})")
            (failed if "failed" in result else results).append(result)
    groups: dict[str, list[str]] = {}
    for r in results:
        groups.setdefault(r["sha256"], []).append(r["name"])
    ref = np.load(out / f"{results[0]['name']}.npy") if results else None
    for r in results:
        r["group"] = list(groups).index(r["sha256"]) + 1
        diff = np.abs(np.load(out / f"{r['name']}.npy") - ref)
        r["vs_first"] = {"max_abs": float(diff.max()), "rms": float(np.sqrt((diff**2).mean()))}
    record = {
        "config": config,
        "seed": bench.SEED,
        "weights": "synthetic (seeded), bvlc_googlenet",
        "cpu": environment.cpu_model(),
        "environment": environment.environment(with_caffe=True),
        "results": results,
        "skipped": skipped,
        "failed": failed,
    }
    (out / "kernels.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "kernels.md").write_text(markdown(record))
    return record


def markdown(record) -> str:
    c = record["config"]
    first = record["results"][0]["name"] if record["results"] else "first"
    lines = [
        f"# OpenBLAS kernels: {c['size'][0]}x{c['size'][1]}, {c['octave_n']} octaves x "
        f"{c['iter_n']} iterations, inception_4c/output, seed {record['seed']}",
        "",
        f"CPU: {record['cpu']}; BLAS: {record['environment'].get('blas')}.",
        "Same group = bit-identical results. Threads: as OpenBLAS reports them.",
        "",
        "| OPENBLAS_CORETYPE | threads | kernel run | dream s | forward s | backward s | "
        f"group | vs {first}: max abs / RMS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in record["results"]:
        f = sum(o["forward_s"] for o in r["octaves"])
        b = sum(o["backward_s"] for o in r["octaves"])
        v = r["vs_first"]
        lines.append(
            f"| {r['asked_kernel']} | {r['blas_threads']} | {r['blas_kernel']} | "
            f"{r['dream_s']:.2f} | {f:.2f} | {b:.2f} | {r['group']} | "
            f"{v['max_abs']:.1f} / {v['rms']:.2f} |"
        )
    lines += [f"\nSkipped (the CPU cannot run it): {k}" for k in record["skipped"]]
    lines += [f"\nFailed: {r['name']}: {r['failed']}" for r in record["failed"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m deepdream_caffe.lab.kernelbench")
    p.add_argument("-o", "--out", type=Path, default=Path("out/bench-kernels"))
    p.add_argument("--quick", action="store_true", help="256x144, 2 octaves x 2 steps")
    p.add_argument(
        "--kernels", nargs="+", default=list(KERNELS), help="'' for deepdream-caffe's choice"
    )
    p.add_argument("--threads", nargs="+", type=int, default=list(THREADS))
    args = p.parse_args(argv)
    names = [config_name(k, n) for k in args.kernels for n in args.threads]
    if len(set(names)) < len(names) or min(args.threads) < 1:
        p.error(
            "name each kernel and thread count once ('' is deepdream-caffe's choice), threads >= 1"
        )
    try:
        record = kernelbench(args.out, args.quick, args.kernels, args.threads)
    except (OSError, DreamError) as e:
        print(f"kernelbench: error: {e}", file=sys.stderr)
        return 1
    print((args.out / "kernels.md").read_text(), end="")
    return 1 if record["failed"] else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        config, cache, raw = sys.argv[2:5]
        print(json.dumps(child(json.loads(config), Path(cache), Path(raw))))
    else:
        sys.exit(main())
