"""``video``: dream every frame of a clip, carrying the dream along (:mod:`deepdream_caffe.anim`).

The parent reads the input's facts (frames, size, rate, audio), checks them, makes one plan,
runs the Caffe part in a child (:func:`video_in_caffe`) and writes each dreamt frame as it
comes: ``NNNN.png`` (lossless) in the frames folder, atomically, then ``resume.npz`` (the
frame's random state, and for ``--flow`` its float dream), so that a run stopped anywhere
continues, when started again with the same arguments, to the bits of an uninterrupted run.
``video.json`` there records the settings; a different run is refused there. At the end the
frames are encoded (H.264, yuv420p, even sizes, the input's audio) into OUT, atomically.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import re
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import PIL.Image

from . import anim, dream, guards, imageio, interrupts, noise, tile, video, worker
from .assets import file_hash
from .errors import DreamError
from .imageio import atomic_path, save_image, save_json

DEFAULT_FPS = 25.0  # a folder of frames has no rate: dreamer.py's createVideo default
GUIDE_SIZE = (224, 224)  # dreamer.py resizes the guide to 224x224 (Lanczos)
STATE = "resume.npz"
SETTINGS = "video.json"


@dataclass(frozen=True)
class Carry:
    """How the dream goes from frame to frame, and which end layers it cycles through."""

    blend: float = 0.5  # weight of the next raw frame in PIL.Image.blend; 0: the raw frame
    flow: bool = False  # carry along Farneback optical flow instead of blending
    layers: tuple = ()  # end layers cycled per frame; () : the job's --end


@dataclass(frozen=True)
class Clip:
    """The input: its frames (PNG files, in order), their size, rate and audio."""

    frames: tuple  # paths
    size: tuple  # (W, H) as stored
    fps: float | None
    audio: Path | None  # the file whose audio goes into the video


# --- the input ------------------------------------------------------------------------
def frames_of_folder(folder: Path) -> list:
    frames = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file())
    if not frames:
        raise DreamError(f"{folder} holds no .png frames", "give a folder of PNG frames or a video")
    return frames


def frame_size(frames: list) -> tuple:
    """The one size of every frame; one line for a frame that is not an image or differs."""
    first = None
    for p in frames:
        try:
            with PIL.Image.open(p) as im:
                size = im.size
        except (OSError, SyntaxError, ValueError) as e:
            raise DreamError(f"cannot read frame {p} ({e})", "give PNG frames") from e
        if first is None:
            first = (p, size)
        elif size != first[1]:
            raise DreamError(
                f"frame {p.name} is {size[0]}x{size[1]} but {first[0].name} is "
                f"{first[1][0]}x{first[1][1]}: the frames of a video share one size",
                "resize the frames to one size",
            )
    return first[1]


def probe(path: Path, ffmpeg: str) -> tuple:
    """(fps, has audio) of a video file, from ffmpeg's description of it."""
    p = subprocess.run([ffmpeg, "-hide_banner", "-i", str(path)], capture_output=True, text=True)
    streams = [line for line in p.stderr.splitlines() if "Stream #" in line]
    pictures = [s for s in streams if "Video:" in s and "attached pic" not in s]
    if not pictures:
        raise DreamError(
            f"{path} is not a video ffmpeg can read (no video stream)",
            "give a video file or a folder of PNG frames",
        )
    rate = re.search(r"([\d.]+)(k?) fps", pictures[0]) or re.search(
        r"([\d.]+)(k?) tbr", pictures[0]
    )
    fps = float(rate.group(1)) * (1000 if rate.group(2) else 1) if rate else None
    return fps, any("Audio:" in s for s in streams)


def extract(path: Path, into: Path, frames: int | None, ffmpeg: str) -> list:
    """Decode the video's frames (the first ``frames``) into RGB PNGs in ``into``."""
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", "0:v:0"]
    if frames is not None:
        cmd += ["-frames:v", str(frames)]
    cmd += ["-fps_mode", "passthrough", "-pix_fmt", "rgb24", str(into / "%06d.png")]
    p = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(into.glob("*.png"))
    if p.returncode != 0 or not found:
        last = (p.stderr.strip().splitlines() or ["no frames"])[-1]
        raise DreamError(
            f"cannot read the frames of {path} ({last})", "give a video ffmpeg can read"
        )
    return found


def read_clip(path: Path, frames: int | None, scratch: Path, ffmpeg: str) -> Clip:
    if not path.exists():
        raise DreamError(f"input {path} does not exist", "check the path")
    if path.is_dir():
        found = frames_of_folder(path)[:frames]
        return Clip(tuple(found), frame_size(found), None, None)
    fps, audio = probe(path, ffmpeg)
    found = extract(path, scratch, frames, ffmpeg)
    return Clip(tuple(found), frame_size(found), fps, path if audio else None)


