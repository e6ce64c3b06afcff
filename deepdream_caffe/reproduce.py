"""``deepdream-caffe reproduce OUT.png.json``: run a recorded job again and compare bit for bit.

A sidecar holds every field of its job, the hashes of its files and the factors that decide a
dream's bits (:func:`deepdream_caffe.environment.environment`). ``reproduce`` reads it as the
untrusted file it is and rebuilds the :class:`~deepdream_caffe.job.Job`
(:mod:`deepdream_caffe.sidecar`), checks that the files the job names are still the recorded
ones, runs it through :func:`~deepdream_caffe.job.run_dream` or
:func:`~deepdream_caffe.job.run_zoom` into a temporary folder with the recorded seed and
OpenBLAS thread count, and compares each output with the recorded one: the float32 result
(``--raw``) or the pixels when the original file is still there, else the bytes. It says
"bit-identical", or "differs" and names the recorded factors that differ here.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import noise
from .assets import file_hash
from .errors import DreamError
from .job import Job, run_dream, run_zoom
from .sidecar import NOT_A_SIDECAR, job_values, read

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


def rebuild(record: dict, folder: Path) -> Job:
    """The recorded job (checked: :func:`~deepdream_caffe.sidecar.job_values`), writing only
    into ``folder``."""
    job = Job.from_values(job_values(record))
    if job.command == "zoom":
        job.output = folder / "frames"
        frames = record.get("zoom", {}).get("frames_done")
        job.frames = job.frames if frames is None else frames
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
    record = read(sidecar)
    with tempfile.TemporaryDirectory(prefix="deepdream-reproduce-") as tmp:
        if record["command"] == "draw":
            from . import drawjob

            job = drawjob.rebuild(record, Path(tmp))
            drawjob.run_draw(job, say=lambda _: None)
            new = json.loads(Path(tmp, "out.png.json").read_text())
            detail = compare_outputs(record, new)
            say(f"reproduced: {record.get('command_line') or 'draw'} (seed {job.seed})")
            return Verdict(
                identical=not detail, detail=detail, factors=tuple(differing_factors(record, new))
            )
        job = rebuild(record, Path(tmp))
        check_files(record, job)
        if job.command == "zoom":
            run_zoom(job, say=lambda _: None)
            new_path = job.output / "zoom.json"
        else:
            run_dream(job, say=lambda _: None)
            new_path = job.output.with_name(job.output.name + ".json")
        new = json.loads(new_path.read_text())
        detail = compare_outputs(record, new)
        # said once it ran: a refusal before that stays the one line it is
        say(
            f"reproduced: {record.get('command_line') or job.command} "
            f"(seed {job.seed}, BLAS threads {job.threads})"
        )
    return Verdict(
        identical=not detail, detail=detail, factors=tuple(differing_factors(record, new))
    )
