"""The JSON sidecar of a run: written here, read back here (checked, as untrusted input), and
compared here ("the same dream?").

Every output gets one: ``OUT.png.json`` beside a dream or guide, ``zoom.json`` in a zoom's
folder, and the ``run`` part of export-golden's ``bundle.json``. It holds every field of the
job (the dream parameters flat, as the flags name them), the command line, the times, the
sha256 of every file read and written, and the machine
(:func:`deepdream_caffe.environment.environment`). ``reproduce`` rebuilds the job from it
(:func:`read`, :func:`job_values`); ``sweep`` keeps an earlier result whose sidecar describes the
same dream (:func:`identity`, :func:`draw_identity`, :func:`same_dream`).

A sidecar read back is untrusted: every field is checked against its type and against the
one table of limits (:data:`deepdream_caffe.params.LIMITS`) before anything is run, paths
must be absolute and plain, and no permission is taken from it (``allow_python_layers``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from dataclasses import asdict, fields
from datetime import UTC, datetime
from pathlib import Path

from . import noise
from .assets import file_hash
from .errors import DreamError
from .params import DreamParams, check_problem

RECORD_FORMAT = 2  # 2: the job's every field, command line, times, output hashes, provenance
COMMANDS = ("dream", "guide", "zoom", "draw")
NOT_A_SIDECAR = "pass the OUT.png.json written beside a dream or guide, or a zoom's zoom.json"
# Fields that say which dream a result is: a sidecar equal on all of them (and on the files'
# hashes) describes the same dream.
SAME_DREAM = ("params", "seed", "model", "mean_bgr", "channel_swap", "device")
# The same for a draw, with its class index, its schedule's octaves and its start.
SAME_DRAW = ("seed", "model", "mean_bgr", "channel_swap", "device", "start")


# --- writing ------------------------------------------------------------------------------
def file_record(path, name=None) -> dict:
    """Absolute path, size and sha256 of a file (``name``: the path to record instead)."""
    path = Path(path)
    return {
        "path": os.path.abspath(name or path),
        "bytes": path.stat().st_size,
        "sha256": file_hash(path, "sha256"),
    }


def bytes_record(path, data: bytes) -> dict:
    """:func:`file_record` of the bytes read from ``path``, as they were when read."""
    return {
        "path": os.path.abspath(path),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _plain(value):
    if isinstance(value, Path):  # absolute, and normalised: no ".." is recorded
        return str(value) if noise.is_noise(value) else os.path.abspath(value)
    return list(value) if isinstance(value, tuple) else value


def job_fields(job) -> dict:
    """Every field of the job, paths made absolute, the dream parameters flat (``iter_n``,
    ... as the flags name them), so that the record can rebuild it."""
    out = {}
    for f in fields(job):
        value = getattr(job, f.name)
        if isinstance(value, DreamParams):
            out.update(asdict(value))
        else:
            out[f.name] = _plain(value)
    return out


def shared_fields(job, run, outputs: dict) -> dict:
    """What every record of a run carries: the sidecar, zoom.json and bundle.json alike.

    ``run``: the prepared run (its ``started``, ``clock``, ``weights``, ``definition``);
    ``outputs``: name -> file written (hashed here).
    """
    from .environment import environment

    record = {
        "record_format": RECORD_FORMAT,
        "command_line": job.command_line,
        "cwd": os.getcwd(),
        "started_utc": run.started,
        "duration_s": round(time.perf_counter() - run.clock, 3),
        "job": job_fields(job),
        "outputs": {name: file_record(path) for name, path in outputs.items()},
        "weights": run.weights.record(),  # read and hashed once, by the plan
        "definition": run.definition_read,  # the bytes parsed, read once by the plan
        "environment": environment(with_caffe=True),
    }
    if job.input is not None:
        record["input"] = input_record(job.input, run.inputs)
    return record


def input_record(path, read=None) -> dict:
    """An input image's file record, or what a ``noise:WxH`` input was; ``read``: the records
    of the bytes decoded, by path (``job.read_inputs``), used where given."""
    if noise.is_noise(path):
        return noise.record(path)
    return (read or {}).get(str(path)) or file_record(path)


def run_record(job, run, timings, outputs: dict, **extra) -> dict:
    """The JSON sidecar: everything needed to repeat the run and check its inputs."""
    record = {
        "command": job.command,
        "params": asdict(run.params),
        "seed": run.seed,
        "rng": "numpy.random.RandomState(seed).randint(-jitter, jitter+1, 2) per step",
        "model": run.model_name,
        "mean_bgr": list(run.mean),
        "channel_swap": list(run.swap),
        "device": device(job.gpu),
        "timings_s": timings,
        **shared_fields(job, run, outputs),
    }
    record.update(extra)
    return record


def device(gpu) -> str:
    return "cpu" if gpu is None else f"gpu:{gpu}"


def stamp(path, job, run, outputs: dict) -> None:
    """Add :func:`shared_fields` to the JSON record at ``path`` (export-golden's bundle.json),
    under the key ``run``: they name this machine's paths, which the record's own fields avoid."""
    from .imageio import save_json

    path = Path(path)
    save_json({**json.loads(path.read_text()), "run": shared_fields(job, run, outputs)}, path)


# --- reading: a sidecar is untrusted input ---------------------------------------------------
def _bad(what: str, value=None, problem: str = "") -> DreamError:
    shown = "" if value is None else f" ({_short(value)})"
    why = f": it {problem}" if problem else ""
    return DreamError(f"the sidecar's {what} is not valid{shown}{why}", NOT_A_SIDECAR)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def plain_text(value) -> bool:
    """A string a message can show on one line: no control characters, not huge."""
    return (
        isinstance(value, str) and len(value) <= 4096 and not re.search(r"[\x00-\x1f\x7f]", value)
    )


def plain_path(value) -> bool:
    """An absolute path of plain text that names no ``..``: where it was written."""
    return plain_text(value) and value.startswith("/") and ".." not in Path(value).parts


def _is_noise_record(entry) -> bool:
    """What :func:`input_record` writes for a ``noise:WxH`` input."""
    return (
        isinstance(entry, dict)
        and set(entry) == {"noise", "recipe"}
        and plain_text(entry["noise"])
        and noise.is_noise(noise.PREFIX + entry["noise"])
    )


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(name: str, value, kind: str, what: str):
    """``value`` as the number ``name`` of type ``kind`` (int or float), in its range."""
    problem = check_problem(name, value)
    if problem is None and kind == "int" and not _is_int(value):
        problem = "must be an integer"
    if problem:
        raise _bad(f"{what} {name}", value, problem)
    return value


def _hashed(entry, what: str) -> dict:
    """A file record: a dict with an absolute plain ``path`` and a sha256."""
    if (
        not isinstance(entry, dict)
        or not plain_path(entry.get("path"))
        or not (
            isinstance(entry.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])
        )
    ):
        raise _bad(what, entry if not isinstance(entry, dict) else entry.get("path"))
    return entry


# The job as a sidecar records it: each field of :class:`deepdream_caffe.job.Job` (its dream
# parameters flat) and its type there; tests/test_untrusted.py pins this to the dataclasses.
JOB_FIELDS = {
    "command": "str",
    "input": "Path | None",
    "output": "Path | None",
    "guide": "Path | None",
    "model": "str",
    "model_def": "Path | None",
    "weights": "Path | None",
    "mean": "tuple | None",
    "places_mean": "bool",
    "channel_swap": "tuple | None",
    "gpu": "int | None",
    "notebook_net": "bool",
    "allow_python_layers": "bool",
    "verbose": "bool",
    "threads": "int | None",
    "end": "str | None",  # None: the model's default layer
    "iter_n": "int",
    "octave_n": "int",
    "octave_scale": "float",
    "step_size": "float",
    "jitter": "int",
    "clip": "bool",
    "seed": "int | None",
    "max_size": "int | None",
    "tile": "int | None",
    "jpeg_quality": "int",
    "raw": "Path | None",
    "save_steps": "Path | None",
    "frames": "int",
    "scale": "float",
    "format": "str",
    "video": "Path | None",
    "fps": "float",
    "overwrite": "bool",
    "command_line": "str | None",
}


# A draw's job (:class:`deepdream_caffe.drawjob.DrawJob`) as its sidecar records it.
DRAW_JOB_FIELDS = {
    "command": "str",
    "klass": "str",
    "output": "Path | None",
    "raw": "Path | None",
    "start": "Path | None",
    "schedule": "str",
    "model": "str",
    "model_def": "Path | None",
    "weights": "Path | None",
    "allow_python_layers": "bool",
    "gpu": "int | None",
    "threads": "int | None",
    "seed": "int | None",
    "verbose": "bool",
    "command_line": "str | None",
}


def job_kinds(record: dict) -> dict:
    """The job fields a sidecar of this command records, and their types."""
    return DRAW_JOB_FIELDS if record.get("command") == "draw" else JOB_FIELDS


def _job_field(name: str, kind: str, value):
    """One recorded job field, checked against its type and range."""
    what = f"job field {name}"
    if value is None and "None" in kind:
        return None
    if name == "channel_swap":
        if (
            isinstance(value, list)
            and all(_is_int(v) for v in value)
            and sorted(value) == [0, 1, 2]
        ):
            return tuple(value)
        raise _bad(what, value)
    if name == "mean":
        if isinstance(value, list) and len(value) == 3:
            return tuple(_number("mean", v, "float", "job field") for v in value)
        raise _bad(what, value)
    if kind.startswith("Path"):
        if plain_path(value) or (
            name in ("input", "guide", "start") and plain_text(value) and noise.is_noise(value)
        ):
            return Path(value)
        raise _bad(what + " (an absolute path)", value)
    if kind.startswith("bool"):
        if isinstance(value, bool):
            return value
        raise _bad(what, value)
    if kind.startswith(("int", "float")):
        from .params import LIMITS

        if name not in LIMITS:  # every number of a job has its limits
            raise _bad(what, value)
        return _number(name, value, kind.split(" ")[0], "job field")
    if kind.startswith("str"):
        choices = {"command": COMMANDS, "format": ("png", "jpg")}.get(name)
        if plain_text(value) and value and (choices is None or value in choices):
            return value
        raise _bad(what, value)
    raise _bad(what, value)


def read(path) -> dict:
    """The sidecar at ``path``, every field a rerun uses checked; else one DreamError."""
    path = Path(path)
    if not path.is_file():
        raise DreamError(
            f"{path} {'is a folder' if path.is_dir() else 'does not exist'}", NOT_A_SIDECAR
        )
    try:
        record = json.loads(path.read_text(), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise DreamError(
            f"{path} is not a deepdream-caffe sidecar (not JSON)", NOT_A_SIDECAR
        ) from None
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("job"), dict)
        or record.get("command") not in COMMANDS
    ):
        old = isinstance(record, dict) and "params" in record and "job" not in record
        raise DreamError(
            f"{path} is not a deepdream-caffe sidecar of a dream, guide or zoom"
            + (" (it was written before sidecars recorded the whole job)" if old else ""),
            "run the command again to get a sidecar that can be repeated" if old else NOT_A_SIDECAR,
        )
    check(record)
    return record


def _scalar(value) -> bool:
    """A value a message may show: plain text, a finite number, a bool or None."""
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (bool, int)) or plain_text(value)


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def check(record: dict) -> None:
    """Every field that a rerun reads, checked: types, ranges, paths. DreamError if not."""
    if not isinstance(record.get("job"), dict) or record.get("command") not in COMMANDS:
        raise _bad("command or job", record.get("command"))
    if record.get("record_format", RECORD_FORMAT) != RECORD_FORMAT:
        raise _bad("record_format", record.get("record_format"))
    if "seed" not in record:
        raise _bad("seed (missing)")
    _number("seed", record["seed"], "int", "field")
    environment = record.get("environment", {})
    if not isinstance(environment, dict):
        raise _bad("environment", environment)
    for key, value in environment.items():  # reproduce shows and compares these
        if not (_scalar(value) or (isinstance(value, list) and all(map(plain_text, value)))):
            raise _bad(f"environment's {_short(key)}", value)
    if environment.get("blas_threads") is not None:
        _number("threads", environment["blas_threads"], "int", "environment's BLAS")
    outputs = record.get("outputs", {})
    if not isinstance(outputs, dict):
        raise _bad("outputs", outputs)
    for name, entry in outputs.items():
        if not plain_text(name) or "/" in name or name in ("", ".", ".."):
            raise _bad("output name", name)
        _hashed(entry, f"output {name}")
    for name in ("input", "guide", "weights", "definition"):
        if name in record and not (name in ("input", "guide") and _is_noise_record(record[name])):
            _hashed(record[name], f"{name} record")
    zoom = record.get("zoom", {})
    if not isinstance(zoom, dict):
        raise _bad("zoom", zoom)
    if "frames_done" in zoom:
        _number("frames", zoom["frames_done"], "int", "zoom's frames_done")
    for name in ("device", "command_line"):
        if record.get(name) is not None and not plain_text(record[name]):
            raise _bad(name, record[name])
    if record["job"].get("allow_python_layers") not in (None, False):
        raise DreamError(
            "the sidecar asks to run the code of the definition's Python layers, "
            "which reproduce does not do on a file's say-so",
            "if you trust that code, run the original command again with --allow-python-layers",
        )
    kinds = job_kinds(record)
    unknown = sorted(k for k in record["job"] if k not in kinds)
    if unknown:
        raise _bad(f"job field {_short(unknown[0])} (unknown)")
    if record["job"].get("command", record["command"]) != record["command"]:
        raise _bad("job field command", record["job"].get("command"))
    for name, value in record["job"].items():
        _job_field(name, kinds[name], value)


def job_values(record: dict) -> dict:
    """The recorded job's fields, checked and typed (paths as Path, lists as tuples), with
    the recorded seed and BLAS threads; nothing that writes or grants is kept (output, raw,
    save_steps, video, allow_python_layers: the caller decides those)."""
    check(record)
    recorded = {
        **record["job"],
        "seed": record.get("seed"),
        "threads": record.get("environment", {}).get("blas_threads"),
    }
    kinds = job_kinds(record)
    values = {k: _job_field(k, kinds[k], v) for k, v in recorded.items()}
    values.update(command_line=None, save_steps=None, video=None, verbose=False)
    values["allow_python_layers"] = False
    return values


# --- the same dream? --------------------------------------------------------------------------
def identity(params: DreamParams, seed, model, mean, swap, gpu, files: dict) -> dict:
    """What a sidecar must say for its image to be this dream: :data:`SAME_DREAM` and the
    sha256 of ``files`` (input, definition, weights)."""
    return {
        "params": asdict(params),
        "seed": seed,
        "model": model,
        "mean_bgr": list(mean),
        "channel_swap": list(swap),
        "device": device(gpu),
        **files,
    }


def draw_identity(focus: int, octaves, seed, model, mean, swap, gpu, start, files: dict) -> dict:
    """What a draw's sidecar must say for its image to be this draw: the class index, the
    schedule's octaves, :data:`SAME_DRAW` (``start``: the record
    :func:`deepdream_caffe.drawjob.start_record` writes) and the sha256 of ``files``
    (definition, weights)."""
    return {
        "command": "draw",
        "class": focus,
        "octaves": [dict(o) for o in octaves],
        "seed": seed,
        "model": model,
        "mean_bgr": list(mean),
        "channel_swap": list(swap),
        "device": device(gpu),
        "start": start,
        **files,
    }


def _drawn(record: dict) -> dict:
    """A draw's sidecar seen as :func:`draw_identity` (an untrusted record: any shape)."""

    def part(key, field):
        entry = record.get(key)
        return entry.get(field) if isinstance(entry, dict) else None

    return {
        "command": record.get("command"),
        "class": part("class", "index"),
        "octaves": part("schedule", "octaves"),
        **{k: record.get(k) for k in SAME_DRAW},
        **{k: part(k, "sha256") for k in ("definition", "weights")},
    }


def same_dream(image: Path, expected: dict) -> bool:
    """The sidecar beside ``image`` describes exactly the dream ``expected``
    (:func:`identity`, or a draw's :func:`draw_identity`), and the image is the one it was
    written with. A sidecar that is not valid describes no dream."""
    try:
        if not image.is_file():
            return False
        record = read(image.with_name(image.name + ".json"))
    except (OSError, DreamError):
        return False
    if expected.get("command") == "draw":
        same = _drawn(record) == expected
    else:
        same = all(record.get(k) == expected[k] for k in SAME_DREAM) and all(
            isinstance(record.get(k), dict) and record[k].get("sha256") == expected[k]
            for k in ("input", "definition", "weights")
        )
    if not same:
        return False
    written = record.get("outputs", {}).get("image")  # the image it was written with
    return isinstance(written, dict) and written.get("sha256") == file_hash(image, "sha256")
