"""One dream job from plain parameters: what the CLI, a sweep worker and ``reproduce`` all run.

A :class:`Job` holds every setting of one run (the model, the dream parameters, the seed, the
files). :func:`run_dream` and :func:`run_zoom` check the inputs before Caffe sees them, prepare
the net, check memory, report progress through a callback and write the outputs and their
sidecar together. Nothing here parses flags: callers build a ``Job`` (the CLI from its
arguments, a sweep from one point of its grid) and call in, so that every route to a dream
runs the same code and gives the same bits.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from . import checks, dream, models, report, video
from .errors import DreamError
from .imageio import all_or_nothing, load_image, save_array, save_image, save_json
from .params import DEFAULTS, ZOOM_FRAMES, ZOOM_SCALE, DreamParams


@dataclass
class Job:
    """Every setting of one run; the names are the CLI's flags (``--iter-n`` is ``iter_n``)."""

    command: str = "dream"  # dream, guide or zoom: recorded in the sidecar
    input: Path | None = None
    output: Path | None = None  # the image, or the frames folder for zoom
    guide: Path | None = None  # the guide image (guide only)
    # the model
    model: str = "bvlc_googlenet"
    model_def: Path | None = None
    weights: Path | None = None
    mean: tuple | None = None  # BGR; None: the model's
    places_mean: bool = False
    channel_swap: tuple | None = None  # None: the model's
    gpu: int | None = None
    notebook_net: bool = False
    verbose: bool = False
    threads: int | None = None  # OpenBLAS threads (Caffe's and numpy's); None: its default
    # the dream
    end: str | None = None  # None: the model's default layer
    iter_n: int = DEFAULTS.iter_n
    octave_n: int = DEFAULTS.octave_n
    octave_scale: float = DEFAULTS.octave_scale
    step_size: float = DEFAULTS.step_size
    jitter: int = DEFAULTS.jitter
    clip: bool = DEFAULTS.clip
    seed: int | None = None  # None: a random seed, printed and recorded
    max_size: int | None = None
    # the outputs
    jpeg_quality: int = 95
    raw: Path | None = None
    save_steps: Path | None = None
    # zoom
    frames: int = ZOOM_FRAMES
    scale: float = ZOOM_SCALE
    format: str = "png"
    video: Path | None = None
    fps: float = 25.0  # frames per second of the video
    command_line: str | None = None  # as typed, recorded in the sidecar

    @classmethod
    def from_values(cls, values) -> Job:
        """A job from any object or mapping with (some of) these names, e.g. parsed flags."""
        get = values.get if isinstance(values, dict) else lambda k, d: getattr(values, k, d)
        missing = object()
        picked = {f.name: get(f.name, missing) for f in fields(cls)}
        return cls(**{k: v for k, v in picked.items() if v is not missing})


def model_config(job, end):
    """Resolve (definition, weights, mean, channel swap, model name) from the job."""
    if job.model_def:
        if not job.weights:
            raise DreamError("--model-def needs --weights", "pass the .caffemodel too")
        mean = job.mean or models.IMAGENET_MEAN_BGR
        return job.model_def, job.weights, mean, job.channel_swap or models.BGR, "custom"
    record = models.get_model(job.model)
    if job.weights:  # your own copy of the weights for a known architecture
        definition, weights = models.model_definition(record), job.weights
    else:
        definition, weights = models.model_files(record)
    mean = job.mean or (models.PLACES205_MEAN_BGR if job.places_mean else record.mean)
    return definition, weights, mean, job.channel_swap or record.channel_swap, record.name


def default_end(job):
    if job.end:
        return job.end
    if job.model_def:
        return DEFAULTS.end
    return models.get_model(job.model).default_end


def make_rng(job, say):
    seed = job.seed if job.seed is not None else secrets.randbelow(2**32)
    if job.seed is None:
        say(f"seed: {seed} (pass --seed {seed} to repeat this run)")
    return seed, np.random.RandomState(seed)


