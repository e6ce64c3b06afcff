"""``deepdream-caffe sweep``: every combination of parameter lists, one Dask task per dream.

A sweep is a grid: inputs x ends x seeds x iter_n x octave_n x octave_scale x step_size x
jitter. Each point becomes a :class:`~deepdream_caffe.job.Job` that a worker runs with
:func:`~deepdream_caffe.job.run_dream`, the code behind ``deepdream-caffe dream``, so a result
is bit-identical to ``dream`` with the same parameters, seed and BLAS threads, sidecar included.

The engine is dask.distributed: an embedded ``LocalCluster`` of worker processes (Caffe is not
thread-safe, so one process per worker, each dreaming one task at a time, each keeping a few
loaded nets), or an existing cluster given by its scheduler address. Workers write the results
into ``OUTDIR/images`` themselves (a cluster's workers must see OUTDIR and the inputs at the
same paths). A result whose sidecar already matches its task is kept, not recomputed; a task
that fails is recorded with its reason and the others go on; Ctrl-C keeps what finished.
``OUTDIR`` then holds ``manifest.json``, ``manifest.csv`` and the gallery ``index.html``.

With ``classes``, a sweep draws instead (a draw sweep): classes x seeds, each task
:func:`~deepdream_caffe.drawjob.run_draw`, the code behind ``deepdream-caffe draw``, so each
result equals ``draw --threads K`` with the same class, seed and schedule. The classes and the
schedule are resolved and checked once, in the client, with draw's own checks and messages.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import os
import re
import resource
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from . import draw, gallery, interrupts, job, models, noise, plan, sidecar, worker
from .assets import file_hash
from .errors import DreamError
from .imageio import atomic_path
from .params import DEFAULTS, DreamParams

# The dream parameters a sweep can list, in the order of the grid (and of output names).
SWEPT = ("end", "seed", "iter_n", "octave_n", "octave_scale", "step_size", "jitter")
GRID_AXES = ("input",) + SWEPT
DRAW_AXES = ("class", "seed")  # a draw sweep's grid; each task also names its schedule
DRAW_PARAMS = ("schedule", *DRAW_AXES)  # what the gallery shows of a draw
MAX_TASKS = 100_000
CLASSIFIER_TYPES = {"InnerProduct", "Softmax", "INNER_PRODUCT", "SOFTMAX"}


@dataclass
class Sweep:
    """What ``deepdream-caffe sweep`` was asked for: plain values, no argparse."""

    inputs: list
    outdir: Path
    lists: dict  # SWEPT name -> list of values; "end": ["all"] or None means the model's
    base: dict = field(default_factory=dict)  # Job fields every task shares (the model, ...)
    scheduler: str | None = None  # tcp://HOST:PORT of an existing cluster
    workers: int | None = None  # embedded cluster only; None: cores // threads_per_worker
    threads_per_worker: int = 1  # BLAS threads of each worker process
    grid: tuple = ("end", "seed")  # gallery rows, columns
    classes: list | None = None  # a draw sweep: the classes as typed; inputs and lists unused
    schedule: str = "blog"  # a draw sweep's schedule: blog, coherent or a .json file


@dataclass
class Task:
    name: str  # the file stem of the result, from the parameters
    values: dict  # input and every SWEPT parameter
    status: str = "pending"  # done, kept, failed, interrupted
    reason: str = ""
    seconds: float | None = None
    cpu_seconds: float | None = None  # CPU time of the worker process while it ran the task

    def row(self) -> dict:
        return {
            "name": self.name,
            "status": self.status,
            "reason": self.reason,
            **{k: str(v) if k == "input" else v for k, v in self.values.items()},
            "image": f"images/{self.name}.png",
            "sidecar": f"images/{self.name}.png.json",
            "seconds": rounded(self.seconds),
            "cpu_seconds": rounded(self.cpu_seconds),
        }


def rounded(seconds):
    return None if seconds is None else round(seconds, 3)


# Job fields a sweep shares between all its tasks.
SHARED = (
    "model",
    "model_def",
    "weights",
    "mean",
    "places_mean",
    "channel_swap",
    "gpu",
    "notebook_net",
    "verbose",
    "clip",
    "max_size",
    "tile",
)
# DrawJob fields a draw sweep shares between all its tasks.
DRAW_SHARED = ("model", "model_def", "weights", "allow_python_layers", "gpu", "verbose")


def from_args(args) -> Sweep:
    """The sweep the ``sweep`` subcommand's flags ask for, after the checks flags cannot make."""
    if args.output.exists() and not args.output.is_dir():
        raise DreamError(f"{args.output} exists and is not a folder", "name a folder for -o")
    axes = DRAW_AXES if args.classes else GRID_AXES
    grid = tuple(args.grid or (DRAW_AXES if args.classes else SWEPT[:2]))  # rows, columns
    if len(grid) != 2 or not set(grid) <= set(axes):
        raise DreamError(
            f"--grid {','.join(grid)} is not two different parameters",
            f"choose two of {', '.join(axes)}",
        )
    threads, cores = args.threads_per_worker, available_cores()
    if args.scheduler and (args.workers or threads != 1):
        raise DreamError(
            "--workers and --threads-per-worker set up the local cluster, not "
            f"the one at {args.scheduler}",
            "start that cluster's workers with the numbers you want, or leave out --scheduler",
        )
    workers = args.workers or max(1, cores // threads)
    if not args.scheduler and workers * threads > cores:
        raise DreamError(
            f"--workers {workers} x --threads-per-worker {threads} is more than "
            f"the {cores} cores here",
            "lower one of them (Caffe's BLAS threads compete for cores)",
        )
    lists = {
        "end": args.ends,
        "seed": args.seeds,
        **{k: getattr(args, k) or [getattr(DEFAULTS, k)] for k in SWEPT[2:]},
    }
    base = {k: getattr(args, k, None) for k in (DRAW_SHARED if args.classes else SHARED)}
    base["threads"] = None if args.scheduler else threads  # set in each task: the sidecar says
    return Sweep(
        classes=args.classes,
        schedule=args.schedule or "blog",
        inputs=list(args.inputs),
        outdir=args.output,
        lists=lists,
        base=base,
        scheduler=args.scheduler,
        workers=workers,
        threads_per_worker=threads,
        grid=grid,
    )


# --- the grid ---------------------------------------------------------------------------
def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def resolve_ends(spec: Sweep) -> list:
    """The ``end`` list: the model's default, the listed layers, or every dreamable layer."""
    ends = spec.lists.get("end")
    probe = job.Job.from_values(spec.base)
    if not ends:
        return [job.default_end(probe)]
    from .definition import check_end, dream_layers, read_definition

    definition = probe.model_def or models.model_definition(models.get_model(probe.model))
    model = read_definition(definition)
    if ends == ["all"]:
        return [info.name for info in dream_layers(model) if info.type not in CLASSIFIER_TYPES]
    for end in ends:  # a misspelt layer is one message now, not one failed task per image
        check_end(model, end)
    return ends


def slug(text: str) -> str:
    """``inception_4c/output`` -> ``inception_4c-output``: safe in file names and URLs."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-.") or "x"


def label(value) -> str:
    return repr(value) if isinstance(value, float) else slug(str(value))


def input_labels(inputs) -> dict:
    """Each input's name part: its stem, plus a short hash of its path where stems collide."""
    stems = [slug(Path(p).stem) for p in inputs]
    return {
        p: s if stems.count(s) == 1 else f"{s}-{short_hash(str(Path(p).resolve()))}"
        for p, s in zip(inputs, stems, strict=True)
    }


def short_hash(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:8]


def task_name(values: dict, input_label: str, suffix: str = "") -> str:
    """Stable and readable: the same parameters always give the same name."""
    v = values
    return (
        f"{input_label}__{slug(v['end'])}__seed{v['seed']}__iter{v['iter_n']}"
        f"_oct{v['octave_n']}_scale{label(v['octave_scale'])}_step{label(v['step_size'])}"
        f"_jit{v['jitter']}{suffix}"
    )


def name_suffix(base: dict) -> str:
    """Per-sweep settings that change the pixels but are not in the sidecar's params."""
    suffix = "" if base.get("clip", True) else "__noclip"
    suffix += f"__max{base['max_size']}" if base.get("max_size") else ""
    return suffix + (f"__tile{base['tile']}" if base.get("tile") else "")


def plan_tasks(spec: Sweep) -> tuple[list, dict]:
    """The tasks, and what each one's sidecar must say for its result to be kept."""
    if spec.classes:
        return draw_tasks(spec)
    tasks = make_tasks(spec)
    return tasks, expectations(spec, tasks)


def draw_tasks(spec: Sweep) -> tuple[list, dict]:
    """A draw sweep's tasks (class x seed, in that order) and their sidecars' identities.

    Every class is resolved by draw's own resolution, with its messages, and the net and the
    schedule are checked once (:func:`~deepdream_caffe.drawjob.plan_draw`), before anything
    is written (every class before the weights are fetched). A task gets the class index, so
    a worker needs no class list.
    """
    from . import drawjob

    probe = drawjob.DrawJob.from_values(
        {**spec.base, "klass": spec.classes[0], "schedule": spec.schedule}
    )
    checked = drawjob.plan_draw(probe, also=spec.classes[1:])
    try:
        indices: dict = {}  # index -> the class as typed
        for text in spec.classes:
            index, _ = drawjob.resolve_class(text, checked.count)
            if index in indices:
                raise DreamError(
                    f"--classes: {indices[index]} and {text} are both class {index}",
                    "give each class once",
                )
            indices[index] = text
        files = {
            "definition": drawjob.definition_record(probe, checked)["sha256"],
            "weights": checked.weights.sha256,
        }
    finally:
        checked.close()
    seeds = list(dict.fromkeys(spec.lists["seed"]))
    if len(indices) * len(seeds) > MAX_TASKS:
        raise DreamError(
            f"the sweep has {len(indices) * len(seeds)} tasks, more than {MAX_TASKS}",
            "split it into smaller sweeps",
        )
    start, label = drawjob.start_record(probe, checked), slug(Path(spec.schedule).stem)
    tasks, expected = [], {}
    for index, seed in itertools.product(indices, seeds):
        values = {"class": index, "seed": seed, "schedule": spec.schedule}
        tasks.append(Task(f"class{index}__seed{seed}__{label}", values))
        expected[tasks[-1].name] = sidecar.draw_identity(
            index,
            checked.octaves,
            seed,
            checked.model_name,
            checked.mean,
            checked.swap,
            checked.gpu,
            start,
            files,
        )
    return tasks, expected


def make_tasks(spec: Sweep) -> list:
    return grid_tasks(spec.inputs, {**spec.lists, "end": resolve_ends(spec)}, spec.base)


def grid_tasks(inputs, lists: dict, base: dict) -> list:
    """One task per combination of the inputs and the lists, in grid order, each named."""
    axes = [list(dict.fromkeys(inputs))] + [list(dict.fromkeys(lists[k])) for k in SWEPT]
    count = 1
    for values in axes:
        count *= len(values)
    if count > MAX_TASKS:
        raise DreamError(
            f"the sweep has {count} tasks, more than {MAX_TASKS}", "split it into smaller sweeps"
        )
    labels, suffix = input_labels(axes[0]), name_suffix(base)
    tasks = []
    for point in itertools.product(*axes):
        values = dict(zip(GRID_AXES, point, strict=True))
        tasks.append(Task(task_name(values, labels[values["input"]], suffix), values))
    names = Counter(t.name for t in tasks)
    for t in tasks:  # two layer names may share a slug: keep every name unique
        if names[t.name] > 1:
            t.name += "-" + short_hash(repr(sorted(t.values.items())))
    return tasks


def task_job(spec: Sweep, task: Task) -> dict:
    """The plain values of the task's Job (a dict travels to workers as it is).

    Paths are absolute: a worker may run in another folder, or on another machine.
    """
    files = {k: Path(spec.base[k]).resolve() for k in ("model_def", "weights") if spec.base.get(k)}
    output = spec.outdir.resolve() / "images" / f"{task.name}.png"
    if spec.classes:
        schedule = spec.schedule
        return {
            **spec.base,
            **files,
            "command": "draw",
            "klass": str(task.values["class"]),
            "seed": task.values["seed"],
            "schedule": schedule if schedule in draw.SCHEDULES else str(Path(schedule).resolve()),
            "output": output,
        }
    return {
        **spec.base,
        **files,
        **task.values,
        "command": "dream",
        "input": task.values["input"]
        if noise.is_noise(task.values["input"])
        else Path(task.values["input"]).resolve(),
        "output": output,
    }


# --- resuming -----------------------------------------------------------------------------
def expectations(spec: Sweep, tasks) -> dict:
    """What each task's sidecar must say for its result to be kept: name -> record."""
    probe = job.Job.from_values(spec.base)
    definition, weights, mean, swap, model_name = plan.model_config(probe)
    files = {
        "definition": file_hash(Path(definition), "sha256"),
        "weights": file_hash(Path(weights), "sha256"),
    }
    inputs = {}
    for p in spec.inputs:
        with contextlib.suppress(OSError):
            inputs[p] = file_hash(Path(p), "sha256")
    out = {}
    for t in tasks:
        v = t.values
        params = DreamParams(**{k: v[k] for k in SWEPT if k != "seed"}, clip=probe.params.clip)
        out[t.name] = sidecar.identity(
            params,
            v["seed"],
            model_name,
            mean,
            swap,
            probe.gpu,
            {"input": inputs.get(v["input"]), **files},
        )
    return out


def is_kept(image: Path, expected: dict) -> bool:
    """The sidecar describes exactly this dream, and the image is the one it was written with."""
    return sidecar.same_dream(image, expected)


# --- inside a worker ----------------------------------------------------------------------
_CAFFE = threading.Lock()  # one dream at a time per process, however many threads it has


def dream_task(values: dict) -> dict:
    """Run one task's dream (or draw) in this worker; a problem becomes a status, not an
    exception. Its net is built in a child process of this worker (job.run_dream,
    drawjob.run_draw), as for every dream."""
    from . import drawjob

    t0, cpu0 = time.perf_counter(), cpu_seconds()
    with _CAFFE:
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # no per-step bars from workers
                if values["command"] == "draw":
                    drawjob.run_draw(drawjob.DrawJob.from_values(values), say=lambda m: None)
                else:
                    job.run_dream(job.Job.from_values(values), say=lambda message: None)
        except DreamError as e:
            return {"status": "failed", "reason": one_line(str(e))}
        except Exception as e:  # recorded in the manifest; the sweep goes on
            return {"status": "failed", "reason": one_line(f"{type(e).__name__}: {e}")}
        finally:
            worker.wait_for_children()  # so that cpu_seconds counts the dream's process
    return {
        "status": "done",
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": cpu_seconds() - cpu0,
    }


def cpu_seconds() -> float:
    """CPU time of this worker process (all threads) and of its ended children (the dreams)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def one_line(text: str) -> str:
    return " ".join(text.split())[:500]


def run_command(args, say) -> None:
    """``deepdream-caffe sweep``: the sweep its flags ask for; exit 1 when any task failed."""
    spec = from_args(args)
    check_failures(run(spec, say), spec.outdir)


def check_failures(tasks, outdir: Path) -> None:
    """After the sweep: one line and exit status 1 when any task failed."""
    failed = [t for t in tasks if t.status == "failed"]
    if failed:
        raise DreamError(
            f"{len(failed)} of {len(tasks)} tasks failed, e.g. {failed[0].name}: "
            f"{failed[0].reason}",
            f"the reasons are in {outdir / 'manifest.csv'}; "
            "the other results are kept, and a rerun retries only what is missing",
        )


# --- the client -----------------------------------------------------------------------------
def run(spec: Sweep, say=print) -> list:
    """Run the sweep; write the manifest and gallery even when stopped. Returns the tasks.

    Nothing is written before the cluster is reached; after that, Ctrl-C (KeyboardInterrupt,
    raised again at the end) keeps every finished result and records the rest.
    """
    tasks, expected = plan_tasks(spec)
    images = spec.outdir / "images"
    for t in tasks:
        if is_kept(images / f"{t.name}.png", expected[t.name]):
            t.status = "kept"
    todo = [t for t in tasks if t.status == "pending"]
    say(f"sweep: {len(tasks)} tasks, {len(tasks) - len(todo)} already done, {len(todo)} to run")
    if not todo:
        write_outputs(spec, tasks)
        return tasks
    started, interrupted = False, None
    try:
        with connect(spec, say) as client:
            images.mkdir(parents=True, exist_ok=True)
            started = True
            run_on(client, spec, todo)
    except KeyboardInterrupt as e:  # Ctrl-C, or the CLI's SIGTERM (which says which)
        interrupted = e
    finally:
        if started:
            with interrupts.held():  # a signal now (a second Ctrl-C) waits for the manifest
                for t in todo:  # stopped early: a task may have ended while the cluster stopped
                    if t.status == "pending":
                        done = is_kept(images / f"{t.name}.png", expected[t.name])
                        t.status = "done" if done else "interrupted"
                        t.reason = "" if done else "the sweep was stopped before this task ended"
                remove_stale_temporaries(images, tasks)
                write_outputs(spec, tasks)
    if interrupted is not None:
        raise interrupted
    return tasks


@contextlib.contextmanager
def connect(spec: Sweep, say):
    """A client of the embedded LocalCluster, or of the cluster at ``spec.scheduler``."""
    import dask
    from distributed import Client, LocalCluster

    cluster = client = None
    try:
        if spec.scheduler:
            try:
                client = Client(spec.scheduler, timeout="10s")
            except Exception as e:  # OSError, a timeout, a malformed address
                raise DreamError(
                    f"cannot reach the Dask scheduler at {spec.scheduler} ({one_line(str(e))})",
                    "start it (`dask scheduler`) or check the address, e.g. tcp://HOST:8786",
                ) from None
        else:
            threads = str(spec.threads_per_worker)
            blas = {"OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
            # a Ctrl-C meanwhile arrives as the block ends: with ``cluster`` set, closed below
            with dask.config.set({"distributed.nanny.pre-spawn-environ": blas}), sigint_ignored():
                cluster = LocalCluster(
                    n_workers=spec.workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    env=blas,
                    dashboard_address=":0",
                    silence_logs=50,
                    preload=[__name__],  # dask_setup: the workers ignore Ctrl-C
                )
            client = Client(cluster)
        link = dashboard_link(client)
        if link:
            say(f"sweep: dashboard at {link}")
        yield client
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                client.close(timeout=10)
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close(timeout=10)


@contextlib.contextmanager
def sigint_ignored():
    """While the local cluster starts: a Ctrl-C is noted, not lost, and raised (through the
    handler that was there before) once the workers are started, so that they are stopped in
    order. (Ignoring SIGINT here, as this once did, dropped it.) The workers themselves
    ignore Ctrl-C (:func:`dask_setup`): the client hears it and stops them.
    """
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    heard = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: heard.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if heard:
        if callable(previous):
            previous(signal.SIGINT, heard[0])
        raise KeyboardInterrupt


def dask_setup(worker=None) -> None:
    """Run in each local worker as it starts (Dask's ``preload``): Ctrl-C in the terminal
    reaches the whole process group, and only the client is to act on it."""
    import signal

    with contextlib.suppress(ValueError):  # not the main thread: nothing to change
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def dashboard_link(client) -> str | None:
    """The scheduler's dashboard page, when it is running (it needs bokeh)."""
    from urllib.parse import urlparse
    from urllib.request import urlopen

    port = client.scheduler_info().get("services", {}).get("dashboard")
    if not port:
        return None
    url = f"http://{urlparse(client.scheduler.address).hostname}:{port}/status"
    try:
        with urlopen(url, timeout=5) as response:
            page = response.read(4096)
    except OSError:
        return None
    # without bokeh, distributed serves a page saying that the dashboard needs it
    return None if b"needs bokeh" in page else url


def run_on(client, spec: Sweep, todo) -> None:
    """Submit every task (in grid order), record each outcome as it arrives."""
    from distributed import as_completed
    from tqdm import tqdm

    futures = {}
    for i, t in enumerate(todo):
        future = client.submit(
            dream_task, task_job(spec, t), pure=False, priority=-i, key=f"dream-{i}-{t.name}"[:200]
        )
        futures[future] = t
    bar = tqdm(total=len(todo), desc="sweep", unit="task", disable=None)
    try:
        for future in as_completed(futures):
            record(futures[future], future, spec.outdir / "images")
            bar.update(1)
    finally:
        bar.close()
        client.cancel(list(futures))


def record(task: Task, future, images: Path) -> None:
    try:
        result = future.result()
    except Exception as e:  # e.g. KilledWorker: a worker died on this task every time
        task.status, task.reason = "failed", one_line(f"{type(e).__name__}: {e}")
        return
    task.status, task.reason = result["status"], result.get("reason", "")
    task.seconds = result.get("seconds")
    task.cpu_seconds = result.get("cpu_seconds")
    if task.status == "done" and not (images / f"{task.name}.png.json").is_file():
        task.status = "failed"
        task.reason = (
            f"a worker wrote {task.name}.png but it is not visible here: OUTDIR "
            "must be on a file system the workers share"
        )


def remove_stale_temporaries(images: Path, tasks) -> None:
    """Temporary files of writes that a killed worker or Ctrl-C cut short."""
    names = {f".{t.name}.png" for t in tasks} | {f".{t.name}.png.json" for t in tasks}
    for path in images.glob(".*"):
        if any(path.name.startswith(n + ".") for n in names):
            with contextlib.suppress(OSError):
                path.unlink()


def write_outputs(spec: Sweep, tasks) -> None:
    """manifest.json, manifest.csv and the gallery: a signal meanwhile waits for all three."""
    rows = [t.row() for t in tasks]
    with interrupts.held():
        with atomic_path(spec.outdir / "manifest.json") as tmp:
            tmp.write_text(json.dumps({"tasks": rows}, indent=2) + "\n")
        with atomic_path(spec.outdir / "manifest.csv") as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["name"])
            writer.writeheader()
            writer.writerows(rows)
        params = DRAW_PARAMS if spec.classes else gallery.PARAMS
        gallery.write(spec.outdir, rows, spec.grid, params)
