"""argparse building blocks of the command: help that shows each default once, flags that
a subcommand refuses, the output flag, and the options every subcommand accepts."""

from __future__ import annotations

import argparse
from importlib import metadata
from pathlib import Path


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` once: not when the help already names its default, not for
    switches (on/off flags) and not when there is no default; lists are shown space-separated,
    as they are typed."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default" in text or action.nargs == 0 or default is None
                or default is argparse.SUPPRESS):
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
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show tracebacks on errors")
    parser.add_argument("--verbose", action="store_true", default=default,
                        help="show Caffe's log and image conversions")


def version() -> str:
    try:
        return metadata.version("deepdream_caffe")
    except metadata.PackageNotFoundError:
        return "unknown (not installed; run make setup)"


def comma_list(parse):
    """An argument type: a comma-separated list of distinct values, each checked by ``parse``."""
    def parse_list(text):
        values = [parse(part.strip()) for part in text.split(",")]
        if "" in values or len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(f"{text!r} is not a list of distinct values")
        return values
    return parse_list
