"""The ``deepdream-caffe`` command: parses flags, builds parameters, calls in.

Subcommands: dream, guide, zoom, layers, fetch, info. Every failure a user can cause ends
with one line on stderr and exit status 1 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import assets, checks, dream, models, report
from .errors import DreamError
from .imageio import all_or_nothing, load_image, save_array, save_image, save_json
from .params import GUIDE_END, ZOOM_FRAMES, ZOOM_SCALE, DreamParams

DEFAULTS = DreamParams()


# --- argument types: argparse turns their ValueError into a usage error ------------------
def _number(kind, low=None, low_inclusive=True, what=""):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not np.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if low is not None and (value < low or (value == low and not low_inclusive)):
            raise argparse.ArgumentTypeError(f"{text} {what}")
        return value
    return parse


def _triple(kind):
    def parse(text):
        parts = text.split(",")
        try:
            values = tuple(kind(p) for p in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not three comma-separated numbers") \
                from None
        if len(values) != 3:
            raise argparse.ArgumentTypeError(f"{text!r} must have three values")
        return values
    return parse


def _size(text):
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return w, h


# --- the parser ------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(
        prog="deepdream-caffe", formatter_class=fmt,
        description="DeepDream exactly as google/deepdream dream.ipynb ran it, on BVLC Caffe.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    model = argparse.ArgumentParser(add_help=False)
    g = model.add_argument_group("model")
    g.add_argument("--model", choices=sorted(models.MODELS), default="bvlc_googlenet",
                   help="a known model (weights downloaded and verified)")
    g.add_argument("--model-def", type=Path, metavar="PROTOTXT",
                   help="your own net definition (with --weights)")
    g.add_argument("--weights", type=Path, metavar="CAFFEMODEL",
                   help="weights for --model-def, or local weights for --model")
    g.add_argument("--mean", type=_triple(float), metavar="B,G,R",
                   help="mean subtracted from the input, BGR (default: the model's; "
                        "the notebook's 104,116,122 for --model-def)")
    g.add_argument("--places-mean", action="store_true",
                   help="with places205_googlenet: use its own training mean instead of the "
                        "ImageNet mean the notebook used")
    g.add_argument("--channel-swap", type=_triple(int), metavar="2,1,0", default=None,
                   help="input channel order the net expects (default: BGR, 2,1,0)")
    g.add_argument("--gpu", type=_number(int, 0, what="is not a GPU number"), metavar="N",
                   help="run on GPU N (default: CPU)")
    g.add_argument("--notebook-net", action="store_true",
                   help="load the net exactly as the notebook did (force_backward: every weight "
                        "gradient computed); the default skips them, with bit-identical results")
    g.add_argument("--verbose", action="store_true", help="show Caffe's log and conversions")

    common = argparse.ArgumentParser(add_help=False, parents=[model])
    d = common.add_argument_group("dream")
    d.add_argument("--iter-n", type=_number(int, 1, what="must be at least 1"),
                   default=DEFAULTS.iter_n, help="gradient steps per octave")
    d.add_argument("--octave-n", type=_number(int, 1, what="must be at least 1"),
                   default=DEFAULTS.octave_n, help="number of octaves (scales)")
    d.add_argument("--octave-scale", type=_number(float, 1, False, "must be greater than 1"),
                   default=DEFAULTS.octave_scale, help="size ratio between octaves")
    d.add_argument("--step-size", type=_number(float, 0, False, "must be greater than 0"),
                   default=DEFAULTS.step_size, help="normalised step size")
    d.add_argument("--jitter", type=_number(int, 0, what="must not be negative"),
                   default=DEFAULTS.jitter, help="largest random shift in pixels")
    d.add_argument("--no-clip", dest="clip", action="store_false",
                   help="do not clip pixels to 0..255 after each step (default: clip)")
    d.add_argument("--seed", type=_number(int, 0, what="must not be negative"),
                   help="jitter seed: equals the notebook after np.random.seed(SEED) "
                        "(default: a random seed, printed and recorded)")
    d.add_argument("--max-size", type=_number(int, 16, what="must be at least 16"),
                   metavar="PIXELS", help="scale the input down first so that its longer side "
                   "is at most PIXELS (a deviation from the notebook; default: no scaling)")
    d.add_argument("--jpeg-quality", type=_number(int, 1, what="must be 1..95"), default=95,
                   help="quality for .jpg outputs")

    one = argparse.ArgumentParser(add_help=False, parents=[common])
    one.add_argument("-o", "--output", type=Path, required=True,
                     help="output image (.png lossless, .jpg); a .json sidecar goes beside it")
    one.add_argument("--raw", type=Path, metavar="OUT.npy",
                     help="also save the float32 result before the uint8 cast")
    one.add_argument("--save-steps", type=Path, metavar="DIR",
                     help="save the image after every step, as the notebook displayed it")

    p = sub.add_parser("dream", parents=[one], formatter_class=fmt,
                       help="dream on an image (notebook cell 12)")
    p.add_argument("input", type=Path, help="input image")
    p.add_argument("--end", default=None,
                   help=f"layer to amplify (default: the model's, {DEFAULTS.end})")

    p = sub.add_parser("guide", parents=[one], formatter_class=fmt,
                       help="dream guided by another image (notebook cells 25-27)")
    p.add_argument("input", type=Path, help="input image")
    p.add_argument("guide", type=Path, help="guide image")
    p.add_argument("--end", default=GUIDE_END, help="layer to match")

    p = sub.add_parser("zoom", parents=[common], formatter_class=fmt,
                       help="dream, zoom in, repeat (notebook cell 19)")
    p.add_argument("input", type=Path, help="first frame")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="FRAMES_DIR",
                   help="folder for frames/NNNN.png")
    p.add_argument("--end", default=None, help=f"layer to amplify (default: {DEFAULTS.end})")
    p.add_argument("--frames", type=_number(int, 1, what="must be at least 1"),
                   default=ZOOM_FRAMES, help="number of frames")
    p.add_argument("--scale", type=_number(float, 0, False, "must be in (0, 1)"),
                   default=ZOOM_SCALE, help="zoom per frame")
    p.add_argument("--format", choices=["png", "jpg"], default="png", help="frame format")
    p.add_argument("--video", type=Path, metavar="OUT.mp4",
                   help="also encode the frames with ffmpeg")

    p = sub.add_parser("layers", parents=[model], formatter_class=fmt,
                       help="list the layers usable as --end")
    p.add_argument("--size", type=_size, default=(1024, 575), metavar="WxH",
                   help="input size for the blob shapes")

    p = sub.add_parser("fetch", formatter_class=fmt,
                       help="download and verify files; print their paths")
    p.add_argument("what", nargs="?", default="all", metavar="WHAT",
                   choices=["models", "assets", "all", *models.MODELS, *assets.NOTEBOOK_ASSETS],
                   help="models, assets, all, or one model or notebook file by name")

    sub.add_parser("info", formatter_class=fmt,
                   help="versions, the Caffe build record, BLAS threads, GPU")

    p = sub.add_parser("export-golden", parents=[common], formatter_class=fmt,
                       help="write every intermediate of one dream, for other implementations")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="folder for bundle.npz and bundle.json")
    p.add_argument("--input", type=Path,
                   help="input image (default: the notebook's sky1024px.jpg at --size)")
    p.add_argument("--size", type=_size, metavar="WxH",
                   help="resize the input first (bilinear) (default: the notebook's sky at "
                        "256x144, your --input as it is)")
    p.add_argument("--end", default=None, help=f"layer to amplify (default: {DEFAULTS.end})")

    p = sub.add_parser("compare", formatter_class=fmt,
                       help="measure another implementation's arrays against a golden bundle; "
                            "exit 1 beyond tolerance")
    p.add_argument("bundle", type=Path, metavar="DIR", help="a folder from export-golden")
    p.add_argument("other", type=Path, metavar="OTHER.npz", help="the same arrays, from yours")
    p.add_argument("--report", type=Path, metavar="FILE.md",
                   help="markdown report (default: DIR/compare.md)")

    p = sub.add_parser("verify-notebook", formatter_class=fmt,
                       help="compare our dreams with the images dream.ipynb shows (needs the "
                            "real bvlc_googlenet weights; skips without them)")
    p.add_argument("--seeds", type=_number(int, 2, what="must be at least 2"), default=3,
                   help="seeds per case (the spread needs at least two)")
    p.add_argument("--cells", type=int, nargs="+", default=[12, 14, 21, 27],
                   choices=[12, 14, 21, 27],
                   help="notebook cells to reproduce (21, the 30th zoom frame, takes 30 dreams "
                        "per seed)")
    p.add_argument("--out", type=Path, default=Path("out/verify-notebook"),
                   help="folder for report.md, report.json and the side-by-side images")

    p = sub.add_parser("bench", formatter_class=fmt,
                       help="time the notebook's default dream against its baselines")
    p.add_argument("--quick", action="store_true",
                   help="a small image and few steps: every code path in seconds")
    p.add_argument("--out", type=Path, default=Path("out/bench"),
                   help="folder for bench.json, bench.md and each variant's float32 result")
    p.add_argument("--variants", nargs="+", choices=["ours", "notebook", "pytorch"],
                   default=["ours", "notebook", "pytorch"], help="what to time")
    return parser


# --- shared steps ----------------------------------------------------------------------
def model_config(args, end):
    """Resolve (definition, weights, mean, channel swap, model name) from the flags."""
    if args.model_def:
        if not args.weights:
            raise DreamError("--model-def needs --weights", "pass the .caffemodel too")
        mean = args.mean or models.IMAGENET_MEAN_BGR
        return args.model_def, args.weights, mean, args.channel_swap or models.BGR, "custom"
    record = models.get_model(args.model)
    if args.weights:  # your own copy of the weights for a known architecture
        definition, weights = models.model_definition(record), args.weights
    else:
        definition, weights = models.model_files(record)
    mean = args.mean or (models.PLACES205_MEAN_BGR if args.places_mean else record.mean)
    return definition, weights, mean, args.channel_swap or record.channel_swap, record.name


def default_end(args):
    if args.end:
        return args.end
    if args.model_def:
        return DEFAULTS.end
    return models.get_model(args.model).default_end


def make_rng(args, say):
    seed = args.seed if args.seed is not None else secrets.randbelow(2**32)
    if args.seed is None:
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
                         f"name it with one of {', '.join(suffixes)} (.png is lossless)")
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
    """What dream, guide and zoom share once the flags are checked: the net and the rest."""

    net: object
    params: DreamParams
    seed: int
    rng: np.random.RandomState
    model_name: str
    definition: Path
    weights: Path
    mean: tuple
    swap: tuple

    def record(self, args, timings, **extra) -> dict:
        return report.run_record(args, self.params, self.seed, self.model_name,
                                 self.definition, self.weights, self.mean, self.swap, timings,
                                 net_setup=self.net.dream_setup, **extra)


def prepare(args, end, images) -> Run:
    """Resolve the model, check sizes, memory and weights before Caffe sees them, load the net.

    ``images``: (array, octave_n) for every image that goes through the net.
    """
    from .net import dream_model, load_net

    params = DreamParams(end=end, iter_n=args.iter_n, octave_n=args.octave_n,
                         octave_scale=args.octave_scale, step_size=args.step_size,
                         jitter=args.jitter, clip=args.clip)
    definition, weights, mean, swap, model_name = model_config(args, end)
    model = dream_model(definition, end)
    largest = []
    for img, octave_n in images:
        sizes = checks.check_sizes(model, end, *img.shape[:2], octave_n, params.octave_scale)
        largest.append(sizes[-1])
    check_memory(model, max(largest, key=lambda hw: hw[0] * hw[1]), args)
    net = load_net(definition, weights, end, mean, swap, gpu=args.gpu,
                   notebook_net=args.notebook_net)
    seed, rng = make_rng(args, log_to_stderr)
    return Run(net, params, seed, rng, model_name, definition, weights, mean, swap)


def check_memory(model, size, args):
    """Refuse a dream that would not fit in memory, with the estimate and a size that fits."""
    free = checks.available_bytes()
    try:
        need = checks.estimate_bytes(model, [size], args.notebook_net)
        if free is None or need <= 0.9 * free:
            return
        fit = checks.side_that_fits(model, size, args.notebook_net, 0.9 * free)
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


def read_inputs(args, *paths):
    log = log_to_stderr if args.verbose else None
    return [load_image(p, log=log, max_size=args.max_size) for p in paths]


def run_dream(args, objective_for=None):
    """dream and guide: one image in, one image out (plus sidecar and --raw)."""
    say = log_to_stderr
    end = default_end(args)
    guide_path = getattr(args, "guide", None)
    check_output(args.output, args.input, guide_path)
    if args.raw is not None:
        check_output(args.raw, args.input, guide_path, suffixes=(".npy",))
    img, *guide = read_inputs(args, args.input, *([guide_path] if guide_path else []))
    t0 = time.perf_counter()
    run = prepare(args, end, [(img, args.octave_n)] + [(g, 1) for g in guide])
    t_load = time.perf_counter() - t0
    step_params = {"rng": run.rng}
    extra = {}
    if guide:
        features = dream.guide_features(run.net, guide[0], end)
        step_params["objective"] = dream.objective_guide(features)
        extra["guide"] = report.file_record(guide_path)
    if args.save_steps:
        args.save_steps.mkdir(parents=True, exist_ok=True)
    progress = Progress(run.params.octave_n * run.params.iter_n, args.save_steps,
                        run.params.clip)
    t0 = time.perf_counter()
    try:
        result = dream.deepdream(run.net, img, callback=progress, **run.params.as_kwargs(),
                                 **step_params)
    finally:
        progress.close()
    t_dream = time.perf_counter() - t0
    shown = result if run.params.clip else dream.stretch(result)
    sidecar = run.record(args, {"load_s": t_load, "dream_s": t_dream}, **extra)
    with all_or_nothing() as batch:
        save_image(dream.to_uint8(shown), args.output, args.jpeg_quality, batch)
        save_json(sidecar, args.output.with_name(args.output.name + ".json"), batch)
        if args.raw:
            save_array(result, args.raw, batch)
    say(f"wrote {args.output} ({result.shape[1]}x{result.shape[0]}, {t_dream:.1f} s)")


def cmd_dream(args):
    run_dream(args)


def cmd_guide(args):
    run_dream(args, objective_for=args.guide)


def cmd_zoom(args):
    say = log_to_stderr
    end = default_end(args)
    if args.scale >= 1:
        raise DreamError(f"--scale {args.scale} must be below 1", "try the notebook's 0.05")
    if args.video and shutil.which("ffmpeg") is None:
        raise DreamError("--video needs ffmpeg, which is not installed",
                         "apt-get install ffmpeg, or leave out --video")
    if args.output.exists() and not args.output.is_dir():
        raise DreamError(f"{args.output} exists and is not a folder", "name a folder for frames")
    (frame,) = read_inputs(args, args.input)
    run = prepare(args, end, [(frame, args.octave_n)])
    args.output.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm
    bar = tqdm(total=args.frames, desc="zoom", unit="frame", disable=None)
    t0 = time.perf_counter()
    done = 0
    try:
        for i, img in dream.zoom_frames(run.net, frame, args.frames, args.scale, rng=run.rng,
                                        **run.params.as_kwargs()):
            save_image(dream.to_uint8(img), args.output / f"{i:04d}.{args.format}",
                       args.jpeg_quality)
            done = i + 1
            bar.update(1)
    finally:
        bar.close()
        # frames already written are kept, and the sidecar says how many there are
        sidecar = run.record(args, {"dream_s": time.perf_counter() - t0},
                             zoom={"frames_done": done, "frames": args.frames,
                                   "scale": args.scale})
        save_json(sidecar, args.output / "zoom.json")
    if args.video:
        cmd = ["ffmpeg", "-y", "-loglevel", "error", "-framerate", "25",
               "-i", str(args.output / f"%04d.{args.format}"), "-pix_fmt", "yuv420p",
               str(args.video)]
        if subprocess.run(cmd).returncode != 0:
            raise DreamError(f"ffmpeg could not write {args.video}", "see ffmpeg's message above")
    say(f"wrote {done} frames to {args.output}")


def cmd_layers(args):
    from .net import dream_layers, read_definition
    if args.model_def:
        definition = args.model_def
    else:
        definition = models.model_definition(models.get_model(args.model))
        if definition.name == "deploy_from_builder.prototxt":
            log_to_stderr(f"note: {args.model}'s own definition is not available (its archive "
                          "cannot be fetched); showing the GoogLeNet builder's equivalent")
    model = read_definition(definition)
    shapes = report.blob_shapes(model, args.size)
    print(f"# layers usable as --end, blob shape at {args.size[0]}x{args.size[1]} input;"
          " * = pre-ReLU (the notebook optimised the value before its ReLU)")
    for info in dream_layers(model):
        shape = "x".join(str(d) for d in shapes.get(info.name, ())) or "?"
        print(f"{info.name:32s} {info.type:12s} {shape:>16s} {'*' if info.pre_relu else ''}")


def cmd_fetch(args):
    weights = [m.weights for m in models.MODELS.values()]
    notebook = list(assets.NOTEBOOK_ASSETS.values())
    groups = {"models": weights, "assets": notebook, "all": weights + notebook}
    one = {**{name: m.weights for name, m in models.MODELS.items()}, **assets.NOTEBOOK_ASSETS}
    wanted = groups.get(args.what) or [one[args.what]]
    failures = []
    for asset in wanted:
        try:
            print(assets.fetch(asset))
        except DreamError as e:
            failures.append(e)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        for e in failures:
            log_to_stderr(f"deepdream-caffe: error: {e}")
        raise DreamError(f"{len(failures)} of {len(wanted)} files could not be "
                         "fetched", "see the messages above")


def cmd_info(args):
    for key, value in report.environment(with_caffe=True).items():
        print(f"{key:22s} {value}")


def cmd_export_golden(args):
    import PIL.Image

    from . import bundle
    end = default_end(args)
    path = args.input or assets.fetch(assets.NOTEBOOK_ASSETS["sky1024px.jpg"])
    size = args.size or (None if args.input else (256, 144))
    (img,) = read_inputs(args, path)
    if size and img.shape[1::-1] != size:  # an 8-bit image: nothing lost in the round trip
        img = np.float32(PIL.Image.fromarray(np.uint8(img)).resize(size, PIL.Image.BILINEAR))
    run = prepare(args, end, [(img, args.octave_n)])
    from .net import dream_model
    provenance = {"model": run.model_name, "weights": report.file_record(run.weights),
                  "definition": report.file_record(run.definition),
                  "input": report.file_record(path), "size": list(img.shape[1::-1]),
                  "mean_bgr": list(run.mean), "channel_swap": list(run.swap),
                  "net_setup": run.net.dream_setup,
                  "environment": report.environment(with_caffe=True)}
    bundle.export(args.out, run.net, dream_model(run.definition, end), img, run.params,
                  run.seed, provenance)
    log_to_stderr(f"wrote {args.out / 'bundle.npz'} and {args.out / 'bundle.json'}")


def cmd_compare(args):
    from . import bundle
    for path in (args.bundle / "bundle.json", args.bundle / "bundle.npz", args.other):
        if not path.is_file():
            raise DreamError(f"{path} does not exist", "check the path (export-golden makes "
                             "DIR/bundle.npz and DIR/bundle.json)")
    result = bundle.compare(args.bundle, args.other)
    text = bundle.markdown(result)
    report_path = args.report or args.bundle / "compare.md"
    with all_or_nothing() as batch:
        with batch(report_path).open("w") as f:
            f.write(text)
    print(text, end="")
    if not result["passed"]:
        raise DreamError(f"{args.other} diverges from the bundle (first diverging blob: "
                         f"{result['first_diverging'] or 'none'})", f"see {report_path}")


def cmd_verify_notebook(args):
    import json

    from . import verify
    from .net import load_net
    try:
        definition, weights = models.model_files(models.get_model("bvlc_googlenet"))
    except DreamError as e:
        log_to_stderr(f"verify-notebook: skipped: it needs the real bvlc_googlenet weights, and "
                      f"they are not available here ({e})")
        return
    notebook = json.loads(assets.fetch(assets.NOTEBOOK_ASSETS["dream.ipynb"]).read_text())
    sky, flowers = (load_image(assets.fetch(assets.NOTEBOOK_ASSETS[n]))
                    for n in ("sky1024px.jpg", "flowers.jpg"))

    def dream_fn(case, seed):
        net = load_net(definition, weights, case.end, models.IMAGENET_MEAN_BGR)
        rng = np.random.RandomState(seed)
        if case.zoom_frame is not None:
            frames = dream.zoom_frames(net, sky, case.zoom_frame + 1, rng=rng, end=case.end)
            return deque(frames, maxlen=1)[0][1]  # the last one
        extra = {}
        if case.guide:
            extra["objective"] = dream.objective_guide(
                dream.guide_features(net, flowers, case.end))
        return dream.deepdream(net, sky, end=case.end, rng=rng, **extra)

    args.out.mkdir(parents=True, exist_ok=True)
    results = [verify.run_case(case, dream_fn, notebook, range(args.seeds), args.out)
               for case in verify.CASES if case.cell in args.cells]
    print(verify.report(results, args.out, note=f"Weights: {weights}."), end="")
    if not all(r["holds"] for r in results):
        raise DreamError("the notebook's images are not within our seed-to-seed spread for "
                         "every case", f"see {args.out / 'report.md'}")


def cmd_bench(args):
    from .bench import bench
    record = bench(args.out, quick=args.quick, variants=args.variants, say=log_to_stderr)
    print((args.out / "bench.md").read_text(), end="")
    if not record["results"]:
        raise DreamError("nothing was timed", "choose --variants that can run here")


def log_to_stderr(message):
    print(message, file=sys.stderr)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # glog reads this once, when libcaffe loads: quiet unless --verbose
    os.environ.setdefault("GLOG_minloglevel", "0" if getattr(args, "verbose", False) else "2")
    command = globals()["cmd_" + args.command.replace("-", "_")]
    try:
        command(args)
    except DreamError as e:
        if args.debug:
            raise
        print(f"deepdream-caffe: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the disk is full, a folder vanished, ...: still one line
        if args.debug:
            raise
        print(f"deepdream-caffe: error: {e}; nothing was overwritten (outputs are written "
              "to a temporary name first)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("deepdream-caffe: interrupted; finished outputs are kept, no partial file "
              "was written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