# --- the Caffe part: runs in the child process of worker.run --------------------------
def video_in_caffe(send, plan, seed, spec):
    """Dream frames ``spec['first']`` .. ``spec['count'] - 1``; send each with its state."""
    from .job import open_net, quiet_overflow

    net = open_net(send, plan)
    params = plan.params.as_kwargs()
    params.pop("end")
    rng = np.random.RandomState(seed)
    if spec["rng_state"] is not None:
        rng.set_state(spec["rng_state"])
    grid = tile.grid_rng(seed) if spec["tile"] else None
    if grid is not None and spec["grid_state"] is not None:
        grid.bit_generator.state = spec["grid_state"]
    gradient = tile.tiled_gradient(spec["tile"], grid) if grid is not None else None
    objectives = {}
    for end in dict.fromkeys(spec["layers"]):
        objective = dream.objective_L2
        if spec["guide"] is not None:
            objective = dream.objective_guide(dream.guide_features(net, spec["guide"], end))
        objectives[end] = guards.guarded(net, objective, plan.pooled, end)

    def step(octave, i, net):
        send(("step",))

    def dream_frame(img, end):
        extra = {"gradient": gradient} if gradient else {}
        return dream.deepdream(
            net, img, end=end, callback=step, rng=rng, objective=objectives[end], **params, **extra
        )

    def read(i):
        img = imageio.load_image(spec["frames"][i], max_size=spec["max_size"])
        return PIL.Image.fromarray(np.uint8(img))

    carry = spec["carry"]
    if carry.flow:
        loop = anim.flow_frames(
            read, spec["count"], dream_frame, carry.layers, spec["first"], spec["previous"]
        )
    else:
        loop = anim.blend_frames(
            read,
            spec["count"],
            dream_frame,
            carry.blend,
            carry.layers,
            spec["first"],
            spec["previous"],
        )
    with quiet_overflow():
        for v, saved, hallu in loop:
            grid_state = grid.bit_generator.state if grid is not None else None
            send(("frame", v, saved, hallu, rng.get_state(), grid_state))


# --- the command: checks, the plan, the child, the frames and the video ---------------
def run_video(job, carry: Carry, frames_dir: Path | None = None, say=None):
    """``video``: INPUT (a video or a folder of PNG frames) to ``job.output`` (.mp4)."""
    from .job import check_output, default_end, given_files, log_to_stderr, start

    say = say or log_to_stderr
    layers = tuple(carry.layers) or (default_end(job),)
    carry = Carry(carry.blend, carry.flow, layers)
    if not 0 <= carry.blend <= 1:
        raise DreamError(f"--blend {carry.blend} is out of range", "give a value in 0..1")
    if any(noise.is_noise(p) for p in (job.input, job.guide)):
        raise DreamError(
            "video dreams a clip or a folder of frames, guided by an image: not noise:WxH",
            "give a video file or a folder of PNG frames (and a guide image)",
        )
    check_output(job.output, *given_files(job), suffixes=video.SUFFIXES)
    ffmpeg = video.check_video(job.fps or DEFAULT_FPS)
    frames_dir = frames_dir or job.output.with_name(job.output.stem + "_frames")
    if frames_dir.exists() and not frames_dir.is_dir():
        raise DreamError(f"--frames-dir {frames_dir} is not a folder", "name a folder for frames")
    out = job.output.absolute()
    if frames_dir.absolute() == out or out in frames_dir.absolute().parents:
        raise DreamError(
            f"--frames-dir {frames_dir} is the output video or inside it",
            "choose another --frames-dir (default: OUT_frames beside OUT)",
        )
    if job.input.is_dir() and job.input.resolve() == frames_dir.resolve():
        raise DreamError("the input folder is the frames folder", "choose another --frames-dir")
    with tempfile.TemporaryDirectory(prefix="deepdream-video-") as scratch:
        clip = read_clip(job.input, job.frames, Path(scratch), ffmpeg)
        count = len(clip.frames)
        fps = job.fps or clip.fps or DEFAULT_FPS
        video.check_video(fps)
        w, h = imageio.scaled_size(clip.size, job.max_size)
        guide = None
        sizes = [(h, w, job.params.octave_n)]
        if job.guide is not None:
            guide = np.float32(
                PIL.Image.fromarray(np.uint8(imageio.load_image(job.guide))).resize(
                    GUIDE_SIZE, PIL.Image.LANCZOS
                )
            )
            sizes.append((*GUIDE_SIZE, 1))
        settings = settings_of(job, carry, clip, (w, h))
        earlier = read_settings(frames_dir, settings)
        if job.seed is None and earlier is not None:
            job = dataclasses.replace(job, seed=earlier["seed"])
        plan = plan_layers(job, layers, sizes, say)
        try:
            run = start(job, plan, say)
            settings["seed"] = run.seed
            done = dream_frames(job, plan, run.seed, carry, clip, guide, frames_dir, settings)
        finally:
            plan.close()
        video.encode(frames_dir, "png", count, job.output, fps, ffmpeg, audio=clip.audio)
    say(f"wrote {job.output} ({count} frames of {w}x{h} at {fps:g} fps; {done} dreamt now)")


