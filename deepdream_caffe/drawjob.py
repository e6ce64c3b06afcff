"""``deepdream-caffe draw CLASS``: deepdraw's class visualisation as a command.

The parent checks everything a user gives (the class, the schedule, the start image, the net)
and resolves it once into a frozen :class:`DrawPlan`; the Caffe part (:func:`draw_in_caffe`)
runs in a child process (:mod:`deepdream_caffe.worker`); the parent writes the image, ``--raw``
and the sidecar together. The algorithm is :mod:`deepdream_caffe.draw`.

The random numbers: ``RandomState(seed)`` draws the start image first (deepdraw's
``normal(200, 8, (224, 224, 3))``, or ``noise:WxH``; a start image file draws nothing), then
deepdraw's crop offsets, as deepdraw did after ``np.random.seed(seed)``.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import math
import os
import re
import secrets
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from . import (
    assets,
    checks,
    draw,
    dream,
    environment,
    guards,
    imageio,
    models,
    noise,
    sidecar,
    worker,
)
from .errors import DreamError
from .imageio import all_or_nothing, save_array, save_image, save_json

CLASSES = "synset_words.txt"  # Caffe's data/ilsvrc12 list of the 1000 ImageNet classes
CLASSES_FIX = (
    "give the class as an index 0..999, or put Caffe's synset_words.txt (in "
    "caffe_ilsvrc12.tar.gz, which Caffe's data/ilsvrc12/get_ilsvrc_aux.sh downloads from "
    "dl.caffe.berkeleyvision.org) in a DEEPDREAM_CAFFE_MIRROR folder"
)
KEYS = ("layer", "iter_n", "scale", "start_sigma", "end_sigma", "start_step_size", "end_step_size")
# the range of each number of a schedule's octave: (low, high, low included)
LIMITS = {
    "iter_n": (1, 2**31 - 1, True),
    "scale": (0, 16, False),  # nd.zoom's factor of the whole image
    "start_sigma": (0, 100, True),  # the blur's radius; 0 is no blur
    "end_sigma": (0, 100, True),
    "start_step_size": (0, guards.FLT_MAX, False),
    "end_step_size": (0, guards.FLT_MAX, False),
}
MAX_SIDE = 2**15  # of deepdraw's growing square image
NOT_A_SIDECAR = "pass the OUT.png.json written beside a draw"


@dataclass
class DrawJob:
    """Every setting of one draw; the names are the CLI's flags."""

    command: str = "draw"
    klass: str = str(draw.CLASS)  # CLASS as typed: an index, or a name of the class list
    output: Path | None = None
    raw: Path | None = None
    start: Path | None = None  # an image or noise:WxH; None: deepdraw's normal(200, 8)
    schedule: str = "blog"  # blog, coherent, or a .json file in deepdraw's format
    model: str = "bvlc_googlenet"
    model_def: Path | None = None
    weights: Path | None = None
    allow_python_layers: bool = False
    gpu: int | None = None
    threads: int | None = None
    seed: int | None = None  # None: a random seed, printed and recorded
    verbose: bool = False
    command_line: str | None = None

    @classmethod
    def from_values(cls, values) -> DrawJob:
        get = values.get if isinstance(values, dict) else lambda k, d: getattr(values, k, d)
        missing = object()
        picked = {f.name: get(f.name, missing) for f in fields(cls)}
        return cls(**{k: v for k, v in picked.items() if v is not missing})


@dataclass(frozen=True)
class DrawPlan:
    """Everything one draw needs, checked; the net is built from this alone."""

    model_name: str
    definition_label: str  # the file, or the builder, for messages and the sidecar
    definition: bytes  # the whole definition, TEST phase, checked (serialized)
    weights: object  # plan.Weights: read once, in a memory file
    focus: int  # the class index
    class_name: str | None
    count: int  # the classes of the net: the fewest scores of the schedule's layers
    octaves: tuple  # the schedule: dicts in deepdraw's format
    side: int  # the net's (square) input
    pooled: tuple  # the blobs max pooling reads: checked before every backward pass
    read: dict  # records of the files read (definition, schedule): their bytes as parsed
    mean: tuple = draw.MEAN_BGR
    swap: tuple = models.BGR
    gpu: int | None = None
    threads: int | None = None

    def model(self):
        from .definition import import_caffe

        return import_caffe().proto.caffe_pb2.NetParameter.FromString(self.definition)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.weights.fd)


