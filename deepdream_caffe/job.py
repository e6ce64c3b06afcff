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
import dataclasses
import glob
import os
import re
import secrets
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from . import (
    checks,
    dream,
    environment,
    guards,
    imageio,
    interrupts,
    models,
    noise,
    sidecar,
    tile,
    video,
    worker,
)
from .errors import DreamError
from .imageio import all_or_nothing, load_image, save_array, save_image, save_json
from .params import DEFAULTS, LIMITS, ZOOM_FRAMES, ZOOM_SCALE, DreamParams, check_problem
from .plan import Plan, check_input, check_weights_later, make_plan

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
    tile: int | None = None  # --tile: the gradient in tiles of at most N x N (tile.py)
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
    written = [path] if ".npy" in suffixes else [path, sidecar_path(path)]
    for out in written:
        for inp in inputs:
            if inp is not None and out.exists() and inp.exists() and out.samefile(inp):
                what = "output" if out == path else "sidecar of the output"
                raise DreamError(f"{what} {out} is the input {inp}", "choose another output name")


def given_files(job) -> list:
    """Every file the job reads (image, guide, definition, weights): no output may be one."""
    files = [job.input, job.guide, job.model_def, job.weights]
    return [f for f in files if f is not None and not noise.is_noise(f)]


def step_image(folder: Path, octave: int, i: int) -> Path:
    """The file --save-steps writes after step ``i`` of octave ``octave`` (both from 0)."""
    return folder / f"octave{octave}_step{i:02d}.png"


def check_save_steps(job) -> None:
    """Refuse a --save-steps folder that is a file or already holds a step image's name (a
    user's file, an input), or a step image named like an output: steps never replace a file."""
    folder = job.save_steps
    if folder.exists() and not folder.is_dir():
        raise DreamError(f"--save-steps {folder} is not a folder", "give a folder for the steps")
    outputs = {p.absolute() for p in (job.output, job.raw) if p is not None}
    for octave in range(job.params.octave_n):
        for i in range(job.params.iter_n):
            step = step_image(folder, octave, i)
            if step.absolute() in outputs:
                raise DreamError(
                    f"the output {step} is also a --save-steps image",
                    "choose another output name or steps folder",
                )
            if step.exists() or step.is_symlink():
                raise DreamError(
                    f"--save-steps {folder} already holds {step.name}, which a step would replace",
                    "choose an empty folder for the steps",
                )


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


class Progress:
    """A tqdm bar over octaves x iterations, fed by the child's step messages; also saves
    every step with --save-steps."""

    def __init__(self, total, save_steps=None, desc="dream"):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="step", disable=None, leave=False)
        self.save_steps = save_steps

    def step(self, octave, i, visible):
        self.bar.update(1)
        if self.save_steps is not None:
            save_image(dream.to_uint8(visible), step_image(self.save_steps, octave, i))

    def close(self):
        self.bar.close()


@dataclass(frozen=True)
class Run:
    """What the sidecar says of a run: its plan, seed, start, and the net set-up Caffe used."""

    plan: Plan
    seed: int
    started: str  # UTC, ISO 8601
    clock: float  # time.perf_counter() at the start
    net_setup: str = ""
    inputs: dict = dataclasses.field(default_factory=dict)  # read_inputs' records, by path

    # the names the sidecar reads
    params = property(lambda self: self.plan.params)
    model_name = property(lambda self: self.plan.model_name)
    definition = property(lambda self: self.plan.definition_path)
    definition_read = property(lambda self: self.plan.definition_read)
    weights = property(lambda self: self.plan.weights)
    mean = property(lambda self: self.plan.mean)
    swap = property(lambda self: self.plan.swap)

    def record(self, job, timings, outputs: dict, **extra) -> dict:
        return sidecar.run_record(job, self, timings, outputs, net_setup=self.net_setup, **extra)