def plan_layers(job, layers, sizes, say):
    """One plan for the net that reaches every layer of the cycle (the deepest), each layer
    checked against the definition and the sizes."""
    from .definition import check_end, prune
    from .plan import make_plan

    names = [str(job.input), str(job.guide)] if len(sizes) > 1 else None
    plan = make_plan(job, layers[-1], sizes, names, say)
    model = plan.model()
    order = [layer.name for layer in model.layer]
    tops = {top: i for i, layer in enumerate(model.layer) for top in layer.top}
    for end in layers:
        check_end(model, end)
    deepest = max(layers, key=lambda end: tops.get(end, order.index(end) if end in order else 0))
    if deepest != plan.end:
        plan.close()
        plan = make_plan(job, deepest, sizes, names, say)
    from . import checks

    for end in layers:
        if end != plan.end:
            checks.check_sizes(
                prune(model, end),
                end,
                sizes[0][0],
                sizes[0][1],
                job.params.octave_n,
                job.params.octave_scale,
            )
    return plan


def settings_of(job, carry, clip, size) -> dict:
    """What must match for a run to continue another's frames (--frames may grow)."""
    return {
        "input": str(job.input.resolve()),
        "input_sha256": input_digest(job.input),
        "size": list(size),
        "carry": asdict(carry) | {"layers": list(carry.layers)},
        "params": {
            k: getattr(job.params if hasattr(job.params, k) else job, k)
            for k in (
                "iter_n",
                "octave_n",
                "octave_scale",
                "step_size",
                "jitter",
                "clip",
                "max_size",
                "model",
                "notebook_net",
                "threads",
                "tile",
            )
        }
        | {
            "model_def": str(job.model_def) if job.model_def else None,
            "weights": str(job.weights) if job.weights else None,
            "guide": str(job.guide) if job.guide else None,
            "mean": list(job.mean) if job.mean else None,
            "channel_swap": list(job.channel_swap) if job.channel_swap else None,
        },
        "seed": job.seed,
    }


def input_digest(path: Path) -> str:
    """The input's content: a video file's sha256, or one over every frame of a folder (its
    name and bytes, in order), so that a run continues only on the frames it began with."""
    if not path.is_dir():
        return file_hash(path, "sha256")
    h = hashlib.sha256()
    for frame in frames_of_folder(path):
        h.update(frame.name.encode() + b"\0" + bytes.fromhex(file_hash(frame, "sha256")))
    return h.hexdigest()


def read_settings(frames_dir: Path, settings: dict) -> dict | None:
    """The settings of an earlier run in ``frames_dir``; refuse a different one."""
    path = frames_dir / SETTINGS
    if not path.is_file():
        if frames_dir.is_dir() and any(frames_dir.glob("[0-9][0-9][0-9][0-9]*.png")):
            raise DreamError(
                f"--frames-dir {frames_dir} holds frames of something else",
                "choose an empty or new --frames-dir",
            )
        return None
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DreamError(f"cannot read {path} ({e})", "choose another --frames-dir") from e
    if not isinstance(earlier, dict):
        raise DreamError(
            f"{path} is not the settings file of a video run", "choose another --frames-dir"
        )
    mine = json.loads(json.dumps({k: v for k, v in settings.items() if k != "seed"}))
    theirs = {k: v for k, v in earlier.items() if k != "seed"}
    seed = settings["seed"]
    if mine != theirs or (seed is not None and seed != earlier.get("seed")):
        differ = sorted(k for k in settings if settings[k] != earlier.get(k))
        raise DreamError(
            f"--frames-dir {frames_dir} holds the frames of a run with other settings "
            f"({', '.join(differ) or 'seed'})",
            "re-run with that run's arguments to continue it, or choose another --frames-dir",
        )
    return earlier


