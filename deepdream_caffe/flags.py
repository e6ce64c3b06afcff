"""argparse building blocks of the command: number types checked against the one table of
limits (``params.LIMITS``), a parser whose usage errors are one line, help that shows each
default once, flags that a subcommand refuses, the output flag, and the options every
subcommand accepts."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from .params import LIMITS, range_problem

# The dream's number parameters, in the notebook's order: name (the flag with - for _, and the
# range checked), type, and dream's help
DREAM_NUMBERS = (
    ("iter_n", int, "gradient steps per octave"),
    ("octave_n", int, "number of octaves (scales)"),
    ("octave_scale", float, "size ratio between octaves"),
    ("step_size", float, "normalised step size"),
    ("jitter", int, "largest random shift in pixels"),
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` once: not when the help already names its default, not for
    switches (on/off flags) and not when there is no default; lists are shown space-separated,
    as they are typed."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or action.nargs == 0
            or default is None
            or default is argparse.SUPPRESS
        ):
            return text
        if isinstance(default, (list, tuple)):
            default = " ".join(str(v) for v in default)
        return f"{text} (default: {str(default).replace('%', '%%')})"


class Refused(argparse.Action):
    """A flag a subcommand does not use: giving it is a usage error, not silently ignored."""

    def __init__(self, option_strings, dest, why="", **kwargs):
        kwargs.update(nargs="?", help=argparse.SUPPRESS, default=argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)
        self.why = why

    def __call__(self, parser, namespace, values, option_string=None):
        command = parser.prog.split()[-1]
        parser.error(f"{command} does not use {option_string}: {self.why}")


def refuse(parser, options, why):
    for option in options:
        parser.add_argument(option, action=Refused, why=why)


def add_output(parser, default, help):
    """``-o/--output`` (dest ``output``), with ``--out`` kept as a hidden alias for scripts."""
    parser.add_argument("-o", "--output", type=Path, default=default, help=help)
    parser.add_argument("--out", dest="output", type=Path, help=argparse.SUPPRESS)


def add_general(parser, default):
    """--debug and --verbose, before or after the subcommand.

    The top-level parser sets the defaults; subcommands use ``argparse.SUPPRESS`` so that their
    unset copies do not overwrite a flag given before the subcommand.
    """
    parser.add_argument(
        "--debug", action="store_true", default=default, help="show tracebacks on errors"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        default=default,
        help="show Caffe's log and image conversions",
    )


def version() -> str:
    from . import __version__

    return __version__


# --- argument types: argparse turns their ArgumentTypeError into a usage error -----------
KINDS = {int: "an integer", float: "a float number"}


def _value(kind, text, name):
    """``text`` as ``kind``, finite and within ``LIMITS[name]``, or ArgumentTypeError."""
    try:
        value = kind(text)
        finite = math.isfinite(value)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"{text!r} is not {KINDS[kind]}") from None
    if not finite:
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    problem = None if name is None else range_problem(name, value)
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r} {problem}")
    return value


def number(kind, name):
    def parse(text):
        return _value(kind, text, name)

    parse.__name__ = kind.__name__
    return parse


def triple(kind, name=None):
    def parse(text):
        parts = text.split(",")
        if len(parts) != 3:
            raise argparse.ArgumentTypeError(f"{text!r} must have three values")
        return tuple(_value(kind, p, name) for p in parts)

    parse.__name__ = kind.__name__
    return parse


def channel_order(text):
    order = triple(int)(text)
    if sorted(order) != [0, 1, 2]:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an order of the channels 0,1,2 (2,1,0: BGR nets, the notebook's; "
            "0,1,2: nets trained on RGB)"
        )
    return order


def size_wxh(text):
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    if max(w, h) > LIMITS["max_size"][1]:
        raise argparse.ArgumentTypeError(f"{text!r} is too large")
    return w, h


class Parser(argparse.ArgumentParser):
    """argparse, with its usage errors on one line (the usage is one --help away)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        for action in self._actions:  # argparse takes "--flag=--" as an empty list, unparsed
            value = getattr(namespace, action.dest, None)
            if action.nargs is None and value == [] and action.default != []:
                self.error(f"argument {'/'.join(action.option_strings)}: expected one value")
        return namespace, extras


def comma_list(parse):
    """An argument type: a comma-separated list of distinct values, each checked by ``parse``."""

    def parse_list(text):
        values = [parse(part.strip()) for part in text.split(",")]
        if "" in values or len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(f"{text!r} is not a list of distinct values")
        return values

    return parse_list


def add_sweep_arguments(p):
    """``sweep``'s own flags: a list for every dream parameter (or ``--classes`` for a draw
    sweep), and the cluster's. The dream lists default to None here: a class sweep refuses
    them when given (:func:`deepdream_caffe.parser.check_sweep`); ``sweep.from_args`` fills in
    the defaults of :data:`deepdream_caffe.params.DEFAULTS`."""
    from .params import DEFAULTS

    p.add_argument(
        "inputs", type=Path, nargs="*", metavar="INPUT", help="input images (none with --classes)"
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="OUTDIR",
        help="folder for images/, manifest.json, manifest.csv and index.html",
    )
    p.add_argument(
        "--classes",
        type=comma_list(str),
        metavar="C1,C2,...",
        help="draw these ImageNet classes (indices or names, as for draw) instead of dreaming "
        "INPUTs: a draw sweep, over classes x seeds (default: a dream sweep)",
    )
    p.add_argument(
        "--schedule",
        metavar="blog|coherent|FILE.json",
        help="with --classes: the octaves, as for draw (default: blog)",
    )
    p.add_argument(
        "--ends",
        type=comma_list(str),
        metavar="all|L1,L2",
        help="layers to amplify, or all (default: the model's)",
    )
    p.add_argument(
        "--seeds",
        type=comma_list(number(int, "seed")),
        default=[0],
        metavar="0,1,...",
        help="jitter seeds",
    )
    for name, kind, _ in DREAM_NUMBERS:
        p.add_argument(
            "--" + name.replace("_", "-"),
            type=comma_list(number(kind, name)),
            metavar="V1,V2,...",
            help=f"a list of values, as for dream (default: {getattr(DEFAULTS, name)})",
        )
    p.add_argument("--no-clip", dest="clip", action="store_false", help="as for dream")
    p.add_argument(
        "--max-size", type=number(int, "max_size"), metavar="PIXELS", help="as for dream"
    )
    p.add_argument("--tile", type=number(int, "tile"), metavar="N", help="as for dream")
    p.add_argument(
        "--scheduler",
        metavar="tcp://HOST:8786",
        help="an existing Dask scheduler (default: a local cluster)",
    )
    for flag, default, metavar, text in (  # both thread counts, in the range of --threads
        ("--workers", None, None, "local worker processes (default: cores / --threads-per-worker)"),
        ("--threads-per-worker", 1, "K", "BLAS threads of each local worker"),
    ):
        p.add_argument(
            flag, type=number(int, "threads"), default=default, metavar=metavar, help=text
        )
    p.add_argument(
        "--grid",
        type=comma_list(str),
        metavar="ROWS,COLUMNS",
        help="the gallery's axes: two of input, end, seed, iter_n, ... jitter, or with "
        "--classes class,seed or seed,class (default: end,seed, or class,seed)",
    )
