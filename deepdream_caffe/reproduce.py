"""``deepdream-caffe reproduce OUT.png.json``: run a recorded job again and compare bit for bit.

A sidecar holds every field of its job, the hashes of its files and the factors that decide a
dream's bits (:func:`deepdream_caffe.report.environment`). ``reproduce`` rebuilds the
:class:`~deepdream_caffe.job.Job`, checks that the files the job names are still the recorded
ones, runs it through :func:`~deepdream_caffe.job.run_dream` or
:func:`~deepdream_caffe.job.run_zoom` into a temporary folder with the recorded seed and
OpenBLAS thread count, and compares each output with the recorded one: the float32 result
(``--raw``) or the pixels when the original file is still there, else the bytes. It says
"bit-identical", or "differs" and names the recorded factors that differ here.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from . import noise
from .assets import file_hash
from .errors import DreamError
from .job import Job, run_dream, run_zoom

# The recorded factors that can change bits (docs/determinism.md), in the order named.
FACTORS = (
    ("Caffe source", "caffe_source_sha256"),
    ("Caffe patches", "caffe_patches"),
    ("Caffe build flags", "caffe_cmake_flags"),
    ("Caffe compiler", "caffe_compiler"),
    ("Caffe variant", "caffe_variant"),
    ("BLAS library", "blas"),
    ("BLAS kernel", "blas_kernel"),
    ("BLAS threads", "blas_threads"),
    ("numpy", "numpy"),
    ("scipy", "scipy"),
    ("Pillow", "pillow"),
    ("numpy's BLAS", "numpy_blas"),
    ("numpy's BLAS kernel", "numpy_blas_kernel"),
    ("numpy's BLAS threads", "numpy_blas_threads"),
    ("glibc", "glibc"),
    ("Python", "python"),
    ("CPU", "cpu"),
)
NOT_A_SIDECAR = "pass the OUT.png.json written beside a dream or guide, or a zoom's zoom.json"


@dataclass(frozen=True)
class Verdict:
    identical: bool
    detail: str  # how the outputs differ ("" when identical)
    factors: tuple  # "name (recorded X, here Y)" for each recorded factor that differs

    @property
    def line(self) -> str:
        factors = "; ".join(self.factors)
        if self.identical:
            return "bit-identical" + (f" (although these differ: {factors})" if factors else "")
        if factors:
            return f"differs ({self.detail}); recorded factors that differ here: {factors}"
        return f"differs ({self.detail}), although every recorded factor matches"


def load(path: Path) -> dict:
    """The sidecar at ``path``, or a DreamError saying why it is not one this can repeat."""
    path = Path(path)
    if not path.is_file():
        raise DreamError(
            f"{path} {'is a folder' if path.is_dir() else 'does not exist'}", NOT_A_SIDECAR
        )
    try:
        record = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DreamError(
            f"{path} is not a deepdream-caffe sidecar (not JSON)", NOT_A_SIDECAR
        ) from None
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("job"), dict)
        or record.get("command") not in ("dream", "guide", "zoom", "draw")
    ):
        old = isinstance(record, dict) and "params" in record and "job" not in record
        raise DreamError(
            f"{path} is not a deepdream-caffe sidecar of a dream, guide, zoom or draw"
            + (" (it was written before sidecars recorded the whole job)" if old else ""),
            "run the command again to get a sidecar that can be repeated" if old else NOT_A_SIDECAR,
        )
    return record


# The smallest value of each number a job holds (the CLI's own limits).
LOWEST = {
    "iter_n": 1,
    "octave_n": 1,
    "octave_scale": 1,
    "step_size": 0,
    "jitter": 0,
    "seed": 0,
    "max_size": 16,
    "jpeg_quality": 1,
    "frames": 1,
    "scale": 0,
    "gpu": 0,
    "threads": 1,
}
HIGHEST = {"jpeg_quality": 95, "threads": 1024, "scale": 1}
CHOICES = {"command": ("dream", "guide", "zoom"), "format": ("png", "jpg")}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _field(name: str, kind: str, value):
    """A recorded job field, checked against its type: a sidecar is untrusted input."""
    if value is None and "None" in kind:
        return None
    if "Path" in kind and isinstance(value, str):
        return Path(value)
    if (
        name == "channel_swap"
        and isinstance(value, list)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        and sorted(value) == [0, 1, 2]
    ):
        return tuple(value)
    if (
        name == "mean"
        and isinstance(value, list)
        and len(value) == 3
        and all(_number(v) and abs(v) < 1e6 for v in value)
    ):
        return tuple(value)
    if kind.startswith("bool") and isinstance(value, bool):
        return value
    # comparisons first: nan and inf fail them, and a huge integer never becomes a float
    if (
        kind.startswith(("int", "float"))
        and _number(value)
        and LOWEST.get(name, 0) <= value <= HIGHEST.get(name, 2**32 - 1)
        and (kind.startswith("float") or float(value).is_integer())
    ):
        return value if kind.startswith("float") else int(value)
    if kind.startswith("str") and isinstance(value, str) and value in CHOICES.get(name, (value,)):
        return value
    raise DreamError(
        f"the sidecar's job field {name} = {str(value)[:40]!r} is not a valid {kind.split(' ')[0]}",
        NOT_A_SIDECAR,
    )


def rebuild(record: dict, folder: Path) -> Job:
    """The recorded job, writing into ``folder``, with the recorded seed and BLAS threads."""
    recorded = {
        **record["job"],
        "seed": record.get("seed"),
        "threads": record.get("environment", {}).get("blas_threads"),
    }
    job = Job(
        **{
            f.name: _field(f.name, str(f.type), recorded[f.name])
            for f in fields(Job)
            if f.name in recorded
        }
    )
    job.command_line = job.save_steps = job.video = None
    job.verbose = False
    if job.command == "zoom":
        job.output = folder / "frames"
        job.frames = record.get("zoom", {}).get("frames_done", job.frames)
    else:
        job.output = folder / ("out" + (job.output.suffix if job.output else ".png"))
        job.raw = folder / "raw.npy"
    return job


def check_files(record: dict, job: Job) -> None:
    """The files the job names must still be the recorded ones."""
    if job.input is None or job.seed is None or (job.command == "guide") != (job.guide is not None):
        raise DreamError(
            "the sidecar names no input, no seed, or no guide for a guide", NOT_A_SIDECAR
        )
    named = {
        "input": job.input,
        "guide": job.guide,
        "weights": job.weights,
        "definition": job.model_def,
    }
    for name, path in named.items():
        recorded = record.get(name)
        if path is None or noise.is_noise(path) or not isinstance(recorded, dict):
            continue
        if not path.is_file():
            raise DreamError(f"the {name} file {path} is gone", "restore it to reproduce the run")
        now = file_hash(path, "sha256")
        if now != recorded.get("sha256"):
            raise DreamError(
                f"the {name} file {path} has changed since the run (sha256 "
                f"recorded {str(recorded.get('sha256'))[:12]}…, now {now[:12]}…)",
                "restore the file the sidecar names",
            )


def _comparable(key: str, value):
    if key == "caffe_cmake_flags" and isinstance(value, list):  # the venv's path is no factor
        return [f for f in value if not f.startswith(("-DPYTHON_EXECUTABLE", "-DPYTHON_"))]
    return value


def _show(value) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:12] + "…"


def differing_factors(old: dict, new: dict) -> list[str]:
    """Each recorded factor whose value here is not the recorded one, named with both."""
    out = []
    old_env, new_env = old.get("environment", {}), new.get("environment", {})
    for name, key in FACTORS:
        a, b = _comparable(key, old_env.get(key)), _comparable(key, new_env.get(key))
        if a != b:
            hint = f": run with OPENBLAS_CORETYPE={a}" if key == "blas_kernel" else ""
            out.append(f"{name} (recorded {_show(a)}, here {_show(b)}{hint})")
    for name, a, b in (
        ("device", old.get("device"), new.get("device")),
        ("weights", old.get("weights", {}).get("sha256"), new.get("weights", {}).get("sha256")),
        (
            "definition",
            old.get("definition", {}).get("sha256"),
            new.get("definition", {}).get("sha256"),
        ),
    ):
        if a != b:
            out.append(f"{name} (recorded {_show(a)}, here {_show(b)})")
    return out


def _content(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path)
    import PIL.Image

    with PIL.Image.open(path) as im:
        return np.asarray(im)


def compare_outputs(old: dict, new: dict) -> str:
    """ "" when every recorded output was made again with the same content, else how not."""
    outputs = old.get("outputs", {})
    for name in sorted(outputs, key=lambda n: n != "raw"):  # the float32 result first
        was = outputs[name]
        now = new["outputs"].get(name)
        if now is None:
            return f"{name} was not made again"
        if was["sha256"] == now["sha256"]:
            continue
        original = Path(was["path"])
        if not (original.is_file() and file_hash(original, "sha256") == was["sha256"]):
            return f"{name}: its sha256 differs, and the original is not here to compare"
        a, b = _content(original), _content(Path(now["path"]))
        if a.shape != b.shape:
            return f"{name}: shape {b.shape} instead of {a.shape}"
        if not np.array_equal(a, b):
            diff = np.abs(a.astype(np.float64) - b)
            return (
                f"{name}: max |difference| {diff.max():.3g} of 255, {np.mean(diff > 0):.0%} "
                "of values"
            )
    return ""


def reproduce(sidecar: Path, say=print) -> Verdict:
    """Run the sidecar's job again in a temporary folder and compare."""
    record = load(sidecar)
    with tempfile.TemporaryDirectory(prefix="deepdream-reproduce-") as tmp:
        if record["command"] == "draw":
            from . import drawjob

            job = drawjob.rebuild(record, Path(tmp))
            say(f"reproducing: {record.get('command_line') or 'draw'} (seed {job.seed})")
            drawjob.run_draw(job, say=lambda _: None)
            new = json.loads(Path(tmp, "out.png.json").read_text())
            detail = compare_outputs(record, new)
            factors = tuple(differing_factors(record, new))
            return Verdict(identical=not detail, detail=detail, factors=factors)
        job = rebuild(record, Path(tmp))
        check_files(record, job)
        say(
            f"reproducing: {record.get('command_line') or job.command} "
            f"(seed {job.seed}, BLAS threads {job.threads})"
        )
        if job.command == "zoom":
            run_zoom(job, say=lambda _: None)
            new_path = job.output / "zoom.json"
        else:
            run_dream(job, say=lambda _: None)
            new_path = job.output.with_name(job.output.name + ".json")
        new = json.loads(new_path.read_text())
        detail = compare_outputs(record, new)
    return Verdict(
        identical=not detail, detail=detail, factors=tuple(differing_factors(record, new))
    )