def check_output(path: Path, *inputs: Path, suffixes=(".png", ".jpg", ".jpeg")) -> None:
    """Refuse an output that cannot be written or would overwrite an input."""
    if not path.parent.is_dir():
        raise DreamError(f"output folder {path.parent} does not exist", "create it first")
    if not os.access(path.parent, os.W_OK):
        raise DreamError(f"output folder {path.parent} is not writable",
                         "choose a folder you can write to")
    if path.is_dir():
        raise DreamError(f"output {path} is a folder", "give a file name, e.g. out.png")
    if path.suffix.lower() not in suffixes:
        raise DreamError(f"output {path} does not end in {' or '.join(suffixes)}",
                         f"name it with one of {', '.join(suffixes)}"
                         + (" (.png is lossless)" if ".png" in suffixes else ""))
    for inp in inputs:
        if inp is not None and path.exists() and inp.exists() and path.samefile(inp):
            raise DreamError(f"output {path} is the input", "choose another output name")


class Progress:
    """A tqdm bar over octaves x iterations; also saves every step with --save-steps."""

    def __init__(self, total, save_steps=None, clip=True, desc="dream"):
        from tqdm import tqdm
        self.bar = tqdm(total=total, desc=desc, unit="step", disable=None, leave=False)
        self.save_steps, self.clip = save_steps, clip

    def __call__(self, octave, i, net):
        self.bar.update(1)
        if self.save_steps is not None:
            vis = dream.visible(net, self.clip)
            save_image(dream.to_uint8(vis), self.save_steps / f"octave{octave}_step{i:02d}.png")

    def close(self):
        self.bar.close()


@dataclass
class Run:
    """What dream, guide and zoom share once the job is checked: the net and the rest."""

    net: object
    params: DreamParams
    seed: int
    rng: np.random.RandomState
    model_name: str
    definition: Path
    weights: Path
    mean: tuple
    swap: tuple
    started: str  # UTC, ISO 8601
    clock: float  # time.perf_counter() at the start

    def record(self, job, timings, outputs: dict, **extra) -> dict:
        return report.run_record(job, self, timings, outputs, net_setup=self.net.dream_setup,
                                 **extra)


def prepare(job, end, images) -> Run:
    """Resolve the model, check sizes, memory and weights before Caffe sees them, load the net.

    ``images``: (array, octave_n) for every image that goes through the net.
    """
    from .net import dream_model, load_net

    started, clock = report.now_utc(), time.perf_counter()
    params = DreamParams(end=end, iter_n=job.iter_n, octave_n=job.octave_n,
                         octave_scale=job.octave_scale, step_size=job.step_size,
                         jitter=job.jitter, clip=job.clip)
    definition, weights, mean, swap, model_name = model_config(job, end)
    model = dream_model(definition, end)
    largest = []
    for img, octave_n in images:
        sizes = checks.check_sizes(model, end, *img.shape[:2], octave_n, params.octave_scale)
        largest.append(sizes[-1])
    check_memory(model, max(largest, key=lambda hw: hw[0] * hw[1]), job)
    net = load_net(definition, weights, end, mean, swap, gpu=job.gpu,
                   notebook_net=job.notebook_net)
    if job.threads is not None:
        report.set_blas_threads(job.threads)
    seed, rng = make_rng(job, log_to_stderr)
    return Run(net, params, seed, rng, model_name, definition, weights, mean, swap, started,
               clock)


def check_memory(model, size, job):
    """Refuse a dream that would not fit in memory, with the estimate and a size that fits."""
    free = checks.available_bytes()
    try:
        need = checks.estimate_bytes(model, [size], job.notebook_net)
        if free is None or need <= 0.9 * free:
            return
        fit = checks.side_that_fits(model, size, job.notebook_net, 0.9 * free)
    except checks.Unknown:
        return
    h, w = size
    what = (f"a {w}x{h} dream needs about {need / 2**30:.1f} GiB of memory and "
            f"{free / 2**30:.1f} GiB are available")
    if fit is None:
        raise DreamError(what + ", and even a small image would not fit",
                         "close other programs or use a machine with more memory")
    raise DreamError(what, f"pass --max-size {fit} to scale the image down first, or use a "
                     "smaller image")


def read_inputs(job, *paths):
    log = log_to_stderr if job.verbose else None
    return [load_image(p, log=log, max_size=job.max_size) for p in paths]