def plan_images(job, end, octave_ns, *paths, say=None, check_weights_later=False) -> Plan:
    """The run's plan, decided from the files' headers before a pixel is decoded: sizes,
    octaves, memory, the definition and the weights (``check_weights_later``: see
    :func:`~deepdream_caffe.plan.make_plan`)."""
    check_numbers(job)
    pairs = list(zip(paths, octave_ns, strict=False))  # a dream without a guide has one path
    sizes = [(*input_size(p, job.max_size), n) for p, n in pairs]
    free = checks.available_bytes()
    for p in paths:
        if noise.is_noise(p):
            continue
        if free is not None and imageio.decode_bytes(p) > 0.9 * free:
            raise DreamError(
                f"decoding {p} would take more memory than is available ({free / 2**30:.1f} GiB)",
                "give a smaller image",
            )
    names = [str(p) for p, _ in pairs] if len(pairs) > 1 else None  # input or guide?
    try:
        return make_plan(job, end, sizes, names, say, check_weights_later)
    except DreamError as e:  # --max-size leaves noise as it is: the fix is a smaller noise
        if "--max-size" in e.fix and any(noise.is_noise(p) for p in paths):
            raise DreamError(e.problem, "give a smaller noise:WIDTHxHEIGHT") from None
        raise


def input_size(path, max_size=None) -> tuple:
    """(H, W) of an input image from its header, or of ``noise:WxH`` (which --max-size leaves
    as it is)."""
    return noise.size(path) if noise.is_noise(path) else imageio.image_size(path, max_size)


def read_inputs(job, plan, *paths, rng=None, records=None):
    """Decode the images the plan was made for, and check what Caffe will get of them;
    ``noise:WxH`` inputs are drawn from ``rng``, in order (:mod:`deepdream_caffe.noise`).
    Each file is read once: ``records`` (a dict, where given) gets the record of the bytes
    decoded, by path, so that a file edited after this is not what the sidecar hashes."""
    log = log_to_stderr if job.verbose else None
    images = []
    for p in paths:
        if noise.is_noise(p):
            images.append(noise.image(p, rng))
            continue
        data = imageio.read_bytes(p)
        if records is not None:
            records[str(p)] = sidecar.bytes_record(p, data)
        images.append(load_image(p, log=log, max_size=job.max_size, note=log_to_stderr, data=data))
    for img, p, octaves in zip(images, paths, plan.octaves, strict=True):
        if img.shape[:2] != tuple(octaves[-1]):  # replaced since the plan read its header
            raise DreamError(
                f"{p} changed while it was read: {img.shape[1]}x{img.shape[0]}, not the "
                f"{octaves[-1][1]}x{octaves[-1][0]} its header said",
                "run again once nothing writes to it",
            )
        check_input(plan, img, str(p))
    return images


def start(job, plan, say) -> Run:
    """The run's seed (said when it was drawn) and start time. The BLAS threads are set here,
    before the Caffe process is forked, so that it and the record of this one agree."""
    if plan.threads is not None:
        environment.set_blas_threads(plan.threads)
    seed = job.seed if job.seed is not None else secrets.randbelow(2**32)
    if job.seed is None:
        say(f"seed: {seed} (pass --seed {seed} to repeat this run)")
    return Run(plan, seed, sidecar.now_utc(), time.perf_counter())


# --- the Caffe part of each command: runs in the child process of worker.run ------------
def open_net(send, plan: Plan):
    """Build the plan's net in this (child) process and tell the parent which set-up it is."""
    from .net import build

    net = build(
        plan.model(),
        plan.weights.for_caffe,
        plan.end,
        plan.mean,
        plan.swap,
        plan.gpu,
        plan.setup,
        net_size(plan),
    )
    send(("setup", net.dream_setup))
    return net


def net_size(plan: Plan) -> tuple:
    """(H, W): the largest image the dream gives the net, which it is built for. With --tile,
    the input's largest tile (its blobs would otherwise be the whole image's, each at that
    size once used, and memory would no longer follow the tile); a guide goes in whole."""
    first, *guides = plan.octaves
    sizes = tile.tile_sizes(first, plan.tile) if plan.tile else [first[-1]]
    return max([*sizes, *(octaves[-1] for octaves in guides)], key=lambda hw: hw[0] * hw[1])


def dream_in_caffe(send, plan: Plan, rng, tiling: dict, img, guide, save_steps: bool):
    """dream and guide: the result of the notebook's deepdream, steps reported as they go;
    ``rng``: ``RandomState(seed)``, after any noise input was drawn from it; ``tiling``:
    :func:`tiles`."""
    net = open_net(send, plan)
    params = plan.params
    objective = dream.objective_L2
    if guide is not None:
        objective = dream.objective_guide(dream.guide_features(net, guide, params.end))

    def step(octave, i, net):
        send(("step", octave, i, dream.visible(net, params.clip) if save_steps else None))

    with quiet_overflow():
        return dream.deepdream(
            net,
            img,
            callback=step,
            rng=rng,
            objective=guards.guarded(net, objective, plan.pooled, params.end),
            **params.as_kwargs(),
            **tiling,
        )


