"""BLAS libraries under the same Caffe: the dream net timed, sgemm timed, results compared.

``python -m deepdream_caffe.lab.blasbench -o DIR [--iterations N] [--repeats R]`` writes
DIR/blas.json and DIR/blas.md. The net is the one the product dreams with by default:
GoogLeNet pruned to inception_4c/output, rewritten to compute the data gradient only (lab's
fastnet), input 1x3x575x1024, Caffe's fillers for weights (speed and bits do not depend on
trained values).

Each BLAS runs at 1 and 2 threads, every step in a fresh process:

- Debian's OpenBLAS 0.3.21, pthread and OpenMP builds, and the OpenBLAS that
  scripts/build-openblas.sh builds (DYNAMIC_ARCH, OpenMP): all with soname libopenblas.so.0,
  so the Caffe already built runs on each through LD_LIBRARY_PATH. OPENBLAS_CORETYPE is what
  deepdream-caffe sets (environment.coretype_for) unless it is set already; Debian's pthread
  build runs once more with the variable unset (the kernel OpenBLAS picks by itself);
- Intel MKL (requirements-mkl.txt) under Caffe built with ``-DBLAS=MKL``
  (scripts/build-caffe-mkl.sh), with MKL_CBWR unset, AVX2 and COMPATIBLE.

Per configuration: the kernel the library reports (``openblas_get_corename``; MKL's version
string), sgemm GFLOP/s at 4096x4096 (``cblas_sgemm`` through ctypes, best of 3), ``caffe time``'s
average forward and backward ms, and the bits of one forward and backward pass (onepass.cpp:
END's data and data's diff), run twice to see whether the library repeats itself. Libraries
that are not installed or built are skipped, and the table says so.

``--repeats R`` measures every configuration R times, one round of all of them after another,
so that a drift in the machine's speed reaches each alike; a row is the configuration's median
run (by forward + backward time), with every run's time, the best sgemm, and the bits of all
of its runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .. import environment
from ..build import caffe_build_dir
from . import bench

ROOT = Path(__file__).resolve().parents[2]
SIZE = (1024, 575)  # width x height, the notebook's sky
END = "inception_4c/output"
THREADS = (1, 2)
DEBIAN = Path("/usr/lib/x86_64-linux-gnu")
MKL_CBWR = ("", "AVX2", "COMPATIBLE")  # "" is the variable unset: MKL picks per CPU

# The library's kernel and sgemm speed, in a process of its own (argv: library path).
PROBE = r"""
import ctypes, json, sys, time
import numpy as np
lib = ctypes.CDLL(sys.argv[1])
if hasattr(lib, "openblas_get_corename"):
    lib.openblas_get_corename.restype = ctypes.c_char_p
    kernel = lib.openblas_get_corename().decode()
else:  # MKL: its version ("... Version 2026.2-Product Build ...")
    buf = ctypes.create_string_buffer(256)
    lib.mkl_get_version_string(buf, 256)
    kernel = "MKL " + buf.value.decode().split("Version ")[1].split("-")[0]
n = 4096
a, b = (np.random.RandomState(s).rand(n, n).astype(np.float32) for s in (0, 1))
c = np.zeros((n, n), np.float32)
p = lambda m: m.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
f = ctypes.c_float
best = float("inf")
for _ in range(4):  # the first one warms the thread pool up
    t0 = time.perf_counter()
    lib.cblas_sgemm(101, 111, 111, n, n, n, f(1), p(a), n, p(b), n, f(0), p(c), n)  # row-major, NN
    best = min(best, time.perf_counter() - t0)