def run_dream(job: Job, say=None):
    """dream and guide: one image in, one image out (plus sidecar and --raw)."""
    say = say or log_to_stderr
    end = default_end(job)
    check_output(job.output, job.input, job.guide)
    if job.raw is not None:
        check_output(job.raw, job.input, job.guide, suffixes=(".npy",))
    img, *guide = read_inputs(job, job.input, *([job.guide] if job.guide else []))
    t0 = time.perf_counter()
    run = prepare(job, end, [(img, job.octave_n)] + [(g, 1) for g in guide])
    t_load = time.perf_counter() - t0
    step_params = {"rng": run.rng}
    extra = {}
    if guide:
        features = dream.guide_features(run.net, guide[0], end)
        step_params["objective"] = dream.objective_guide(features)
        extra["guide"] = report.file_record(job.guide)
    if job.save_steps:
        job.save_steps.mkdir(parents=True, exist_ok=True)
    progress = Progress(run.params.octave_n * run.params.iter_n, job.save_steps,
                        run.params.clip)
    t0 = time.perf_counter()
    try:
        result = dream.deepdream(run.net, img, callback=progress, **run.params.as_kwargs(),
                                 **step_params)
    finally:
        progress.close()
    t_dream = time.perf_counter() - t0
    shown = result if run.params.clip else dream.stretch(result)
    with all_or_nothing() as batch:
        written = {"image": batch(job.output)}  # temporary names until the block ends
        save_image(dream.to_uint8(shown), written["image"], job.jpeg_quality)
        if job.raw:
            written["raw"] = batch(job.raw)
            save_array(result, written["raw"])
        sidecar = run.record(job, {"load_s": t_load, "dream_s": t_dream}, written, **extra)
        for name, path in (("image", job.output), ("raw", job.raw)):
            if name in written:  # the name it will have, not the temporary one
                sidecar["outputs"][name]["path"] = str(path.absolute())
        save_json(sidecar, job.output.with_name(job.output.name + ".json"), batch)
    say(f"wrote {job.output} ({result.shape[1]}x{result.shape[0]}, {t_dream:.1f} s)")
    return result


def run_zoom(job: Job, say=None):
    """zoom: dream, zoom in, repeat; frames NNNN.png and zoom.json in the output folder."""
    say = say or log_to_stderr
    end = default_end(job)
    if job.scale >= 1:
        raise DreamError(f"--scale {job.scale} must be below 1", "try the notebook's 0.05")
    if job.video:  # what can be checked about the video before dreaming
        check_output(job.video, job.input, suffixes=video.SUFFIXES)
    ffmpeg = video.check_video(job.fps) if job.video else None
    if job.output.exists() and not job.output.is_dir():
        raise DreamError(f"{job.output} exists and is not a folder", "name a folder for frames")
    (frame,) = read_inputs(job, job.input)
    run = prepare(job, end, [(frame, job.octave_n)])
    job.output.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm
    bar = tqdm(total=job.frames, desc="zoom", unit="frame", disable=None)
    t0 = time.perf_counter()
    done = 0
    try:
        for i, img in dream.zoom_frames(run.net, frame, job.frames, job.scale, rng=run.rng,
                                        **run.params.as_kwargs()):
            save_image(dream.to_uint8(img), job.output / f"{i:04d}.{job.format}",
                       job.jpeg_quality)
            done = i + 1
            bar.update(1)
    finally:
        bar.close()
        # frames already written are kept, and the sidecar says how many there are
        frames = {f"{i:04d}.{job.format}": job.output / f"{i:04d}.{job.format}"
                  for i in range(done)}
        sidecar = run.record(job, {"dream_s": time.perf_counter() - t0}, frames,
                             zoom={"frames_done": done, "frames": job.frames,
                                   "scale": job.scale})
        save_json(sidecar, job.output / "zoom.json")
    if job.video:
        video.encode(job.output, job.format, done, job.video, job.fps, ffmpeg)
    say(f"wrote {done} frames to {job.output}")


def log_to_stderr(message):
    print(message, file=sys.stderr)