def tiles(plan: Plan, seed: int) -> dict:
    """make_step's ``gradient`` for --tile (its grid from its own generator), else nothing."""
    if not plan.tile:
        return {}
    return {"gradient": tile.tiled_gradient(plan.tile, tile.grid_rng(seed))}


def zoom_in_caffe(send, plan: Plan, rng, tiling: dict, frame, frames: int, scale: float):
    """zoom: every frame sent as it is made; ``rng`` and ``tiling`` as for
    :func:`dream_in_caffe`."""
    net = open_net(send, plan)
    with quiet_overflow():
        for i, img in dream.zoom_frames(
            net,
            frame,
            frames,
            scale,
            rng=rng,
            objective=guards.guarded(net, dream.objective_L2, plan.pooled, plan.end),
            **plan.params.as_kwargs(),
            **tiling,
        ):
            send(("frame", i, finite(img, f"frame {i}")))


def finite(result, what="the result"):
    """Nothing that is not a finite number leaves the child: an overflowing dream is refused."""
    if not np.isfinite(result).all():
        raise DreamError(
            f"the dream left the float range: {what} holds NaN or infinity",
            "use a smaller --step-size, or leave out --no-clip",
        )
    return result


# --- the commands: the parent checks, runs the Caffe part in a child, writes ------------
def run_dream(job: Job, say=None):
    """dream and guide: one image in, one image out (plus sidecar and --raw)."""
    say = say or log_to_stderr
    end = default_end(job)
    check_output(job.output, *given_files(job))
    if job.raw is not None:
        check_output(job.raw, *given_files(job), suffixes=(".npy",))
    if job.save_steps is not None:
        check_save_steps(job)
    paths = [job.input, *([job.guide] if job.guide else [])]
    # the weights are checked and hashed while the Caffe process builds its net
    plan = plan_images(
        job, end, [job.params.octave_n, 1], *paths, say=say, check_weights_later=True
    )
    try:
        held = []  # said once the weights are checked: a refusal stays one line
        run = start(job, plan, held.append)
        rng = np.random.RandomState(run.seed)  # noise inputs first, then the jitter
        inputs = {}
        img, *guide = read_inputs(job, plan, *paths, rng=rng, records=inputs)
        progress = Progress(plan.params.octave_n * plan.params.iter_n, job.save_steps)
        setup = []

        def on_message(message):
            if message[0] == "setup":
                setup.append((message[1], time.perf_counter() - t0))
            elif message[0] == "step":
                progress.step(*message[1:])

        checked = []

        def check_weights():  # while the Caffe process builds its net; nothing written yet
            checked.append(check_weights_later(plan, job))
            for line in held:
                say(line)
            if job.save_steps:
                job.save_steps.mkdir(parents=True, exist_ok=True)

        t0 = time.perf_counter()
        try:
            result = worker.run(
                dream_in_caffe,
                plan,
                rng,
                tiles(plan, run.seed),
                img,
                guide[0] if guide else None,
                job.save_steps is not None,
                on_message=on_message,
                verbose=job.verbose,
                meanwhile=check_weights,
            )
        finally:
            progress.close()
        t_dream = time.perf_counter() - t0
    finally:
        plan.close()
    finite(result)
    run = dataclasses.replace(run, plan=checked[0], net_setup=setup[0][0], inputs=inputs)
    extra = {"guide": sidecar.input_record(job.guide, inputs)} if guide else {}
    shown = result if plan.params.clip else dream.stretch(result)
    with all_or_nothing() as batch:
        written = {"image": batch(job.output)}  # temporary names until the block ends
        save_image(dream.to_uint8(shown), written["image"], job.jpeg_quality)
        if job.raw:
            written["raw"] = batch(job.raw)
            save_array(result, written["raw"])
        timings = {"load_s": setup[0][1], "dream_s": t_dream - setup[0][1]}
        record = run.record(job, timings, written, **extra)
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
        check_output(job.video, *given_files(job), suffixes=video.SUFFIXES)
    ffmpeg = video.check_video(job.fps) if job.video else None
    check_frames_folder(job.output, job.input, job.overwrite)  # early; again once held
    plan = plan_images(job, end, [job.params.octave_n], job.input, say=say)
    try:
        run = start(job, plan, say)
        rng = np.random.RandomState(run.seed)  # a noise input first, then the jitter
        inputs = {}
        (frame,) = read_inputs(job, plan, job.input, rng=rng, records=inputs)
        run = dataclasses.replace(run, inputs=inputs)
        done = zoom_frames_written(job, plan, run, rng, frame)
    finally:
        plan.close()
    if job.video:
        video.encode(job.output, job.format, done, job.video, job.fps, ffmpeg)
    say(f"wrote {done} frames to {job.output}")