print(json.dumps({"kernel": kernel, "sgemm_gflops": 2 * n**3 / best / 1e9}))
"""


@dataclass(frozen=True)
class Blas:
    name: str
    library: Path  # the file loaded for BLAS: probed through ctypes
    caffe: Path  # the caffe tool that runs on it
    env: dict = field(default_factory=dict)  # this configuration's variables


def write_net(path: Path) -> None:
    """The data-gradient-only dream net, pruned to END, at SIZE."""
    from .. import definition, fastnet, googlenet

    model = googlenet.googlenet(input_shape=(1, 3, SIZE[1], SIZE[0]))
    pruned = definition.prune(model, END)
    convs = ("Convolution", "InnerProduct")
    counts = {layer.name: 2 for layer in pruned.layer if layer.type in convs}
    path.write_text(str(fastnet.data_gradient_only(pruned, END, counts)))


def built(script: str) -> Path | None:
    """The cache folder a build script maps to, when that build is complete."""
    env = {**os.environ, "PYTHON": sys.executable}
    p = subprocess.run(
        [str(ROOT / "scripts" / script), "--print-dir"], capture_output=True, text=True, env=env
    )
    folder = Path(p.stdout.strip())
    return folder if p.returncode == 0 and (folder / "build-info.json").is_file() else None


def candidates(caffe_build: Path) -> tuple[list[Blas], list[str]]:
    """The BLAS configurations to run, and a line for each one that is missing."""
    caffe = caffe_build / "install" / "bin" / "caffe"
    core = os.environ.get(environment.CORETYPE) or environment.coretype_for(environment.cpu_flags())
    openblas_env = {environment.CORETYPE: core} if core else {}
    found, missing = [], []
    ours = built("build-openblas.sh")
    for name, folder, fix in (
        ("OpenBLAS 0.3.21 pthread (Debian)", DEBIAN / "openblas-pthread", "libopenblas0-pthread"),
        ("OpenBLAS 0.3.21 OpenMP (Debian)", DEBIAN / "openblas-openmp", "libopenblas0-openmp"),
        ("OpenBLAS 0.3.29 OpenMP (built)", ours and ours / "install" / "lib", "build-openblas.sh"),
    ):
        library = folder and folder / "libopenblas.so.0"
        if library and library.is_file():
            found.append(Blas(name, library, caffe, {**openblas_env, "LD_LIBRARY_PATH": folder}))
        else:
            missing.append(f"{name}: not found ({fix})")
    if found and core:  # the kernel OpenBLAS 0.3.21 picks by itself, for comparison
        debian = found[0]
        own = {**debian.env, environment.CORETYPE: ""}
        found.insert(1, Blas(f"{debian.name}, OpenBLAS's own kernel", debian.library, caffe, own))
    mkl = built("build-caffe-mkl.sh")
    if mkl is None:
        missing.append("MKL: not built (scripts/build-caffe-mkl.sh)")
    else:
        prefix = Path(json.loads((mkl / "build-info.json").read_text())["mkl_prefix"])
        library = next((prefix / "lib").glob("libmkl_rt.so.*"))
        for cbwr in MKL_CBWR:
            env = {"LD_LIBRARY_PATH": mkl / "build" / "lib", "MKL_CBWR": cbwr}  # "": unset
            label = f"MKL {mkl_version()}, MKL_CBWR={cbwr or '(unset)'}"
            found.append(Blas(label, library, mkl / "build" / "tools" / "caffe", env))
    return found, missing


def mkl_version() -> str:
    line = (ROOT / "requirements-mkl.txt").read_text().split("mkl==")[1]
    return line.split()[0]


def onepass_tool(cache: Path, caffe_build: Path) -> Path:
    """onepass.cpp compiled against a Caffe build (its libcaffe swapped by LD_LIBRARY_PATH)."""
    source = Path(__file__).with_name("onepass.cpp")
    prefix = caffe_build / "install"
    key = hashlib.sha256(source.read_bytes() + str(prefix).encode()).hexdigest()[:12]
    tool = cache / f"onepass-{key}"
    if not tool.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                *["c++", "-O2", "-DCPU_ONLY", f"-I{prefix / 'include'}", str(source)],
                *["-o", f"{tool}.part", f"-L{prefix / 'lib'}", f"-Wl,-rpath,{prefix / 'lib'}"],
                *["-lcaffe", "-lglog", "-lgflags", "-lprotobuf", "-lboost_system"],
            ],
            check=True,
        )
        Path(f"{tool}.part").rename(tool)
    return tool


def run_env(blas: Blas, threads: int) -> dict:
    n = str(threads)
    env = {**os.environ, "GLOG_logtostderr": "1", "GLOG_minloglevel": "0"}
    env.update({k: str(v) for k, v in blas.env.items()})
    env = {k: v for k, v in env.items() if v != ""}
    env.update(OMP_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, MKL_NUM_THREADS=n)
    return env


def time_caffe(blas: Blas, threads: int, net: Path, iterations: int) -> dict:
    p = subprocess.run(
        [str(blas.caffe), "time", "-model", str(net), "-iterations", str(iterations)],
        capture_output=True,
        text=True,
        env=run_env(blas, threads),
    )
    if p.returncode != 0:
        raise RuntimeError(f"caffe time failed: {p.stderr.strip().splitlines()[-1:]}")
    found = dict(re.findall(r"Average (Forward|Backward) pass: ([\d.]+) ms", p.stderr))
    return {"forward_ms": float(found["Forward"]), "backward_ms": float(found["Backward"])}


def one_pass(blas: Blas, threads: int, tool: Path, net: Path, out: Path) -> str:
    env = {**run_env(blas, threads), "GLOG_minloglevel": "2"}
    subprocess.run([str(tool), str(net), END, str(out)], check=True, env=env)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    out.unlink()
    return digest


def measure(blas: Blas, threads: int, net: Path, tool: Path, out: Path, iterations: int) -> dict:
    env = run_env(blas, threads)
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(blas.library)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    result = {"blas": blas.name, "threads": threads, "load_before": os.getloadavg()[0]}
    result.update(json.loads(probe.stdout))
    result.update(time_caffe(blas, threads, net, iterations))
    result["sha256"] = [one_pass(blas, threads, tool, net, out / "pass.raw") for _ in range(2)]
    result["load_after"] = os.getloadavg()[0]
    return result


def median_run(every: list[dict]) -> dict:
    """A configuration's runs as one row: its median run (the slower middle one of an even
    count) by forward + backward time, with every run's time, the best sgemm, all the bits."""
    total = lambda r: r["forward_ms"] + r["backward_ms"]  # noqa: E731
    row = dict(bench.middle(every, key=total))
    row["runs_ms"] = [total(r) for r in every]
    row["sgemm_gflops"] = max(r["sgemm_gflops"] for r in every)
    row["sha256"] = [digest for r in every for digest in r["sha256"]]
    row["load_before"] = min(r["load_before"] for r in every)
    row["load_after"] = max(r["load_after"] for r in every)
    return row