# --- the schedule ------------------------------------------------------------------------
def load_schedule(name: str) -> tuple:
    """``blog`` (deepdraw's cell 5), ``coherent`` (cell 7), or a JSON file: a list of octaves
    in deepdraw's format, checked as untrusted input (the first problem in one line).
    Returns the octaves and, for a file, the record of the bytes read (None otherwise)."""
    if name in draw.SCHEDULES:
        return tuple(dict(o) for o in draw.SCHEDULES[name]), None
    path = Path(name)
    fix = "see docs/commands.md#draw for the format, or give --schedule blog or coherent"
    if path.suffix.lower() != ".json":
        raise DreamError(f"--schedule {name}: not blog, coherent or a .json file", fix)
    if not path.is_file():
        raise DreamError(f"--schedule {name}: no such file", fix)
    if path.stat().st_size > 1 << 20:
        raise DreamError(f"--schedule {name}: larger than 1 MiB", fix)

    def no_constant(text):
        raise ValueError(f"{text} is not a number")

    data = path.read_bytes()  # read once: parsed and recorded from the same bytes
    try:
        octaves = json.loads(data, parse_constant=no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise DreamError(f"--schedule {name} is not JSON ({one_line(e)})", fix) from None
    if not isinstance(octaves, list) or not octaves:
        raise DreamError(f"--schedule {name}: not a non-empty list of octaves", fix)
    if len(octaves) > 1000:
        raise DreamError(f"--schedule {name}: {len(octaves)} octaves, at most 1000", fix)
    checked = tuple(
        check_octave(o, f"--schedule {name}, octave {k}", fix) for k, o in enumerate(octaves)
    )
    return checked, sidecar.bytes_record(path, data)


def check_octave(o, where: str, fix: str) -> dict:
    """One octave of a schedule: the keys deepdraw reads, each of its type and range."""
    if not isinstance(o, dict):
        raise DreamError(f"{where}: not an object with {', '.join(KEYS)}", fix)
    unknown = sorted(set(o) - set(KEYS))
    if unknown:
        raise DreamError(f"{where}: unknown key {unknown[0]!r}", fix)
    missing = [k for k in KEYS if k != "scale" and k not in o]
    if missing:
        raise DreamError(f"{where}: {missing[0]!r} is missing", fix)
    if not isinstance(o["layer"], str) or not o["layer"]:
        raise DreamError(f"{where}: 'layer' must be a layer name", fix)
    out = {"layer": o["layer"]}
    for key, (low, high, low_in) in LIMITS.items():
        if key not in o:
            continue
        value = o[key]
        whole = key == "iter_n"
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
            kind = "a whole number" if whole else "a number"
            raise DreamError(f"{where}: {key!r} must be {kind}, not {value!r}", fix)
        if (
            not math.isfinite(value)
            or not (low < value or (low_in and value == low))
            or value > high
        ):
            ends = f"{'[' if low_in else '('}{low}, {high:g}]"
            raise DreamError(f"{where}: {key!r} is {value!r}, outside {ends}", fix)
        out[key] = value if whole else float(value)  # deepdraw's cells write floats: 11., 6.
    return out


def octave_sides(octaves, side: int) -> list:
    """The side of deepdraw's square image in each octave (nd.zoom's rounding)."""
    return draw.sizes(octaves, side)


# --- the class ---------------------------------------------------------------------------
def class_list() -> tuple[list, Path]:
    """The 1000 lines of Caffe's synset_words.txt ("n01440764 tench, Tinca tinca"), found by
    name in the DEEPDREAM_CAFFE_MIRROR folders or the download cache, checked for its form
    (1000 distinct WordNet ids in order, each with names)."""
    for folder in [*assets.mirror_dirs(), assets.cache_dir()]:
        path = folder / CLASSES
        if path.is_file() and path.stat().st_size < 1 << 20:
            break
    else:
        raise DreamError(f"a class name needs the ImageNet class list {CLASSES}", CLASSES_FIX)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DreamError(f"{path} cannot be read ({one_line(e)})", CLASSES_FIX) from None
    ids = [line.split(" ", 1)[0] for line in lines]
    if (
        len(lines) != 1000
        or not all(re.fullmatch(r"n\d{8} \S.*", line) for line in lines)
        or ids != sorted(set(ids))
    ):
        raise DreamError(f"{path} is not Caffe's synset_words.txt (1000 classes)", CLASSES_FIX)
    return lines, path


def resolve_class(text: str, count: int = 1000) -> tuple[int, str | None]:
    """CLASS as typed -> (index, its names or None): an index 0..count-1 (offline), or a name
    (any of a class's comma-separated names, or its WordNet id, in any case)."""
    text = str(text).strip()
    if re.fullmatch(r"[0-9]+", text):
        index = int(text)
        if index >= count:
            raise DreamError(
                f"class {index} is out of range: the net has {count} classes",
                f"give 0..{count - 1}",
            )
        return index, None
    if not text:
        raise DreamError("the class is empty", "give an index 0..999 or a name, e.g. banana")
    lines, path = class_list()
    key = text.casefold()
    found = []
    for i, line in enumerate(lines):
        wnid, names = line.split(" ", 1)
        if key == wnid or key in (n.strip().casefold() for n in names.split(",")):
            found.append((i, names))
    if len(found) > 1:
        listed = ", ".join(f"{i} ({names})" for i, names in found)
        raise DreamError(
            f"the class name {text!r} names {len(found)} classes: {listed}", "give the index"
        )
    if not found:
        every = [n.strip() for line in lines for n in line.split(" ", 1)[1].split(",")]
        close = difflib.get_close_matches(text, every, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else f"see {path}"
        raise DreamError(
            f"no ImageNet class is called {text!r} ({hint})", "give a name or an index 0..999"
        )
    index, names = found[0]
    if index >= count:
        raise DreamError(
            f"class {text!r} is {index}: the net has {count} classes", f"give 0..{count - 1}"
        )
    return index, names


# --- the plan ----------------------------------------------------------------------------
def plan_draw(job: DrawJob, say=None, also=()) -> DrawPlan:
    """Resolve and check ``job`` before a pixel is drawn or a net is built. ``also``: more
    classes as typed (a sweep's), checked as the job's, before the weights are fetched."""
    from .definition import check_buildable, check_end, definition_bytes, read_definition
    from .plan import read_weights
    from .shapes import ShapeError, declared_input, infer_shapes

    octaves, schedule_read = load_schedule(job.schedule)
    read = {"schedule": schedule_read} if schedule_read else {}
    if job.model_def:
        if not job.weights:
            raise DreamError("--model-def needs --weights", "pass the .caffemodel too")
        source = definition_bytes(job.model_def)  # read once: parsed and recorded alike
        model = read_definition(job.model_def, job.allow_python_layers, source)
        read["definition"] = sidecar.bytes_record(job.model_def, source)
        label, weights_path, model_name = str(job.model_def), job.weights, "custom"
    else:
        from .googlenet import deepdraw_googlenet

        if job.model != "bvlc_googlenet":
            raise DreamError(
                f"draw runs on bvlc_googlenet (deepdraw's net), not {job.model}",
                "leave out --model, or give --model-def and --weights",
            )
        model = deepdraw_googlenet()
        label, model_name = "googlenet.deepdraw_googlenet() (deepdraw's net, built)", job.model
        weights_path = job.weights  # fetched below, once the rest is checked
    check_buildable(model, label, job.allow_python_layers)
    shape = declared_input(model)
    if len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3]:
        raise DreamError(
            f"{label}: the input is {'x'.join(map(str, shape)) or 'not declared'}; deepdraw crops "
            "square RGB images (N x 3 x S x S)",
            "give a definition whose data input is square, e.g. 10x3x224x224",
        )
    side = int(shape[2])
    try:
        shapes = infer_shapes(model, side, side)
    except ShapeError as e:
        raise DreamError(f"{label}: {e}", "check the definition") from None
    count = None
    for o in octaves:
        check_end(model, o["layer"])
        n = math.prod(shapes[o["layer"]][1:])
        count = n if count is None else min(count, n)
    focus, name = resolve_class(job.klass, count)
    for other in also:
        resolve_class(other, count)
    check_sides(job, octaves, side)
    if weights_path is None:
        weights_path = models.model_files(models.get_model(job.model))[1]
    weights = read_weights(Path(weights_path), model, model, job)
    return DrawPlan(
        model_name=model_name,
        definition_label=label,
        definition=model.SerializeToString(),
        weights=weights,
        focus=focus,
        class_name=name,
        count=count,
        octaves=octaves,
        side=side,
        pooled=tuple(guards.max_pool_inputs(model)),
        read=read,
        gpu=job.gpu,
        threads=job.threads,
    )


def check_sides(job, octaves, side) -> None:
    """The start image square and at least the net's input; every octave's image too, and
    in memory."""
    start = side
    if job.start is not None:
        h, w = noise.size(job.start) if noise.is_noise(job.start) else imageio.image_size(job.start)
        if h != w or h < side:
            raise DreamError(
                f"the start {job.start} is {w}x{h}; deepdraw's loop takes a square image of at "
                f"least the net's input, {side}x{side}",
                f"give a square start, e.g. noise:{side}x{side}",
            )
        start = h
    sides = octave_sides(octaves, start)
    for k, s in enumerate(sides):
        if s < side:
            raise DreamError(
                f"octave {k}: its scale makes the image {s}x{s}, smaller than the net's input "
                f"{side}x{side}",
                "use scales of at least 1 (deepdraw's 1.2 grows the image)",
            )
        if s > MAX_SIDE:
            raise DreamError(f"octave {k}: the image would be {s}x{s}", "use smaller scales")
    largest = max(sides)
    need = largest * largest * 3 * (4 + 8 + 4)  # the image, nd.zoom's float64 spline, its result
    free = checks.available_bytes()
    if free is not None and need > 0.9 * free:
        raise DreamError(
            f"the last octave's {largest}x{largest} image needs about {need / 2**30:.1f} GiB and "
            f"{free / 2**30:.1f} GiB are available",
            "use fewer or smaller scales",
        )


# --- the Caffe part: runs in the child process of worker.run ----------------------------
def draw_in_caffe(send, plan: DrawPlan, rng, start):
    """deepdraw on the plan's net, steps reported as they go; ``rng`` after the start image."""
    from .job import finite, quiet_overflow
    from .net import WHOLE, build

    net = build(plan.model(), plan.weights.for_caffe, None, plan.mean, plan.swap, plan.gpu, WHOLE)
    send(("setup", net.dream_setup))

    def step(e, i, net):
        send(("step", e, i, None))

    def check():
        guards.check_forward(net, plan.pooled, "the class score")

    with quiet_overflow():
        result = draw.deepdraw(
            net, start, plan.octaves, focus=plan.focus, rng=rng, callback=step, check=check
        )
    return finite(result)


# --- the command -------------------------------------------------------------------------
def run_draw(job: DrawJob, say=None):
    """draw: one class image (plus sidecar and --raw)."""
    from .job import Progress, check_output, log_to_stderr, sidecar_path

    say = say or log_to_stderr
    start_path = None if job.start is None or noise.is_noise(job.start) else job.start
    schedule = None if job.schedule in draw.SCHEDULES else Path(job.schedule)
    given = [start_path, schedule, job.model_def, job.weights]  # no output may be one of them
    check_output(job.output, *given)
    if job.raw is not None:
        check_output(job.raw, *given, suffixes=(".npy",))
    plan = plan_draw(job, say)
    try:
        seed = job.seed if job.seed is not None else secrets.randbelow(2**32)
        if job.seed is None:
            say(f"seed: {seed} (pass --seed {seed} to repeat this run)")
        started, clock = sidecar.now_utc(), time.perf_counter()
        if plan.threads is not None:  # before the Caffe process is forked: both agree
            environment.set_blas_threads(plan.threads)
        rng = np.random.RandomState(seed)  # the start image first, then the crops
        start_read = {}
        if job.start is None:
            start = draw.start_image(plan.side, plan.side, rng)
        elif noise.is_noise(job.start):
            start = noise.image(job.start, rng)
        else:  # read once: decoded and recorded from the same bytes
            data = imageio.read_bytes(job.start)
            start_read = {str(Path(job.start)): sidecar.bytes_record(job.start, data)}
            start = imageio.load_image(job.start, note=log_to_stderr, data=data)
        array = np.float32(np.rollaxis(start, 2)[::-1]) - np.float32(plan.mean)[:, None, None]
        guards.check_input(array, str(job.start or "the start image"))
        progress = Progress(sum(o["iter_n"] for o in plan.octaves), desc="draw")
        setup = []

        def on_message(message):
            if message[0] == "setup":
                setup.append(time.perf_counter() - t0)
            elif message[0] == "step":
                progress.step(*message[1:])

        t0 = time.perf_counter()
        try:
            result = worker.run(
                draw_in_caffe, plan, rng, start, on_message=on_message, verbose=job.verbose
            )
        finally:
            progress.close()
        t_draw = time.perf_counter() - t0
    finally:
        plan.close()
    with all_or_nothing() as batch:
        written = {"image": batch(job.output)}
        save_image(dream.to_uint8(result), written["image"])
        if job.raw:
            written["raw"] = batch(job.raw)
            save_array(result, written["raw"])
        meta = record(job, plan, seed, started, clock, written, start_read)
        meta["timings_s"] = {"load_s": setup[0], "draw_s": t_draw - setup[0]}
        for name, path in (("image", job.output), ("raw", job.raw)):
            if name in written:
                meta["outputs"][name]["path"] = str(path.absolute())
        save_json(meta, sidecar_path(job.output), batch)
    said = f" ({plan.class_name})" if plan.class_name else ""
    say(
        f"wrote {job.output}: class {plan.focus}{said}, "
        f"{result.shape[1]}x{result.shape[0]}, {t_draw:.1f} s"
    )
    return result


def record(job, plan: DrawPlan, seed, started, clock, outputs, start_read=None) -> dict:
    """The sidecar of a draw: everything needed to repeat it and check its inputs (the files
    as they were read, not as they may be now)."""
    schedule = {"name": job.schedule, "octaves": [dict(o) for o in plan.octaves]}
    if job.schedule not in draw.SCHEDULES:
        schedule.update(plan.read["schedule"])
    return {
        "record_format": sidecar.RECORD_FORMAT,
        "command": "draw",
        "command_line": job.command_line,
        "cwd": os.getcwd(),
        "started_utc": started,
        "duration_s": round(time.perf_counter() - clock, 3),
        "class": {"index": plan.focus, "names": plan.class_name, "as_given": job.klass},
        "schedule": schedule,
        "seed": seed,
        "rng": "numpy.random.RandomState(seed): the start image first, then "
        "normal(mid, 0.3 * slack, 1) for each crop offset, rows then columns, per step",
        "start": start_record(job, plan, start_read),
        "model": plan.model_name,
        "mean_bgr": list(plan.mean),
        "channel_swap": list(plan.swap),
        "device": "cpu" if job.gpu is None else f"gpu:{job.gpu}",
        "job": sidecar.job_fields(job),
        "outputs": {name: sidecar.file_record(path) for name, path in outputs.items()},
        "weights": plan.weights.record(),
        "definition": definition_record(job, plan),
        "environment": environment.environment(with_caffe=True),
    }


def start_record(job, plan: DrawPlan, read=None) -> dict:
    """What the draw started from: deepdraw's noise, ``noise:WxH``, or an image file (``read``:
    the record of its bytes as decoded, by path, where given)."""
    if job.start is None:
        return {
            "deepdraw": "numpy.random.RandomState(seed).normal(200, 8, "
            f"({plan.side}, {plan.side}, 3))"
        }
    return sidecar.input_record(Path(job.start), read)


def definition_record(job, plan: DrawPlan) -> dict:
    if job.model_def:
        return plan.read["definition"]
    return {"builder": plan.definition_label, "sha256": hashlib.sha256(plan.definition).hexdigest()}


def one_line(e) -> str:
    return " ".join(str(e).split())[:200]


# --- reproduce ---------------------------------------------------------------------------
def rebuild(record: dict, folder: Path) -> DrawJob:
    """The recorded draw (an untrusted sidecar, checked by
    :func:`~deepdream_caffe.sidecar.job_values`), writing into ``folder``, with the recorded
    seed and BLAS threads, its files checked unchanged."""
    values = sidecar.job_values(record)
    names = {f.name for f in fields(DrawJob)}
    job = DrawJob(**{k: v for k, v in values.items() if k in names})
    job.output, job.raw = folder / "out.png", folder / "raw.npy"
    files = {
        "weights": (job.weights, record.get("weights")),
        "start": (job.start, record.get("start")),
    }
    if job.model_def:
        files["definition"] = (job.model_def, record.get("definition"))
    if job.schedule not in draw.SCHEDULES:
        schedule = record.get("schedule")
        where = schedule.get("path") if isinstance(schedule, dict) else None
        job.schedule = where if isinstance(where, str) else job.schedule  # absolute
        files["schedule"] = (Path(job.schedule), schedule)
    for name, (path, was) in files.items():
        if path is None or noise.is_noise(path) or not isinstance(was, dict):
            continue
        if not path.is_file():
            raise DreamError(f"the {name} file {path} is gone", "restore it to reproduce the run")
        if assets.file_hash(path, "sha256") != was.get("sha256"):
            raise DreamError(
                f"the {name} file {path} has changed since the run",
                "restore the file the sidecar names",
            )
    return job
