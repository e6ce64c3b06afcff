"""Every subcommand and flag of ``deepdream-caffe``: the argparse parser the CLI dispatches on.

The argument types and shared pieces are in :mod:`deepdream_caffe.flags`; each default comes
from :mod:`deepdream_caffe.params` (the notebook's) or its table of limits (``LIMITS``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import assets, models
from .flags import (
    DREAM_NUMBERS,
    HelpFormatter,
    Parser,
    add_general,
    add_output,
    add_sweep_arguments,
    channel_order,
    number,
    refuse,
    size_wxh,
    triple,
    version,
)
from .params import DEFAULTS, GUIDE_END, ZOOM_FRAMES, ZOOM_SCALE


def build_parser() -> argparse.ArgumentParser:
    fmt = HelpFormatter
    parser = Parser(
        prog="deepdream-caffe",
        formatter_class=fmt,
        description="DeepDream exactly as google/deepdream dream.ipynb ran it, on BVLC Caffe.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    add_general(parser, default=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, **kwargs):  # a subcommand, its help formatted as the top level's
        return sub.add_parser(name, formatter_class=fmt, **kwargs)

    arch = argparse.ArgumentParser(add_help=False)
    model = argparse.ArgumentParser(add_help=False)
    # layers takes the architecture only (arch); the dreams take all of `model`
    for g in (arch.add_argument_group("model"), model.add_argument_group("model")):
        g.add_argument(
            "--model",
            choices=sorted(models.MODELS),
            default="bvlc_googlenet",
            help="a known model (weights downloaded and verified)",
        )
        g.add_argument(
            "--model-def",
            type=Path,
            metavar="PROTOTXT",
            help="your own net definition (dreams need --weights with it)",
        )
        g.add_argument(
            "--allow-python-layers",
            action="store_true",
            help="accept Python layers in the definition: Caffe imports the module "
            "each names and runs its code (refused by default)",
        )
    g.add_argument(
        "--weights",
        type=Path,
        metavar="CAFFEMODEL",
        help="weights for --model-def, or local weights for --model",
    )
    g.add_argument(
        "--mean",
        type=triple(float, "mean"),
        metavar="B,G,R",
        help="mean subtracted from the input, blue,green,red whatever the "
        "--channel-swap (default: the model's; the notebook's 104,116,122 "
        "for --model-def)",
    )
    g.add_argument(
        "--places-mean",
        action="store_true",
        help="with --model places205_googlenet: use its own training mean instead "
        "of the ImageNet mean the notebook used",
    )
    g.add_argument(
        "--channel-swap",
        type=channel_order,
        metavar="2,1,0",
        default=None,
        help="the net's input channels as indices into R,G,B: 2,1,0 for BGR nets "
        "(the notebook's [::-1]), 0,1,2 for nets trained on RGB (default: the "
        "model's; 2,1,0 for --model-def)",
    )
    g.add_argument(
        "--gpu", type=number(int, "gpu"), metavar="N", help="run on GPU N (default: CPU)"
    )
    g.add_argument(
        "--notebook-net",
        action="store_true",
        help="load the net exactly as the notebook did (the whole definition, "
        "force_backward: every weight gradient computed); the default prunes it "
        "to --end and skips the weight gradients, checked bit-identical first",
    )

    common = argparse.ArgumentParser(add_help=False, parents=[model])
    d = common.add_argument_group("dream")
    for name, kind, text in DREAM_NUMBERS:
        d.add_argument(
            "--" + name.replace("_", "-"),
            type=number(kind, name),
            default=getattr(DEFAULTS, name),
            help=text,
        )
    d.add_argument(
        "--no-clip",
        dest="clip",
        action="store_false",
        help="do not clip pixels to 0..255 after each step (default: clip)",
    )
    for name, metavar, default, text in (  # the integers a dream takes beside its parameters
        (
            "seed",
            None,
            None,
            "jitter seed, 0..2**32-1: the notebook's jitter after "
            "np.random.seed(SEED); the same bits also need the same Caffe build, "
            "BLAS kernel and threads, numpy and scipy (docs/determinism.md) "
            "(default: a random seed, printed and recorded)",
        ),
        (
            "threads",
            "N",
            None,
            "OpenBLAS threads (Caffe's and numpy's); the count changes the bits "
            "(default: OpenBLAS's own choice, recorded)",
        ),
        (
            "max_size",
            "PIXELS",
            None,
            "scale the input down first so that its longer side "
            "is at most PIXELS (a deviation from the notebook; default: no scaling)",
        ),
        ("jpeg_quality", None, 95, "quality for .jpg outputs, 1..95"),
    ):
        d.add_argument(
            "--" + name.replace("_", "-"),
            type=number(int, name),
            metavar=metavar,
            default=default,
            help=text,
        )

    one = argparse.ArgumentParser(add_help=False, parents=[common])
    one.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="output image (.png lossless, .jpg); a .json sidecar goes beside it",
    )
    for flag, metavar, text in (
        ("--raw", "OUT.npy", "also save the float32 result before the uint8 cast"),
        ("--save-steps", "DIR", "save the image after every step, as the notebook displayed it"),
    ):
        one.add_argument(flag, type=Path, metavar=metavar, help=text)

    p = command("dream", parents=[one], help="dream on an image (notebook cell 12)")
    p.add_argument("input", type=Path, help="input image")
    p.add_argument(
        "--end", default=None, help=f"layer to amplify (default: the model's, {DEFAULTS.end})"
    )

    p = command(
        "guide",
        parents=[one],
        help="dream guided by another image (notebook cells 25-27)",
    )
    p.add_argument("input", type=Path, help="input image")
    p.add_argument("guide", type=Path, help="guide image")
    p.add_argument("--end", default=GUIDE_END, help="layer to match")

    p = command(
        "zoom",
        parents=[common],
        help="dream, zoom in, repeat (notebook cell 19)",
    )
    p.add_argument("input", type=Path, help="first frame")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="FRAMES_DIR",
        help="folder for frames/NNNN.png",
    )
    p.add_argument("--end", default=None, help=f"layer to amplify (default: {DEFAULTS.end})")
    p.add_argument(
        "--frames", type=number(int, "frames"), default=ZOOM_FRAMES, help="number of frames"
    )
    p.add_argument(
        "--scale", type=number(float, "scale"), default=ZOOM_SCALE, help="zoom per frame"
    )
    p.add_argument("--format", choices=["png", "jpg"], default="png", help="frame format")
    p.add_argument(
        "--video",
        type=Path,
        metavar="OUT.mp4",
        help="also encode the frames (H.264, odd sizes padded to even by one black "
        "row or column; .mp4, .mkv or .mov)",
    )
    p.add_argument(
        "--fps", type=number(float, "fps"), default=25.0, help="frames per second of --video"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the frames of an earlier zoom in FRAMES_DIR (without it, a "
        "folder holding them is refused)",
    )

    p = command(
        "draw",
        help="draw what the net sees in an ImageNet class (auduno/deepdraw's notebook)",
    )
    p.add_argument(
        "klass",
        metavar="CLASS",
        help="an ImageNet class: an index 0..999 (e.g. 954, banana), or a name of Caffe's "
        "class list synset_words.txt (found in DEEPDREAM_CAFFE_MIRROR or the cache)",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="output image (.png lossless, .jpg); a .json sidecar goes beside it",
    )
    p.add_argument(
        "--raw",
        type=Path,
        metavar="OUT.npy",
        help="also save the float32 result before the uint8 cast",
    )
    p.add_argument(
        "--schedule",
        default="blog",
        metavar="blog|coherent|FILE.json",
        help="the octaves: deepdraw's cell 5 (blog), cell 7 (coherent), or a JSON list in "
        "deepdraw's format",
    )
    p.add_argument(
        "--start",
        type=Path,
        metavar="IMAGE|noise:WxH",
        help="a square start image, at least 224x224 (default: deepdraw's, "
        "normal(200, 8) noise drawn from the seed)",
    )
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        choices=["bvlc_googlenet"],
        default="bvlc_googlenet",
        help="bvlc_googlenet with its auxiliary classifiers, as deepdraw's prototxt has it",
    )
    g.add_argument(
        "--model-def",
        type=Path,
        metavar="PROTOTXT",
        help="your own net definition (needs --weights)",
    )
    g.add_argument(
        "--weights",
        type=Path,
        metavar="CAFFEMODEL",
        help="weights for --model-def, or local weights for --model",
    )
    g.add_argument(
        "--allow-python-layers",
        action="store_true",
        help="accept Python layers in the definition (refused by default)",
    )
    g.add_argument(
        "--gpu", type=number(int, "gpu"), metavar="N", help="run on GPU N (default: CPU)"
    )
    g.add_argument(
        "--seed",
        type=number(int, "seed"),
        help="seed, 0..2**32-1: deepdraw's start image and crops after np.random.seed(SEED) "
        "(default: a random seed, printed and recorded)",
    )
    g.add_argument(
        "--threads",
        type=number(int, "threads"),
        metavar="N",
        help="OpenBLAS threads; the count changes the bits (default: OpenBLAS's own choice)",
    )

    p = command(
        "video",
        parents=[common],
        help="dream every frame of a video, carrying the dream along (DeepDreamAnim's dreamer.py)",
    )
    p.add_argument("input", type=Path, help="a video ffmpeg can read, or a folder of PNG frames")
    p.add_argument(
        "-o", "--output", type=Path, required=True, metavar="OUT.mp4", help="the video (H.264)"
    )
    p.add_argument("--end", default=None, help=f"layer to amplify (default: {DEFAULTS.end})")
    p.add_argument(
        "--layers",
        type=layer_list,
        default=(),
        metavar="L1,L2",
        help="end layers cycled frame by frame, as dreamer.py does (default: --end)",
    )
    p.add_argument(
        "--blend",
        type=number(float, "blend"),
        default=None,
        help="start each frame from PIL.Image.blend(previous dream, next frame, BLEND); "
        "0: from the raw frame (default: 0.5, unless --flow)",
    )
    p.add_argument(
        "--flow",
        action="store_true",
        help="carry the dream along Farneback optical flow instead of blending",
    )
    p.add_argument("--guide", type=Path, metavar="IMAGE", help="dream every frame guided by IMAGE")
    p.add_argument(
        "--frames",
        type=number(int, "frames"),
        default=None,
        metavar="N",
        help="only the first N frames (default: all)",
    )
    p.add_argument(
        "--fps",
        type=number(float, "fps"),
        default=None,
        help="frames per second of the video (default: the input's; 25 for a folder)",
    )
    p.add_argument(
        "--frames-dir",
        type=Path,
        metavar="DIR",
        help="folder for the dreamt frames (NNNN.png) and the resume state; a re-run with "
        "the same arguments continues there (default: OUT_frames beside OUT)",
    )

    for name in ("dream", "guide", "zoom", "video"):
        sub.choices[name].add_argument(
            "--tile",
            type=number(int, "tile"),
            metavar="N",
            help="compute each step's gradient in tiles of at most NxN pixels, so that memory "
            "follows the tile, not the image (a deviation: docs/deviations.md; default: "
            "no tiles)",
        )

    p = command(
        "sweep",
        parents=[model],
        help="dream every combination of parameter lists (or draw --classes x seeds), on a "
        "Dask cluster",
    )
    add_sweep_arguments(p)

    p = command("layers", parents=[arch], help="list the layers usable as --end")
    p.add_argument(
        "--size",
        type=size_wxh,
        default="1024x575",
        metavar="WxH",
        help="input size for the blob shapes",
    )
    refuse(
        p,
        ["--weights", "--mean", "--places-mean", "--channel-swap", "--gpu", "--notebook-net"],
        "it reads only the net definition",
    )

    p = command("fetch", help="download and verify files; print their paths")
    p.add_argument(
        "what",
        nargs="?",
        default="all",
        metavar="WHAT",
        choices=["models", "assets", "all", *models.MODELS, *assets.NOTEBOOK_ASSETS],
        help="models, assets, all, or one model or notebook file by name",
    )

    p = command("info", help="versions, the Caffe build record, BLAS threads, GPU")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = command(
        "export-golden",
        parents=[common],
        help="write every intermediate of one dream, for other implementations",
    )
    p.add_argument(
        "input",
        type=Path,
        nargs="?",
        help="input image (default: the notebook's sky1024px.jpg at 256x144)",
    )
    out = p.add_mutually_exclusive_group(required=True)  # --out: the old spelling, hidden
    out.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="DIR",
        help="folder for bundle.npz, weights.npz, net.prototxt and bundle.json",
    )
    out.add_argument("--out", dest="output", type=Path, help=argparse.SUPPRESS)
    p.add_argument(
        "--size",
        type=size_wxh,
        metavar="WxH",
        help="resize the input first (bilinear) (default: the notebook's sky at "
        "256x144, your input as it is)",
    )
    p.add_argument("--end", default=None, help=f"layer to amplify (default: {DEFAULTS.end})")

    p = command(
        "compare",
        help="judge another implementation's arrays against a golden bundle, "
        "stage by stage; exit 1 when anything fails or nothing is judged",
    )
    p.add_argument("bundle", type=Path, metavar="DIR", help="a folder from export-golden")
    p.add_argument("other", type=Path, metavar="OTHER.npz", help="the same arrays, from yours")
    p.add_argument(
        "--report",
        type=Path,
        metavar="FILE.md",
        help="also write the report there (default: stdout only)",
    )
    p.add_argument(
        "--require",
        type=lambda t: [k for k in t.split(",") if k],
        default=[],
        metavar="KEYS",
        help="comma-separated keys, stages or patterns (forward/*) that OTHER.npz must hold",
    )

    p = command(
        "verify-notebook",
        help="compare our dreams with the images dream.ipynb shows (needs the "
        "real bvlc_googlenet weights; without them it skips with exit "
        "status 77)",
    )
    p.add_argument(
        "--seeds",
        type=number(int, "seeds"),
        default=3,
        help="seeds per case (the spread needs at least two)",
    )
    p.add_argument(
        "--cells",
        type=int,
        nargs="+",
        default=[12, 14, 21, 27],
        choices=[12, 14, 21, 27],
        help="notebook cells to reproduce (21, the 30th zoom frame, takes 30 dreams per seed)",
    )
    add_output(
        p,
        Path("out/verify-notebook"),
        "folder for report.md, report.json and the side-by-side images",
    )

    p = command(
        "reproduce",
        help="run a sidecar's job again and compare bit for bit; exit 0 if "
        "bit-identical, 1 if not (naming the factors that differ)",
    )
    p.add_argument(
        "sidecar",
        type=Path,
        metavar="OUT.png.json",
        help="the sidecar of a dream, guide or zoom (FRAMES_DIR/zoom.json)",
    )

    p = command("bench", help="time the notebook's default dream against its baselines")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a small image and few steps: every code path in seconds",
    )
    add_output(
        p, Path("out/bench"), "folder for bench.json, bench.md and each variant's float32 result"
    )
    p.add_argument(
        "--variants",
        nargs="+",
        choices=["ours", "notebook", "pytorch"],
        default=["ours", "notebook", "pytorch"],
        help="what to time",
    )
    p.add_argument(
        "--threads",
        type=number(int, "threads"),
        metavar="N",
        help="BLAS and OpenMP threads of each variant; ours and the sgemm peaks are also "
        "measured at 1 and 2 (default: one per core)",
    )
    p.add_argument(
        "--repeats",
        type=number(int, "repeats"),
        default=1,
        metavar="N",
        help="run every variant N times, in turn, and report each one's median run (default: 1)",
    )
    for p in sub.choices.values():  # before or after the subcommand
        add_general(p, default=argparse.SUPPRESS)
    return parser


def check_combinations(parser, args):
    """Flags that are valid alone but not together: usage errors."""
    if args.command == "sweep":
        check_sweep(parser, args)
    if args.command == "video":
        check_video(parser, args)
    if getattr(args, "places_mean", False) and (
        args.model_def or args.model != "places205_googlenet"
    ):
        parser.exit(
            2,
            f"{parser.prog} {args.command}: error: --places-mean needs --model "
            "places205_googlenet (for other nets give a mean with --mean B,G,R)\n",
        )


def layer_list(text: str) -> tuple:
    """``--layers L1,L2``: names, none of them empty."""
    names = tuple(text.split(","))
    if not all(n.strip() for n in names):
        raise argparse.ArgumentTypeError(f"{text!r} has an empty layer name; give e.g. L1,L2")
    return names


def check_video(parser, args):
    """--blend or --flow, and --layers or --end: one of each."""
    if args.flow and args.blend is not None:
        parser.exit(
            2, f"{parser.prog} video: error: --blend and --flow are two carries; give one\n"
        )
    if args.layers and args.end is not None:
        parser.exit(
            2, f"{parser.prog} video: error: --layers cycles its own layers; leave out --end\n"
        )
    if args.blend is None:
        args.blend = 0.5  # the default carry, dreamer.py's


# a dream sweep's flags, refused by a draw sweep (--classes): dest -> the flag
DREAM_SWEEP_ONLY = {
    "ends": "--ends",
    **{name: "--" + name.replace("_", "-") for name, _, _ in DREAM_NUMBERS},
    "max_size": "--max-size",
    "tile": "--tile",
    "mean": "--mean",
    "places_mean": "--places-mean",
    "channel_swap": "--channel-swap",
    "notebook_net": "--notebook-net",
}


def check_sweep(parser, args):
    """A sweep is a draw sweep with ``--classes`` (classes x seeds, no INPUT) and a dream
    sweep without; the other kind's flags are usage errors, in one line."""

    def usage(text):
        parser.exit(2, f"{parser.prog} sweep: error: {text}\n")

    if args.classes is None:
        if not args.inputs:
            usage("give INPUT images to dream, or --classes C1,C2,... to draw")
        if args.schedule is not None:
            usage("--schedule is for a draw sweep: give --classes too")
        return
    if args.inputs:
        usage(f"INPUT ({args.inputs[0]}) is for a dream sweep; --classes draws from noise")
    given = [
        flag for dest, flag in DREAM_SWEEP_ONLY.items() if getattr(args, dest) not in (None, False)
    ]
    if not args.clip:
        given.append("--no-clip")
    if args.model != "bvlc_googlenet":
        given.append(f"--model {args.model}")
    if given:
        usage(f"{given[0]} is for a dream sweep, not --classes (a draw takes --schedule)")