def blasbench(
    out: Path,
    iterations: int = 5,
    threads=THREADS,
    caffe_build: Path | None = None,
    repeats: int = 1,
    say=print,
) -> dict:
    """Every BLAS found, at each thread count, ``repeats`` rounds; the OpenBLAS ones under
    ``caffe_build`` (default: the build pycaffe comes from), MKL under
    scripts/build-caffe-mkl.sh's."""
    caffe_build = caffe_build or caffe_build_dir()
    out.mkdir(parents=True, exist_ok=True)
    cache = bench.bench_cache()
    net = out / "dream-net.prototxt"
    write_net(net)
    tool = onepass_tool(cache, caffe_build)
    found, missing = candidates(caffe_build)
    for line in missing:
        say(f"blasbench: skipped {line}")
    runs: dict[tuple[str, int], list[dict]] = {}
    for round_ in range(1, repeats + 1):
        for blas in found:
            for n in threads:
                say(f"blasbench: round {round_} of {repeats}: {blas.name}, {n} thread(s) ...")
                runs.setdefault((blas.name, n), []).append(
                    measure(blas, n, net, tool, out, iterations)
                )
    results = [median_run(every) for every in runs.values()]
    groups: list[str] = []
    for r in results:
        for digest in r["sha256"]:
            if digest not in groups:
                groups.append(digest)
        r["bit_groups"] = [groups.index(d) + 1 for d in r["sha256"]]
    record = {
        "cpu": environment.cpu_model(),
        "caffe_build": str(caffe_build),
        "size": list(SIZE),
        "end": END,
        "iterations": iterations,
        "repeats": repeats,
        "missing": missing,
        "results": results,
    }
    (out / "blas.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "blas.md").write_text(markdown(record))
    return record


def markdown(record) -> str:
    w, h = record["size"]
    lines = [
        f"# BLAS libraries: GoogLeNet to {record['end']} at {w}x{h}, forward and backward",
        "",
        f"CPU: {record['cpu']}. Caffe (OpenBLAS rows): {record['caffe_build']}. "
        f"`caffe time`, {record['iterations']} iterations, each configuration in "
        f"{record['repeats']} round(s) taken in turn: its median run, and every run's forward + "
        "backward ms; sgemm 4096x4096 float32, best of 3 per run. Bits: one forward and "
        "backward pass, run twice per round; the same number = the same bits (across rows "
        "too). Load: the 1-minute load average, lowest before and highest after.",
        "",
        "| BLAS | threads | kernel | forward ms | backward ms | every run ms | sgemm GFLOP/s "
        "| bits | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in record["results"]:
        groups = list(dict.fromkeys(r["bit_groups"]))  # each group once, in order
        lines.append(
            f"| {r['blas']} | {r['threads']} | {r['kernel']} | {r['forward_ms']:.0f} "
            f"| {r['backward_ms']:.0f} | {', '.join(f'{t:.0f}' for t in r['runs_ms'])} "
            f"| {r['sgemm_gflops']:.0f} | {', '.join(map(str, groups))} "
            f"| {r['load_before']:.2f} / {r['load_after']:.2f} |"
        )
    lines += ["", *(f"Skipped: {m}" for m in record["missing"])]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepdream_caffe.lab.blasbench")
    parser.add_argument("-o", "--output", type=Path, default=Path("out/bench-blas"))
    parser.add_argument("--iterations", type=int, default=5, help="caffe time's (default: 5)")
    parser.add_argument("--threads", type=int, nargs="+", default=list(THREADS))
    parser.add_argument("--caffe-build", type=Path, help="Caffe build folder (default: pycaffe's)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="rounds of every configuration (default: 1)"
    )
    args = parser.parse_args(argv)
    for name in ("iterations", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    record = blasbench(args.output, args.iterations, args.threads, args.caffe_build, args.repeats)
    print((args.output / "blas.md").read_text())
    return 0 if record["results"] else 1


if __name__ == "__main__":
    sys.exit(main())