def resume_point(frames_dir: Path, carry: Carry):
    """(first frame to dream, previous frame's carry, random state, grid state). The state
    file is read back as untrusted input: every field checked, or one line."""
    state = frames_dir / STATE
    if not state.is_file():
        return 0, None, None, None
    try:
        with np.load(state, allow_pickle=False) as z:
            k, keys = int(z["frame"]), np.asarray(z["keys"])
            rng = ("MT19937", keys, int(z["pos"]), int(z["has_gauss"]), float(z["cached"]))
            grid = json.loads(str(z["grid"])) if str(z["grid"]) else None
            hallu = np.asarray(z["hallu"]) if carry.flow else None
        for i in range(k + 1):
            if not (frames_dir / f"{i:04d}.png").is_file():
                return 0, None, None, None  # frames gone: start again
        for i in range(k + 1):  # every kept frame whole, and of one size
            with PIL.Image.open(frames_dir / f"{i:04d}.png") as im:
                frame = np.asarray(im)
            if i == 0:
                size = frame.shape
            elif frame.shape != size:
                raise ValueError(f"{i:04d}.png has another size")
        good = (
            k >= 0
            and keys.shape == (624,)
            and keys.dtype == np.uint32
            and 0 <= rng[2] <= 624
            and rng[3] in (0, 1)
            and np.isfinite(rng[4])
            and (hallu is None or (hallu.shape == frame.shape and np.isfinite(hallu).all()))
        )
        np.random.RandomState().set_state(rng)  # refuses what numpy would not take
    except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile):
        good = False
    if not good:
        raise DreamError(
            f"{frames_dir} holds a resume state or frames this run cannot continue from "
            "(damaged, or not written by this version)",
            f"delete {state} to dream every frame again, or choose another --frames-dir",
        )
    return k + 1, hallu if carry.flow else frame, rng, grid


def write_state(frames_dir: Path, v, hallu, rng_state, grid_state) -> None:
    _, keys, pos, has_gauss, cached = rng_state
    with atomic_path(frames_dir / STATE) as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            frame=v,
            keys=keys,
            pos=pos,
            has_gauss=has_gauss,
            cached=cached,
            grid=json.dumps(grid_state) if grid_state is not None else "",
            hallu=hallu if hallu is not None else np.zeros(0, np.float32),
        )


def dream_frames(job, plan, seed, carry, clip, guide, frames_dir, settings) -> int:
    """Run the Caffe part from where an earlier run stopped; write each frame and its state,
    holding the frames folder: a second run into it is refused, not mixed with this one."""
    created = not frames_dir.exists()
    frames_dir.mkdir(parents=True, exist_ok=True)
    busy = DreamError(
        f"another command is writing frames into {frames_dir}",
        "wait for it to end, or choose another --frames-dir",
    )
    with imageio.folder_held(frames_dir, busy):
        # again, held: a run that ended since the first check may have begun this folder
        read_settings(frames_dir, settings)
        return _dream_frames(job, plan, seed, carry, clip, guide, frames_dir, settings, created)


def _dream_frames(job, plan, seed, carry, clip, guide, frames_dir, settings, created) -> int:
    from tqdm import tqdm

    count = len(clip.frames)
    save_json(settings, frames_dir / SETTINGS)
    first, previous, rng_state, grid_state = resume_point(frames_dir, carry)
    if first >= count:
        return 0
    steps = plan.params.octave_n * plan.params.iter_n
    bar = tqdm(
        total=(count - first) * steps, desc=f"video from frame {first}", unit="step", disable=None
    )
    done = 0

    def on_message(message):
        nonlocal done
        if message[0] == "step":
            bar.update(1)
        elif message[0] == "frame":
            v, saved, hallu, rng, grid = message[1:]
            with interrupts.held():  # the frame, its state and the count, together
                save_image(saved, frames_dir / f"{v:04d}.png")
                write_state(frames_dir, v, hallu, rng, grid)
                done += 1

    spec = dict(
        frames=[str(p) for p in clip.frames],
        count=count,
        first=first,
        previous=previous,
        rng_state=rng_state,
        grid_state=grid_state,
        carry=carry,
        layers=carry.layers,
        guide=guide,
        max_size=job.max_size,
        tile=job.tile,
    )
    try:
        worker.run(video_in_caffe, plan, seed, spec, on_message=on_message, verbose=job.verbose)
    finally:
        bar.close()
        for name in (f"{first + done:04d}.png", STATE):  # a signal mid-write: no stray file
            prefix, suffix = imageio.temporary_name(frames_dir / name)
            for stray in frames_dir.glob(f"{glob.escape(prefix)}*{suffix}"):
                stray.unlink(missing_ok=True)
        if created and first + done == 0:
            shutil.rmtree(frames_dir, ignore_errors=True)
    return done