def zoom_frames_written(job, plan, run, rng, frame) -> int:
    """Run the zoom's Caffe part; write each frame as it comes, and zoom.json for those
    written, whatever stops it, holding the folder. Returns the number of frames written."""
    created = not job.output.exists()
    job.output.mkdir(parents=True, exist_ok=True)
    busy = DreamError(
        f"another command is writing frames into {job.output}",
        "wait for it to end, or choose another -o",
    )
    with imageio.folder_held(job.output, busy):
        # checked again, held: a zoom that ended since the first check left its frames
        earlier = check_frames_folder(job.output, job.input, job.overwrite)
        return _zoom_frames(job, plan, run, rng, frame, earlier, created)


def _zoom_frames(job, plan, run, rng, frame, earlier, created) -> int:
    from tqdm import tqdm

    with interrupts.held():  # --overwrite: the earlier run's frames and zoom.json go, all
        for old in earlier:
            old.unlink(missing_ok=True)
    bar = tqdm(total=job.frames, desc="zoom", unit="frame", disable=None)
    t0 = time.perf_counter()
    done, setup = 0, []

    def on_message(message):
        nonlocal done
        if message[0] == "setup":
            setup.append(message[1])
        elif message[0] == "frame":
            i, img = message[1:]
            with interrupts.held():  # the frame and the count zoom.json gives, together
                path = job.output / f"{i:04d}.{job.format}"
                save_image(dream.to_uint8(img), path, job.jpeg_quality)
                done = i + 1
            bar.update(1)

    try:
        worker.run(
            zoom_in_caffe,
            plan,
            rng,
            tiles(plan, run.seed),
            frame,
            job.frames,
            job.scale,
            on_message=on_message,
            verbose=job.verbose,
        )
    finally:
        with interrupts.held():  # a signal now (the record hashes every frame) waits for it
            bar.close()
            # a signal between a frame's temporary file and the block that removes it: remove it
            prefix, suffix = imageio.temporary_name(job.output / f"{done:04d}.{job.format}")
            for stray in job.output.glob(f"{glob.escape(prefix)}*{suffix}"):
                stray.unlink(missing_ok=True)
            if done:  # frames already written are kept, and the sidecar says how many there are
                frames = {
                    f"{i:04d}.{job.format}": job.output / f"{i:04d}.{job.format}"
                    for i in range(done)
                }
                record = dataclasses.replace(run, net_setup=setup[0]).record(
                    job,
                    {"dream_s": time.perf_counter() - t0},
                    frames,
                    zoom={"frames_done": done, "frames": job.frames, "scale": job.scale},
                )
                save_json(record, job.output / "zoom.json")
            elif created:
                with contextlib.suppress(OSError):  # an empty folder this run made
                    job.output.rmdir()
    return done


FRAME_NAME = re.compile(r"\d{4,}\.(png|jpg)")


def check_frames_folder(folder: Path, input_path: Path, overwrite: bool) -> list:
    """Refuse a frames folder holding the input, or another run's frames without
    ``overwrite``; return the files of the earlier run that ``overwrite`` replaces."""
    if folder.exists() and not folder.is_dir():
        raise DreamError(f"{folder} exists and is not a folder", "name a folder for frames")
    if not noise.is_noise(input_path) and input_path.resolve().parent == folder.resolve():
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
    # A stderr that cannot be written (2>/dev/full) loses the news, not the run: an
    # exception here, after the outputs landed, would turn a finished dream into exit 1.
    with contextlib.suppress(OSError, ValueError):
        print(message, file=sys.stderr, flush=True)
