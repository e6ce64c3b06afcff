"""Sweep measurements: tasks per hour with 1 and 2 local workers, and a sweep losing a worker.

The sweep is 36 tasks at 256x144 (the notebook's sky, resized): 3 layers x 12 seeds, the
notebook's other defaults, bvlc_googlenet's architecture with seeded synthetic weights (the
published weights cannot be downloaded everywhere; the arithmetic is the same). Each run
starts from an empty folder, so nothing is kept from before.

The killed-worker run uses a cluster of separate processes on 127.0.0.1 (``dask scheduler``
and two ``dask worker``, see :func:`separate_cluster`, which tests/test_sweep.py uses too),
kills one worker (its nanny and its process, SIGKILL) while it is running a task, and checks
that every result is there and byte-identical to the 2-worker local run.

``python -m deepdream_caffe.lab.sweepbench -o out/bench-sweep`` writes ``sweeps.json``
and ``sweeps.md`` there. Numbers only: no test asserts a timing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .. import sweep

SIZE = (256, 144)
ENDS = ["inception_3b/output", "inception_4c/output", "inception_4d/output"]
SEEDS = list(range(12))


@contextlib.contextmanager
def separate_cluster(n_workers: int, folder: Path, timeout: float = 120):
    """A scheduler and ``n_workers`` single-threaded workers, each its own process group.

    Yields ``(address, workers)``: ``workers`` maps each worker's name (w0, w1, ...) to its
    ``subprocess.Popen`` (the ``dask worker`` nanny; killing its group kills the worker too).
    Listens on 127.0.0.1 only, on free ports the system picks; logs go to ``folder``.
    """
    dask_cli = str(Path(sys.executable).with_name("dask"))
    folder.mkdir(parents=True, exist_ok=True)
    scheduler_file = folder / "scheduler.json"
    procs = []

    def start(name, *args):
        log = open(folder / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        procs.append(
            (
                subprocess.Popen([dask_cli, *args], stdout=log, stderr=log, start_new_session=True),
                log,
            )
        )
        return procs[-1][0]

    try:
        start(
            "scheduler",
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--dashboard-address",
            "127.0.0.1:0",
            "--scheduler-file",
            str(scheduler_file),
        )
        deadline = time.monotonic() + timeout
        while not scheduler_file.is_file() or not scheduler_file.read_text().strip():
            if time.monotonic() > deadline or procs[0][0].poll() is not None:
                raise RuntimeError(f"dask scheduler did not start; see {folder}/scheduler.log")
            time.sleep(0.2)
        time.sleep(0.2)  # the file is written whole, but give it a moment
        address = json.loads(scheduler_file.read_text())["address"]
        workers = {
            f"w{i}": start(
                f"w{i}",
                "worker",
                address,
                "--nthreads",
                "1",
                "--host",
                "127.0.0.1",
                "--no-dashboard",
                "--name",
                f"w{i}",
            )
            for i in range(n_workers)
        }
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(n_workers, timeout=timeout)
        yield address, workers
    finally:
        for proc, log in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()


def kill_when_busy(
    address: str,
    worker: subprocess.Popen,
    name: str,
    results: Path,
    after: int = 1,
    timeout: float = 600,
) -> dict:
    """Wait until ``after`` results exist and worker ``name`` is running a task; kill it.

    Returns what was seen at the moment of the kill (the task it was running).
    """
    from distributed import Client

    deadline = time.monotonic() + timeout
    with Client(address, timeout="30s") as client:
        while time.monotonic() < deadline:
            addresses = {w["name"]: a for a, w in client.scheduler_info()["workers"].items()}
            busy = client.processing().get(addresses.get(name), ())
            finished = len(list(results.glob("*.png.json"))) if results.is_dir() else 0
            if finished >= after and busy:
                os.killpg(worker.pid, signal.SIGKILL)
                return {"killed": name, "running": list(busy), "results_before": finished}
            time.sleep(0.05)
    raise RuntimeError(f"worker {name} never had a task to be killed in")


def inputs(folder: Path) -> tuple[Path, list]:
    """The sky at 256x144 and the model flags (definition + synthetic weights)."""
    import PIL.Image

    from .. import assets
    from ..build import caffe_source_dir
    from .synthetic import write_synthetic_weights

    definition = caffe_source_dir() / "models" / "bvlc_googlenet" / "deploy.prototxt"
    weights = write_synthetic_weights(definition, folder / "synthetic.caffemodel", 0)
    sky = PIL.Image.open(assets.fetch(assets.NOTEBOOK_ASSETS["sky1024px.jpg"], progress=False))
    image = folder / "sky256.png"
    sky.resize(SIZE, PIL.Image.BILINEAR).save(image)
    return image, ["--model-def", str(definition), "--weights", str(weights)]


def run_cli(image, model, out, *extra) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "deepdream_caffe.cli",
        "sweep",
        str(image),
        "-o",
        str(out),
        *model,
        "--ends",
        ",".join(ENDS),
        "--seeds",
        ",".join(map(str, SEEDS)),
        *extra,
    ]
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rows = json.loads((out / "manifest.json").read_text())["tasks"]
    done = [r for r in rows if r["status"] == "done"]
    return {
        "command": " ".join(cmd[3:]),
        "exit": p.returncode,
        "wall_s": round(wall, 1),
        "tasks": len(rows),
        "done": len(done),
        "tasks_per_hour": round(len(done) / wall * 3600),
        "mean_task_s": mean(r["seconds"] for r in done),
        # CPU seconds per task: what a worker needs with a core to itself
        "mean_task_cpu_s": mean(r.get("cpu_seconds") for r in done),
        "stderr_tail": p.stderr.strip().splitlines()[-1:],
        # other work on the machine: 1-minute load average at the start and the end
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
    }


def mean(values):
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 2) if values else None


def same_bytes(a: Path, b: Path) -> tuple[int, list]:
    """How many results of ``a`` have a byte-identical twin in ``b``; the names that do not."""
    names = sorted(p.name for p in (a / "images").glob("*.png"))
    differ = [
        n for n in names if (a / "images" / n).read_bytes() != (b / "images" / n).read_bytes()
    ]
    return len(names), differ


def killed_worker_run(image, model, out: Path, reference: Path) -> dict:
    with separate_cluster(2, out.with_name(out.name + "-cluster")) as (address, workers):
        seen = {}
        killer = threading.Thread(
            target=lambda: seen.update(
                kill_when_busy(address, workers["w1"], "w1", out / "images", after=len(SEEDS))
            )
        )
        killer.start()
        result = run_cli(image, model, out, "--scheduler", address)
        killer.join()
    count, differ = same_bytes(out, reference)
    return {**result, **seen, "results": count, "differ_from_local_run": differ}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("out/bench-sweep"),
        help="folder for sweeps.json and sweeps.md",
    )
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    record = {"size": SIZE, "ends": ENDS, "seeds": SEEDS, "cores": sweep.available_cores()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        image, model = inputs(tmp)
        for workers in (1, 2):
            record[f"workers_{workers}"] = run_cli(
                image, model, tmp / f"w{workers}", "--workers", str(workers)
            )
            print(json.dumps(record[f"workers_{workers}"]), file=sys.stderr)
        one, two = record["workers_1"]["tasks_per_hour"], record["workers_2"]["tasks_per_hour"]
        record["scaling_efficiency"] = round(two / (2 * one), 3)
        record["killed_worker"] = killed_worker_run(image, model, tmp / "killed", tmp / "w2")
    (args.output / "sweeps.json").write_text(json.dumps(record, indent=2) + "\n")
    (args.output / "sweeps.md").write_text(markdown(record))
    print(markdown(record), end="")


def markdown(r: dict) -> str:
    k = r["killed_worker"]
    lines = [
        f"36-task sweep at {r['size'][0]}x{r['size'][1]}, {r['cores']} cores",
        "",
        "| workers | wall s | tasks/hour | mean task s | mean task CPU s | "
        "load average (start, end) |",
        "|---|---|---|---|---|---|",
    ]
    for w in (1, 2):
        x = r[f"workers_{w}"]
        lines.append(
            f"| {w} | {x['wall_s']} | {x['tasks_per_hour']} | {x['mean_task_s']} | "
            f"{x['mean_task_cpu_s']} | {x['load_average'][0]}, "
            f"{x['load_average'][1]} |"
        )
    lines += [
        "",
        f"scaling efficiency (2 workers): {r['scaling_efficiency']:.0%}",
        "",
        f"killed worker: {k.get('killed')} killed while running {k.get('running')} after "
        f"{k.get('results_before')} results; the sweep finished with exit {k['exit']}, "
        f"{k['done']}/{k['tasks']} done in {k['wall_s']} s, {k['results']} results, "
        f"{len(k['differ_from_local_run'])} differing from the local run",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
