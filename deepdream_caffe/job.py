"""One dream job from plain parameters: what the CLI, a sweep worker and ``reproduce`` all run.

A :class:`Job` holds every setting of one run (the model, the dream parameters, the seed, the
files). :func:`run_dream` and :func:`run_zoom` check the inputs before Caffe sees them, prepare
the net, check memory, report progress through a callback and write the outputs and their
sidecar together. Nothing here parses flags: callers build a ``Job`` (the CLI from its
arguments, a sweep from one point of its grid) and call in, so that every route to a dream
runs the same code and gives the same bits.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import re
import secrets
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from . import checks, dream, environment, guards, imageio, models, sidecar, video
from .errors import DreamError
from .imageio import all_or_nothing, load_image, save_array, save_image, save_json
from .params import DEFAULTS, LIMITS, ZOOM_FRAMES, ZOOM_SCALE, DreamParams, check_problem

# A job's dream parameters by default: the notebook's, but its end is the model's own layer.
JOB_PARAMS = replace(DEFAULTS, end=None)


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
    allow_python_layers: bool = False  # run the code of a definition's Python layers
    verbose: bool = False
    threads: int | None = None  # OpenBLAS threads (Caffe's and numpy's); None: its default
    # the dream: end, iter_n, ... clip, as the notebook names them; end None: the model's
    # default layer
    params: DreamParams = JOB_PARAMS
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
    overwrite: bool = False  # replace the frames of an earlier zoom in the output folder
    command_line: str | None = None  # as typed, recorded in the sidecar

    @classmethod
    def from_values(cls, values) -> Job:
        """A job from any object or mapping with (some of) these names, e.g. parsed flags;
        the dream parameters may be given flat (``iter_n``, ...) or as ``params``."""
        get = values.get if isinstance(values, dict) else lambda k, d: getattr(values, k, d)
        missing = object()
        picked = {f.name: get(f.name, missing) for f in fields(cls) if f.name != "params"}
        job = {k: v for k, v in picked.items() if v is not missing}
        params = get("params", missing)
        params = JOB_PARAMS if params is missing else params
        flat = {f.name: get(f.name, missing) for f in fields(DreamParams)}
        flat = {k: v for k, v in flat.items() if v is not missing}
        return cls(**job, params=replace(params, **flat) if flat else params)


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


def check_numbers(job) -> None:
    """Every number of the job finite and in its range (the CLI's parser already made sure)."""
    for name in LIMITS:
        where = job.params if hasattr(job.params, name) else job
        value = getattr(where, name, None)
        values = () if value is None else value if name == "mean" else (value,)
        for v in values:
            problem = check_problem(name, v)
            if problem:
                flag = "--" + name.replace("_", "-")
                raise DreamError(
                    f"{flag} {value} is out of range: it {problem}",
                    "give a value in its range (see --help)",
                )
    if job.channel_swap is not None and sorted(job.channel_swap) != [0, 1, 2]:
        raise DreamError(
            f"--channel-swap {job.channel_swap} is not an order of 0, 1, 2", "give e.g. 2,1,0"
        )


def default_end(job):
    if job.params.end:
        return job.params.end
    if job.model_def:
        return DEFAULTS.end
    return models.get_model(job.model).default_end


def make_rng(job, say):
    seed = job.seed if job.seed is not None else secrets.randbelow(2**32)
    if job.seed is None:
        say(f"seed: {seed} (pass --seed {seed} to repeat this run)")
    return seed, np.random.RandomState(seed)


def check_output(path: Path, *inputs: Path, suffixes=(".png", ".jpg", ".jpeg")) -> None:
    """Refuse an output that cannot be written or would overwrite an input; checks the names
    of its temporary files and its sidecar too, before any dreaming."""
    if not path.parent.is_dir():
        if path.parent.exists():
            raise DreamError(f"{path.parent} is not a folder", "choose an output in a folder")
        raise DreamError(f"output folder {path.parent} does not exist", "create it first")
    if not os.access(path.parent, os.W_OK):
        raise DreamError(
            f"output folder {path.parent} is not writable", "choose a folder you can write to"
        )
    if path.is_dir():
        raise DreamError(f"output {path} is a folder", "give a file name, e.g. out.png")
    if path.suffix.lower() not in suffixes:
        raise DreamError(
            f"output {path} does not end in {' or '.join(suffixes)}",
            f"name it with one of {', '.join(suffixes)}"
            + (" (.png is lossless)" if ".png" in suffixes else ""),
        )
    imageio.check_name_fits(path)
    if ".npy" not in suffixes:
        imageio.check_name_fits(sidecar_path(path))
    for inp in inputs:
        if inp is not None and path.exists() and inp.exists() and path.samefile(inp):
            raise DreamError(f"output {path} is the input", "choose another output name")


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


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
    pooled: list  # the blobs max pooling reads: checked before every backward pass

    def objective(self, objective=dream.objective_L2):
        """``objective``, checked: nothing out of the float range reaches a backward pass."""
        return guards.guarded(self.net, objective, self.pooled, self.params.end)

    def record(self, job, timings, outputs: dict, **extra) -> dict:
        return sidecar.run_record(
            job, self, timings, outputs, net_setup=self.net.dream_setup, **extra
        )


def check_plan(job, end, sizes, names=None):
    """Resolve the model and check sizes, octaves, memory and the weights file's size, all
    before Caffe or the pixels are loaded. ``sizes``: (H, W, octave_n) of every image that
    goes through the net; ``names``, when given, name them in errors. Returns (model pruned
    to end, definition, weights, mean, swap, model name)."""
    from .net import dream_model, notebook_reach, read_definition

    check_numbers(job)
    definition, weights, mean, swap, model_name = model_config(job, end)
    model = dream_model(definition, end, job.allow_python_layers)
    if job.notebook_net:  # what the notebook's forward(end=end) runs, aux heads included
        model = notebook_reach(read_definition(definition, job.allow_python_layers), end)
    octaves = []
    for (h, w, octave_n), name in zip(sizes, names or [None] * len(sizes), strict=True):
        try:
            octaves.append(check_image_plan(job, model, end, h, w, octave_n))
        except DreamError as e:
            if name is None:
                raise
            raise DreamError(f"{name}: {e.problem}", e.fix) from None
    check_memory(model, max(octaves, key=lambda o: o[-1][0] * o[-1][1]), job)
    if Path(weights).is_file():
        checks.check_weights_size(
            read_definition(definition, job.allow_python_layers), Path(weights)
        )
    return model, definition, weights, mean, swap, model_name


def check_image_plan(job, model, end, h, w, octave_n) -> list:
    """One image's octaves: their number and every size the net must take."""
    check_octave_count(h, w, octave_n, job.params.octave_scale)
    try:
        return checks.check_sizes(model, end, h, w, octave_n, job.params.octave_scale)
    except DreamError as e:
        if not job.notebook_net:
            raise
        raise DreamError(
            f"{e.problem} (with --notebook-net, as in the notebook, every layer before {end} runs)",
            "leave out --notebook-net (the "
            "default runs only the layers the end layer needs), or " + e.fix,
        ) from None


def check_octave_count(h, w, octave_n, octave_scale) -> None:
    """Refuse more octaves than the image has pixels for (before listing their sizes)."""
    if octave_n > 1 and (octave_n - 1) * math.log(octave_scale) > math.log(min(h, w)):
        most = 1 + int(math.log(min(h, w)) / math.log(octave_scale))
        raise DreamError(
            f"--octave-n {octave_n}: with --octave-scale {octave_scale} the "
            f"smallest octave of the {w}x{h} image would be below one pixel",
            f"give at most --octave-n {most}",
        )


def prepare(job, end, images, names=None, load_net=None) -> Run:
    """Check the job (:func:`check_plan`), load the net, check the numbers Caffe will get.

    ``images``: (array, octave_n) for every image that goes through the net; ``names`` say
    which file each came from; ``load_net``: what loads the net (default
    :func:`deepdream_caffe.net.load_net`; a sweep worker passes one that keeps nets).
    """
    if load_net is None:
        from .net import load_net

    started, clock = sidecar.now_utc(), time.perf_counter()
    params = replace(job.params, end=end)
    model, definition, weights, mean, swap, model_name = check_plan(
        job, end, [(*img.shape[:2], octave_n) for img, octave_n in images]
    )
    net = load_net(
        definition,
        weights,
        end,
        mean,
        swap,
        gpu=job.gpu,
        notebook_net=job.notebook_net,
        allow_python_layers=job.allow_python_layers,
    )
    guards.check_net(net, weights)
    for i, (img, _) in enumerate(images):
        guards.check_input(dream.preprocess(net, img), names[i] if names else "the image")
    if job.threads is not None:
        environment.set_blas_threads(job.threads)
    seed, rng = make_rng(job, log_to_stderr)
    return Run(
        net,
        params,
        seed,
        rng,
        model_name,
        definition,
        weights,
        mean,
        swap,
        started,
        clock,
        guards.max_pool_inputs(model),
    )


def check_memory(model, sizes, job):
    """Refuse a dream that would not fit in memory, with the estimate and a size that fits.
    ``sizes``: the (H, W) of every octave of the largest image, smallest first."""
    size = sizes[-1]
    free = checks.available_bytes()
    try:
        need = checks.estimate_bytes(model, sizes, job.notebook_net)
        if free is None or need <= 0.9 * free:
            return
        fit = checks.side_that_fits(model, size, job.notebook_net, 0.9 * free)
    except checks.Unknown:
        return
    h, w = size
    what = (
        f"a {w}x{h} dream needs about {need / 2**30:.1f} GiB of memory and "
        f"{free / 2**30:.1f} GiB are available"
    )
    if fit is None:
        raise DreamError(
            what + ", and even a small image would not fit",
            "close other programs or use a machine with more memory",
        )
    raise DreamError(
        what, f"pass --max-size {fit} to scale the image down first, or use a smaller image"
    )


def read_inputs(job, *paths):
    log = log_to_stderr if job.verbose else None
    return [load_image(p, log=log, max_size=job.max_size, note=log_to_stderr) for p in paths]


def check_images(job, end, octave_ns, *paths) -> None:
    """Decide from the files' headers, before decoding a pixel: sizes, octaves, memory."""
    pairs = list(zip(paths, octave_ns, strict=False))  # a dream without a guide has one path
    sizes = [(*imageio.image_size(p, job.max_size), n) for p, n in pairs]
    free = checks.available_bytes()
    for p in paths:
        if free is not None and imageio.decode_bytes(p) > 0.9 * free:
            raise DreamError(
                f"decoding {p} would take more memory than is available ({free / 2**30:.1f} GiB)",
                "give a smaller image",
            )
    names = [str(p) for p, _ in pairs] if len(pairs) > 1 else None  # input or guide?
    check_plan(job, end, sizes, names)


def run_dream(job: Job, say=None, load_net=None):
    """dream and guide: one image in, one image out (plus sidecar and --raw); ``load_net``:
    as for :func:`prepare`."""
    say = say or log_to_stderr
    end = default_end(job)
    check_output(job.output, job.input, job.guide)
    if job.raw is not None:
        check_output(job.raw, job.input, job.guide, suffixes=(".npy",))
    paths = [job.input, *([job.guide] if job.guide else [])]
    check_images(job, end, [job.params.octave_n, 1], *paths)
    img, *guide = read_inputs(job, *paths)
    t0 = time.perf_counter()
    images = [(img, job.params.octave_n)] + [(g, 1) for g in guide]
    run = prepare(job, end, images, paths, load_net=load_net)
    t_load = time.perf_counter() - t0
    step_params = {"rng": run.rng, "objective": run.objective()}
    extra = {}
    if guide:
        features = dream.guide_features(run.net, guide[0], end)
        step_params["objective"] = run.objective(dream.objective_guide(features))
        extra["guide"] = sidecar.file_record(job.guide)
    if job.save_steps:
        job.save_steps.mkdir(parents=True, exist_ok=True)
    progress = Progress(run.params.octave_n * run.params.iter_n, job.save_steps, run.params.clip)
    t0 = time.perf_counter()
    try:
        with quiet_overflow():
            result = dream.deepdream(
                run.net, img, callback=progress, **run.params.as_kwargs(), **step_params
            )
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
        record = run.record(job, {"load_s": t_load, "dream_s": t_dream}, written, **extra)
        for name, path in (("image", job.output), ("raw", job.raw)):
            if name in written:  # the name it will have, not the temporary one
                record["outputs"][name]["path"] = str(path.absolute())
        save_json(record, sidecar_path(job.output), batch)
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
    earlier = check_frames_folder(job.output, job.input, job.overwrite)
    check_images(job, end, [job.params.octave_n], job.input)
    (frame,) = read_inputs(job, job.input)
    run = prepare(job, end, [(frame, job.params.octave_n)], [job.input])
    created = not job.output.exists()
    job.output.mkdir(parents=True, exist_ok=True)
    for old in earlier:  # --overwrite: the earlier run's frames go, now that this one starts
        old.unlink(missing_ok=True)
    from tqdm import tqdm

    bar = tqdm(total=job.frames, desc="zoom", unit="frame", disable=None)
    t0 = time.perf_counter()
    done = 0
    try:
        with quiet_overflow():
            for i, img in dream.zoom_frames(
                run.net,
                frame,
                job.frames,
                job.scale,
                rng=run.rng,
                objective=run.objective(),
                **run.params.as_kwargs(),
            ):
                save_image(
                    dream.to_uint8(img), job.output / f"{i:04d}.{job.format}", job.jpeg_quality
                )
                done = i + 1
                bar.update(1)
    finally:
        bar.close()
        # a signal between a frame's temporary file and the block that removes it: remove it
        prefix, suffix = imageio.temporary_name(job.output / f"{done:04d}.{job.format}")
        for stray in job.output.glob(f"{glob.escape(prefix)}*{suffix}"):
            stray.unlink(missing_ok=True)
        if done:  # frames already written are kept, and the sidecar says how many there are
            frames = {
                f"{i:04d}.{job.format}": job.output / f"{i:04d}.{job.format}" for i in range(done)
            }
            record = run.record(
                job,
                {"dream_s": time.perf_counter() - t0},
                frames,
                zoom={"frames_done": done, "frames": job.frames, "scale": job.scale},
            )
            save_json(record, job.output / "zoom.json")
        elif created:
            with contextlib.suppress(OSError):  # an empty folder this run made
                job.output.rmdir()
    if job.video:
        video.encode(job.output, job.format, done, job.video, job.fps, ffmpeg)
    say(f"wrote {done} frames to {job.output}")


FRAME_NAME = re.compile(r"\d{4,}\.(png|jpg)")


def check_frames_folder(folder: Path, input_path: Path, overwrite: bool) -> list:
    """Refuse a frames folder holding the input, or another run's frames without
    ``overwrite``; return the files of the earlier run that ``overwrite`` replaces."""
    if folder.exists() and not folder.is_dir():
        raise DreamError(f"{folder} exists and is not a folder", "name a folder for frames")
    if input_path.resolve().parent == folder.resolve():
        raise DreamError(
            f"the input {input_path} is inside the frames folder {folder}, where "
            "zoom writes NNNN.png",
            "move the input out, or choose another -o",
        )
    if not folder.is_dir():
        return []
    earlier = sorted(
        p for p in folder.iterdir() if FRAME_NAME.fullmatch(p.name) or p.name == "zoom.json"
    )
    if earlier and not overwrite:
        raise DreamError(
            f"{folder} holds {len(earlier)} files of an earlier zoom ({earlier[0].name}, ...)",
            "choose an empty folder, or pass --overwrite to replace them",
        )
    return earlier


def quiet_overflow():
    """numpy's overflow warnings off: an overflowing step is stopped by the guards (or clipped)
    with one clear line instead. Only warnings change; no number does."""
    return np.errstate(over="ignore", invalid="ignore")


def log_to_stderr(message):
    print(message, file=sys.stderr)
